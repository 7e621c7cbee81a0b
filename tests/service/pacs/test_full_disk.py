"""STOW-RS and received series on a full store (issue 55, finding 1): 507 before anything is
kept, 0xA700 with Retry-After for instances the disk could not take mid-request, and a
received series that waits (not failed) until space is freed, then is analysed."""

from __future__ import annotations

from service.pacs.inbox import Inbox
from tests.conftest import (
    FAILED,
    FAILURE_REASON,
    REFERENCED,
    series_files,
    series_uid_of,
    settled,
    stow,
    wait_for,
)
from tests.service.full_disk import FullDisk

MIB = 2**20


def test_stow_on_a_full_store_is_507_and_keeps_nothing(make_client, series_dirs, tmp_path,
                                                       monkeypatch) -> None:
    files = series_files(series_dirs[1])
    data = tmp_path / "data"
    data.mkdir()
    disk = FullDisk(data, monkeypatch)
    with make_client(MIN_FREE_BYTES=str(8 * MIB)) as client:
        disk.fill(budget=MIB)
        r = stow(client, files)
        assert r.status_code == 507, r.text
        assert r.json()["error"]["code"] == "insufficient_storage"
        assert int(r.headers["Retry-After"]) > 0
        assert client.get(f"/v1/series/{series_uid_of(files)}").status_code == 404


def test_instances_the_disk_cannot_take_mid_request_are_0xa700_with_retry_after(
        make_client, series_dirs, tmp_path, monkeypatch) -> None:
    files = series_files(series_dirs[1])
    data = tmp_path / "data"
    data.mkdir()
    disk = FullDisk(data, monkeypatch)
    original = Inbox.add
    calls = {"n": 0}

    def add(self, study_uid, series_uid, sop_uid, payload, now):
        calls["n"] += 1
        if calls["n"] == 1:  # the body is spooled: the disk fills after the first instance
            disk.fill(budget=len(payload) + 200, reported=10**12)
        return original(self, study_uid, series_uid, sop_uid, payload, now)

    monkeypatch.setattr(Inbox, "add", add)
    with make_client(MIN_FREE_BYTES="0", STOW_QUIET_PERIOD_S="600") as client:
        r = stow(client, files)
        assert r.status_code == 202, r.text
        body = r.json()
        assert len(body[REFERENCED]["Value"]) == 1
        reasons = {item[FAILURE_REASON]["Value"][0] for item in body[FAILED]["Value"]}
        assert reasons == {0xA700}
        assert int(r.headers["Retry-After"]) > 0 and "full" in r.headers["Warning"]
        kept = list((data / "inbox" / series_uid_of(files)).iterdir())
        assert len(kept) == 1 and kept[0].suffix == ".dcm"  # no temporary file left
        assert client.get(f"/v1/series/{series_uid_of(files)}").json()["instances"] == 1


def test_a_received_series_waits_for_space_then_is_analysed(make_client, series_dirs,
                                                            tmp_path, monkeypatch) -> None:
    files = series_files(series_dirs[1])
    data = tmp_path / "data"
    data.mkdir()
    disk = FullDisk(data, monkeypatch)
    with make_client(MIN_FREE_BYTES="0") as client:
        assert stow(client, files).status_code == 200
        # Room for a request, not for the series' analysis (SERIES_STORAGE_FACTOR x it).
        disk.fill(reported=MIB)
        uid = series_uid_of(files)

        def waiting():
            state = client.get(f"/v1/series/{uid}").json()
            return state if (state["error"] or {}).get("code") == "insufficient_storage" \
                else None

        state = wait_for(waiting, 30, "the series to wait for space")
        assert state["state"] == "waiting" and not state["analyses"]
        disk.free_up()
        done = settled(client, uid)
        assert done["state"] == "done" and done["error"] is None
        assert client.get(f"/v1/analyses/{done['analyses'][0]}/sr").status_code == 200
