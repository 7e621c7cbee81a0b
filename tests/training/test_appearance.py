"""Another centre's look: tissue remapping within LGE's orderings, and zero-filled k-space."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from tests.training.test_emidec import _ring_slice, _write_case
from training.data import emidec
from training.data.appearance import (
    SHIFTED_SEED_BASE,
    Appearance,
    nearest_upsampled,
    other_centre,
    remap_tissues,
    zero_filled,
)


def _band_limited(y: np.ndarray, x: np.ndarray, n: int) -> np.ndarray:
    return 5.0 + np.cos(2 * np.pi * 3 * x / n) + 0.5 * np.sin(2 * np.pi * 2 * y / n)


@pytest.mark.parametrize("factor", [2.0, 1.92])
def test_zero_filling_interpolates_a_band_limited_image_exactly(factor: float) -> None:
    n = 32
    y, x = np.mgrid[:n, :n]
    out = zero_filled(_band_limited(y, x, n)[None], factor)
    m = out.shape[1]
    assert out.shape == (1, round(n * factor), round(n * factor))
    fine = np.arange(m) * n / m  # output pixel j sits at input coordinate j * n / m
    yy, xx = np.meshgrid(fine, fine, indexing="ij")
    np.testing.assert_allclose(out[0], _band_limited(yy, xx, n), atol=1e-4)
    # The known pixels are kept where the grids meet.
    np.testing.assert_allclose(zero_filled(_band_limited(y, x, n)[None], 2.0)[0, ::2, ::2],
                               _band_limited(y, x, n), atol=1e-4)


def test_labels_follow_the_zero_filled_grid() -> None:
    labels = np.zeros((1, 8, 8), np.uint8)
    labels[0, 2:4, 5:7] = 3
    fine = nearest_upsampled(labels, (16, 16))
    assert fine.shape == (1, 16, 16)
    np.testing.assert_array_equal(fine[:, ::2, ::2], labels)  # where the grids meet
    rows, cols = np.nonzero(fine[0] == 3)
    # Each fine pixel takes the label nearest its position (j / 2 on the coarse grid).
    assert rows.min() / 2 >= 1.5 and rows.max() / 2 <= 3.5
    assert cols.min() / 2 >= 4.5 and cols.max() / 2 <= 6.5


def _case(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """A heart as small in its field of view as a real scan's (the coil shading varies
    little across it)."""
    rng = np.random.default_rng(seed)
    slices = [_ring_slice(rng, size=160) for _ in range(3)]
    return (np.stack([s[0] for s in slices]).astype(np.float32),
            np.stack([s[1] for s in slices]))


def _median(images: np.ndarray, labels: np.ndarray, code: int) -> float:
    """The tissue's median away from its borders (blur and partial volume mix them)."""
    inside = ndimage.binary_erosion(labels == code, np.ones((1, 3, 3)))
    return float(np.median(images[inside if inside.any() else labels == code]))


def test_remapping_keeps_lges_orderings_and_draws_the_blood_level() -> None:
    images, labels = _case()
    bloods = []
    for seed in range(40):
        out = remap_tissues(images, labels, seed)
        look = Appearance.draw(seed)
        healthy = _median(out, labels, emidec.MYOCARDIUM)
        scar = _median(out, labels, emidec.INFARCT)
        assert scar > healthy, "scar stays brighter than nulled myocardium"
        contrast = scar - healthy
        blood = (_median(out, labels, emidec.CAVITY) - healthy) / contrast
        assert blood == pytest.approx(look.blood, abs=0.35)
        bloods.append((look.blood, blood))
        assert out.dtype == np.float32 and out.min() >= 0.0
    drawn, measured = np.array(bloods).T
    assert np.corrcoef(drawn, measured)[0, 1] > 0.95, "the pool is where the draw put it"
    # Dark-blood and brighter-than-scar pools both occur.
    assert measured.min() < 0.3 and measured.max() > 1.1
    np.testing.assert_array_equal(remap_tissues(images, labels, 7),
                                  remap_tissues(images, labels, 7))


def test_the_other_centre_copy_is_finer_12_bit_and_keeps_its_labels_aligned() -> None:
    images, labels = _case()
    fine, fine_labels, spacing = other_centre(images, labels, 1.4, SHIFTED_SEED_BASE)
    assert spacing == pytest.approx(0.73, abs=0.01)
    assert fine.shape == fine_labels.shape and fine.shape[1] == round(160 * 1.4 / 0.73)
    assert fine.max() == 4095 and np.all(fine == np.round(fine))
    # The scar is where its label is, on the finer grid too.
    assert _median(fine, fine_labels, emidec.INFARCT) > _median(fine, fine_labels,
                                                                 emidec.MYOCARDIUM)


def test_shifted_copies_never_share_a_training_copys_look(tmp_path) -> None:
    rng = np.random.default_rng(0)
    _write_case(tmp_path, "Case_P001", [_ring_slice(rng) for _ in range(2)])
    training = emidec.case_copies(tmp_path, ["Case_P001"], copies=1, seed=1000, remapped=3)
    shifted = emidec.shifted_copies(tmp_path, ["Case_P001"])
    looks = [s.appearance for s in training if s.appearance is not None]
    assert len(looks) == 3 and all(seed < SHIFTED_SEED_BASE for seed in looks)
    assert all(s.appearance >= SHIFTED_SEED_BASE and s.shifted for s in shifted)
    series = shifted[0].read()
    assert series.spacing[0] == pytest.approx(0.73, abs=0.01)
    assert series.true_myocardium.shape == np.asarray(series.images).shape
    with pytest.raises(ValueError, match="darkened"):
        emidec.EmidecCase(tmp_path, "Case_P001", dark=True, appearance=3)
