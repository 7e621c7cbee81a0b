"""Stress test: the shipped pipeline on series changed beyond the phantoms' ranges.

``python -m training.studies.stress --models models``

The models will meet series from other scanners and other phantom makers,
whose contrast, pixel size, field of view and orientation differ from the
ones they were trained on. Each perturbation here is a pure function of a
series and its truth that keeps the two aligned: a change of the pixels
(mirroring, rotation, resampling, shading, a wider field of view, fewer
slices), or of the phantom's own parameters (tissue contrast and noise
beyond the training ranges), rendered again with the same anatomy, scar and noise
draw, so the truth follows from geometry as before. The same series go through
the service's own pipeline (the registry of ``models/``, with its thresholds)
once as generated and once per perturbation, so every change is paired.

The default series are the development phantoms (seed 3000), which earlier
design decisions were measured on; no training or test series are used.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from service.pipeline.quantify import fwhm_scar, scar_fraction
from service.pipeline.registry import load_registry
from service.pipeline.segment import Network, segment
from training import metrics
from training.data.phantoms.__main__ import generate_many
from training.data.phantoms.render import render
from training.data.phantoms.spec import PhantomSpec, recorded_obstruction_probability, sample_spec
from training.data.sources import LabelledSeries, PhantomSource
from training.evaluation.scoring import write_csv

# (the series as written, the parameters it was rendered from, a seeded generator) -> changed
Perturbation = Callable[[LabelledSeries, PhantomSpec, np.random.Generator], LabelledSeries]


def _moved(series: LabelledSeries, images: list[np.ndarray], spacing: tuple[float, float],
           move: Callable[[np.ndarray], np.ndarray]) -> LabelledSeries:
    """New pixels, with every truth mask (z, y, x) moved by ``move`` as the pixels were."""
    return LabelledSeries(images, spacing, move(series.true_myocardium), move(series.true_scar),
                         move(series.true_obstruction))


def _same(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator) -> LabelledSeries:
    return series


def _mirrored(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
              ) -> LabelledSeries:
    return _moved(series, [im[:, ::-1] for im in series.images], series.spacing,
                  lambda m: m[:, :, ::-1])


def _rotated(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
             ) -> LabelledSeries:
    return _moved(series, [np.rot90(im) for im in series.images], series.spacing[::-1],
                  lambda m: np.rot90(m, axes=(1, 2)))


def resampled(spacing_mm: float) -> Perturbation:
    """Pixels of ``spacing_mm``: cubic for the image (as a scanner interpolates), truth linear."""
    def apply(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
              ) -> LabelledSeries:
        zoom = (series.spacing[0] / spacing_mm, series.spacing[1] / spacing_mm)
        low = _darkest(series)
        images = [np.maximum(ndimage.zoom(np.asarray(im, np.float32), zoom, order=3), low)
                  for im in series.images]
        return _moved(series, images, (spacing_mm, spacing_mm), lambda m: np.stack(
            [ndimage.zoom(s.astype(np.float32), zoom, order=1) >= 0.5 for s in m]))
    return apply


def _darkest(series: LabelledSeries) -> float:
    """The series' lowest value: zero signal, whatever the stored offset."""
    return min(float(np.min(im)) for im in series.images)


def rerendered(change: Callable[[PhantomSpec], PhantomSpec]) -> Perturbation:
    """The series rendered again from its parameters after ``change`` (same noise draw)."""
    def apply(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
              ) -> LabelledSeries:
        rendered = render(change(spec))
        spacing = rendered.geometry[0].pixel_spacing
        return LabelledSeries(list(rendered.image), (float(spacing[0]), float(spacing[1])),
                             rendered.myocardium.astype(bool), rendered.scar.astype(bool),
                             rendered.mvo.astype(bool))
    return apply


def tissue_signal(**relative_to_scar: float) -> Callable[[PhantomSpec], PhantomSpec]:
    """Tissues set to a fraction of the series' scar signal (noise unchanged)."""
    def change(spec: PhantomSpec) -> PhantomSpec:
        scar = spec.intensities.scar
        return dataclasses.replace(spec, intensities=dataclasses.replace(
            spec.intensities, **{k: v * scar for k, v in relative_to_scar.items()}))
    return change


def weaker_enhancement(scar_over_blood: float) -> Callable[[PhantomSpec], PhantomSpec]:
    """Scar only ``scar_over_blood`` times the blood; the noise's sigma is kept."""
    def change(spec: PhantomSpec) -> PhantomSpec:
        it, acq = spec.intensities, spec.acquisition
        scar = scar_over_blood * it.blood
        # The renderer's noise sigma is scar / SNR: scale the SNR with the scar.
        return dataclasses.replace(
            spec, intensities=dataclasses.replace(it, scar=scar),
            acquisition=dataclasses.replace(acq, snr=acq.snr * scar / it.scar))
    return change


def snr(value: float) -> Callable[[PhantomSpec], PhantomSpec]:
    def change(spec: PhantomSpec) -> PhantomSpec:
        return dataclasses.replace(spec, acquisition=dataclasses.replace(spec.acquisition,
                                                                         snr=value))
    return change


def pixel_size(spacing_mm: float) -> Callable[[PhantomSpec], PhantomSpec]:
    """Acquired with ``spacing_mm`` pixels over the same field of view, at the same SNR."""
    def change(spec: PhantomSpec) -> PhantomSpec:
        acq = spec.acquisition
        factor = acq.pixel_spacing / spacing_mm
        return dataclasses.replace(spec, acquisition=dataclasses.replace(
            acq, pixel_spacing=spacing_mm, rows=round(acq.rows * factor),
            cols=round(acq.cols * factor),
            heart_offset_px=tuple(v * factor for v in acq.heart_offset_px)))
    return change


def shading(low_gain: float, high_gain: float) -> Perturbation:
    """A coil-sensitivity ramp across the field of view, left to right."""
    def apply(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
              ) -> LabelledSeries:
        low = _darkest(series)
        images = [low + (im - low) * np.linspace(low_gain, high_gain, im.shape[1])[None, :]
                  for im in series.images]
        return dataclasses.replace(series, images=images)
    return apply


def off_centre(distance_mm: float) -> Perturbation:
    """A wider field of view on one side, so the heart lies ``distance_mm`` further off centre.

    The new pixels are drawn from the series' darkest 5 % (noisy air), not a constant.
    """
    def apply(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
              ) -> LabelledSeries:
        pad = int(round(2.0 * distance_mm / series.spacing[1]))
        images = []
        for im in series.images:
            air = np.asarray(im)[im <= np.percentile(im, 5)]
            images.append(np.concatenate([rng.choice(air, size=(im.shape[0], pad)), im], axis=1))
        return _moved(series, images, series.spacing,
                      lambda m: np.pad(m, ((0, 0), (0, 0), (pad, 0))))
    return apply


def mid_slices(count: int) -> Perturbation:
    """Only ``count`` slices from the middle of the LV (a short or partial stack)."""
    def apply(series: LabelledSeries, spec: PhantomSpec, rng: np.random.Generator
              ) -> LabelledSeries:
        with_lv = np.flatnonzero(series.true_myocardium.any(axis=(1, 2)))
        start = max(len(with_lv) // 2 - count // 2, 0)
        keep = with_lv[start:start + count]
        return _moved(series, [series.images[k] for k in keep], series.spacing,
                      lambda m: m[keep])
    return apply


# name -> (what it imitates, the change). The phantoms' own ranges are in docs/phantoms.md.
PERTURBATIONS: dict[str, tuple[str, Perturbation]] = {
    "as generated": ("the development series themselves", _same),
    "mirrored": ("left-right mirrored: the RV on the other side", _mirrored),
    "rotated 90°": ("in-plane rotation beyond the phantoms' ±40°", _rotated),
    "0.75 mm, interpolated": ("interpolated to 0.75 mm pixels (scanner zero-filling; "
                              "phantoms 1.2-2.0), the truth with them", resampled(0.75)),
    "0.75 mm, acquired": ("rendered with 0.75 mm pixels, same field of view and SNR: the "
                          "truth exact", rerendered(pixel_size(0.75))),
    "2.4 mm, acquired": ("rendered with 2.4 mm pixels, coarser than any phantom",
                         rerendered(pixel_size(2.4))),
    "grey blood": ("blood at 0.7 of the scar's signal: poor blood suppression "
                   "(phantoms 0.22-0.6)", rerendered(tissue_signal(blood=0.7))),
    "remote not nulled": ("remote myocardium at 0.2 of the scar's signal: inversion time "
                          "too short (phantoms 0.02-0.11)",
                          rerendered(tissue_signal(myocardium=0.2))),
    "weak enhancement": ("scar only 1.4x the blood (phantoms 1.7-4.5x)",
                         rerendered(weaker_enhancement(1.4))),
    "SNR 5": ("scar-to-noise 5 (phantoms 8-40)", rerendered(snr(5.0))),
    "shading 0.6-1.4": ("a stronger coil-sensitivity ramp across the field of view",
                        shading(0.6, 1.4)),
    "heart 90 mm off centre": ("a wide field of view with the heart to one side "
                               "(phantoms: within 22 mm)", off_centre(90.0)),
    "3 mid slices": ("a short stack: three mid-ventricular slices", mid_slices(3)),
}
REFERENCE = "as generated"
# Leading hex digits of each model's sha256 the report names (a test holds it to the manifest).
SHA_SHOWN = 16
# The development phantoms: design decisions were measured on them (README); training
# (seed 1000) and the test (seed 2000) never see them.
DEVELOPMENT_SEED = 3000


@dataclass(frozen=True)
class StressScore:
    series_id: str
    perturbation: str
    has_scar: bool
    scar_dsc: float  # NaN without scar in the truth
    myocardium_dsc: float
    abs_scar_percent_error: float
    scar_called: bool
    # The FWHM reference inside the true myocardium on the same changed pixels: a change
    # that moves the half-maximum border moves the truth's border away from the pixels too.
    fwhm_scar_dsc: float


def score_changed(series_id: str, perturbation: str, series: LabelledSeries,
                  myocardium_net: Network, scar_net: Network) -> StressScore:
    seg = segment(series.images, series.spacing, myocardium_net, scar_net)
    truth_myocardium, truth_scar = series.true_myocardium, series.true_scar
    has_scar = bool(truth_scar.any())
    error = 100.0 * abs(scar_fraction(seg.scar, seg.myocardium)
                        - scar_fraction(truth_scar, truth_myocardium))
    nan = float("nan")
    return StressScore(series_id, perturbation, has_scar,
                       metrics.dice(seg.scar, truth_scar) if has_scar else nan,
                       metrics.dice(seg.myocardium, truth_myocardium), error,
                       bool(seg.scar.any()),
                       metrics.dice(fwhm_scar(series.images, truth_myocardium), truth_scar)
                       if has_scar else nan)


def series_spec(series_dir: Path) -> PhantomSpec:
    """The parameters a written series was rendered from, drawn again from its seed and index."""
    recorded = json.loads((Path(series_dir) / "meta.json").read_text())["spec"]
    return sample_spec(recorded["seed"], recorded["index"],
                       recorded_obstruction_probability(recorded))


def stress_test(series_dirs: Sequence[Path], myocardium_net: Network, scar_net: Network,
                perturbations: Sequence[str] = tuple(PERTURBATIONS), seed: int = 0
                ) -> list[StressScore]:
    """Every series under every perturbation; noise and padding drawn per series from ``seed``."""
    scores = []
    for number, series_dir in enumerate(tqdm(series_dirs, desc="stress", unit="series")):
        series = PhantomSource(series_dir).read()
        spec = series_spec(series_dir)
        for name in perturbations:
            rng = np.random.default_rng([seed, number])
            changed = PERTURBATIONS[name][1](series, spec, rng)
            scores.append(score_changed(Path(series_dir).name, name, changed, myocardium_net,
                                        scar_net))
    return scores


def _column(scores: Sequence[StressScore], name: str, field: str) -> np.ndarray:
    rows = sorted((s for s in scores if s.perturbation == name), key=lambda s: s.series_id)
    return np.array([getattr(s, field) for s in rows], dtype=float)


def summarise(scores: Sequence[StressScore]) -> list[dict]:
    """Per perturbation: medians, and its scar DSC paired against the unchanged series."""
    names = list(dict.fromkeys(s.perturbation for s in scores))
    reference = _column(scores, REFERENCE, "scar_dsc")
    rows = []
    for name in names:
        dsc = _column(scores, name, "scar_dsc")
        with_scar = ~np.isnan(reference) & ~np.isnan(dsc)
        change = dsc[with_scar] - reference[with_scar]
        free = np.isnan(reference)
        rows.append({
            "perturbation": name,
            "scar_dsc_median": float(np.median(dsc[with_scar])),
            "scar_dsc_change_median": float(np.median(change)),
            "worse_by_0.05": int((change < -0.05).sum()),
            "series_with_scar": int(with_scar.sum()),
            "p": (metrics.wilcoxon(dsc[with_scar], reference[with_scar]).p_value
                  if name != REFERENCE else float("nan")),
            "myocardium_dsc_median": float(np.median(_column(scores, name, "myocardium_dsc"))),
            "abs_scar_percent_error_median": float(np.median(
                _column(scores, name, "abs_scar_percent_error"))),
            "scar_called_on_scar_free": int(_column(scores, name, "scar_called")[free].sum()),
            "scar_free_series": int(free.sum()),
            "fwhm_scar_dsc_median": float(np.nanmedian(_column(scores, name, "fwhm_scar_dsc"))),
        })
    return rows


def markdown(rows: Sequence[dict], context: str) -> str:
    lines = [
        "# Stress test of the cascade on changed phantom series", "",
        "**Synthetic phantoms only; not validated on patient data.**", "",
        context, "",
        "| change | what it imitates | scar DSC | change (paired) | worse by > 0.05 | p "
        "| myocardium DSC | abs scar-% error | scar on scar-free | FWHM* scar DSC |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p = "" if np.isnan(row["p"]) else f"{row['p']:.3f}"
        lines.append(
            f"| {row['perturbation']} | {PERTURBATIONS[row['perturbation']][0]} "
            f"| {row['scar_dsc_median']:.3f} | {row['scar_dsc_change_median']:+.3f} "
            f"| {row['worse_by_0.05']}/{row['series_with_scar']} | {p} "
            f"| {row['myocardium_dsc_median']:.3f} | {row['abs_scar_percent_error_median']:.2f} "
            f"| {row['scar_called_on_scar_free']}/{row['scar_free_series']} "
            f"| {row['fwhm_scar_dsc_median']:.3f} |")
    lines += ["", "Medians over series; scar DSC over series with scar. The change is the "
              "median of each series' scar DSC minus its own as generated; p is the Wilcoxon "
              "signed-rank test of the same pairs (two-sided). FWHM* thresholds at half the "
              "series' myocardial peak inside the **true** myocardium, on the same changed "
              "pixels: where it falls too, the change moved the half-maximum border that the "
              "truth follows, not only the network's view."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", type=Path, default=Path("models"))
    parser.add_argument("--work", type=Path, default=Path("runs/stress"),
                        help="where the phantom series are written (reused)")
    parser.add_argument("--series", type=int, default=60)
    parser.add_argument("--seed", type=int, default=DEVELOPMENT_SEED)
    parser.add_argument("--pipeline", default=None, help="default: the manifest's default")
    parser.add_argument("--out", type=Path, default=None,
                        help="report (default: <models>/STRESS.md, scores beside it)")
    args = parser.parse_args(argv)
    registry = load_registry(args.models, provider="cpu")
    pipeline = registry.pipelines[args.pipeline or registry.default_pipeline]
    series_dirs = generate_many(args.work / "phantoms", args.series, args.seed)
    scores = stress_test(series_dirs, pipeline.myocardium.network, pipeline.scar.network)
    out = args.out or args.models / "STRESS.md"
    write_csv(scores, out.parent / "evaluation" / "stress.csv")
    models = ", ".join(f"`{m.name}` {m.version} (sha256 {m.sha256[:SHA_SHOWN]})"
                       for m in (pipeline.myocardium, pipeline.scar))
    context = (f"Made by `python -m training.studies.stress` with pipeline `{pipeline.name}`: "
               f"{models}, thresholds as served, on "
               f"{args.series} phantom series of seed {args.seed}"
               + (" (the development series: never trained or tested on)"
                  if args.seed == DEVELOPMENT_SEED else "")
               + ". Each change is applied to the same series and their truth; the phantoms' "
               "own ranges are in docs/phantoms.md.")
    out.write_text(markdown(summarise(scores), context))
    print(out.read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
