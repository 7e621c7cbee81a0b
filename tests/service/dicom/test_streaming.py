"""Request bodies go to disk, not memory; received series are bounded; nothing is left behind."""

from __future__ import annotations

import asyncio
import io
import tracemalloc
import zipfile
from pathlib import Path

import pydicom
import pytest

from service.dicom.ingest import Limits, Spool, clear_spools, split_body, spool_capped, stow_parts
from service.errors import InputError
from tests.conftest import (
    RELATED,
    multipart,
    related_body,
    series_files,
    series_uid_of,
    settled,
    stow,
)

LIMITS = Limits(2**30, 1000, 2**30)
BIG = 48 * 2**20  # a body far larger than what parsing it may hold


async def _chunks(data: bytes, size: int = 64 * 1024):
    for start in range(0, len(data), size):
        yield data[start:start + size]


def _peak_allocated(function, *args) -> tuple[object, int]:
    tracemalloc.start()
    try:
        result = function(*args)
        return result, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _body(spool: Spool, data: bytes) -> Path:
    path = spool.new_path()
    path.write_bytes(data)
    return path


def test_a_body_is_written_to_disk_and_refused_past_its_limit(tmp_path) -> None:
    with Spool(tmp_path) as spool:
        path = asyncio.run(spool_capped(_chunks(b"x" * 300_000), 300_000, None, spool))
        assert path.read_bytes() == b"x" * 300_000 and path.parent == spool.folder
        with pytest.raises(InputError) as refused:
            asyncio.run(spool_capped(_chunks(b"x" * 300_001), 300_000, None, spool))
        assert refused.value.code == "payload_too_large"
        # The refused body stopped at the chunk that crossed the limit.
        assert max(p.stat().st_size for p in spool.folder.iterdir()) <= 300_000
    assert not spool.folder.exists()


@pytest.mark.parametrize("kind", ["form-data", "related", "zip"])
def test_parsing_a_large_body_holds_a_chunk_not_the_body(tmp_path, kind) -> None:
    payload = bytes(range(256)) * (BIG // 256)
    if kind == "form-data":
        boundary = "b0undary"
        data = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"files\"; "
                f"filename=\"a.dcm\"\r\nContent-Type: application/dicom\r\n\r\n").encode() \
            + payload + f"\r\n--{boundary}--\r\n".encode()
        content_type = f"multipart/form-data; boundary={boundary}"
    elif kind == "related":
        data, content_type = related_body([("a", payload)]), RELATED
    else:
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr("series/a.dcm", payload)
        data, content_type = buffer.getvalue(), "application/zip"
    with Spool(tmp_path) as spool:
        body = _body(spool, data)
        del data
        blobs, peak = _peak_allocated(split_body, content_type, body, LIMITS, spool)
        assert [blob.size for blob in blobs] == [len(payload)]
        assert blobs[0].read_bytes() == payload
        # Chunks of 1 MiB at a time (a few in flight), never the 48 MiB body.
        assert peak < 8 * 2**20, f"{peak / 2**20:.1f} MiB allocated while parsing"


def test_stow_parts_are_files_of_the_spool(tmp_path) -> None:
    with Spool(tmp_path) as spool:
        body = _body(spool, related_body([("a", b"first"), ("b", b"second")]))
        parts = stow_parts(RELATED, body, LIMITS, spool)
        assert [p.read_bytes() for p in parts] == [b"first", b"second"]
        assert all(p.path.parent == spool.folder for p in parts)


def test_a_crash_leaves_no_spool_behind_after_a_restart(tmp_path) -> None:
    left = Spool(tmp_path)
    (left.new_path()).write_bytes(b"a body of a request that never finished")
    clear_spools(tmp_path)
    assert not left.folder.exists()


def test_no_request_leaves_files_in_the_spool(make_client, series_dirs, tmp_path) -> None:
    files = series_files(series_dirs[0])
    spool = tmp_path / "data" / "spool"
    with make_client() as client:
        assert client.post("/v1/analyses", files=multipart(files)).status_code == 201
        assert client.post("/v1/analyses", files=multipart(files[:1])).status_code == 422
        assert client.post("/v1/analyses", content=b"PK\x05\x06" + bytes(18),
                           headers={"Content-Type": "application/zip"}).status_code == 400
        assert stow(client, files).status_code == 200
        assert list(spool.iterdir()) == []


def test_a_received_series_past_max_files_is_refused_per_instance(make_client,
                                                                   series_dirs) -> None:
    files = series_files(series_dirs[0])
    with make_client(MAX_FILES="4", STOW_QUIET_PERIOD_S="3600") as client:
        first = stow(client, files[:4])
        assert first.status_code == 200
        more = stow(client, files[4:6])
        assert more.status_code == 409
        reasons = [item["00081197"]["Value"][0]
                   for item in more.json()["00081198"]["Value"]]
        assert reasons == [0xA700, 0xA700]
        # The same instance again is not a new one: still accepted.
        assert stow(client, files[:1]).status_code == 200


def test_a_received_series_larger_than_an_analysis_may_read_fails_with_the_reason(
        make_client, series_dirs) -> None:
    files = series_files(series_dirs[0])
    total = sum(len(data) for _, data in files)
    with make_client(MAX_UNZIPPED_BYTES=str(total - 1)) as client:
        assert stow(client, files).status_code == 200
        state = settled(client, series_uid_of(files))
        assert state["state"] == "failed" and state["error"]["code"] == "series_too_large"
        assert state["analyses"] == []


def test_an_upload_over_the_pixel_limit_is_413_and_reading_stops_there(make_client, series_dirs,
                                                                        monkeypatch) -> None:
    from service.dicom import instances

    files = series_files(series_dirs[0])
    first = pydicom.dcmread(io.BytesIO(files[0][1]))
    per_slice = int(first.Rows) * int(first.Columns)
    read = []
    original = instances.read_dataset
    monkeypatch.setattr(instances, "read_dataset",
                        lambda blob, *rest: read.append(blob) or original(blob, *rest))
    with make_client(MAX_SERIES_PIXELS=str(3 * per_slice)) as client:
        r = client.post("/v1/analyses", files=multipart(files))
        assert r.status_code == 413 and r.json()["error"]["code"] == "series_too_large"
        assert len(read) == 4 < len(files)
        assert client.post("/v1/analyses", files=multipart(files[:3])).status_code != 413
