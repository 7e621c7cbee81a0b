"""Cross-validation folds of EMIDEC train + validation: by patient, stratified, deterministic."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from training.crossval import held_out_sources
from training.data import emidec
from training.data.folds import FOLDS_FILE, assign_folds, fold_cases, read_folds
from training.fold_legs import pool_sources

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
    pool = pool_sources(tmp_path, phantoms, np.array([4, 5]), sorted(assignment), copies=2,
                        remapped=1, seed=1)
    seen = set()
    for fold in range(5):
        rows = pool.rows(assignment, fold)
        training, held = fold_cases(assignment, fold)
        assert not set(rows["train"]) & (set(rows["as-given"]) | set(rows["shifted"]))
        train_sources = [pool.sources[i] for i in rows["train"]]
        given = [pool.sources[i] for i in rows["as-given"]]
        shifted = [pool.sources[i] for i in rows["shifted"]]
        train_cases = {s.case for s in train_sources if isinstance(s, emidec.EmidecCase)}
        assert train_cases == set(training)
        assert {s.case for s in given} == {s.case for s in shifted} == set(held)
        # Both contrasts, two copies each, and one remapped look, of every training case, at
        # drawn spacings; each held-out case in both contrasts at the nominal spacing and
        # twice shifted.
        copies = Counter((s.case, s.dark, s.appearance is None) for s in train_sources
                         if isinstance(s, emidec.EmidecCase))
        assert sorted(set(copies.values())) == [1, 2] and len(copies) == 3 * len(training)
        assert len(given) == 2 * len(held) and len(shifted) == 2 * len(held)
        assert {s.spacing_mm for s in given} == {emidec.NOMINAL_SPACING_MM}
        assert all(s.shifted for s in shifted)
        # The phantoms: the validation series never train, the rest do, in every fold.
        assert {Path(s.folder) for s in train_sources
                if not isinstance(s, emidec.EmidecCase)} == set(phantoms[:4])
        seen |= set(held)
    assert seen == set(CASES)
    assert len(held_out_sources(tmp_path, CASES[:3])) == 6
    assert len(held_out_sources(tmp_path, CASES[:3], shifted=True)) == 6


def test_a_cases_training_copies_are_the_same_in_every_fold(tmp_path: Path) -> None:
    a = emidec.case_copies(tmp_path, ["Case_P001", "Case_N002"], 2, seed=3)
    b = emidec.case_copies(tmp_path, ["Case_N002"], 2, seed=3)
    assert [s.spacing_mm for s in a if s.case == "Case_N002"] == [s.spacing_mm for s in b]
    low, high = emidec.SPACING_RANGE_MM
    assert all(low <= s.spacing_mm <= high for s in a)
