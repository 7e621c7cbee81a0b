"""One analysis end to end: volume -> segment -> quantify -> encode, with stage timings.

Called from a worker thread; everything here is synchronous and pure apart
from the ONNX sessions it is handed.
"""

from __future__ import annotations

import io
import time
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pydicom

from service.dicom.seg import build_seg
from service.dicom.sr import build_sr
from service.pipeline.acceptance import check_headers, check_segmentation
from service.pipeline.contrast import read_contrast
from service.pipeline.postprocess import clean_myocardium
from service.pipeline.quantify import (
    aha_segments,
    fwhm_scar,
    nsd_scar,
    pixel_area_mm2,
    scar_fraction,
)
from service.pipeline.registry import Pipeline
from service.pipeline.report import Report
from service.pipeline.segment import myocardium_probability, segment_on
from service.pipeline.uncertainty import ambiguity, interval
from service.pipeline.volume import Volume

MYOCARDIAL_DENSITY_G_PER_ML = 1.05
# Geometry that gets a warning: outside what the models were trained on (phantoms: 8-10 mm
# slices, 1.2-2.0 mm pixels; EMIDEC: 8-13 mm slices, 1.25-2 mm nominal pixels), with room.
SLICE_SPACING_CHECKED_MM = (4.0, 15.0)
PIXEL_SPACING_CHECKED_MM = (0.6, 3.0)
AHA_REFERENCE = ("AHA 16 segments: slices with myocardium split base to apex into thirds; "
                 "sectors measured around the LV centre from the patient's anterior direction "
                 "projected on the slice (segment 1/7 and 13 centred on it), septum towards "
                 "the patient's right.")


class _TimedPredictor:
    """Adds up the time spent inside the network, so preprocessing is timed apart."""

    def __init__(self, predict) -> None:
        self.predict = predict
        self.seconds = 0.0

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        t0 = time.perf_counter()
        try:
            return self.predict(batch)
        finally:
            self.seconds += time.perf_counter() - t0


@dataclass(frozen=True)
class AnalysisResult:
    report: Report
    seg: pydicom.Dataset
    sr: pydicom.Dataset
    myocardium: np.ndarray
    scar: np.ndarray


def _to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def _figures(myocardium: np.ndarray, scar: np.ndarray, volume: Volume) -> dict:
    voxel_ml = pixel_area_mm2(volume.spacing) * volume.slice_spacing_mm / 1000.0
    myo_ml = float(np.count_nonzero(myocardium)) * voxel_ml
    scar_ml = float(np.count_nonzero(scar & myocardium)) * voxel_ml
    ratio = scar_fraction(scar, myocardium)
    return {"myocardium_volume_ml": myo_ml, "scar_volume_ml": scar_ml,
            "myocardium_mass_g": myo_ml * MYOCARDIAL_DENSITY_G_PER_ML,
            "scar_mass_g": scar_ml * MYOCARDIAL_DENSITY_G_PER_ML,
            "scar_to_myocardium_ratio": ratio, "scar_percent": 100.0 * ratio}


def _baseline(method: str, scar: np.ndarray, myocardium: np.ndarray,
              volume: Volume) -> dict:
    f = _figures(myocardium, scar, volume)
    return {"scar_percent": f["scar_percent"], "scar_volume_ml": f["scar_volume_ml"],
            "scar_mass_g": f["scar_mass_g"], "method": method}


# An interval wider than this is too wide to act on: the result goes to a person.
MAX_INTERVAL_WIDTH_PERCENT = 6.0


def myocardium_gaps(myocardium: np.ndarray) -> list[int]:
    """Slices without myocardium between slices that have it (0 = most basal)."""
    with_myo = [k for k in range(len(myocardium)) if myocardium[k].any()]
    return [] if not with_myo else [k for k in range(with_myo[0], with_myo[-1])
                                    if not myocardium[k].any()]


def review_reasons(myocardium: np.ndarray, figures: dict, volume: Volume,
                   scar_interval: tuple[float, float] | None) -> list[str]:
    """Why the result should not be read without a person checking it (empty: ok)."""
    reasons = []
    # A series without any LV ring was refused before (service.acceptance).
    gaps = myocardium_gaps(myocardium)
    if gaps:
        reasons.append(f"no myocardium found on slices {gaps} (0 = most basal), between "
                       "slices that have it; check those slices")
    if np.asarray(myocardium).any():
        mass = figures["myocardium_mass_g"]
        if not 30.0 <= mass <= 350.0:
            reasons.append(f"myocardial mass {mass:.0f} g is implausible (expected 30-350 g "
                           "for an adult LV); the segmentation or the geometry is wrong")
    if scar_interval is None:
        reasons.append("the scar model has no calibrated interval: the scar % comes without a "
                       "measure of how sure it is")
    else:
        width = scar_interval[1] - scar_interval[0]
        if width > MAX_INTERVAL_WIDTH_PERCENT:
            reasons.append(f"the 95 % interval of the scar % is {width:.1f} points wide "
                           f"({scar_interval[0]:.1f}-{scar_interval[1]:.1f} %), more than "
                           f"{MAX_INTERVAL_WIDTH_PERCENT:g}: too unsure to act on")
    low, high = SLICE_SPACING_CHECKED_MM
    if not low <= volume.slice_spacing_mm <= high:
        reasons.append(f"slice spacing {volume.slice_spacing_mm:.1f} mm is outside "
                       f"{low:g}-{high:g} mm (the models saw 8-13 mm between slices)")
    low, high = PIXEL_SPACING_CHECKED_MM
    rows_mm, cols_mm = (float(v) for v in volume.spacing)
    if not (low <= min(rows_mm, cols_mm) and max(rows_mm, cols_mm) <= high):
        reasons.append(f"pixel spacing {rows_mm:g} x {cols_mm:g} mm is outside "
                       f"{low:g}-{high:g} mm (the models saw 1.2-2.0 mm pixels)")
    return reasons


def analyse(volume: Volume, pipeline: Pipeline, decode_ms: float,
            analysis_id: str | None = None) -> AnalysisResult:
    started = time.perf_counter()
    images = volume.images
    check_headers([s.dataset for s in volume.slices])
    t0 = time.perf_counter()
    myo_timer = _TimedPredictor(pipeline.myocardium.network.predict)
    scar_timer = _TimedPredictor(pipeline.scar.network.predict)
    myo_net = replace(pipeline.myocardium.network, predict=myo_timer)
    scar_net = replace(pipeline.scar.network, predict=scar_timer)
    myo_p = myocardium_probability(images, volume.spacing, myo_net)
    first_ring = clean_myocardium(myo_p)
    # The myocardium network's own ring decides whether there is a heart (the cascade's
    # scar U-Net redraws it inside its box, which can leave no cavity), before the scar
    # network runs.
    check_segmentation(first_ring, volume.spacing)
    masks = segment_on(images, volume.spacing, first_ring, myo_p, scar_net)
    myocardium, scar = masks.myocardium, masks.scar
    inference_ms = (myo_timer.seconds + scar_timer.seconds) * 1000.0
    preprocess_ms = (time.perf_counter() - t0) * 1000.0 - inference_ms

    t0 = time.perf_counter()
    figures = _figures(myocardium, scar, volume)
    area = pixel_area_mm2(volume.spacing)
    slices = []
    for k, s in enumerate(volume.slices):
        myo_px, scar_px = int(myocardium[k].sum()), int((scar[k] & myocardium[k]).sum())
        slices.append({"index": k, "sop_instance_uid": s.sop_instance_uid,
                       "frame_number": s.frame_number, "myocardium_area_mm2": myo_px * area,
                       "scar_area_mm2": scar_px * area,
                       "scar_percent": 100.0 * scar_px / myo_px if myo_px else 0.0})
    orientation = volume.slices[0].orientation
    segments = aha_segments(myocardium, scar, volume.spacing, orientation[:3], orientation[3:])
    baselines = {
        "4sd": _baseline("remote mean + 4 SD inside the predicted myocardium; remote = "
                         "darkest of six sectors per slice", nsd_scar(images, myocardium, 4.0),
                         myocardium, volume),
        "fwhm": _baseline("half of the series' peak (99th percentile) myocardial "
                          "signal, inside the predicted myocardium",
                          fwhm_scar(images, myocardium), myocardium, volume),
    }
    first = volume.slices[0].dataset
    contrast = read_contrast(images, myocardium, (first.get("SeriesDescription"),
                                                  first.get("ProtocolName"),
                                                  first.get("SequenceName")))
    calibration = pipeline.scar.interval
    scar_interval = None
    if calibration is not None:
        spread = ambiguity(masks.scar_probability, myocardium, pipeline.scar.network.threshold,
                           calibration.offset)
        scar_interval = interval(figures["scar_percent"], spread, calibration)
    reasons = review_reasons(myocardium, figures, volume, scar_interval)
    quality = {"verdict": "review" if reasons else "ok", "reasons": reasons}
    quantify_ms = (time.perf_counter() - t0) * 1000.0

    t0 = time.perf_counter()
    algorithm = pipeline.name
    version = pipeline.scar.version
    review = quality["verdict"] == "review"
    seg = build_seg(volume, myocardium, scar, algorithm, version, review=review)
    sources = list({id(s.dataset): s.dataset for s in volume.slices}.values())
    sr = build_sr(sources, seg, figures, algorithm, version, scar_interval=scar_interval,
                  review=review)
    encode_ms = (time.perf_counter() - t0) * 1000.0

    total_ms = decode_ms + (time.perf_counter() - started) * 1000.0
    report = Report(
        id=analysis_id or uuid.uuid4().hex, created_at=datetime.now(UTC), pipeline=pipeline.name,
        models=[{"name": m.name, "version": m.version, "sha256": m.sha256}
                for m in (pipeline.myocardium, pipeline.scar)],
        execution_provider=pipeline.scar.execution_provider,
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        series_description=str(first.get("SeriesDescription", "") or "") or None,
        seg_series_instance_uid=str(seg.SeriesInstanceUID),
        seg_sop_instance_uid=str(seg.SOPInstanceUID), sr_sop_instance_uid=str(sr.SOPInstanceUID),
        slices=slices, slice_spacing_mm=volume.slice_spacing_mm,
        pixel_spacing_mm=volume.spacing, aha_segments=segments, aha_reference=AHA_REFERENCE,
        baselines=baselines,
        timings_ms={"decode": decode_ms, "preprocess": preprocess_ms, "inference": inference_ms,
                    "quantify": quantify_ms, "encode": encode_ms, "total": total_ms},
        warnings=[*volume.warnings, *reasons,
                  *(["no scar was found in this series"] if not scar.any() else [])],
        contrast=contrast.contrast, contrast_basis=contrast.basis,
        scar_percent_interval=scar_interval, quality=quality, **figures)
    return AnalysisResult(report=report, seg=seg, sr=sr, myocardium=myocardium, scar=scar)


def stored_files(result: AnalysisResult, volume: Volume) -> dict[str, bytes]:
    """SEG, SR and the arrays the overlay needs, as bytes for the store."""
    arrays = io.BytesIO()
    np.savez(arrays, myocardium=result.myocardium, scar=result.scar,
                        images=np.stack(volume.images).astype(np.float32))
    return {"seg": _to_bytes(result.seg), "sr": _to_bytes(result.sr),
            "arrays": arrays.getvalue()}
