"""A calibrated 95 % interval on the scar %, from one network run.

How unsure the network is shows in how much scar sits near its decision
threshold: the scar % with the threshold lowered and raised by ``offset``
brackets the pixels it hesitates over (the *ambiguity*, in percentage
points). How wrong it is, on series it never trained on, is measured at
release on the validation series and turned into a scale by split
conformal prediction (Vovk et al.; Angelopoulos and Bates, 2021): the
interval is the scar % plus or minus ``scale x (ambiguity + floor)``, where
``scale`` is the conformal quantile of ``|error| / (ambiguity + floor)``.
On series like the validation ones it holds the expert's value with the
stated probability; the evaluation measures how often it does on each test
set. No extra network run, so the latency budget is untouched. Pure
functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True)
class IntervalCalibration:
    offset: float  # threshold shift for the ambiguity (probability units)
    floor_percent: float  # added to the ambiguity, so a confident series still gets a width
    scale: float  # conformal quantile of |error| / (ambiguity + floor)
    level: float = 0.95
    calibration_series: int = 0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> IntervalCalibration:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


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


def interval(value: float, spread: float, calibration: IntervalCalibration
             ) -> tuple[float, float]:
    """[lower, upper] in percent, clipped to 0..100, always holding ``value``."""
    half = calibration.scale * (spread + calibration.floor_percent)
    return max(0.0, min(value, value - half)), min(100.0, max(value, value + half))


def conformal_scale(errors: Sequence[float], spreads: Sequence[float], floor_percent: float,
                    level: float) -> float:
    """The ceil((n + 1) level)-th smallest normalised error (inf when n is too small)."""
    scores = np.sort(np.abs(np.asarray(errors, float))
                     / (np.asarray(spreads, float) + floor_percent))
    rank = math.ceil((scores.size + 1) * level)
    return float("inf") if rank > scores.size else float(scores[rank - 1])


def calibrate(errors: Sequence[float], spreads_by_offset: dict[float, Sequence[float]],
              floors: Sequence[float], level: float = 0.95) -> IntervalCalibration:
    """The offset and floor whose conformal interval is narrowest (median width) here.

    ``errors`` are the signed scar-% errors of the calibration series,
    ``spreads_by_offset[o]`` their ambiguities at threshold offset ``o``.
    """
    best, best_width = None, math.inf
    for offset, spreads in spreads_by_offset.items():
        for floor in floors:
            scale = conformal_scale(errors, spreads, floor, level)
            width = float(np.median(2.0 * scale * (np.asarray(spreads, float) + floor)))
            if width < best_width:
                best_width = width
                best = IntervalCalibration(offset=float(offset), floor_percent=float(floor),
                                           scale=scale, level=level,
                                           calibration_series=len(errors))
    if best is None:
        raise ValueError("nothing to calibrate on")
    return best
