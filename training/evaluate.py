"""Evaluation of the exported ONNX models on held-out phantom series.

Each series goes through the service's own pipeline code
(:mod:`service.segment`) with onnxruntime, so the figures describe what is
shipped, not the Keras models. Scar metrics are per series (volume):

* DSC and sensitivity over the whole volume, on series that have scar;
* specificity and accuracy inside the true myocardium, where they are not
  swamped by thousands of trivially correct background pixels;
* scar % = scar / myocardium of the method's own masks (the networks use
  their predicted myocardium, the classical thresholds the true one, as
  the reference methods would be run on expert contours).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.postprocess import clean_myocardium
from service.quantify import fwhm_scar, nsd_scar, scar_fraction
from service.segment import (
    Network,
    masks_from_regions,
    myocardium_probability,
    scar_regions,
    segment_on,
)

from . import metrics
from .phantoms import load_series, load_truth

NETWORK_METHODS = ("cascade-unet", "enet", "enet-raw")
METHODS = (*NETWORK_METHODS, "enet-true-myocardium", "4sd", "fwhm")
METHOD_LABELS = {
    "cascade-unet": "Cascade U-Net",
    "enet": "ENet P2 (crop x predicted myocardium)",
    "enet-raw": "ENet P1 (raw crop)",
    "enet-true-myocardium": "ENet P2 on the true myocardium (paper's setting)",
    "4sd": "4-SD in the true myocardium",
    "fwhm": "FWHM in the true myocardium",
}


@dataclass(frozen=True)
class SeriesScore:
    series_id: str
    method: str
    has_scar: bool
    has_obstruction: bool  # microvascular obstruction (a dark core in the scar) in the truth
    true_scar_percent: float
    scar_percent: float
    abs_scar_percent_error: float
    scar_dsc: float
    scar_sensitivity: float
    scar_specificity: float
    scar_accuracy: float
    myocardium_dsc: float


@dataclass(frozen=True)
class PhantomSeries:
    images: list[np.ndarray]
    spacing: tuple[float, float]
    true_myocardium: np.ndarray
    true_scar: np.ndarray
    true_obstruction: np.ndarray


def read_series(series_dir: Path) -> PhantomSeries:
    """A written phantom series and its truth, slices in the truth's (base-to-apex) order."""
    datasets, images = load_series(series_dir)
    truth = load_truth(series_dir)
    masks = [np.stack([truth[d.SOPInstanceUID][k] for d in datasets]).astype(bool)
             for k in ("myocardium", "scar", "mvo")]
    return PhantomSeries(images, tuple(float(v) for v in datasets[0].PixelSpacing), *masks)


SHORT_LABELS = {"cascade-unet": "cascade", "enet": "ENet P2", "enet-raw": "ENet P1",
                "enet-true-myocardium": "P2 true myo", "4sd": "4-SD", "fwhm": "FWHM"}


# The scar network of each network pipeline.
SCAR_NETWORKS = {"scar_unet": "cascade-unet", "enet_p2": "enet", "enet_p1": "enet-raw"}
# 0.9 was added when the scar U-Net's validation curve was still rising at 0.8, the old edge.
THRESHOLDS = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def best_threshold(dsc_by_threshold: Mapping[float, Sequence[float]]) -> float:
    """The threshold with the highest median DSC; of equals, the one nearest 0.5."""
    return max(dsc_by_threshold,
               key=lambda t: (round(float(np.median(dsc_by_threshold[t])), 6), -abs(t - 0.5)))


def choose_thresholds(series_dirs: Sequence[Path], networks: Mapping[str, Network],
                      grid: Sequence[float] = THRESHOLDS) -> dict[str, dict]:
    """Each scar network's decision threshold, by median scar DSC on validation series.

    Cross-entropy weighted towards scar (and the Dice term) make a network
    call scar at probabilities its calibrated twin would not; the threshold
    that undoes this is chosen on series the test set never sees, through
    the same post-processing the service runs (one network run per series,
    every threshold applied to it).
    """
    dsc: dict[str, dict[float, list[float]]] = {task: {t: [] for t in grid}
                                                for task in SCAR_NETWORKS}
    for d in tqdm(series_dirs, desc="thresholds (validation)", unit="series"):
        series = read_series(d)
        if not series.true_scar.any():
            continue
        myo_p = myocardium_probability(series.images, series.spacing,
                                       networks["myocardium_unet"])
        myo = clean_myocardium(myo_p)
        for task in SCAR_NETWORKS:
            regions = scar_regions(series.images, series.spacing, myo, networks[task])
            for t in grid:
                net = dataclasses.replace(networks[task], threshold=t)
                seg = masks_from_regions(regions, series.spacing, myo, myo_p, net)
                dsc[task][t].append(metrics.dice(seg.scar, series.true_scar))
    return {task: {"threshold": best_threshold(dsc[task]),
                   "validation_median_scar_dsc": {f"{t:g}": float(np.median(v))
                                                  for t, v in dsc[task].items()},
                   "validation_series_with_scar": len(dsc[task][grid[0]])}
            for task in SCAR_NETWORKS}


def score_series(series_dir: Path, networks: Mapping[str, Network]) -> list[SeriesScore]:
    """Every method on one series; ``networks`` has myocardium_unet, scar_unet, enet_p1/p2."""
    series = read_series(series_dir)
    images, spacing = series.images, series.spacing
    true_myo, true_scar = series.true_myocardium, series.true_scar
    myo_p = myocardium_probability(images, spacing, networks["myocardium_unet"])
    myo = clean_myocardium(myo_p)

    masks: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    given = {"predicted": (myo, myo_p), "true": (true_myo, true_myo.astype(np.float32))}
    for method, (net, which) in {
        "cascade-unet": ("scar_unet", "predicted"), "enet": ("enet_p2", "predicted"),
        "enet-raw": ("enet_p1", "predicted"), "enet-true-myocardium": ("enet_p2", "true"),
    }.items():
        seg = segment_on(images, spacing, *given[which], networks[net])
        masks[method] = (seg.scar, seg.myocardium)
    masks["4sd"] = (nsd_scar(images, true_myo, 4.0), true_myo)
    masks["fwhm"] = (fwhm_scar(images, true_myo), true_myo)

    has_scar = bool(true_scar.any())
    true_pct = 100.0 * scar_fraction(true_scar, true_myo)
    nan = float("nan")
    out = []
    for method, (scar, myocardium) in masks.items():
        pct = 100.0 * scar_fraction(scar, myocardium)
        out.append(SeriesScore(
            series_id=Path(series_dir).name, method=method, has_scar=has_scar,
            has_obstruction=bool(series.true_obstruction.any()),
            true_scar_percent=true_pct, scar_percent=pct,
            abs_scar_percent_error=abs(pct - true_pct),
            scar_dsc=metrics.dice(scar, true_scar) if has_scar else nan,
            scar_sensitivity=metrics.sensitivity(scar, true_scar) if has_scar else nan,
            scar_specificity=metrics.specificity(scar[true_myo], true_scar[true_myo]),
            scar_accuracy=metrics.accuracy(scar[true_myo], true_scar[true_myo]),
            myocardium_dsc=metrics.dice(myocardium, true_myo),
        ))
    return out


def evaluate(series_dirs: Sequence[Path], networks: Mapping[str, Network]) -> list[SeriesScore]:
    scores = []
    for d in tqdm(series_dirs, desc="evaluate", unit="series"):
        scores.extend(score_series(d, networks))
    return scores


def _values(scores: Sequence[SeriesScore], method: str, field: str) -> np.ndarray:
    v = np.array([getattr(s, field) for s in scores if s.method == method], dtype=float)
    return v[~np.isnan(v)]


def median_iqr(values: np.ndarray) -> tuple[float, float]:
    if values.size == 0:
        return math.nan, math.nan
    q1, med, q3 = np.percentile(values, [25, 50, 75])
    return float(med), float(q3 - q1)


# Level of the confidence interval of each median (the targets table's column says it).
MEDIAN_CI_LEVEL = 0.95
FIELDS = ("scar_dsc", "scar_sensitivity", "scar_specificity", "scar_accuracy",
          "abs_scar_percent_error", "myocardium_dsc")


def summarise(scores: Sequence[SeriesScore]) -> dict:
    """Medians and IQRs per method and field, and the Wilcoxon comparisons."""
    summary: dict = {"methods": {}, "comparisons": []}
    for method in METHODS:
        summary["methods"][method] = {}
        for f in FIELDS:
            values = _values(scores, method, f)
            interval = metrics.median_confidence_interval(values, MEDIAN_CI_LEVEL)
            summary["methods"][method][f] = dict(
                zip(("median", "iqr"), median_iqr(values), strict=True),
                median_ci=[interval.low, interval.high], median_ci_coverage=interval.coverage)
        summary["methods"][method]["n_series"] = len(_values(scores, method, "scar_accuracy"))
        scar_free = [s for s in scores if s.method == method and not s.has_scar]
        summary["methods"][method]["scar_free_series_with_scar_called"] = sum(
            s.scar_percent > 0 for s in scar_free)
        summary["methods"][method]["scar_free_series"] = len(scar_free)
    pairs = [("enet", "enet-raw", "scar_dsc"), ("enet", "enet-raw", "abs_scar_percent_error"),
             ("cascade-unet", "enet", "scar_dsc"),
             ("cascade-unet", "enet", "abs_scar_percent_error"),
             ("cascade-unet", "4sd", "abs_scar_percent_error"),
             ("cascade-unet", "fwhm", "abs_scar_percent_error")]
    for a, b, field in pairs:
        rows_a = {s.series_id: getattr(s, field) for s in scores if s.method == a}
        rows_b = {s.series_id: getattr(s, field) for s in scores if s.method == b}
        keys = [k for k in rows_a if not (math.isnan(rows_a[k]) or math.isnan(rows_b[k]))]
        result = metrics.wilcoxon([rows_a[k] for k in keys], [rows_b[k] for k in keys])
        summary["comparisons"].append({"a": a, "b": b, "field": field, "n": len(keys),
                                       "median_a": float(np.median([rows_a[k] for k in keys])),
                                       "median_b": float(np.median([rows_b[k] for k in keys])),
                                       "statistic": result.statistic,
                                       "p_value": result.p_value})
    summary["subgroups"] = subgroup_medians(scores)
    return summary


# Subgroups of the series with scar in which the scar DSC is read separately: the two
# failure modes the per-series scores showed (obstruction, small scars) and the rest.
SMALL_SCAR_PERCENT = 2.0
SUBGROUPS = {
    "with microvascular obstruction": lambda s: s.has_obstruction,
    f"small scar (< {SMALL_SCAR_PERCENT:g} % of the myocardium)":
        lambda s: s.true_scar_percent < SMALL_SCAR_PERCENT and not s.has_obstruction,
    "the rest": lambda s: s.true_scar_percent >= SMALL_SCAR_PERCENT and not s.has_obstruction,
}


def subgroup_medians(scores: Sequence[SeriesScore]) -> dict[str, dict]:
    """Median scar DSC per method within each subgroup of the series with scar."""
    out = {}
    for name, belongs in SUBGROUPS.items():
        chosen = [s for s in scores if s.has_scar and belongs(s)]
        out[name] = {"n_series": len({s.series_id for s in chosen})} | {
            method: median_iqr(_values(chosen, method, "scar_dsc"))[0] for method in METHODS}
    return out


def write_csv(scores: Sequence[Any], path: Path) -> None:
    """One row per score, a column per field (any dataclass: these, the stress test's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(scores[0])))
        writer.writeheader()
        for s in scores:
            writer.writerow(asdict(s))


def box_plots(scores: Sequence[SeriesScore], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("myocardium_dsc", NETWORK_METHODS[:1], "Myocardium DSC (myocardium U-Net)"),
              ("scar_dsc", METHODS, "Scar DSC per series"),
              ("scar_sensitivity", METHODS, "Scar sensitivity"),
              ("scar_specificity", METHODS, "Scar specificity (in true myocardium)"),
              ("abs_scar_percent_error", METHODS, "|scar % error| (percentage points)")]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 4.6))
    for ax, (field, methods, title) in zip(axes, panels, strict=True):
        data = [_values(scores, m, field) for m in methods]
        ax.boxplot(data, tick_labels=[SHORT_LABELS[m] for m in methods], showfliers=True)
        ax.set_title(title, fontsize=10)
        ax.tick_params(axis="x", rotation=45, labelsize=8)
        ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _fmt(value: float, digits: int = 3) -> str:
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f"{value:.{digits}f}"


def markdown_report(summary: dict, targets: Mapping[str, float], context: dict) -> str:
    """``models/EVALUATION.md``: tables of medians (IQR), the tests, the figures."""
    m = summary["methods"]
    cascade = m["cascade-unet"]
    checks = [
        ("myocardium DSC median", cascade["myocardium_dsc"], ">=", targets["myocardium_dsc"]),
        ("scar DSC median", cascade["scar_dsc"], ">=", targets["scar_dsc"]),
        ("abs scar-% error median (points)", cascade["abs_scar_percent_error"], "<=",
         targets["abs_scar_percent_error"]),
    ]
    target_rows = "\n".join(
        f"| {name} | {_fmt(r['median'])} | {_fmt(r['median_ci'][0])}-{_fmt(r['median_ci'][1])} "
        f"| {op} {t} | "
        f"{'met' if (r['median'] >= t if op == '>=' else r['median'] <= t) else '**not met**'} |"
        for name, r, op, t in checks)
    header = ("| method | scar DSC | sensitivity | specificity | accuracy | abs scar-% error "
              "| myocardium DSC | scar called on scar-free series |\n"
              "|---|---|---|---|---|---|---|---|")
    rows = []
    for method in METHODS:
        r = m[method]
        cells = [f"{_fmt(r[f]['median'], 3 if f != 'abs_scar_percent_error' else 2)} "
                 f"({_fmt(r[f]['iqr'], 3 if f != 'abs_scar_percent_error' else 2)})"
                 for f in FIELDS]
        rows.append(f"| {METHOD_LABELS[method]} | " + " | ".join(cells) +
                    f" | {r['scar_free_series_with_scar_called']}/{r['scar_free_series']} |")
    tests = "\n".join(
        f"| {METHOD_LABELS[c['a']]} vs {METHOD_LABELS[c['b']]} | {c['field']} | {c['n']} | "
        f"{_fmt(c['median_a'])} vs {_fmt(c['median_b'])} | {_fmt(c['p_value'], 4)} |"
        for c in summary["comparisons"])
    timing = "\n".join(f"| {k} | {v:.1f} |" for k, v in context["minutes"].items())
    subgroups = "\n".join(
        f"| {name} | {g['n_series']} | " + " | ".join(_fmt(g[m]) for m in METHODS) + " |"
        for name, g in summary["subgroups"].items())
    on_true_myocardium = ("4sd", "fwhm")
    subgroup_header = ("| series with scar | n | "
                       + " | ".join(SHORT_LABELS[m] + "*" * (m in on_true_myocardium)
                                    for m in METHODS)
                       + " |\n|---|---|" + "---|" * len(METHODS))
    thresholds = ", ".join(f"{METHOD_LABELS[SCAR_NETWORKS[task]]} {t:g}"
                           for task, t in context["thresholds"].items())
    return f"""# Evaluation on held-out synthetic phantoms

**These models are trained and evaluated on synthetic phantoms only. They are not
validated on patient data and are not for clinical use.**

Made by `{context['command']}` on {context['date']} ({context['machine']}).
Test set: {context['test_series']} phantom series of seed {context['test_seed']}, never used in
training or model selection ({context['test_scar_series']} with scar, the rest scar-free);
training used {context['train_series']} series and validation {context['validation_series']}
series of seed {context['train_seed']}. Each series went through the service's own
pipeline code with the exported ONNX models in onnxruntime, each scar network's
probability thresholded where it gave the best median scar DSC on the validation
series ({thresholds}; the model cards list every threshold tried).

Per-series figures (volume over all slices), median (IQR). Scar DSC and sensitivity are
over series with scar; specificity and accuracy are inside the true myocardium; scar % is
scar over myocardium of the method's own masks. The networks use the myocardium they
predict; the 4-SD and FWHM references threshold inside the **true** myocardium (remote
region: the darkest of six sectors per slice; FWHM peak: 99th percentile of the series'
myocardium), as they would be run on expert contours.

## Targets (cascade U-Net)
| figure | measured | {MEDIAN_CI_LEVEL * 100:g} % CI of the median | target | |
|---|---|---|---|---|
{target_rows}

The interval is distribution-free (two order statistics of the series, ranks from a
Binomial(n, 1/2)): a target inside it is one this test set cannot tell apart from the
measured median, met or not.

## All methods
{header}
{chr(10).join(rows)}

## Wilcoxon signed-rank tests (paired by series, two-sided)
| comparison | figure | n | medians | p |
|---|---|---|---|---|
{tests}

![box plots](evaluation/boxplots.png)

## Scar DSC by kind of series (median)
Microvascular obstruction: a dark core inside transmural scar, which the truth counts as
scar (as infarct size does). 4-SD and FWHM (*) threshold inside the true myocardium.

{subgroup_header}
{subgroups}

## Training curves
![myocardium U-Net](evaluation/curves_myocardium_unet.png)
![scar U-Net](evaluation/curves_scar_unet.png)
![ENet P2](evaluation/curves_enet_p2.png)
![ENet P1](evaluation/curves_enet_p1.png)

## Time (minutes, {context['machine']})
Each stage as it was done (a resumed command keeps the times of the stages it
reused; training time is the run's own clock, which adds up across resumes),
so the total is the cost of the command from scratch.

| stage | minutes |
|---|---|
{timing}

Per-series numbers: `evaluation/scores.csv`.
"""
