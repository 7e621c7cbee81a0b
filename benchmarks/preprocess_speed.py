"""The preprocessing before and after issue 54's speed-ups, side by side in one process.

The old code is the frozen copy the tests compare against
(``tests/service/pipeline/frozen_preprocess.py``); the new is the service's. On the
12 x 256x256 latency series, old and new run alternately (``--runs`` pairs, after one
unmeasured run each): each pipeline's ``segment`` (its networks timed apart, so the time
outside them is a ratio to them measured in the same run), the Hough search, and the
cascade's two ``model_inputs``. This host's speed drifts, so only ratios are reported:
old / new per pair (the median over pairs), and the time outside the networks over the
networks' own. Prints them and writes ``benchmarks/results/preprocess_speed.json``; run it
niced on a busy machine (``nice -n 19``), and on a quiet one for figures to publish.

    python benchmarks/preprocess_speed.py --runs 20
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


class _Timed:
    """A predictor that adds up its own time."""

    def __init__(self, predict) -> None:
        self.predict, self.seconds = predict, 0.0

    def __call__(self, batch):
        t0 = time.perf_counter()
        try:
            return self.predict(batch)
        finally:
            self.seconds += time.perf_counter() - t0


@contextlib.contextmanager
def _old_postprocess():
    """The old pipeline with the old mask helpers too (they were made faster, not changed)."""
    from service.pipeline import postprocess
    from tests.service.pipeline import frozen_preprocess as frozen

    saved = postprocess.mask_box, postprocess.encloses_a_hole
    postprocess.mask_box, postprocess.encloses_a_hole = frozen.mask_box, frozen.encloses_a_hole
    try:
        yield
    finally:
        postprocess.mask_box, postprocess.encloses_a_hole = saved


def _segment_once(which: str, images, spacing, pipeline) -> tuple[float, float]:
    """(wall ms, networks ms) of one ``segment`` of the pipeline, old or new code."""
    from service.pipeline.segment import segment
    from tests.service.pipeline.frozen_preprocess import frozen_segment

    myo, scar = (_Timed(pipeline.myocardium.network.predict),
                 _Timed(pipeline.scar.network.predict))
    myo_net = replace(pipeline.myocardium.network, predict=myo)
    scar_net = replace(pipeline.scar.network, predict=scar)
    t0 = time.perf_counter()
    if which == "old":
        with _old_postprocess():
            frozen_segment(images, spacing, myo_net, scar_net)
    else:
        segment(images, spacing, myo_net, scar_net)
    return (time.perf_counter() - t0) * 1000.0, (myo.seconds + scar.seconds) * 1000.0


def _pairs(old, new, runs: int) -> dict:
    """Alternating old/new calls (the order flipped every pair); ms medians and the
    median of the per-pair ratios old / new."""
    old(), new()  # unmeasured: caches, first-call allocations
    times = {"old": [], "new": []}
    for k in range(runs):
        for name, f in (("old", old), ("new", new)) if k % 2 == 0 else (("new", new),
                                                                      ("old", old)):
            t0 = time.perf_counter()
            f()
            times[name].append((time.perf_counter() - t0) * 1000.0)
    return {"old_ms": statistics.median(times["old"]), "new_ms": statistics.median(times["new"]),
            "speedup": statistics.median(o / n for o, n in zip(times["old"], times["new"],
                                                               strict=True))}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--pipelines", nargs="+", default=["cascade-unet", "enet", "enet-raw"])
    args = parser.parse_args()

    import pydicom

    sys.path.insert(0, str(ROOT / "benchmarks"))
    from latency import benchmark_series, host_calibration_ms

    from service.pipeline import hough, preprocess
    from service.pipeline.registry import load_registry
    from service.pipeline.volume import build_volume
    from tests.service.pipeline import frozen_preprocess as frozen

    registry = load_registry(ROOT / "models", "cpu")
    with tempfile.TemporaryDirectory() as tmp:
        folder = benchmark_series(Path(tmp))
        volume = build_volume([pydicom.dcmread(p) for p in (folder / "dicom").glob("*.dcm")])
    images, spacing = volume.images, volume.spacing
    calibration = [host_calibration_ms()]
    results: dict[str, dict] = {}

    myo_spec = registry.pipelines["cascade-unet"].myocardium.network.spec
    box_spec = registry.pipelines["cascade-unet"].scar.network.spec
    ring = frozen.frozen_segment(images, spacing, registry.pipelines["cascade-unet"].myocardium
                                 .network, registry.pipelines["cascade-unet"].scar.network
                                 ).myocardium
    boxes = preprocess.crop_transforms(images, spacing, box_spec, ring)
    old_boxes = frozen.crop_transforms(images, spacing, box_spec, ring)
    results["model_inputs, cascade myocardium U-Net"] = _pairs(
        lambda: frozen.model_inputs(images, spacing, myo_spec),
        lambda: preprocess.model_inputs(images, spacing, myo_spec), args.runs)
    results["model_inputs, cascade scar U-Net (heart box)"] = _pairs(
        lambda: frozen.model_inputs(images, spacing, box_spec, old_boxes, ring),
        lambda: preprocess.model_inputs(images, spacing, box_spec, boxes, ring), args.runs)
    results["Hough circles (ENet crop), 12 slices"] = _pairs(
        lambda: frozen.hough_lv_circles(images, spacing),
        lambda: hough.hough_lv_circles(images, spacing), args.runs)

    for name in args.pipelines:
        pipeline = registry.pipelines[name]
        walls = {"old": [], "new": []}
        networks = {"old": [], "new": []}
        for which in ("old", "new"):  # unmeasured
            _segment_once(which, images, spacing, pipeline)
        for k in range(args.runs):
            for which in ("old", "new") if k % 2 == 0 else ("new", "old"):
                wall, net = _segment_once(which, images, spacing, pipeline)
                walls[which].append(wall)
                networks[which].append(net)
        outside = {w: [a - b for a, b in zip(walls[w], networks[w], strict=True)]
                   for w in walls}
        results[f"segment {name}, outside the networks"] = {
            "old_ms": statistics.median(outside["old"]),
            "new_ms": statistics.median(outside["new"]),
            "speedup": statistics.median(o / n for o, n in zip(outside["old"], outside["new"],
                                                               strict=True)),
            "networks_ms": statistics.median(networks["old"] + networks["new"]),
            "old_over_networks": statistics.median(
                o / n for o, n in zip(outside["old"], networks["old"], strict=True)),
            "new_over_networks": statistics.median(
                o / n for o, n in zip(outside["new"], networks["new"], strict=True)),
        }
    calibration.append(host_calibration_ms())
    for label, r in results.items():
        line = f"{label}: old/new {r['speedup']:.2f}x"
        if "new_over_networks" in r:
            line += (f"; outside/networks {r['old_over_networks']:.2f} -> "
                     f"{r['new_over_networks']:.2f}")
        print(line)
    record = {"date": datetime.now(UTC).isoformat(timespec="seconds"),
              "machine": f"{os.cpu_count()} CPU cores ({platform.machine()})",
              "series": "12 slices, 256x256, 1.4 mm (latency.py's)", "runs": args.runs,
              "nice": os.nice(0), "host_calibration_ms": calibration,
              "note": "ms figures are medians on this host at this time; compare the ratios",
              "results": results}
    out = ROOT / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "preprocess_speed.json").write_text(json.dumps(record, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
