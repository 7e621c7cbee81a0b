"""Labelled series from every source the networks learn from, behind one small interface.

A *source* names one series and reads it on demand (``read``): a phantom
series written by :mod:`training.data.phantoms`, or an EMIDEC case
(:mod:`training.data.emidec`), bright-blood as acquired or darkened. Sources are
small frozen dataclasses, so a process pool can be handed them and each
worker reads its own series; the arrays, the threshold choice and the
evaluation all take sources, never a folder layout.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Protocol

import numpy as np
from scipy import ndimage

from training.data.phantoms import load_series, load_truth

Contrast = Literal["dark-blood", "bright-blood"]


@dataclass(frozen=True)
class LabelledSeries:
    """Slices (physical values, base to apex or the reverse) and their expert or true masks."""

    images: list[np.ndarray]
    spacing: tuple[float, float]
    true_myocardium: np.ndarray  # bool (z, y, x), scar included
    true_scar: np.ndarray  # bool (z, y, x), obstruction included
    true_obstruction: np.ndarray  # bool (z, y, x)
    # bool (z, y, x): the LV blood pool inside the endocardium (papillary muscles included);
    # None where the source does not know it (read it through :meth:`cavity`).
    true_cavity: np.ndarray | None = None

    def cavity(self) -> np.ndarray:
        """The LV cavity: the source's own, or the holes of the myocardial ring per slice.

        The fallback misses the cavity of a ring that does not close (basal LVOT
        slices); every current source has its own.
        """
        if self.true_cavity is not None:
            return np.asarray(self.true_cavity, dtype=bool)
        return np.stack([ndimage.binary_fill_holes(m) & ~m for m in self.true_myocardium])


class Source(Protocol):
    @property
    def series_id(self) -> str: ...

    @property
    def contrast(self) -> Contrast: ...

    def read(self) -> LabelledSeries: ...


@dataclass(frozen=True)
class PhantomSource:
    """A phantom series folder (DICOM files and ``truth.npz``); always dark-blood."""

    folder: Path

    @property
    def series_id(self) -> str:
        return Path(self.folder).name

    @property
    def contrast(self) -> Contrast:
        return "dark-blood"

    def read(self) -> LabelledSeries:
        datasets, images = load_series(Path(self.folder))
        truth = load_truth(Path(self.folder))
        masks = [np.stack([truth[d.SOPInstanceUID][k] for d in datasets]).astype(bool)
                 for k in ("myocardium", "scar", "mvo")]
        first = truth[datasets[0].SOPInstanceUID]
        cavity = (np.stack([truth[d.SOPInstanceUID]["cavity"] for d in datasets]).astype(bool)
                  if "cavity" in first else None)  # phantoms written before it was saved
        return LabelledSeries(images, tuple(float(v) for v in datasets[0].PixelSpacing), *masks,
                              true_cavity=cavity)


def as_source(item: Source | Path | str) -> Source:
    """A phantom folder given as a path becomes its source; a source stays as it is."""
    return PhantomSource(Path(item)) if isinstance(item, (str, Path)) else item
