"""An analysis' arrays as stored (``arrays.npz``): the images and the masks the overlay, the
SEG and the viewer's disagreement layer are made from.

The images are float32 as analysed; each mask is kept as bits (``np.packbits``), eight to
a byte: a bool per pixel made the masks half of the file, and writing it durably before
the answer took 25 ms where 10 do now (issue 54, docs/experiments.md "Performance").
:func:`load` reads both this and the one-bool-a-pixel layout stored before it.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np

# A mask stored as bits is named with this prefix; its shape is stored under SHAPE.
BITS = "bits_"
SHAPE = "mask_shape"


def dump(images: np.ndarray, **masks: np.ndarray) -> bytes:
    """The npz bytes of ``images`` (z, y, x) and each mask (bool, the images' shape)."""
    images = np.asarray(images)
    arrays = {"images": images, SHAPE: np.array(images.shape, dtype=np.int64)}
    for name, mask in masks.items():
        mask = np.asarray(mask, dtype=bool)
        if mask.shape != images.shape:
            raise ValueError(f"mask {name} has shape {mask.shape}, the images {images.shape}")
        arrays[BITS + name] = np.packbits(mask, axis=None)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def load(source: bytes | Path, names: tuple[str, ...] | None = None) -> dict[str, np.ndarray]:
    """Every array of a stored file (or only ``names``, where present), masks as bool."""
    with np.load(io.BytesIO(source) if isinstance(source, bytes) else source) as data:
        shape = tuple(int(n) for n in data[SHAPE]) if SHAPE in data.files else None
        arrays = {}
        for key in data.files:
            name = key.removeprefix(BITS)
            if key == SHAPE or (names is not None and name not in names):
                continue
            if key.startswith(BITS):
                arrays[name] = np.unpackbits(data[key], count=int(np.prod(shape))
                                             ).reshape(shape).view(bool)
            else:
                arrays[name] = data[key]
        return arrays
