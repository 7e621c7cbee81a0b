"""An analysis' arrays as stored (``arrays.npz``): the images and the masks the overlay, the
SEG and the viewer's disagreement layer are made from.

The images are the float32 values analysed, stored in the narrowest integer type that holds
every one of them exactly (most scanners store whole numbers: 12-bit MR in uint16 is half
the bytes) and float32 otherwise; each mask is kept as bits (``np.packbits``), eight to a
byte. The file is written durably before the answer, and the fsync's time grows with its
bytes: a bool per pixel for the masks took 25 ms where 10 did as bits, and float32 images
made the save of a 12-slice 256 x 256 series about three times slower than uint16
(benchmarks/results/store_speed_images.json; issue 54, docs/experiments.md "Performance").
:func:`load` gives the images back as float32, the same values, and reads every layout
stored before.
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
    arrays = {"images": _narrowest(images), SHAPE: np.array(images.shape, dtype=np.int64)}
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
            elif key == "images":
                arrays[name] = data[key].astype(np.float32, copy=False)
            else:
                arrays[name] = data[key]
        return arrays


_WHOLE_NUMBER_TYPES = (np.uint8, np.uint16, np.int16)


def _narrowest(images: np.ndarray) -> np.ndarray:
    """``images`` in the first of uint8, uint16 and int16 that holds every value exactly;
    as given when none does (fractions, a wider range, NaN)."""
    if images.dtype.kind != "f" or images.size == 0:
        return images
    low, high = images.min(), images.max()
    for dtype in _WHOLE_NUMBER_TYPES:
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:  # False for NaN
            whole = images.astype(dtype)
            return whole if np.array_equal(whole, images) else images
    return images
