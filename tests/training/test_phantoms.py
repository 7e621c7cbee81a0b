from __future__ import annotations

import hashlib
import importlib
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import PHANTOM_SEED, read_series, require_tool
from training.data.phantoms import build_datasets, load_truth, render, sample_spec
from training.data.phantoms.dicom import stored_pixels


def _digest(series_dir: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(series_dir.rglob("*")):
        if p.is_file():
            h.update(p.relative_to(series_dir).as_posix().encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_same_seed_same_bytes(tmp_path: Path, series_dirs: list[Path]) -> None:
    from training.data.phantoms import generate_one

    generate_one(PHANTOM_SEED, 1, tmp_path)
    assert _digest(tmp_path / series_dirs[1].name) == _digest(series_dirs[1])


def test_different_seed_differs() -> None:
    a = sample_spec(1, 0)
    b = sample_spec(2, 0)
    assert a.to_json() != b.to_json()


def test_truth_keyed_by_sop_uid_and_matches_files(series_dirs: list[Path]) -> None:
    for series_dir in series_dirs:
        truth = load_truth(series_dir)
        datasets = read_series(series_dir)
        assert {ds.SOPInstanceUID for ds in datasets} == set(truth)
        for ds in datasets:
            assert truth[ds.SOPInstanceUID]["myocardium"].shape == (ds.Rows, ds.Columns)
            scar = truth[ds.SOPInstanceUID]["scar"].astype(bool)
            myo = truth[ds.SOPInstanceUID]["myocardium"].astype(bool)
            assert not (scar & ~myo).any(), "scar must lie inside the myocardium"
        meta = json.loads((series_dir / "meta.json").read_text())
        assert meta["n_slices"] == len(datasets)


def test_truth_holds_the_lv_cavity_inside_the_ring(series_dirs: list[Path]) -> None:
    """The blood pool (papillary muscles included) is saved with the other masks: disjoint
    from the myocardium, and where a slice's ring is closed, inside it."""
    from scipy import ndimage

    truth = load_truth(series_dirs[0])
    closed = 0
    for masks in truth.values():
        cavity, myocardium = masks["cavity"].astype(bool), masks["myocardium"].astype(bool)
        assert not (cavity & myocardium).any()
        hole = ndimage.binary_fill_holes(myocardium) & ~myocardium
        if hole.sum() > 50:
            closed += 1
            assert (cavity & hole).sum() >= 0.8 * hole.sum()
            assert (cavity & ~hole).sum() <= 0.2 * cavity.sum()
    assert closed >= 2


def test_truth_is_ordered_base_to_apex(series_dirs: list[Path]) -> None:
    """truth.npz lists slices base->apex: positions advance along the long axis."""
    for series_dir in series_dirs:
        with np.load(series_dir / "truth.npz") as data:
            uids = [str(u) for u in data["sop_instance_uids"]]
        by_uid = {ds.SOPInstanceUID: ds for ds in read_series(series_dir)}
        spec = sample_spec(PHANTOM_SEED, int(series_dir.name.rsplit("_", 1)[1]))
        axis = np.asarray(spec.acquisition.long_axis)
        depth = [np.dot(np.asarray(by_uid[u].ImagePositionPatient, float), axis) for u in uids]
        assert np.all(np.diff(depth) > 7.9)


def test_obstruction_probability_changes_only_the_cores() -> None:
    """A training mix rich in obstruction must draw the same hearts and scars."""
    added = 0
    for index in range(60):
        natural = sample_spec(7, index).to_json()
        rich = sample_spec(7, index, obstruction_probability=1.0).to_json()
        none = sample_spec(7, index, obstruction_probability=0.0).to_json()
        assert rich["extra"] == {"obstruction_probability": 1.0} and natural["extra"] == {}
        for a, b, c in zip(natural["scars"], rich["scars"], none["scars"], strict=True):
            assert not c["mvo"] and (b["mvo"] or not a["mvo"])
            assert b["mvo"] == (b["transmurality"] > 0.6)
            added += b["mvo"] and not a["mvo"]
        strip = ("extra", "scars")
        assert {k: v for k, v in rich.items() if k not in strip} == \
            {k: v for k, v in natural.items() if k not in strip}
        assert [{**s, "mvo": None} for s in rich["scars"]] == \
            [{**s, "mvo": None} for s in natural["scars"]]
    assert added > 0


def test_a_series_drawn_with_another_mix_is_redrawn(tmp_path: Path) -> None:
    from training.data.phantoms.__main__ import _generate_or_reuse

    first = _generate_or_reuse(PHANTOM_SEED, 2, tmp_path)
    assert _generate_or_reuse(PHANTOM_SEED, 2, tmp_path) == first  # resumed, not redrawn
    rich = _generate_or_reuse(PHANTOM_SEED, 2, tmp_path, obstruction_probability=1.0)
    assert rich["spec"]["extra"] == {"obstruction_probability": 1.0}
    written = json.loads((tmp_path / first["series_id"] / "meta.json").read_text())
    assert written == rich


def test_dark_blood_contrast(series_dirs: list[Path]) -> None:
    """Healthy myocardium < blood pool < scar, and fat brighter than healthy myocardium."""
    checked = 0
    for idx in range(12):
        spec = sample_spec(PHANTOM_SEED, idx)
        if not spec.scars:
            continue
        series = render(spec)
        myo = series.myocardium.astype(bool)
        scar = series.scar.astype(bool) & ~series.mvo.astype(bool)
        healthy = myo & ~series.scar.astype(bool)
        if scar.sum() < 20:
            continue
        from scipy import ndimage

        # Blood pool: inside the myocardial ring, away from its border.
        cavity = np.stack([ndimage.binary_fill_holes(m) & ~ndimage.binary_dilation(m, iterations=2)
                           for m in myo])
        image = series.image
        healthy_m = np.median(image[healthy])
        blood_m = np.median(image[cavity])
        scar_m = np.median(image[scar])
        assert healthy_m < blood_m < scar_m, (idx, healthy_m, blood_m, scar_m)
        checked += 1
    assert checked >= 3


def test_variation_across_series() -> None:
    specs = [sample_spec(7, i) for i in range(120)]
    acq = [s.acquisition for s in specs]
    spacings = [a.pixel_spacing for a in acq]
    assert min(spacings) >= 1.2 and max(spacings) <= 2.0
    assert {(a.rows, a.cols) for a in acq} >= {(256, 256), (224, 256), (192, 256)}
    n = [a.n_slices for a in acq]
    assert min(n) == 6 and max(n) == 14
    assert {a.instance_order for a in acq} == {"base_to_apex", "apex_to_base", "shuffled"}
    territories = {s.territory for spec in specs for s in spec.scars}
    assert territories == {"LAD", "RCA", "LCX"}
    assert any(not spec.scars for spec in specs), "some series must be scar-free"
    assert any(s.mvo for spec in specs for s in spec.scars)
    assert any(s.transmurality >= 1.0 for spec in specs for s in spec.scars)
    assert any(s.transmurality < 0.5 for spec in specs for s in spec.scars)
    assert {a.bits_stored for a in acq} == {12, 16}
    assert any(a.rescale_slope != 1.0 for a in acq)
    snr = [a.snr for a in acq]
    assert max(snr) / min(snr) > 3


def test_geometry_is_double_oblique_and_consistent(series_dirs: list[Path]) -> None:
    for series_dir in series_dirs:
        datasets = read_series(series_dir)
        iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
        row, col = iop[:3], iop[3:]
        assert abs(np.dot(row, col)) < 1e-6
        normal = np.cross(row, col)
        # Double oblique: the slice normal is aligned with no patient axis.
        assert np.max(np.abs(normal)) < 0.95
        positions = sorted(np.dot(np.asarray(ds.ImagePositionPatient, float), normal)
                           for ds in datasets)
        steps = np.diff(positions)
        assert np.allclose(steps, float(datasets[0].SpacingBetweenSlices), atol=1e-3)
        assert 8.0 - 1e-3 <= steps[0] <= 10.0 + 1e-3


def test_instance_numbers_not_always_base_to_apex() -> None:
    orders = []
    for i in range(30):
        spec = sample_spec(PHANTOM_SEED, i)
        if spec.acquisition.n_slices:
            orders.append(spec.acquisition.instance_order)
    assert "apex_to_base" in orders or "shuffled" in orders


def test_rescale_slope_round_trip() -> None:
    for i in range(40):
        spec = sample_spec(3, i)
        if spec.acquisition.rescale_slope != 1.0:
            break
    else:
        pytest.fail("no series with a rescale slope among 40")
    rendered = render(spec)
    stored = stored_pixels(spec, rendered.image)
    physical = stored * spec.acquisition.rescale_slope + spec.acquisition.rescale_intercept
    assert np.allclose(physical, rendered.image, atol=spec.acquisition.rescale_slope)
    ds = build_datasets(spec, rendered)[0]
    assert float(ds.RescaleSlope) == pytest.approx(spec.acquisition.rescale_slope, rel=1e-6)


@pytest.mark.dciodvfy
def test_every_file_passes_dciodvfy(series_dirs: list[Path]) -> None:
    tool = require_tool("dciodvfy")
    failures = []
    for path in sorted(p for d in series_dirs for p in (d / "dicom").glob("*.dcm")):
        out = subprocess.run([tool, str(path)], capture_output=True, text=True, check=False)
        errors = [ln for ln in (out.stdout + out.stderr).splitlines() if ln.startswith("Error")]
        if errors:
            failures.append((path.name, errors[:3]))
    assert not failures, failures[:5]


def test_cli_writes_index(tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "training.data.phantoms", "--out", str(tmp_path), "-n", "2",
         "--seed", "9",
         "--workers", "1"], capture_output=True, text=True, check=False,
    )
    assert out.returncode == 0, out.stderr
    index = json.loads((tmp_path / "index.json").read_text())
    assert [s["series_id"] for s in index["series"]] == ["phantom_0009_00000", "phantom_0009_00001"]
    assert "phantoms" in out.stderr  # the progress bar


def test_preview_montage_draws_truth(series_dirs: list[Path]) -> None:
    from training.data.phantoms.preview import montage

    for series_dir in series_dirs:
        meta = json.loads((series_dir / "meta.json").read_text())
        if meta["scar_percent"] > 0:
            break
    else:
        pytest.fail("no fixture series with scar")
    grid = montage(series_dir, half_side_px=40)
    n = min(8, meta["n_slices"])
    assert grid.shape == (160, 80 * n, 3)
    top, bottom = grid[:80].astype(int), grid[80:].astype(int)
    assert (top[..., 0] == top[..., 1]).all(), "top row is plain grey"
    assert ((bottom[..., 0] - bottom[..., 1]) > 80).any(), "scar drawn in red"
    assert ((bottom[..., 1] - bottom[..., 0]) > 80).any(), "myocardium drawn in green"



@pytest.mark.parametrize("index", range(4))
def test_heart_drawn_only_where_it_reaches_changes_no_label(
        index: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The renderer skips points the heart cannot reach; drawing it everywhere must agree."""
    render_module = importlib.import_module("training.data.phantoms.render")
    spec = sample_spec(PHANTOM_SEED + 7, index)
    grid = np.linspace(-120.0, 120.0, 241)
    thorax = render_module._thorax(spec, *np.meshgrid(grid, grid))
    levels = [f * spec.heart.lv_length for f in (-0.05, 0.0, 0.3, 0.6, 0.85, 0.99)]
    skipping = [render_module._label_samples(spec, thorax, s) for s in levels]
    monkeypatch.setattr(render_module, "_heart_reach",
                        lambda spec, x, y, s_frac: np.ones(x.shape, dtype=bool))
    for s_mm, fast in zip(levels, skipping, strict=True):
        everywhere = render_module._label_samples(spec, thorax, s_mm)
        for a, b in zip(fast, everywhere, strict=True):
            assert np.array_equal(a, b)
