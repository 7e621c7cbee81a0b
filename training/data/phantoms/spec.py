"""Random parameters of one synthetic DB-LGE short-axis series.

A :class:`PhantomSpec` is drawn from a seeded generator and fully determines
the series (anatomy, scar, geometry, acquisition), so the same seed always
gives the same files. All lengths are millimetres, angles degrees.

Angles of the heart live in an *anatomical* in-plane frame: 0 deg points to
the patient's left (lateral wall), 90 deg anterior, 180 deg septal (towards
the RV), 270 deg inferior. Depth ``s`` runs along the LV long axis from the
base plane (s = 0) to the apex (s = ``lv_length``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

# Coronary territories in the anatomical frame (AHA 17-segment convention):
# LAD anterior/anteroseptal, RCA inferior/inferoseptal, LCX lateral.
TERRITORY_CENTRE_DEG = {"LAD": (95.0, 150.0), "RCA": (225.0, 285.0), "LCX": (-35.0, 25.0)}

MATRICES = ((256, 256), (224, 256), (192, 256), (256, 224), (256, 208))


@dataclass(frozen=True)
class ScarSpec:
    territory: str
    centre_deg: float
    half_width_deg: float
    s_start: float  # fraction of LV length
    s_end: float
    transmurality: float  # fraction of the wall, from the endocardium
    patchy: bool
    patch_phase: tuple[float, float, float]
    mvo: bool


@dataclass(frozen=True)
class Intensities:
    """Relative signal of each tissue before scaling, bias and noise."""

    myocardium: float
    blood: float
    scar: float
    mvo: float
    fat: float
    muscle: float
    lung: float
    liver: float
    vessel: float
    bone: float


@dataclass(frozen=True)
class HeartSpec:
    lv_length: float
    epi_radius: float
    wall: float
    shape: tuple[float, float, float, float]  # e2, phi2, e3, phi3
    wall_variation: tuple[float, float]  # amplitude, phase
    centre_drift: tuple[float, float]  # lateral, anterior drift base->apex
    rv_axes: tuple[float, float]
    rv_offset_ant: float
    rv_wall: float
    fat_bumps: tuple[tuple[float, float, float], ...]  # (angle, amplitude mm, width deg)
    rv_fat: float
    papillary: tuple[tuple[float, float], ...]  # (angle, radius)
    trabeculae: tuple[tuple[float, float, float], ...]  # (angle, radius, inset)
    body_axes: tuple[float, float]
    body_offset: tuple[float, float]
    subcutaneous_fat: float
    liver_start: float


@dataclass(frozen=True)
class AcquisitionSpec:
    rows: int
    cols: int
    pixel_spacing: float
    n_slices: int
    thickness: float
    gap: float
    first_s: float
    long_axis: tuple[float, float, float]  # base->apex, LPS
    inplane_rotation_deg: float
    heart_offset_px: tuple[float, float]  # (row, col) offset of the LV from the centre
    snr: float
    bias: tuple[float, ...]  # low-order polynomial coefficients
    gray_zone_mm: float
    target_max: float
    bits_stored: int
    signed: bool
    rescale_slope: float
    rescale_intercept: float
    instance_order: str  # "base_to_apex", "apex_to_base" or "shuffled"
    texture_seed: int
    noise_seed: int


@dataclass(frozen=True)
class PhantomSpec:
    seed: int
    index: int
    heart: HeartSpec
    scars: tuple[ScarSpec, ...]
    intensities: Intensities
    acquisition: AcquisitionSpec
    extra: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return asdict(self)


# Share of deep (over 60 % transmural) scars drawn with microvascular obstruction.
OBSTRUCTION_PROBABILITY = 0.35


def recorded_obstruction_probability(spec_json: dict) -> float:
    """The obstruction probability a written spec (meta.json's ``spec``) was drawn with."""
    return spec_json.get("extra", {}).get("obstruction_probability", OBSTRUCTION_PROBABILITY)


def _scar(rng: np.random.Generator, territory: str, obstruction_probability: float) -> ScarSpec:
    lo, hi = TERRITORY_CENTRE_DEG[territory]
    if territory == "LAD":  # the LAD territory usually reaches the apex
        s_start, s_end = rng.uniform(0.1, 0.55), rng.uniform(0.85, 1.05)
    else:
        s_start, s_end = rng.uniform(-0.05, 0.35), rng.uniform(0.5, 0.9)
    transmurality = float(rng.choice([rng.uniform(0.2, 0.5), rng.uniform(0.5, 0.85), 1.0]))
    return ScarSpec(
        territory=territory,
        centre_deg=float(rng.uniform(lo, hi)),
        half_width_deg=float(rng.uniform(25, 75)),
        s_start=float(s_start),
        s_end=float(s_end),
        transmurality=transmurality,
        patchy=bool(rng.random() < 0.25),
        patch_phase=tuple(float(v) for v in rng.uniform(0, 2 * np.pi, 3)),
        mvo=bool(transmurality > 0.6 and rng.random() < obstruction_probability),
    )


def _long_axis(rng: np.random.Generator) -> tuple[float, float, float]:
    """Base-to-apex direction in LPS: to the patient's left, anterior and inferior."""
    axis = np.array([0.55, -0.5, -0.65]) + rng.normal(0, 0.12, 3)
    axis /= np.linalg.norm(axis)
    return tuple(float(v) for v in axis)


def sample_spec(seed: int, index: int,
                obstruction_probability: float = OBSTRUCTION_PROBABILITY) -> PhantomSpec:
    """Draw the parameters of series ``index`` of the data set seeded by ``seed``.

    ``obstruction_probability`` only decides whether a deep scar gets an
    obstruction core; the draw is made whatever its value, so every other
    parameter stays the same. Training can thus over-represent the rare
    pattern on the same hearts; a value other than the default is recorded
    in ``extra``.
    """
    rng = np.random.default_rng(np.random.SeedSequence([seed, index]))
    lv_length = rng.uniform(65, 100)
    epi_radius = rng.uniform(20, 34)
    heart = HeartSpec(
        lv_length=float(lv_length),
        epi_radius=float(epi_radius),
        wall=float(rng.uniform(6.0, 12.0)),
        shape=(
            float(rng.uniform(0, 0.12)),
            float(rng.uniform(0, 180)),
            float(rng.uniform(0, 0.05)),
            float(rng.uniform(0, 120)),
        ),
        wall_variation=(float(rng.uniform(0, 0.2)), float(rng.uniform(0, 360))),
        centre_drift=(float(rng.uniform(-8, 8)), float(rng.uniform(-8, 8))),
        rv_axes=(float(rng.uniform(16, 28)), float(rng.uniform(30, 46))),
        rv_offset_ant=float(rng.uniform(-6, 10)),
        rv_wall=float(rng.uniform(2.5, 4.5)),
        fat_bumps=tuple(
            (float(a + rng.uniform(-20, 20)), float(rng.uniform(1.5, 7)),
             float(rng.uniform(15, 35)))
            for a in (120, 240, *rng.uniform(0, 360, rng.integers(0, 4)))
        ),
        rv_fat=float(rng.uniform(0, 6)),
        papillary=tuple(
            (float(a + rng.uniform(-15, 15)), float(rng.uniform(2.5, 5.5))) for a in (40, 290)
        ),
        trabeculae=tuple(
            (float(rng.uniform(-60, 330)), float(rng.uniform(0.8, 2.0)),
             float(rng.uniform(0.3, 2.5)))
            for _ in range(rng.integers(0, 7))
        ),
        body_axes=(float(rng.uniform(140, 180)), float(rng.uniform(95, 130))),
        body_offset=(float(rng.uniform(-50, -20)), float(rng.uniform(-35, -10))),
        subcutaneous_fat=float(rng.uniform(5, 24)),
        liver_start=float(rng.uniform(0.3, 0.8)),
    )

    n_scars = int(rng.choice([0, 1, 1, 1, 1, 2], p=[0.15, 0.2, 0.2, 0.2, 0.15, 0.1]))
    territories = rng.choice(["LAD", "RCA", "LCX"], size=n_scars, replace=False,
                             p=[0.45, 0.3, 0.25])
    scars = tuple(_scar(rng, str(t), obstruction_probability) for t in territories)

    intensities = Intensities(
        myocardium=float(rng.uniform(0.02, 0.08)),
        blood=float(rng.uniform(0.22, 0.45)),
        scar=float(rng.uniform(0.75, 1.0)),
        mvo=float(rng.uniform(0.04, 0.12)),
        fat=float(rng.uniform(0.5, 0.85)),
        muscle=float(rng.uniform(0.08, 0.18)),
        lung=float(rng.uniform(0.01, 0.04)),
        liver=float(rng.uniform(0.18, 0.32)),
        vessel=float(rng.uniform(0.03, 0.12)),
        bone=float(rng.uniform(0.15, 0.3)),
    )

    rows, cols = MATRICES[rng.integers(len(MATRICES))]
    spacing = float(rng.uniform(1.2, 2.0))
    n_slices = int(rng.integers(6, 15))
    thickness = 8.0
    gap = float(rng.choice([0.0, 0.0, 1.0, 2.0, rng.uniform(0, 2)]))
    coverage = (n_slices - 1) * (thickness + gap)
    first_s = float((lv_length - coverage) / 2 + rng.uniform(-6, 6))
    bits_stored = int(rng.choice([12, 12, 16]))
    signed = bool(rng.random() < 0.2)
    max_stored = (2 ** (bits_stored - 1) - 1) if signed else (2**bits_stored - 1)
    target_max = float(rng.uniform(0.1, 0.9) * max_stored)
    if rng.random() < 0.3:
        slope = float(rng.uniform(0.5, 4.0))
        intercept = float(rng.choice([0.0, rng.uniform(-50, 50)]))
    else:
        slope, intercept = 1.0, 0.0
    acquisition = AcquisitionSpec(
        rows=int(rows),
        cols=int(cols),
        pixel_spacing=spacing,
        n_slices=n_slices,
        thickness=thickness,
        gap=gap,
        first_s=first_s,
        long_axis=_long_axis(rng),
        inplane_rotation_deg=float(rng.uniform(-40, 40)),
        heart_offset_px=tuple(float(v) for v in rng.uniform(-22, 22, 2) / spacing),
        snr=float(rng.uniform(8, 40)),
        bias=tuple(float(v) for v in rng.normal(0, 0.18, 5)),
        gray_zone_mm=float(rng.uniform(0.4, 1.4)),
        target_max=target_max,
        bits_stored=bits_stored,
        signed=signed,
        rescale_slope=slope,
        rescale_intercept=intercept,
        instance_order=str(rng.choice(["base_to_apex", "apex_to_base", "shuffled"],
                                      p=[0.5, 0.35, 0.15])),
        texture_seed=int(rng.integers(2**31)),
        noise_seed=int(rng.integers(2**31)),
    )
    extra = ({} if obstruction_probability == OBSTRUCTION_PROBABILITY
             else {"obstruction_probability": obstruction_probability})
    return PhantomSpec(seed=seed, index=index, heart=heart, scars=scars,
                       intensities=intensities, acquisition=acquisition, extra=extra)
