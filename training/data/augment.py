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


def augment_pair(image: np.ndarray, target: np.ndarray, rng: np.random.Generator,
                 masked: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One random augmentation of an (H, W) or (H, W, C) input and its (H, W[, K]) target.

    Input channels after the first (a myocardium mask given as input) and
    every target channel (the soft label, an emphasis map) move with the
    geometry but keep their values.
    """
    extra = image[..., 1:] if image.ndim == 3 else None
    image = image[..., 0] if image.ndim == 3 else image
    k = int(rng.integers(8))
    image, target = dihedral(image, k), dihedral(target, k)
    extra = None if extra is None else dihedral(extra, k)
    if rng.random() < 0.7:
        coords = elastic_field(image.shape, rng, amplitude_px=rng.uniform(0.5, 2.0),
                               zoom=rng.uniform(0.9, 1.1), rotation_deg=rng.uniform(-20, 20))
        fill = 0.0 if masked else float(image.min())
        image = ndimage.map_coordinates(image, coords, order=1, mode="constant", cval=fill)
        target = _warp_channels(target, coords)
        extra = None if extra is None else _warp_channels(extra, coords)
    inside = image != 0 if masked else np.ones(image.shape, dtype=bool)
    # Monotone contrast change (gamma on the rank-preserving [0, 1] rescale),
    # then gain, offset and noise; the z-scored scale stays roughly the same.
    lo, hi = float(image.min()), float(image.max())
    if hi > lo:
        unit = (image - lo) / (hi - lo)
        image = lo + (hi - lo) * unit ** rng.uniform(0.7, 1.5)
    image = image * rng.uniform(0.85, 1.2) + rng.uniform(-0.2, 0.2)
    image = image + rng.normal(0.0, rng.uniform(0.0, 0.15), size=image.shape)
    image = np.where(inside, image, 0.0) if masked else image
    if extra is not None:
        image = np.concatenate([image[..., None], extra], axis=-1)
    return image.astype(np.float32), target.astype(np.float32)


def augment_batch(x: np.ndarray, y: np.ndarray, rng: np.random.Generator, masked: bool = False
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Augment (N, H, W, C) inputs and (N, H, W[, K]) targets slice by slice."""
    pairs = [augment_pair(xi if xi.shape[-1] > 1 else xi[..., 0], yi, rng, masked)
             for xi, yi in zip(x, y, strict=True)]
    images = np.stack([p[0] for p in pairs])
    return (images if images.ndim == 4 else images[..., None], np.stack([p[1] for p in pairs]))
