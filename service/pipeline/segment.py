"""The pipelines: preprocess, run the networks, map probabilities back, clean the masks.

``cascade-unet``: myocardium U-Net on the whole slice, then the scar U-Net
on the heart's bounding box. ``enet`` / ``enet-raw``: the same myocardium,
then the ENet on the Hough-circle crop with (Protocol 2) or without
(Protocol 1) the myocardium mask. Only the scar network and its crop differ.

A scar network whose classes include the myocardium also redraws the
myocardium inside its box, at the box's finer pixels: scar borders blood
or fat exactly where the myocardium does, so the network that draws one
border draws the other.

Classes after background are nested regions (myocardium > scar > MVO,
innermost last), except the LV cavity, which comes first and stands on
its own: the cavity is a class so that the endocardium is a learned
boundary between two labelled regions, not the edge of whatever is bright.
Microvascular obstruction is part of the scar (EMIDEC's convention), so
the MVO mask always lies inside the scar mask.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from service.pipeline.ensemble import symmetry_answers
from service.pipeline.grid import GridTransform, Spacing, to_source_stack
from service.pipeline.infer import Predictor
from service.pipeline.postprocess import attach_scar, clean_myocardium
from service.pipeline.preprocess import InputSpec, crop_transforms, model_inputs
from service.pipeline.shape import constrain_ring

CAVITY = "cavity"


def disjoint_classes(classes: Sequence[str]) -> int:
    """Classes after background that are not nested (the LV cavity): 0 or 1."""
    return int(len(classes) > 1 and classes[1] == CAVITY)


@dataclass(frozen=True)
class Network:
    predict: Predictor
    spec: InputSpec
    # Output classes: background, the cavity where there is one (a region of its own),
    # then nested regions, innermost last (module docstring).
    classes: tuple[str, ...] = ("background", "foreground")
    # Probability at which the scar region is called; the training command chooses
    # it on validation series (weighted losses shift it from 0.5).
    threshold: float = 0.5
    # Probability at which the MVO region (inside the scar) is called.
    mvo_threshold: float = 0.5
    # Whether the myocardium this network draws is completed into a left-ventricular ring
    # (service.pipeline.shape); the release chooses it on the out-of-fold series.
    complete_ring: bool = False

    @property
    def disjoint(self) -> int:
        return disjoint_classes(self.classes)

    @property
    def region_names(self) -> tuple[str, ...]:
        """What each channel of :func:`nested_regions` holds (a class and those inside it)."""
        return self.classes[1:]

    def region(self, regions: np.ndarray, name: str) -> np.ndarray | None:
        """One region (..., last axis indexed by :attr:`region_names`); None if not predicted."""
        if name not in self.region_names:
            return None
        return regions[..., self.region_names.index(name)]

    @property
    def redraws_myocardium(self) -> bool:
        return "myocardium" in self.classes and "scar" in self.classes


@dataclass(frozen=True)
class Segmentation:
    myocardium: np.ndarray  # bool (z, y, x) on the source grid
    scar: np.ndarray  # bool (z, y, x), inside the myocardium (which was grown over it)
    mvo: np.ndarray  # bool (z, y, x), inside the scar
    myocardium_probability: np.ndarray  # float32 (z, y, x)
    scar_probability: np.ndarray  # float32 (z, y, x)
    mvo_probability: np.ndarray  # float32 (z, y, x); zeros for a network without MVO


def nested_regions(probabilities: np.ndarray, disjoint: int = 0) -> np.ndarray:
    """Class probabilities (..., K+1) to region probabilities (..., K).

    The first ``disjoint`` classes after background (the cavity) are their
    own regions; after them, region k is classes k..K together: for
    myocardium/scar/MVO, the whole myocardium (scar and MVO included), the
    scar (MVO included) and the MVO; for a binary network, its one foreground.
    """
    own = probabilities[..., 1:1 + disjoint]
    nested = np.flip(np.cumsum(np.flip(probabilities[..., 1 + disjoint:], -1), -1), -1)
    return np.concatenate([own, nested], axis=-1) if disjoint else nested


def _regions_on_source(net: Network, batch: np.ndarray,
                       transforms: Sequence[GridTransform],
                       keep: Sequence[int] | None = None) -> np.ndarray:
    """(K, z, y, x): each region's probability on the source grid (only ``keep``'s, if
    given: mapping back is most of the work outside the network)."""
    regions = region_stack(net.predict(batch), net.disjoint, keep)  # (z, K, h, w)
    return np.moveaxis(to_source_stack(transforms, regions), 1, 0)


def region_stack(probabilities: np.ndarray, disjoint: int = 0,
                 keep: Sequence[int] | None = None) -> np.ndarray:
    """:func:`nested_regions` (only ``keep``'s, if given) as (N, K, h, w), each region's
    probabilities contiguous for mapping back: the same sums, in the same order, made
    without the whole cumulative sum over the classes' strided axis."""
    probabilities = np.asarray(probabilities, dtype=np.float32)
    classes = probabilities.shape[-1]
    wanted = range(classes - 1) if keep is None else [k % (classes - 1) for k in keep]
    out = np.empty((len(probabilities), len(wanted), *probabilities.shape[1:-1]), np.float32)
    for slot, region in enumerate(wanted):
        if region < disjoint:
            out[:, slot] = probabilities[..., 1 + region]
            continue
        # nested_regions' flipped cumulative sum: the innermost class first.
        total = out[:, slot]
        total[...] = probabilities[..., classes - 1]
        for c in range(classes - 2, region, -1):
            total += probabilities[..., c]
    return out


def myocardium_probability(images: Sequence[np.ndarray], spacing: Spacing,
                           net: Network) -> np.ndarray:
    batch, transforms = model_inputs(images, spacing, net.spec)
    names = net.region_names
    # The myocardium region, or a binary network's one (the innermost, last).
    wanted = names.index("myocardium") if "myocardium" in names else -1
    return _regions_on_source(net, batch, transforms, keep=[wanted])[0]


def scar_regions(images: Sequence[np.ndarray], spacing: Spacing, myocardium: np.ndarray,
                 net: Network) -> np.ndarray | None:
    """(K, z, y, x) region probabilities of a scar network (:attr:`Network.region_names`);
    None: no myocardium."""
    transforms = crop_transforms(images, spacing, net.spec, myocardium)
    if transforms is None:
        return None
    batch, transforms = model_inputs(images, spacing, net.spec, transforms, myocardium)
    return _regions_on_source(net, batch, transforms)


def region_spread(images: Sequence[np.ndarray], spacing: Spacing, myocardium: np.ndarray,
                  net: Network) -> np.ndarray | None:
    """(z, y, x) where the scar networks disagree: the largest, over the regions, of the
    standard deviation of a region's probability across every member of an ensemble (each
    fold's network) under each of the eight symmetries of the square (test-time flips and
    turns), on the source grid; None: no myocardium.

    The viewer's "where the networks disagree" layer: a reader looks there first. The
    members are asked one by one: their mean, as served, hides where they part."""
    transforms = crop_transforms(images, spacing, net.spec, myocardium)
    if transforms is None:
        return None
    batch, transforms = model_inputs(images, spacing, net.spec, transforms, myocardium)
    members = getattr(net.predict, "members", (net.predict,))
    answers = np.concatenate([symmetry_answers(member, batch)  # (M * S, z, h, w, K+1)
                              for member in members])
    spread = nested_regions(answers, net.disjoint).std(axis=0).max(axis=-1)  # (z, h, w)
    return np.clip(to_source_stack(transforms, spread), 0.0, 1.0)


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
    zeros = np.zeros(myocardium.shape, np.float32)
    if regions is None:
        scar_p = mvo_p = zeros
    else:
        by_name = np.moveaxis(regions, 0, -1)
        scar_p = scar_net.region(by_name, "scar")
        scar_p = by_name[..., -1] if scar_p is None else scar_p  # a binary network's one
        mvo_p = scar_net.region(by_name, "mvo")
        mvo_p = zeros if mvo_p is None else mvo_p
        if scar_net.redraws_myocardium:
            myocardium_probability = scar_net.region(by_name, "myocardium")
            myocardium = ring_from(myocardium_probability, scar_net,
                                   scar_net.region(by_name, CAVITY))
    myocardium, scar = attach_scar(scar_p, myocardium, spacing, threshold=scar_net.threshold,
                                   reach_mm=scar_reach_mm(scar_net))
    return Segmentation(myocardium=myocardium, scar=scar,
                        mvo=scar & (mvo_p >= scar_net.mvo_threshold),
                        myocardium_probability=np.asarray(myocardium_probability, np.float32),
                        scar_probability=np.asarray(scar_p, np.float32),
                        mvo_probability=np.asarray(mvo_p, np.float32))


def ring_from(probability: np.ndarray, net: Network,
              cavity_probability: np.ndarray | None = None) -> np.ndarray:
    """A network's myocardium probability to its ring: the largest ring-like component per
    slice, completed into a left-ventricular ring where the network asks for it (with the
    filled LV, cavity + myocardium, where the network draws the cavity)."""
    ring = clean_myocardium(probability)
    if not net.complete_ring:
        return ring
    filled = None if cavity_probability is None else cavity_probability + probability
    return constrain_ring(ring, filled)


def segment(images: Sequence[np.ndarray], spacing: Spacing, myocardium_net: Network,
            scar_net: Network) -> Segmentation:
    """Both masks of one series (slices ordered base to apex, physical values)."""
    myo_p = myocardium_probability(images, spacing, myocardium_net)
    return segment_on(images, spacing, ring_from(myo_p, myocardium_net), myo_p, scar_net)
