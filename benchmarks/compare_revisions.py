"""POST-to-report latency and whole analyses a minute of two git revisions, side by side.

This host's speed drifts by tens of per cent, so a change's speed-up is measured by
running the old and the new code alternately (each in its own process, from its own
worktree, on the same phantom series and the models of the newer revision), not by
comparing figures taken hours apart. Latency: each POST alone, in-process. Throughput:
each revision's ``python -m service`` on loopback (both started once, loaded in turn),
1, 2 and 8 clients posting the series for ``--seconds`` each, an analysis counted once
its SR is there too (``service_load.py``'s clients); levels and revisions alternate
within each round. Prints the figures and writes ``benchmarks/results/compare_revisions.json``
and the section of ``BENCHMARKS.md`` (``--no-markdown``, ``--out``: a trial run that
leaves both alone). ``--own-models``: each revision serves its own ``models/`` at the
service's default precision (``auto``: int8 where its release found it holds), which is
what a user of each release waits: two releases side by side, not two codes on one set of
networks (issue 54: the new release's default pipeline at most 1.5x the old one's).

    python benchmarks/compare_revisions.py OLD NEW --rounds 3 --runs 15 --seconds 60
    python benchmarks/compare_revisions.py 0.3.2-REV HEAD --own-models --out FILE
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


def _run(tree: Path, models: Path, pipeline: str, runs: int, series: Path, data: Path,
         precision: str = "fp32") -> dict:
    env = os.environ | {"PYTHONPATH": str(tree), "MODELS_DIR": str(models),
                        "DATA_DIR": str(data), "MODEL_PRECISION": precision}
    out = subprocess.run([sys.executable, "-c", MEASURE, pipeline, str(runs), str(series)],
                         env=env, cwd=tree, capture_output=True, text=True, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    if not result["service"].startswith(str(tree)):
        raise RuntimeError(f"{tree} ran {result['service']}")
    return result


def _serve(tree: Path, models: Path, data: Path, precision: str = "fp32"):
    """``python -m service`` of the worktree (its code: the worktree is the working
    directory and the path), on ``models``, up to 8 analyses at once."""
    from service_load import start  # benchmarks/ is on sys.path

    return start(data, PYTHONPATH=str(tree), MODELS_DIR=str(models), MODEL_PRECISION=precision,
                 MAX_CONCURRENT_ANALYSES="8", cwd=str(tree))


def _throughput(trees: dict[str, Path], models: dict[str, Path], files: list,
                clients: list[int], seconds: float, rounds: int, tmp: Path,
                revisions: dict[str, str], precision: str = "fp32") -> dict:
    """Whole analyses a minute per revision and client count, one figure per round."""
    from service_load import stop, throughput

    per_round = {name: {str(c): [] for c in clients} for name in trees}
    servers = {name: _serve(tree, models[name], tmp / f"serve-{name}", precision)
               for name, tree in trees.items()}
    try:
        for round_ in range(rounds):
            for level, count in enumerate(clients):
                order = ("old", "new") if (round_ + level) % 2 == 0 else ("new", "old")
                for name in order:
                    r = throughput(servers[name][1], files, count, seconds)
                    if r["failed"]:
                        raise RuntimeError(f"{revisions[name]}: {r['failed']} analyses failed "
                                           f"with {count} clients")
                    per_round[name][str(count)].append(r["series_per_min"])
                    print(f"round {round_} {count} client(s) {name} {revisions[name]}: "
                          f"{r['series_per_min']:.1f} analyses/min")
    finally:
        for process, _, _ in servers.values():
            stop(process)
    return per_round


def write_markdown(record: dict, old: str, new: str) -> None:
    """The section of BENCHMARKS.md from a results file (``--markdown-from``: a run made
    with ``--no-markdown``, or ``--out``, published later)."""
    from latency import write_section  # on sys.path

    own_models = record["models"].startswith("each revision's own")
    summary, per_minute, revisions = (record["summary"], record["analyses_per_min"],
                                      record["revisions"])
    calibration = record["host_calibration_ms"]
    rows = "\n".join(f"| {p} | {s['old_p50_ms']:.0f} | {s['new_p50_ms']:.0f} | "
                     f"**{s['speedup']:.2f}x** |" for p, s in summary.items())
    throughput_table = "" if not per_minute else (
        f"\n\nWhole analyses a minute (cascade-unet; each revision's `python -m service` on "
        f"loopback, `MAX_CONCURRENT_ANALYSES=8`, {record['throughput_seconds']:.0f} s per "
        "client count and round, an analysis counted once its SR is there; medians over "
        "rounds, the ratio the median over rounds of new / old):\n\n"
        "| clients | old analyses/min | new analyses/min | new / old |\n|---|---|---|---|\n"
        + "\n".join(f"| {c} | {s['old']:.1f} | {s['new']:.1f} | **{s['ratio']:.2f}x** |"
                    for c, s in per_minute.items()))
    what = ("each revision's own models at the default precision (`MODEL_PRECISION=auto`)"
            if own_models else "the newer revision's models in float32")
    rounds, runs = record["rounds"], record["runs"]
    write_section(
        f"## Two {'releases' if own_models else 'revisions'} side by side "
        f"({record['date'][:10]})\n\n"
        f"`python benchmarks/compare_revisions.py {old} {new} --rounds "
        f"{rounds} --runs {runs}{' --own-models' if own_models else ''}`: "
        f"POST-to-report p50 of revision "
        f"`{revisions['old']}` against `{revisions['new']}`, each in its own process from "
        f"its own worktree, alternating, {rounds} rounds of {runs} runs (after 3 "
        f"warm-up runs), the same 12 x 256x256 series and {what}, "
        f"on {record['machine']}; host calibration {calibration[0]:.0f} / "
        f"{calibration[1]:.0f} ms. Each POST is timed to its 201, its SR fetched untimed "
        "before the next (a revision that encodes after the answer is not charged for it, "
        "nor its next request slowed by it). The speed-up is the median over rounds of old "
        "/ new.\n\n"
        "| pipeline | old p50 ms | new p50 ms | speed-up |\n|---|---|---|---|\n" + rows
        + throughput_table,
        "compare-releases" if own_models else "compare-revisions")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("old")
    parser.add_argument("new")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--runs", type=int, default=15)
    parser.add_argument("--pipelines", nargs="+", default=["cascade-unet", "enet"])
    parser.add_argument("--seconds", type=float, default=60.0,
                        help="seconds of load per client count and round (0: no throughput)")
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 2, 8])
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "compare_revisions.json")
    parser.add_argument("--no-markdown", action="store_true",
                        help="leave BENCHMARKS.md alone (a trial run)")
    parser.add_argument("--own-models", action="store_true",
                        help="each revision on its own models/ at the default precision "
                        "(two releases side by side); default: both on the newer revision's "
                        "models in float32 (two codes)")
    parser.add_argument("--markdown-from", type=Path, default=None,
                        help="only write the BENCHMARKS.md section from this results file")
    args = parser.parse_args()
    if args.markdown_from is not None:
        write_markdown(json.loads(args.markdown_from.read_text()), args.old, args.new)
        return 0
    from latency import host_calibration_ms, upload_files  # on sys.path

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
            models = {name: trees[name if args.own_models else "new"] / "models"
                      for name in trees}
            precision = "auto" if args.own_models else "fp32"
            for round_ in range(args.rounds):
                for pipeline in args.pipelines:
                    for name in ("old", "new") if round_ % 2 == 0 else ("new", "old"):
                        data = Path(tmp) / f"data-{name}-{round_}-{pipeline}"
                        r = _run(trees[name], models[name], pipeline, args.runs, series, data,
                                 precision)
                        results[pipeline][name].append(r["p50_ms"])
                        shutil.rmtree(data, ignore_errors=True)
                        print(f"round {round_} {pipeline} {name} {revisions[name]}: p50 "
                              f"{r['p50_ms']:.0f} ms")
            throughput = (_throughput(trees, models, upload_files(series), args.clients,
                                      args.seconds, args.rounds, Path(tmp), revisions,
                                      precision)
                          if args.seconds > 0 else {})
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
    # Analyses a minute (cascade-unet, the default pipeline): medians over rounds, and the
    # median over rounds of new / old.
    per_minute = {c: {"old": statistics.median(throughput["old"][c]),
                      "new": statistics.median(throughput["new"][c]),
                      "ratio": statistics.median(n / o for o, n in zip(
                          throughput["old"][c], throughput["new"][c], strict=True))}
                  for c in map(str, args.clients)} if throughput else {}
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "revisions": revisions, "rounds": args.rounds, "runs": args.runs,
              "models": "each revision's own, default precision" if args.own_models
              else "the newer revision's, float32",
              "host_calibration_ms": calibration, "per_round_p50_ms": results,
              "summary": summary, "throughput_seconds": args.seconds,
              "per_round_analyses_per_min": throughput, "analyses_per_min": per_minute}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    for c, s in per_minute.items():
        print(f"{c} client(s): {s['old']:.1f} -> {s['new']:.1f} analyses/min, "
              f"x{s['ratio']:.2f}")
    for p, s in summary.items():
        print(f"{p}: {s['old_p50_ms']:.0f} -> {s['new_p50_ms']:.0f} ms, x{s['speedup']:.2f}")
    if not args.no_markdown:
        write_markdown(record, args.old, args.new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
