"""Request bodies to DICOM datasets: multipart/form-data, zip, multipart/related.

Everything here distrusts its input: sizes are capped before anything is
held in memory, zip members are checked for paths escaping the archive and
for expanding past a limit, and every failure is an :class:`InputError`
with a code that says which rule was broken.
"""

from __future__ import annotations

import io
import zipfile
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import PurePosixPath

import pydicom
from pydicom.errors import InvalidDicomError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from .errors import InputError

# RFC 2046 5.1.1 allows 1 to 70 characters, but senders exceed it (Orthanc's STOW-RS
# client does); the parser's own limit is the one that matters.
MAX_BOUNDARY = 256
# A local file header, or the end of an empty archive.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_files: int
    max_unzipped_bytes: int


@dataclass(frozen=True)
class Blob:
    name: str  # where it came from (part or zip member), for error messages
    data: bytes


async def read_capped(chunks: AsyncIterator[bytes], limit: int,
                      declared_length: str | None) -> bytes:
    """The request body, refused as soon as it is known to exceed ``limit`` bytes."""
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            raise InputError("Content-Length is not a number", code="bad_content_length") \
                from None
        if declared > limit:
            raise InputError(f"request of {declared} bytes exceeds the limit of {limit}",
                             code="payload_too_large", status_code=413)
    body = bytearray()
    async for chunk in chunks:
        body.extend(chunk)
        if len(body) > limit:
            raise InputError(f"request exceeds the limit of {limit} bytes",
                             code="payload_too_large", status_code=413)
    return bytes(body)


def _multipart_parts(content_type: str, body: bytes) -> Iterator[tuple[str, str, bytes]]:
    """(form field name or '', part content type, payload) of each MIME part.

    python-multipart's streaming parser: ten times faster than the email
    package on a series (38 ms for 12 slices there, measured), and strict.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError("multipart body without a boundary parameter",
                         code="bad_multipart")
    if len(boundary) > MAX_BOUNDARY:
        raise InputError(f"the multipart boundary is {len(boundary)} characters long; at "
                         f"most {MAX_BOUNDARY} are read", code="bad_multipart")
    parts: list[tuple[dict[bytes, bytes], bytearray]] = []
    field, value = bytearray(), bytearray()

    def header_end() -> None:
        parts[-1][0][bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    callbacks = {
        "on_part_begin": lambda: parts.append(({}, bytearray())),
        "on_part_data": lambda data, start, end: parts[-1][1].extend(data[start:end]),
        "on_header_field": lambda data, start, end: field.extend(data[start:end]),
        "on_header_value": lambda data, start, end: value.extend(data[start:end]),
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks, max_header_count=32)
        parser.write(body)
        parser.finalize()
    except (MultipartParseError, FormParserError) as exc:
        raise InputError(f"multipart body could not be parsed ({exc})",
                         code="bad_multipart") from None
    if not parts:
        raise InputError("multipart body without any part (wrong boundary?)",
                         code="bad_multipart")
    for headers, payload in parts:
        ctype, _ = parse_options_header(headers.get(b"content-type", b"text/plain"))
        _, disposition = parse_options_header(headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", errors="replace")
        yield name, ctype.decode("latin-1").lower(), bytes(payload)


def _unzip(data: bytes, name: str, limits: Limits) -> list[Blob]:
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise InputError(f"{name} is not a readable zip archive ({exc})", code="bad_zip") \
            from None
    if len(members) > limits.max_files:
        raise InputError(f"{name} holds {len(members)} files; the limit is {limits.max_files}",
                         code="too_many_files", status_code=413)
    declared = sum(m.file_size for m in members)
    if declared > limits.max_unzipped_bytes:
        raise InputError(f"{name} expands to {declared} bytes; the limit is "
                         f"{limits.max_unzipped_bytes}", code="zip_too_large", status_code=413)
    blobs, total = [], 0
    for member in members:
        path = PurePosixPath(member.filename.replace("\\", "/"))
        if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
            raise InputError(f"zip member {member.filename!r} escapes the archive",
                             code="zip_path_traversal")
        if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
            continue  # macOS resource forks, dot files and media directories
        try:
            with archive.open(member) as f:
                # Read at most the remaining allowance + 1: a lying header cannot expand further.
                content = f.read(limits.max_unzipped_bytes - total + 1)
        except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
            raise InputError(f"zip member {member.filename!r} cannot be read ({exc})",
                             code="bad_zip") from None
        total += len(content)
        if total > limits.max_unzipped_bytes:
            raise InputError(f"{name} expands past the limit of {limits.max_unzipped_bytes} "
                             "bytes", code="zip_too_large", status_code=413)
        blobs.append(Blob(f"{name}:{member.filename}", content))
    return blobs


def split_body(content_type: str | None, body: bytes, limits: Limits) -> list[Blob]:
    """The files of one upload, zips expanded, whatever the contract's content type."""
    media = (content_type or "").split(";")[0].strip().lower()
    if not body:
        raise InputError("the request body is empty; send the series' DICOM files",
                         code="empty_body")
    if media == "multipart/form-data":
        raw = [Blob(f"part {i}", data) for i, (field, _, data)
               in enumerate(_multipart_parts(content_type, body)) if field == "files"]
        if not raw:
            raise InputError("multipart/form-data without any 'files' part", code="no_files")
    elif media == "multipart/related":
        raw = [Blob(f"part {i}", data) for i, (_, _, data)
               in enumerate(_multipart_parts(content_type, body))]
    elif media in ("application/zip", "application/x-zip-compressed"):
        # Declared a zip: read as one whatever its first bytes (a JPEG is a bad zip, an
        # empty archive holds no files), never as a DICOM file.
        return _nonempty(_unzip(body, "body", limits))
    elif media == "application/dicom":
        raw = [Blob("body", body)]
    else:
        raise InputError(f"content type {media or '(none)'} is not accepted; send "
                         "multipart/form-data, application/zip or multipart/related; "
                         "type=\"application/dicom\"", code="unsupported_media_type",
                         status_code=415)
    blobs = []
    for blob in raw:
        blobs.extend(_unzip(blob.data, blob.name, limits) if blob.data[:4] in ZIP_MAGICS
                     else [blob])
        if len(blobs) > limits.max_files:
            raise InputError(f"more than {limits.max_files} files", code="too_many_files",
                             status_code=413)
    return _nonempty(blobs)


def _nonempty(blobs: list[Blob]) -> list[Blob]:
    if not blobs:
        raise InputError("no files in the request", code="no_files")
    return blobs


def read_dataset(blob: Blob) -> pydicom.Dataset:
    """Parse one blob as DICOM Part 10; pixel data are decoded later, in the volume stage."""
    try:
        ds = pydicom.dcmread(io.BytesIO(blob.data))
        # pydicom converts element values lazily; convert them all now, so a broken
        # element (a flipped VR, a value that does not parse) is a 4xx here rather
        # than an exception deep in a later stage.
        for _ in ds.iterall():
            pass
    except InvalidDicomError:
        raise InputError(f"{blob.name} is not a DICOM Part 10 file (no DICM preamble)",
                         code="not_dicom") from None
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad bytes
        raise InputError(f"{blob.name} is truncated or corrupt DICOM "
                         f"({type(exc).__name__}: {exc})", code="corrupt_dicom") from None
    missing = [k for k in ("SOPClassUID", "SOPInstanceUID") if not ds.get(k)]
    if missing:
        raise InputError(f"{blob.name} has no {' or '.join(missing)}; the file is "
                         "truncated or not a DICOM instance", code="corrupt_dicom")
    return ds


def read_datasets(blobs: list[Blob]) -> list[pydicom.Dataset]:
    return [read_dataset(blob) for blob in blobs]


def stow_parts(content_type: str | None, body: bytes, limits: Limits) -> list[Blob]:
    """The parts of a STOW-RS request (PS3.18 10.5): multipart/related of application/dicom."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "multipart/related":
        raise InputError(f"STOW-RS takes multipart/related; type=\"application/dicom\", not "
                         f"{media or '(none)'}", code="unsupported_media_type", status_code=415)
    if not body:
        raise InputError("the request body is empty", code="empty_body")
    parts = list(_multipart_parts(content_type, body))
    wrong = sorted({ctype for _, ctype, _ in parts if ctype != "application/dicom"})
    if wrong:
        raise InputError(f"parts of type {', '.join(wrong)} cannot be stored; this server "
                         "accepts application/dicom (PS3.10 files) only",
                         code="unsupported_media_type", status_code=415)
    if not parts:
        raise InputError("no parts in the request", code="no_files")
    if len(parts) > limits.max_files:
        raise InputError(f"{len(parts)} parts; the limit is {limits.max_files}",
                         code="too_many_files", status_code=413)
    return [Blob(f"part {i}", data) for i, (_, _, data) in enumerate(parts)]
