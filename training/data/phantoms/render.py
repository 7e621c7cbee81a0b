"""Render a :class:`~training.data.phantoms.spec.PhantomSpec` into pixels and truth.

In: a spec. Out: a :class:`RenderedSeries` whose arrays are ordered base to
apex (axis order z, y, x), with the DICOM geometry of every slice in patient
coordinates (LPS, mm).

Each pixel is the mean of 2x2 in-plane and 3 through-plane samples, which
gives partial volume at every boundary. Ground truth follows the majority of
those samples: a pixel is myocardium when at least half its samples are
myocardium, and scar when most of its myocardial samples are enhanced past
the middle of the gray zone (the FWHM-like border an expert would trace).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from training.data.phantoms.spec import PhantomSpec, ScarSpec

# Tissue labels used while sampling; only LV_MYO counts as myocardium.
AIR, MUSCLE, SUBCUT_FAT, LUNG, LIVER, BONE, VESSEL, EPI_FAT, RV_WALL, RV_BLOOD, LV_MYO, LV_BLOOD, \
    PAPILLARY = range(13)

_INPLANE_OFFSETS = (-0.25, 0.25)
_THROUGH_PLANE_FRACTIONS = (-1 / 3, 0.0, 1 / 3)


@dataclass(frozen=True)
class SliceGeometry:
    image_position: tuple[float, float, float]
    image_orientation: tuple[float, float, float, float, float, float]
    pixel_spacing: tuple[float, float]  # (row spacing, column spacing)
    slice_thickness: float


@dataclass(frozen=True)
class RenderedSeries:
    signal: np.ndarray  # float64 (z, y, x), noise-free relative signal x bias
    image: np.ndarray  # float64 (z, y, x), magnitude with Rician noise, physical units
    myocardium: np.ndarray  # uint8 (z, y, x)
    scar: np.ndarray  # uint8 (z, y, x), subset of myocardium
    mvo: np.ndarray  # uint8 (z, y, x), dark core inside scar
    cavity: np.ndarray  # uint8 (z, y, x), LV blood pool with its papillary muscles
    geometry: tuple[SliceGeometry, ...]
    slice_depth_mm: tuple[float, ...]  # position along the long axis from the base plane


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * x))


def _frame(long_axis: np.ndarray, rotation_deg: float) -> tuple[np.ndarray, ...]:
    """Lateral/anterior axes of the short-axis plane and the image row/column directions."""
    anterior = np.array([0.0, -1.0, 0.0])
    e_ant = anterior - anterior.dot(long_axis) * long_axis
    e_ant /= np.linalg.norm(e_ant)
    left = np.array([1.0, 0.0, 0.0])
    e_lat = left - left.dot(long_axis) * long_axis - left.dot(e_ant) * e_ant
    e_lat /= np.linalg.norm(e_lat)
    # Conventional display: lateral wall to the right, anterior wall up.
    phi = np.deg2rad(rotation_deg)
    row_dir = np.cos(phi) * e_lat - np.sin(phi) * e_ant
    col_dir = -np.sin(phi) * e_lat - np.cos(phi) * e_ant
    return e_lat, e_ant, row_dir, col_dir


def _wrap_deg(angle: np.ndarray) -> np.ndarray:
    return (angle + 180.0) % 360.0 - 180.0


def _scar_enhancement(
    scar: ScarSpec, theta: np.ndarray, rho: np.ndarray, depth: np.ndarray, wall_mm: np.ndarray,
    s_frac: float, lv_length: float, gray_mm: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Enhancement in [0, 1] and the MVO core for one infarct."""
    dtheta = np.abs(_wrap_deg(theta - scar.centre_deg))
    width = scar.half_width_deg
    eps_deg = np.rad2deg(gray_mm / np.maximum(rho, 3.0))
    angular = _sigmoid((width - dtheta) / eps_deg)
    s_mm = s_frac * lv_length
    longitudinal = _sigmoid((s_mm - scar.s_start * lv_length) / 2.0) * _sigmoid(
        (scar.s_end * lv_length - s_mm) / 2.0
    )
    # Deepest at the centre of the territory, thinning towards its edges (wavefront).
    tau = scar.transmurality * (0.55 + 0.45 * np.cos(np.clip(dtheta / width, 0, 1) * np.pi / 2))
    tau = np.where(scar.transmurality >= 1.0, np.maximum(tau, 1.0 * (dtheta < 0.8 * width)), tau)
    transmural = _sigmoid((tau - depth) * wall_mm / gray_mm)
    enhancement = angular * longitudinal * transmural
    if scar.patchy:
        p1, p2, p3 = scar.patch_phase
        field = (np.cos(np.deg2rad(theta) * 7 + p1) + np.cos(s_mm / 6.0 + p2)
                 + np.cos(depth * 5 + np.deg2rad(theta) * 3 + p3))
        enhancement = enhancement * _sigmoid((field + 1.2) / 0.25)
    if scar.mvo:
        core = (dtheta < 0.45 * width) & (depth < 0.45 * tau) & (longitudinal > 0.9)
    else:
        core = np.zeros_like(depth, dtype=bool)
    return enhancement, core


@dataclass(frozen=True)
class _Thorax:
    """Heart-frame coordinates of one in-plane sample offset and the thorax there.

    The thorax does not move between slices, except the liver rising into
    the lower ones; computing it once per offset instead of once per sample
    makes it 40 times cheaper.
    """

    x: np.ndarray  # lateral, mm
    y: np.ndarray  # anterior, mm
    label: np.ndarray  # body wall and lungs (before the liver)
    inner: np.ndarray  # inside the body wall: where organs may be
    bone: np.ndarray
    vessel: np.ndarray


def _thorax(spec: PhantomSpec, x: np.ndarray, y: np.ndarray) -> _Thorax:
    h = spec.heart
    label = np.full(x.shape, AIR, dtype=np.int8)
    bx, by = h.body_offset
    ba, bb = h.body_axes
    q_body = np.hypot((x - bx) / ba, (y - by) / bb)
    label[q_body < 1.0] = MUSCLE
    label[(q_body < 1.0) & (q_body > 1.0 - h.subcutaneous_fat / bb)] = SUBCUT_FAT
    r0 = h.epi_radius
    lung_l = np.hypot((x - (r0 + 45)) / 42, (y + 15) / 75) < 1.0
    lung_r = np.hypot((x + (r0 + 80)) / 45, (y - 5) / 80) < 1.0
    inner = q_body < 1.0 - (h.subcutaneous_fat + 10) / bb
    label[(lung_l | lung_r) & inner] = LUNG
    bone = (np.hypot(x + 30, y + r0 + 75) < 17) & inner
    vessel = (np.hypot(x + 18, y + r0 + 40) < 11) & inner
    return _Thorax(x, y, label, inner, bone, vessel)


def _label_samples(spec: PhantomSpec, thorax: _Thorax, s_mm: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Tissue label, scar enhancement and MVO flag at one level of the thorax's points.

    The heart (trigonometry per point, several infarcts) is drawn only
    where it can reach, a tenth of a slice; same labels, faster.
    """
    h = spec.heart
    x, y = thorax.x, thorax.y
    s_frac = s_mm / h.lv_length
    label = thorax.label.copy()
    if s_frac > h.liver_start:
        grow = min(1.0, (s_frac - h.liver_start) / 0.3)
        liver = np.hypot((x + 55) / (70 * grow + 5), (y + 75) / (55 * grow + 5)) < 1.0
        label[liver & thorax.inner] = LIVER
    label[thorax.bone] = BONE
    label[thorax.vessel] = VESSEL
    enhancement = np.zeros(x.shape)
    mvo = np.zeros(x.shape, dtype=bool)
    near = _heart_reach(spec, x, y, s_frac)
    if near is not None and near.any():
        label[near], enhancement[near], mvo[near] = _heart_labels(
            spec, x[near], y[near], s_mm, label[near])
    return label, enhancement, mvo


def _heart_reach(spec: PhantomSpec, x: np.ndarray, y: np.ndarray, s_frac: float
                 ) -> np.ndarray | None:
    """Points the heart's labels can touch at this level (a bound, 1 mm to spare); None: none."""
    h = spec.heart
    r0 = h.epi_radius
    if s_frac > 1.0:
        return None
    if s_frac < 0.0:
        return np.hypot(x, y) < 0.85 * r0 + 3.0
    profile = np.sqrt(max(0.0, 1.0 - s_frac**2))
    e2, _, e3, _ = h.shape
    fat = sum(abs(amplitude) for _, amplitude, _ in h.fat_bumps)
    dx, dy = h.centre_drift
    reach = r0 * profile * (1 + abs(e2) + abs(e3)) + fat + 1.0
    near = np.hypot(x - dx * s_frac, y - dy * s_frac) < reach
    rv_profile = np.sqrt(max(0.0, 1.0 - (s_frac / 0.85) ** 2))
    if rv_profile > 0.05:
        ra, rb = h.rv_axes[0] * rv_profile, h.rv_axes[1] * rv_profile
        rvx = -(r0 * profile * 0.9 + 0.55 * ra)
        bound = 1 + (h.rv_wall + h.rv_fat + 1.0) / min(ra, rb)
        near |= np.hypot((x - rvx) / ra, (y - h.rv_offset_ant) / rb) < bound
    return near


def _heart_labels(spec: PhantomSpec, x: np.ndarray, y: np.ndarray, s_mm: float,
                  label: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The heart drawn over the thorax ``label`` at the given points."""
    h = spec.heart
    gray = spec.acquisition.gray_zone_mm
    label = label.copy()
    enhancement = np.zeros(x.shape)
    mvo = np.zeros(x.shape, dtype=bool)
    r0 = h.epi_radius
    s_frac = s_mm / h.lv_length
    if s_frac < 0.0:  # above the base plane: atrium/outflow, no LV myocardium
        rho = np.hypot(x, y)
        label[rho < 0.85 * r0 + 2] = RV_WALL
        label[rho < 0.85 * r0] = LV_BLOOD
        return label, enhancement, mvo

    profile = np.sqrt(max(0.0, 1.0 - s_frac**2))
    dx, dy = h.centre_drift
    cx, cy = dx * s_frac, dy * s_frac
    xc, yc = x - cx, y - cy
    rho = np.hypot(xc, yc)
    theta = np.rad2deg(np.arctan2(yc, xc))
    e2, phi2, e3, phi3 = h.shape
    shape = (1 + e2 * np.cos(np.deg2rad(2 * (theta - phi2)))
             + e3 * np.cos(np.deg2rad(3 * (theta - phi3))))
    r_epi = r0 * profile * shape
    amp, phase = h.wall_variation
    wall = h.wall * (1 - 0.3 * s_frac**2) * (1 + amp * np.cos(np.deg2rad(theta - phase)))
    r_endo = np.maximum(r_epi - wall, 0.0)

    # RV: an ellipse on the septal side, shrinking before the LV apex.
    rv_profile = np.sqrt(max(0.0, 1.0 - (s_frac / 0.85) ** 2))
    if rv_profile > 0.05:
        ra, rb = h.rv_axes[0] * rv_profile, h.rv_axes[1] * rv_profile
        rvx = -(r0 * profile * 0.9 + 0.55 * ra)
        q_rv = np.hypot((x - rvx) / ra, (y - h.rv_offset_ant) / rb)
        wall_q = h.rv_wall / min(ra, rb)
        fat_q = h.rv_fat / min(ra, rb)
        label[(q_rv < 1 + wall_q + fat_q) & (y > h.rv_offset_ant - rb * 0.3)] = EPI_FAT
        label[q_rv < 1 + wall_q] = RV_WALL
        label[q_rv < 1] = RV_BLOOD

    fat_depth = np.zeros_like(theta)
    for angle, amplitude, width in h.fat_bumps:
        fat_depth += amplitude * np.exp(-0.5 * (_wrap_deg(theta - angle) / width) ** 2)
    label[(rho >= r_epi) & (rho < r_epi + fat_depth)] = EPI_FAT

    myo = rho < r_epi
    label[myo] = LV_MYO
    label[rho < r_endo] = LV_BLOOD

    if 0.2 < s_frac < 0.75:
        for angle, radius in h.papillary:
            a = np.deg2rad(angle)
            rad = radius * min(1.0, profile * 1.3)
            dist = r0 * profile - h.wall - 0.6 * rad
            px, py = dist * np.cos(a), dist * np.sin(a)
            label[(np.hypot(xc - px, yc - py) < rad) & (rho < r_endo)] = PAPILLARY
    if s_frac > 0.35:
        for angle, radius, inset in h.trabeculae:
            a = np.deg2rad(angle)
            dist = r0 * profile - h.wall - inset
            if dist > radius:
                px, py = dist * np.cos(a), dist * np.sin(a)
                label[(np.hypot(xc - px, yc - py) < radius) & (rho < r_endo)] = PAPILLARY

    myo = label == LV_MYO
    if spec.scars and myo.any():
        wall_mm = np.maximum(r_epi - r_endo, 1e-3)
        depth = np.clip((rho - r_endo) / wall_mm, 0.0, 1.0)
        for scar in spec.scars:
            e, core = _scar_enhancement(scar, theta[myo], rho[myo], depth[myo], wall_mm[myo],
                                        s_frac, h.lv_length, gray)
            enhancement[myo] = np.maximum(enhancement[myo], e)
            mvo[myo] |= core & (e > 0.5)
    return label, enhancement, mvo


def _tissue_signal(spec: PhantomSpec, label: np.ndarray, enhancement: np.ndarray,
                   mvo: np.ndarray) -> np.ndarray:
    it = spec.intensities
    lut = np.zeros(13)
    lut[[MUSCLE, SUBCUT_FAT, LUNG, LIVER, BONE, VESSEL, EPI_FAT, RV_WALL, RV_BLOOD, LV_MYO,
         LV_BLOOD, PAPILLARY]] = [
        it.muscle, it.fat, it.lung, it.liver, it.bone, it.vessel, it.fat * 0.92, it.myocardium,
        it.blood, it.myocardium, it.blood, it.myocardium,
    ]
    signal = lut[label]
    is_myo = label == LV_MYO
    signal = np.where(is_myo, it.myocardium + enhancement * (it.scar - it.myocardium), signal)
    return np.where(is_myo & mvo, it.mvo, signal)


def _smooth_field(rng: np.random.Generator, shape: tuple[int, int], sigma_px: float) -> np.ndarray:
    field = ndimage.gaussian_filter(rng.normal(size=shape), sigma_px, mode="wrap")
    return field / (field.std() + 1e-12)


def render(spec: PhantomSpec) -> RenderedSeries:
    acq = spec.acquisition
    long_axis = np.asarray(acq.long_axis)
    e_lat, e_ant, row_dir, col_dir = _frame(long_axis, acq.inplane_rotation_deg)
    rows, cols, sp = acq.rows, acq.cols, acq.pixel_spacing
    centre_r = rows / 2 + acq.heart_offset_px[0]
    centre_c = cols / 2 + acq.heart_offset_px[1]
    # Base centre of the LV sits at an arbitrary place in the scanner.
    origin = np.array([20.0, -30.0, 40.0]) + 10 * np.asarray(acq.bias[:3])
    ii, jj = np.meshgrid(np.arange(rows, dtype=float), np.arange(cols, dtype=float), indexing="ij")
    # Heart-frame coordinates are a fixed linear map of pixel indices.
    m = np.array([[row_dir.dot(e_lat), col_dir.dot(e_lat)],
                  [row_dir.dot(e_ant), col_dir.dot(e_ant)]])

    texture_rng = np.random.default_rng(acq.texture_seed)
    texture = 1 + 0.05 * _smooth_field(texture_rng, (rows, cols), 3.0)
    v, u = (ii - rows / 2) / rows, (jj - cols / 2) / cols
    b = acq.bias
    bias = np.exp(b[0] * u + b[1] * v + b[2] * u * v + b[3] * u**2 + b[4] * v**2 - 0.25 * v)

    thoraxes = []
    for di in _INPLANE_OFFSETS:
        for dj in _INPLANE_OFFSETS:
            col_mm = (jj + dj - centre_c) * sp
            row_mm = (ii + di - centre_r) * sp
            thoraxes.append(_thorax(spec, m[0, 0] * col_mm + m[0, 1] * row_mm,
                                    m[1, 0] * col_mm + m[1, 1] * row_mm))

    step = acq.thickness + acq.gap
    signals, myos, scars, mvos, cavities, geoms, depths = [], [], [], [], [], [], []
    for k in range(acq.n_slices):
        s_centre = acq.first_s + k * step
        position = (origin + s_centre * long_axis
                    - centre_c * sp * row_dir - centre_r * sp * col_dir)
        acc = np.zeros((rows, cols))
        myo_frac = np.zeros((rows, cols))
        scar_frac = np.zeros((rows, cols))
        mvo_frac = np.zeros((rows, cols))
        cavity_frac = np.zeros((rows, cols))
        n = 0
        for frac in _THROUGH_PLANE_FRACTIONS:
            for thorax in thoraxes:
                label, enh, mvo = _label_samples(spec, thorax, s_centre + frac * acq.thickness)
                acc += _tissue_signal(spec, label, enh, mvo)
                is_myo = label == LV_MYO
                myo_frac += is_myo
                scar_frac += is_myo & (enh >= 0.5)
                mvo_frac += is_myo & mvo
                cavity_frac += (label == LV_BLOOD) | (label == PAPILLARY)
                n += 1
        myo_gt = myo_frac >= n / 2
        scar_gt = myo_gt & (scar_frac > myo_frac / 2)
        signals.append(acc / n * texture * bias)
        myos.append(myo_gt)
        scars.append(scar_gt)
        mvos.append(scar_gt & (mvo_frac > scar_frac / 2))
        cavities.append(~myo_gt & (cavity_frac >= n / 2))
        geoms.append(SliceGeometry(
            image_position=tuple(float(v) for v in position),
            image_orientation=tuple(float(v) for v in (*row_dir, *col_dir)),
            pixel_spacing=(sp, sp),
            slice_thickness=acq.thickness,
        ))
        depths.append(float(s_centre))

    signal = np.stack(signals)
    noise_rng = np.random.default_rng(acq.noise_seed)
    sigma = spec.intensities.scar / acq.snr
    real = signal + noise_rng.normal(0, sigma, signal.shape)
    imag = noise_rng.normal(0, sigma, signal.shape)
    magnitude = np.hypot(real, imag)
    scale = acq.target_max / max(np.percentile(magnitude, 99.9), 1e-6)
    return RenderedSeries(
        signal=signal,
        image=magnitude * scale * acq.rescale_slope + acq.rescale_intercept,
        myocardium=np.stack(myos).astype(np.uint8),
        scar=np.stack(scars).astype(np.uint8),
        mvo=np.stack(mvos).astype(np.uint8),
        cavity=np.stack(cavities).astype(np.uint8),
        geometry=tuple(geoms),
        slice_depth_mm=tuple(depths),
    )
