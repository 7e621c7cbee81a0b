"""Measurements from masks: areas, volumes, scar extent, and the classical thresholds.

Pure functions on (z, y, x) arrays ordered base to apex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .preprocess import Spacing


def sector_labels(myocardium: np.ndarray, n_sectors: int, start_angle_deg: float = 0.0
                  ) -> np.ndarray:
    """Angular sector (0..n-1) of every myocardial pixel around the slice's myocardium centroid.

    Angles are counter-clockwise on screen from the image's row direction
    (``start_angle_deg`` sets sector 0's first edge); -1 outside the myocardium.
    """
    labels = np.full(myocardium.shape, -1, dtype=np.int16)
    rows, cols = np.nonzero(myocardium)
    if rows.size == 0:
        return labels
    angle = np.degrees(np.arctan2(-(rows - rows.mean()), cols - cols.mean()))
    labels[rows, cols] = ((angle - start_angle_deg) % 360.0 // (360.0 / n_sectors)).astype(
        np.int16)
    return labels


def remote_statistics(image: np.ndarray, myocardium: np.ndarray, n_sectors: int = 6,
                      min_pixels: int = 10) -> tuple[float, float] | None:
    """Mean and SD of the remote (normal) myocardium of one slice.

    Chosen automatically: the sector with the lowest mean signal, since on
    LGE healthy myocardium is the nulled, darkest myocardium.
    """
    sectors = sector_labels(myocardium, n_sectors)
    best = None
    for s in range(n_sectors):
        values = image[sectors == s]
        if values.size >= min_pixels and (best is None or values.mean() < best.mean()):
            best = values
    return None if best is None else (float(best.mean()), float(best.std()))


def nsd_scar(images: Sequence[np.ndarray], myocardium: np.ndarray, n_sd: float = 4.0
             ) -> np.ndarray:
    """n-SD method: scar where the signal exceeds remote mean + n SD, slice by slice."""
    out = np.zeros(np.shape(myocardium), dtype=bool)
    for k, (image, myo) in enumerate(zip(images, myocardium, strict=True)):
        stats = remote_statistics(image, myo)
        if stats is not None:
            out[k] = myo & (image > stats[0] + n_sd * stats[1])
    return out


def fwhm_scar(images: Sequence[np.ndarray], myocardium: np.ndarray,
              peak_percentile: float = 99.0) -> np.ndarray:
    """Full width at half maximum: scar where the signal is at least half the series' peak.

    The peak is the 99th percentile of myocardial signal over the series (a
    single hottest pixel is noise), in place of a hand-drawn maximum ROI. It
    over-calls when there is no scar: half of a noise peak is little signal.
    """
    myocardium = np.asarray(myocardium, dtype=bool)
    stack = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    if not myocardium.any():
        return np.zeros_like(myocardium)
    peak = float(np.percentile(stack[myocardium], peak_percentile))
    return myocardium & (stack >= 0.5 * peak)


def pixel_area_mm2(spacing: Spacing) -> float:
    return float(spacing[0]) * float(spacing[1])


def scar_fraction(scar: np.ndarray, myocardium: np.ndarray) -> float:
    """Scar volume over myocardium volume, 0..1 (0 without myocardium)."""
    myo = int(np.count_nonzero(myocardium))
    return int(np.count_nonzero(np.asarray(scar) & np.asarray(myocardium))) / myo if myo else 0.0
