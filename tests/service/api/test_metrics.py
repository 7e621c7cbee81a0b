from __future__ import annotations

import numpy as np
import pytest

from training import metrics as m

# 3x4 hand-made case: TP=2, FP=1, FN=1, TN=8.
PRED = np.array([[1, 1, 1, 0], [0, 0, 0, 0], [0, 0, 0, 0]], bool)
REF = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 0]], bool)


def test_confusion_counts() -> None:
    assert m.confusion(PRED, REF) == m.Confusion(tp=2, fp=1, fn=1, tn=8)


def test_pixel_metrics_known_values() -> None:
    assert m.accuracy(PRED, REF) == pytest.approx(10 / 12)
    assert m.sensitivity(PRED, REF) == pytest.approx(2 / 3)
    assert m.specificity(PRED, REF) == pytest.approx(8 / 9)
    assert m.dice(PRED, REF) == pytest.approx(4 / 6)
    assert m.iou(PRED, REF) == pytest.approx(2 / 4)


def test_dice_iou_relation_and_bounds() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.random((2, 32, 32)) > 0.6
    d, j = m.dice(a, b), m.iou(a, b)
    assert d == pytest.approx(2 * j / (1 + j))
    assert m.dice(a, a) == 1.0 and m.dice(a, ~a) == 0.0


def test_empty_vs_empty_is_perfect_but_miss_is_not() -> None:
    empty = np.zeros((4, 4), bool)
    one = empty.copy()
    one[0, 0] = True
    assert m.dice(empty, empty) == 1.0
    assert m.dice(empty, one) == 0.0
    assert m.sensitivity(empty, one) == 0.0


def test_shape_mismatch_raises() -> None:
    with pytest.raises(ValueError, match="shape mismatch"):
        m.dice(np.zeros((2, 2)), np.zeros((2, 3)))


def test_volume_and_scar_percent() -> None:
    myo = np.zeros((2, 10, 10), bool)
    myo[:, :5] = True  # 100 voxels
    scar = np.zeros_like(myo)
    scar[0, :2] = True  # 20 voxels
    assert m.volume_ml(myo, voxel_volume_mm3=1.5 * 1.5 * 8) == pytest.approx(1.8)
    assert m.scar_percent(scar, myo) == pytest.approx(20.0)
    ref_scar = np.zeros_like(myo)
    ref_scar[0, :1] = True
    assert m.scar_percent_error(scar, myo, ref_scar, myo) == pytest.approx(10.0)
    assert m.volume_error_ml(scar, ref_scar, 1000.0) == pytest.approx(10.0)
    assert m.scar_percent(scar, np.zeros_like(myo)) == 0.0


def test_wilcoxon_matches_exact_small_sample() -> None:
    # Differences 1..8 all positive: exact two-sided p = 2 / 2**8.
    a = np.arange(1, 9, dtype=float) + 10
    b = np.full(8, 10.0)
    res = m.wilcoxon(a, b)
    assert res.n == 8
    assert res.statistic == 0.0
    assert res.p_value == pytest.approx(2 / 256)
    assert res.significant
    assert res.median_difference == pytest.approx(4.5)


def test_wilcoxon_no_difference() -> None:
    res = m.wilcoxon([0.5, 0.6], [0.5, 0.6])
    assert res.p_value == 1.0 and not res.significant


def test_wilcoxon_rejects_unpaired() -> None:
    with pytest.raises(ValueError, match="paired"):
        m.wilcoxon([1, 2, 3], [1, 2])


def test_median_interval_uses_the_binomial_ranks() -> None:
    # n = 10: the 2nd and 9th values, coverage 1 - 2 * P(B <= 1) = 1 - 22/1024 (textbook table).
    values = np.random.default_rng(0).permutation(np.arange(1.0, 11.0))
    interval = m.median_confidence_interval(values)
    assert (interval.low, interval.high) == (2.0, 9.0)
    assert interval.coverage == pytest.approx(1 - 22 / 1024)
    # n = 37 (the test set's series with scar): the 13th and 25th.
    interval = m.median_confidence_interval(np.arange(1.0, 38.0))
    assert (interval.low, interval.high) == (13.0, 25.0) and interval.coverage >= 0.95


def test_median_interval_covers_the_true_median_as_often_as_it_says() -> None:
    rng = np.random.default_rng(1)
    samples = rng.exponential(size=(2000, 37))  # skewed: true median ln 2
    hits = [(i.low <= np.log(2) <= i.high)
            for i in map(m.median_confidence_interval, samples)]
    assert np.mean(hits) == pytest.approx(m.median_confidence_interval(samples[0]).coverage,
                                          abs=0.015)


def test_median_interval_of_too_few_values_is_their_range_with_its_real_coverage() -> None:
    interval = m.median_confidence_interval([3.0, 1.0, 2.0])
    assert (interval.low, interval.high) == (1.0, 3.0) and interval.coverage == 0.75
    assert np.isnan(m.median_confidence_interval([]).low)
