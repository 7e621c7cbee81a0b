"""Store-back: the SEG and SR of each analysis sent to the DICOMweb destination (STOW-RS).

The queue is the result store's (a push is queued in the transaction that
stores the analysis); this module attempts what is due and records the
outcome, with back-off, so a push survives restarts and is never lost.
"""

from __future__ import annotations

import logging
import time

import pydicom

from service.config import Settings
from service.errors import InsufficientStorage, PushError
from service.pacs.dicomweb import dicomweb_client
from service.store.results import ResultStore

log = logging.getLogger("service")


def push_analysis(store: ResultStore, analysis_id: str, destination: str,
                  settings: Settings) -> None:
    """STOW-RS the SEG and SR of one analysis to ``destination``; PushError says why not."""
    import requests

    # Retries are ours (recorded, back-off survives restarts), not the client's blocking ones.
    client = dicomweb_client(destination, settings, settings.store_back_timeout_s)
    datasets = [pydicom.dcmread(store.path(analysis_id, kind)) for kind in ("seg", "sr")]
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
    """Attempt every push whose time has come and whose SEG and SR are encoded; returns how
    many were attempted (one not yet encoded waits, without counting as an attempt; so does
    one whose SEG and SR wait for space in a full store). A full store that cannot record
    an outcome ends the round: the push stays queued and is made again (the same
    instances), so nothing is lost."""
    due = [(analysis_id, destination) for analysis_id, destination
           in store.pushes_due(time.time()) if store.encoding_state(analysis_id) == "done"]
    try:
        for analysis_id, destination in due:
            _push_one(store, analysis_id, destination, settings)
    except InsufficientStorage as exc:
        log.warning("store-back waits for space to record its outcome: %s", exc.message)
    return len(due)


def _push_one(store: ResultStore, analysis_id: str, destination: str,
              settings: Settings) -> None:
    """One push and its outcome recorded (InsufficientStorage: not recorded)."""
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
