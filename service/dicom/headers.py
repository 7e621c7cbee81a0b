"""The source images' headers, without their pixels: what the SEG and SR copy and reference.

Stored with an analysis before its answer, so that the SEG and SR can be encoded after it,
or again after a crash, from what is on disk (the pixels are in the stored arrays).
"""

from __future__ import annotations

import copy
import io
import struct
import zipfile
from collections.abc import Iterable

import pydicom
from pydicom.charset import default_encoding
from pydicom.dataset import FileMetaDataset, validate_file_meta
from pydicom.filebase import DicomBytesIO
from pydicom.filewriter import write_data_element
from pydicom.tag import BaseTag, tag_in_exception
from pydicom.uid import UID, ExplicitVRLittleEndian
from pydicom.valuerep import VR

from service.errors import InputError

PIXEL_GROUP = 0x7FE0
# The body's tags as ints: groups 3 up to the pixel data's.
BODY_START, BODY_END = 0x00030000, PIXEL_GROUP << 16
META_GROUP_LENGTH = BaseTag(0x00020000)
PREAMBLE = b"\x00" * 128 + b"DICM"


def _meta_of(ds: pydicom.Dataset) -> FileMetaDataset:
    """The source's file meta, to change without changing the source: pydicom's
    ``FileMetaDataset(ds.file_meta)`` shares its dict and elements (setting the transfer
    syntax there set the source's, which decodes its pixels by it)."""
    return FileMetaDataset({tag: copy.copy(element) for tag, element in ds.file_meta.items()})


def _header(ds: pydicom.Dataset) -> bytes:
    head = pydicom.Dataset()
    for element in ds:
        # File meta (group 2) belongs in file_meta, not the body where a damaged file may
        # carry it; command elements (group 0) have no place in a stored instance.
        if 2 < element.tag.group < PIXEL_GROUP:
            head.add(element)
    head.file_meta = _meta_of(ds)
    # No pixel data, so no encapsulation: one plain syntax whatever the source's.
    head.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    buffer = io.BytesIO()
    head.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


# A stored element's bytes, by what it was read from: (tag, VR, length, value bytes,
# character set), or for a UID already converted (tag, "UI", the UID). The instances of a
# series share most of their header. Tags as plain ints: pydicom's compare in Python.
Encoded = dict[tuple, bytes]


def _in_order(ds: pydicom.Dataset) -> list[tuple[BaseTag, object]]:
    """The dataset's (tag, element as held: raw or converted) pairs in tag order."""
    return sorted(ds.items(), key=lambda item: int(item[0]))


def _element(ds: pydicom.Dataset, tag: BaseTag, held, charset, charset_key: str,
             encoded: Encoded) -> bytes:
    """One element as pydicom writes it in explicit VR little endian, encoded once a series.

    Read and written back by pydicom (the check that it can be: a value that cannot raises
    here) unless an earlier instance had the same bytes. ``held``: the element as ``ds``
    holds it; ``charset_key``: ``str(charset)``.
    """
    if held.is_raw:
        key = (int(tag), held.VR, held.length, held.value, charset_key)
    elif held.VR == VR.UI and type(held.value) in (str, UID):
        key = (int(tag), VR.UI, str(held.value))  # written as its ASCII, whatever the set
    else:
        key = None
    data = encoded.get(key) if key is not None else None
    if data is None:
        out = DicomBytesIO()
        out.is_implicit_VR, out.is_little_endian = False, True
        with tag_in_exception(tag):
            write_data_element(out, ds[tag], charset)
        data = out.getvalue()
        if key is not None:
            encoded[key] = data
    return data


def _file_meta(meta: FileMetaDataset, encoded: Encoded) -> bytes:
    """``write_file_meta_info(enforce_standard=True)``'s bytes, each element encoded once a
    series: pydicom's checks and defaults, then the group length over the elements."""
    validate_file_meta(meta, enforce_standard=True)
    body = b"".join(_element(meta, tag, held, default_encoding, default_encoding, encoded)
                    for tag, held in _in_order(meta) if tag != META_GROUP_LENGTH)
    return struct.pack("<HH2sHI", 2, 0, b"UL", 4, len(body)) + body


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
    meta = _meta_of(ds)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    # dcmwrite's file meta, without its deep copy: the SOP Class and Instance UIDs the
    # dataset has, then validated and written after the preamble.
    for name, keyword in (("SOPClassUID", "MediaStorageSOPClassUID"),
                          ("SOPInstanceUID", "MediaStorageSOPInstanceUID")):
        value, current = ds.get(name), meta.get(keyword)
        if current is None or (value and value != current):
            setattr(meta, keyword, value)
    parts = [PREAMBLE, _file_meta(meta, encoded)]
    charset = ds.get("SpecificCharacterSet", default_encoding)
    charset_key = str(charset)
    for tag, held in _in_order(ds):
        # dcmwrite's rules: no file meta or command elements in the body (see _header), no
        # retired group lengths (element 0 of a group past 6).
        t = int(tag)
        if BODY_START <= t < BODY_END and not (t & 0xFFFF == 0 and t >= 0x00070000):
            parts.append(_element(ds, tag, held, charset, charset_key, encoded))
    return b"".join(parts)


# What pydicom raises on a value it cannot write back.
_UNWRITABLE = (ValueError, TypeError, OverflowError, struct.error)


class SourceHeaders:
    """Source instances' headers (:func:`pack_headers`), encoded as soon as they are read.

    Made from a series' datasets before the volume stage reads them: pydicom converts the
    elements a stage reads, which can then no longer be told equal to another instance's
    by their bytes. Nothing before the store changes a source dataset, so their headers
    are the same then as now. An attribute that cannot be written back (or any other error
    of pydicom's) is raised only when :meth:`pack` packs its instance, as before.
    """

    def __init__(self, datasets: Iterable[pydicom.Dataset] = ()) -> None:
        self._encoded: Encoded = {}
        self._headers: dict[int, tuple[pydicom.Dataset, bytes | Exception]] = {}
        for ds in datasets:
            self._headers[id(ds)] = (ds, self._encode(ds))

    def _encode(self, ds: pydicom.Dataset) -> bytes | Exception:
        try:
            return _header_shared(ds, self._encoded)
        except Exception as exc:  # noqa: BLE001 - raised when packed, as it was
            return exc

    def pack(self, datasets: Iterable[pydicom.Dataset]) -> bytes:
        """One zip (stored, not compressed) of each instance's header as a Part 10 file."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            for k, ds in enumerate(datasets):
                kept = self._headers.get(id(ds))
                header = kept[1] if kept is not None and kept[0] is ds else self._encode(ds)
                if isinstance(header, _UNWRITABLE):
                    raise InputError(f"instance {ds.get('SOPInstanceUID', '?')} has an "
                                     "attribute that cannot be written back "
                                     f"({type(header).__name__}); the value is not repeated",
                                     code="invalid_attribute", status_code=422)
                if isinstance(header, Exception):
                    raise header
                archive.writestr(f"{k:05d}.dcm", header)
        return buffer.getvalue()


def pack_headers(datasets: Iterable[pydicom.Dataset]) -> bytes:
    """One zip (stored, not compressed) of each source instance's header as a Part 10 file."""
    return SourceHeaders().pack(datasets)


def unpack_headers(data: bytes) -> dict[str, pydicom.Dataset]:
    """The headers of :func:`pack_headers`, by SOP Instance UID."""
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        datasets = [pydicom.dcmread(io.BytesIO(archive.read(name)))
                    for name in sorted(archive.namelist())]
    return {str(ds.SOPInstanceUID): ds for ds in datasets}
