"""The cascade's time outside its networks before and after issue 54 round 5, side by side.

One process runs the service's whole path from an upload's files to the stored report
(``service.analysis.analyse_and_store``: ingest, volume, pipeline, stored inputs of the SEG
and SR, the store's durable writes; the SEG and SR are encoded after the answer, so not
here) on the 12 x 256x256 latency series, alternately with round 5's changes and with each
of them undone (``OLD``: the code before, kept here for the comparison), ``--runs`` pairs
after one unmeasured run each; the reports and stored files of both must be the same. The
HTTP layer is the same for both and left out. This host's speed drifts (a training run
shares its cores), so the figures are ratios per pair, old / new: of the analysing
thread's CPU time outside the networks (which another process's load inflates least), of
the wall time outside them (the networks' own less; the store's fsyncs are in it) and of
each stage's wall time. Prints them and writes ``benchmarks/results/outside_speed.json``;
run it niced on a busy machine.

    python benchmarks/outside_speed.py --runs 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import zipfile
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))


@contextlib.contextmanager
def _every_element_converted():
    """Ingest before: every element of every instance converted (no sharing a series)."""
    from service.dicom import ingest, instances

    def read(blob, converted=None):
        return ingest.read_dataset(blob)

    saved, instances.read_dataset = instances.read_dataset, read
    try:
        yield
    finally:
        instances.read_dataset = saved


@contextlib.contextmanager
def _index_row_synced():
    """The store before: the save's index row committed at synchronous=FULL."""
    from service.store.results import ResultStore

    saved = ResultStore._index

    def index(self, report, identity, push_to=None, synced=True):
        return saved(self, report, identity, push_to, True)

    ResultStore._index = index
    try:
        yield
    finally:
        ResultStore._index = saved


@contextlib.contextmanager
def _quantities_on_whole_slices():
    """AHA segments and the 4-SD baseline before: each slice's myocardium searched for on
    the whole slice (the copies the tests hold the new ones to)."""
    from service import analysis
    from tests.service.pipeline import test_postprocess_quantify as before

    saved = analysis.aha_segments, analysis.nsd_scar
    analysis.aha_segments, analysis.nsd_scar = before._old_aha_segments, before._old_nsd_scar
    try:
        yield
    finally:
        analysis.aha_segments, analysis.nsd_scar = saved


# The revision before round 5, whose source headers module the old side packs with.
BEFORE = "1c331d1"


@contextlib.contextmanager
def _headers_after_the_volume_stage():
    """Source headers before: packed by the previous module, after the volume stage."""
    import importlib.util

    from service import analysis

    source = subprocess.run(["git", "show", f"{BEFORE}:service/dicom/headers.py"], cwd=ROOT,
                            capture_output=True, text=True, check=True).stdout
    spec = importlib.util.spec_from_loader("headers_before", loader=None)
    before = importlib.util.module_from_spec(spec)
    exec(compile(source, "headers_before.py", "exec"), before.__dict__)  # noqa: S102

    class Previous:
        def __init__(self, datasets=()) -> None:
            pass

        def pack(self, datasets) -> bytes:
            return before.pack_headers(datasets)

    saved, analysis.SourceHeaders = analysis.SourceHeaders, Previous
    try:
        yield
    finally:
        analysis.SourceHeaders = saved


OLD = {"ingest": _every_element_converted, "index": _index_row_synced,
       "quantities": _quantities_on_whole_slices,
       "headers": _headers_after_the_volume_stage}


# Report fields that differ between any two analyses: the id, the date, the timings and the
# UIDs derived from the id.
DRAWN = ("id", "created_at", "timings_ms", "seg_series_instance_uid", "seg_sop_instance_uid",
         "sr_sop_instance_uid")


class _NetworkCpu:
    """The service's network timer, also adding up the analysing thread's CPU time inside
    the networks (onnxruntime runs part of them on the calling thread): the CPU time
    outside them is the thread's less this, which another process's load does not add to
    as it adds to wall time."""

    seconds = 0.0

    def __init__(self, predict) -> None:
        self.predict, self.seconds = predict, 0.0

    def __call__(self, batch):
        t0, c0 = time.perf_counter(), time.thread_time()
        try:
            return self.predict(batch)
        finally:
            self.seconds += time.perf_counter() - t0
            _NetworkCpu.seconds += time.thread_time() - c0


class _NoEncoder:
    """The encoder's part before the answer (nothing: it encodes after)."""

    def place(self):
        return contextlib.nullcontext()

    def submit(self, analysis_id: str) -> None:
        pass


def _index_commits(store, report: dict, files: dict[str, bytes], pairs: int
                   ) -> dict[str, list[float]]:
    """The save's index row committed at FULL (old) and NORMAL (new), alternately, ms: each
    timed inside a whole save of the analysis' files, after their fsyncs, as in the
    service (a commit on its own, with nothing else written, took a tenth of it)."""
    from service.store.results import ResultStore

    commits: dict[str, list[float]] = {"old": [], "new": []}
    index = ResultStore._index

    def timed(self, row, identity, push_to=None, synced=True):
        t0 = time.perf_counter()
        index(self, row, identity, push_to, synced=timed.synced)
        timed.ms = (time.perf_counter() - t0) * 1000.0

    ResultStore._index = timed
    try:
        for k in range(pairs):
            for variant in ("old", "new") if k % 2 == 0 else ("new", "old"):
                timed.synced = variant == "old"
                row = report | {"id": f"{2 * k + (variant == 'new'):032x}"}
                store.save(row, files)
                commits[variant].append(timed.ms)
                store.delete(row["id"])
    finally:
        ResultStore._index = index
    return commits


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pipeline", default="cascade-unet")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "outside_speed.json")
    args = parser.parse_args()

    from latency import benchmark_series

    from service import analysis
    from service.analysis import analyse_and_store, warm_up
    from service.config import get_settings
    from service.dicom.ingest import Blob
    from service.pipeline.registry import load_registry
    from service.store.results import ResultStore

    settings = get_settings().model_copy(update={"dicomweb_store_url": None})
    registry = load_registry(ROOT / "models", "cpu", settings.onnx_memory_arena,
                             settings.model_precision)
    pipeline = registry.pipelines[args.pipeline]
    warm_up([pipeline])
    stages = ("decode", "preprocess", "quantify", "encode", "store")
    times = {v: {k: [] for k in ("wall", "networks", "outside", "outside_cpu", *stages)}
             for v in ("old", "new")}
    analysis._TimedPredictor = _NetworkCpu
    with tempfile.TemporaryDirectory(dir=os.environ.get("DATA_DIR")) as tmp:
        folder = benchmark_series(Path(tmp) / "series")
        blobs = [Blob(p.name, p) for p in sorted((folder / "dicom").glob("*.dcm"))]
        store = ResultStore(Path(tmp) / "store")

        def run(variant: str) -> dict:
            with contextlib.ExitStack() as undone:
                if variant == "old":
                    for undo in OLD.values():
                        undone.enter_context(undo())
                _NetworkCpu.seconds = 0.0
                t0, c0 = time.perf_counter(), time.thread_time()
                report = analyse_and_store(blobs, pipeline, settings, store,
                                           encoder=_NoEncoder())
                wall = (time.perf_counter() - t0) * 1000.0
                cpu = (time.thread_time() - c0 - _NetworkCpu.seconds) * 1000.0
            t = report["timings_ms"]
            return {"wall": wall, "networks": t["inference"], "outside": wall - t["inference"],
                    "outside_cpu": cpu, **{s: t[s] for s in stages[:-1]},
                    "store": wall - t["total"], "report": report}

        def kept(report: dict) -> tuple[dict, dict[str, bytes]]:
            """What must not change: the report (less its id, date, timings and the UIDs
            drawn from the id) and the files stored with it."""
            files = {kind: store.path(report["id"], kind).read_bytes()
                     for kind in ("arrays", "identity")}
            # The headers' zip dates its members: their bytes are what must not change.
            with zipfile.ZipFile(store.path(report["id"], "sources")) as archive:
                files |= {name: archive.read(name) for name in archive.namelist()}
            return {k: v for k, v in report.items() if k not in DRAWN}, files

        first = {v: kept(run(v)["report"]) for v in ("old", "new")}
        for k, what in enumerate(("report", "stored files")):
            if first["old"][k] != first["new"][k]:
                raise SystemExit(f"the {what} differ between old and new: " + ", ".join(
                    key for key in first["old"][k]
                    if first["old"][k][key] != first["new"][k].get(key)))
        for k in range(args.runs):
            for variant in ("old", "new") if k % 2 == 0 else ("new", "old"):
                measured = run(variant)
                for key in times[variant]:
                    times[variant][key].append(measured[key])
                last = measured["report"]
                files = {kind: store.path(last["id"], kind).read_bytes()
                         for kind in ("arrays", "identity", "sources")}
                store.delete(last["id"])
        commits = _index_commits(store, last, files, args.runs)
    old, new = times["old"], times["new"]

    def per_pair(key: str) -> float:
        return statistics.median(o / n for o, n in zip(old[key], new[key], strict=True))

    summary = {
        "outside_cpu_old_over_new": per_pair("outside_cpu"),
        "outside_old_over_new": per_pair("outside"),
        "wall_old_over_new": per_pair("wall"),
        "outside_over_networks": {
            v: statistics.median(o / n for o, n in zip(times[v]["outside"],
                                                       times[v]["networks"], strict=True))
            for v in ("old", "new")},
        "median_ms": {v: {key: statistics.median(values) for key, values in times[v].items()}
                      for v in ("old", "new")},
        "stage_old_over_new": {s: per_pair(s) for s in stages},
        "index_commit_ms": {v: statistics.median(commits[v]) for v in ("old", "new")},
    }
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "pipeline": args.pipeline, "runs": args.runs, "undone_for_old": list(OLD),
              "summary": summary, "per_run_ms": times, "index_commit_ms": commits}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(record, indent=1))
    m = summary["median_ms"]
    print(f"outside the networks, CPU time of the analysing thread: old "
          f"{m['old']['outside_cpu']:.1f} ms, new {m['new']['outside_cpu']:.1f} ms, "
          f"x{summary['outside_cpu_old_over_new']:.2f} (median over pairs of old / new)")
    print(f"outside the networks, wall: old {m['old']['outside']:.1f} ms, new "
          f"{m['new']['outside']:.1f} ms, x{summary['outside_old_over_new']:.2f}; whole "
          f"analysis x{summary['wall_old_over_new']:.2f}")
    print("outside / networks: " + ", ".join(
        f"{v} {r:.2f}" for v, r in summary["outside_over_networks"].items()))
    for s in stages:
        print(f"  {s:10s} {m['old'][s]:6.1f} -> {m['new'][s]:6.1f} ms  "
              f"x{summary['stage_old_over_new'][s]:.2f}")
    c = summary["index_commit_ms"]
    print(f"the index row's commit, within a save: {c['old']:.2f} -> {c['new']:.2f} ms "
          "(medians)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
