"""The batch under DUPLICATE_INSTANCES=keep-last (issue 55): the file written last wins,
whatever its path's order; no Ray needed, one worker called directly."""

from __future__ import annotations

import json
import os
import shutil
from dataclasses import asdict

from service.batch.discover import discover
from service.batch.engine import SeriesWorker, WorkerConfig, task_of
from service.config import REPO_ROOT
from tests.service.dicom.test_instances import edited, uid_of


def test_the_copy_written_last_is_used_whatever_the_paths_order(tmp_path, series_dirs) -> None:
    source = tmp_path / "archive"
    shutil.copytree(series_dirs[0] / "dicom", source / "exam")
    original = sorted((source / "exam").glob("*.dcm"))[2]
    # A corrected copy, written last, in a folder whose path sorts first.
    corrected = source / "a-corrected" / original.name
    corrected.parent.mkdir()
    corrected.write_bytes(edited(original.read_bytes()))
    stamp = original.stat().st_mtime_ns
    os.utime(original, ns=(stamp, stamp))
    os.utime(corrected, ns=(stamp + 10**9, stamp + 10**9))
    (series,) = discover(source).series
    assert str(corrected) < str(original) and str(corrected) in series.files

    out = tmp_path / "out"
    out.mkdir()
    worker = SeriesWorker(asdict(WorkerConfig(
        models_dir=str(REPO_ROOT / "models"), provider="cpu", precision="auto", pipeline=None,
        out=str(out), key="k", threads=1, max_series_pixels=2**25, duplicates="keep-last")))
    assert worker.analyse(task_of(series)) == "done"
    report = json.loads(next(out.rglob("*report.json")).read_text())["report"]
    (warning,) = [w for w in report["warnings"] if "DUPLICATE_INSTANCES" in w]
    assert uid_of(original.read_bytes()) in warning
    assert f"({corrected}) was used" in warning and "keep-last" in warning
