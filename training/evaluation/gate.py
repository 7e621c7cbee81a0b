"""The image-reading LGE gate on labelled series: would the service refuse, flag or pass each?

The same rules as the service (:mod:`service.pipeline.acceptance`) on the
myocardium network's own ring, for the gate's study (``training.lge_gate_study``)
and for the release's report on rendered negatives.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.pipeline.acceptance import (
    contrast_refusal,
    contrast_review,
    lge_evidence,
    lv_ring_slices,
)
from service.pipeline.postprocess import clean_myocardium
from service.pipeline.segment import Network, myocardium_probability
from training.data.sources import Source

MEASURES = ("myocardium_rank", "myocardium_over_blood")


def gate_reading(source: Source, network: Network) -> dict:
    """One series through the myocardium network and the gate's rules."""
    series = source.read()
    ring = clean_myocardium(myocardium_probability(series.images, series.spacing, network))
    has_ring = bool(lv_ring_slices(ring, series.spacing))
    evidence = lge_evidence(series.images, ring, series.spacing)
    refused = not has_ring or bool(contrast_refusal(evidence))
    return {"series_id": source.series_id, "has_ring": has_ring, "refused": refused,
            "flagged": not refused and bool(contrast_review(evidence))} | evidence.to_dict()


def summarise_readings(rows: Sequence[dict]) -> dict:
    """Counts, and each measure's range, over one group's readings."""
    out = {"series": len(rows), "no_ring": sum(not r["has_ring"] for r in rows),
           "refused": sum(r["refused"] for r in rows),
           "flagged": sum(r["flagged"] for r in rows)}
    for key in MEASURES:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = None if not values else {
            "min": float(np.min(values)), "median": float(np.median(values)),
            "max": float(np.max(values))}
    return out
