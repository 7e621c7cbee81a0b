"""The one training command: phantoms and EMIDEC, arrays, four networks, ONNX, evaluation.

``python -m training --emidec ../shared/data/emidec``: everything lands
under ``--work`` (``runs/train``), the candidate ``models/`` folder included;
``--release`` writes it into ``--models`` (the shipped ``models/``) instead.

Every network learns from phantoms (dark-blood) and from EMIDEC ``train``,
each case as acquired (bright-blood) and darkened (dark-blood), at nominal
spacings drawn per copy; the best epoch and the thresholds are chosen on
phantom validation series and EMIDEC ``validation`` in both contrasts; the
release is reported on three test sets side by side: the phantom test
seed, EMIDEC ``test`` and EMIDEC ``test`` darkened.

Every stage keeps its output under ``--work`` and is skipped or resumed
when run again (phantom series already written, cached arrays, finished
or half-finished training runs), so an interrupted run carries on.
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from service.pipeline.infer import OnnxModel
from service.pipeline.preprocess import InputSpec
from service.pipeline.registry import sha256_of
from service.pipeline.segment import Network, disjoint_classes
from service.pipeline.uncertainty import IntervalCalibration
from training import choices, publish, steps
from training.data import emidec
from training.data.dataset import (
    CLASSES,
    NEEDS_MYOCARDIUM_MODEL,
    TASKS,
    Arrays,
    build_arrays,
    kfold_series,
    validation_series,
)
from training.data.phantoms.__main__ import generate_many
from training.data.phantoms.sequences import OTHER_SEQUENCES, generate_in_sequence
from training.data.phantoms.spec import OBSTRUCTION_PROBABILITY
from training.data.sources import PhantomSource
from training.evaluation.scoring import (
    calibrate_intervals,
    choose_thresholds,
)
from training.quantize import (
    EMIDEC_CALIBRATION_CASES,
    calibration_inputs,
    int8_copy,
    quantised_members,
)
from training.release import MODELS
from training.train import TrainConfig, train

CONFIGS = {
    # Round 2 (issue 34): both U-Nets see three slices (2.5-D) and the LV cavity is a class of
    # its own; they compute in bfloat16 (1.35x faster a step than float32 with XLA on these
    # cores, benchmarks/training_steps.py). Both learn on random 80x80 crops of their inputs
    # (128x128 whole image, 96x96 heart box): fully convolutional, so they are served on the
    # whole input, and the crop is a free translation augmentation.
    # CNN1 now only places the heart box and gives the ENet pipelines their ring; scarred
    # myocardium still weighs 4x more in its cross-entropy. 0.2.0's was still rising at
    # 10,000 steps: 12,000 here, at the faster step, in less time than 0.2.0's 26 minutes.
    "myocardium_unet": TrainConfig(epochs=120, steps_per_epoch=100, batch_size=8, train_crop=80,
                                   foreground_weight=2.0, class_weights=(2.0, 2.0),
                                   emphasis_weight=4.0, validate_last=0.5, ema_momentum=0.995,
                                   precision="mixed_bfloat16", validate_regions=(1,)),
    # CNN2 draws the cascade's myocardium, scar and MVO: the most steps (15,000; 0.2.0: 3,000).
    # Classes background, cavity, myocardium, scar, MVO; scar weighs 6x, MVO 8x (it is the
    # rarest). Blood and fat just outside the true myocardium (its emphasis) weigh 3x more:
    # most false scar lay there. The best epoch is the one with the best mean of the
    # myocardium and scar DSC: it draws both. Its kept weights are a moving average of the
    # training weights (Polyak averaging).
    "scar_unet": TrainConfig(epochs=150, steps_per_epoch=100, batch_size=8, train_crop=80,
                             foreground_weight=6.0, class_weights=(2.0, 2.0, 6.0, 8.0),
                             emphasis_weight=3.0, validate_last=0.5, ema_momentum=0.995,
                             precision="mixed_bfloat16", validate_regions=(1, 2)),
    # The ENet's 8x downsampling makes it hedge on thin scar (probabilities
    # stuck below 0.5): a heavier foreground weight gets it off that plateau.
    # Classes background, scar, MVO; the best epoch by scar DSC.
    "enet_p2": TrainConfig(epochs=8, steps_per_epoch=125, batch_size=8, masked=True,
                           foreground_weight=10.0, validate_regions=(0,)),
    # Protocol 1 stayed all background at weight 10 with EMIDEC in the mix (1,000 steps).
    "enet_p1": TrainConfig(epochs=8, steps_per_epoch=125, batch_size=8, foreground_weight=20.0,
                           validate_regions=(0,)),
}
def task_config(task: str) -> TrainConfig:
    """``CONFIGS[task]`` with what the network's input and classes fix: how many input
    channels are image signal (augmented together) and whether the cavity stands alone."""
    return dataclasses.replace(CONFIGS[task], image_channels=TASKS[task].image_channels,
                               disjoint_classes=disjoint_classes(CLASSES[task]))


# Milliseconds per training step on 2 cores, measured by benchmarks/training_steps.py
# (benchmarks/results/training_steps.json); a step in a real run also waits for augmentation
# and validation: the phantom-only release took 1.4x (U-Nets) and 2.3x (ENets) the steps'
# own time, and about 5 minutes besides (phantoms, arrays, evaluation).
_BENCHMARK = Path(__file__).parents[1] / "benchmarks" / "results" / "training_steps.json"
_RUN_OVER_STEP = {"myocardium_unet": 1.4, "scar_unet": 1.5, "enet_p1": 2.3, "enet_p2": 2.3}
_FIXED_MINUTES = 8.0


def estimated_minutes(configs: dict[str, TrainConfig]) -> float:
    """The whole command from scratch, from the benchmarked step times (an estimate)."""
    try:
        rows = {r["model"]: r for r in json.loads(_BENCHMARK.read_text())["rows"]}
    except (OSError, ValueError, KeyError):
        return float("nan")
    total = _FIXED_MINUTES
    for task, cfg in configs.items():
        ms = rows[task]["step_ms"].get(rows[task].get("release_variant"))
        if ms is None:
            return float("nan")
        total += cfg.epochs * cfg.steps_per_epoch * ms * _RUN_OVER_STEP[task] / 60000.0
    return total


# The scar U-Net's training series (not its validation series) have microvascular
# obstruction in 60 % of deep scars instead of the natural 35 %: the same hearts and scars,
# only more of them with a dark core. With the natural mix it learned to leave the core to
# the blood pool (obstruction recall 0.10-0.13 at 0.8 on the development series); with 60 %
# it calls most of it (0.57-0.61), and 90 % (0.70-0.79) cost more false scar in remote
# myocardium than it gained (README, history step 9; two training seeds each).
SCAR_OBSTRUCTION_PROBABILITY = 0.6


def build_network(task: str, base_filters: int = 16):
    from training.nets import build_enet, build_unet

    n_classes = len(CLASSES[task])
    if task in ("myocardium_unet", "scar_unet"):
        return build_unet((None, None, TASKS[task].channels), n_classes=n_classes,
                          base_filters=base_filters, name=task)
    return build_enet(64, n_classes=n_classes, name=task)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/train"),
                        help="working folder (phantoms, arrays, checkpoints); reused to resume")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="the shipped models folder, written only with --release")
    parser.add_argument("--release", action="store_true",
                        help="write the ONNX files, manifest, cards and EVALUATION.md into "
                        "--models; without it they go to WORK/models")
    parser.add_argument("--emidec", type=Path, default=None,
                        help="the EMIDEC folder (images/, labels/, split.json); without it the "
                        "networks learn from phantoms alone")
    parser.add_argument("--emidec-copies", type=int, default=2,
                        help="copies of each EMIDEC train case per contrast, each at its own "
                        "drawn nominal spacing")
    parser.add_argument("--train-series", type=int, default=160,
                        help="phantom series for training + validation")
    parser.add_argument("--val-series", type=int, default=24)
    parser.add_argument("--test-series", type=int, default=40)
    parser.add_argument("--train-seed", type=int, default=1000)
    parser.add_argument("--test-seed", type=int, default=2000)
    parser.add_argument("--calibration-series", type=int, default=60,
                        help="phantom series (their own seed) added to the validation series "
                        "to calibrate the scar-%% interval")
    parser.add_argument("--calibration-seed", type=int, default=3000)
    parser.add_argument("--negative-series", type=int, default=20,
                        help="test-seed phantom hearts rendered per other sequence (cine, T2) "
                        "with LGE headers, on which the image-reading gate is reported")
    parser.add_argument("--reuse-models", type=Path, default=None,
                        help="take the four networks (and int8 copies) from this released "
                        "models folder instead of training them: for a release that changes "
                        "only what is computed on their outputs (thresholds, the interval, "
                        "the gate); everything after training runs again")
    parser.add_argument("--candidate-dir", type=Path,
                        default=Path("docs/results/round4_candidate"),
                        help="with --release: where the report of a release that the ship "
                        "rule does not ship is written (models/ keeps the shipped one)")
    parser.add_argument("--note", default="",
                        help="a remark printed at the top of EVALUATION.md (e.g. how often "
                        "the test sets were read for this release, and why)")
    parser.add_argument("--folds", type=int, default=0,
                        help="also run K-fold cross-validation by series (K trainings per "
                        "network) and report the validation DSC of each fold (phantom "
                        "releases; with --emidec the cascade is always cross-validated)")
    parser.add_argument("--networks-from", type=Path, default=Path("models"),
                        help="with --emidec: the released models folder whose ENets the "
                        "scar U-Nets' legs score beside the cascade, and which ship again "
                        "where the ENets' own legs are not kept in every fold")
    parser.add_argument("--no-tta-study", dest="tta_study", action="store_false",
                        help="with --emidec: skip measuring test-time augmentation out of fold")
    parser.add_argument("--quick", type=int, default=None, metavar="N",
                        help="check the command end to end on N cases per fold and per test "
                        "set (never for a release: the figures mean nothing)")
    parser.add_argument("--stop-after-training", action="store_true",
                        help="train (or resume) the networks, then stop: a leg of a long "
                        "release, run in the background and resumed by the full command")
    parser.add_argument("--stop-before-publish", action="store_true",
                        help="with --emidec: make and keep the out-of-fold choices and the "
                        "interval's calibration, then stop before the test sets are read: "
                        "the long part of a release, in a sitting that may not hold the rest")
    parser.add_argument("--max-legs", type=int, default=None, metavar="N",
                        help="with --emidec: train at most N pending legs this run, then stop "
                        "(each leg is kept; the next run starts at the first unfinished one)")
    parser.add_argument("--legs", default=None, metavar="PATTERN",
                        help="with --emidec: train only the pending legs whose names match "
                        "this shell pattern (e.g. 'fold*-myocardium_unet'), to fit a sitting")
    parser.add_argument("--commit-legs", action="store_true",
                        help="git-commit each finished leg's folder as soon as it is written")
    parser.add_argument("--legs-root", type=Path, default=None,
                        help="where finished legs are kept (default: releases/round4/legs, "
                        "tracked in git)")
    parser.add_argument("--remapped-copies", type=int, default=2,
                        help="with --emidec: training copies of each case whose tissue "
                        "intensities take a drawn appearance (training/data/appearance.py)")
    parser.add_argument("--epochs", type=int, default=None, help="override every network's")
    parser.add_argument("--steps", type=int, default=None, help="override steps per epoch")
    parser.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    parser.add_argument("--scar-obstruction-probability", type=float,
                        default=SCAR_OBSTRUCTION_PROBABILITY,
                        help="share of deep scars with microvascular obstruction in the scar "
                        f"U-Net's training series (natural mix: {OBSTRUCTION_PROBABILITY})")
    return parser.parse_args(argv)


def _configs(args: argparse.Namespace) -> dict[str, TrainConfig]:
    out = {}
    for task in CONFIGS:
        cfg = task_config(task)
        changes = {}
        if args.epochs is not None:
            changes["epochs"] = args.epochs
        if args.steps is not None:
            changes["steps_per_epoch"] = args.steps
        out[task] = dataclasses.replace(cfg, **changes)
    return out


def _cross_validate(pool: dict[str, Arrays], n_series: int, folds: int,
                    configs: dict[str, TrainConfig], work: Path) -> dict:
    """Validation DSC of each fold, per network.

    Runs after the release training: the scar U-Net's folds use the rings of the
    released myocardium U-Net, which has seen every fold's series, so its fold
    scores are a little optimistic.
    """
    results = {}
    for task in TASKS:
        scores = []
        for fold in range(folds):
            train_idx, val_idx = kfold_series(n_series, folds, fold)
            data = pool[task]
            _, state = train(lambda t=task: build_network(t),
                             data.select(np.isin(data.series, train_idx)),
                             data.select(np.isin(data.series, val_idx)), configs[task],
                             work / "cv" / f"fold{fold}" / task, f"{task} fold {fold}")
            scores.append(state.best_val_dsc)
        results[task] = {"folds": folds, "val_dsc": scores, "mean": float(np.mean(scores))}
    (work / "cv.json").write_text(json.dumps(results, indent=1))
    return results


def _scar_training_dirs(train_dirs: list[Path], split: str, val_idx: np.ndarray, work: Path,
                        args: argparse.Namespace) -> tuple[list[Path], str]:
    """The scar U-Net's series and their array-cache name.

    Its training series are redrawn with more obstruction; its validation series
    keep the natural mix, so the best epoch and the threshold are chosen on what
    the test set (and a scanner) shows.
    """
    probability = args.scar_obstruction_probability
    if probability == OBSTRUCTION_PROBABILITY:
        return train_dirs, split
    redrawn = generate_many(work / "phantoms" / f"train_obstruction{probability:g}",
                            len(train_dirs), args.train_seed, workers=args.workers,
                            obstruction_probability=probability)
    validation = set(val_idx.tolist())
    dirs = [train_dirs[i] if i in validation else redrawn[i] for i in range(len(train_dirs))]
    return dirs, f"{split}_obstruction{probability:g}"


def _emidec_sources(args: argparse.Namespace) -> tuple[list, list, dict[str, list]]:
    """EMIDEC's (train, validation, test sets); all empty without ``--emidec``."""
    if args.emidec is None:
        return [], [], {}
    root = args.emidec
    validation = emidec.cases(root, "validation") + emidec.cases(root, "validation", dark=True)
    tests = {"emidec": emidec.cases(root, "test"),
             "emidec-dark": emidec.cases(root, "test", dark=True)}
    return emidec.training_cases(root, args.emidec_copies, args.train_seed), validation, tests


def _train_and_validation(phantoms: list, phantom_val: np.ndarray, real_train: list,
                          real_val: list) -> tuple[list, np.ndarray]:
    """One list of sources for the arrays, and the indices in it that are validation."""
    sources = [PhantomSource(d) if isinstance(d, Path) else d for d in phantoms]
    sources += real_train + real_val
    val = np.concatenate([np.asarray(phantom_val, int),
                          np.arange(len(sources) - len(real_val), len(sources))])
    return sources, val


def _train_networks(args: argparse.Namespace, work: Path, configs: dict[str, TrainConfig],
                    train_dirs: list[Path], val_idx: np.ndarray, sources: list,
                    val_numbers: np.ndarray, real_train: list, real_val: list, lap, t: float):
    """Arrays, the four trainings, ONNX export and the int8 copies (each stage resumable)."""
    from training.export import export_onnx

    arrays_dir = work / "arrays"
    split = f"train{args.train_seed}_{args.train_series}"
    if real_train:
        split += f"_emidec{args.emidec_copies}"
    pool = build_arrays(sources, arrays_dir, split,
                        tasks=[task for task in TASKS if task not in NEEDS_MYOCARDIUM_MODEL],
                        workers=args.workers)
    t = lap("arrays", t)
    onnx_files, parameters, training, int8_files = {}, {}, {}, {}
    for task, spec in TASKS.items():
        if task in NEEDS_MYOCARDIUM_MODEL:
            # The cascade is trained the way it runs: its peak over the ring CNN1 drew.
            task_dirs, task_split = _scar_training_dirs(train_dirs, split, val_idx, work,
                                                       args)
            task_sources, _ = _train_and_validation(task_dirs, val_idx, real_train, real_val)
            pool |= build_arrays(task_sources, arrays_dir, task_split, tasks=[task],
                                 workers=args.workers,
                                 myocardium_model=onnx_files["myocardium_unet"])
            t = lap(f"arrays {task}", t)
        data = pool[task]
        is_val = np.isin(data.series, val_numbers)
        model, state = train(lambda t=task: build_network(t), data.select(~is_val),
                             data.select(is_val), configs[task], work / "runs" / task, task)
        name = next(m.name for m in MODELS if m.key == task)
        onnx_files[task] = work / "export" / f"{name}.onnx"
        export_started = time.perf_counter()
        best = work / "runs" / task / "best.weights.h5"
        # Exporting is not byte-reproducible: the ONNX file of weights already exported is
        # kept, so a resumed or release run ships what was evaluated and stress-tested.
        if not (onnx_files[task].exists() and best.exists()
                and onnx_files[task].stat().st_mtime > best.stat().st_mtime):
            export_onnx(model, onnx_files[task], input_hw=spec.shape)
        parameters[task] = model.count_params()
        if task in publish.INT8_TASKS:
            int8_files[task] = int8_copy(onnx_files[task], data.select(is_val).x)
        real_rows = np.isin(data.series, np.arange(len(train_dirs), len(sources)))
        training[task] = dataclasses.asdict(configs[task]) | {
            "best_epoch": state.best_epoch, "best_val_dsc": state.best_val_dsc,
            "minutes": state.seconds / 60.0, "train_slices": int((~is_val).sum()),
            "val_slices": int(is_val.sum()),
            "train_slices_emidec": int((~is_val & real_rows).sum()),
            "val_slices_emidec": int((is_val & real_rows).sum())}
        if task in NEEDS_MYOCARDIUM_MODEL:
            training[task]["train_obstruction_probability"] = args.scar_obstruction_probability
        # Training time from the run's own clock (it adds up across resumes) + this export.
        export_minutes = (time.perf_counter() - export_started) / 60.0
        t = lap(f"train + export {task}", t, done_here=state.seconds / 60.0 + export_minutes)

    if args.folds:
        cv = _cross_validate(pool, len(train_dirs), args.folds, configs, work)
        for task in TASKS:
            training[task]["cross_validation"] = cv[task]
        t = lap("cross-validation", t)
    return onnx_files, parameters, training, int8_files, t


def _train_legs(args: argparse.Namespace, work: Path, configs: dict[str, TrainConfig],
                train_dirs: list[Path], val_idx: np.ndarray, assignment: dict[str, int],
                shared_files: dict, lap, t: float, shared_specs: dict | None = None
                ) -> tuple[dict | None, float]:
    """Train the pending legs of the release (both U-Nets and both ENets of every fold, the
    capacity study); returns every fold's records once the release's legs are finished (the
    capacity study's never hold it back), else None.
    ``shared_files`` and ``shared_specs``: the earlier release's ENets, which the scar
    U-Nets' legs score beside the cascade."""
    from training import fold_legs, legs

    root = args.legs_root or legs.LEGS_ROOT
    folds = len(set(assignment.values()))
    plan = fold_legs.plan(configs, folds, args.epochs)
    if legs.pending(plan, root):
        scar_dirs, _ = _scar_training_dirs(train_dirs, "", val_idx, work, args)
        pool = fold_legs.pool_sources(args.emidec, scar_dirs, val_idx, sorted(assignment),
                                      args.emidec_copies, args.remapped_copies,
                                      args.train_seed)
        trainer = fold_legs.FoldLegTrainer(pool, assignment, work, build_network,
                                           shared_files, root, args.workers, plan,
                                           shared_specs)
        chosen = [leg for leg in plan
                  if args.legs is None or fnmatch.fnmatchcase(leg.name, args.legs)]
        trained = legs.run_legs(chosen, trainer, root, args.max_legs, args.commit_legs,
                                plan=plan, generated=fold_legs.with_legs_table(plan, root))
        t = lap("legs trained in one sitting: " + (", ".join(trained) or "none"), t)
    left = legs.pending(plan, root)
    print(f"training: {len(plan) - len(left)} of {len(plan)} legs finished"
          + (f"; next: {left[0].name}" if left else ""), flush=True)
    if fold_legs.release_legs(left):  # the capacity study's legs hold no release back
        return None, t
    records = {fold: {} for fold in range(folds)}
    for leg in fold_legs.last_stages(plan):
        if leg.variant:
            continue
        record = legs.finished(leg, root)
        stages = [*legs.earlier_stages(plan, leg, root), record]
        history = fold_legs.joined_curves([r["history"] for r in stages])
        records[leg.fold][leg.task] = record | {
            "history": history, "kept_epoch": len(history),
            "held_out_val_dsc": history[-1]["val_dsc"],
            "minutes": sum(r["train_minutes"] for r in stages),
            "flatness": legs.flatness(history),
            "flatness_shifted": legs.flatness(history, "val_dsc_shifted"),
            "onnx": str(legs.leg_dir(leg, root) / legs.ONNX_FILE)}
    return records, t


def _choices_step(args: argparse.Namespace, fold_records: dict, shared_files: dict,
                  assignment: dict[str, int]) -> steps.Step:
    """Where the out-of-fold choices are kept (beside the legs, committed with
    ``--commit-legs``), under what they are computed from."""
    from training import crossval, legs

    own = crossval.fold_trained(fold_records)
    made_from = steps.fingerprint(
        fold_records, {task: path for task, path in shared_files.items() if task not in own},
        quick=args.quick, tta_study=args.tta_study, assignment=assignment,
        train_series=args.train_series, val_series=args.val_series, train_seed=args.train_seed)
    return steps.Step("choices", steps.steps_root(args.legs_root or legs.LEGS_ROOT), made_from,
                      args.commit_legs)


def _calibration_step(args: argparse.Namespace, kept_choices: steps.Step) -> steps.Step:
    """Where the interval's calibration is kept: made from the choices as kept."""
    made_from = dict(kept_choices.fingerprint) | {
        "choices": sha256_of(kept_choices.path),
        "calibration": {"series": args.calibration_series, "seed": args.calibration_seed,
                        "review_width": "out of fold"}}
    return steps.Step("calibration", kept_choices.folder, made_from, args.commit_legs)


def _evaluation_phantoms(args: argparse.Namespace, work: Path) -> tuple[list, list, dict]:
    """The phantom test, calibration and negative series (made once, kept under WORK)."""
    test_dirs = generate_many(work / "phantoms" / "test", args.test_series, args.test_seed,
                              workers=args.workers)
    calibration_dirs = generate_many(work / "phantoms" / "calibration", args.calibration_series,
                                     args.calibration_seed, workers=args.workers)
    negative_dirs = {sequence: generate_in_sequence(work / "phantoms" / "negatives_test",
                                                    args.negative_series, args.test_seed,
                                                    sequence, workers=args.workers)
                     for sequence in OTHER_SEQUENCES}
    return test_dirs, calibration_dirs, negative_dirs


def _quick_assignment(assignment: dict[str, int], per_fold: int, folds: int = 2
                      ) -> dict[str, int]:
    """The first cases of the first two folds (checking the command end to end, never a
    release)."""
    out: dict[str, int] = {}
    for case, fold in sorted(assignment.items()):
        if fold < folds and sum(f == fold for f in out.values()) < per_fold:
            out[case] = fold
    return out


def _shared_networks(models_dir: Path, work: Path) -> tuple[dict, dict, dict, dict]:
    """The ENets of a released models folder, copied under WORK, with their parameters,
    training records and inputs: they stand in for ENets not trained per fold (and the scar
    U-Nets' legs score them beside the cascade)."""
    from training.crossval import ENET_TASKS

    files, parameters, training, _, specs = _reused_networks(models_dir, work,
                                                             keys=ENET_TASKS)
    return files, parameters, training, specs


def _reused_networks(models_dir: Path, work: Path, keys: tuple[str, ...] | None = None):
    """The networks of a released models folder (``keys``: only these), copied under
    WORK/export, with the parameters, training records and input specs of its manifest
    (the threshold choice is redone). The spec is the manifest's, not today's training
    spec: 0.3.2's ENets were trained on the whole slice's Hough search."""
    manifest = json.loads((models_dir / "manifest.json").read_text())
    entries = {m["name"]: m for m in manifest["models"]}
    export = work / "export"
    export.mkdir(parents=True, exist_ok=True)
    onnx_files, parameters, training, int8_files, specs = {}, {}, {}, {}, {}
    for model in MODELS:
        if keys is not None and model.key not in keys:
            continue
        entry = entries[model.name]
        onnx_files[model.key] = export / entry["file"]
        shutil.copy2(models_dir / entry["file"], onnx_files[model.key])
        if sha256_of(onnx_files[model.key]) != entry["sha256"]:
            raise SystemExit(f"{entry['file']} does not match its manifest's sha256")
        if "int8" in entry:
            int8_files[model.key] = export / entry["int8"]["file"]
            shutil.copy2(models_dir / entry["int8"]["file"], int8_files[model.key])
        parameters[model.key] = entry["parameters"]
        specs[model.key] = InputSpec.from_dict(entry["input"]["preprocessing"])
        # The release that trained these weights, carried through releases that reuse them.
        training[model.key] = {k: v for k, v in entry["training"].items()
                               if k != "threshold_choice"} | {
            "weights_from_release": entry["training"].get("weights_from_release",
                                                          entry["version"])}
        curves = models_dir / "evaluation" / f"curves_{model.key}.png"
        (work / "runs" / model.key).mkdir(parents=True, exist_ok=True)
        shutil.copy2(curves, work / "runs" / model.key / "curves.png")
    return onnx_files, parameters, training, int8_files, specs


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    models_dir = args.models if args.release else work / "models"
    # Minutes per stage as it was really done: a stage this invocation skipped or resumed
    # (phantoms on disk, cached arrays, finished training) keeps the time recorded when it
    # was done, so the total is the cost of the whole command from scratch.
    timings_path = work / "timings.json"
    minutes: dict[str, float] = (json.loads(timings_path.read_text())
                                 if timings_path.exists() else {})
    started_at = time.perf_counter()
    configs = _configs(args)
    if args.reuse_models:
        print(f"training: networks reused from {args.reuse_models}; writing {models_dir}",
              flush=True)
    else:
        print(f"training: about {estimated_minutes(configs):.0f} minutes on 2 CPU cores from "
              f"scratch (less when resumed); writing {models_dir}", flush=True)

    def lap(stage: str, since: float, done_here: float | None = None,
            reused: bool = False) -> float:
        """``reused``: the stage was taken from where it is kept (a kept step), so the time
        recorded when it was done stands."""
        now = time.perf_counter()
        spent = (now - since) / 60.0 if done_here is None else done_here
        if (spent >= 0.05 and not reused) or stage not in minutes:
            minutes[stage] = spent
        timings_path.write_text(json.dumps(minutes, indent=1))
        return now

    t = time.perf_counter()
    train_dirs = generate_many(work / "phantoms" / "train", args.train_series, args.train_seed,
                               workers=args.workers)
    t = lap("phantoms", t)
    real_train, real_val, real_tests = _emidec_sources(args)
    val_idx = validation_series(len(train_dirs), args.val_series, args.train_seed)
    sources, val_numbers = _train_and_validation(train_dirs, val_idx, real_train, real_val)

    cross_validated = None
    if args.emidec is not None and not args.reuse_models:
        from training.data.folds import read_folds

        assignment = read_folds()
        shared_networks = _shared_networks(args.networks_from, work)
        if args.quick:
            assignment = _quick_assignment(assignment, args.quick)
            train_dirs = train_dirs[:max(args.quick * 4, 8)]
            val_idx = val_idx[val_idx < len(train_dirs)]
        fold_records, t = _train_legs(args, work, configs, train_dirs, val_idx, assignment,
                                      shared_networks[0], lap, t, shared_networks[3])
        if fold_records is None or args.stop_after_training:
            print("training: stopping before the out-of-fold choices (legs pending or "
                  "--stop-after-training)", flush=True)
            return 0
        test_dirs, calibration_dirs, negative_dirs = _evaluation_phantoms(args, work)
        kept_choices = _choices_step(args, fold_records, shared_networks[0], assignment)
        cross_validated = choices.cross_validated(
            args.emidec, work, fold_records, [train_dirs[i] for i in sorted(val_idx)],
            assignment, shared_networks, args.quick, args.tta_study, kept_choices)
        if cross_validated.choices_kept:
            print(f"training: out-of-fold choices kept in {kept_choices.path}", flush=True)
        t = lap("out-of-fold choices (thresholds, ring, TTA)", t,
                reused=cross_validated.choices_kept)
        onnx_files, parameters, training = (cross_validated.onnx_files,
                                            cross_validated.parameters,
                                            cross_validated.training)
        networks, chosen = cross_validated.networks, cross_validated.chosen
        specs = cross_validated.specs
        thresholds = {task: chosen[task]["threshold"] if task in chosen else 0.5
                      for task in TASKS}
        validation_sources = [PhantomSource(train_dirs[i]) for i in sorted(val_idx)]
        # The interval is calibrated on the out-of-fold series (each with its fold's
        # networks) and on phantoms (the ensemble), per group.
        kept_calibration = _calibration_step(args, kept_choices)
        kept = kept_calibration.load()
        if kept is not None:
            print(f"training: interval calibration kept in {kept_calibration.path}", flush=True)
            calibrations = {m: IntervalCalibration.from_dict(c) for m, c in kept.items()}
        else:
            calibrations = calibrate_intervals(
                cross_validated.calibration_items
                + [(s, networks) for s in validation_sources]
                + [(PhantomSource(d), networks) for d in calibration_dirs], None,
                # --quick has a handful of series, too few for a 95 % quantile.
                **({"level": 0.5} if args.quick else {}), fold_of=assignment)
            kept_calibration.keep({m: c.to_dict() for m, c in calibrations.items()},
                                  "the scar-% interval of each network pipeline, calibrated "
                                  "on the out-of-fold series and phantoms")
        t = lap("interval calibration (out of fold)", t, reused=kept is not None)
        if args.stop_before_publish:
            print("training: stopping before the int8 copies and the test sets "
                  "(--stop-before-publish): the choices and the calibration are kept",
                  flush=True)
            return 0
        # Every shipped fold of the U-Nets gets its int8 copy (issue 54: an ensemble is paid
        # for in int8 where it holds), its ranges from the shipped networks' inputs on the
        # phantom validation series and EMIDEC train cases (never a test set); publish
        # tries them. A network that ships one fold (not an ensemble) gets its one copy.
        shipped_files = {task: cross_validated.members.get(task, [onnx_files[task]])
                         for task in cross_validated.fold_tasks}
        copies = quantised_members(
            shipped_files,
            calibration_inputs(validation_sources
                               + list(real_train)[:EMIDEC_CALIBRATION_CASES], networks),
            publish.INT8_TASKS)
        int8_files = {task: paths if task in cross_validated.members else paths[0]
                      for task, paths in copies.items()}
        for task in set(publish.INT8_TASKS) & (set(shipped_files) - set(int8_files)):
            print(f"training: no calibration inputs for {task} (no ring on the calibration "
                  f"series): it ships without int8 copies", flush=True)
        t = lap("int8 copies of the fold members", t)
    else:
        test_dirs, calibration_dirs, negative_dirs = _evaluation_phantoms(args, work)
        specs = dict(TASKS)
        if args.reuse_models:
            onnx_files, parameters, training, int8_files, reused = _reused_networks(
                args.reuse_models, work)
            specs |= reused  # each network as its release trained it
            t = lap("networks reused", t)
        else:
            onnx_files, parameters, training, int8_files, t = _train_networks(
                args, work, configs, train_dirs, val_idx, sources, val_numbers, real_train,
                real_val, lap, t)
        classes = {entry.key: entry.classes for entry in MODELS}
        networks = {task: Network(OnnxModel(onnx_files[task]), specs[task], classes[task])
                    for task in TASKS}
        validation_sources = [sources[i] for i in sorted(val_numbers)]
        chosen = choose_thresholds(validation_sources, networks)
        thresholds = {task: chosen[task]["threshold"] if task in chosen else 0.5
                      for task in TASKS}
        networks = {task: dataclasses.replace(net, threshold=thresholds[task])
                    for task, net in networks.items()}
        for task, choice in chosen.items():
            training[task]["threshold_choice"] = choice
        t = lap("thresholds (validation)", t)
        # The interval is calibrated on the validation series and on phantoms of their own
        # seed (more series, so a 95 % quantile is not set by one of them; the real scans
        # are a group of their own, so the phantoms cannot set it for them).
        calibrations = calibrate_intervals(
            validation_sources + [PhantomSource(d) for d in calibration_dirs], networks)
        t = lap("interval calibration (validation)", t)
    publish.publish(
        args, work, models_dir,
        publish.Shipped(networks, onnx_files, int8_files, parameters, training, thresholds,
                        chosen, calibrations, cross_validated,
                        fold_records if cross_validated is not None else None,
                        assignment if cross_validated is not None else None, specs),
        publish.Data(train_dirs, val_idx, sources, real_train, real_val, real_tests, test_dirs,
                     negative_dirs, validation_sources),
        publish.Clock(minutes, lap, t, started_at), argv)
    return 0
