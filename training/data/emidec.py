"""EMIDEC: real short-axis LGE with expert contours, read from the folder given on the command line.

Lalande et al., "EMIDEC: A Database Usable for the Automatic Evaluation of
Myocardial Infarction from Delayed-Enhancement Cardiac MRI", Data 5(4):89,
2020. Research use with citation; the images are never copied into this
repository. Layout (the shared copy's README): ``images/`` and ``labels/``
hold one 8-bit PNG per slice, ``Case_XNNN_sliceKKK.png``; labels are 0
background, 1 LV cavity, 2 normal myocardium, 3 infarct, 4 microvascular
obstruction; ``split.json`` fixes train / validation / test by patient.

Two facts shape how the cases are used:

* the pixel spacing is lost (zero-padded into 256x256 from 1.25-2 mm
  acquisitions), so every case is given a *nominal* spacing: drawn from
  :data:`SPACING_RANGE_MM` in training (scale augmentation, through the
  same resampling the service applies to a real header), fixed at
  :data:`NOMINAL_SPACING_MM` for validation and test;
* the scans are bright-blood. :func:`darken` makes a dark-blood look of
  the same anatomy by bringing the labelled LV cavity down to normal
  myocardium; the right ventricle has no label and stays bright.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from training.data.appearance import (
    SHIFTED_SEED_BASE,
    Appearance,
    other_centre,
    remap_tissues,
)
from training.data.sources import Contrast, LabelledSeries

BACKGROUND, CAVITY, MYOCARDIUM, INFARCT, OBSTRUCTION = range(5)
LABEL_CODES = frozenset(range(5))
MYOCARDIUM_LABELS = (MYOCARDIUM, INFARCT, OBSTRUCTION)
SCAR_LABELS = (INFARCT, OBSTRUCTION)  # infarct size as EMIDEC scores it
# EMIDEC reports 1.25-2 mm in plane. The nominal value is the one the independent
# evaluation sends the cases at, so the figures here are comparable with it.
SPACING_RANGE_MM = (1.25, 2.0)
NOMINAL_SPACING_MM = 1.4
SPLITS = ("train", "validation", "test")
CITATION = ("Cite: A. Lalande et al., \"EMIDEC: A Database Usable for the Automatic Evaluation "
            "of Myocardial Infarction from Delayed-Enhancement Cardiac MRI\", Data 5(4):89, "
            "2020; A. Lalande et al., \"Deep learning methods for automatic evaluation of "
            "delayed enhancement-MRI. The results of the EMIDEC challenge\", Medical Image "
            "Analysis 79, 2022.")
_SLICE_NAME = re.compile(r"^(Case_[A-Z]\d+)_slice(\d+)\.png$")


class EmidecLayoutError(ValueError):
    """The folder is not laid out as the EMIDEC copy's README says."""


def read_split(root: Path) -> dict[str, list[str]]:
    """The fixed split by patient: ``{"train": [...], "validation": [...], "test": [...]}``."""
    path = Path(root) / "split.json"
    if not path.is_file():
        raise EmidecLayoutError(f"{path} is missing")
    split = json.loads(path.read_text())
    missing = [s for s in SPLITS if s not in split]
    if missing:
        raise EmidecLayoutError(f"split.json has no {', '.join(missing)}")
    overlap = set(split["train"]) & (set(split["validation"]) | set(split["test"]))
    if overlap or set(split["validation"]) & set(split["test"]):
        raise EmidecLayoutError("split.json puts a case in two splits")
    return {s: list(split[s]) for s in SPLITS}


def slice_files(root: Path, case: str) -> list[Path]:
    """The case's image files in slice-number order (the file order; base/apex not recorded)."""
    numbered = []
    for path in (Path(root) / "images").glob(f"{case}_slice*.png"):
        match = _SLICE_NAME.match(path.name)
        if match and match.group(1) == case:
            numbered.append((int(match.group(2)), path))
    if not numbered:
        raise EmidecLayoutError(f"no slices of {case} under {Path(root) / 'images'}")
    return [p for _, p in sorted(numbered)]


def read_case(root: Path, case: str) -> tuple[np.ndarray, np.ndarray]:
    """(images, labels), each (z, y, x): 8-bit greyscale as float32, label codes as uint8."""
    images, labels = [], []
    for path in slice_files(root, case):
        label_path = Path(root) / "labels" / path.name
        if not label_path.is_file():
            raise EmidecLayoutError(f"{path.name} has no label map")
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32)
        label = np.asarray(Image.open(label_path), dtype=np.uint8)
        if label.ndim != 2 or label.shape != image.shape:
            raise EmidecLayoutError(f"{path.name}: label map and image differ in shape")
        unknown = set(np.unique(label).tolist()) - LABEL_CODES
        if unknown:
            raise EmidecLayoutError(f"{path.name}: label codes {sorted(unknown)} are not EMIDEC's")
        images.append(image)
        labels.append(label)
    return np.stack(images), np.stack(labels)


def _spread(values: np.ndarray) -> float:
    """A robust standard deviation (IQR / 1.349)."""
    q1, q3 = np.percentile(values, [25, 75])
    return float(q3 - q1) / 1.349


def darken(image: np.ndarray, labels: np.ndarray, normal_level: float | None = None,
           normal_spread: float | None = None) -> np.ndarray:
    """One slice with its LV cavity brought down to normal myocardium, texture kept.

    Each cavity pixel keeps its deviation from the cavity's median (the
    texture: papillary muscles, trabeculae, noise), scaled to the spread of
    normal myocardium, around the median of normal myocardium. Nothing
    outside the cavity changes. ``normal_level`` and ``normal_spread`` are
    used where the slice has no normal myocardium of its own (a transmural
    infarct all round); pass the case's.
    """
    image = np.asarray(image, dtype=np.float32)
    cavity = labels == CAVITY
    normal = labels == MYOCARDIUM
    if not cavity.any():
        return image.copy()
    if normal.sum() >= 10:
        normal_level = float(np.median(image[normal]))
        normal_spread = _spread(image[normal])
    if normal_level is None or normal_spread is None:
        raise ValueError("this slice has no normal myocardium: pass the case's level")
    values = image[cavity]
    cavity_spread = _spread(values)
    gain = normal_spread / cavity_spread if cavity_spread > 1e-3 else 1.0
    out = image.copy()
    out[cavity] = np.clip(normal_level + (values - float(np.median(values))) * gain, 0.0, 255.0)
    return out


def darken_case(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Every slice of a case darkened; slices without normal myocardium use the case's."""
    normal = labels == MYOCARDIUM
    level = float(np.median(images[normal])) if normal.any() else None
    spread = _spread(images[normal]) if normal.sum() >= 10 else None
    return np.stack([darken(im, lab, level, spread) for im, lab in zip(images, labels,
                                                                       strict=True)])


@dataclass(frozen=True)
class EmidecCase:
    """One EMIDEC case as a training or evaluation source, at a nominal spacing."""

    root: Path
    case: str
    dark: bool = False
    spacing_mm: float = NOMINAL_SPACING_MM
    # A seed: every labelled tissue's intensity drawn anew (training/data/appearance.py);
    # None: the case as acquired (or darkened).
    appearance: int | None = None
    # With ``appearance``: also acquired as the other centre does (zero-filled k-space to
    # 0.73 mm, 12 bits): the "shifted" held-out score.
    shifted: bool = False

    def __post_init__(self) -> None:
        if self.appearance is not None and self.dark:
            raise ValueError("a remapped appearance draws its own blood level: not darkened too")
        if self.shifted and self.appearance is None:
            raise ValueError("a shifted copy needs an appearance seed")

    @property
    def series_id(self) -> str:
        look = ("" if self.appearance is None
                else f"~{'shifted' if self.shifted else 'look'}{self.appearance}")
        return f"{self.case}{'-dark' if self.dark else ''}{look}@{self.spacing_mm:.2f}mm"

    @property
    def contrast(self) -> Contrast:
        if self.appearance is not None:
            return Appearance.draw(self.appearance).contrast
        return "dark-blood" if self.dark else "bright-blood"

    def read(self) -> LabelledSeries:
        images, labels = read_case(self.root, self.case)
        spacing = self.spacing_mm
        if self.dark:
            images = darken_case(images, labels)
        elif self.shifted:
            images, labels, spacing = other_centre(images, labels, spacing, self.appearance)
        elif self.appearance is not None:
            images = remap_tissues(images, labels, self.appearance)
        return LabelledSeries(
            list(images), (spacing, spacing),
            np.isin(labels, MYOCARDIUM_LABELS), np.isin(labels, SCAR_LABELS),
            labels == OBSTRUCTION, true_cavity=labels == CAVITY)


def cases(root: Path, split: str, dark: bool = False,
          spacing_mm: float = NOMINAL_SPACING_MM) -> list[EmidecCase]:
    """The sources of one split, at one contrast and nominal spacing."""
    return [EmidecCase(Path(root), case, dark, spacing_mm) for case in read_split(root)[split]]


def training_cases(root: Path, copies: int, seed: int) -> list[EmidecCase]:
    """The ``train`` split, each case ``copies`` times per contrast at drawn spacings.

    The spacing is drawn once per copy (not per slice): a real series has one.
    """
    rng = np.random.default_rng(seed)
    out = []
    for case in read_split(root)["train"]:
        for dark in (False, True):
            for _ in range(copies):
                out.append(EmidecCase(Path(root), case, dark,
                                      round(float(rng.uniform(*SPACING_RANGE_MM)), 3)))
    return out


def case_number(case: str) -> int:
    """A number of its own per case (normal and infarct cases share digits)."""
    return 1000 * int(case[5] == "P") + int(re.sub(r"\D", "", case))


def case_copies(root: Path, names: Sequence[str], copies: int, seed: int, remapped: int = 0
                ) -> list[EmidecCase]:
    """Training copies of the named cases, ``copies`` per contrast, each at a drawn spacing,
    and ``remapped`` more whose tissues take a drawn appearance (:mod:`appearance`).

    Each case draws its spacings from a generator of its own (seeded by the seed and the
    case's number), so a case has the same copies in every cross-validation fold that
    trains on it, and the arrays of all folds are cut once. Appearance seeds stay below
    :data:`SHIFTED_SEED_BASE`: no training copy shares a shifted held-out copy's look.
    """
    out = []
    for case in names:
        rng = np.random.default_rng([seed, int(case[5] == "P"), int(re.sub(r"\D", "", case))])
        for dark in (False, True):
            for _ in range(copies):
                out.append(EmidecCase(Path(root), case, dark,
                                      round(float(rng.uniform(*SPACING_RANGE_MM)), 3)))
        for k in range(remapped):
            look = (seed * 7919 + case_number(case) * 16 + k) % SHIFTED_SEED_BASE
            out.append(EmidecCase(Path(root), case, False,
                                  round(float(rng.uniform(*SPACING_RANGE_MM)), 3), look))
    return out


def shifted_copies(root: Path, names: Sequence[str], per_case: int = 2) -> list[EmidecCase]:
    """The fixed, seeded other-centre copies of held-out cases (the "shifted" score): the
    same for every candidate, never a training copy's look."""
    return [EmidecCase(Path(root), case, appearance=SHIFTED_SEED_BASE
                       + per_case * case_number(case) + k, shifted=True)
            for case in names for k in range(per_case)]

