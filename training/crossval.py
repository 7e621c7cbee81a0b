"""Five-fold cross-validation of the cascade: one myocardium U-Net and one scar U-Net per fold.

The cascade's two U-Nets are trained once per fold of EMIDEC ``train`` +
``validation`` (:mod:`training.data.folds`), each fold on the phantoms and
the other four folds' cases (both contrasts, at drawn spacings), and
validated on its own held-out cases. Each fold keeps its last epoch's
(averaged) weights, not its best: the held-out cases give the out-of-fold
figures every later choice is made on, so they must not also pick the
weights. The scar U-Net of fold k is trained on the rings of fold k's own
myocardium U-Net, the way the cascade runs.

The ENets are not retrained per fold: they are taken from the release named
by ``--enets-from`` (trained on EMIDEC ``train``, so their out-of-fold
figures on the ``validation`` cases are out of fold and on the rest are not;
the report says so). What changes for them is the ring they are given.

Every fold is a resumable leg under ``WORK/folds/K``: a finished network is
reloaded, a half-trained one carries on from its last epoch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.pipeline.ensemble import MeanOfModels
from service.pipeline.infer import OnnxModel
from service.pipeline.segment import Network
from training.data import emidec
from training.data.dataset import CLASSES, TASKS, build_arrays
from training.data.folds import fold_cases, read_folds
from training.data.sources import PhantomSource, Source
from training.train import TrainConfig, train

FOLD_TASKS = ("myocardium_unet", "scar_unet")
# Steps per fold (the release budget is 150 minutes for all folds on 2 cores, about 140 ms
# a step in a real run): the scar U-Net draws the cascade's myocardium, scar and MVO and
# gets the larger share; the myocardium U-Net only places its box and gives the ENets their
# ring. Validated over the last quarter for the learning curve; the last epoch is kept.
FOLD_EPOCHS = {"myocardium_unet": 20, "scar_unet": 36}
FOLD_VALIDATE_LAST = 0.25


def fold_config(config: TrainConfig, task: str) -> TrainConfig:
    return dataclasses.replace(config, epochs=FOLD_EPOCHS[task],
                               validate_last=FOLD_VALIDATE_LAST, select_best=False)


@dataclass(frozen=True)
class FoldSources:
    """One fold's training and validation sources; series numbers are list positions."""

    fold: int
    held_out: tuple[str, ...]
    sources: tuple[Source | Path, ...]
    validation: np.ndarray  # positions in ``sources`` that validate (never train)

    @property
    def real_validation(self) -> list[Source]:
        return [self.sources[i] for i in self.validation
                if isinstance(self.sources[i], emidec.EmidecCase)]


def held_out_sources(root: Path, cases: Sequence[str]) -> list[emidec.EmidecCase]:
    """A fold's held-out cases as evaluated: both contrasts at the nominal spacing."""
    return [emidec.EmidecCase(Path(root), case, dark) for dark in (False, True)
            for case in cases]


def fold_sources(root: Path, fold: int, phantom_dirs: Sequence[Path],
                 phantom_validation: np.ndarray, copies: int, seed: int,
                 assignment: dict[str, int] | None = None) -> FoldSources:
    assignment = read_folds() if assignment is None else assignment
    training_cases, held = fold_cases(assignment, fold)
    real_train = emidec.case_copies(root, training_cases, copies, seed)
    real_val = held_out_sources(root, held)
    sources = [*phantom_dirs, *real_train, *real_val]
    validation = np.concatenate([np.asarray(phantom_validation, int),
                                 np.arange(len(sources) - len(real_val), len(sources))])
    return FoldSources(fold, tuple(held), tuple(sources), np.sort(validation))


def fold_dir(work: Path, fold: int) -> Path:
    return work / "folds" / f"fold{fold}"


def fold_onnx(work: Path, fold: int, task: str) -> Path:
    return fold_dir(work, fold) / "export" / f"{task}.onnx"


def train_fold(plan: FoldSources, scar_plan: FoldSources, work: Path,
               configs: dict[str, TrainConfig], build: Callable[[str], object],
               workers: int) -> dict[str, dict]:
    """Both U-Nets of one fold, exported to ONNX; returns each one's training record.

    ``scar_plan`` is ``plan`` with the scar U-Net's phantom series (redrawn with more
    obstruction for training; the same validation series).
    """
    from training.export import export_onnx

    out: dict[str, dict] = {}
    root = fold_dir(work, plan.fold)
    for task in FOLD_TASKS:
        task_plan = scar_plan if task == "scar_unet" else plan
        extra = ({"myocardium_model": fold_onnx(work, plan.fold, "myocardium_unet")}
                 if task == "scar_unet" else {})
        data = build_arrays(task_plan.sources, root / "arrays", f"fold{plan.fold}",
                            tasks=[task], workers=workers, **extra)[task]
        is_val = np.isin(data.series, task_plan.validation)
        config = fold_config(configs[task], task)
        run_dir = root / "runs" / task
        model, state = train(lambda t=task: build(t), data.select(~is_val),
                             data.select(is_val), config, run_dir,
                             f"{task} fold {plan.fold}")
        path = fold_onnx(work, plan.fold, task)
        best = run_dir / "best.weights.h5"
        if not (path.exists() and path.stat().st_mtime > best.stat().st_mtime):
            export_onnx(model, path, input_hw=TASKS[task].shape)
        real_rows = np.isin(data.series, [i for i, s in enumerate(task_plan.sources)
                                          if isinstance(s, emidec.EmidecCase)])
        out[task] = dataclasses.asdict(config) | {
            "fold": plan.fold, "held_out_cases": list(plan.held_out),
            "kept_epoch": state.best_epoch, "held_out_val_dsc": state.best_val_dsc,
            "minutes": state.seconds / 60.0, "train_slices": int((~is_val).sum()),
            "val_slices": int(is_val.sum()),
            "train_slices_emidec": int((~is_val & real_rows).sum()),
            "history": state.history, "parameters": int(model.count_params())}
    return out


def fold_networks(work: Path, folds: int, enets: dict[str, Network]
                  ) -> list[dict[str, Network]]:
    """Each fold's networks (its two U-Nets, the shared ENets), on onnxruntime."""
    out = []
    for fold in range(folds):
        nets = {task: Network(OnnxModel(fold_onnx(work, fold, task)), TASKS[task],
                              CLASSES[task]) for task in FOLD_TASKS}
        out.append(nets | enets)
    return out


def ensemble_networks(per_fold: Sequence[dict[str, Network]]) -> dict[str, Network]:
    """The shipped networks: each U-Net the mean of its folds' probabilities."""
    first = per_fold[0]
    out = dict(first)
    for task in FOLD_TASKS:
        out[task] = dataclasses.replace(
            first[task], predict=MeanOfModels([nets[task].predict for nets in per_fold]))
    return out


def out_of_fold(root: Path, per_fold: Sequence[dict[str, Network]],
                assignment: dict[str, int] | None = None
                ) -> list[tuple[Source, dict[str, Network]]]:
    """Every held-out case (both contrasts) with the networks of the fold that never saw it."""
    assignment = read_folds() if assignment is None else assignment
    pairs = []
    for fold, nets in enumerate(per_fold):
        _, held = fold_cases(assignment, fold)
        pairs.extend((source, nets) for source in held_out_sources(root, held))
    return pairs


def phantom_sources(dirs: Sequence[Path]) -> list[PhantomSource]:
    return [PhantomSource(d) for d in dirs]
