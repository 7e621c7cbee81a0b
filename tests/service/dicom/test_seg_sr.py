"""The SEG and SR encoders on masks with all three segments drawn (myocardium, scar, MVO)."""

from __future__ import annotations

import subprocess

import highdicom as hd
import numpy as np

from service.dicom.sr import build_sr
from tests.conftest import require_tool, truth_seg


def _triple(item) -> tuple[str, str, str]:
    return item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning


def test_the_mvo_segment_is_coded_as_the_contract_says_and_reads_back(cored_series_dir) -> None:
    volume, masks, seg = truth_seg(cored_series_dir)
    labels = [s.SegmentLabel for s in seg.SegmentSequence]
    assert labels == ["Myocardium", "Scar", "MVO"]
    mvo = seg.SegmentSequence[2]
    assert mvo.SegmentDescription == "Microvascular obstruction"
    assert _triple(mvo.SegmentedPropertyCategoryCodeSequence[0]) == (
        "49755003", "SCT", "Morphologically Abnormal Structure")
    assert _triple(mvo.SegmentedPropertyTypeCodeSequence[0]) == ("26036001", "SCT",
                                                                 "Obstruction")
    assert _triple(mvo.AnatomicRegionSequence[0]) == ("74281007", "SCT", "Myocardium")
    assert int(seg.NumberOfFrames) == 3 * len(volume.slices)  # empty frames kept
    decoded = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=[s.sop_instance_uid for s in volume.slices],
        segment_numbers=[1, 2, 3], skip_overlap_checks=True).astype(bool)
    for number, mask in enumerate(masks):
        assert np.array_equal(decoded[..., number], mask), number
    assert masks[2].any() and not (masks[2] & ~masks[1]).any()


def test_mvo_outside_the_scar_is_not_encoded(cored_series_dir) -> None:
    """MVO is part of the scar: a pixel called MVO but not scar is dropped, not drawn."""
    from service.dicom.seg import build_seg

    volume, (myocardium, scar, mvo), _ = truth_seg(cored_series_dir)
    stray = mvo | (myocardium & ~scar)
    seg = build_seg(volume.slices, myocardium, scar, stray, "cascade-unet", "test")
    decoded = hd.seg.Segmentation.from_dataset(seg).get_pixels_by_source_instance(
        source_sop_instance_uids=[s.sop_instance_uid for s in volume.slices],
        segment_numbers=[3], skip_overlap_checks=True)[..., 0].astype(bool)
    assert np.array_equal(decoded, mvo & scar)


def test_seg_and_sr_with_mvo_pass_dciodvfy_and_the_sr_holds_the_mvo(cored_series_dir,
                                                                    tmp_path) -> None:
    tool = require_tool("dciodvfy")
    volume, _, seg = truth_seg(cored_series_dir)
    figures = {"myocardium_volume_ml": 100.0, "myocardium_mass_g": 105.0,
               "scar_volume_ml": 12.0, "scar_mass_g": 12.6, "scar_percent": 12.0,
               "mvo_volume_ml": 2.5, "mvo_percent": 2.5}
    sr = build_sr([s.dataset for s in volume.slices], seg, figures, "cascade-unet", "test")
    parsed = hd.sr.Comprehensive3DSR.from_dataset(sr)
    values = {(g.tracking_identifier, m.name.meaning): m.value
              for g in parsed.content.get_volumetric_roi_measurement_groups()
              for m in g.get_measurements()}
    assert values[("MVO", "Volume")] == 2.5
    assert values[("MVO", "Microvascular obstruction extent of LV myocardium")] == 2.5
    # Each segment reference names the series the SEG was drawn on (TID 1411).
    series = []

    def walk(items) -> None:
        for item in items:
            if item.get("ValueType") == "UIDREF" and \
                    item.ConceptNameCodeSequence[0].CodeValue == "121232":
                series.append(item.UID)
            walk(item.get("ContentSequence", []))

    walk(sr.ContentSequence)
    assert series == [volume.series_instance_uid] * 3
    for name, ds in (("seg", seg), ("sr", sr)):
        path = tmp_path / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines()
                  if line.startswith("Error")]
        assert errors == [], (name, errors)
