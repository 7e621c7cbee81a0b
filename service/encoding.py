"""The SEG and SR of a stored analysis, encoded after its answer.

An analysis is answered once its report, arrays and source headers are stored
(:func:`service.analysis.analyse_and_store`); building the DICOM SEG and SR (about a
third of the time outside the networks, BENCHMARKS.md) then happens here, off the
request, in one background thread. Everything they are made of is on disk and their
UIDs and times come from the report, so encoding is deterministic: a start-up after a
crash encodes whatever is missing (:meth:`Encoder.start`) and gets the bytes an
undisturbed run would have written. ``GET .../seg`` and ``.../sr`` wait for it, a
bounded time; the store-back pushes after it. The viewer's layer of where the networks
disagree (:func:`disagreement`: eight runs of the scar network, as many as the whole
analysis' other work) is made when a reader first asks for it, and kept.
"""

from __future__ import annotations

import io
import logging
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pydicom

from service.dicom.headers import unpack_headers
from service.dicom.seg import build_seg, distinct_datasets
from service.dicom.sr import build_sr
from service.dicom.uids import uids_of
from service.errors import InputError
from service.pipeline.registry import Pipeline
from service.pipeline.segment import region_spread
from service.store.results import ResultStore

log = logging.getLogger("service")

# The report's figures the SR repeats.
SR_FIGURES = ("myocardium_volume_ml", "myocardium_mass_g", "scar_volume_ml", "scar_mass_g",
              "scar_percent", "mvo_volume_ml", "mvo_percent")


def to_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


@dataclass(frozen=True)
class _Frame:
    dataset: pydicom.Dataset
    frame_number: int | None


def encode_stored(report: dict, files: Mapping[str, bytes]) -> dict[str, bytes]:
    """The SEG and SR of an analysis from its stored report, arrays and source headers."""
    arrays = np.load(io.BytesIO(files["arrays"]))
    headers = unpack_headers(files["sources"])
    slices = [_Frame(headers[s["sop_instance_uid"]], s.get("frame_number"))
              for s in report["slices"]]
    uid, created_at = uids_of(report["id"]), datetime.fromisoformat(report["created_at"])
    algorithm, version = report["pipeline"], report["models"][-1]["version"]
    review = (report.get("quality") or {}).get("verdict") == "review"
    interval = report.get("scar_percent_interval")
    seg = build_seg(slices, arrays["myocardium"], arrays["scar"], arrays["mvo"], algorithm,
                    version, review=review, uid=uid, created_at=created_at)
    sr = build_sr(distinct_datasets(slices), seg, {k: report[k] for k in SR_FIGURES},
                  algorithm, version,
                  scar_interval=None if interval is None else tuple(interval), review=review,
                  uid=uid, created_at=created_at)
    return {"seg": to_bytes(seg), "sr": to_bytes(sr)}


def disagreement(report: dict, files: Mapping[str, bytes], pipeline: Pipeline) -> bytes | None:
    """The viewer's layer of where the scar network disagrees with itself over flips and
    turns of its input (:func:`service.pipeline.segment.region_spread`), as stored; None for
    an analysis stored without the ring that placed the crop."""
    with np.load(io.BytesIO(files["arrays"])) as arrays:
        if "crop_ring" not in arrays.files:
            return None
        images, ring = list(arrays["images"]), arrays["crop_ring"]
    spread = region_spread(images, tuple(report["pixel_spacing_mm"]), ring,
                           pipeline.scar.network)
    if spread is None:
        return None
    buffer = io.BytesIO()
    np.savez_compressed(buffer, spread=spread.astype(np.float16))
    return buffer.getvalue()


class Encoder:
    """One thread that encodes the SEG and SR of stored analyses, in the order submitted."""

    def __init__(self, store: ResultStore) -> None:
        self.store = store
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        # Submitted and not yet done (a stop's drain waits for none); parking: a stop whose
        # grace ended leaves the queued ones for the next start.
        self._pending, self._counting = 0, threading.Lock()
        self._parking = threading.Event()

    def start(self) -> int:
        """Begin, with whatever a crash left unencoded first; returns how many those are."""
        missing = self.store.unencoded()
        for analysis_id in missing:
            self.submit(analysis_id)
        self._thread.start()
        return len(missing)

    def submit(self, analysis_id: str) -> None:
        with self._counting:
            self._pending += 1
        self._queue.put(analysis_id)

    def pending(self) -> int:
        """Encodings submitted and not yet done (the one running included)."""
        with self._counting:
            return self._pending

    def stop(self, timeout_s: float = 30.0, park: bool = False) -> None:
        """Finish what was submitted, or with ``park`` only the one running: the rest stay
        stored unencoded and are encoded at the next start (as after a crash)."""
        if park:
            self._parking.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def _run(self) -> None:
        while (analysis_id := self._queue.get()) is not None:
            try:
                if not self._parking.is_set():
                    self.encode(analysis_id)
            except Exception:  # noqa: BLE001 - one analysis must not stop the others
                log.exception("encoding the SEG and SR of analysis %s failed", analysis_id)
            finally:
                with self._counting:
                    self._pending -= 1

    def encode(self, analysis_id: str) -> None:
        stored = self.store.encoder_inputs(analysis_id)
        if stored is None:  # deleted meanwhile, or encoded already
            return
        report, files = stored
        try:
            encoded = encode_stored(report, files)
        except InputError as exc:  # the input's doing (highdicom's strict source checks)
            log.warning("analysis %s: no SEG and SR can be made (%s)", analysis_id, exc.code)
            self.store.save_encoding_error(analysis_id, exc.body())
            return
        self.store.save_encoded(analysis_id, encoded)
        log.info("analysis %s: SEG and SR encoded", analysis_id)
