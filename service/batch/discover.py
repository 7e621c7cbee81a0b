"""The series of a folder tree, by their UIDs, whatever the layout and the file names.

Headers only (no pixel data) are read here. A file without the DICOM preamble is
not an instance and is skipped (a tree holds READMEs, thumbnails), as is a
DICOMDIR; one with the preamble whose header does not parse or names no series
cannot be put in a series, so it becomes a failure of its own, with the code an
upload of it would get (nothing is dropped unsaid).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pydicom
from pydicom.errors import InvalidDicomError


@dataclass(frozen=True)
class SeriesFiles:
    """One series of the archive: its UIDs and its files (sorted, absolute)."""

    series_uid: str
    study_uid: str
    patient_id: str
    modality: str
    files: tuple[str, ...] = field(default=())


@dataclass(frozen=True)
class Unreadable:
    """A file with a DICOM preamble whose header cannot be read: a failure of its own."""

    path: str
    code: str
    message: str


def _files(root: Path) -> Iterator[Path]:
    for folder, _, names in os.walk(root):
        for name in sorted(names):
            yield Path(folder) / name


def discover(root: Path) -> tuple[list[SeriesFiles], list[Unreadable], int]:
    """(series sorted by UID, unreadable files, files skipped as not DICOM)."""
    root = Path(root)
    series: dict[str, dict] = {}
    unreadable, skipped = [], 0
    for path in _files(root):
        name = str(path.relative_to(root))
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            skipped += 1
            continue
        except Exception as exc:  # noqa: BLE001 - pydicom raises many kinds on bad bytes
            unreadable.append(Unreadable(str(path), "corrupt_dicom",
                                         f"{name} is truncated or corrupt DICOM "
                                         f"({type(exc).__name__})"))
            continue
        if "DirectoryRecordSequence" in ds:
            skipped += 1  # a DICOMDIR: an index, not an instance
            continue
        uid = str(ds.get("SeriesInstanceUID", "") or "")
        if not uid or not ds.get("SOPInstanceUID"):
            missing = [k for k in ("SeriesInstanceUID", "SOPInstanceUID") if not ds.get(k)]
            unreadable.append(Unreadable(str(path), "corrupt_dicom",
                                         f"{name} has no {' or '.join(missing)}; the file is "
                                         "truncated or not a DICOM instance"))
            continue
        entry = series.setdefault(uid, {"study_uid": str(ds.get("StudyInstanceUID", "")),
                                        "patient_id": str(ds.get("PatientID", "") or ""),
                                        "modality": str(ds.get("Modality", "") or ""),
                                        "files": []})
        entry["files"].append(str(path.resolve()))
    found = [SeriesFiles(uid, e["study_uid"], e["patient_id"], e["modality"],
                         tuple(sorted(e["files"]))) for uid, e in sorted(series.items())]
    return found, unreadable, skipped
