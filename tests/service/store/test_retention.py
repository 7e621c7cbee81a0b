"""Patient data is not kept for ever: DELETE an analysis, and RETENTION_DAYS purges."""

from __future__ import annotations

import time

from service.api.app import purge_expired
from tests.conftest import multipart, series_files, series_uid_of, settled, stow


def test_a_deleted_analysis_is_gone_with_its_files(make_client, series_dirs, tmp_path) -> None:
    with make_client() as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
        assert r.status_code == 201
        analysis_id = r.json()["id"]
        folder = tmp_path / "data" / "analyses" / analysis_id
        assert folder.is_dir()
        gone = client.delete(f"/v1/analyses/{analysis_id}")
        assert gone.status_code == 200 and gone.json()["deleted"] == analysis_id
        for path in ("", "/seg", "/sr", "/viewer", "/overlay/0.png"):
            assert client.get(f"/v1/analyses/{analysis_id}{path}").status_code == 404, path
        assert analysis_id not in {a["id"] for a in client.get("/v1/analyses").json()}
        assert not folder.exists()
        assert client.delete(f"/v1/analyses/{analysis_id}").status_code == 404
        assert client.delete("/v1/analyses/not-an-id").status_code == 404


def test_deleting_a_stow_analysis_removes_the_received_instances(make_client, series_dirs,
                                                                 tmp_path) -> None:
    files = series_files(series_dirs[1])
    series_uid = series_uid_of(files)
    with make_client() as client:
        assert stow(client, files).status_code == 200
        state = settled(client, series_uid)
        assert state["state"] == "done"
        received = list((tmp_path / "data").rglob(f"{series_uid}/*.dcm"))
        assert len(received) == len(files)
        r = client.delete(f"/v1/analyses/{state['analyses'][0]}")
        assert r.status_code == 200 and r.json()["received_instances_deleted"] is True
        assert not any(p.exists() for p in received)
        assert client.get(f"/v1/series/{series_uid}").status_code == 404


def test_retention_purges_only_what_is_older_than_the_period(make_client, series_dirs) -> None:
    with make_client() as client:
        files = series_files(series_dirs[2])
        assert stow(client, files).status_code == 200
        settled(client, series_uid_of(files))
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[3])))
        assert r.status_code == 201
        store, inbox = client.app.state.store, client.app.state.inbox
        assert purge_expired(store, inbox, retention_days=1.0, now=time.time()) == 0
        assert len(client.get("/v1/analyses").json()) == 2
        # Two days on, everything is past a one-day period.
        removed = purge_expired(store, inbox, retention_days=1.0, now=time.time() + 2 * 86400)
        assert removed == 3  # two analyses, one received series
        assert client.get("/v1/analyses").json() == []
        assert client.get(f"/v1/series/{series_uid_of(files)}").status_code == 404


def test_a_delete_makes_the_folders_move_durable_before_it_answers(make_client, series_dirs,
                                                                   tmp_path,
                                                                   monkeypatch) -> None:
    """Start-up indexes again a folder without its row: were the move out of analyses/ lost
    in a power cut, a deleted analysis would come back."""
    from service.store import results

    events: list[str] = []
    real_replace, real_fsync = results.os.replace, results.fsync_dir
    with make_client() as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
        analysis_id = r.json()["id"]
        analyses = tmp_path / "data" / "analyses"

        def replace(src, dst):
            if str(src).endswith(analysis_id):
                events.append("moved")
            return real_replace(src, dst)

        def fsync(folder):
            if str(folder) == str(analyses) and "moved" in events:
                events.append("analyses synced")
            return real_fsync(folder)

        monkeypatch.setattr(results.os, "replace", replace)
        monkeypatch.setattr(results, "fsync_dir", fsync)
        assert client.delete(f"/v1/analyses/{analysis_id}").status_code == 200
        events.append("answered")
    assert events[:3] == ["moved", "analyses synced", "answered"]
