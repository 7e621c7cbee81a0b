"""Capacity by measurement (issue 52, point 3): fold 0's scar U-Net at 16 and 32 filters.

Every 16-filter scar U-Net ended flat below the release's targets, so whether a wider one
ends higher decides whether more steps of this design can reach them. The two networks'
held-out curves (each network's stages joined, moving-average weights, fold 0's 16
held-out cases as given and shifted) are compared at equal compute: a step of the wider
network counts as the cost ratio ``benchmarks/training_widths.py`` measured on this kind of
machine (the legs' own seconds are not comparable: they ran beside other work, some were
paused). Reads only the kept legs; writes ``docs/results/capacity_study.json`` and its
block in docs/experiments.md.

    python -m training.studies.capacity_study
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from training import legs as legs_
from training.fold_legs import CAPACITY_VARIANTS, joined_curves, plan
from training.studies import DOCS, finish_study

WIDTHS = Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "training_widths.json"
KEYS = ("val_dsc", "val_dsc_shifted")
MEDIANS = ("as-given cascade-unet", "shifted cascade-unet")


def step_cost(base_filters: int, widths_file: Path = WIDTHS) -> float:
    """A scar U-Net step at ``base_filters`` in 16-filter steps (the measured ratio)."""
    rows = json.loads(Path(widths_file).read_text())["rows"]
    row = next(r for r in rows if r["model"] == "scar_unet")
    return next(w["ratio"] for w in row["widths"] if w["base_filters"] == base_filters)


def network_curve(network: str, root: Path = legs_.LEGS_ROOT) -> dict | None:
    """The network's stages kept so far (from the first, in order) joined: its curve, the
    last kept stage's held-out medians and its flatness; None while none is kept."""
    from training.run import CONFIGS, task_config

    legs, records = [], []
    for leg in plan({t: task_config(t) for t in CONFIGS}):
        if leg.network != network:
            continue
        record = legs_.finished(leg, root)
        if record is None:
            break
        legs.append(leg)
        records.append(record)
    if not legs:
        return None
    history = joined_curves([r["history"] for r in records])
    return {"stages": [leg.name for leg in legs], "base_filters": legs[0].config.base_filters,
            "steps": history[-1]["steps"],
            "curve": [{"steps": h["steps"], **{k: h.get(k) for k in KEYS}}
                      for h in history if h.get("val_dsc") is not None],
            "medians": {m: records[-1]["held_out"][m] for m in MEDIANS},
            "flatness": {k: legs_.flatness(history, k) for k in KEYS}}


def at_equal_compute(narrow: dict, wide: dict, cost: float) -> list[dict]:
    """The wider network's curve points beside the narrow one's at the same compute (its
    steps times ``cost`` in narrow steps) and at the same steps (interpolated; None past
    the narrow curve's end)."""
    x = np.array([p["steps"] for p in narrow["curve"]], float)

    def narrow_at(steps: float, key: str) -> float | None:
        ys = np.array([q[key] for q in narrow["curve"]], float)
        return float(np.interp(steps, x, ys)) if x[0] <= steps <= x[-1] else None

    return [{"steps": p["steps"], "narrow_steps": p["steps"] * cost,
             **{k: {"wide": p[k], "narrow": narrow_at(p["steps"] * cost, k),
                    "narrow_same_steps": narrow_at(p["steps"], k)} for k in KEYS}}
            for p in wide["curve"]]


def docs_block(result: dict) -> str:
    n, w = result["narrow"], result["wide"]
    if w is None:
        return "No stage of the wider network is kept yet."
    lines = [f"Fold 0's scar U-Net, {n['base_filters']} against {w['base_filters']} filters "
             f"(`python -m training.studies.capacity_study`, "
             f"[results](results/capacity_study.json)); a {w['base_filters']}-filter step "
             f"costs {result['cost']:.2f} {n['base_filters']}-filter steps "
             "(BENCHMARKS.md, \"Training steps by width\").", "",
             "| network | steps | in 16-filter steps | held-out DSC, last point (as given / "
             "shifted) | gain over the last fifth (as given / shifted) | cascade myocardium "
             "/ scar DSC as given | shifted |", "|---|---|---|---|---|---|---|"]
    for net, cost in ((n, 1.0), (w, result["cost"])):
        last = net["curve"][-1]
        a, s = (net["medians"][m] for m in MEDIANS)
        lines.append(
            f"| {' + '.join(net['stages'])} | {net['steps']:,.0f} | {net['steps'] * cost:,.0f} | "
            f"{last['val_dsc']:.3f} / {last['val_dsc_shifted']:.3f} | "
            f"{net['flatness']['val_dsc']['gain']:+.4f} / "
            f"{net['flatness']['val_dsc_shifted']['gain']:+.4f} | "
            f"{a['myocardium_dsc']:.3f} / {a['scar_dsc']:.3f} | "
            f"{s['myocardium_dsc']:.3f} / {s['scar_dsc']:.3f} |")
    paired = [r for r in result["equal_compute"] if r["val_dsc"]["narrow"] is not None]
    if paired:
        last = paired[-1]
        lines += ["", f"At equal compute, the last point both curves reach ({last['steps']:,.0f} "
                  f"wide steps, {last['narrow_steps']:,.0f} narrow ones): "
                  f"{last['val_dsc']['wide']:.3f} against {last['val_dsc']['narrow']:.3f} as "
                  f"given, {last['val_dsc_shifted']['wide']:.3f} against "
                  f"{last['val_dsc_shifted']['narrow']:.3f} shifted (wide against narrow)."]
    end = result["equal_compute"][-1]
    if end["val_dsc"]["narrow_same_steps"] is not None:
        lines += ["", f"At equal steps, the wider network's last point ({end['steps']:,.0f}): "
                  f"{end['val_dsc']['wide']:.3f} against {end['val_dsc']['narrow_same_steps']:.3f}"
                  f" as given, {end['val_dsc_shifted']['wide']:.3f} against "
                  f"{end['val_dsc_shifted']['narrow_same_steps']:.3f} shifted."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=legs_.LEGS_ROOT)
    parser.add_argument("--out", type=Path, default=DOCS / "results" / "capacity_study.json")
    parser.add_argument("--docs", type=Path, default=DOCS / "experiments.md")
    args = parser.parse_args(argv)
    args.limit = None
    variant = next(iter(CAPACITY_VARIANTS))
    narrow = network_curve("fold0-scar_unet", args.root)
    wide = network_curve(f"fold0-scar_unet-{variant}", args.root)
    cost = step_cost(CAPACITY_VARIANTS[variant]["base_filters"])
    result = {"about": __doc__.split("\n\n")[0], "cost": cost, "narrow": narrow, "wide": wide,
              "equal_compute": [] if wide is None else at_equal_compute(narrow, wide, cost)}
    if wide is None:
        print(docs_block(result))
        return 1
    return finish_study(result, docs_block(result), args, "capacity-study")


if __name__ == "__main__":
    raise SystemExit(main())
