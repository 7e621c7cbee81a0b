"""POST-to-report latency of two git revisions of the service, side by side in one run.

This host's speed drifts by tens of per cent, so a change's speed-up is measured by
running the old and the new code alternately (each in its own process, from its own
worktree, on the same phantom series and the models of the newer revision), not by
comparing figures taken hours apart. Prints the figures and writes
``benchmarks/results/compare_revisions.json`` and the section of ``BENCHMARKS.md``.

    python benchmarks/compare_revisions.py OLD NEW --rounds 3 --runs 15
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Runs inside a worktree's process: only the API both revisions share (the app, the
# phantom renderer), so any two revisions of this project can be compared.
MEASURE = r"""
import json, statistics, sys, time
from pathlib import Path
from fastapi.testclient import TestClient
import service
from service.api.app import create_app
pipeline, runs, series = sys.argv[1], int(sys.argv[2]), Path(sys.argv[3])
files = [("files", (p.name, p.read_bytes(), "application/dicom"))
         for p in sorted((series / "dicom").glob("*.dcm"))]
walls = []
with TestClient(create_app()) as client:
    for k in range(3 + runs):
        t0 = time.perf_counter()
        r = client.post(f"/v1/analyses?pipeline={pipeline}", files=files)
        wall = (time.perf_counter() - t0) * 1000.0
        assert r.status_code == 201, r.text
        # Untimed: the SR (encoded after the 201 in newer revisions), so that the next
        # request starts on a quiet process, as a lone request does.
        client.get(f"/v1/analyses/{r.json()['id']}/sr")
        if k >= 3:
            walls.append(wall)
print(json.dumps({"p50_ms": statistics.median(walls), "service": service.__file__}))
"""


def _series(out: Path) -> Path:
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency import benchmark_series

    return benchmark_series(out)


def _run(tree: Path, models: Path, pipeline: str, runs: int, series: Path, data: Path) -> dict:
    env = os.environ | {"PYTHONPATH": str(tree), "MODELS_DIR": str(models),
                        "DATA_DIR": str(data), "MODEL_PRECISION": "fp32"}
    out = subprocess.run([sys.executable, "-c", MEASURE, pipeline, str(runs), str(series)],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["service"].startswith(str(tree)):
        raise RuntimeError(f"{tree} ran {result['service']}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pipelines", nargs="+", default=["cascade-unet", "enet"])
    args = parser.parse_args()
    from latency import host_calibration_ms, write_section  # benchmarks/ is on sys.path

    revisions = {name: subprocess.run(["git", "rev-parse", "--short", rev], cwd=ROOT,
                                      capture_output=True, text=True, check=True).stdout.strip()
                 for name, rev in (("old", args.old), ("new", args.new))}
    calibration = [host_calibration_ms()]
    results: dict[str, dict[str, list[float]]] = {p: {"old": [], "new": []}
                                                   for p in args.pipelines}
    with tempfile.TemporaryDirectory() as tmp:
        trees = {}
        for name, rev in revisions.items():
            trees[name] = Path(tmp) / name
            subprocess.run(["git", "worktree", "add", "--detach", str(trees[name]), rev],
                           cwd=ROOT, capture_output=True, check=True)
        try:
            series = _series(Path(tmp) / "series")
            models = trees["new"] / "models"
            for round_ in range(args.rounds):
                for pipeline in args.pipelines:
                    for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                        data = Path(tmp) / f"data-{name}-{round_}-{pipeline}"
                        r = _run(trees[name], models, pipeline, args.runs, series, data)
                        results[pipeline][name].append(r["p50_ms"])
                        shutil.rmtree(data, ignore_errors=True)
                        print(f"round {round_} {pipeline} {name} {revisions[name]}: p50 "
                              f"{r['p50_ms']:.0f} ms")
        finally:
            for tree in trees.values():
                subprocess.run(["git", "worktree", "remove", "--force", str(tree)], cwd=ROOT,
                               capture_output=True, check=False)
    calibration.append(host_calibration_ms())
    summary = {p: {"old_p50_ms": statistics.median(v["old"]),
                   "new_p50_ms": statistics.median(v["new"]),
                   "speedup": statistics.median(o / n for o, n in zip(v["old"], v["new"],
                                                                      strict=True))}
               for p, v in results.items()}
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "revisions": revisions, "rounds": args.rounds, "runs": args.runs,
              "host_calibration_ms": calibration, "per_round_p50_ms": results,
              "summary": summary}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "compare_revisions.json").write_text(json.dumps(record, indent=1))
    rows = "\n".join(f"| {p} | {s['old_p50_ms']:.0f} | {s['new_p50_ms']:.0f} | "
                     f"**{s['speedup']:.2f}x** |" for p, s in summary.items())
    write_section(
        f"## Two revisions side by side ({record['date'][:10]})\n\n"
        f"`python benchmarks/compare_revisions.py {args.old} {args.new} --rounds "
        f"{args.rounds} --runs {args.runs}`: POST-to-report p50 of revision "
        f"`{revisions['old']}` against `{revisions['new']}`, each in its own process from "
        f"its own worktree, alternating, {args.rounds} rounds of {args.runs} runs (after 3 "
        f"warm-up runs), the same 12 x 256x256 series and the newer revision's models in "
        f"float32, on {record['machine']}; host calibration {calibration[0]:.0f} / "
        f"{calibration[1]:.0f} ms. Each POST is timed to its 201, its SR fetched untimed "
        "before the next (a revision that encodes after the answer is not charged for it, "
        "nor its next request slowed by it). The speed-up is the median over rounds of old "
        "/ new.\n\n"
        "| pipeline | old p50 ms | new p50 ms | speed-up |\n|---|---|---|---|\n" + rows,
        "compare-revisions")
    for p, s in summary.items():
        print(f"{p}: {s['old_p50_ms']:.0f} -> {s['new_p50_ms']:.0f} ms, x{s['speedup']:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
