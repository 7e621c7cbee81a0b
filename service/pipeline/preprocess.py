"""Preprocessing shared by training and serving (no train/serve skew).

In: 2-D slices as arrays (axis order y, x) with their pixel spacing in mm as
(row spacing, column spacing). Out: model inputs, cut and normalised by
:func:`model_inputs` as a model's manifest entry says, and the
:class:`~service.pipeline.grid.GridTransform` that maps them back onto the original
pixel grid. The maps themselves are in :mod:`service.pipeline.grid`; the Hough search
of the ENet's crop in :mod:`service.pipeline.hough`. Pure functions only: no DICOM,
no disk.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import numpy as np

from service.pipeline import intensity
from service.pipeline.grid import (
    GridTransform,
    Spacing,
    bounding_box_transform,
    resample_transform,
    to_model_stack,
)
from service.pipeline.hough import hough_crop_transform, hough_lv_circles
from service.pipeline.intensity import zscore

# --- Model inputs ----------------------------------------------------------
# How each kind of network input is cut and normalised, in one function
# (:func:`model_inputs`), so training and serving see slices identically.
# Parameters come from the model's manifest entry.
#
# Cascade CNN1 (``whole_image``): the whole slice z-scored, at the spec's spacing,
# centred; field of view beyond the image is filled with the darkest kept value
# (air), not with 0, which after the z-score would be mid-gray tissue.
# Crops (heart box, Hough circle): z-scored on the crop itself, as the ENet paper
# does; with ``masked``, multiplied by the myocardium and normalised from inside it
# (the ENet paper's Protocol 2).


@dataclass(frozen=True)
class InputSpec:
    """How a network sees a slice; written into and read back from ``models/manifest.json``.

    ``crop``: ``whole_image`` (resampled to ``spacing_mm``), ``heart_box`` (the
    square around the union of the myocardium over the series, plus
    ``margin_mm``) or ``hough_circle`` (per slice, side twice the LV
    diameter). ``hough_near_heart``: the ``hough_circle`` search is cut to
    :data:`~service.pipeline.hough.HEART_MARGIN_MM` round the box of the
    myocardium over the series (4x faster, and the LV is not outnumbered by
    strong circles elsewhere); off, the whole slice, as every network trained
    before round 4 was (a manifest without the field reads as off).
    ``masked``: multiply by the myocardium (ENet Protocol 2).
    ``myocardium_channel``: give the myocardium mask as a second input
    channel (the cascade's CNN2 sees what CNN1 found).
    ``peak_ratio_channel``: one more channel, the crop divided by the peak of
    the myocardium's signal over the whole series (the FWHM reference). The
    z-score is per slice, so alone it cannot tell a slice whose brightest
    myocardium is scar from one whose brightest is remote myocardium; the
    ratio to the series' peak can, and it does not depend on the scanner's
    intensity scale.
    ``context_slices``: that many neighbouring slices on each side, cut the
    same way, as extra channels (2.5-D input: the neighbours tell a papillary
    muscle from a bright rim, and an apical cap from a ring). A slice at an
    end of the stack repeats itself where it has no neighbour.
    """

    crop: Literal["whole_image", "heart_box", "hough_circle"]
    shape: tuple[int, int]
    spacing_mm: float | None = None
    masked: bool = False
    hough_near_heart: bool = False
    myocardium_channel: bool = False
    peak_ratio_channel: bool = False
    context_slices: int = 0
    margin_mm: float = 12.0
    min_side_mm: float = 60.0
    normalisation: str = "z-score per input, values clipped at the 0.5th/99.5th percentile"

    @property
    def channel_names(self) -> tuple[str, ...]:
        """What each input channel holds, in the order :func:`model_inputs` stacks them."""
        context = tuple(f"the crop of the slice {d:+d}" for d in _offsets(self.context_slices))
        return (("the crop",) + context
                + (("the myocardium mask",) if self.myocardium_channel else ())
                + (("the crop over the 99th percentile of the myocardium's signal in the "
                    "series",) if self.peak_ratio_channel else ()))

    @property
    def channels(self) -> int:
        return len(self.channel_names)

    @property
    def image_channels(self) -> int:
        """Leading channels that are image signal (the slice and its neighbours)."""
        return 1 + 2 * self.context_slices

    def to_dict(self) -> dict:
        return asdict(self) | {"shape": list(self.shape)}

    @classmethod
    def from_dict(cls, data: dict) -> InputSpec:
        known = {k: v for k, v in data.items() if k in cls.__dataclass_fields__}
        return cls(**known | {"shape": tuple(data["shape"])})


def crop_transforms(images: Sequence[np.ndarray], spacing: Spacing, spec: InputSpec,
                    myocardium: np.ndarray | None = None) -> list[GridTransform] | None:
    """The crop of every slice for a ``heart_box`` or ``hough_circle`` network.

    A heart box, and a Hough search near the heart, need the myocardium (z, y, x): the
    box is None when it is empty; the search near an empty myocardium is the whole
    slice's (what a network trained either way was shown for a series without a ring).
    """
    if spec.crop == "heart_box":
        if myocardium is None:
            raise ValueError("a heart_box crop needs the myocardium")
        box = bounding_box_transform(np.asarray(myocardium).any(axis=0), spacing, spec.shape,
                                     spec.margin_mm, spec.min_side_mm)
        return None if box is None else [box] * len(images)
    if spec.crop == "hough_circle":
        heart = None
        if spec.hough_near_heart:
            if myocardium is None:
                raise ValueError("a hough_circle crop near the heart (hough_near_heart) "
                                 "needs the myocardium (z, y, x); none was given")
            heart = np.asarray(myocardium, dtype=bool).any(axis=0)
        circles = hough_lv_circles(images, spacing, heart=heart)
        return [hough_crop_transform(c, spacing, np.shape(im), model_side=spec.shape[0])
                for c, im in zip(circles, images, strict=True)]
    raise ValueError(f"{spec.crop} is not a crop")


def _offsets(context: int) -> list[int]:
    return [d for k in range(1, context + 1) for d in (-k, k)]


def with_context(batch: np.ndarray, context: int) -> np.ndarray:
    """(N, H, W) slices to (N, H, W, 1 + 2 * context): each slice, then its neighbours.

    Neighbours come from the series' geometric order (the caller's), clamped
    at the ends of the stack.
    """
    batch = np.asarray(batch, dtype=np.float32)
    n = len(batch)
    channels = [batch] + [batch[np.clip(np.arange(n) + d, 0, n - 1)] for d in _offsets(context)]
    return np.stack(channels, axis=-1)


PEAK_RATIO_CLIP = 2.0


def series_peak(images: Sequence[np.ndarray], myocardium: np.ndarray,
                percentile: float = 99.0) -> float:
    """The 99th percentile of myocardial signal over the series (one hot pixel is noise)."""
    mask = np.asarray(myocardium, dtype=bool)
    values = np.concatenate([np.asarray(im, np.float32)[m] for im, m in zip(images, mask,
                                                                            strict=True)])
    if values.size == 0:
        return 1.0
    peak = float(intensity.percentile(values, percentile))
    return peak if peak > 1e-6 else 1.0


def model_inputs(images: Sequence[np.ndarray], spacing: Spacing, spec: InputSpec,
                 transforms: Sequence[GridTransform] | None = None,
                 myocardium: np.ndarray | None = None
                 ) -> tuple[np.ndarray, list[GridTransform]]:
    """The batch (N, H, W, channels) a network gets for a series, and each slice's transform."""
    if spec.crop == "whole_image":
        transforms = [resample_transform(np.shape(im), spacing, spec.spacing_mm, spec.shape)
                      for im in images]
        scored = [zscore(im) for im in images]
        batch = to_model_stack(transforms, scored, [float(z.min()) for z in scored])
        return with_context(batch, spec.context_slices), transforms
    if transforms is None:
        raise ValueError("a crop network needs its crop transforms")
    if (spec.masked or spec.myocardium_channel or spec.peak_ratio_channel) \
            and myocardium is None:
        raise ValueError("this network needs the myocardium as input")
    crops = to_model_stack(transforms, images,
                           [float(intensity.percentile(np.asarray(im, np.float32), 0.5))
                            for im in images])
    # Only the crops' windows of the myocardium are made float (to_model_stack).
    mask_crops = None if myocardium is None or not (spec.masked or spec.myocardium_channel) \
        else to_model_stack(transforms, np.asarray(myocardium))
    scored = np.stack([zscore(crop, mask_crops[k] >= 0.5 if spec.masked else None)
                       for k, crop in enumerate(crops)])
    channels = list(np.moveaxis(with_context(scored, spec.context_slices), -1, 0))
    if spec.myocardium_channel:
        channels.append(mask_crops)
    if spec.peak_ratio_channel:
        # The crops over the peak (resampling is linear: no whole series divided first).
        peak = np.float32(series_peak(images, myocardium))
        ratio = to_model_stack(transforms, images)
        ratio /= peak
        channels.append(ratio.clip(0.0, PEAK_RATIO_CLIP))
    return np.stack(channels, axis=-1).astype(np.float32, copy=False), list(transforms)
