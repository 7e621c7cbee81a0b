"""Each model's inference in onnxruntime and in TensorFlow, side by side in one run.

For every network of the release, the same architecture is built in Keras
(with the trained weights when ``runs/train*/runs/<task>/best.weights.h5``
exists, else freshly initialised: speed does not depend on the values),
exported with the release's own exporter, and both are timed on the same
12-slice batch at the model's input size: TensorFlow as a compiled
``tf.function`` (graph mode, no XLA, as a TF serving stack would run it) and
onnxruntime with the service's session options. Runs alternate between the
two, so machine noise hits both alike. Prints the figures and writes them
to ``benchmarks/results/runtimes.json`` and ``BENCHMARKS.md``.

    python benchmarks/runtimes.py --runs 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SLICES = 12


def _weights(task: str) -> Path | None:
    found = sorted(ROOT.glob(f"runs/train*/runs/{task}/best.weights.h5"),
                   key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    args = parser.parse_args()

    import tensorflow as tf
    from latency import write_section  # benchmarks/ is on sys.path when run as a script

    from service.pipeline.infer import OnnxModel
    from training.data.dataset import TASKS
    from training.export import export_onnx
    from training.run import build_network

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for task, spec in TASKS.items():
            model = build_network(task)
            weights = _weights(task)
            if weights is not None:
                model.load_weights(weights)
            onnx_path = Path(tmp) / f"{task}.onnx"
            export_onnx(model, onnx_path, input_hw=spec.shape)
            channels = model.inputs[0].shape[-1]
            batch = np.random.default_rng(0).normal(
                size=(SLICES, *spec.shape, channels)).astype(np.float32)
            tf_fn = tf.function(lambda x, m=model: m(x, training=False))
            ort = OnnxModel(onnx_path)
            tf_fn(tf.constant(batch))  # trace and warm
            ort(batch)
            diff = float(np.abs(tf_fn(tf.constant(batch)).numpy() - ort(batch)).max())
            times = {"tensorflow": [], "onnxruntime": []}
            for _ in range(args.runs):
                t0 = time.perf_counter()
                tf_fn(tf.constant(batch)).numpy()
                times["tensorflow"].append((time.perf_counter() - t0) * 1000)
                t0 = time.perf_counter()
                ort(batch)
                times["onnxruntime"].append((time.perf_counter() - t0) * 1000)
            tf_ms = statistics.median(times["tensorflow"])
            ort_ms = statistics.median(times["onnxruntime"])
            rows.append({"model": task, "input": f"{SLICES}x{spec.shape[0]}x{spec.shape[1]}"
                         f"x{channels}", "parameters": int(model.count_params()),
                         "trained_weights": weights is not None,
                         "tensorflow_ms": tf_ms, "onnxruntime_ms": ort_ms,
                         "speedup": tf_ms / ort_ms, "max_abs_diff": diff})
            print(f"{task:16s} TF {tf_ms:7.1f} ms  ORT {ort_ms:7.1f} ms  "
                  f"x{tf_ms / ort_ms:.2f}  (max |diff| {diff:.1e})")

    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
               "tensorflow": tf.__version__, "runs": args.runs, "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "runtimes.json").write_text(json.dumps(results, indent=1))
    table = "\n".join(
        f"| {r['model']} | {r['input']} | {r['parameters']:,} | {r['tensorflow_ms']:.1f} | "
        f"{r['onnxruntime_ms']:.1f} | **{r['speedup']:.2f}x** | {r['max_abs_diff']:.1e} |"
        for r in rows)
    write_section(
        f"## onnxruntime vs TensorFlow, per model ({results['date'][:10]})\n\n"
        f"`python benchmarks/runtimes.py --runs {args.runs}`: the same network and batch "
        f"({SLICES} slices at the model's input size) in TensorFlow {tf.__version__} "
        "(compiled `tf.function`, graph mode) and in onnxruntime with the service's session "
        f"options, alternating, medians of {args.runs} runs on {results['machine']}.\n\n"
        "| model | input | parameters | TensorFlow ms | onnxruntime ms | speed-up | "
        "max abs diff |\n|---|---|---|---|---|---|---|\n" + table, "runtimes")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
