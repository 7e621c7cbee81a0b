"""The one training command: phantoms, arrays, four networks, ONNX, evaluation, ``models/``.

``python -m training --work runs/train --models models``

Every stage keeps its output under ``--work`` and is skipped or resumed
when run again (phantom series already written, cached arrays, finished
or half-finished training runs), so an interrupted run carries on.
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
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

from service import __version__
from service.infer import OnnxModel
from service.segment import Network

from .dataset import NEEDS_MYOCARDIUM_MODEL, TASKS, Arrays, build_arrays, kfold_series
from .evaluate import (
    box_plots,
    choose_thresholds,
    evaluate,
    markdown_report,
    summarise,
    write_csv,
)
from .phantoms.__main__ import generate_many
from .phantoms.spec import OBSTRUCTION_PROBABILITY
from .release import MODELS, build_manifest, write_models_dir
from .train import TrainConfig, train

CONFIGS = {
    # Both U-Nets learn on random 80x80 crops of their inputs (128x128 whole image,
    # 96x96 heart box): fully convolutional, so they are served on the whole input;
    # a step costs 0.40 and 0.70 of a whole-input one (benchmarks/training_steps.py),
    # and the crop is a free translation augmentation.
    # Scarred myocardium weighs 5x in CNN1's cross-entropy: the first release
    # left bright subendocardial scar out of the ring, which the scar % feels.
    "myocardium_unet": TrainConfig(epochs=24, steps_per_epoch=100, batch_size=8, train_crop=80,
                                   foreground_weight=2.0, emphasis_weight=4.0,
                                   validate_last=0.5),
    # Scar is the target that matters and the hardest: the most steps, and a heavier
    # weight on scar than on myocardium (classes background, myocardium, scar; 6x beat 2x
    # and 10x on the development and validation series, README). Blood and
    # fat just outside the true myocardium (its emphasis) weigh 4x: most false scar lay there.
    # Its validated and kept weights are a moving average over about the last 200 steps: on
    # the development series, median scar DSC 0.867 against 0.827 for the last step's
    # weights of the same run (better on 30 of 51 series), validation median unchanged; the
    # release run's averaged model gave 0.843 there (better on 33 of 51).
    "scar_unet": TrainConfig(epochs=20, steps_per_epoch=100, batch_size=8, train_crop=80,
                             foreground_weight=6.0, class_weights=(2.0, 6.0),
                             emphasis_weight=3.0, validate_last=0.5, ema_momentum=0.995),
    # The ENet's 8x downsampling makes it hedge on thin scar (probabilities
    # stuck below 0.5): a heavier foreground weight gets it off that plateau.
    # 750 steps each (the paper comparison). Shorter schedules that fit 30 minutes on a
    # slow day (CNN1 18 epochs, ENets 625 steps: 29.7 min) measured worse: Protocol 1
    # stayed all background, cascade scar DSC 0.807 instead of 0.828.
    "enet_p2": TrainConfig(epochs=6, steps_per_epoch=125, batch_size=8, masked=True,
                           foreground_weight=10.0, xla=False),
    "enet_p1": TrainConfig(epochs=6, steps_per_epoch=125, batch_size=8, foreground_weight=10.0,
                           xla=False),
}
# The scar U-Net's training series (not its validation series) have microvascular
# obstruction in 60 % of deep scars instead of the natural 35 %: the same hearts and scars,
# only more of them with a dark core. With the natural mix it learned to leave the core to
# the blood pool (obstruction recall 0.10-0.13 at 0.8 on the development series); with 60 %
# it calls most of it (0.57-0.61), and 90 % (0.70-0.79) cost more false scar in remote
# myocardium than it gained (README, history step 9; two training seeds each).
SCAR_OBSTRUCTION_PROBABILITY = 0.6
TARGETS = {"myocardium_dsc": 0.90, "scar_dsc": 0.85, "abs_scar_percent_error": 1.5}


def build_network(task: str):
    from .nets import build_enet, build_unet

    if task == "myocardium_unet":
        return build_unet((None, None, 1), name="myocardium_unet")
    if task == "scar_unet":
        return build_unet((None, None, TASKS[task].channels), n_classes=3, name="scar_unet")
    return build_enet(64, name=task)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("runs/train"),
                        help="working folder (phantoms, arrays, checkpoints); reused to resume")
    parser.add_argument("--models", type=Path, default=Path("models"),
                        help="where the released ONNX files, manifest and cards go")
    parser.add_argument("--train-series", type=int, default=160,
                        help="phantom series for training + validation")
    parser.add_argument("--val-series", type=int, default=24)
    parser.add_argument("--test-series", type=int, default=40)
    parser.add_argument("--train-seed", type=int, default=1000)
    parser.add_argument("--test-seed", type=int, default=2000)
    parser.add_argument("--folds", type=int, default=0,
                        help="also run K-fold cross-validation by series (K trainings per "
                        "network) and report the validation DSC of each fold")
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
    for task, cfg in CONFIGS.items():
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


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    from .export import export_onnx

    work: Path = args.work
    work.mkdir(parents=True, exist_ok=True)
    # Minutes per stage as it was really done: a stage this invocation skipped or resumed
    # (phantoms on disk, cached arrays, finished training) keeps the time recorded when it
    # was done, so the total is the cost of the whole command from scratch.
    timings_path = work / "timings.json"
    minutes: dict[str, float] = (json.loads(timings_path.read_text())
                                 if timings_path.exists() else {})

    def lap(stage: str, since: float, done_here: float | None = None) -> float:
        now = time.perf_counter()
        spent = (now - since) / 60.0 if done_here is None else done_here
        if spent >= 0.05 or stage not in minutes:
            minutes[stage] = spent
        timings_path.write_text(json.dumps(minutes, indent=1))
        return now

    t = time.perf_counter()
    train_dirs = generate_many(work / "phantoms" / "train", args.train_series, args.train_seed,
                               workers=args.workers)
    test_dirs = generate_many(work / "phantoms" / "test", args.test_series, args.test_seed,
                              workers=args.workers)
    t = lap("phantoms", t)
    arrays_dir, split = work / "arrays", f"train{args.train_seed}_{args.train_series}"
    pool = build_arrays(train_dirs, arrays_dir, split,
                        tasks=[task for task in TASKS if task not in NEEDS_MYOCARDIUM_MODEL],
                        workers=args.workers)
    t = lap("arrays", t)

    configs = _configs(args)
    val_idx = np.random.default_rng(args.train_seed).permutation(len(train_dirs))[:args.val_series]
    onnx_files, parameters, training = {}, {}, {}
    for task, spec in TASKS.items():
        if task in NEEDS_MYOCARDIUM_MODEL:
            # The cascade is trained the way it runs: its peak over the ring CNN1 drew.
            task_dirs, task_split = _scar_training_dirs(train_dirs, split, val_idx, work,
                                                       args)
            pool |= build_arrays(task_dirs, arrays_dir, task_split, tasks=[task],
                                 workers=args.workers,
                                 myocardium_model=onnx_files["myocardium_unet"])
            t = lap(f"arrays {task}", t)
        data = pool[task]
        is_val = np.isin(data.series, val_idx)
        model, state = train(lambda t=task: build_network(t), data.select(~is_val),
                             data.select(is_val), configs[task], work / "runs" / task, task)
        name = next(m.name for m in MODELS if m.key == task)
        onnx_files[task] = work / "export" / f"{name}.onnx"
        export_started = time.perf_counter()
        export_onnx(model, onnx_files[task], input_hw=spec.shape)
        parameters[task] = model.count_params()
        training[task] = dataclasses.asdict(configs[task]) | {
            "best_epoch": state.best_epoch, "best_val_dsc": state.best_val_dsc,
            "minutes": state.seconds / 60.0, "train_slices": int((~is_val).sum()),
            "val_slices": int(is_val.sum())}
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

    classes = {entry.key: entry.classes for entry in MODELS}
    networks = {task: Network(OnnxModel(onnx_files[task]), spec, classes[task])
                for task, spec in TASKS.items()}
    chosen = choose_thresholds([train_dirs[i] for i in sorted(val_idx)], networks)
    thresholds = {task: chosen[task]["threshold"] if task in chosen else 0.5 for task in TASKS}
    networks = {task: dataclasses.replace(net, threshold=thresholds[task])
                for task, net in networks.items()}
    for task, choice in chosen.items():
        training[task]["threshold_choice"] = choice
    t = lap("thresholds (validation)", t)
    scores = evaluate(test_dirs, networks)
    summary = summarise(scores)
    figures_dir = work / "figures"
    figures_dir.mkdir(parents=True, exist_ok=True)
    write_csv(scores, figures_dir / "scores.csv")
    box_plots(scores, figures_dir / "boxplots.png")
    for task in TASKS:
        shutil.copy2(work / "runs" / task / "curves.png", figures_dir / f"curves_{task}.png")
    t = lap("evaluation", t)
    minutes.pop("total", None)
    minutes["total"] = sum(minutes.values())

    training_data = {
        "description": "Synthetic dark-blood LGE short-axis phantoms made by "
                       "`python -m training.phantoms` (docs/phantoms.md); no patient data.",
        "train_seed": args.train_seed, "train_series": len(train_dirs) - len(val_idx),
        "validation_series": len(val_idx), "test_seed": args.test_seed,
        "test_series": len(test_dirs), "obstruction_probability": OBSTRUCTION_PROBABILITY}
    m = summary["methods"]
    evaluation = {
        "myocardium_unet": {"myocardium_dsc_median": m["cascade-unet"]["myocardium_dsc"]["median"]},
        "scar_unet": {f"{f}_median": m["cascade-unet"][f]["median"]
                      for f in ("scar_dsc", "scar_sensitivity", "scar_specificity",
                                "abs_scar_percent_error")},
        "enet_p2": {f"{f}_median": m["enet"][f]["median"]
                    for f in ("scar_dsc", "scar_sensitivity", "abs_scar_percent_error")},
        "enet_p1": {f"{f}_median": m["enet-raw"][f]["median"]
                    for f in ("scar_dsc", "scar_sensitivity", "abs_scar_percent_error")},
    }
    manifest = build_manifest(__version__, onnx_files, TASKS, parameters, training, evaluation,
                              training_data, thresholds)
    context = {
        "command": "python -m training " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": datetime.now(UTC).strftime("%Y-%m-%d"),
        "machine": f"{os.cpu_count()} CPU cores, {platform.processor() or platform.machine()}",
        "test_series": len(test_dirs), "test_seed": args.test_seed,
        "test_scar_series": sum(1 for s in scores if s.method == "cascade-unet" and s.has_scar),
        "train_series": training_data["train_series"],
        "validation_series": len(val_idx), "train_seed": args.train_seed, "minutes": minutes,
        "thresholds": {task: thresholds[task] for task in chosen}}
    figures = {p.name: p for p in figures_dir.iterdir()}
    write_models_dir(args.models, manifest, onnx_files,
                     markdown_report(summary, TARGETS, context), figures)
    (work / "summary.json").write_text(json.dumps(
        {"summary": summary, "minutes": minutes}, indent=1, default=float))
    print(json.dumps({"minutes": minutes, "cascade": m["cascade-unet"]}, indent=1,
                     default=float))
    return 0
