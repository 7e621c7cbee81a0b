"""Overlay PNGs: one slice, window/level from its series, myocardium outlined, scar filled.

Colours are from the Okabe-Ito palette, distinguishable with the common
colour-vision deficiencies and against grey, and the same as the SEG's
RecommendedDisplayCIELabValue: the myocardium is a sky-blue outline (the
wall stays readable under it), the scar a vermillion fill at 45 % opacity
with a vermillion border. Pixels are upscaled by an integer factor
(nearest neighbour), so every source pixel stays a square block and the
overlay never invents detail.
"""

from __future__ import annotations

import io
import math

import numpy as np
from PIL import Image
from scipy import ndimage

from service.dicom.seg import MVO_RGB, MYOCARDIUM_RGB, SCAR_RGB

SCAR_OPACITY = 0.45
TARGET_SIDE_PX = 512
MAX_SCALE = 8


def auto_window(images: np.ndarray) -> tuple[float, float]:
    """(width, level) from the series' own signal: the 1st to 99.5th percentile.

    Taken over the whole series so that stepping through slices does not
    change the grey scale; a few very bright pixels (fat, a flow artefact)
    cannot squash the myocardium into black.
    """
    values = np.asarray(images, dtype=np.float32)
    lo, hi = np.percentile(values, [1.0, 99.5])
    if hi <= lo:
        hi = lo + 1.0
    return float(hi - lo), float((hi + lo) / 2.0)


def heart_box(myocardium: np.ndarray, spacing: tuple[float, float],
              margin_mm: float = 25.0) -> tuple[int, int, int, int] | None:
    """(y0, x0, y1, x1): a square around the myocardium of every slice plus a margin.

    One box for the whole series, so stepping through slices does not move
    the picture; None when no myocardium was found.
    """
    union = np.asarray(myocardium, dtype=bool).any(axis=0)
    if not union.any():
        return None
    ys, xs = np.nonzero(union)
    h, w = union.shape
    half_mm = max((ys.max() - ys.min() + 1) * spacing[0], (xs.max() - xs.min() + 1)
                  * spacing[1]) / 2 + margin_mm
    cy, cx = (ys.min() + ys.max()) / 2, (xs.min() + xs.max()) / 2
    ry, rx = half_mm / spacing[0], half_mm / spacing[1]
    y0, y1 = max(0, int(np.floor(cy - ry))), min(h, int(np.ceil(cy + ry)) + 1)
    x0, x1 = max(0, int(np.floor(cx - rx))), min(w, int(np.ceil(cx + rx)) + 1)
    return y0, x0, y1, x1


def default_scale(shape: tuple[int, int]) -> int:
    return int(min(MAX_SCALE, max(1, math.ceil(TARGET_SIDE_PX / max(shape)))))


def _grey(image: np.ndarray, width: float, level: float) -> np.ndarray:
    width = max(float(width), 1e-6)
    unit = np.clip((image.astype(np.float32) - (level - width / 2.0)) / width, 0.0, 1.0)
    return np.round(unit * 255.0).astype(np.uint8)


def _upscale(array: np.ndarray, scale: int) -> np.ndarray:
    return np.repeat(np.repeat(array, scale, axis=0), scale, axis=1)


def _outline(mask: np.ndarray, thickness: int) -> np.ndarray:
    return mask & ~ndimage.binary_erosion(mask, iterations=thickness, border_value=0)


def _fill(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], line: int) -> None:
    """Blend ``colour`` into ``rgb`` under ``mask`` and draw its outline, in place."""
    blended = (1.0 - SCAR_OPACITY) * rgb[mask] + SCAR_OPACITY * np.array(colour)
    rgb[mask] = np.round(blended).astype(np.uint8)
    rgb[_outline(mask, line)] = colour


# Where the networks disagree: Okabe-Ito reddish purple, apart from the masks' colours,
# blended in proportion to the spread from SPREAD_SHOWN up to SPREAD_FULL.
SPREAD_RGB = (204, 121, 167)
SPREAD_SHOWN, SPREAD_FULL = 0.05, 0.30


def render_overlay(image: np.ndarray, myocardium: np.ndarray, scar: np.ndarray,
                   width: float, level: float, scale: int, show_myocardium: bool = True,
                   show_scar: bool = True, mvo: np.ndarray | None = None,
                   spread: np.ndarray | None = None) -> np.ndarray:
    """The RGB (H*scale, W*scale, 3) uint8 picture of one slice.

    MVO (inside the scar) is filled yellow over the scar fill, shown with it; ``spread``
    (where the networks disagree, 0-1) is blended over both, the outline drawn last.
    """
    # uint8 throughout (3 bytes a pixel): only the scar's pixels are blended in float, so
    # the largest picture allowed costs a few tens of MB, not hundreds.
    grey = _upscale(np.round(_grey(image, width, level)).astype(np.uint8), scale)
    rgb = np.repeat(grey[..., None], 3, axis=2)
    line = max(1, scale // 2)
    if show_scar:
        filled = _upscale(np.asarray(scar, dtype=bool), scale)
        _fill(rgb, filled, SCAR_RGB, line)
        if mvo is not None and np.any(mvo):
            _fill(rgb, _upscale(np.asarray(mvo, dtype=bool), scale) & filled, MVO_RGB, line)
    if spread is not None:
        weight = _upscale(np.clip((np.asarray(spread, np.float32) - SPREAD_SHOWN)
                                  / (SPREAD_FULL - SPREAD_SHOWN), 0.0, 1.0), scale) * 0.75
        shown = weight > 0
        rgb[shown] = np.round(rgb[shown] * (1 - weight[shown, None])
                              + np.asarray(SPREAD_RGB, np.float32) * weight[shown, None]
                              ).astype(np.uint8)
    if show_myocardium:
        ring = _upscale(np.asarray(myocardium, dtype=bool), scale)
        rgb[_outline(ring, line)] = MYOCARDIUM_RGB
    return rgb


def to_png(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="PNG", compress_level=3)
    return buffer.getvalue()
