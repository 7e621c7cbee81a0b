"""The left-ventricular ring constraint, on masks the test draws."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from service.pipeline.postprocess import attach_scar, encloses_a_hole
from service.pipeline.shape import (
    _first_runs,
    constrain_ring,
    constrain_slice,
    fitted_centre,
    slice_centres,
)

SIZE = 128
YY, XX = np.mgrid[:SIZE, :SIZE]


def ring(cy: float = 64, cx: float = 64, inner: float = 14, outer: float = 22) -> np.ndarray:
    d = np.hypot(YY - cy, XX - cx)
    return (d >= inner) & (d <= outer)


def sector(start: float, stop: float, cy: float = 64, cx: float = 64) -> np.ndarray:
    """Pixels whose angle around (cy, cx) lies in [start, stop) radians."""
    angle = np.arctan2(YY - cy, XX - cx)
    return (angle >= start) & (angle < stop)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_a_c_shaped_band_is_closed_across_its_gap() -> None:
    full = ring()
    band = full & ~sector(-0.5, 0.7)  # a 70-degree gap
    assert not encloses_a_hole(band)
    out = constrain_slice(band)
    assert encloses_a_hole(out)
    assert dice(out, full) > 0.97 > dice(band, full) + 0.05
    assert (out & ~ndimage.binary_dilation(full, iterations=2)).sum() == 0


def test_a_wall_thinned_by_scar_taken_for_cavity_gets_its_thickness_back() -> None:
    full = ring(inner=14, outer=22)
    thinned = full & ~(sector(1.0, 2.0) & (np.hypot(YY - 64, XX - 64) < 20))
    out = constrain_slice(thinned)
    assert dice(out, full) > 0.97
    assert (out & ~thinned).sum() > 0.8 * (full & ~thinned).sum()


def test_the_filled_probability_gives_the_epicardium_across_a_gap() -> None:
    """Bright scar called cavity: the filled LV (cavity + wall) still reaches the epicardium,
    here bulging out beyond what interpolation from the neighbours would give."""
    radius = np.hypot(YY - 64, XX - 64)
    gap = sector(-0.4, 0.4)
    # The wall bulges outwards (same thickness) where the network left it to the cavity.
    truth = (ring() & ~gap) | (gap & (radius >= 17) & (radius <= 25))
    band = truth & ~gap
    filled = ((radius <= 22) & ~gap) | (gap & (radius <= 25))
    without = constrain_slice(band)
    with_filled = constrain_slice(band, filled.astype(np.float32))
    assert dice(with_filled, truth) > dice(without, truth)


def test_a_region_outside_the_ring_is_removed() -> None:
    full = ring()
    blob = np.hypot(YY - 64, XX - 100) < 5  # right-ventricular wall, off the ring
    out = constrain_slice(full | blob)
    assert not (out & blob).any()
    assert np.array_equal(out, full)


def test_scar_outside_the_ring_is_removed() -> None:
    full = ring()
    scar = (np.hypot(YY - 64, XX - 100) < 4) | (full & sector(0.0, 0.5))
    myocardium = constrain_ring(full[None])
    _, kept = attach_scar(scar[None].astype(np.float32), myocardium, (1.0, 1.0), reach_mm=0.0)
    assert np.array_equal(kept[0], full & sector(0.0, 0.5))


def test_a_small_apical_ring_and_a_disc_are_kept() -> None:
    small = ring(inner=3, outer=8)
    disc = np.hypot(YY - 64, XX - 64) <= 6
    assert np.array_equal(constrain_slice(small), small)
    assert np.array_equal(constrain_slice(disc), disc)


def test_an_open_basal_slice_at_the_outflow_tract_is_left_open() -> None:
    basal = ring() & ~sector(-1.2, 1.2)  # a 137-degree opening
    out = constrain_ring(np.stack([basal, ring(), ring()]))
    assert not encloses_a_hole(out[0])
    assert dice(out[0], basal) > 0.97
    # The same band further down the stack is a gap to close.
    mid = constrain_ring(np.stack([ring(), basal, ring()]))
    assert encloses_a_hole(mid[1])


@pytest.mark.parametrize("keep_empty", [0, 2])
def test_empty_slices_stay_empty_and_no_ring_is_dropped(keep_empty: int) -> None:
    stack = np.stack([ring(), ring(inner=12, outer=20), ring(inner=8, outer=15)])
    stack[keep_empty] = False
    out = constrain_ring(stack)
    for k in range(3):
        assert out[k].any() == stack[k].any()


def test_too_little_ring_is_left_as_drawn() -> None:
    arc = ring() & sector(0.0, 1.2)  # under a third of the circle
    assert np.array_equal(constrain_slice(arc), arc)


def test_the_centre_of_an_open_band_is_the_cavitys() -> None:
    band = ring(cy=60, cx=70) & ~sector(-1.0, 1.0, cy=60, cx=70)
    cy, cx = fitted_centre(band)
    assert abs(cy - 60) < 1.5 and abs(cx - 70) < 1.5
    ys, xs = np.nonzero(band)
    assert abs(xs.mean() - 70) > 5  # the band's own centroid is far off


def test_a_centre_that_jumps_away_from_its_neighbours_is_moved_to_theirs() -> None:
    stack = np.stack([ring(), ring(), ring(cy=64, cx=30, inner=3, outer=7), ring(), ring()])
    centres = slice_centres(stack)
    assert abs(centres[2][1] - 64) < 1.0
    assert abs(centres[1][1] - 64) < 1.0


def _first_run_of_one_ray(on: np.ndarray, radii: np.ndarray, bridge: int
                          ) -> tuple[float, float] | None:
    """The definition, one ray at a time: the first hit, and the last hit before a gap of
    more than ``bridge`` samples."""
    hits = np.flatnonzero(on)
    if hits.size == 0:
        return None
    breaks = np.flatnonzero(np.diff(hits) > bridge + 1)
    return float(radii[hits[0]]), float(radii[hits[breaks[0]] if breaks.size else hits[-1]])


@pytest.mark.parametrize("density", [0.05, 0.3, 0.7, 0.97])
def test_every_rays_first_run_is_found_at_once(density: float) -> None:
    rng = np.random.default_rng(7)
    on = rng.random((200, 40)) < density
    on[0], on[1] = False, True  # a ray with no hit, a ray all hit
    radii = np.arange(40) * 0.5
    for bridge in (0, 2, 5):
        inner, outer, present = _first_runs(on, radii, bridge)
        for ray, hits in enumerate(on):
            run = _first_run_of_one_ray(hits, radii, bridge)
            assert present[ray] == (run is not None)
            assert (inner[ray], outer[ray]) == (run or (0.0, 0.0))
