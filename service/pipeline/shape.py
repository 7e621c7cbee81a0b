"""The left ventricle's shape as a constraint: a closed ring per slice, completed, never dropped.

The networks learn a look, not an anatomy: on scans unlike their training
set they draw open C-shaped bands (the band stops where the wall turns bright
with scar, which they leave to the cavity or the background) and blobs off
the heart. Dropping such slices or closing them morphologically does not
help (the gaps are wide; issue 43). This module models each slice's
myocardium as the classical border methods do: in polar coordinates around
the LV centre, an endocardial and an epicardial radius per angle.

- The rays are cast from the centre of the ring (of its filled region when it
  is closed, of a circle fitted to its pixels when it is open), kept
  consistent with the neighbouring slices.
- Where the ring is present, its radii come from the network's own mask;
  where it is missing (a gap) or thinner than half the slice's median wall,
  the epicardium is taken from the filled LV's probability (cavity +
  myocardium, where the network gives it: bright scar called cavity still lies
  inside the epicardium) or interpolated from the angles on either side, and
  the endocardium is the epicardium less the slice's median wall thickness.
- What the network drew beyond the ring's epicardium on a ray (another
  region: right-ventricular wall, chest wall) is removed.
- The most basal slice may be open where it meets the outflow tract: a gap
  wider than ``BASAL_GAP_DEGREES`` there is left open.
- A slice the network left empty stays empty, and a ring is never dropped;
  an apical slice whose wall is thicker than its radius stays a disc.

Pure array functions on (y, x) slices and (z, y, x) stacks, slice 0 the most
basal, as :mod:`service.pipeline.postprocess`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from service.pipeline.postprocess import fill_holes, mask_box

ANGLES = 72  # rays per slice (every 5 degrees)
RADIAL_STEP_PX = 0.5
# A slice whose ring is present on fewer rays than this share is left as the network drew it:
# too little of a ring to model.
MIN_PRESENT_SHARE = 0.3
# Thinner than this share of the slice's median wall counts as missing (scar left out).
THIN_SHARE = 0.5
BASAL_GAP_DEGREES = 60.0
# How far (px) beyond the ring's epicardium the network's own pixels are kept.
EPICARDIAL_MARGIN_PX = 1.0
# A slice's centre further than this share of the neighbours' radius from their centre is
# moved to theirs.
CENTRE_JUMP_SHARE = 0.5


@dataclass(frozen=True)
class RingModel:
    """One slice's ring in polar form: radii (px) per ray angle, from ``centre`` (y, x)."""

    centre: tuple[float, float]
    inner: np.ndarray  # (ANGLES,) endocardial radius; 0 where the wall reaches the centre
    outer: np.ndarray  # (ANGLES,) epicardial radius
    present: np.ndarray  # (ANGLES,) bool: the network drew the wall on this ray
    repaired: np.ndarray  # (ANGLES,) bool: the wall on this ray was completed
    open_gap: np.ndarray  # (ANGLES,) bool: left open (basal slice at the outflow tract)


def _angles() -> np.ndarray:
    return np.arange(ANGLES) * (2.0 * np.pi / ANGLES)


def fitted_centre(mask: np.ndarray) -> tuple[float, float]:
    """The ring's centre: its filled region's centroid when it closes, else a circle's.

    An open C-band's own centroid lies inside the band, not in the cavity; a
    least-squares circle through its pixels (Kasa's fit) finds the cavity's centre.
    """
    box = mask_box(mask)
    if box is None:
        return float("nan"), float("nan")
    on_box = mask[box]  # the same holes as on the slice (mask_box's margin)
    filled = fill_holes(on_box)
    if (filled & ~on_box).any():
        # ndimage.center_of_mass's sums, exact in integers, moved back onto the slice.
        ys, xs = np.nonzero(filled)
        return (float((ys.sum() + box[0].start * ys.size) / ys.size),
                float((xs.sum() + box[1].start * xs.size) / xs.size))
    ys, xs = _points(mask, box)
    design = np.column_stack([xs, ys, np.ones_like(xs)]).astype(float)
    rhs = (xs.astype(float) ** 2 + ys.astype(float) ** 2)
    try:
        (a, b, _), *_ = np.linalg.lstsq(design, rhs, rcond=None)
    except np.linalg.LinAlgError:
        a, b = 2 * xs.mean(), 2 * ys.mean()
    cx, cy = a / 2.0, b / 2.0
    # A near-straight band fits a huge circle far away: fall back to the centroid.
    span = max(np.ptp(ys), np.ptp(xs), 1)
    if np.hypot(cy - ys.mean(), cx - xs.mean()) > span:
        return float(ys.mean()), float(xs.mean())
    return float(cy), float(cx)


def _points(mask: np.ndarray, box: tuple[slice, slice] | None = None
            ) -> tuple[np.ndarray, np.ndarray]:
    """``np.nonzero`` of a 2-D mask, searched on its bounding box only."""
    box = mask_box(mask) if box is None else box
    if box is None:
        return np.nonzero(mask)
    ys, xs = np.nonzero(mask[box])
    return ys + box[0].start, xs + box[1].start


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """Circular runs of True as (start, length)."""
    n = len(flags)
    if flags.all():
        return [(0, n)]
    if not flags.any():
        return []
    start = int(np.argmin(flags))  # begin scanning at a False, so no run wraps the seam
    out, k = [], 0
    while k < n:
        i = (start + k) % n
        if flags[i]:
            length = 0
            while k < n and flags[(start + k) % n]:
                length += 1
                k += 1
            out.append((i, length))
        else:
            k += 1
    return out


def _circular_interpolate(values: np.ndarray, known: np.ndarray) -> np.ndarray:
    """``values`` at unknown angles, linear in angle between the known ones on either side."""
    idx = np.arange(len(values))
    k = idx[known]
    n = len(values)
    xp = np.concatenate([k - n, k, k + n])
    fp = np.tile(values[known], 3)
    return np.interp(idx, xp, fp)


def _circular_smooth(values: np.ndarray, width: int = 3) -> np.ndarray:
    return ndimage.median_filter(values, size=width, mode="wrap")


def _ray_samples(image: np.ndarray, centre: tuple[float, float], radii: np.ndarray,
                 order: int) -> np.ndarray:
    theta = _angles()[:, None]
    ys = centre[0] + np.sin(theta) * radii[None, :]
    xs = centre[1] + np.cos(theta) * radii[None, :]
    return ndimage.map_coordinates(np.asarray(image, np.float32), [ys, xs], order=order,
                                   mode="constant", cval=0.0)


def _first_runs(on: np.ndarray, radii: np.ndarray, bridge: int = 2
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per ray (a row of ``on``): the first and last radius of its first run, bridging dips of
    up to ``bridge`` samples, and whether it has one (radii 0 where not). All rays at once:
    one ray at a time was most of the ring model's time."""
    rays, samples = on.shape
    index = np.arange(samples)
    # The next hit at or after each sample (``never`` past the last): a hit ends the first
    # run when the next hit after it lies more than ``bridge`` samples on.
    never = samples + bridge + 2
    next_hit = np.minimum.accumulate(np.where(on, index, never)[:, ::-1], axis=1)[:, ::-1]
    after = np.concatenate([next_hit[:, 1:], np.full((rays, 1), never)], axis=1)
    ends_run = on & (after - index - 1 > bridge)
    present = on.any(axis=1)
    first, end = on.argmax(axis=1), ends_run.argmax(axis=1)
    return (np.where(present, radii[first], 0.0), np.where(present, radii[end], 0.0),
            present)


def ring_model(mask: np.ndarray, filled_probability: np.ndarray | None = None,
               basal: bool = False, centre: tuple[float, float] | None = None
               ) -> RingModel | None:
    """The polar ring of one slice's mask; None when there is too little ring to model."""
    if not mask.any():
        return None
    if centre is None:
        centre = fitted_centre(mask)
    cy, cx = int(round(centre[0])), int(round(centre[1]))
    inside = 0 <= cy < mask.shape[0] and 0 <= cx < mask.shape[1]
    if not inside or mask[cy, cx]:
        # A centre on the wall: a disc (the apex, nothing to complete) or a short arc whose
        # circle could not be found; either way the rays would not see a ring.
        return None
    ys, xs = _points(mask)
    reach = float(np.max(np.hypot(ys - centre[0], xs - centre[1]))) + 2.0
    radii = np.arange(0.0, reach + RADIAL_STEP_PX, RADIAL_STEP_PX)
    on = _ray_samples(mask.astype(np.float32), centre, radii, order=0) > 0.5
    inner, outer, present = _first_runs(on, radii)
    if present.mean() < MIN_PRESENT_SHARE:
        return None
    thickness = outer - inner
    median_wall = float(np.median(thickness[present]))
    thin = present & (thickness < THIN_SHARE * median_wall)
    missing = ~present | thin
    keep_open = np.zeros(ANGLES, bool)
    if basal:
        for start, length in _runs(~present):
            if length * 360.0 / ANGLES > BASAL_GAP_DEGREES:
                keep_open[(start + np.arange(length)) % ANGLES] = True
    repaired = missing & ~keep_open
    if repaired.any():
        solid = present & ~thin
        reference = solid if solid.any() else present
        bridged_outer = _circular_interpolate(outer, reference)
        if filled_probability is not None:
            # The filled LV (cavity + wall) reaches the epicardium also where the network
            # took bright scar for cavity: trust it where it agrees with the bridge.
            filled = _ray_samples(filled_probability, centre, radii, order=1) >= 0.5
            start, end, found = _first_runs(filled, radii)
            agrees = (repaired & found & (start <= 1.0) & (0.8 * bridged_outer <= end)
                      & (end <= 1.25 * bridged_outer))
            bridged_outer = np.where(agrees, end, bridged_outer)
        outer = np.where(repaired, bridged_outer, outer)
        inner = np.where(repaired, np.maximum(outer - median_wall, 0.0), inner)
    outer = np.where(keep_open, outer, _circular_smooth(outer))
    inner = np.where(keep_open, inner, np.minimum(_circular_smooth(inner), outer))
    return RingModel(centre, inner, outer, present, repaired, keep_open)


def _polar_grid(centre: tuple[float, float], box: tuple[slice, slice]
                ) -> tuple[np.ndarray, np.ndarray]:
    yy, xx = np.mgrid[box[0], box[1]]
    dy, dx = yy - centre[0], xx - centre[1]
    angle = np.mod(np.arctan2(dy, dx), 2.0 * np.pi) * (ANGLES / (2.0 * np.pi))
    return np.hypot(dy, dx), angle


def _at(values: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """``values`` (per ray) interpolated at fractional ray positions, circularly."""
    n = len(values)
    return np.interp(angle, np.arange(n + 1), np.append(values, values[0]))


def constrain_slice(mask: np.ndarray, filled_probability: np.ndarray | None = None,
                    basal: bool = False, centre: tuple[float, float] | None = None
                    ) -> np.ndarray:
    """One slice's myocardium as a left-ventricular ring (module docstring)."""
    mask = np.asarray(mask, bool)
    model = ring_model(mask, filled_probability, basal, centre)
    if model is None:
        return mask
    reach = int(np.ceil(model.outer.max() + EPICARDIAL_MARGIN_PX + 2))
    cy, cx = int(round(model.centre[0])), int(round(model.centre[1]))
    h, w = mask.shape
    box = (slice(max(cy - reach, 0), min(cy + reach + 1, h)),
           slice(max(cx - reach, 0), min(cx + reach + 1, w)))
    rho, angle = _polar_grid(model.centre, box)
    outer = _at(model.outer, angle)
    inner = _at(model.inner, angle)
    repaired = _at(model.repaired.astype(float), angle) > 0.5
    # The network's own pixels up to the ring's epicardium (nothing beyond it on the ray) ...
    kept = mask[box] & (rho <= outer + EPICARDIAL_MARGIN_PX)
    # ... and the wall completed where it was missing or too thin.
    added = repaired & (rho <= outer) & (rho >= inner)
    out = np.zeros_like(mask)
    out[box] = kept | added
    return out


def slice_centres(masks: np.ndarray) -> list[tuple[float, float] | None]:
    """Each slice's ring centre, moved to its neighbours' where it jumps away from them.

    A ring's centre moves little from one slice to the next along the long axis; one
    that lies far from both neighbours' (a blob taken for the ring, a fit thrown by a
    short arc) is replaced by theirs.
    """
    centres: list[tuple[float, float] | None] = []
    sizes: list[float] = []
    for mask in masks:
        if not mask.any():
            centres.append(None)
            sizes.append(0.0)
            continue
        c = fitted_centre(mask)
        ys, xs = _points(mask)
        centres.append(c)
        sizes.append(float(np.median(np.hypot(ys - c[0], xs - c[1]))))
    out = list(centres)
    for k, c in enumerate(centres):
        if c is None:
            continue
        near = [j for j in (k - 2, k - 1, k + 1, k + 2)
                if 0 <= j < len(centres) and centres[j] is not None]
        if len(near) < 2:
            continue
        ref = np.median([centres[j] for j in near], axis=0)
        radius = float(np.median([sizes[j] for j in near]))
        if np.hypot(c[0] - ref[0], c[1] - ref[1]) > CENTRE_JUMP_SHARE * radius + 1.0:
            out[k] = (float(ref[0]), float(ref[1]))
    return out


def constrain_ring(masks: np.ndarray, filled_probability: np.ndarray | None = None
                   ) -> np.ndarray:
    """Every slice of a (z, y, x) myocardium as a ring; the first drawn slice is the basal one."""
    masks = np.asarray(masks, bool)
    out = np.zeros_like(masks)
    drawn = [k for k in range(len(masks)) if masks[k].any()]
    centres = slice_centres(masks)
    for k in drawn:
        filled = None if filled_probability is None else filled_probability[k]
        out[k] = constrain_slice(masks[k], filled, basal=k == drawn[0], centre=centres[k])
    return out
