"""Mask cleaning and the classical thresholds on hand-made slices with known answers."""

from __future__ import annotations

import numpy as np
import pytest
from skimage.draw import disk

from service.pipeline.postprocess import attach_scar, clean_myocardium, largest_component
from service.pipeline.quantify import (
    fwhm_scar,
    nsd_scar,
    remote_statistics,
    scar_fraction,
    sector_labels,
)
from tests.service.pipeline.test_preprocess import _ring as ring_mask


def _ring() -> np.ndarray:
    return ring_mask(shape=(96, 96), centre=(48, 48), r_in=14, r_out=22)


def test_largest_component_keeps_only_the_biggest() -> None:
    mask = np.zeros((20, 20), bool)
    mask[1:4, 1:4] = True
    mask[10:18, 10:18] = True
    out = largest_component(mask)
    assert out.sum() == 64 and not out[2, 2]


def test_clean_myocardium_prefers_the_ring_over_a_larger_blob() -> None:
    ring = _ring()
    blob = np.zeros_like(ring)
    blob[0:23, 50:96] = True  # a solid 1058 px blob clear of the ring (rows 26-70)
    assert blob.sum() > ring.sum()
    probability = np.stack([(ring | blob).astype(np.float32)])
    out = clean_myocardium(probability)
    assert np.array_equal(out[0], ring)


def test_clean_myocardium_decides_the_same_wherever_the_ring_lies_on_the_slice() -> None:
    ring = _ring()  # rows and columns 26-70
    blob = np.zeros_like(ring)
    blob[0:23, 50:96] = True
    both = ring | blob
    # A ring touching the slice's edge still encloses its cavity: it wins.
    touching = both[:, 26:]
    assert np.array_equal(clean_myocardium(touching[None].astype(np.float32))[0], ring[:, 26:])
    # Cut through, its cavity opens onto the edge: an arc, and the larger blob wins.
    cut = both[:, 48:]
    assert np.array_equal(clean_myocardium(cut[None].astype(np.float32))[0], blob[:, 48:])
    # Moving the content on the slice changes nothing.
    padded = np.pad(both, ((5, 0), (0, 7))).astype(np.float32)
    assert np.array_equal(clean_myocardium(padded[None])[0][5:, :96], ring)


def test_clean_myocardium_keeps_an_apical_disk_and_drops_islands() -> None:
    solid = np.zeros((64, 64), bool)
    solid[disk((32, 32), 8)] = True
    island = np.zeros_like(solid)
    island[2:5, 2:5] = True
    out = clean_myocardium(np.stack([(solid | island).astype(np.float32),
                                     np.zeros((64, 64), np.float32)]))
    assert np.array_equal(out[0], solid)
    assert not out[1].any()


def test_attach_scar_grows_the_ring_over_adjacent_scar_and_drops_detached_scar() -> None:
    yy, xx = np.mgrid[:64, :64]
    r = np.hypot(yy - 32, xx - 32)
    ring = (r >= 14) & (r <= 20)
    subendocardial = (r >= 10) & (r < 14) & (xx > 36)  # missed by the ring, touching it
    in_wall = (r >= 15) & (r <= 19) & (xx < 26)
    detached = (yy < 4) & (xx < 4)  # chest wall, not touching
    prob = (subendocardial | in_wall | detached).astype(np.float32)[None]
    myocardium, scar = attach_scar(prob, ring[None], spacing=(1.0, 1.0))
    assert np.array_equal(scar[0], subendocardial | in_wall)
    assert np.array_equal(myocardium[0], ring | subendocardial)
    assert not (scar & ~myocardium).any()


def test_attach_scar_stops_at_its_reach_from_the_ring() -> None:
    ring = np.zeros((1, 40, 40), bool)
    ring[0, 18:22, :] = True
    prob = np.zeros((1, 40, 40), np.float32)
    prob[0, 0:18, 10:14] = 0.9  # a strip from the ring 18 pixels into the cavity
    _, scar = attach_scar(prob, ring, spacing=(0.5, 0.5), reach_mm=4.0)  # 8 pixels
    rows = np.nonzero(scar[0].any(axis=1))[0]
    assert rows.min() == 10 and rows.max() == 17


def test_sector_labels_split_a_ring_into_equal_sectors() -> None:
    labels = sector_labels(_ring(), 6)
    counts = np.bincount(labels[labels >= 0], minlength=6)
    assert set(np.unique(labels)) == {-1, 0, 1, 2, 3, 4, 5}
    assert counts.min() / counts.max() > 0.9


def _scarred_slice(rng, scar_signal=300.0):
    """Dark ring (mean 50, SD 10) with its screen-upper-right sixth enhanced."""
    ring = _ring()
    image = rng.normal(50.0, 10.0, ring.shape).astype(np.float32)
    scar = ring & (sector_labels(ring, 6) == 0)
    image[scar] = rng.normal(scar_signal, 10.0, int(scar.sum()))
    return image, ring, scar


def test_remote_region_is_the_darkest_sector() -> None:
    image, ring, _ = _scarred_slice(np.random.default_rng(0))
    mean, sd = remote_statistics(image, ring)
    assert abs(mean - 50.0) < 4 and abs(sd - 10.0) < 3


def test_nsd_and_fwhm_find_a_bright_sector() -> None:
    image, ring, scar = _scarred_slice(np.random.default_rng(1))
    for found in (nsd_scar([image], ring[None], 4.0)[0], fwhm_scar([image], ring[None])[0]):
        assert (found & scar).sum() / scar.sum() > 0.95
        assert (found & ~scar).sum() < 0.01 * ring.sum()


def test_scar_fraction() -> None:
    myo = np.zeros((2, 4, 4), bool)
    myo[:, :2] = True  # 16 px
    scar = np.zeros_like(myo)
    scar[0, 0] = True  # 4 px
    scar[1, 3] = True  # outside the myocardium: ignored
    assert scar_fraction(scar, myo) == 0.25
    assert scar_fraction(scar, np.zeros_like(myo)) == 0.0


def test_aha_segments_place_an_anterior_scar_in_segments_1_7_13() -> None:
    # Axial-like slices: rows run posterior (+y), columns to the patient's left (+x), so the
    # patient's anterior is up on screen and the septum (patient's right) is on the left.
    from service.pipeline.quantify import aha_segments

    ring = _ring()
    rows, cols = np.nonzero(ring)
    angle = np.degrees(np.arctan2(-(rows - 48.0), -(cols - 48.0)))  # 90 = up, 0 = screen left
    top = np.zeros_like(ring)
    top[rows[np.abs(angle - 90) < 20], cols[np.abs(angle - 90) < 20]] = True
    myocardium = np.stack([ring] * 6)
    scar = np.stack([top] * 6)
    segments = {s["segment"]: s for s in aha_segments(
        myocardium, scar, (1.5, 1.5), np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))}
    assert set(segments) == set(range(1, 17))
    # A 40-degree wedge fills 2/3 of a 60-degree segment and 4/9 of a 90-degree apical one.
    for anterior, expected in ((1, 200 / 3), (7, 200 / 3), (13, 400 / 9)):
        assert abs(segments[anterior]["scar_percent"] - expected) < 5
        assert segments[anterior]["transmurality_class"] == "76-100%"
    for other in (3, 4, 5, 9, 10, 11, 15):
        assert segments[other]["scar_percent"] == 0
        assert segments[other]["transmurality_class"] == "0%"


def test_aha_septum_is_towards_the_patients_right() -> None:
    from service.pipeline.quantify import aha_segments

    ring = _ring()
    left_half = ring.copy()
    left_half[:, 48:] = False  # screen left = patient's right = septum in this geometry
    segments = {s["segment"]: s for s in aha_segments(
        np.stack([ring] * 3), np.stack([left_half] * 3), (1.5, 1.5),
        np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0]))}
    assert segments[2]["scar_percent"] > 90 and segments[3]["scar_percent"] > 90
    assert segments[5]["scar_percent"] == 0 and segments[6]["scar_percent"] == 0
    assert segments[14]["scar_percent"] > 90 and segments[16]["scar_percent"] == 0


def test_transmurality_classes() -> None:
    from service.pipeline.quantify import transmurality_class

    assert [transmurality_class(v) for v in (0, 0.5, 25, 25.1, 50, 60, 75, 75.5, 100)] == \
        ["0%", "1-25%", "1-25%", "26-50%", "26-50%", "51-75%", "51-75%", "76-100%", "76-100%"]


def test_a_scar_network_with_a_myocardium_class_redraws_the_myocardium() -> None:
    """Given a too-thin first ring, a background/myocardium/scar network's ring replaces it;
    a binary scar network keeps it."""
    from service.pipeline.preprocess import InputSpec
    from service.pipeline.segment import Network, segment_on

    true_ring = _ring()
    thin = ring_mask(shape=(96, 96), centre=(48, 48), r_in=16, r_out=20)
    images = [np.where(true_ring, 300.0, 40.0) for _ in range(3)]
    first = np.stack([thin] * 3)
    spec = InputSpec(crop="heart_box", shape=(64, 64), margin_mm=12.0, myocardium_channel=True)

    def bright_is_myocardium(batch: np.ndarray) -> np.ndarray:
        myo = (batch[..., 0] > 0).astype(np.float32)  # z-scored crop: the bright ring
        return np.stack([1 - myo, myo, np.zeros_like(myo)], axis=-1)

    three = Network(bright_is_myocardium, spec, ("background", "myocardium", "scar"))
    redrawn = segment_on(images, (1.5, 1.5), first, first.astype(np.float32), three)
    truth = np.stack([true_ring] * 3)
    dice = 2 * (redrawn.myocardium & truth).sum() / (redrawn.myocardium.sum() + truth.sum())
    assert dice > 0.95 and not redrawn.scar.any()
    assert redrawn.myocardium_probability.max() == 1.0

    def no_scar(batch: np.ndarray) -> np.ndarray:
        return np.stack([np.ones(batch.shape[:3]), np.zeros(batch.shape[:3])], axis=-1)

    kept = segment_on(images, (1.5, 1.5), first, first.astype(np.float32),
                      Network(no_scar, spec, ("background", "scar")))
    assert np.array_equal(kept.myocardium, first)


def test_a_scar_network_calls_scar_at_its_own_threshold() -> None:
    """The threshold chosen in training is the one applied: a graded scar probability gives
    less scar at 0.7 than at 0.3, and segment_on equals its two halves."""
    from dataclasses import replace

    from service.pipeline.preprocess import InputSpec
    from service.pipeline.segment import Network, masks_from_regions, scar_regions, segment_on

    ring = np.stack([_ring()] * 2)
    images = [np.where(ring[0], 300.0, 40.0)] * 2
    spec = InputSpec(crop="heart_box", shape=(64, 64), margin_mm=12.0, myocardium_channel=True)

    def graded(batch: np.ndarray) -> np.ndarray:
        ramp = np.broadcast_to(np.linspace(0.0, 1.0, batch.shape[2]), batch.shape[:3])
        scar = ramp * (batch[..., 1] > 0.5)  # rises left to right inside the given ring
        return np.stack([1 - scar, scar], axis=-1)

    net = Network(graded, spec)
    low, high = (segment_on(images, (1.5, 1.5), ring, ring.astype(np.float32),
                            replace(net, threshold=t)) for t in (0.3, 0.7))
    assert high.scar.sum() > 0 and low.scar.sum() > 1.5 * high.scar.sum()
    assert not (high.scar & ~low.scar).any()
    regions = scar_regions(images, (1.5, 1.5), ring, net)
    again = masks_from_regions(regions, (1.5, 1.5), ring, ring.astype(np.float32),
                               replace(net, threshold=0.7))
    assert np.array_equal(again.scar, high.scar)


def test_a_network_with_cavity_and_mvo_classes_gives_nested_masks() -> None:
    """background/cavity/myocardium/scar/MVO: the myocardium is the last three classes
    together, the MVO lies inside the scar, and the cavity is never myocardium."""
    from service.pipeline.preprocess import InputSpec
    from service.pipeline.segment import Network, segment_on

    true_ring = _ring()
    images = [np.where(true_ring, 300.0, 40.0) for _ in range(2)]
    first = np.stack([true_ring] * 2)
    spec = InputSpec(crop="heart_box", shape=(64, 64), margin_mm=12.0, context_slices=1)
    classes = ("background", "cavity", "myocardium", "scar", "mvo")

    def five(batch: np.ndarray) -> np.ndarray:
        assert batch.shape[-1] == 3  # the slice and its two neighbours
        ring = batch[..., 0] > 0
        cols = np.broadcast_to(np.arange(batch.shape[2]), batch.shape[:3])
        rows = np.broadcast_to(np.arange(batch.shape[1])[:, None], batch.shape[:3])
        centre = (batch.shape[1] - 1) / 2
        inside = ~ring & (np.hypot(rows - centre, cols - centre) < 10)
        scar = ring & (cols > centre + 8)
        mvo = scar & (cols > centre + 14)
        out = np.zeros((*batch.shape[:3], 5), np.float32)
        out[..., 0] = ~ring & ~inside
        out[..., 1] = inside
        out[..., 2] = ring & ~scar
        out[..., 3] = scar & ~mvo
        out[..., 4] = mvo
        return out

    masks = segment_on(images, (1.5, 1.5), first, first.astype(np.float32),
                       Network(five, spec, classes))
    assert masks.scar.any() and masks.mvo.any()
    assert not (masks.mvo & ~masks.scar).any() and not (masks.scar & ~masks.myocardium).any()
    assert masks.mvo.sum() < masks.scar.sum()
    dice = 2 * (masks.myocardium & first).sum() / (masks.myocardium.sum() + first.sum())
    assert dice > 0.9  # the cavity (inside the ring) was not counted as myocardium
    assert masks.mvo_probability.max() > 0.9


def test_series_and_slice_figures_count_mvo_inside_the_scar() -> None:
    from service.pipeline.quantify import series_figures, slice_figures

    class Grid:  # what series_figures reads of a Volume
        spacing = (1.0, 2.0)
        slice_spacing_mm = 10.0

    myocardium = np.zeros((2, 10, 10), bool)
    myocardium[:, 2:8, 2:8] = True  # 36 px a slice
    scar = myocardium & (np.arange(10) >= 5)[None, None, :]  # 18 px a slice
    mvo = np.zeros_like(scar)
    mvo[0, 2:5, 6:8] = True  # 6 px, inside the scar
    mvo[1, 0, 0] = True  # outside the myocardium: not counted
    figures = series_figures(myocardium, scar, Grid(), mvo)
    assert figures["mvo_percent"] == pytest.approx(100.0 * 6 / 72)
    assert figures["mvo_volume_ml"] == pytest.approx(6 * 2.0 * 10.0 / 1000.0)
    assert series_figures(myocardium, scar, Grid())["mvo_percent"] == 0.0
    per_slice = slice_figures(myocardium, scar, mvo, Grid.spacing)
    assert [s["mvo_area_mm2"] for s in per_slice] == [12.0, 0.0]
    assert per_slice[0]["mvo_percent"] == pytest.approx(100.0 * 6 / 36)
    assert per_slice[0]["scar_percent"] == 50.0


# --- aha_segments as it was before issue 54 round 5 searched the myocardium's box only
# (verbatim but for the names), to hold the new one to the same figures.

from service.pipeline.quantify import (  # noqa: E402
    AHA_NAMES,
    PATIENT_ANTERIOR_LPS,
    PATIENT_RIGHT_LPS,
    Spacing,
    transmurality_class,
)


def _old_myocardial_angles(myocardium: np.ndarray, spacing: Spacing, row_direction: np.ndarray,
                      column_direction: np.ndarray) -> np.ndarray:
    """Angle (degrees, 0..360) of each pixel around the LV centre; NaN outside the myocardium.

    0 degrees is the patient's anterior direction projected onto the slice,
    90 degrees points to the septum (the patient's right, made orthogonal).
    ``row_direction`` is the direction of increasing column index (the first
    three ImageOrientationPatient values), ``column_direction`` of increasing row.
    """
    angles = np.full(myocardium.shape, np.nan)
    rows, cols = np.nonzero(myocardium)
    if rows.size == 0:
        return angles
    normal = np.cross(row_direction, column_direction)
    anterior = PATIENT_ANTERIOR_LPS - (PATIENT_ANTERIOR_LPS @ normal) * normal
    anterior /= np.linalg.norm(anterior)
    septal = PATIENT_RIGHT_LPS - (PATIENT_RIGHT_LPS @ normal) * normal
    septal -= (septal @ anterior) * anterior
    septal /= np.linalg.norm(septal)
    dr = (rows - rows.mean()) * spacing[0]
    dc = (cols - cols.mean()) * spacing[1]
    offsets = np.outer(dc, row_direction) + np.outer(dr, column_direction)
    angles[rows, cols] = np.degrees(np.arctan2(offsets @ septal, offsets @ anterior)) % 360.0
    return angles


def _old_segment_of(angle: np.ndarray, third: int) -> np.ndarray:
    if third < 2:  # basal (1-6) and mid (7-12): six 60-degree sectors, anterior centred on 0
        return 1 + 6 * third + ((angle + 30.0) % 360.0 // 60.0).astype(int)
    return 13 + ((angle + 45.0) % 360.0 // 90.0).astype(int)  # apical: four 90-degree sectors


def _old_aha_segments(myocardium: np.ndarray, scar: np.ndarray, spacing: Spacing,
                 row_direction: np.ndarray, column_direction: np.ndarray,
                 chord_degrees: float = 6.0, mvo: np.ndarray | None = None) -> list[dict]:
    """Scar %, MVO % and transmurality of the 16 AHA segments.

    Slices with myocardium are split base to apex into thirds (basal, mid,
    apical). Transmurality is how deep the scar reaches where it is: per
    ``chord_degrees`` wedge of the wall, the scar fraction of the wall;
    the segment's figure is the median over its wedges that contain scar
    (0 when none does), classed 0, 1-25, 26-50, 51-75, 76-100 %.
    """
    myocardium, scar = np.asarray(myocardium, bool), np.asarray(scar, bool) & myocardium
    mvo = np.zeros_like(scar) if mvo is None else np.asarray(mvo, bool) & scar
    with_myo = [k for k in range(len(myocardium)) if myocardium[k].any()]
    thirds = np.array_split(np.array(with_myo, dtype=int), 3) if with_myo else [[], [], []]
    myo_px = dict.fromkeys(AHA_NAMES, 0)
    scar_px = dict.fromkeys(AHA_NAMES, 0)
    mvo_px = dict.fromkeys(AHA_NAMES, 0)
    chords: dict[int, list[float]] = {s: [] for s in AHA_NAMES}
    for third, slice_indices in enumerate(thirds):
        for k in slice_indices:
            angles = _old_myocardial_angles(myocardium[k], spacing, row_direction, column_direction)
            inside = myocardium[k]
            segments = _old_segment_of(angles[inside], third)
            is_scar = scar[k][inside]
            is_mvo = mvo[k][inside]
            wedges = (angles[inside] // chord_degrees).astype(int)
            # Pixels, scar and MVO per segment, and per (segment, wedge) pair, counted at once.
            n_wedges = int(np.ceil(360.0 / chord_degrees)) + 1
            pair = segments * n_wedges + wedges
            per_pair = np.bincount(pair)
            scar_per_pair = np.bincount(pair, weights=is_scar)
            for totals, weights in ((myo_px, None), (scar_px, is_scar), (mvo_px, is_mvo)):
                counts = np.bincount(segments, weights=weights)
                for s in np.flatnonzero(counts):
                    totals[int(s)] += int(counts[s])
            for p in np.flatnonzero(scar_per_pair):
                chords[int(p // n_wedges)].append(
                    100.0 * float(scar_per_pair[p] / per_pair[p]))
    out = []
    for s, name in AHA_NAMES.items():
        transmural = float(np.median(chords[s])) if chords[s] else 0.0
        out.append({"segment": s, "name": name,
                    "scar_percent": 100.0 * scar_px[s] / myo_px[s] if myo_px[s] else 0.0,
                    "mvo_percent": 100.0 * mvo_px[s] / myo_px[s] if myo_px[s] else 0.0,
                    "transmurality_percent": transmural,
                    "transmurality_class": transmurality_class(transmural),
                    "myocardium_pixels": myo_px[s]})
    return out


def _rings(seed: int, shape=(12, 128, 160)) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rings of random size and place (some at the image's edge, none on some slices),
    ragged scar and MVO inside."""
    rng = np.random.default_rng(seed)
    myocardium = np.zeros(shape, bool)
    for k in range(1 + seed % 2, shape[0] - seed % 3):
        centre = rng.uniform((0, 0), shape[1:])
        r_out = rng.uniform(6, 30)
        rr, cc = np.ogrid[:shape[1], :shape[2]]
        d = np.hypot(rr - centre[0], cc - centre[1])
        myocardium[k] = (d < r_out) & (d > r_out * rng.uniform(0.4, 0.8))
    scar = myocardium & (rng.random(shape) < rng.uniform(0.1, 0.6))
    mvo = scar & (rng.random(shape) < 0.3)
    return myocardium, scar, mvo


@pytest.mark.parametrize("seed", range(8))
def test_aha_segments_give_the_figures_of_the_whole_slice_search(seed: int) -> None:
    from service.pipeline.quantify import aha_segments

    myocardium, scar, mvo = _rings(seed)
    rng = np.random.default_rng(100 + seed)
    row = rng.normal(size=3)
    row /= np.linalg.norm(row)
    column = np.cross(rng.normal(size=3), row)
    column /= np.linalg.norm(column)
    spacing = tuple(rng.uniform(0.8, 2.0, size=2))
    for masks in ((myocardium, scar, mvo), (myocardium, scar, None),
                  (np.zeros_like(myocardium),) * 3):
        args = (masks[0], masks[1], spacing, row, column)
        assert aha_segments(*args, mvo=masks[2]) == _old_aha_segments(*args, mvo=masks[2])


# --- nsd_scar as it was before issue 54 round 5 searched the myocardium's box only
# (verbatim but for the names).

from collections.abc import Sequence  # noqa: E402


def _old_sector_labels(myocardium: np.ndarray, n_sectors: int, start_angle_deg: float = 0.0
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


def _old_remote_statistics(image: np.ndarray, myocardium: np.ndarray, n_sectors: int = 6,
                      min_pixels: int = 10) -> tuple[float, float] | None:
    """Mean and SD of the remote (normal) myocardium of one slice.

    Chosen automatically: the sector with the lowest mean signal, since on
    LGE healthy myocardium is the nulled, darkest myocardium.
    """
    sectors = _old_sector_labels(myocardium, n_sectors)
    best = None
    for s in range(n_sectors):
        values = image[sectors == s]
        if values.size >= min_pixels and (best is None or values.mean() < best.mean()):
            best = values
    return None if best is None else (float(best.mean()), float(best.std()))


def _old_nsd_scar(images: Sequence[np.ndarray], myocardium: np.ndarray, n_sd: float = 4.0
             ) -> np.ndarray:
    """n-SD method: scar where the signal exceeds remote mean + n SD, slice by slice."""
    out = np.zeros(np.shape(myocardium), dtype=bool)
    for k, (image, myo) in enumerate(zip(images, myocardium, strict=True)):
        stats = _old_remote_statistics(image, myo)
        if stats is not None:
            out[k] = myo & (image > stats[0] + n_sd * stats[1])
    return out


@pytest.mark.parametrize("seed", range(8))
def test_nsd_scar_gives_the_masks_of_the_whole_slice_search(seed: int) -> None:
    from service.pipeline.quantify import nsd_scar, remote_statistics

    myocardium, _, _ = _rings(seed)
    rng = np.random.default_rng(200 + seed)
    images = [rng.gamma(2.0, 50.0, size=myocardium.shape[1:]).astype(np.float32)
              for _ in myocardium]
    for k in range(len(images)):  # a bright patch in some rings: scar for the 4-SD rule
        images[k][myocardium[k] & (rng.random(myocardium.shape[1:]) < 0.2)] *= 8
    assert np.array_equal(nsd_scar(images, myocardium), _old_nsd_scar(images, myocardium))
    assert np.array_equal(nsd_scar(images, myocardium, 2.0),
                          _old_nsd_scar(images, myocardium, 2.0))
    for image, myo in zip(images, myocardium, strict=True):
        assert remote_statistics(image, myo) == _old_remote_statistics(image, myo)
    empty = np.zeros_like(myocardium)
    assert not nsd_scar(images, empty).any()
