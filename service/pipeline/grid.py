"""Pixel grids: every crop and resampling as one axis-aligned affine map.

``source = scale * model + offset`` with pixel centres at integer indices, so the
inverse is exact and one code path serves the cascade's whole-image and bounding-box
inputs and the ENet's Hough-circle crop. Linear resampling after a Gaussian is
``rows @ image @ columns.T`` with matrices cached per map. Pure functions only.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage

Spacing = tuple[float, float]


@dataclass(frozen=True)
class GridTransform:
    """Axis-aligned map from a model grid onto a source grid.

    ``source_index = scale * model_index + offset`` per axis (row, column).
    """

    scale: tuple[float, float]
    offset: tuple[float, float]
    model_shape: tuple[int, int]
    source_shape: tuple[int, int]

    @classmethod
    def from_box(cls, top_left: tuple[float, float], side: tuple[float, float],
                 model_shape: tuple[int, int], source_shape: tuple[int, int]) -> GridTransform:
        """A box given by its outer edges in source pixels (edges at index - 0.5)."""
        scale = (side[0] / model_shape[0], side[1] / model_shape[1])
        offset = tuple(top_left[a] - 0.5 + 0.5 * scale[a] for a in range(2))
        return cls(scale=scale, offset=offset, model_shape=tuple(model_shape),
                   source_shape=tuple(source_shape))

    def to_model(self, image: np.ndarray, order: int = 1,
                 fill: float | np.ndarray = 0.0) -> np.ndarray:
        """Sample ``image`` (source grid) on the model grid; outside the image is ``fill``.

        Downsampling first low-passes the image so that thin bright structures
        (scar) are averaged, not aliased. ``image`` may be a stack (..., rows,
        columns) of slices sharing this transform, with one ``fill`` per slice.
        """
        image = np.asarray(image, dtype=np.float32)
        sigma = tuple(max(0.0, (s - 1.0) / 2.0) for s in self.scale)
        if order == 1:
            return _resample(image, self.scale, self.offset, self.model_shape, sigma, fill)
        if order > 0 and any(s > 0 for s in sigma):
            image = ndimage.gaussian_filter(image, (0,) * (image.ndim - 2) + sigma,
                                            mode="nearest")
        return _stacked(image, lambda plane, cval: ndimage.affine_transform(
            plane, np.asarray(self.scale), offset=np.asarray(self.offset),
            output_shape=self.model_shape, order=order, mode="constant", cval=cval,
            prefilter=False), fill)

    def to_source(self, model_array: np.ndarray, order: int = 1) -> np.ndarray:
        """Sample a model-grid array (e.g. class probabilities, or a stack of them) on the
        source grid."""
        inv = tuple(1.0 / s for s in self.scale)
        off = tuple(-o / s for o, s in zip(self.offset, self.scale, strict=True))
        model_array = np.asarray(model_array, dtype=np.float32)
        if order == 1:
            return _resample(model_array, inv, off, self.source_shape, (0.0, 0.0), 0.0)
        return _stacked(model_array, lambda plane, cval: ndimage.affine_transform(
            plane, np.asarray(inv), offset=np.asarray(off), output_shape=self.source_shape,
            order=order, mode="constant", cval=cval, prefilter=False), 0.0)

    def mask_to_source(self, model_mask: np.ndarray) -> np.ndarray:
        """A binary model mask back on the source grid (linear interpolation, then 0.5)."""
        return self.to_source(model_mask.astype(np.float32), order=1) >= 0.5


@lru_cache(maxsize=16)
def _gaussian_matrix(n: int, sigma: float) -> np.ndarray:
    """``gaussian_filter1d(line, sigma, mode="nearest")`` as a matrix (scipy's, on unit
    impulses); the same for every slice of a size, so it is built once."""
    return ndimage.gaussian_filter1d(np.eye(n), sigma, axis=0, mode="nearest")


@lru_cache(maxsize=64)
def _axis_matrix(scale: float, offset: float, n_in: int, n_out: int,
                 sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """One axis of a linear resampling (after an optional Gaussian) as a matrix.

    Returns ``(weights, inside)``: ``weights @ line`` is
    ``ndimage.affine_transform(gaussian_filter1d(line, sigma, mode="nearest"), scale,
    offset, order=1, mode="constant", cval=0)``, and ``inside`` is the share of each
    output sample that falls on the input (where the rest is ``cval``). The matrices
    are scipy's own answer on unit impulses, so the result is scipy's, to float32
    rounding, while a whole stack is resampled by two matrix products instead of a
    Python loop of per-slice calls.
    """
    interpolate = ndimage.affine_transform(
        np.eye(n_in), np.array([scale, 1.0]), offset=np.array([offset, 0.0]),
        output_shape=(n_out, n_in), order=1, mode="constant", cval=0.0, prefilter=False)
    weights = interpolate @ _gaussian_matrix(n_in, sigma) if sigma > 0 else interpolate
    weights = weights.astype(np.float32)
    inside = interpolate.sum(axis=1).astype(np.float32)
    weights.flags.writeable = inside.flags.writeable = False
    return weights, inside


def _resample(image: np.ndarray, scale: tuple[float, float], offset: tuple[float, float],
              shape: tuple[int, int], sigma: tuple[float, float],
              fill: float | np.ndarray) -> np.ndarray:
    """Separable linear resampling of (..., rows, columns): ``rows @ image @ columns.T``.

    Only the output rows and columns that fall on the input are computed (a heart
    box maps back onto a tenth of the slice); the rest is ``fill``.
    """
    rows, rows_inside = _axis_matrix(float(scale[0]), float(offset[0]), image.shape[-2],
                                     int(shape[0]), float(sigma[0]))
    cols, cols_inside = _axis_matrix(float(scale[1]), float(offset[1]), image.shape[-1],
                                     int(shape[1]), float(sigma[1]))
    fill = np.asarray(fill, dtype=np.float32).reshape(np.shape(fill) + (1, 1))
    out = np.empty((*image.shape[:-2], *shape), np.float32)
    out[...] = fill
    (r0, r1), (c0, c1) = _span(rows_inside), _span(cols_inside)
    if r1 > r0 and c1 > c0:
        part = rows[r0:r1] @ image @ cols[c0:c1].T
        if fill.any():
            part += fill * (1.0 - rows_inside[r0:r1, None] * cols_inside[None, c0:c1])
        out[..., r0:r1, c0:c1] = part
    return out


def _span(inside: np.ndarray) -> tuple[int, int]:
    """The first and one past the last output sample that falls on the input."""
    hits = np.flatnonzero(inside > 0)
    return (int(hits[0]), int(hits[-1]) + 1) if hits.size else (0, 0)


def _stacked(image: np.ndarray, resample, fill: float | np.ndarray) -> np.ndarray:
    """Apply a 2-D ``resample(plane, cval)`` to every plane of (..., rows, columns)."""
    planes = image.reshape(-1, *image.shape[-2:])
    fills = np.broadcast_to(np.asarray(fill, np.float32), image.shape[:-2]).reshape(-1)
    out = np.stack([resample(p, float(f)) for p, f in zip(planes, fills, strict=True)])
    return out.reshape(*image.shape[:-2], *out.shape[-2:])


def resample_transform(source_shape: tuple[int, int], spacing: Spacing, target_spacing: float,
                       model_shape: tuple[int, int]) -> GridTransform:
    """Whole image at ``target_spacing`` mm, centred, padded or cropped to ``model_shape``."""
    side = tuple(model_shape[a] * target_spacing / spacing[a] for a in range(2))
    top_left = tuple((source_shape[a] - side[a]) / 2.0 for a in range(2))
    return GridTransform.from_box(top_left, side, model_shape, source_shape)


def square_box_transform(centre: tuple[float, float], side_mm: float, spacing: Spacing,
                         model_shape: tuple[int, int], source_shape: tuple[int, int]
                         ) -> GridTransform:
    """A square of ``side_mm`` (physical, so non-square pixels stay undistorted)."""
    side = (side_mm / spacing[0], side_mm / spacing[1])
    top_left = (centre[0] - side[0] / 2.0, centre[1] - side[1] / 2.0)
    return GridTransform.from_box(top_left, side, model_shape, source_shape)


def bounding_box_transform(mask: np.ndarray, spacing: Spacing, model_shape: tuple[int, int],
                           margin_mm: float = 12.0, min_side_mm: float = 60.0
                           ) -> GridTransform | None:
    """Square crop around the heart's bounding box (cascade U-Net, CNN2 input).

    ``mask`` is the myocardium on the source grid (2-D; pass the union over
    slices for one box per series). Returns None when the mask is empty.
    """
    mask = np.asarray(mask, dtype=bool)
    if not mask.any():
        return None
    rows, cols = np.nonzero(mask)
    r0, r1 = rows.min() - 0.5, rows.max() + 0.5
    c0, c1 = cols.min() - 0.5, cols.max() + 0.5
    centre = ((r0 + r1) / 2.0, (c0 + c1) / 2.0)
    side_mm = max((r1 - r0) * spacing[0], (c1 - c0) * spacing[1]) + 2 * margin_mm
    return square_box_transform(centre, max(side_mm, min_side_mm), spacing, model_shape,
                                mask.shape)


# --- Stacks of slices, each on its own map --------------------------------


def to_model_stack(transforms: Sequence[GridTransform], slices: Sequence[np.ndarray],
                   fills: Sequence[float] | float = 0.0) -> np.ndarray:
    """Each slice (N, ..., rows, columns) on its transform's model grid, one fill each.

    Slices that share a transform (the whole-image grid, the cascade's heart box) are
    resampled together.
    """
    fills = np.broadcast_to(np.asarray(fills, np.float32), (len(transforms),))
    return _by_transform(transforms, lambda t, idx: t.to_model(
        np.stack([np.asarray(slices[k], np.float32) for k in idx]), fill=fills[idx]))


def to_source_stack(transforms: Sequence[GridTransform], arrays: np.ndarray) -> np.ndarray:
    """Model-grid arrays (N, ..., rows, columns), each back on its slice's source grid."""
    return _by_transform(transforms, lambda t, idx: t.to_source(arrays[idx]))


def _by_transform(transforms: Sequence[GridTransform], resample) -> np.ndarray:
    groups: dict[GridTransform, list[int]] = {}
    for k, t in enumerate(transforms):
        groups.setdefault(t, []).append(k)
    out = None
    for t, idx in groups.items():
        part = resample(t, np.asarray(idx))
        if out is None:
            out = np.empty((len(transforms), *part.shape[1:]), np.float32)
        out[idx] = part
    return out
