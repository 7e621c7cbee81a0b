"""Training arrays from labelled series (phantoms, EMIDEC), cut by the service's own preprocessing.

Every input goes through :func:`service.pipeline.preprocess.model_inputs`, the same
function the service calls, so the networks never see anything the service
would not give them. Targets are the ground-truth masks resampled onto the
model grid as fractions (soft labels): a 2 mm pixel half covered by
myocardium is 0.5 myocardium, which lets the network place a border between
pixels, and the probability mapped back to the source grid lands there.

Three things differ from serving, on purpose:

* the heart box is made from the true myocardium with random margin and
  shift, so the scar U-Net sees the spread of boxes CNN1 will give it;
* the ENets' Hough search near the heart is given the true myocardium's
  box with its edges moved by a few millimetres, where serving gives it
  CNN1's ring (no trained network is needed to cut the ENets' arrays);
* the myocardium given to a network is never just the true one. The scar
  U-Net sees it only through its peak-ratio channel (the crop over the
  99th percentile of the myocardium's signal in the series); one of its
  two boxes per slice takes that peak from the ring the trained myocardium
  U-Net really drew (``myocardium_model``: the cascade is trained the way
  it runs), the other from the true ring, eroded or dilated by one pixel
  and in half the cases with the scar cut out (the myocardium U-Net's
  typical mistake is to leave bright subendocardial scar next to the grey
  dark blood out of the ring, which lowers the peak). Protocol 2 sees the
  image only through the mask, so its mask is the true one, one pixel
  off, never missing the scar (a ring without the scar would hide it).

Every row also carries an *emphasis* map (0..1) marking pixels whose
mistakes cost more: for the myocardium U-Net, the scarred myocardium, the
part it tended to miss and the part the scar % depends on; for the scar
U-Net, the blood and fat just outside the true myocardium, where most of
its false scar lay (measured on held-out series, even with the true ring).
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage
from tqdm import tqdm

from service.pipeline.grid import GridTransform
from service.pipeline.infer import OnnxModel
from service.pipeline.postprocess import clean_myocardium
from service.pipeline.preprocess import InputSpec, crop_transforms, model_inputs
from service.pipeline.segment import Network, myocardium_probability
from training.data.sources import Source, as_source

# The input of each trained network (written into models/manifest.json).
# Both U-Nets see the slice and its two neighbours (2.5-D). Their targets carry the LV cavity
# as a class of its own, so the endocardium is a learned border and not the edge of the
# bright region (issue 34: bright scar beside bright blood was counted as blood).
MYOCARDIUM_UNET = InputSpec(crop="whole_image", shape=(128, 128), spacing_mm=2.0,
                            context_slices=1)
# No myocardium channel for the scar U-Net: given CNN1's ring, it trusted the ring's
# border, and CNN1's 2 mm border cost it 0.05 scar DSC (the true ring gave 0.88, the
# predicted 0.83, on development series); without it, it draws the border itself.
SCAR_UNET = InputSpec(crop="heart_box", shape=(96, 96), margin_mm=12.0, min_side_mm=60.0,
                      peak_ratio_channel=True, context_slices=1)
# Round 4's ENets search their Hough circle near the heart (the first ring's box + 15 mm),
# in training as in serving: 4x faster than the whole slice, and not drawn to strong
# circles elsewhere (docs/experiments.md, "Performance", issue 54 round 4). 0.3.2's ENets
# were trained on the whole slice's search; their manifest says so (the field's default).
ENET_P1 = InputSpec(crop="hough_circle", shape=(64, 64), masked=False, hough_near_heart=True)
ENET_P2 = InputSpec(crop="hough_circle", shape=(64, 64), masked=True, hough_near_heart=True)

TASKS = {"myocardium_unet": MYOCARDIUM_UNET, "scar_unet": SCAR_UNET,
         "enet_p1": ENET_P1, "enet_p2": ENET_P2}
# Each network's output classes (service.pipeline.segment.Network.classes): the cavity
# stands alone; myocardium > scar > MVO are nested.
CLASSES = {"myocardium_unet": ("background", "cavity", "myocardium"),
           "scar_unet": ("background", "cavity", "myocardium", "scar", "mvo"),
           "enet_p1": ("background", "scar", "mvo"),
           "enet_p2": ("background", "scar", "mvo")}
# Tasks whose arrays need the trained myocardium U-Net (its ring sets the peak); built after it.
NEEDS_MYOCARDIUM_MODEL = ("scar_unet",)
# Bump when what series_arrays makes changes, so cached arrays are rebuilt.
ARRAYS_VERSION = 9
# How far each edge of the heart's box given to the ENets' Hough search may move in
# training (:func:`_jittered_heart`).
HEART_JITTER_MM = 5.0
# The scar U-Net's emphasis: scar called in blood or fat just outside the
# myocardium (the largest share of its false positives, measured) costs more.
SCAR_BORDER_BAND_MM = 3.0


@dataclass(frozen=True)
class Arrays:
    """Inputs (N, H, W, C), soft targets, emphasis (N, H, W), each row's series.

    Targets are (N, H, W) for a binary network, or (N, H, W, K) regions in
    the order of :attr:`service.pipeline.segment.Network.region_names`: the
    cavity first where there is one, then nested regions, outermost first
    (the scar U-Net: cavity, myocardium, scar, MVO).
    """

    x: np.ndarray
    y: np.ndarray
    series: np.ndarray
    emphasis: np.ndarray

    _FIELDS = ("x", "y", "series", "emphasis")

    @classmethod
    def concatenate(cls, parts: Sequence[Arrays]) -> Arrays:
        return cls(*(np.concatenate([getattr(p, f) for p in parts]) for f in cls._FIELDS))

    @property
    def regions(self) -> np.ndarray:
        """Targets as (N, H, W, K) nested regions, whatever their stored shape."""
        return self.y if self.y.ndim == 4 else self.y[..., None]

    def select(self, keep: np.ndarray) -> Arrays:
        return Arrays(*(getattr(self, f)[keep] for f in self._FIELDS))

    def save(self, path: Path) -> None:
        # Per process: legs of two folds may cut the same cache at once (the last wins,
        # and both are the same arrays).
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, x=self.x.astype(np.float16), y=self.y.astype(np.float16),
                 series=self.series, emphasis=self.emphasis.astype(np.float16))
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> Arrays:
        with np.load(path) as d:
            return cls(d["x"].astype(np.float32), d["y"].astype(np.float32), d["series"],
                       d["emphasis"].astype(np.float32))


def _targets(transforms: Sequence[GridTransform], masks: np.ndarray) -> np.ndarray:
    return np.stack([t.to_model(m.astype(np.float32), order=1)
                     for t, m in zip(transforms, masks, strict=True)]).clip(0.0, 1.0)


def _jittered_box(box: GridTransform, spacing, rng: np.random.Generator) -> GridTransform:
    """Heart box grown or shrunk by up to 15 % and shifted by up to 8 mm."""
    zoom = rng.uniform(0.85, 1.15)
    shift = rng.uniform(-8.0, 8.0, size=2) / np.asarray(spacing)
    scale = tuple(s * zoom for s in box.scale)
    centre = [box.offset[a] + box.scale[a] * (box.model_shape[a] - 1) / 2 + shift[a]
              for a in range(2)]
    offset = tuple(centre[a] - scale[a] * (box.model_shape[a] - 1) / 2 for a in range(2))
    return dataclasses.replace(box, scale=scale, offset=offset)


def _perturbed_mask(mask: np.ndarray, scar: np.ndarray | None, rng: np.random.Generator
                    ) -> np.ndarray:
    """The true myocardium as a network would be given it: one pixel off, maybe without scar."""
    choice = rng.integers(3)
    if choice == 1:
        mask = ndimage.binary_erosion(mask)
    elif choice == 2:
        mask = ndimage.binary_dilation(mask)
    if scar is not None and rng.random() < 0.5:
        mask = mask & ~scar
    return mask


def _perturbed_masks(myo: np.ndarray, scar: np.ndarray | None, rng: np.random.Generator
                     ) -> np.ndarray:
    """``scar`` given: cut it out half the time (for a network that also sees the image)."""
    scars = scar if scar is not None else [None] * len(myo)
    return np.stack([_perturbed_mask(m, s, rng) for m, s in zip(myo, scars, strict=True)])


def _jittered_heart(myo: np.ndarray, spacing, rng: np.random.Generator,
                    reach_mm: float = HEART_JITTER_MM) -> np.ndarray:
    """(1, y, x): the box round the true myocardium over the series, each edge moved by up
    to ``reach_mm``; the empty myocardium as it is.

    The heart the Hough search is given in serving is the first ring (the myocardium
    U-Net's), whose box differs from the truth's by a few millimetres (a ring drawn short
    or long at the base or apex, a wall a pixel off). The search only reads the box (plus
    its 15 mm margin), so moving the box's edges by up to a third of that margin shows the
    ENet the circles such windows give, while the LV stays well inside every window. Gross
    failures of the first ring (an island far off, no ring at all) are not simulated: an
    empty ring searches the whole slice, which is what the search near the heart falls
    back to anyway.
    """
    rows, cols = np.nonzero(np.asarray(myo, dtype=bool).any(axis=0))
    shape = np.shape(myo)[1:]
    box = np.zeros((1, *shape), dtype=bool)
    if rows.size == 0:
        return box
    edges = []
    for axis, at in enumerate((rows, cols)):
        move = rng.uniform(-1.0, 1.0, 2) * reach_mm / spacing[axis]
        low = int(np.clip(round(at.min() + move[0]), 0, shape[axis] - 1))
        high = int(np.clip(round(at.max() + move[1]), 0, shape[axis] - 1))
        edges.append(slice(min(low, high), max(low, high) + 1))
    box[0][tuple(edges)] = True
    return box


def _band_outside(myo: np.ndarray, spacing, width_mm: float = SCAR_BORDER_BAND_MM) -> np.ndarray:
    """Pixels within ``width_mm`` outside the true myocardium (blood, fat), per slice."""
    out = np.zeros_like(myo)
    for k, ring in enumerate(myo):
        if ring.any():
            out[k] = ~ring & (ndimage.distance_transform_edt(~ring, sampling=spacing) <= width_mm)
    return out


@functools.lru_cache(maxsize=2)
def _myocardium_network(model_path: Path) -> Network:
    # One thread per worker process: the arrays are cut by as many processes as cores.
    return Network(OnnxModel(model_path, intra_op_threads=1), MYOCARDIUM_UNET,
                   CLASSES["myocardium_unet"])


def series_arrays(source: Source | Path, series_number: int, seed: int = 0,
                  tasks: Sequence[str] = tuple(TASKS), myocardium_model: Path | None = None
                  ) -> dict[str, Arrays]:
    """Inputs and targets of one series (a source, or a phantom folder) for the given networks.

    The scar U-Net's arrays need ``myocardium_model`` (the exported myocardium
    U-Net): its peak-ratio channel is taken over the ring it will really be given.
    """
    rng = np.random.default_rng([seed, series_number])
    series = as_source(source).read()
    images, spacing = series.images, series.spacing
    myo, scar, mvo = series.true_myocardium, series.true_scar, series.true_obstruction
    cavity = series.cavity()
    n = len(images)
    tag = np.full(n, series_number, dtype=np.int32)
    out = {}

    if "myocardium_unet" in tasks:
        x, transforms = model_inputs(images, spacing, MYOCARDIUM_UNET)
        y = np.stack([_targets(transforms, cavity), _targets(transforms, myo)], axis=-1)
        out["myocardium_unet"] = Arrays(x, y, tag, _targets(transforms, scar))

    if "scar_unet" in tasks:
        if myocardium_model is None:
            raise ValueError("the scar U-Net's arrays need the trained myocardium U-Net")
        predicted = clean_myocardium(myocardium_probability(
            images, spacing, _myocardium_network(Path(myocardium_model))))
        box = crop_transforms(images, spacing, SCAR_UNET, myo)[0]
        just_outside = _band_outside(myo, spacing)
        parts = []
        for rings in (predicted, _perturbed_masks(myo, scar, rng)):
            boxes = [_jittered_box(box, spacing, rng)] * n
            x, _ = model_inputs(images, spacing, SCAR_UNET, boxes, rings)
            y = np.stack([_targets(boxes, m) for m in (cavity, myo, scar, mvo)], axis=-1)
            parts.append(Arrays(x, y, tag, _targets(boxes, just_outside)))
        out["scar_unet"] = Arrays.concatenate(parts)

    if "enet_p1" in tasks or "enet_p2" in tasks:
        # The search near the heart, given the true myocardium's box a few millimetres off
        # (the first ring's, as serving gives it: _jittered_heart); drawn after the U-Nets'
        # draws, so their arrays stay those of ARRAYS_VERSION.
        circles = crop_transforms(images, spacing, ENET_P1, _jittered_heart(myo, spacing, rng))
        y = np.stack([_targets(circles, scar), _targets(circles, mvo)], axis=-1)
    if "enet_p1" in tasks:
        x, _ = model_inputs(images, spacing, ENET_P1, circles)
        out["enet_p1"] = Arrays(x, y, tag, np.zeros_like(y[..., 0]))
    if "enet_p2" in tasks:
        x, _ = model_inputs(images, spacing, ENET_P2, circles, _perturbed_masks(myo, None, rng))
        out["enet_p2"] = Arrays(x, y, tag, np.zeros_like(y[..., 0]))
    return out


def _cache_key(spec: InputSpec, myocardium_model: Path | None) -> str:
    text = json.dumps(spec.to_dict(), sort_keys=True) + f"v{ARRAYS_VERSION}"
    if myocardium_model is not None:
        text += hashlib.sha256(Path(myocardium_model).read_bytes()).hexdigest()
    return hashlib.sha256(text.encode()).hexdigest()[:10]


def _series_arrays_star(args: tuple) -> dict[str, Arrays]:
    return series_arrays(*args)


def build_arrays(sources: Sequence[Source | Path], cache_dir: Path, split: str,
                 tasks: Sequence[str] = tuple(TASKS), seed: int = 0,
                 workers: int | None = None, myocardium_model: Path | None = None
                 ) -> dict[str, Arrays]:
    """Arrays of the given networks for a list of sources (or phantom folders), cached per task.

    The cache file name carries the input spec (and the myocardium U-Net's
    sha256 where its rings are used), so a change rebuilds the arrays.
    """
    cache_dir.mkdir(parents=True, exist_ok=True)
    paths = {}
    for task in tasks:
        model = myocardium_model if task in NEEDS_MYOCARDIUM_MODEL else None
        paths[task] = cache_dir / f"{split}_{task}_{_cache_key(TASKS[task], model)}.npz"
    if all(p.exists() for p in paths.values()):
        return {task: Arrays.load(p) for task, p in paths.items()}
    jobs = [(as_source(d), i, seed, tuple(tasks), myocardium_model)
            for i, d in enumerate(sources)]
    per_series = []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for item in tqdm(pool.map(_series_arrays_star, jobs), total=len(jobs), unit="series",
                         desc=f"arrays {split} {'+'.join(tasks)}"):
            per_series.append(item)
    arrays = {task: Arrays.concatenate([s[task] for s in per_series]) for task in tasks}
    for task, a in arrays.items():
        a.save(paths[task])
    return arrays


def validation_series(n_series: int, count: int, seed: int) -> np.ndarray:
    """Indices of the phantom series held out for validation (drawn from the training seed),
    the same for the training command and for comparing its candidates."""
    return np.random.default_rng(seed).permutation(n_series)[:count]


def kfold_series(n_series: int, folds: int, fold: int, seed: int = 0
                 ) -> tuple[np.ndarray, np.ndarray]:
    """Series indices (train, validation) of one fold: whole series, never split slices."""
    if not 0 <= fold < folds:
        raise ValueError(f"fold {fold} is not in 0..{folds - 1}")
    order = np.random.default_rng(seed).permutation(n_series)
    val = np.sort(np.array_split(order, folds)[fold])
    return np.setdiff1d(np.arange(n_series), val), val
