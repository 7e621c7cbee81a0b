"""Over 300 malformed requests made from valid phantom series: never a 5xx.

Every request whose input is wrong by construction must get a 4xx with the
contract's error body. Random byte flips are different: a flipped byte in a
patient-name string or a pixel value leaves a valid DICOM file, so those
requests may also succeed (201 with a report); what they must never do is
fail with a 5xx or hang. Afterwards the service still analyses a valid series.
"""

from __future__ import annotations

import io
import random
import struct
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.uid import RLELossless

from service.api.app import create_app
from service.config import get_settings
from tests.conftest import multipart, related_body, series_files, to_bytes

FAILED_SOP = "00081198"


@dataclass(frozen=True)
class Case:
    name: str
    send: Callable[[TestClient], object]
    may_succeed: bool = False  # random corruption may leave a valid series


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    import os

    saved = {k: os.environ.get(k) for k in ("MAX_UNZIPPED_BYTES", "MAX_REQUEST_BYTES",
                                             "DATA_DIR")}
    os.environ.update({"MAX_UNZIPPED_BYTES": str(20 * 2**20), "MAX_REQUEST_BYTES": str(30 * 2**20),
                       "DATA_DIR": str(tmp_path_factory.mktemp("fuzz"))})
    get_settings.cache_clear()
    try:
        # A server exception must come back as the 500 a client would see, named by case.
        with TestClient(create_app(), raise_server_exceptions=False) as c:
            yield c
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        get_settings.cache_clear()


def _post_files(files):
    return lambda c: c.post("/v1/analyses", files=multipart(files))


def _post_body(body: bytes, content_type: str | None, path: str = "/v1/analyses"):
    headers = {"Content-Type": content_type} if content_type else {}
    return lambda c: c.post(path, content=body, headers=headers)


def _edit(files, index: int, edit) -> list[tuple[str, bytes]]:
    out = list(files)
    ds = pydicom.dcmread(io.BytesIO(out[index][1]))
    edit(ds)
    out[index] = (out[index][0], to_bytes(ds))
    return out


def _zip(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
        for name, data in members.items():
            z.writestr(name, data)
    return buffer.getvalue()


def _patch_value(data: bytes, keyword: str, value: bytes) -> bytes:
    """Rewrite one element's value bytes in place (explicit VR little endian, short form),
    as a broken writer would: the VR stays, the value no longer fits it."""
    tag = pydicom.datadict.tag_for_keyword(keyword)
    vr = pydicom.datadict.dictionary_VR(tag).encode()
    header = struct.pack("<HH", tag >> 16, tag & 0xFFFF) + vr
    at = data.find(header, 132 + 12)
    assert at > 0, keyword
    (length,) = struct.unpack("<H", data[at + 6:at + 8])
    value = value + (b" " if len(value) % 2 else b"")
    return data[:at + 6] + struct.pack("<H", len(value)) + value + data[at + 8 + length:]


def _rle(files) -> list[tuple[str, bytes]]:
    out = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.compress(RLELossless)
        out.append((name, to_bytes(ds)))
    return out


def _declared_length_lie(data: bytes) -> bytes:
    """An element before the pixel data claims ~4 GiB: it swallows the rest of the file.

    (A lie on the pixel data itself is harmless: it is the last element, pydicom reads
    what is there and the image is complete.)
    """
    ds = pydicom.dcmread(io.BytesIO(data))
    block = ds.private_block(0x0009, "FUZZ", create=True)
    block.add_new(0x01, "OB", b"\x00" * 16)
    raw = bytearray(to_bytes(ds))
    header = struct.pack("<HH", 0x0009, 0x1001) + b"OB"
    at = raw.find(header, 132)
    assert at > 0 and ds.file_meta.TransferSyntaxUID.is_little_endian
    raw[at + 8:at + 12] = struct.pack("<I", 0xFFFFFFF0)  # tag, VR, 2 reserved, length
    return bytes(raw)


def cases(series) -> Iterator[Case]:
    rng = random.Random(20261124)
    files = series_files(series[0])
    other = series_files(series[1])
    first = files[0][1]

    for cut in sorted(rng.sample(range(1, len(first) - 1), 36)) + [0, 132]:
        yield Case(f"truncated at {cut}", _post_files([(files[0][0], first[:cut]),
                                                       *files[1:]]))
    for k in range(45):
        raw = bytearray(first)
        for _ in range(rng.randint(1, 6)):
            at = rng.randrange(128, min(len(raw), 2000))
            raw[at] ^= 1 << rng.randrange(8)
        yield Case(f"header flips {k}", _post_files([(files[0][0], bytes(raw)), *files[1:]]),
                   may_succeed=True)
    rle = _rle(files[:4])
    for k in range(20):
        raw = bytearray(rle[1][1])
        for _ in range(rng.randint(1, 20)):
            at = rng.randrange(len(raw) - 4000, len(raw))
            raw[at] = rng.randrange(256)
        yield Case(f"RLE pixel flips {k}", _post_files([rle[0], (rle[1][0], bytes(raw)),
                                                        *rle[2:]]), may_succeed=True)
    for keyword, raw in (("PixelSpacing", b"abc\\def"), ("PixelSpacing", b"0\\0"),
                         ("ImagePositionPatient", b"1\\2"), ("ImageOrientationPatient", b"x"),
                         ("ImageOrientationPatient", b"0\\0\\0\\0\\0\\0"),
                         ("Rows", b"\xff"), ("Columns", b"\x00\x00"),
                         ("BitsAllocated", b"\x07\x00"), ("SamplesPerPixel", b"\x03\x00"),
                         ("PixelSpacing", b"-1\\-1")):
        yield Case(f"bad {keyword} {raw!r}",
                   _post_files([(n, _patch_value(d, keyword, raw)) for n, d in files]))
    for keyword in ("ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing",
                    "PixelData", "SOPInstanceUID", "SeriesInstanceUID", "StudyInstanceUID",
                    "Rows", "Modality", "SOPClassUID", "BitsAllocated", "FrameOfReferenceUID"):
        yield Case(f"missing {keyword}",
                   _post_files([_edit(files, i, lambda ds, k=keyword: delattr(ds, k))[i]
                                for i in range(len(files))]))
    yield Case("two series", _post_files(files + other))
    yield Case("two series, one slice each", _post_files([files[0], other[0]]))
    for k, orientation in enumerate(([0, 1, 0, 1, 0, 0], [1, 0, 0, 0, 0, 1],
                                     [0.6, 0.8, 0, -0.8, 0.6, 0])):
        yield Case(f"mixed orientation {k}", _post_files(_edit(
            files, 1, lambda ds, o=orientation: setattr(ds, "ImageOrientationPatient", o))))
    yield Case("mixed pixel spacing", _post_files(_edit(
        files, 2, lambda ds: setattr(ds, "PixelSpacing", [0.9, 0.9]))))
    yield Case("mixed study", _post_files(_edit(
        files, 2, lambda ds: setattr(ds, "StudyInstanceUID", pydicom.uid.generate_uid()))))
    for n in (2, 3, 5, 8):
        yield Case(f"one slice sent {n} times", _post_files([files[0]] * n))
    for k in range(len(series)):
        yield Case(f"single slice {k}", _post_files(series_files(series[k])[:1]))
    for k in range(3):
        yield Case(f"declared length lie {k}", _post_files(
            [(files[k][0], _declared_length_lie(files[k][1])), *files[:k], *files[k + 1:]]))
    for declared in ("999999999999", "-5", "abc", str(31 * 2**20)):
        yield Case(f"Content-Length {declared}", lambda c, d=declared: c.post(
            "/v1/analyses", content=b"x", headers={"Content-Type": "application/zip",
                                                   "Content-Length": d}))
    bomb = _zip({f"zero{k}.dcm": bytes(8 * 2**20) for k in range(3)})
    yield Case("zip bomb", _post_body(bomb, "application/zip"))
    yield Case("zip bomb in a form", lambda c: c.post("/v1/analyses", files=[
        ("files", ("b.zip", bomb, "application/zip"))]))
    yield Case("nested zip", _post_body(_zip({"inner.zip": _zip(dict(files))}),
                                        "application/zip"))
    yield Case("zip of junk", _post_body(_zip({"a.dcm": b"junk", "b.dcm": b"more"}),
                                         "application/zip"))
    yield Case("corrupt zip", _post_body(b"PK\x03\x04" + bytes(100), "application/zip"))
    for evil in ("../x.dcm", "/abs.dcm", "C:/x.dcm", "a/../../b.dcm", "..\\x.dcm"):
        yield Case(f"zip traversal {evil}", _post_body(_zip({evil: first,
                                                             "ok.dcm": files[1][1]}),
                                                       "application/zip"))
    for content_type in ("application/zip", "multipart/related; boundary=x",
                         "application/dicom", None, "multipart/form-data; boundary=x"):
        yield Case(f"empty body {content_type}", _post_body(b"", content_type))
    body = related_body(files)
    for content_type in ("text/plain", "application/json", "image/png", None,
                         "multipart/form-data", "multipart/related",
                         "multipart/form-data; boundary=nope", "application/octet-stream",
                         "video/mp4", "multipart/mixed; boundary=dicomboundary"):
        yield Case(f"content type {content_type}", _post_body(body, content_type))
    for name in ("unet", "CASCADE-UNET", "none", " ", "enet;drop", "../enet", "enet-raw2",
                 "x" * 300, "cascade-unet\x00", "%00"):
        yield Case(f"pipeline {name!r}", lambda c, n=name: c.post(
            "/v1/analyses", params={"pipeline": n}, files=multipart(files[:2])))
    for path in ("/v1/analyses/" + "0" * 32, "/v1/analyses/xyz/seg", "/v1/analyses/../../etc",
                 "/v1/analyses/" + "f" * 32 + "/sr", "/v1/analyses/" + "a" * 32 + "/viewer",
                 "/v1/analyses/" + "b" * 32 + "/overlay/0.png", "/v1/series/1.2.3",
                 "/v1/series/not-a-uid", "/v1/analyses/%2e%2e%2f", "/v2/analyses"):
        yield Case(f"unknown {path}", lambda c, p=path: c.get(p))
    for content_type in ("application/json", "multipart/form-data; boundary=x", None,
                         'multipart/related; type="application/dicom"'):
        yield Case(f"STOW-RS content type {content_type}",
                   _post_body(body if content_type else b"", content_type, "/dicomweb/studies"))
    for k in range(6):
        mangled = bytearray(body)
        mangled[rng.randrange(len(mangled))] = rng.randrange(256)
        yield Case(f"multipart framing {k}", _post_body(
            bytes(mangled).replace(b"--dicomboundary--", b""),
            'multipart/related; type="application/dicom"; boundary=dicomboundary'),
            may_succeed=True)


def _invalid_value(data: bytes, keyword: str, value) -> bytes:
    from pydicom import config

    ds = pydicom.dcmread(io.BytesIO(data))
    mode = config.settings.writing_validation_mode
    config.settings.writing_validation_mode = config.IGNORE
    try:
        setattr(ds, keyword, value)
        return to_bytes(ds)
    finally:
        config.settings.writing_validation_mode = mode


def _with_uid(data: bytes, keyword: str, uid: str) -> bytes:
    return _invalid_value(data, keyword, uid)


def _noise(data: bytes, seed: int) -> bytes:
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = ds.pixel_array
    ds.PixelData = random.Random(seed).randbytes(pixels.nbytes)
    return to_bytes(ds)


def more_cases(series) -> Iterator[Case]:
    """The hardening pass's cases: invalid values, zips, overlays, UIDs, what is not LGE."""
    rng = random.Random(20261201)
    files = series_files(series[0])
    second = files[1][1]
    for keyword, value in (("PatientBirthDate", "1901-02-03"),
                           ("PatientBirthDate", "19010231x"),
                           ("PatientName", "Bad^Name\\Second"), ("PatientID", "X" * 70),
                           ("StudyDate", "2026/12/01"), ("StudyTime", "25:61"),
                           ("PatientSex", "UNKNOWN-SEX"), ("AccessionNumber", "A" * 20),
                           ("ReferringPhysicianName", "a\\b\\c"), ("StudyID", "S" * 30)):
        yield Case(f"invalid {keyword}", _post_files(
            [(n, _invalid_value(d, keyword, value)) for n, d in files]))
    empty_zip = b"PK\x05\x06" + bytes(18)
    yield Case("empty zip", _post_body(empty_zip, "application/zip"))
    yield Case("JPEG as a zip", _post_body(b"\xff\xd8\xff\xe0" + bytes(200),
                                           "application/zip"))
    yield Case("empty zip in a form", lambda c: c.post("/v1/analyses", files=[
        ("files", ("e.zip", empty_zip, "application/zip"))]))
    stored: dict[str, str] = {}

    def overlay(query: str):
        def send(c):
            if "id" not in stored:
                stored["id"] = c.post("/v1/analyses", files=multipart(files)).json()["id"]
            return c.get(f"/v1/analyses/{stored['id']}/overlay/0.png?{query}")
        return send

    for query in ("scale=20", "scale=0", "scale=-1", "scale=abc", "window=abc", "level=x",
                  "window=-5", "myocardium=maybe", "scar=2", "scale=1e9"):
        yield Case(f"overlay {query}", overlay(query))
    for uid in ("..", ".", "1..2", "1.02", "a.b", "1." + "2" * 70):
        yield Case(f"STOW series UID {uid[:12]}", _post_body(
            related_body([(n, _with_uid(d, "SeriesInstanceUID", uid)) for n, d in files[:2]]),
            'multipart/related; type="application/dicom"; boundary=dicomboundary',
            "/dicomweb/studies"))
        yield Case(f"STOW SOP UID {uid[:12]}", _post_body(
            related_body([(files[0][0], _with_uid(files[0][1], "SOPInstanceUID", uid))]),
            'multipart/related; type="application/dicom"; boundary=dicomboundary',
            "/dicomweb/studies"))
    for seed in range(6):
        yield Case(f"noise stack {seed}", _post_files([(n, _noise(d, seed)) for n, d in files]))
    for description in ("cine SAX", "T1 MOLLI map", "STIR sax", "T2 map", "perfusion rest",
                        "phase contrast flow"):
        yield Case(f"series described {description!r}", _post_files(
            [(n, _invalid_value(_invalid_value(d, "SeriesDescription", description),
                                "SequenceName", "tfi2d1")) for n, d in files]))
    for keyword, value in (("BodyPartExamined", "BRAIN"), ("EchoTime", 90.0),
                           ("ScanningSequence", "SE")):
        yield Case(f"not LGE: {keyword}", _post_files(
            [(n, _invalid_value(d, keyword, value)) for n, d in files]))
    for path in ("/v1/analyses/" + "0" * 32, "/v1/analyses/not-an-id", "/v1/analyses/..",
                 "/v1/analyses/%2e%2e"):
        yield Case(f"DELETE {path}", lambda c, p=path: c.delete(p))
    for method in ("put", "patch"):
        yield Case(f"{method.upper()} /v1/analyses", lambda c, m=method: c.request(
            m.upper(), "/v1/analyses", content=b"x"))
    for cut in sorted(rng.sample(range(1, len(second) - 1), 20)):
        yield Case(f"second slice truncated at {cut}", _post_files(
            [files[0], (files[1][0], second[:cut]), *files[2:]]))
    for k in range(20):
        raw = bytearray(second)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(128, min(len(raw), 1500))
            raw[at] ^= 1 << rng.randrange(8)
        yield Case(f"second slice header flips {k}", _post_files(
            [files[0], (files[1][0], bytes(raw)), *files[2:]]), may_succeed=True)
    for junk in ('multipart/form-data; boundary=""', "multipart/related; type=",
                 "application/zip;;", "multipart/form-data; boundary=" + "b" * 300,
                 "application/dicom; charset=\x00"):
        yield Case(f"content type {junk[:30]!r}", _post_body(b"--x\r\n", junk))


@pytest.mark.slow
def test_malformed_requests_get_4xx_never_5xx(client, series_dirs) -> None:
    all_cases = list(cases(series_dirs)) + list(more_cases(series_dirs))
    assert len(all_cases) >= 300
    failures = []
    for case in all_cases:
        r = case.send(client)
        if case.may_succeed and r.status_code == 201:
            assert r.json()["scar_percent"] >= 0
            if r.json().get("id"):  # an upload (not STOW-RS): its SEG, encoded after the 201
                seg = client.get(f"/v1/analyses/{r.json()['id']}/seg")
                if seg.status_code != 200:
                    failures.append(f"{case.name}: 201, then its SEG {seg.status_code} "
                                    f"{seg.text[:200]}")
            continue
        ok = 400 <= r.status_code < 500
        try:
            body = r.json()
            # STOW-RS answers refusals in DICOM JSON: a FailedSOPSequence with reasons.
            stow_refusal = case.name.startswith("STOW") and FAILED_SOP in body
            ok = ok and (stow_refusal or set(body) == {"error"} and body["error"]["code"]
                         and body["error"]["message"])
        except ValueError:
            ok = False
        if not ok:
            failures.append(f"{case.name}: {r.status_code} {r.text[:200]}")
    assert not failures, "\n".join(failures)
    # Still serving: a valid series is analysed afterwards.
    r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
    assert r.status_code == 201
