"""What a batch run leaves in OUT: per series a report, SEG and SR, then two Parquet tables.

Names are fixed by the series UID and the models' hash (``{series_uid}.{key}``), so a
series computed twice (a retried task, a resumed run) overwrites itself instead of
adding a row. Each file is written to a temporary name and renamed, the report last:
its presence is what marks the series done. The tables are made from those files at
the end of a run, one row per series; patient names never enter them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from service import __version__
from service.analysis import models_digest
from service.pipeline.registry import Pipeline
from service.store.files import write_atomic

REPORT, FAILURE, ATTEMPTS = "report.json", "failure.json", "attempts"


def models_key(pipeline: Pipeline) -> str:
    """12 hex digits naming the pipeline and the exact model files it runs."""
    return models_digest(pipeline).hexdigest()[:12]


def stem(out: Path, series_uid: str, key: str) -> Path:
    return Path(out) / "series" / f"{series_uid}.{key}"


def count_attempt(out: Path, series_uid: str, key: str) -> int:
    """One more try at a series (a worker that died mid-series leaves its count)."""
    path = Path(f"{stem(out, series_uid, key)}.{ATTEMPTS}")
    tries = int(path.read_text()) + 1 if path.exists() else 1
    write_atomic(path, str(tries).encode())
    return tries


def write_result(out: Path, key: str, report: dict, files: dict[str, bytes],
                 source: dict) -> None:
    base = stem(out, report["series_instance_uid"], key)
    write_atomic(Path(f"{base}.seg.dcm"), files["seg"])
    write_atomic(Path(f"{base}.sr.dcm"), files["sr"])
    row = result_row(report, source)
    write_atomic(Path(f"{base}.{REPORT}"), json.dumps({"row": row, "report": report}).encode())
    Path(f"{base}.{FAILURE}").unlink(missing_ok=True)
    Path(f"{base}.{ATTEMPTS}").unlink(missing_ok=True)


def write_failure(out: Path, key: str, source: dict, code: str, status: int, message: str,
                  attempts: int) -> None:
    """A series that could not be analysed: the code and message the HTTP API gives."""
    name = source["series_uid"] or "file-" + hashlib.sha256(
        source["files"][0].encode()).hexdigest()[:16]
    row = {"series_uid": source["series_uid"], "study_uid": source["study_uid"],
           "patient_id": source["patient_id"], "modality": source["modality"],
           "files": len(source["files"]), "first_file": source["files"][0],
           "code": code, "status": status, "message": message, "attempts": attempts,
           "service_version": __version__}
    write_atomic(Path(f"{stem(out, name, key)}.{FAILURE}"), json.dumps({"row": row}).encode())


def done(out: Path, key: str) -> set[str]:
    """Series UIDs with a report or a final (4xx) failure under this models' key."""
    folder = Path(out) / "series"
    finished = set()
    for path in folder.glob(f"*.{key}.{REPORT}"):
        finished.add(path.name[:-len(f".{key}.{REPORT}")])
    for path in folder.glob(f"*.{key}.{FAILURE}"):
        if json.loads(path.read_text())["row"]["status"] < 500:  # a bug or a crash: again
            finished.add(path.name[:-len(f".{key}.{FAILURE}")])
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


def write_tables(out: Path, key: str) -> tuple[int, int]:
    """results.parquet and failures.parquet from the series files; (rows, failure rows)."""
    folder = Path(out) / "series"
    tables = {}
    for kind, suffix in (("results", REPORT), ("failures", FAILURE)):
        rows = [json.loads(p.read_text())["row"]
                for p in sorted(folder.glob(f"*.{key}.{suffix}"))]
        tables[kind] = rows
        data = pa.Table.from_pylist(rows) if rows else pa.table({"series_uid": pa.array(
            [], pa.string())})
        tmp = Path(out) / f".{kind}.parquet.tmp"
        pq.write_table(data, tmp)
        os.replace(tmp, Path(out) / f"{kind}.parquet")
    return len(tables["results"]), len(tables["failures"])
