"""The release's last steps: read the test sets once, try int8, draw, write ``models/``.

Everything here runs on networks that are already chosen (:class:`Shipped`): the test
sets are read once, here, and nothing read from them goes back into a choice.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service import __version__
from service.pipeline.ensemble import MeanOfModels
from service.pipeline.infer import OnnxModel
from service.pipeline.registry import sha256_of
from service.pipeline.segment import Network
from training import choices
from training.data import emidec
from training.data.dataset import TASKS
from training.data.phantoms.spec import OBSTRUCTION_PROBABILITY
from training.data.sources import PhantomSource, Source
from training.evaluation.gate import gate_reading, summarise_readings
from training.evaluation.plots import (
    before_after_cases,
    bland_altman,
    box_plots,
    fold_curves,
    strip_plot,
    worst_validation_cases,
)
from training.evaluation.report import accuracy_table, markdown_report
from training.evaluation.scoring import PIPELINE_RUNS, SCAR_NETWORKS, evaluate, write_csv
from training.evaluation.summary import (
    TARGETS,
    TEST_SET_LABELS,
    manifest_evaluation,
    precision_parity,
    summarise,
)
from training.generated import write_block
from training.quantize import CALIBRATION_ROWS, EMIDEC_CALIBRATION_CASES
from training.release import build_manifest, write_models_dir

README = Path(__file__).parents[1] / "README.md"
# Issue 52, point 6 (kept from round 3): a release replaces the shipped one only where its
# EMIDEC `test` medians of the cascade's myocardium and scar DSC are not below the shipped
# release's; otherwise models/ keeps it and the candidate's report goes to --candidate-dir.
SHIP_SET, SHIP_METHOD, SHIP_FIGURES = "emidec", "cascade-unet", ("myocardium_dsc", "scar_dsc")
# What the fold ensembles cost the cascade, measured before the release (issue 52, point 5).
ENSEMBLE_COST = Path(__file__).parents[1] / "benchmarks" / "results" / "ensemble_cost.json"
TRAINING_DATA_PHANTOMS = ("Synthetic dark-blood LGE short-axis phantoms made by "
                          "`python -m training.data.phantoms` (docs/phantoms.md).")
TRAINING_DATA_EMIDEC = (
    " Real bright-blood LGE: the 70 `train` cases of EMIDEC (one centre, Dijon; expert "
    "contours), each as acquired and darkened to a dark-blood look (the labelled LV cavity "
    "brought to normal myocardium; the unlabelled right ventricle stays bright), at nominal "
    "pixel spacings drawn per copy since the files carry none. " + emidec.CITATION)
TRAINING_DATA_EMIDEC_FOLDS = (
    " Real bright-blood LGE: the 80 `train` + `validation` cases of EMIDEC (one centre, Dijon; "
    "expert contours) in five folds by patient (training/data/emidec_folds.json); both U-Nets "
    "are trained once per fold on the other four folds' cases (in stages until their "
    "held-out curves are flat, releases/round4/legs/), each case as acquired, darkened to a "
    "dark-blood look (the labelled LV cavity brought to normal myocardium; the unlabelled "
    "right ventricle stays bright) and with its labelled tissues remapped to other centres' "
    "looks (SynthSeg-style), at nominal pixel spacings drawn per copy since the files carry "
    "none; the service runs one fold's myocardium U-Net (it places the scar U-Net's box) and "
    "the mean of the first {scar_folds} folds' scar U-Nets, as many as the latency budget "
    "holds (training/crossval.py, SHIPPED_MEMBERS); {enets} " + emidec.CITATION)
# How the ENets were trained, in the sentence above.
ENETS_PER_FOLD = ("the ENets are trained per fold too (two stages each), on crops from the "
                  "Hough search near the heart, and run as the mean of the five folds.")
ENETS_SHARED = "the ENets are the earlier release's (`--networks-from`)."
# The networks released with an int8 copy as well: the U-Nets, 1.5-1.6x faster in int8 on
# this CPU's VNNI/AMX units; the ENets ran slower in int8 (many small layers, each paying its
# quantise/dequantise), measured by benchmarks/precision.py.
INT8_TASKS = ("myocardium_unet", "scar_unet")
# Which networks a pipeline may run in int8, fastest first; each pipeline's default is the
# first that holds accuracy on every test set. Both U-Nets moved the cascade's scar % by
# 0.3-0.7 points on EMIDEC validation; the myocardium U-Net alone did not move it (median
# 0.0: the scar U-Net redraws the myocardium) and held in the cascade and ENet Protocol 1
# (python -m training.studies.int8_study, docs/results/int8_study.json, validation series only).
INT8_CANDIDATES = (("both U-Nets", INT8_TASKS), ("myocardium U-Net", ("myocardium_unet",)))


@dataclass(frozen=True)
class Shipped:
    """The networks as they ship and what chose them: what the report is written from."""

    networks: dict[str, Network]
    onnx_files: dict[str, Path]
    # Each network's int8 copy; an ensemble's: one per member, in member order.
    int8_files: dict[str, Path | list[Path]]
    parameters: dict
    training: dict
    thresholds: dict[str, float]
    chosen: dict
    calibrations: dict
    cross_validated: choices.CrossValidated | None = None
    fold_records: dict | None = None
    assignment: dict[str, int] | None = None
    # Each network's input as the manifest writes it; None: the training specs (TASKS).
    specs: dict | None = None


@dataclass(frozen=True)
class Data:
    """The series the release was trained, chosen and is tested on."""

    train_dirs: list[Path]
    val_idx: np.ndarray
    sources: list[Source]
    real_train: list
    real_val: list  # each case twice: as acquired and darkened
    real_tests: dict[str, list]
    test_dirs: list[Path]
    negative_dirs: dict[str, list[Path]]
    validation_sources: list[Source]


@dataclass
class Clock:
    """Minutes per stage (``lap``), carried from the training command."""

    minutes: dict[str, float]
    lap: Callable[..., float]
    t: float
    started_at: float


def publish(args: argparse.Namespace, work: Path, models_dir: Path, shipped: Shipped,
            data: Data, clock: Clock, argv: list[str] | None) -> None:
    """Read the test sets once, try int8, draw the figures and write ``models_dir``."""
    test_sets = {"phantoms": [PhantomSource(d) for d in data.test_dirs]} | data.real_tests
    if args.quick:
        if args.release:
            raise SystemExit("--quick is for checking the command, never for a release")
        test_sets = {name: test[:args.quick] for name, test in test_sets.items()}
    scores = [s for name, test in test_sets.items()
              for s in evaluate(test, shipped.networks, name, shipped.calibrations)]
    summaries = {name: summarise([s for s in scores if s.test_set == name])
                 for name in test_sets}
    rendered_negatives = {
        sequence: summarise_readings([gate_reading(PhantomSource(d),
                                                   shipped.networks["myocardium_unet"])
                                      for d in dirs])
        for sequence, dirs in data.negative_dirs.items()}
    clock.t = clock.lap("evaluation", clock.t)
    parity, int8_pipelines, int8 = _int8_parity(shipped, test_sets, scores)
    clock.t = clock.lap("evaluation int8", clock.t)
    figures_dir, worst_figure, worst_cases = _figures(args, work, shipped, data, test_sets,
                                                      scores)
    clock.t = clock.lap("figures", clock.t)
    minutes = clock.minutes
    minutes.pop("total", None)
    minutes["total"] = sum(minutes.values())

    shipped_summary = models_dir / "evaluation" / "summary.json"
    shipped_manifest = models_dir / "manifest.json"
    decision = ship_decision(summaries, json.loads(shipped_summary.read_text())
                             if args.release and shipped_summary.exists() else None)
    rule = ship_text(decision, json.loads(shipped_manifest.read_text()).get("version")
                     if shipped_manifest.exists() else None)
    print(f"training: {rule or 'ship rule: nothing shipped to compare with'}", flush=True)
    if not decision["ships"]:
        models_dir = args.candidate_dir
    training_data = _training_data(args, shipped, data)
    cross_validated = shipped.cross_validated
    members, post_processing, crop_rings = {}, {}, {}
    if cross_validated is not None:
        from training.crossval import RING_TASKS

        members = cross_validated.members
        post_processing = {task: {"complete_ring": cross_validated.complete_ring}
                           for task in RING_TASKS}
        crop_rings = cross_validated.crop_rings
    intervals = {task: shipped.calibrations[method].to_dict()
                 for task, method in SCAR_NETWORKS.items()}
    manifest = build_manifest(__version__, shipped.onnx_files, shipped.specs or TASKS,
                              shipped.parameters,
                              shipped.training, manifest_evaluation(summaries), training_data,
                              shipped.thresholds, intervals, int8, members, post_processing,
                              crop_rings)
    context = {
        "command": "python -m training " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
        "test_sets": {name: len(test) for name, test in test_sets.items()},
        "test_seed": args.test_seed, "train_series": training_data["train_series"],
        "validation_series": len(data.val_idx), "train_seed": args.train_seed,
        "emidec": training_data["emidec"], "minutes": minutes,
        "thresholds": {task: shipped.thresholds[task] for task in shipped.chosen},
        "precision_parity": parity,
        "int8_pipelines": {m: list(t) for m, t in int8_pipelines.items()},
        "rendered_negatives": rendered_negatives,
        "note": " ".join(n for n in (rule, args.note) if n),
        "worst_cases": worst_cases, "worst_figure": str(worst_figure),
        "interval_calibration": {m: c.to_dict() for m, c in shipped.calibrations.items()},
        "cross_validation": None if cross_validated is None else {
            "variants": cross_validated.variants, "tta": cross_validated.tta,
            "chosen_ring": cross_validated.complete_ring,
            "crop_rings": cross_validated.crop_rings,
            "crop_ring_choice": cross_validated.crop_ring_choice,
            "fold_tasks": list(cross_validated.fold_tasks),
            "ensemble_cost": (json.loads(ENSEMBLE_COST.read_text())
                              if ENSEMBLE_COST.exists() else None),
            "out_of_fold": choices.oof_summaries(cross_validated.oof_scores)}}
    (figures_dir / "summary.json").write_text(json.dumps(summaries, indent=1, default=float))
    figures = {p.name: p for p in figures_dir.iterdir()}
    shipped_files = shipped.onnx_files | {
        f"{k} int8": v for k, v in shipped.int8_files.items() if not isinstance(v, list)} | {
        f"{k} fold {i} int8": p for k, v in shipped.int8_files.items() if isinstance(v, list)
        for i, p in enumerate(v)} | {
        f"{k} fold {i}": p for k, paths in members.items() for i, p in enumerate(paths)}
    if cross_validated is not None:
        write_csv(cross_validated.oof_scores, figures_dir / "scores_out_of_fold.csv")
        figures["scores_out_of_fold.csv"] = figures_dir / "scores_out_of_fold.csv"
    # A candidate that does not ship keeps its report, manifest and cards, not its networks
    # (they are in the kept legs).
    write_models_dir(models_dir, manifest, shipped_files if decision["ships"] else {},
                     markdown_report(summaries, TARGETS, context), figures)
    if args.release and decision["ships"]:
        write_block(README, "accuracy", accuracy_table(summaries))
    # The choices' network answers only serve to resume a stopped run (choices.py); this one
    # is done, and a release's take gigabytes.
    shutil.rmtree(work / "answers", ignore_errors=True)
    (work / "summary.json").write_text(json.dumps(
        {"summaries": summaries, "minutes": minutes}, indent=1, default=float))
    print(json.dumps({"minutes": minutes} | {
        name: {f: summary["methods"]["cascade-unet"][f]["median"]
               for f in ("myocardium_dsc", "scar_dsc", "abs_scar_percent_error")}
        for name, summary in summaries.items()}, indent=1, default=float))
    print(f"training: done in {(time.perf_counter() - clock.started_at) / 60.0:.1f} minutes "
          f"(this invocation); models in {models_dir}", flush=True)


def ship_decision(candidate: dict, shipped: dict | None) -> dict:
    """The ship rule on the two releases' test summaries (``evaluation/summary.json``): per
    figure the candidate's and the shipped release's median, and whether it ships (always,
    where no release with that test set is shipped)."""
    if not shipped or SHIP_SET not in shipped or SHIP_SET not in candidate:
        return {"ships": True, "figures": {}, "set": SHIP_SET}
    figures = {f: {"candidate": candidate[SHIP_SET]["methods"][SHIP_METHOD][f]["median"],
                   "shipped": shipped[SHIP_SET]["methods"][SHIP_METHOD][f]["median"]}
               for f in SHIP_FIGURES}
    return {"ships": all(v["candidate"] >= v["shipped"] for v in figures.values()),
            "figures": figures, "set": SHIP_SET}


def ship_text(decision: dict, shipped_version: str | None) -> str:
    """The ship rule's outcome, for the report's note."""
    if not decision["figures"]:
        return ""
    cells = ", ".join(f"{f.replace('_', ' ')} {v['candidate']:.3f} against {v['shipped']:.3f}"
                      for f, v in decision["figures"].items())
    verdict = ("not below on either: it replaces it" if decision["ships"] else
               "below on at least one: not shipped, the shipped release stays in models/ "
               "and this report is kept beside it")
    return (f"Ship rule: EMIDEC `test` medians of the cascade ({cells}, this release against "
            f"the shipped {shipped_version or 'release'}): {verdict}.")


def _int8_parity(shipped: Shipped, test_sets: dict[str, list], scores: list
                 ) -> tuple[list, dict, dict]:
    """Each int8 candidate on every test set against float32; the int8 manifest entries."""
    int8_sessions = {task: (MeanOfModels([OnnxModel(p) for p in path])
                            if isinstance(path, list) else OnnxModel(path))
                     for task, path in shipped.int8_files.items()}
    parity, int8_pipelines = [], {}
    for label, tasks in INT8_CANDIDATES:
        if not set(tasks) <= set(int8_sessions):
            continue
        candidate = shipped.networks | {
            task: dataclasses.replace(shipped.networks[task], predict=int8_sessions[task])
            for task in tasks}
        int8_scores = [s for name, test in test_sets.items()
                       for s in evaluate(test, candidate, name, shipped.calibrations)]
        rows = [row | {"int8_networks": label}
                for row in precision_parity(scores, int8_scores)]
        parity.extend(rows)
        # Each pipeline takes the fastest candidate that held on every test set, for the
        # networks it runs (the myocardium U-Net and its scar network).
        for method in {row["method"] for row in rows}:
            if method not in int8_pipelines and all(
                    row["met"] for row in rows if row["method"] == method):
                runs = ("myocardium_unet", PIPELINE_RUNS[method][0])
                int8_pipelines[method] = tuple(task for task in tasks if task in runs)
    int8 = {}
    fold_tasks = () if shipped.cross_validated is None else shipped.cross_validated.fold_tasks
    fold_calibration = (f"up to {CALIBRATION_ROWS} inputs of the phantom validation series "
                        f"and {EMIDEC_CALIBRATION_CASES} EMIDEC train cases, ")
    for task, path in shipped.int8_files.items():
        where = {"default": False, "pipelines": sorted(m for m, tasks in int8_pipelines.items()
                                                      if task in tasks)}
        if isinstance(path, list):  # an ensemble: each member's copy (the manifest's members)
            int8[task] = where | {
                "members": [{"file": p.name, "sha256": sha256_of(p)} for p in path],
                "calibration": f"{fold_calibration}the same for every member; {_QDQ}"}
        else:
            calibration = fold_calibration if task in fold_tasks else (
                f"{min(CALIBRATION_ROWS, shipped.training[task]['val_slices'])} validation "
                "inputs, ")
            int8[task] = {"file": path.name, "sha256": sha256_of(path)} | where | {
                "calibration": calibration + _QDQ}
    return parity, int8_pipelines, int8


_QDQ = "MinMax ranges, QDQ (weights int8 per channel, activations uint8)"


def _figures(args: argparse.Namespace, work: Path, shipped: Shipped, data: Data,
             test_sets: dict[str, list], scores: list) -> tuple[Path, Path, list]:
    """The release's figures under WORK/figures (copied into --models), and the worst cases
    drawn under WORK/private (real EMIDEC slices: never into --models)."""
    figures_dir = work / "figures"
    # Everything in it is copied into --models: start empty, so that no figure of an
    # earlier run (e.g. one drawn from EMIDEC images) is released by accident.
    shutil.rmtree(figures_dir, ignore_errors=True)
    figures_dir.mkdir(parents=True, exist_ok=True)
    write_csv(scores, figures_dir / "scores.csv")
    for name in test_sets:
        subset = [s for s in scores if s.test_set == name]
        box_plots(subset, figures_dir / f"boxplots_{name}.png")
        bland_altman(subset, figures_dir / f"bland_altman_{name}.png", TEST_SET_LABELS[name])
    worst_figure = work / "private" / "worst_validation_cases.png"
    worst_cases: list = []
    cross_validated = shipped.cross_validated
    if cross_validated is not None:
        fold_curves(shipped.fold_records, figures_dir / "curves_folds.png")
        for task in ("enet_p2", "enet_p1"):
            if task in cross_validated.fold_tasks:  # its folds' curves
                fold_curves({f: {task: r[task]} for f, r in shipped.fold_records.items()},
                            figures_dir / f"curves_{task}.png")
            else:  # the earlier release's (copied by run._shared_networks)
                shutil.copy2(work / "runs" / task / "curves.png",
                             figures_dir / f"curves_{task}.png")
        by_set = {"out-of-fold": cross_validated.oof_scores} | {
            name: [s for s in scores if s.test_set == name] for name in test_sets}
        strip_plot(choices.strip_sets(by_set, TEST_SET_LABELS), figures_dir / "strip_cases.png")
        worst_figure = work / "private" / "worst_out_of_fold_before_after.png"
        worst_figure.parent.mkdir(parents=True, exist_ok=True)
        from training import crossval

        # Each case as acquired, with its own fold's networks under every variant.
        bright: dict[str, tuple] = {}
        for variant, fold_nets in cross_validated.variant_networks.items():
            for source, nets in crossval.out_of_fold(args.emidec, fold_nets,
                                                     shipped.assignment, args.quick):
                if not source.dark:
                    bright.setdefault(source.series_id, (source, {}))[1][variant] = nets
        worst_cases = before_after_cases(list(bright.values()),
                                         cross_validated.variant_networks, worst_figure)
    else:
        for task in TASKS:
            shutil.copy2(work / "runs" / task / "curves.png", figures_dir / f"curves_{task}.png")
        bright_validation = [s for s in data.validation_sources
                             if isinstance(s, emidec.EmidecCase) and not s.dark]
        if bright_validation:
            worst_figure.parent.mkdir(parents=True, exist_ok=True)
            worst_cases = worst_validation_cases(bright_validation, shipped.networks,
                                                 worst_figure)
    return figures_dir, worst_figure, worst_cases


def _training_data(args: argparse.Namespace, shipped: Shipped, data: Data) -> dict:
    """The manifest's account of what the networks learnt from."""
    training_data = {
        "description": TRAINING_DATA_PHANTOMS + (TRAINING_DATA_EMIDEC if data.real_train
                                                 else ""),
        "train_seed": args.train_seed, "train_series": len(data.train_dirs) - len(data.val_idx),
        "validation_series": len(data.val_idx), "test_seed": args.test_seed,
        "test_series": len(data.test_dirs), "obstruction_probability": OBSTRUCTION_PROBABILITY,
        "contrasts": sorted({s.contrast for s in data.sources}),
        "emidec": None if not data.real_train else {
            "citation": emidec.CITATION,
            "train_cases": len(emidec.read_split(args.emidec)["train"]),
            "copies_per_case_and_contrast": args.emidec_copies,
            "train_spacing_range_mm": list(emidec.SPACING_RANGE_MM),
            "nominal_spacing_mm": emidec.NOMINAL_SPACING_MM,
            "validation_cases": len(data.real_val) // 2,
            "test_cases": len(data.real_tests["emidec"])}}
    if shipped.cross_validated is not None:
        from training.data.folds import FOLDS_FILE

        assignment = shipped.assignment or {}
        per_fold = "enet_p2" in shipped.cross_validated.fold_tasks
        training_data["description"] = TRAINING_DATA_PHANTOMS + TRAINING_DATA_EMIDEC_FOLDS \
            .format(enets=ENETS_PER_FOLD if per_fold else ENETS_SHARED,
                    scar_folds=len(shipped.cross_validated.members.get("scar_unet", [None])))
        training_data["emidec"] |= {
            "train_cases": len(assignment), "validation_cases": 0,
            "remapped_copies_per_case": args.remapped_copies,
            "cross_validation": {"folds": len(set(assignment.values())),
                                 "cases": len(assignment),
                                 "shipped_members": {
                                     task: len(shipped.cross_validated.members.get(task, [0]))
                                     for task in shipped.cross_validated.fold_tasks},
                                 "file": str(FOLDS_FILE.relative_to(README.parent))}}
    return training_data
