"""The result store's durable writes before and after issue 54's changes, side by side.

One analysis' files as the service stores them (the latency series' report, arrays,
identity and source headers before the answer; its SEG and SR after), written by the
store as it is (their fsyncs issued together, :func:`service.store.files.write_synced`;
the masks as bits, :mod:`service.store.arrays`) and by a copy of the store as it was (one
fsync after another, a folder fsync per SEG and SR; a bool a pixel), alternately,
``--runs`` pairs. The disk's speed drifts with whatever else writes to
it, so the figure is the median over pairs of old / new. Prints it and writes
``benchmarks/results/store_speed.json``.

With ``--before float-images`` the old side is today's store with the images stored as
float32 rather than in the narrowest whole-number type (issue 54, round 8), to
``store_speed_images.json``.

    python benchmarks/store_speed.py --runs 30
    python benchmarks/store_speed.py --runs 30 --before float-images
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from service.store.files import fsync_dir  # noqa: E402
from service.store.results import FILES, ResultStore  # noqa: E402


class SequentialStore(ResultStore):
    """The store before the change: each file fsynced in turn, SEG and SR each renamed and
    their folder fsynced in turn (frozen here for the comparison)."""

    def save(self, report: dict, files: dict[str, bytes], push_to: str | None = None) -> None:
        tmp = self.staging / report["id"]
        tmp.mkdir()
        payloads = {FILES["report"]: json.dumps(report).encode()} | {
            FILES[key]: data for key, data in files.items()}
        for name, data in payloads.items():
            with open(tmp / name, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
        os.replace(tmp, self.analyses / report["id"])
        fsync_dir(self.analyses)
        self._index(report, {}, push_to)

    def _write_into(self, analysis_id: str, files: dict[str, bytes]) -> bool:
        for kind, data in files.items():
            path = self.analyses / analysis_id / FILES[kind]
            fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(name, path)
            fsync_dir(path.parent)
        return True


def analysis_files(out: Path) -> tuple[dict, dict[str, bytes], dict[str, bytes]]:
    """The latency series' report, stored files and SEG and SR, as the service makes them."""
    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency import benchmark_series

    from service.analysis import analyse_files
    from service.config import get_settings
    from service.dicom.ingest import Blob
    from service.encoding import encode_stored
    from service.pipeline.registry import load_registry

    settings = get_settings()
    registry = load_registry(ROOT / "models", "cpu", settings.onnx_memory_arena, "fp32")
    folder = benchmark_series(out)
    blobs = [Blob(p.name, p) for p in sorted((folder / "dicom").glob("*.dcm"))]
    analysed = analyse_files(blobs, registry.pipelines["cascade-unet"],
                             settings.max_series_pixels)
    return analysed.report, analysed.files, encode_stored(analysed.report, analysed.files)


def old_layout(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same files with the arrays as stored before: one bool a pixel for each mask."""
    from service.store import arrays

    buffer = io.BytesIO()
    np.savez(buffer, **arrays.load(files["arrays"]))
    return files | {"arrays": buffer.getvalue()}


def float_images(files: dict[str, bytes]) -> dict[str, bytes]:
    """The same files with the images stored as float32, the masks as bits as today."""
    with np.load(io.BytesIO(files["arrays"])) as stored:
        layout = {key: stored[key] for key in stored.files}
    layout["images"] = layout["images"].astype(np.float32)
    buffer = io.BytesIO()
    np.savez(buffer, **layout)
    return files | {"arrays": buffer.getvalue()}


# What the old side is: its results file, its layout of the files and its store.
BEFORE = {"bool-masks": ("store_speed.json", old_layout, SequentialStore),
          "float-images": ("store_speed_images.json", float_images, ResultStore)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--before", choices=sorted(BEFORE), default="bool-masks",
                        help="what the old side is: the store before issue 54 (a bool a "
                             "pixel, fsyncs in turn) or today's with float32 images")
    parser.add_argument("--out", type=Path, help="default: benchmarks/results/<see above>")
    args = parser.parse_args()
    name, layout, old_store = BEFORE[args.before]
    out = args.out or ROOT / "benchmarks" / "results" / name
    with tempfile.TemporaryDirectory(dir=os.environ.get("DATA_DIR")) as tmp:
        report, files, encoded = analysis_files(Path(tmp) / "series")
        before = layout(files)
        stores = {"old": old_store(Path(tmp) / "old"), "new": ResultStore(Path(tmp) / "new")}
        times: dict[str, dict[str, list[float]]] = {
            name: {"save": [], "save_encoded": []} for name in stores}
        for k in range(args.runs + 1):
            for name in ("old", "new") if k % 2 == 0 else ("new", "old"):
                store, analysis = stores[name], report | {"id": uuid.uuid4().hex}
                t0 = time.perf_counter()
                store.save(analysis, files if name == "new" else before)
                t1 = time.perf_counter()
                store.save_encoded(analysis["id"], encoded)
                t2 = time.perf_counter()
                if k:  # the first pair warms the folders and the index
                    times[name]["save"].append((t1 - t0) * 1000.0)
                    times[name]["save_encoded"].append((t2 - t1) * 1000.0)
    summary = {}
    for step in ("save", "save_encoded"):
        old, new = times["old"][step], times["new"][step]
        summary[step] = {"old_ms": statistics.median(old), "new_ms": statistics.median(new),
                         "speedup": statistics.median(o / n for o, n in zip(old, new,
                                                                            strict=True))}
    both = [(o1 + o2) / (n1 + n2) for o1, o2, n1, n2 in zip(
        times["old"]["save"], times["old"]["save_encoded"], times["new"]["save"],
        times["new"]["save_encoded"], strict=True)]
    summary["both"] = {"speedup": statistics.median(both)}
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "runs": args.runs, "before": args.before,
              "bytes": {k: len(v) for k, v in (files | encoded).items()},
              "old_arrays_bytes": len(before["arrays"]),
              "summary": summary, "per_run_ms": times}
    out.write_text(json.dumps(record, indent=1))
    for step, s in summary.items():
        figures = f"{s['old_ms']:.1f} -> {s['new_ms']:.1f} ms, " if "old_ms" in s else ""
        print(f"{step}: {figures}x{s['speedup']:.2f} (median over pairs of old / new)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
