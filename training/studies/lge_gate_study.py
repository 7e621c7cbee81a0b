"""The image-reading gate's measures on the LGE sources it may choose on, and on negatives.

``python -m training.studies.lge_gate_study --emidec ../shared/data/emidec [--work runs/train]``
writes ``docs/results/lge_gate.json``: for EMIDEC `train` and `validation` (as acquired
and darkened; never `test`), the phantom validation and calibration series, and the
same phantom hearts rendered as cine and T2-weighted series with LGE headers, the
measures of :func:`service.pipeline.acceptance.lge_evidence` on the myocardium
network's ring (their range per group) and how many series each rule flags or
refuses. The thresholds in ``acceptance`` were set from it: no LGE source here crosses
them. How the gate does on the test sets is in models/EVALUATION.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from tqdm import tqdm

from service.pipeline.registry import load_registry
from training.data import emidec
from training.data.dataset import validation_series
from training.data.phantoms.__main__ import generate_many
from training.data.phantoms.sequences import OTHER_SEQUENCES, generate_in_sequence
from training.data.sources import PhantomSource, Source
from training.evaluation.gate import gate_reading, summarise_readings

ROOT = Path(__file__).resolve().parents[2]
# Phantom seeds: the training command's (its validation series), and one for calibration
# and the rendered negatives that no network has seen.
TRAIN_SEED, TRAIN_SERIES, VALIDATION_SERIES = 1000, 160, 24
CALIBRATION_SEED, CALIBRATION_SERIES, NEGATIVE_SERIES = 3000, 60, 20


def study_sources(emidec_root: Path, work: Path) -> dict[str, list[Source]]:
    phantoms = work / "phantoms"
    train = generate_many(phantoms / "train", TRAIN_SERIES, TRAIN_SEED)
    calibration = generate_many(phantoms / "calibration", CALIBRATION_SERIES, CALIBRATION_SEED)
    val_idx = sorted(validation_series(TRAIN_SERIES, VALIDATION_SERIES, TRAIN_SEED).tolist())
    groups: dict[str, list[Source]] = {}
    for split in ("train", "validation"):
        groups[f"EMIDEC {split}"] = emidec.cases(emidec_root, split)
        groups[f"EMIDEC {split} darkened"] = emidec.cases(emidec_root, split, dark=True)
    groups["phantoms validation"] = [PhantomSource(train[i]) for i in val_idx]
    groups["phantoms calibration"] = [PhantomSource(d) for d in calibration]
    for sequence in OTHER_SEQUENCES:
        groups[f"rendered {sequence} (LGE headers)"] = [
            PhantomSource(d) for d in generate_in_sequence(
                phantoms / "negatives", NEGATIVE_SERIES, CALIBRATION_SEED, sequence)]
    return groups


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--work", type=Path, default=Path("runs/train"),
                        help="where the phantoms are written (the training command's)")
    parser.add_argument("--models", type=Path, default=ROOT / "models")
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "results" / "lge_gate.json")
    args = parser.parse_args(argv)
    network = load_registry(args.models, "cpu", precision="fp32") \
        .models["myocardium-unet"].network
    result = {}
    for group, sources in study_sources(args.emidec, args.work).items():
        rows = [gate_reading(s, network) for s in tqdm(sources, desc=group, unit="series")]
        result[group] = summarise_readings(rows)
        print(group, json.dumps({k: result[group][k] for k in ("series", "refused",
                                                                "flagged")}), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
