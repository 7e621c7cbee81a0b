"""The batch command on Ray: the service's answers, one row per series, resumable, nothing lost.

Each run is the real command in a subprocess (Ray started there with this machine's
cores), as a researcher would run it.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pydicom
import pytest
from pydicom.data import get_testdata_file

from service.batch.discover import discover
from service.store.files import write_atomic
from tests.conftest import multipart, series_files, wait_until
from tests.service.pipeline.test_acceptance import brain_stack

ROOT = Path(__file__).resolve().parents[3]
# What differs between two analyses of the same files by design.
PER_RUN = {"id", "created_at", "timings_ms", "seg_series_instance_uid",
           "seg_sop_instance_uid", "sr_sop_instance_uid", "input_fingerprint", "store_back"}


def _tree(tmp_path: Path, series_dirs: list[Path], count: int) -> Path:
    """The series' files under a layout of their own, with a file that is not DICOM."""
    source = tmp_path / "archive"
    for k, series_dir in enumerate(series_dirs[:count]):
        shutil.copytree(series_dir / "dicom", source / f"patient{k % 2}" / f"exam{k}")
    (source / "README.txt").write_text("not DICOM")
    return source


def _start(source: Path | str, out: Path, log: Path, *args: str,
           **env: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "service.batch", str(source), str(out),
                             *args], cwd=ROOT, stdout=log.open("w"), stderr=subprocess.STDOUT,
                            start_new_session=True, env=os.environ | env)


def _run(source: Path | str, out: Path, tmp_path: Path, name: str = "run", *args: str,
         **env: str) -> str:
    log = tmp_path / f"{name}.log"
    process = _start(source, out, log, *args, **env)
    assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    return log.read_text()


def _reports(out: Path) -> dict[str, Path]:
    return {json.loads(p.read_text())["row"]["series_uid"]: p
            for p in (out / "series").glob("*.report.json")}


def _results(out: Path) -> list[dict]:
    return pq.read_table(out / "results.parquet").to_pylist()


def _uids(series_dirs: list[Path]) -> set[str]:
    return {pydicom.dcmread(next((d / "dicom").glob("*.dcm")), stop_before_pixels=True)
            .SeriesInstanceUID for d in series_dirs}


def test_discovery_groups_by_uid_whatever_the_layout(tmp_path, series_dirs) -> None:
    source = _tree(tmp_path, series_dirs, 3)
    (source / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    discovered = discover(source)
    found, unreadable, skipped = discovered.series, discovered.unreadable, discovered.skipped
    assert {s.series_uid for s in found} == _uids(series_dirs[:3])
    assert all(len(s.files) == len(list((d / "dicom").glob("*.dcm")))
               for s, d in zip(sorted(found, key=lambda s: s.series_uid),
                               sorted(series_dirs[:3], key=lambda d: next(iter(_uids([d])))),
                               strict=True))
    assert [k.kind for k in skipped] == ["not DICOM"]
    assert [u.code for u in unreadable] == ["corrupt_dicom"]


def test_atomic_writes_leave_no_half_file(tmp_path) -> None:
    target = tmp_path / "a" / "report.json"
    write_atomic(target, b"first")

    with pytest.raises(TypeError):
        write_atomic(target, object())  # fails mid-write
    assert target.read_bytes() == b"first"
    assert [p.name for p in target.parent.iterdir()] == ["report.json"]


@pytest.mark.slow
def test_batch_gives_the_services_answers(client, tmp_path, series_dirs) -> None:
    source = _tree(tmp_path, series_dirs, 2)
    out = tmp_path / "out"
    summary = _run(source, out, tmp_path)
    assert "2 analysed, 0 refused, 0 failed" in summary
    rows = {r["series_uid"]: r for r in _results(out)}
    assert len(rows) == 2
    for series_dir in series_dirs[:2]:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dir)))
        assert r.status_code == 201, r.text
        served = r.json()
        path = _reports(out)[served["series_instance_uid"]]
        batch = json.loads(path.read_text())["report"]
        assert {k: v for k, v in batch.items() if k not in PER_RUN} == \
            {k: v for k, v in served.items() if k not in PER_RUN}
        seg_served = pydicom.dcmread(io.BytesIO(
            client.get(f"/v1/analyses/{served['id']}/seg").content))
        seg_batch = pydicom.dcmread(str(path).replace(".report.json", ".seg.dcm"))
        assert np.array_equal(seg_batch.pixel_array, seg_served.pixel_array)
        row = rows[served["series_instance_uid"]]
        assert row["scar_percent"] == served["scar_percent"]
        assert row["verdict"] == served["quality"]["verdict"]
        assert "patient_name" not in row and served["models"][1]["sha256"] in row["models"]


@pytest.mark.slow
def test_bad_series_are_failure_rows_and_the_rest_is_analysed(tmp_path, series_dirs) -> None:
    source = _tree(tmp_path, series_dirs, 2)
    (source / "broken.dcm").write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    for k, (_, data) in enumerate(brain_stack()):  # an MR series of no heart
        (source / "brain" / f"{k}.dcm").parent.mkdir(exist_ok=True)
        (source / "brain" / f"{k}.dcm").write_bytes(data)
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))  # not MR
    (source / "ct").mkdir()
    ct.save_as(source / "ct" / "1.dcm")
    out = tmp_path / "out"
    _run(source, out, tmp_path)
    assert len(_results(out)) == 2
    failures = {r["code"]: r for r in pq.read_table(out / "failures.parquet").to_pylist()}
    assert set(failures) == {"corrupt_dicom", "not_cardiac_lge", "not_mr"}
    assert all(r["status"] == 422 and r["message"] and r["attempts"] == 1
               for r in failures.values())


def _wait_for_reports(out: Path, at_least: int, process: subprocess.Popen) -> None:
    wait_until(lambda: (out / "series").is_dir() and len(_reports(out)) >= at_least
               or process.poll() is not None, 240, "a first report")
    assert process.poll() is None, "the run ended before it could be interrupted"


def _workers(session_leader: int) -> list[int]:
    """Ray's worker processes running our actor, in the command's session."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if os.getsid(int(proc.name)) != session_leader:
                continue
            command = (proc / "cmdline").read_bytes().replace(b"\0", b" ")
        except (OSError, ProcessLookupError):
            continue
        if b"SeriesWorker" in command:
            found.append(int(proc.name))
    return found


@pytest.mark.slow
def test_a_killed_worker_loses_nothing(tmp_path, series_dirs) -> None:
    source = _tree(tmp_path, series_dirs, 6)
    out = tmp_path / "out"
    log = tmp_path / "run.log"
    process = _start(source, out, log)
    try:
        _wait_for_reports(out, 1, process)
        workers = _workers(process.pid)
        assert workers, "no Ray worker found"
        os.kill(workers[0], signal.SIGKILL)
        assert process.wait(timeout=300) == 0, log.read_text()[-3000:]
    finally:
        _kill_session(process)
    uids = [r["series_uid"] for r in _results(out)]
    assert sorted(uids) == sorted(_uids(series_dirs[:6]))  # every series, exactly once


def _kill_session(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait(timeout=30)


@pytest.mark.slow
def test_a_killed_driver_resumes_without_computing_again(tmp_path, series_dirs) -> None:
    source = _tree(tmp_path, series_dirs, 6)
    out = tmp_path / "out"
    process = _start(source, out, tmp_path / "first.log")
    try:
        _wait_for_reports(out, 2, process)
        os.kill(process.pid, signal.SIGKILL)  # the driver
        time.sleep(1)
    finally:
        _kill_session(process)  # and what it started: a laptop closed mid-run
    before = {uid: path.stat().st_mtime_ns for uid, path in _reports(out).items()}
    assert 2 <= len(before) < 6
    summary = _run(source, out, tmp_path, "second")
    assert f"{len(before)} already done, {6 - len(before)} to analyse" in summary
    after = _reports(out)
    assert all(after[uid].stat().st_mtime_ns == mtime for uid, mtime in before.items())
    uids = [r["series_uid"] for r in _results(out)]
    assert sorted(uids) == sorted(_uids(series_dirs[:6]))


@pytest.mark.slow
def test_studies_are_retrieved_from_a_dicomweb_server(tmp_path, series_dirs) -> None:
    """Orthanc as shipped, with a user: two studies by UID, retrieved and analysed."""
    import httpx

    from tests.service.pacs.test_orthanc import PASSWORD, USER, running_orthanc

    (tmp_path / "pacs").mkdir()
    with running_orthanc(tmp_path / "pacs", forward=False) as (url, auth):
        studies = []
        for series_dir in series_dirs[:2]:
            for _, data in series_files(series_dir):
                assert httpx.post(f"{url}/instances", content=data,
                                  auth=auth).status_code == 200
            studies.append(pydicom.dcmread(next((series_dir / "dicom").glob("*.dcm")),
                                           stop_before_pixels=True).StudyInstanceUID)
        out = tmp_path / "out"
        args = [a for uid in studies for a in ("--study", uid)]
        summary = _run(f"{url}/dicom-web", out, tmp_path, "run", *args,
                       DICOMWEB_STORE_USERNAME=USER, DICOMWEB_STORE_PASSWORD=PASSWORD)
        assert "retrieved from 2 studies" in summary
        assert sorted(r["series_uid"] for r in _results(out)) == sorted(_uids(series_dirs[:2]))
        again = _run(f"{url}/dicom-web", out, tmp_path, "again", *args,
                     DICOMWEB_STORE_USERNAME=USER, DICOMWEB_STORE_PASSWORD=PASSWORD)
        assert "0 instances retrieved" in again and "2 already done" in again


@pytest.mark.slow
def test_hostile_uids_and_odd_files_do_not_stop_the_run_or_escape_out(tmp_path,
                                                                      series_dirs) -> None:
    """A traversal UID, a 303-character UID, a FIFO and a non-UTF-8 name beside two good
    series: rc 0, the good series analysed, a row for each of the rest, nothing written
    outside OUT (issue 47, findings 1-4)."""
    source = _tree(tmp_path, series_dirs, 2)
    for name, uid in (("evil", "../../../pwned/evil"), ("long", "1." * 151 + "1")):
        shutil.copytree(series_dirs[2] / "dicom", source / name)
        for path in (source / name).glob("*.dcm"):
            ds = pydicom.dcmread(path)
            ds.SeriesInstanceUID = uid
            ds.save_as(path)
    os.mkfifo(source / "x.dcm")
    (source / os.fsdecode(b"t\xe9.dcm")).write_bytes(
        b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    out = tmp_path / "run" / "out"
    before = {p for p in tmp_path.rglob("*")}
    _run(source, out, tmp_path)
    written = {p for p in tmp_path.rglob("*")} - before
    assert all(p in (out, out.parent, tmp_path / "run.log") or out in p.parents
               for p in written), sorted(map(str, written))
    assert not (tmp_path.parent / "pwned").exists()
    assert sorted(r["series_uid"] for r in _results(out)) == sorted(_uids(series_dirs[:2]))
    codes = sorted(r["code"] for r in pq.read_table(out / "failures.parquet").to_pylist())
    assert codes == ["corrupt_dicom"] + ["invalid_attribute"] * (2 * len(
        list((series_dirs[2] / "dicom").glob("*.dcm"))))
    kinds = [r["kind"] for r in pq.read_table(out / "skipped.parquet").to_pylist()]
    assert "not a regular file" in kinds
