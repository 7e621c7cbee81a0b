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
from pydicom.charset import default_encoding
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element, write_file_meta_info
from pydicom.tag import tag_in_exception
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


# A stored element's bytes, by what it was read from: (tag, VR, length, value bytes,
# character set). The instances of a series share most of their header.
Encoded = dict[tuple, bytes]


def _header_shared(ds: pydicom.Dataset, encoded: Encoded) -> bytes:
    """:func:`_header`'s bytes, each element read from the same bytes encoded once a series.

    Every element is still read and written back by pydicom once (the check that it can
    be: a value that cannot raises here, as in :func:`_header`), but an element whose bytes
    an earlier instance of the series had is not read and written again. Only for sources
    in explicit VR little endian (their elements' VRs are in the file: nothing ambiguous
    for pydicom to correct from other elements); others take :func:`_header`.
    """
    if ds.original_encoding != (False, True):
        return _header(ds)
    meta = pydicom.dataset.FileMetaDataset(ds.file_meta)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # dcmwrite's file meta, without its deep copy: the SOP Class and Instance UIDs the
    # dataset has, then validated and written after the preamble.
    for name, keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                          ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        value, current = ds.get(name), meta.get(keyword)
        if current is None or (value and value != current):
            setattr(meta, keyword, value)
    buffer = DicomBytesIO()
    buffer.is_implicit_VR, buffer.is_little_endian = False, True
    buffer.write(b"\x00" * 128 + b"DICM")
    write_file_meta_info(buffer, meta, enforce_standard=True)
    charset = ds.get("SpecificCharacterSet", default_encoding)
    for tag in sorted(ds.keys()):
        # dcmwrite's rules: no file meta or command elements in the body (see _header), no
        # retired group lengths.
        if not 2 < tag.group < PIXEL_GROUP or (tag.element == 0 and tag.group > 6):
            continue
        raw = ds.get_item(tag)
        key = (tag, raw.VR, raw.length, raw.value, str(charset)) if raw.is_raw else None
        data = encoded.get(key) if key is not None else None
        if data is None:
            out = DicomBytesIO()
            out.is_implicit_VR, out.is_little_endian = False, True
            with tag_in_exception(tag):
                write_data_element(out, ds[tag], charset)
            data = out.getvalue()
            if key is not None:
                encoded[key] = data
        buffer.write(data)
    return buffer.getvalue()


def pack_headers(datasets: Iterable[pydicom.Dataset]) -> bytes:
    """One zip (stored, not compressed) of each source instance's header as a Part 10 file."""
    buffer = io.BytesIO()
    encoded: Encoded = {}
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for k, ds in enumerate(datasets):
            try:
                header = _header_shared(ds, encoded)
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
