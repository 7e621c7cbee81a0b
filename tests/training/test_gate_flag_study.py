"""The gate study's review-bar trade-off: the bars are the out-of-fold LGE scores' quantiles,
and a lower bar never lets more through nor sends less LGE to review."""

from __future__ import annotations

import numpy as np

from service.pipeline.acceptance import LgeEvidence, contrast_features
from training.studies import gate_flag_study as study


def _rows(rng: np.random.Generator) -> list[dict]:
    """LGE (rank low, pool mid-range) and bright-blood T2 (rank and pool high) that overlap,
    five folds, some rows held out."""
    kinds = {"EMIDEC": (0.33, 0.56, 0.58), "t2-bright-blood": (0.55, 0.85, 0.47)}
    rows = []
    for kind, (rank, position, ratio) in kinds.items():
        for i in range(60):
            evidence = LgeEvidence(float(np.clip(rng.normal(rank, 0.08), 0.01, 0.59)),
                                   float(np.clip(rng.normal(ratio, 0.08), 0.1, 1.0)),
                                   float(np.clip(rng.normal(position, 0.08), 0.2, 0.98)),
                                   0.15, 1500.0)
            group = kind + (" held-out" if i >= 50 else "")
            rows.append({"group": group, "kind": kind, "fold": i % study.FOLDS,
                         "series_id": f"{kind}-{i}", "has_heart": True, "ring_review": False,
                         "evidence": evidence, "values": contrast_features(evidence)})
    return rows


def test_a_lower_review_bar_trades_lge_sent_to_review_for_negatives_let_through() -> None:
    rows = _rows(np.random.default_rng(3))
    choosing = [r for r in rows if "held-out" not in r["group"]]
    model, oof_models, _ = study.choose_model(choosing)
    tradeoff = study.review_bar_tradeoff(rows, model, oof_models)
    oof_lge = [oof_models[r["fold"]].judge_values(r["values"]).score for r in choosing
               if study.is_lge(r["kind"])]
    assert list(tradeoff) == [f"{q:g}" for q in study.TRADEOFF_QUANTILES]
    assert np.isclose(tradeoff["100"]["bar"], max(oof_lge))
    assert np.isclose(tradeoff["90"]["bar"], np.percentile(oof_lge, 90))
    steps = list(tradeoff.values())
    for higher, lower in zip(steps, steps[1:], strict=False):
        assert lower["bar"] <= higher["bar"]
        for key in ("EMIDEC, out of fold", "t2-bright-blood, out of fold",
                    "t2-bright-blood, held out"):
            assert lower["ok"].get(key, 0) <= higher["ok"].get(key, 0)
        assert lower["series"] == higher["series"]
    assert steps[0]["series"]["EMIDEC, out of fold"] == 50
    assert steps[0]["series"]["t2-bright-blood, held out"] == 10
    # The overlap is real here: the lowest bar sends more LGE to review than the highest.
    assert steps[-1]["ok"]["EMIDEC, out of fold"] < steps[0]["ok"]["EMIDEC, out of fold"]
    lines = study._tradeoff_lines(tradeoff)
    assert lines[3].startswith("| 100 % (") and len(lines) == 3 + len(tradeoff)
