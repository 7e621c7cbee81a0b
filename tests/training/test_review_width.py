"""The release's review width, chosen out of fold (issue 53's flag: four in five large errors)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from service.pipeline.uncertainty import (
    ACTIONABLE_WIDTH_PERCENT,
    CalibrationSeries,
    IntervalCalibration,
    calibrate,
)
from training.evaluation.scoring import (
    INTERVAL_FLOORS,
    INTERVAL_OFFSETS,
    REVIEW_CATCH,
    calibrated_without_each_fold,
    review_out_of_fold,
    with_review_out_of_fold,
)

LEVEL = 0.9


def _series(rng: np.random.Generator, folds: int = 4, per_fold: int = 40,
            phantoms: int = 40) -> list[CalibrationSeries]:
    """Errors that grow with the spread, in every fold, with shifted copies (off domain)
    and phantoms (no fold) beside them."""
    out = []
    for fold in [*range(folds), None]:
        for _ in range(per_fold if fold is not None else phantoms):
            spread = float(rng.uniform(0.5, 6.0))
            terms = {"rings": spread, "myocardium": 0.2, **{f"scar@{o:g}": spread / 2
                                                           for o in INTERVAL_OFFSETS}}
            error = float(rng.normal(0.0, spread))
            group = "phantoms" if fold is None else "real scans"
            out.append(CalibrationSeries(group, error, terms, scar_percent=30.0 + error,
                                         fold=fold))
            if fold is not None:
                out.append(CalibrationSeries(group, 3 * error, terms, off_domain=True,
                                             scar_percent=30.0 + 3 * error, fold=fold))
    return out


def test_the_review_width_is_chosen_on_each_folds_series_judged_without_that_fold() -> None:
    series = _series(np.random.default_rng(0))
    shipped = calibrate(series, INTERVAL_OFFSETS, INTERVAL_FLOORS, LEVEL)
    choice = review_out_of_fold(series, shipped, level=LEVEL)
    held = [s for s in series if s.fold is not None and not s.off_domain]
    assert choice["series"] == len(held) and choice["folds"] == 4
    large = sum(abs(s.error) > 5.0 for s in held)
    assert choice["large_errors"] == large > 10
    assert choice["large_caught"] >= REVIEW_CATCH * large
    assert choice["large_share"] == pytest.approx(large / len(held))
    assert 0 < choice["review_share"] < 1
    assert choice["width_percent"] >= ACTIONABLE_WIDTH_PERCENT

    # The width is the one the cross-fitted intervals give, not the shipped interval's own.
    chosen = with_review_out_of_fold(shipped, series, level=LEVEL)
    assert chosen.review_width_percent == choice["width_percent"]
    assert chosen.review_choice == choice
    assert (chosen.scale, chosen.terms) == (shipped.scale, shipped.terms)
    # Kept as the release keeps it (JSON), read back as the service reads it.
    assert IntervalCalibration.from_dict(chosen.to_dict()) == chosen


def test_a_held_out_series_without_its_scar_percent_is_not_judged() -> None:
    """Its interval's centre is unknown (no stand-in): it is left out, not judged at its
    error."""
    from dataclasses import replace

    series = _series(np.random.default_rng(1))
    shipped = calibrate(series, INTERVAL_OFFSETS, INTERVAL_FLOORS, LEVEL)
    held = [k for k, s in enumerate(series) if s.fold is not None and not s.off_domain]
    blanked = list(series)
    for k in held[:5]:
        blanked[k] = replace(series[k], scar_percent=None)
    assert (review_out_of_fold(blanked, shipped, level=LEVEL)["series"]
            == review_out_of_fold(series, shipped, level=LEVEL)["series"] - 5)


def test_without_folds_the_in_sample_width_stands() -> None:
    series = [CalibrationSeries(s.group, s.error, s.terms, scar_percent=s.scar_percent)
              for s in _series(np.random.default_rng(2)) if not s.off_domain]
    shipped = calibrate(series, INTERVAL_OFFSETS, INTERVAL_FLOORS, LEVEL)
    assert review_out_of_fold(series, shipped, level=LEVEL) is None
    assert with_review_out_of_fold(shipped, series, level=LEVEL) == shipped


def test_the_reports_flag_targets_are_issue_53s() -> None:
    """On EMIDEC `test`: four in five large errors caught, and at most their share plus
    20 points sent to review; other sets are reported."""
    from training.evaluation.summary import _review_rows

    def rows(review_large: int, ok_large: int, review_small: int, ok_small: int,
             test_set: str = "emidec") -> tuple[bool, bool]:
        table = {"review_large": review_large, "ok_large": ok_large,
                 "review_small": review_small, "ok_small": ok_small}
        share, catch = _review_rows(test_set, "cascade-unet", {"review_table": table})
        return share["met"], catch["met"]

    assert rows(4, 4, 6, 6) == (True, False)  # 10 of 20 sent, bound 8 + 4; 4 of 8 caught
    assert rows(7, 1, 6, 6) == (False, True)  # 13 sent, bound 12; 7 of 8 caught
    assert rows(7, 1, 5, 7) == (True, True)
    assert rows(0, 8, 12, 0, test_set="phantoms") == (True, True)


def test_each_folds_calibration_never_sees_that_fold() -> None:
    series = _series(np.random.default_rng(11), folds=3)
    terms = ("rings",)
    before = dict(calibrated_without_each_fold(series, [0, 1, 2], terms,
                                               INTERVAL_OFFSETS, INTERVAL_FLOORS, LEVEL))
    # Fold 1's errors made ten times larger: fold 1's own calibration stays, the others grow.
    scaled = [s if s.fold != 1 else dataclasses.replace(s, error=10 * s.error)
              for s in series]
    after = dict(calibrated_without_each_fold(scaled, [0, 1, 2], terms,
                                              INTERVAL_OFFSETS, INTERVAL_FLOORS, LEVEL))
    assert set(before) == set(after) == {0, 1, 2}
    assert after[1] == before[1]
    assert after[0].scale > before[0].scale and after[2].scale > before[2].scale
    # A single fold is calibrated in sample, on all of it.
    only = [s for s in series if s.fold == 0]
    ((fold, alone),) = calibrated_without_each_fold(only, [0], terms, INTERVAL_OFFSETS,
                                                    INTERVAL_FLOORS, LEVEL)
    assert fold == 0 and alone == calibrate(only, INTERVAL_OFFSETS, INTERVAL_FLOORS, LEVEL,
                                            candidates=[terms])
