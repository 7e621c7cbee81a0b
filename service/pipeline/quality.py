"""Whether a result can be read as it is, or needs a person first: the review reasons.

The checks are on the result and its geometry, not on the request (that is
``acceptance``): no closed LV ring, gaps in the myocardium, an implausible
mass, an interval too wide to act on, geometry outside what the models were
trained on.
"""

from __future__ import annotations

import numpy as np

from service.pipeline.acceptance import ClosedRings, ring_review
from service.pipeline.uncertainty import ACTIONABLE_WIDTH_PERCENT
from service.pipeline.volume import Volume

# Geometry that gets a warning: outside what the models were trained on (phantoms: 8-10 mm
# slices, 1.2-2.0 mm pixels; EMIDEC: 8-13 mm slices, 1.25-2 mm nominal pixels), with room.
SLICE_SPACING_CHECKED_MM = (4.0, 15.0)
PIXEL_SPACING_CHECKED_MM = (0.6, 3.0)

# An interval wider than this is too wide to act on: the result goes to a person. A
# calibration carries its own (``IntervalCalibration.review_width``); this is the rule for
# one without.
MAX_INTERVAL_WIDTH_PERCENT = ACTIONABLE_WIDTH_PERCENT
# The widest interval any pipeline may call ``ok``, whatever its calibration says: at 20
# points (a scar of 5 % or 25 %) a reader cannot act on the number without looking.
USABLE_WIDTH_PERCENT = 20.0


def myocardium_gaps(myocardium: np.ndarray) -> list[int]:
    """Slices without myocardium between slices that have it (0 = most basal)."""
    with_myo = [k for k in range(len(myocardium)) if myocardium[k].any()]
    return [] if not with_myo else [k for k in range(with_myo[0], with_myo[-1])
                                    if not myocardium[k].any()]


def interval_reason(scar_interval: tuple[float, float] | None,
                    review_width: float | None = None) -> str | None:
    """Why the interval sends the result to review; None when it does not.

    ``review_width`` is the calibration's: the width beyond which at most a third
    of its validation scans fell (never under MAX_INTERVAL_WIDTH_PERCENT); it is capped
    at USABLE_WIDTH_PERCENT in every pipeline.
    """
    if scar_interval is None:
        return ("the scar model has no calibrated interval: the scar % comes without a "
                "measure of how sure it is")
    calibrated = MAX_INTERVAL_WIDTH_PERCENT if review_width is None else review_width
    limit = min(calibrated, USABLE_WIDTH_PERCENT)
    width = scar_interval[1] - scar_interval[0]
    if width <= limit:
        return None
    why = ("the networks disagree with themselves more than on most validation scans"
           if limit == calibrated else
           f"wider than {USABLE_WIDTH_PERCENT:g} points, the scar % is not an answer to act on")
    return (f"the 95 % interval of the scar % is {width:.1f} points wide "
            f"({scar_interval[0]:.1f}-{scar_interval[1]:.1f} %), more than {limit:.1f}: "
            f"{why} (the myocardium or the scar border is uncertain); check the contours")


def review_reasons(myocardium: np.ndarray, figures: dict, volume: Volume,
                   scar_interval: tuple[float, float] | None,
                   review_width: float | None, first_ring: np.ndarray,
                   rings: ClosedRings | None = None) -> list[str]:
    """Why the result should not be read without a person checking it (empty: ok)."""
    # A series without a heart was refused before (service.pipeline.acceptance); one with a
    # heart but no closed ring (a hidden cavity, apical slices) is analysed and flagged.
    reasons = ring_review(first_ring, volume.spacing, rings)
    gaps = myocardium_gaps(myocardium)
    if gaps:
        reasons.append(f"no myocardium found on slices {gaps} (0 = most basal), between "
                       "slices that have it; check those slices")
    if np.asarray(myocardium).any():
        mass = figures["myocardium_mass_g"]
        if not 30.0 <= mass <= 350.0:
            reasons.append(f"myocardial mass {mass:.0f} g is implausible (expected 30-350 g "
                           "for an adult LV); the segmentation or the geometry is wrong")
    about_interval = interval_reason(scar_interval, review_width)
    if about_interval:
        reasons.append(about_interval)
    low, high = SLICE_SPACING_CHECKED_MM
    if not low <= volume.slice_spacing_mm <= high:
        reasons.append(f"slice spacing {volume.slice_spacing_mm:.1f} mm is outside "
                       f"{low:g}-{high:g} mm (the models saw 8-13 mm between slices)")
    low, high = PIXEL_SPACING_CHECKED_MM
    rows_mm, cols_mm = (float(v) for v in volume.spacing)
    if not (low <= min(rows_mm, cols_mm) and max(rows_mm, cols_mm) <= high):
        reasons.append(f"pixel spacing {rows_mm:g} x {cols_mm:g} mm is outside "
                       f"{low:g}-{high:g} mm (the models saw 1.2-2.0 mm pixels)")
    return reasons
