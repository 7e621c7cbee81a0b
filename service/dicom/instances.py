"""Files to instances: one dataset per SOP Instance UID, whatever the archive held.

Real archives hold the same instance more than once: a re-send, a second export,
a copy cut short by a full disk, an edited copy. One rule decides, per instance,
for uploads, STOW-RS (whose inbox keeps a second copy beside the first) and the batch
alike (CONTRACT.md, "Errors"):

- copies with the same pixel data are one instance (a warning names it);
- where only one copy decodes, it is used; each bad copy is a warning and a
  :class:`BadCopy` (the batch writes it as a file-level failure row);
- two decodable copies whose pixel data differ refuse the series
  (``conflicting_instances``): the service must not guess which image was meant,
  unless ``DUPLICATE_INSTANCES`` says ``keep-first`` or ``keep-last`` (a PACS that
  sends a corrected image again): then the copy that arrived first or last is used, and
  a warning names the instance and the copies ignored;
- an instance with no good copy is refused, naming the file.

Arrival is the order of the blobs given: the parts of one upload (a zip's members in the
archive's order), STOW-RS's receipt order (:meth:`service.pacs.inbox.Inbox.claim`), the
batch's file modification times. Nothing else depends on it: among copies with the same
pixels, the one with the smallest content digest is used, whatever the order.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Literal

import numpy as np
import pydicom

from service.dicom.ingest import Blob, Converted, pixel_count, read_dataset
from service.errors import ConflictingInstances, InputError
from service.pipeline.volume import decode_pixels

BROKEN = "corrupt_dicom"
# DUPLICATE_INSTANCES: what two different images of one instance mean.
Duplicates = Literal["reject", "keep-first", "keep-last"]
DUPLICATE_RULES = ("reject", "keep-first", "keep-last")


@dataclass(frozen=True)
class BadCopy:
    """A copy of an instance that was not used because it cannot be read or decoded."""

    blob: Blob
    sop_instance_uid: str
    code: str
    message: str


@dataclass(frozen=True)
class Instances:
    datasets: list[pydicom.Dataset]
    warnings: list[str] = field(default_factory=list)
    bad_copies: list[BadCopy] = field(default_factory=list)


def _uid_of_broken(blob: Blob) -> str | None:
    """The SOP Instance UID of a file whose pixel data or later elements are damaged, if
    its header still says it (a copy cut short keeps its header)."""
    try:
        ds = pydicom.dcmread(blob.path, stop_before_pixels=True)
        uid = str(ds.get("SOPInstanceUID", "") or "")
    except Exception:  # noqa: BLE001 - pydicom raises many kinds on bad bytes
        return None
    return uid or None


@dataclass
class _Copy:
    blob: Blob
    dataset: pydicom.Dataset | None = None
    pixels: np.ndarray | None = None
    error: InputError | None = None

    @cached_property
    def digest(self) -> str:
        """What orders copies of one instance: hashed only where there are several."""
        return self.blob.sha256()


def _in_order(copies: list[_Copy]) -> list[_Copy]:
    """Copies by content digest, so the order of the files never decides."""
    return sorted(copies, key=lambda c: c.digest) if len(copies) > 1 else copies


def _named(blob: Blob, error: InputError) -> InputError:
    """The error with the file it came from (the client's file name, or the batch's path)."""
    message = error.message if error.message.startswith(blob.name) \
        else f"{blob.name}: {error.message}"
    return type(error)(message, code=error.code, status_code=error.status_code)


def _read(blobs: Iterable[Blob], max_pixels: int) -> dict[str, list[_Copy]]:
    copies: dict[str, list[_Copy]] = {}
    pixels = 0
    converted: Converted = set()  # each distinct element of the series converted once
    for blob in blobs:
        copy = _Copy(blob)
        try:
            copy.dataset = read_dataset(blob, converted)
            uid = str(copy.dataset.SOPInstanceUID)
            if uid not in copies:  # counted before decoding: the limit bounds memory
                pixels += pixel_count(copy.dataset)
                if pixels > max_pixels:
                    raise InputError(f"the series holds more than {max_pixels} pixels (rows x "
                                     "columns x slices), the most one analysis reads "
                                     "(MAX_SERIES_PIXELS)", code="series_too_large",
                                     status_code=413)
            copy.pixels = decode_pixels(copy.dataset)
        except InputError as exc:
            if exc.code != BROKEN:
                raise _named(blob, exc) from None
            uid = str(copy.dataset.SOPInstanceUID) if copy.dataset is not None \
                else _uid_of_broken(blob)
            if uid is None:  # cannot say which instance it was meant to be
                raise _named(blob, exc) from None
            copy.error = _named(blob, exc)
        copies.setdefault(uid, []).append(copy)
    return copies


def _same_pixels(a: np.ndarray, b: np.ndarray) -> bool:
    return a.shape == b.shape and a.dtype == b.dtype and np.array_equal(a, b)


def _images(copies: list[_Copy]) -> list[list[_Copy]]:
    """Copies grouped by their pixels, in arrival order of each image's first copy."""
    images: list[list[_Copy]] = []
    for copy in copies:
        for image in images:
            if _same_pixels(image[0].pixels, copy.pixels):
                image.append(copy)
                break
        else:
            images.append([copy])
    return images


def one_copy_each(blobs: list[Blob], max_pixels: int,
                  duplicates: Duplicates = "reject") -> Instances:
    """The series' instances, each once, decided by the module's rule.

    ``blobs`` in arrival order (it decides only between different images, with
    ``duplicates`` keep-first or keep-last). Every file is read and decoded here; reading
    stops at the first instance past ``max_pixels`` (413 ``series_too_large``), before its
    pixels are held."""
    if duplicates not in DUPLICATE_RULES:
        raise ValueError(f"DUPLICATE_INSTANCES={duplicates!r}: one of {DUPLICATE_RULES}")
    datasets, warnings, bad = [], [], []
    for uid, copies in _read(blobs, max_pixels).items():
        arrived = [c for c in copies if c.error is None]
        broken = _in_order([c for c in copies if c.error is not None])
        if not arrived:
            raise broken[0].error
        images = _images(arrived)
        if len(images) > 1 and duplicates == "reject":
            first, second = sorted((images[0][0].blob.name, images[1][0].blob.name))
            raise ConflictingInstances(
                f"instance {uid} was sent twice with different pixel data ({first} and "
                f"{second}); the service does not guess which image is meant: send one (or "
                "set DUPLICATE_INSTANCES=keep-first or keep-last to keep the copy that "
                "arrived first or last)")
        if len(images) > 1:
            chosen = arrived[0] if duplicates == "keep-first" else arrived[-1]
            ignored = sorted({c.blob.name for c in arrived if c is not chosen
                              and not _same_pixels(c.pixels, chosen.pixels)})
            warnings.append(
                f"instance {uid} arrived {len(arrived)} times with {len(images)} different "
                f"images: the copy that arrived {duplicates.removeprefix('keep-')} "
                f"({chosen.blob.name}) was used and {', '.join(ignored)} ignored "
                f"(DUPLICATE_INSTANCES={duplicates})")
        else:
            good = _in_order(arrived)
            chosen = good[0]
            if len(good) > 1:
                warnings.append(f"instance {uid} was sent more than once; the copy was "
                                "ignored")
        for copy in broken:
            warnings.append(f"instance {uid}: the copy {copy.blob.name} is truncated or "
                            "corrupt; the complete copy was used")
            bad.append(BadCopy(copy.blob, uid, copy.error.code, copy.error.message))
        datasets.append(chosen.dataset)
    return Instances(datasets, warnings, bad)
