"""The encoder under load and bugs (issue 55, findings 2 and 3): its queue is bounded (503
overloaded past ENCODING_QUEUE_MAX, nothing accepted lost), and an encoding that fails on a
bug is retried with back-off, counted in /metrics, then answered with its error id."""

from __future__ import annotations

import re

from tests.conftest import multipart, series_files, wait_for


def _metric(client, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_past_the_encoding_queue_bound_a_post_is_503_and_nothing_accepted_is_lost(
        make_client, series_dirs, held_encoding) -> None:
    release = held_encoding
    files = multipart(series_files(series_dirs[0]))
    with make_client(ENCODING_QUEUE_MAX="1") as client:
        accepted = client.post("/v1/analyses", files=files)
        assert accepted.status_code == 201, accepted.text
        refused = client.post("/v1/analyses", files=files)
        assert refused.status_code == 503, refused.text
        assert refused.json()["error"]["code"] == "overloaded"
        assert "ENCODING_QUEUE_MAX" in refused.json()["error"]["message"]
        assert int(refused.headers["Retry-After"]) > 0
        assert _metric(client, "dblge_encoding_queue") == 1
        assert len(client.get("/v1/analyses").json()) == 1  # the refused one left nothing
        release.set()
        seg = client.get(f"/v1/analyses/{accepted.json()['id']}/seg")
        assert seg.status_code == 200  # the accepted one is encoded
        wait_for(lambda: _metric(client, "dblge_encoding_queue") == 0, 10, "an empty queue")
        assert client.post("/v1/analyses", files=files).status_code == 201


def test_a_failing_encoding_is_retried_with_back_off_then_answered_with_its_error_id(
        make_client, series_dirs, monkeypatch, caplog) -> None:
    from service import encoding

    original = encoding.encode_stored
    calls = {"n": 0, "fail_first": 2}

    def flaky(report, files):
        calls["n"] += 1
        if calls["n"] <= calls["fail_first"]:
            raise RuntimeError("a bug in the encoder")
        return original(report, files)

    monkeypatch.setattr(encoding, "encode_stored", flaky)
    files = multipart(series_files(series_dirs[0]))
    with make_client(ENCODING_MAX_ATTEMPTS="3", ENCODING_FIRST_RETRY_S="0.05") as client:
        # Two failures, then it works: the third try writes the SEG and SR.
        r = client.post("/v1/analyses", files=files)
        assert r.status_code == 201, r.text
        seg = client.get(f"/v1/analyses/{r.json()['id']}/seg")
        assert seg.status_code == 200, seg.text
        assert _metric(client, 'dblge_encoding_failures_total{reason="internal"}') == 2
        assert _metric(client, 'dblge_encoding_retries_total{reason="internal"}') == 2

        # Failing every time: after the last try, its SEG and SR answer the error id.
        calls.update(n=0, fail_first=10**6)
        r = client.post("/v1/analyses", files=files)
        assert r.status_code == 201, r.text
        for kind in ("seg", "sr"):
            answer = client.get(f"/v1/analyses/{r.json()['id']}/{kind}")
            assert answer.status_code == 500, answer.text
            error = answer.json()["error"]
            assert error["code"] == "internal" and len(error["id"]) == 12
            assert error["id"] in error["message"] and kind.upper() in error["message"]
            assert "a bug in the encoder" not in error["message"]
        assert calls["n"] == 3
        assert any(error["id"] in rec.getMessage() and rec.exc_info for rec in caplog.records)
        assert _metric(client, 'dblge_encoding_failures_total{reason="internal"}') == 5
        assert _metric(client, "dblge_encoding_given_up_total") == 1
        # The report itself is still served.
        assert client.get(f"/v1/analyses/{r.json()['id']}").status_code == 200
