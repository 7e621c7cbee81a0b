"""The source images' headers, without their pixels: what the SEG and SR copy and reference.

Stored with an analysis before its answer, so that the SEG and SR can be encoded after it,
or again after a crash, from what is on disk (the pixels are in the stored arrays).
"""

from __future__ import annotations

import io
import struct
import zipfile
from collections.abc import Iterable

import pydicom
from pydicom.uid import ExplicitVRLittleEndian

from service.errors import InputError

PIXEL_GROUP = 0x7FE0


def _header(ds: pydicom.Dataset) -> bytes:
    head = pydicom.Dataset()
    for element in ds:
        # File meta (group 2) belongs in file_meta, not the body where a damaged file may
        # carry it; command elements (group 0) have no place in a stored instance.
        if 2 < element.tag.group < PIXEL_GROUP:
            head.add(element)
    head.file_meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    # No pixel data, so no encapsulation: one plain syntax whatever the source's.
    head.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    head.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def pack_headers(datasets: Iterable[pydicom.Dataset]) -> bytes:
    """One zip (stored, not compressed) of each source instance's header as a Part 10 file."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for k, ds in enumerate(datasets):
            try:
                header = _header(ds)
            except (ValueError, TypeError, OverflowError, struct.error) as exc:
                raise InputError(f"instance {ds.get('SOPInstanceUID', '?')} has an attribute "
                                 f"that cannot be written back ({type(exc).__name__}); the "
                                 "value is not repeated", code="invalid_attribute",
                                 status_code=422) from None
            archive.writestr(f"{k:05d}.dcm", header)
    return buffer.getvalue()


def unpack_headers(data: bytes) -> dict[str, pydicom.Dataset]:
    """The headers of :func:`pack_headers`, by SOP Instance UID."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        datasets = [pydicom.dcmread(io.BytesIO(archive.read(name)))
                    for name in sorted(archive.namelist())]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}
