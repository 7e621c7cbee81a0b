"""What an ENet's onnxruntime session costs to make, as exported and with its PReLUs fused.

Release 0.4.0 ships ten ENet fold members and the service loads every model before it says
ready (CONTRACT.md), so their sessions are most of its start-up (BENCHMARKS.md, "Service
process"). tf2onnx writes each Keras PReLU as ``relu(x) + (-a) * relu(-x)``: five nodes
where ONNX has one, ``PRelu(x, a)``. This script fuses them in a copy (nothing shipped is
changed), checks the copy answers the same on random inputs, and times making a session of
each, alternating, on the CPU with the service's default options. Prints the figures and
writes ``benchmarks/results/enet_sessions.json``.

    python benchmarks/enet_sessions.py --repeats 6
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
import onnx
import onnxruntime as ort
from onnx import helper, numpy_helper

ROOT = Path(__file__).resolve().parent.parent


def fuse_prelus(model: onnx.ModelProto) -> int:
    """Rewrites, in place, every ``relu(x) + (-a) * relu(-x)`` as ``PRelu(x, a)``; returns
    how many. Exact: both compute x or a * x with one rounding."""
    graph = model.graph
    constants = {i.name: i for i in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)
    replaced, dropped = {}, set()
    for neg in [n for n in graph.node if n.op_type == "Neg"]:
        x = neg.input[0]
        (relu_of_neg,) = consumers[neg.output[0]]
        (times_slope,) = consumers[relu_of_neg.output[0]]
        (plus,) = consumers[times_slope.output[0]]
        relu_of_x = next(c for c in consumers[x] if c.op_type == "Relu")
        negated = next(i for i in times_slope.input if i in constants)
        if (relu_of_neg.op_type, times_slope.op_type, plus.op_type) != ("Relu", "Mul", "Add") \
                or set(plus.input) != {relu_of_x.output[0], times_slope.output[0]}:
            continue
        slope = f"{negated}_prelu_slope"
        graph.initializer.append(numpy_helper.from_array(
            -numpy_helper.to_array(constants[negated]), slope))
        replaced[id(plus)] = helper.make_node("PRelu", [x, slope], [plus.output[0]])
        dropped.update(id(n) for n in (neg, relu_of_neg, times_slope, relu_of_x))
    kept = [replaced.get(id(n), n) for n in graph.node if id(n) not in dropped]
    del graph.node[:]
    graph.node.extend(kept)
    onnx.checker.check_model(model)
    return len(replaced)


def _made_ms(path: Path) -> float:
    started = time.perf_counter()
    ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return (time.perf_counter() - started) * 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "enet_sessions.json")
    args = parser.parse_args()
    manifest = json.loads((ROOT / "models" / "manifest.json").read_text())
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        for entry in manifest["models"]:
            if not entry["name"].startswith("enet"):
                continue
            source = ROOT / "models" / (entry["members"][0]["file"] if entry.get("members")
                                        else entry["file"])
            model = onnx.load(source)
            before = len(model.graph.node)
            fused_count = fuse_prelus(model)
            fused = Path(tmp) / source.name
            onnx.save(model, fused)
            a = ort.InferenceSession(str(source), providers=["CPUExecutionProvider"])
            b = ort.InferenceSession(str(fused), providers=["CPUExecutionProvider"])
            shape = [d if isinstance(d, int) and d > 0 else 2 for d in a.get_inputs()[0].shape]
            x = np.random.default_rng(0).normal(size=shape).astype(np.float32)
            difference = float(np.abs(a.run(None, {a.get_inputs()[0].name: x})[0]
                                      - b.run(None, {b.get_inputs()[0].name: x})[0]).max())
            times = {"as_exported": [], "prelu_fused": []}
            for _ in range(args.repeats):
                times["as_exported"].append(_made_ms(source))
                times["prelu_fused"].append(_made_ms(fused))
            rows[source.name] = {
                "nodes": {"as_exported": before, "prelu_fused": len(model.graph.node)},
                "prelus_fused": fused_count, "max_abs_difference": difference,
                "session_ms_median": {k: statistics.median(v) for k, v in times.items()}}
            r = rows[source.name]
            print(f"{source.name}: {before} -> {len(model.graph.node)} nodes, session "
                  f"{r['session_ms_median']['as_exported']:.0f} -> "
                  f"{r['session_ms_median']['prelu_fused']:.0f} ms, outputs differ by at most "
                  f"{difference:g}")
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "onnxruntime": ort.__version__, "repeats": args.repeats, "models": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
