"""The ENet's Hough search near the first myocardium against the whole-slice search.

Serving searches for the LV circle only within ``HEART_MARGIN_MM`` of the myocardium
network's ring (``service.pipeline.hough``, issue 54); training's crops come from the
whole-slice search. On phantom series, the tests' seeded series and EMIDEC ``train`` and
``validation`` (as acquired and darkened; never ``test``), this compares the two: circles
(identical, centre shift, radius), the ENet crops, and the masks both ENet pipelines then
draw (scar pixels, scar DSC and scar % between the two), with each search's time side by
side. Writes ``benchmarks/results/hough_window.json``.

    nice -n 19 python benchmarks/hough_window.py --phantoms 12 --emidec ../shared/data/emidec
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def _series(args) -> list[tuple]:
    """(name, images, spacing, (true myocardium, true scar) or None)."""
    from tests.service.pipeline.test_preprocess_frozen import all_series
    from training.data.phantoms import render, sample_spec

    out = [(f"tests: {s.name}", s.images, s.spacing, None) for s in all_series()]
    for k in range(args.phantoms):
        spec = sample_spec(args.seed, k)
        rendered = render(spec)
        out.append((f"phantom {args.seed}/{k}", [im.astype(np.float32) for im in rendered.image],
                    (spec.acquisition.pixel_spacing,) * 2,
                    (rendered.myocardium.astype(bool), rendered.scar.astype(bool))))
    if args.emidec:
        from training.data.emidec import cases

        for split in ("train", "validation"):
            for dark in (False, True):
                for case in cases(Path(args.emidec), split, dark)[:args.emidec_cases]:
                    series = case.read()
                    out.append((f"emidec {split} {case.series_id}",
                                [np.asarray(im, np.float32) for im in series.images],
                                series.spacing,
                                (series.true_myocardium, series.true_scar)))
    return out


def _timed(f):
    t0 = time.perf_counter()
    result = f()
    return result, (time.perf_counter() - t0) * 1000.0


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int((a & b).sum()) / total


def compare(name, images, spacing, truth, registry) -> dict | None:
    from service.pipeline.hough import hough_crop_transform, hough_lv_circles
    from service.pipeline.preprocess import model_inputs
    from service.pipeline.segment import (
        _regions_on_source,
        masks_from_regions,
        myocardium_probability,
        ring_from,
    )

    enet = registry.pipelines["enet"]
    myo_p = myocardium_probability(images, spacing, enet.myocardium.network)
    ring = ring_from(myo_p, enet.myocardium.network)
    if not ring.any():
        return None  # refused by the service before any scar network
    heart = ring.any(axis=0)
    whole, whole_ms = _timed(lambda: hough_lv_circles(images, spacing))
    near, near_ms = _timed(lambda: hough_lv_circles(images, spacing, heart=heart))
    shifts = [float(np.hypot(*((np.subtract(a.centre, b.centre)) * np.asarray(spacing))))
              for a, b in zip(whole, near, strict=True)]
    row = {"series": name, "slices": len(images),
           "identical_circles": sum(a == b for a, b in zip(whole, near, strict=True)),
           "max_centre_shift_mm": max(shifts),
           "max_radius_change_mm": max(abs(a.radius_mm - b.radius_mm)
                                       for a, b in zip(whole, near, strict=True)),
           "whole_ms": whole_ms, "near_ms": near_ms}
    for label in ("enet", "enet-raw"):
        net = registry.pipelines[label].scar.network
        masks = []
        for circles in (whole, near):
            transforms = [hough_crop_transform(c, spacing, np.shape(im),
                                               model_side=net.spec.shape[0])
                          for c, im in zip(circles, images, strict=True)]
            batch, transforms = model_inputs(images, spacing, net.spec, transforms, ring)
            regions = _regions_on_source(net, batch, transforms)
            masks.append(masks_from_regions(regions, spacing, ring, myo_p, net))
        a, b = masks
        percent = [100.0 * m.scar.sum() / max(1, m.myocardium.sum()) for m in masks]
        row[label] = {"scar_pixels_differing": int((a.scar != b.scar).sum()),
                      "myocardium_pixels_differing": int((a.myocardium != b.myocardium).sum()),
                      "scar_dice": _dice(a.scar, b.scar),
                      "scar_percent_change": percent[1] - percent[0]}
        if truth is not None:  # each search's masks against the truth
            row[label] |= {f"{part}_dice_to_truth_{search}": _dice(getattr(m, part), t)
                           for search, m in (("whole", a), ("near", b))
                           for part, t in zip(("myocardium", "scar"), truth, strict=True)}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--phantoms", type=int, default=12)
    parser.add_argument("--seed", type=int, default=5407)
    parser.add_argument("--emidec", type=Path, default=None)
    parser.add_argument("--emidec-cases", type=int, default=1000,
                        help="at most this many cases per split and contrast")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "benchmarks" / "results" / "hough_window.json")
    args = parser.parse_args()

    from service.pipeline.hough import HEART_MARGIN_MM
    from service.pipeline.registry import load_registry

    registry = load_registry(ROOT / "models", "cpu")
    rows, skipped = [], []
    for name, images, spacing, truth in _series(args):
        row = compare(name, images, spacing, truth, registry)
        if row is None:
            skipped.append(name)
            continue
        rows.append(row)
        print(f"{name:40s} circles {row['identical_circles']:2d}/{row['slices']:2d} same, "
              f"shift <= {row['max_centre_shift_mm']:5.1f} mm; enet scar DSC "
              f"{row['enet']['scar_dice']:.3f}, enet-raw {row['enet-raw']['scar_dice']:.3f}; "
              f"{row['whole_ms']:.0f} -> {row['near_ms']:.0f} ms", flush=True)
    summary = {
        "series": len(rows), "slices": sum(r["slices"] for r in rows),
        "series_with_every_circle_identical": sum(r["identical_circles"] == r["slices"]
                                                  for r in rows),
        "slices_with_identical_circle": sum(r["identical_circles"] for r in rows),
        "median_speedup": statistics.median(r["whole_ms"] / r["near_ms"] for r in rows),
    }
    for label in ("enet", "enet-raw"):
        summary[label] = {
            "series_with_identical_masks": sum(r[label]["scar_pixels_differing"] == 0
                                               and r[label]["myocardium_pixels_differing"] == 0
                                               for r in rows),
            "min_scar_dice": min(r[label]["scar_dice"] for r in rows),
            "max_abs_scar_percent_change": max(abs(r[label]["scar_percent_change"])
                                               for r in rows)}
        scored = [r[label] for r in rows if "scar_dice_to_truth_whole" in r[label]]
        for group, members in (("phantom", "phantom"), ("emidec", "emidec")):
            picked = [r[label] for r in rows if r["series"].startswith(members)
                      and "scar_dice_to_truth_whole" in r[label]]
            if picked:
                summary[label][f"{group}_median_dice_to_truth"] = {
                    f"{part}_{search}": statistics.median(
                        x[f"{part}_dice_to_truth_{search}"] for x in picked)
                    for part in ("myocardium", "scar") for search in ("whole", "near")}
        summary[label]["series_scored_against_truth"] = len(scored)
    print(json.dumps(summary, indent=1))
    args.out.write_text(json.dumps({
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "heart_margin_mm": HEART_MARGIN_MM, "summary": summary, "skipped": skipped,
        "rows": rows}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
