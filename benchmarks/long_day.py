"""A long day under load: 4 clients over HTTP for 20 minutes, the encoder and store-back running.

Starts a real Orthanc (Debian ``orthanc`` and ``orthanc-dicomweb``, the project's
``deploy/orthanc/orthanc.json`` without its forwarding script, as
``tests/service/pacs/test_orthanc.py`` does) and ``python -m service`` (its own
``DATA_DIR`` in a temporary folder, ``DICOMWEB_STORE_URL`` at Orthanc, the defaults
otherwise but ``MAX_CONCURRENT_ANALYSES`` = the clients, so that none is turned away with
503). ``--clients`` threads then post the held-out 12-slice 256x256 phantom series of
``latency.py`` in a loop for ``--minutes``, each fetching its analysis' SR, untimed, before
its next POST. Every ``--interval`` seconds it samples the service process's resident
memory and open file descriptors (/proc), the encoder's queue (``dblge_encoding_queue``
in /metrics), the store-back queue (pushes not done, read from the service's index
read-only: /metrics has no gauge for it) and the p50/p95 of the POSTs answered since the
last sample, and prints the row.

The criteria (issue 55, finding 7), over windows of one minute (half the run if shorter):

- resident memory grows at most 10 % from the end of the first minute to the end;
- open file descriptors flat: the most seen in the last minute at most ``FD_SLACK`` above
  the most seen in the minute after the first (in-flight requests hold a few);
- no error: every POST answered 201, every SR 200, no transport error;
- the p95 of the POSTs answered in the last minute within 1.2x the first minute's.

After the load the queues drain (at most ``--drain-s``), then store-back is checked: the
SEG and SR of every analysis answered must be in Orthanc (by SOP Instance UID). Where
Orthanc cannot start, a small in-process STOW-RS receiver stands in and the output says
so. Writes ``long_day.json`` and ``long_day.png`` (memory, descriptors, p50/p95 and the
queues against time) to ``--out`` (default ``benchmarks/results``) and, only without
``--out``, the ``long-day`` section of ``BENCHMARKS.md``; exits 1 when a criterion is not
met.

    python benchmarks/long_day.py --minutes 20
    python benchmarks/long_day.py --minutes 1 --out /tmp/long_day_check   # a trial run
"""

from __future__ import annotations

import argparse
import glob
import io
import json
import os
import platform
import re
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
from latency import benchmark_series, host_calibration_ms, percentile, upload_files, write_section
from service_load import _free_port, _status_kib, start, stop

ROOT = Path(__file__).resolve().parent.parent
ORTHANC_CONFIG = ROOT / "deploy" / "orthanc" / "orthanc.json"
USER, PASSWORD = "long-day", "long-day-password"
RSS_GROWTH_MAX = 0.10
P95_RATIO_MAX = 1.2
FD_SLACK = 2
WINDOW_S = 60.0


# -- the STOW-RS destination: Orthanc, or a stand-in -------------------------------------


@dataclass
class Destination:
    """Where store-back pushes: its DICOMweb base URL, credentials, and what it holds."""

    url: str
    label: str
    stored: Callable[[], set[str]]  # the SOP Instance UIDs it holds now
    auth: tuple[str, str] | None = None
    note: str = ""


class OrthancUnavailable(RuntimeError):
    pass


@contextmanager
def orthanc(folder: Path):
    """A real Orthanc on loopback with the project's configuration (no forwarding script)."""
    executable = shutil.which("Orthanc")
    plugins = glob.glob("/usr/share/orthanc/plugins/libOrthancDicomWeb.so*")
    if executable is None or not plugins:
        raise OrthancUnavailable("Orthanc or its DICOMweb plugin is not installed "
                                 "(Debian packages orthanc, orthanc-dicomweb)")
    folder.mkdir(parents=True)
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    config = json.loads(ORTHANC_CONFIG.read_text())
    config |= {"HttpPort": port, "DicomPort": _free_port(),
               "StorageDirectory": str(folder / "storage"),
               "IndexDirectory": str(folder / "storage"), "Plugins": plugins[:1],
               "LuaScripts": [], "RegisteredUsers": {USER: PASSWORD}}
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "wb")  # noqa: SIM115 - closed below
    # The configuration names the service as a DICOMweb server from the environment; it is
    # not used here (nothing is forwarded), but Orthanc expands the variables.
    env = os.environ | {"LGE_SERVICE_DICOMWEB_URL": "http://127.0.0.1:9/dicomweb/",
                        "LGE_SERVICE_API_KEY": "unused"}
    process = subprocess.Popen([executable, str(folder / "orthanc.json")], env=env, cwd=folder,
                               stdout=log, stderr=subprocess.STDOUT)
    auth = (USER, PASSWORD)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                system = httpx.get(f"{url}/system", auth=auth, timeout=5)
                if system.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                tail = (folder / "orthanc.log").read_text(errors="replace")[-800:]
                raise OrthancUnavailable(f"Orthanc did not start: {tail}")
            time.sleep(0.25)

        def stored() -> set[str]:
            found = httpx.post(f"{url}/tools/find", auth=auth, timeout=300, json={
                "Level": "Instance", "Query": {}, "Expand": True}).json()
            return {i["MainDicomTags"].get("SOPInstanceUID") for i in found}

        yield Destination(f"{url}/dicom-web", f"Orthanc {system.json()['Version']}", stored,
                          auth)
    finally:
        process.terminate()
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()


class _Receiver(BaseHTTPRequestHandler):
    """STOW-RS ``POST .../studies``: keeps the SOP Instance UIDs, answers 200 (empty)."""

    def do_POST(self) -> None:  # noqa: N802 - the http.server API
        import pydicom

        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            body = b""
            while size := int(self.rfile.readline().strip(), 16):
                body += self.rfile.read(size)
                self.rfile.readline()
            self.rfile.readline()
        else:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        boundary = re.search(r'boundary="?([^";]+)', self.headers["Content-Type"]).group(1)
        for part in body.split(b"--" + boundary.encode())[1:-1]:
            data = part.split(b"\r\n\r\n", 1)[1].removesuffix(b"\r\n")
            ds = pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True)
            with self.server.lock:
                self.server.uids.add(str(ds.SOPInstanceUID))
        self.send_response(200)
        self.send_header("Content-Type", "application/dicom+json")
        self.send_header("Content-Length", "2")
        self.end_headers()
        self.wfile.write(b"{}")

    def log_message(self, *args) -> None:
        pass


@contextmanager
def stand_in(reason: str):
    """The in-process STOW-RS receiver, for a host where Orthanc cannot start."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.uids, server.lock = set(), threading.Lock()
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()

    def stored() -> set[str]:
        with server.lock:
            return set(server.uids)

    try:
        yield Destination(f"http://127.0.0.1:{server.server_address[1]}/dicom-web",
                          "an in-process STOW-RS receiver (not Orthanc)", stored,
                          note=reason)
    finally:
        server.shutdown()


@contextmanager
def destination(folder: Path, use_orthanc: bool = True):
    """Orthanc, or where it cannot start (or ``use_orthanc`` is false) the stand-in."""
    reason = "--no-orthanc"
    if use_orthanc:
        stack = ExitStack()
        try:
            found = stack.enter_context(orthanc(folder))
        except OrthancUnavailable as exc:
            reason = str(exc)
            print(f"FALLBACK: {exc}; store-back goes to an in-process STOW-RS receiver")
        else:
            with stack:
                yield found
            return
    with stand_in(reason) as found:
        yield found


# -- the load and the samples ---------------------------------------------------------------


@dataclass
class Load:
    """What the clients saw: every POST (seconds from the start at its answer, ms, status),
    every error, and the SEG and SR SOP Instance UIDs of each analysis answered."""

    posts: list[tuple[float, float, int]] = field(default_factory=list)
    errors: list[dict] = field(default_factory=list)
    answered: list[dict] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)


def client(url: str, files: list, load: Load, started: float, deadline: float) -> None:
    with httpx.Client(timeout=300) as http:
        while time.monotonic() < deadline:
            t0 = time.monotonic()
            try:
                r = http.post(f"{url}/v1/analyses", files=files)
                ms = (time.monotonic() - t0) * 1000.0
                sr = http.get(f"{url}/v1/analyses/{r.json()['id']}/sr") \
                    if r.status_code == 201 else None
            except httpx.HTTPError as exc:
                with load.lock:
                    load.errors.append({"t_s": time.monotonic() - started, "what": "transport",
                                        "error": f"{type(exc).__name__}: {exc}"})
                time.sleep(1.0)
                continue
            with load.lock:
                load.posts.append((t0 + ms / 1000.0 - started, ms, r.status_code))
                if r.status_code != 201:
                    load.errors.append({"t_s": t0 - started, "what": "POST",
                                        "status": r.status_code, "error": r.text[:300]})
                else:
                    report = r.json()
                    load.answered.append({"id": report["id"],
                                          "seg": report["seg_sop_instance_uid"],
                                          "sr": report["sr_sop_instance_uid"]})
                    if sr.status_code != 200:
                        load.errors.append({"t_s": time.monotonic() - started, "what": "SR",
                                            "status": sr.status_code, "error": sr.text[:300]})
            if r.status_code != 201:
                time.sleep(1.0)  # a refusal is answered at once: no busy loop


def metric(text: str, name: str) -> float | None:
    match = re.search(rf"^{name} ([0-9.eE+-]+)$", text, re.MULTILINE)
    return None if match is None else float(match.group(1))


def pushes(data_dir: Path) -> dict[str, int]:
    """The store-back queue by status, from the service's index (read-only)."""
    db = sqlite3.connect(f"file:{data_dir / 'index.sqlite'}?mode=ro", uri=True, timeout=10)
    try:
        return dict(db.execute("SELECT status, count(*) FROM pushes GROUP BY status"))
    finally:
        db.close()


def sample(pid: int, url: str, data_dir: Path, t: float, phase: str,
           window: list[tuple[float, float, int]], errors: int) -> dict:
    text = httpx.get(f"{url}/metrics", timeout=30).text
    queue = pushes(data_dir)
    times = [ms for _, ms, status in window if status == 201]
    return {"t_s": round(t, 1), "phase": phase,
            "rss_mib": round(_status_kib(pid, "VmRSS") / 1024, 1),
            "fds": len(os.listdir(f"/proc/{pid}/fd")), "threads": _status_kib(pid, "Threads"),
            "encoding_queue": metric(text, "dblge_encoding_queue"),
            "in_flight": metric(text, "dblge_analyses_in_flight"),
            "store_back_queue": sum(n for status, n in queue.items() if status != "done"),
            "store_back_done": queue.get("done", 0), "posts": len(window),
            "p50_ms": round(percentile(times, 50), 1) if times else None,
            "p95_ms": round(percentile(times, 95), 1) if times else None, "errors": errors}


HEAD = (f"{'min':>6} {'phase':>5} {'RSS MiB':>8} {'FDs':>4} {'thr':>4} {'enc q':>5} "
        f"{'push q':>6} {'pushed':>6} {'posts':>5} {'p50 ms':>7} {'p95 ms':>7} {'err':>4}")


def row(s: dict) -> str:
    def ms(v):
        return f"{v:7.0f}" if v is not None else f"{'-':>7}"
    return (f"{s['t_s'] / 60:6.2f} {s['phase']:>5} {s['rss_mib']:8.1f} {s['fds']:4d} "
            f"{s['threads']:4d} {s['encoding_queue'] or 0:5.0f} {s['store_back_queue']:6d} "
            f"{s['store_back_done']:6d} {s['posts']:5d} {ms(s['p50_ms'])} {ms(s['p95_ms'])} "
            f"{s['errors']:4d}")


def run_load(pid: int, url: str, data_dir: Path, files: list, clients: int, seconds: float,
             interval: float, drain_s: float) -> tuple[Load, list[dict], float, float]:
    """The clients for ``seconds``, sampled every ``interval``; then the queues let drain.
    Returns what the clients saw, the samples, the load's length and the drain's."""
    load, samples = Load(), []
    started = time.monotonic()
    threads = [threading.Thread(target=client, args=(url, files, load, started,
                                                     started + seconds), daemon=True)
               for _ in range(clients)]
    for t in threads:
        t.start()
    seen_posts = seen_errors = 0

    def take(phase: str) -> dict:
        nonlocal seen_posts, seen_errors
        with load.lock:
            window, errors = load.posts[seen_posts:], len(load.errors) - seen_errors
            seen_posts, seen_errors = len(load.posts), len(load.errors)
        samples.append(sample(pid, url, data_dir, time.monotonic() - started, phase, window,
                              errors))
        print(row(samples[-1]), flush=True)
        return samples[-1]

    print(HEAD)
    k = 1
    while any(t.is_alive() for t in threads):
        due = started + k * interval
        while time.monotonic() < due and any(t.is_alive() for t in threads):
            time.sleep(min(0.2, max(0.0, due - time.monotonic())))
        if any(t.is_alive() for t in threads):
            take("load")
            k += 1
    loaded = time.monotonic() - started
    last = take("load")  # the end of the load: its last answers
    drain_started = time.monotonic()
    while (last["encoding_queue"] or last["store_back_queue"]) \
            and time.monotonic() - drain_started < drain_s:
        time.sleep(min(interval, 2.0))
        last = take("drain")
    return load, samples, loaded, time.monotonic() - drain_started


# -- the criteria -----------------------------------------------------------------------------


def judge(load: Load, samples: list[dict], seconds: float, window: float) -> dict:
    """The four criteria, each with its measured value and whether it is met."""
    during = [s for s in samples if s["phase"] == "load"]
    after_first = [s for s in during if s["t_s"] >= window] or during[-1:]
    base, end = after_first[0], during[-1]
    growth = end["rss_mib"] / base["rss_mib"] - 1.0
    fds_second = max(s["fds"] for s in during if window <= s["t_s"] < 2 * window) \
        if any(window <= s["t_s"] < 2 * window for s in during) else base["fds"]
    fds_last = max(s["fds"] for s in during if s["t_s"] >= seconds - window)
    first = [ms for t, ms, status in load.posts if t < window and status == 201]
    last = [ms for t, ms, status in load.posts if t >= seconds - window and status == 201]
    p95_first = percentile(first, 95) if first else float("nan")
    p95_last = percentile(last, 95) if last else float("nan")
    transport = sum(e["what"] == "transport" for e in load.errors)
    return {
        "window_s": window,
        "rss": {"at_first_minute_mib": base["rss_mib"], "at_first_minute_t_s": base["t_s"],
                "at_end_mib": end["rss_mib"],
                "max_after_first_minute_mib": max(s["rss_mib"] for s in after_first),
                "growth": growth, "bound": RSS_GROWTH_MAX, "met": growth <= RSS_GROWTH_MAX},
        "fds": {"most_in_second_minute": fds_second, "most_in_last_minute": fds_last,
                "at_first_minute": base["fds"], "at_end": end["fds"], "slack": FD_SLACK,
                "met": fds_last <= fds_second + FD_SLACK},
        "errors": {"posts": len(load.posts), "sr_gets": len(load.answered),
                   "non_2xx": sum(e["what"] != "transport" for e in load.errors),
                   "transport": transport, "first": load.errors[:20],
                   "met": not load.errors},
        "p95": {"first_minute_ms": p95_first, "last_minute_ms": p95_last,
                "first_minute_posts": len(first), "last_minute_posts": len(last),
                "ratio": p95_last / p95_first, "bound": P95_RATIO_MAX,
                "met": p95_last <= P95_RATIO_MAX * p95_first},
    }


def store_back_check(load: Load, stored: set[str], data_dir: Path) -> dict:
    """Whether the SEG and SR of every analysis answered reached the destination."""
    missing = [a["id"] for a in load.answered if a["seg"] not in stored or a["sr"] not in stored]
    queue = pushes(data_dir)
    return {"analyses": len(load.answered), "pushed": len(load.answered) - len(missing),
            "missing": missing[:20], "service_queue": queue, "met": not missing}


def disk_mib(folder: Path) -> float:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file()) / 2**20


# -- the curve and the section ----------------------------------------------------------------


def draw(samples: list[dict], verdict: dict, loaded_s: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    minutes = [s["t_s"] / 60 for s in samples]
    fig, axes = plt.subplots(4, 1, figsize=(9, 10), sharex=True)
    rss, fds, p95, queue = axes
    rss.plot(minutes, [s["rss_mib"] for s in samples], color="tab:blue")
    rss.axhline(verdict["rss"]["at_first_minute_mib"] * (1 + RSS_GROWTH_MAX), ls=":",
                color="tab:red", label=f"+{RSS_GROWTH_MAX:.0%} of the first minute's")
    rss.set_ylabel("RSS MiB")
    rss.legend(loc="lower right", fontsize="small")
    fds.plot(minutes, [s["fds"] for s in samples], color="tab:green", label="open files")
    fds.plot(minutes, [s["threads"] for s in samples], color="tab:olive", ls="--",
             label="threads")
    fds.set_ylabel("count")
    fds.legend(loc="lower right", fontsize="small")
    p95.plot(minutes, [s["p95_ms"] for s in samples], color="tab:red", label="p95")
    p95.plot(minutes, [s["p50_ms"] for s in samples], color="tab:orange", label="p50")
    p95.axhline(verdict["p95"]["first_minute_ms"] * P95_RATIO_MAX, ls=":", color="tab:red",
                label=f"{P95_RATIO_MAX}x the first minute's p95")
    p95.set_ylabel("POST to 201, ms")
    p95.legend(loc="lower right", fontsize="small")
    queue.step(minutes, [s["encoding_queue"] or 0 for s in samples], where="post",
               label="encoder queue")
    queue.step(minutes, [s["store_back_queue"] for s in samples], where="post", ls="--",
               label="store-back queue")
    queue.set_ylabel("queued")
    queue.set_xlabel("minutes under load (after the line: the queues draining)")
    queue.legend(loc="upper left", fontsize="small")
    for ax in axes:
        ax.axvline(loaded_s / 60, color="grey", lw=0.8)
        ax.grid(alpha=0.3)
    fig.suptitle("A long day under load (benchmarks/long_day.py)")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def per_minute(samples: list[dict], load: Load, loaded_s: float) -> list[dict]:
    rows = []
    for m in range(max(1, round(loaded_s / 60))):
        inside = [s for s in samples if s["phase"] == "load" and m * 60 < s["t_s"] <= (m + 1) * 60]
        times = [ms for t, ms, status in load.posts if m * 60 <= t < (m + 1) * 60
                 and status == 201]
        if not inside:
            continue
        rows.append({"minute": m + 1, "rss_mib": inside[-1]["rss_mib"],
                     "fds_max": max(s["fds"] for s in inside), "posts": len(times),
                     "p50_ms": percentile(times, 50) if times else None,
                     "p95_ms": percentile(times, 95) if times else None,
                     "encoding_queue_max": max(s["encoding_queue"] or 0 for s in inside),
                     "store_back_queue_max": max(s["store_back_queue"] for s in inside)})
    return rows


MINUTE_HEADER = ("| minute | RSS MiB (last sample) | open files (most) | POSTs | p50 ms | p95 ms "
                 "| encoder queue (most) | store-back queue (most) |\n" + "|---" * 8 + "|")


def section(record: dict, command: str, json_path: str, png_path: str) -> str:
    v, sb = record["criteria"], record["store_back"]

    def met(ok: bool) -> str:
        return "met" if ok else "**not met**"

    rows = "\n".join(
        f"| {r['minute']} | {r['rss_mib']:.0f} | {r['fds_max']} | {r['posts']} | "
        f"{r['p50_ms'] or float('nan'):.0f} | {r['p95_ms'] or float('nan'):.0f} | "
        f"{r['encoding_queue_max']:.0f} | {r['store_back_queue_max']} |"
        for r in record["per_minute"])
    e = v["errors"]
    note = f" ({record['destination_note']})" if record["destination_note"] else ""
    calibration = record["host_calibration_ms"]
    intro = " ".join([
        f"`{command}`: `python -m service` on loopback, CPU, {record['machine']}, its own",
        f"`DATA_DIR`, the defaults but `MAX_CONCURRENT_ANALYSES={record['clients']}` (so that",
        "no client is turned away), store-back (`DICOMWEB_STORE_URL`) to",
        f"{record['destination']}{note}. {record['clients']} clients post the 12-slice 256x256",
        f"phantom series of `latency.py` in a loop for {record['minutes']:g} min, each",
        f"fetching its SR, untimed, before its next POST: {e['posts']} POSTs,",
        f"{record['series_per_min']:.1f} series/min. Sampled every {record['interval_s']:g} s",
        "(the service's RSS and open files from /proc, the encoder queue from `/metrics`, the",
        "store-back queue from the service's index); \"the first minute\" and \"the last",
        f"minute\" are windows of {v['window_s']:.0f} s. Host calibration (1M-step Python",
        f"loop) {calibration['before']:.0f} ms before, {calibration['after']:.0f} ms after.",
        f"Figures: `{json_path}`; the curve: `{png_path}`. Revision `{record['revision']}`."])
    store_back = " ".join([
        f"Store-back: the SEG and SR of **{sb['pushed']} of {sb['analyses']}** analyses were",
        f"in {record['destination']} at the end, {record['drain_s']:.0f} s after the load",
        f"stopped ({met(sb['met'])}; the service's push queue by status:",
        f"{sb['service_queue']}). `DATA_DIR` held {record['data_dir_mib']:.0f} MiB at the end",
        f"({record['data_dir_mib'] / max(1, sb['analyses']):.2f} MiB an analysis; nothing is",
        "deleted without `RETENTION_DAYS`)."])
    return f"""## A long day under load ({record['date'][:10]})

{intro}

| criterion | measured | |
|---|---|---|
| resident memory after the first minute grows by at most {RSS_GROWTH_MAX:.0%} | \
{v['rss']['at_first_minute_mib']:.0f} MiB at {v['rss']['at_first_minute_t_s'] / 60:.1f} min, \
{v['rss']['at_end_mib']:.0f} MiB at the end: {v['rss']['growth']:+.1%} (highest after the \
first minute {v['rss']['max_after_first_minute_mib']:.0f} MiB) | {met(v['rss']['met'])} |
| open file descriptors flat | most in the minute after the first \
{v['fds']['most_in_second_minute']}, in the last minute {v['fds']['most_in_last_minute']} \
(allowed {FD_SLACK} more: in-flight requests) | {met(v['fds']['met'])} |
| no error | {e['non_2xx']} answers other than 201 / 200 over {e['posts']} POSTs and \
{e['sr_gets']} SR GETs, {e['transport']} transport errors | {met(e['met'])} |
| p95 in the last minute within {P95_RATIO_MAX}x the first | \
{v['p95']['first_minute_ms']:.0f} ms ({v['p95']['first_minute_posts']} POSTs), then \
{v['p95']['last_minute_ms']:.0f} ms ({v['p95']['last_minute_posts']}): \
{v['p95']['ratio']:.2f}x | {met(v['p95']['met'])} |

{store_back}

![memory, open files, p50/p95 and queues against time]({png_path})

{MINUTE_HEADER}
{rows}"""


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=20.0)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between samples")
    parser.add_argument("--drain-s", type=float, default=300.0,
                        help="longest wait for the queues to empty after the load")
    parser.add_argument("--no-orthanc", action="store_true",
                        help="store-back to the in-process STOW-RS receiver (a trial run)")
    parser.add_argument("--out", type=Path, help="write the JSON, PNG and the section here "
                        "instead of benchmarks/results and BENCHMARKS.md (a trial run)")
    args = parser.parse_args()
    seconds = args.minutes * 60.0
    window = min(WINDOW_S, seconds / 2)
    out = args.out or ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    command = "python benchmarks/long_day.py" + (
        f" --minutes {args.minutes:g}" if args.minutes != 20 else "")
    calibration = {"before": host_calibration_ms()}

    with tempfile.TemporaryDirectory(prefix="long-day-") as tmp:
        tmp = Path(tmp)
        files = upload_files(benchmark_series(tmp / "series"))
        with destination(tmp / "orthanc", not args.no_orthanc) as dest:
            print(f"store-back to {dest.label} at {dest.url}")
            credentials = {"DICOMWEB_STORE_USERNAME": dest.auth[0],
                           "DICOMWEB_STORE_PASSWORD": dest.auth[1]} if dest.auth else {}
            data_dir = tmp / "service"
            process, url, startup = start(
                data_dir, cwd=str(ROOT), log=tmp / "service.log",
                DICOMWEB_STORE_URL=dest.url, MAX_CONCURRENT_ANALYSES=str(args.clients),
                **credentials)
            print(f"service ready in {startup:.1f} s (pid {process.pid}); {args.clients} clients"
                  f" for {args.minutes:g} min, a sample every {args.interval:g} s")
            try:
                load, samples, loaded_s, drain_s = run_load(
                    process.pid, url, data_dir, files, args.clients, seconds, args.interval,
                    args.drain_s)
                pushed = store_back_check(load, dest.stored(), data_dir)
                data_mib = disk_mib(data_dir)
            finally:
                stop(process)
                log_tail = (tmp / "service.log").read_text(errors="replace")[-2000:]
    calibration["after"] = host_calibration_ms()

    verdict = judge(load, samples, seconds, window)
    revision = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT,
                              capture_output=True, text=True).stdout.strip()
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "revision": revision, "minutes": args.minutes, "clients": args.clients,
              "interval_s": args.interval, "destination": dest.label,
              "destination_note": dest.note, "startup_s": startup,
              "series": "12 slices, 256x256, 1.4 mm (latency.py's, seed 77)",
              "series_per_min": 60.0 * len(load.answered) / loaded_s, "loaded_s": loaded_s,
              "drain_s": drain_s, "host_calibration_ms": calibration,
              "data_dir_mib": data_mib, "criteria": verdict, "store_back": pushed,
              "per_minute": per_minute(samples, load, loaded_s), "samples": samples}
    (out / "long_day.json").write_text(json.dumps(record, indent=1))
    draw(samples, verdict, loaded_s, out / "long_day.png")

    v = verdict
    print(f"\n{len(load.posts)} POSTs in {loaded_s:.0f} s ({record['series_per_min']:.1f} "
          f"series/min), {len(load.errors)} errors; host calibration "
          f"{calibration['before']:.0f} ms before, {calibration['after']:.0f} ms after")
    print(f"RSS {v['rss']['at_first_minute_mib']:.0f} MiB at {v['rss']['at_first_minute_t_s']:.0f}"
          f" s -> {v['rss']['at_end_mib']:.0f} MiB at the end ({v['rss']['growth']:+.1%}, "
          f"bound +{RSS_GROWTH_MAX:.0%}): {'met' if v['rss']['met'] else 'NOT MET'}")
    print(f"open files: most {v['fds']['most_in_second_minute']} in the minute after the first, "
          f"{v['fds']['most_in_last_minute']} in the last (slack {FD_SLACK}): "
          f"{'met' if v['fds']['met'] else 'NOT MET'}")
    print(f"errors: {v['errors']['non_2xx']} non-2xx, {v['errors']['transport']} transport: "
          f"{'met' if v['errors']['met'] else 'NOT MET'}")
    for error in v["errors"]["first"][:5]:
        print(f"  {error}")
    print(f"p95 {v['p95']['first_minute_ms']:.0f} ms in the first {window:.0f} s, "
          f"{v['p95']['last_minute_ms']:.0f} ms in the last: {v['p95']['ratio']:.2f}x "
          f"(bound {P95_RATIO_MAX}x): {'met' if v['p95']['met'] else 'NOT MET'}")
    print(f"store-back: {pushed['pushed']} of {pushed['analyses']} analyses' SEG and SR in "
          f"{dest.label} after {drain_s:.0f} s of draining; service queue "
          f"{pushed['service_queue']}: {'met' if pushed['met'] else 'NOT MET'}")
    print(f"DATA_DIR {data_mib:.0f} MiB at the end")
    if load.errors or not pushed["met"]:
        print(f"--- service log (tail) ---\n{log_tail}")

    json_path = "benchmarks/results/long_day.json" if args.out is None else str(
        out / "long_day.json")
    png_path = "benchmarks/results/long_day.png" if args.out is None else str(
        out / "long_day.png")
    markdown = section(record, command, json_path, png_path)
    if args.out is None:
        write_section(markdown, "long-day")
    else:
        (out / "long_day.md").write_text(markdown + "\n")
    print(f"wrote {out / 'long_day.json'}, {out / 'long_day.png'} and "
          + ("the long-day section of BENCHMARKS.md" if args.out is None
             else f"{out / 'long_day.md'} (BENCHMARKS.md untouched)"))
    ok = all(c["met"] for c in (v["rss"], v["fds"], v["errors"], v["p95"])) and pushed["met"]
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
