"""The stress test's perturbations keep pixels and truth aligned; its pairing is by series."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from service.pipeline.registry import load_registry
from training import metrics
from training.data.sources import LabelledSeries, PhantomSource
from training.evaluation.scoring import score_series
from training.studies.stress import (
    PERTURBATIONS,
    REFERENCE,
    SHA_SHOWN,
    StressScore,
    pixel_size,
    rerendered,
    series_spec,
    stress_test,
    summarise,
    tissue_signal,
    weaker_enhancement,
)

MODELS = Path(__file__).resolve().parents[2] / "models"


def ring_case() -> LabelledSeries:
    """Two slices: a myocardial ring (0.3) with scar (1.0) on one side, blood 0.6, air 0.05."""
    yy, xx = np.mgrid[:80, :96]
    r = np.hypot(yy - 38.0, xx - 50.0)
    myocardium = (r >= 14) & (r <= 22)
    scar = myocardium & (xx > 55)
    image = np.where(r < 14, 0.6, 0.05) + 0.25 * myocardium + 0.7 * scar
    return LabelledSeries([image.copy(), image.copy()], (1.5, 1.5), np.stack([myocardium] * 2),
                         np.stack([scar] * 2), np.stack([scar & (r < 17)] * 2))


PIXEL_CHANGES = ["as generated", "mirrored", "rotated 90°", "0.75 mm, interpolated",
                 "shading 0.6-1.4", "heart 90 mm off centre", "3 mid slices"]


@pytest.mark.parametrize("name", PIXEL_CHANGES)
def test_every_pixel_change_keeps_the_truth_on_its_pixels(name: str) -> None:
    case = ring_case()
    changed = PERTURBATIONS[name][1](case, None, np.random.default_rng(0))
    assert changed.true_myocardium.shape == changed.true_scar.shape
    assert len(changed.images) == changed.true_myocardium.shape[0] >= 1
    assert all(im.shape == changed.true_myocardium.shape[1:] for im in changed.images)
    assert not (changed.true_scar & ~changed.true_myocardium).any()
    # The obstruction core moves with the rest of the truth.
    assert changed.true_obstruction.any()
    assert not (changed.true_obstruction & ~changed.true_scar).any()
    images = np.stack(changed.images)
    remote = changed.true_myocardium & ~changed.true_scar
    # Scar stays brighter than remote myocardium: the truth did not slide off its pixels.
    assert np.median(images[changed.true_scar]) > np.median(images[remote])
    bright = images > 0.5 * (np.median(images[changed.true_scar]) + np.median(images[remote]))
    assert metrics.dice(bright & changed.true_myocardium, changed.true_scar) > 0.85


def test_geometric_changes_are_exact_and_scale_the_pixel_size() -> None:
    case = ring_case()
    rng = np.random.default_rng(0)
    mirrored = PERTURBATIONS["mirrored"][1](case, None, rng)
    assert np.array_equal(mirrored.images[0][:, ::-1], case.images[0])
    assert np.array_equal(mirrored.true_scar[:, :, ::-1], case.true_scar)
    fine = PERTURBATIONS["0.75 mm, interpolated"][1](case, None, rng)
    assert fine.spacing == (0.75, 0.75)
    assert fine.images[0].shape == (160, 192)
    # Same area in mm², to a pixel's partial volume along the border.
    assert fine.true_scar.sum() * 0.75**2 == pytest.approx(case.true_scar.sum() * 1.5**2,
                                                           rel=0.05)
    shifted = PERTURBATIONS["heart 90 mm off centre"][1](case, None, rng)
    assert shifted.images[0].shape == (80, 96 + 120)
    assert np.array_equal(shifted.images[0][:, 120:], case.images[0])
    assert np.array_equal(shifted.true_scar[:, :, 120:], case.true_scar)


def test_rendering_again_unchanged_gives_the_written_series(series_dirs: list[Path]) -> None:
    series_dir = series_dirs[0]
    written = PhantomSource(series_dir).read()
    again = rerendered(lambda s: s)(written, series_spec(series_dir), np.random.default_rng(0))
    assert again.spacing == pytest.approx(written.spacing)  # DICOM DS keeps 8 digits
    assert np.array_equal(again.true_myocardium, written.true_myocardium)
    assert np.array_equal(again.true_scar, written.true_scar)
    assert np.array_equal(again.true_obstruction, written.true_obstruction)
    # The written pixels are the rendered ones stored as integers (Rescale Slope/Intercept).
    values = np.unique(np.concatenate([im.ravel() for im in written.images]))
    step = float(np.median(np.diff(values)))
    assert max(float(np.abs(a - b).max()) for a, b in zip(again.images, written.images,
                                                          strict=True)) <= step


@pytest.mark.parametrize("name", sorted(set(PERTURBATIONS) - set(PIXEL_CHANGES)))
def test_every_rendered_change_keeps_scar_inside_and_brighter_than_remote(
        name: str, series_dirs: list[Path]) -> None:
    series_dir, written = next((d, s) for d in series_dirs
                               if (s := PhantomSource(d).read()).true_scar.any())
    changed = PERTURBATIONS[name][1](written, series_spec(series_dir), np.random.default_rng(0))
    assert changed.true_myocardium.shape == changed.true_scar.shape
    assert len(changed.images) == len(changed.true_scar) == len(written.images)
    assert not (changed.true_scar & ~changed.true_myocardium).any()
    images = np.stack(changed.images)
    assert np.median(images[changed.true_scar]) > np.median(images[changed.true_myocardium
                                                              & ~changed.true_scar])


def test_finer_pixels_render_the_same_heart_in_the_same_place(series_dirs: list[Path]) -> None:
    series_dir = series_dirs[0]
    written = PhantomSource(series_dir).read()
    fine = rerendered(pixel_size(0.75))(written, series_spec(series_dir),
                                        np.random.default_rng(0))
    assert fine.spacing == pytest.approx((0.75, 0.75))
    factor = written.spacing[0] / 0.75
    assert fine.images[0].shape == pytest.approx(
        tuple(n * factor for n in written.images[0].shape), abs=1)

    def area_and_centre_mm(mask: np.ndarray, spacing: float) -> tuple[float, np.ndarray]:
        rows, cols = np.nonzero(mask.any(axis=0))
        centre = (np.array([rows.mean(), cols.mean()]) - (np.array(mask.shape[1:]) - 1) / 2)
        return mask.sum() * spacing**2, centre * spacing

    area, centre = area_and_centre_mm(written.true_myocardium, written.spacing[0])
    fine_area, fine_centre = area_and_centre_mm(fine.true_myocardium, 0.75)
    assert fine_area == pytest.approx(area, rel=0.05)
    assert np.abs(fine_centre - centre).max() < 1.0


def test_tissue_changes_touch_only_their_parameter_and_keep_the_noise(
        series_dirs: list[Path]) -> None:
    spec = series_spec(series_dirs[0])
    grey = tissue_signal(blood=0.7)(spec)
    assert grey.intensities.blood == pytest.approx(0.7 * spec.intensities.scar)
    assert dataclasses.replace(grey.intensities, blood=spec.intensities.blood) \
        == spec.intensities
    assert grey.acquisition == spec.acquisition and grey.heart == spec.heart
    weak = weaker_enhancement(1.4)(spec)
    assert weak.intensities.scar == pytest.approx(1.4 * spec.intensities.blood)
    # The renderer's noise sigma is scar / SNR: unchanged.
    assert weak.intensities.scar / weak.acquisition.snr == pytest.approx(
        spec.intensities.scar / spec.acquisition.snr)


def _score(series: str, name: str, dsc: float, called: bool = True) -> StressScore:
    has_scar = not np.isnan(dsc)
    return StressScore(series, name, has_scar, dsc, 0.9, 1.0, called, dsc)


def test_summary_pairs_each_change_with_the_same_series_as_generated() -> None:
    scores = [_score("a", REFERENCE, 0.90), _score("b", REFERENCE, 0.80),
              _score("c", REFERENCE, 0.70), _score("d", REFERENCE, np.nan, called=False),
              # listed in another order: pairing must be by series, not by position
              _score("c", "mirrored", 0.72), _score("a", "mirrored", 0.80),
              _score("d", "mirrored", np.nan, called=True), _score("b", "mirrored", 0.79)]
    rows = {r["perturbation"]: r for r in summarise(scores)}
    mirrored = rows["mirrored"]
    assert mirrored["scar_dsc_change_median"] == pytest.approx(-0.01)
    assert mirrored["worse_by_0.05"] == 1  # only series a (0.90 -> 0.80)
    assert mirrored["series_with_scar"] == 3
    assert mirrored["scar_called_on_scar_free"] == 1 and mirrored["scar_free_series"] == 1
    assert rows[REFERENCE]["scar_dsc_change_median"] == 0.0
    assert rows[REFERENCE]["scar_called_on_scar_free"] == 0


def test_unchanged_series_score_as_the_evaluation_scores_them(series_dirs: list[Path]) -> None:
    registry = load_registry(MODELS, provider="cpu")
    cascade = registry.pipelines["cascade-unet"]
    dirs = series_dirs[:2]
    stressed = stress_test(dirs, cascade.myocardium.network, cascade.scar.network,
                           perturbations=(REFERENCE, "mirrored"))
    assert [s.perturbation for s in stressed] == [REFERENCE, "mirrored"] * 2
    networks = {"myocardium_unet": cascade.myocardium.network,
                "scar_unet": cascade.scar.network,
                "enet_p2": registry.models["enet-p2"].network,
                "enet_p1": registry.models["enet-p1"].network}
    for series_dir, mine in zip(dirs, stressed[::2], strict=True):
        theirs = next(s for s in score_series(series_dir, networks)
                      if s.method == "cascade-unet")
        assert mine.myocardium_dsc == pytest.approx(theirs.myocardium_dsc)
        assert mine.abs_scar_percent_error == pytest.approx(theirs.abs_scar_percent_error)
        assert np.isnan(mine.scar_dsc) == np.isnan(theirs.scar_dsc)
        if not np.isnan(mine.scar_dsc):
            assert mine.scar_dsc == pytest.approx(theirs.scar_dsc)


def test_shipped_stress_report_describes_the_shipped_models() -> None:
    """``models/STRESS.md`` must be made again (python -m training.studies.stress) after a
    release."""
    report = (MODELS / "STRESS.md").read_text()
    # The digests of what the default pipeline runs (an int8 copy, an ensemble's members),
    # as the registry checks them against the manifest.
    registry = load_registry(MODELS, "cpu")
    pipeline = registry.pipelines[registry.default_pipeline]
    for model in (pipeline.myocardium, pipeline.scar):
        assert model.sha256[:SHA_SHOWN] in report, f"STRESS.md predates {model.name}"
    assert all(name in report for name in PERTURBATIONS)
