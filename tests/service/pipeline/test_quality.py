"""The review rules on the interval: a calibrated limit, capped in every pipeline (issue 46)."""

from __future__ import annotations

from service.pipeline.quality import USABLE_WIDTH_PERCENT, interval_reason


def test_an_interval_wider_than_the_usable_limit_is_review_whatever_the_calibration() -> None:
    # The enet pipeline's calibration allows 42.6 points; [0, 30.9] % was called ok.
    reason = interval_reason((0.0, 30.9), review_width=42.6)
    assert reason is not None and "30.9 points wide" in reason
    assert f"wider than {USABLE_WIDTH_PERCENT:g} points" in reason


def test_the_calibrated_limit_still_decides_below_the_cap() -> None:
    assert interval_reason((2.0, 10.0), review_width=9.0) is None
    reason = interval_reason((2.0, 12.0), review_width=9.0)
    assert reason is not None and "disagree with themselves" in reason
    assert interval_reason((0.0, USABLE_WIDTH_PERCENT), review_width=42.6) is None
