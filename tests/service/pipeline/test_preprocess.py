from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from skimage.draw import disk

from service.pipeline.grid import (
    GridTransform,
    bounding_box_transform,
    resample_transform,
    to_model_stack,
    to_source_stack,
)
from service.pipeline.hough import Circle, hough_crop_transform, hough_lv_circles
from service.pipeline.intensity import to_float, zscore
from service.pipeline.preprocess import InputSpec, model_inputs
from training.data.phantoms import load_series, load_truth


def _ring(shape=(200, 240), centre=(90, 130), r_in=18, r_out=28) -> np.ndarray:
    mask = np.zeros(shape, bool)
    mask[disk(centre, r_out, shape=shape)] = True
    mask[disk(centre, r_in, shape=shape)] = False
    return mask


def test_to_float_applies_slope_and_intercept() -> None:
    stored = np.array([[0, 10], [100, 4095]], dtype=np.uint16)
    out = to_float(stored, slope=2.5, intercept=-100)
    assert out.dtype == np.float32
    assert out.tolist() == [[-100.0, -75.0], [150.0, 10137.5]]


def test_zscore_is_robust_to_outliers() -> None:
    rng = np.random.default_rng(0)
    image = rng.normal(100, 10, (64, 64)).astype(np.float32)
    spiked = image.copy()
    spiked[0, :5] = 1e6  # a few hot pixels
    a, b = zscore(image), zscore(spiked)
    assert abs(float(a.mean())) < 0.05 and abs(float(a.std()) - 1) < 0.05
    assert np.abs(a[1:] - b[1:]).max() < 0.05


def test_zscore_inside_mask_zeroes_outside() -> None:
    image = np.arange(100, dtype=np.float32).reshape(10, 10)
    mask = np.zeros((10, 10), bool)
    mask[2:5, 2:5] = True
    out = zscore(image, mask)
    assert np.all(out[~mask] == 0)
    assert abs(float(out[mask].mean())) < 1e-5


def test_resample_preserves_physical_size() -> None:
    # A 30 mm radius disk at 1.25 mm pixels must stay 30 mm at 2.5 mm pixels.
    spacing = (1.25, 1.25)
    image = np.zeros((256, 256), np.float32)
    image[disk((128, 128), 30 / 1.25, shape=image.shape)] = 1
    tr = resample_transform(image.shape, spacing, 2.5, (128, 128))
    small = tr.to_model(image) >= 0.5
    radius_mm = np.sqrt(small.sum() / np.pi) * 2.5
    assert radius_mm == pytest.approx(30, abs=1.5)


def test_resample_of_non_square_matrix_is_centred() -> None:
    image = np.zeros((192, 256), np.float32)
    image[96, 128] = 1
    tr = resample_transform(image.shape, (1.5, 1.5), 1.5, (256, 256))
    assert tr.to_model(image, order=0)[128, 128] == 1.0


@pytest.mark.parametrize("spacing,target,model_shape", [
    ((1.5, 1.5), 2.0, (128, 128)),
    ((1.2, 1.2), 1.0, (256, 256)),
    ((1.9, 1.6), 1.5, (160, 176)),
])
def test_whole_image_round_trip(spacing, target, model_shape) -> None:
    mask = _ring()
    tr = resample_transform(mask.shape, spacing, target, model_shape)
    back = tr.mask_to_source(tr.to_model(mask.astype(np.float32)) >= 0.5)
    _assert_within_one_pixel(mask, back)


def test_bounding_box_round_trip() -> None:
    mask = _ring()
    tr = bounding_box_transform(mask, (1.4, 1.4), (96, 96))
    assert tr is not None
    model = tr.to_model(mask.astype(np.float32)) >= 0.5
    back = tr.mask_to_source(model)
    _assert_within_one_pixel(mask, back)
    # The whole ring lies inside the box, with margin.
    assert model[0].sum() == model[-1].sum() == model[:, 0].sum() == model[:, -1].sum() == 0


def test_peak_ratio_channel_is_relative_to_the_series_and_scale_free() -> None:
    """A scar-free slice stays dim beside a scarred one, whatever the scanner's scale."""
    rng = np.random.default_rng(0)
    ring = _ring()
    remote, scarred = [np.where(ring, 100.0, 40.0) + rng.normal(0, 3, ring.shape)
                       for _ in range(2)]
    scarred[ring & (np.arange(ring.shape[1]) > 130)] = 400.0  # half the ring enhanced
    spec = InputSpec(crop="heart_box", shape=(96, 96), myocardium_channel=True,
                     peak_ratio_channel=True)
    myocardium = np.stack([ring, ring])
    box = [bounding_box_transform(ring, (1.4, 1.4), (96, 96))] * 2
    x, _ = model_inputs([remote, scarred], (1.4, 1.4), spec, box, myocardium)
    assert x.shape == (2, 96, 96, 3) and spec.channels == 3
    inside = x[..., 1] >= 0.99
    assert x[0][..., 2][inside[0]].max() < 0.35  # remote myocardium: a quarter of the peak
    assert np.percentile(x[1][..., 2][inside[1]], 90) == pytest.approx(1.0, abs=0.05)
    # The per-slice z-score alone makes both slices' brightest myocardium look alike.
    assert abs(np.percentile(x[0][..., 0][inside[0]], 99)
               - np.percentile(x[1][..., 0][inside[1]], 99)) < 1.0
    x10, _ = model_inputs([remote * 10, scarred * 10], (1.4, 1.4), spec, box, myocardium)
    assert np.allclose(x10[..., 2], x[..., 2], atol=1e-4)
    with pytest.raises(ValueError, match="myocardium"):
        model_inputs([remote], (1.4, 1.4), spec, box[:1])


def test_bounding_box_of_empty_mask_is_none() -> None:
    assert bounding_box_transform(np.zeros((10, 10), bool), (1.0, 1.0), (32, 32)) is None


def test_hough_crop_round_trip_and_size() -> None:
    mask = _ring()
    circle = Circle(centre=(90.0, 130.0), radius_mm=28 * 1.5, score=1.0)
    tr = hough_crop_transform(circle, (1.5, 1.5), mask.shape)
    assert tr.model_shape == (64, 64)
    # Side is twice the LV diameter: endocardial radius plus a 10 mm wall, times 4.
    assert tr.scale[0] * 64 * 1.5 == pytest.approx(4 * (28 * 1.5 + 10))
    back = tr.mask_to_source(tr.to_model(mask.astype(np.float32)) >= 0.5)
    _assert_within_one_pixel(mask, back)


def test_to_source_inverts_to_model_exactly_on_coordinates() -> None:
    tr = GridTransform.from_box((10.3, 20.7), (50.0, 70.0), (64, 64), (128, 128))
    coords = np.stack(np.meshgrid(np.arange(128.0), np.arange(128.0), indexing="ij"))
    ramp = coords[0] * 3 + coords[1]
    model = tr.to_model(ramp, order=1)
    back = tr.to_source(model, order=1)
    inside = tr.to_source(np.ones((64, 64)), order=0) > 0
    # Linear data through a linear map and back: identical up to interpolation at the edge.
    interior = inside & np.roll(inside, 2, 0) & np.roll(inside, -2, 0) & np.roll(inside, 2, 1) \
        & np.roll(inside, -2, 1)
    assert np.abs(back - ramp)[interior].max() < 1e-3


def _scipy_to_model(tr: GridTransform, image: np.ndarray, fill: float) -> np.ndarray:
    """The resampling as scipy's per-slice calls (what the matrices must reproduce)."""
    from scipy import ndimage

    sigma = [max(0.0, (s - 1.0) / 2.0) for s in tr.scale]
    if any(s > 0 for s in sigma):
        image = ndimage.gaussian_filter(image, sigma, mode="nearest")
    return ndimage.affine_transform(image, np.asarray(tr.scale), offset=np.asarray(tr.offset),
                                    output_shape=tr.model_shape, order=1, mode="constant",
                                    cval=fill, prefilter=False)


@pytest.mark.parametrize("seed", range(6))
def test_matrix_resampling_is_scipys_to_float32_rounding(seed: int) -> None:
    """Boxes up-, down-sampled, partly and wholly outside the image, any fill value."""
    rng = np.random.default_rng(seed)
    for _ in range(20):
        source = tuple(int(v) for v in rng.integers(20, 260, 2))
        model = tuple(int(v) for v in rng.integers(16, 160, 2))
        tr = GridTransform.from_box(tuple(rng.uniform(-200, 200, 2)),
                                    tuple(rng.uniform(10, 400, 2)), model, source)
        image = rng.normal(size=source).astype(np.float32)
        fill = float(rng.normal()) if rng.random() < 0.5 else 0.0
        assert np.abs(tr.to_model(image, fill=fill) - _scipy_to_model(tr, image, fill)).max() \
            < 1e-5
        from scipy import ndimage

        probabilities = rng.random(model).astype(np.float32)
        inverse = np.array([1 / s for s in tr.scale])
        offset = np.array([-o / s for o, s in zip(tr.offset, tr.scale, strict=True)])
        expected = ndimage.affine_transform(probabilities, inverse, offset=offset,
                                            output_shape=source, order=1, mode="constant",
                                            prefilter=False)
        assert np.abs(tr.to_source(probabilities) - expected).max() < 1e-5


def test_stacks_resample_each_slice_on_its_own_transform_with_its_own_fill() -> None:
    rng = np.random.default_rng(3)
    shared = resample_transform((96, 112), (1.5, 1.5), 2.0, (64, 64))
    other = GridTransform.from_box((10.0, 5.0), (60.0, 60.0), (64, 64), (96, 112))
    transforms = [shared, other, shared, other, shared]
    slices = rng.normal(size=(5, 96, 112)).astype(np.float32)
    fills = [0.0, -1.0, -2.0, 3.0, 0.5]
    stacked = to_model_stack(transforms, slices, fills)
    for k, (tr, fill) in enumerate(zip(transforms, fills, strict=True)):
        assert np.abs(stacked[k] - _scipy_to_model(tr, slices[k], fill)).max() < 1e-5
    channels = rng.random((5, 3, 64, 64)).astype(np.float32)  # (slice, region, y, x)
    back = to_source_stack(transforms, channels)
    assert back.shape == (5, 3, 96, 112)
    for k, tr in enumerate(transforms):
        for c in range(3):
            assert np.abs(back[k, c] - tr.to_source(channels[k, c])).max() < 1e-6


def _assert_within_one_pixel(mask: np.ndarray, back: np.ndarray) -> None:
    from scipy import ndimage

    grown = ndimage.binary_dilation(mask)
    shrunk = ndimage.binary_erosion(mask)
    assert not (back & ~grown).any(), "round trip added pixels beyond one-pixel border"
    assert not (shrunk & ~back).any(), "round trip lost pixels beyond one-pixel border"


@pytest.mark.slow
def test_hough_crop_contains_whole_lv_on_phantoms(series_dirs: list[Path],
                                                  many_series_dirs: list[Path]) -> None:
    """The paper's crop keeps the whole LV (myocardium truth) in >= 98 % of slices."""
    total = contained = 0
    for series_dir in [*series_dirs, *many_series_dirs]:
        truth = load_truth(series_dir)
        datasets, images = load_series(series_dir)
        spacing = tuple(float(v) for v in datasets[0].PixelSpacing)
        circles = hough_lv_circles(images, spacing)
        for ds, image, circle in zip(datasets, images, circles, strict=True):
            myo = truth[ds.SOPInstanceUID]["myocardium"].astype(bool)
            if not myo.any():
                continue
            tr = hough_crop_transform(circle, spacing, image.shape)
            inside = tr.to_source(np.ones(tr.model_shape, np.float32), order=0) > 0.5
            total += 1
            contained += not (myo & ~inside).any()
    assert total >= 200
    assert contained / total >= 0.98, f"{contained}/{total}"
