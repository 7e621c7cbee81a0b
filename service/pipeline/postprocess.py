"""Model probabilities on the source grid to clean binary masks.

Pure array functions; volumes are (z, y, x) with slice 0 the most basal.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_EIGHT_CONNECTED = np.ones((3, 3), dtype=bool)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """The largest 8-connected component of a 2-D mask (empty stays empty)."""
    labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
    if n <= 1:
        return mask.astype(bool)
    return labels == (1 + int(np.argmax(_sizes(labels, n))))


def _sizes(labels: np.ndarray, n: int) -> np.ndarray:
    """Pixels per label 1..n, as float64 (``ndimage.sum_labels`` of ones, one count)."""
    return np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(np.float64)


def _background(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The 4-connected components of a 2-D mask's background (label 0: the mask), and per
    label whether it is outside (touches the edge; the mask's label 0 counts as outside):
    the others are the holes ``binary_fill_holes`` fills, found by one labelling instead
    of a dilation from the edge to a fixed point."""
    background, count = ndimage.label(~mask)
    outside = np.zeros(count + 1, dtype=bool)
    outside[np.concatenate([background[0], background[-1], background[:, 0],
                            background[:, -1]])] = True
    outside[0] = True
    return background, outside


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """``ndimage.binary_fill_holes`` of a 2-D mask (:func:`_background`): the same pixels,
    several times faster on a ring."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or min(mask.shape) < 3:
        return ndimage.binary_fill_holes(mask)
    background, outside = _background(mask)
    return mask | ~outside[background]


def encloses_a_hole(mask: np.ndarray) -> bool:
    """Whether ``binary_fill_holes`` would fill anything: some component of the background
    does not touch the edge (:func:`_background`)."""
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2 or min(mask.shape) < 3:
        return bool((ndimage.binary_fill_holes(mask) & ~mask).any())
    return not _background(mask)[1].all()


def clean_myocardium(probability: np.ndarray, threshold: float = 0.5,
                     min_area_px: int = 10) -> np.ndarray:
    """Per slice, keep the LV ring: the largest component, preferring one that encloses a hole.

    Stray islands (RV wall, papillary muscle touching nothing) are dropped.
    A ring (a component around the cavity) wins over a larger solid blob,
    except near the apex where the myocardium may legitimately be a disk.
    """
    masks = np.asarray(probability) >= threshold
    out = np.zeros_like(masks, dtype=bool)
    for k, whole in enumerate(masks):
        box = mask_box(whole)
        if box is None:
            continue
        mask = whole[box]  # the same components and holes, on a tenth of the pixels
        labels, n = ndimage.label(mask, structure=_EIGHT_CONNECTED)
        sizes = _sizes(labels, n)
        order = np.argsort(-sizes)
        chosen = labels == (1 + order[0])
        for idx in order:
            if sizes[idx] < max(min_area_px, 0.3 * sizes[order[0]]):
                break
            candidate = labels == (1 + idx)
            if encloses_a_hole(candidate):
                chosen = candidate
                break
        if chosen.sum() >= min_area_px:
            out[k][box] = chosen
    return out


def mask_box(mask: np.ndarray, margin: int | tuple[int, int] = 1
             ) -> tuple[slice, slice] | None:
    """A 2-D mask's bounding box grown by ``margin`` pixels (per axis), clipped at the
    edges; None if the mask is empty.

    A margin of one keeps the background around the mask connected, so components and
    holes are the same inside the box as on the whole slice; a morphological step of
    radius r, or a distance up to d pixels, needs a margin of r + 1, or d + 1.
    """
    mask = np.asarray(mask)
    ys, xs = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    if ys.size == 0:
        return None
    my, mx = (margin, margin) if isinstance(margin, int) else margin
    return (slice(max(int(ys[0]) - my, 0), int(ys[-1]) + my + 1),
            slice(max(int(xs[0]) - mx, 0), int(xs[-1]) + mx + 1))


def attach_scar(probability: np.ndarray, myocardium: np.ndarray, spacing: tuple[float, float],
                threshold: float = 0.5, reach_mm: float = 8.0
                ) -> tuple[np.ndarray, np.ndarray]:
    """Scar regions touching the myocardium, and the myocardium grown to contain them.

    Scar is myocardium. In dark-blood LGE, bright subendocardial scar lies
    next to grey blood, and the myocardium network sometimes leaves it out
    of the ring; dropping scar outside the ring would then erase exactly
    the scar the series is about. So a scar component (8-connected, per
    slice) is kept when it touches the ring, up to ``reach_mm`` from it,
    and the ring is extended over it. Components that do not touch the
    ring (blood pool, RV, chest wall) are dropped.
    """
    candidates = np.asarray(probability) >= threshold
    myocardium = np.asarray(myocardium, dtype=bool)
    scar = np.zeros_like(myocardium)
    for k, (candidate, ring) in enumerate(zip(candidates, myocardium, strict=True)):
        if not candidate.any() or not ring.any():
            continue
        if not (candidate & ~ring).any():
            scar[k] = candidate  # all inside the ring: nothing to attach
            continue
        # Work on the bounding box of ring and candidates only (a tenth of the slice).
        box = mask_box(candidate | ring)
        c, r = candidate[box], ring[box]
        labels, _ = ndimage.label(c, structure=_EIGHT_CONNECTED)
        touching = np.unique(labels[ndimage.binary_dilation(r, _EIGHT_CONNECTED) & c])
        kept = np.isin(labels, touching[touching > 0])
        within = ndimage.distance_transform_edt(~r, sampling=spacing) <= reach_mm
        scar[k][box] = kept & within
    return myocardium | scar, scar
