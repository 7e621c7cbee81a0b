"""Each kind of bad input gets its own 4xx code and the contract's error body, never a 5xx."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    JPEG2000Lossless,
    RLELossless,
)

from service.api.app import create_app
from tests.conftest import VOLATILE, multipart, series_files, to_bytes


def edited(series_dir: Path, edit, only_first: bool = False) -> list[tuple[str, bytes]]:
    out = []
    for k, (name, data) in enumerate(series_files(series_dir)):
        ds = pydicom.dcmread(io.BytesIO(data))
        if not only_first or k == 0:
            edit(ds)
        out.append((name, to_bytes(ds)))
    return out


def assert_error(r, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and body["error"]["code"] == code, body
    assert body["error"]["message"]


def _delete(keyword: str):
    def edit(ds):
        delattr(ds, keyword)
    return edit


def _set_ct(ds):
    ds.Modality = "CT"
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.file_meta.MediaStorageSOPClassUID = ds.SOPClassUID


def _tilt(ds):
    ds.ImageOrientationPatient = [0.0, 1.0, 0.0, 0.0, 0.0, -1.0]


def _other_spacing(ds):
    ds.PixelSpacing = [float(ds.PixelSpacing[0]) * 1.5, float(ds.PixelSpacing[1]) * 1.5]


def _unknown_syntax(ds):
    ds.PixelData = encapsulate([ds.PixelData])
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"  # MPEG2: no decoder here


@pytest.mark.parametrize(("edit", "only_first", "status", "code"), [
    (_set_ct, False, 422, "not_mr"),
    (_delete("PixelData"), False, 422, "no_pixel_data"),
    (_delete("ImagePositionPatient"), True, 422, "missing_geometry"),
    (_delete("PixelSpacing"), False, 422, "missing_geometry"),
    (_delete("FrameOfReferenceUID"), False, 422, "missing_geometry"),
    (_tilt, True, 422, "inconsistent_geometry"),
    (_other_spacing, True, 422, "inconsistent_geometry"),
    (_unknown_syntax, True, 415, "unsupported_transfer_syntax"),
], ids=["not-mr", "no-pixels", "no-position", "no-spacing", "no-frame-of-reference",
        "mixed-orientation", "mixed-spacing", "unsupported-syntax"])
def test_bad_series(client, series_dirs, edit, only_first, status, code) -> None:
    files = edited(series_dirs[0], edit, only_first)
    assert_error(client.post("/v1/analyses", files=multipart(files)), status, code)


def test_not_dicom_truncated_and_empty(client, series_dirs) -> None:
    files = series_files(series_dirs[0])
    assert_error(client.post("/v1/analyses", files=multipart([("a.txt", b"hello" * 50)])),
                 400, "not_dicom")
    name, data = files[0]
    truncated = [(name, data[: len(data) // 2]), *files[1:]]
    assert_error(client.post("/v1/analyses", files=multipart(truncated)), 400, "corrupt_dicom")
    header_only = [(name, data[:200]), *files[1:]]
    r = client.post("/v1/analyses", files=multipart(header_only))
    assert r.status_code == 400 and r.json()["error"]["code"] in {"corrupt_dicom", "not_dicom"}
    assert_error(client.post("/v1/analyses", content=b"",
                             headers={"content-type": "application/zip"}), 400, "empty_body")


def test_two_series_and_a_single_slice(client, series_dirs) -> None:
    both = series_files(series_dirs[0]) + series_files(series_dirs[1])
    assert_error(client.post("/v1/analyses", files=multipart(both)), 422, "multiple_series")
    one = series_files(series_dirs[0])[:1]
    assert_error(client.post("/v1/analyses", files=multipart(one)), 422, "single_slice")


def test_duplicates_are_dropped_with_a_warning(client, series_dirs) -> None:
    files = series_files(series_dirs[2])
    r = client.post("/v1/analyses", files=multipart(files + files[:2]))
    assert r.status_code == 201, r.text
    assert len(r.json()["slices"]) == len(files)
    assert sum("more than once" in w for w in r.json()["warnings"]) == 2


def test_content_type_pipeline_and_zip_rules(client, series_dirs) -> None:
    files = series_files(series_dirs[0])
    assert_error(client.post("/v1/analyses", content=b"x", headers={"content-type": "text/plain"}),
                 415, "unsupported_media_type")
    assert_error(client.post("/v1/analyses?pipeline=unet3000", files=multipart(files)), 400,
                 "unknown_pipeline")
    evil = io.BytesIO()
    with zipfile.ZipFile(evil, "w") as z:
        z.writestr("../../etc/evil.dcm", files[0][1])
    assert_error(client.post("/v1/analyses", content=evil.getvalue(),
                             headers={"content-type": "application/zip"}),
                 400, "zip_path_traversal")
    assert_error(client.post("/v1/analyses", content=b"PK\x03\x04garbage",
                             headers={"content-type": "application/zip"}), 400, "bad_zip")
    assert_error(client.post("/v1/analyses", content=b"--x\r\n\r\n",
                             headers={"content-type": "multipart/related"}), 400, "bad_multipart")


def test_limits_are_settings(monkeypatch, series_dirs) -> None:
    files = series_files(series_dirs[0])
    monkeypatch.setenv("MAX_FILES", "3")
    monkeypatch.setenv("MAX_REQUEST_BYTES", str(4 * 2**20))
    monkeypatch.setenv("MAX_UNZIPPED_BYTES", str(2**20))
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("a.dcm", b"\0" * (3 * 2**20))
    with TestClient(create_app()) as c:
        assert_error(c.post("/v1/analyses", files=multipart(files)), 413, "too_many_files")
        assert_error(c.post("/v1/analyses", content=b"\0" * (5 * 2**20),
                            headers={"content-type": "application/zip"}),
                     413, "payload_too_large")
        assert_error(c.post("/v1/analyses", content=bomb.getvalue(),
                            headers={"content-type": "application/zip"}), 413, "zip_too_large")


@pytest.mark.parametrize("syntax", [RLELossless, JPEG2000Lossless, DeflatedExplicitVRLittleEndian],
                         ids=["rle", "jpeg2000-lossless", "deflated"])
def test_compressed_series_give_the_uncompressed_report(client, series_dirs, syntax) -> None:
    plain = client.post("/v1/analyses", files=multipart(series_files(series_dirs[3])))

    def compress(ds):
        if syntax == DeflatedExplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = syntax
        else:
            ds.compress(syntax, generate_instance_uid=False)

    r = client.post("/v1/analyses", files=multipart(edited(series_dirs[3], compress)))
    assert plain.status_code == r.status_code == 201, r.text
    strip = lambda rep: {k: v for k, v in rep.items() if k not in VOLATILE}  # noqa: E731
    assert strip(r.json()) == strip(plain.json())


def _gdcm_transcode(data: bytes, syntax: str, tmp: Path) -> bytes:
    """The same instance with its pixel data re-encoded by GDCM (pydicom has no JPEG-LS or
    JPEG encoder here). Only the encoded pixel data is taken from GDCM: its writer would
    also turn MR Image into Enhanced MR."""
    gdcm = pytest.importorskip("gdcm")
    source, target = tmp / "in.dcm", tmp / "out.dcm"
    source.write_bytes(data)
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.GetTSType(syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    encoded = pydicom.dcmread(target)
    ds = pydicom.dcmread(io.BytesIO(data))
    ds.file_meta.TransferSyntaxUID = syntax
    ds.PixelData = encoded.PixelData
    ds["PixelData"].VR = "OB"
    return to_bytes(ds)


def test_several_enhanced_mr_instances_are_a_clear_422(client, series_dirs, tmp_path) -> None:
    """GDCM's writer turns each slice into a one-frame Enhanced MR instance; a SEG cannot
    reference several multi-frame images (highdicom), and the answer says what to send."""
    gdcm = pytest.importorskip("gdcm")
    files = []
    for k, (name, data) in enumerate(series_files(series_dirs[3])):
        (tmp_path / "in.dcm").write_bytes(data)
        reader = gdcm.ImageReader()
        reader.SetFileName(str(tmp_path / "in.dcm"))
        assert reader.Read()
        writer = gdcm.ImageWriter()
        writer.SetFileName(str(tmp_path / f"{k}.dcm"))
        writer.SetFile(reader.GetFile())
        writer.SetImage(reader.GetImage())
        assert writer.Write()
        files.append((name, (tmp_path / f"{k}.dcm").read_bytes()))
    assert pydicom.dcmread(io.BytesIO(files[0][1])).SOPClassUID == "1.2.840.10008.5.1.4.1.1.4.1"
    r = client.post("/v1/analyses", files=multipart(files))
    assert_error(r, 422, "unsupported_image")
    assert "one Enhanced MR instance" in r.json()["error"]["message"]


def _eight_bit(data: bytes) -> bytes:
    """JPEG baseline holds 8-bit samples only: the same slice scaled to 0-255."""
    ds = pydicom.dcmread(io.BytesIO(data))
    pixels = ds.pixel_array.astype(float)
    ds.PixelData = np.round(pixels / max(pixels.max(), 1) * 255).astype(np.uint8).tobytes()
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
    return to_bytes(ds)


@pytest.mark.parametrize("syntax", ["1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.70"],
                         ids=["jpeg-ls-lossless", "jpeg-lossless"])
def test_lossless_jpeg_family_gives_the_uncompressed_report(client, series_dirs, syntax,
                                                             tmp_path) -> None:
    files = series_files(series_dirs[3])
    encoded = [(name, _gdcm_transcode(data, syntax, tmp_path)) for name, data in files]
    assert pydicom.dcmread(io.BytesIO(encoded[0][1])).file_meta.TransferSyntaxUID == syntax
    plain = client.post("/v1/analyses", files=multipart(files))
    r = client.post("/v1/analyses", files=multipart(encoded))
    assert plain.status_code == r.status_code == 201, r.text
    strip = lambda rep: {k: v for k, v in rep.items() if k not in VOLATILE}  # noqa: E731
    assert strip(r.json()) == strip(plain.json())


def test_jpeg_baseline_is_read_and_gives_a_close_report(client, series_dirs, tmp_path) -> None:
    """Lossy, so not identical: the same series within a few per cent."""
    eight = [(name, _eight_bit(data)) for name, data in series_files(series_dirs[3])]
    encoded = [(name, _gdcm_transcode(data, "1.2.840.10008.1.2.4.50", tmp_path))
               for name, data in eight]
    plain = client.post("/v1/analyses", files=multipart(eight))
    r = client.post("/v1/analyses", files=multipart(encoded))
    assert plain.status_code == r.status_code == 201, r.text
    a, b = plain.json(), r.json()
    assert b["myocardium_volume_ml"] == pytest.approx(a["myocardium_volume_ml"], rel=0.05)
    assert b["scar_percent"] == pytest.approx(a["scar_percent"], abs=2.0)


def test_overload_answers_503_with_retry_after(series_dirs) -> None:
    import asyncio

    app = create_app()
    with TestClient(app) as c:
        app.state.slots = asyncio.Semaphore(0)  # every slot taken
        r = c.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
    assert_error(r, 503, "overloaded")
    assert int(r.headers["retry-after"]) > 0


def test_a_body_declared_a_zip_is_read_as_one(client) -> None:
    empty_zip = b"PK\x05\x06" + b"\0" * 18  # an archive with no members
    jpeg = b"\xff\xd8\xff\xe0\x00\x10JFIF\x00" + b"\0" * 64
    zip_type = {"Content-Type": "application/zip"}
    assert_error(client.post("/v1/analyses", content=empty_zip, headers=zip_type), 400,
                 "no_files")
    assert_error(client.post("/v1/analyses", content=jpeg, headers=zip_type), 400, "bad_zip")
    # An empty archive among the uploaded files holds nothing either.
    r = client.post("/v1/analyses", files=[("files", ("a.zip", empty_zip, "application/zip"))])
    assert_error(r, 400, "no_files")
