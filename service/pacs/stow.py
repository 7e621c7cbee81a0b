"""STOW-RS (PS3.18 10.5): which received instances are kept, and the response dataset.

The service is not an archive: it keeps only what it can analyse (MR Image,
Enhanced MR Image and Legacy Converted Enhanced MR Image instances with
pixel data in a transfer syntax it decodes) and refuses the rest per
instance, with the failure reason a PACS shows its user. What is kept goes
to the inbox, which analyses each series once it has gone quiet.

Failure reasons (PS3.4 storage status codes, as PS3.18 uses them):

====== =========================================================
0xC000 cannot understand: not DICOM, truncated, no SOP UIDs
0x0122 SOP class not supported: not an MR image storage class
0xC122 transfer syntax not supported: no decoder here
0xA900 data set does not match: no pixel data, no series/study UID,
       or a study other than the one in the URL
0xA700 out of resources: a limit of this server (MAX_FILES per series), or
       the disk filled up during the request (sent again once space is freed)
0x0110 processing failure: could not be stored (a bug or the disk)
====== =========================================================
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pydicom.dataset import Dataset
from pydicom.uid import UID

from service.dicom.ingest import Blob, read_dataset
from service.errors import InputError, InsufficientStorage, Refused, SeriesFull
from service.pacs.inbox import Inbox
from service.pipeline.volume import is_mr_image

CANNOT_UNDERSTAND = 0xC000
SOP_CLASS_NOT_SUPPORTED = 0x0122
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122
DOES_NOT_MATCH = 0xA900
OUT_OF_RESOURCES = 0xA700
PROCESSING_FAILURE = 0x0110

log = logging.getLogger("service")


@dataclass(frozen=True)
class Kept:
    """What the response and the log need of a stored instance (not its pixels)."""
    sop_class_uid: str
    sop_instance_uid: str
    series_instance_uid: str


@dataclass
class StowOutcome:
    stored: list[Kept] = field(default_factory=list)
    refused: list[Refused] = field(default_factory=list)
    out_of_space: bool = False  # some refused because the disk filled up: retry later

    @property
    def status_code(self) -> int:
        """200 all stored, 202 some refused, 409 none stored (PS3.18 10.5.3)."""
        if not self.refused:
            return 200
        return 202 if self.stored else 409


def _decodable(syntax: UID) -> bool:
    if not syntax:
        return True  # pydicom assumes implicit little endian
    if not syntax.is_compressed:
        return True
    from pydicom.pixels import get_decoder

    try:
        return get_decoder(syntax).is_available
    except (NotImplementedError, ValueError):
        return False


def accept(blob: Blob, study_instance_uid: str | None = None) -> Dataset:
    """The dataset of one STOW-RS part, or :class:`Refused` saying why it cannot be kept."""
    try:
        ds = read_dataset(blob)
    except InputError as exc:
        raise Refused(CANNOT_UNDERSTAND, exc.message) from None
    sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)

    def refuse(reason: int, message: str) -> Refused:
        return Refused(reason, message, sop_class, sop_instance)

    if not is_mr_image(ds):
        raise refuse(SOP_CLASS_NOT_SUPPORTED, f"SOP class {sop_class} / modality "
                     f"{ds.get('Modality', 'none')} is not an MR image this service analyses")
    for keyword in ("StudyInstanceUID", "SeriesInstanceUID"):
        if not ds.get(keyword):
            raise refuse(DOES_NOT_MATCH, f"{keyword} is missing")
    if "PixelData" not in ds:
        raise refuse(DOES_NOT_MATCH, "no pixel data")
    syntax = UID(str(ds.file_meta.get("TransferSyntaxUID", "")))
    if syntax and not syntax.is_transfer_syntax:
        raise refuse(TRANSFER_SYNTAX_NOT_SUPPORTED, f"{syntax} is not a transfer syntax")
    if not _decodable(syntax):
        raise refuse(TRANSFER_SYNTAX_NOT_SUPPORTED,
                     f"transfer syntax {syntax} ({syntax.name}) cannot be decoded here")
    if study_instance_uid is not None and str(ds.StudyInstanceUID) != study_instance_uid:
        raise refuse(DOES_NOT_MATCH, "instance belongs to another study than the request URL")
    return ds


def receive(blobs: list[Blob], study_uid: str | None, inbox: Inbox,
            clock: Callable[[], float] = time.time) -> StowOutcome:
    """Keep every acceptable part in the inbox; the outcome lists what was kept and refused.

    Each instance is stamped when it is kept, not when the request began: the quiet period
    runs from the last instance, so a request slower than it (a large series, a busy
    machine) is never claimed half-received, analysed, pushed and then superseded."""
    outcome = StowOutcome()
    for blob in blobs:
        try:
            ds = accept(blob, study_uid)
        except Refused as refused:
            outcome.refused.append(refused)
            continue
        sop_class, sop_instance = str(ds.SOPClassUID), str(ds.SOPInstanceUID)
        try:
            inbox.add(str(ds.StudyInstanceUID), str(ds.SeriesInstanceUID), sop_instance,
                      blob.read_bytes(), clock())
        except SeriesFull as exc:
            outcome.refused.append(Refused(OUT_OF_RESOURCES, str(exc), sop_class, sop_instance))
            continue
        except ValueError as exc:  # a UID that is not one: never make it a path
            outcome.refused.append(Refused(DOES_NOT_MATCH, str(exc), sop_class, sop_instance))
            continue
        except InsufficientStorage as exc:  # the inbox translated ENOSPC/EDQUOT
            outcome.refused.append(Refused(OUT_OF_RESOURCES, exc.message, sop_class,
                                           sop_instance))
            outcome.out_of_space = True
            continue
        except OSError as exc:
            log.error("STOW-RS: instance could not be written: %s", exc.strerror)
            outcome.refused.append(Refused(PROCESSING_FAILURE, "could not be written",
                                           sop_class, sop_instance))
            continue
        outcome.stored.append(Kept(sop_class, sop_instance, str(ds.SeriesInstanceUID)))
    return outcome


def response(outcome: StowOutcome, retrieve_base: str | None = None) -> dict:
    """The Store Instances Response as DICOM JSON (``application/dicom+json``)."""
    ds = Dataset()
    referenced = []
    for stored in outcome.stored:
        item = Dataset()
        item.ReferencedSOPClassUID = stored.sop_class_uid
        item.ReferencedSOPInstanceUID = stored.sop_instance_uid
        referenced.append(item)
    failed = []
    for refused in outcome.refused:
        item = Dataset()
        item.ReferencedSOPClassUID = refused.sop_class_uid
        item.ReferencedSOPInstanceUID = refused.sop_instance_uid
        item.FailureReason = refused.reason
        failed.append(item)
    if referenced:
        ds.ReferencedSOPSequence = referenced
    if failed:
        ds.FailedSOPSequence = failed
    if retrieve_base:
        ds.RetrieveURL = retrieve_base
    return ds.to_json_dict()

