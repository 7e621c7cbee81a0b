"""The series of a folder tree, by their UIDs, whatever the layout and the file names.

An archive is untrusted input. Headers only (no pixel data) are read here, and
only from regular files: a FIFO, socket or device named ``x.dcm`` is skipped,
never opened (opening a FIFO waits for a writer for ever). Nothing is dropped
unsaid: every entry the walk does not read becomes a :class:`Skipped` row
(folders it cannot list, folder symlinks it does not follow, zip and gzip files,
files without the DICOM preamble, DICOMDIRs), and every file with a preamble
that cannot be put in a series an :class:`Unreadable` one, with the code an
upload of it would get (``unreadable_file`` for a permission error or a broken
symlink, not ``corrupt_dicom``).

A series UID becomes an output file name, so a UID that is not a DICOM UID
(PS3.5 9.1: :func:`service.dicom.uids.is_uid`; ``../../x`` or 300 characters)
refuses the file, and nothing is written under a name made from it.

Paths are kept as the file system gives them: a name that is not UTF-8 is
carried in its bytes (:func:`path_bytes`) and shown with the undecodable bytes
escaped (:func:`display_path`).
"""

from __future__ import annotations

import hashlib
import os
import stat
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError

from service.dicom.uids import is_uid

PREAMBLE = 128
# The most one file's header may take to read: a file on a hung network mount is skipped
# (a row of its own), not a walk that never ends.
FILE_READ_TIMEOUT_S = 30.0
ZIP_MAGIC, GZIP_MAGIC = b"PK\x03\x04", b"\x1f\x8b"


def path_bytes(path: str | os.PathLike) -> bytes:
    """The path as the file system stores it (lossless for names that are not UTF-8)."""
    return os.fsencode(path)


def display_path(path: str | os.PathLike) -> str:
    """The path as text, any byte that is not UTF-8 shown as ``\\xNN``."""
    return path_bytes(path).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class SeriesFiles:
    """One series of the archive: its UIDs, its files (sorted, absolute) and instances."""

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    files: tuple[str, ...] = field(default=())
    # SOP Instance UIDs of the series' readable files, sorted: what "done" is keyed on.
    instances: tuple[str, ...] = field(default=())
    # Why the series may be missing instances (files beside it that could not be read).
    review_notes: tuple[str, ...] = field(default=())

    @property
    def input_digest(self) -> str:
        """The instance set: a series redone once a file comes back (or goes) is new work."""
        return hashlib.sha256("\n".join(self.instances).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Unreadable:
    """A file that may be an instance but cannot be put in a series: a failure of its own."""

    path: str
    code: str
    message: str


@dataclass(frozen=True)
class Skipped:
    """An entry of the tree that is not read, and why (a row the user can find)."""

    path: str
    kind: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    series: list[SeriesFiles]
    unreadable: list[Unreadable]
    skipped: list[Skipped]


def _walk(root: Path, exclude: Sequence[Path], skipped: list[Skipped]) -> Iterator[Path]:
    excluded = {os.path.realpath(p) for p in exclude}

    def unlistable(error: OSError) -> None:
        skipped.append(Skipped(str(error.filename), "folder not readable",
                               f"the folder could not be listed ({error.strerror})"))

    for folder, dirs, names in os.walk(root, onerror=unlistable):
        keep = []
        for name in sorted(dirs):
            path = Path(folder) / name
            if path.is_symlink():
                skipped.append(Skipped(str(path), "folder symlink",
                                       "symlinked folders are not followed (they may loop or "
                                       "lead outside the archive)"))
            elif os.path.realpath(path) in excluded:
                skipped.append(Skipped(str(path), "output folder",
                                       "the batch's own output folder is not read as input"))
            else:
                keep.append(name)
        dirs[:] = keep
        for name in sorted(names):
            yield Path(folder) / name


def _read_header(path: Path, name: str
                 ) -> tuple[pydicom.Dataset | None, Skipped | Unreadable | None]:
    """The file's header, or why it is skipped or unreadable."""
    try:
        info = os.stat(path)  # follows a symlink to its target
    except OSError as exc:
        return None, Unreadable(str(path), "unreadable_file",
                                f"{name} cannot be read ({exc.strerror}: a broken symlink or "
                                "a file that went away)")
    if not stat.S_ISREG(info.st_mode):
        return None, Skipped(str(path), "not a regular file",
                             "a FIFO, socket or device is never opened")
    try:
        with open(path, "rb") as f:
            head = f.read(PREAMBLE + 4)
            if head[:4] == ZIP_MAGIC:
                return None, Skipped(str(path), "zip archive",
                                     "archives are not unpacked: unpack it into the tree")
            if head[:2] == GZIP_MAGIC:
                return None, Skipped(str(path), "gzip file",
                                     "compressed files are not unpacked: unpack it first")
            if head[PREAMBLE:PREAMBLE + 4] != b"DICM":
                return None, Skipped(str(path), "not DICOM",
                                     "no DICOM preamble (a Part 10 file starts with one)")
            f.seek(0)
            return pydicom.dcmread(f, stop_before_pixels=True), None
    except PermissionError as exc:
        return None, Unreadable(str(path), "unreadable_file",
                                f"{name} cannot be read ({exc.strerror})")
    except InvalidDicomError:
        return None, Skipped(str(path), "not DICOM", "not a DICOM Part 10 file")
    except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad bytes
        return None, Unreadable(str(path), "corrupt_dicom",
                                f"{name} is truncated or corrupt DICOM ({type(exc).__name__})")


def _read_header_bounded(path: Path, name: str, timeout_s: float
                         ) -> tuple[pydicom.Dataset | None, Skipped | Unreadable | None]:
    """:func:`_read_header` given at most ``timeout_s``; the reading thread is left to
    finish (or hang) on its own, as a daemon that never keeps the process alive."""
    answer: list = []
    reader = threading.Thread(target=lambda: answer.append(_read_header(path, name)),
                              name="read-header", daemon=True)
    reader.start()
    reader.join(timeout_s)
    if answer:
        return answer[0]
    return None, Unreadable(str(path), "unreadable_file",
                            f"{name} was not read within {timeout_s:g} s (a hung or very slow "
                            "file system?); skipped")


def discover(root: Path, exclude: Sequence[Path] = ()) -> Discovery:
    """Every series of the tree (sorted by UID), the unreadable files and the skipped entries;
    ``exclude``: folders never read (the batch's own OUT when it lies inside the tree)."""
    root = Path(root)
    series: dict[str, dict] = {}
    unreadable: list[Unreadable] = []
    skipped: list[Skipped] = []
    for path in _walk(root, exclude, skipped):
        name = display_path(path.relative_to(root))
        ds, problem = _read_header_bounded(path, name, FILE_READ_TIMEOUT_S)
        if problem is not None:
            (skipped if isinstance(problem, Skipped) else unreadable).append(problem)
            continue
        if "DirectoryRecordSequence" in ds:
            skipped.append(Skipped(str(path), "DICOMDIR", "an index, not an instance"))
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        sop = str(ds.get("SOPInstanceUID", "") or "")
        if not uid or not sop:
            missing = [k for k, v in (("SeriesInstanceUID", uid), ("SOPInstanceUID", sop))
                       if not v]
            unreadable.append(Unreadable(str(path), "corrupt_dicom",
                                         f"{name} has no {' or '.join(missing)}; the file is "
                                         "truncated or not a DICOM instance"))
            continue
        if not is_uid(uid):
            unreadable.append(Unreadable(str(path), "invalid_attribute",
                                         f"{name}: its SeriesInstanceUID is not a DICOM UID "
                                         "(at most 64 digits and dots, PS3.5 9.1); the value "
                                         "is not repeated"))
            continue
        entry = series.setdefault(uid, {"study_uid": str(ds.get("StudyInstanceUID", "")),
                                        "patient_id": str(ds.get("PatientID", "") or ""),
                                        "modality": str(ds.get("Modality", "") or ""),
                                        "files": [], "instances": []})
        entry["files"].append(str(path.resolve()))
        entry["instances"].append(sop)
    # A series whose folder also holds files that could not be read may be missing them.
    bad_folders: dict[str, int] = {}
    for bad in unreadable:
        folder = os.path.dirname(os.path.abspath(bad.path))
        bad_folders[folder] = bad_folders.get(folder, 0) + 1
    found = []
    for uid, e in sorted(series.items()):
        folders = {os.path.dirname(f) for f in e["files"]}
        missing = sum(bad_folders.get(f, 0) for f in folders)
        notes = (() if not missing else (
            f"{missing} file{'s' if missing > 1 else ''} beside this series' instances could "
            "not be read (failures.parquet names them): the series may be missing slices",))
        found.append(SeriesFiles(uid, e["study_uid"], e["patient_id"], e["modality"],
                                 tuple(sorted(e["files"])), tuple(sorted(e["instances"])),
                                 notes))
    return Discovery(found, unreadable, skipped)
