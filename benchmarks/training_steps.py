"""One training step of each network, at its training crop and at its whole input, side by side.

The training command's budget (30 minutes on 2 CPU cores) is set by the
cost of a step, so the crop each U-Net trains on is chosen from this
figure. Each network is built as ``python -m training`` builds it, with
the release's own compiled step (:func:`training.train.make_step`, the
same loss, XLA where the release uses it) at the release's batch size;
steps at the two input sizes alternate so machine noise hits both alike.
Prints the figures and writes them to ``benchmarks/results/training_steps.json``
and ``BENCHMARKS.md``.

    python benchmarks/training_steps.py --steps 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=20)
    args = parser.parse_args()

    import keras
    import tensorflow as tf
    from latency import host_calibration_ms, write_section  # benchmarks/ is on sys.path

    from training.data.dataset import TASKS
    from training.run import CONFIGS, build_network
    from training.train import make_step

    calibration_before = host_calibration_ms()
    rows = []
    for task, spec in TASKS.items():
        config = CONFIGS[task]
        keras.utils.set_random_seed(0)
        model = build_network(task)
        n_regions = model.output_shape[-1] - 1  # nested regions after background
        step = make_step(model, keras.optimizers.Adam(1e-3), config, n_regions)
        sides = {"whole input": spec.shape[0]}
        if config.train_crop:
            sides["training crop"] = config.train_crop
        rng = np.random.default_rng(0)
        batches = {}
        for label, side in sides.items():
            x = rng.normal(size=(config.batch_size, side, side, spec.channels))
            y = rng.random((config.batch_size, side, side, n_regions + 1))
            batches[label] = (tf.constant(x, tf.float32), tf.constant(y, tf.float32))
            for _ in range(2):  # compile and warm
                float(step(*batches[label]))
        times: dict[str, list[float]] = {label: [] for label in sides}
        for _ in range(args.steps):
            for label in sides:
                t0 = time.perf_counter()
                float(step(*batches[label]))
                times[label].append((time.perf_counter() - t0) * 1000.0)
        medians = {label: statistics.median(v) for label, v in times.items()}
        steps = config.epochs * config.steps_per_epoch
        used = "training crop" if config.train_crop else "whole input"
        row = {"model": task, "batch": config.batch_size, "xla": config.xla,
               "whole_input": spec.shape[0], "training_crop": config.train_crop,
               "step_ms": medians, "release_steps": steps,
               "release_step_minutes": medians[used] * steps / 60000.0}
        if config.train_crop:
            row["crop_over_whole"] = medians["training crop"] / medians["whole input"]
        rows.append(row)
        print(f"{task:16s} " + "  ".join(f"{k} {v:6.0f} ms" for k, v in medians.items())
              + (f"  ratio {row['crop_over_whole']:.2f}" if config.train_crop else "")
              + f"  -> {row['release_step_minutes']:.1f} min of steps in the release schedule")

    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
               "tensorflow": tf.__version__, "steps": args.steps,
               "host_calibration_ms": [calibration_before, host_calibration_ms()],
               "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "training_steps.json").write_text(json.dumps(results, indent=1))

    def _ratio(row: dict) -> str:
        return f"**{row['crop_over_whole']:.2f}**" if row["training_crop"] else ""

    def cell(row: dict, label: str) -> str:
        ms = row["step_ms"].get(label)
        return "" if ms is None else f"{ms:.0f}"

    table = "\n".join(
        f"| {r['model']} | {r['batch']} | {r['whole_input']} | {cell(r, 'whole input')} | "
        f"{r['training_crop'] or ''} | {cell(r, 'training crop')} | "
        f"{_ratio(r)} | "
        f"{r['release_steps']} | {r['release_step_minutes']:.1f} |" for r in rows)
    write_section(
        f"## Training steps ({results['date'][:10]})\n\n"
        f"`python benchmarks/training_steps.py --steps {args.steps}`: one step of the "
        "release's compiled training step (loss, Adam update) per network at its batch size, "
        "on the whole input and on the training crop, alternating, medians of "
        f"{args.steps} steps on {results['machine']}; host calibration "
        f"{calibration_before:.0f} / {results['host_calibration_ms'][1]:.0f} ms (before / "
        "after, `latency.py`'s loop). Data-independent: random inputs. Minutes of steps in "
        "the release schedule exclude augmentation, validation and export.\n\n"
        "| model | batch | whole input | ms/step | training crop | ms/step | crop / whole | "
        "release steps | minutes of steps |\n|---|---|---|---|---|---|---|---|---|\n" + table,
        "training-steps")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
