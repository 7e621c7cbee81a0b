"""Each scar network's validation figures at every threshold, per source group.

``python -m training.studies.threshold_sweep --emidec ../shared/data/emidec [--models models]``
writes ``docs/results/threshold_sweep.json``: for the EMIDEC `validation` cases as
acquired and darkened (never a test set), per scar network and threshold, the median
scar DSC and the median signed scar-% error (method minus expert) through the service's
post-processing. It is how the round-2 threshold rule was found wanting: a threshold
chosen on pooled series can suit the phantoms and under-call real scar.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from service.pipeline.postprocess import clean_myocardium
from service.pipeline.quantify import scar_fraction
from service.pipeline.registry import load_registry
from service.pipeline.segment import myocardium_probability
from training import metrics
from training.data import emidec
from training.evaluation.scoring import threshold_masks

ROOT = Path(__file__).resolve().parents[2]
SCAR_MODELS = ("scar-unet", "enet-p2", "enet-p1")


def sweep(sources, registry) -> dict:
    myo_net = registry.models["myocardium-unet"].network
    rows: dict = {}
    for source in sources:
        series = source.read()
        if not series.true_scar.any():
            continue
        myo_p = myocardium_probability(series.images, series.spacing, myo_net)
        myo = clean_myocardium(myo_p)
        truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
        for name in SCAR_MODELS:
            masks = threshold_masks(series, myo, myo_p, registry.models[name].network)
            for t, seg in masks.items():
                cell = rows.setdefault(name, {}).setdefault(f"{t:g}", {"dsc": [], "error": []})
                cell["dsc"].append(metrics.dice(seg.scar, series.true_scar))
                cell["error"].append(100.0 * scar_fraction(seg.scar, seg.myocardium) - truth)
    return {name: {t: {"median_scar_dsc": float(np.median(c["dsc"])),
                       "median_signed_scar_percent_error": float(np.median(c["error"])),
                       "series": len(c["dsc"])} for t, c in by_t.items()}
            for name, by_t in rows.items()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" /
                        "threshold_sweep.json")
    args = parser.parse_args(argv)
    registry = load_registry(args.models, "cpu", precision="fp32")
    result = {"models_version": registry.manifest["version"],
              "shipped_thresholds": {n: registry.models[n].network.threshold
                                     for n in SCAR_MODELS},
              "groups": {f"EMIDEC validation {'darkened' if dark else 'as acquired'}":
                         sweep(emidec.cases(args.emidec, "validation", dark=dark), registry)
                         for dark in (False, True)}}
    args.out.write_text(json.dumps(result, indent=1))
    for group, by_model in result["groups"].items():
        for name, by_t in by_model.items():
            print(group, name, " ".join(
                f"{t}: {c['median_scar_dsc']:.2f}/{c['median_signed_scar_percent_error']:+.1f}"
                for t, c in by_t.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
