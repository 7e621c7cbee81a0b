"""onnxruntime session options, measured on the released U-Nets (the cascade's two networks).

Each variant changes one thing from the service's options (graph optimisation
ENABLE_ALL, intra-op threads = every core, CPU arena on, spinning on):

* the graph optimisation level (basic, extended, all), and loading a model
  optimised once and saved (``optimized_model_filepath``) with optimisation off,
  for the session-creation time that start-up pays;
* intra-op threads 1 and 2, alone and with two analyses at once (two threads
  each running the model: ``MAX_CONCURRENT_ANALYSES`` against threads per session);
* the CPU memory arena off; thread spinning off;

in float32 and int8. The 12-slice batch at each model's input size, bursts of runs
of all variants alternating (this host's speed drifts), medians. Prints the figures and
writes ``benchmarks/results/ort_options.json`` and the section of ``BENCHMARKS.md``.

    python benchmarks/ort_options.py --runs 20
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import onnxruntime as ort

ROOT = Path(__file__).resolve().parent.parent
SLICES = 12
BURST = 4
LEVELS = {"basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
          "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
          "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
          "off": ort.GraphOptimizationLevel.ORT_DISABLE_ALL}


def options(level: str = "all", threads: int = 0, arena: bool = True, spinning: bool = True,
            save_to: Path | None = None) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.graph_optimization_level = LEVELS[level]
    opts.intra_op_num_threads = threads
    opts.enable_cpu_mem_arena = arena
    if not spinning:
        opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if save_to is not None:
        opts.optimized_model_filepath = str(save_to)
    return opts


def variants(model: Path, optimised: Path) -> dict[str, tuple[Path, ort.SessionOptions]]:
    return {
        "service (all, 2 threads, arena, spinning)": (model, options()),
        "level basic": (model, options("basic")),
        "level extended": (model, options("extended")),
        "optimised file, optimisation off": (optimised, options("off")),
        "1 thread": (model, options(threads=1)),
        "arena off": (model, options(arena=False)),
        "spinning off": (model, options(spinning=False)),
    }


def _create(path: Path, opts: ort.SessionOptions) -> tuple[ort.InferenceSession, float]:
    t0 = time.perf_counter()
    session = ort.InferenceSession(str(path), sess_options=opts,
                                   providers=["CPUExecutionProvider"])
    return session, (time.perf_counter() - t0) * 1000.0


def _run(session: ort.InferenceSession, batch: np.ndarray) -> float:
    name = session.get_inputs()[0].name
    t0 = time.perf_counter()
    session.run(None, {name: batch})
    return (time.perf_counter() - t0) * 1000.0


def _two_at_once(sessions: list[ort.InferenceSession], batch: np.ndarray) -> float:
    """Wall ms for two runs started together (two analyses sharing the cores)."""
    barrier = threading.Barrier(len(sessions) + 1)

    def work(session):
        barrier.wait()
        _run(session, batch)

    threads = [threading.Thread(target=work, args=(s,)) for s in sessions]
    for t in threads:
        t.start()
    t0 = time.perf_counter()
    barrier.wait()
    for t in threads:
        t.join()
    return (time.perf_counter() - t0) * 1000.0


def measure(path: Path, batch: np.ndarray, runs: int, tmp: Path) -> dict:
    optimised = tmp / f"{path.stem}.optimised.onnx"
    _create(path, options(save_to=optimised))
    chosen = variants(path, optimised)
    created = {k: _create(p, o) for k, (p, o) in chosen.items()}
    sessions = {k: s for k, (s, _) in created.items()}
    # Two analyses at once: one session per analysis (as the service shares one session
    # between them, the same session twice), at 2 threads each against 1 thread each.
    pairs = {"2 at once, 2 threads each": [sessions["service (all, 2 threads, arena, "
                                                    "spinning)"]] * 2,
             "2 at once, 1 thread each": [sessions["1 thread"]] * 2}
    for session in sessions.values():
        _run(session, batch)
    times: dict[str, list[float]] = {k: [] for k in [*sessions, *pairs]}
    # Bursts, the first run of each dropped: a session's threads spin for a while after
    # its run, and would slow whichever variant ran next.
    for _ in range(max(1, runs // BURST)):
        for name, session in sessions.items():
            times[name].extend([_run(session, batch) for _ in range(BURST + 1)][1:])
        for name, pair in pairs.items():
            times[name].extend([_two_at_once(pair, batch) for _ in range(BURST + 1)][1:])
    return {"run_ms": {k: statistics.median(v) for k, v in times.items()},
            "create_ms": {k: ms for k, (_, ms) in created.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    args = parser.parse_args()
    from latency import host_calibration_ms, model_batch, write_section  # on sys.path

    from service.pipeline.registry import representative_int8_file

    manifest = json.loads((args.models / "manifest.json").read_text())
    calibration = [host_calibration_ms()]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for entry in manifest["models"]:
            int8 = representative_int8_file(entry)
            if int8 is None:
                continue  # the ENets: 16 ms networks, measured in precision.py
            shape = entry["input"]["shape"][1:]
            batch = model_batch(entry, SLICES)
            for precision, file in (("fp32", entry["file"]), ("int8", int8)):
                figures = measure(args.models / file, batch, args.runs, Path(tmp))
                rows.append({"model": entry["name"], "precision": precision,
                             "input": "x".join(map(str, (SLICES, *shape)))} | figures)
                print(entry["name"], precision, json.dumps(figures, indent=None))
    calibration.append(host_calibration_ms())
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "onnxruntime": ort.__version__, "runs": args.runs,
              "models_version": manifest["version"], "host_calibration_ms": calibration,
              "rows": rows}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ort_options.json").write_text(json.dumps(record, indent=1))
    names = list(rows[0]["run_ms"])
    reference = names[0]
    header = "| variant | " + " | ".join(f"{r['model']} {r['precision']}" for r in rows) + " |"
    lines = [header, "|---" * (len(rows) + 1) + "|"]
    for name in names:
        cells = []
        for r in rows:
            ms = r["run_ms"][name]
            ratio = ms / r["run_ms"][reference]
            created = r["create_ms"].get(name)
            cells.append(f"{ms:.1f} ({ratio:.2f}x)"
                         + (f", created in {created:.0f} ms" if created is not None else ""))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    write_section(
        f"## onnxruntime session options ({record['date'][:10]}, models "
        f"{manifest['version']}, onnxruntime {ort.__version__})\n\n"
        f"`python benchmarks/ort_options.py --runs {args.runs}`: each U-Net on a {SLICES}-slice "
        "batch at its input size, one option changed at a time from the service's, variants "
        f"alternating in bursts of {BURST} runs (after one unmeasured run each), medians of "
        f"{args.runs} runs on {record['machine']}, in ms per run, with "
        "the ratio to the service's options in the same run and the session's creation time "
        "(what start-up pays). \"2 at once\" is the wall time of two runs started together "
        "on one session (two analyses at once, `MAX_CONCURRENT_ANALYSES=2`). Host "
        f"calibration {calibration[0]:.0f} / {calibration[1]:.0f} ms (before / after).\n\n"
        + "\n".join(lines), "ort-options")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
