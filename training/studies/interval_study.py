"""Which spread ranks the scar-% errors: the interval's terms against test-time augmentation.

``python -m training.studies.interval_study --emidec ../shared/data/emidec [--work runs/train]``
writes ``docs/results/interval_study.json``. On the cascade's calibration series (phantom
validation and calibration series, EMIDEC `validation` as acquired and darkened; never a
test set) it measures every spread term of :mod:`service.pipeline.uncertainty` and the
range of the scar % over the scar U-Net run on the eight flips and rotations of its input
(test-time augmentation, seven more network runs), then reports per group the Spearman
rank correlation of each with the absolute error, and the median width of the interval
calibrated on each candidate spread. It is how the shipped spread was chosen: the terms
need no extra network run.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np
from scipy import stats
from tqdm import tqdm

from service.pipeline.ensemble import SQUARE_SYMMETRIES, SymmetryAverage
from service.pipeline.postprocess import clean_myocardium
from service.pipeline.quantify import scar_fraction
from service.pipeline.registry import load_registry
from service.pipeline.segment import Network, myocardium_probability, segment_on
from service.pipeline.uncertainty import (
    CalibrationSeries,
    calibrate,
    spread_terms,
    term_sets,
)
from training.data import emidec
from training.data.dataset import validation_series
from training.data.phantoms.__main__ import generate_many
from training.data.sources import PhantomSource, Source
from training.evaluation.scoring import (
    INTERVAL_FLOORS,
    INTERVAL_LEVEL,
    INTERVAL_OFFSETS,
    calibration_group,
)
from training.studies.lge_gate_study import (
    CALIBRATION_SEED,
    CALIBRATION_SERIES,
    TRAIN_SEED,
    TRAIN_SERIES,
    VALIDATION_SERIES,
)

ROOT = Path(__file__).resolve().parents[2]
def symmetry_network(net: Network, symmetry: tuple[int, bool]) -> Network:
    """The network run on its input turned and flipped (one of
    :data:`~service.pipeline.ensemble.SQUARE_SYMMETRIES`), its output turned back."""
    return dataclasses.replace(net, predict=SymmetryAverage(net.predict, [symmetry]))


def study_row(source: Source, myo_net: Network, scar_net: Network) -> dict:
    series = source.read()
    truth = 100.0 * scar_fraction(series.true_scar, series.true_myocardium)
    myo_p = myocardium_probability(series.images, series.spacing, myo_net)
    ring = clean_myocardium(myo_p)
    members, seconds = [], []
    for symmetry in SQUARE_SYMMETRIES:
        t0 = time.perf_counter()
        members.append(segment_on(series.images, series.spacing, ring, myo_p,
                                  symmetry_network(scar_net, symmetry)))
        seconds.append(time.perf_counter() - t0)
    percents = [100.0 * scar_fraction(m.scar, m.myocardium) for m in members]
    seg = members[0]  # the identity: the shipped result
    terms = spread_terms(seg.myocardium, seg.scar, seg.myocardium_probability,
                         seg.scar_probability, ring, scar_net.threshold, INTERVAL_OFFSETS)
    return {"series_id": source.series_id, "group": calibration_group(source),
            "error": percents[0] - truth,
            "terms": terms | {"tta": float(max(percents) - min(percents))},
            "slices": len(series.images),
            # What the seven extra members cost (network and mapping back), milliseconds.
            "tta_extra_ms": 1000.0 * sum(seconds[1:])}


def summarise(rows: list[dict]) -> dict:
    groups = sorted({r["group"] for r in rows})
    names = list(rows[0]["terms"])
    rho = {g: {n: float(stats.spearmanr([r["terms"][n] for r in rows if r["group"] == g],
                                        [abs(r["error"]) for r in rows if r["group"] == g]
                                        ).statistic) for n in names} for g in groups}
    series = [CalibrationSeries(r["group"], r["error"], r["terms"]) for r in rows]
    candidates = {"+".join(c): [c] for c in term_sets()} | {"tta": [("tta",)],
                                                            "tta+rings": [("tta", "rings")]}
    widths = {}
    for name, candidate in candidates.items():
        cal = calibrate(series, INTERVAL_OFFSETS, INTERVAL_FLOORS, INTERVAL_LEVEL,
                        candidates=candidate)
        widths[name] = {"scale": cal.scale, "floor": cal.floor_percent, "offset": cal.offset,
                        "median_width": {
                            g: float(np.median([2 * cal.scale * (sum(
                                s.terms[f"scar@{cal.offset:g}" if t == "scar" else t]
                                for t in cal.terms) + cal.floor_percent)
                                for s in series if s.group == g])) for g in groups}}
    return {"series": {g: sum(r["group"] == g for r in rows) for g in groups},
            "tta_extra_ms_median": float(np.median([r["tta_extra_ms"] for r in rows])),
            "slices_median": float(np.median([r["slices"] for r in rows])),
            "spearman_with_abs_error": rho, "calibrated_widths": widths}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/train"))
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path,
                        default=ROOT / "docs" / "results" / "interval_study.json")
    args = parser.parse_args(argv)
    registry = load_registry(args.models, "cpu", precision="fp32")
    myo_net = registry.models["myocardium-unet"].network
    scar_net = registry.models["scar-unet"].network
    phantoms = args.work / "phantoms"
    train = generate_many(phantoms / "train", TRAIN_SERIES, TRAIN_SEED)
    calibration = generate_many(phantoms / "calibration", CALIBRATION_SERIES, CALIBRATION_SEED)
    val_idx = sorted(validation_series(TRAIN_SERIES, VALIDATION_SERIES, TRAIN_SEED).tolist())
    sources = ([PhantomSource(train[i]) for i in val_idx]
               + [PhantomSource(d) for d in calibration]
               + emidec.cases(args.emidec, "validation")
               + emidec.cases(args.emidec, "validation", dark=True))
    started = time.perf_counter()
    rows = [study_row(s, myo_net, scar_net) for s in tqdm(sources, unit="series")]
    result = summarise(rows) | {"seconds": time.perf_counter() - started, "rows": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(json.dumps({k: result[k] for k in ("spearman_with_abs_error", "calibrated_widths")},
                     indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
