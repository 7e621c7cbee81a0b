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
        sigma = self._sigma
        if order == 1:
            return _resample(image, self.scale, self.offset, self.model_shape, sigma, fill,
                             self.source_shape if image.shape[-2:] == self.window_shape
                             else None)
        if order > 0 and any(s > 0 for s in sigma):
            image = ndimage.gaussian_filter(image, (0,) * (image.ndim - 2) + sigma,
                                            mode="nearest")
        return _stacked(image, lambda plane, cval: ndimage.affine_transform(
            plane, np.asarray(self.scale), offset=np.asarray(self.offset),
            output_shape=self.model_shape, order=order, mode="constant", cval=cval,
            prefilter=False), fill)

    @property
    def _sigma(self) -> tuple[float, float]:
        """The Gaussian's sigma per axis before linear downsampling (0: none)."""
        return tuple(max(0.0, (s - 1.0) / 2.0) for s in self.scale)

    @property
    def source_window(self) -> tuple[slice, slice]:
        """The source rows and columns that linear resampling (:meth:`to_model`) reads.

        ``to_model(image[window])`` is ``to_model(image)``: cut a stack to the window
        before copying it (a heart box reads a tenth of the slice).
        """
        plan = _plan(self.scale, self.offset, self.source_shape, self.model_shape,
                     self._sigma)
        return plan[0][3], plan[1][3]

    @property
    def window_shape(self) -> tuple[int, int]:
        rows, cols = self.source_window
        return rows.stop - rows.start, cols.stop - cols.start

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
                 sigma: float) -> tuple[np.ndarray, np.ndarray, slice, slice]:
    """One axis of a linear resampling (after an optional Gaussian) as a matrix.

    Returns ``(weights, inside, outputs, inputs)``: ``weights @ line[inputs]`` is
    ``ndimage.affine_transform(gaussian_filter1d(line, sigma, mode="nearest"), scale,
    offset, order=1, mode="constant", cval=0)[outputs]``, ``inside`` is the share of each
    output sample that falls on the input (where the rest is ``cval``), and outside
    ``outputs`` nothing falls on the input. The matrices are scipy's own answer on unit
    impulses, so the result is scipy's, to float32 rounding, while a whole stack is
    resampled by two matrix products instead of a Python loop of per-slice calls; they
    are cut to the outputs that fall on the input and the inputs that reach them (a heart
    box reads a quarter of the slice's rows and columns, and maps back onto them).
    """
    interpolate = ndimage.affine_transform(
        np.eye(n_in), np.array([scale, 1.0]), offset=np.array([offset, 0.0]),
        output_shape=(n_out, n_in), order=1, mode="constant", cval=0.0, prefilter=False)
    weights = interpolate @ _gaussian_matrix(n_in, sigma) if sigma > 0 else interpolate
    inside = interpolate.sum(axis=1).astype(np.float32)
    outputs, inputs = _span(inside), _span(np.abs(weights).sum(axis=0))
    weights = np.ascontiguousarray(weights[outputs, inputs], dtype=np.float32)
    weights.flags.writeable = inside.flags.writeable = False
    return weights, inside, outputs, inputs


def _plan(scale: tuple[float, float], offset: tuple[float, float],
          source_shape: tuple[int, int], shape: tuple[int, int], sigma: tuple[float, float]
          ) -> tuple[tuple, tuple]:
    return tuple(_axis_matrix(float(scale[a]), float(offset[a]), int(source_shape[a]),
                              int(shape[a]), float(sigma[a])) for a in range(2))


def _resample(image: np.ndarray, scale: tuple[float, float], offset: tuple[float, float],
              shape: tuple[int, int], sigma: tuple[float, float],
              fill: float | np.ndarray, source_shape: tuple[int, int] | None = None
              ) -> np.ndarray:
    """Separable linear resampling of (..., rows, columns): ``rows @ image @ columns.T``.

    Only the output rows and columns that fall on the input are computed, from only the
    input rows and columns that reach them; the rest is ``fill``. ``image`` may already
    be cut to those inputs (:meth:`GridTransform.source_window`): pass the full
    ``source_shape`` then.
    """
    source_shape = image.shape[-2:] if source_shape is None else source_shape
    (rows, rows_inside, r_out, r_in), (cols, cols_inside, c_out, c_in) = _plan(
        scale, offset, source_shape, shape, sigma)
    fill = np.asarray(fill, dtype=np.float32).reshape(np.shape(fill) + (1, 1))
    lead = image.shape[:-2]
    if fill.any():
        out = np.empty((*lead, *shape), np.float32)
        out[...] = fill
    else:
        out = np.zeros((*lead, *shape), np.float32)  # fresh zero pages: nothing to write
    if r_out.stop > r_out.start and c_out.stop > c_out.start:
        if tuple(image.shape[-2:]) == tuple(source_shape):
            image = image[..., r_in, c_in]
        part = rows @ image @ cols.T
        if fill.any():
            part += fill * (1.0 - rows_inside[r_out, None] * cols_inside[None, c_out])
        out[..., r_out, c_out] = part
    return out


def _span(weights: np.ndarray) -> slice:
    """From the first to one past the last nonzero entry."""
    hits = np.flatnonzero(weights > 0)
    return slice(int(hits[0]), int(hits[-1]) + 1) if hits.size else slice(0, 0)


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

    def resample(t: GridTransform, idx: np.ndarray) -> np.ndarray:
        # Only the window the map reads is copied (the stack is made of it).
        window = (Ellipsis, *t.source_window)
        return t.to_model(np.stack([np.asarray(slices[k][window], np.float32) for k in idx]),
                          fill=fills[idx])
    return _by_transform(transforms, resample)


def to_source_stack(transforms: Sequence[GridTransform], arrays: np.ndarray) -> np.ndarray:
    """Model-grid arrays (N, ..., rows, columns), each back on its slice's source grid."""
    return _by_transform(transforms, lambda t, idx: t.to_source(arrays[idx]))


def _by_transform(transforms: Sequence[GridTransform], resample) -> np.ndarray:
    groups: dict[GridTransform, list[int]] = {}
    for k, t in enumerate(transforms):
        groups.setdefault(t, []).append(k)
    if len(groups) == 1:  # one map for the whole stack: its answer is the stack's
        return resample(transforms[0], np.arange(len(transforms)))
    out = None
    for t, idx in groups.items():
        part = resample(t, np.asarray(idx))
        if out is None:
            out = np.empty((len(transforms), *part.shape[1:]), np.float32)
        out[idx] = part
    return out
