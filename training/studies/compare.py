"""Candidate model folders side by side on the validation series (never the test sets).

``python -m training.studies.compare runs/a/models runs/b/models --emidec ../shared/data/emidec``

The way to choose between two training runs: each candidate's ONNX files,
at the thresholds its manifest holds, through the service's pipeline code,
on the phantom validation series of the training seed and EMIDEC
``validation`` in both contrasts; medians per set and a paired Wilcoxon
test of the cascade's scar and myocardium DSC. Writes ``--out`` (JSON).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service.pipeline.preprocess import model_inputs
from service.pipeline.registry import load_registry
from training import metrics
from training.data import emidec
from training.data.dataset import MYOCARDIUM_UNET, validation_series
from training.data.phantoms.__main__ import generate_many
from training.data.sources import PhantomSource
from training.evaluation.scoring import evaluate

FIELDS = ("myocardium_dsc", "scar_dsc", "abs_scar_percent_error")


def _networks(models_dir: Path) -> dict:
    registry = load_registry(models_dir, provider="cpu")
    return {"myocardium_unet": registry.models["myocardium-unet"].network,
            "scar_unet": registry.models["scar-unet"].network,
            "enet_p2": registry.models["enet-p2"].network,
            "enet_p1": registry.models["enet-p1"].network}


def validation_sets(args: argparse.Namespace) -> dict[str, list]:
    """The validation series of the training command (same seed, same choice of series)."""
    dirs = generate_many(args.work / "phantoms" / "train", args.train_series, args.train_seed,
                         workers=args.workers)
    val_idx = validation_series(len(dirs), args.val_series, args.train_seed)
    sets = {"phantoms": [PhantomSource(dirs[i]) for i in sorted(val_idx)]}
    if args.emidec is not None:
        sets["emidec"] = emidec.cases(args.emidec, "validation")
        sets["emidec-dark"] = emidec.cases(args.emidec, "validation", dark=True)
    return sets


def grid_ceiling(sources: list) -> list[float]:
    """DSC of the expert myocardium taken to the myocardium U-Net's grid and back.

    The best that network could do: a soft label on its 2 mm grid mapped back onto the
    source pixels the way the service maps its probabilities.
    """
    out = []
    for source in sources:
        series = source.read()
        _, transforms = model_inputs(series.images, series.spacing, MYOCARDIUM_UNET)
        back = np.stack([t.to_source(t.to_model(m.astype(np.float32))) >= 0.5
                         for t, m in zip(transforms, series.true_myocardium, strict=True)])
        out.append(metrics.dice(back, series.true_myocardium))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("candidates", type=Path, nargs=2, help="two models folders")
    parser.add_argument("--emidec", type=Path, default=None)
    parser.add_argument("--work", type=Path, default=Path("runs/train"),
                        help="where the training command wrote its phantoms")
    parser.add_argument("--train-series", type=int, default=160)
    parser.add_argument("--val-series", type=int, default=24)
    parser.add_argument("--train-seed", type=int, default=1000)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("runs/compare.json"))
    args = parser.parse_args(argv)
    sets = validation_sets(args)
    results: dict = {"candidates": [str(c) for c in args.candidates], "sets": {},
                     "grid_ceiling_myocardium_dsc_median": {
                         name: float(np.median(grid_ceiling(sources)))
                         for name, sources in sets.items()}}
    for name, sources in sets.items():
        scores = [evaluate(sources, _networks(c), name) for c in args.candidates]
        row: dict = {}
        for method in ("cascade-unet", "enet"):
            for field in FIELDS:
                a, b = ([getattr(s, field) for s in run if s.method == method] for run in scores)
                keep = [k for k in range(len(a)) if not (np.isnan(a[k]) or np.isnan(b[k]))]
                a, b = [a[k] for k in keep], [b[k] for k in keep]
                test = metrics.wilcoxon(b, a) if len(keep) > 1 else None
                row[f"{method} {field}"] = {
                    "n": len(keep), "medians": [float(np.median(a)), float(np.median(b))],
                    "second_better": int(sum((y > x) if field != "abs_scar_percent_error"
                                             else (y < x) for x, y in zip(a, b, strict=True))),
                    "p": None if test is None else test.p_value}
        results["sets"][name] = row
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1, default=float) + "\n")
    print("myocardium DSC ceiling of the 2 mm grid (median):",
          results["grid_ceiling_myocardium_dsc_median"])
    for name, row in results["sets"].items():
        for key, r in row.items():
            print(f"{name:12s} {key:40s} n={r['n']:2d} {r['medians'][0]:.3f} -> "
                  f"{r['medians'][1]:.3f} (second better on {r['second_better']}, p={r['p']})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
