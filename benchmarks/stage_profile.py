"""Where one analysis spends its time: cProfile of the cascade on the latency series.

The analysis is the service's own (``service.analysis.analyse`` on the volume the
upload path builds), after the service's warm-up, repeated ``--runs`` times under
cProfile. Prints the functions with the largest own time (and their cumulative
time) as shares of the whole, and writes them under ``--label`` (e.g. ``before``
and ``after`` a change) to ``benchmarks/results/profile.json`` and the profile
section of ``BENCHMARKS.md``, every label kept side by side.

    python benchmarks/stage_profile.py --label after --runs 10
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TOP = 15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--label", required=True)
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--pipeline", default="cascade-unet")
    parser.add_argument("--note", default="", help="what the label stands for")
    args = parser.parse_args()

    import pydicom
    from latency import benchmark_series, host_calibration_ms, write_section

    from service.analysis import analyse, warm_up
    from service.config import get_settings
    from service.pipeline.registry import load_registry
    from service.pipeline.volume import build_volume

    settings = get_settings()
    registry = load_registry(ROOT / "models", "cpu", settings.onnx_memory_arena,
                             settings.model_precision)
    pipeline = registry.pipelines[args.pipeline]
    warm_up(list(registry.pipelines.values()))
    with tempfile.TemporaryDirectory() as tmp:
        folder = benchmark_series(Path(tmp))
        volume = build_volume([pydicom.dcmread(p) for p in (folder / "dicom").glob("*.dcm")])
    analyse(volume, pipeline, 0.0)
    calibration = host_calibration_ms()
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(args.runs):
        analyse(volume, pipeline, 0.0)
    profiler.disable()
    stats = pstats.Stats(profiler)
    total = stats.total_tt
    rows = []
    for (file, line, function), (_, calls, own, cumulative, _) in stats.stats.items():
        rows.append({"function": f"{Path(file).name}:{line}({function})",
                     "calls_per_analysis": calls / args.runs,
                     "own_ms": 1000.0 * own / args.runs, "own_share": own / total,
                     "cumulative_ms": 1000.0 * cumulative / args.runs,
                     "cumulative_share": cumulative / total})
    rows.sort(key=lambda r: -r["own_ms"])
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "runs": args.runs,
              "pipeline": args.pipeline, "note": args.note,
              "models_version": registry.manifest["version"],
              "precision": {m.name: m.precision for m in registry.models.values()},
              "host_calibration_ms": calibration,
              "analysis_ms": 1000.0 * total / args.runs, "top": rows[:TOP]}
    for r in rows[:TOP]:
        print(f"{r['own_share']:6.1%} own {r['own_ms']:7.1f} ms  cum {r['cumulative_ms']:7.1f} ms"
              f"  {r['function']}")
    print(f"one analysis under the profiler: {record['analysis_ms']:.0f} ms")
    out = ROOT / "benchmarks" / "results" / "profile.json"
    profiles = json.loads(out.read_text()) if out.exists() else {}
    profiles[args.label] = record
    out.write_text(json.dumps(profiles, indent=1))
    sections = []
    for label, p in profiles.items():
        table = "\n".join(f"| {r['function']} | {r['calls_per_analysis']:.0f} | "
                          f"{r['own_ms']:.1f} | {r['own_share']:.1%} | {r['cumulative_ms']:.1f} |"
                          for r in p["top"])
        sections.append(
            f"### {label} ({p['date'][:10]}, models {p['models_version']})\n\n"
            f"{p['note'] + ' ' if p['note'] else ''}{p['pipeline']}, one analysis "
            f"{p['analysis_ms']:.0f} ms under the profiler (host calibration "
            f"{p['host_calibration_ms']:.0f} ms); the {TOP} functions with the most own "
            "time:\n\n| function | calls | own ms | own share | cumulative ms |\n"
            "|---|---|---|---|---|\n" + table)
    write_section("## Profile of one analysis\n\n`python benchmarks/stage_profile.py --label L`: "
                  "cProfile of `service.analysis.analyse` on the 12 x 256x256 latency series "
                  "after the warm-up, per analysis (profiling slows Python code more than "
                  "native code: read the shares, not the times).\n\n"
                  + "\n\n".join(sections), "profile")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
