"""Which LGE contrast a series is: dark-blood (the seeds' sequence) or bright-blood (clinical).

The networks are trained on both contrasts and segment either the same way,
so this reading labels the report (``contrast``) rather than choosing a
model. It comes from the headers where they say so, and otherwise from the
image: where the LV blood pool's signal sits between remote and peak
myocardium. On bright-blood LGE the blood is about as bright as scar; on
dark-blood LGE it is suppressed towards the myocardium. Pure functions.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
from scipy import ndimage

from service.pipeline.postprocess import fill_holes

Contrast = Literal["dark-blood", "bright-blood"]

# Free-text hints that a series is dark-blood LGE (vendors name it in the protocol or the
# series description: "DB-LGE", "dark blood PSIR", FIDDLE, T2-prepared flow-independent).
_DARK_BLOOD_WORDS = re.compile(
    r"dark[\s_-]*blood|\bdb[\s_-]*(lge|psir|de|ir)\b|\bfiddle\b|flow[\s_-]*independent",
    re.IGNORECASE)
# The blood pool's position between the myocardium's 10th and 99th percentile at which a
# series is read as bright-blood. Chosen between the groups of EMIDEC train and validation
# cases (bright as acquired, and darkened) and phantom training series, measured on their
# expert or true masks (docs/training.md); how often it reads the test sets right is in
# models/EVALUATION.md.
BRIGHT_BLOOD_POSITION = 0.5
_MIN_CAVITY_PIXELS = 10


@dataclass(frozen=True)
class ContrastReading:
    contrast: Contrast
    basis: Literal["headers", "image", "default"]
    blood_position: float | None  # None when read from the headers or no ring was found


def header_hint(texts: Iterable[str | None]) -> Contrast | None:
    """dark-blood when a protocol name or series description says so; otherwise None."""
    return "dark-blood" if any(t and _DARK_BLOOD_WORDS.search(t) for t in texts) else None


def blood_position(images: Sequence[np.ndarray], myocardium: np.ndarray) -> float | None:
    """Median LV blood signal between the myocardium's 10th and 99th percentile, over slices.

    The blood pool is what the myocardium ring encloses, eroded by a pixel to
    stay off partial volume; None when no slice has a closed ring.
    """
    blood, muscle = [], []
    for image, ring in zip(images, np.asarray(myocardium, dtype=bool), strict=True):
        if ring.sum() < 2 * _MIN_CAVITY_PIXELS:
            continue
        cavity = ndimage.binary_erosion(fill_holes(ring) & ~ring)
        if cavity.sum() < _MIN_CAVITY_PIXELS:
            continue
        blood.append(np.asarray(image, np.float32)[cavity])
        muscle.append(np.asarray(image, np.float32)[ring])
    if not blood:
        return None
    low, peak = np.percentile(np.concatenate(muscle), [10, 99])
    if peak - low <= 1e-6:
        return None
    return float((np.median(np.concatenate(blood)) - low) / (peak - low))


def read_contrast(images: Sequence[np.ndarray], myocardium: np.ndarray,
                  header_texts: Iterable[str | None] = ()) -> ContrastReading:
    """The contrast the series is read as, and what the reading rests on."""
    hinted = header_hint(header_texts)
    if hinted is not None:
        return ContrastReading(hinted, "headers", None)
    position = blood_position(images, myocardium)
    if position is None:
        # Nothing to read it from (no ring): the common clinical sequence.
        return ContrastReading("bright-blood", "default", None)
    contrast: Contrast = "bright-blood" if position >= BRIGHT_BLOOD_POSITION else "dark-blood"
    return ContrastReading(contrast, "image", position)
