"""The image-reading LGE gate on labelled series: would the service refuse, flag or pass each?

The same rules as the service (:mod:`service.pipeline.acceptance`) on the
myocardium network's own ring, for the gate's study (``training.studies.lge_gate_study``)
and for the release's report on rendered negatives.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.pipeline.acceptance import (
    ClosedRings,
    LgeEvidence,
    contrast_refusal,
    contrast_review,
    has_heart,
    lge_evidence,
    ring_review,
)
from service.pipeline.segment import Network, myocardium_probability, ring_from
from training.data.sources import Source

MEASURES = ("myocardium_rank", "myocardium_over_blood", "blood_position")


@dataclass(frozen=True)
class GateVerdict:
    has_ring: bool  # a heart: a closed LV ring, or myocardium on most slices
    refused: bool  # no heart, or a contrast strong enough to refuse
    doubted: bool  # the image's contrast raises a review reason (refused or not)
    evidence: LgeEvidence
    # No closed LV ring of an LV's size: the service analyses it and sends it to review
    # (acceptance.ring_review), so it does not come back ``ok`` either.
    ring_doubted: bool = False


def gate_verdict(images, ring: np.ndarray, spacing) -> GateVerdict:
    """What the service's gate decides on a series, given the myocardium network's ring."""
    rings = ClosedRings(ring)  # as the service: closed once for both
    has_ring = has_heart(ring, spacing, rings)
    evidence = lge_evidence(images, ring, spacing, rings)
    return GateVerdict(has_ring, not has_ring or bool(contrast_refusal(evidence)),
                       bool(contrast_review(evidence)), evidence,
                       bool(ring_review(ring, spacing, rings)))


def gate_reading(source: Source, network: Network) -> dict:
    """One series through the myocardium network and the gate's rules."""
    series = source.read()
    ring = ring_from(myocardium_probability(series.images, series.spacing, network), network)
    verdict = gate_verdict(series.images, ring, series.spacing)
    return {"series_id": source.series_id, "has_ring": verdict.has_ring,
            "refused": verdict.refused, "flagged": not verdict.refused and verdict.doubted,
            "ring_flagged": not (verdict.refused or verdict.doubted) and verdict.ring_doubted
            } | verdict.evidence.to_dict()


def summarise_readings(rows: Sequence[dict]) -> dict:
    """Counts, and each measure's range, over one group's readings."""
    out = {"series": len(rows), "no_ring": sum(not r["has_ring"] for r in rows),
           "refused": sum(r["refused"] for r in rows),
           "flagged": sum(r["flagged"] for r in rows),
           "ring_flagged": sum(r["ring_flagged"] for r in rows)}
    for key in MEASURES:
        values = [r[key] for r in rows if r[key] is not None]
        out[key] = None if not values else {
            "min": float(np.min(values)), "median": float(np.median(values)),
            "max": float(np.max(values))}
    return out
