"""No train/serve skew from the speed-ups of issue 54: the networks get the inputs they
were trained on.

``frozen_preprocess.py`` is the preprocessing verbatim from before the speed-ups (commit
5a1563d). On seeded phantom series, the synthetic warm-up series and variants of them
(non-square pixels and matrices, other intensity scales), the service's crop transforms
must be the frozen ones, its Hough circles within one pixel of the frozen ones (centre
and radius), its ``model_inputs`` equal to the frozen ones within 1e-4 and its map back
(probabilities and masks) the same; with the shipped networks, every pipeline's masks on
those series are compared with the masks the frozen preprocessing gives.
"""

from __future__ import annotations

import dataclasses
import json
from functools import cache

import numpy as np
import pytest

from service.config import REPO_ROOT
from service.dicom.synthetic import warmup_series
from service.pipeline import grid, hough
from service.pipeline.preprocess import InputSpec, crop_transforms, model_inputs
from tests.service.pipeline import frozen_preprocess as frozen
from training.data.phantoms import render, sample_spec

TOLERANCE = 1e-4
MODELS_DIR = REPO_ROOT / "models"
# Every network input the service and the training build: the shipped manifest's, and the
# training specs (training/data/dataset.py) with the variants the spec allows.
TRAINING_SPECS = (
    InputSpec(crop="whole_image", shape=(128, 128), spacing_mm=2.0, context_slices=1),
    InputSpec(crop="whole_image", shape=(160, 176), spacing_mm=1.5),
    InputSpec(crop="heart_box", shape=(96, 96), margin_mm=12.0, min_side_mm=60.0,
              peak_ratio_channel=True, context_slices=1),
    InputSpec(crop="heart_box", shape=(96, 96), masked=True, myocardium_channel=True,
              peak_ratio_channel=True),
    InputSpec(crop="hough_circle", shape=(64, 64), masked=False),
    InputSpec(crop="hough_circle", shape=(64, 64), masked=True),
)


def _manifest_specs() -> tuple[InputSpec, ...]:
    manifest = json.loads((MODELS_DIR / "manifest.json").read_text())
    return tuple(InputSpec.from_dict(m["input"]["preprocessing"]) for m in manifest["models"])


SPECS = _manifest_specs() + TRAINING_SPECS


@dataclasses.dataclass(frozen=True)
class Series:
    name: str
    images: list[np.ndarray]
    spacing: tuple[float, float]
    myocardium: np.ndarray  # bool (z, y, x)


def _phantom(index: int) -> Series:
    spec = sample_spec(20261124, index)
    rendered = render(spec)
    spacing = (spec.acquisition.pixel_spacing,) * 2
    return Series(f"phantom {index}", [im.astype(np.float32) for im in rendered.image],
                  spacing, rendered.myocardium.astype(bool))


def _warm_up() -> Series:
    datasets = warmup_series()
    images = [ds.pixel_array.astype(np.float32) for ds in datasets]
    size = images[0].shape[0]
    yy, xx = np.mgrid[:size, :size]
    r_mm = np.hypot(yy - size / 2, xx - size / 2) * 1.4
    rings = np.stack([(r_mm >= 24.0 - 0.6 * k) & (r_mm < 33.0 - 0.6 * k)
                      for k in range(len(images))])
    return Series("synthetic warm-up", images, (1.4, 1.4), rings)


@cache
def all_series() -> tuple[Series, ...]:
    """Seeded series, and variants that take the other code paths (several transforms at
    once, non-square pixels and matrices, negative values, an empty slice)."""
    base = [_phantom(k) for k in range(4)] + [_warm_up()]
    p = base[0]
    variants = [
        Series("non-square pixels", p.images, (1.9, 1.6), p.myocardium),
        Series("192 x 256 matrix", [im[32:224] for im in p.images], p.spacing,
               p.myocardium[:, 32:224]),
        Series("rescaled, negative", [im * 7.3 - 500.0 for im in base[1].images],
               base[1].spacing, base[1].myocardium),
        Series("an empty slice", [np.zeros_like(p.images[0]), *p.images[1:]], p.spacing,
               p.myocardium),
    ]
    return tuple(base + variants)


SERIES_NAMES = [s.name for s in all_series()]


def _series(name: str) -> Series:
    return next(s for s in all_series() if s.name == name)


def _same_transform(new: grid.GridTransform, old: frozen.GridTransform) -> bool:
    return (new.model_shape == old.model_shape and new.source_shape == old.source_shape
            and np.allclose(new.scale, old.scale, rtol=0, atol=1e-9)
            and np.allclose(new.offset, old.offset, rtol=0, atol=1e-9))


@cache
def _frozen_circles(name: str) -> list[frozen.Circle]:
    series = _series(name)
    return frozen.hough_lv_circles(series.images, series.spacing)


@pytest.mark.parametrize("name", SERIES_NAMES)
def test_hough_circles_are_the_frozen_ones(name: str) -> None:
    series = _series(name)
    new = hough.hough_lv_circles(series.images, series.spacing)
    old = _frozen_circles(name)
    for n, o in zip(new, old, strict=True):
        assert np.allclose(n.centre, o.centre, atol=1.0), (n, o)
        assert abs(n.radius_mm - o.radius_mm) <= min(series.spacing), (n, o)


@pytest.mark.parametrize("name", SERIES_NAMES)
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.crop}-{s.shape[0]}-{s.channels}")
def test_model_inputs_and_map_back_are_the_frozen_ones(name: str, spec: InputSpec) -> None:
    series = _series(name)
    images, spacing, myocardium = series.images, series.spacing, series.myocardium
    transforms = old_transforms = None
    if spec.crop == "heart_box":
        old_transforms = frozen.crop_transforms(images, spacing, spec, myocardium)
        transforms = crop_transforms(images, spacing, spec, myocardium)
        assert all(_same_transform(n, o) for n, o in zip(transforms, old_transforms,
                                                         strict=True))
    elif spec.crop == "hough_circle":
        # The Hough crops are compared by the test above; the inputs are cut on the frozen
        # crops, so that the cutting itself is checked exactly.
        old_transforms = [frozen.hough_crop_transform(c, spacing, np.shape(im),
                                                      model_side=spec.shape[0])
                          for c, im in zip(_frozen_circles(name), images, strict=True)]
        transforms = [grid.GridTransform(**dataclasses.asdict(t)) for t in old_transforms]
    x_new, t_new = model_inputs(images, spacing, spec, transforms, myocardium)
    x_old, t_old = frozen.model_inputs(images, spacing, spec, old_transforms, myocardium)
    assert x_new.dtype == np.float32 and x_new.shape == x_old.shape
    assert np.abs(x_new - x_old).max() <= TOLERANCE
    assert all(_same_transform(n, o) for n, o in zip(t_new, t_old, strict=True))

    rng = np.random.default_rng(len(name))
    probabilities = rng.random((len(images), 3, *spec.shape)).astype(np.float32)
    back_new = grid.to_source_stack(t_new, probabilities)
    back_old = frozen.to_source_stack(t_old, probabilities)
    assert back_new.shape == back_old.shape
    assert np.abs(back_new - back_old).max() <= TOLERANCE
    for k in (0, len(images) // 2):
        masks = probabilities[k, 0] >= 0.5
        assert np.array_equal(t_new[k].mask_to_source(masks), t_old[k].mask_to_source(masks))


@pytest.mark.parametrize("name", SERIES_NAMES[:2])
def test_zscore_is_the_frozen_one(name: str) -> None:
    from service.pipeline.intensity import zscore

    series = _series(name)
    for image, ring in zip(series.images, series.myocardium, strict=True):
        assert np.abs(zscore(image) - frozen.zscore(image)).max() <= TOLERANCE
        assert np.abs(zscore(image, ring) - frozen.zscore(image, ring)).max() <= TOLERANCE


# --- The shipped networks: the masks every pipeline draws -------------------


@pytest.fixture(scope="module")
def registry():
    from service.pipeline.registry import load_registry

    return load_registry(MODELS_DIR, "cpu")


@pytest.mark.parametrize("pipeline", ["cascade-unet", "enet", "enet-raw"])
def test_every_pipeline_draws_the_frozen_masks(registry, pipeline: str) -> None:
    """Mask pixels that differ from the frozen preprocessing's, over the series: none
    expected (the inputs agree to float32 rounding); a handful at the threshold would be
    float rounding in the networks, so the bound is a few pixels per series."""
    from service.pipeline.segment import segment

    p = registry.pipelines[pipeline]
    differing = total = 0
    for series in all_series()[:5]:
        new = segment(series.images, series.spacing, p.myocardium.network, p.scar.network)
        old = frozen.frozen_segment(series.images, series.spacing, p.myocardium.network,
                                    p.scar.network)
        for field in ("myocardium", "scar", "mvo"):
            a, b = getattr(new, field), getattr(old, field)
            differing += int((a != b).sum())
            total += int(b.sum())
    assert differing <= 5 * len(all_series()[:5]), f"{differing} of {total} mask pixels differ"


def test_mask_helpers_are_the_frozen_ones() -> None:
    """The post-processing's faster helpers (a box from two projections, holes by one
    labelling, component sizes by one count) give the old answers."""
    from scipy import ndimage

    from service.pipeline import postprocess

    rng = np.random.default_rng(54)
    for trial in range(600):
        mask = rng.random(tuple(rng.integers(1, 40, 2))) < rng.uniform(0.05, 0.9)
        if trial % 3 == 0:
            mask = ndimage.binary_opening(mask)
        margin = int(rng.integers(0, 4)) if trial % 2 else tuple(rng.integers(0, 4, 2))
        assert postprocess.mask_box(mask, margin) == frozen.mask_box(mask, margin)
        assert postprocess.encloses_a_hole(mask) == frozen.encloses_a_hole(mask)
        labels, n = ndimage.label(mask, structure=np.ones((3, 3), bool))
        expected = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
        sizes = postprocess._sizes(labels, n)
        assert sizes.dtype == expected.dtype and np.array_equal(sizes, expected)
