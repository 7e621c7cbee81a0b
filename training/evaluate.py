"""Evaluation of the exported ONNX models on held-out labelled series (phantoms, EMIDEC).

Each series goes through the service's own pipeline code
(:mod:`service.pipeline.segment`) with onnxruntime, so the figures describe what is
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

from service.pipeline.acceptance import lv_ring_slices
from service.pipeline.contrast import read_contrast
from service.pipeline.postprocess import clean_myocardium
from service.pipeline.quality import MAX_INTERVAL_WIDTH_PERCENT, myocardium_gaps
from service.pipeline.quantify import fwhm_scar, nsd_scar, scar_fraction
from service.pipeline.segment import (
    Network,
    Segmentation,
    masks_from_regions,
    myocardium_probability,
    scar_regions,
    segment_on,
)
from service.pipeline.uncertainty import IntervalCalibration, ambiguity, calibrate, interval
from training import metrics
from training.data.sources import LabelledSeries, Source, as_source

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
    test_set: str = ""
    contrast: str = ""  # the series' LGE contrast
    # The contrast the service's image reading gives on this method's myocardium (EMIDEC has
    # no headers to read; a phantom's headers would say dark-blood before the image is read).
    contrast_read: str = ""
    # The scar % interval (network methods with a calibration; NaN otherwise).
    interval_low: float = float("nan")
    interval_high: float = float("nan")
    # Whether the service would refuse the series as no LV heart (no closed LV ring).
    refused: bool = False
    # Whether it would mark the result for review on the interval's width or a gap in the
    # myocardium (the mass and spacing rules need a real header; EMIDEC has none).
    review: bool = False


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


def choose_thresholds(sources: Sequence[Source | Path], networks: Mapping[str, Network],
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
    for source in tqdm(sources, desc="thresholds (validation)", unit="series"):
        series = as_source(source).read()
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


# The network pipelines and the scar network each one runs (on the predicted myocardium),
# and the reference run of Protocol 2 on the true one.
PIPELINE_RUNS = {"cascade-unet": ("scar_unet", "predicted"), "enet": ("enet_p2", "predicted"),
                 "enet-raw": ("enet_p1", "predicted"),
                 "enet-true-myocardium": ("enet_p2", "true")}


def network_segmentations(series: LabelledSeries, networks: Mapping[str, Network]
                          ) -> tuple[np.ndarray, dict[str, Segmentation]]:
    """The myocardium network's own ring, and each network method's masks on one series,
    as the service draws them."""
    images, spacing = series.images, series.spacing
    myo_p = myocardium_probability(images, spacing, networks["myocardium_unet"])
    myo = clean_myocardium(myo_p)
    true_myo = series.true_myocardium
    given = {"predicted": (myo, myo_p), "true": (true_myo, true_myo.astype(np.float32))}
    return myo, {method: segment_on(images, spacing, *given[which], networks[net])
                 for method, (net, which) in PIPELINE_RUNS.items()}


def score_series(source: Source | Path, networks: Mapping[str, Network], test_set: str = "",
                 calibrations: Mapping[str, IntervalCalibration] | None = None
                 ) -> list[SeriesScore]:
    """Every method on one series; ``networks`` has myocardium_unet, scar_unet, enet_p1/p2.

    ``calibrations`` (by method) add each network method's scar % interval.
    """
    source = as_source(source)
    series = source.read()
    images, spacing = series.images, series.spacing
    true_myo, true_scar = series.true_myocardium, series.true_scar
    first_ring, segs = network_segmentations(series, networks)
    # The service refuses a series on the myocardium network's own ring.
    refused = not lv_ring_slices(first_ring, spacing)
    masks = {method: (seg.scar, seg.myocardium) for method, seg in segs.items()}
    masks["4sd"] = (nsd_scar(images, true_myo, 4.0), true_myo)
    masks["fwhm"] = (fwhm_scar(images, true_myo), true_myo)

    has_scar = bool(true_scar.any())
    true_pct = 100.0 * scar_fraction(true_scar, true_myo)
    nan = float("nan")
    out = []
    for method, (scar, myocardium) in masks.items():
        pct = 100.0 * scar_fraction(scar, myocardium)
        low = high = nan
        calibration = (calibrations or {}).get(method)
        if calibration is not None and method in segs:
            net = networks[PIPELINE_RUNS[method][0]]
            spread = ambiguity(segs[method].scar_probability, myocardium, net.threshold,
                               calibration.offset)
            low, high = interval(pct, spread, calibration)
        out.append(SeriesScore(
            series_id=source.series_id, method=method, has_scar=has_scar,
            has_obstruction=bool(series.true_obstruction.any()),
            true_scar_percent=true_pct, scar_percent=pct,
            abs_scar_percent_error=abs(pct - true_pct),
            scar_dsc=metrics.dice(scar, true_scar) if has_scar else nan,
            scar_sensitivity=metrics.sensitivity(scar, true_scar) if has_scar else nan,
            scar_specificity=metrics.specificity(scar[true_myo], true_scar[true_myo]),
            scar_accuracy=metrics.accuracy(scar[true_myo], true_scar[true_myo]),
            myocardium_dsc=metrics.dice(myocardium, true_myo), test_set=test_set,
            contrast=source.contrast,
            contrast_read=read_contrast(images, myocardium).contrast,
            interval_low=low, interval_high=high,
            refused=method in segs and refused,
            review=method in segs and _review(myocardium, low, high),
        ))
    return out


def _review(myocardium: np.ndarray, low: float, high: float) -> bool:
    return bool(myocardium_gaps(myocardium)
                or (not math.isnan(low) and high - low > MAX_INTERVAL_WIDTH_PERCENT))


# Threshold offsets and floors (percentage points) the interval's calibration chooses from.
INTERVAL_OFFSETS = (0.1, 0.2, 0.3)
INTERVAL_FLOORS = (0.5, 1.0, 2.0, 3.0)
INTERVAL_LEVEL = 0.95


def calibrate_intervals(sources: Sequence[Source | Path], networks: Mapping[str, Network],
                        offsets: Sequence[float] = INTERVAL_OFFSETS,
                        floors: Sequence[float] = INTERVAL_FLOORS,
                        level: float = INTERVAL_LEVEL) -> dict[str, IntervalCalibration]:
    """Each network pipeline's interval, calibrated (split conformal) on these series."""
    methods = list(NETWORK_METHODS)
    errors: dict[str, list[float]] = {m: [] for m in methods}
    spreads: dict[str, dict[float, list[float]]] = {m: {o: [] for o in offsets}
                                                    for m in methods}
    for source in tqdm(sources, desc="interval calibration (validation)", unit="series"):
        series = as_source(source).read()
        _, segs = network_segmentations(series, networks)
        truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
        for method in methods:
            seg, net = segs[method], networks[PIPELINE_RUNS[method][0]]
            errors[method].append(100.0 * scar_fraction(seg.scar, seg.myocardium) - truth)
            for offset in offsets:
                spreads[method][offset].append(ambiguity(seg.scar_probability, seg.myocardium,
                                                         net.threshold, offset))
    return {m: calibrate(errors[m], spreads[m], floors, level) for m in methods}


def evaluate(sources: Sequence[Source | Path], networks: Mapping[str, Network],
             test_set: str = "", calibrations: Mapping[str, IntervalCalibration] | None = None
             ) -> list[SeriesScore]:
    scores = []
    for source in tqdm(sources, desc=f"evaluate {test_set}".strip(), unit="series"):
        scores.extend(score_series(source, networks, test_set, calibrations))
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
        summary["methods"][method]["normals_at_most_1_percent"] = normals_at_most(scores, method)
        with_interval = [s for s in scores if s.method == method
                         and not math.isnan(s.interval_low)]
        summary["methods"][method]["interval"] = None if not with_interval else {
            "series": len(with_interval),
            "covered": sum(s.interval_low - 1e-9 <= s.true_scar_percent <= s.interval_high + 1e-9
                           for s in with_interval),
            "median_width": float(np.median([s.interval_high - s.interval_low
                                             for s in with_interval]))}
        summary["methods"][method]["refused"] = sum(s.refused for s in scores
                                                    if s.method == method)
        summary["methods"][method]["review"] = sum(s.review for s in scores
                                                   if s.method == method)
        rows = [s for s in scores if s.method == method and s.contrast]
        summary["methods"][method]["contrast_read_right"] = [
            sum(s.contrast_read == s.contrast for s in rows), len(rows)]
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


TEST_SET_LABELS = {"phantoms": "Phantom test (dark-blood, synthetic)",
                   "emidec": "EMIDEC test (bright-blood, real)",
                   "emidec-dark": "EMIDEC test darkened (dark-blood look, real anatomy)"}
# The release's targets (the real-LGE issue): medians over series, scar DSC on series with
# scar. The darkened EMIDEC set is held to the bright-blood figures of the same method.
TARGETS = {
    "phantoms": {"myocardium_dsc": (">=", 0.90), "scar_dsc": (">=", 0.80),
                 "abs_scar_percent_error": ("<=", 2.0)},
    "emidec": {"myocardium_dsc": (">=", 0.88), "scar_dsc": (">=", 0.72),
               "abs_scar_percent_error": ("<=", 2.5)},
    "emidec-dark": {"myocardium_dsc": ("within", 0.03), "scar_dsc": ("within", 0.03),
                    "abs_scar_percent_error": ("within", 1.0)},
}
# Scar-free (normal) EMIDEC test cases whose scar % must stay at or under 1 %: 6 of 7.
NORMAL_SCAR_PERCENT = 1.0
NORMAL_SHARE = 6 / 7
TARGET_METHODS = ("cascade-unet", "enet")
# The interval (the trust issue): coverage of the expert's scar % and median width, and
# false refusals, on these test sets.
INTERVAL_COVERAGE, INTERVAL_WIDTH_PERCENT = 0.90, 6.0
TRUST_TEST_SETS = ("phantoms", "emidec")
FIELD_LABELS = {"myocardium_dsc": "myocardium DSC", "scar_dsc": "scar DSC",
                "abs_scar_percent_error": "abs scar-% error (points)"}


def normals_at_most(scores: Sequence[SeriesScore], method: str,
                    percent: float = NORMAL_SCAR_PERCENT) -> tuple[int, int]:
    """(scar-free series with a scar % of at most ``percent``, scar-free series)."""
    free = [s for s in scores if s.method == method and not s.has_scar]
    return sum(s.scar_percent <= percent for s in free), len(free)


def target_rows(summaries: Mapping[str, dict], targets: Mapping[str, Mapping] = TARGETS
                ) -> list[dict]:
    """Every target of every test set and method: measured median, its interval, met or not."""
    rows = []
    for test_set, fields in targets.items():
        if test_set not in summaries:
            continue
        for method in TARGET_METHODS:
            for field, (op, bound) in fields.items():
                r = summaries[test_set]["methods"][method][field]
                if op == "within":
                    reference = summaries.get("emidec", {}).get("methods", {}).get(method)
                    if reference is None:
                        continue
                    ref = reference[field]["median"]
                    met = abs(r["median"] - ref) <= bound
                    target = f"within {bound:g} of {_fmt(ref)}"
                else:
                    met = r["median"] >= bound if op == ">=" else r["median"] <= bound
                    target = f"{op} {bound:g}"
                rows.append({"test_set": test_set, "method": method, "field": field,
                             "median": r["median"], "ci": r["median_ci"], "target": target,
                             "met": bool(met)})
        if test_set in TRUST_TEST_SETS:
            rows += _trust_rows(test_set, summaries[test_set])
        if test_set == "emidec":
            for method in TARGET_METHODS:
                ok, n = summaries[test_set]["methods"][method]["normals_at_most_1_percent"]
                rows.append({"test_set": test_set, "method": method,
                             "field": f"normal cases with scar <= {NORMAL_SCAR_PERCENT:g} %",
                             "median": ok, "ci": None, "target": f">= {NORMAL_SHARE:.0%} of {n}",
                             "met": n > 0 and ok >= NORMAL_SHARE * n - 1e-9, "of": n})
    return rows


def _trust_rows(test_set: str, summary: dict) -> list[dict]:
    rows = []
    for method in TARGET_METHODS:
        m = summary["methods"][method]
        n = m["n_series"]
        rows.append({"test_set": test_set, "method": method, "field": "series refused",
                     "median": m["refused"], "ci": None, "target": "0", "of": n,
                     "met": m["refused"] == 0})
        rows.append({"test_set": test_set, "method": method,
                     "field": "series marked for review (interval width, gaps)",
                     "median": m["review"], "ci": None, "target": "reported", "of": n,
                     "met": True})
        iv = m.get("interval")
        if iv is None:
            continue
        rows.append({"test_set": test_set, "method": method,
                     "field": "interval holds the expert's scar %", "median": iv["covered"],
                     "ci": None, "target": f">= {INTERVAL_COVERAGE:.0%} of {iv['series']}",
                     "of": iv["series"],
                     "met": iv["covered"] >= INTERVAL_COVERAGE * iv["series"] - 1e-9})
        rows.append({"test_set": test_set, "method": method,
                     "field": "interval median width (points)", "median": iv["median_width"],
                     "ci": None, "target": f"<= {INTERVAL_WIDTH_PERCENT:g}",
                     "met": iv["median_width"] <= INTERVAL_WIDTH_PERCENT})
    return rows


def manifest_evaluation(summaries: Mapping[str, dict]) -> dict[str, dict]:
    """Each model's figures per test set for the manifest and its card (flat keys).

    The myocardium U-Net's figure is the ENet pipeline's myocardium, which is its mask
    as drawn (the cascade redraws it with the scar U-Net).
    """
    fields = {"myocardium_unet": ("enet", ("myocardium_dsc",)),
              "scar_unet": ("cascade-unet", ("myocardium_dsc", "scar_dsc", "scar_sensitivity",
                                             "scar_specificity", "abs_scar_percent_error")),
              "enet_p2": ("enet", ("scar_dsc", "scar_sensitivity", "abs_scar_percent_error")),
              "enet_p1": ("enet-raw", ("scar_dsc", "scar_sensitivity",
                                       "abs_scar_percent_error"))}
    return {task: {f"{test_set} {f} median": summary["methods"][method][f]["median"]
                   for test_set, summary in summaries.items() for f in names}
            for task, (method, names) in fields.items()}


def bland_altman(scores: Sequence[SeriesScore], path: Path, title: str,
                 methods: Sequence[str] = (*TARGET_METHODS, "fwhm")) -> None:
    """Scar % of each method against the expert's: difference over mean, bias and 95 % limits."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(methods), figsize=(4.4 * len(methods), 4.0), sharey=True)
    for ax, method in zip(np.atleast_1d(axes), methods, strict=True):
        rows = [s for s in scores if s.method == method]
        ours = np.array([s.scar_percent for s in rows])
        truth = np.array([s.true_scar_percent for s in rows])
        diff, mean = ours - truth, (ours + truth) / 2
        ax.scatter(mean, diff, s=14, alpha=0.7)
        if diff.size:
            bias, sd = float(diff.mean()), float(diff.std(ddof=1)) if diff.size > 1 else 0.0
            for y, style in ((bias, "-"), (bias + 1.96 * sd, "--"), (bias - 1.96 * sd, "--")):
                ax.axhline(y, color="grey", linestyle=style, linewidth=1)
            ax.set_title(f"{SHORT_LABELS[method]}: bias {bias:+.1f}, limits "
                         f"{bias - 1.96 * sd:+.1f} to {bias + 1.96 * sd:+.1f}", fontsize=9)
        ax.set_xlabel("mean of method and expert scar % ")
        ax.grid(alpha=0.3)
    np.atleast_1d(axes)[0].set_ylabel("method - expert (percentage points)")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def _verdict(row: dict) -> str:
    if row["target"] == "reported":
        return ""
    return "met" if row["met"] else "**not met**"


def _targets_table(summaries: Mapping[str, dict], targets: Mapping[str, Mapping]) -> str:
    lines = [f"| test set | method | figure | median | {MEDIAN_CI_LEVEL * 100:g} % CI | target | |",
             "|---|---|---|---|---|---|---|"]
    for r in target_rows(summaries, targets):
        if "of" in r:
            measured, ci = f"{r['median']} of {r['of']}", ""
        elif r["ci"] is None:
            measured, ci = _fmt(r["median"]), ""
        else:
            measured, ci = _fmt(r["median"]), f"{_fmt(r['ci'][0])}-{_fmt(r['ci'][1])}"
        lines.append(f"| {r['test_set']} | {SHORT_LABELS[r['method']]} | "
                     f"{FIELD_LABELS.get(r['field'], r['field'])} | {measured} | {ci} | "
                     f"{r['target']} | {_verdict(r)} |")
    return "\n".join(lines)


def _side_by_side(summaries: Mapping[str, dict]) -> str:
    names = list(summaries)
    header = ("| method | figure | " + " | ".join(names) + " |\n|---|---|"
              + "---|" * len(names))
    rows = []
    for method in METHODS:
        for field in ("myocardium_dsc", "scar_dsc", "abs_scar_percent_error"):
            if method in ("4sd", "fwhm", "enet-true-myocardium") and field == "myocardium_dsc":
                continue
            cells = []
            for name in names:
                r = summaries[name]["methods"][method][field]
                cells.append(f"{_fmt(r['median'])} ({_fmt(r['median_ci'][0])}-"
                             f"{_fmt(r['median_ci'][1])})")
            rows.append(f"| {SHORT_LABELS[method]} | {FIELD_LABELS[field]} | "
                        + " | ".join(cells) + " |")
    return header + "\n" + "\n".join(rows)


def _contrast_sentence(methods: Mapping[str, dict]) -> str:
    """How often the image reading of the contrast (``service.pipeline.contrast``) was right."""
    parts = []
    for method in TARGET_METHODS:
        right, n = methods[method].get("contrast_read_right", (0, 0))
        if n:
            parts.append(f"{right} of {n} on the {SHORT_LABELS[method]}'s myocardium")
    return ("" if not parts else
            "The contrast read from the image (`service.pipeline.contrast`, as for a series whose "
            "headers do not name it) was right on " + " and ".join(parts) + ".")


def accuracy_table(summaries: Mapping[str, dict]) -> str:
    """The README's short table: the default pipeline per test set, medians (95 % CI)."""
    def cell(r: dict, digits: int = 3) -> str:
        return (f"{_fmt(r['median'], digits)} ({_fmt(r['median_ci'][0], digits)}-"
                f"{_fmt(r['median_ci'][1], digits)})")

    lines = ["| test set | series | myocardium DSC | scar DSC | abs scar-% error (points) "
             "| interval holds the expert's scar % |", "|---|---|---|---|---|---|"]
    for name, summary in summaries.items():
        m = summary["methods"]["cascade-unet"]
        iv = m.get("interval")
        coverage = "n/a" if not iv else f"{iv['covered']} of {iv['series']}"
        lines.append(f"| {TEST_SET_LABELS.get(name, name)} | {m['n_series']} | "
                     f"{cell(m['myocardium_dsc'])} | {cell(m['scar_dsc'])} | "
                     f"{cell(m['abs_scar_percent_error'], 2)} | {coverage} |")
    return ("\n".join(lines)
            + "\n\nCascade U-Net (the default pipeline); scar DSC on series with scar.")


def _test_set_section(name: str, summary: dict, count: int) -> str:
    m = summary["methods"]
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
    on_true_myocardium = ("4sd", "fwhm")
    subgroup_header = ("| series with scar | n | "
                       + " | ".join(SHORT_LABELS[m] + "*" * (m in on_true_myocardium)
                                    for m in METHODS)
                       + " |\n|---|---|" + "---|" * len(METHODS))
    subgroups = "\n".join(
        f"| {group} | {g['n_series']} | " + " | ".join(_fmt(g[m]) for m in METHODS) + " |"
        for group, g in summary["subgroups"].items())
    return f"""## {TEST_SET_LABELS.get(name, name)}
{count} series, {m['cascade-unet']['n_series'] - m['cascade-unet']['scar_free_series']} with scar.
Median (IQR) per series. {_contrast_sentence(m)}

{header}
{chr(10).join(rows)}

Wilcoxon signed-rank tests (paired by series, two-sided):

| comparison | figure | n | medians | p |
|---|---|---|---|---|
{tests}

Scar DSC by kind of series (median; * = threshold inside the true myocardium):

{subgroup_header}
{subgroups}

![box plots, {name}](evaluation/boxplots_{name}.png)
![Bland-Altman, {name}](evaluation/bland_altman_{name}.png)
"""


def markdown_report(summaries: Mapping[str, dict], targets: Mapping[str, Mapping],
                    context: dict) -> str:
    """``models/EVALUATION.md``: the targets, every test set side by side, then each in full."""
    timing = "\n".join(f"| {k} | {v:.1f} |" for k, v in context["minutes"].items())
    thresholds = ", ".join(f"{METHOD_LABELS[SCAR_NETWORKS[task]]} {t:g}"
                           for task, t in context["thresholds"].items())
    counts = context["test_sets"]
    real = context.get("emidec")
    real_text = ("" if not real else
                 f" EMIDEC `train` ({real['train_cases']} cases, each as acquired and "
                 f"darkened, {real['copies_per_case_and_contrast']} copies per contrast at "
                 f"nominal spacings of {real['train_spacing_range_mm'][0]:g}-"
                 f"{real['train_spacing_range_mm'][1]:g} mm) and EMIDEC `validation` "
                 f"({real['validation_cases']} cases, both contrasts) took part too; the "
                 f"EMIDEC test cases are read at a nominal {real['nominal_spacing_mm']:g} mm.")
    sections = "\n".join(_test_set_section(name, summary, counts[name])
                          for name, summary in summaries.items())
    return f"""# Evaluation on held-out test sets

**Research use only: not a medical device, not for clinical use.**

Made by `{context['command']}` on {context['date']} ({context['machine']}).
Test sets, never used in training or model selection:
{chr(10).join(f"- {TEST_SET_LABELS.get(n, n)}: {c} series" for n, c in counts.items())}

Training used {context['train_series']} and validation {context['validation_series']} phantom
series of seed {context['train_seed']} (the phantom test set is seed {context['test_seed']}).
{real_text}
Each series went through the service's own pipeline code with the exported ONNX models in
onnxruntime, each scar network's probability thresholded where it gave the best median
scar DSC on the validation series ({thresholds}; the model cards list every threshold tried).

Per-series figures (volume over all slices). Scar DSC and sensitivity are over series with
scar; specificity and accuracy inside the true (expert) myocardium; scar % is scar over
myocardium of the method's own masks; scar is infarct plus microvascular obstruction. The
networks use the myocardium they predict; the 4-SD and FWHM references threshold inside the
**expert** myocardium (remote region: the darkest of six sectors per slice; FWHM peak: 99th
percentile of the series' myocardium), as they would be run on expert contours.
Intervals are distribution-free {MEDIAN_CI_LEVEL * 100:g} % intervals of the median (two order
statistics, ranks from a Binomial(n, 1/2)): a target inside one is one that test set cannot
tell apart from the measured median, met or not.

## Targets (cascade U-Net and ENet P2)
{_targets_table(summaries, targets)}

## Every test set side by side: median ({MEDIAN_CI_LEVEL * 100:g} % CI)
{_side_by_side(summaries)}

{sections}
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

Per-series numbers: `evaluation/scores.csv` (column `test_set`).
"""
