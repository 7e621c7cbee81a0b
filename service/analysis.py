"""One analysis end to end: files -> datasets -> volume -> pipeline -> SEG, SR -> store.

The stages composed, with their timings. It sits above ``service.pipeline``
and ``service.dicom`` (the encoders need the pipeline's volume, so the step
that encodes cannot live in the pipeline) and below the two ways in: uploads
(``service.api``) and series received by STOW-RS (``service.pacs``).
Synchronous: called from worker threads.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
import uuid
from contextlib import nullcontext
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import numpy as np
import pydicom

from service.config import Settings
from service.dicom.headers import SourceHeaders
from service.dicom.ingest import Blob, Limits
from service.dicom.instances import BadCopy, Duplicates, one_copy_each
from service.dicom.seg import build_seg, check_referencable, distinct_datasets
from service.dicom.sr import build_sr
from service.dicom.synthetic import warmup_series
from service.dicom.uids import uids_of
from service.encoding import Encoder, encode_stored, to_bytes
from service.errors import InputError
from service.pipeline.acceptance import (
    ClosedRings,
    check_contrast,
    check_headers,
    check_segmentation,
    contrast_review,
    is_unlike_training,
    lge_evidence,
)
from service.pipeline.contrast import read_contrast
from service.pipeline.quality import review_reasons
from service.pipeline.quantify import (
    aha_segments,
    baseline_figures,
    fwhm_scar,
    nsd_scar,
    series_figures,
    slice_figures,
)
from service.pipeline.registry import Pipeline
from service.pipeline.report import Report
from service.pipeline.segment import myocardium_probability, ring_from, segment_on
from service.pipeline.uncertainty import calibrated_interval
from service.pipeline.volume import Volume, build_volume
from service.store import arrays as stored_arrays
from service.store.results import ResultStore

log = logging.getLogger("service")
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
    """The report and the masks; the SEG and SR are encoded from them after the answer
    (:mod:`service.encoding`), under the UIDs the report already names."""

    report: Report
    myocardium: np.ndarray
    scar: np.ndarray
    mvo: np.ndarray
    crop_ring: np.ndarray  # the myocardium that placed the scar network's crop


def analyse(volume: Volume, pipeline: Pipeline, decode_ms: float,
            analysis_id: str | None = None, review_notes: tuple[str, ...] = ()
            ) -> AnalysisResult:
    started = time.perf_counter()
    analysis_id = analysis_id or uuid.uuid4().hex
    images = volume.images
    check_headers([s.dataset for s in volume.slices])
    check_referencable(volume.slices)  # the SEG comes after the answer: refused now if it cannot
    t0 = time.perf_counter()
    myo_timer = _TimedPredictor(pipeline.myocardium.network.predict)
    scar_timer = _TimedPredictor(pipeline.scar.network.predict)
    myo_net = replace(pipeline.myocardium.network, predict=myo_timer)
    scar_net = replace(pipeline.scar.network, predict=scar_timer)
    ring_timer = ring_net = None
    if pipeline.ring is not None:
        ring_timer = _TimedPredictor(pipeline.ring.network.predict)
        ring_net = replace(pipeline.ring.network, predict=ring_timer)
    myo_p = myocardium_probability(images, volume.spacing, myo_net)
    first_ring = ring_from(myo_p, myo_net)
    # The myocardium network's own ring decides whether there is a heart (the cascade's
    # scar U-Net redraws it inside its box, which can leave no cavity), before the scar
    # network runs.
    closed_rings = ClosedRings(first_ring)  # closed once, for the gate and the evidence
    check_segmentation(first_ring, volume.spacing, closed_rings)
    # The image must look like LGE too (the headers may lie or be missing).
    evidence = lge_evidence(images, first_ring, volume.spacing, closed_rings)
    check_contrast(evidence)
    crop_ring, crop_p = first_ring, myo_p
    if ring_net is not None:
        redrawn = segment_on(images, volume.spacing, first_ring, myo_p, ring_net)
        crop_ring, crop_p = redrawn.myocardium, redrawn.myocardium_probability
    masks = segment_on(images, volume.spacing, crop_ring, crop_p, scar_net)
    myocardium, scar, mvo = masks.myocardium, masks.scar, masks.mvo
    inference_ms = sum(t.seconds for t in (myo_timer, ring_timer, scar_timer) if t) * 1000.0
    preprocess_ms = (time.perf_counter() - t0) * 1000.0 - inference_ms

    t0 = time.perf_counter()
    figures = series_figures(myocardium, scar, volume, mvo)
    slices = [{"index": k, "sop_instance_uid": s.sop_instance_uid,
               "frame_number": s.frame_number} | per_slice
              for k, (s, per_slice) in enumerate(zip(
                  volume.slices, slice_figures(myocardium, scar, mvo, volume.spacing),
                  strict=True))]
    orientation = volume.slices[0].orientation
    segments = aha_segments(myocardium, scar, volume.spacing, orientation[:3], orientation[3:],
                            mvo=mvo)
    baselines = {
        "4sd": baseline_figures("remote mean + 4 SD inside the predicted myocardium; remote = "
                         "darkest of six sectors per slice", nsd_scar(images, myocardium, 4.0),
                         myocardium, volume),
        "fwhm": baseline_figures("half of the series' peak (99th percentile) myocardial "
                          "signal, inside the predicted myocardium",
                          fwhm_scar(images, myocardium), myocardium, volume),
    }
    first = volume.slices[0].dataset
    contrast = read_contrast(images, myocardium, (first.get("SeriesDescription"),
                                                  first.get("ProtocolName"),
                                                  first.get("SequenceName")))
    calibration = pipeline.scar.interval
    scar_interval = None if calibration is None else calibrated_interval(
        figures["scar_percent"], masks, first_ring, pipeline.scar.network.threshold,
        calibration, is_unlike_training(evidence))
    reasons = [*review_notes, *contrast_review(evidence),
               *review_reasons(myocardium, figures, volume, scar_interval,
                               None if calibration is None else calibration.review_width,
                               first_ring, closed_rings)]
    quality = {"verdict": "review" if reasons else "ok", "reasons": reasons}
    quantify_ms = (time.perf_counter() - t0) * 1000.0

    uid = uids_of(analysis_id)
    total_ms = decode_ms + (time.perf_counter() - started) * 1000.0
    report = Report(
        id=analysis_id, created_at=datetime.now(UTC), pipeline=pipeline.name,
        models=[{"name": m.name, "version": m.version, "sha256": m.sha256}
                for m in pipeline.models],
        execution_provider=pipeline.scar.execution_provider,
        study_instance_uid=volume.study_instance_uid,
        series_instance_uid=volume.series_instance_uid,
        series_description=str(first.get("SeriesDescription", "") or "") or None,
        seg_series_instance_uid=uid("seg-series"), seg_sop_instance_uid=uid("seg"),
        sr_sop_instance_uid=uid("sr"),
        slices=slices, slice_spacing_mm=volume.slice_spacing_mm,
        pixel_spacing_mm=volume.spacing, aha_segments=segments, aha_reference=AHA_REFERENCE,
        baselines=baselines,
        timings_ms={"decode": decode_ms, "preprocess": preprocess_ms, "inference": inference_ms,
                    "quantify": quantify_ms, "encode": 0.0, "total": total_ms},
        warnings=[*volume.warnings, *reasons,
                  *(["no scar was found in this series"] if not scar.any() else [])],
        contrast=contrast.contrast, contrast_basis=contrast.basis,
        lge_evidence=evidence.to_dict(),
        scar_percent_interval=scar_interval, quality=quality, **figures)
    return AnalysisResult(report=report, myocardium=myocardium, scar=scar, mvo=mvo,
                          crop_ring=crop_ring)


def warm_up(pipelines: list[Pipeline]) -> float:
    """Every pipeline and both encoders once on a synthetic series; returns the seconds.

    Called before the service says ready, so the first patient's analysis is as fast as
    the rest (onnxruntime, highdicom and pydicom initialise on first use). A synthetic
    series the networks refuse still warms the networks; the encoders are then run on
    a plain ring so that they are warm too.
    """
    started = time.perf_counter()
    volume = build_volume(warmup_series())
    encoded = False
    for pipeline in pipelines:
        try:
            result = analyse(volume, pipeline, 0.0, analysis_id="warm-up")
        except InputError:
            continue
        report = result.report.model_dump(mode="json")
        encode_stored(report, stored_files(result, volume))  # what follows an answer
        encoded = True
    if not encoded:
        ring = np.zeros((len(volume.slices), *volume.images[0].shape), bool)
        ring[:, 100:156, 100:156] = True
        ring[:, 110:146, 110:146] = False
        seg = build_seg(volume.slices, ring, ring, ring, "warm-up", "0")
        to_bytes(seg)
        to_bytes(build_sr([s.dataset for s in volume.slices], seg,
                          series_figures(ring, ring, volume, ring), "warm-up", "0"))
    return time.perf_counter() - started


def identity_of(ds: pydicom.Dataset) -> dict[str, str]:
    """Whose scan this is, for the reader to confirm on the front page and in the viewer
    (stored beside the report, in the index; never logged)."""
    return {"patient_name": str(ds.get("PatientName", "") or ""),
            "patient_id": str(ds.get("PatientID", "") or ""),
            "study_date": str(ds.get("StudyDate", "") or ""),
            "series_description": str(ds.get("SeriesDescription", "") or "")}


def stored_files(result: AnalysisResult, volume: Volume,
                 headers: SourceHeaders | None = None) -> dict[str, bytes]:
    """What is stored before the answer: the arrays the overlay needs, whose scan it is,
    and the source headers, which with the report are all the SEG and SR are made from
    (``headers``: those encoded when the sources were read, else encoded now)."""
    arrays = stored_arrays.dump(np.stack(volume.images).astype(np.float32, copy=False),
                                myocardium=result.myocardium, scar=result.scar, mvo=result.mvo,
                                crop_ring=result.crop_ring)
    identity = identity_of(volume.slices[0].dataset)
    return {"arrays": arrays, "identity": json.dumps(identity).encode(),
            "sources": (headers or SourceHeaders()).pack(distinct_datasets(volume.slices))}


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_request_bytes, settings.max_files, settings.max_unzipped_bytes)


def models_digest(pipeline: Pipeline):
    """A sha256 begun with the pipeline's name and its models' file hashes."""
    digest = hashlib.sha256(pipeline.name.encode())
    for model in pipeline.models:
        digest.update(model.sha256.encode())
    return digest


def input_fingerprint(blobs: list[Blob], pipeline: Pipeline) -> str:
    """The same instances (by content) through the same models: the same analysis."""
    digest = models_digest(pipeline)
    for content in sorted(blob.sha256() for blob in blobs):
        digest.update(content.encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class FilesAnalysis:
    """One series' report (JSON-ready), the files to keep, and the copies not used."""

    report: dict
    files: dict[str, bytes]
    bad_copies: list[BadCopy]


def analyse_files(blobs: list[Blob], pipeline: Pipeline, max_series_pixels: int,
                  notes: tuple[str, ...] = (), analysis_id: str | None = None,
                  review_notes: tuple[str, ...] = (), duplicates: Duplicates = "reject"
                  ) -> FilesAnalysis:
    """One series' files to its report and the files to keep.

    What an upload, a series received by STOW-RS and the batch command all run,
    so that they give the same answers, duplicated instances included
    (:func:`service.dicom.instances.one_copy_each`). ``notes`` become warnings;
    ``review_notes`` reasons for review (the batch: files beside the series it could
    not read). ``blobs`` in arrival order, which ``duplicates`` (DUPLICATE_INSTANCES) may
    consult.
    """
    started = time.perf_counter()
    instances = one_copy_each(blobs, max_series_pixels, duplicates)
    # Encoded before the volume stage reads (and so converts) elements the instances share;
    # timed as "encode", which it is.
    t0 = time.perf_counter()
    headers = SourceHeaders(instances.datasets)
    headers_s = time.perf_counter() - t0
    volume = build_volume(instances.datasets)
    if notes or instances.warnings:
        volume = replace(volume, warnings=[*notes, *instances.warnings, *volume.warnings])
    decode_ms = (time.perf_counter() - started - headers_s) * 1000.0
    result = analyse(volume, pipeline, decode_ms, analysis_id, review_notes)
    t0 = time.perf_counter()
    files = stored_files(result, volume, headers)
    report = result.report.model_dump(mode="json")
    # "encode" is what the answer waits for: the stored inputs (the SEG and SR come after).
    report["timings_ms"]["encode"] = (time.perf_counter() - t0 + headers_s) * 1000.0
    report["timings_ms"]["total"] += report["timings_ms"]["encode"]
    return FilesAnalysis(report, files, instances.bad_copies)


def analyse_and_store(blobs: list[Blob], pipeline: Pipeline, settings: Settings,
                      store: ResultStore, notes: tuple[str, ...] = (),
                      analysis_id: str | None = None, fingerprint: str | None = None,
                      encoder: Encoder | None = None, spooled: int = 0) -> dict:
    """One series' files to a stored report (returned as JSON-ready dict).

    Stored durably (report, arrays, source headers) before this returns; the SEG and SR
    are then ``encoder``'s (encoded here, before returning, without one). Overloaded
    before any work when the encoder's queue is full; InsufficientStorage when the store
    cannot take the series (nothing of it kept; ``spooled``: the bytes its upload holds on
    the store's disk meanwhile, which a retry needs again)."""
    with encoder.place() if encoder is not None else nullcontext():
        analysed = analyse_files(blobs, pipeline, settings.max_series_pixels, notes,
                                 analysis_id, duplicates=settings.duplicate_instances)
        report, files = analysed.report, analysed.files
        if fingerprint:
            report["input_fingerprint"] = fingerprint
        store.save(report, files, push_to=settings.dicomweb_store_url, spooled=spooled)
        if encoder is None:
            store.save_encoded(report["id"], encode_stored(report, files))
        else:
            encoder.submit(report["id"])
    log.info("analysis %s stored: series %s, %d slices, pipeline %s, scar %.1f %%, %.0f ms",
             report["id"], report["series_instance_uid"], len(report["slices"]),
             report["pipeline"], report["scar_percent"], report["timings_ms"]["total"])
    if settings.dicomweb_store_url:
        report["store_back"] = store.push_state(report["id"])
    return report
