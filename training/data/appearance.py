"""Another centre's look of the same anatomy: tissue intensities remapped, and its acquisition.

Measured from outside (issue 52): at another centre the bright-blood scar was
under-called four-fold while the same scans with the blood darkened were
within 3 points, so the networks had learnt EMIDEC's particular look of the
wall and the pool, not the ventricle. As SynthSeg does (Billot et al.,
Medical Image Analysis 86, 2023) to segment any contrast, each training copy
of a case gets every labelled tissue's intensity drawn anew, within the
orderings late-gadolinium enhancement allows:

* healthy myocardium is nulled: the darkest labelled tissue, or close to it
  when nulling was poor;
* scar is brighter than healthy myocardium, by a contrast drawn per copy;
* the blood pool anywhere from the healthy wall's level (dark-blood) to
  beyond the scar's (bright-blood, early after contrast);
* microvascular obstruction dark, around the healthy wall's level;

each tissue keeping its texture (deviations from its median, scaled), the
unlabelled rest (right ventricle, fat, liver, chest wall) through a random
monotone curve, then a coil bias field, blur and noise.

:func:`zero_filled` is the other centre's acquisition: a matrix of about
1.4 mm interpolated by zero-filling k-space to about 0.7 mm pixels, stored
at 12 bits. The *shifted* out-of-fold score runs every held-out case through
both, with seeds no training copy uses.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.data.augment import smooth_gain

CAVITY, HEALTHY, INFARCT, OBSTRUCTION = 1, 2, 3, 4
# Where no scar is drawn, the contrast unit comes from the blood pool: at EMIDEC the median
# (blood - remote) / (scar - remote) is 0.90 (issue 52, measured from outside).
TYPICAL_BLOOD_TO_SCAR = 0.9
# Training copies draw their appearance from seeds below this; the shifted held-out score
# from seeds at or above it, so no training copy ever has a shifted copy's look.
SHIFTED_SEED_BASE = 1_000_000
# The other centre's pixels (0.73 mm, zero-filled from about 1.4 mm) and stored bits.
SHIFTED_SPACING_MM = 0.73
SHIFTED_BITS = 12


@dataclass(frozen=True)
class Appearance:
    """One drawn look, in units of the case's own scar-to-remote contrast."""

    contrast_gain: float  # new (scar - remote) over the case's
    remote_shift: float  # new remote minus old, in contrast units (poor nulling > 0)
    blood: float  # (blood - remote) / (scar - remote): 0 dark-blood, ~1 bright-blood
    obstruction: float  # (MVO - remote) / (scar - remote)
    texture: tuple[float, float, float, float]  # cavity, healthy, infarct, MVO deviations
    background_gamma: float
    background_gain: float
    bias_amplitude: float
    blur_sigma: float  # pixels; 0: none
    noise: float  # Gaussian sigma over the new scar contrast

    @classmethod
    def draw(cls, seed: int) -> Appearance:
        rng = np.random.default_rng([52, seed])
        return cls(
            contrast_gain=float(rng.uniform(0.6, 1.3)),
            remote_shift=float(rng.uniform(-0.15, 0.3)),
            blood=float(rng.uniform(-0.1, 1.5)),
            obstruction=float(rng.uniform(-0.3, 0.35)),
            texture=tuple(float(v) for v in rng.uniform(0.6, 1.6, size=4)),
            background_gamma=float(rng.uniform(0.7, 1.4)),
            background_gain=float(rng.uniform(0.7, 1.3)),
            bias_amplitude=float(rng.uniform(0.0, 0.3)),
            blur_sigma=float(rng.uniform(0.3, 1.0)) if rng.random() < 0.4 else 0.0,
            noise=float(rng.uniform(0.0, 0.1)))

    @property
    def contrast(self) -> str:
        """The look a reader would name: dark-blood when the pool is near the healthy wall."""
        return "dark-blood" if self.blood < 0.4 else "bright-blood"


def _median(values: np.ndarray) -> float | None:
    return float(np.median(values)) if values.size >= 20 else None


def remap_tissues(images: np.ndarray, labels: np.ndarray, seed: int) -> np.ndarray:
    """Every slice of a case (z, y, x) with each labelled tissue's intensity drawn anew.

    The same draw serves every slice (one scan has one look); labels are
    EMIDEC's codes. A case without healthy myocardium or cavity comes back
    unchanged apart from the acquisition changes (bias, blur, noise).
    """
    look = Appearance.draw(seed)
    images = np.asarray(images, dtype=np.float32)
    remote = _median(images[labels == HEALTHY])
    blood = _median(images[labels == CAVITY])
    infarct = _median(images[labels == INFARCT])
    top = float(np.percentile(images, 99.5)) or 1.0
    out = images.copy()
    if remote is not None and blood is not None:
        unit = ((infarct - remote) if infarct is not None
                else (blood - remote) / TYPICAL_BLOOD_TO_SCAR)
        unit = max(unit, 0.05 * top)
        new_remote = remote + look.remote_shift * unit
        new_unit = look.contrast_gain * unit
        targets = {CAVITY: new_remote + look.blood * new_unit,
                   HEALTHY: new_remote,
                   INFARCT: new_remote + new_unit,
                   OBSTRUCTION: new_remote + look.obstruction * new_unit}
        unit_background = np.clip(images / top, 0.0, None)
        background = top * look.background_gain * unit_background ** look.background_gamma
        # Soft tissue weights: partial volume at each border, as a scanner blurs it.
        weights = {0: ndimage.gaussian_filter((labels == 0).astype(np.float32), (0, 0.6, 0.6))}
        remapped = {0: background}
        for code, gain in zip((CAVITY, HEALTHY, INFARCT, OBSTRUCTION), look.texture,
                              strict=True):
            inside = labels == code
            if not inside.any():
                continue
            level = float(np.median(images[inside]))
            weights[code] = ndimage.gaussian_filter(inside.astype(np.float32), (0, 0.6, 0.6))
            remapped[code] = targets[code] + (images - level) * gain
        total = sum(weights.values())
        out = sum(weights[c] * remapped[c] for c in weights) / np.maximum(total, 1e-6)
        noise_scale = new_unit
    else:
        noise_scale = 0.2 * top
    # The coil shading of training's augmentation, drawn from the copy's own seed.
    out = out * smooth_gain(images.shape[1:], np.random.default_rng([53, seed]),
                            look.bias_amplitude)[None]
    if look.blur_sigma:
        out = ndimage.gaussian_filter(out, (0, look.blur_sigma, look.blur_sigma))
    rng = np.random.default_rng([54, seed])
    out = out + rng.normal(0.0, look.noise * noise_scale, size=out.shape)
    return np.clip(out, 0.0, None).astype(np.float32)


def zero_filled(images: np.ndarray, factor: float) -> np.ndarray:
    """Each slice (z, y, x) interpolated by zero-filling its k-space, as scanners do.

    The output grid has ``round(n * factor)`` pixels per side; output pixel j
    sits at input coordinate ``j * n / m`` (the grids share pixel 0). The
    magnitude is returned, as a scanner stores it.
    """
    images = np.asarray(images, dtype=np.float64)
    z, h, w = images.shape
    mh, mw = int(round(h * factor)), int(round(w * factor))
    spectrum = np.fft.fftshift(np.fft.fft2(images), axes=(1, 2))
    padded = np.zeros((z, mh, mw), dtype=complex)
    # DC sits at n // 2 after fftshift, on either grid.
    top, left = mh // 2 - h // 2, mw // 2 - w // 2
    padded[:, top:top + h, left:left + w] = spectrum
    out = np.fft.ifft2(np.fft.ifftshift(padded, axes=(1, 2))) * (mh * mw) / (h * w)
    return np.abs(out).astype(np.float32)


def nearest_upsampled(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Label maps (z, y, x) on the zero-filled grid: each output pixel takes the label of the
    input pixel nearest its position (the grids share pixel 0)."""
    z, h, w = labels.shape
    rows = np.minimum(np.round(np.arange(shape[0]) * h / shape[0]).astype(int), h - 1)
    cols = np.minimum(np.round(np.arange(shape[1]) * w / shape[1]).astype(int), w - 1)
    return labels[:, rows][:, :, cols]


def other_centre(images: np.ndarray, labels: np.ndarray, spacing_mm: float, seed: int
                 ) -> tuple[np.ndarray, np.ndarray, float]:
    """(images, labels, spacing) of a case as the other centre would give it: tissues
    remapped, zero-filled to :data:`SHIFTED_SPACING_MM`, stored at :data:`SHIFTED_BITS`."""
    remapped = remap_tissues(images, labels, seed)
    factor = spacing_mm / SHIFTED_SPACING_MM
    fine = zero_filled(remapped, factor)
    top = float(fine.max()) or 1.0
    fine = np.round(fine / top * (2**SHIFTED_BITS - 1)).astype(np.float32)
    spacing = spacing_mm * images.shape[1] / fine.shape[1]
    return fine, nearest_upsampled(labels, fine.shape[1:]), spacing
