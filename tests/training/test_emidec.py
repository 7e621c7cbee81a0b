"""The EMIDEC reader, its darkening and its sources, on slices the tests write themselves.

When the real set is beside the checkout (``../shared/data/emidec``), two of its cases are
read as well; the suite passes without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from training.data import emidec
from training.data.dataset import series_arrays

REAL = Path(__file__).resolve().parents[3] / "shared" / "data" / "emidec"


def _ring_slice(rng: np.random.Generator, size: int = 64, scar: bool = True
                ) -> tuple[np.ndarray, np.ndarray]:
    """A bright-blood slice: bright cavity, darker myocardium ring, scar in one quadrant."""
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    labels = np.zeros((size, size), np.uint8)
    labels[r < 10] = emidec.CAVITY
    labels[(r >= 10) & (r < 16)] = emidec.MYOCARDIUM
    if scar:
        labels[(r >= 10) & (r < 16) & (yy < size / 2) & (xx < size / 2)] = emidec.INFARCT
        labels[(r >= 10) & (r < 12) & (yy < size / 2 - 6) & (xx < size / 2 - 6)] = \
            emidec.OBSTRUCTION
    level = {emidec.BACKGROUND: 60.0, emidec.CAVITY: 200.0, emidec.MYOCARDIUM: 70.0,
             emidec.INFARCT: 190.0, emidec.OBSTRUCTION: 40.0}
    image = np.vectorize(level.get)(labels).astype(np.float32)
    image += rng.normal(0, 6, image.shape).astype(np.float32)
    return np.clip(image, 0, 255).round().astype(np.uint8), labels


def _write_case(root: Path, case: str, slices: list[tuple[np.ndarray, np.ndarray]],
                numbers: list[int] | None = None) -> None:
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "labels").mkdir(parents=True, exist_ok=True)
    for k, (image, labels) in zip(numbers or range(len(slices)), slices, strict=True):
        Image.fromarray(image).save(root / "images" / f"{case}_slice{k:03d}.png")
        Image.fromarray(labels).save(root / "labels" / f"{case}_slice{k:03d}.png")


@pytest.fixture()
def fake_emidec(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    # Slice numbers written out of order and with a gap: the reader sorts by number.
    _write_case(tmp_path, "Case_P001", [_ring_slice(rng) for _ in range(3)], [2, 0, 10])
    _write_case(tmp_path, "Case_N002", [_ring_slice(rng, scar=False) for _ in range(2)])
    _write_case(tmp_path, "Case_P003", [_ring_slice(rng)])
    (tmp_path / "split.json").write_text(json.dumps(
        {"train": ["Case_P001", "Case_N002"], "validation": [], "test": ["Case_P003"]}))
    return tmp_path


def test_reader_returns_the_case_in_slice_number_order(fake_emidec: Path) -> None:
    files = emidec.slice_files(fake_emidec, "Case_P001")
    assert [f.name for f in files] == [f"Case_P001_slice{k:03d}.png" for k in (0, 2, 10)]
    images, labels = emidec.read_case(fake_emidec, "Case_P001")
    assert images.shape == labels.shape == (3, 64, 64)
    assert images.dtype == np.float32 and labels.dtype == np.uint8
    first = np.asarray(Image.open(files[0]), dtype=np.float32)
    assert np.array_equal(images[0], first)
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 3, 4}
    # Case_P001 is not a prefix match for a Case_P0010.
    _write_case(fake_emidec, "Case_P0010", [_ring_slice(np.random.default_rng(1))])
    assert len(emidec.slice_files(fake_emidec, "Case_P001")) == 3


def test_source_maps_labels_to_myocardium_scar_and_obstruction(fake_emidec: Path) -> None:
    _, labels = emidec.read_case(fake_emidec, "Case_P001")
    series = emidec.EmidecCase(fake_emidec, "Case_P001", spacing_mm=1.7).read()
    assert series.spacing == (1.7, 1.7)
    assert np.array_equal(series.true_myocardium, np.isin(labels, (2, 3, 4)))
    assert np.array_equal(series.true_scar, np.isin(labels, (3, 4)))
    assert np.array_equal(series.true_obstruction, labels == 4)
    assert np.array_equal(series.cavity(), labels == 1)  # the expert's cavity, not a guess
    assert not (series.true_scar & ~series.true_myocardium).any()


def test_split_and_training_copies(fake_emidec: Path) -> None:
    assert emidec.read_split(fake_emidec)["test"] == ["Case_P003"]
    copies = emidec.training_cases(fake_emidec, copies=3, seed=5)
    assert len(copies) == 2 * 2 * 3  # cases x contrasts x copies
    assert {c.contrast for c in copies} == {"bright-blood", "dark-blood"}
    low, high = emidec.SPACING_RANGE_MM
    assert all(low <= c.spacing_mm <= high for c in copies)
    assert len({c.spacing_mm for c in copies}) > 1
    assert copies == emidec.training_cases(fake_emidec, copies=3, seed=5)  # seeded
    assert len({c.series_id for c in copies}) == len(copies)


def test_a_bad_layout_is_a_clear_error(fake_emidec: Path) -> None:
    with pytest.raises(emidec.EmidecLayoutError, match="no slices"):
        emidec.read_case(fake_emidec, "Case_P999")
    (fake_emidec / "labels" / "Case_P003_slice000.png").unlink()
    with pytest.raises(emidec.EmidecLayoutError, match="no label map"):
        emidec.read_case(fake_emidec, "Case_P003")
    (fake_emidec / "split.json").write_text(json.dumps(
        {"train": ["Case_P001"], "validation": ["Case_P001"], "test": []}))
    with pytest.raises(emidec.EmidecLayoutError, match="two splits"):
        emidec.read_split(fake_emidec)
    bad = np.full((64, 64), 7, np.uint8)
    Image.fromarray(bad).save(fake_emidec / "labels" / "Case_N002_slice000.png")
    with pytest.raises(emidec.EmidecLayoutError, match="label codes"):
        emidec.read_case(fake_emidec, "Case_N002")


def test_darkening_brings_the_cavity_to_normal_myocardium_and_keeps_its_texture() -> None:
    image, labels = _ring_slice(np.random.default_rng(4), size=96)
    image = image.astype(np.float32)
    # Texture inside the cavity: a papillary muscle, darker than the blood around it.
    yy, xx = np.mgrid[:96, :96]
    papillary = (np.hypot(yy - 52, xx - 44) < 3) & (labels == emidec.CAVITY)
    image[papillary] -= 80
    dark = emidec.darken(image, labels)
    cavity, normal = labels == emidec.CAVITY, labels == emidec.MYOCARDIUM
    assert np.array_equal(dark[~cavity], image[~cavity])  # nothing outside the cavity moves
    assert abs(np.median(dark[cavity]) - np.median(image[normal])) < 1.0
    assert np.median(image[cavity]) - np.median(dark[cavity]) > 100  # it was bright
    # Texture kept: the darkened cavity is the original one up to a gain and an offset.
    assert np.corrcoef(dark[cavity], image[cavity])[0, 1] > 0.99
    assert dark[papillary].mean() < dark[cavity & ~papillary].mean() - 10
    # Scar stays brighter than the darkened blood: the dark-blood look.
    assert np.median(dark[labels == emidec.INFARCT]) > np.median(dark[cavity]) + 50


def test_a_slice_without_normal_myocardium_takes_the_cases_level() -> None:
    rng = np.random.default_rng(2)
    image, labels = _ring_slice(rng)
    transmural = labels.copy()
    transmural[transmural == emidec.MYOCARDIUM] = emidec.INFARCT
    images = np.stack([image, image]).astype(np.float32)
    cases = np.stack([labels, transmural])
    dark = emidec.darken_case(images, cases)
    normal_level = np.median(images[cases == emidec.MYOCARDIUM])
    assert abs(np.median(dark[1][transmural == emidec.CAVITY]) - normal_level) < 1.0
    with pytest.raises(ValueError, match="no normal myocardium"):
        emidec.darken(images[1], transmural)


def test_dark_source_reads_darkened_pixels_with_the_same_labels(fake_emidec: Path) -> None:
    bright = emidec.EmidecCase(fake_emidec, "Case_P001").read()
    dark = emidec.EmidecCase(fake_emidec, "Case_P001", dark=True).read()
    assert np.array_equal(bright.true_scar, dark.true_scar)
    cavity = ~bright.true_myocardium & (np.stack(bright.images) > 150)
    assert np.stack(dark.images)[cavity].mean() < np.stack(bright.images)[cavity].mean() - 80


def test_training_arrays_are_cut_from_an_emidec_case(fake_emidec: Path) -> None:
    arrays = series_arrays(emidec.EmidecCase(fake_emidec, "Case_P001", spacing_mm=1.5), 4,
                           tasks=["myocardium_unet", "enet_p2"])
    assert arrays["myocardium_unet"].x.shape[0] == 3
    assert set(arrays["enet_p2"].series.tolist()) == {4}
    assert arrays["myocardium_unet"].y.max() > 0.9  # the ring is on the model grid


def test_multi_class_targets_come_from_the_label_codes(fake_emidec: Path) -> None:
    """Cavity (1), myocardium (2-4), scar (3-4) and MVO (4) on each network's grid: the
    soft targets' sums over the model grid follow the label areas, and they nest."""
    source = emidec.EmidecCase(fake_emidec, "Case_P001", spacing_mm=1.5)
    _, labels = emidec.read_case(fake_emidec, "Case_P001")
    arrays = series_arrays(source, 4, tasks=["myocardium_unet", "enet_p1"])
    cavity, myocardium = np.moveaxis(arrays["myocardium_unet"].regions, -1, 0)
    # CNN1's grid is 2 mm, the case's 1.5 mm: areas scale by (1.5 / 2) ** 2.
    scale = (1.5 / 2.0) ** 2
    assert cavity.sum() == pytest.approx((labels == 1).sum() * scale, rel=0.05)
    assert myocardium.sum() == pytest.approx(np.isin(labels, (2, 3, 4)).sum() * scale,
                                             rel=0.05)
    assert np.all(cavity + myocardium <= 1.0 + 1e-3)
    scar, mvo = np.moveaxis(arrays["enet_p1"].regions, -1, 0)
    assert scar.max() > 0.9 and mvo.max() > 0.5 and np.all(mvo <= scar + 1e-3)
    normal = series_arrays(emidec.EmidecCase(fake_emidec, "Case_N002", spacing_mm=1.5), 5,
                           tasks=["enet_p1"])["enet_p1"].regions
    assert normal.max() == 0.0  # no scar, no MVO in a normal case


@pytest.mark.skipif(not (REAL / "split.json").is_file(), reason="EMIDEC is not beside the checkout")
def test_two_real_cases_have_emidecs_label_codes() -> None:
    split = emidec.read_split(REAL)
    assert (len(split["train"]), len(split["validation"]), len(split["test"])) == (70, 10, 20)
    infarct, normal = (next(c for c in split["train"] if c.startswith(prefix))
                       for prefix in ("Case_P", "Case_N"))
    for case, has_scar in ((infarct, True), (normal, False)):
        images, labels = emidec.read_case(REAL, case)
        assert images.shape[1:] == (256, 256) and 3 <= len(images) <= 20
        codes = set(np.unique(labels).tolist())
        assert codes <= emidec.LABEL_CODES and {0, 1, 2} <= codes
        assert (emidec.INFARCT in codes) == has_scar
        # Most slices carry a myocardium contour (apex and base slices may not).
        series = emidec.EmidecCase(REAL, case).read()
        assert series.true_myocardium.any(axis=(1, 2)).sum() >= len(images) // 2
