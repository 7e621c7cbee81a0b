"""3D Slicer's DICOM-SEG reader (dcmqi's segimage2itkimage) reads our SEG as the service drew it."""

from __future__ import annotations

import json
import subprocess

import nrrd
import numpy as np
import pytest

from tests.conftest import multipart, require_tool, series_files

LABELS = {1: "Myocardium", 2: "Scar"}


@pytest.fixture(scope="module")
def posted(client, series_dirs):
    r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[0])))
    assert r.status_code == 201, r.text
    return r


def test_segimage2itkimage_reads_each_segment_with_the_services_voxel_counts(
        client, posted, tmp_path) -> None:
    tool = require_tool("segimage2itkimage")
    base = posted.headers["location"]
    seg = tmp_path / "seg.dcm"
    seg.write_bytes(client.get(f"{base}/seg").content)
    out = tmp_path / "slicer"
    out.mkdir()
    run = subprocess.run([tool, "--inputDICOM", str(seg), "--outputDirectory", str(out),
                          "-t", "nrrd", "-p", "seg"], capture_output=True, text=True,
                         check=False, timeout=120)
    assert run.returncode == 0, run.stdout + run.stderr
    meta = json.loads((out / "seg-meta.json").read_text())
    described = {attributes["labelID"]: attributes["SegmentLabel"]
                 for group in meta["segmentAttributes"] for attributes in group}
    assert described == LABELS

    from service.api.app import get_settings
    from service.store.results import ResultStore

    store = ResultStore(get_settings().data_dir)
    analysis_id = posted.json()["id"]
    with np.load(store.path(analysis_id, "arrays")) as arrays:
        expected = {"Myocardium": int(arrays["myocardium"].sum()),
                    "Scar": int(arrays["scar"].sum())}
        slices = arrays["myocardium"].shape[0]
    assert expected["Scar"] > 0 and expected["Myocardium"] > expected["Scar"]
    counted = {}
    for number, label in LABELS.items():
        data, header = nrrd.read(str(out / f"seg-{number}.nrrd"))
        # One volume per segment on the source images' grid, every slice kept.
        assert slices in data.shape, (data.shape, slices)
        counted[label] = int(np.count_nonzero(data))
    assert counted == expected


@pytest.fixture(autouse=True)
def _dcmqi_writes_its_files_only_under_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
