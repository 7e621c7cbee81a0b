"""The service as a process: start-up to ready, throughput with 1-8 clients, peak RSS.

Starts ``python -m service`` on loopback (CPU, the shipped models), times it
to ``/readyz``, then has 1, 2, 4 and 8 concurrent clients post the 12-slice
256x256 phantom series of ``latency.py`` for a fixed time each and counts
finished analyses. ``MAX_CONCURRENT_ANALYSES`` is set to 8 so that no client
is turned away; peak RSS is the kernel's high-water mark (VmHWM) of the
service process at the end. Prints the figures and writes them to
``benchmarks/results/service_load.json`` and ``BENCHMARKS.md``.

    python benchmarks/service_load.py --seconds 30
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from latency import benchmark_series, upload_files, write_section

ROOT = Path(__file__).resolve().parent.parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _status_kib(pid: int, key: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def start(data_dir: Path, **env: str) -> tuple[subprocess.Popen, str, float]:
    port = _free_port()
    environment = os.environ | {"HOST": "127.0.0.1", "PORT": str(port),
                                "DATA_DIR": str(data_dir)} | env
    t0 = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "service"], env=environment,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    while True:
        try:
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return process, url, time.perf_counter() - t0
        except httpx.HTTPError:
            pass
        if process.poll() is not None or time.perf_counter() - t0 > 120:
            raise RuntimeError("the service did not start")
        time.sleep(0.02)


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    process.wait(timeout=30)


def throughput(url: str, files: list, clients: int, seconds: float) -> dict:
    done: list[float] = []
    failed = 0
    lock = threading.Lock()
    deadline = time.perf_counter() + seconds

    def client() -> None:
        nonlocal failed
        with httpx.Client(timeout=120) as http:
            while time.perf_counter() < deadline:
                t0 = time.perf_counter()
                r = http.post(f"{url}/v1/analyses", files=files)
                with lock:
                    if r.status_code == 201:
                        done.append(time.perf_counter() - t0)
                    else:
                        failed += 1

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - started
    return {"clients": clients, "analyses": len(done), "failed": failed,
            "series_per_min": 60.0 * len(done) / elapsed,
            "p50_ms": 1000 * statistics.median(done) if done else float("nan")}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--starts", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        series = benchmark_series(Path(tmp) / "series")
        files = upload_files(series)
        startups = []
        for k in range(args.starts):
            process, url, seconds = start(Path(tmp) / f"start{k}")
            startups.append(seconds)
            stop(process)
        def peak_after(clients: int, **env: str) -> tuple[list[dict], float, float]:
            process, url, _ = start(Path(tmp) / f"load{len(env)}{clients}", **env)
            idle = _status_kib(process.pid, "VmRSS") / 1024
            try:
                levels = [throughput(url, files, c, args.seconds)
                          for c in ((1, 2, 4, 8) if clients == 0 else (clients,))]
                return levels, idle, _status_kib(process.pid, "VmHWM") / 1024
            finally:
                stop(process)

        defaults, idle_mib, default_peak = peak_after(2)
        levels, _, peak_mib = peak_after(0, MAX_CONCURRENT_ANALYSES="8")
        no_arena, _, no_arena_peak = peak_after(8, MAX_CONCURRENT_ANALYSES="8",
                                                ONNX_MEMORY_ARENA="false")

    machine = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine,
               "startup_s": startups, "idle_rss_mib": idle_mib,
               "defaults_2_clients": defaults[0] | {"peak_rss_mib": default_peak},
               "peak_rss_mib_8_concurrent": peak_mib, "throughput": levels,
               "no_arena_8_clients": no_arena[0] | {"peak_rss_mib": no_arena_peak}}
    for level in levels:
        print(f"{level['clients']} client(s): {level['series_per_min']:.1f} series/min, "
              f"p50 {level['p50_ms']:.0f} ms, {level['failed']} failed")
    print(f"start-up to ready: median {statistics.median(startups):.2f} s; RSS idle "
          f"{idle_mib:.0f} MiB, peak {default_peak:.0f} MiB at the defaults (2 clients), "
          f"{peak_mib:.0f} MiB with 8 concurrent, {no_arena_peak:.0f} MiB with 8 concurrent "
          f"and ONNX_MEMORY_ARENA=false ({no_arena[0]['series_per_min']:.1f} series/min)")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_load.json").write_text(json.dumps(results, indent=1))
    rows = "\n".join(f"| {lv['clients']} | {lv['series_per_min']:.1f} | {lv['p50_ms']:.0f} | "
                     f"{lv['failed']} |" for lv in levels)
    write_section(
        f"## Service process: start-up, throughput, memory ({results['date'][:10]})\n\n"
        f"`python benchmarks/service_load.py --seconds {args.seconds:.0f}`: `python -m "
        f"service` on loopback, CPU, {machine}; 12-slice 256x256 series, cascade-unet, "
        f"`MAX_CONCURRENT_ANALYSES=8`, {args.seconds:.0f} s per level.\n\n"
        f"- start-up to ready (`/readyz` 200): median **{statistics.median(startups):.2f} s** "
        f"over {len(startups)} starts ({', '.join(f'{s:.2f}' for s in startups)})\n"
        f"- RSS: {idle_mib:.0f} MiB idle after start; peak (VmHWM) **{default_peak:.0f} MiB "
        f"at the defaults** (`MAX_CONCURRENT_ANALYSES=2`, 2 clients, "
        f"{defaults[0]['series_per_min']:.1f} series/min), {peak_mib:.0f} MiB after the "
        f"levels below with 8 analyses at once, {no_arena_peak:.0f} MiB with 8 at once and "
        f"`ONNX_MEMORY_ARENA=false` ({no_arena[0]['series_per_min']:.1f} series/min, p50 "
        f"{no_arena[0]['p50_ms']:.0f} ms)\n\n"
        "`MAX_CONCURRENT_ANALYSES=8`:\n\n| clients | series/min | p50 ms per request | "
        "failed |\n|---|---|---|---|\n" + rows, "service-load")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
