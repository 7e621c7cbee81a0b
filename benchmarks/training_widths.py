"""One training step of each U-Net at several widths, side by side: what capacity costs here.

Issue 52 measured on a 2-core machine with AMX (bfloat16 matrix units) that a
U-Net 16x wider costs 2.6x per step; without AMX the ratio is worse. This
script measures it on the machine at hand: the release's own training step
(:func:`training.train.make_step`, keras' ``mixed_bfloat16``) at the release's
batch and crop, for U-Nets of 16, 24 and 32 filters at the top level (4
levels), the widths' steps alternating so machine noise hits all alike. It
also says whether the CPU has AMX. Prints the figures and writes them to
``benchmarks/results/training_widths.json`` and ``BENCHMARKS.md``.

    python benchmarks/training_widths.py --steps 15
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
WIDTHS = (16, 24, 32)


def cpu_flags() -> dict:
    """The CPU's model name and its matrix units (AMX, AVX-512 bf16, VNNI), from lscpu's
    source."""
    text = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    flags = set()
    model = ""
    for line in text.splitlines():
        if line.startswith("flags") and not flags:
            flags = set(line.split(":", 1)[1].split())
        if line.startswith("model name") and not model:
            model = line.split(":", 1)[1].strip()
    return {"model": model, "amx_bf16": "amx_bf16" in flags,
            "avx512_bf16": "avx512_bf16" in flags, "avx512_vnni": "avx512_vnni" in flags}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--tasks", nargs="+", default=["scar_unet", "myocardium_unet"])
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from latency import write_section  # benchmarks/ is on sys.path

    from training.data.dataset import TASKS
    from training.run import build_network, task_config
    from training.train import make_step, precision_policy

    rows = []
    for task in args.tasks:
        release = task_config(task)
        side = release.train_crop or TASKS[task].shape[0]
        rng = np.random.default_rng(0)
        runs = {}
        for width in WIDTHS:
            config = dataclasses.replace(release, base_filters=width)
            keras.utils.set_random_seed(0)
            with precision_policy(config.precision):
                model = build_network(task, width)
                n_regions = model.output_shape[-1] - 1
                step = make_step(model, keras.optimizers.Adam(1e-3), config, n_regions)
            x = tf.constant(rng.normal(size=(config.batch_size, side, side,
                                             TASKS[task].channels)), tf.float32)
            y = tf.constant(rng.random((config.batch_size, side, side, n_regions + 1)),
                            tf.float32)
            for _ in range(2):  # compile and warm
                float(step(x, y))
            runs[width] = (step, x, y, int(model.count_params()))
        times: dict[int, list[float]] = {w: [] for w in runs}
        for _ in range(args.steps):
            for width, (step, x, y, _) in runs.items():
                t0 = time.perf_counter()
                float(step(x, y))
                times[width].append((time.perf_counter() - t0) * 1000.0)
        medians = {w: statistics.median(v) for w, v in times.items()}
        row = {"model": task, "batch": release.batch_size, "side": side,
               "precision": release.precision,
               "widths": [{"base_filters": w, "parameters": runs[w][3],
                           "step_ms": medians[w], "ratio": medians[w] / medians[WIDTHS[0]]}
                          for w in WIDTHS]}
        rows.append(row)
        print(f"{task:16s} " + "  ".join(f"{w['base_filters']} filters {w['step_ms']:5.0f} ms "
                                         f"({w['ratio']:.2f}x)" for w in row["widths"]))
    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
               "cpu": cpu_flags(), "tensorflow": tf.__version__, "steps": args.steps,
               "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_widths.json").write_text(json.dumps(results, indent=1))
    cpu = results["cpu"]
    units = ("AMX (amx_bf16)" if cpu["amx_bf16"] else "no AMX")
    units += ", AVX-512 bf16" if cpu["avx512_bf16"] else ""
    table = "\n".join(
        f"| {r['model']} | {w['base_filters']} | {w['parameters']:,} | {w['step_ms']:.0f} | "
        f"{w['ratio']:.2f}x |" for r in rows for w in r["widths"])
    write_section(
        f"## Training steps by width ({results['date'][:10]})\n\n"
        f"`python benchmarks/training_widths.py --steps {args.steps}`: one training step "
        "(the release's loss and Adam update, keras `mixed_bfloat16`, batch 8, 80x80 crops) "
        "of each U-Net at 16, 24 and 32 filters at the top level (4 levels), the widths "
        f"alternating; medians of {args.steps} steps on {results['machine']}, "
        f"{cpu['model'] or 'CPU model not reported'}: {units}. Random inputs. "
        "Issue 52's figures on a 2-core machine with AMX (not measured here): 16 filters "
        "at 80x80, batch 8: 69 ms; 32-512 filters over 5 levels at 128x128, batch 16: "
        "698 ms.\n\n"
        "| network | filters at the top | parameters | step (ms) | against 16 filters |\n"
        "|---|---|---|---|---|\n" + table,
        "training-widths")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
