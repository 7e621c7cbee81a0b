"""Which int8 quantisation of the U-Nets holds float32's accuracy: measured off the test sets.

``python -m training.studies.int8_study --emidec ../shared/data/emidec [--work runs/train]`` writes
``docs/results/int8_study.json``. The released int8 files move EMIDEC's scar % by about a
point (models/EVALUATION.md), five times the parity bound, so the service runs float32.
This study quantises the released float32 U-Nets again in a few ways (every convolution
or all but the last one or two, which turn features into the probabilities the scar is
thresholded from; MinMax or percentile activation ranges; both U-Nets or one), with
activation ranges from
EMIDEC `train` cases and phantom calibration series, and measures each against float32
with the release's own parity rule (``precision_parity``) on EMIDEC `validation` (both
contrasts) and other phantom calibration series, with its speed on a 12-slice batch. No
test set is read: the release then reports the chosen copy on the test sets, once.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from service.pipeline.infer import OnnxModel
from service.pipeline.registry import load_registry
from training.data import emidec
from training.data.phantoms.__main__ import generate_many
from training.data.sources import PhantomSource
from training.evaluation.scoring import evaluate
from training.evaluation.summary import precision_parity
from training.quantize import EMIDEC_CALIBRATION_CASES, calibration_inputs, quantize_int8
from training.release import MODELS
from training.studies.lge_gate_study import CALIBRATION_SEED, CALIBRATION_SERIES

ROOT = Path(__file__).resolve().parents[2]
# (name, convolutions left in float32, activation range method, the U-Nets run in int8)
BOTH = ("myocardium_unet", "scar_unet")
VARIANTS = (("all convolutions, MinMax", 0, "minmax", BOTH),
            ("last convolution float32, MinMax", 1, "minmax", BOTH),
            ("last two convolutions float32, MinMax", 2, "minmax", BOTH),
            ("all convolutions, percentile", 0, "percentile", BOTH),
            ("last convolution float32, percentile", 1, "percentile", BOTH),
            ("scar U-Net only, all convolutions, MinMax", 0, "minmax", ("scar_unet",)),
            ("myocardium U-Net only, all convolutions, MinMax", 0, "minmax",
             ("myocardium_unet",)))
SLICES = 12


def speed_ms(path: Path, spec_shape: tuple[int, ...], runs: int = 20) -> float:
    model = OnnxModel(path)
    batch = np.random.default_rng(0).normal(size=(SLICES, *spec_shape)).astype(np.float32)
    model(batch)
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        model(batch)
        times.append((time.perf_counter() - t0) * 1000.0)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/train"))
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "int8_study.json")
    args = parser.parse_args(argv)
    registry = load_registry(args.models, "cpu", precision="fp32")
    names = {m.key: m.name for m in MODELS}
    networks = {task: registry.models[name].network for task, name in names.items()}
    manifest = json.loads((args.models / "manifest.json").read_text())
    files = {m["name"]: m["file"] for m in manifest["models"]}
    phantoms = generate_many(args.work / "phantoms" / "calibration", CALIBRATION_SERIES,
                             CALIBRATION_SEED)
    half = len(phantoms) // 2
    calibrating = ([PhantomSource(d) for d in phantoms[:half]]
                   + emidec.cases(args.emidec, "train")[:EMIDEC_CALIBRATION_CASES])
    measured = {"phantoms (calibration seed, other half)":
                [PhantomSource(d) for d in phantoms[half:]],
                "emidec validation": emidec.cases(args.emidec, "validation"),
                "emidec validation darkened": emidec.cases(args.emidec, "validation",
                                                           dark=True)}
    started = time.perf_counter()
    inputs = calibration_inputs(calibrating, networks)
    fp32_scores = [s for name, sources in measured.items()
                   for s in evaluate(sources, networks, name)]
    fp32_ms = {task: speed_ms(args.models / files[names[task]],
                              tuple(inputs[task].shape[1:])) for task in inputs}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for label, float_convs, method, in_int8 in VARIANTS:
            variant = dict(networks)
            ms = {}
            for task, x in inputs.items():
                if task not in in_int8:
                    continue
                path = Path(tmp) / f"{task}-{float_convs}-{method}.onnx"
                quantize_int8(args.models / files[names[task]], path, x,
                              float_last_convs=float_convs, method=method)
                variant[task] = dataclasses.replace(networks[task], predict=OnnxModel(path))
                ms[task] = speed_ms(path, tuple(x.shape[1:]))
            scores = [s for name, sources in measured.items()
                      for s in evaluate(sources, variant, name)]
            parity = precision_parity(fp32_scores, scores)
            rows.append({"variant": label, "float_last_convs": float_convs, "method": method,
                         "int8_networks": list(in_int8),
                         "int8_ms": ms, "speedup": {t: fp32_ms[t] / ms[t] for t in ms},
                         "met_everywhere": all(r["met"] for r in parity), "parity": parity})
            print(label, json.dumps({r["test_set"] + " " + r["method"]: (
                round(r["scar_percent_change_median"], 3), r["met"]) for r in parity}),
                {t: round(v, 1) for t, v in ms.items()})
    result = {"calibration": {"phantom_series": half,
                              "emidec_train_cases": EMIDEC_CALIBRATION_CASES,
                              "rows": {t: len(x) for t, x in inputs.items()}},
              "measured_on": {k: len(v) for k, v in measured.items()},
              "fp32_ms": fp32_ms, "seconds": time.perf_counter() - started, "variants": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
