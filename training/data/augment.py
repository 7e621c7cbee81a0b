"""Augmentation on model-grid arrays (numpy; applied to a batch before each step).

The ENet paper's seven flips and rotations (the dihedral group of the
square, without the identity) plus, as the training issue asks, intensity
and elastic changes. Geometry is applied to image and target together;
intensity only to the image, and never to the zeros outside a Protocol 2
mask (they mean "not myocardium", not "dark").
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def dihedral(array: np.ndarray, k: int) -> np.ndarray:
    """One of the 8 flips/rotations of the square (k = 0 is the identity) on axes 0, 1."""
    out = np.rot90(array, k % 4, axes=(0, 1))
    return out[:, ::-1] if k >= 4 else out


def elastic_field(shape: tuple[int, int], rng: np.random.Generator, amplitude_px: float,
                  zoom: float, rotation_deg: float, control_points: int = 4
                  ) -> np.ndarray:
    """Sampling coordinates: a small random zoom and rotation plus a smooth displacement."""
    h, w = shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32),
                         indexing="ij")
    cy, cx = (h - 1) / 2, (w - 1) / 2
    a = np.radians(rotation_deg)
    ry = (np.cos(a) * (yy - cy) - np.sin(a) * (xx - cx)) / zoom + cy
    rx = (np.sin(a) * (yy - cy) + np.cos(a) * (xx - cx)) / zoom + cx
    coarse = rng.normal(0.0, amplitude_px, size=(2, control_points, control_points))
    factors = (h / control_points, w / control_points)
    dy = ndimage.zoom(coarse[0], factors, order=3)[:h, :w]
    dx = ndimage.zoom(coarse[1], factors, order=3)[:h, :w]
    return np.stack([ry + dy, rx + dx])


def _warp_channels(array: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Resample an (H, W) or (H, W, K) array of masks/labels (zero outside)."""
    if array.ndim == 2:
        return ndimage.map_coordinates(array, coords, order=1, mode="constant", cval=0.0)
    return np.stack([_warp_channels(array[..., c], coords) for c in range(array.shape[-1])],
                    axis=-1)


def smooth_gain(shape: tuple[int, int], rng: np.random.Generator, amplitude: float
                 ) -> np.ndarray:
    """A smooth multiplicative field (coil shading): exp of a random low-order surface."""
    h, w = shape
    v, u = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w), indexing="ij")
    c = rng.normal(0.0, amplitude, size=5)
    return np.exp(c[0] * u + c[1] * v + c[2] * u * v + c[3] * u**2 + c[4] * v**2)


def _zscored(images: np.ndarray) -> np.ndarray:
    """Z-score (H, W, C) image channels together, as the service's input would be."""
    lo, hi = np.percentile(images, (0.5, 99.5))
    clipped = np.clip(images, lo, hi)
    std = float(clipped.std())
    return (clipped - float(clipped.mean())) / (std if std > 1e-6 else 1.0)


def other_scanner(images: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The same slice as another site's scanner might give it, re-normalised.

    EMIDEC is 8-bit and windowed; other centres send 12-bit data, other
    windows, zero-filled 0.6-0.8 mm pixels (blurred, not sharper), coil
    shading and other noise. Each change is drawn independently: a bias
    field, a blur (resampling), clipping at a random upper window (a
    saturated blood pool), quantisation (8-bit or coarser storage). The
    result is z-scored again, as :func:`service.pipeline.intensity.zscore`
    would have done.
    """
    out = images - float(images.min())
    if rng.random() < 0.5:
        out = out * smooth_gain(out.shape[:2], rng, rng.uniform(0.05, 0.35))[..., None]
    if rng.random() < 0.3:
        sigma = rng.uniform(0.3, 1.2)
        out = ndimage.gaussian_filter(out, (sigma, sigma, 0))
    if rng.random() < 0.3:
        out = np.minimum(out, np.percentile(out, rng.uniform(90.0, 99.5)))
    if rng.random() < 0.2:
        levels = float(rng.choice([32, 64, 256]))
        top = float(out.max())
        if top > 0:
            out = np.round(out / top * (levels - 1)) / (levels - 1) * top
    return _zscored(out)


# Share of training inputs shown as another site's scanner would give them (other_scanner).
OTHER_SCANNER_PROBABILITY = 0.5


def augment_pair(image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                 masked: bool = False, image_channels: int = 1,
                 other_scanner_probability: float = OTHER_SCANNER_PROBABILITY
                 ) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of an (H, W) or (H, W, C) input and its (H, W[, K]) target.

    The first ``image_channels`` input channels are image signal (the slice and,
    2.5-D, its neighbours): they get one intensity change together, and the
    two neighbours are swapped half the time, since base-to-apex and
    apex-to-base stacks both occur. Later input channels (a mask, a peak
    ratio) and every target channel (the soft label, an emphasis map) move
    with the geometry but keep their values.
    """
    flat = image.ndim == 2
    image = image[..., None] if flat else image
    images, extra = image[..., :image_channels], image[..., image_channels:]
    if image_channels >= 3 and rng.random() < 0.5:
        images = images[..., [0, 2, 1, *range(3, image_channels)]]
    k = int(rng.integers(8))
    images, extra, target = dihedral(images, k), dihedral(extra, k), dihedral(target, k)
    if rng.random() < 0.7:
        coords = elastic_field(images.shape[:2], rng, amplitude_px=rng.uniform(0.5, 2.0),
                               zoom=rng.uniform(0.9, 1.1), rotation_deg=rng.uniform(-20, 20))
        fill = 0.0 if masked else float(images.min())
        images = np.stack([ndimage.map_coordinates(images[..., c], coords, order=1,
                                                   mode="constant", cval=fill)
                           for c in range(images.shape[-1])], axis=-1)
        target = _warp_channels(target, coords)
        extra = _warp_channels(extra, coords) if extra.shape[-1] else extra
    inside = images != 0 if masked else np.ones(images.shape, dtype=bool)
    if not masked and rng.random() < other_scanner_probability:
        images = other_scanner(images, rng)
    # Monotone contrast change (gamma on the rank-preserving [0, 1] rescale),
    # then gain, offset and noise; the z-scored scale stays roughly the same.
    lo, hi = float(images.min()), float(images.max())
    if hi > lo:
        unit = (images - lo) / (hi - lo)
        images = lo + (hi - lo) * unit ** rng.uniform(0.7, 1.5)
    images = images * rng.uniform(0.85, 1.2) + rng.uniform(-0.2, 0.2)
    images = images + rng.normal(0.0, rng.uniform(0.0, 0.15), size=images.shape)
    images = np.where(inside, images, 0.0) if masked else images
    out = np.concatenate([images, extra], axis=-1)
    out = out[..., 0] if flat else out
    return out.astype(np.float32), target.astype(np.float32)


def augment_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, masked: bool = False,
                  image_channels: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """Augment (N, H, W, C) inputs and (N, H, W[, K]) targets slice by slice."""
    pairs = [augment_pair(xi, yi, rng, masked, image_channels)
             for xi, yi in zip(x, y, strict=True)]
    return np.stack([p[0] for p in pairs]), np.stack([p[1] for p in pairs])
