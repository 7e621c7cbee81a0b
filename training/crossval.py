"""Out-of-fold predictions of EMIDEC ``train`` + ``validation``, and the fold ensemble.

Both U-Nets are trained once per fold (:mod:`training.fold_legs`, each a leg
kept in the repository); each fold's networks see only the cases of the
other four folds, so every one of the 80 cases has predictions from networks
that never saw it. Those out-of-fold predictions make every choice of the
release (thresholds, the ring constraint, test-time augmentation, the
interval's calibration), as given and shifted (another centre's look), and
the service runs the mean of the first folds' probabilities, as many as the latency
budget holds (:data:`SHIPPED_MEMBERS`).

The ENets are trained per fold too where every fold's ENet legs are kept
(:func:`fold_trained`), on crops from the Hough search near the heart. Where
they are not, they are taken from the release named by ``--networks-from``
(0.3.2's were trained on EMIDEC ``train``) and run on each fold's own
myocardium; their out-of-fold figures are then out of fold only on the 10
``validation`` cases (the report says so).
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.pipeline.ensemble import MeanOfModels
from service.pipeline.infer import OnnxModel
from service.pipeline.registry import sha256_of
from service.pipeline.segment import Network
from training.data import emidec
from training.data.dataset import CLASSES, TASKS
from training.data.folds import fold_cases, read_folds
from training.data.sources import Source

# The networks trained per fold in every round-4 release (both U-Nets).
FOLD_TASKS = ("myocardium_unet", "scar_unet")
# The ENets: trained per fold where every fold's ENet legs are kept (their own search near
# the heart); otherwise shared by every fold from the earlier release (``--networks-from``),
# each with its own manifest's input.
ENET_TASKS = ("enet_p2", "enet_p1")
# The networks whose myocardium the ring constraint completes.
RING_TASKS = ("myocardium_unet", "scar_unet")
SHIFTED_PER_CASE = 2
# Members each fold-trained network ships (the rest of its folds only score out of fold).
# Issue 52, point 5: the cascade's p50 at most 1.5x 0.3.2's, over HTTP. Measured in
# BENCHMARKS.md "What a fold ensemble costs" (benchmarks/results/ensemble_cost.json, over
# HTTP about): one myocardium U-Net beside two scar U-Nets, all float32, 1.28x; beside
# three, 1.61x in float32 and 1.47x with the myocardium U-Net in int8; five scar U-Nets fit
# only if all run in int8 (1.44x), which the release decides after this, on the test sets,
# where it holds. So two, within the budget whatever int8 decides. More than one myocardium
# U-Net costs 1.72x and up, and it only places the scar U-Net's box in the cascade, which
# barely moves once it has trained three stages. The ENets, far cheaper, ship every fold.
# The folds are alike before they are scored (each trained the same way on 64 of the 80
# cases), so the first ones ship: picking members by 16 held-out cases each would pick the
# easier folds as much as the better networks.
SHIPPED_MEMBERS = {"myocardium_unet": 1, "scar_unet": 2}


def shipped_folds(task: str, folds: int) -> int:
    """How many of a fold-trained network's ``folds`` ship (the first ones)."""
    return min(folds, SHIPPED_MEMBERS.get(task, folds))


def held_out_sources(root: Path, cases: Sequence[str], shifted: bool = False
                     ) -> list[emidec.EmidecCase]:
    """Held-out cases as evaluated: both contrasts at the nominal spacing ("as given"), or
    the fixed other-centre copies (``shifted``)."""
    if shifted:
        return emidec.shifted_copies(Path(root), cases, SHIFTED_PER_CASE)
    return [emidec.EmidecCase(Path(root), case, dark) for dark in (False, True)
            for case in cases]


def fold_trained(fold_records: dict) -> tuple[str, ...]:
    """The networks every fold has its own of (``fold_records[fold][task]``): both U-Nets,
    and each ENet whose legs are kept in every fold."""
    return FOLD_TASKS + tuple(task for task in ENET_TASKS
                              if all(task in by_task for by_task in fold_records.values()))


def fold_networks(files: Sequence[dict[str, Path]], shared: dict[str, Network]
                  ) -> list[dict[str, Network]]:
    """Each fold's networks: its own (``files[fold][task]``, the training specs) and, for
    the networks it has none of, the shared ones (with their release's specs)."""
    return [{task: Network(OnnxModel(path), TASKS[task], CLASSES[task])
             for task, path in paths.items()}
            | {task: net for task, net in shared.items() if task not in paths}
            for paths in files]


def ensemble_networks(per_fold: Sequence[dict[str, Network]],
                      tasks: Sequence[str] = FOLD_TASKS) -> dict[str, Network]:
    """The shipped networks: each fold-trained network (``tasks``) the mean of its shipped
    folds' (:func:`shipped_folds`), or the first fold's own where one ships; the shared ones
    as they are."""
    first = per_fold[0]
    out = dict(first)
    for task in tasks:
        shipped = per_fold[:shipped_folds(task, len(per_fold))]
        if len(shipped) > 1:
            out[task] = dataclasses.replace(
                first[task], predict=MeanOfModels([nets[task].predict for nets in shipped]))
    return out


def out_of_fold(root: Path, per_fold: Sequence[dict[str, Network]],
                assignment: dict[str, int] | None = None, limit: int | None = None,
                shifted: bool = False) -> list[tuple[Source, dict[str, Network]]]:
    """Every held-out case (both contrasts, or its ``shifted`` copies) with the networks of
    the fold that never saw it (``limit``: only the first cases of each fold, to check the
    command end to end)."""
    assignment = read_folds() if assignment is None else assignment
    pairs = []
    for fold, nets in enumerate(per_fold):
        _, held = fold_cases(assignment, fold)
        held = held[:limit]
        pairs.extend((source, nets) for source in held_out_sources(root, held, shifted))
    return pairs


def with_post_processing(nets: dict[str, Network], complete_ring: bool,
                         thresholds: dict[str, float] | None = None) -> dict[str, Network]:
    """The same networks with the ring constraint on or off (for the U-Nets, which draw the
    myocardium) and, where given, each scar network's threshold."""
    out = {}
    for task, net in nets.items():
        changes: dict = {}
        if task in RING_TASKS:
            changes["complete_ring"] = complete_ring
        if thresholds and task in thresholds:
            changes["threshold"] = thresholds[task]
        out[task] = dataclasses.replace(net, **changes)
    return out


def with_test_time_augmentation(nets: dict[str, Network]) -> dict[str, Network]:
    """Both U-Nets averaged over the eight symmetries of the square."""
    from service.pipeline.ensemble import SymmetryAverage

    return {task: dataclasses.replace(net, predict=SymmetryAverage(net.predict))
            if task in RING_TASKS else net for task, net in nets.items()}


# What chooses between post-processing variants on the out-of-fold cases: the cascade's
# (or another pipeline's, for a choice that is its alone) median myocardium and scar DSC,
# averaged over the groups (each weighs alike).
def variant_score(summaries: dict[str, dict], contrasts: Sequence[str] | None = None,
                  method: str = "cascade-unet") -> float:
    values = []
    for contrast, summary in summaries.items():
        if contrasts is not None and contrast not in contrasts:
            continue
        scored = summary["methods"][method]
        values += [scored["myocardium_dsc"]["median"], scored["scar_dsc"]["median"]]
    return float(np.nanmean(values))


class Remembered:
    """A predictor that answers an input it has seen from memory: the out-of-fold series
    are scored several times (thresholds, each post-processing variant, the calibration),
    and most of their network inputs repeat exactly.

    With a ``store`` (a folder of this network's answers, one file per input) the answers
    are kept on disk instead, so that a release stopped in its choices (hours on 2 cores)
    answers again from the disk when run again, with the same bytes: what the first run
    computed is not computed twice, and memory stays flat.
    """

    def __init__(self, member, store: Path | None = None) -> None:
        self.member = member
        self.store = store
        self.answers: dict[bytes, np.ndarray] = {}

    @property
    def execution_provider(self) -> str:
        return getattr(self.member, "execution_provider", "unknown")

    def __call__(self, batch: np.ndarray) -> np.ndarray:
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        key = hashlib.sha256(batch.tobytes()).digest() + str(batch.shape).encode()
        if self.store is None:
            if key not in self.answers:
                self.answers[key] = self.member(batch)
            return self.answers[key]
        path = self.store / f"{hashlib.sha256(key).hexdigest()}.npy"
        if path.exists():
            return np.load(path)
        answer = np.asarray(self.member(batch))
        self.store.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial.npy")
        np.save(partial, answer)
        partial.replace(path)  # never a half-written answer under the answer's name
        return answer


def answer_store(predict, root: Path | None) -> Path | None:
    """The folder of a network's answers under ``root``, named by its ONNX file's sha256 (a
    retrained network answers anew); None for a predictor without a file."""
    path = getattr(predict, "path", None)
    if root is None or path is None:
        return None
    return Path(root) / sha256_of(Path(path))


def remembered(per_fold: Sequence[dict[str, Network]], store: Path | None = None
               ) -> list[dict[str, Network]]:
    """Each fold's networks behind one memory per distinct network (shared ones once), kept
    on disk under ``store`` where given (:class:`Remembered`)."""
    memory: dict[int, Remembered] = {}
    out = []
    for nets in per_fold:
        wrapped = {}
        for task, net in nets.items():
            key = id(net.predict)
            if key not in memory:
                memory[key] = Remembered(net.predict, answer_store(net.predict, store))
            wrapped[task] = dataclasses.replace(net, predict=memory[key])
        out.append(wrapped)
    return out
