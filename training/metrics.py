"""Segmentation and quantification metrics, as the seed papers define them.

Pixel metrics take a predicted and a reference binary mask of any shape (a
slice or a volume). Empty-versus-empty is a perfect match (DSC = IoU = 1):
a scar-free slice that the model leaves scar-free is right, and averaging
NaNs would hide it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class Confusion:
    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def n(self) -> int:
        return self.tp + self.fp + self.fn + self.tn


def confusion(pred: np.ndarray, ref: np.ndarray) -> Confusion:
    pred = np.asarray(pred, dtype=bool)
    ref = np.asarray(ref, dtype=bool)
    if pred.shape != ref.shape:
        raise ValueError(f"shape mismatch: prediction {pred.shape} vs reference {ref.shape}")
    tp = int(np.count_nonzero(pred & ref))
    fp = int(np.count_nonzero(pred & ~ref))
    fn = int(np.count_nonzero(~pred & ref))
    return Confusion(tp=tp, fp=fp, fn=fn, tn=int(pred.size) - tp - fp - fn)


def _ratio(num: int, den: int, empty: float) -> float:
    return num / den if den else empty


def accuracy(pred: np.ndarray, ref: np.ndarray) -> float:
    """(TP + TN) / n, ENet paper eq. 1."""
    c = confusion(pred, ref)
    return _ratio(c.tp + c.tn, c.n, 1.0)


def sensitivity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TP / (TP + FN), eq. 2; 1 when the reference is empty (nothing to miss)."""
    c = confusion(pred, ref)
    return _ratio(c.tp, c.tp + c.fn, 1.0)


def specificity(pred: np.ndarray, ref: np.ndarray) -> float:
    """TN / (TN + FP), eq. 3."""
    c = confusion(pred, ref)
    return _ratio(c.tn, c.tn + c.fp, 1.0)


def dice(pred: np.ndarray, ref: np.ndarray) -> float:
    """2TP / (FP + FN + 2TP), eq. 4."""
    c = confusion(pred, ref)
    return _ratio(2 * c.tp, c.fp + c.fn + 2 * c.tp, 1.0)


def iou(pred: np.ndarray, ref: np.ndarray) -> float:
    """TP / (TP + FP + FN), the cascade paper's Intersection over Union."""
    c = confusion(pred, ref)
    return _ratio(c.tp, c.tp + c.fp + c.fn, 1.0)


def volume_ml(mask: np.ndarray, voxel_volume_mm3: float) -> float:
    return float(np.count_nonzero(mask)) * voxel_volume_mm3 / 1000.0


def volume_error_ml(pred: np.ndarray, ref: np.ndarray, voxel_volume_mm3: float) -> float:
    """Signed error, predicted minus reference, in mL."""
    return volume_ml(pred, voxel_volume_mm3) - volume_ml(ref, voxel_volume_mm3)


def scar_percent(scar: np.ndarray, myocardium: np.ndarray) -> float:
    """100 x scar / myocardium; 0 for an empty myocardium."""
    myo = np.count_nonzero(myocardium)
    return 100.0 * np.count_nonzero(scar) / myo if myo else 0.0


def scar_percent_error(pred_scar: np.ndarray, pred_myo: np.ndarray, ref_scar: np.ndarray,
                       ref_myo: np.ndarray) -> float:
    """Signed error of the scar extent in percentage points."""
    return scar_percent(pred_scar, pred_myo) - scar_percent(ref_scar, ref_myo)


@dataclass(frozen=True)
class WilcoxonResult:
    statistic: float
    p_value: float
    n: int
    median_difference: float

    @property
    def significant(self) -> bool:
        """At the ENet paper's alpha = 0.05."""
        return self.p_value < 0.05


def wilcoxon(a: Sequence[float], b: Sequence[float]) -> WilcoxonResult:
    """Two-sided Wilcoxon signed-rank test on paired scores (e.g. DSC of P1 vs P2).

    Zero differences are dropped (Wilcoxon's original treatment) since two
    methods that agree on a case say nothing about which is better.
    """
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"need two paired 1-D samples, got shapes {a.shape} and {b.shape}")
    diff = a - b
    if np.count_nonzero(diff) == 0:
        return WilcoxonResult(statistic=0.0, p_value=1.0, n=0, median_difference=0.0)
    res = stats.wilcoxon(a, b, zero_method="wilcox", alternative="two-sided")
    return WilcoxonResult(statistic=float(res.statistic), p_value=float(res.pvalue),
                          n=int(np.count_nonzero(diff)), median_difference=float(np.median(diff)))


@dataclass(frozen=True)
class Interval:
    low: float
    high: float
    coverage: float  # the interval's exact coverage, at least the level asked for when n allows


def median_confidence_interval(values: Sequence[float], level: float = 0.95) -> Interval:
    """Distribution-free confidence interval of a median, from two order statistics.

    A median over a few dozen series moves by a hundredth when one series
    does; the interval says which differences (from a target, from another
    run) the series can tell apart. The ranks are those a Binomial(n, 1/2)
    brackets with at most (1 - level) / 2 in each tail, so the coverage is
    exact and no resampling seed enters the report. Below 6 values no pair
    reaches 95 %: the range is returned with the coverage it has.
    """
    x = np.sort(np.asarray(values, dtype=float))
    n = x.size
    if n == 0:
        return Interval(float("nan"), float("nan"), 0.0)
    tail = (1.0 - level) / 2.0
    # k: the largest 1-based rank with P(B <= k - 1) <= tail (at least 1: the range).
    k = 1
    while k < (n + 1) // 2 and stats.binom.cdf(k, n, 0.5) <= tail:
        k += 1
    coverage = 1.0 - 2.0 * float(stats.binom.cdf(k - 1, n, 0.5))
    return Interval(float(x[k - 1]), float(x[n - k]), coverage)
