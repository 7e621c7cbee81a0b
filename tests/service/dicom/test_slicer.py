"""3D Slicer's DICOM-SEG reader (dcmqi's segimage2itkimage) reads our SEG as the service drew it."""

from __future__ import annotations

import json
import subprocess

import nrrd
import numpy as np
import pytest

from tests.conftest import require_tool, truth_seg

LABELS = {1: "Myocardium", 2: "Scar", 3: "MVO"}


def test_segimage2itkimage_reads_each_segment_with_the_encoders_voxel_counts(
        cored_series_dir, tmp_path) -> None:
    """All three segments, the MVO one drawn (the phantom's truth through our encoder)."""
    tool = require_tool("segimage2itkimage")
    volume, masks, seg_ds = truth_seg(cored_series_dir)
    seg = tmp_path / "seg.dcm"
    seg_ds.save_as(seg, enforce_file_format=True)
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
    expected = {label: int(mask.sum()) for label, mask in zip(LABELS.values(), masks,
                                                               strict=True)}
    assert 0 < expected["MVO"] < expected["Scar"] < expected["Myocardium"]
    counted = {}
    for number, label in LABELS.items():
        data, _ = nrrd.read(str(out / f"seg-{number}.nrrd"))
        # One volume per segment on the source images' grid, every slice kept.
        assert len(volume.slices) in data.shape, (data.shape, len(volume.slices))
        counted[label] = int(np.count_nonzero(data))
    assert counted == expected


@pytest.fixture(autouse=True)
def _dcmqi_writes_its_files_only_under_tmp(tmp_path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
