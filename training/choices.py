"""The release's choices, made on the out-of-fold predictions of the 80 EMIDEC cases.

Thresholds, the ring constraint and test-time augmentation are each chosen
on the networks that ship (the folds' own U-Nets, and their mean for the
phantom validation series), scored twice as issue 52 asks: as given (each
case as acquired and darkened) and shifted (the fixed other-centre copies of
:mod:`training.data.appearance`). A variant's score weighs the three groups
(bright-blood, dark-blood, shifted) alike; of equal scores the simpler
post-processing wins.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.pipeline.ensemble import SQUARE_SYMMETRIES
from service.pipeline.infer import OnnxModel
from service.pipeline.segment import Network
from training import crossval, steps
from training.data.dataset import CLASSES, TASKS
from training.data.sources import PhantomSource
from training.evaluation.scoring import (
    SCAR_NETWORKS,
    SeriesScore,
    choose_thresholds,
    evaluate,
    with_crop_ring,
    with_networks,
)
from training.evaluation.summary import summarise
from training.onnx_graph import fused_copy
from training.release import MODELS

SHIFTED = "shifted"
# The ENets (crossval.ENET_TASKS) may take their crop from the ring the cascade's scar
# U-Net redraws instead of the myocardium U-Net's (issue 52, point 2): chosen per ENet
# pipeline out of fold.
CROP_RING_SOURCE = "scar_unet"


@dataclasses.dataclass
class CrossValidated:
    """What the out-of-fold series chose, and the ensemble that ships."""

    networks: dict  # the ensemble, with the chosen thresholds and post-processing
    chosen: dict  # each scar network's threshold choice
    members: dict  # task -> its shipped folds' files, in fold order (ensembles only)
    onnx_files: dict  # task -> the file named in the manifest (fold 0's)
    parameters: dict
    training: dict
    calibration_items: list  # out-of-fold (source, networks) pairs, as given and shifted
    oof_scores: list
    variants: dict  # variant name -> its out-of-fold summaries and score
    complete_ring: bool
    tta: dict
    # Each shipped network's input (the manifest's): the training specs for the networks
    # trained per fold, the earlier release's for the shared ones.
    specs: dict = dataclasses.field(default_factory=dict)
    # The networks trained per fold (crossval.fold_trained), in task order.
    fold_tasks: tuple = crossval.FOLD_TASKS
    # Each variant's fold networks, for the before/after figure (not written anywhere).
    variant_networks: dict = dataclasses.field(default_factory=dict)
    # Scar task -> the task whose redrawn ring places its crop (the manifest's ``ring``),
    # and what chose it (per ENet pipeline: both scores and the threshold on each ring).
    crop_rings: dict = dataclasses.field(default_factory=dict)
    crop_ring_choice: dict = dataclasses.field(default_factory=dict)
    # Whether the decisions were taken from where they are kept (nothing run for them).
    choices_kept: bool = False


def oof_summaries(scores: list) -> dict:
    """Out-of-fold summaries per group: EMIDEC as acquired, darkened, and shifted."""
    groups = {"bright-blood": [s for s in scores if s.test_set != SHIFTED
                               and s.contrast == "bright-blood"],
              "dark-blood": [s for s in scores if s.test_set != SHIFTED
                             and s.contrast == "dark-blood"],
              SHIFTED: [s for s in scores if s.test_set == SHIFTED]}
    return {name: summarise(group) for name, group in groups.items() if group}


def strip_sets(by_set: dict, test_set_labels: dict) -> dict:
    """The strip plot's columns: out of fold per group, then every test set."""
    out = {f"out of fold, {g}": [s for s in by_set["out-of-fold"]
                                 if (s.test_set == SHIFTED) == (g == SHIFTED)
                                 and (g == SHIFTED or s.contrast == g)]
           for g in ("bright-blood", "dark-blood", SHIFTED)}
    return out | {test_set_labels.get(k, k): v for k, v in by_set.items() if k != "out-of-fold"}


def _scores(pairs_as_given: list, pairs_shifted: list, name: str) -> list:
    return (evaluate(pairs_as_given, None, f"out-of-fold {name}")
            + evaluate(pairs_shifted, None, SHIFTED))


def _with_tasks(nets: dict, replacements: dict, tasks) -> dict:
    return {task: replacements[task] if task in tasks else net for task, net in nets.items()}


def _on_cascade_ring(nets: dict, thresholds: dict | None = None) -> dict:
    """The ENets on the cascade's ring (at ``thresholds`` where given); the rest as they are."""
    return {task: with_crop_ring(net if thresholds is None else dataclasses.replace(
                net, threshold=thresholds[task]), CROP_RING_SOURCE)
            if task in crossval.ENET_TASKS else net for task, net in nets.items()}


def choose_crop_rings(fold_nets: list, shipped: dict, chosen: dict, summaries: dict,
                      scores: list, oof, phantom_val: list) -> tuple:
    """Each ENet pipeline on the cascade's ring or its first one, by its own out-of-fold
    score (:func:`crossval.variant_score` of that pipeline), its threshold chosen again on
    the new ring; of equal scores the first ring (nothing more to run).

    ``shipped`` (the ensemble) scores the phantom validation series. Returns the fold
    networks, the threshold choices and the out-of-fold scores with the choice applied,
    then the choice (task -> ring task) and its record.
    """
    ringed = [_on_cascade_ring(nets) for nets in fold_nets]
    ringed_chosen = choose_thresholds(oof(ringed) + oof(ringed, shifted=True)
                                      + [(s, _on_cascade_ring(shipped)) for s in phantom_val])
    thresholds = {task: ringed_chosen[task]["threshold"] for task in crossval.ENET_TASKS}
    ringed = [_on_cascade_ring(nets, thresholds) for nets in fold_nets]
    ringed_scores = _scores(oof(ringed), oof(ringed, shifted=True), "ENets on the cascade's ring")
    ringed_summaries = oof_summaries(ringed_scores)
    rings, record = {}, {}
    for task in crossval.ENET_TASKS:
        method = SCAR_NETWORKS[task]
        first = crossval.variant_score(summaries, method=method)
        cascade = crossval.variant_score(ringed_summaries, method=method)
        taken = round(cascade, 4) > round(first, 4)
        record[method] = {"first_ring_score": first, "cascade_ring_score": cascade,
                          "first_ring_threshold": chosen[task]["threshold"],
                          "cascade_ring_threshold": thresholds[task], "taken": taken,
                          "summaries": {"first ring": {g: v["methods"][method]
                                                       for g, v in summaries.items()},
                                        "cascade's ring": {g: v["methods"][method] for g, v
                                                           in ringed_summaries.items()}}}
        if taken:
            rings[task] = CROP_RING_SOURCE
    fold_nets = [_with_tasks(n, r, rings) for n, r in zip(fold_nets, ringed, strict=True)]
    chosen = {task: ringed_chosen[task] if task in rings else c for task, c in chosen.items()}
    methods = {SCAR_NETWORKS[task] for task in rings}
    scores = ([s for s in scores if s.method not in methods]
              + [s for s in ringed_scores if s.method in methods])
    return fold_nets, chosen, scores, rings, record


@dataclasses.dataclass
class Decisions:
    """What the out-of-fold series decided, as numbers: kept in the repository when it is
    made (:mod:`training.steps`), so a release resumed in another sitting builds the same
    networks without running them again."""

    variants: dict  # name -> complete_ring, thresholds, score, summaries
    best: str  # the variant that ships
    chosen: dict  # scar task -> its threshold choice (on the crop ring it takes)
    crop_rings: dict  # scar task -> the task whose ring places its crop, where chosen
    crop_ring_choice: dict
    tta: dict
    oof_scores: list  # SeriesScore of the shipped post-processing, as given and shifted

    def to_dict(self) -> dict:
        return dataclasses.asdict(self) | {
            "oof_scores": [dataclasses.asdict(s) for s in self.oof_scores]}

    @classmethod
    def from_dict(cls, data: dict) -> Decisions:
        return cls(**data | {"oof_scores": [SeriesScore(**s) for s in data["oof_scores"]]})


def decide(per_fold: list, ensemble: dict, oof, phantom_val: list,
           tta_study: bool = True) -> Decisions:
    """Every post-processing choice on the out-of-fold series (``oof``: fold networks ->
    (series, networks) pairs) and the phantom validation series (the ensemble)."""
    variants, chosen_by, nets_by = {}, {}, {}
    for ring in (False, True):
        name = "ring completed" if ring else "network's ring"
        fold_nets = [crossval.with_post_processing(n, ring) for n in per_fold]
        shipped = crossval.with_post_processing(ensemble, ring)
        chosen = choose_thresholds(oof(fold_nets) + oof(fold_nets, shifted=True)
                                   + [(s, shipped) for s in phantom_val])
        thresholds = {task: c["threshold"] for task, c in chosen.items()}
        fold_nets = [crossval.with_post_processing(n, ring, thresholds) for n in per_fold]
        shipped = crossval.with_post_processing(ensemble, ring, thresholds)
        scores = _scores(oof(fold_nets), oof(fold_nets, shifted=True), name)
        summaries = oof_summaries(scores)
        variants[name] = {"complete_ring": ring, "thresholds": thresholds,
                          "score": crossval.variant_score(summaries),
                          "summaries": summaries, "scores": scores}
        chosen_by[name], nets_by[name] = chosen, (fold_nets, shipped)
    # Of equal scores, the simpler post-processing (the network's own ring).
    best = max(variants, key=lambda v: (round(variants[v]["score"], 4),
                                        not variants[v]["complete_ring"]))
    fold_nets, shipped = nets_by[best]  # the ensemble for the phantom validation series
    fold_nets, chosen_best, best_scores, crop_rings, crop_ring_choice = \
        choose_crop_rings(fold_nets, shipped, chosen_by[best], variants[best]["summaries"],
                          variants[best]["scores"], oof, phantom_val)
    tta = {}
    if tta_study:
        # On the cases as acquired and shifted: eight network runs a slice.
        tta_nets = [crossval.with_test_time_augmentation(n) for n in fold_nets]
        tta_scores = _scores([(s, n) for s, n in oof(tta_nets) if not s.dark],
                             oof(tta_nets, shifted=True), "TTA")
        tta_summaries = oof_summaries(tta_scores)
        groups = ("bright-blood", SHIFTED)
        tta = {"score": crossval.variant_score(tta_summaries, groups),
               "summaries": tta_summaries, "contrasts": list(groups),
               "without": crossval.variant_score(variants[best]["summaries"], groups),
               "variant": best, "network_runs_per_slice": len(SQUARE_SYMMETRIES),
               "shipped": False}
    return Decisions(
        variants={v: {k: x for k, x in d.items() if k != "scores"} for v, d in variants.items()},
        best=best, chosen=chosen_best, crop_rings=crop_rings,
        crop_ring_choice=crop_ring_choice, tta=tta, oof_scores=best_scores)


def decided_networks(nets: dict, decisions: Decisions) -> dict:
    """Networks as the decisions ship them: the chosen ring constraint and thresholds, and
    each ENet's crop on the ring chosen for it."""
    thresholds = {task: c["threshold"] for task, c in decisions.chosen.items()}
    ring = decisions.variants[decisions.best]["complete_ring"]
    out = crossval.with_post_processing(nets, ring, thresholds)
    return {task: with_crop_ring(net, decisions.crop_rings[task])
            if task in decisions.crop_rings else net for task, net in out.items()}


def cross_validated(emidec_root: Path, work: Path, fold_records: dict,
                    phantom_validation_dirs: Sequence[Path], assignment: dict[str, int],
                    shared_networks: tuple[dict, dict, dict, dict], limit: int | None = None,
                    tta_study: bool = True, kept: steps.Step | None = None) -> CrossValidated:
    """Every post-processing choice on the out-of-fold predictions of the 80 EMIDEC cases
    (each with its own fold's networks) and the phantom validation series (the ensemble).

    ``fold_records[fold][task]`` holds each finished leg's record, with its ONNX file
    under ``"onnx"``: both U-Nets, and the ENets where their legs are kept in every fold
    (:func:`crossval.fold_trained`). ``shared_networks`` (files, parameters, training
    records and input specs by task) stand in for the ENets that are not. ``kept``: where
    the decisions are kept; found there (made from the same inputs), nothing is run.
    """
    folds = len(fold_records)
    own = crossval.fold_trained(fold_records)
    shared_files, shared_parameters, shared_training, shared_specs = (
        {task: v for task, v in part.items() if task not in own} for part in shared_networks)
    shared = {task: Network(OnnxModel(path), shared_specs[task], CLASSES[task])
              for task, path in shared_files.items()}
    files = [{task: Path(fold_records[f][task]["onnx"]) for task in own}
             for f in range(folds)]
    # Each distinct network input answered once across the passes over the same series, and
    # kept under ``work`` so that a release stopped here answers again from the disk.
    per_fold = crossval.remembered(crossval.fold_networks(files, shared), work / "answers")

    def oof(fold_nets: list, shifted: bool = False) -> list:
        return crossval.out_of_fold(emidec_root, fold_nets, assignment, limit, shifted)

    ensemble = crossval.ensemble_networks(per_fold, own)
    found = kept.load() if kept is not None else None
    if found is not None:
        decisions = Decisions.from_dict(found)
    else:
        decisions = decide(per_fold, ensemble, oof,
                           [PhantomSource(d) for d in phantom_validation_dirs], tta_study)
        if kept is not None:
            kept.keep(decisions.to_dict(), _decisions_summary(decisions))
    fold_nets = [decided_networks(n, decisions) for n in per_fold]
    members, onnx_files, parameters, training = {}, {}, {}, {}
    export = work / "export"
    export.mkdir(parents=True, exist_ok=True)
    for task in own:
        name = next(m.name for m in MODELS if m.key == task)
        shipped_files, fused = [], []
        for fold in range(crossval.shipped_folds(task, folds)):
            path = export / f"{name}-fold{fold}.onnx"
            # Shipped with the exporter's PReLUs fused (the same answers, a faster start).
            fused.append(fused_copy(files[fold][task], path))
            shipped_files.append(path)
        onnx_files[task] = shipped_files[0]
        if len(shipped_files) > 1:
            members[task] = shipped_files
        records = [fold_records[f][task] for f in range(folds)]
        parameters[task] = records[0]["parameters"]
        training[task] = records[0]["config"] | {
            "shipped_folds": list(range(len(shipped_files))),
            "best_epoch": records[0]["kept_epoch"],
            "best_val_dsc": float(np.mean([r["held_out_val_dsc"] for r in records])),
            "minutes": float(sum(r["minutes"] for r in records)),
            "prelus_fused": min(fused),  # every member's (the card says "each member's")
            "cross_validation": [{"fold": r["fold"], "held_out_cases": len(r["held_out_cases"]),
                                  "held_out_val_dsc": r["held_out_val_dsc"],
                                  "kept_epoch": r["kept_epoch"], "minutes": r["minutes"],
                                  "flatness": r["flatness"],
                                  "flatness_shifted": r["flatness_shifted"]}
                                 for r in records]}
    onnx_files |= shared_files
    parameters |= shared_parameters
    training |= shared_training
    for task, choice in decisions.chosen.items():
        training[task]["threshold_choice"] = choice
    calibration_items = with_networks(oof(fold_nets) + oof(fold_nets, shifted=True), None)
    return CrossValidated(
        networks=decided_networks(ensemble, decisions), chosen=decisions.chosen,
        members=members, onnx_files=onnx_files, parameters=parameters, training=training,
        calibration_items=calibration_items, oof_scores=decisions.oof_scores,
        variants=decisions.variants,
        complete_ring=decisions.variants[decisions.best]["complete_ring"], tta=decisions.tta,
        variant_networks={v: [crossval.with_post_processing(n, d["complete_ring"],
                                                            d["thresholds"])
                              for n in per_fold]
                          for v, d in decisions.variants.items()},
        specs={task: TASKS[task] for task in own} | shared_specs, fold_tasks=own,
        crop_rings=decisions.crop_rings, crop_ring_choice=decisions.crop_ring_choice,
        choices_kept=found is not None)


def _decisions_summary(decisions: Decisions) -> str:
    thresholds = ", ".join(f"{task} {c['threshold']:g}" for task, c in decisions.chosen.items())
    rings = ", ".join(decisions.crop_rings) or "none"
    return (f"{decisions.best} (score {decisions.variants[decisions.best]['score']:.4f}); "
            f"thresholds {thresholds}; ENets on the cascade's ring: {rings}")
