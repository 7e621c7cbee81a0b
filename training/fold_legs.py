"""Round 4's legs on EMIDEC: both U-Nets of each fold, their data, scores and plan.

The pool (:func:`pool_sources`) is every fold's sources in one list, so the
arrays are cut once: the phantoms, each EMIDEC case's training copies (as
acquired and darkened at drawn spacings, and ``remapped`` copies whose
tissues take a drawn appearance, :mod:`training.data.appearance`), and each
case held out three ways: as acquired and darkened at the nominal spacing
(the out-of-fold score "as given") and two other-centre copies (the "shifted"
score: a fixed seeded appearance, zero-filled to 0.73 mm, 12 bits, never a
training copy's look).

A fold trains on the phantoms (less their validation series) and the other
folds' training copies; its curve is measured on its own held-out cases,
as given (which alone is the curve's ``val_dsc``) and shifted.

Each fold's two ENets come after its U-Nets: 0.3.2's were trained on 70 of
the 80 cases, so scored out of fold they were in sample, and on the whole
slice's Hough search, which serving drops for the search near the heart.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from service.pipeline.infer import OnnxModel
from service.pipeline.preprocess import InputSpec
from service.pipeline.quantify import scar_fraction
from service.pipeline.segment import Network, myocardium_probability, ring_from, segment_on
from training import legs as legs_
from training.crossval import ENET_TASKS, FOLD_TASKS, held_out_sources
from training.data import emidec
from training.data.dataset import CLASSES, TASKS, Arrays, build_arrays
from training.data.folds import fold_cases
from training.data.sources import PhantomSource, Source
from training.generated import replace_block, write_block
from training.metrics import dice
from training.train import TrainConfig, train

# Per-fold schedules: the U-Nets as long as 0.3.2's single networks (12,000 and 15,000
# steps), validated every fifth epoch (500 steps) along the whole run, the last epoch kept.
# The ENets: 0.3.2 gave them 1,000 steps (best epoch 7 of 8: still rising); here 5,000 (40
# epochs of 125), about 35-45 minutes a leg on 2 cores (an ENet step is ~160 ms at batch 8,
# benchmarks/results/training_steps.json, and a release run took 2.3x the steps' own time;
# the pool's arrays are cut once, before the first ENet leg). Validated every second epoch
# (250 steps: three points in each tenth the flatness test compares), on moving-average
# weights as the U-Nets are, since the last epoch is kept, not the best.
FOLD_EPOCHS = {"myocardium_unet": 120, "scar_unet": 150, "enet_p2": 40, "enet_p1": 40}
VALIDATE_EVERY = 5
TASK_CHANGES: dict[str, dict] = {task: {"validate_every": 2, "ema_momentum": 0.995}
                                 for task in ENET_TASKS}
# The capacity study (fold 0's scar U-Net): a network twice as wide at the same wall-clock
# time as the release's width. Without AMX its step costs about 4x the 16-filter one's here
# (benchmarks/training_widths.py: 4.3x in one run; convolutions grow with the square of the
# width), so it gets 4,000 steps against 15,000; the curves are compared on their seconds.
CAPACITY_VARIANTS = {"w32": {"base_filters": 32, "epochs": 40}}
# The capacity study goes on after the release (issue 52, point 3): the 16-filter scar
# U-Nets all ended flat below the targets (30,000 steps, about 133 training minutes on fold
# 0), so whether a wider network ends higher is what decides if this design can reach them.
# The wider one's 4,000 steps decayed its learning rate tenfold, so its second stage is a
# warm restart at a quarter of the first's (as the myocardium U-Net's stages 2-3), 8,000
# steps: 12,000 in all, compared on the 16-filter curve at equal compute and equal steps
# (training.studies.capacity_study). It is a study: the release never waits for it. After
# it the wider network tracked the 16-filter one step for step (0.736 against 0.731 at
# 12,000 steps) and was still rising (+0.016 over its last fifth), so a third stage goes on
# where the second ended, warmed up (as the myocardium U-Net's fourth): flat there (+0.0007)
# at 0.745, against the 16-filter network's flat 0.751, so width buys nothing on this data.
CAPACITY_CONTINUATION = {"w32": {"stages": 3, "last_restart": 2, "epochs": 80}}
# Stages per network: fold 0's myocardium U-Net was still rising by 0.021 DSC over the last
# fifth of its first 12,000 steps, and by 0.014 over the last fifth of 24,000 with a second
# stage, so it got a third; stages 2 and 3 restart from the previous stage's weights at a
# quarter of the first stage's learning rate (a warm restart), and each began with a dip
# that the flatness test over the joined curve reads as gain (docs/experiments.md, round 4:
# +0.049 and +0.017 from stage to stage, the joined test +0.025 after three). The fourth
# stage goes on at the learning rate the third ended at, warmed up, so that its curve
# says whether the network still learns at the end of its schedule: flat there, it has
# converged.
# The ENets get a second stage that goes on where the first ended (no restart): fold 0's
# Protocol 2 ENet was still rising by 0.039 DSC (0.023 shifted) over the last fifth of its
# first 5,000 steps (docs/experiments.md, round 4). After two stages four of the six ENets
# of folds 0-2 still gained more than 0.005 over the last fifth of their 10,000 steps, as
# given or shifted (Protocol 1 on every fold, Protocol 2 on fold 1), so both get a third
# stage, on where the second ended.
STAGES = {"myocardium_unet": 4, "scar_unet": 2, "enet_p2": 3, "enet_p1": 3}
LATER_STAGE_LEARNING_RATE_FACTOR = 0.25
# The last stage of each network that is a warm restart; later stages go on where the
# previous one ended. Fold 0's scar U-Net rose 0.009 over the last fifth of its 15,000
# steps, not flat, so it gets a second stage of that kind straight away (no restart).
LAST_RESTART_STAGE = {"myocardium_unet": 3, "scar_unet": 1, "enet_p2": 1, "enet_p1": 1}
WARMUP_STEPS = 500
# The scar U-Net is trained on the heart boxes of its fold's myocardium U-Net at this
# stage: later stages polish the ring, not where the box falls. The ENets' held-out series
# are scored on that stage's ring too (their first ring in the out-of-fold scoring).
BOX_STAGE = 3
# Folds 3 and 4 stop their myocardium U-Net at BOX_STAGE (decided on folds 0-2,
# docs/experiments.md, round 4: "The ENets' ring"): its fourth stage moved no heart box
# (fold 0's box-stage study), only fold 0's myocardium U-Net ships, and the ENets draw
# better masks on the ring the cascade's scar U-Net redraws than on this network's, so
# its own ring no longer reaches a report and its curve no longer says how long it trains.
LAST_STAGE_BY_FOLD = {3: {"myocardium_unet": BOX_STAGE}, 4: {"myocardium_unet": BOX_STAGE}}
# The ENets the scar U-Nets' legs score beside the cascade: 0.3.2's, trained on the whole
# slice's Hough search (their manifest's input; the release passes it).
WHOLE_SLICE_ENETS = {task: dataclasses.replace(TASKS[task], hough_near_heart=False)
                     for task in ENET_TASKS}


@dataclass(frozen=True)
class Pool:
    sources: tuple[Source, ...]
    case_of: tuple[str | None, ...]  # None: a phantom
    role: tuple[str, ...]  # "train", "phantom-validation", "as-given", "shifted"

    def rows(self, assignment: dict[str, int], fold: int) -> dict[str, np.ndarray]:
        """Series numbers of one fold: train, held-out as given, held-out shifted."""
        role = np.array(self.role)
        held = np.array([c is not None and assignment[c] == fold for c in self.case_of])
        phantom = np.array([c is None for c in self.case_of])
        train_rows = (role == "train") & (phantom | ~held)
        return {"train": np.flatnonzero(train_rows),
                "as-given": np.flatnonzero((role == "as-given") & held),
                "shifted": np.flatnonzero((role == "shifted") & held)}


def pool_sources(root: Path, phantom_dirs: Sequence[Path], phantom_validation: np.ndarray,
                 cases: Sequence[str], copies: int, remapped: int, seed: int) -> Pool:
    validation = set(np.asarray(phantom_validation, int).tolist())
    sources: list[Source] = [PhantomSource(Path(d)) for d in phantom_dirs]
    case_of: list[str | None] = [None] * len(sources)
    role = ["phantom-validation" if i in validation else "train" for i in range(len(sources))]
    for group, items in (("train", emidec.case_copies(root, cases, copies, seed, remapped)),
                         ("as-given", held_out_sources(root, cases)),
                         ("shifted", held_out_sources(root, cases, shifted=True))):
        sources += items
        case_of += [s.case for s in items]
        role += [group] * len(items)
    return Pool(tuple(sources), tuple(case_of), tuple(role))


def fold_config(base: TrainConfig, task: str, variant: str = "",
                epochs: int | None = None) -> TrainConfig:
    """A leg's schedule; ``epochs`` overrides every leg's (checking the command)."""
    changes = {"epochs": FOLD_EPOCHS[task], "validate_last": 1.0,
               "validate_every": VALIDATE_EVERY, "select_best": False} | TASK_CHANGES.get(task, {})
    if variant:
        changes |= CAPACITY_VARIANTS[variant]
    if epochs is not None:
        changes["epochs"] = epochs
    return dataclasses.replace(base, **changes)


def stage_config(config: TrainConfig, stage: int, last_restart: int = 1) -> TrainConfig:
    """A later stage starts from trained weights: a warm restart at a lower learning rate
    up to stage ``last_restart``, then on at the learning rate the previous stage ended at
    (warmed up)."""
    if stage == 1:
        return config
    if stage <= last_restart:
        return dataclasses.replace(config, learning_rate=config.learning_rate
                                   * LATER_STAGE_LEARNING_RATE_FACTOR)
    previous = stage_config(config, stage - 1, last_restart)
    return dataclasses.replace(config, learning_rate=previous.learning_rate
                               * config.final_learning_rate_fraction,
                               warmup_steps=WARMUP_STEPS)


def plan(configs: dict[str, TrainConfig], folds: int = 5, epochs: int | None = None,
         stages: dict[str, int] | None = None) -> list[legs_.Leg]:
    """The release's legs in order, fold by fold: the fold's U-Nets (each stage), on fold 0
    the capacity study's wider scar U-Net, then the fold's ENets (Protocol 2, then 1). A
    scar U-Net uses its fold's myocardium U-Net at BOX_STAGE (it is trained on the heart
    boxes the cascade gives it), and so does an ENet (that ring is its pipeline's first in
    the held-out scores). ``stages``: legs per network; a network it leaves out gets none
    (the U-Nets' always come first, so adding the ENets moved no kept leg), and a fold of
    LAST_STAGE_BY_FOLD stops its networks there. Last, the capacity study's later stages
    (CAPACITY_CONTINUATION)."""
    stages = STAGES if stages is None else stages
    out = []
    box_of_fold_0 = ()
    for fold in range(folds):
        myocardium = ()
        cap = LAST_STAGE_BY_FOLD.get(fold, {})
        for task in FOLD_TASKS:
            config = fold_config(configs[task], task, epochs=epochs)
            uses = myocardium if task == "scar_unet" else ()
            for stage in range(1, min(stages[task], cap.get(task, stages[task])) + 1):
                leg = legs_.Leg(task, fold,
                                stage_config(config, stage, LAST_RESTART_STAGE[task]),
                                stage=stage, uses=uses)
                out.append(leg)
                if task == "myocardium_unet" and stage == min(BOX_STAGE, stages[task]):
                    myocardium = (leg.name,)
        if fold == 0:
            box_of_fold_0 = myocardium
            out += [legs_.Leg("scar_unet", 0, fold_config(configs["scar_unet"], "scar_unet", v,
                                                          epochs), v, uses=myocardium)
                    for v in CAPACITY_VARIANTS]
        for task in ENET_TASKS:
            config = fold_config(configs[task], task, epochs=epochs)
            out += [legs_.Leg(task, fold, stage_config(config, stage, LAST_RESTART_STAGE[task]),
                              stage=stage, uses=myocardium)
                    for stage in range(1, stages.get(task, 0) + 1)]
    if stages.get("scar_unet") and folds:
        for variant, more in CAPACITY_CONTINUATION.items():
            config = fold_config(configs["scar_unet"], "scar_unet", variant,
                                 more["epochs"] if epochs is None else epochs)
            out += [legs_.Leg("scar_unet", 0, stage_config(config, stage, more["last_restart"]),
                              variant, stage=stage, uses=box_of_fold_0)
                    for stage in range(2, more["stages"] + 1)]
    return out


def release_legs(plan_legs: Sequence[legs_.Leg]) -> list[legs_.Leg]:
    """The legs a release waits for: every leg but the capacity study's."""
    return [leg for leg in plan_legs if not leg.variant]


def last_stages(plan_legs: Sequence[legs_.Leg]) -> list[legs_.Leg]:
    """The leg that finishes each network of the plan (its last stage)."""
    last: dict[str, legs_.Leg] = {}
    for leg in plan_legs:
        last[leg.network] = leg
    return list(last.values())


class FoldLegTrainer:
    """Trains one leg of the plan: its arrays (cut once per task, or per fold where they
    need the fold's myocardium U-Net), the run, the export and the held-out scores.

    ``shared``: the earlier release's ENet files, scored beside a scar U-Net's cascade,
    each with its input from ``shared_specs`` (its manifest's; default: the whole slice's
    Hough search, as 0.3.2's)."""

    def __init__(self, pool: Pool, assignment: dict[str, int], work: Path, build,
                 shared: dict[str, Path], root: Path = legs_.LEGS_ROOT, workers: int = 2,
                 plan_legs: Sequence[legs_.Leg] = (),
                 shared_specs: dict[str, InputSpec] | None = None) -> None:
        self.pool, self.assignment, self.work, self.build = pool, assignment, work, build
        self.shared, self.root, self.workers = shared, root, workers
        self.shared_specs = WHOLE_SLICE_ENETS | (shared_specs or {})
        self.plan = list(plan_legs)
        self._arrays: dict[tuple, Arrays] = {}

    def _onnx(self, name: str) -> Path:
        return self.root / name / legs_.ONNX_FILE

    def arrays(self, leg: legs_.Leg) -> Arrays:
        """The leg's task's arrays over the series its fold uses (series numbered by pool
        position)."""
        rows = self.pool.rows(self.assignment, leg.fold)
        wanted = np.concatenate([rows["train"], rows["as-given"], rows["shifted"]])
        model = None
        key: tuple = (leg.task,)
        tasks = [leg.task]
        if leg.task == "scar_unet":
            model = self._onnx(leg.uses[0])
            key = (leg.task, leg.uses[0])
        else:
            # The myocardium U-Net's and the ENets' arrays need no model (the ENets' search
            # is given the true heart): cut once for every fold, both ENets in one pass (one
            # Hough search a series).
            wanted = np.arange(len(self.pool.sources))
            if leg.task in ENET_TASKS:
                tasks = list(ENET_TASKS)
        if key not in self._arrays:
            self._arrays.clear()  # one task's arrays in memory at a time
            name = "pool" if model is None else f"fold{leg.fold}"
            cut = build_arrays([self.pool.sources[i] for i in wanted],
                               self.work / "arrays", name, tasks=tasks,
                               workers=self.workers, myocardium_model=model)[leg.task]
            self._arrays[key] = dataclasses.replace(cut, series=wanted[cut.series])
        return self._arrays[key]

    def __call__(self, leg: legs_.Leg) -> dict:
        from training.export import export_onnx

        started = time.perf_counter()
        data = self.arrays(leg)
        rows = self.pool.rows(self.assignment, leg.fold)
        subset = {k: data.select(np.isin(data.series, v)) for k, v in rows.items()}
        run_dir = self.work / "leg-runs" / leg.name  # checkpoints: never in git
        start = (self.root / leg.previous / legs_.WEIGHTS_FILE) if leg.previous else None
        model, state = train(lambda: self.build(leg.task, leg.config.base_filters),
                             subset["train"], subset["as-given"], leg.config, run_dir,
                             leg.name, other_validation={"shifted": subset["shifted"]},
                             initial_weights=start)
        folder = legs_.leg_dir(leg, self.root)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / legs_.LEG_FILE).unlink(missing_ok=True)
        model.save_weights(folder / legs_.WEIGHTS_FILE)
        export_onnx(model, folder / legs_.ONNX_FILE, input_hw=TASKS[leg.task].shape)
        scores = self.held_out_scores(leg)
        legs_.write_scores(scores, folder / "held_out_scores.csv")
        whole = joined_curves([r["history"] for r in legs_.earlier_stages(self.plan, leg,
                                                                            self.root)]
                              + [state.history])
        flat = legs_.flatness(whole)
        _plot(whole, folder / "curves.png", leg.network)
        _, held = fold_cases(self.assignment, leg.fold)
        summary = _summary(scores)
        own = (_METHOD[leg.task],) if leg.task in ENET_TASKS else ("", _METHOD["scar_unet"])
        record = legs_.record_leg(leg, folder, state.history, {
            "held_out_cases": held, "parameters": int(model.count_params()),
            "train_slices": len(subset["train"].x), "train_minutes": state.seconds / 60.0,
            "leg_minutes": (time.perf_counter() - started) / 60.0,
            "network_flatness": flat,
            "network_flatness_shifted": legs_.flatness(whole, "val_dsc_shifted"),
            "network_steps": whole[-1]["steps"],
            "held_out": summary, "summary": _one_line(summary, flat, own)})
        return record

    def held_out_scores(self, leg: legs_.Leg) -> list[dict]:
        """Per held-out series (as given and shifted), 3-D DSC on the source grid: the
        myocardium U-Net's ring; for a scar U-Net, the whole cascade (and the shared ENets
        on this fold's ring); for an ENet, its pipeline on this fold's ring; each as the
        service runs them."""
        rows = self.pool.rows(self.assignment, leg.fold)
        items = [(self.pool.sources[i], kind) for kind in ("as-given", "shifted")
                 for i in rows[kind]]
        if leg.task in ENET_TASKS:
            return self._enet_scores(leg, items)
        if leg.task == "myocardium_unet":
            net = Network(OnnxModel(self._onnx(leg.name)), TASKS[leg.task], CLASSES[leg.task])
            out = []
            for source, kind in items:
                series = source.read()
                p = myocardium_probability(series.images, series.spacing, net)
                out.append({"series": source.series_id, "kind": kind,
                            "contrast": source.contrast,
                            "myocardium_dsc": dice(ring_from(p, net), series.true_myocardium)})
            return out
        from training.evaluation.scoring import score_series

        nets = {"myocardium_unet": self._onnx(leg.uses[0]),
                "scar_unet": self._onnx(leg.name)} | {
            k: v for k, v in self.shared.items() if k in ("enet_p1", "enet_p2")}
        specs = TASKS | {k: self.shared_specs[k] for k in self.shared if k in ENET_TASKS}
        networks = {k: Network(OnnxModel(p), specs[k], CLASSES[k]) for k, p in nets.items()}
        out = []
        for source, kind in items:
            for s in score_series(source, networks, kind):
                if s.method in ("cascade-unet", "enet", "enet-raw"):
                    out.append({"series": s.series_id, "kind": kind, "contrast": s.contrast,
                                "method": s.method, "myocardium_dsc": s.myocardium_dsc,
                                "scar_dsc": s.scar_dsc, "true_scar_percent": s.true_scar_percent,
                                "scar_percent": s.scar_percent,
                                "mvo_case_dsc": s.mvo_case_dsc})
        return out


    def _enet_scores(self, leg: legs_.Leg, items: Sequence[tuple[Source, str]]) -> list[dict]:
        """The ENet's pipeline on each held-out series: the fold's myocardium U-Net
        (``leg.uses``) draws the first ring, whose box places the Hough search and which
        Protocol 2 multiplies the crop by; the ENet at threshold 0.5 (the release chooses
        its threshold out of fold later); source grid, as the service draws it."""
        from training.evaluation.scoring import mvo_scores

        first = Network(OnnxModel(self._onnx(leg.uses[0])), TASKS["myocardium_unet"],
                        CLASSES["myocardium_unet"])
        enet = Network(OnnxModel(self._onnx(leg.name)), TASKS[leg.task], CLASSES[leg.task])
        out = []
        for source, kind in items:
            series = source.read()
            p = myocardium_probability(series.images, series.spacing, first)
            seg = segment_on(series.images, series.spacing, ring_from(p, first), p, enet)
            truth = series.true_scar
            mvo = mvo_scores(seg, series.true_obstruction, series.true_myocardium)
            out.append({
                "series": source.series_id, "kind": kind, "contrast": source.contrast,
                "method": _METHOD[leg.task],
                "myocardium_dsc": dice(seg.myocardium, series.true_myocardium),
                "scar_dsc": dice(seg.scar, truth) if truth.any() else float("nan"),
                "true_scar_percent": 100.0 * scar_fraction(truth, series.true_myocardium),
                "scar_percent": 100.0 * scar_fraction(seg.scar, seg.myocardium),
                "mvo_case_dsc": mvo["mvo_case_dsc"]})
        return out


# The pipeline each scar network's held-out scores are read through
# (training.evaluation.scoring.SCAR_NETWORKS).
_METHOD = {"scar_unet": "cascade-unet", "enet_p2": "enet", "enet_p1": "enet-raw"}


def joined_curves(stages: Sequence[list[dict]]) -> list[dict]:
    """Stages' curves as one: each stage's steps and seconds counted from the network's
    start (so the flatness test reads the whole training)."""
    out: list[dict] = []
    steps = seconds = 0.0
    for history in stages:
        out += [h | {"steps": h["steps"] + steps, "seconds": h["seconds"] + seconds}
                for h in history]
        if history:
            steps, seconds = out[-1]["steps"], out[-1]["seconds"]
    return out


def _summary(scores: list[dict]) -> dict:
    """Medians per kind (and method): what the commit message and the report quote."""
    out: dict = {}
    for row in scores:
        key = row["kind"] + (f" {row['method']}" if "method" in row else "")
        out.setdefault(key, []).append(row)
    summary = {}
    for key, rows in out.items():
        entry = {"series": len(rows),
                 "myocardium_dsc": float(np.median([r["myocardium_dsc"] for r in rows]))}
        if "scar_dsc" in rows[0]:
            scar = [r["scar_dsc"] for r in rows if not np.isnan(r["scar_dsc"])]
            entry["scar_dsc"] = float(np.median(scar)) if scar else float("nan")
            entry["abs_scar_percent_error"] = float(np.median(
                [abs(r["scar_percent"] - r["true_scar_percent"]) for r in rows]))
        summary[key] = entry
    return summary


def _one_line(summary: dict, flat: dict, methods: Sequence[str] = ("", "cascade-unet")
              ) -> str:
    """The leg's own figures (``methods``: "" for a U-Net's ring) and its curve's gain."""
    parts = []
    for key, entry in summary.items():
        if (key.split(" ", 1) + [""])[1] not in methods:
            continue
        text = f"{key} myocardium {entry['myocardium_dsc']:.3f}"
        if "scar_dsc" in entry:
            text += f", scar {entry['scar_dsc']:.3f}"
        parts.append(text)
    gain = flat.get("gain")
    parts.append("curve gain over the last fifth "
                 + ("n/a" if gain is None else f"{gain:+.4f}"))
    return "; ".join(parts)


def _plot(history: list[dict], path: Path, title: str) -> None:
    """The held-out curves (as given, shifted) over steps, and the loss."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(9, 3.2))
    ax[0].plot([h["steps"] for h in history], [h["loss"] for h in history])
    ax[0].set(xlabel="step", ylabel="training loss", title=f"{title}: loss")
    for key, label in (("val_dsc", "held out, as given"), ("val_dsc_shifted", "shifted")):
        points = [(h["steps"], h[key]) for h in history if h.get(key) is not None]
        if points:
            ax[1].plot(*zip(*points, strict=True), marker="o", ms=3, label=label)
    ax[1].set(xlabel="step", ylabel="held-out DSC (EMA weights)", ylim=(0, 1))
    ax[1].legend()
    for a in ax:
        a.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def kept_records(plan_legs: Sequence[legs_.Leg], root: Path = legs_.LEGS_ROOT
                 ) -> dict[str, dict]:
    """Each finished leg's record by leg name (each kept file's sha256 checked once)."""
    records = {}
    for leg in plan_legs:
        record = legs_.finished(leg, root)
        if record is not None:
            records[leg.name] = record
    return records


def legs_table(plan_legs: Sequence[legs_.Leg], root: Path = legs_.LEGS_ROOT,
               records: dict[str, dict] | None = None) -> str:
    """Markdown: every leg of the plan, finished or not, with its held-out figures and its
    curve's flatness (read from the kept ``leg.json`` files, or ``records``)."""
    records = kept_records(plan_legs, root) if records is None else records
    lines = ["| leg | steps | parameters | training minutes | held-out DSC (as given / shifted) | "
             "myocardium, as given / shifted | scar, as given / shifted | the network's gain "
             "over the last fifth of its steps (as given / shifted) |",
             "|---|---|---|---|---|---|---|---|"]
    for leg in plan_legs:
        record = records.get(leg.name)
        steps = leg.config.epochs * leg.config.steps_per_epoch
        if record is None:
            lines.append(f"| {leg.name} | {steps:,} | | | not trained yet | | | |")
            continue
        last = record["history"][-1]
        held = record["held_out"]
        method = f" {_METHOD[leg.task]}" if leg.task in _METHOD else ""

        def pair(field: str, held=held, method=method) -> str:
            values = [held.get(f"{kind}{method}", {}).get(field) for kind in
                      ("as-given", "shifted")]
            return " / ".join("n/a" if v is None else f"{v:.3f}" for v in values)

        flat = [record.get(f"network_{k}", record[k])["gain"]
                for k in ("flatness", "flatness_shifted")]
        lines.append(
            f"| {leg.name} | {steps:,} | {record['parameters']:,} | "
            f"{record['train_minutes']:.0f} | {last['val_dsc']:.3f} / "
            f"{last.get('val_dsc_shifted', float('nan')):.3f} | {pair('myocardium_dsc')} | "
            f"{pair('scar_dsc') if method else ''} | "
            + " / ".join("n/a" if g is None else f"{g:+.4f}" for g in flat) + " |")
    return "\n".join(lines)


# The experiments' block the legs table is written into (with every leg's commit too).
LEGS_DOCUMENT = "docs/experiments.md"
LEGS_BLOCK = "round4-legs"


def legs_progress(plan_legs: Sequence[legs_.Leg], root: Path = legs_.LEGS_ROOT,
                  records: dict[str, dict] | None = None) -> str:
    """How far the release is: legs kept, what they add to git, and the training left,
    estimated per pending leg from the kept legs of the same network (median training
    minutes; scoring and export add a few minutes a leg)."""
    records = kept_records(plan_legs, root) if records is None else records
    kept, minutes, left, unknown = [], {}, 0.0, 0
    for leg in plan_legs:
        record = records.get(leg.name)
        if record is not None:
            kept.append(leg)
            minutes.setdefault((leg.task, leg.variant), []).append(record["train_minutes"])
    for leg in plan_legs:
        if leg not in kept:
            seen = minutes.get((leg.task, leg.variant))
            if seen:
                left += float(np.median(seen))
            else:
                unknown += 1
    mib = sum(p.stat().st_size for leg in kept
              for p in legs_.leg_dir(leg, root).iterdir() if p.is_file()) / 2**20
    pending = len(plan_legs) - len(kept)
    line = (f"{len(kept)} of {len(plan_legs)} legs kept ({mib:.0f} MiB in git); {pending} "
            f"left")
    if pending:
        line += (f", about {left / 60:.0f} hours of training on the machine the kept legs "
                 f"ran on" + (f" ({unknown} legs of networks with none kept yet not counted)"
                              if unknown else ""))
    return line + "."


def legs_block(plan_legs: Sequence[legs_.Leg], root: Path = legs_.LEGS_ROOT) -> str:
    records = kept_records(plan_legs, root)
    return ("Written by `python -m training.fold_legs --write docs/experiments.md` from the "
            "kept legs (`releases/round4/legs/*/leg.json`), and with each leg's commit; "
            "held-out DSC is the curve's last point (model grid, moving-average weights; the "
            "ENets': scar); the medians are per series on the source grid, the scar U-Net's "
            "through the whole cascade, an ENet's through its pipeline on its fold's "
            "myocardium ring.\n\n" + legs_table(plan_legs, root, records) + "\n\n"
            + legs_progress(plan_legs, root, records))


def with_legs_table(plan_legs: Sequence[legs_.Leg], root: Path = legs_.LEGS_ROOT
                    ) -> dict[str, Callable[[str], str]]:
    """The document each leg's commit rewrites: the experiments' legs table, read from
    the kept legs when the leg is committed."""
    return {LEGS_DOCUMENT: lambda text: replace_block(text, LEGS_BLOCK,
                                                      legs_block(plan_legs, root))}


def main(argv: list[str] | None = None) -> int:
    """``python -m training.fold_legs``: the release's legs, written into docs/experiments.md."""
    import argparse

    from training.run import CONFIGS, task_config

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--root", type=Path, default=legs_.LEGS_ROOT)
    parser.add_argument("--write", type=Path, default=None,
                        help="a Markdown file whose `round4-legs` block is rewritten")
    args = parser.parse_args(argv)
    block = legs_block(plan({task: task_config(task) for task in CONFIGS}), args.root)
    print(block)
    if args.write:
        write_block(args.write, LEGS_BLOCK, block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
