"""Reading the LGE contrast: headers first, then the blood pool against the myocardium."""

from __future__ import annotations

import numpy as np
import pytest

from service.pipeline.contrast import (
    BRIGHT_BLOOD_POSITION,
    blood_position,
    header_hint,
    read_contrast,
)


def _stack(blood: float, slices: int = 3, size: int = 64, seed: int = 0
           ) -> tuple[list[np.ndarray], np.ndarray]:
    """Slices with a myocardium ring (remote 20, a scar sector at 200) around blood ``blood``."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    ring = (r >= 10) & (r < 16)
    image = np.full((size, size), 50.0)
    image[r < 10] = blood
    image[ring] = 20.0
    image[ring & (xx < size / 2 - 4)] = 200.0
    images = [image + rng.normal(0, 3, image.shape) for _ in range(slices)]
    return images, np.stack([ring] * slices)


@pytest.mark.parametrize(("blood", "expected"), [(190.0, "bright-blood"), (230.0, "bright-blood"),
                                                 (25.0, "dark-blood"), (60.0, "dark-blood")])
def test_the_blood_pool_against_the_myocardium_sets_the_contrast(blood, expected) -> None:
    images, ring = _stack(blood)
    reading = read_contrast(images, ring)
    assert (reading.contrast, reading.basis) == (expected, "image")
    assert (reading.blood_position >= BRIGHT_BLOOD_POSITION) == (expected == "bright-blood")


def test_the_position_does_not_depend_on_the_scanners_scale() -> None:
    images, ring = _stack(150.0)
    position = blood_position(images, ring)
    assert blood_position([3.0 * im + 400.0 for im in images], ring) == pytest.approx(position)


@pytest.mark.parametrize("text", ["DB-LGE SAX", "dark blood PSIR", "LGE_DarkBlood",
                                  "FIDDLE sa stack", "flow-independent dark-blood DE"])
def test_headers_that_name_dark_blood_win_over_the_image(text) -> None:
    images, ring = _stack(220.0)  # a bright pool: the image alone would say bright-blood
    reading = read_contrast(images, ring, [None, text])
    assert (reading.contrast, reading.basis, reading.blood_position) == ("dark-blood",
                                                                         "headers", None)


@pytest.mark.parametrize("text", ["LGE SAX PSIR", "de_sax", "DBL stack", "tfl2d1", "", None])
def test_other_headers_say_nothing(text) -> None:
    assert header_hint([text]) is None


def test_without_a_closed_ring_the_clinical_default_is_given() -> None:
    images, _ = _stack(220.0)
    reading = read_contrast(images, np.zeros((3, 64, 64), bool))
    assert (reading.contrast, reading.basis, reading.blood_position) == ("bright-blood",
                                                                         "default", None)
