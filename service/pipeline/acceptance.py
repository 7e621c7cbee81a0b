"""Is this a short-axis LGE stack of a heart? Refuse it before anything is stored if not.

Three kinds of evidence, each cheap:

* the headers, used only where they speak: a spin-echo or long-echo
  (T2-weighted) acquisition, a body part other than the heart, a series
  description or protocol that names another cardiac sequence (cine, T1/T2
  mapping, STIR, perfusion) and nothing of LGE, a field of view too small to
  hold a heart. Missing attributes say nothing: anonymised or converted
  series (EMIDEC's were PNGs) often lack them;
* the networks' own output: a heart's myocardium, on most slices (a closed
  left-ventricular ring of plausible size on one settles it);
* the image inside and around that ring, for when the headers lie or are
  missing (:func:`lge_evidence`): LGE nulls healthy myocardium, so the
  remote myocardium is darker than most of the tissue around the heart,
  and the blood pool is never darker than it (bright in bright-blood LGE,
  about as dark in dark-blood LGE) nor the brightest tissue there (scar and
  fat are as bright). A cine (bSSFP) or T2-weighted series of a heart shows
  grey myocardium, on bright or black blood. Four measures (the
  myocardium's rank among the tissue around the heart, the blood pool's
  position in that tissue's range and its texture, the myocardium over the
  blood) are
  judged by a small classifier, a Gaussian per kind of series (LGE real,
  darkened and rendered; rendered cine, dark- and bright-blood T2), fitted
  by ``python -m training.studies.gate_flag_study`` and written to
  :mod:`service.pipeline.lge_contrast`: a series far more like one of the
  other sequences than like any LGE is refused, a doubtful one flagged.

What is not a heart is refused; a heart the rules doubt is analysed and
flagged (:func:`ring_review`): a thick wall hiding the cavity, a small
ventricle or only apical slices leave no closed ring of an LV's size, yet
the myocardium shows on most slices. A series whose myocardium the
network finds on few slices (noise, another body part) has no heart.

Pure functions: datasets and masks in, the reasons out.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np
import pydicom
from scipy import ndimage, stats

from service.errors import NotCardiacLGE
from service.pipeline.contrast_model import ContrastModel, Judgement, features, vector
from service.pipeline.intensity import percentile
from service.pipeline.lge_contrast import CONTRAST_MODEL
from service.pipeline.postprocess import fill_holes, mask_box

# LGE is an inversion-recovery gradient-echo (or SSFP) readout with an echo time of a few
# milliseconds; T2-weighted and spin-echo series have tens to hundreds.
MAX_LGE_ECHO_TIME_MS = 15.0
# The LV is 40-70 mm across: a smaller field of view cannot show it whole.
MIN_FIELD_OF_VIEW_MM = 100.0
HEART_BODY_PARTS = frozenset({"HEART", "CHEST", "THORAX", "CARDIAC", "CHEST_TO_PELVIS"})
# Series descriptions of other cardiac MR sequences, and of LGE (which wins when both
# appear, e.g. "LGE after cine"). Vendors differ; these are the common names.
_OTHER_SEQUENCE = re.compile(
    r"\bcine\b|\btrufi\b|\bfiesta\b|\bb-?tfe\b|\bbssfp\b|\bt2w\b|t2[\s_-]*map|t1[\s_-]*map|"
    r"\bmolli\b|\bshmolli\b|\bstir\b|\bhaste\b|\btse\b|perfusion|phase[\s_-]*contrast",
    re.IGNORECASE)
_LGE = re.compile(r"lge|psir|\bde\b|delayed|late[\s_-]*(gad|enh)|\bmde\b|viability|\bscar\b",
                  re.IGNORECASE)
# A slice's myocardium counts as an LV ring when it encloses a cavity (small gaps in the
# ring, where scar or a papillary muscle left it open, closed first) and its area is one of
# an LV's, in mm^2; the largest ring of the series must be at least LARGEST_RING_MM2 (an
# adult mid-ventricular myocardium is 1000-2000 mm^2; the smallest largest ring on the
# validation series was above 800, a heartless phantom's blobs under 300).
MIN_CAVITY_MM2 = 30.0
RING_AREA_MM2 = (150.0, 8000.0)
LARGEST_RING_MM2 = 400.0
RING_GAP_CLOSING_PX = 2
# A heart spans the slices of a short-axis stack: the myocardium network must find at least
# this much myocardium (an apical slice is 300-700 mm^2) on at least HEART_SLICE_SHARE of
# the slices without such a ring, RING_HEART_SLICE_SHARE with one. Every EMIDEC train and
# validation case has expert myocardium of that size on every slice; noise and heartless
# phantoms gave none, or one blob on one slice of eight (release 0.3.2), or one closed
# ring on one slice of eight (release 0.4.0, whose networks learnt remapped appearances).
MIN_HEART_MYOCARDIUM_MM2 = 250.0
HEART_SLICE_SHARE = 0.5
RING_HEART_SLICE_SHARE = 0.25


# The image rules' thresholds, from docs/results/lge_gate.json (python -m
# training.studies.lge_gate_study): every EMIDEC train/validation case (both contrasts) and phantom
# validation and calibration series stays inside them with margin (largest myocardium rank
# 0.58, largest remote-myocardium-over-blood ratio 0.97), and the rendered cine and T2
# phantoms fall outside them where they can.
NOT_NULLED_RANK = 0.6
BLOOD_DARKER_REVIEW = 1.2
BLOOD_DARKER_REFUSE = 2.0
# Tissue within this distance of the LV (outside its epicardium plus a partial-volume
# margin) is what the remote myocardium is ranked against.
SURROUNDINGS_MM = (3.0, 50.0)
_MIN_PIXELS = 20
MAX_RATIO = 99.0
# The LV cavity the myocardium network's ring encloses, as the median over its ring slices,
# in mm^2: below this (about 16 mm across) the ring is not around an LV cavity in
# diastole. Set on the gate study's choosing series (docs/results/gate_flag_study.json:
# every EMIDEC train/validation series, both contrasts, 536 mm^2 or more, LGE phantoms
# 280 or more; the dark-blood T2 renderings it let through, whose black pool the network
# drew as nulled myocardium, 192 or less) and measured on later seeds.
SMALL_CAVITY_MM2 = 200.0
# The blood pool's position in the surrounding tissue's range (LgeEvidence.blood_position)
# below which it is as black as air and lung: dark-blood T2-weighted TSE suppresses the
# blood that far, LGE does not (dark-blood LGE leaves it about as grey as the nulled
# myocardium). Below every LGE series of the gate study's choosing set, real, darkened or
# rendered (lowest 0.13 of 340; docs/results/gate_flag_study.json), where 2 % of fresh
# dark-blood T2 renders passed the classifier with their pool drawn inside the ring.
BLACK_POOL_POSITION = 0.12
# How unlike every kind of LGE the networks were trained on a series' contrast may be
# before a reader is told (issue 53): the squared Mahalanobis distance from the nearest
# kind that a measure drawn from that kind's own Gaussian exceeds once in a thousand (the
# chi-squared quantile for the model's number of measures), so no fitted choice. Measured
# out of fold (docs/experiments.md, "The interval out of fold"): no EMIDEC series as given
# beyond it, a third of the shifted copies (another centre's look).
UNLIKE_TRAINING_LEVEL = 0.999
# Names of the classifier's classes of other sequences, as a reader knows them.
SEQUENCE_NAMES = {"cine": "cine (bSSFP)", "t2-dark-blood": "dark-blood T2-weighted",
                  "t2-bright-blood": "bright-blood T2-weighted"}


@dataclass(frozen=True)
class LgeEvidence:
    """What the image says about the LGE contrast, measured on the myocardium network's ring."""

    # Share of the tissue around the heart darker than the remote myocardium (the ring's
    # 25th percentile, below most scar): low in LGE, which nulls healthy myocardium.
    myocardium_rank: float | None
    # Remote myocardium over the LV blood pool's median: at most about 1 in LGE.
    myocardium_over_blood: float | None
    # The blood pool's median between the 1st and 99th percentile of the tissue around the
    # heart: near the top in cine and bright-blood T2 (blood and fat the brightest), near the
    # bottom in dark-blood T2, in between in LGE (scar and fat as bright or brighter).
    blood_position: float | None = None
    # The blood pool's texture: its standard deviation over its mean signal above that
    # tissue's 1st percentile (flow voids and suppressed blood are patchy, LGE's pool even).
    blood_texture: float | None = None
    # The cavity the ring encloses (gaps closed), mm^2, median over the slices with a ring.
    cavity_mm2: float | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class ClosedRing:
    """A slice's ring on its own box (a margin of RING_GAP_CLOSING_PX + 1, so the closing
    is the same as on the slice), its small gaps closed, and that closed ring filled."""

    box: tuple[slice, ...]
    ring: np.ndarray
    closed: np.ndarray
    filled: np.ndarray


class ClosedRings:
    """Each slice's :class:`ClosedRing`, made when first asked for: the gate
    (:func:`has_lv_ring`) and the evidence (:func:`lge_evidence`) read the same first
    ring, and the closing is most of what either costs."""

    def __init__(self, myocardium: np.ndarray) -> None:
        self.myocardium = np.asarray(myocardium, dtype=bool)
        self._made: dict[int, ClosedRing] = {}

    def __getitem__(self, k: int) -> ClosedRing:
        made = self._made.get(k)
        if made is None:
            box = mask_box(self.myocardium[k], RING_GAP_CLOSING_PX + 1)
            ring = self.myocardium[k][box]
            closed = _closed(ring)
            made = self._made[k] = ClosedRing(box, ring, closed, fill_holes(closed))
        return made


def _closed_rings(myocardium: np.ndarray, rings: ClosedRings | None) -> ClosedRings:
    if rings is None:
        return ClosedRings(myocardium)
    if rings.myocardium.shape != np.shape(myocardium):
        raise ValueError("the closed rings are another myocardium's")
    return rings


def lge_evidence(images: Sequence[np.ndarray], myocardium: np.ndarray,
                 spacing: tuple[float, float], rings: ClosedRings | None = None
                 ) -> LgeEvidence:
    """The image measures, pooled over the slices with a ring; None where unmeasurable.

    ``rings``: the myocardium's :class:`ClosedRings`, where the gate has made them."""
    ring_values, blood_values, around_values, cavity_mm2 = [], [], [], []
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    near, far = SURROUNDINGS_MM
    # Everything measured lies within ``far`` of the ring: work on that box, not the slice.
    margin = tuple(max(RING_GAP_CLOSING_PX, int(np.ceil(far / s))) + 1 for s in spacing)
    rings = _closed_rings(myocardium, rings)
    for k, (image, ring) in enumerate(zip(images, rings.myocardium, strict=True)):
        if ring.sum() < _MIN_PIXELS:
            continue
        box = mask_box(ring, margin)
        image = np.asarray(image, np.float32)[box]
        # The closing, holes and cavity on the ring's own box (the same pixels as on the
        # larger one: its margin holds the closing), the distances on the larger box.
        closed_ring = rings[k]
        tight, small, filled_small = closed_ring.box, closed_ring.ring, closed_ring.filled
        inside_small = filled_small & ~small
        cavity_mm2.append(float(inside_small.sum()) * pixel_mm2)
        cavity_small = ndimage.binary_erosion(inside_small)
        within = tuple(_inner(t, b, n) for t, b, n in zip(tight, box, ring.shape, strict=True))
        ring = ring[box]
        filled = np.zeros_like(ring)
        filled[within] = filled_small
        distance = ndimage.distance_transform_edt(~filled, sampling=spacing)
        ring_values.append(image[ring])
        blood_values.append(image[within][cavity_small])
        around_values.append(image[(distance > near) & (distance <= far)])
    if not ring_values:
        return LgeEvidence(None, None, None, None)
    remote = float(np.percentile(np.concatenate(ring_values), 25))
    around = np.concatenate(around_values)
    rank = float(np.mean(around < remote)) if around.size >= _MIN_PIXELS else None
    blood = np.concatenate(blood_values)
    ratio = position = texture = None
    if blood.size >= _MIN_PIXELS and around.size >= _MIN_PIXELS:
        low, high = percentile(around, [1, 99])  # numpy's, faster at the tails
        if high - low > 1e-6:
            position = float((np.median(blood) - low) / (high - low))
            texture = float(np.std(blood) / max(float(np.mean(blood)) - low,
                                                1e-3 * (high - low)))
    if blood.size >= _MIN_PIXELS:
        # Signals are measured from the darkest tissue seen (air, lung, black blood), so
        # an offset in the stored values (a rescale intercept) does not change them.
        floor = min(float(percentile(v, 1)) for v in (blood, *([around] if around.size
                                                                   else [])))
        blood_level, remote_level = float(np.median(blood)) - floor, remote - floor
        if blood_level > 1e-6:
            ratio = min(remote_level / blood_level, MAX_RATIO)
        elif remote_level > 1e-6:
            ratio = MAX_RATIO  # black blood under a myocardium with signal
    return LgeEvidence(rank, ratio, position, texture, float(np.median(cavity_mm2)))


def contrast_features(evidence: LgeEvidence) -> dict[str, float | None]:
    return features(evidence.myocardium_rank, evidence.blood_position,
                    evidence.myocardium_over_blood, evidence.blood_texture)


def contrast_judgement(evidence: LgeEvidence, model: ContrastModel = CONTRAST_MODEL
                       ) -> Judgement | None:
    """The classifier's reading of the measures; None where one is missing (no cavity)."""
    return model.judge_values(contrast_features(evidence))


def _measures(evidence: LgeEvidence) -> str:
    return (f"the remote myocardium is brighter than {evidence.myocardium_rank:.0%} of the "
            f"tissue around the heart, the blood pool sits at {evidence.blood_position:.0%} "
            f"of that tissue's range and the myocardium is "
            f"{evidence.myocardium_over_blood:.2f} times as bright as the blood")


def contrast_refusal(evidence: LgeEvidence, model: ContrastModel = CONTRAST_MODEL
                     ) -> list[str]:
    """The image's reasons to refuse the series as no LGE (empty: none strong enough)."""
    ratio = evidence.myocardium_over_blood
    if ratio is not None and ratio >= BLOOD_DARKER_REFUSE:
        return [f"the LV blood pool is darker than the myocardium (the myocardium is "
                f"{ratio:.1f} times as bright as the blood), which no LGE image shows: grey "
                f"myocardium on black blood is a dark-blood T2-weighted or similar series"]
    judged = contrast_judgement(evidence, model)
    if (judged is not None and judged.score >= model.refuse_score
            and judged.distance2 <= model.max_distance2):
        return [f"the contrast is that of a {SEQUENCE_NAMES.get(judged.other, judged.other)} "
                f"series, not LGE ({_measures(evidence)}; {math.exp(min(judged.score, 50)):.0f} "
                f"times likelier for such a series than for any LGE seen): LGE nulls the "
                f"healthy myocardium, darker than muscle and liver"]
    return []


def unlike_training_bar(model: ContrastModel = CONTRAST_MODEL) -> float:
    """The squared distance from the nearest kind of LGE beyond which a series is unlike
    the scans the models were trained on (UNLIKE_TRAINING_LEVEL)."""
    return float(stats.chi2.ppf(UNLIKE_TRAINING_LEVEL, len(model.features)))


def beyond_training(distance2: float | None, model: ContrastModel = CONTRAST_MODEL) -> bool:
    """Whether a squared distance from the nearest kind of LGE trained on is past the bar
    (False where it could not be measured: None)."""
    return distance2 is not None and distance2 > unlike_training_bar(model)


def is_unlike_training(evidence: LgeEvidence, model: ContrastModel = CONTRAST_MODEL) -> bool:
    """Whether the series' contrast lies beyond every kind of LGE the networks were trained
    on (False where it cannot be measured): the review reason below, and the interval's
    own scale for such series (:mod:`service.pipeline.uncertainty`)."""
    x = vector(contrast_features(evidence), model.features)
    return beyond_training(None if x is None else model.lge_distance2(x), model)


def unlike_training(evidence: LgeEvidence, model: ContrastModel = CONTRAST_MODEL
                    ) -> str | None:
    """A reason to review a series whose contrast lies beyond every kind of LGE the
    networks were trained on (None: within one, or not measurable)."""
    if not is_unlike_training(evidence, model):
        return None
    return (f"the image is unlike the scans the models were trained on ({_measures(evidence)}"
            "): its scar may be under- or over-called, so check the scar contours against "
            "the image")


def contrast_review(evidence: LgeEvidence, model: ContrastModel = CONTRAST_MODEL
                    ) -> list[str]:
    """The image's doubts about the LGE contrast, for a person to check (empty: none)."""
    reasons = []
    rank = evidence.myocardium_rank
    if rank is not None and rank >= NOT_NULLED_RANK:
        reasons.append(f"the contrast does not look like LGE: the healthy myocardium is "
                       f"brighter than {rank:.0%} of the tissue around the heart, where LGE "
                       "nulls it (darker than muscle and liver); a cine (bSSFP) or "
                       "T2-weighted series, or an LGE with the wrong inversion time, looks "
                       "like this")
    ratio = evidence.myocardium_over_blood
    if ratio is not None and BLOOD_DARKER_REVIEW <= ratio < BLOOD_DARKER_REFUSE:
        reasons.append(f"the contrast does not look like LGE: the LV blood pool is darker "
                       f"than the myocardium ({ratio:.1f} times as bright), as in a dark-blood "
                       "T2-weighted series; LGE shows the blood bright or about as dark")
    judged = contrast_judgement(evidence, model)
    # A series the contrast refuses is not also flagged for what refuses it (the study and
    # the release's report read both on every series; the service refuses first).
    refused = bool(contrast_refusal(evidence, model))
    if not reasons and evidence.myocardium_rank is not None and judged is None and model.kinds:
        reasons.append("the contrast could not be read: no blood pool was found inside the "
                       "myocardium to compare it with; check that this is an LGE series")
    if (not reasons and judged is not None and judged.score >= model.review_score
            and not refused):
        reasons.append(f"the contrast looks more like a "
                       f"{SEQUENCE_NAMES.get(judged.other, judged.other)} series than LGE "
                       f"({_measures(evidence)}); check that this is an LGE series with "
                       "the myocardium nulled")
    if not reasons and judged is not None and (unlike := unlike_training(evidence, model)):
        reasons.append(unlike)
    position = evidence.blood_position
    if position is not None and position < BLACK_POOL_POSITION and not refused:
        reasons.append(f"the contrast does not look like LGE: the LV blood pool is as dark as "
                       f"the darkest tissue around the heart ({position:.0%} of its range, "
                       f"no LGE series seen went below {BLACK_POOL_POSITION:.0%}), as in a "
                       "dark-blood T2-weighted series; check that this is an LGE series")
    cavity = evidence.cavity_mm2
    if cavity is not None and cavity < SMALL_CAVITY_MM2:
        reasons.append(f"the LV cavity inside the drawn myocardium is small ({cavity:.0f} mm^2 "
                       f"on the median slice, an LV in diastole shows more than "
                       f"{SMALL_CAVITY_MM2:.0f}): a thick wall, a small ventricle or an "
                       "apical stack, or not an LGE series (the black blood pool of a "
                       "dark-blood T2-weighted series is drawn like nulled myocardium); check "
                       "the contours and the sequence")
    return reasons


def header_reasons(datasets: Sequence[pydicom.Dataset]) -> list[str]:
    """What the headers say against a short-axis LGE series of the heart (empty: nothing)."""
    ds = datasets[0]
    reasons = []
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part and body_part not in HEART_BODY_PARTS:
        reasons.append(f"the headers give the body part as {body_part}, not the heart")
    echo_time = _number(ds.get("EchoTime"))
    if echo_time is not None and echo_time > MAX_LGE_ECHO_TIME_MS:
        reasons.append(f"the echo time is {echo_time:g} ms: a T2-weighted or spin-echo "
                       f"series, not an inversion-recovery LGE (a few ms)")
    sequence = {str(v).upper() for v in _values(ds.get("ScanningSequence"))}
    if "SE" in sequence and not sequence & {"GR", "IR"}:
        reasons.append("the headers describe a spin-echo acquisition, not an "
                       "inversion-recovery LGE")
    texts = [str(ds.get(k, "") or "") for k in ("SeriesDescription", "ProtocolName",
                                                  "SequenceName")]
    named = next((m.group(0) for t in texts if (m := _OTHER_SEQUENCE.search(t))), None)
    if named and not any(_LGE.search(t) for t in texts):
        reasons.append(f"the series description or protocol names a {named} series, not an "
                       f"LGE one")
    spacing = [_number(v) for v in _values(ds.get("PixelSpacing"))]
    rows, cols = _number(ds.get("Rows")), _number(ds.get("Columns"))
    if len(spacing) == 2 and None not in spacing and rows and cols:
        fov = (rows * spacing[0], cols * spacing[1])
        if min(fov) < MIN_FIELD_OF_VIEW_MM:
            reasons.append(f"the field of view is {fov[0]:.0f} x {fov[1]:.0f} mm, too small "
                           f"to hold a heart (at least {MIN_FIELD_OF_VIEW_MM:.0f} mm)")
    return reasons


def has_lv_ring(myocardium: np.ndarray, spacing: tuple[float, float],
                rings: ClosedRings | None = None) -> bool:
    """A slice whose myocardium is a closed ring of a mid-ventricle's size around a cavity.

    The largest rings are closed first and the first that holds ends the search (the
    review asks this of the final myocardium, whose rings nothing else closes)."""
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    rings = _closed_rings(myocardium, rings)
    areas = rings.myocardium.sum(axis=(1, 2)) * pixel_mm2
    low, high = max(RING_AREA_MM2[0], LARGEST_RING_MM2), RING_AREA_MM2[1]
    for k in np.argsort(-areas, kind="stable"):
        if not low <= areas[k] <= high:
            continue
        closed_ring = rings[int(k)]
        if (closed_ring.filled & ~closed_ring.closed).sum() * pixel_mm2 >= MIN_CAVITY_MM2:
            return True
    return False


def _inner(inner: slice, outer: slice, length: int) -> slice:
    """``inner`` relative to ``outer`` (both of an axis of ``length``, inner within outer)."""
    start, stop, _ = inner.indices(length)
    offset = outer.indices(length)[0]
    return slice(start - offset, stop - offset)


def _closed(ring: np.ndarray) -> np.ndarray:
    """The ring with its small gaps closed (scar or a papillary muscle left it open); on a
    box with a margin of RING_GAP_CLOSING_PX + 1 around it, the same as on the slice."""
    return ndimage.binary_closing(ring, iterations=RING_GAP_CLOSING_PX, border_value=0)


def check_headers(datasets: Sequence[pydicom.Dataset]) -> None:
    reasons = header_reasons(datasets)
    if reasons:
        raise NotCardiacLGE(_sentence(reasons))


def heart_slices(myocardium: np.ndarray, spacing: tuple[float, float]) -> list[int]:
    """Slices with at least MIN_HEART_MYOCARDIUM_MM2 of myocardium (ring or not)."""
    pixel_mm2 = float(spacing[0]) * float(spacing[1])
    return [k for k, m in enumerate(np.asarray(myocardium, dtype=bool))
            if m.sum() * pixel_mm2 >= MIN_HEART_MYOCARDIUM_MM2]


def has_heart(myocardium: np.ndarray, spacing: tuple[float, float],
              rings: ClosedRings | None = None) -> bool:
    """Myocardium on a quarter of the slices with a closed LV ring on one, on half
    without (a hidden cavity, an apical stack): one ring alone on a long stack is a
    shape in noise, not a heart."""
    seen = heart_slices(myocardium, spacing)
    if not seen:
        return False
    share = (RING_HEART_SLICE_SHARE if has_lv_ring(myocardium, spacing, rings)
             else HEART_SLICE_SHARE)
    return len(seen) >= share * len(myocardium)


def check_segmentation(myocardium: np.ndarray, spacing: tuple[float, float],
                       rings: ClosedRings | None = None) -> None:
    if not has_heart(myocardium, spacing, rings):
        seen = len(heart_slices(myocardium, spacing))
        raise NotCardiacLGE(_sentence([
            f"no heart was found: myocardium on {seen} of {len(myocardium)} slices "
            f"{'even with a' if has_lv_ring(myocardium, spacing, rings) else 'and no'} "
            f"left-ventricular ring (a short-axis stack of a heart shows it on most)"]))


def ring_review(first_ring: np.ndarray, spacing: tuple[float, float],
                rings: ClosedRings | None = None) -> list[str]:
    """Why the myocardium, analysed, needs a person's eye (empty: a closed LV ring found).

    Judged on the myocardium network's own ring, as the gate is: the masks reported come
    after the scar network's redraw and the ring constraint, which close a ring the image
    does not show (an apical slice's)."""
    if not np.asarray(first_ring).any() or has_lv_ring(first_ring, spacing, rings):
        return []
    return ["no slice shows a closed left-ventricular ring of an LV's size around a "
            "visible cavity (a thick wall hiding the cavity, a small ventricle, or only "
            "apical slices): the myocardium and scar % may be wrong; check the contours"]


def check_contrast(evidence: LgeEvidence) -> None:
    reasons = contrast_refusal(evidence)
    if reasons:
        raise NotCardiacLGE(_sentence(reasons))


def _sentence(reasons: list[str]) -> str:
    return ("This does not look like a short-axis LGE series of the heart: "
            + "; ".join(reasons) + ". Nothing was stored.")


def _values(value) -> list:
    if value is None:
        return []
    if isinstance(value, (str, bytes)):
        return [value]
    try:
        return list(value)
    except TypeError:
        return [value]


def _number(value) -> float | None:
    try:
        return None if value is None or value == "" else float(value)
    except (TypeError, ValueError):
        return None
