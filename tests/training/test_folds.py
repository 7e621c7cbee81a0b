"""Cross-validation folds of EMIDEC train + validation: by patient, stratified, deterministic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.crossval import fold_pool, held_out_sources
from training.data import emidec
from training.data.folds import FOLDS_FILE, assign_folds, fold_cases, read_folds

CASES = [f"Case_N{i:03d}" for i in range(1, 27)] + [f"Case_P{i:03d}" for i in range(1, 55)]


def test_fold_assignment_is_deterministic_and_ignores_the_order_given() -> None:
    first = assign_folds(CASES, 5, seed=7)
    assert first == assign_folds(list(reversed(CASES)), 5, seed=7)
    assert first != assign_folds(CASES, 5, seed=8)


def test_every_case_is_in_one_fold_and_the_strata_are_balanced() -> None:
    folds = assign_folds(CASES, 5, seed=7)
    assert sorted(folds) == sorted(CASES)
    sizes = Counter(folds.values())
    assert max(sizes.values()) - min(sizes.values()) <= 1
    for prefix in ("Case_N", "Case_P"):
        per_fold = Counter(f for c, f in folds.items() if c.startswith(prefix))
        assert len(per_fold) == 5 and max(per_fold.values()) - min(per_fold.values()) <= 1


def test_a_case_listed_twice_or_one_fold_is_refused() -> None:
    with pytest.raises(ValueError, match="twice"):
        assign_folds(CASES + CASES[:1])
    with pytest.raises(ValueError, match="2 folds"):
        assign_folds(CASES, 1)


def test_the_committed_folds_are_the_seeded_assignment_of_their_cases() -> None:
    data = json.loads(FOLDS_FILE.read_text())
    folds = read_folds()
    assert folds == assign_folds(list(folds), data["folds_count"], data["seed"])
    assert len(folds) == 80 and not any("test" in c for c in folds)


def test_the_committed_folds_hold_train_and_validation_and_never_test() -> None:
    root = Path(__file__).parents[3] / "shared" / "data" / "emidec"
    if not (root / "split.json").exists():
        pytest.skip("EMIDEC is not beside the checkout")
    split = emidec.read_split(root)
    folds = read_folds()
    assert set(folds) == set(split["train"]) | set(split["validation"])
    assert not set(folds) & set(split["test"])


def test_a_fold_trains_on_the_other_folds_cases_and_validates_on_its_own(tmp_path: Path) -> None:
    assignment = assign_folds(CASES, 5, seed=7)
    phantoms = [tmp_path / f"p{i}" for i in range(6)]
    pool = fold_pool(tmp_path, phantoms, np.array([4, 5]), copies=2, seed=1,
                     assignment=assignment)
    seen = set()
    for fold in range(5):
        train_rows, val_rows = pool.rows(assignment, fold)
        training, held = fold_cases(assignment, fold)
        assert not set(train_rows) & set(val_rows)
        train_sources = [pool.sources[i] for i in train_rows]
        val_sources = [pool.sources[i] for i in val_rows]
        train_cases = {s.case for s in train_sources if isinstance(s, emidec.EmidecCase)}
        val_cases = {s.case for s in val_sources if isinstance(s, emidec.EmidecCase)}
        assert train_cases == set(training) and val_cases == set(held)
        # Both contrasts, two copies each, of every training case, at drawn spacings; each
        # held-out case in both contrasts at the nominal spacing.
        copies = Counter((s.case, s.dark) for s in train_sources
                         if isinstance(s, emidec.EmidecCase))
        assert set(copies.values()) == {2} and len(copies) == 2 * len(training)
        held_copies = [s for s in val_sources if isinstance(s, emidec.EmidecCase)]
        assert len(held_copies) == 2 * len(held)
        assert {s.spacing_mm for s in held_copies} == {emidec.NOMINAL_SPACING_MM}
        # The phantoms: the validation series validate, the rest train, in every fold.
        assert set(phantoms[:4]) == {s for s in train_sources if isinstance(s, Path)}
        assert set(phantoms[4:]) == {s for s in val_sources if isinstance(s, Path)}
        seen |= val_cases
    assert seen == set(CASES)
    assert len(held_out_sources(tmp_path, CASES[:3])) == 6


def test_a_cases_training_copies_are_the_same_in_every_fold(tmp_path: Path) -> None:
    a = emidec.case_copies(tmp_path, ["Case_P001", "Case_N002"], 2, seed=3)
    b = emidec.case_copies(tmp_path, ["Case_N002"], 2, seed=3)
    assert [s.spacing_mm for s in a if s.case == "Case_N002"] == [s.spacing_mm for s in b]
    low, high = emidec.SPACING_RANGE_MM
    assert all(low <= s.spacing_mm <= high for s in a)
