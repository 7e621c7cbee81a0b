"""Series per minute: the batch command on Ray against the HTTP service with 2 clients.

``python benchmarks/batch.py [--series 100]`` writes phantom series (seed 4242, their
natural sizes: 6-14 slices of 192-256 pixels), then, one after the other on this
machine, runs ``python -m service.batch`` over them (Ray started in-process, its
start-up included) and posts each of them once to a fresh ``python -m service`` from 2
clients at once. Writes ``benchmarks/results/batch.json`` and the "batch" section of
BENCHMARKS.md. Run it with nothing else running.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from latency import write_section
from service_load import start, stop

from training.data.phantoms.__main__ import generate_many

ROOT = Path(__file__).resolve().parents[1]
SEED = 4242


def batch_run(source: Path, out: Path) -> dict:
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "service.batch", str(source), str(out)],
                          cwd=ROOT, capture_output=True, text=True, check=True)
    seconds = time.perf_counter() - t0
    analysed = int(re.search(r"done: (\d+) analysed", done.stdout)[1])
    return {"series": analysed, "seconds": seconds, "series_per_min": 60.0 * analysed / seconds}


def http_run(series: list[Path], data_dir: Path, clients: int = 2) -> dict:
    process, url, _ = start(data_dir)
    queue = list(series)
    lock = threading.Lock()
    done = []

    def client() -> None:
        with httpx.Client(timeout=300) as http:
            while True:
                with lock:
                    if not queue:
                        return
                    folder = queue.pop()
                files = [("files", (p.name, p.read_bytes(), "application/dicom"))
                         for p in sorted((folder / "dicom").glob("*.dcm"))]
                r = http.post(f"{url}/v1/analyses", files=files)
                with lock:
                    done.append(r.status_code == 201)

    try:
        t0 = time.perf_counter()
        threads = [threading.Thread(target=client) for _ in range(clients)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        seconds = time.perf_counter() - t0
    finally:
        stop(process)
    return {"clients": clients, "series": sum(done), "failed": done.count(False),
            "seconds": seconds, "series_per_min": 60.0 * sum(done) / seconds}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=100)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        series = generate_many(tmp / "phantoms", args.series, SEED)
        slices = sum(len(list((d / "dicom").glob("*.dcm"))) for d in series)
        batch = batch_run(tmp / "phantoms", tmp / "out")
        http = http_run(series, tmp / "service")
    result = {"date": datetime.now(UTC).strftime("%Y-%m-%d"),
              "machine": f"{os.cpu_count()} CPU cores, {platform.machine()}",
              "series": args.series, "slices": slices, "batch": batch, "http_2_clients": http,
              "ratio": batch["series_per_min"] / http["series_per_min"]}
    (ROOT / "benchmarks" / "results" / "batch.json").write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    write_section(
        f"## Batch re-analysis (`benchmarks/batch.py`, {result['date']}, {result['machine']})\n\n"
        f"{args.series} phantom series ({slices} slices), each analysed once, measured one "
        "after the other in one run:\n\n"
        "| path | series/min | wall s |\n|---|---|---|\n"
        f"| `python -m service.batch` (Ray in-process, start-up included) | "
        f"{batch['series_per_min']:.1f} | {batch['seconds']:.0f} |\n"
        f"| HTTP service, 2 clients | {http['series_per_min']:.1f} | {http['seconds']:.0f} |\n\n"
        f"Ratio batch / HTTP: {result['ratio']:.2f}. docs/batch.md says what to expect on "
        "more machines.", "batch")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
