"""Durable writes issued together (issue 54): every file synced, none left half-made, and
an SR kept without its SEG by a power cut counted as not encoded."""

from __future__ import annotations

import json
import os
import threading

import pytest

from service.store import files as store_files
from service.store.files import write_all_atomic, write_synced
from service.store.results import ResultStore

_REAL_FSYNC = os.fsync


def _fsyncs_that_meet(monkeypatch, count: int) -> list[int]:
    """os.fsync that returns only once ``count`` calls are inside it at the same time:
    fsyncs made one after another never get there (a BrokenBarrierError after 5 s)."""
    barrier, synced = threading.Barrier(count, timeout=5), []
    def fsync(fd: int) -> None:
        if os.path.isdir(f"/proc/self/fd/{fd}") or not os.path.exists("/proc/self/fd"):
            return _REAL_FSYNC(fd)  # the folder's, after the renames
        barrier.wait()
        synced.append(fd)
        return _REAL_FSYNC(fd)

    monkeypatch.setattr(store_files.os, "fsync", fsync)
    return synced


@pytest.mark.skipif(not os.path.exists("/proc/self/fd"), reason="needs /proc")
def test_the_files_of_one_write_are_synced_together(tmp_path, monkeypatch) -> None:
    synced = _fsyncs_that_meet(monkeypatch, 3)
    write_synced({tmp_path / "a": b"1", tmp_path / "b": b"22", tmp_path / "c": b"333"})
    assert len(synced) == 3
    assert [(tmp_path / n).read_bytes() for n in "abc"] == [b"1", b"22", b"333"]
    synced = _fsyncs_that_meet(monkeypatch, 2)
    write_all_atomic(tmp_path / "folder", {"seg.dcm": b"s" * 100_000, "sr.dcm": b"r"})
    assert len(synced) == 2
    assert sorted(p.name for p in (tmp_path / "folder").iterdir()) == ["seg.dcm", "sr.dcm"]


def test_a_write_that_fails_leaves_no_file_and_no_temporary(tmp_path) -> None:
    folder = tmp_path / "folder"
    with pytest.raises(TypeError):
        write_all_atomic(folder, {"seg.dcm": b"seg", "sr.dcm": object()})  # fails mid-write
    assert list(folder.iterdir()) == []
    with pytest.raises(FileNotFoundError):  # a folder removed meanwhile is not made again
        write_all_atomic(tmp_path / "gone", {"sr.dcm": b"sr"}, make_folder=False)
    assert not (tmp_path / "gone").exists()


def _stored(store: ResultStore, analysis_id: str) -> None:
    report = {"id": analysis_id, "created_at": "2026-12-01T00:00:00Z",
              "pipeline": "cascade-unet", "series_instance_uid": "1.2.3", "scar_percent": 5.0}
    store.save(report, {"arrays": b"a", "sources": b"s", "identity": json.dumps({}).encode()})


def test_an_sr_without_its_seg_is_encoded_again_at_start(tmp_path) -> None:
    store = ResultStore(tmp_path)
    analysis_id = "d" * 32
    _stored(store, analysis_id)
    assert store.unencoded() == [analysis_id]
    store.save_encoded(analysis_id, {"seg": b"seg", "sr": b"sr"})
    assert store.unencoded() == [] and store.encoding_state(analysis_id) == "done"
    # A power cut that kept the SR's rename and not the SEG's (one folder fsync covers
    # both): not done, and the next start encodes it again.
    (tmp_path / "analyses" / analysis_id / "seg.dcm").unlink()
    assert store.encoding_state(analysis_id) == "pending"
    assert store.unencoded() == [analysis_id]
    assert store.encoder_inputs(analysis_id) is not None



def test_a_write_killed_midway_leaves_no_temporary_file_after_the_next_start(
        tmp_path, monkeypatch) -> None:
    store = ResultStore(tmp_path)
    analysis_id = "e" * 32
    _stored(store, analysis_id)
    folder = tmp_path / "analyses" / analysis_id
    kept = {p.name for p in folder.iterdir()}
    # Where the SEG's and SR's temporaries are while they are written after the answer.
    seen = {}

    def look(opened):
        seen["folder"] = {p.name for p in folder.iterdir()}
        seen["staging"] = {p.name for p in store.staging.iterdir()}
        raise KeyboardInterrupt  # stopped mid-write

    monkeypatch.setattr(store_files, "_write_and_sync", look)
    with pytest.raises(KeyboardInterrupt):
        store.save_encoded(analysis_id, {"seg": b"seg", "sr": b"sr"})
    assert seen["folder"] == kept
    assert {n.split(".")[1] for n in seen["staging"]} == {"seg", "sr"}
    monkeypatch.undo()
    # SIGKILL at that moment: nothing cleans up then, so the temporaries stay in staging,
    # and the next start clears them with no listing of each stored analysis.
    for name in seen["staging"]:
        (store.staging / name).write_bytes(b"half a file")
    ResultStore(tmp_path)
    assert list(store.staging.iterdir()) == []
    assert {p.name for p in folder.iterdir()} == kept
    assert ResultStore(tmp_path).unencoded() == [analysis_id]  # encoded again at start
