"""An archive is untrusted input: names from headers, files that are not files, odd names,
resumes, two runs, and what the tables say (issue 47)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pyarrow.parquet as pq
import pydicom
import pytest

from service.batch.__main__ import check_out
from service.batch.discover import discover, display_path
from service.batch.engine import task_of
from service.batch.outputs import (
    OutInUse,
    done,
    file_name,
    lock_out,
    stem,
    write_failure,
    write_result,
    write_tables,
)

ROOT = Path(__file__).resolve().parents[3]


def _one_series(tmp_path: Path, series_dirs: list[Path], name: str = "archive") -> Path:
    source = tmp_path / name
    shutil.copytree(series_dirs[0] / "dicom", source / "exam")
    return source


def _rewrite_uid(folder: Path, uid: str) -> None:
    for path in folder.glob("*.dcm"):
        ds = pydicom.dcmread(path)
        ds.SeriesInstanceUID = uid
        ds.save_as(path)


@pytest.mark.parametrize("uid", ["../../../pwned/evil", "/tmp/evil", "1." * 151 + "1"])
def test_a_series_uid_that_is_not_a_uid_never_names_a_file(tmp_path, series_dirs, uid) -> None:
    source = _one_series(tmp_path, series_dirs)
    _rewrite_uid(source / "exam", uid)
    found = discover(source)
    assert found.series == []
    assert {u.code for u in found.unreadable} == {"invalid_attribute"}
    assert all(uid not in u.message for u in found.unreadable)
    with pytest.raises(ValueError):
        stem(tmp_path / "out", uid, "key")


def test_a_fifo_is_skipped_never_opened(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    os.mkfifo(source / "x.dcm")
    result: list = []
    reader = threading.Thread(target=lambda: result.append(discover(source)), daemon=True)
    reader.start()
    reader.join(timeout=30)
    assert result, "discovery hung on a FIFO"
    found = result[0]
    assert len(found.series) == 1
    assert [(Path(s.path).name, s.kind) for s in found.skipped] == [
        ("x.dcm", "not a regular file")]


def test_a_file_that_does_not_answer_is_given_up_on_and_the_walk_goes_on(
        tmp_path, series_dirs, monkeypatch) -> None:
    """A hung network mount: the read of one file blocks (simulated: a regular file cannot
    block here); the walk gives it its time, names it, and reads the rest."""
    from service.batch import discover as walk

    source = _one_series(tmp_path, series_dirs)
    (source / "stuck.dcm").write_bytes((source / "exam" / next(
        p.name for p in (source / "exam").iterdir())).read_bytes())
    release = threading.Event()
    original = walk._read_header

    def hanging(path, name):
        if path.name == "stuck.dcm":
            release.wait(60)
        return original(path, name)

    monkeypatch.setattr(walk, "_read_header", hanging)
    monkeypatch.setattr(walk, "FILE_READ_TIMEOUT_S", 0.5)
    try:
        found = discover(source)
    finally:
        release.set()
    assert len(found.series) == 1 and len(found.series[0].files) == len(
        list((source / "exam").iterdir()))
    assert [(Path(u.path).name, u.code) for u in found.unreadable] == [
        ("stuck.dcm", "unreadable_file")]
    assert "not read within 0.5 s" in found.unreadable[0].message


def test_skipped_entries_each_get_a_row(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    shutil.make_archive(str(source / "zipped"), "zip", source / "exam")
    (source / "series.dcm.gz").write_bytes(b"\x1f\x8b\x08\x00" + b"\0" * 20)
    (source / "raw.dcm").write_bytes(b"\x08\x00\x05\x00CS\x0a\x00ISO_IR 100")  # no preamble
    (tmp_path / "elsewhere").mkdir()
    (source / "linked").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (source / "dangling.dcm").symlink_to(tmp_path / "gone.dcm")
    locked = source / "locked"
    locked.mkdir()
    found = discover(source)
    kinds = {Path(s.path).name: s.kind for s in found.skipped}
    assert kinds == {"zipped.zip": "zip archive", "series.dcm.gz": "gzip file",
                     "raw.dcm": "not DICOM", "linked": "folder symlink"}
    assert [(Path(u.path).name, u.code) for u in found.unreadable] == [
        ("dangling.dcm", "unreadable_file")]


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads every file")
def test_a_permission_error_is_not_corrupt_dicom(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    victim = next((source / "exam").glob("*.dcm"))
    victim.chmod(0)
    found = discover(source)
    assert [u.code for u in found.unreadable] == ["unreadable_file"]


def test_non_utf8_names_are_kept_in_their_bytes(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    odd = os.fsdecode(b"t\xe9.dcm")
    (source / odd).write_bytes(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00garbage")
    found = discover(source)
    (bad,) = found.unreadable
    assert os.fsencode(bad.path).endswith(b"t\xe9.dcm")
    assert display_path(bad.path).endswith("t\\xe9.dcm")
    out = tmp_path / "out"
    source_row = {"series_uid": "", "study_uid": "", "patient_id": "", "modality": "",
                  "files": [bad.path]}
    write_failure(out, "key", source_row, bad.code, 422, bad.message, 1)
    write_tables(out, "key", [file_name(bad.path)], found.skipped)
    (row,) = pq.read_table(out / "failures.parquet").to_pylist()
    assert bytes.fromhex(row["first_file_bytes"]) == os.fsencode(bad.path)
    # The task a worker gets carries the name through JSON back to the same bytes.
    task = json.loads(json.dumps(task_of(found.series[0])))
    assert all(os.path.exists(f) for f in task["files"])


def test_out_inside_the_source_is_not_read_again(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    out = source / "out"
    shutil.copytree(series_dirs[1] / "dicom", out / "series" / "copy")
    found = discover(source, exclude=[out])
    assert len(found.series) == 1
    assert [s.kind for s in found.skipped] == ["output folder"]


def test_tables_describe_this_runs_series_only(tmp_path) -> None:
    out = tmp_path / "out"
    for uid in ("1.2.3", "1.2.4"):
        report = {"series_instance_uid": uid, "study_instance_uid": "1.2", "id": uid,
                  "slices": [], "scar_percent": 1.0, "myocardium_volume_ml": 1.0,
                  "scar_volume_ml": 0.1, "myocardium_mass_g": 1.0, "scar_mass_g": 0.1,
                  "pipeline": "p", "models": [], "execution_provider": "cpu",
                  "timings_ms": {"total": 1.0, "inference": 1.0}}
        write_result(out, "key", report, {"seg": b"", "sr": b""},
                     {"patient_id": "", "input_digest": "d" + uid})
    rows, failures = write_tables(out, "key", ["1.2.4"])
    assert (rows, failures) == (1, 0)
    assert [r["series_uid"] for r in pq.read_table(out / "results.parquet").to_pylist()] == [
        "1.2.4"]
    assert done(out, "key") == {"1.2.3": "d1.2.3", "1.2.4": "d1.2.4"}
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]


def test_resume_is_keyed_on_the_instance_set(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    whole = discover(source).series[0]
    moved = next((source / "exam").glob("*.dcm"))
    moved.rename(tmp_path / moved.name)
    partial = discover(source).series[0]
    assert partial.series_uid == whole.series_uid
    assert partial.input_digest != whole.input_digest


def test_a_series_beside_an_unreadable_file_is_sent_to_review(tmp_path, series_dirs) -> None:
    source = _one_series(tmp_path, series_dirs)
    (source / "exam" / "gone.dcm").symlink_to(tmp_path / "missing.dcm")
    (series,) = discover(source).series
    assert series.review_notes and "could not be read" in series.review_notes[0]


def test_a_second_run_on_the_same_out_is_refused(tmp_path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    held = lock_out(out)
    with pytest.raises(OutInUse, match="another batch run"):
        lock_out(out)
    held.close()
    lock_out(out).close()


def test_an_out_that_is_a_file_or_unwritable_is_refused_before_ray(tmp_path) -> None:
    target = tmp_path / "out"
    target.write_text("a file")
    with pytest.raises(SystemExit, match="is a file"):
        check_out(target)
    run = subprocess.run([sys.executable, "-m", "service.batch", str(tmp_path), str(target)],
                         cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert run.returncode != 0 and "is a file" in run.stderr
    assert "ray" not in run.stderr.lower()


def test_a_series_that_keeps_killing_its_worker_becomes_a_failure_row(tmp_path) -> None:
    from service.batch.engine import SeriesWorker
    from service.batch.outputs import MAX_ATTEMPTS, count_attempt

    out = tmp_path / "out"
    (out / "series").mkdir(parents=True)
    for _ in range(MAX_ATTEMPTS):
        count_attempt(out, "1.2.3", "key")  # three workers died on it
    worker = SeriesWorker.__new__(SeriesWorker)
    worker.config = type("C", (), {"out": str(out), "key": "key"})()
    state = worker.analyse({"series_uid": "1.2.3", "study_uid": "", "patient_id": "",
                            "modality": "MR", "files": ["/nonexistent.dcm"]})
    assert state == "failed"
    row = json.loads(next((out / "series").glob("*.failure.json")).read_text())["row"]
    assert row["status"] == 500 and row["code"] == "worker_crashed"
    assert "1.2.3" in done(out, "key")  # not tried again
