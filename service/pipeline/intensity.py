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
    lo, hi = np.percentile(values, percentiles)
    clipped = np.clip(values, lo, hi)
    std = float(clipped.std())
    out = (np.clip(image, lo, hi) - float(clipped.mean())) / (std if std > 1e-6 else 1.0)
    if mask is not None:
        out = np.where(mask.astype(bool), out, 0.0)
    return out.astype(np.float32)
