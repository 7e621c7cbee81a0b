"""A frozen copy of the preprocessing as it was when networks began training on it.

Issue 54 (performance) rewrote the resampling, the z-score and the Hough search for
speed; networks in training and in release were trained on the inputs this code makes.
The tests in ``test_preprocess_frozen.py`` compare the service's ``model_inputs``, crop
transforms, map back and Hough circles with these functions, verbatim from commit
5a1563d (``service/pipeline/intensity.py``, ``grid.py``, ``hough.py`` and
``preprocess.py``), so that no speed-up can change what a network sees. Do not edit
this file to make a test pass: a difference here is train/serve skew.
"""

# ruff: noqa

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import ndimage
from skimage.feature import canny

from service.pipeline.preprocess import InputSpec

Spacing = tuple[float, float]

# --- intensity.py




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

# --- grid.py





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

# --- hough.py






@dataclass(frozen=True)
class Circle:
    centre: tuple[float, float]  # (row, column) in source pixels
    radius_mm: float
    score: float


def hough_candidates(image: np.ndarray, spacing: Spacing,
                     radius_range_mm: tuple[float, float] = (10.0, 40.0),
                     n_peaks: int = 4) -> list[Circle]:
    """Strongest bright-inside circles of one slice (gradient-directed circle Hough).

    On dark-blood LGE the LV cavity is brighter than the nulled myocardium
    around it, so each Canny edge votes only towards the brighter side along
    its gradient. That ignores dark disks (aorta, lung) and halves the noise of
    an undirected transform. The slice is first resampled to isotropic 2 mm so
    radii mean the same thing whatever the matrix.
    """
    iso = 2.0
    shape = (max(8, round(image.shape[0] * spacing[0] / iso)),
             max(8, round(image.shape[1] * spacing[1] / iso)))
    grid = resample_transform(image.shape, spacing, iso, shape)
    small = grid.to_model(zscore(image), order=1)
    edges = canny(small, sigma=1.0, low_threshold=0.2, high_threshold=0.6)
    ys, xs = np.nonzero(edges)
    if ys.size == 0:
        return []
    smooth = ndimage.gaussian_filter(small, 1.0)
    gy = ndimage.sobel(smooth, axis=0)[ys, xs]
    gx = ndimage.sobel(smooth, axis=1)[ys, xs]
    norm = np.hypot(gy, gx) + 1e-9
    uy, ux = gy / norm, gx / norm
    radii = np.arange(radius_range_mm[0] / iso, radius_range_mm[1] / iso + 1e-6, 1.0)
    # Every radius's votes in one count, then one 3x3 box filter over the stack of radii.
    cy = np.rint(ys[None, :] + radii[:, None] * uy[None, :]).astype(int)
    cx = np.rint(xs[None, :] + radii[:, None] * ux[None, :]).astype(int)
    ok = (cy >= 0) & (cy < shape[0]) & (cx >= 0) & (cx < shape[1])
    which = np.broadcast_to(np.arange(radii.size)[:, None], cy.shape)
    votes = np.bincount(np.ravel_multi_index((which[ok], cy[ok], cx[ok]),
                                             (radii.size, *shape)),
                        minlength=radii.size * shape[0] * shape[1])
    acc = votes.reshape(radii.size, *shape).astype(np.float32)
    # Fraction of the circumference that voted, so large circles are not favoured.
    acc = (ndimage.uniform_filter(acc, (1, 3, 3)) * 9
           / (2 * np.pi * radii)[:, None, None]).astype(np.float32)
    best_r = acc.argmax(axis=0)
    flat = acc.max(axis=0)
    peaks = []
    for _ in range(n_peaks * 3):
        y, x = np.unravel_index(int(flat.argmax()), flat.shape)
        if flat[y, x] <= 0.15:
            break
        r = radii[best_r[y, x]]
        # The LV cavity is much brighter than the nulled ring around it; the
        # spine or liver are only a little brighter than their surroundings
        # (both measured within the circle's reach, not over the whole slice).
        reach = int(np.ceil(r + 3.5))
        rows = slice(max(0, y - reach), min(shape[0], y + reach + 1))
        cols = slice(max(0, x - reach), min(shape[1], x + reach + 1))
        yy, xx = np.mgrid[rows, cols]
        dist = np.hypot(yy - y, xx - x)
        near = small[rows, cols]
        inside = near[dist < 0.8 * r]
        ring = near[(dist > r + 0.5) & (dist < r + 3.5)]
        contrast = (float(np.median(inside) - np.percentile(ring, 75))
                    if inside.size and ring.size else 0.0)
        # The heart is planned near the centre of a short-axis field of view.
        off_centre_mm = iso * np.hypot(y - (shape[0] - 1) / 2, x - (shape[1] - 1) / 2)
        prior = np.exp(-0.5 * (off_centre_mm / 35.0) ** 2)
        src = (grid.scale[0] * y + grid.offset[0], grid.scale[1] * x + grid.offset[1])
        peaks.append(Circle(centre=src, radius_mm=float(r * iso),
                            score=float(flat[y, x]) * max(contrast, 0.0) * prior))
        flat[max(0, y - 5):y + 6, max(0, x - 5):x + 6] = 0
    peaks.sort(key=lambda c: -c.score)
    return [c for c in peaks[:n_peaks] if c.score > 0]


def hough_lv_circles(slices: Sequence[np.ndarray], spacing: Spacing,
                     radius_range_mm: tuple[float, float] = (10.0, 40.0),
                     max_jump_mm: float = 20.0) -> list[Circle]:
    """One LV circle per slice of a stack, consistent along the long axis.

    Per-slice Hough peaks can lock onto the RV, the aorta or the spine. The
    LV is the centre that most slices agree on, so each candidate is scored by
    the support it gets from the other slices' candidates within
    ``max_jump_mm``; every slice then takes its candidate nearest to that
    consensus, or the consensus itself (median radius) when it has none.
    """
    per_slice = [hough_candidates(s, spacing, radius_range_mm) for s in slices]
    flat = [c for cands in per_slice for c in cands]
    if not flat:
        centre = (slices[0].shape[0] / 2.0, slices[0].shape[1] / 2.0)
        return [Circle(centre, radius_range_mm[1] / 2, 0.0) for _ in slices]
    pts = np.array([c.centre for c in flat]) * np.asarray(spacing)
    weights = np.array([c.score for c in flat])
    dist = np.linalg.norm(pts[:, None, :] - pts[None, :, :], axis=-1)
    support = ((dist < max_jump_mm) * weights[None, :]).sum(axis=1)
    best = int(np.argmax(support))
    near = dist[best] < max_jump_mm
    consensus = np.average(pts[near], axis=0, weights=weights[near]) / np.asarray(spacing)
    median_radius = float(np.median([c.radius_mm for c, ok in zip(flat, near, strict=True) if ok]))
    chosen = []
    for cands in per_slice:
        # A slice's own circle must sit close to the consensus (the LV axis is
        # planned along the slice normal); farther ones are papillary gaps or RV.
        best_c, best_d = None, max_jump_mm / 2
        for c in cands:
            d = float(np.linalg.norm((np.asarray(c.centre) - consensus) * np.asarray(spacing)))
            if d < best_d:
                best_c, best_d = c, d
        chosen.append(best_c or Circle(tuple(consensus), median_radius, 0.0))
    return chosen


def hough_crop_transform(circle: Circle, spacing: Spacing, source_shape: tuple[int, int],
                         model_side: int = 64, wall_mm: float = 10.0,
                         min_side_mm: float = 110.0) -> GridTransform:
    """ENet crop: a square centred on the LV, side twice the LV diameter, to 64x64.

    The Hough circle is the endocardium (the bright cavity), so the LV
    (epicardial) diameter is its diameter plus two typical walls. Near the
    apex or under heavy scar the circle can be small or off-centre, so the
    side never drops below ``min_side_mm`` and the whole LV stays inside.
    """
    side_mm = max(4.0 * (circle.radius_mm + wall_mm), min_side_mm)
    return square_box_transform(circle.centre, side_mm, spacing, (model_side, model_side),
                                source_shape)

# --- preprocess.py





# --- Model inputs ----------------------------------------------------------
# How each kind of network input is cut and normalised, in one function
# (:func:`model_inputs`), so training and serving see slices identically.
# Parameters come from the model's manifest entry.
#
# Cascade CNN1 (``whole_image``): the whole slice z-scored, at the spec's spacing,
# centred; field of view beyond the image is filled with the darkest kept value
# (air), not with 0, which after the z-score would be mid-gray tissue.
# Crops (heart box, Hough circle): z-scored on the crop itself, as the ENet paper
# does; with ``masked``, multiplied by the myocardium and normalised from inside it
# (the ENet paper's Protocol 2).


def crop_transforms(images: Sequence[np.ndarray], spacing: Spacing, spec: InputSpec,
                    myocardium: np.ndarray | None = None) -> list[GridTransform] | None:
    """The crop of every slice for a ``heart_box`` or ``hough_circle`` network.

    A heart box needs the myocardium (z, y, x); None when it is empty.
    """
    if spec.crop == "heart_box":
        if myocardium is None:
            raise ValueError("a heart_box crop needs the myocardium")
        box = bounding_box_transform(np.asarray(myocardium).any(axis=0), spacing, spec.shape,
                                     spec.margin_mm, spec.min_side_mm)
        return None if box is None else [box] * len(images)
    if spec.crop == "hough_circle":
        circles = hough_lv_circles(images, spacing)
        return [hough_crop_transform(c, spacing, np.shape(im), model_side=spec.shape[0])
                for c, im in zip(circles, images, strict=True)]
    raise ValueError(f"{spec.crop} is not a crop")


def _offsets(context: int) -> list[int]:
    return [d for k in range(1, context + 1) for d in (-k, k)]


def with_context(batch: np.ndarray, context: int) -> np.ndarray:
    """(N, H, W) slices to (N, H, W, 1 + 2 * context): each slice, then its neighbours.

    Neighbours come from the series' geometric order (the caller's), clamped
    at the ends of the stack.
    """
    batch = np.asarray(batch, dtype=np.float32)
    n = len(batch)
    channels = [batch] + [batch[np.clip(np.arange(n) + d, 0, n - 1)] for d in _offsets(context)]
    return np.stack(channels, axis=-1)


PEAK_RATIO_CLIP = 2.0


def series_peak(images: Sequence[np.ndarray], myocardium: np.ndarray,
                percentile: float = 99.0) -> float:
    """The 99th percentile of myocardial signal over the series (one hot pixel is noise)."""
    mask = np.asarray(myocardium, dtype=bool)
    values = np.concatenate([np.asarray(im, np.float32)[m] for im, m in zip(images, mask,
                                                                            strict=True)])
    if values.size == 0:
        return 1.0
    peak = float(np.percentile(values, percentile))
    return peak if peak > 1e-6 else 1.0


def model_inputs(images: Sequence[np.ndarray], spacing: Spacing, spec: InputSpec,
                 transforms: Sequence[GridTransform] | None = None,
                 myocardium: np.ndarray | None = None
                 ) -> tuple[np.ndarray, list[GridTransform]]:
    """The batch (N, H, W, channels) a network gets for a series, and each slice's transform."""
    if spec.crop == "whole_image":
        transforms = [resample_transform(np.shape(im), spacing, spec.spacing_mm, spec.shape)
                      for im in images]
        scored = [zscore(im) for im in images]
        batch = to_model_stack(transforms, scored, [float(z.min()) for z in scored])
        return with_context(batch, spec.context_slices), transforms
    if transforms is None:
        raise ValueError("a crop network needs its crop transforms")
    if (spec.masked or spec.myocardium_channel or spec.peak_ratio_channel) \
            and myocardium is None:
        raise ValueError("this network needs the myocardium as input")
    crops = to_model_stack(transforms, images,
                           [float(np.percentile(np.asarray(im, np.float32), 0.5))
                            for im in images])
    mask_crops = None if myocardium is None or not (spec.masked or spec.myocardium_channel) \
        else to_model_stack(transforms, np.asarray(myocardium, np.float32))
    scored = np.stack([zscore(crop, mask_crops[k] >= 0.5 if spec.masked else None)
                       for k, crop in enumerate(crops)])
    channels = list(np.moveaxis(with_context(scored, spec.context_slices), -1, 0))
    if spec.myocardium_channel:
        channels.append(mask_crops)
    if spec.peak_ratio_channel:
        peak = series_peak(images, myocardium)
        channels.append(to_model_stack(
            transforms, [np.asarray(im, np.float32) / peak for im in images]
        ).clip(0.0, PEAK_RATIO_CLIP))
    return np.stack(channels, axis=-1).astype(np.float32), list(transforms)

# --- postprocess.py (mask_box, encloses_a_hole), for timing the old pipeline -----


def encloses_a_hole(mask: np.ndarray) -> bool:
    return bool((ndimage.binary_fill_holes(mask) & ~mask).any())


def mask_box(mask: np.ndarray, margin: int | tuple[int, int] = 1
             ) -> tuple[slice, slice] | None:
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return None
    my, mx = (margin, margin) if isinstance(margin, int) else margin
    return (slice(max(int(ys.min()) - my, 0), int(ys.max()) + my + 1),
            slice(max(int(xs.min()) - mx, 0), int(xs.max()) + mx + 1))


# --- Not from 5a1563d: the old pipeline composed from the frozen pieces ----------


def frozen_segment(images, spacing, myocardium_net, scar_net):
    """``service.pipeline.segment.segment`` with the frozen cutting, region sums and
    mapping back (the networks and the mask post-processing are the service's)."""
    from service.pipeline import segment as seg

    def regions_on_source(net, batch, transforms, keep=None):
        regions = seg.nested_regions(net.predict(batch), net.disjoint)
        if keep is not None:
            regions = regions[..., list(keep)]
        back = to_source_stack([GridTransform(t.scale, t.offset, t.model_shape,
                                              t.source_shape) for t in transforms],
                               np.moveaxis(regions, -1, 1))
        return np.moveaxis(back, 1, 0)

    batch, transforms = model_inputs(images, spacing, myocardium_net.spec)
    names = myocardium_net.region_names
    wanted = names.index("myocardium") if "myocardium" in names else -1
    myo_p = regions_on_source(myocardium_net, batch, transforms, keep=[wanted])[0]
    ring = seg.ring_from(myo_p, myocardium_net)
    crops = crop_transforms(images, spacing, scar_net.spec, ring)
    if scar_net.spec.hough_near_heart:
        # The search near the heart (round 4's ENets) came after the freeze: its circles
        # are the service's (test_preprocess_near_heart checks them), the rest is frozen.
        from service.pipeline.preprocess import crop_transforms as searched_near_the_heart

        crops = [GridTransform(t.scale, t.offset, t.model_shape, t.source_shape)
                 for t in searched_near_the_heart(images, spacing, scar_net.spec, ring)]
    regions = None
    if crops is not None:
        batch, crops = model_inputs(images, spacing, scar_net.spec, crops, ring)
        regions = regions_on_source(scar_net, batch, crops)
    return seg.masks_from_regions(regions, spacing, ring, myo_p, scar_net)
