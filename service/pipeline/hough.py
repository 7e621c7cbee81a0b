"""The LV as a circle: the Hough search that places the ENet's crop on each slice.

Pure functions on 2-D slices with their pixel spacing in mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from skimage.feature import canny

from service.pipeline.grid import (
    GridTransform,
    Spacing,
    resample_transform,
    square_box_transform,
)
from service.pipeline.intensity import zscore


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
    return _candidates_of_stack([image], spacing, radius_range_mm, n_peaks)[0]


_ISO_MM = 2.0
_MIN_SHARE = 0.15  # a peak has at least this share of its circumference voting
# A heart's box grown by this holds the LV's edges and the ring round them that a circle's
# contrast reads, with room for a ring a network drew short.
HEART_MARGIN_MM = 15.0


def _candidates_of_stack(slices: Sequence[np.ndarray], spacing: Spacing,
                         radius_range_mm: tuple[float, float], n_peaks: int = 4,
                         heart: np.ndarray | None = None, margin_mm: float = HEART_MARGIN_MM
                         ) -> list[list[Circle]]:
    """:func:`hough_candidates` of every slice; slices of one shape share the resampling
    and the filters (one matrix product and one filter call per stack: each slice's
    numbers are the ones it gets alone, as every step works along rows or columns).

    ``heart`` (y, x): where the heart is on slices of its shape; their search is cut to
    its box grown by ``margin_mm`` (:func:`heart_window`).
    """
    by_shape: dict[tuple[int, int], list[int]] = {}
    for k, image in enumerate(slices):
        by_shape.setdefault(np.shape(image), []).append(k)
    out: list[list[Circle]] = [[] for _ in slices]
    for source_shape, idx in by_shape.items():
        shape = (max(8, round(source_shape[0] * spacing[0] / _ISO_MM)),
                 max(8, round(source_shape[1] * spacing[1] / _ISO_MM)))
        grid = resample_transform(source_shape, spacing, _ISO_MM, shape)
        window = (slice(0, shape[0]), slice(0, shape[1]))
        if heart is not None and np.shape(heart) == source_shape:
            window = heart_window(heart, grid, margin_mm)
        # The window's part of the whole search's grid, from the source pixels it reads of
        # each slice z-scored whole (so edges are found on the same values).
        part = GridTransform(
            scale=grid.scale, model_shape=(window[0].stop - window[0].start,
                                           window[1].stop - window[1].start),
            offset=tuple(grid.offset[a] + window[a].start * grid.scale[a] for a in range(2)),
            source_shape=grid.source_shape)
        reads = part.source_window
        small = part.to_model(np.stack([zscore(slices[k])[reads] for k in idx]), order=1)
        # ndimage.sobel of each slice: the derivative along one axis, smoothing along the
        # other only (never across slices).
        smooth = ndimage.gaussian_filter(small, (0.0, 1.0, 1.0))
        gy = ndimage.correlate1d(smooth, [-1, 0, 1], axis=1)
        ndimage.correlate1d(gy, [1, 2, 1], axis=2, output=gy)
        gx = ndimage.correlate1d(smooth, [-1, 0, 1], axis=2)
        ndimage.correlate1d(gx, [1, 2, 1], axis=1, output=gx)
        origin = (window[0].start, window[1].start)
        for j, k in enumerate(idx):
            out[k] = _slice_candidates(small[j], gy[j], gx[j], grid, radius_range_mm,
                                       n_peaks, origin)
    return out


def heart_window(heart: np.ndarray, grid: GridTransform, margin_mm: float
                 ) -> tuple[slice, slice]:
    """Rows and columns of the search's 2 mm grid (``grid``'s model grid) within
    ``margin_mm`` of the box round ``heart`` (y, x, the source grid); the whole grid when
    ``heart`` is empty."""
    rows, cols = np.nonzero(np.asarray(heart, dtype=bool))
    if rows.size == 0:
        return slice(0, grid.model_shape[0]), slice(0, grid.model_shape[1])
    reach = margin_mm / _ISO_MM
    window = []
    for axis, at in enumerate((rows, cols)):
        # Source pixel edges (index -/+ 0.5) onto the model grid: index = (source - offset)
        # / scale.
        low = (at.min() - 0.5 - grid.offset[axis]) / grid.scale[axis] - reach
        high = (at.max() + 0.5 - grid.offset[axis]) / grid.scale[axis] + reach
        n = grid.model_shape[axis]
        window.append(slice(int(np.clip(np.floor(low), 0, n)),
                            int(np.clip(np.ceil(high) + 1, 0, n))))
    return window[0], window[1]


def _slice_candidates(small: np.ndarray, gy: np.ndarray, gx: np.ndarray, grid: GridTransform,
                      radius_range_mm: tuple[float, float], n_peaks: int,
                      origin: tuple[int, int] = (0, 0)) -> list[Circle]:
    """Candidates of one slice, ``small`` being the rows and columns of ``grid``'s model
    grid from ``origin`` on."""
    iso, shape, whole = _ISO_MM, small.shape, grid.model_shape
    edges = canny(small, sigma=1.0, low_threshold=0.2, high_threshold=0.6)
    ys, xs = np.nonzero(edges)
    if ys.size == 0:
        return []
    gy, gx = gy[ys, xs], gx[ys, xs]
    norm = np.hypot(gy, gx) + 1e-9
    uy, ux = gy / norm, gx / norm
    radii = np.arange(radius_range_mm[0] / iso, radius_range_mm[1] / iso + 1e-6, 1.0)
    # Every radius's votes in one count, radius first (one plane per radius).
    cy = np.rint(ys[:, None] + radii[None, :] * uy[:, None]).astype(np.intp)
    cx = np.rint(xs[:, None] + radii[None, :] * ux[:, None]).astype(np.intp)
    ok = (cy >= 0) & (cy < shape[0]) & (cx >= 0) & (cx < shape[1])
    at = cy * shape[1]  # the flat index of (radius, row, column)
    at += cx
    at += np.arange(radii.size) * (shape[0] * shape[1])
    votes = np.bincount(at[ok], minlength=radii.size * shape[0] * shape[1]
                        ).reshape(radii.size, *shape)
    # Summed in int16 where they cannot overflow (a 3x3 sum of one radius counts each edge
    # pixel at most once, an end cell's four times): a quarter of the memory traffic.
    votes = votes.astype(np.int16 if 4 * ys.size <= np.iinfo(np.int16).max else np.int32)
    rows, cols, flat, best_r = _accumulator_peaks(votes, radii, _MIN_SHARE)
    picks = []
    # The strongest cell, then the next outside an 11x11 square around each pick (ties to
    # the first in C order, as a dense argmax).
    for _ in range(n_peaks * 3 if flat.size else 0):
        i = int(flat.argmax())
        if flat[i] <= _MIN_SHARE:
            break
        y, x = int(rows[i]), int(cols[i])
        picks.append((y, x, radii[best_r[i]], float(flat[i])))
        flat[(np.abs(rows - y) <= 5) & (np.abs(cols - x) <= 5)] = 0
    if not picks:
        return []
    contrasts = _contrasts(small, *(np.array(v) for v in list(zip(*picks, strict=True))[:3]))
    peaks = []
    for (y, x, r, share), contrast in zip(picks, contrasts, strict=True):
        y, x = y + origin[0], x + origin[1]
        # The heart is planned near the centre of a short-axis field of view (one circle
        # at a time: numpy's vectorised exp may round the last digit otherwise).
        off_centre_mm = iso * np.hypot(y - (whole[0] - 1) / 2, x - (whole[1] - 1) / 2)
        prior = np.exp(-0.5 * (off_centre_mm / 35.0) ** 2)
        src = (grid.scale[0] * y + grid.offset[0], grid.scale[1] * x + grid.offset[1])
        peaks.append(Circle(centre=src, radius_mm=float(r * iso),
                            score=share * max(contrast, 0.0) * prior))
    peaks.sort(key=lambda c: -c.score)
    return [c for c in peaks[:n_peaks] if c.score > 0]


def _accumulator_peaks(votes: np.ndarray, radii: np.ndarray, min_share: float
                       ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows, columns, best share and index of its radius of every accumulator cell whose
    share can exceed ``min_share``, in C order (as a dense ``argmax`` meets them).

    ``votes`` is (radius, row, column). The share is what scipy's ``uniform_filter``
    (3x3 box, 'reflect' ends, float32 output) times 9 over the circumference gives, bit
    for bit, computed only where it can pass. The integer 3x3 sums tell where (the float
    share is within 1e-6 of sum / circumference): about one radius and cell in 200.
    scipy's running sums are exact here (integer votes, then float32 thirds whose sums
    fit a double), so each of its outputs depends on the 3x3 neighbourhood alone: a
    float32 third of the column sum, a float32 third of the double sum of three of those.
    A radius that cannot pass cannot be a passing cell's best either.
    """
    _, rows, cols = votes.shape
    column = _sum3(votes, axis=1)
    limit = np.floor(min_share * 2 * np.pi * radii * (1 - 1e-4)).astype(column.dtype)
    # One flat index per passing radius and cell (a 3-D nonzero is ten times slower).
    at = np.flatnonzero(_sum3(column, axis=2) > limit[:, None, None])
    rs, cells = np.divmod(at, rows * cols)
    ys, xs = np.divmod(cells, cols)
    beside = (at - xs)[:, None] + np.clip(xs[:, None] + np.array([-1, 0, 1]), 0, cols - 1)
    thirds = (column.ravel()[beside] / 3.0).astype(np.float32)  # the cell and either side
    box = (thirds.sum(axis=-1, dtype=np.float64) / 3.0).astype(np.float32)
    box *= 9
    # Fraction of the circumference that voted, so large circles are not favoured
    # (divided in float64, as a float32 array over float64 radii is, then rounded).
    share = (box / (2 * np.pi * radii)[rs]).astype(np.float32)
    # Per cell, its best radius (the smallest of equals, as argmax): cells in C order.
    order = np.lexsort((rs, -share, cells))
    first = np.ones(order.size, bool)
    first[1:] = cells[order][1:] != cells[order][:-1]
    keep = order[first]
    return ys[keep], xs[keep], share[keep], rs[keep]


def _sum3(a: np.ndarray, axis: int) -> np.ndarray:
    """Sums of three neighbours along ``axis`` with scipy's 'reflect' ends (an end value
    counts twice); the axis needs at least two values."""
    a = np.moveaxis(a, axis, -1)
    out = np.empty_like(a)
    np.add(a[..., :-2], a[..., 1:-1], out=out[..., 1:-1])
    out[..., 1:-1] += a[..., 2:]
    out[..., 0] = 2 * a[..., 0] + a[..., 1]
    out[..., -1] = a[..., -2] + 2 * a[..., -1]
    return np.moveaxis(out, -1, axis)


def _contrasts(small: np.ndarray, ys: np.ndarray, xs: np.ndarray, radii: np.ndarray
               ) -> list[float]:
    """Per circle, the median inside (within 0.8 r) less the 75th percentile of the ring
    just outside (r + 0.5 to r + 3.5), 0 where either is empty: the LV cavity is much
    brighter than the nulled ring around it; the spine or liver are only a little brighter
    than their surroundings (both measured within the circle's reach, not over the whole
    slice).

    All circles at once, on one window of offsets, with numpy's ``median`` and
    ``percentile(ring, 75)`` arithmetic (float32) on each circle's sorted values.
    """
    rows, cols = small.shape
    reach = int(np.ceil(radii.max() + 3.5))
    offsets = np.arange(-reach, reach + 1)
    distance = np.hypot(offsets[:, None], offsets[None, :]).ravel()
    at_rows, at_cols = ys[:, None] + offsets, xs[:, None] + offsets
    on_image = (((at_rows >= 0) & (at_rows < rows))[:, :, None]
                & ((at_cols >= 0) & (at_cols < cols))[:, None, :]).reshape(len(ys), -1)
    values = small[np.clip(at_rows, 0, rows - 1)[:, :, None],
                   np.clip(at_cols, 0, cols - 1)[:, None, :]].reshape(len(ys), -1)
    r = radii[:, None]
    inside = on_image & (distance < 0.8 * r)
    ring = on_image & (distance > r + 0.5) & (distance < r + 3.5)
    median = _sorted_statistic(values, inside, median=True)
    upper = _sorted_statistic(values, ring, median=False)
    empty = ~inside.any(axis=1) | ~ring.any(axis=1)
    return [0.0 if e else float(m - u) for e, m, u in zip(empty, median, upper, strict=True)]


def _sorted_statistic(values: np.ndarray, members: np.ndarray, median: bool) -> np.ndarray:
    """Per row, numpy's ``median`` or ``percentile(..., 75)`` of the members (float32)."""
    ordered = np.sort(np.where(members, values, np.float32(np.inf)), axis=1)
    count = members.sum(axis=1)
    at = np.arange(len(values))
    if median:  # np.median: the middle value, or the float32 mean of the middle two
        upper = ordered[at, np.maximum(count // 2, 0)]
        lower = ordered[at, np.maximum((count - 1) // 2, 0)]
        return np.where(count % 2 == 1, upper, (lower + upper) / np.float32(2))
    # np.percentile(v, 75) (a Python q: float32 interpolation), numpy's _lerp.
    virtual = (count - 1) * np.true_divide(75, 100)
    previous = np.floor(virtual).astype(np.intp)
    last = virtual >= count - 1
    previous[last] = count[last] - 1
    following = np.where(last, previous, previous + 1)
    gamma = np.where(last, virtual + 1, virtual - np.floor(virtual))
    a = ordered[at, np.maximum(previous, 0)]
    b = ordered[at, np.maximum(following, 0)]
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma).astype(np.float32),
                    a + diff * gamma.astype(np.float32))


def hough_lv_circles(slices: Sequence[np.ndarray], spacing: Spacing,
                     radius_range_mm: tuple[float, float] = (10.0, 40.0),
                     max_jump_mm: float = 20.0, heart: np.ndarray | None = None
                     ) -> list[Circle]:
    """One LV circle per slice of a stack, consistent along the long axis.

    Per-slice Hough peaks can lock onto the RV, the aorta or the spine. The
    LV is the centre that most slices agree on, so each candidate is scored by
    the support it gets from the other slices' candidates within
    ``max_jump_mm``; every slice then takes its candidate nearest to that
    consensus, or the consensus itself (median radius) when it has none.

    ``heart`` (y, x; e.g. the myocardium network's ring over the series): the search is
    cut to :data:`HEART_MARGIN_MM` round its box, not the whole field of view (the LV's
    edges and the ring that scores a circle's contrast are inside it; the search costs
    what its area does: about 4x faster). It changes most slices' circles (weak
    candidates near the heart are no longer outnumbered by strong ones elsewhere;
    docs/experiments.md, "Performance", issue 54 round 4), so a network gets it only where
    its manifest says it was trained on it (``InputSpec.hough_near_heart``: round 4's
    ENets, given the first ring); None: the whole slice (0.3.2's ENets).
    """
    per_slice = _candidates_of_stack(slices, spacing, radius_range_mm, heart=heart)
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
