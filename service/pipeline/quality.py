"""Whether a result can be read as it is, or needs a person first: the review reasons.

The checks are on the result and its geometry, not on the request (that is
``acceptance``): gaps in the myocardium, an implausible mass, an interval
too wide to act on, geometry outside what the models were trained on.
"""

from __future__ import annotations

import numpy as np

from service.pipeline.volume import Volume

# Geometry that gets a warning: outside what the models were trained on (phantoms: 8-10 mm
# slices, 1.2-2.0 mm pixels; EMIDEC: 8-13 mm slices, 1.25-2 mm nominal pixels), with room.
SLICE_SPACING_CHECKED_MM = (4.0, 15.0)
PIXEL_SPACING_CHECKED_MM = (0.6, 3.0)

# An interval wider than this is too wide to act on: the result goes to a person.
MAX_INTERVAL_WIDTH_PERCENT = 6.0


def myocardium_gaps(myocardium: np.ndarray) -> list[int]:
    """Slices without myocardium between slices that have it (0 = most basal)."""
    with_myo = [k for k in range(len(myocardium)) if myocardium[k].any()]
    return [] if not with_myo else [k for k in range(with_myo[0], with_myo[-1])
                                    if not myocardium[k].any()]


def review_reasons(myocardium: np.ndarray, figures: dict, volume: Volume,
                   scar_interval: tuple[float, float] | None) -> list[str]:
    """Why the result should not be read without a person checking it (empty: ok)."""
    reasons = []
    # A series without any LV ring was refused before (service.pipeline.acceptance).
    gaps = myocardium_gaps(myocardium)
    if gaps:
        reasons.append(f"no myocardium found on slices {gaps} (0 = most basal), between "
                       "slices that have it; check those slices")
    if np.asarray(myocardium).any():
        mass = figures["myocardium_mass_g"]
        if not 30.0 <= mass <= 350.0:
            reasons.append(f"myocardial mass {mass:.0f} g is implausible (expected 30-350 g "
                           "for an adult LV); the segmentation or the geometry is wrong")
    if scar_interval is None:
        reasons.append("the scar model has no calibrated interval: the scar % comes without a "
                       "measure of how sure it is")
    else:
        width = scar_interval[1] - scar_interval[0]
        if width > MAX_INTERVAL_WIDTH_PERCENT:
            reasons.append(f"the 95 % interval of the scar % is {width:.1f} points wide "
                           f"({scar_interval[0]:.1f}-{scar_interval[1]:.1f} %), more than "
                           f"{MAX_INTERVAL_WIDTH_PERCENT:g}: too unsure to act on")
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
