"""Issue 53, part 2, on the folds kept so far: which spread ranks the out-of-fold scar-%
errors, and does an interval calibrated on the cases as given hold on the shifted copies?

``python -m training.studies.oof_interval_study --emidec ../shared/data/emidec`` ``[--work
runs/oof_interval]`` runs, for every fold whose two U-Nets have a kept leg
(releases/round4/legs; the latest stage kept of each), the cascade on that fold's held-out
cases: as given (each case as acquired and darkened) and shifted (the fixed other-centre
copies). Per series it keeps the scar-% error, every spread term of
:mod:`service.pipeline.uncertainty`, the range of the scar % over the eight symmetries of the
square (test-time augmentation, ``tta``) and how far the image's contrast measures lie from
the LGE the models were trained on (``lge_distance2``: the smallest squared Mahalanobis
distance to the contrast classifier's kinds of LGE). It writes
``docs/results/oof_interval_study.json`` and the ``oof-interval-study`` block of
docs/experiments.md:

* Spearman's rho of each spread with the absolute error, per group (bright-blood and
  dark-blood as given, shifted): a spread that does not rank the errors cannot scale an
  interval;
* per candidate spread, the interval calibrated (split conformal, as the release does) on
  the *as-given* series of the other folds (of the fold itself while only one is kept: then
  the as-given coverage is in-sample and says nothing), and its coverage and median width
  as given and on the shifted copies, which no calibration saw (issue 53: >= 85 % there,
  and wider than as given).

Rows are cached under ``--work`` per pair of legs, so a rerun only runs new folds. No
image leaves ``--work``; the JSON holds figures only.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from scipy import stats

from service.pipeline import acceptance
from service.pipeline.contrast_model import vector
from service.pipeline.ensemble import SQUARE_SYMMETRIES
from service.pipeline.infer import OnnxModel
from service.pipeline.lge_contrast import CONTRAST_MODEL
from service.pipeline.quantify import scar_fraction
from service.pipeline.segment import Network, myocardium_probability, ring_from, segment_on
from service.pipeline.uncertainty import (
    CalibrationSeries,
    IntervalCalibration,
    calibrate,
    interval,
    spread,
    spread_terms,
    term_sets,
)
from training import legs as legs_
from training import steps
from training.crossval import FOLD_TASKS, held_out_sources
from training.data.dataset import CLASSES, TASKS
from training.data.folds import fold_cases, read_folds
from training.data.sources import Source
from training.evaluation.scoring import (
    INTERVAL_FLOORS,
    INTERVAL_LEVEL,
    INTERVAL_OFFSETS,
    LARGE_ERROR_PERCENT,
    calibrated_without_each_fold,
    widest_catching,
)
from training.studies import finish_study, fold_study_parser
from training.studies.interval_study import symmetry_network

AS_GIVEN, SHIFTED = "as given", "shifted"
# Candidate spreads: every sum of the interval's terms, test-time augmentation alone and
# with the disagreement of the two rings.
CANDIDATES = tuple(term_sets()) + (("tta",), ("rings", "tta"))
# Issue 53's review flag (the release's rule, training.evaluation.scoring).
LARGE_ERROR = LARGE_ERROR_PERCENT
SPEARMAN_TERMS = ("rings", "myocardium", *(f"scar@{o:g}" for o in INTERVAL_OFFSETS), "tta",
                  "lge_distance2")


def kept_folds(plan_legs: Sequence[legs_.Leg], root: Path = legs_.LEGS_ROOT,
               tasks: Sequence[str] = FOLD_TASKS) -> dict[int, dict[str, legs_.Leg]]:
    """Per fold with every network of ``tasks`` kept: the latest kept stage of each
    (release variant)."""
    latest: dict[int, dict[str, legs_.Leg]] = {}
    for leg in plan_legs:
        if leg.task in tasks and not leg.variant and legs_.finished(leg, root):
            latest.setdefault(leg.fold, {})[leg.task] = leg  # plan order: later stages last
    return {fold: nets for fold, nets in sorted(latest.items()) if set(tasks) <= set(nets)}


def leg_network(task: str, leg: legs_.Leg, root: Path = legs_.LEGS_ROOT) -> Network:
    """A kept leg's exported network, as the service would run it."""
    return Network(OnnxModel(legs_.leg_dir(leg, root) / legs_.ONNX_FILE), TASKS[task],
                   CLASSES[task])


def lge_distance2(values: dict[str, float | None]) -> float | None:
    """The contrast measures' squared Mahalanobis distance from the nearest kind of LGE the
    networks were trained on (EMIDEC as acquired and darkened, rendered phantoms)."""
    x = vector(values, CONTRAST_MODEL.features)
    return None if x is None else CONTRAST_MODEL.lge_distance2(x)


def series_row(source: Source, group: str, fold: int, myo_net: Network,
               scar_net: Network) -> dict:
    """One held-out series: its error, spread terms, TTA range and distance from training."""
    series = source.read()
    truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
    myo_p = myocardium_probability(series.images, series.spacing, myo_net)
    ring = ring_from(myo_p, myo_net)
    row = {"series_id": source.series_id, "group": group, "contrast": source.contrast,
           "fold": fold, "true_scar_percent": truth}
    if not ring.any():
        return row | {"scar_percent": None}
    members = [segment_on(series.images, series.spacing, ring, myo_p,
                          symmetry_network(scar_net, symmetry)) for symmetry in SQUARE_SYMMETRIES]
    percents = [100.0 * scar_fraction(m.scar, m.myocardium) for m in members]
    seg = members[0]  # the identity: what the service reports
    terms = spread_terms(seg.myocardium, seg.scar, seg.myocardium_probability,
                         seg.scar_probability, ring, scar_net.threshold, INTERVAL_OFFSETS)
    values = acceptance.contrast_features(
        acceptance.lge_evidence(series.images, ring, series.spacing))
    return row | {"scar_percent": percents[0], "error": percents[0] - truth,
                  "terms": terms | {"tta": float(max(percents) - min(percents))},
                  "contrast_values": values, "lge_distance2": lge_distance2(values)}


def held_out_items(emidec_root: Path, fold: int, limit: int | None = None
                   ) -> list[tuple[str, Source]]:
    """A fold's held-out series with their group: as given, then the shifted copies."""
    _, held = fold_cases(read_folds(), fold)
    held = held[:limit]
    return ([(AS_GIVEN, s) for s in held_out_sources(emidec_root, held)]
            + [(SHIFTED, s) for s in held_out_sources(emidec_root, held, shifted=True)])


def decided_post_processing(root: Path = legs_.LEGS_ROOT) -> dict | None:
    """The scar U-Net's threshold and the ring constraint as the release's out-of-fold
    choices decided them (its kept ``choices`` step beside the legs), so the study measures
    the cascade as it ships; None before the choices are made (threshold 0.5, no ring)."""
    path = steps.steps_root(root) / f"choices{steps.STEP_SUFFIX}"
    if not path.exists():
        return None
    decided = json.loads(path.read_text())["value"]
    return {"threshold": float(decided["chosen"]["scar_unet"]["threshold"]),
            "complete_ring": bool(decided["variants"][decided["best"]]["complete_ring"])}


def fold_rows(emidec_root: Path, fold: int, nets: dict[str, legs_.Leg], work: Path,
              root: Path = legs_.LEGS_ROOT, limit: int | None = None,
              decided: dict | None = None) -> list[dict]:
    """Every held-out series of one fold, cached per pair of legs (and post-processing)."""
    key = f"fold{fold}-{nets['myocardium_unet'].name}-{nets['scar_unet'].name}"
    if decided is not None:
        key += f"-t{decided['threshold']:g}-ring{int(decided['complete_ring'])}"
    cache = work / f"{key}{'' if limit is None else f'-first{limit}'}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    myo_net = leg_network("myocardium_unet", nets["myocardium_unet"], root)
    scar_net = leg_network("scar_unet", nets["scar_unet"], root)
    if decided is not None:
        ring = decided["complete_ring"]
        myo_net = dataclasses.replace(myo_net, complete_ring=ring)
        scar_net = dataclasses.replace(scar_net, complete_ring=ring,
                                       threshold=decided["threshold"])
    rows = []
    for group, source in held_out_items(emidec_root, fold, limit):
        t0 = time.perf_counter()
        rows.append(series_row(source, group, fold, myo_net, scar_net))
        print(f"fold {fold} {group}: {source.series_id} {time.perf_counter() - t0:.1f} s",
              flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _rank_group(row: dict) -> str:
    return f"{AS_GIVEN}, {row['contrast']}" if row["group"] == AS_GIVEN else SHIFTED


def _value(row: dict, name: str) -> float | None:
    return row.get(name) if name == "lge_distance2" else row["terms"].get(name)


def spearman(rows: Sequence[dict]) -> dict[str, dict[str, dict]]:
    """Per group and measure: Spearman's rho with |error| and its two-sided p-value."""
    out: dict[str, dict[str, dict]] = {}
    for group in sorted({_rank_group(r) for r in rows}):
        members = [r for r in rows if _rank_group(r) == group]
        out[group] = {}
        for name in SPEARMAN_TERMS:
            pairs = [(v, abs(r["error"])) for r in members
                     if (v := _value(r, name)) is not None]
            if len(pairs) < 3 or len({p[0] for p in pairs}) < 2:
                out[group][name] = {"rho": None, "p": None, "series": len(pairs)}
                continue
            result = stats.spearmanr(*zip(*pairs, strict=True))
            out[group][name] = {"rho": float(result.statistic), "p": float(result.pvalue),
                                "series": len(pairs)}
    return out


def _unlike(row: dict) -> bool:
    """Beyond the LGE trained on, as the service judges it (acceptance.is_unlike_training)."""
    return acceptance.beyond_training(row.get("lge_distance2"), CONTRAST_MODEL)


def _series(rows: Sequence[dict]) -> list[CalibrationSeries]:
    return [CalibrationSeries("real scans", r["error"], r["terms"], unlike=_unlike(r),
                              off_domain=r["group"] == SHIFTED, fold=r["fold"]) for r in rows]


def _held(row: dict, calibration: IntervalCalibration) -> tuple[bool, float, bool]:
    """Whether the interval holds the truth, its width, and whether the error is large."""
    low, high = interval(row["scar_percent"], spread(row["terms"], calibration), calibration,
                         _unlike(row))
    truth = row["true_scar_percent"]
    return (bool(low - 1e-9 <= truth <= high + 1e-9), high - low,
            abs(row["error"]) > LARGE_ERROR)


def review_width(judged: Sequence[tuple[bool, float, bool]]) -> float | None:
    """The widest review width that still sends REVIEW_CATCH of the large errors to review;
    None without a large error."""
    return widest_catching([w for _, w, _ in judged], [is_large for _, _, is_large in judged])


def review_check(judged: Sequence[tuple[bool, float, bool]], width: float | None
                 ) -> dict | None:
    """The review flag on the interval alone: the share sent to review, the large-error
    share and the share of large errors flagged."""
    if width is None or not judged:
        return None
    large = [w for _, w, is_large in judged if is_large]
    return {"review_share": float(np.mean([w > width for _, w, _ in judged])),
            "large_share": len(large) / len(judged),
            "large_flagged": None if not large else float(np.mean([w > width for w in large]))}


def _judged_out_of_fold(analysed: Sequence[dict], candidate: tuple[str, ...], calibrates,
                        group_of, groups: Sequence[str], level: float
                        ) -> tuple[dict[str, list[tuple[bool, float, bool]]], list]:
    """Each fold's series (by ``group_of``) judged by the interval of ``candidate``
    calibrated on the other folds' series that ``calibrates`` keeps (on the fold's own while
    only one fold is kept); and the calibrations made."""
    folds = sorted({r["fold"] for r in analysed})
    held: dict[str, list[tuple[bool, float, bool]]] = {g: [] for g in groups}
    made = []
    pool = _series([r for r in analysed if calibrates(r)])
    for fold, calibration in calibrated_without_each_fold(
            pool, folds, candidate, INTERVAL_OFFSETS, INTERVAL_FLOORS, level):
        made.append(calibration)
        for r in analysed:
            if r["fold"] == fold:
                held[group_of(r)].append(_held(r, calibration))
    return held, made


def _coverage(judged: Sequence[tuple[bool, float, bool]]) -> dict | None:
    return None if not judged else {
        "series": len(judged), "coverage": float(np.mean([h for h, _, _ in judged])),
        "median_width": float(np.median([w for _, w, _ in judged]))}


def _analysed(rows: Sequence[dict]) -> tuple[list[dict], bool]:
    """The series with a result, and whether only one fold is kept (``in_sample``)."""
    analysed = [r for r in rows if r.get("scar_percent") is not None]
    return analysed, len({r["fold"] for r in analysed}) < 2


def candidate_checks(rows: Sequence[dict], level: float = INTERVAL_LEVEL) -> dict[str, dict]:
    """Per candidate spread: coverage and median width as given and shifted, each fold's
    series judged by the interval calibrated on the other folds' as-given series (on its own
    while only one fold is kept: ``in_sample``); and the review width chosen on the as-given
    series (:func:`review_width`) with the review flag it gives in each group."""
    analysed, in_sample = _analysed(rows)
    out = {}
    for candidate in CANDIDATES:
        held, _ = _judged_out_of_fold(analysed, candidate, lambda r: r["group"] == AS_GIVEN,
                                      lambda r: r["group"], (AS_GIVEN, SHIFTED), level)
        # The review width that meets the flag's target on the as-given series, then how
        # it does on the shifted ones.
        width = review_width(held[AS_GIVEN])
        out["+".join(candidate)] = {
            group: None if not judged else _coverage(judged) | {
                "review": review_check(judged, width)}
            for group, judged in held.items()} | {"in_sample": in_sample,
                                                  "review_width": width}
    return out


UNLIKE_GROUPS = (AS_GIVEN, f"{SHIFTED}, familiar look", f"{SHIFTED}, unlike training")


def _unlike_group(row: dict) -> str:
    if row["group"] == AS_GIVEN:
        return AS_GIVEN
    return UNLIKE_GROUPS[2] if _unlike(row) else UNLIKE_GROUPS[1]


def unlike_scale_checks(rows: Sequence[dict], level: float = INTERVAL_LEVEL) -> dict[str, dict]:
    """The release's calibration (:func:`service.pipeline.uncertainty.calibrate`): the
    familiar scale on the as-given series, the unlike scale on the shifted copies beyond
    the LGE trained on; each fold's series judged by the other folds' calibration. Per
    candidate: coverage and median width as given, on the shifted copies of a familiar
    look (which calibrate nothing: the check), and on those unlike training."""
    analysed, in_sample = _analysed(rows)
    out = {}
    for candidate in CANDIDATES:
        held, made = _judged_out_of_fold(analysed, candidate, lambda r: True, _unlike_group,
                                         UNLIKE_GROUPS, level)
        out["+".join(candidate)] = {group: _coverage(judged) for group, judged in held.items()
                                    } | {
            "unlike_series_per_calibration": [c.unlike_series if c.unlike_scale is not None
                                              else 0 for c in made],
            "in_sample": in_sample}
    return out


def unlike_training_check(rows: Sequence[dict]) -> dict:
    """Per group: how many series the "unlike the scans trained on" review reason
    (:func:`service.pipeline.acceptance.unlike_training`) sends to review, and how many of
    them, and of the rest, are more than LARGE_ERROR points off."""
    bar = acceptance.unlike_training_bar(CONTRAST_MODEL)
    out = {}
    for group in (AS_GIVEN, SHIFTED):
        members = [r for r in rows if r["group"] == group and r["lge_distance2"] is not None]
        unlike = [r for r in members if _unlike(r)]
        out[group] = {"series": len(members), "flagged": len(unlike),
                      "large": sum(abs(r["error"]) > LARGE_ERROR for r in members),
                      "flagged_large": sum(abs(r["error"]) > LARGE_ERROR for r in unlike),
                      "bar": bar}
    return out


def summarise(rows: Sequence[dict], folds: dict[int, dict[str, str]]) -> dict:
    analysed = [r for r in rows if r.get("scar_percent") is not None]
    as_given = [r for r in analysed if r["group"] == AS_GIVEN]
    try:
        shipped = calibrate(_series(as_given), INTERVAL_OFFSETS, INTERVAL_FLOORS,
                            INTERVAL_LEVEL, candidates=CANDIDATES).to_dict()
    except ValueError:  # too few series for the level
        shipped = None
    distance = {group: [r["lge_distance2"] for r in analysed if r["group"] == group
                        and r["lge_distance2"] is not None] for group in (AS_GIVEN, SHIFTED)}
    return {
        "about": __doc__.split("\n\n")[0], "folds": folds,
        "series": {g: sum(r["group"] == g for r in rows) for g in (AS_GIVEN, SHIFTED)},
        "no_myocardium": sum(r.get("scar_percent") is None for r in rows),
        "abs_error_median": {g: float(np.median([abs(r["error"]) for r in analysed
                                                 if r["group"] == g]))
                             for g in (AS_GIVEN, SHIFTED) if any(r["group"] == g
                                                                 for r in analysed)},
        # A 95 % interval cannot be narrower than the errors it must hold.
        "abs_error_p90": {g: float(np.percentile([abs(r["error"]) for r in analysed
                                                  if r["group"] == g], 90))
                          for g in (AS_GIVEN, SHIFTED) if any(r["group"] == g
                                                              for r in analysed)},
        "spearman_with_abs_error": spearman(analysed),
        "candidates": candidate_checks(analysed),
        "unlike_scale": unlike_scale_checks(analysed),
        "calibrated_on_all_as_given": shipped,
        "lge_distance2": {g: None if not v else {"median": float(np.median(v)),
                                                  "p90": float(np.percentile(v, 90))}
                          for g, v in distance.items()},
        "unlike_training": unlike_training_check(analysed),
        "rows": list(rows)}


def _fmt(value: float | None, pattern: str = "{:.2f}") -> str:
    return "" if value is None or (isinstance(value, float) and math.isnan(value)) \
        else pattern.format(value)


def _review(group: dict | None) -> str:
    review = group and group["review"]
    if not review:
        return ""
    flagged = review["large_flagged"]
    return (f"{review['review_share']:.0%} "
            f"({'none large' if flagged is None else format(flagged, '.0%')}; "
            f"{review['large_share']:.0%} large)")


def docs_block(result: dict) -> str:
    """The study's two tables in Markdown (docs/experiments.md's ``oof-interval-study``)."""
    folds = ", ".join(f"fold {f}: {n['myocardium_unet']} + {n['scar_unet']}"
                      for f, n in result["folds"].items())
    groups = list(result["spearman_with_abs_error"])
    decided = result.get("post_processing")
    how = ("scar threshold 0.5, no ring constraint (no out-of-fold choice kept yet)"
           if not decided else
           f"as the release's out-of-fold choices decided: scar threshold "
           f"{decided['threshold']:g}, ring constraint "
           f"{'on' if decided['complete_ring'] else 'off'}")
    lines = [f"Legs: {folds}; {how}. Series: {result['series'][AS_GIVEN]} as given, "
             f"{result['series'][SHIFTED]} shifted ({result['no_myocardium']} without "
             f"myocardium). Median |error|: " + ", ".join(
                 f"{g} {v:.2f} points" for g, v in result["abs_error_median"].items())
             + "; 90th percentile: " + ", ".join(
                 f"{g} {v:.2f}" for g, v in result.get("abs_error_p90", {}).items()) + ".",
             "", "Spearman's rho with |scar-% error| (p in brackets):", "",
             "| measure | " + " | ".join(groups) + " |", "|---|" + "---|" * len(groups)]
    for name in SPEARMAN_TERMS:
        cells = []
        for g in groups:
            cell = result["spearman_with_abs_error"][g][name]
            cells.append("" if cell["rho"] is None else f"{cell['rho']:+.2f} ({cell['p']:.2g})")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    in_sample = any(c["in_sample"] for c in result["candidates"].values())
    lines += ["", "Interval calibrated on the as-given series "
              + ("(in sample: one fold kept, so the as-given coverage says nothing)"
                 if in_sample else "of the other folds") + "; the shifted copies are "
              "never calibrated on:", "",
              "| spread | coverage as given | median width as given | coverage shifted | "
              "median width shifted | review width | review share as given (large errors "
              "flagged) | review share shifted (large errors flagged) |",
              "|---|---|---|---|---|---|---|---|"]
    for name, c in result["candidates"].items():
        a, s = c[AS_GIVEN], c[SHIFTED]
        lines.append(f"| {name} | {_fmt(a and a['coverage'], '{:.0%}')} | "
                     f"{_fmt(a and a['median_width'], '{:.1f}')} | "
                     f"{_fmt(s and s['coverage'], '{:.0%}')} | "
                     f"{_fmt(s and s['median_width'], '{:.1f}')} | "
                     f"{_fmt(c['review_width'], '{:.1f}')} | {_review(a)} | {_review(s)} |")
    if result.get("unlike_scale"):
        lines += ["", "With the unlike scale, as the release calibrates: the as-given series "
                  "and the shifted copies unlike training of the other folds; the shifted "
                  "copies of a familiar look calibrate nothing (series; coverage; median "
                  "width):", "",
                  "| spread | " + " | ".join(UNLIKE_GROUPS) + " |",
                  "|---|" + "---|" * len(UNLIKE_GROUPS)]
        for name, c in result["unlike_scale"].items():
            lines.append(f"| {name} | " + " | ".join(
                "" if not c[g] else f"{c[g]['series']}; {c[g]['coverage']:.0%}; "
                f"{c[g]['median_width']:.1f}" for g in UNLIKE_GROUPS) + " |")
    d = result["lge_distance2"]
    lines += ["", "Distance of the contrast measures from the training scans' (squared "
              "Mahalanobis, nearest kind of LGE trained on), median / 90th percentile: "
              + "; ".join(f"{g} {v['median']:.1f} / {v['p90']:.1f}"
                          for g, v in d.items() if v) + "."]
    unlike = result.get("unlike_training")
    if unlike:
        bar = next(iter(unlike.values()))["bar"]
        lines += ["", f"Sent to review as unlike the scans trained on (distance beyond "
                  f"{bar:.1f}): " + "; ".join(
                      f"{g} {u['flagged']} of {u['series']} ({u['flagged_large']} of them more "
                      f"than {LARGE_ERROR:g} points off; {u['large']} such series in all)"
                      for g, u in unlike.items()) + "."]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from training.fold_legs import plan
    from training.run import CONFIGS, task_config

    parser = fold_study_parser(__doc__.splitlines()[0], "runs/oof_interval",
                               "oof_interval_study.json")
    parser.add_argument("--emidec", type=Path, help="EMIDEC's folder (all but --docs-only)")
    parser.add_argument("--docs-only", action="store_true",
                        help="run no network: summarise again the series rows kept in the "
                        "results file --out (its figures after a change to the "
                        "calibration), and rewrite it and the docs block")
    args = parser.parse_args(argv)
    if args.docs_only:
        kept = json.loads(args.out.read_text())
        result = summarise(kept["rows"], kept["folds"]) | {
            "post_processing": kept.get("post_processing")}
        return finish_study(result, docs_block(result), args, "oof-interval-study")
    if args.emidec is None:
        parser.error("--emidec is required")
    folds = kept_folds(plan({task: task_config(task) for task in CONFIGS}), args.root)
    if not folds:
        print("no fold has both U-Nets kept yet")
        return 1
    decided = decided_post_processing(args.root)
    rows = [r for fold, nets in folds.items()
            for r in fold_rows(args.emidec, fold, nets, args.work, args.root, args.limit,
                               decided)]
    result = summarise(rows, {f: {t: leg.name for t, leg in n.items()}
                              for f, n in folds.items()}) | {"post_processing": decided}
    result["folds"] = {str(f): n for f, n in result["folds"].items()}
    return finish_study(result, docs_block(result), args, "oof-interval-study")


if __name__ == "__main__":
    raise SystemExit(main())
