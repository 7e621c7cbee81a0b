"""What a batch run leaves in OUT: per series a report, SEG and SR, then the Parquet tables.

Names are fixed by the series UID and the models' hash (``{series_uid}.{key}``), so a
series computed twice (a retried task, a resumed run) overwrites itself instead of
adding a row; a name is only ever made from a UID that :func:`service.dicom.uids.is_uid`
accepts (nothing from a header reaches a path unchecked), or from a digest. Each file is
written to a temporary name and renamed, the report last: its presence, with the same
instance set (:attr:`SeriesFiles.input_digest`), is what marks the series done. The tables
are made from those files at the end of a run and describe the series of this run's
SOURCE only (OUT keeps every report); patient names never enter them. One run at a time
holds OUT (:func:`lock_out`). A full OUT leaves no half-written series: a failure row
``insufficient_storage`` where one still fits, and the series is tried again next run.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from service import __version__
from service.analysis import models_digest
from service.batch.discover import Skipped, display_path, path_bytes
from service.dicom.uids import is_uid
from service.errors import InsufficientStorage
from service.pipeline.registry import Pipeline
from service.store.files import write_atomic
from service.store.space import Space

REPORT, FAILURE, ATTEMPTS = "report.json", "failure.json", "attempts"
# Tries at one series before it is a failure (status 500) instead of another crash: a
# series that kills its worker every time must not stop, or loop, the run.
MAX_ATTEMPTS = 3
# What a series leaves in OUT (its SEG: three one-bit masks a pixel; the SR and report:
# kilobytes) is well under half its input (16-bit pixels): the space asked for before it.
OUTPUT_SHARE = 0.5
NO_SPACE = "insufficient_storage"


def out_space(out: Path, min_free_bytes: int = 0) -> Space:
    """OUT's free-space rule: a full disk is InsufficientStorage, as in the service."""
    return Space(Path(out), f"the batch's OUT folder {display_path(out)}", min_free_bytes)


def _write(path: Path, data: bytes) -> None:
    with out_space(path.parent).guard(len(data)):
        write_atomic(path, data)


def models_key(pipeline: Pipeline) -> str:
    """12 hex digits naming the pipeline and the exact model files it runs."""
    return models_digest(pipeline).hexdigest()[:12]


def stem(out: Path, name: str, key: str) -> Path:
    """The files of one series (named by its UID) or one file (``file-`` and a digest)."""
    if not (is_uid(name) or (name.startswith("file-") and name[5:].isalnum())):
        raise ValueError("an output name must be a DICOM UID or a file digest")
    return Path(out) / "series" / f"{name}.{key}"


def file_name(path: str) -> str:
    """The output name of a file-level failure: a digest of its path's bytes."""
    return "file-" + hashlib.sha256(path_bytes(path)).hexdigest()[:16]


def count_attempt(out: Path, series_uid: str, key: str) -> int:
    """One more try at a series (a worker that died mid-series leaves its count)."""
    path = Path(f"{stem(out, series_uid, key)}.{ATTEMPTS}")
    tries = int(path.read_text()) + 1 if path.exists() else 1
    _write(path, str(tries).encode())
    return tries


def forget_attempt(out: Path, series_uid: str, key: str) -> None:
    """A try that OUT's full disk stopped is no crash: not counted against the series."""
    Path(f"{stem(out, series_uid, key)}.{ATTEMPTS}").unlink(missing_ok=True)


def write_result(out: Path, key: str, report: dict, files: dict[str, bytes],
                 source: dict) -> None:
    """The SEG, the SR, then the report (whose presence marks the series done); a full OUT
    (InsufficientStorage) leaves neither a SEG nor an SR of this try behind."""
    base = stem(out, report["series_instance_uid"], key)
    encoded = (Path(f"{base}.seg.dcm"), Path(f"{base}.sr.dcm"))
    row = result_row(report, source) | {"input_digest": source.get("input_digest", "")}
    try:
        _write(encoded[0], files["seg"])
        _write(encoded[1], files["sr"])
        _write(Path(f"{base}.{REPORT}"), json.dumps({"row": row, "report": report}).encode())
    except InsufficientStorage:
        for path in encoded:
            path.unlink(missing_ok=True)
        raise
    Path(f"{base}.{FAILURE}").unlink(missing_ok=True)
    Path(f"{base}.{ATTEMPTS}").unlink(missing_ok=True)


def write_failure(out: Path, key: str, source: dict, code: str, status: int, message: str,
                  attempts: int) -> None:
    """A series (or a file) that could not be analysed: the code and message the HTTP API
    gives. Paths are stored as text with undecodable bytes escaped, and as bytes (hex)."""
    first = source["files"][0]
    name = source["series_uid"] if is_uid(source["series_uid"]) else file_name(first)
    row = {"series_uid": source["series_uid"], "study_uid": source["study_uid"],
           "patient_id": source["patient_id"], "modality": source["modality"],
           "files": len(source["files"]), "first_file": display_path(first),
           "first_file_bytes": path_bytes(first).hex(),
           "code": code, "status": status, "message": message, "attempts": attempts,
           "input_digest": source.get("input_digest", ""), "service_version": __version__}
    _write(Path(f"{stem(out, name, key)}.{FAILURE}"), json.dumps({"row": row}).encode())


def write_file_failures(out: Path, key: str, source: dict, bad: dict[str, tuple[str, str]]
                        ) -> None:
    """File-level rows for the series' files that were not used (``bad``: path -> code and
    message, e.g. a truncated second copy of an instance), and none for its other files
    (a row of an earlier run for a file since mended goes)."""
    empty = {"series_uid": "", "study_uid": source["study_uid"],
             "patient_id": source["patient_id"], "modality": source["modality"]}
    for path in source["files"]:
        if path in bad:
            code, message = bad[path]
            write_failure(out, key, empty | {"files": [path]}, code, 422, message, 1)
        else:
            Path(f"{stem(out, file_name(path), key)}.{FAILURE}").unlink(missing_ok=True)


def done(out: Path, key: str) -> dict[str, str]:
    """Series UIDs with a report or a final failure under this models' key, each with the
    digest of the instance set it was made from."""
    folder = Path(out) / "series"
    finished: dict[str, str] = {}
    for path in folder.glob(f"*.{key}.{REPORT}"):
        row = json.loads(path.read_text())["row"]
        finished[path.name[:-len(f".{key}.{REPORT}")]] = row.get("input_digest", "")
    for path in folder.glob(f"*.{key}.{FAILURE}"):
        row = json.loads(path.read_text())["row"]
        # A bug or a crash (5xx) is tried again, unless it has used up its attempts; one
        # that OUT's full disk stopped always is.
        if row["code"] != NO_SPACE and (row["status"] < 500
                                        or row.get("attempts", 0) >= MAX_ATTEMPTS):
            finished.setdefault(path.name[:-len(f".{key}.{FAILURE}")],
                                row.get("input_digest", ""))
    return finished


def result_row(report: dict, source: dict) -> dict:
    """The table's row of one analysed series: UIDs, figures, verdict, models, timings."""
    interval = report.get("scar_percent_interval") or (None, None)
    quality = report.get("quality") or {}
    return {
        "series_uid": report["series_instance_uid"], "study_uid": report["study_instance_uid"],
        "patient_id": source["patient_id"], "analysis_id": report["id"],
        "slices": len(report["slices"]),
        "scar_percent": report["scar_percent"],
        "scar_percent_low": interval[0], "scar_percent_high": interval[1],
        "mvo_percent": report.get("mvo_percent"), "mvo_volume_ml": report.get("mvo_volume_ml"),
        "myocardium_volume_ml": report["myocardium_volume_ml"],
        "scar_volume_ml": report["scar_volume_ml"],
        "myocardium_mass_g": report["myocardium_mass_g"], "scar_mass_g": report["scar_mass_g"],
        "verdict": quality.get("verdict"), "reasons": " | ".join(quality.get("reasons", [])),
        "contrast": report.get("contrast"), "pipeline": report["pipeline"],
        "models": ", ".join(f"{m['name']} {m['version']} {m['sha256']}"
                            for m in report["models"]),
        "execution_provider": report["execution_provider"], "service_version": __version__,
        "total_ms": report["timings_ms"]["total"],
        "inference_ms": report["timings_ms"]["inference"],
    }


def _write_parquet(rows: list[dict], path: Path) -> None:
    """Rows to ``path`` through a temporary file of its own (two runs never share one)."""
    data = pa.Table.from_pylist(rows) if rows else pa.table({"series_uid": pa.array(
        [], pa.string())})
    handle, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}.", suffix=".tmp")
    os.close(handle)
    try:
        pq.write_table(data, tmp)
        os.replace(tmp, path)
    finally:
        Path(tmp).unlink(missing_ok=True)


def write_tables(out: Path, key: str, names: Iterable[str],
                 skipped: Iterable[Skipped] = ()) -> tuple[int, int]:
    """results.parquet, failures.parquet and skipped.parquet of this run's SOURCE: the series
    and files named in ``names`` (OUT may hold reports of other runs); (rows, failure rows)."""
    wanted = set(names)
    counts = {}
    for kind, suffix in (("results", REPORT), ("failures", FAILURE)):
        rows = []
        for name in sorted(wanted):
            path = Path(f"{stem(out, name, key)}.{suffix}")
            if path.exists():
                rows.append(json.loads(path.read_text())["row"])
        counts[kind] = len(rows)
        _write_parquet(rows, Path(out) / f"{kind}.parquet")
    _write_parquet([{"path": display_path(s.path), "path_bytes": path_bytes(s.path).hex(),
                     "kind": s.kind, "reason": s.reason} for s in skipped],
                   Path(out) / "skipped.parquet")
    return counts["results"], counts["failures"]


class OutInUse(Exception):
    """Another batch run holds OUT."""


def lock_out(out: Path):
    """Hold OUT for this run (an advisory lock on OUT/.lock, released when the process ends);
    a second run on the same OUT is refused instead of computing everything twice."""
    handle = open(Path(out) / ".lock", "a+")  # noqa: SIM115 - held for the run
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise OutInUse(f"another batch run is using {display_path(out)}") from None
    return handle
