"""What is not a short-axis LGE heart is refused (422 not_cardiac_lge) and nothing is kept."""

from __future__ import annotations

import copy
import dataclasses
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient
from pydicom.data import get_testdata_file
from pydicom.uid import generate_uid

from service.pipeline.acceptance import header_reasons, lv_ring_slices
from tests.conftest import (
    PHANTOM_SEED,
    multipart,
    series_files,
    series_uid_of,
    settled,
    stow,
    to_bytes,
)
from training.data.phantoms import render, sample_spec, write_series


def _refused(client: TestClient, files: list[tuple[str, bytes]], *words: str) -> str:
    before = client.get("/v1/analyses").json()
    r = client.post("/v1/analyses", files=multipart(files))
    assert r.status_code == 422, r.text
    error = r.json()["error"]
    assert error["code"] == "not_cardiac_lge", error
    for word in words:
        assert word in error["message"], error["message"]
    assert client.get("/v1/analyses").json() == before  # nothing stored
    return error["message"]


def _datasets(files: list[tuple[str, bytes]]) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(io.BytesIO(data)) for _, data in files]


def _files(datasets: list[pydicom.Dataset]) -> list[tuple[str, bytes]]:
    return [(f"{k}.dcm", to_bytes(ds)) for k, ds in enumerate(datasets)]


def brain_stack(slices: int = 8) -> list[tuple[str, bytes]]:
    """pydicom's MR_small (a T2 spin-echo head slice) stacked along its normal."""
    source = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    orientation = np.array(source.ImageOrientationPatient, float)
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array(source.ImagePositionPatient, float)
    series_uid = generate_uid()
    out = []
    for k in range(slices):
        ds = copy.deepcopy(source)
        ds.SOPInstanceUID = generate_uid()
        ds.SeriesInstanceUID = series_uid
        ds.ImagePositionPatient = [float(v) for v in origin + 4.0 * k * normal]
        ds.InstanceNumber = k + 1
        out.append(ds)
    return _files(out)


def test_a_brain_stack_is_refused_by_its_headers(client) -> None:
    _refused(client, brain_stack(), "echo time is 240 ms", "field of view is 20 x 20 mm")


def test_a_noise_stack_is_refused_by_the_networks(client, series_dirs) -> None:
    rng = np.random.default_rng(0)
    datasets = _datasets(series_files(series_dirs[0]))
    for ds in datasets:  # LGE headers, no anatomy
        noise = rng.integers(0, 4000, size=ds.pixel_array.shape).astype(ds.pixel_array.dtype)
        ds.PixelData = noise.tobytes()
    _refused(client, _files(datasets), "no left-ventricular ring")


def _rendered(tmp_path: Path, **intensities: float) -> list[tuple[str, bytes]]:
    spec = sample_spec(PHANTOM_SEED + 7, 0)
    spec = dataclasses.replace(spec, intensities=dataclasses.replace(spec.intensities,
                                                                     **intensities))
    return series_files(write_series(spec, render(spec), tmp_path))


def test_a_phantom_rendered_without_a_heart_is_refused(client, tmp_path) -> None:
    spec = sample_spec(PHANTOM_SEED + 7, 0)
    muscle = spec.intensities.muscle
    files = _rendered(tmp_path, myocardium=muscle, blood=muscle, scar=muscle, mvo=muscle,
                      fat=muscle)
    _refused(client, files, "no left-ventricular ring")


def test_a_cine_series_is_refused_by_its_headers(client, tmp_path) -> None:
    spec = sample_spec(PHANTOM_SEED + 7, 0)
    it = spec.intensities
    # Cine bSSFP contrast: bright blood, grey myocardium, no enhancement.
    files = _rendered(tmp_path, blood=it.scar, myocardium=0.35 * it.scar,
                      scar=0.35 * it.scar, mvo=0.35 * it.scar)
    datasets = _datasets(files)
    for ds in datasets:
        ds.SeriesDescription = "cine SAX retro"
        ds.SequenceName = "*tfi2d1_25"
        ds.ScanningSequence = "GR"
        ds.SequenceVariant = ["SS"]
        ds.EchoTime = 1.2
        if "InversionTime" in ds:
            del ds.InversionTime
    _refused(client, _files(datasets), "names a cine series")


def test_the_phantom_series_are_not_refused(client, series_dirs) -> None:
    for series_dir in series_dirs[:2]:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dir)))
        assert r.status_code == 201, r.text


def test_a_stow_series_that_is_no_lge_heart_is_marked_failed_with_the_reason(
        make_client) -> None:
    files = brain_stack()
    with make_client() as client:
        assert stow(client, files).status_code == 200
        state = settled(client, series_uid_of(files))
        assert state["state"] == "failed" and state["analyses"] == []
        assert state["error"]["code"] == "not_cardiac_lge"
        assert "echo time" in state["error"]["message"]


def _lge_header(**changes) -> pydicom.Dataset:
    ds = pydicom.Dataset()
    ds.Rows, ds.Columns, ds.PixelSpacing = 256, 208, [1.4, 1.4]
    ds.ScanningSequence, ds.EchoTime = ["GR", "IR"], 3.1
    ds.SeriesDescription, ds.SequenceName = "LGE PSIR SAX", "*tfl2d1"
    for key, value in changes.items():
        setattr(ds, key, value)
    return ds


@pytest.mark.parametrize(("changes", "words"), [
    ({}, None),
    ({"BodyPartExamined": "HEART"}, None),
    ({"SeriesDescription": "LGE after cine"}, None),  # LGE named: the cine word is context
    ({"SeriesDescription": "DB-LGE T2-prepared"}, None),
    ({"BodyPartExamined": "BRAIN"}, "body part as BRAIN"),
    ({"EchoTime": 80.0}, "echo time is 80 ms"),
    ({"ScanningSequence": "SE"}, "spin-echo"),
    ({"SeriesDescription": "T1 MOLLI map", "SequenceName": ""}, "names a MOLLI series"),
    ({"SeriesDescription": "STIR sax", "SequenceName": ""}, "names a STIR series"),
    ({"Rows": 64, "Columns": 64}, "field of view is 90 x 90 mm"),
])
def test_header_rules(changes, words) -> None:
    reasons = header_reasons([_lge_header(**changes)])
    if words is None:
        assert reasons == []
    else:
        assert len(reasons) == 1 and words in reasons[0], reasons


def test_missing_headers_say_nothing() -> None:
    assert header_reasons([pydicom.Dataset()]) == []


def test_an_lv_ring_must_be_closed_and_of_an_lvs_size() -> None:
    yy, xx = np.mgrid[:128, :128]
    r = np.hypot(yy - 64, xx - 64)
    ring = (r >= 12) & (r < 18)
    disk = r < 18  # the apex: no cavity
    open_ring = ring & (xx < 70)
    tiny = (r >= 2) & (r < 4)
    stack = np.stack([ring, disk, open_ring, tiny])
    assert lv_ring_slices(stack, (1.5, 1.5)) == [0]
    assert lv_ring_slices(stack, (0.1, 0.1)) == []  # the same pixels, far too small
    # A ring left open by a gap of a pixel or two (scar, a papillary muscle) still counts.
    nicked = ring & ~((np.abs(yy - 64) <= 1) & (xx > 64))
    assert lv_ring_slices(np.stack([nicked]), (1.5, 1.5)) == [0]
    # Closed rings all smaller than an LV's mid-ventricle: not a heart.
    small = (r >= 6) & (r < 9)  # about 190 mm^2 at 1.5 mm
    assert lv_ring_slices(np.stack([small, small]), (1.5, 1.5)) == []
