"""The pipelines: preprocess, run the networks, map probabilities back, clean the masks.

``cascade-unet``: myocardium U-Net on the whole slice, then the scar U-Net
on the heart's bounding box. ``enet`` / ``enet-raw``: the same myocardium,
then the ENet on the Hough-circle crop with (Protocol 2) or without
(Protocol 1) the myocardium mask. Only the scar network and its crop differ.

A scar network whose classes are background, myocardium, scar also redraws
the myocardium inside its box, at the box's finer pixels: scar borders
blood or fat exactly where the myocardium does, so the network that draws
one border draws the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.pipeline.infer import Predictor
from service.pipeline.postprocess import attach_scar, clean_myocardium
from service.pipeline.preprocess import (
    GridTransform,
    InputSpec,
    Spacing,
    crop_transforms,
    model_inputs,
)


@dataclass(frozen=True)
class Network:
    predict: Predictor
    spec: InputSpec
    # Output classes; after background they are nested regions, innermost last.
    classes: tuple[str, ...] = ("background", "foreground")
    # Probability at which the innermost region (scar) is called; the training
    # command chooses it on validation series (weighted losses shift it from 0.5).
    threshold: float = 0.5

    @property
    def redraws_myocardium(self) -> bool:
        return self.classes == ("background", "myocardium", "scar")


@dataclass(frozen=True)
class Segmentation:
    myocardium: np.ndarray  # bool (z, y, x) on the source grid
    scar: np.ndarray  # bool (z, y, x), inside the myocardium (which was grown over it)
    myocardium_probability: np.ndarray  # float32 (z, y, x)
    scar_probability: np.ndarray  # float32 (z, y, x)


def nested_regions(probabilities: np.ndarray) -> np.ndarray:
    """Class probabilities (..., K+1) to nested region probabilities (..., K), innermost last.

    Region k is classes k..K together: for background/myocardium/scar,
    region 1 is the whole myocardium (scar included) and region 2 the scar;
    for a binary network, its one foreground.
    """
    return np.flip(np.cumsum(np.flip(probabilities[..., 1:], -1), -1), -1)


def _regions_on_source(net: Network, batch: np.ndarray,
                       transforms: Sequence[GridTransform]) -> np.ndarray:
    """(K, z, y, x): each region's probability on the source grid."""
    regions = nested_regions(net.predict(batch))
    return np.stack([np.stack([t.to_source(r[..., k]) for t, r in
                               zip(transforms, regions, strict=True)])
                     for k in range(regions.shape[-1])])


def myocardium_probability(images: Sequence[np.ndarray], spacing: Spacing,
                           net: Network) -> np.ndarray:
    batch, transforms = model_inputs(images, spacing, net.spec)
    return _regions_on_source(net, batch, transforms)[-1]


def scar_regions(images: Sequence[np.ndarray], spacing: Spacing, myocardium: np.ndarray,
                 net: Network) -> np.ndarray | None:
    """(K, z, y, x) region probabilities of a scar network, scar last; None: no myocardium."""
    transforms = crop_transforms(images, spacing, net.spec, myocardium)
    if transforms is None:
        return None
    batch, transforms = model_inputs(images, spacing, net.spec, transforms, myocardium)
    return _regions_on_source(net, batch, transforms)


def scar_reach_mm(net: Network) -> float:
    """How far outside the myocardium a scar network's scar may extend it.

    A network that sees the image around the ring (the binary scar U-Net,
    ENet Protocol 1) can find scar the myocardium network left out; one
    that sees the image only through the mask (Protocol 2) cannot, and one
    that redraws the myocardium has put its scar inside already.
    """
    return 0.0 if net.spec.masked or net.redraws_myocardium else 8.0


def segment_on(images: Sequence[np.ndarray], spacing: Spacing, myocardium: np.ndarray,
               myocardium_probability: np.ndarray, scar_net: Network) -> Segmentation:
    """Both masks, given a first myocardium (and its probability) for the scar network's crop.

    A scar network that redraws the myocardium replaces the first one.
    """
    myocardium = np.asarray(myocardium, dtype=bool)
    regions = scar_regions(images, spacing, myocardium, scar_net)
    return masks_from_regions(regions, spacing, myocardium, myocardium_probability, scar_net)


def masks_from_regions(regions: np.ndarray | None, spacing: Spacing, myocardium: np.ndarray,
                       myocardium_probability: np.ndarray, scar_net: Network) -> Segmentation:
    """The post-processing half of :func:`segment_on`, on a scar network's region probabilities.

    Separate so that thresholds can be compared on one network run.
    """
    if regions is None:
        scar_p = np.zeros(myocardium.shape, np.float32)
    else:
        scar_p = regions[-1]
        if scar_net.redraws_myocardium:
            myocardium_probability = regions[0]
            myocardium = clean_myocardium(myocardium_probability)
    myocardium, scar = attach_scar(scar_p, myocardium, spacing, threshold=scar_net.threshold,
                                   reach_mm=scar_reach_mm(scar_net))
    return Segmentation(myocardium=myocardium, scar=scar,
                        myocardium_probability=np.asarray(myocardium_probability, np.float32),
                        scar_probability=scar_p.astype(np.float32))


def segment(images: Sequence[np.ndarray], spacing: Spacing, myocardium_net: Network,
            scar_net: Network) -> Segmentation:
    """Both masks of one series (slices ordered base to apex, physical values)."""
    myo_p = myocardium_probability(images, spacing, myocardium_net)
    return segment_on(images, spacing, clean_myocardium(myo_p), myo_p, scar_net)
