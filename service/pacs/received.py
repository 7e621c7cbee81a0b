"""Series received by STOW-RS, analysed once quiet; the outcome goes to the inbox, never up.

The same path as an upload (``service.analysis``), with what a PACS needs
on top: the same instances are never analysed twice (fingerprint), an
internal error is retried a few times, a series over the limits fails with
the reason.
"""

from __future__ import annotations

import logging
import time

from service.analysis import analyse_and_store, input_fingerprint
from service.config import Settings
from service.dicom.ingest import Blob
from service.encoding import Encoder
from service.errors import InputError, Overloaded
from service.pacs.inbox import Inbox, ReceivedSeries
from service.pipeline.registry import Pipeline
from service.store.results import ResultStore

log = logging.getLogger("service")
# A received series whose analysis fails inside the service (not its input's fault) is
# tried this many times before it is marked failed.
MAX_INTERNAL_FAILURES = 3


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


def analyse_received(series_uid: str, inbox: Inbox, pipeline: Pipeline, settings: Settings,
                     store: ResultStore, encoder: Encoder | None = None) -> None:
    """Analyse one quiet series of the inbox; the outcome is recorded there, never raised.
    Its SEG and SR are ``encoder``'s (pushed once encoded)."""
    paths, before = inbox.claim(series_uid)
    files = [Blob(path.name, path) for path in paths]
    notes = ()
    if before is not None and before.analyses:
        notes = (supersedes(before, len(files), settings.duplicate_instances),)
    try:
        _within_limits(files, settings)
        # A full store: the series waits (checked before the analysis' work, not after).
        store.space.check(round(settings.series_storage_factor
                                * sum(blob.size for blob in files)))
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
                                   fingerprint=fingerprint, encoder=encoder)
    except InputError as exc:
        log.warning("received series %s cannot be analysed: %s (%s)", series_uid, exc.code,
                    exc.message)
        inbox.fail(series_uid, exc.code, exc.message)
        return
    except Overloaded as exc:  # a full store or encoder queue: not the series' fault
        log.warning("received series %s waits: %s", series_uid, exc.code)
        inbox.postpone(series_uid, exc.code, exc.message)
        return
    except Exception:  # noqa: BLE001 - a bug must not stop the worker; it is logged and shown
        log.exception("received series %s: internal error", series_uid)
        # Not the input's fault (a full disk, a bug that a restart clears): try again later,
        # a few times, before giving up on it.
        if not inbox.retry_later(series_uid, time.time(), MAX_INTERNAL_FAILURES):
            inbox.fail(series_uid, "internal", f"the analysis failed inside the service "
                       f"{MAX_INTERNAL_FAILURES} times; see the service log")
        return
    inbox.finish(series_uid, report["id"], len(files), notes[0] if notes else None)


def supersedes(before: ReceivedSeries, files: int, duplicates: str) -> str:
    """Why a series analysed before is analysed again: the new report's warning and the
    series' status say it."""
    said = (f"this series was analysed before (analysis {before.analyses[-1]}, "
            f"{before.analysed_instances} instances)")
    if before.replaced_instances:
        rule = {"keep-last": "the copy that arrived last is used",
                "keep-first": "the copy that arrived first is still used",
                "reject": "two different images of one instance refuse the series"}
        return (f"{said}; afterwards instance {', '.join(before.replaced_instances)} arrived "
                f"again with other bytes (DUPLICATE_INSTANCES={duplicates}: "
                f"{rule[duplicates]}), so it was analysed again with all {files} files and "
                "this analysis supersedes that one")
    return (f"{said}; more instances arrived afterwards, so it was analysed again with all "
            f"{files} and this analysis supersedes that one")
