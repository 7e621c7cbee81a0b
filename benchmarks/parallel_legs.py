"""Training steps a second with one leg at a time or several side by side, in one run.

A release is about fifty legs, each an hour or so on this 2-core machine, so how the cores
are shared decides how many sittings it takes. One leg alone runs TensorFlow on both cores
(its default); two legs of different folds side by side run on one thread each. Each
arrangement runs the release's own training loop for ``--seconds`` (``training.train``'s
augmentation thread feeding the compiled step, the release's network, precision, batch
and crop, random arrays): its workers are separate processes that warm up, say so, and
start the timed loop together when all are ready. The arrangements alternate over
``--rounds`` so the host's drift hits all alike. Prints the steps a second of each (summed
over its legs) and the ratio to one leg alone, and writes
``benchmarks/results/parallel_legs.json`` and the section of ``BENCHMARKS.md``. Run it on
a machine that trains nothing else.

    python benchmarks/parallel_legs.py --task myocardium_unet --seconds 60 --rounds 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Legs at once -> TensorFlow threads per leg (intra-op and inter-op).
ARRANGEMENTS = {1: 2, 2: 1, 3: 1}


def worker(task: str, seconds: float) -> dict:
    """One leg's training loop, timed for ``seconds`` from the parent's go (a line on
    stdin), once it has said it is warm (a line on stdout)."""
    import functools

    import keras
    import numpy as np
    import tensorflow as tf

    from training.data.dataset import CLASSES, TASKS, Arrays
    from training.run import build_network, task_config
    from training.train import _augmented_batch, _prefetched, make_step, precision_policy

    config = task_config(task)
    spec = TASKS[task]
    rng = np.random.default_rng(0)
    n_regions = len(CLASSES[task]) - 1
    side = spec.shape[0]
    data = Arrays(x=rng.normal(size=(64, side, side, spec.channels)).astype(np.float32),
                  y=(rng.random((64, side, side, n_regions)) > 0.7).astype(np.float32),
                  series=np.arange(64), emphasis=np.zeros((64, side, side), np.float32))
    keras.utils.set_random_seed(0)
    with precision_policy(config.precision):
        model = build_network(task)
    step = make_step(model, keras.optimizers.Adam(1e-3), config, n_regions)
    batches = _prefetched(functools.partial(_augmented_batch, data, config, rng), 10**9)
    for _ in range(3):  # compile and warm
        x, y = next(batches)
        float(step(tf.constant(x), tf.constant(y)))
    print("ready", flush=True)
    sys.stdin.readline()
    steps, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        x, y = next(batches)
        float(step(tf.constant(x), tf.constant(y)))
        steps += 1
    return {"steps": steps, "seconds": time.perf_counter() - t0}


def arrangement(task: str, legs: int, seconds: float) -> dict:
    """``legs`` workers side by side; their steps a second, summed."""
    threads = str(ARRANGEMENTS[legs])
    env = os.environ | {"TF_NUM_INTRAOP_THREADS": threads, "TF_NUM_INTEROP_THREADS": threads,
                        "TF_CPP_MIN_LOG_LEVEL": "2"}
    procs = [subprocess.Popen([sys.executable, __file__, "--worker", "--task", task,
                               "--seconds", str(seconds)], cwd=ROOT, env=env, text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
             for _ in range(legs)]
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit(f"a worker failed before its timed loop ({legs} legs)")
    for p in procs:  # all start together
        p.stdin.write("go\n")
        p.stdin.flush()
    results = [json.loads(p.stdout.readline()) for p in procs]
    for p in procs:
        p.wait()
    return {"legs": legs, "threads_per_leg": int(threads),
            "steps_per_second": sum(r["steps"] / r["seconds"] for r in results),
            "per_leg": results}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="myocardium_unet")
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--legs", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(ROOT))
    if args.worker:
        print(json.dumps(worker(args.task, args.seconds)), flush=True)
        os._exit(0)  # TensorFlow's threads can hold the interpreter's exit

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency import host_calibration_ms, write_section
    from training_widths import cpu_flags

    calibration = [host_calibration_ms()]
    runs: dict[int, list[dict]] = {k: [] for k in args.legs}
    for _ in range(args.rounds):
        for legs in args.legs:
            run = arrangement(args.task, legs, args.seconds)
            runs[legs].append(run)
            print(f"{legs} leg(s) at once, {run['threads_per_leg']} thread(s) each: "
                  f"{run['steps_per_second']:.2f} steps/s", flush=True)
    calibration.append(host_calibration_ms())
    alone = statistics.median(r["steps_per_second"] for r in runs[min(args.legs)])
    rows = [{"legs": k, "threads_per_leg": ARRANGEMENTS[k],
             "steps_per_second": statistics.median(r["steps_per_second"] for r in v),
             "per_round": [r["steps_per_second"] for r in v]} for k, v in runs.items()]
    for row in rows:
        row["against_one_leg"] = row["steps_per_second"] / alone
    result = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "cpu": cpu_flags(), "task": args.task, "seconds": args.seconds,
              "rounds": args.rounds, "host_calibration_ms": calibration, "rows": rows}
    out = ROOT / "benchmarks" / "results" / "parallel_legs.json"
    out.write_text(json.dumps(result, indent=1) + "\n")
    table = "\n".join(f"| {r['legs']} | {r['threads_per_leg']} | {r['steps_per_second']:.2f} | "
                      f"**{r['against_one_leg']:.2f}x** |" for r in rows)
    write_section(
        f"## Legs side by side ({result['date'][:10]})\n\n"
        f"`python benchmarks/parallel_legs.py --task {args.task} --seconds {args.seconds:g} "
        f"--rounds {args.rounds}`: the release's training loop of the {args.task} (its "
        f"augmentation thread, compiled step, precision, batch and crop; random arrays), one "
        f"leg alone on TensorFlow's default threads or several legs side by side, each a "
        f"process on one thread, all timed over the same {args.seconds:g} s; arrangements "
        f"alternating, medians over {args.rounds} rounds, on {result['machine']}, "
        f"{result['cpu'].get('model', '')} (AMX: {'yes' if result['cpu']['amx_bf16'] else 'no'}); "
        f"host calibration "
        f"{calibration[0]:.0f} / {calibration[1]:.0f} ms.\n\n"
        "| legs at once | threads each | training steps a second, all legs | against one "
        "leg alone |\n|---|---|---|---|\n" + table, "parallel-legs")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
