"""A clean stop (issue 55): SIGTERM refuses new work, finishes or parks what is in flight,
and a restart finishes what was parked. The service runs as a real process."""

from __future__ import annotations

import io
import json
import os
import signal
import sqlite3
import threading
from pathlib import Path

import httpx
import pydicom
import pytest
import yaml

from service.encoding import encode_stored
from tests.conftest import (
    RELATED,
    multipart,
    related_body,
    series_files,
    series_uid_of,
    start_service,
    stop_process,
    wait_until,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("path", ["docker-compose.yml", "deploy/compose.offline.yml"])
def test_compose_gives_the_stop_more_time_than_the_service_takes(path) -> None:
    from service.api.shutdown import LAST_ENCODING_S, OPEN_REQUESTS_S

    lge = yaml.safe_load((REPO / path).read_text())["services"]["lge"]
    grace = float(lge["environment"]["SHUTDOWN_GRACE_S"])
    compose_s = float(lge["stop_grace_period"].removesuffix("s"))
    # The drain, the last encoding, the wait for open requests, the exit (a few seconds).
    assert compose_s >= grace + LAST_ENCODING_S + OPEN_REQUESTS_S + 5, (path, grace, compose_s)


# Loaded by the service's interpreter at start (``sitecustomize``): each encoding waits a
# second first.
SLOW_ENCODER = """
import time
from service.encoding import Encoder

_encode = Encoder.encode


def encode(self, analysis_id):
    time.sleep(1.0)
    return _encode(self, analysis_id)


Encoder.encode = encode
"""


def _in_flight(url: str) -> float:
    for line in httpx.get(f"{url}/metrics", timeout=5).text.splitlines():
        if line.startswith("dblge_analyses_in_flight "):
            return float(line.split()[1])
    return 0.0


def _inbox_state(data: Path, series_uid: str) -> str:
    with sqlite3.connect(data / "inbox.sqlite") as db:
        return db.execute("SELECT state FROM series WHERE series_instance_uid = ?",
                          (series_uid,)).fetchone()[0]


def _nothing_half_written(data: Path) -> dict[str, bool]:
    """Every analysis folder whole (its SEG only with its SR); {id: encoded}."""
    assert not any((data / "staging").iterdir())
    assert not list(data.rglob("*.tmp")), "a temporary file was left"
    encoded = {}
    for folder in (data / "analyses").iterdir():
        names = {p.name for p in folder.iterdir()}
        assert {"report.json", "arrays.npz", "sources.zip", "identity.json"} <= names, names
        json.loads((folder / "report.json").read_text())
        assert ("seg.dcm" in names) == ("sr.dcm" in names), names
        encoded[folder.name] = "sr.dcm" in names
    return encoded


@pytest.mark.slow
def test_sigterm_finishes_what_is_in_flight_and_a_restart_finishes_what_was_parked(
        tmp_path, series_dirs) -> None:
    data = tmp_path / "data"
    files, received = series_files(series_dirs[0]), series_files(series_dirs[1])

    # 1. A generous grace: the analyses in flight are answered, new work is refused.
    process, url = start_service(data, tmp_path / "first.log", MAX_CONCURRENT_ANALYSES="2",
                                 STOW_QUIET_PERIOD_S="600", SHUTDOWN_GRACE_S="60")
    answers: dict[str, httpx.Response] = {}
    release = threading.Event()
    body = related_body(files)

    def slow_upload() -> None:  # holds the drain open until the test has looked
        def chunks():
            yield body[: len(body) // 2]
            release.wait(60)
            yield body[len(body) // 2:]
        answers["slow"] = httpx.post(f"{url}/v1/analyses", content=chunks(),
                                     headers={"Content-Type": RELATED}, timeout=120)

    def upload() -> None:
        answers["plain"] = httpx.post(f"{url}/v1/analyses", files=multipart(files), timeout=120)

    try:
        stowed = httpx.post(f"{url}/dicomweb/studies", content=related_body(received),
                            headers={"Content-Type": RELATED}, timeout=60)
        assert stowed.status_code == 200, stowed.text  # received, waiting for its quiet period
        slow, plain = threading.Thread(target=slow_upload), threading.Thread(target=upload)
        slow.start()
        threading.Event().wait(2.0)  # the slow upload's first half is in: it holds a slot
        plain.start()
        # SIGTERM while the plain upload's analysis runs (if the poll sees it in time).
        wait_until(lambda: _in_flight(url) >= 1 or "plain" in answers, 60,
                   "the analysis to start")
        process.send_signal(signal.SIGTERM)
        wait_until(lambda: httpx.get(f"{url}/readyz").status_code == 503, 10, "readyz 503")
        assert httpx.get(f"{url}/readyz").json()["status"] == "shutting_down"
        refused = [httpx.post(f"{url}/v1/analyses", files=multipart(files), timeout=30),
                   httpx.post(f"{url}/dicomweb/studies", content=related_body(received),
                              headers={"Content-Type": RELATED}, timeout=30)]
        for r in refused:
            assert r.status_code == 503, r.text
            assert r.json()["error"]["code"] == "shutting_down"
            assert int(r.headers["Retry-After"]) > 0
        release.set()
        slow.join(120)
        plain.join(120)
        process.wait(timeout=60)
    finally:
        release.set()
        stop_process(process)
    assert process.returncode == 0, process.returncode
    for name in ("slow", "plain"):
        assert answers[name].status_code == 201, (name, answers[name].text)
    log = (tmp_path / "first.log").read_text()
    assert "everything in flight finished" in log, log[-3000:]
    encoded = _nothing_half_written(data)
    answered = {answers[name].json()["id"] for name in ("slow", "plain")}
    assert set(encoded) == answered and all(encoded.values())  # SEG and SR written in the grace
    # The received series stays parked, durably, for the next process.
    assert _inbox_state(data, series_uid_of(received)) == "waiting"

    # 2. No grace: SIGTERM while SEG/SR encodings are queued parks them. The networks run
    # one at a time, so the answers come out one by one and the encoder could keep up: in
    # this process it takes a second more per analysis (the code is the service's).
    slow_encoder = tmp_path / "slow_encoder"
    slow_encoder.mkdir()
    (slow_encoder / "sitecustomize.py").write_text(SLOW_ENCODER)
    for attempt in range(3):
        process, url = start_service(data, tmp_path / f"second{attempt}.log",
                                     MAX_CONCURRENT_ANALYSES="6", STOW_QUIET_PERIOD_S="600",
                                     SHUTDOWN_GRACE_S="0", PYTHONPATH=os.pathsep.join(
                                         [str(slow_encoder), os.environ.get("PYTHONPATH", "")]))
        batch: list[httpx.Response] = []
        try:
            def post(to: str = url, into: list = batch) -> None:
                into.append(httpx.post(f"{to}/v1/analyses", files=multipart(files),
                                       timeout=120))

            threads = [threading.Thread(target=post) for _ in range(6)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(120)
            process.send_signal(signal.SIGTERM)  # the encoder has just been handed six
            process.wait(timeout=60)
        finally:
            stop_process(process)
        assert process.returncode == 0
        assert [r.status_code for r in batch] == [201] * 6, [r.text for r in batch]
        answered |= {r.json()["id"] for r in batch}
        encoded = _nothing_half_written(data)
        assert set(encoded) == answered
        if not all(encoded.values()):
            break
    else:
        pytest.fail("every encoding finished before the stop: the window was not hit")
    log = (tmp_path / f"second{attempt}.log").read_text()
    assert "done at the next start" in log, log[-3000:]
    parked = [i for i, done in encoded.items() if not done]

    # 3. A restart finishes what was parked: every analysis has its SEG and SR, the parked
    # ones encoded to the bytes an undisturbed run writes; the received series is analysed.
    process, url = start_service(data, tmp_path / "third.log", STOW_QUIET_PERIOD_S="0.3")
    try:
        with httpx.Client(timeout=60) as http:
            for analysis_id in answered:
                report = http.get(f"{url}/v1/analyses/{analysis_id}").json()
                for kind in ("seg", "sr"):
                    r = http.get(f"{url}/v1/analyses/{analysis_id}/{kind}")
                    assert r.status_code == 200, r.text
                    ds = pydicom.dcmread(io.BytesIO(r.content))
                    assert ds.SOPInstanceUID == report[f"{kind}_sop_instance_uid"]
            for analysis_id in parked:
                folder = data / "analyses" / analysis_id
                again = encode_stored(json.loads((folder / "report.json").read_text()),
                                      {k: (folder / f"{k}.{e}").read_bytes()
                                       for k, e in (("arrays", "npz"), ("sources", "zip"))})
                assert http.get(f"{url}/v1/analyses/{analysis_id}/sr").content == again["sr"]
            series_uid = series_uid_of(received)
            state = wait_until(lambda: (s := http.get(f"{url}/v1/series/{series_uid}").json())
                               ["state"] in ("done", "failed") and s, 120, "the parked series")
            assert state["state"] == "done", state
            assert http.get(f"{url}/v1/analyses/{state['analyses'][-1]}/sr").status_code == 200
    finally:
        stop_process(process)
    assert "stored analyses without SEG and SR" in (tmp_path / "third.log").read_text()
