"""A small classifier of a series' contrast: LGE, or another sequence (cine, T2)?

In: the image measures of :func:`service.pipeline.acceptance.lge_evidence`
(rank of the remote myocardium among the tissue around the heart, the blood
pool's position in that tissue's range and its texture, remote myocardium
over blood). Out: a
score, how much more likely the measures are under the likeliest other
sequence than under the likeliest kind of LGE (natural log), and how far the
series lies from that other sequence (squared Mahalanobis distance).

One Gaussian per kind of series (quadratic discriminant analysis): LGE comes
in kinds that lie apart (real bright-blood, real darkened, rendered), and so
do the other sequences (cine and bright-blood T2 above LGE's blood position,
dark-blood T2 below), which no single line separates. The parameters are
fitted by ``python -m training.studies.gate_flag_study`` and written to
:mod:`service.pipeline.lge_contrast`; nothing here is fitted. Pure numpy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

# Every measure a model may use; each model names its own (``ContrastModel.features``).
FEATURES = ("myocardium_rank", "blood_position", "log_myocardium_over_blood",
            "blood_texture")
# The ratio's logarithm is taken from here up: black blood under grey myocardium gives
# ratios in the tens, whose exact value says nothing more.
_MIN_RATIO, _MAX_RATIO = 0.02, 20.0
_MAX_TEXTURE = 5.0


def features(rank: float | None, position: float | None, ratio: float | None,
             texture: float | None) -> dict[str, float | None]:
    """Every measure in the classifier's terms (FEATURES); None where one is missing."""
    return {"myocardium_rank": rank, "blood_position": position,
            "log_myocardium_over_blood": None if ratio is None
            else math.log(min(max(ratio, _MIN_RATIO), _MAX_RATIO)),
            "blood_texture": None if texture is None else min(texture, _MAX_TEXTURE)}


def vector(values: dict[str, float | None], names: tuple[str, ...]) -> np.ndarray | None:
    """The named measures in order; None where one of them is missing."""
    picked = [values[n] for n in names]
    return None if any(v is None for v in picked) else np.array(picked, float)


@dataclass(frozen=True)
class SeriesKind:
    """One kind of series: a Gaussian over FEATURES."""

    name: str
    lge: bool
    mean: tuple[float, ...]
    covariance: tuple[tuple[float, ...], ...]
    series: int = 0  # how many it was fitted on

    def _parts(self) -> tuple[np.ndarray, np.ndarray, float]:
        covariance = np.asarray(self.covariance, float)
        return (np.asarray(self.mean, float), np.linalg.inv(covariance),
                float(np.linalg.slogdet(covariance)[1]))

    def distance2(self, x: np.ndarray) -> float:
        mean, precision, _ = self._parts()
        d = np.asarray(x, float) - mean
        return float(d @ precision @ d)

    def log_likelihood(self, x: np.ndarray) -> float:
        _, _, log_det = self._parts()
        return -0.5 * (self.distance2(x) + log_det)


@dataclass(frozen=True)
class Judgement:
    score: float  # log-likelihood of the likeliest other sequence minus the likeliest LGE
    other: str  # that other sequence
    distance2: float  # the series' squared Mahalanobis distance from it


@dataclass(frozen=True)
class ContrastModel:
    features: tuple[str, ...]  # which of FEATURES, in the kinds' order
    kinds: tuple[SeriesKind, ...]
    # A score at least this, within max_distance2 of the other sequence: refused.
    refuse_score: float
    # A score at least this: flagged for review.
    review_score: float
    max_distance2: float

    def judge_values(self, values: dict[str, float | None]) -> Judgement | None:
        """The judgement of a series' measures (:func:`features`); None where one is
        missing or the model is empty."""
        x = vector(values, self.features)
        return None if x is None or not self.kinds else self.judge(x)

    def lge_distance2(self, x: np.ndarray) -> float | None:
        """The squared Mahalanobis distance from the nearest kind of LGE (None: none)."""
        distances = [k.distance2(x) for k in self.kinds if k.lge]
        return min(distances) if distances else None

    def judge(self, x: np.ndarray) -> Judgement:
        lge = max(k.log_likelihood(x) for k in self.kinds if k.lge)
        other = max((k for k in self.kinds if not k.lge), key=lambda k: k.log_likelihood(x))
        return Judgement(other.log_likelihood(x) - lge, other.name, other.distance2(x))

    def to_dict(self) -> dict:
        return {"features": list(self.features),
                "kinds": [{"name": k.name, "lge": k.lge, "series": k.series,
                           "mean": list(k.mean), "covariance": [list(r) for r in k.covariance]}
                          for k in self.kinds],
                "refuse_score": self.refuse_score, "review_score": self.review_score,
                "max_distance2": self.max_distance2}

    @classmethod
    def from_dict(cls, data: dict) -> ContrastModel:
        unknown = set(data["features"]) - set(FEATURES)
        if unknown:
            raise ValueError(f"a contrast model on {sorted(unknown)}, measures this service "
                             f"does not take (it takes {FEATURES})")
        kinds = tuple(SeriesKind(k["name"], bool(k["lge"]), tuple(k["mean"]),
                                 tuple(tuple(r) for r in k["covariance"]), k.get("series", 0))
                      for k in data["kinds"])
        return cls(tuple(data["features"]), kinds, float(data["refuse_score"]),
                   float(data["review_score"]), float(data["max_distance2"]))


def fit_kind(name: str, lge: bool, x: np.ndarray, ridge: float = 1e-3) -> SeriesKind:
    """One kind's Gaussian from its series' measures (n, features); ``ridge`` keeps the
    covariance invertible where a group is small or a measure nearly constant."""
    x = np.asarray(x, float)
    covariance = np.cov(x.T).reshape(x.shape[1], x.shape[1]) + ridge * np.eye(x.shape[1])
    return SeriesKind(name, lge, tuple(float(v) for v in x.mean(0)),
                      tuple(tuple(float(v) for v in row) for row in covariance), len(x))
