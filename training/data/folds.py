"""Cross-validation folds of EMIDEC ``train`` + ``validation``, by patient.

Every choice of the release (thresholds, post-processing, test-time
augmentation, the interval's calibration) is made on the out-of-fold
predictions of these 80 cases, as nnU-Net does, never on ``test``. The
folds are drawn once (seeded, stratified by normal and infarct cases, so
each fold has the set's share of both) and written to ``emidec_folds.json``
beside this file, which the release reads: a patient is in exactly one
fold, and both contrasts and every training copy of a case follow it.

``python -m training.data.folds --emidec ../shared/data/emidec`` rewrites
the file (only the case names are stored: no image data).
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

FOLDS_FILE = Path(__file__).with_name("emidec_folds.json")
DEFAULT_FOLDS = 5
DEFAULT_SEED = 2026


def is_infarct_case(case: str) -> bool:
    """EMIDEC names its cases ``Case_N…`` (normal) and ``Case_P…`` (infarct)."""
    return case.startswith("Case_P")


def assign_folds(cases: Sequence[str], folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED
                 ) -> dict[str, int]:
    """Each case's fold: within each stratum (normal, infarct) the cases in a seeded order
    are dealt round-robin, so fold sizes and strata differ by at most one between folds.

    The order of ``cases`` does not matter (they are sorted first).
    """
    if folds < 2:
        raise ValueError("cross-validation needs at least 2 folds")
    if len(set(cases)) != len(cases):
        raise ValueError("a case is listed twice")
    rng = np.random.default_rng(seed)
    out: dict[str, int] = {}
    start = 0
    for infarct in (False, True):
        stratum = sorted(c for c in cases if is_infarct_case(c) == infarct)
        for i, case in enumerate(rng.permutation(stratum)):
            out[str(case)] = (start + i) % folds
        # The next stratum starts where this one stopped, so sizes stay balanced.
        start = (start + len(stratum)) % folds
    return dict(sorted(out.items()))


def fold_cases(assignment: dict[str, int], fold: int) -> tuple[list[str], list[str]]:
    """(training cases, held-out cases) of one fold."""
    if fold not in set(assignment.values()):
        raise ValueError(f"fold {fold} is not one of the assignment's")
    held = sorted(c for c, f in assignment.items() if f == fold)
    return sorted(c for c, f in assignment.items() if f != fold), held


def read_folds(path: Path = FOLDS_FILE) -> dict[str, int]:
    return {str(k): int(v) for k, v in json.loads(path.read_text())["folds"].items()}


def write_folds(split: dict[str, list[str]], path: Path = FOLDS_FILE,
                folds: int = DEFAULT_FOLDS, seed: int = DEFAULT_SEED) -> dict[str, int]:
    assignment = assign_folds(split["train"] + split["validation"], folds, seed)
    path.write_text(json.dumps({
        "about": "EMIDEC train + validation by patient, stratified normal/infarct "
                 "(training/data/folds.py); test is never in a fold",
        "folds_count": folds, "seed": seed, "folds": assignment}, indent=1) + "\n")
    return assignment


def main(argv: list[str] | None = None) -> int:
    from training.data.emidec import read_split

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--emidec", type=Path, required=True)
    parser.add_argument("--folds", type=int, default=DEFAULT_FOLDS)
    parser.add_argument("--seed", type=int, default=DEFAULT_SEED)
    args = parser.parse_args(argv)
    assignment = write_folds(read_split(args.emidec), folds=args.folds, seed=args.seed)
    print(f"{len(assignment)} cases in {args.folds} folds written to {FOLDS_FILE}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
