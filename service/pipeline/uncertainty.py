"""A calibrated 95 % interval on the scar %, narrow where the networks agree with themselves.

The scar % is scar over myocardium, and on real scans the myocardium is the
larger error source (bright scar beside the bright blood pool drawn as
blood). So the *spread* that scales the interval is a sum of terms, each a
way the same analysis could have come out, in percentage points of scar:

* ``rings``: the cascade draws the myocardium twice, once with the
  myocardium U-Net (the ring that places the heart box) and again with
  the scar U-Net; the scar % measured in the first ring against the
  second is how much the two networks' myocardium disagree;
* ``myocardium``: the scar % with the myocardium drawn at probability
  0.7 against 0.3 (its border pixels the network hesitates over);
* ``scar``: the scar % with the scar threshold lowered and raised by
  ``offset`` (the scar pixels it hesitates over).

How wrong the result is, on series it never trained on, is measured at
release on validation series and turned into a scale by split conformal
prediction (Vovk et al.; Angelopoulos and Bates, 2021): the interval is the
scar % plus or minus ``scale x (spread + floor)``, where ``scale`` is the
conformal quantile of ``|error| / (spread + floor)``. The quantile is taken
in each calibration group (phantoms; real scans) and the largest kept, so
the many phantoms cannot set it for the few real scans. Which terms, the
offset and the floor are chosen there too (narrowest median width).

A series whose contrast lies beyond every kind of LGE the networks were
trained on (``acceptance.is_unlike_training``: another centre's look) is
judged by a scale of its own, the conformal quantile of such series (the
other-centre copies of the held-out cases at release), never below the
familiar scale: split conformal per category of a taxonomy fixed before
calibration ("Mondrian", Vovk et al.), so the interval holds in each and
widens where the networks err more. No
extra network run: test-time flips and rotations (the eight symmetries of
the square) ranked the errors about as well and narrowed the real scans'
interval a little, at seven more scar-network runs, nearly doubling an
analysis (``python -m training.studies.interval_study``, docs/results/interval_study.json;
docs/experiments.md). Pure functions.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np

SPREAD_TERMS = ("rings", "myocardium", "scar")
# The myocardium drawn at these probabilities brackets the pixels its network hesitates over.
MYOCARDIUM_BAND = (0.3, 0.7)
# An interval at most this wide is always narrow enough to act on.
ACTIONABLE_WIDTH_PERCENT = 6.0
# The share of the calibration groups' series a wider interval may send to review.
REVIEW_SHARE = 1.0 / 3.0


@dataclass(frozen=True)
class IntervalCalibration:
    offset: float  # threshold shift of the ``scar`` term (probability units)
    floor_percent: float  # added to the spread, so a confident series still gets a width
    scale: float  # conformal quantile of |error| / (spread + floor)
    level: float = 0.95
    calibration_series: int = 0
    # The spread terms summed (SPREAD_TERMS); releases before 0.3.1 had the scar term alone.
    terms: tuple[str, ...] = ("scar",)
    # Wider than this the result goes to review (chosen at calibration; None: the fixed rule).
    review_width_percent: float | None = None
    # Series per calibration group (e.g. phantoms, real scans).
    groups: dict[str, int] = field(default_factory=dict)
    # The scale of a series unlike the scans trained on (its own conformal quantile, at
    # least ``scale``); None: too few such series were calibrated on, ``scale`` serves.
    unlike_scale: float | None = None
    unlike_series: int = 0
    # How ``review_width_percent`` was chosen where it was chosen out of fold (the training
    # side's ``review_out_of_fold``): the series judged, the share sent and the large errors
    # caught. Read by the release report, not by the service.
    review_choice: dict | None = None

    def to_dict(self) -> dict:
        return asdict(self) | {"terms": list(self.terms)}

    @classmethod
    def from_dict(cls, data: dict) -> IntervalCalibration:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        if "terms" in known:
            known["terms"] = tuple(known["terms"])
        return cls(**known)

    @property
    def review_width(self) -> float:
        return (ACTIONABLE_WIDTH_PERCENT if self.review_width_percent is None
                else self.review_width_percent)


def scar_percent_at(scar_probability: np.ndarray, myocardium: np.ndarray,
                    threshold: float) -> float:
    myocardium = np.asarray(myocardium, dtype=bool)
    n = int(myocardium.sum())
    if n == 0:
        return 0.0
    return 100.0 * float(np.count_nonzero(scar_probability[myocardium] >= threshold)) / n


def ambiguity(scar_probability: np.ndarray, myocardium: np.ndarray, threshold: float,
              offset: float) -> float:
    """Scar % with the threshold lowered by ``offset`` minus with it raised (points, >= 0)."""
    low = max(threshold - offset, 1e-6)
    high = min(threshold + offset, 1.0)
    return max(0.0, scar_percent_at(scar_probability, myocardium, low)
               - scar_percent_at(scar_probability, myocardium, high))


def _percent(scar: np.ndarray, myocardium: np.ndarray) -> float:
    n = int(np.count_nonzero(myocardium))
    return 100.0 * int(np.count_nonzero(scar & myocardium)) / n if n else 0.0


def spread_terms(myocardium: np.ndarray, scar: np.ndarray, myocardium_probability: np.ndarray,
                 scar_probability: np.ndarray, first_ring: np.ndarray, threshold: float,
                 offsets: Sequence[float]) -> dict[str, float]:
    """Every spread term of one result, in points; ``scar`` once per offset (``scar@0.1``)."""
    myocardium, scar = np.asarray(myocardium, bool), np.asarray(scar, bool)
    first_ring = np.asarray(first_ring, bool)
    called = scar_probability >= threshold
    low, high = MYOCARDIUM_BAND
    terms = {"rings": abs(_percent(scar, myocardium) - _percent(scar, first_ring)),
             "myocardium": abs(_percent(called, myocardium_probability >= high)
                               - _percent(called, myocardium_probability >= low))}
    for offset in offsets:
        terms[f"scar@{offset:g}"] = ambiguity(scar_probability, myocardium, threshold, offset)
    return terms


def spread(terms: Mapping[str, float], calibration: IntervalCalibration) -> float:
    """The calibration's terms summed (its ``scar`` term at its offset)."""
    return float(sum(terms[f"scar@{calibration.offset:g}" if t == "scar" else t]
                     for t in calibration.terms))


def interval(value: float, spread: float, calibration: IntervalCalibration,
             unlike: bool = False) -> tuple[float, float]:
    """[lower, upper] in percent, clipped to 0..100, always holding ``value``; ``unlike``: the
    series is unlike the scans trained on (its own scale, where calibrated)."""
    scale = (calibration.unlike_scale if unlike and calibration.unlike_scale is not None
             else calibration.scale)
    half = scale * (spread + calibration.floor_percent)
    return max(0.0, min(value, value - half)), min(100.0, max(value, value + half))


def conformal_scale(errors: Sequence[float], spreads: Sequence[float], floor_percent: float,
                    level: float) -> float:
    """The ceil((n + 1) level)-th smallest normalised error (inf when n is too small)."""
    scores = np.sort(np.abs(np.asarray(errors, float))
                     / (np.asarray(spreads, float) + floor_percent))
    rank = math.ceil((scores.size + 1) * level)
    return float("inf") if rank > scores.size else float(scores[rank - 1])


@dataclass(frozen=True)
class CalibrationSeries:
    """One calibration series: its group, signed scar-% error and spread terms.

    ``unlike``: its contrast lies beyond the LGE trained on (it calibrates the unlike
    scale). ``off_domain``: made to look like another centre (a shifted copy): it
    calibrates the unlike scale where it is unlike, and nothing where it is not, so the
    familiar scale is set by the looks trained on and such copies stay its check."""

    group: str
    error: float
    terms: Mapping[str, float]  # as :func:`spread_terms` gives them
    unlike: bool = False
    off_domain: bool = False
    # The series' scar % and its cross-validation fold (None: not a fold's held-out series,
    # e.g. a phantom), for a review width chosen out of fold.
    scar_percent: float | None = None
    fold: int | None = None


def term_sets(terms: Sequence[str] = SPREAD_TERMS) -> list[tuple[str, ...]]:
    """Every non-empty combination of the terms, in SPREAD_TERMS order."""
    return [combo for n in range(1, len(terms) + 1)
            for combo in itertools.combinations(terms, n)]


def calibrate(series: Sequence[CalibrationSeries], offsets: Sequence[float],
              floors: Sequence[float], level: float = 0.95,
              candidates: Sequence[tuple[str, ...]] | None = None) -> IntervalCalibration:
    """The terms, offset and floor whose conformal interval is narrowest here, and the
    scale of the series unlike the scans trained on.

    The familiar series (neither ``unlike`` nor ``off_domain``) choose: the scale is
    the largest of the groups' conformal quantiles (each group must hold at ``level``);
    the width compared is the mean over groups of their median width, so each group
    weighs alike whatever its size. The review width is the groups' largest
    (1 - REVIEW_SHARE) quantile of width, never under ACTIONABLE_WIDTH_PERCENT. The
    ``unlike`` series, every group pooled, then set ``unlike_scale`` for that choice.
    """
    groups: dict[str, list[CalibrationSeries]] = {}
    for s in series:
        if not (s.unlike or s.off_domain):
            groups.setdefault(s.group, []).append(s)
    best, best_width = None, math.inf
    for terms in candidates or term_sets():
        for offset in offsets if "scar" in terms else offsets[:1]:
            probe = IntervalCalibration(offset=float(offset), floor_percent=0.0, scale=1.0,
                                        terms=tuple(terms))
            spreads = {g: np.array([spread(s.terms, probe) for s in members])
                       for g, members in groups.items()}
            for floor in floors:
                scale = max(conformal_scale([s.error for s in groups[g]], spreads[g], floor,
                                            level) for g in groups)
                if not math.isfinite(scale):
                    continue
                widths = {g: 2.0 * scale * (spreads[g] + floor) for g in groups}
                width = float(np.mean([np.median(w) for w in widths.values()]))
                if width < best_width:
                    review = max(float(np.quantile(w, 1.0 - REVIEW_SHARE))
                                 for w in widths.values())
                    best_width = width
                    best = IntervalCalibration(
                        offset=float(offset), floor_percent=float(floor), scale=scale,
                        level=level, terms=tuple(terms),
                        calibration_series=sum(len(m) for m in groups.values()),
                        review_width_percent=max(ACTIONABLE_WIDTH_PERCENT, review),
                        groups={g: len(m) for g, m in groups.items()})
    if best is None:
        raise ValueError("too few calibration series in some group for the level")
    return with_unlike_scale(best, [s for s in series if s.unlike], level)


def with_unlike_scale(calibration: IntervalCalibration, unlike: Sequence[CalibrationSeries],
                      level: float) -> IntervalCalibration:
    """The calibration with the conformal scale of the ``unlike`` series (at least its own
    scale: unfamiliar never narrows); without enough of them for the level, none."""
    own = conformal_scale([s.error for s in unlike],
                          [spread(s.terms, calibration) for s in unlike],
                          calibration.floor_percent, level) if unlike else math.inf
    return replace(calibration, unlike_series=len(unlike),
                   unlike_scale=max(own, calibration.scale) if math.isfinite(own) else None)


def calibrated_interval(value: float, masks, first_ring: np.ndarray, threshold: float,
                        calibration: IntervalCalibration, unlike: bool = False
                        ) -> tuple[float, float]:
    """The interval of one result; ``masks`` is its :class:`~service.pipeline.segment.
    Segmentation` (duck-typed: this module stays below the pipeline)."""
    terms = spread_terms(masks.myocardium, masks.scar, masks.myocardium_probability,
                         masks.scar_probability, first_ring, threshold, (calibration.offset,))
    return interval(value, spread(terms, calibration), calibration, unlike)
