"""Issue 52, point 2: which ring the ENet pipelines should take, out of fold.

``python -m training.studies.enet_ring_study --emidec ../shared/data/emidec`` ``[--work
runs/enet_ring]`` runs, for every fold whose U-Nets and ENets have kept legs
(releases/round4/legs; the latest stage kept of each), both ENet pipelines on that fold's
held-out cases, as given (as acquired and darkened) and shifted (the fixed other-centre
copies), twice: on the myocardium U-Net's ring (what they run on today) and on the ring
the cascade's scar U-Net redraws inside its heart box. Its held-out scores said the
second ring is the better one; if the ENets score better on it, the myocardium U-Net
only places the heart box, and its own curve no longer decides how long it trains.

It writes ``docs/results/enet_ring_study.json`` and the ``enet-ring-study`` block of
docs/experiments.md: per pipeline, ring and group, the median myocardium and scar DSC and
the median absolute scar-% error, with the series better and worse on the cascade's ring.
Rows are cached under ``--work`` per set of legs, so a rerun only runs new folds. No image
leaves ``--work``; the JSON holds figures only.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.pipeline.quantify import scar_fraction
from service.pipeline.segment import Network, myocardium_probability, ring_from, segment_on
from training import legs as legs_
from training import metrics
from training.data.sources import Source
from training.studies import finish_study, fold_study_parser
from training.studies.oof_interval_study import (
    SHIFTED,
    held_out_items,
    kept_folds,
    leg_network,
)

ENETS = {"enet": "enet_p2", "enet-raw": "enet_p1"}
TASKS = ("myocardium_unet", "scar_unet", *ENETS.values())
# The first ring each ENet may take: the myocardium U-Net's, or the cascade's redrawn one.
RINGS = ("myocardium U-Net", "cascade")
GROUPS = ("bright-blood", "dark-blood", SHIFTED)


def _group(group: str, source: Source) -> str:
    return SHIFTED if group == SHIFTED else source.contrast


def series_rows(source: Source, group: str, fold: int, nets: dict[str, Network]) -> list[dict]:
    """One held-out series: each ENet pipeline on each ring, scored against the experts."""
    series = source.read()
    images, spacing = series.images, series.spacing
    truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
    myo_p = myocardium_probability(images, spacing, nets["myocardium_unet"])
    first = ring_from(myo_p, nets["myocardium_unet"])
    base = {"series_id": source.series_id, "group": _group(group, source), "fold": fold,
            "true_scar_percent": truth}
    if not first.any():
        return [base | {"pipeline": p, "ring": r, "scar_percent": None}
                for p in ENETS for r in RINGS]
    cascade = segment_on(images, spacing, first, myo_p, nets["scar_unet"])
    given = {"myocardium U-Net": (first, myo_p),
             "cascade": (cascade.myocardium, cascade.myocardium_probability)}
    rows = []
    for pipeline, task in ENETS.items():
        for ring in RINGS:
            seg = segment_on(images, spacing, *given[ring], nets[task])
            percent = 100.0 * scar_fraction(seg.scar, seg.myocardium)
            rows.append(base | {
                "pipeline": pipeline, "ring": ring, "scar_percent": percent,
                "error": percent - truth,
                "myocardium_dsc": metrics.dice(seg.myocardium, series.true_myocardium),
                "scar_dsc": (metrics.dice(seg.scar, series.true_scar)
                             if series.true_scar.any() else None)})
    return rows


def fold_rows(emidec_root: Path, fold: int, kept: dict[str, legs_.Leg], work: Path,
              root: Path = legs_.LEGS_ROOT, limit: int | None = None) -> list[dict]:
    """Every held-out series of one fold, cached per set of legs."""
    key = "-".join([f"fold{fold}"] + [kept[t].name.removeprefix(f"fold{fold}-") for t in TASKS])
    cache = work / f"{key}{'' if limit is None else f'-first{limit}'}.json"
    if cache.exists():
        return json.loads(cache.read_text())
    nets = {task: leg_network(task, kept[task], root) for task in TASKS}
    rows = []
    for group, source in held_out_items(emidec_root, fold, limit):
        t0 = time.perf_counter()
        rows += series_rows(source, group, fold, nets)
        print(f"fold {fold} {group}: {source.series_id} {time.perf_counter() - t0:.1f} s",
              flush=True)
    cache.parent.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(rows, indent=1) + "\n")
    return rows


def _median(values: Sequence[float | None]) -> float | None:
    kept = [v for v in values if v is not None]
    return float(np.median(kept)) if kept else None


def summarise(rows: Sequence[dict], folds: dict[str, dict[str, str]]) -> dict:
    """Per pipeline and group: each ring's medians, and the series the cascade's ring
    makes better and worse (scar DSC, then |scar-% error|)."""
    table = {}
    for pipeline in ENETS:
        table[pipeline] = {}
        for group in GROUPS:
            by_ring = {ring: {r["series_id"]: r for r in rows if r["pipeline"] == pipeline
                              and r["ring"] == ring and r["group"] == group}
                       for ring in RINGS}
            if not by_ring[RINGS[0]]:
                continue
            cell = {}
            for ring, by_id in by_ring.items():
                analysed = [r for r in by_id.values() if r["scar_percent"] is not None]
                cell[ring] = {"series": len(by_id), "analysed": len(analysed),
                              "myocardium_dsc": _median([r["myocardium_dsc"] for r in analysed]),
                              "scar_dsc": _median([r["scar_dsc"] for r in analysed]),
                              "abs_error": _median([abs(r["error"]) for r in analysed])}
            pairs = [(a, by_ring[RINGS[1]][sid]) for sid, a in by_ring[RINGS[0]].items()
                     if a["scar_percent"] is not None]
            for name, better in (("scar_dsc", lambda a, b: b > a),
                                 ("abs_error", lambda a, b: b < a)):
                values = [(a.get(name) if name != "abs_error" else abs(a["error"]),
                           b.get(name) if name != "abs_error" else abs(b["error"]))
                          for a, b in pairs]
                values = [(a, b) for a, b in values if a is not None and b is not None]
                cell[f"cascade_better_{name}"] = sum(better(a, b) for a, b in values)
                cell[f"cascade_worse_{name}"] = sum(better(b, a) for a, b in values)
            table[pipeline][group] = cell
    return {"about": __doc__.split("\n\n")[0], "folds": folds, "table": table,
            "rows": list(rows)}


def _fmt(value: float | None, pattern: str = "{:.3f}") -> str:
    return "" if value is None else pattern.format(value)


def docs_block(result: dict) -> str:
    """The study's table in Markdown (docs/experiments.md's ``enet-ring-study``)."""
    folds = "; ".join(f"fold {f}: " + ", ".join(n.values()) for f, n in result["folds"].items())
    lines = [f"Legs: {folds}.", "",
             "| pipeline | group | series | myocardium DSC, U-Net's ring / cascade's "
             "| scar DSC, U-Net's ring / cascade's | median abs scar-% error, U-Net's ring / "
             "cascade's | cascade's ring better / worse (scar DSC; abs error) |",
             "|---|---|---|---|---|---|---|"]
    for pipeline, groups in result["table"].items():
        for group, cell in groups.items():
            a, b = (cell[r] for r in RINGS)
            lines.append(
                f"| {pipeline} | {group} | {a['series']} "
                f"| {_fmt(a['myocardium_dsc'])} / {_fmt(b['myocardium_dsc'])} "
                f"| {_fmt(a['scar_dsc'])} / {_fmt(b['scar_dsc'])} "
                f"| {_fmt(a['abs_error'], '{:.2f}')} / {_fmt(b['abs_error'], '{:.2f}')} "
                f"| {cell['cascade_better_scar_dsc']} / {cell['cascade_worse_scar_dsc']}; "
                f"{cell['cascade_better_abs_error']} / {cell['cascade_worse_abs_error']} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from training.fold_legs import plan
    from training.run import CONFIGS, task_config

    parser = fold_study_parser(__doc__.splitlines()[0], "runs/enet_ring",
                               "enet_ring_study.json")
    parser.add_argument("--emidec", type=Path, required=True, help="EMIDEC's folder")
    parser.add_argument("--folds", type=int, nargs="*", default=None,
                        help="only these folds (default: every fold with its networks kept)")
    args = parser.parse_args(argv)
    folds = kept_folds(plan({task: task_config(task) for task in CONFIGS}), args.root, TASKS)
    folds = {f: kept for f, kept in folds.items() if args.folds is None or f in args.folds}
    if not folds:
        print("no fold has its U-Nets and ENets kept yet")
        return 1
    rows = [r for fold, kept in folds.items()
            for r in fold_rows(args.emidec, fold, kept, args.work, args.root, args.limit)]
    result = summarise(rows, {str(f): {t: leg.name for t, leg in n.items()}
                              for f, n in folds.items()})
    return finish_study(result, docs_block(result), args, "enet-ring-study")


if __name__ == "__main__":
    raise SystemExit(main())
