"""The work behind the routes: analyse-and-store, received series, store-back pushes.

Synchronous functions run in worker threads. Uploads (``POST /v1/analyses``)
and series received by STOW-RS take the same path: blobs -> datasets ->
volume -> analysis -> store (which queues the store-back in the same
transaction when a DICOMweb destination is set).
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import time

import pydicom

from service.analysis import analyse, stored_files
from service.config import Settings
from service.dicom.ingest import Blob, Limits, read_datasets
from service.errors import InputError
from service.pacs.inbox import Inbox
from service.pipeline.registry import Pipeline
from service.pipeline.volume import build_volume
from service.store.results import ResultStore

log = logging.getLogger("service")
# A received series whose analysis fails inside the service (not its input's fault) is
# tried this many times before it is marked failed.
MAX_INTERNAL_FAILURES = 3


def limits_of(settings: Settings) -> Limits:
    return Limits(settings.max_request_bytes, settings.max_files, settings.max_unzipped_bytes)


def input_fingerprint(blobs: list[Blob], pipeline: Pipeline) -> str:
    """The same instances (by content) through the same models: the same analysis."""
    digest = hashlib.sha256(pipeline.name.encode())
    for model in (pipeline.myocardium, pipeline.scar):
        digest.update(model.sha256.encode())
    for content in sorted(blob.sha256() for blob in blobs):
        digest.update(content.encode())
    return digest.hexdigest()


def _within_limits(blobs: list[Blob], settings: Settings) -> None:
    """A received series is read whole into memory: the upload limits bound it too."""
    if len(blobs) > settings.max_files:
        raise InputError(f"the series holds {len(blobs)} instances; one analysis reads at "
                         f"most {settings.max_files} (MAX_FILES)", code="too_many_files",
                         status_code=413)
    total = sum(blob.size for blob in blobs)
    if total > settings.max_unzipped_bytes:
        raise InputError(f"the series holds {total} bytes; one analysis reads at most "
                         f"{settings.max_unzipped_bytes} (MAX_UNZIPPED_BYTES)",
                         code="series_too_large", status_code=413)


def analyse_and_store(blobs: list[Blob], pipeline: Pipeline, settings: Settings,
                      store: ResultStore, notes: tuple[str, ...] = (),
                      analysis_id: str | None = None, fingerprint: str | None = None) -> dict:
    """One series' files to a stored report (returned as JSON-ready dict)."""
    started = time.perf_counter()
    volume = build_volume(read_datasets(blobs, settings.max_series_pixels))
    if notes:
        volume = dataclasses.replace(volume, warnings=[*notes, *volume.warnings])
    decode_ms = (time.perf_counter() - started) * 1000.0
    result = analyse(volume, pipeline, decode_ms, analysis_id)
    report = result.report.model_dump(mode="json")
    if fingerprint:
        report["input_fingerprint"] = fingerprint
    store.save(report, stored_files(result, volume), push_to=settings.dicomweb_store_url)
    log.info("analysis %s stored: series %s, %d slices, pipeline %s, scar %.1f %%, %.0f ms",
             report["id"], report["series_instance_uid"], len(report["slices"]),
             report["pipeline"], report["scar_percent"], report["timings_ms"]["total"])
    if settings.dicomweb_store_url:
        report["store_back"] = store.push_state(report["id"])
    return report


def analyse_received(series_uid: str, inbox: Inbox, pipeline: Pipeline, settings: Settings,
                     store: ResultStore) -> None:
    """Analyse one quiet series of the inbox; the outcome is recorded there, never raised."""
    paths, before = inbox.claim(series_uid)
    files = [Blob(path.name, path) for path in paths]
    notes = ()
    if before is not None and before.analyses:
        notes = (f"this series was analysed before (analysis {before.analyses[-1]}, "
                 f"{before.analysed_instances} instances); more instances arrived afterwards, "
                 f"so it was analysed again with all {len(files)} and this analysis "
                 "supersedes that one",)
    try:
        _within_limits(files, settings)
        fingerprint = input_fingerprint(files, pipeline)
        done_before = store.find_fingerprint(fingerprint)
        if done_before is not None:
            # Analysed and stored already (a crash before the inbox heard of it, or the same
            # instances again): the same result, and its push is the one already queued.
            log.info("received series %s: analysis %s already holds these instances",
                     series_uid, done_before)
            inbox.finish(series_uid, done_before, len(files))
            return
        report = analyse_and_store(files, pipeline, settings, store, notes,
                                   fingerprint=fingerprint)
    except InputError as exc:
        log.warning("received series %s cannot be analysed: %s (%s)", series_uid, exc.code,
                    exc.message)
        inbox.fail(series_uid, exc.code, exc.message)
        return
    except Exception:  # noqa: BLE001 - a bug must not stop the worker; it is logged and shown
        log.exception("received series %s: internal error", series_uid)
        # Not the input's fault (a full disk, a bug that a restart clears): try again later,
        # a few times, before giving up on it.
        if not inbox.retry_later(series_uid, time.time(), MAX_INTERNAL_FAILURES):
            inbox.fail(series_uid, "internal", f"the analysis failed inside the service "
                       f"{MAX_INTERNAL_FAILURES} times; see the service log")
        return
    inbox.finish(series_uid, report["id"], len(files))


class PushError(Exception):
    pass


def push_analysis(store: ResultStore, analysis_id: str, destination: str,
                  settings: Settings) -> None:
    """STOW-RS the SEG and SR of one analysis to ``destination``; PushError says why not."""
    import requests
    from dicomweb_client.api import DICOMwebClient

    session = requests.Session()
    if settings.dicomweb_store_username:
        session.auth = (settings.dicomweb_store_username,
                        settings.dicomweb_store_password or "")
    headers = ({"Authorization": f"Bearer {settings.dicomweb_store_token}"}
               if settings.dicomweb_store_token else None)
    client = DICOMwebClient(destination, session=session, headers=headers,
                            timeout=settings.store_back_timeout_s)
    # Retries are ours (recorded, back-off survives restarts), not the client's blocking ones.
    client.set_http_retry_params(retry=False)
    datasets = [pydicom.dcmread(io.BytesIO(store.path(analysis_id, kind).read_bytes()))
                for kind in ("seg", "sr")]
    try:
        answer = client.store_instances(datasets=datasets)
    except requests.RequestException as exc:
        raise PushError(f"{type(exc).__name__}: {exc}") from None
    failed = answer.get("FailedSOPSequence") if answer is not None else None
    if failed:
        reasons = ", ".join(f"{item.ReferencedSOPInstanceUID}: 0x{int(item.FailureReason):04X}"
                            for item in failed)
        raise PushError(f"the destination refused {len(failed)} instance(s): {reasons}")


def push_due(store: ResultStore, settings: Settings) -> int:
    """Attempt every push whose time has come; returns how many were attempted."""
    due = store.pushes_due(time.time())
    for analysis_id, destination in due:
        try:
            push_analysis(store, analysis_id, destination, settings)
        except PushError as exc:
            log.warning("store-back of analysis %s to %s failed: %s", analysis_id,
                        destination, exc)
            store.push_failed(analysis_id, time.time(), str(exc),
                              settings.store_back_first_retry_s, settings.store_back_max_retry_s)
        except Exception as exc:  # noqa: BLE001 - recorded and retried, never lost
            log.exception("store-back of analysis %s: internal error", analysis_id)
            store.push_failed(analysis_id, time.time(), f"internal error: {exc}",
                              settings.store_back_first_retry_s, settings.store_back_max_retry_s)
        else:
            log.info("store-back of analysis %s to %s done", analysis_id, destination)
            store.push_succeeded(analysis_id, time.time())
    return len(due)
