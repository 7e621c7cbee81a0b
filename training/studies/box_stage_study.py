"""Does the cascade need a converged myocardium U-Net, or only one that places the heart box?

In the cascade the scar U-Net redraws the myocardium inside the heart box, so the
myocardium U-Net's own ring reaches the report only through where the box falls (and the
gate). ``python -m training.studies.box_stage_study --emidec ../shared/data/emidec``
runs fold 0's kept scar U-Net (the latest stage) on its 16 held-out cases, as given and
shifted, with the heart box placed by each kept stage of fold 0's myocardium U-Net in turn
(12,000 steps each), and writes ``docs/results/box_stage_study.json``: per stage, the
cascade's median myocardium and scar DSC and median |scar-% error|, and the paired
differences from the box of the stage the scar U-Net was trained on (``BOX_STAGE``), with
a bootstrap 95 % interval over cases. Figures only.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from service.pipeline.quantify import scar_fraction
from service.pipeline.segment import myocardium_probability, ring_from, segment_on
from training import legs as legs_
from training.metrics import dice
from training.studies.oof_interval_study import AS_GIVEN, SHIFTED, held_out_items, leg_network

ROOT = Path(__file__).resolve().parents[2]
BOOTSTRAP = 2000


def stage_rows(emidec_root: Path, fold: int, myocardium_legs: Sequence[legs_.Leg],
               scar_leg: legs_.Leg, root: Path = legs_.LEGS_ROOT,
               limit: int | None = None) -> list[dict]:
    """Per held-out series and myocardium stage: the cascade's DSCs and scar-% error."""
    scar_net = leg_network("scar_unet", scar_leg, root)
    boxes = {leg.name: leg_network("myocardium_unet", leg, root) for leg in myocardium_legs}
    rows = []
    for group, source in held_out_items(emidec_root, fold, limit):
        t0 = time.perf_counter()
        series = source.read()
        truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
        for name, myo_net in boxes.items():
            myo_p = myocardium_probability(series.images, series.spacing, myo_net)
            ring = ring_from(myo_p, myo_net)
            row = {"series_id": source.series_id, "group": group, "box": name,
                   "ring_dsc": dice(ring, series.true_myocardium)}
            if ring.any():
                seg = segment_on(series.images, series.spacing, ring, myo_p, scar_net)
                row |= {"myocardium_dsc": dice(seg.myocardium, series.true_myocardium),
                        "scar_dsc": (dice(seg.scar, series.true_scar)
                                     if series.true_scar.any() else None),
                        "abs_error": abs(100.0 * scar_fraction(seg.scar, seg.myocardium)
                                         - truth)}
            rows.append(row)
        print(f"{group}: {source.series_id} {time.perf_counter() - t0:.1f} s", flush=True)
    return rows


def _interval(differences: np.ndarray, seed: int = 52) -> list[float]:
    rng = np.random.default_rng(seed)
    means = [float(np.mean(rng.choice(differences, differences.size)))
             for _ in range(BOOTSTRAP)]
    return [float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))]


def summarise(rows: Sequence[dict], reference: str) -> dict:
    """Per group and box: medians; and each box's mean paired difference from
    ``reference``'s box, with a bootstrap interval (positive: better than the reference for
    the DSCs, worse for the error)."""
    out: dict[str, dict] = {}
    measures = ("ring_dsc", "myocardium_dsc", "scar_dsc", "abs_error")
    for group in (AS_GIVEN, SHIFTED):
        members = [r for r in rows if r["group"] == group]
        by_box: dict[str, dict[str, dict]] = {}
        for box in dict.fromkeys(r["box"] for r in members):
            mine = {r["series_id"]: r for r in members if r["box"] == box}
            ref = {r["series_id"]: r for r in members if r["box"] == reference}
            by_box[box] = {}
            for m in measures:
                values = [r[m] for r in mine.values() if r.get(m) is not None]
                paired = np.array([mine[s][m] - ref[s][m] for s in mine
                                   if mine[s].get(m) is not None and s in ref
                                   and ref[s].get(m) is not None])
                by_box[box][m] = {
                    "median": float(np.median(values)) if values else None,
                    "series": len(values),
                    "mean_difference": float(paired.mean()) if paired.size else None,
                    "difference_95": _interval(paired) if paired.size > 1 else None}
        out[group] = by_box
    return out


def docs_block(result: dict) -> str:
    lines = [f"Fold 0's scar U-Net `{result['scar_leg']}` with the heart box of each "
             f"myocardium stage; differences from the box it was trained on "
             f"(`{result['reference']}`), mean over series with a bootstrap 95 % interval.",
             "", "| group | box from | its ring DSC | cascade myocardium DSC | scar DSC | "
             "abs scar-% error | myocardium DSC, difference | scar DSC, difference | "
             "abs error, difference |", "|---|---|---|---|---|---|---|---|---|"]

    def diff(cell: dict) -> str:
        if cell["mean_difference"] is None or cell["difference_95"] is None:
            return ""
        low, high = cell["difference_95"]
        return f"{cell['mean_difference']:+.3f} [{low:+.3f}, {high:+.3f}]"

    for group, boxes in result["summary"].items():
        for box, m in boxes.items():
            medians = " | ".join("" if m[k]["median"] is None else f"{m[k]['median']:.3f}"
                                 for k in ("ring_dsc", "myocardium_dsc", "scar_dsc",
                                           "abs_error"))
            lines.append(f"| {group} | {box} | {medians} | {diff(m['myocardium_dsc'])} | "
                         f"{diff(m['scar_dsc'])} | {diff(m['abs_error'])} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    from training.fold_legs import BOX_STAGE, plan
    from training.generated import write_block, write_results
    from training.run import CONFIGS, task_config

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, help="EMIDEC's folder (all but --docs-only)")
    parser.add_argument("--root", type=Path, default=legs_.LEGS_ROOT)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "docs" / "results" / "box_stage_study.json")
    parser.add_argument("--docs", type=Path, default=ROOT / "docs" / "experiments.md")
    parser.add_argument("--docs-only", action="store_true")
    args = parser.parse_args(argv)
    if args.docs_only:
        write_block(args.docs, "box-stage-study", docs_block(json.loads(args.out.read_text())))
        return 0
    if args.emidec is None:
        parser.error("--emidec is required")
    kept = [leg for leg in plan({task: task_config(task) for task in CONFIGS})
            if leg.fold == 0 and not leg.variant and legs_.finished(leg, args.root)]
    myocardium = [leg for leg in kept if leg.task == "myocardium_unet"]
    scar = [leg for leg in kept if leg.task == "scar_unet"][-1]
    reference = next(leg.name for leg in myocardium if leg.stage == BOX_STAGE)
    rows = stage_rows(args.emidec, 0, myocardium, scar, args.root, args.limit)
    result = {"about": __doc__.split("\n\n")[0], "scar_leg": scar.name,
              "reference": reference, "summary": summarise(rows, reference), "rows": rows}
    block = docs_block(result)
    if args.limit is None:
        write_results(result, args.out, args.docs, "box-stage-study", block)
    print(block)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
