"""The scar % interval: conformal scale, ambiguity, and coverage on exchangeable series."""

from __future__ import annotations

import math

import numpy as np
import pytest

from service.pipeline.uncertainty import (
    IntervalCalibration,
    ambiguity,
    calibrate,
    conformal_scale,
    interval,
    scar_percent_at,
)


def test_conformal_scale_is_the_right_order_statistic() -> None:
    errors, spreads = [4.0, -1.0, 3.0, -2.0], [0.0] * 4
    assert conformal_scale(errors, spreads, 1.0, 0.5) == 3.0  # ceil(5 x 0.5) = 3rd of 1,2,3,4
    assert conformal_scale(errors, spreads, 1.0, 0.8) == 4.0
    assert math.isinf(conformal_scale(errors, spreads, 1.0, 0.95))  # 4 series are too few
    # Normalised by the spread: a wide spread excuses a large error.
    assert conformal_scale([10.0, 1.0], [9.0, 0.0], 1.0, 0.5) == 1.0


def test_interval_holds_the_value_and_stays_in_range() -> None:
    cal = IntervalCalibration(offset=0.2, floor_percent=1.0, scale=2.0)
    assert interval(10.0, 1.5, cal) == (5.0, 15.0)
    assert interval(1.0, 0.0, cal) == (0.0, 3.0)
    assert interval(99.5, 0.0, cal) == (97.5, 100.0)
    low, high = interval(0.0, 0.0, cal)
    assert low <= 0.0 <= high


def test_ambiguity_counts_the_pixels_near_the_threshold() -> None:
    probability = np.array([[0.05, 0.45, 0.55, 0.95, 0.65, 0.2]])
    myocardium = np.array([[True, True, True, True, True, False]])
    assert scar_percent_at(probability, myocardium, 0.5) == pytest.approx(60.0)
    # Lowered to 0.4 the 0.45 pixel joins; raised to 0.6 the 0.55 one leaves.
    assert ambiguity(probability, myocardium, 0.5, 0.1) == pytest.approx(40.0)
    assert ambiguity(probability, myocardium, 0.5, 0.01) == pytest.approx(0.0)
    assert scar_percent_at(probability, np.zeros_like(myocardium), 0.5) == 0.0


def test_calibrated_intervals_cover_new_series_at_their_level() -> None:
    """Errors grow with the ambiguity; calibrated on 300 series, tested on 3000 like them."""
    rng = np.random.default_rng(7)

    def draw(n: int) -> tuple[np.ndarray, dict[float, np.ndarray]]:
        spread = rng.gamma(2.0, 1.0, n)  # the offset-0.2 ambiguity carries the signal
        errors = rng.normal(0.0, 0.5 + 0.8 * spread)
        return errors, {0.2: spread, 0.1: rng.gamma(2.0, 1.0, n)}

    errors, spreads = draw(300)
    cal = calibrate(errors, spreads, floors=(0.5, 1.0, 2.0), level=0.95)
    assert cal.offset == 0.2 and cal.calibration_series == 300
    new_errors, new_spreads = draw(3000)
    half = cal.scale * (new_spreads[0.2] + cal.floor_percent)
    coverage = float(np.mean(np.abs(new_errors) <= half))
    assert 0.93 <= coverage <= 0.975, coverage
    with pytest.raises(ValueError):
        calibrate([], {}, floors=(1.0,))


def test_calibration_round_trips_through_the_manifest() -> None:
    cal = IntervalCalibration(offset=0.1, floor_percent=2.0, scale=1.7, level=0.95,
                              calibration_series=44)
    assert IntervalCalibration.from_dict(cal.to_dict() | {"unknown": 1}) == cal
