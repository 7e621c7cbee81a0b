"""Scoring the exported ONNX models on labelled series, one series at a time.

Each series goes through the service's own pipeline code
(:mod:`service.pipeline.segment`) with onnxruntime, so the figures describe what is
shipped, not the Keras models. Scores are per series (one 3-D figure over all
slices, as the EMIDEC challenge scores a case):

* DSC and sensitivity over the whole volume, on series that have scar;
* specificity and accuracy inside the true myocardium, where they are not
  swamped by thousands of trivially correct background pixels;
* scar % = scar / myocardium of the method's own masks (the networks use
  their predicted myocardium, the classical thresholds the true one, as
  the reference methods would be run on expert contours);
* microvascular obstruction (MVO, inside the scar): its DSC on series that
  have it, its % of the myocardium on every series, and the challenge's
  per-case DSC (1 where neither the expert nor the method has any).
"""

from __future__ import annotations

import csv
import dataclasses
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from service.pipeline.acceptance import is_unlike_training, lge_evidence
from service.pipeline.contrast import read_contrast
from service.pipeline.postprocess import encloses_a_hole
from service.pipeline.quality import interval_reason, myocardium_gaps
from service.pipeline.quantify import fwhm_scar, nsd_scar, scar_fraction
from service.pipeline.segment import (
    Network,
    Segmentation,
    masks_from_regions,
    myocardium_probability,
    ring_from,
    scar_regions,
    segment_on,
)
from service.pipeline.uncertainty import (
    ACTIONABLE_WIDTH_PERCENT,
    CalibrationSeries,
    IntervalCalibration,
    calibrate,
    calibrated_interval,
    interval,
    spread,
    spread_terms,
)
from training import metrics
from training.data.sources import LabelledSeries, PhantomSource, Source, as_source
from training.evaluation.gate import gate_verdict

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
    # Whether the service would refuse the series as no LV heart (no closed LV ring) or as
    # no LGE contrast (the image-reading gate).
    refused: bool = False
    # Whether it would mark the result for review on the interval's width, a gap in the
    # myocardium or a contrast unlike LGE (the mass and spacing rules need a real header;
    # EMIDEC has none).
    review: bool = False
    # Microvascular obstruction: the expert's and the method's % of the myocardium, its DSC
    # on series that have it (NaN otherwise), and the challenge's per-case DSC (1 where
    # neither has any). NaN for the classical methods, which draw no MVO.
    true_mvo_percent: float = float("nan")
    mvo_percent: float = float("nan")
    mvo_dsc: float = float("nan")
    mvo_case_dsc: float = float("nan")
    # Whether the image-reading gate flagged the contrast as unlike LGE (part of ``review``).
    contrast_flagged: bool = False
    # Slices whose myocardium does not enclose a cavity (an open band), of the method's own
    # myocardium and of the truth's; NaN for the classical methods (the true myocardium).
    open_slices: float = float("nan")
    true_open_slices: float = float("nan")


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


def best_threshold_across(by_group: Mapping[str, Mapping[float, Sequence[float]]]) -> float:
    """The threshold with the highest mean, over source groups, of each group's median DSC.

    Each group (phantoms; a real set in each contrast) weighs the same whatever its
    number of series, so the most numerous source cannot choose for the others; of
    equals, the one nearest 0.5.
    """
    grid = next(iter(by_group.values()))
    return max(grid, key=lambda t: (round(float(np.mean(
        [np.median(g[t]) for g in by_group.values() if len(g[t])])), 6), -abs(t - 0.5)))


# A series to score, alone (scored with the networks of the call) or with the networks that
# must score it (cross-validation: each held-out case with its own fold's networks).
Item = Source | Path | tuple[Source, Mapping[str, Network]]


def with_networks(items: Sequence[Item], networks: Mapping[str, Network] | None
                  ) -> list[tuple[Source, Mapping[str, Network]]]:
    out = []
    for item in items:
        if isinstance(item, tuple):
            out.append((as_source(item[0]), item[1]))
        elif networks is None:
            raise ValueError("a series without networks, and no networks given")
        else:
            out.append((as_source(item), networks))
    return out


def source_group(source: Source) -> str:
    """The kind of source and its contrast: a threshold must serve each alike."""
    return f"{type(source).__name__} {source.contrast}"


def threshold_masks(series: LabelledSeries, myocardium: np.ndarray,
                    myocardium_probability: np.ndarray, scar_net: Network,
                    grid: Sequence[float] = THRESHOLDS) -> dict[float, Segmentation]:
    """One scar network's masks at every threshold, from one run of the network."""
    regions = scar_regions(series.images, series.spacing, myocardium, scar_net)
    return {t: masks_from_regions(regions, series.spacing, myocardium, myocardium_probability,
                                  dataclasses.replace(scar_net, threshold=t))
            for t in grid}


def choose_thresholds(sources: Sequence[Item], networks: Mapping[str, Network] | None = None,
                      grid: Sequence[float] = THRESHOLDS) -> dict[str, dict]:
    """Each scar network's decision threshold, by scar DSC on validation series.

    Cross-entropy weighted towards scar (and the Dice term) make a network
    call scar at probabilities its calibrated twin would not; the threshold
    that undoes this is chosen on series the test set never sees, through
    the same post-processing the service runs (one network run per series,
    every threshold applied to it). The medians are taken per source group
    and averaged (:func:`best_threshold_across`): pooled, the phantoms'
    validation series outnumbered the real ones and chose 0.8, where EMIDEC
    `validation` as acquired had its best scar DSC at 0.5 and under-called
    scar by a median 12.9 points at 0.8 (docs/experiments.md, round 2).
    """
    dsc: dict[str, dict[str, dict[float, list[float]]]] = {task: {} for task in SCAR_NETWORKS}
    for source, nets in tqdm(with_networks(sources, networks),
                                 desc="thresholds (validation)", unit="series"):
        group = source_group(source)
        series = source.read()
        if not series.true_scar.any():
            continue
        myo_p = myocardium_probability(series.images, series.spacing, nets["myocardium_unet"])
        myo = ring_from(myo_p, nets["myocardium_unet"])
        redrawn: dict = {}
        for task in SCAR_NETWORKS:
            by_threshold = dsc[task].setdefault(group, {t: [] for t in grid})
            crop = _crop_ring(series, (myo, myo_p), nets, task, redrawn)
            for t, seg in threshold_masks(series, *crop, nets[task], grid).items():
                by_threshold[t].append(metrics.dice(seg.scar, series.true_scar))
    return {task: {"threshold": best_threshold_across(dsc[task]),
                   "validation_median_scar_dsc": {
                       f"{t:g}": float(np.mean([np.median(g[t]) for g in dsc[task].values()]))
                       for t in grid},
                   "validation_median_scar_dsc_by_source": {
                       group: {f"{t:g}": float(np.median(v)) for t, v in g.items()}
                       for group, g in dsc[task].items()},
                   "validation_series_with_scar": sum(len(g[grid[0]])
                                                      for g in dsc[task].values())}
            for task in SCAR_NETWORKS}


@dataclass(frozen=True)
class CropRingNetwork(Network):
    """A scar network whose crop is placed and masked by the myocardium another network of
    the pipeline redraws (``ring_from``, a task: the cascade's scar U-Net), not by the
    myocardium network's ring: the manifest pipeline's ``ring``, where the release chose it
    out of fold (issue 52, point 2)."""

    ring_from: str = "scar_unet"


def with_crop_ring(net: Network, ring_from: str | None) -> Network:
    """The same network, its crop taken from ``ring_from``'s ring (None: the first ring)."""
    fields = {f.name: getattr(net, f.name) for f in dataclasses.fields(Network)}
    return Network(**fields) if ring_from is None else CropRingNetwork(**fields,
                                                                        ring_from=ring_from)


def crop_ring_source(net: Network) -> str | None:
    """The task whose ring places ``net``'s crop; None for the myocardium network's."""
    return getattr(net, "ring_from", None)


def _crop_ring(series: LabelledSeries, first: tuple[np.ndarray, np.ndarray],
               networks: Mapping[str, Network], task: str, redrawn: dict
               ) -> tuple[np.ndarray, np.ndarray]:
    """The (ring, probability) a scar network's crop takes: the first ring, or the one its
    ``ring_from`` network redraws on it (kept in ``redrawn``, once a series)."""
    source = crop_ring_source(networks[task])
    if source is None:
        return first
    if source not in redrawn:
        seg = segment_on(series.images, series.spacing, *first, networks[source])
        redrawn[source] = (seg.myocardium, seg.myocardium_probability)
    return redrawn[source]


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
    myo = ring_from(myo_p, networks["myocardium_unet"])
    true_myo = series.true_myocardium
    redrawn: dict = {}
    segs = {}
    for method, (task, which) in PIPELINE_RUNS.items():
        crop = (_crop_ring(series, (myo, myo_p), networks, task, redrawn)
                if which == "predicted" else (true_myo, true_myo.astype(np.float32)))
        segs[method] = segment_on(images, spacing, *crop, networks[task])
    return myo, segs


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
    # The service refuses a series on the myocardium network's own ring and its image.
    verdict = gate_verdict(images, first_ring, spacing)
    refused, flagged = verdict.refused, verdict.doubted
    masks = {method: (seg.scar, seg.myocardium) for method, seg in segs.items()}
    true_mvo = series.true_obstruction
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
            low, high = calibrated_interval(pct, segs[method], first_ring, net.threshold,
                                            calibration, is_unlike_training(verdict.evidence))
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
            review=method in segs and (flagged or _review(myocardium, low, high, calibration)),
            contrast_flagged=method in segs and flagged,
            open_slices=open_slices(myocardium) if method in segs else nan,
            true_open_slices=open_slices(true_myo) if method in segs else nan,
            **(mvo_scores(segs[method], true_mvo, true_myo) if method in segs else {}),
        ))
    return out


def open_slices(myocardium: np.ndarray) -> int:
    """Slices with myocardium that does not close around a cavity."""
    return sum(bool(m.any()) and not encloses_a_hole(m) for m in np.asarray(myocardium, bool))


def mvo_scores(seg: Segmentation, true_mvo: np.ndarray, true_myo: np.ndarray) -> dict:
    """The MVO figures of one result; ``mvo_case_dsc`` scores a case without MVO 1 when none
    is drawn, 0 otherwise."""
    has_mvo = bool(true_mvo.any())
    dsc = metrics.dice(seg.mvo, true_mvo) if has_mvo else float("nan")
    return {"true_mvo_percent": 100.0 * scar_fraction(true_mvo, true_myo),
            "mvo_percent": 100.0 * scar_fraction(seg.mvo, seg.myocardium),
            "mvo_dsc": dsc,
            "mvo_case_dsc": dsc if has_mvo else float(not seg.mvo.any())}


def _review(myocardium: np.ndarray, low: float, high: float,
            calibration: IntervalCalibration | None) -> bool:
    return bool(myocardium_gaps(myocardium) or (
        calibration is not None and not math.isnan(low)
        and interval_reason((low, high), calibration.review_width) is not None))


# Threshold offsets and floors (percentage points) the interval's calibration chooses from.
INTERVAL_OFFSETS = (0.1, 0.2, 0.3)
INTERVAL_FLOORS = (0.25, 0.5, 1.0, 1.5, 2.0, 3.0)
INTERVAL_LEVEL = 0.95
# Issue 53's review flag: at least REVIEW_CATCH of the series whose scar % is more than
# LARGE_ERROR_PERCENT points off (an error the flag should have caught) go to review.
LARGE_ERROR_PERCENT = 5.0
REVIEW_CATCH = 0.8


def calibration_group(source: Source) -> str:
    """Phantoms or real scans: the interval must hold in each (both contrasts pooled, since
    EMIDEC `validation` has 10 cases a contrast, too few for a 95 % quantile alone)."""
    return "phantoms" if isinstance(source, PhantomSource) else "real scans"


def calibration_series(sources: Sequence[Item], networks: Mapping[str, Network] | None = None,
                       offsets: Sequence[float] = INTERVAL_OFFSETS,
                       fold_of: Mapping[str, int] | None = None
                       ) -> dict[str, list[CalibrationSeries]]:
    """Each network pipeline's errors and spread terms on these series; ``fold_of``: each
    case's cross-validation fold, for the series held out of it."""
    out: dict[str, list[CalibrationSeries]] = {m: [] for m in NETWORK_METHODS}
    for source, nets in tqdm(with_networks(sources, networks),
                                 desc="interval calibration", unit="series"):
        fold = (fold_of or {}).get(getattr(source, "case", None))
        series = source.read()
        first_ring, segs = network_segmentations(series, nets)
        truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
        unlike = is_unlike_training(lge_evidence(series.images, first_ring, series.spacing))
        for method in NETWORK_METHODS:
            seg, net = segs[method], nets[PIPELINE_RUNS[method][0]]
            percent = 100.0 * scar_fraction(seg.scar, seg.myocardium)
            out[method].append(CalibrationSeries(
                group=calibration_group(source), error=percent - truth,
                scar_percent=percent, fold=fold,
                terms=spread_terms(seg.myocardium, seg.scar, seg.myocardium_probability,
                                   seg.scar_probability, first_ring, net.threshold, offsets),
                unlike=unlike, off_domain=bool(getattr(source, "shifted", False))))
    return out


def calibrate_intervals(sources: Sequence[Item], networks: Mapping[str, Network] | None,
                        offsets: Sequence[float] = INTERVAL_OFFSETS,
                        floors: Sequence[float] = INTERVAL_FLOORS,
                        level: float = INTERVAL_LEVEL,
                        fold_of: Mapping[str, int] | None = None
                        ) -> dict[str, IntervalCalibration]:
    """Each network pipeline's interval, calibrated (split conformal) on these series; with
    ``fold_of`` (cases held out by fold) its review width is chosen out of fold
    (:func:`with_review_out_of_fold`)."""
    series = calibration_series(sources, networks, offsets, fold_of)
    return {m: with_review_out_of_fold(calibrate(series[m], offsets, floors, level), series[m],
                                       offsets, floors, level)
            for m in NETWORK_METHODS}


def widest_catching(widths: Sequence[float], large: Sequence[bool],
                    catch: float = REVIEW_CATCH) -> float | None:
    """The widest review width (review: an interval wider than it) that still sends ``catch``
    of the large errors to review; None without a large error."""
    large_widths = sorted((w for w, is_large in zip(widths, large, strict=True) if is_large),
                          reverse=True)
    if not large_widths:
        return None
    return large_widths[math.ceil(catch * len(large_widths)) - 1] - 1e-9


def calibrated_without_each_fold(series: Sequence[CalibrationSeries], folds: Sequence[int],
                                 terms: tuple[str, ...],
                                 offsets: Sequence[float] = INTERVAL_OFFSETS,
                                 floors: Sequence[float] = INTERVAL_FLOORS,
                                 level: float = INTERVAL_LEVEL
                                 ) -> Iterator[tuple[int, IntervalCalibration]]:
    """Each fold with the interval of ``terms`` calibrated on every series outside it, so
    that the fold's own series are judged by a calibration that never saw them (on all of
    them while there is a single fold: in sample). A fold whose rest is too small for the
    level is skipped."""
    for fold in folds:
        pool = [s for s in series if s.fold != fold] if len(folds) > 1 else list(series)
        try:
            yield fold, calibrate(pool, offsets, floors, level, candidates=[terms])
        except ValueError:  # too few series left for the level
            continue


def review_out_of_fold(series: Sequence[CalibrationSeries], calibration: IntervalCalibration,
                       offsets: Sequence[float] = INTERVAL_OFFSETS,
                       floors: Sequence[float] = INTERVAL_FLOORS,
                       level: float = INTERVAL_LEVEL) -> dict | None:
    """The review width chosen on intervals a network draws for scans it has not seen.

    Each fold's series as given are judged by the interval calibrated (its terms fixed) on
    everything but that fold; the width is the widest that sends REVIEW_CATCH of their large
    errors to review. The in-sample alternative (a quantile of the calibration series' own
    widths) set 0.4.0's 24.1 points, which caught 4 of `test`'s 8 large errors. None with
    fewer than two folds or no large error. A series judged needs its scar % (the interval's
    centre, where its clipping at 0 and 100 sets the width); one without is not judged."""
    held = [s for s in series
            if s.fold is not None and not s.off_domain and s.scar_percent is not None]
    folds = sorted({s.fold for s in held})
    if len(folds) < 2:
        return None
    widths, large = [], []
    for fold, crossed in calibrated_without_each_fold(series, folds, calibration.terms,
                                                      offsets, floors, level):
        for s in held:
            if s.fold == fold:
                low, high = interval(s.scar_percent, spread(s.terms, crossed), crossed,
                                     s.unlike)
                widths.append(high - low)
                large.append(abs(s.error) > LARGE_ERROR_PERCENT)
    width = widest_catching(widths, large) if widths else None
    if width is None:
        return None
    width = max(ACTIONABLE_WIDTH_PERCENT, width)
    sent = np.asarray(widths) > width
    caught = sent[np.asarray(large)]
    return {"width_percent": float(width), "series": len(widths), "folds": len(folds),
            "large_errors": int(caught.size), "large_caught": int(caught.sum()),
            "review_share": float(sent.mean()), "large_share": float(np.mean(large))}


def with_review_out_of_fold(calibration: IntervalCalibration,
                            series: Sequence[CalibrationSeries],
                            offsets: Sequence[float] = INTERVAL_OFFSETS,
                            floors: Sequence[float] = INTERVAL_FLOORS,
                            level: float = INTERVAL_LEVEL) -> IntervalCalibration:
    """The calibration with its review width chosen out of fold where folds were given (the
    in-sample width otherwise)."""
    choice = review_out_of_fold(series, calibration, offsets, floors, level)
    if choice is None:
        return calibration
    return dataclasses.replace(calibration, review_width_percent=choice["width_percent"],
                               review_choice=choice)


def evaluate(sources: Sequence[Item], networks: Mapping[str, Network] | None,
             test_set: str = "", calibrations: Mapping[str, IntervalCalibration] | None = None
             ) -> list[SeriesScore]:
    scores = []
    for source, nets in tqdm(with_networks(sources, networks),
                             desc=f"evaluate {test_set}".strip(), unit="series"):
        scores.extend(score_series(source, nets, test_set, calibrations))
    return scores


def write_csv(scores: Sequence[Any], path: Path) -> None:
    """One row per score, a column per field (any dataclass: these, the stress test's)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(asdict(scores[0])))
        writer.writeheader()
        for s in scores:
            writer.writerow(asdict(s))
