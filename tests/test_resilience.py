"""The service as a real process: SIGKILL mid-analysis, 50 clients at once, 500 requests
in a row, and a log that never names the patient."""

from __future__ import annotations

import io
import json
import os
import signal
import threading
from pathlib import Path

import httpx
import pydicom
import pytest

from tests.conftest import (
    multipart,
    series_files,
    start_service,
    stop_process,
    to_bytes,
    wait_until,
)

pytestmark = pytest.mark.slow


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")


def test_sigkill_mid_analysis_loses_nothing_that_was_answered(tmp_path, series_dirs) -> None:
    data = tmp_path / "data"
    process, url = start_service(data, tmp_path / "first.log", MAX_CONCURRENT_ANALYSES="2")
    files = multipart(series_files(series_dirs[0]))
    answered: list[str] = []
    lock = threading.Lock()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=60) as http:
            while not stop.is_set():
                try:
                    r = http.post(f"{url}/v1/analyses", files=files)
                except httpx.HTTPError:
                    return  # the server died under us
                if r.status_code == 201:
                    with lock:
                        answered.append(r.json()["id"])

    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    wait_until(lambda: len(answered) >= 3, 120, "three answered analyses")
    os.kill(process.pid, signal.SIGKILL)  # analyses are in flight now
    process.wait()
    stop.set()
    for t in threads:
        t.join(timeout=60)

    process, url = start_service(data, tmp_path / "second.log")
    try:
        with httpx.Client(timeout=30) as http:
            for analysis_id in answered:
                report = http.get(f"{url}/v1/analyses/{analysis_id}")
                assert report.status_code == 200 and report.json()["id"] == analysis_id
                for kind in ("seg", "sr"):
                    r = http.get(f"{url}/v1/analyses/{analysis_id}/{kind}")
                    assert r.status_code == 200
                    ds = pydicom.dcmread(io.BytesIO(r.content))
                    assert ds.SOPInstanceUID == report.json()[f"{kind}_sop_instance_uid"]
            listed = {a["id"] for a in http.get(f"{url}/v1/analyses",
                                                params={"limit": 1000}).json()}
        # Nothing half-written is visible: every folder is whole and indexed, none staged.
        folders = [f for f in (data / "analyses").iterdir()]
        assert set(answered) <= listed == {f.name for f in folders}
        for folder in folders:
            assert {p.name for p in folder.iterdir()} == {
                "report.json", "seg.dcm", "sr.dcm", "arrays.npz", "sources.zip", "identity.json"}
            json.loads((folder / "report.json").read_text())
        assert not any((data / "staging").iterdir())
    finally:
        stop_process(process)


def test_fifty_clients_get_answers_or_503_with_retry_after(tmp_path, series_dirs) -> None:
    process, url = start_service(tmp_path / "data", tmp_path / "service.log",
                                 MAX_CONCURRENT_ANALYSES="2", ANALYSIS_TIMEOUT_S="60")
    files = multipart(series_files(series_dirs[1]))
    results: list[tuple[int, str | None]] = []
    lock = threading.Lock()
    start = threading.Barrier(50)

    def client() -> None:
        start.wait()
        try:
            r = httpx.post(f"{url}/v1/analyses", files=files, timeout=120)
            outcome = (r.status_code, r.headers.get("retry-after"))
        except httpx.HTTPError as exc:
            outcome = (-1, type(exc).__name__)
        with lock:
            results.append(outcome)

    try:
        threads = [threading.Thread(target=client) for _ in range(50)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=180)
        assert not any(t.is_alive() for t in threads), "a request waited forever"
        assert len(results) == 50
        codes = [code for code, _ in results]
        assert set(codes) <= {201, 503}, results
        assert codes.count(201) >= 2
        assert all(int(retry) > 0 for code, retry in results if code == 503)
        metrics = httpx.get(f"{url}/metrics").text
        assert "dblge_analyses_in_flight 0.0" in metrics
    finally:
        stop_process(process)


def test_memory_does_not_grow_over_500_requests(tmp_path, series_dirs) -> None:
    process, url = start_service(tmp_path / "data", tmp_path / "service.log")
    files = multipart(series_files(series_dirs[2]))
    try:
        with httpx.Client(timeout=60) as http:
            first = http.post(f"{url}/v1/analyses", files=files).json()["id"]

            def request(i: int) -> None:
                kind = i % 10
                if kind == 0:
                    assert http.post(f"{url}/v1/analyses", files=files).status_code == 201
                elif kind in (1, 2):
                    assert http.get(f"{url}/v1/analyses/{first}/overlay/{i % 5}.png") \
                        .status_code == 200
                elif kind == 3:
                    assert http.get(f"{url}/v1/analyses/{first}/viewer").status_code == 200
                elif kind == 4:
                    assert http.get(f"{url}/v1/analyses/{first}/seg").status_code == 200
                elif kind == 5:
                    assert http.post(f"{url}/v1/analyses", files=[
                        ("files", ("x.dcm", b"junk", "application/dicom"))]).status_code == 400
                else:
                    assert http.get(f"{url}/v1/analyses/{first}").status_code == 200

            for i in range(100):
                request(i)
            warm = rss_mib(process.pid)
            for i in range(100, 500):
                request(i)
            end = rss_mib(process.pid)
        assert end - warm < 64, f"RSS grew from {warm:.0f} to {end:.0f} MiB"
        assert end < 1024, f"RSS {end:.0f} MiB"
    finally:
        stop_process(process)


def test_the_log_names_analyses_and_uids_never_the_patient(tmp_path, series_dirs) -> None:
    name, patient_id, birth = "Sentinelname^Patricia", "SENTINEL-4711", "19010203"

    def identified(data: bytes) -> bytes:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.PatientName, ds.PatientID, ds.PatientBirthDate = name, patient_id, birth
        return to_bytes(ds)

    bad_birth, bad_id = "1907-08-09", "SENTINELID" * 7  # not a DA; over LO's 64 characters

    def invalid(data: bytes) -> bytes:
        from pydicom import config

        ds = pydicom.dcmread(io.BytesIO(data))
        mode = config.settings.writing_validation_mode
        config.settings.writing_validation_mode = config.IGNORE
        try:
            ds.PatientBirthDate, ds.PatientID = bad_birth, bad_id
            ds.PatientName = "Sentinelbad^Name\\Other"
            return to_bytes(ds)
        finally:
            config.settings.writing_validation_mode = mode

    files = [(n, identified(d)) for n, d in series_files(series_dirs[3])]
    log = tmp_path / "service.log"
    process, url = start_service(tmp_path / "data", log, STOW_QUIET_PERIOD_S="0.2",
                                 BACKGROUND_POLL_S="0.1")
    try:
        with httpx.Client(timeout=60) as http:
            r = http.post(f"{url}/v1/analyses", files=multipart(files))
            assert r.status_code == 201
            analysis_id, series_uid = r.json()["id"], r.json()["series_instance_uid"]
            # Error paths too: a single slice, a truncated file, STOW-RS.
            http.post(f"{url}/v1/analyses", files=multipart(files[:1]))
            http.post(f"{url}/v1/analyses", files=multipart([(files[0][0], files[0][1][:900]),
                                                              *files[1:]]))
            boundary = "b0undary"
            body = b"".join(f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                            + d + b"\r\n" for _, d in files[:1]) + f"--{boundary}--".encode()
            http.post(f"{url}/dicomweb/studies", content=body, headers={
                "Content-Type": f'multipart/related; type="application/dicom"; '
                                f"boundary={boundary}"})
            wait_until(lambda: http.get(f"{url}/v1/series/{series_uid}").json()["state"]
                       in ("done", "failed"), 30, "the STOW-RS series")
            # Values that are not valid for their VR: pydicom warns quoting them.
            r = http.post(f"{url}/v1/analyses", files=multipart(
                [(n, invalid(d)) for n, d in files]))
            assert r.status_code == 422 and r.json()["error"]["code"] == "invalid_attribute"
            assert bad_birth not in r.text and bad_id not in r.text
    finally:
        stop_process(process)
    text = log.read_text(errors="replace")
    assert analysis_id in text and series_uid in text  # the log is useful...
    assert "exceeds the maximum length" in text  # ...pydicom's warnings about the values came...
    for secret in (name, "Sentinelname", "Patricia", patient_id, birth, bad_birth, bad_id,
                   "Sentinelbad"):
        assert secret.lower() not in text.lower(), secret  # ...and says nothing of the patient
    # The service's own start-up lines are not buried under highdicom's (one per frame group).
    assert "models checked and loaded in" in text and " INFO highdicom" not in text


def test_a_client_that_stops_sending_gets_408_and_frees_its_slot(tmp_path, series_dirs) -> None:
    import socket

    process, url = start_service(tmp_path / "data", tmp_path / "service.log",
                                 REQUEST_READ_TIMEOUT_S="1", MAX_CONCURRENT_ANALYSES="1")
    host, port = url.removeprefix("http://").split(":")
    try:
        with socket.create_connection((host, int(port)), timeout=30) as slow:
            slow.sendall(b"POST /v1/analyses HTTP/1.1\r\nHost: x\r\nContent-Type: "
                         b"application/zip\r\nContent-Length: 100000\r\n\r\nPK\x03\x04")
            answer = ""
            while "request_timeout" not in answer:
                chunk = slow.recv(4096)
                if not chunk:
                    break
                answer += chunk.decode(errors="replace")
        assert answer.startswith("HTTP/1.1 408") and "request_timeout" in answer
        # The slot is free again: a real series is analysed.
        r = httpx.post(f"{url}/v1/analyses", files=multipart(series_files(series_dirs[0])),
                       timeout=60)
        assert r.status_code == 201
    finally:
        stop_process(process)
