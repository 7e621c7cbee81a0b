"""Request bodies to DICOM datasets: multipart/form-data, zip, multipart/related.

Everything here distrusts its input: sizes are capped before anything is
held, zip members are checked for paths escaping the archive and for
expanding past a limit, and every failure is an :class:`InputError` with a
code that says which rule was broken.

Bodies, their parts and zip members are streamed to files of one
:class:`Spool` per request, never held whole in memory: the only full copy
of a series in memory is its datasets, read one file at a time.
"""

from __future__ import annotations

import hashlib
import shutil
import tempfile
import zipfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import BinaryIO

import pydicom
from pydicom.charset import default_encoding
from pydicom.dataelem import RawDataElement, convert_raw_data_element
from pydicom.errors import InvalidDicomError
from pydicom.tag import BaseTag
from pydicom.valuerep import STANDARD_VR, VR
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParseError, MultipartParser, parse_options_header

from service.errors import InputError

# RFC 2046 5.1.1 allows 1 to 70 characters, but senders exceed it (Orthanc's STOW-RS
# client does); the parser's own limit is the one that matters.
MAX_BOUNDARY = 256
# A local file header, or the end of an empty archive.
ZIP_MAGICS = (b"PK\x03\x04", b"PK\x05\x06")
# Bytes read or written at a time: the most any stage here holds of a body.
CHUNK = 1 << 20


@dataclass(frozen=True)
class Limits:
    max_request_bytes: int
    max_files: int
    max_unzipped_bytes: int


@dataclass(frozen=True)
class Blob:
    name: str  # where it came from (part or zip member), for error messages
    path: Path

    def read_bytes(self) -> bytes:
        return self.path.read_bytes()

    @property
    def size(self) -> int:
        return self.path.stat().st_size

    def sha256(self) -> str:
        with open(self.path, "rb") as f:
            return hashlib.file_digest(f, "sha256").hexdigest()


class Spool:
    """The files of one request on disk (body, parts, zip members), removed together.

    Each request gets its own folder under ``parent``; ``close`` removes it,
    and :func:`clear_spools` removes what a crash left.
    """

    def __init__(self, parent: Path) -> None:
        parent.mkdir(parents=True, exist_ok=True)
        self.folder = Path(tempfile.mkdtemp(prefix="request-", dir=parent))
        self._files = 0

    def new_path(self) -> Path:
        self._files += 1
        return self.folder / f"{self._files:06d}"

    def size(self) -> int:
        """The bytes its files hold on disk now."""
        return sum(p.stat().st_size for p in self.folder.iterdir() if p.is_file())

    def close(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()


def clear_spools(parent: Path) -> None:
    """Remove request folders left by a process that did not end cleanly."""
    if parent.is_dir():
        for folder in parent.glob("request-*"):
            shutil.rmtree(folder, ignore_errors=True)


async def spool_capped(chunks: AsyncIterator[bytes], limit: int, declared_length: str | None,
                       spool: Spool) -> Path:
    """The request body in a file, refused as soon as it is known to exceed ``limit`` bytes."""
    if declared_length is not None:
        try:
            declared = int(declared_length)
        except ValueError:
            raise InputError("Content-Length is not a number", code="bad_content_length") \
                from None
        if declared > limit:
            raise InputError(f"request of {declared} bytes exceeds the limit of {limit}",
                             code="payload_too_large", status_code=413)
    path, received = spool.new_path(), 0
    with open(path, "wb") as f:
        async for chunk in chunks:
            received += len(chunk)
            if received > limit:
                raise InputError(f"request exceeds the limit of {limit} bytes",
                                 code="payload_too_large", status_code=413)
            f.write(chunk)
    return path


def _magic(path: Path) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


@dataclass(frozen=True)
class _Part:
    field: str  # the form field's name, '' outside multipart/form-data
    content_type: str
    path: Path
    filename: str  # as the client sent it ('' when it sent none)

    def name(self, index: int) -> str:
        """How errors name the part: the client's file name, else its position."""
        return client_name(self.filename) or f"part {index}"


# The most of a client's file name an error message repeats.
MAX_NAME = 120


def client_name(filename: str) -> str:
    """A file name from a request, fit to quote back: control characters dropped, the
    folders a browser may send stripped, the length capped."""
    name = "".join(c for c in filename if c.isprintable()).replace("\\", "/").rsplit("/", 1)[-1]
    return name if len(name) <= MAX_NAME else name[:MAX_NAME - 3] + "..."


def _multipart_parts(content_type: str, body: Path, spool: Spool) -> list[_Part]:
    """Each MIME part of the body in its own file, with its field name and content type.

    python-multipart's streaming parser: ten times faster than the email
    package on a series (38 ms for 12 slices there, measured), and strict;
    fed from the file in chunks, it writes each part's payload as it goes.
    """
    _, options = parse_options_header(content_type)
    boundary = options.get(b"boundary")
    if not boundary:
        raise InputError("multipart body without a boundary parameter",
                         code="bad_multipart")
    if len(boundary) > MAX_BOUNDARY:
        raise InputError(f"the multipart boundary is {len(boundary)} characters long; at "
                         f"most {MAX_BOUNDARY} are read", code="bad_multipart")
    headers: list[dict[bytes, bytes]] = []
    paths: list[Path] = []
    writing: list[BinaryIO] = []
    field, value = bytearray(), bytearray()

    def begin() -> None:
        headers.append({})
        paths.append(spool.new_path())
        writing.append(open(paths[-1], "wb"))  # noqa: SIM115 - closed at part end or below

    def end() -> None:
        writing.pop().close()

    def header_end() -> None:
        headers[-1][bytes(field).lower()] = bytes(value)
        field.clear()
        value.clear()

    def extend(target: bytearray) -> Callable[[bytes, int, int], None]:
        return lambda data, start, stop: target.extend(data[start:stop])

    callbacks = {
        "on_part_begin": begin,
        "on_part_data": lambda data, start, stop: writing[-1].write(data[start:stop]),
        "on_part_end": end,
        "on_header_field": extend(field),
        "on_header_value": extend(value),
        "on_header_end": header_end,
    }
    try:
        parser = MultipartParser(boundary, callbacks, max_header_count=32)
        with open(body, "rb") as f:
            while chunk := f.read(CHUNK):
                parser.write(chunk)
        parser.finalize()
    except (MultipartParseError, FormParserError) as exc:
        raise InputError(f"multipart body could not be parsed ({exc})",
                         code="bad_multipart") from None
    finally:
        for f in writing:
            f.close()
    if not headers:
        raise InputError("multipart body without any part (wrong boundary?)",
                         code="bad_multipart")
    parts = []
    for part_headers, path in zip(headers, paths, strict=True):
        ctype, _ = parse_options_header(part_headers.get(b"content-type", b"text/plain"))
        _, disposition = parse_options_header(part_headers.get(b"content-disposition", b""))
        name = disposition.get(b"name", b"").decode("utf-8", errors="replace")
        filename = disposition.get(b"filename", b"").decode("utf-8", errors="replace")
        parts.append(_Part(name, ctype.decode("latin-1").lower(), path, filename))
    return parts


def _unzip(blob: Blob, limits: Limits, spool: Spool) -> list[Blob]:
    try:
        archive = zipfile.ZipFile(blob.path)
        members = [m for m in archive.infolist() if not m.is_dir()]
    except (zipfile.BadZipFile, ValueError, EOFError) as exc:
        raise InputError(f"{blob.name} is not a readable zip archive ({exc})",
                         code="bad_zip") from None
    with archive:
        if len(members) > limits.max_files:
            raise InputError(f"{blob.name} holds {len(members)} files; the limit is "
                             f"{limits.max_files}", code="too_many_files", status_code=413)
        declared = sum(m.file_size for m in members)
        if declared > limits.max_unzipped_bytes:
            raise InputError(f"{blob.name} expands to {declared} bytes; the limit is "
                             f"{limits.max_unzipped_bytes}", code="zip_too_large",
                             status_code=413)
        blobs, total = [], 0
        for member in members:
            path = PurePosixPath(member.filename.replace("\\", "/"))
            if path.is_absolute() or ".." in path.parts or (path.parts and ":" in path.parts[0]):
                raise InputError(f"zip member {member.filename!r} escapes the archive",
                                 code="zip_path_traversal")
            if path.name.startswith(".") or path.name.upper() == "DICOMDIR":
                continue  # macOS resource forks, dot files and media directories
            target = spool.new_path()
            try:
                with archive.open(member) as source, open(target, "wb") as out:
                    # Counted as it is written: a lying header cannot expand further.
                    while chunk := source.read(CHUNK):
                        total += len(chunk)
                        if total > limits.max_unzipped_bytes:
                            raise InputError(f"{blob.name} expands past the limit of "
                                             f"{limits.max_unzipped_bytes} bytes",
                                             code="zip_too_large", status_code=413)
                        out.write(chunk)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError) as exc:
                raise InputError(f"zip member {member.filename!r} cannot be read ({exc})",
                                 code="bad_zip") from None
            blobs.append(Blob(f"{blob.name}:{member.filename}", target))
    return blobs


def split_body(content_type: str | None, body: Path, limits: Limits, spool: Spool) -> list[Blob]:
    """The files of one upload, zips expanded, whatever the contract's content type."""
    media = (content_type or "").split(";")[0].strip().lower()
    if body.stat().st_size == 0:
        raise InputError("the request body is empty; send the series' DICOM files",
                         code="empty_body")
    if media == "multipart/form-data":
        raw = [Blob(part.name(i), part.path) for i, part
               in enumerate(_multipart_parts(content_type, body, spool)) if part.field == "files"]
        if not raw:
            raise InputError("multipart/form-data without any 'files' part", code="no_files")
    elif media == "multipart/related":
        raw = [Blob(part.name(i), part.path)
               for i, part in enumerate(_multipart_parts(content_type, body, spool))]
    elif media in ("application/zip", "application/x-zip-compressed"):
        # Declared a zip: read as one whatever its first bytes (a JPEG is a bad zip, an
        # empty archive holds no files), never as a DICOM file.
        return _nonempty(_unzip(Blob("body", body), limits, spool))
    elif media == "application/dicom":
        raw = [Blob("body", body)]
    else:
        raise InputError(f"content type {media or '(none)'} is not accepted; send "
                         "multipart/form-data, application/zip or multipart/related; "
                         "type=\"application/dicom\"", code="unsupported_media_type",
                         status_code=415)
    blobs = []
    for blob in raw:
        blobs.extend(_unzip(blob, limits, spool) if _magic(blob.path) in ZIP_MAGICS
                     else [blob])
        if len(blobs) > limits.max_files:
            raise InputError(f"more than {limits.max_files} files", code="too_many_files",
                             status_code=413)
    return _nonempty(blobs)


def _nonempty(blobs: list[Blob]) -> list[Blob]:
    if not blobs:
        raise InputError("no files in the request", code="no_files")
    return blobs


# The raw elements of one series already converted once: (tag, VR, length, value bytes,
# character set). The instances of a series repeat most of their header byte for byte.
Converted = set[tuple]
# Explicit VRs whose conversion depends on the element's own bytes and character set
# alone: a sequence holds datasets (checked item by item), and pydicom may replace UN
# from the dictionary or the private creator.
_PLAIN_VRS = STANDARD_VR - {VR.SQ, VR.UN}
_CHARSET = BaseTag(0x00080005)


def _convert_all(ds: pydicom.Dataset, converted: Converted | None) -> None:
    """Every element's value converted, so a broken element (a flipped VR, a value that
    does not parse) is a 4xx at ingest rather than an exception deep in a later stage.

    With ``converted`` (one per series), an element of an explicit VR little endian source
    whose bytes were converted before is not converted again, and every such element is
    left as read (its conversion dropped): pydicom converts it the same way where it is
    used, and the source headers (:mod:`service.dicom.headers`) encode it once a series.
    """
    if converted is None or ds.original_encoding != (False, True):
        for _ in ds.iterall():
            pass
        return
    _convert_shared(ds, converted)


def _convert_shared(ds: pydicom.Dataset, converted: Converted) -> None:
    # The character set Dataset.__getitem__ converts with.
    charset = ds.original_character_set
    # In tag order, as iterall converts; tags as plain ints (pydicom's compare in Python).
    for tag, raw in sorted(ds.items(), key=lambda item: int(item[0])):
        if charset and isinstance(raw, RawDataElement) and raw.VR in _PLAIN_VRS \
                and raw.value is not None:
            encoding = default_encoding if tag == _CHARSET else charset
            key = (int(tag), raw.VR, raw.length, raw.value,
                   encoding if isinstance(encoding, str) else tuple(encoding))
            if key not in converted:
                convert_raw_data_element(raw, encoding=encoding, ds=ds)
                converted.add(key)
            continue
        element = ds[tag]
        if element.VR == VR.SQ:
            for item in element.value:
                _convert_shared(item, converted)


def read_dataset(blob: Blob, converted: Converted | None = None) -> pydicom.Dataset:
    """Parse one blob as DICOM Part 10; pixel data are decoded later, in the volume stage.

    ``converted``: shared by the instances of one series, so that each distinct element is
    converted once (:func:`_convert_all`); None converts every element of this one.
    """
    try:
        ds = pydicom.dcmread(blob.path)
        _convert_all(ds, converted)
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


def pixel_count(ds: pydicom.Dataset) -> int:
    """Rows x columns x frames as the header says: what bounds an analysis' memory (an
    analysis needs tens of bytes per pixel: BENCHMARKS.md, "Peak RSS at the limits")."""
    try:
        return int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)) \
            * int(ds.get("NumberOfFrames", 1) or 1)
    except (TypeError, ValueError):
        return 0  # the volume stage says what is wrong with these attributes


def stow_parts(content_type: str | None, body: Path, limits: Limits,
               spool: Spool) -> list[Blob]:
    """The parts of a STOW-RS request (PS3.18 10.5): multipart/related of application/dicom."""
    media = (content_type or "").split(";")[0].strip().lower()
    if media != "multipart/related":
        raise InputError(f"STOW-RS takes multipart/related; type=\"application/dicom\", not "
                         f"{media or '(none)'}", code="unsupported_media_type", status_code=415)
    if body.stat().st_size == 0:
        raise InputError("the request body is empty", code="empty_body")
    parts = _multipart_parts(content_type, body, spool)
    wrong = sorted({part.content_type for part in parts
                    if part.content_type != "application/dicom"})
    if wrong:
        raise InputError(f"parts of type {', '.join(wrong)} cannot be stored; this server "
                         "accepts application/dicom (PS3.10 files) only",
                         code="unsupported_media_type", status_code=415)
    if len(parts) > limits.max_files:
        raise InputError(f"{len(parts)} parts; the limit is {limits.max_files}",
                         code="too_many_files", status_code=413)
    return [Blob(part.name(i), part.path) for i, part in enumerate(parts)]
