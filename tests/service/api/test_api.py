"""The contract's /v1 endpoints end to end with the shipped models (TestClient, CPU)."""

from __future__ import annotations

import io
import random
import subprocess
import zipfile
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.config import get_settings
from tests.conftest import VOLATILE, multipart, related_body, require_tool, series_files, to_bytes
from training import metrics
from training.data.phantoms import load_truth

# Regression floors on 24 phantom series of a seed the models never saw, from the returned
# SEG: below the release's phantom targets (0.90 / 2.0, which models/EVALUATION.md measures
# on the test set and the 0.2.0 models miss for the myocardium), so the suite catches a
# broken pipeline, not the targets' verdict.
MYOCARDIUM_DSC_TARGET = 0.85
SCAR_PERCENT_ERROR_TARGET = 3.0


@pytest.fixture(scope="module")
def posted(client, series_dirs):
    files = series_files(series_dirs[0])
    r = client.post("/v1/analyses", files=multipart(files))
    assert r.status_code == 201, r.text
    return r


def test_readyz_lists_every_model_on_cpu(client) -> None:
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready"
    models = r.json()["models"]
    assert {m["name"] for m in models} == {"myocardium-unet", "scar-unet", "enet-p1", "enet-p2"}
    assert all(m["execution_provider"] == "CPUExecutionProvider" and len(m["sha256"]) == 64
               for m in models)


def test_models_endpoint_lists_the_three_pipelines(client) -> None:
    pipelines = {p["name"]: p for p in client.get("/v1/models").json()}
    assert set(pipelines) == {"cascade-unet", "enet", "enet-raw"}
    assert pipelines["cascade-unet"]["default"] and not pipelines["enet"]["default"]
    assert pipelines["enet"]["scar_model"]["name"] == "enet-p2"


def test_report_follows_the_contract(posted, series_dirs) -> None:
    report = posted.json()
    assert posted.headers["location"] == f"/v1/analyses/{report['id']}"
    for key in ("id", "status", "created_at", "pipeline", "models", "execution_provider",
                "study_instance_uid", "series_instance_uid", "slices", "myocardium_volume_ml",
                "scar_volume_ml", "myocardium_mass_g", "scar_mass_g",
                "scar_to_myocardium_ratio", "scar_percent", "aha_segments", "baselines",
                "timings_ms", "warnings"):
        assert key in report, key
    assert report["pipeline"] == "cascade-unet"
    # The phantoms' series description names the sequence (DB-LGE).
    assert (report["contrast"], report["contrast_basis"]) == ("dark-blood", "headers")
    low, high = report["scar_percent_interval"]
    assert 0.0 <= low <= report["scar_percent"] <= high <= 100.0
    quality = report["quality"]
    assert quality["verdict"] in ("ok", "review")
    assert (quality["verdict"] == "review") == bool(quality["reasons"])
    assert set(report["timings_ms"]) == {"decode", "preprocess", "inference", "quantify",
                                         "encode", "total"}
    assert set(report["baselines"]) == {"4sd", "fwhm"}
    assert [s["segment"] for s in report["aha_segments"]] == list(range(1, 17))
    # Slice 0 is the most basal: the same order as the phantom's truth (base to apex).
    with np.load(series_dirs[0] / "truth.npz") as truth:
        assert [s["sop_instance_uid"] for s in report["slices"]] == \
            [str(u) for u in truth["sop_instance_uids"]]
    assert [s["index"] for s in report["slices"]] == list(range(len(report["slices"])))
    # Totals agree with the slices, the ratio and the density of 1.05 g/mL.
    myo_mm2 = sum(s["myocardium_area_mm2"] for s in report["slices"])
    scar_mm2 = sum(s["scar_area_mm2"] for s in report["slices"])
    assert report["myocardium_volume_ml"] == pytest.approx(
        myo_mm2 * report["slice_spacing_mm"] / 1000, rel=1e-6)
    assert report["scar_to_myocardium_ratio"] == pytest.approx(scar_mm2 / myo_mm2, rel=1e-6)
    assert report["scar_percent"] == pytest.approx(100 * report["scar_to_myocardium_ratio"])
    assert report["myocardium_mass_g"] == pytest.approx(1.05 * report["myocardium_volume_ml"])
    assert report["scar_mass_g"] == pytest.approx(1.05 * report["scar_volume_ml"])


def test_report_is_close_to_the_truth(posted, series_dirs) -> None:
    report = posted.json()
    truth = load_truth(series_dirs[0])
    true_myo = sum(int(t["myocardium"].sum()) for t in truth.values())
    true_scar = sum(int(t["scar"].sum()) for t in truth.values())
    # One series: loose bounds (the accuracy test below takes medians over 24 series). This
    # is the hardest fixture series (2 mm pixels, a papillary muscle merged with the wall):
    # the releases so far drew 20 % and 23 % too much myocardium on it (DSC 0.84, 0.85),
    # while a wrong spacing or unit would be off by a factor.
    assert (report["scar_percent"] > 0) == (true_scar > 0)
    pixel = np.prod(report["pixel_spacing_mm"])
    myo_px = sum(s["myocardium_area_mm2"] for s in report["slices"]) / pixel
    assert abs(myo_px - true_myo) / true_myo < 0.3


def test_stored_report_seg_and_sr_are_served(client, posted) -> None:
    report = posted.json()
    base = posted.headers["location"]
    assert client.get(base).json() == report
    seg = client.get(f"{base}/seg")
    sr = client.get(f"{base}/sr")
    assert seg.headers["content-type"] == sr.headers["content-type"] == "application/dicom"
    seg_ds = pydicom.dcmread(io.BytesIO(seg.content))
    sr_ds = pydicom.dcmread(io.BytesIO(sr.content))
    assert seg_ds.SOPInstanceUID == report["seg_sop_instance_uid"]
    assert sr_ds.SOPInstanceUID == report["sr_sop_instance_uid"]
    assert seg_ds.StudyInstanceUID == sr_ds.StudyInstanceUID == report["study_instance_uid"]
    assert seg_ds.SeriesInstanceUID != report["series_instance_uid"]


def test_seg_follows_the_contract_and_reads_back_to_the_report(client, posted,
                                                                series_dirs) -> None:
    report = posted.json()
    seg_ds = pydicom.dcmread(io.BytesIO(client.get(f"{posted.headers['location']}/seg").content))
    sources = [pydicom.dcmread(p) for p in (series_dirs[0] / "dicom").glob("*.dcm")]
    assert seg_ds.SegmentationType == "BINARY"
    assert seg_ds.FrameOfReferenceUID == sources[0].FrameOfReferenceUID
    assert seg_ds.ReferencedSeriesSequence[0].SeriesInstanceUID == report["series_instance_uid"]
    assert int(seg_ds.NumberOfFrames) == 3 * len(sources)  # empty frames kept

    def triple(item):
        return (item.CodeValue, item.CodingSchemeDesignator, item.CodeMeaning)

    myo, scar, mvo = seg_ds.SegmentSequence
    assert myo.SegmentLabel == "Myocardium" and scar.SegmentLabel == "Scar"
    assert mvo.SegmentLabel == "MVO" and mvo.SegmentDescription == "Microvascular obstruction"
    assert triple(mvo.SegmentedPropertyCategoryCodeSequence[0]) == \
        ("49755003", "SCT", "Morphologically Abnormal Structure")
    assert triple(mvo.SegmentedPropertyTypeCodeSequence[0]) == ("26036001", "SCT", "Obstruction")
    assert triple(mvo.AnatomicRegionSequence[0]) == ("74281007", "SCT", "Myocardium")
    assert triple(myo.SegmentedPropertyCategoryCodeSequence[0]) == \
        ("91723000", "SCT", "Anatomical Structure")
    assert triple(myo.SegmentedPropertyTypeCodeSequence[0]) == ("74281007", "SCT", "Myocardium")
    assert triple(scar.SegmentedPropertyCategoryCodeSequence[0]) == \
        ("49755003", "SCT", "Morphologically Abnormal Structure")
    assert triple(scar.SegmentedPropertyTypeCodeSequence[0]) == ("55641003", "SCT", "Infarct")
    assert triple(scar.AnatomicRegionSequence[0]) == ("74281007", "SCT", "Myocardium")
    for segment in (myo, scar, mvo):
        assert "SRT" not in str(segment)  # the retired scheme, never
        assert segment.SegmentAlgorithmType == "AUTOMATIC"
        assert segment.SegmentAlgorithmName == "cascade-unet"
        assert "RecommendedDisplayCIELabValue" in segment
    source_uids = {d.SOPInstanceUID for d in sources}
    for frame in seg_ds.PerFrameFunctionalGroupsSequence:
        ref = frame.DerivationImageSequence[0].SourceImageSequence[0]
        assert ref.ReferencedSOPInstanceUID in source_uids
    # highdicom reads the masks back; per-slice areas equal the report's.
    seg = hd.seg.segread(io.BytesIO(client.get(f"{posted.headers['location']}/seg").content))
    pixel = np.prod(report["pixel_spacing_mm"])
    for s in report["slices"]:
        masks = {}
        for number, key in ((1, "myocardium_area_mm2"), (2, "scar_area_mm2"),
                            (3, "mvo_area_mm2")):
            masks[number] = seg.get_pixels_by_source_instance(
                source_sop_instance_uids=[s["sop_instance_uid"]], segment_numbers=[number],
                assert_missing_frames_are_empty=True).astype(bool)
            assert masks[number].sum() * pixel == pytest.approx(s[key]), (s["index"], key)
        # Nested: MVO inside the scar inside the myocardium.
        assert not (masks[3] & ~masks[2]).any() and not (masks[2] & ~masks[1]).any()
        assert s["mvo_percent"] <= s["scar_percent"] + 1e-9


def test_seg_and_sr_pass_dciodvfy(client, posted, tmp_path) -> None:
    tool = require_tool("dciodvfy")
    for kind in ("seg", "sr"):
        path = tmp_path / f"{kind}.dcm"
        path.write_bytes(client.get(f"{posted.headers['location']}/{kind}").content)
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines()
                  if line.startswith("Error")]
        assert errors == [], (kind, errors)


def test_shuffled_zip_and_related_give_the_identical_report(client, posted, series_dirs) -> None:
    files = series_files(series_dirs[0])
    random.Random(5).shuffle(files)
    renamed = [(f"{i:03d}.dcm", data) for i, (_, data) in enumerate(files)]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        for name, data in renamed:
            z.writestr(f"study/series/{name}", data)
    answers = [
        client.post("/v1/analyses", files=multipart(renamed)),
        client.post("/v1/analyses", content=buffer.getvalue(),
                    headers={"content-type": "application/zip"}),
        client.post("/v1/analyses", content=related_body(files), headers={
            "content-type": 'multipart/related; type="application/dicom"; '
                            "boundary=dicomboundary"}),
    ]
    expected = {k: v for k, v in posted.json().items() if k not in VOLATILE}
    for r in answers:
        assert r.status_code == 201, r.text
        assert {k: v for k, v in r.json().items() if k not in VOLATILE} == expected


@pytest.mark.parametrize("pipeline", ["enet", "enet-raw"])
def test_enet_pipelines(client, series_dirs, pipeline) -> None:
    r = client.post(f"/v1/analyses?pipeline={pipeline}",
                    files=multipart(series_files(series_dirs[1])))
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["pipeline"] == pipeline
    # In order of use: the myocardium U-Net, the network whose ring places the crop where
    # the release chose the cascade's (the manifest's ``ring``), then the ENet.
    names = [m["name"] for m in report["models"]]
    assert names[0] == "myocardium-unet"
    assert names[-1] == {"enet": "enet-p2", "enet-raw": "enet-p1"}[pipeline]
    assert names[1:-1] in ([], ["scar-unet"])
    assert 0.0 <= report["scar_to_myocardium_ratio"] <= 1.0


def test_results_survive_a_restart(posted) -> None:
    location = posted.headers["location"]
    with TestClient(create_app()) as fresh:
        r = fresh.get(location)
        assert r.status_code == 200 and r.json() == posted.json()
        assert fresh.get(f"{location}/seg").status_code == 200


def test_unknown_ids_are_404(client) -> None:
    for path in ("/v1/analyses/" + "0" * 32, "/v1/analyses/nope/seg", "/v1/analyses/..%2f..%2fx"):
        r = client.get(path)
        assert r.status_code == 404 and "error" in r.json(), path


def test_api_key_guards_everything_but_health(monkeypatch, posted) -> None:
    monkeypatch.setenv("API_KEY", "s3cret")
    get_settings.cache_clear()
    with TestClient(create_app()) as c:
        assert c.get("/healthz").status_code == 200
        assert c.get("/readyz").status_code == 200
        for path in ("/v1/models", posted.headers["location"]):
            r = c.get(path)
            assert r.status_code == 401 and r.json()["error"]["code"] == "unauthorized"
            assert c.get(path, headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/v1/models", headers={"Authorization": "Bearer s3cret"}).status_code == 200
        assert c.post("/v1/analyses", content=b"x").status_code == 401
        assert c.post("/dicomweb/studies", content=b"x").status_code == 401
        # Every route of every router the app includes, except the two health probes.
        import re

        from service.api.routes import ROUTERS

        routes = [r for router in ROUTERS for r in router.routes]
        assert len(routes) >= 18
        for route in routes:
            path = re.sub(r"\{[^}]+\}", "1", route.path)
            for method in route.methods - {"HEAD", "OPTIONS"}:
                r = c.request(method, path)
                if route.path in ("/login", "/logout"):  # the sign-in itself (test_auth.py)
                    continue
                expected = 200 if route.path in ("/healthz", "/readyz") else 401
                assert r.status_code == expected, (method, route.path, r.status_code)


def test_a_multiframe_series_gives_the_single_frame_result(client, posted, series_dirs) -> None:
    sources = [pydicom.dcmread(p) for p in (series_dirs[0] / "dicom").glob("*.dcm")]
    multiframe = hd.legacy.LegacyConvertedEnhancedMRImage(
        sources, series_instance_uid=hd.UID(), series_number=100, sop_instance_uid=hd.UID(),
        instance_number=1)
    r = client.post("/v1/analyses", files=multipart([("enhanced.dcm", to_bytes(multiframe))]))
    assert r.status_code == 201, r.text
    report, single = r.json(), posted.json()
    assert len(report["slices"]) == len(single["slices"])
    assert {s["sop_instance_uid"] for s in report["slices"]} == {multiframe.SOPInstanceUID}
    assert sorted(s["frame_number"] for s in report["slices"]) == \
        list(range(1, len(sources) + 1))
    for a, b in zip(report["slices"], single["slices"], strict=True):
        assert a["myocardium_area_mm2"] == pytest.approx(b["myocardium_area_mm2"])
        assert a["scar_area_mm2"] == pytest.approx(b["scar_area_mm2"])
        assert a["mvo_area_mm2"] == pytest.approx(b["mvo_area_mm2"])
    seg = hd.seg.Segmentation.from_dataset(
        pydicom.dcmread(io.BytesIO(client.get(f"/v1/analyses/{report['id']}/seg").content)))
    assert seg.NumberOfFrames == 3 * len(sources)  # three segments, empty frames kept


def test_sr_holds_the_measurements_and_references_seg_and_series(client, posted) -> None:
    report = posted.json()
    sr = pydicom.dcmread(io.BytesIO(client.get(f"{posted.headers['location']}/sr").content))
    evidence = {ref.ReferencedSOPInstanceUID
                for study in sr.CurrentRequestedProcedureEvidenceSequence
                for series in study.ReferencedSeriesSequence
                for ref in series.ReferencedSOPSequence}
    assert report["seg_sop_instance_uid"] in evidence
    assert {s["sop_instance_uid"] for s in report["slices"]} <= evidence
    parsed = hd.sr.srread(io.BytesIO(client.get(f"{posted.headers['location']}/sr").content))
    groups = parsed.content.get_volumetric_roi_measurement_groups()
    values = {}
    for group in groups:
        for m in group.get_measurements():
            values[(group.tracking_identifier, m.name.meaning)] = m.value
    assert values[("Myocardium", "Volume")] == pytest.approx(report["myocardium_volume_ml"])
    assert values[("Scar", "Mass")] == pytest.approx(report["scar_mass_g"])
    assert values[("Scar", "Scar extent of LV myocardium")] == \
        pytest.approx(report["scar_percent"])
    assert values[("MVO", "Volume")] == pytest.approx(report["mvo_volume_ml"])
    assert values[("MVO", "Microvascular obstruction extent of LV myocardium")] == \
        pytest.approx(report["mvo_percent"])
    assert 0.0 <= report["mvo_percent"] <= report["scar_percent"]


def test_openapi_documents_the_report(client) -> None:
    schema = client.get("/openapi.json").json()
    assert "Report" in schema["components"]["schemas"]
    post = schema["paths"]["/v1/analyses"]["post"]
    assert {"multipart/form-data", "application/zip", "multipart/related"} <= \
        set(post["requestBody"]["content"])


def test_reversed_instance_numbers_give_the_identical_report(client, posted, series_dirs) -> None:
    files = series_files(series_dirs[0])
    flipped = []
    for name, data in files:
        ds = pydicom.dcmread(io.BytesIO(data))
        ds.InstanceNumber = 1000 - int(ds.InstanceNumber)
        flipped.append((name, to_bytes(ds)))
    r = client.post("/v1/analyses", files=multipart(flipped))
    assert r.status_code == 201, r.text
    strip = lambda rep: {k: v for k, v in rep.items() if k not in VOLATILE}  # noqa: E731
    assert strip(r.json()) == strip(posted.json())


def _seg_masks(client, report) -> tuple[np.ndarray, np.ndarray]:
    """Myocardium and scar read back from the returned SEG, in the report's slice order."""
    seg = hd.seg.segread(io.BytesIO(client.get(f"/v1/analyses/{report['id']}/seg").content))
    uids = [s["sop_instance_uid"] for s in report["slices"]]
    masks = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids,
                                              segment_numbers=[1, 2])
    return masks[..., 0].astype(bool), masks[..., 1].astype(bool)


@pytest.mark.slow
def test_accuracy_on_unseen_phantoms_from_the_returned_seg(client, many_series_dirs) -> None:
    """Phantoms of a seed never used in training; figures computed from the SEG."""
    myo_dsc, scar_errors, shapes, orientations = [], [], set(), set()
    for series_dir in many_series_dirs:
        r = client.post("/v1/analyses", files=multipart(series_files(series_dir)))
        assert r.status_code == 201, r.text
        report = r.json()
        myocardium, scar = _seg_masks(client, report)
        truth = load_truth(series_dir)
        true_myo = np.stack([truth[s["sop_instance_uid"]]["myocardium"]
                             for s in report["slices"]]).astype(bool)
        true_scar = np.stack([truth[s["sop_instance_uid"]]["scar"]
                              for s in report["slices"]]).astype(bool)
        myo_dsc.append(metrics.dice(myocardium, true_myo))
        scar_errors.append(abs(metrics.scar_percent_error(scar, myocardium, true_scar,
                                                          true_myo)))
        shapes.add(myocardium.shape[1] == myocardium.shape[2])
        ds = pydicom.dcmread(next((series_dir / "dicom").glob("*.dcm")))
        orientations.add(tuple(np.round(np.abs(ds.ImageOrientationPatient), 1)))
    assert shapes == {True, False}  # square and non-square matrices
    assert len(orientations) > 10  # oblique planes of many orientations
    assert np.median(myo_dsc) >= MYOCARDIUM_DSC_TARGET, sorted(myo_dsc)
    assert np.median(scar_errors) <= SCAR_PERCENT_ERROR_TARGET, sorted(scar_errors)


def test_seg_has_what_ohif_and_slicer_need(client, posted, series_dirs) -> None:
    """Referenced series listing every source, per-frame source and position, display colours."""
    from skimage.color import lab2rgb

    from service.viewer.overlay import MVO_RGB, MYOCARDIUM_RGB, SCAR_RGB

    seg = pydicom.dcmread(io.BytesIO(client.get(f"{posted.headers['location']}/seg").content))
    sources = {d.SOPInstanceUID: d for d in map(pydicom.dcmread,
                                                 (series_dirs[0] / "dicom").glob("*.dcm"))}
    referenced = seg.ReferencedSeriesSequence[0].ReferencedInstanceSequence
    assert {r.ReferencedSOPInstanceUID for r in referenced} == set(sources)
    assert {r.ReferencedSOPClassUID for r in referenced} == {"1.2.840.10008.5.1.4.1.1.4"}
    shared = seg.SharedFunctionalGroupsSequence[0]
    first = next(iter(sources.values()))
    assert np.allclose(shared.PlaneOrientationSequence[0].ImageOrientationPatient,
                       first.ImageOrientationPatient)
    assert np.allclose(shared.PixelMeasuresSequence[0].PixelSpacing, first.PixelSpacing)
    seen = set()
    for frame in seg.PerFrameFunctionalGroupsSequence:
        source = sources[frame.DerivationImageSequence[0].SourceImageSequence[0]
                         .ReferencedSOPInstanceUID]
        # Viewers place a frame by its position; it must be its source image's.
        assert np.allclose(frame.PlanePositionSequence[0].ImagePositionPatient,
                           source.ImagePositionPatient)
        segment = frame.SegmentIdentificationSequence[0].ReferencedSegmentNumber
        seen.add((source.SOPInstanceUID, segment))
    assert seen == {(uid, s) for uid in sources for s in (1, 2, 3)}
    # The recommended display colours are the overlay's (DICOM scales CIELab to 0-65535).
    for segment, rgb in zip(seg.SegmentSequence, (MYOCARDIUM_RGB, SCAR_RGB, MVO_RGB),
                            strict=True):
        lab16 = np.array(segment.RecommendedDisplayCIELabValue, float)
        lab = [lab16[0] / 65535 * 100, lab16[1] / 65535 * 255 - 128, lab16[2] / 65535 * 255 - 128]
        back = lab2rgb(np.array(lab)[None, None])[0, 0] * 255
        assert np.allclose(back, rgb, atol=3), (segment.SegmentLabel, back, rgb)


def _codes_in(items) -> list[tuple[str, str]]:
    """(concept name code, coded value code) of every CODE item in an SR content tree."""
    out = []
    for item in items:
        if item.ValueType == "CODE":
            out.append((item.ConceptNameCodeSequence[0].CodeValue,
                        item.ConceptCodeSequence[0].CodeValue))
        out += _codes_in(item.get("ContentSequence", []))
    return out


def test_a_result_to_review_says_so_everywhere_it_is_shown(client, series_dirs,
                                                           monkeypatch) -> None:
    from service.pipeline import quality

    # Every interval too wide to act on, whatever the calibration's review width.
    monkeypatch.setattr(quality, "interval_reason",
                        lambda interval, width=None: "the 95 % interval is too wide")
    r = client.post("/v1/analyses", files=multipart(series_files(series_dirs[2])))
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["quality"]["verdict"] == "review"
    assert any("interval" in reason for reason in report["quality"]["reasons"])
    seg = pydicom.dcmread(io.BytesIO(client.get(f"/v1/analyses/{report['id']}/seg").content))
    sr = pydicom.dcmread(io.BytesIO(client.get(f"/v1/analyses/{report['id']}/sr").content))
    assert seg.SeriesDescription.startswith("REVIEW NEEDED")
    assert sr.SeriesDescription.startswith("REVIEW NEEDED")
    assert ("NEEDS-REVIEW", "373066001") in _codes_in(sr.ContentSequence)  # SCT Yes
    viewer = client.get(f"/v1/analyses/{report['id']}/viewer").text
    assert 'id="review"' in viewer and "REVIEW NEEDED" in viewer
    assert all(reason.split(" (")[0] in viewer for reason in report["quality"]["reasons"])
    assert "REVIEW NEEDED" in client.get("/").text


def test_an_ok_result_is_not_marked(client, posted) -> None:
    report = posted.json()
    seg = pydicom.dcmread(io.BytesIO(client.get(f"/v1/analyses/{report['id']}/seg").content))
    sr = pydicom.dcmread(io.BytesIO(client.get(f"/v1/analyses/{report['id']}/sr").content))
    review = report["quality"]["verdict"] == "review"
    assert seg.SeriesDescription.startswith("REVIEW NEEDED") == review
    assert sr.SeriesDescription.startswith("REVIEW NEEDED") == review
    expected = "373066001" if review else "373067005"  # SCT Yes / No
    assert ("NEEDS-REVIEW", expected) in _codes_in(sr.ContentSequence)
    bounds = [v for name, v in _numbers_in(sr.ContentSequence)
              if name in ("SCAR-EXTENT-LO95", "SCAR-EXTENT-HI95")]
    assert bounds == pytest.approx(report["scar_percent_interval"], abs=1e-6)


def _numbers_in(items) -> list[tuple[str, float]]:
    out = []
    for item in items:
        if item.ValueType == "NUM":
            out.append((item.ConceptNameCodeSequence[0].CodeValue,
                        float(item.MeasuredValueSequence[0].NumericValue)))
        out += _numbers_in(item.get("ContentSequence", []))
    return out


def test_the_readme_try_it_phantom_is_read_as_ok(client, tmp_path) -> None:
    """The series the README tells a new user to try comes back `ok`, its interval holding
    the truth (issue 35: with every result flagged, the flag told a reader nothing)."""
    import re

    from training.data.phantoms import generate_one

    readme = (Path(__file__).parents[3] / "README.md").read_text()
    try_it = readme[readme.index("## Try it in one minute"):]
    seed = int(re.search(r"python -m training\.data\.phantoms .*--seed (\d+)", try_it)[1])
    meta = generate_one(seed, 0, tmp_path)
    r = client.post("/v1/analyses",
                    files=multipart(series_files(tmp_path / meta["series_id"])))
    assert r.status_code == 201, r.text
    report = r.json()
    assert report["quality"] == {"verdict": "ok", "reasons": []}, report["quality"]
    low, high = report["scar_percent_interval"]
    assert low <= meta["scar_percent"] <= high
