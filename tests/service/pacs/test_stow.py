"""STOW-RS in (grouping, quiet period, refusals) and store-back out (retries), in process."""

from __future__ import annotations

import io
import json
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import highdicom as hd
import pydicom
import pytest

from service.dicom.ingest import Limits, Spool, stow_parts
from tests.conftest import (
    FAILED,
    FAILURE_REASON,
    REFERENCED,
    RELATED,
    SOP_INSTANCE,
    VOLATILE,
    multipart,
    related_body,
    series_files,
    series_uid_of,
    settled,
    stow,
    to_bytes,
    wait_for,
)


def _referenced(body: dict) -> set[str]:
    return {item[SOP_INSTANCE]["Value"][0] for item in body.get(REFERENCED, {}).get("Value", [])}


def _failure_reasons(body: dict) -> list[int]:
    return [item[FAILURE_REASON]["Value"][0] for item in body.get(FAILED, {}).get("Value", [])]


def test_a_series_received_by_stow_is_analysed_once_like_an_upload(make_client,
                                                                     series_dirs) -> None:
    files = series_files(series_dirs[0])
    sops = {str(pydicom.dcmread(io.BytesIO(d), stop_before_pixels=True).SOPInstanceUID)
            for _, d in files}
    with make_client() as client:
        r = stow(client, files)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("application/dicom+json")
        assert _referenced(r.json()) == sops and FAILED not in r.json()
        state = settled(client, series_uid_of(files))
        assert state["state"] == "done" and state["instances"] == len(files)
        assert len(state["analyses"]) == 1 and state["analysed_instances"] == len(files)
        report = client.get(f"/v1/analyses/{state['analyses'][0]}").json()
        direct = client.post("/v1/analyses", files=multipart(files)).json()
        strip = lambda rep: {k: v for k, v in rep.items() if k not in VOLATILE}  # noqa: E731
        assert strip(report) == strip(direct)
        listed = client.get("/v1/analyses", params={"series_instance_uid": state[
            "series_instance_uid"]}).json()
        assert {a["id"] for a in listed} == {report["id"], direct["id"]}


def test_a_series_sent_in_two_requests_within_the_quiet_period_is_analysed_once(
        make_client, series_dirs) -> None:
    files = series_files(series_dirs[1])
    half = len(files) // 2
    with make_client(STOW_QUIET_PERIOD_S="4.0") as client:
        assert stow(client, files[:half]).status_code == 200
        assert stow(client, files[half:]).status_code == 200
        state = settled(client, series_uid_of(files))
        time.sleep(0.5)
        state = client.get(f"/v1/series/{state['series_instance_uid']}").json()
        assert len(state["analyses"]) == 1 and state["analysed_instances"] == len(files)
        report = client.get(f"/v1/analyses/{state['analyses'][0]}").json()
        assert len(report["slices"]) == len(files)


def test_late_instances_reanalyse_the_whole_series_and_say_so(make_client, series_dirs) -> None:
    files = series_files(series_dirs[2])
    half = len(files) // 2
    with make_client() as client:
        series_uid = series_uid_of(files)
        assert stow(client, files[:half]).status_code == 200
        first = settled(client, series_uid)
        assert first["analysed_instances"] == half
        assert stow(client, files[half:]).status_code == 200
        second = settled(client, series_uid, analyses=2)
        assert second["state"] == "done" and second["analysed_instances"] == len(files)
        report = client.get(f"/v1/analyses/{second['analyses'][-1]}").json()
        assert len(report["slices"]) == len(files)
        assert any(first["analyses"][0] in w and "supersedes" in w for w in report["warnings"])
        # The PACS sends the whole series again: identical bytes change nothing.
        assert stow(client, files).status_code == 200
        time.sleep(1.0)
        assert client.get(f"/v1/series/{series_uid}").json()["analyses"] == second["analyses"]


def test_instances_the_service_cannot_keep_are_refused_with_reasons(make_client,
                                                                     series_dirs) -> None:
    files = series_files(series_dirs[3])
    ct = pydicom.dcmread(io.BytesIO(files[0][1]))
    ct.Modality, ct.SOPClassUID = "CT", "1.2.840.10008.5.1.4.1.1.2"
    ct.file_meta.MediaStorageSOPClassUID = ct.SOPClassUID
    ct.SOPInstanceUID = ct.file_meta.MediaStorageSOPInstanceUID = pydicom.uid.generate_uid()
    mixed = [*files, ("ct.dcm", to_bytes(ct)), ("junk.dcm", b"not dicom at all")]
    with make_client() as client:
        r = stow(client, mixed)
        assert r.status_code == 202, r.text
        assert len(_referenced(r.json())) == len(files)
        assert sorted(_failure_reasons(r.json())) == sorted([0x0122, 0xC000])
        assert "warning" in r.headers
        r = stow(client, [("junk.dcm", b"junk")])
        assert r.status_code == 409 and _failure_reasons(r.json()) == [0xC000]
        r = stow(client, files[:1], path="/dicomweb/studies/1.2.3.4")
        assert r.status_code == 409 and _failure_reasons(r.json()) == [0xA900]
        for content_type in ("application/zip", "multipart/related; boundary=x"):
            r = client.post("/dicomweb/studies", content=related_body(files[:1]),
                            headers={"Content-Type": content_type})
            assert 400 <= r.status_code < 500 and r.json()["error"]["code"], content_type
        r = client.post("/dicomweb/studies", content=b"", headers={"Content-Type": RELATED})
        assert r.status_code == 400 and r.json()["error"]["code"] == "empty_body"


def test_a_series_that_cannot_be_analysed_is_marked_failed_with_the_reason(
        make_client, series_dirs) -> None:
    files = series_files(series_dirs[4])[:1]  # a single slice
    with make_client() as client:
        assert stow(client, files).status_code == 200
        state = settled(client, series_uid_of(files))
        assert state["state"] == "failed" and state["analyses"] == []
        assert state["error"]["code"] and "slice" in state["error"]["message"]
        assert client.get("/v1/series/1.2.3").status_code == 404
        assert client.get("/v1/series/..%2F..%2Fetc").status_code == 404


def test_received_series_survive_a_restart_before_their_quiet_period(make_client,
                                                                     series_dirs) -> None:
    files = series_files(series_dirs[5])
    with make_client(STOW_QUIET_PERIOD_S="3600") as client:
        assert stow(client, files).status_code == 200
        assert client.get(f"/v1/series/{series_uid_of(files)}").json()["state"] == "waiting"
    with make_client(STOW_QUIET_PERIOD_S="0.1") as client:
        state = settled(client, series_uid_of(files))
        assert state["state"] == "done" and state["analysed_instances"] == len(files)


class FakeDicomweb:
    """A STOW-RS destination that fails its first ``failures`` requests with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        self.received: list[pydicom.Dataset] = []
        self.spool_dir = Path(tempfile.mkdtemp(prefix="fake-dicomweb-"))
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["Content-Length"]))
                fake.requests += 1
                if fake.requests <= fake.failures:
                    self.send_response(503)
                    self.end_headers()
                    return
                with Spool(fake.spool_dir) as spool:
                    body_path = spool.new_path()
                    body_path.write_bytes(body)
                    parts = stow_parts(self.headers["Content-Type"], body_path,
                                       Limits(2**30, 100, 2**30), spool)
                    datasets = [pydicom.dcmread(p.path) for p in parts]
                fake.received.extend(datasets)
                answer = json.dumps({REFERENCED: {"vr": "SQ", "Value": [
                    {SOP_INSTANCE: {"vr": "UI", "Value": [str(d.SOPInstanceUID)]}}
                    for d in datasets]}}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/dicom+json")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/dicom-web"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> FakeDicomweb:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_seg_and_sr_are_pushed_back_with_retries_and_the_state_is_on_the_report(
        make_client, series_dirs) -> None:
    files = series_files(series_dirs[0])
    with FakeDicomweb(failures=2) as destination, make_client(
            DICOMWEB_STORE_URL=destination.url, STORE_BACK_FIRST_RETRY_S="0.1") as client:
        r = client.post("/v1/analyses", files=multipart(files))
        assert r.status_code == 201
        assert r.json()["store_back"]["status"] in ("pending", "retrying", "done")
        location = r.headers["location"]
        done = wait_for(lambda: (client.get(location).json()["store_back"]["status"] == "done"
                                 and client.get(location).json()), what="store-back")
        assert done["store_back"]["attempts"] == 3 and done["store_back"]["last_error"] is None
        assert destination.requests == 3
        pushed = {str(d.SOPInstanceUID): d for d in destination.received}
        assert set(pushed) == {done["seg_sop_instance_uid"], done["sr_sop_instance_uid"]}
        seg = hd.seg.Segmentation.from_dataset(pushed[done["seg_sop_instance_uid"]])
        assert seg.StudyInstanceUID == done["study_instance_uid"]
        # Nothing left to push: asking again is a clear 409, not a second push.
        r = client.post(f"{location}/store-back")
        assert r.status_code == 409 and r.json()["error"]["code"] == "nothing_to_push"


def test_a_failing_destination_is_recorded_and_never_blocks_the_answer(make_client,
                                                                     series_dirs) -> None:
    files = series_files(series_dirs[1])
    with FakeDicomweb(failures=10**6) as destination, make_client(
            DICOMWEB_STORE_URL=destination.url, STORE_BACK_FIRST_RETRY_S="0.05",
            STORE_BACK_MAX_RETRY_S="0.2") as client:
        r = client.post("/v1/analyses", files=multipart(files))
        assert r.status_code == 201
        location = r.headers["location"]
        state = wait_for(lambda: (lambda s: s if s["attempts"] >= 3 else None)(
            client.get(location).json()["store_back"]), what="three failed pushes")
        assert state["status"] == "retrying" and "503" in state["last_error"]
        assert client.post(f"{location}/store-back").status_code == 202


@pytest.mark.parametrize("uid", ["..", ".", "1..2", "1.02", ".1", "1.", "1.2.a", "9" * 65])
def test_a_uid_that_is_not_one_never_becomes_a_path(make_client, series_dirs, tmp_path,
                                                    uid) -> None:
    from service.pacs.inbox import is_uid

    assert not is_uid(uid)
    files = series_files(series_dirs[0])[:3]
    changed = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.SeriesInstanceUID = uid
        changed.append((name, to_bytes(ds)))
    with make_client() as client:
        r = stow(client, changed)
        assert r.status_code == 409, r.text  # none kept
    data_dir = tmp_path / "data"
    assert not [p for p in data_dir.rglob("*.dcm")], "an instance was written"
    assert is_uid("1.2.840.10008.5.1.4.1.1.4") and is_uid("0.1") and is_uid("2.25.0")


def test_a_request_slower_than_the_quiet_period_waits_for_its_last_instance(
        tmp_path, series_dirs) -> None:
    """Each instance is stamped as it is kept: a STOW-RS request that takes longer than the
    quiet period is quiet from its last instance, never claimed half-received."""
    from service.dicom.ingest import Blob
    from service.pacs.inbox import Inbox
    from service.pacs.stow import receive

    files = series_files(series_dirs[2])[:4]
    blobs = []
    for name, data in files:
        (tmp_path / name).write_bytes(data)
        blobs.append(Blob(name, tmp_path / name))
    seconds = iter(range(1000, 1100, 5))  # each instance kept 5 s after the one before
    inbox = Inbox(tmp_path / "inbox")
    outcome = receive(blobs, None, inbox, clock=lambda: float(next(seconds)))
    assert len(outcome.stored) == len(files) and not outcome.refused
    last, quiet = 1015.0, 10.0
    assert inbox.due(last + quiet / 2, quiet) == []  # the request began 15 s before
    assert inbox.due(last + quiet, quiet) == [series_uid_of(files)]
    inbox.close()
