"""The batch command on a full OUT (issue 55, finding 1): a failure row with the reason per
series where one fits, no half-written series, tried again by the next run, and a run that
cannot start says so before Ray starts."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from service.batch.discover import discover
from service.batch.engine import SeriesWorker, task_of
from service.batch.outputs import done, models_key
from service.config import REPO_ROOT
from tests.service.full_disk import FullDisk


@pytest.fixture(scope="module")
def worker_config(tmp_path_factory) -> dict:
    from service.pipeline.registry import load_registry

    registry = load_registry(REPO_ROOT / "models", "cpu")
    pipeline = registry.pipelines[registry.default_pipeline]
    return {"models_dir": str(REPO_ROOT / "models"), "provider": "cpu", "precision": "auto",
            "pipeline": pipeline.name, "out": "", "key": models_key(pipeline), "threads": 1,
            "max_series_pixels": 32 * 2**20}


def test_a_full_out_gives_failure_rows_and_nothing_half_written(worker_config, series_dirs,
                                                                tmp_path, monkeypatch) -> None:
    out = tmp_path / "out"
    (out / "series").mkdir(parents=True)
    key = worker_config["key"]
    worker = SeriesWorker(worker_config | {"out": str(out)})
    task = task_of(discover(series_dirs[2] / "dicom").series[0])
    task = json.loads(json.dumps(task))
    uid = task["series_uid"]
    disk = FullDisk(out, monkeypatch)

    # Nothing at all fits: not analysed, nothing written, the run goes on.
    disk.fill(budget=0)
    assert worker.analyse(task) == "no_space"
    assert not list((out / "series").iterdir())

    # Room for a row, not for the SEG: the row says why; no SEG, SR or report of the try.
    disk.fill(budget=20_000, reported=10**12)
    disk.partial = False
    assert worker.analyse(task) == "no_space"
    names = sorted(p.name for p in (out / "series").iterdir())
    assert names == [f"{uid}.{key}.failure.json"], names
    row = json.loads((out / "series" / names[0]).read_text())["row"]
    assert row["code"] == "insufficient_storage" and row["status"] == 507
    assert "OUT" in row["message"]
    assert uid not in done(out, key)  # the next run analyses it

    # Space freed: analysed, and the failure row goes.
    disk.free_up()
    assert worker.analyse(task) == "done"
    names = sorted(p.name for p in (out / "series").iterdir())
    assert names == sorted(f"{uid}.{key}.{s}" for s in ("report.json", "seg.dcm", "sr.dcm"))


def test_a_run_on_a_full_out_stops_before_it_starts(tmp_path, series_dirs,
                                                    monkeypatch) -> None:
    from service.batch.__main__ import main

    out = tmp_path / "out"
    out.mkdir()
    disk = FullDisk(out, monkeypatch)
    disk.fill(budget=10**9, reported=1000)
    monkeypatch.setenv("MIN_FREE_BYTES", str(2**20))
    with pytest.raises(SystemExit) as stopped:
        main([str(Path(series_dirs[0]).parent), str(out)])
    assert "OUT folder" in str(stopped.value) and "free" in str(stopped.value)
