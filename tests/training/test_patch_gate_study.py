"""The patch-gate study's pieces: patches in millimetres around the ring, the un-nulled
myocardium, and the tally of its table."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from training.studies.patch_gate_study import (
    FOV_MM,
    PATCH,
    docs_block,
    ring_patches,
    tally,
    un_nulled,
)


def _ring(shape: tuple[int, int], centre: tuple[float, float], spacing: tuple[float, float],
          inner_mm: float, outer_mm: float) -> np.ndarray:
    y, x = np.mgrid[:shape[0], :shape[1]]
    r = np.hypot((y - centre[0]) * spacing[0], (x - centre[1]) * spacing[1])
    return (r >= inner_mm) & (r <= outer_mm)


def test_a_patch_is_centred_on_the_ring_and_square_in_millimetres() -> None:
    spacing = (1.0, 2.0)  # anisotropic: the ring is an ellipse in pixels
    ring = _ring((200, 120), (100.0, 60.0), spacing, 20.0, 28.0)
    image = np.random.default_rng(0).normal(100, 10, ring.shape)
    patches = ring_patches([image, image], np.stack([ring, np.zeros_like(ring)]), spacing)
    assert patches.shape == (1, PATCH, PATCH, 3)  # the slice without a ring gives none
    ring_channel = patches[0, ..., 1]
    cy, cx = ndimage.center_of_mass(ring_channel)
    assert abs(cy - (PATCH - 1) / 2) < 0.5 and abs(cx - (PATCH - 1) / 2) < 0.5
    # The same outer radius across rows and columns: 28 mm at FOV_MM / PATCH per pixel.
    filled = ndimage.binary_fill_holes(ring_channel > 0.5)
    rows, cols = np.nonzero(filled.any(1))[0], np.nonzero(filled.any(0))[0]
    expected = 2 * 28.0 / (FOV_MM / PATCH)
    assert abs(len(rows) - expected) <= 2 and abs(len(cols) - expected) <= 2
    assert patches[0, ..., 2].all()  # 160 mm fit inside 200 x 240 mm


def test_a_patch_beyond_the_image_marks_what_lies_outside() -> None:
    ring = _ring((60, 60), (10.0, 10.0), (1.0, 1.0), 5.0, 8.0)
    patch = ring_patches([np.ones(ring.shape)], ring[None], (1.0, 1.0))[0]
    inside = patch[..., 2] > 0.5
    assert 0 < inside.mean() < 0.5
    assert (patch[~inside, 0] == 0).all()


def test_un_nulling_lifts_the_healthy_myocardium_only() -> None:
    spacing = (1.0, 1.0)
    wall = _ring((120, 120), (60.0, 60.0), spacing, 15.0, 23.0)
    infarct = wall & (np.mgrid[:120, :120][1] > 75)
    image = np.where(wall, 5.0, 100.0)
    image[infarct] = 300.0
    lifted = un_nulled([image], wall[None], infarct[None], spacing)[0]
    core = ndimage.binary_erosion(wall & ~infarct, iterations=2)
    assert np.allclose(lifted[core], 100.0, atol=1.0)  # the surroundings' 75th percentile
    square = np.ones((3, 3), bool)  # the blurred edge reaches 3 pixels every way
    far = ~ndimage.binary_dilation(wall, square, iterations=4)
    assert np.array_equal(lifted[far], image[far])
    infarct_core = ndimage.binary_erosion(infarct, square, iterations=4)
    assert np.allclose(lifted[infarct_core], 300.0, atol=1.0)


def test_the_tally_counts_the_gate_and_the_patches_per_threshold() -> None:
    entries = [("cine", "ok", -3.0), ("cine", "ok", 0.5), ("cine", "refused", -5.0),
               ("LGE", "ok", 2.0)]
    table = tally(entries, {"0": 0.0, "1": 1.0})
    assert table["cine"]["gate"] == {"refused": 1, "flagged": 0, "ok": 2}
    assert table["cine"]["patches_flag"] == {"0": 2, "1": 3}
    assert table["cine"]["ok_by_both"] == {"0": 1, "1": 0}
    assert table["LGE"]["ok_by_both"] == {"0": 1, "1": 1}
    block = docs_block({"thresholds": {"0": 0.0, "1": 1.0}, "sets": table})
    assert "| cine | 3 | 1 / 0 / 2 | 2 / 3 | 1 / 0 |" in block
