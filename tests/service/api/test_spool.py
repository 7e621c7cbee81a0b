"""An upload's files on DATA_DIR (its spool): removed after a 201 is sent (no part of the
client's wait, issue 54), before a refusal is, and when the work ends after a 202."""

from __future__ import annotations

import pytest
from starlette.responses import Response

from tests.conftest import multipart, series_files, wait_for


@pytest.fixture
def events(monkeypatch) -> list[str]:
    """"removed" when a spool is removed, "answered N" when a response's last byte is sent."""
    from service.dicom.ingest import Spool

    seen: list[str] = []
    close, call = Spool.close, Response.__call__

    def recorded_close(self) -> None:
        seen.append("removed")
        close(self)

    async def recorded_call(self, scope, receive, send) -> None:
        async def recording_send(message) -> None:
            await send(message)
            if message["type"] == "http.response.body" and not message.get("more_body"):
                seen.append(f"answered {self.status_code}")
        await call(self, scope, receive, recording_send)

    monkeypatch.setattr(Spool, "close", recorded_close)
    monkeypatch.setattr(Response, "__call__", recorded_call)
    return seen


def _spools(client) -> list:
    return list(client.app.state.settings.spool_dir.glob("request-*"))


def test_an_answered_uploads_files_go_after_the_answer(make_client, series_dirs,
                                                       events) -> None:
    with make_client() as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
        assert r.status_code == 201, r.text
        assert events[-2:] == ["answered 201", "removed"]
        assert _spools(client) == []


def test_a_refused_uploads_files_go_before_the_answer(make_client, series_dirs,
                                                      events) -> None:
    with make_client() as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])[:1]))
        assert r.status_code == 422 and r.json()["error"]["code"] == "single_slice"
        assert events[-2:] == ["removed", "answered 422"]
        assert _spools(client) == []


def test_a_handed_over_uploads_files_go_when_its_work_ends(make_client, series_dirs,
                                                           events) -> None:
    with make_client(ANALYSIS_TIMEOUT_S="0.01") as client:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
        assert r.status_code == 202, r.text
        assert "removed" not in events
        wait_for(lambda: "removed" in events, what="the work to end")
        assert client.get(r.headers["location"]).status_code == 200
        assert _spools(client) == []
