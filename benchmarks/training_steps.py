"""One training step of each network under each precision and compiler, side by side.

The training command's budget (120 minutes on 2 CPU cores) is set by the
cost of a step, so the precision, the compiler and the crop each network
trains with are chosen from these figures. Each network is built as
``python -m training`` builds it, with the release's own training step
(:func:`training.train.make_step`: the same loss and Adam update) at the
release's batch size and training crop, in four variants: float32 or
keras' ``mixed_bfloat16`` policy (bfloat16 compute on this CPU's AMX /
AVX-512 bf16 units, float32 weights), each with and without XLA. The
variants' steps alternate, so machine noise hits all alike, and the
release's own variant also runs on the whole input (what a crop saves).
Prints the figures and writes them to ``benchmarks/results/training_steps.json``
and ``BENCHMARKS.md``.

    python benchmarks/training_steps.py --steps 20
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
VARIANTS = {"float32 + XLA": ("float32", True), "float32": ("float32", False),
            "bfloat16 + XLA": ("mixed_bfloat16", True), "bfloat16": ("mixed_bfloat16", False)}


def _variant_name(config) -> str:
    return next(name for name, (policy, xla) in VARIANTS.items()
                if policy == config.precision and xla == config.xla)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from latency import host_calibration_ms, write_section  # benchmarks/ is on sys.path

    from training.data.dataset import TASKS
    from training.run import build_network, task_config
    from training.train import make_step, precision_policy

    calibration_before = host_calibration_ms()
    rows = []
    for task, spec in TASKS.items():
        release = task_config(task)
        side = release.train_crop or spec.shape[0]
        runs = {}  # label -> (step, batch)
        rng = np.random.default_rng(0)
        cases = [(name, side) for name in VARIANTS]
        if release.train_crop:
            cases.append((f"{_variant_name(release)}, whole input", spec.shape[0]))
        for label, size in cases:
            policy, xla = VARIANTS[label.split(",")[0]]
            config = dataclasses.replace(release, precision=policy, xla=xla)
            keras.utils.set_random_seed(0)
            try:
                with precision_policy(policy):
                    model = build_network(task)
                    n_regions = model.output_shape[-1] - 1
                    step = make_step(model, keras.optimizers.Adam(1e-3), config, n_regions)
                x = tf.constant(rng.normal(size=(config.batch_size, size, size,
                                                 spec.channels)), tf.float32)
                y = tf.constant(rng.random((config.batch_size, size, size, n_regions + 1)),
                                tf.float32)
                for _ in range(2):  # compile and warm
                    float(step(x, y))
            except Exception as exc:  # a kernel the variant lacks (XLA and the ENet's unpool)
                print(f"{task:16s} {label}: not supported ({type(exc).__name__})")
                continue
            runs[label] = (step, x, y)
        times: dict[str, list[float]] = {label: [] for label in runs}
        for _ in range(args.steps):
            for label, (step, x, y) in runs.items():
                t0 = time.perf_counter()
                float(step(x, y))
                times[label].append((time.perf_counter() - t0) * 1000.0)
        medians = {label: statistics.median(v) for label, v in times.items()}
        used = _variant_name(release)
        reference = medians.get("float32 + XLA")
        steps = release.epochs * release.steps_per_epoch
        row = {"model": task, "batch": release.batch_size, "side": side,
               "whole_input": spec.shape[0], "step_ms": medians, "release_variant": used,
               "release_steps": steps,
               "release_step_minutes": medians[used] * steps / 60000.0,
               "speedup_over_float32_xla": (None if reference is None
                                            else {k: reference / v for k, v in medians.items()})}
        rows.append(row)
        print(f"{task:16s} " + "  ".join(f"{k} {v:5.0f} ms" for k, v in medians.items())
              + f"  -> {row['release_step_minutes']:.1f} min of steps ({used})")

    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
               "tensorflow": tf.__version__, "steps": args.steps,
               "host_calibration_ms": [calibration_before, host_calibration_ms()],
               "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_steps.json").write_text(json.dumps(results, indent=1))

    def cell(row: dict, label: str) -> str:
        ms = row["step_ms"].get(label)
        if ms is None:
            return "n/a"
        ratio = (row["speedup_over_float32_xla"] or {}).get(label)
        text = f"{ms:.0f}" + (f" ({ratio:.2f}x)" if ratio else "")
        return f"**{text}**" if label == row["release_variant"] else text

    table = "\n".join(
        f"| {r['model']} | {r['batch']} | {r['side']} | "
        + " | ".join(cell(r, v) for v in VARIANTS)
        + f" | {cell(r, next((k for k in r['step_ms'] if 'whole' in k), ''))} | "
        f"{r['release_steps']} | {r['release_step_minutes']:.1f} |" for r in rows)
    write_section(
        f"## Training steps ({results['date'][:10]})\n\n"
        f"`python benchmarks/training_steps.py --steps {args.steps}`: one step of the "
        "release's training step (loss, Adam update) per network at its batch size and "
        "training crop, in float32 or bfloat16 (keras' `mixed_bfloat16`: bfloat16 compute, "
        "float32 weights) and with or without XLA, alternating; medians of "
        f"{args.steps} steps on {results['machine']}, in ms, with the speed-up over float32 + "
        "XLA (0.2.0's setting) in brackets; the release's variant in bold, and the same on "
        "the whole input. Host calibration "
        f"{calibration_before:.0f} / {results['host_calibration_ms'][1]:.0f} ms (before / "
        "after, `latency.py`'s loop). Random inputs. Minutes of steps in the release "
        "schedule exclude augmentation, validation and export.\n\n"
        "| model | batch | side | " + " | ".join(VARIANTS) + " | release variant, whole "
        "input | release steps | minutes of steps |\n|---|---|---|"
        + "---|" * len(VARIANTS) + "---|---|---|\n" + table,
        "training-steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
