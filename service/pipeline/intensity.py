"""Pixel values: stored to physical, and the z-score every network input gets.

Pure functions on arrays, used by the volume stage, the Hough search and the model inputs.
"""

from __future__ import annotations

import numpy as np


def to_float(stored: np.ndarray, slope: float = 1.0, intercept: float = 0.0) -> np.ndarray:
    """Stored pixel values to physical values (Rescale Slope/Intercept)."""
    return np.asarray(stored, dtype=np.float32) * np.float32(slope) + np.float32(intercept)


def zscore(image: np.ndarray, mask: np.ndarray | None = None,
           percentiles: tuple[float, float] = (0.5, 99.5)) -> np.ndarray:
    """Z-score as in the ENet paper, made robust to outliers.

    Values are clipped at the given percentiles before the mean and standard
    deviation are taken, so a few very bright pixels (fat, flow artefacts) do
    not set the scale. With ``mask``, statistics come from inside the mask and
    everything outside becomes 0 (Protocol 2: the image times the myocardium).
    """
    image = np.asarray(image, dtype=np.float32)
    values = image[mask.astype(bool)] if mask is not None else image.ravel()
    if values.size < 2:
        return np.zeros_like(image)
    lo, hi = percentile(values, percentiles)
    clipped = np.clip(values, lo, hi)  # float64, as lo and hi are
    # numpy's mean and std (ndarray.std's own steps), the sum taken once.
    mean = clipped.sum() / clipped.size
    clipped -= mean
    std = float(np.sqrt(np.square(clipped).sum() / clipped.size))
    scale = std if std > 1e-6 else 1.0
    if mask is None:  # the centred values are the image's: no second clip of it
        clipped /= scale
        return clipped.reshape(image.shape).astype(np.float32)
    out = np.clip(image, lo, hi)
    out -= float(mean)
    out /= scale
    out[~mask.astype(bool)] = 0.0
    return out.astype(np.float32)


# Ranks within this share of either end of the data are found among the values beyond a
# threshold read off a sample, not by partitioning the whole array.
_TAIL_SHARE = 0.05
_SAMPLE_STEP = 16


def percentile(values: np.ndarray, q):
    """``np.percentile(values, q)`` (method "linear") of a flat array: the same numbers,
    of the same type, faster for ranks near either end (the z-score's 0.5th and 99.5th).

    numpy partitions the whole array around the ranks it needs; the values below (or
    above) a threshold taken from a sample of the array hold the low (or high) ranks
    themselves, and are a few per cent of it. Where the threshold does not hold enough
    values, the whole array is partitioned as numpy does.
    """
    values = np.asarray(values).ravel()
    n = values.size
    weak = type(q) in (int, float)  # numpy's weak promotion of a Python scalar q
    virtual = (n - 1) * np.asanyarray(np.true_divide(q, 100))
    shape = virtual.shape
    virtual = np.atleast_1d(virtual)
    # numpy's _get_indexes and _get_gamma for method "linear".
    previous = np.floor(virtual)
    following = previous + 1
    above = virtual >= n - 1
    previous[above] = following[above] = -1
    below = virtual < 0
    previous[below] = following[below] = 0
    previous, following = previous.astype(np.intp), following.astype(np.intp)
    gamma = np.asanyarray(virtual - previous, dtype=virtual.dtype)
    ranks = np.unique(np.concatenate([previous.ravel() % n, following.ravel() % n]))
    stats = dict(zip(ranks.tolist(), _order_statistics(values, ranks).tolist(), strict=True))
    dtype = values.dtype
    a = np.asarray([stats[k % n] for k in previous.tolist()], dtype)
    b = np.asarray([stats[k % n] for k in following.tolist()], dtype)
    # numpy's _lerp.
    t = float(gamma[0]) if weak else gamma
    diff = b - a
    result = np.add(a, diff * t)
    np.subtract(b, diff * (1 - t), out=result, where=np.asarray(t) >= 0.5, casting="unsafe",
                dtype=type(result.dtype))
    if np.issubdtype(dtype, np.inexact) and np.isnan(values.max()):
        result = np.full_like(result, np.nan)
    result = result.reshape(shape)
    return result[()] if result.ndim == 0 else result


def _order_statistics(values: np.ndarray, ranks: np.ndarray) -> np.ndarray:
    """``np.partition(values, ranks)[ranks]`` for sorted distinct ``ranks``."""
    n = values.size
    tail = int(n * _TAIL_SHARE)
    low, high = ranks[ranks < tail], ranks[ranks >= n - tail]
    if n < 64 * _SAMPLE_STEP or low.size + high.size < ranks.size:
        return np.partition(values, ranks)[ranks]
    sample = values[::_SAMPLE_STEP]
    m = sample.size
    out = []
    if low.size:
        # A threshold with about twice the needed share of the sample below it.
        j = min(m - 1, 2 * (int(low[-1]) + 1) * m // n + 4)
        below = values[values <= np.partition(sample, j)[j]]
        if below.size <= low[-1]:
            return np.partition(values, ranks)[ranks]
        out.append(np.partition(below, low)[low])
    if high.size:
        j = max(0, m - 1 - (2 * (n - int(high[0])) * m // n + 4))
        above = values[values >= np.partition(sample, j)[j]]
        first = n - above.size  # the rank of the smallest value kept
        if first > high[0]:
            return np.partition(values, ranks)[ranks]
        out.append(np.partition(above, high - first)[high - first])
    return np.concatenate(out)
