"""The scar % interval: conformal scale, ambiguity, and coverage on exchangeable series."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest

from service.pipeline.uncertainty import (
    ACTIONABLE_WIDTH_PERCENT,
    CalibrationSeries,
    IntervalCalibration,
    ambiguity,
    calibrate,
    conformal_scale,
    interval,
    scar_percent_at,
    spread,
    spread_terms,
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


def _draw(rng: np.random.Generator, group: str, n: int, noise: float
          ) -> list[CalibrationSeries]:
    """Series whose errors grow with the ``rings`` term; ``myocardium`` is unrelated noise."""
    rings = rng.gamma(2.0, 1.0, n)
    errors = rng.normal(0.0, noise * (0.5 + rings))
    return [CalibrationSeries(group, float(e), {"rings": float(r),
                                                "myocardium": float(rng.gamma(2.0, 1.0)),
                                                "scar@0.1": float(rng.gamma(2.0, 1.0)),
                                                "scar@0.2": float(rng.gamma(2.0, 1.0))})
            for e, r in zip(errors, rings, strict=True)]


def _coverage(series: list[CalibrationSeries], cal: IntervalCalibration) -> float:
    return float(np.mean([abs(s.error) <= cal.scale * (spread(s.terms, cal)
                                                       + cal.floor_percent)
                          for s in series]))


def test_calibration_finds_the_informative_term_and_holds_in_every_group() -> None:
    """Two groups, the second with errors three times larger: the scale is the larger
    group quantile, so both hold at the level on new series like them."""
    rng = np.random.default_rng(7)
    series = _draw(rng, "phantoms", 300, 0.4) + _draw(rng, "real scans", 100, 1.2)
    cal = calibrate(series, offsets=(0.1, 0.2), floors=(0.5, 1.0, 2.0), level=0.95)
    assert "rings" in cal.terms and cal.calibration_series == 400
    assert cal.groups == {"phantoms": 300, "real scans": 100}
    hard = _coverage(_draw(rng, "real scans", 3000, 1.2), cal)
    easy = _coverage(_draw(rng, "phantoms", 3000, 0.4), cal)
    assert 0.92 <= hard <= 0.98, hard
    assert easy > hard  # the easy group is over-covered, never under
    # Pooled, the 300 easy series would have set a scale the hard group breaks.
    pooled = calibrate([CalibrationSeries("all", s.error, s.terms) for s in series],
                       offsets=(0.1,), floors=(cal.floor_percent,), level=0.95,
                       candidates=[cal.terms])
    assert pooled.scale < cal.scale
    assert _coverage(_draw(rng, "real scans", 3000, 1.2), pooled) < 0.92


def test_the_review_width_sends_at_most_a_third_of_any_group_to_review() -> None:
    rng = np.random.default_rng(3)
    series = _draw(rng, "phantoms", 200, 0.3) + _draw(rng, "real scans", 200, 2.0)
    cal = calibrate(series, offsets=(0.1,), floors=(1.0,), level=0.95)
    shares = [np.mean([2 * cal.scale * (spread(s.terms, cal) + cal.floor_percent)
                       > cal.review_width for s in series if s.group == group])
              for group in ("phantoms", "real scans")]
    assert cal.review_width >= ACTIONABLE_WIDTH_PERCENT
    assert max(shares) == pytest.approx(1 / 3, abs=0.01) and min(shares) <= 1 / 3


def test_calibration_needs_enough_series_in_every_group() -> None:
    rng = np.random.default_rng(0)
    series = _draw(rng, "phantoms", 100, 0.5) + _draw(rng, "real scans", 5, 0.5)
    with pytest.raises(ValueError):
        calibrate(series, offsets=(0.1,), floors=(1.0,), level=0.95)


def test_spread_terms_measure_the_two_rings_and_the_myocardium_border() -> None:
    shape = (1, 10, 10)
    myocardium = np.zeros(shape, bool)
    myocardium[0, :, :5] = True  # 50 pixels
    scar = np.zeros(shape, bool)
    scar[0, :5, :5] = True  # 25 of them: 50 %
    first_ring = np.zeros(shape, bool)
    first_ring[0, :, :4] = True  # 40 pixels, 20 of the scar in it: 50 % as well
    scar_p = scar.astype(np.float32)
    myo_p = np.where(myocardium, 0.9, 0.0).astype(np.float32)
    terms = spread_terms(myocardium, scar, myo_p, scar_p, first_ring, 0.5, (0.1,))
    assert terms["rings"] == pytest.approx(0.0)
    assert terms["myocardium"] == pytest.approx(0.0)  # no border pixel near 0.5
    first_ring[0, :, 4] = False
    first_ring[0, 5:, :4] = False  # 20 pixels, all scar: 100 %
    myo_p[0, 5:, 4] = 0.5  # five border pixels, none scar, between 0.3 and 0.7
    terms = spread_terms(myocardium, scar, myo_p, scar_p, first_ring, 0.5, (0.1, 0.2))
    assert terms["rings"] == pytest.approx(50.0)
    assert terms["myocardium"] == pytest.approx(100 * 25 / 45 - 50.0)
    assert set(terms) == {"rings", "myocardium", "scar@0.1", "scar@0.2"}
    cal = IntervalCalibration(offset=0.2, floor_percent=1.0, scale=1.0,
                              terms=("rings", "scar"))
    assert spread(terms, cal) == pytest.approx(terms["rings"] + terms["scar@0.2"])


def test_calibration_round_trips_through_the_manifest() -> None:
    cal = IntervalCalibration(offset=0.1, floor_percent=2.0, scale=1.7, level=0.95,
                              calibration_series=44, terms=("rings", "myocardium"),
                              review_width_percent=11.5, groups={"phantoms": 24,
                                                                 "real scans": 20})
    back = IntervalCalibration.from_dict(json.loads(json.dumps(cal.to_dict()))
                                         | {"unknown": 1})
    assert back == cal and back.review_width == 11.5


def test_a_calibration_of_an_older_release_keeps_its_meaning() -> None:
    old = IntervalCalibration.from_dict({"offset": 0.1, "floor_percent": 1.0, "scale": 2.0,
                                         "level": 0.95, "calibration_series": 44})
    assert old.terms == ("scar",) and old.review_width == ACTIONABLE_WIDTH_PERCENT
    assert spread({"scar@0.1": 3.0, "rings": 9.0, "myocardium": 9.0}, old) == 3.0


def _as(series: list[CalibrationSeries], **changes) -> list[CalibrationSeries]:
    return [dataclasses.replace(s, **changes) for s in series]


def test_series_unlike_training_get_their_own_wider_scale_that_holds() -> None:
    """Another centre's look errs three times more for the same spread: calibrated on its
    own, its interval holds there at the level, and the familiar series' is unchanged."""
    rng = np.random.default_rng(11)
    familiar = _draw(rng, "real scans", 200, 0.5)
    unlike = _as(_draw(rng, "real scans", 100, 1.5), unlike=True, off_domain=True)
    cal = calibrate(familiar + unlike, offsets=(0.1,), floors=(1.0,), level=0.95,
                    candidates=[("rings",)])
    alone = calibrate(familiar, offsets=(0.1,), floors=(1.0,), level=0.95,
                      candidates=[("rings",)])
    assert cal.scale == alone.scale and cal.calibration_series == 200
    assert cal.unlike_series == 100 and cal.unlike_scale > 2 * cal.scale
    new = _draw(rng, "real scans", 3000, 1.5)
    held = np.mean([abs(s.error) <= interval(50.0, spread(s.terms, cal), cal, unlike=True)[1]
                    - 50.0 for s in new])
    assert 0.92 <= held <= 0.98, held
    assert _coverage(new, cal) < 0.8  # judged as familiar, the same series break it
    # The interval of one result: wider for the same spread when unlike.
    low, high = interval(50.0, 2.0, cal)
    low_u, high_u = interval(50.0, 2.0, cal, unlike=True)
    assert low_u < low and high_u > high


def test_copies_of_another_centre_that_look_familiar_calibrate_nothing() -> None:
    """Off-domain copies within the familiar look are the familiar scale's check, not its
    calibration; an unlike scale never narrows the familiar one, and too few unlike series
    leave none (the familiar scale serves)."""
    rng = np.random.default_rng(5)
    familiar = _draw(rng, "real scans", 200, 1.0)
    checks = _as(_draw(rng, "real scans", 100, 5.0), off_domain=True)
    easy = _as(_draw(rng, "real scans", 100, 0.1), unlike=True)
    cal = calibrate(familiar + checks + easy, offsets=(0.1,), floors=(1.0,), level=0.95,
                    candidates=[("rings",)])
    alone = calibrate(familiar, offsets=(0.1,), floors=(1.0,), level=0.95,
                      candidates=[("rings",)])
    assert cal.scale == alone.scale and cal.unlike_scale == cal.scale
    few = calibrate(familiar + easy[:5], offsets=(0.1,), floors=(1.0,), level=0.95,
                    candidates=[("rings",)])
    assert few.unlike_scale is None and few.unlike_series == 5
    assert interval(50.0, 2.0, few, unlike=True) == interval(50.0, 2.0, few)
    back = IntervalCalibration.from_dict(json.loads(json.dumps(cal.to_dict())))
    assert back == cal
