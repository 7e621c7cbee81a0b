"""The box-stage study's paired differences: each series against itself under the reference
box."""

from __future__ import annotations

import pytest

from training.studies.box_stage_study import summarise


def _row(series: str, box: str, myocardium: float, scar: float | None, error: float) -> dict:
    return {"series_id": series, "group": "as given", "box": box, "ring_dsc": myocardium,
            "myocardium_dsc": myocardium, "scar_dsc": scar, "abs_error": error}


def test_differences_are_paired_per_series_and_skip_series_without_scar() -> None:
    rows = [_row("a", "s3", 0.80, 0.60, 1.0), _row("b", "s3", 0.90, None, 0.0),
            _row("a", "s1", 0.70, 0.50, 3.0), _row("b", "s1", 0.90, None, 1.0)]
    summary = summarise(rows, "s3")["as given"]
    assert summary["s1"]["myocardium_dsc"]["mean_difference"] == pytest.approx(-0.05)
    assert summary["s1"]["scar_dsc"]["mean_difference"] == pytest.approx(-0.10)
    assert summary["s1"]["scar_dsc"]["series"] == 1
    assert summary["s1"]["abs_error"]["mean_difference"] == pytest.approx(1.5)
    low, high = summary["s1"]["abs_error"]["difference_95"]
    assert 1.0 <= low <= high <= 2.0
    assert summary["s3"]["myocardium_dsc"]["mean_difference"] == 0.0
