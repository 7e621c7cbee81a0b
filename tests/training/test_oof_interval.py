"""The out-of-fold interval study: cross-fitted coverage, the shifted check, the ranking."""

from __future__ import annotations

import numpy as np
import pytest

from training.legs import finished
from training.studies.oof_interval_study import (
    AS_GIVEN,
    SHIFTED,
    candidate_checks,
    kept_folds,
    spearman,
)


def _row(fold: int, group: str, error: float, spread_points: float, contrast: str =
         "bright-blood", distance2: float = 1.0) -> dict:
    terms = {"rings": spread_points, "myocardium": spread_points, "tta": spread_points}
    terms |= {f"scar@{o:g}": spread_points for o in (0.1, 0.2, 0.3)}
    return {"series_id": f"s{fold}-{group}-{error}", "group": group, "contrast": contrast,
            "fold": fold, "true_scar_percent": 20.0, "scar_percent": 20.0 + error,
            "error": error, "terms": terms, "lge_distance2": distance2}


def _rows(rng: np.random.Generator, folds: int, per_fold: int, shifted_scale: float
          ) -> list[dict]:
    """Errors proportional to the spread: as given N(0, spread), shifted ``shifted_scale``
    times larger at the same spread."""
    rows = []
    for fold in range(folds):
        for _ in range(per_fold):
            s = float(rng.uniform(0.5, 3.0))
            rows.append(_row(fold, AS_GIVEN, float(rng.normal(0, s)), s))
            rows.append(_row(fold, SHIFTED, float(rng.normal(0, s * shifted_scale)), s))
    return rows


def test_an_interval_that_holds_as_given_is_cross_fitted_and_the_shifted_check_can_fail(
) -> None:
    rng = np.random.default_rng(53)
    same = candidate_checks(_rows(rng, folds=4, per_fold=40, shifted_scale=1.0))["tta"]
    assert not same["in_sample"]
    assert same[AS_GIVEN]["series"] == same[SHIFTED]["series"] == 160
    assert same[AS_GIVEN]["coverage"] >= 0.88 and same[SHIFTED]["coverage"] >= 0.88
    worse = candidate_checks(_rows(rng, folds=4, per_fold=40, shifted_scale=4.0))["tta"]
    assert worse[SHIFTED]["coverage"] < 0.7, "an interval blind to the shift must fail there"


def test_each_folds_series_are_judged_by_the_other_folds_calibration() -> None:
    rng = np.random.default_rng(7)
    rows = _rows(rng, folds=2, per_fold=40, shifted_scale=1.0)
    # Fold 1's as-given errors are ten times fold 0's: fold 0's calibration cannot hold them.
    for r in rows:
        if r["fold"] == 1:
            r["error"] *= 10.0
            r["scar_percent"] = r["true_scar_percent"] + r["error"]
    checked = candidate_checks(rows)["tta"][AS_GIVEN]
    assert checked["coverage"] < 0.8, "in-sample calibration would have covered 95 %"


def test_one_fold_is_flagged_in_sample() -> None:
    rows = _rows(np.random.default_rng(1), folds=1, per_fold=40, shifted_scale=1.0)
    assert all(c["in_sample"] for c in candidate_checks(rows).values())


def test_the_ranking_reads_each_group_apart() -> None:
    rows = [_row(0, AS_GIVEN, e, s) for e, s in ((1, 1), (2, 2), (3, 3), (4, 4))]
    rows += [_row(0, SHIFTED, e, s) for e, s in ((4, 1), (3, 2), (2, 3), (1, 4))]
    rho = spearman(rows)
    assert rho["as given, bright-blood"]["tta"]["rho"] == pytest.approx(1.0)
    assert rho[SHIFTED]["tta"]["rho"] == pytest.approx(-1.0)


def test_the_kept_fold_zero_has_both_u_nets() -> None:
    from training.fold_legs import plan
    from training.run import CONFIGS, task_config

    folds = kept_folds(plan({task: task_config(task) for task in CONFIGS}))
    assert 0 in folds
    assert {leg.task for leg in folds[0].values()} == {"myocardium_unet", "scar_unet"}
    assert all(leg.fold == 0 and not leg.variant for leg in folds[0].values())


def test_the_review_width_flags_four_in_five_large_errors_and_no_more_than_needed() -> None:
    from training.studies.oof_interval_study import review_check, review_width

    # (held, width, large): five large errors at widths 9, 8, 7, 6, 1; small ones at 2-5.
    judged = [(True, w, True) for w in (9.0, 8.0, 7.0, 6.0, 1.0)]
    judged += [(True, w, False) for w in (2.0, 3.0, 4.0, 5.0, 5.5)]
    width = review_width(judged)
    assert 5.5 < width < 6.0 + 1e-6, "the fourth-widest large error sets it"
    check = review_check(judged, width)
    assert check["large_flagged"] == 0.8 and check["review_share"] == 0.4
    assert review_width([(True, 3.0, False)]) is None


def _enet_row(series: str, ring: str, scar_dsc: float, error: float) -> dict:
    return {"series_id": series, "group": "bright-blood", "fold": 0, "pipeline": "enet",
            "ring": ring, "true_scar_percent": 10.0, "scar_percent": 10.0 + error,
            "error": error, "myocardium_dsc": 0.8, "scar_dsc": scar_dsc}


def test_the_enet_ring_study_counts_each_series_better_or_worse_on_the_cascades_ring() -> None:
    from training.studies.enet_ring_study import docs_block, summarise

    rows = [_enet_row("a", "myocardium U-Net", 0.5, 4.0), _enet_row("a", "cascade", 0.6, 1.0),
            _enet_row("b", "myocardium U-Net", 0.5, -1.0), _enet_row("b", "cascade", 0.4, 3.0),
            _enet_row("c", "myocardium U-Net", 0.2, 2.0), _enet_row("c", "cascade", 0.7, 2.0)]
    cell = summarise(rows, {"0": {}})["table"]["enet"]["bright-blood"]
    assert (cell["cascade_better_scar_dsc"], cell["cascade_worse_scar_dsc"]) == (2, 1)
    assert (cell["cascade_better_abs_error"], cell["cascade_worse_abs_error"]) == (1, 1)
    assert cell["myocardium U-Net"]["scar_dsc"] == 0.5 and cell["cascade"]["scar_dsc"] == 0.6
    assert cell["cascade"]["abs_error"] == 2.0
    assert "| enet | bright-blood | 3 |" in docs_block(summarise(rows, {"0": {}}))


def test_the_enet_ring_study_reads_folds_with_every_network_kept() -> None:
    from training.fold_legs import plan
    from training.run import CONFIGS, task_config
    from training.studies.enet_ring_study import TASKS

    legs_plan = plan({task: task_config(task) for task in CONFIGS})
    folds = kept_folds(legs_plan, tasks=TASKS)
    assert 0 in folds and set(folds[0]) == set(TASKS)
    kept = [leg.stage for leg in legs_plan if leg.network == "fold0-enet_p2" and finished(leg)]
    assert len(kept) >= 2 and folds[0]["enet_p2"].stage == max(kept), "the latest stage kept"


def test_the_unlike_training_check_counts_series_beyond_the_bar_and_their_large_errors() -> None:
    from training.studies.oof_interval_study import unlike_training_check

    rows = [_row(0, AS_GIVEN, 1.0, 1.0, distance2=2.0), _row(0, AS_GIVEN, 8.0, 1.0, distance2=3.0),
            _row(0, SHIFTED, 9.0, 1.0, distance2=40.0), _row(0, SHIFTED, 1.0, 1.0, distance2=30.0),
            _row(0, SHIFTED, 7.0, 1.0, distance2=5.0)]
    check = unlike_training_check(rows)
    assert check[AS_GIVEN] | {"bar": 0} == {"series": 2, "flagged": 0, "large": 1,
                                            "flagged_large": 0, "bar": 0}
    assert (check[SHIFTED]["flagged"], check[SHIFTED]["flagged_large"],
            check[SHIFTED]["large"]) == (2, 1, 2)


def test_the_unlike_scale_holds_on_the_shifted_copies_unlike_training_and_widens_there(
) -> None:
    """Shifted copies beyond the bar err four times more for the same spread: calibrated on
    the other folds' such copies, their interval holds and is wider; those of a familiar
    look are judged by the familiar scale, which they never set."""
    from training.studies.oof_interval_study import UNLIKE_GROUPS, unlike_scale_checks

    rng = np.random.default_rng(17)
    rows = []
    for fold in range(4):
        for _ in range(40):
            s = float(rng.uniform(0.5, 3.0))
            rows.append(_row(fold, AS_GIVEN, float(rng.normal(0, s)), s))
            rows.append(_row(fold, SHIFTED, float(rng.normal(0, s)), s))
            rows.append(_row(fold, SHIFTED, float(rng.normal(0, 4 * s)), s, distance2=40.0))
    checked = unlike_scale_checks(rows)["tta"]
    given, familiar, unlike = (checked[g] for g in UNLIKE_GROUPS)
    assert given["series"] == familiar["series"] == unlike["series"] == 160
    assert checked["unlike_series_per_calibration"] == [120] * 4
    assert min(given["coverage"], familiar["coverage"], unlike["coverage"]) >= 0.88
    assert unlike["median_width"] > 3 * given["median_width"]
    # Judged without the unlike scale, the same copies break the interval.
    blind = candidate_checks([r | {"lge_distance2": 1.0} for r in rows])["tta"]
    assert blind[SHIFTED]["coverage"] < 0.8


def test_the_study_takes_the_threshold_and_ring_the_release_chose(tmp_path) -> None:
    import json

    from training.studies.oof_interval_study import decided_post_processing

    legs_root = tmp_path / "legs"
    assert decided_post_processing(legs_root) is None  # before the choices: 0.5, no ring
    (tmp_path / "steps").mkdir()
    (tmp_path / "steps" / "choices.json").write_text(json.dumps({"fingerprint": {}, "value": {
        "chosen": {"scar_unet": {"threshold": 0.35}, "enet_p2": {"threshold": 0.6}},
        "best": "ring completed",
        "variants": {"network's ring": {"complete_ring": False},
                     "ring completed": {"complete_ring": True}}}}))
    assert decided_post_processing(legs_root) == {"threshold": 0.35, "complete_ring": True}


def test_the_interval_bounds_hold_ninety_percent_constant_or_by_an_oracle() -> None:
    from training.studies.interval_bounds import bounds

    b = bounds([float(e) for e in range(1, 11)])  # |errors| 1..10 points
    assert b["constant_width"] == 18.0  # +-9 holds nine of ten
    # The oracle's widths: 2, 4, ..., 18 and 0 for the one it gives up; median 9.
    assert b["oracle_median_width"] == 9.0
    assert b["large_share"] == 0.5 and b["median_abs_error"] == 5.5
