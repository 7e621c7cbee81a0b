"""A release built in legs: one network of one fold a leg, each kept in the repository.

Every release before round 4 was trained inside one sitting, so its networks
were as large and as long-trained as one sitting allowed, and a fold that was
not finished was lost with the run. Here the release command runs legs:

* a leg trains one network of one cross-validation fold (both U-Nets per
  fold; the fold's scar U-Net needs its myocardium U-Net, which places the
  heart box and scales one input channel), small enough to finish well inside
  a sitting of about an hour on 2 cores;
* a half-trained leg resumes from its last epoch under ``--work`` (the
  checkpoint and the optimizer state live there, never in git);
* a finished leg writes its folder under :data:`LEGS_ROOT`, which is tracked:
  the float32 Keras weights, the ONNX export, each file's sha256, the
  learning curves (as given and shifted, over steps and seconds), the
  flatness test and the held-out scores (numbers only, never images). The
  ``leg.json`` is written last, so a folder without it is not a finished leg;
* a fresh clone on another machine starts at the first leg without a valid
  ``leg.json``, and never trains a finished leg again.

A leg is validated on its fold's held-out cases along the whole run (every
:attr:`TrainConfig.validate_every` epochs, moving-average weights) and keeps
its last epoch: the held-out cases give the out-of-fold figures every later
choice is made on, so they must not also pick the weights.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import os
import subprocess
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.pipeline.registry import sha256_of
from training.train import TrainConfig

LEGS_ROOT = Path(__file__).resolve().parents[1] / "releases" / "round4" / "legs"
LEG_FILE = "leg.json"
WEIGHTS_FILE = "weights.weights.h5"
ONNX_FILE = "model.onnx"
# The held-out curve is flat when the last fifth of the steps gained at most this much
# (issue 52, point 2).
FLAT_GAIN = 0.005
FLAT_SHARE = 0.2
# Tries at committing a leg: legs of different folds may train side by side, and each
# commit is built on the HEAD it read.
COMMIT_ATTEMPTS = 3


@dataclass(frozen=True)
class Leg:
    """One network of one fold, trained in one go (resumable)."""

    task: str  # "myocardium_unet" or "scar_unet"
    fold: int
    config: TrainConfig
    # A variant of the same fold and network (the capacity study); "" for the release's own.
    variant: str = ""
    # Stage 2 and later go on from the previous stage's kept weights (a fresh optimizer and
    # its own schedule): a network whose curve is not flat after one sitting's steps gets
    # another leg instead of a leg too long for a sitting.
    stage: int = 1
    # Legs whose networks this one's arrays and scores use (a scar U-Net: its fold's
    # myocardium U-Net, last stage), set by the plan.
    uses: tuple[str, ...] = ()

    @property
    def network(self) -> str:
        """The network this leg trains, whatever its stage."""
        return f"fold{self.fold}-{self.task}" + (f"-{self.variant}" if self.variant else "")

    @property
    def name(self) -> str:
        return self.network + (f"-s{self.stage}" if self.stage > 1 else "")

    @property
    def previous(self) -> str | None:
        """The leg whose weights this one starts from."""
        if self.stage == 1:
            return None
        return self.network + (f"-s{self.stage - 1}" if self.stage > 2 else "")

    @property
    def needs(self) -> tuple[str, ...]:
        """Legs whose network this one's arrays, scores or starting weights use."""
        return self.uses + ((self.previous,) if self.previous else ())


def leg_dir(leg: Leg, root: Path = LEGS_ROOT) -> Path:
    return Path(root) / leg.name


def finished(leg: Leg, root: Path = LEGS_ROOT) -> dict | None:
    """The leg's record when its folder holds a finished leg whose files match their sha256
    (a half-copied or edited folder is not finished); None otherwise."""
    folder = leg_dir(leg, root)
    path = folder / LEG_FILE
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        files = record["files"]
    except (OSError, ValueError, KeyError):
        return None
    for name, digest in files.items():
        if not (folder / name).is_file() or sha256_of(folder / name) != digest:
            return None
    if (not config_matches(record.get("config"), leg.config)
            or record.get("uses", []) != list(leg.uses)):
        return None  # the plan changed since: this folder is another leg's
    return record


def config_matches(recorded: dict | None, config) -> bool:
    """Whether a kept leg was trained with ``config``. A field the config class gained
    after the leg was kept matches at its default (the leg was trained as the default
    trains); any other difference does not."""
    if not isinstance(recorded, dict):
        return False
    current = json.loads(json.dumps(dataclasses.asdict(config)))
    defaults = {f.name: f.default for f in dataclasses.fields(config)
                if f.default is not dataclasses.MISSING}
    for name, value in current.items():
        if name in recorded:
            if recorded[name] != value:
                return False
        elif name not in defaults or json.loads(json.dumps(defaults[name])) != value:
            return False
    return set(recorded) <= set(current)


def pending(legs: Sequence[Leg], root: Path = LEGS_ROOT) -> list[Leg]:
    """The legs still to train, in plan order."""
    return [leg for leg in legs if finished(leg, root) is None]


def flatness(history: Sequence[dict], key: str = "val_dsc") -> dict:
    """Whether the held-out curve is flat: the gain over the last fifth of the steps.

    The gain is the mean of the points in the last tenth of the steps minus
    the mean of those in the tenth before the last fifth began (a few points
    each, so one noisy validation pass does not decide).
    """
    points = [(h["steps"], h[key]) for h in history if h.get(key) is not None and "steps" in h]
    if len(points) < 4:
        return {"gain": None, "flat": None, "points": len(points)}
    total = points[-1][0]
    start = (1.0 - FLAT_SHARE) * total
    tenth = 0.1 * total
    before = [v for s, v in points if start - tenth < s <= start]
    end = [v for s, v in points if s > total - tenth]
    if not before or not end:
        return {"gain": None, "flat": None, "points": len(points)}
    gain = float(np.mean(end) - np.mean(before))
    return {"gain": gain, "flat": gain <= FLAT_GAIN, "points": len(points),
            "at_steps": [int(start), int(total)]}


def write_scores(rows: Sequence[dict], path: Path) -> None:
    """Per-case held-out scores as CSV (numbers and case names only)."""
    if not rows:
        return
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


def record_leg(leg: Leg, folder: Path, history: list[dict], extra: dict) -> dict:
    """Write ``leg.json`` last, naming every file of the folder with its sha256."""
    files = {p.name: sha256_of(p) for p in sorted(folder.iterdir())
             if p.is_file() and p.name != LEG_FILE}
    record = {"leg": leg.name, "task": leg.task, "fold": leg.fold, "variant": leg.variant,
              "stage": leg.stage, "uses": list(leg.uses),
              "config": dataclasses.asdict(leg.config), "files": files,
              "flatness": flatness(history),
              "flatness_shifted": flatness(history, "val_dsc_shifted"),
              "history": history} | extra
    tmp = folder / (LEG_FILE + ".tmp")
    tmp.write_text(json.dumps(record, indent=1, default=float) + "\n")
    tmp.replace(folder / LEG_FILE)
    return record


def commit_leg(leg: Leg, folder: Path, summary: str,
               generated: Mapping[str, Callable[[str], str]] | None = None) -> bool:
    """Commit the leg's folder, with the documents written from the kept legs
    (``generated``: a path in the repository and how its text is rewritten); False where
    git fails."""
    return commit_folder(folder, f"Release leg {leg.name}: {summary}", generated)


def commit_folder(folder: Path, message: str,
                  generated: Mapping[str, Callable[[str], str]] | None = None) -> bool:
    """Commit ``folder``, with the ``generated`` documents rewritten, as a commit of their
    own on HEAD; False where git fails.

    The commit is built on a private index from HEAD, so whatever else the working tree or
    the index holds (a session's unfinished edits of the same document) stays uncommitted;
    the working tree's copy of each document is rewritten the same way, so it agrees with
    the commit. Committing the table with the leg keeps every commit's documents true to
    its legs, whenever the leg ends.
    """
    generated = dict(generated or {})
    folder = Path(folder).resolve()

    def git(*args: str, env: dict | None = None, stdin: str | None = None) -> str:
        return subprocess.run(["git", "-C", str(folder), *args], check=True, text=True,
                              capture_output=True, env=env, input=stdin).stdout

    for _ in range(COMMIT_ATTEMPTS):
        try:
            repo = Path(git("rev-parse", "--show-toplevel").strip())
            head = git("rev-parse", "HEAD").strip()
            with tempfile.TemporaryDirectory() as tmp:
                env = os.environ | {"GIT_INDEX_FILE": str(Path(tmp) / "index")}
                git("read-tree", head, env=env)
                git("add", "--", str(folder), env=env)
                for path, rewrite in generated.items():
                    blob = git("hash-object", "-w", "--stdin",
                               stdin=rewrite(git("show", f"{head}:{path}"))).strip()
                    git("update-index", "--add", "--cacheinfo", f"100644,{blob},{path}",
                        env=env)
                tree = git("write-tree", env=env).strip()
                commit = git("commit-tree", tree, "-p", head,
                             "-m", message).strip()
                # Refused where HEAD moved meanwhile (another leg's commit, a person's):
                # built again on the new HEAD.
                git("update-ref", "HEAD", commit, head)
            break
        except (OSError, subprocess.CalledProcessError):
            continue
    else:
        return False
    # Committed: what follows only brings the index and working tree in line with it (a
    # failure here must not commit the leg again).
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        git("reset", "-q", "--", str(folder), *[str(repo / p) for p in generated])
    for path, rewrite in generated.items():
        document = repo / path
        document.write_text(rewrite(document.read_text()))
    return True


def run_legs(legs: Sequence[Leg], train_leg: Callable[[Leg], dict], root: Path = LEGS_ROOT,
             max_legs: int | None = None, commit: bool = False,
             log: Callable[[str], None] = print, plan: Sequence[Leg] | None = None,
             generated: Mapping[str, Callable[[str], str]] | None = None) -> list[str]:
    """Train the pending legs in order (at most ``max_legs``); returns those trained.

    ``plan``: the whole release, where ``legs`` is a part of it (prerequisites are looked
    up there). A leg whose prerequisites are not finished is left for later (it cannot
    start yet), never trained on something else. ``generated``: documents committed with
    each leg (:func:`commit_leg`).
    """
    done: list[str] = []
    whole = list(plan) if plan is not None else list(legs)
    for leg in pending(legs, root):
        if max_legs is not None and len(done) >= max_legs:
            break
        waiting = [n for n in leg.needs if finished(named(whole, n), root) is None]
        if waiting:
            log(f"legs: {leg.name} waits for {', '.join(waiting)}")
            continue
        log(f"legs: training {leg.name}")
        record = train_leg(leg)
        summary = record.get("summary", "")
        if commit and not commit_leg(leg, leg_dir(leg, root), summary, generated):
            log(f"legs: {leg.name} finished but could not be committed (git)")
        done.append(leg.name)
    return done


def named(legs: Sequence[Leg], name: str) -> Leg:
    for leg in legs:
        if leg.name == name:
            return leg
    raise KeyError(f"no leg named {name} in the plan")


def earlier_stages(plan: Sequence[Leg], leg: Leg, root: Path = LEGS_ROOT) -> list[dict]:
    """The finished records of the network's stages before ``leg``, first stage first."""
    out, name = [], leg.previous
    while name is not None:
        previous = named(plan, name)
        out.insert(0, finished(previous, root))
        name = previous.previous
    return out
