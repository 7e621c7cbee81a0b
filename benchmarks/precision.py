"""Each released network in float32 and in int8 (onnxruntime QDQ), side by side in one run.

For every model in ``models/manifest.json``: its float32 file, and its int8
file where the release ships one. A network shipped without one (the ENets)
is quantised here on random inputs, for the speed only (such a copy's
accuracy means nothing), so that the choice of which networks ship in int8
rests on a measured figure. The same 12-slice batch at the model's input
size, runs alternating, with the service's session options. Prints the
figures and writes them to ``benchmarks/results/precision.json`` and
``BENCHMARKS.md``.

    python benchmarks/precision.py --runs 30
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()

    from latency import host_calibration_ms, model_batch, write_section  # on sys.path

    from service.pipeline.infer import OnnxModel
    from service.pipeline.registry import representative_int8_file
    from training.quantize import quantize_int8

    manifest = json.loads((args.models / "manifest.json").read_text())
    calibration = [host_calibration_ms()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in manifest["models"]:
            shape = entry["input"]["shape"][1:]
            batch = model_batch(entry, SLICES)
            fp32 = args.models / entry["file"]
            shipped = representative_int8_file(entry) is not None
            int8 = (args.models / representative_int8_file(entry) if shipped
                    else Path(tmp) / "int8.onnx")
            if not shipped:
                quantize_int8(fp32, int8, batch)
            sessions = {"fp32": OnnxModel(fp32), "int8": OnnxModel(int8)}
            for session in sessions.values():
                session(batch)
            diff = float(np.abs(sessions["fp32"](batch) - sessions["int8"](batch)).max())
            times: dict[str, list[float]] = {k: [] for k in sessions}
            for _ in range(args.runs):
                for name, session in sessions.items():
                    t0 = time.perf_counter()
                    session(batch)
                    times[name].append((time.perf_counter() - t0) * 1000.0)
            ms = {k: statistics.median(v) for k, v in times.items()}
            rows.append({"model": entry["name"], "input": "x".join(map(str, (SLICES, *shape))),
                         "fp32_ms": ms["fp32"], "int8_ms": ms["int8"],
                         "speedup": ms["fp32"] / ms["int8"], "int8_shipped": shipped,
                         "int8_default": bool(shipped and entry["int8"].get("default")),
                         "max_abs_probability_diff": diff})
            print(f"{entry['name']:16s} fp32 {ms['fp32']:6.1f} ms  int8 {ms['int8']:6.1f} ms  "
                  f"x{ms['fp32'] / ms['int8']:.2f}  shipped {shipped}  (max |dp| {diff:.3f})")
    calibration.append(host_calibration_ms())
    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
               "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
               "runs": args.runs, "models_version": manifest["version"],
               "host_calibration_ms": calibration, "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "precision.json").write_text(json.dumps(results, indent=1))
    shipped_text = {True: "yes", False: "no (quantised here, random calibration)"}
    table = "\n".join(
        f"| {r['model']} | {r['input']} | {r['fp32_ms']:.1f} | {r['int8_ms']:.1f} | "
        f"**{r['speedup']:.2f}x** | {shipped_text[r['int8_shipped']]} | "
        f"{'yes' if r['int8_default'] else 'no'} | {r['max_abs_probability_diff']:.3f} |"
        for r in rows)
    write_section(
        f"## float32 and int8 per model ({results['date'][:10]}, models "
        f"{manifest['version']})\n\n"
        f"`python benchmarks/precision.py --runs {args.runs}`: each network on the same "
        f"{SLICES}-slice batch in float32 and in static int8 (onnxruntime QDQ: weights int8 "
        "per channel, activations uint8, on the CPU's VNNI/AMX units), alternating, medians "
        f"of {args.runs} runs on {results['machine']}; host calibration "
        f"{calibration[0]:.0f} / {calibration[1]:.0f} ms (before / after). Accuracy of the "
        "shipped int8 files: models/EVALUATION.md, \"int8 against float32\".\n\n"
        "| model | input | fp32 ms | int8 ms | speed-up | int8 shipped | int8 default | "
        "max abs probability diff (random input) |\n|---|---|---|---|---|---|---|---|\n"
        + table, "precision")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
