"""What an ENet's onnxruntime session costs to make, as exported and with its PReLUs fused.

Release 0.4.0 ships ten ENet fold members and the service loads every model before it says
ready (CONTRACT.md), so their sessions are most of its start-up (BENCHMARKS.md, "Service
process"). tf2onnx writes each Keras PReLU as ``relu(x) + (-a) * relu(-x)``: five nodes
where ONNX has one, ``PRelu(x, a)``. This script fuses fold 0's ENets as exported (the kept
legs' files) in a copy (:mod:`training.onnx_graph`, as a release ships them), checks the
copy answers the same on random inputs, and times making a session of each, alternating, on
the CPU with the service's default options. Prints the figures and
writes ``benchmarks/results/enet_sessions.json``.

    python benchmarks/enet_sessions.py --repeats 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import onnx
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
LEGS = ROOT / "releases" / "round4" / "legs"
sys.path.insert(0, str(ROOT))

from training.onnx_graph import fuse_prelus, largest_difference  # noqa: E402


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
    rows = {}
    with tempfile.TemporaryDirectory() as tmp:
        # As tf2onnx exported them: the kept legs' files (a release ships them fused).
        for source in sorted(LEGS.glob("fold0-enet_p*-s3/model.onnx")):
            model = onnx.load(source)
            before = len(model.graph.node)
            fused_count = fuse_prelus(model)
            fused = Path(tmp) / f"{source.parent.name}.onnx"
            onnx.save(model, fused)
            difference = largest_difference(source, fused)
            times = {"as_exported": [], "prelu_fused": []}
            for _ in range(args.repeats):
                times["as_exported"].append(_made_ms(source))
                times["prelu_fused"].append(_made_ms(fused))
            rows[source.parent.name] = {
                "nodes": {"as_exported": before, "prelu_fused": len(model.graph.node)},
                "prelus_fused": fused_count, "max_abs_difference": difference,
                "session_ms_median": {k: statistics.median(v) for k, v in times.items()}}
            r = rows[source.parent.name]
            print(f"{source.parent.name}: {before} -> {len(model.graph.node)} nodes, session "
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
