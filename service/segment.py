"""The pipelines: preprocess, run the networks, map probabilities back, clean the masks.

``cascade-unet``: myocardium U-Net on the whole slice, then the scar U-Net
on the heart's bounding box. ``enet`` / ``enet-raw``: the same myocardium,
then the ENet on the Hough-circle crop with (Protocol 2) or without
(Protocol 1) the myocardium mask. Only the scar network and its crop differ.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from .infer import Predictor
from .postprocess import attach_scar, clean_myocardium
from .preprocess import GridTransform, InputSpec, Spacing, crop_transforms, model_inputs


@dataclass(frozen=True)
class Network:
    predict: Predictor
    spec: InputSpec


@dataclass(frozen=True)
class Segmentation:
    myocardium: np.ndarray  # bool (z, y, x) on the source grid
    scar: np.ndarray  # bool (z, y, x), inside the myocardium (which was grown over it)
    myocardium_probability: np.ndarray  # float32 (z, y, x)
    scar_probability: np.ndarray  # float32 (z, y, x)


def _foreground_on_source(net: Network, batch: np.ndarray,
                          transforms: Sequence[GridTransform]) -> np.ndarray:
    probabilities = net.predict(batch)[..., 1]
    return np.stack([t.to_source(p) for t, p in zip(transforms, probabilities, strict=True)])


def myocardium_probability(images: Sequence[np.ndarray], spacing: Spacing,
                           net: Network) -> np.ndarray:
    batch, transforms = model_inputs(images, spacing, net.spec)
    return _foreground_on_source(net, batch, transforms)


def scar_probability(images: Sequence[np.ndarray], spacing: Spacing, myocardium: np.ndarray,
                     net: Network) -> np.ndarray:
    transforms = crop_transforms(images, spacing, net.spec, myocardium)
    if transforms is None:
        return np.zeros(np.shape(myocardium), dtype=np.float32)
    batch, transforms = model_inputs(images, spacing, net.spec, transforms, myocardium)
    return _foreground_on_source(net, batch, transforms)


def scar_reach_mm(spec: InputSpec) -> float:
    """How far outside the myocardium a scar network's scar may extend it.

    A network that sees the image around the ring (the scar U-Net, ENet
    Protocol 1) can find scar the myocardium network left out; one that
    sees the image only through the mask (Protocol 2) cannot, so its scar
    stays inside.
    """
    return 0.0 if spec.masked else 8.0


def segment(images: Sequence[np.ndarray], spacing: Spacing, myocardium_net: Network,
            scar_net: Network) -> Segmentation:
    """Both masks of one series (slices ordered base to apex, physical values)."""
    myo_p = myocardium_probability(images, spacing, myocardium_net)
    myocardium = clean_myocardium(myo_p)
    scar_p = scar_probability(images, spacing, myocardium, scar_net)
    myocardium, scar = attach_scar(scar_p, myocardium, spacing,
                                   reach_mm=scar_reach_mm(scar_net.spec))
    return Segmentation(myocardium=myocardium, scar=scar,
                        myocardium_probability=myo_p.astype(np.float32),
                        scar_probability=scar_p.astype(np.float32))
