"""The ENet's Hough crop searched near the heart (round 4's ENets): the manifest field, its
old default, the myocardium it needs, and serving on an empty first ring."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

import service.pipeline.preprocess as preprocess
from service.config import REPO_ROOT
from service.pipeline.hough import hough_crop_transform, hough_lv_circles
from service.pipeline.preprocess import InputSpec, crop_transforms
from service.pipeline.segment import Network, scar_regions, segment_on

WHOLE = InputSpec(crop="hough_circle", shape=(64, 64), masked=True)
NEAR = dataclasses.replace(WHOLE, hough_near_heart=True)
SPACING = (1.4, 1.4)
LV, DECOY = (50.0, 50.0), (100.0, 100.0)


def _lv_and_decoy(k: int) -> np.ndarray:
    """A bright disk in a dark ring (the LV) off-centre, and a brighter one at the field's
    centre, where the whole slice's search looks first."""
    yy, xx = np.indices((200, 200))
    image = np.random.default_rng(k).normal(60.0, 8.0, (200, 200))
    for (cy, cx), radius, bright in ((LV, 12.0, 300.0), (DECOY, 15.0, 600.0)):
        distance = np.hypot(yy - cy, xx - cx)
        image[distance < radius] += bright
        image[(distance - radius - 5.0) ** 2 < 16.0] = 20.0
    return image.astype(np.float32)


def _ring_stack(n: int) -> np.ndarray:
    yy, xx = np.indices((200, 200))
    distance = np.hypot(yy - LV[0], xx - LV[1])
    return np.repeat(((distance >= 12.0) & (distance < 20.0))[None], n, axis=0)


def test_the_near_heart_spec_round_trips_and_an_old_spec_reads_as_the_whole_slice() -> None:
    assert InputSpec.from_dict(json.loads(json.dumps(NEAR.to_dict()))) == NEAR
    old = NEAR.to_dict()
    del old["hough_near_heart"]  # a manifest written before the field
    assert InputSpec.from_dict(old) == WHOLE and not InputSpec.from_dict(old).hough_near_heart
    # The shipped release (0.4.0) trained both ENets on the search near the heart, and its
    # manifest says so (0.3.2's, trained on the whole slice's, read False without the field).
    manifest = json.loads((REPO_ROOT / "models" / "manifest.json").read_text())
    shipped = [InputSpec.from_dict(m["input"]["preprocessing"]) for m in manifest["models"]]
    assert [s.hough_near_heart for s in shipped if s.crop == "hough_circle"] == [True, True]


def test_a_near_heart_crop_needs_the_myocardium_and_searches_round_it() -> None:
    images = [_lv_and_decoy(k) for k in range(3)]
    with pytest.raises(ValueError, match="hough_near_heart"):
        crop_transforms(images, SPACING, NEAR)
    rings = _ring_stack(3)
    near = crop_transforms(images, SPACING, NEAR, rings)
    whole = crop_transforms(images, SPACING, WHOLE, rings)  # the ring is not read here
    expected = [hough_crop_transform(c, SPACING, (200, 200), model_side=64)
                for c in hough_lv_circles(images, SPACING, heart=rings.any(axis=0))]
    assert near == expected
    assert whole == crop_transforms(images, SPACING, WHOLE)
    # The whole slice locks onto the decoy, the search near the ring onto the LV.
    for circle in hough_lv_circles(images, SPACING):
        assert np.allclose(circle.centre, DECOY, atol=3.0)
    for circle in hough_lv_circles(images, SPACING, heart=rings.any(axis=0)):
        assert np.allclose(circle.centre, LV, atol=3.0)
    assert near != whole
    # The union over slices: a ring on one slice only places every slice's search.
    one = np.zeros_like(rings)
    one[1] = rings[1]
    assert crop_transforms(images, SPACING, NEAR, one) == near
    # No myocardium at all: the whole slice's search, as before round 4.
    assert crop_transforms(images, SPACING, NEAR, np.zeros_like(rings)) == whole


def _uniform(batch: np.ndarray) -> np.ndarray:
    return np.full((*batch.shape[:3], 3), 1.0 / 3.0, np.float32)


@pytest.mark.parametrize("masked", [True, False])
def test_serving_gives_the_first_ring_to_the_search_and_survives_an_empty_one(
        monkeypatch: pytest.MonkeyPatch, masked: bool) -> None:
    images = [_lv_and_decoy(k) for k in range(3)]
    net = Network(_uniform, dataclasses.replace(NEAR, masked=masked),
                  ("background", "scar", "mvo"))
    hearts = []
    real = preprocess.hough_lv_circles

    def spy(slices, spacing, *args, heart=None, **kwargs):
        hearts.append(heart)
        return real(slices, spacing, *args, heart=heart, **kwargs)

    monkeypatch.setattr(preprocess, "hough_lv_circles", spy)
    rings = _ring_stack(3)
    regions = scar_regions(images, SPACING, rings, net)
    assert regions.shape == (2, 3, 200, 200)
    assert np.array_equal(hearts[-1], rings.any(axis=0))
    empty = np.zeros_like(rings)
    seg = segment_on(images, SPACING, empty, empty.astype(np.float32), net)
    assert not hearts[-1].any() and seg.scar.shape == empty.shape
    assert not seg.scar.any(), "no myocardium, no scar (as with the whole slice's search)"
