"""Round 4's ENets are cut from the Hough search near the heart: the true myocardium's box,
a few millimetres off, as the first ring gives it in serving; old caches are not reused."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

import service.pipeline.preprocess as preprocess
from training.data import dataset
from training.data.dataset import ENET_P1, ENET_P2, HEART_JITTER_MM, series_arrays
from training.data.sources import PhantomSource


def test_the_enets_take_the_search_near_the_heart_and_their_caches_are_new() -> None:
    assert ENET_P1.hough_near_heart and ENET_P2.hough_near_heart
    for spec in (ENET_P1, ENET_P2):
        whole = dataclasses.replace(spec, hough_near_heart=False)
        assert dataset._cache_key(spec, None) != dataset._cache_key(whole, None)


def test_the_jittered_heart_is_the_true_box_within_its_reach() -> None:
    myo = np.zeros((3, 120, 100), bool)
    myo[0, 40:60, 30:50] = True
    myo[2, 45:70, 35:45] = True  # the union over slices: rows 40-69, columns 30-49
    spacing = (1.5, 1.0)
    moved = set()
    for seed in range(40):
        heart = dataset._jittered_heart(myo, spacing, np.random.default_rng(seed))
        assert heart.shape == (1, 120, 100)
        rows, cols = np.nonzero(heart[0])
        assert heart[0, rows.min():rows.max() + 1, cols.min():cols.max() + 1].all()
        for (low, high), (true_low, true_high), mm in (
                ((rows.min(), rows.max()), (40, 69), spacing[0]),
                ((cols.min(), cols.max()), (30, 49), spacing[1])):
            assert abs(low - true_low) * mm <= HEART_JITTER_MM + mm
            assert abs(high - true_high) * mm <= HEART_JITTER_MM + mm
        moved.add((rows.min(), rows.max(), cols.min(), cols.max()))
    assert len(moved) > 20, "the edges move"
    assert not dataset._jittered_heart(np.zeros_like(myo), spacing,
                                       np.random.default_rng(0)).any()


def test_enet_arrays_are_cut_on_the_search_near_the_true_heart(
        series_dirs: list[Path], monkeypatch: pytest.MonkeyPatch) -> None:
    hearts = []
    real = preprocess.hough_lv_circles

    def spy(slices, spacing, *args, heart=None, **kwargs):
        hearts.append(heart)
        return real(slices, spacing, *args, heart=heart, **kwargs)

    monkeypatch.setattr(preprocess, "hough_lv_circles", spy)
    arrays = series_arrays(series_dirs[0], series_number=3, tasks=["enet_p2", "enet_p1"])
    assert len(hearts) == 1, "one search for both protocols"
    truth = PhantomSource(series_dirs[0]).read().true_myocardium.any(axis=0)
    rows, cols = np.nonzero(hearts[0])
    true_rows, true_cols = np.nonzero(truth)
    spacing = PhantomSource(series_dirs[0]).read().spacing
    reach = HEART_JITTER_MM / min(spacing) + 1
    assert abs(rows.min() - true_rows.min()) <= reach and abs(cols.max() - true_cols.max()) <= reach
    for task in ("enet_p1", "enet_p2"):
        assert len(arrays[task].x) == len(arrays[task].y) > 0
        assert arrays[task].y[..., 0].max() > 0.5, "the scar is inside the crops"
