"""The Hough search's sparse accumulator (issue 54, round 3) gives the circles of the dense
one, to the last bit.

The accumulator's shares are computed only where the integer 3x3 vote sums say they can
pass; these tests hold that to scipy's ``uniform_filter`` over the whole stack (the code it
replaced) and the circles to the frozen copy from before all speed-ups, on the seeded
series of ``test_preprocess_frozen.py`` and on edge cases: no edges, a disk cut by the
border, slices of two shapes in one stack, noise with enough edges for 32-bit sums.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from service.pipeline import hough
from tests.service.pipeline import frozen_preprocess as frozen
from tests.service.pipeline.test_preprocess_frozen import SERIES_NAMES, all_series

RADII = np.arange(5.0, 20.0 + 1e-6, 1.0)  # the default search's radii, in 2 mm pixels


def _dense_peaks(votes: np.ndarray, radii: np.ndarray, min_share: float
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Every cell's best share and radius, from scipy's box filter over the whole stack
    (the accumulator before round 3)."""
    acc = ndimage.uniform_filter(votes.astype(np.float32), (1, 3, 3))
    acc *= 9
    np.divide(acc, (2 * np.pi * radii)[:, None, None], out=acc, casting="unsafe")
    best_r = acc.argmax(axis=0)
    rows, cols = np.indices(best_r.shape)
    return rows.ravel(), cols.ravel(), acc.max(axis=0).ravel(), best_r.ravel()


def _as_tuples(circles) -> list[tuple]:
    return [dataclasses.astuple(c) for c in circles]


def _disk(shape: tuple[int, int], centre: tuple[float, float], radius: float,
          seed: int) -> np.ndarray:
    yy, xx = np.indices(shape)
    image = 300.0 * (np.hypot(yy - centre[0], xx - centre[1]) < radius)
    ring = (np.hypot(yy - centre[0], xx - centre[1]) - radius - 5.0) ** 2 < 16.0
    image[ring] = 20.0
    return (image + np.random.default_rng(seed).normal(60.0, 8.0, shape)).astype(np.float32)


def _edge_cases() -> dict[str, tuple[list[np.ndarray], tuple[float, float]]]:
    rng = np.random.default_rng(541)
    return {
        "no edges": ([np.zeros((96, 96), np.float32), np.full((96, 96), 7.0, np.float32)],
                     (1.5, 1.5)),
        "a disk cut by the border": ([_disk((160, 160), (6.0, 80.0), 14.0, k)
                                      for k in range(3)], (1.4, 1.4)),
        "a disk in a corner": ([_disk((128, 144), (120.0, 4.0), 12.0, k) for k in range(2)],
                               (1.8, 1.6)),
        "two shapes in one stack": ([_disk((160, 160), (80.0, 70.0), 15.0, 0),
                                     _disk((128, 176), (60.0, 90.0), 12.0, 1),
                                     _disk((160, 160), (82.0, 72.0), 14.0, 2)], (1.4, 1.4)),
        "noise, many edges": ([rng.normal(0.0, 1.0, (420, 420)).astype(np.float32)
                               for _ in range(2)], (1.0, 1.0)),
    }


EDGE_CASES = _edge_cases()


def _series(name: str) -> tuple[list[np.ndarray], tuple[float, float]]:
    if name in EDGE_CASES:
        return EDGE_CASES[name]
    series = next(s for s in all_series() if s.name == name)
    return series.images, series.spacing


@pytest.mark.parametrize("name", SERIES_NAMES + list(EDGE_CASES))
def test_circles_are_exactly_the_frozen_ones(name: str) -> None:
    images, spacing = _series(name)
    assert _as_tuples(hough.hough_lv_circles(images, spacing)) == \
        _as_tuples(frozen.hough_lv_circles(images, spacing))
    for image in images[::3]:
        assert _as_tuples(hough.hough_candidates(image, spacing)) == \
            _as_tuples(frozen.hough_candidates(image, spacing))


@pytest.mark.parametrize("name", ["phantom 0", "two shapes in one stack", "noise, many edges"])
def test_circles_are_the_dense_accumulators(monkeypatch: pytest.MonkeyPatch, name: str
                                            ) -> None:
    images, spacing = _series(name)
    sparse = _as_tuples(hough.hough_lv_circles(images, spacing))
    monkeypatch.setattr(hough, "_accumulator_peaks", _dense_peaks)
    assert sparse == _as_tuples(hough.hough_lv_circles(images, spacing))


def test_noise_takes_the_32_bit_sums(monkeypatch: pytest.MonkeyPatch) -> None:
    """The edge case above is meant to reach the int32 path: check that it does."""
    seen = []
    real = hough._accumulator_peaks

    def spy(votes, radii, min_share):
        seen.append(votes.dtype)
        return real(votes, radii, min_share)

    monkeypatch.setattr(hough, "_accumulator_peaks", spy)
    hough.hough_lv_circles(*EDGE_CASES["noise, many edges"])
    assert np.dtype(np.int32) in seen


@pytest.mark.parametrize("dtype", [np.int16, np.int32])
def test_accumulator_shares_are_scipys_box_filter(dtype) -> None:
    """Wherever the dense share passes, the sparse one has the cell, with the same share
    bit for bit and the same radius; every cell it has carries the dense share, and one
    that cannot pass is at or below the threshold."""
    rng = np.random.default_rng(54)
    for trial in range(120):
        shape = (len(RADII), *rng.integers(8, 60, 2))
        rate = rng.choice([0.05, 0.4, 3.0, 40.0 if dtype is np.int16 else 900.0])
        votes = rng.poisson(rate, shape)
        if trial % 4 == 0:
            votes[rng.random(shape) < 0.9] = 0
        if trial % 7 == 0:  # ties: the same votes at every radius and along the rows
            votes[:] = votes[0, :1]
        votes = votes.astype(dtype)
        rows, cols, share, best_r = hough._accumulator_peaks(votes, RADII, 0.15)
        d_rows, d_cols, d_share, d_best = _dense_peaks(votes, RADII, 0.15)
        at = rows * shape[2] + cols
        assert np.all(np.diff(at) > 0), "cells in C order"
        assert np.array_equal(share, d_share[at])
        passing = share > 0.15
        assert np.array_equal(best_r[passing], d_best[at][passing])
        dense_passing = np.flatnonzero(d_share > 0.15)
        assert np.isin(dense_passing, at).all()


def test_no_votes_no_cells() -> None:
    rows, cols, share, best_r = hough._accumulator_peaks(
        np.zeros((len(RADII), 12, 9), np.int16), RADII, 0.15)
    assert rows.size == cols.size == share.size == best_r.size == 0


# --- The search near the heart (issue 54, round 4; round 4's ENets are trained on it) --


def test_the_heart_window_is_the_box_and_margin_on_the_2mm_grid() -> None:
    grid = hough.resample_transform((200, 200), (1.0, 1.0), 2.0, (100, 100))
    heart = np.zeros((200, 200), bool)
    assert hough.heart_window(heart, grid, 15.0) == (slice(0, 100), slice(0, 100))
    heart[80:120, 60:100] = True  # source rows 80-119, columns 60-99: 2 mm cells 40-59, 30-49
    rows, cols = hough.heart_window(heart, grid, 10.0)
    assert rows.start <= 40 - 5 and rows.stop >= 60 + 5 and rows.stop - rows.start <= 32
    assert cols.start <= 30 - 5 and cols.stop >= 50 + 5 and cols.stop - cols.start <= 32
    heart[:] = False
    heart[0:4, 190:200] = True  # at the corner: clipped to the grid
    rows, cols = hough.heart_window(heart, grid, 15.0)
    assert rows.start == 0 and cols.stop == 100


def test_near_the_heart_finds_the_whole_searchs_lv_and_nothing_outside() -> None:
    """A disk (the cavity) inside a dark ring, a brighter disk far from it: the search near
    the ring finds the disk's circle as the whole slice's search does, and no candidate
    outside the window."""
    slices = []
    for k in range(3):
        image = _disk((200, 200), (100.0, 90.0), 15.0, k)
        yy, xx = np.indices(image.shape)
        image[np.hypot(yy - 30.0, xx - 170.0) < 12] = 500.0  # something else bright
        slices.append(image)
    spacing = (1.4, 1.4)
    yy, xx = np.indices(slices[0].shape)
    distance = np.hypot(yy - 100.0, xx - 90.0)
    heart = (distance >= 15.0) & (distance < 25.0)
    whole = hough.hough_lv_circles(slices, spacing)
    near = hough.hough_lv_circles(slices, spacing, heart=heart)
    for w, n in zip(whole, near, strict=True):
        assert np.allclose(w.centre, (100.0, 90.0), atol=3.0)
        assert np.allclose(n.centre, w.centre, atol=1.0) and n.radius_mm == w.radius_mm
    for candidates in hough._candidates_of_stack(slices, spacing, (10.0, 40.0), heart=heart):
        for c in candidates:
            assert 100.0 - 25.0 - 15.0 / 1.4 - 2 <= c.centre[0] <= 100.0 + 25.0 + 15.0 / 1.4 + 2
    assert _as_tuples(hough.hough_lv_circles(slices, spacing, heart=np.zeros_like(heart))) \
        == _as_tuples(whole)
