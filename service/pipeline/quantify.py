"""Measurements from masks: areas, volumes, scar extent, and the classical thresholds.

Pure functions on (z, y, x) arrays ordered base to apex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.pipeline.grid import Spacing
from service.pipeline.postprocess import mask_box
from service.pipeline.preprocess import series_peak
from service.pipeline.volume import Volume


def sector_labels(myocardium: np.ndarray, n_sectors: int, start_angle_deg: float = 0.0
                  ) -> np.ndarray:
    """Angular sector (0..n-1) of every myocardial pixel around the slice's myocardium centroid.

    Angles are counter-clockwise on screen from the image's row direction
    (``start_angle_deg`` sets sector 0's first edge); -1 outside the myocardium.
    """
    labels = np.full(myocardium.shape, -1, dtype=np.int16)
    rows, cols = np.nonzero(myocardium)
    if rows.size:
        labels[rows, cols] = _sectors(rows, cols, n_sectors, start_angle_deg)
    return labels


def _sectors(rows: np.ndarray, cols: np.ndarray, n_sectors: int, start_angle_deg: float = 0.0
             ) -> np.ndarray:
    """:func:`sector_labels` of the myocardial pixels at ``rows``, ``cols`` (nonempty)."""
    angle = np.degrees(np.arctan2(-(rows - rows.mean()), cols - cols.mean()))
    return ((angle - start_angle_deg) % 360.0 // (360.0 / n_sectors)).astype(np.int16)


def remote_statistics(image: np.ndarray, myocardium: np.ndarray, n_sectors: int = 6,
                      min_pixels: int = 10) -> tuple[float, float] | None:
    """Mean and SD of the remote (normal) myocardium of one slice.

    Chosen automatically: the sector with the lowest mean signal, since on
    LGE healthy myocardium is the nulled, darkest myocardium.
    """
    rows, cols = np.nonzero(myocardium)
    return _remote(np.asarray(image)[rows, cols], rows, cols, n_sectors, min_pixels)


def _remote(values: np.ndarray, rows: np.ndarray, cols: np.ndarray, n_sectors: int = 6,
            min_pixels: int = 10) -> tuple[float, float] | None:
    """:func:`remote_statistics` of the myocardial pixels at ``rows``, ``cols`` (in
    ``np.nonzero``'s order) whose signal is ``values``."""
    if rows.size == 0:
        return None
    sectors = _sectors(rows, cols, n_sectors)
    best = None
    for s in range(n_sectors):
        sector = values[sectors == s]
        if sector.size >= min_pixels and (best is None or sector.mean() < best.mean()):
            best = sector
    return None if best is None else (float(best.mean()), float(best.std()))


def nsd_scar(images: Sequence[np.ndarray], myocardium: np.ndarray, n_sd: float = 4.0
             ) -> np.ndarray:
    """n-SD method: scar where the signal exceeds remote mean + n SD, slice by slice."""
    out = np.zeros(np.shape(myocardium), dtype=bool)
    # Each slice's myocardium is found in the box around the series' (the same pixels, in
    # the same order, as on the whole slice), and nothing outside it can be scar.
    box = mask_box(np.asarray(myocardium, dtype=bool).any(axis=0), 0)
    if box is None:
        return out
    for k, (image, myo) in enumerate(zip(images, myocardium, strict=True)):
        image, myo = np.asarray(image)[box], np.asarray(myo)[box]
        rows, cols = np.nonzero(myo)
        stats = _remote(image[rows, cols], rows + box[0].start, cols + box[1].start)
        if stats is not None:
            out[k][box] = myo & (image > stats[0] + n_sd * stats[1])
    return out


def fwhm_scar(images: Sequence[np.ndarray], myocardium: np.ndarray,
              peak_percentile: float = 99.0) -> np.ndarray:
    """Full width at half maximum: scar where the signal is at least half the series' peak.

    The peak is the 99th percentile of myocardial signal over the series (a
    single hottest pixel is noise), in place of a hand-drawn maximum ROI. It
    over-calls when there is no scar: half of a noise peak is little signal.
    """
    myocardium = np.asarray(myocardium, dtype=bool)
    if not myocardium.any():
        return np.zeros_like(myocardium)
    stack = np.stack([np.asarray(im, dtype=np.float32) for im in images])
    return myocardium & (stack >= 0.5 * series_peak(images, myocardium, peak_percentile))


def pixel_area_mm2(spacing: Spacing) -> float:
    return float(spacing[0]) * float(spacing[1])


def scar_fraction(scar: np.ndarray, myocardium: np.ndarray) -> float:
    """Scar volume over myocardium volume, 0..1 (0 without myocardium)."""
    myo = int(np.count_nonzero(myocardium))
    return int(np.count_nonzero(np.asarray(scar) & np.asarray(myocardium))) / myo if myo else 0.0


# --- AHA 16-segment model -----------------------------------------------------

AHA_NAMES = {
    1: "basal anterior", 2: "basal anteroseptal", 3: "basal inferoseptal", 4: "basal inferior",
    5: "basal inferolateral", 6: "basal anterolateral", 7: "mid anterior",
    8: "mid anteroseptal", 9: "mid inferoseptal", 10: "mid inferior", 11: "mid inferolateral",
    12: "mid anterolateral", 13: "apical anterior", 14: "apical septal", 15: "apical inferior",
    16: "apical lateral",
}
TRANSMURALITY_CLASSES = ((0.0, "0%"), (25.0, "1-25%"), (50.0, "26-50%"), (75.0, "51-75%"),
                         (100.0, "76-100%"))
PATIENT_ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])
PATIENT_RIGHT_LPS = np.array([-1.0, 0.0, 0.0])


def transmurality_class(percent: float) -> str:
    if percent <= 0.0:
        return "0%"
    for upper, label in TRANSMURALITY_CLASSES[1:]:
        if percent <= upper:
            return label
    return TRANSMURALITY_CLASSES[-1][1]


def myocardial_angles(myocardium: np.ndarray, spacing: Spacing, row_direction: np.ndarray,
                      column_direction: np.ndarray) -> np.ndarray:
    """Angle (degrees, 0..360) of each pixel around the LV centre; NaN outside the myocardium.

    0 degrees is the patient's anterior direction projected onto the slice,
    90 degrees points to the septum (the patient's right, made orthogonal).
    ``row_direction`` is the direction of increasing column index (the first
    three ImageOrientationPatient values), ``column_direction`` of increasing row.
    """
    angles = np.full(myocardium.shape, np.nan)
    rows, cols = np.nonzero(myocardium)
    if rows.size:
        angles[rows, cols] = _angles_of(rows, cols, spacing, row_direction, column_direction)
    return angles


def _angles_of(rows: np.ndarray, cols: np.ndarray, spacing: Spacing,
               row_direction: np.ndarray, column_direction: np.ndarray) -> np.ndarray:
    """:func:`myocardial_angles` of a slice's myocardial pixels (``np.nonzero``'s order)."""
    normal = np.cross(row_direction, column_direction)
    anterior = PATIENT_ANTERIOR_LPS - (PATIENT_ANTERIOR_LPS @ normal) * normal
    anterior /= np.linalg.norm(anterior)
    septal = PATIENT_RIGHT_LPS - (PATIENT_RIGHT_LPS @ normal) * normal
    septal -= (septal @ anterior) * anterior
    septal /= np.linalg.norm(septal)
    dr = (rows - rows.mean()) * spacing[0]
    dc = (cols - cols.mean()) * spacing[1]
    offsets = np.outer(dc, row_direction) + np.outer(dr, column_direction)
    return np.degrees(np.arctan2(offsets @ septal, offsets @ anterior)) % 360.0


def _segment_of(angle: np.ndarray, third: int) -> np.ndarray:
    if third < 2:  # basal (1-6) and mid (7-12): six 60-degree sectors, anterior centred on 0
        return 1 + 6 * third + ((angle + 30.0) % 360.0 // 60.0).astype(int)
    return 13 + ((angle + 45.0) % 360.0 // 90.0).astype(int)  # apical: four 90-degree sectors


def aha_segments(myocardium: np.ndarray, scar: np.ndarray, spacing: Spacing,
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
    # Only the box around the myocardium of every slice is searched for its pixels (the
    # same pixels, in the same order, as the whole slice's).
    box = mask_box(myocardium.any(axis=0), 0)
    with_myo = [k for k in range(len(myocardium)) if box and myocardium[k][box].any()]
    thirds = np.array_split(np.array(with_myo, dtype=int), 3) if with_myo else [[], [], []]
    myo_px = dict.fromkeys(AHA_NAMES, 0)
    scar_px = dict.fromkeys(AHA_NAMES, 0)
    mvo_px = dict.fromkeys(AHA_NAMES, 0)
    chords: dict[int, list[float]] = {s: [] for s in AHA_NAMES}
    for third, slice_indices in enumerate(thirds):
        for k in slice_indices:
            rows, cols = np.nonzero(myocardium[k][box])
            rows += box[0].start
            cols += box[1].start
            angles = _angles_of(rows, cols, spacing, row_direction, column_direction)
            segments = _segment_of(angles, third)
            is_scar = scar[k][rows, cols]
            is_mvo = mvo[k][rows, cols]
            wedges = (angles // chord_degrees).astype(int)
            # Pixels, scar and MVO per segment, and per (segment, wedge) pair, counted at once.
            n_wedges = int(np.ceil(360.0 / chord_degrees)) + 1
            pair = segments * n_wedges + wedges
            per_pair = np.bincount(pair)
            scar_per_pair = np.bincount(pair, weights=is_scar)
            for totals, weights in ((myo_px, None), (scar_px, is_scar), (mvo_px, is_mvo)):
                counts = np.bincount(segments, weights=weights)
                for s in np.flatnonzero(counts):
                    totals[int(s)] += int(counts[s])
            scarred = np.flatnonzero(scar_per_pair)
            shares = 100.0 * (scar_per_pair[scarred] / per_pair[scarred])
            for s, share in zip((scarred // n_wedges).tolist(), shares.tolist(), strict=True):
                chords[s].append(share)
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


MYOCARDIAL_DENSITY_G_PER_ML = 1.05


def series_figures(myocardium: np.ndarray, scar: np.ndarray, volume: Volume,
                   mvo: np.ndarray | None = None) -> dict:
    """Volumes, masses, the scar-to-myocardium ratio and the MVO of a series' masks.

    MVO counts inside the scar only (it is part of the infarct), and without
    an MVO mask it is 0.
    """
    voxel_ml = pixel_area_mm2(volume.spacing) * volume.slice_spacing_mm / 1000.0
    myo_ml = float(np.count_nonzero(myocardium)) * voxel_ml
    scar_ml = float(np.count_nonzero(scar & myocardium)) * voxel_ml
    ratio = scar_fraction(scar, myocardium)
    mvo_share = 0.0 if mvo is None else scar_fraction(mvo & scar, myocardium)
    return {"myocardium_volume_ml": myo_ml, "scar_volume_ml": scar_ml,
            "myocardium_mass_g": myo_ml * MYOCARDIAL_DENSITY_G_PER_ML,
            "scar_mass_g": scar_ml * MYOCARDIAL_DENSITY_G_PER_ML,
            "scar_to_myocardium_ratio": ratio, "scar_percent": 100.0 * ratio,
            "mvo_volume_ml": mvo_share * myo_ml, "mvo_percent": 100.0 * mvo_share}


def slice_figures(myocardium: np.ndarray, scar: np.ndarray, mvo: np.ndarray,
                  spacing: Spacing) -> list[dict]:
    """Per slice: myocardium, scar and MVO areas and the scar and MVO shares (the report's)."""
    area = pixel_area_mm2(spacing)
    out = []
    for myo_k, scar_k, mvo_k in zip(myocardium, scar, mvo, strict=True):
        myo_px = int(np.count_nonzero(myo_k))
        scar_px = int(np.count_nonzero(scar_k & myo_k))
        mvo_px = int(np.count_nonzero(mvo_k & scar_k & myo_k))
        out.append({"myocardium_area_mm2": myo_px * area, "scar_area_mm2": scar_px * area,
                    "scar_percent": 100.0 * scar_px / myo_px if myo_px else 0.0,
                    "mvo_area_mm2": mvo_px * area,
                    "mvo_percent": 100.0 * mvo_px / myo_px if myo_px else 0.0})
    return out


def baseline_figures(method: str, scar: np.ndarray, myocardium: np.ndarray,
              volume: Volume) -> dict:
    f = series_figures(myocardium, scar, volume)
    return {"scar_percent": f["scar_percent"], "scar_volume_ml": f["scar_volume_ml"],
            "scar_mass_g": f["scar_mass_g"], "method": method}
