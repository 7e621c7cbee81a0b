"""The SEG and SR of a stored analysis, encoded after its answer.

An analysis is answered once its report, arrays and source headers are stored
(:func:`service.analysis.analyse_and_store`); building the DICOM SEG and SR (about a
third of the time outside the networks, BENCHMARKS.md) then happens here, off the
request, in one background thread. Everything they are made of is on disk and their
UIDs and times come from the report, so encoding is deterministic: a start-up after a
crash encodes whatever is missing (:meth:`Encoder.start`) and gets the bytes an
undisturbed run would have written. ``GET .../seg`` and ``.../sr`` wait for it, a
bounded time; the store-back pushes after it. The viewer's layer of where the networks
disagree (:func:`disagreement`: eight runs of each scar network, more than the whole
analysis' other work) is made when a reader first asks for it, and kept.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import queue
import threading
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Iterator, Mapping
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pydicom

from service.dicom.headers import unpack_headers
from service.dicom.seg import build_seg, distinct_datasets
from service.dicom.sr import build_sr
from service.dicom.uids import uids_of
from service.errors import InputError, InsufficientStorage, InternalFailure, Overloaded
from service.pipeline.registry import Pipeline
from service.pipeline.segment import region_spread
from service.store import arrays as stored_arrays
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
    arrays = stored_arrays.load(files["arrays"], ("myocardium", "scar", "mvo"))
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
    """The viewer's layer of where the scar networks (every member) disagree over flips and
    turns of their input (:func:`service.pipeline.segment.region_spread`), as stored; None for
    an analysis stored without the ring that placed the crop."""
    arrays = stored_arrays.load(files["arrays"], ("images", "crop_ring"))
    if "crop_ring" not in arrays:
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
    """One thread that encodes the SEG and SR of stored analyses, in the order submitted.

    Its queue is bounded: an analysis takes a :meth:`place` before it is made, refused (503)
    when ``max_queued`` wait already, so nothing accepted is ever dropped. A full store
    defers an encoding until space is freed (not a failure); one failing on a bug is tried
    ``max_attempts`` times, the waits doubling from ``first_retry_s``, then recorded so
    that GETs of its SEG and SR answer 500 with the error id (a restart tries it again).
    """

    def __init__(self, store: ResultStore, max_queued: int | None = None,
                 max_attempts: int = 3, first_retry_s: float = 2.0,
                 space_retry_s: float = 5.0) -> None:
        self.store = store
        self.max_queued, self.max_attempts = max_queued, max_attempts
        self.first_retry_s, self.space_retry_s = first_retry_s, space_retry_s
        self._places = 0  # held by analyses being made, to be submitted
        self._tries: dict[str, int] = {}  # failed tries (a bug) of those to be tried again
        self._waiting_space: set[str] = set()
        # For /metrics: failed tries and retries by reason ("internal": a bug, "storage": a
        # full store), and encodings given up on.
        self.failures: Counter[str] = Counter()
        self.retries: Counter[str] = Counter()
        self.given_up = 0
        self._queue: queue.Queue[str | None] = queue.Queue()
        self._thread = threading.Thread(target=self._run, name="encoder", daemon=True)
        # Submitted and not yet done (a stop's drain waits for none); parking: a stop whose
        # grace ended leaves the queued ones for the next start.
        self._pending, self._counting = 0, threading.Lock()
        self._parking = threading.Event()
        # GETs of a SEG or SR waiting for an encoding: woken when any settles (their loop's
        # event set from this thread), instead of finding out at their next look.
        self._listeners: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

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

    @contextmanager
    def place(self) -> Iterator[None]:
        """A place in the queue for an analysis about to be made, held until it is
        submitted: Overloaded (503) when ``max_queued`` analyses wait already."""
        with self._counting:
            self._check_room()
            self._places += 1
        try:
            yield
        finally:
            with self._counting:
                self._places -= 1

    def _check_room(self) -> None:
        waiting = self._pending + self._places
        if self.max_queued is not None and waiting >= self.max_queued:
            raise Overloaded(f"{waiting} analyses are waiting for their SEG and SR to be "
                             f"encoded (ENCODING_QUEUE_MAX {self.max_queued}); try again "
                             "shortly", retry_after_s=5)

    def check_room(self) -> None:
        """Overloaded when no place is free now: an upload is refused before it is read."""
        with self._counting:
            self._check_room()

    def has_room(self) -> bool:
        """A place is free now (the STOW-RS loop waits for one instead of being refused)."""
        with self._counting:
            return self.max_queued is None or self._pending + self._places < self.max_queued

    def stop(self, timeout_s: float = 30.0, park: bool = False) -> None:
        """Finish what was submitted, or with ``park`` only the one running: the rest stay
        stored unencoded and are encoded at the next start (as after a crash)."""
        if park:
            self._parking.set()
        self._queue.put(None)
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @asynccontextmanager
    async def listening(self) -> AsyncIterator[asyncio.Event]:
        """An event set once any encoding settles after this is entered: a GET looks at its
        analysis' state inside, then waits on it (a bounded time: the look after the wait
        is what counts)."""
        listener = (asyncio.get_running_loop(), asyncio.Event())
        with self._counting:
            self._listeners.add(listener)
        try:
            yield listener[1]
        finally:
            with self._counting:
                self._listeners.discard(listener)

    def _notify(self) -> None:
        with self._counting:
            listeners = list(self._listeners)
        for loop, event in listeners:
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                loop.call_soon_threadsafe(event.set)

    def _run(self) -> None:
        while (analysis_id := self._queue.get()) is not None:
            settled = True
            try:
                if not self._parking.is_set():
                    settled = self._attempt(analysis_id)
            except Exception:  # noqa: BLE001 - one analysis must not stop the others
                log.exception("encoding the SEG and SR of analysis %s failed", analysis_id)
            finally:
                if settled:
                    with self._counting:
                        self._pending -= 1
                self._notify()

    def _attempt(self, analysis_id: str) -> bool:
        """One try; False when it is to be tried again later (it stays pending)."""
        if analysis_id in self._waiting_space:
            if self.store.space.problem(keep_reserve=False) is not None:
                return self._later(analysis_id, self.space_retry_s)  # no encoding wasted
            self.retries["storage"] += 1
        elif analysis_id in self._tries:
            self.retries["internal"] += 1
        try:
            self.encode(analysis_id)
        except InsufficientStorage:
            self.failures["storage"] += 1
            if analysis_id not in self._waiting_space:
                log.warning("analysis %s: its SEG and SR wait for space in the result store",
                            analysis_id)
            self._waiting_space.add(analysis_id)
            return self._later(analysis_id, self.space_retry_s)
        except Exception as exc:  # noqa: BLE001 - a bug: tried again, then recorded
            return self._failed(analysis_id, exc)
        self._waiting_space.discard(analysis_id)
        self._tries.pop(analysis_id, None)
        return True

    def _failed(self, analysis_id: str, exc: Exception) -> bool:
        tries = self._tries.get(analysis_id, 0) + 1
        error_id = uuid.uuid4().hex[:12]
        self.failures["internal"] += 1
        log.error("encoding the SEG and SR of analysis %s failed (try %d of %d), error id %s",
                  analysis_id, tries, self.max_attempts, error_id, exc_info=exc)
        if tries < self.max_attempts:
            self._tries[analysis_id] = tries
            return self._later(analysis_id, self.first_retry_s * 2.0 ** (tries - 1))
        self._tries.pop(analysis_id, None)
        self._waiting_space.discard(analysis_id)
        self.given_up += 1
        failure = InternalFailure(
            f"its encoding failed {tries} times inside the service (a bug, not the series): "
            f"quote error id {error_id} when reporting it; a restart of the service tries "
            "again", error_id=error_id)
        try:
            self.store.save_encoding_error(analysis_id, failure.body() | {"status": 500})
        except InsufficientStorage:  # not recorded: its GETs say 503 until a restart retries
            log.warning("analysis %s: the encoding's failure could not be recorded (store "
                        "full)", analysis_id)
        return True

    def _later(self, analysis_id: str, delay_s: float) -> bool:
        """Put it back in the queue after ``delay_s`` (it stays counted as pending)."""
        timer = threading.Timer(delay_s, self._requeue, (analysis_id,))
        timer.daemon = True
        timer.start()
        return False

    def _requeue(self, analysis_id: str) -> None:
        if not self._parking.is_set():
            self._queue.put(analysis_id)

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
