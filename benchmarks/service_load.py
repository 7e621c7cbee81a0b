"""The service as a process: start-up, throughput with 1-8 clients, peak RSS and its bounds.

Starts ``python -m service`` on loopback (CPU, the shipped models), times it
to ``/readyz``, then has 1, 2, 4 and 8 concurrent clients post the 12-slice
256x256 phantom series of ``latency.py`` for a fixed time each and counts
finished analyses. ``MAX_CONCURRENT_ANALYSES`` is set to 8 so that no client
is turned away; peak RSS is the kernel's high-water mark (VmHWM) of the
service process at the end.

Memory at the limits, each in a fresh process at the default limits:
the largest request allowed (``MAX_REQUEST_BYTES`` of 512x512 slices,
streamed; refused once past ``MAX_SERIES_PIXELS``), the largest series an
analysis reads (``MAX_SERIES_PIXELS`` of 512x512 slices, analysed), and 8
analyses at once. Each is checked against the bound stated in ``BOUNDS_MIB``.
Prints the figures and writes them to ``benchmarks/results/service_load.json``
and ``BENCHMARKS.md``; exits 1 when a bound is broken.

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

from service.config import Settings

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


def start(data_dir: Path, cwd: str | None = None, log: Path | None = None, **env: str
          ) -> tuple[subprocess.Popen, str, float]:
    """``python -m service`` (of ``cwd``'s package, if given) on a free loopback port,
    once ready: the process, its URL and the seconds to ready. ``log``: a file for its
    output (discarded otherwise)."""
    port = _free_port()
    environment = os.environ | {"HOST": "127.0.0.1", "PORT": str(port),
                                "DATA_DIR": str(data_dir)} | env
    t0 = time.perf_counter()
    output = subprocess.DEVNULL if log is None else open(log, "ab")  # noqa: SIM115
    try:
        process = subprocess.Popen([sys.executable, "-m", "service"], env=environment,
                                   cwd=cwd, stdout=output, stderr=subprocess.STDOUT)
    finally:
        if log is not None:
            output.close()  # the child holds its own copy
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


# Peak RSS (VmHWM) the service must stay under, MiB, at the default settings.
BOUNDS_MIB = {"largest_request": 1024, "largest_series": 2560, "eight_concurrent": 2048}
# Peak RSS at the defaults (2 analyses at once), the performance issue's target: reported.
DEFAULTS_TARGET_MIB = 700


def repeated_series(out_dir: Path, n_slices: int) -> list[Path]:
    """``n_slices`` 512x512 instances, one phantom slice repeated 8 mm apart along its normal.

    Rendering hundreds of phantom slices would take minutes; for memory only
    the pixel count matters, not what the pixels show.
    """
    import numpy as np
    import pydicom
    from pydicom.uid import generate_uid

    source = benchmark_series(out_dir / "source", size=512, n_slices=2, pixel_spacing=0.7)
    ds = pydicom.dcmread(sorted((source / "dicom").glob("*.dcm"))[0])
    orientation = np.array(ds.ImageOrientationPatient, dtype=float)
    normal = np.cross(orientation[:3], orientation[3:])
    origin = np.array(ds.ImagePositionPatient, dtype=float)
    ds.SeriesInstanceUID = generate_uid()
    (out_dir / "dicom").mkdir(parents=True)
    paths = []
    for k in range(n_slices):
        ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
        ds.ImagePositionPatient = [float(v) for v in origin + 8.0 * k * normal]
        ds.InstanceNumber, ds.SliceLocation = k + 1, 8.0 * k
        paths.append(out_dir / "dicom" / f"{k:05d}.dcm")
        ds.save_as(paths[-1])
    return paths


def related_stream(paths: list[Path], boundary: str = "benchmarkboundary"):
    """A multipart/related body read from disk as it is sent (the client holds one file)."""
    for path in paths:
        yield f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        yield path.read_bytes()
        yield b"\r\n"
    yield f"--{boundary}--\r\n".encode()


def peak_of_one_upload(data_dir: Path, paths: list[Path]) -> dict:
    """Post one series to a fresh service; its answer and the process's peak RSS."""
    process, url, _ = start(data_dir)
    try:
        size = sum(p.stat().st_size for p in paths) + 80 * len(paths)
        r = httpx.post(f"{url}/v1/analyses", content=related_stream(paths), timeout=1800,
                       headers={"Content-Type": "multipart/related; type=\"application/dicom\";"
                                               " boundary=benchmarkboundary"})
        code = r.json().get("error", {}).get("code") if r.status_code >= 400 else None
        return {"slices": len(paths), "request_mib": size / 2**20, "status": r.status_code,
                "code": code, "peak_rss_mib": _status_kib(process.pid, "VmHWM") / 1024}
    finally:
        stop(process)


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
                answered = time.perf_counter() - t0
                # An analysis is done when its SR is there too (encoded after the 201):
                # throughput counts whole analyses, and the encoding's work is paid for.
                if r.status_code == 201 and http.get(
                        f"{url}/v1/analyses/{r.json()['id']}/sr").status_code != 200:
                    r = None
                with lock:
                    if r is not None and r.status_code == 201:
                        done.append(answered)
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
        startups, first_requests = [], []
        for k in range(args.starts):
            process, url, seconds = start(Path(tmp) / f"start{k}")
            startups.append(seconds)
            # The first analysis a fresh process serves (the service warms every model
            # and encoder before it says ready).
            t0 = time.perf_counter()
            r = httpx.post(f"{url}/v1/analyses", files=files, timeout=120)
            first_requests.append((time.perf_counter() - t0) * 1000.0)
            if r.status_code != 201:
                raise RuntimeError(f"first analysis failed: {r.status_code} {r.text}")
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

        limits = Settings()
        one = repeated_series(Path(tmp) / "big", 1)[0].stat().st_size
        largest_files = min(limits.max_files, limits.max_request_bytes // (one + 80))
        big = repeated_series(Path(tmp) / "largest", largest_files)
        largest_request = peak_of_one_upload(Path(tmp) / "request", big)
        largest_series = peak_of_one_upload(Path(tmp) / "series-limit",
                                            big[:limits.max_series_pixels // (512 * 512)])

    machine = f"{os.cpu_count()} CPU cores ({platform.machine()})"
    results = {"date": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine,
               "startup_s": startups, "first_request_ms": first_requests,
               "defaults_target_mib": DEFAULTS_TARGET_MIB, "idle_rss_mib": idle_mib,
               "defaults_2_clients": defaults[0] | {"peak_rss_mib": default_peak},
               "peak_rss_mib_8_concurrent": peak_mib, "throughput": levels,
               "no_arena_8_clients": no_arena[0] | {"peak_rss_mib": no_arena_peak},
               "largest_request": largest_request, "largest_series": largest_series,
               "bounds_mib": BOUNDS_MIB}
    measured = {"largest_request": largest_request["peak_rss_mib"],
                "largest_series": largest_series["peak_rss_mib"], "eight_concurrent": peak_mib}
    results["within_bounds"] = {k: measured[k] <= BOUNDS_MIB[k] for k in BOUNDS_MIB}
    for level in levels:
        print(f"{level['clients']} client(s): {level['series_per_min']:.1f} series/min, "
              f"p50 {level['p50_ms']:.0f} ms, {level['failed']} failed")
    print(f"first analysis after start-up: {first_requests} ms")
    print(f"start-up to ready: median {statistics.median(startups):.2f} s; RSS idle "
          f"{idle_mib:.0f} MiB, peak {default_peak:.0f} MiB at the defaults (2 clients), "
          f"{peak_mib:.0f} MiB with 8 concurrent, {no_arena_peak:.0f} MiB with 8 concurrent "
          f"and ONNX_MEMORY_ARENA=false ({no_arena[0]['series_per_min']:.1f} series/min)")
    for what, row in (("largest request", largest_request), ("largest series", largest_series)):
        print(f"{what}: {row['slices']} slices of 512x512, {row['request_mib']:.0f} MiB, "
              f"answered {row['status']} {row['code'] or ''}, peak {row['peak_rss_mib']:.0f} MiB")
    for key, ok in results["within_bounds"].items():
        print(f"bound {key}: {measured[key]:.0f} MiB <= {BOUNDS_MIB[key]} MiB: "
              f"{'yes' if ok else 'NO'}")
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "service_load.json").write_text(json.dumps(results, indent=1))
    rows = "\n".join(f"| {lv['clients']} | {lv['series_per_min']:.1f} | {lv['p50_ms']:.0f} | "
                     f"{lv['failed']} |" for lv in levels)
    write_section(
        f"## Service process: start-up, throughput, memory ({results['date'][:10]})\n\n"
        f"`python benchmarks/service_load.py --seconds {args.seconds:.0f}`: `python -m "
        f"service` on loopback, CPU, {machine}; 12-slice 256x256 series, cascade-unet, "
        f"`MAX_CONCURRENT_ANALYSES=8`, {args.seconds:.0f} s per level. An analysis counts "
        "when its SR is there too (each client fetches it before its next POST: the SEG and "
        "SR are encoded after the 201); the p50 is POST to 201.\n\n"
        f"- start-up to ready (`/readyz` 200): median **{statistics.median(startups):.2f} s** "
        f"over {len(startups)} starts ({', '.join(f'{s:.2f}' for s in startups)})\n"
        f"- the first analysis after each start: median **{statistics.median(first_requests):.0f}"
        f" ms** ({', '.join(f'{v:.0f}' for v in first_requests)}), "
        f"{statistics.median(first_requests) / levels[0]['p50_ms']:.2f}x the 1-client p50 "
        f"below\n"
        f"- RSS: {idle_mib:.0f} MiB idle after start; peak (VmHWM) **{default_peak:.0f} MiB "
        f"at the defaults** (target {DEFAULTS_TARGET_MIB} MiB: "
        f"{'met' if default_peak <= DEFAULTS_TARGET_MIB else 'not met'}; "
        f"`MAX_CONCURRENT_ANALYSES=2`, 2 clients, "
        f"{defaults[0]['series_per_min']:.1f} series/min), {peak_mib:.0f} MiB after the "
        f"levels below with 8 analyses at once, {no_arena_peak:.0f} MiB with 8 at once and "
        f"`ONNX_MEMORY_ARENA=false` ({no_arena[0]['series_per_min']:.1f} series/min, p50 "
        f"{no_arena[0]['p50_ms']:.0f} ms)\n\n"
        "`MAX_CONCURRENT_ANALYSES=8`:\n\n| clients | series/min | p50 ms per request | "
        "failed |\n|---|---|---|---|\n" + rows + "\n\n"
        "Peak RSS at the limits (default settings, a fresh process each; request bodies are "
        "streamed to disk, an analysis is bounded by `MAX_SERIES_PIXELS`):\n\n"
        "| case | request | answer | peak RSS MiB | bound MiB | within |\n"
        "|---|---|---|---|---|---|\n"
        + "\n".join(
            f"| {label} | {row['slices']} slices 512x512, {row['request_mib']:.0f} MiB | "
            f"{row['status']} {row['code'] or ''} | {row['peak_rss_mib']:.0f} | "
            f"{BOUNDS_MIB[key]} | {'yes' if results['within_bounds'][key] else '**no**'} |"
            for label, key, row in (
                ("largest request (`MAX_REQUEST_BYTES`)", "largest_request", largest_request),
                ("largest series (`MAX_SERIES_PIXELS`)", "largest_series", largest_series)))
        + f"\n| 8 analyses at once (`MAX_CONCURRENT_ANALYSES=8`) | 12 slices 256x256 each | "
          f"201 | {peak_mib:.0f} | {BOUNDS_MIB['eight_concurrent']} | "
          f"{'yes' if results['within_bounds']['eight_concurrent'] else '**no**'} |",
        "service-load")
    return 0 if all(results["within_bounds"].values()) else 1


if __name__ == "__main__":
    raise SystemExit(main())
