"""Faults at each step of storing: nothing lost, nothing stuck, nothing pushed twice."""

from __future__ import annotations

import json
import sqlite3

import pytest

from service.store.db import transaction
from service.store.results import ResultStore


def _report(analysis_id: str) -> dict:
    return {"id": analysis_id, "created_at": "2026-12-01T00:00:00Z", "pipeline": "cascade-unet",
            "series_instance_uid": "1.2.3", "scar_percent": 5.0}


def test_an_error_inside_a_transaction_rolls_back_and_the_connection_goes_on() -> None:
    db = sqlite3.connect(":memory:", isolation_level=None)
    db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY)")
    with pytest.raises(sqlite3.IntegrityError), transaction(db):
        db.execute("INSERT INTO t VALUES (1)")
        db.execute("INSERT INTO t VALUES (1)")  # fails half-way
    assert db.execute("SELECT COUNT(*) FROM t").fetchone() == (0,)
    with transaction(db):  # a stuck connection would refuse this BEGIN
        db.execute("INSERT INTO t VALUES (2)")
    assert db.execute("SELECT k FROM t").fetchall() == [(2,)]


def test_a_store_whose_index_write_failed_keeps_working(tmp_path, monkeypatch) -> None:
    store = ResultStore(tmp_path)
    real = store._db

    class Failing:
        def execute(self, sql, *args):
            if sql.startswith("INSERT OR IGNORE INTO pushes"):
                raise sqlite3.OperationalError("disk I/O error")
            return real.execute(sql, *args)

    store._db = Failing()
    with pytest.raises(sqlite3.OperationalError):
        store.save(_report("a" * 32), {"seg": b"s", "sr": b"r", "arrays": b"x"},
                   push_to="http://pacs")
    store._db = real
    # Rolled back: no half-indexed analysis without its push.
    assert store.recent() == [] and store.push_state("a" * 32) is None
    store.save(_report("b" * 32), {"seg": b"s", "sr": b"r", "arrays": b"x"},
               push_to="http://pacs")
    assert [r["id"] for r in store.recent()] == ["b" * 32]


def test_an_analysis_recovered_at_start_has_its_push_queued_once(tmp_path) -> None:
    store = ResultStore(tmp_path, push_to="http://pacs/dicom-web")
    analysis_id = "c" * 32
    # A crash between the folder's rename and the index: the folder is there, no row.
    folder = tmp_path / "analyses" / analysis_id
    folder.mkdir(parents=True)
    (folder / "report.json").write_text(json.dumps(_report(analysis_id)))
    store.close()
    recovered = ResultStore(tmp_path, push_to="http://pacs/dicom-web")
    assert [r["id"] for r in recovered.recent()] == [analysis_id]
    assert recovered.push_state(analysis_id)["status"] == "pending"
    assert recovered.pushes_due(now=1e12) == [(analysis_id, "http://pacs/dicom-web")]
    recovered.close()
    again = ResultStore(tmp_path, push_to="http://pacs/dicom-web")  # a second restart
    assert again.pushes_due(now=1e12) == [(analysis_id, "http://pacs/dicom-web")]


def test_an_answered_analysis_whose_index_row_a_power_cut_lost_is_indexed_at_start(
        tmp_path) -> None:
    """The index row of a save is committed without waiting for the disk (issue 54): a
    power cut may lose it, never the analysis. The cut is played by putting back the index
    files as the disk held them before the save's commit (WAL frames not yet synced)."""
    push_to = "http://pacs/dicom-web"
    store = ResultStore(tmp_path, push_to=push_to)
    store.save(_report("a" * 32), {"arrays": b"x"}, push_to=push_to)
    index = {p.name: p.read_bytes() for p in tmp_path.glob("index.sqlite*")}
    report = _report("b" * 32) | {"input_fingerprint": "f" * 64,
                                  "quality": {"verdict": "review", "reasons": ["r"]}}
    identity = {"patient_name": "DOE^JANE", "patient_id": "P1", "study_date": "20261201",
                "series_description": "LGE"}
    store.save(report, {"arrays": b"x", "identity": json.dumps(identity).encode(),
                        "sources": b"z"}, push_to=push_to)
    assert store.find_fingerprint("f" * 64) == "b" * 32
    store._db.close()  # the process dies with the machine
    for path in tmp_path.glob("index.sqlite*"):
        path.unlink()
    for name, data in index.items():
        (tmp_path / name).write_bytes(data)
    lost = sqlite3.connect(tmp_path / "index.sqlite")
    assert lost.execute("SELECT id FROM analyses").fetchall() == [("a" * 32,)]
    lost.close()

    recovered = ResultStore(tmp_path, push_to=push_to)
    assert sorted(r["id"] for r in recovered.recent()) == ["a" * 32, "b" * 32]
    assert {k: v for k, v in recovered.report("b" * 32).items() if k != "store_back"} == report
    assert recovered.identity("b" * 32) == identity
    assert recovered.find_fingerprint("f" * 64) == "b" * 32  # a re-send is not analysed again
    assert [r["verdict"] for r in recovered.recent() if r["id"] == "b" * 32] == ["review"]
    assert ("b" * 32, push_to) in recovered.pushes_due(now=1e12)
    assert "b" * 32 in recovered.unencoded()  # its SEG and SR are made after the restart


def test_only_a_saves_index_row_waits_less_for_the_disk(tmp_path) -> None:
    """The save's commit at synchronous=NORMAL (its folder is durable first); the connection
    back at FULL for everything else, deletes and pushes' states included."""
    store = ResultStore(tmp_path, push_to="http://pacs")
    real, executed = store._db, []

    class Recording:
        def execute(self, sql, *args):
            executed.append(sql.split(" (")[0])
            return real.execute(sql, *args)

    store._db = Recording()
    store.save(_report("a" * 32), {"arrays": b"x"}, push_to="http://pacs")
    assert executed == ["PRAGMA synchronous=NORMAL", "BEGIN", "INSERT OR REPLACE INTO analyses",
                        "INSERT OR IGNORE INTO pushes", "COMMIT", "PRAGMA synchronous=FULL"]
    executed.clear()
    store.push_succeeded("a" * 32, now=1.0)
    store.delete("a" * 32)
    assert not any(sql.startswith("PRAGMA") for sql in executed)
    assert real.execute("PRAGMA synchronous").fetchone() == (2,)  # FULL


@pytest.mark.slow
def test_a_received_series_hit_by_an_internal_error_is_retried_then_failed(
        make_client, series_dirs, monkeypatch) -> None:
    from service.pacs import received
    from tests.conftest import series_files, series_uid_of, settled, stow

    calls = []
    real = received.analyse_and_store

    def flaky(*args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            raise OSError("No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(received, "analyse_and_store", flaky)
    files = series_files(series_dirs[0])
    with make_client() as client:
        assert stow(client, files).status_code == 200
        state = settled(client, series_uid_of(files))
        assert state["state"] == "done" and len(state["analyses"]) == 1 and len(calls) == 2

    def broken(*args, **kwargs):
        raise OSError("No space left on device")

    monkeypatch.setattr(received, "analyse_and_store", broken)
    files = series_files(series_dirs[1])
    with make_client() as client:
        assert stow(client, files).status_code == 200
        state = settled(client, series_uid_of(files))
        assert state["state"] == "failed" and state["error"]["code"] == "internal"
        assert "3 times" in state["error"]["message"]


def test_a_crash_between_storing_and_the_inbox_gives_one_analysis_and_one_push(
        make_client, series_dirs, monkeypatch) -> None:
    from service.pacs.inbox import Inbox
    from tests.conftest import series_files, series_uid_of, settled, stow, wait_for

    files = series_files(series_dirs[2])
    series_uid = series_uid_of(files)
    real_finish = Inbox.finish
    crashed = []

    def crash_once(self, *args, **kwargs):
        if not crashed:
            crashed.append(1)
            raise RuntimeError("killed between storing and finishing")
        return real_finish(self, *args, **kwargs)

    monkeypatch.setattr(Inbox, "finish", crash_once)
    env = {"DICOMWEB_STORE_URL": "http://127.0.0.1:9/dicom-web",
           "STORE_BACK_FIRST_RETRY_S": "3600"}
    with make_client(**env) as client:
        assert stow(client, files).status_code == 200
        wait_for(lambda: crashed and client.get("/v1/analyses").json(), what="the crash")
    with make_client(**env) as client:  # the restart
        state = settled(client, series_uid)
        assert state["state"] == "done"
        analyses = client.get("/v1/analyses").json()
        assert [a["id"] for a in analyses] == state["analyses"]  # one, not two
        store = client.app.state.store
        assert len(store.pushes_due(now=1e12)) == 1
        # The same instances sent again change nothing either.
        assert stow(client, files).status_code == 200
        assert [a["id"] for a in client.get("/v1/analyses").json()] == state["analyses"]
