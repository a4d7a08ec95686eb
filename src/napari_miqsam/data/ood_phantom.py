"""Out-of-family validation phantoms: a second abdominal CT generator, for validation only.

The shipped weights are trained on :mod:`.phantom` cases, so a score on those cases measures the
model inside the family it was fitted to. This module draws cases from a *different* family with
the same published ranges, to see how much of that score survives a change of generator. It was
written without reading ``data/phantom.py`` (only its docstring, :class:`Case` and
:func:`affine_from_spacing`), and it must never be drawn from in training: it is reached only
through ``miqsam evaluate ood:N[:SEED]``.

Construction, in (z, y, x) with z superior, y posterior and x towards the patient's left:

* the body is a polar superellipse (different anterior and posterior half-axes, a few angular
  harmonics, tilted in-plane by up to 10 degrees; the CT table stays level) whose radial depth
  gives skin, subcutaneous fat, an abdominal-wall muscle band and ribs (bands of that depth that
  descend anteriorly); a vertebral column with discs, canal, arch, paraspinal and psoas muscles,
  aorta and IVC; spleen, kidneys (cortex, medulla, sinus fat), a stomach with an air-fluid level,
  sometimes a gallbladder; bowel as tubes where two smooth noise fields are both near zero, with
  gas pockets;
* the host organ (liver-like, 40-130 HU) is a smooth union of jittered ellipsoids with a smooth
  displacement of its surface, carved around the stomach, gallbladder, IVC, spine and kidney;
  fractal texture; two branching vessel trees (portal from the hilum, hepatic towards the IVC)
  of random tapering tubes, 100-250 HU, labelled organ;
* lesions are signed-distance blobs: a radius function of random degree-2..4 polynomials of the
  direction (spherical harmonics), smooth-unioned with surface lobules for tumours. Tumours:
  1-8, 4-50 mm, 15-50 HU darker than the organ around them, soft-edged (logistic profile, 10-90 %
  width 1.5-5 mm), gamma-distributed texture, sometimes an enhancing rim or a necrotic core.
  Cysts: 0-6, 4-30 mm, -2..22 HU, near-round, sharp, homogeneous. Sizes are log-uniform. Centres are drawn from organ voxels with a probe-sphere test, separated by a gap
  of two voxels at least, so every lesion is its own 26-connected component;
* acquisition: one of two modes (1 mm isotropic, or 2.5 mm slices at 0.8 mm in-plane), each with
  probability 1/2. Thick slices are rendered at half the slice spacing and integrated over the
  slice (a trapezoid box) after a Gaussian PSF; noise is in-plane correlated Gaussian whose sigma
  (5-25 HU at the organ) grows towards the body centre and is low in air; a smooth additive
  drift and a calibration gain about air.

Labels follow KiTS: 0 background, 1 host organ (with its vessels), 2 tumour, 3 cyst. Everything
comes from one ``np.random.default_rng(seed)``, so a case is reproducible.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from .phantom import Case, affine_from_spacing

__all__ = ["FACTORS", "OOD_MODES", "make_ood_phantom"]

#: What ``make_ood_phantom(..., factors=...)`` can scale, for diagnostics only (which of the
#: family's properties costs the model most; ``benchmarks/ood_factors.py``). Each is a multiplier
#: of the drawn value; 1 (the default) leaves the case exactly as it is.
FACTORS = ("noise", "grain", "psf", "organ_texture", "tumour_texture", "tumour_edge")

#: The acquisition modes: name -> voxel spacing (z, y, x) mm; each case draws one, p = 1/2.
OOD_MODES: dict[str, tuple[float, float, float]] = {
    "iso_1mm": (1.0, 1.0, 1.0),
    "thick_2.5mm": (2.5, 0.8, 0.8),
}

_TUMOUR, _CYST = 2, 3


@dataclass
class _Grid:
    """The render grid: (z, y, x) mm coordinates centred on 0 and the tilted body frame.

    Body-frame coordinates are z, u (towards the patient's left) and v (posterior); the body
    centre lies at world (y, x) = ``centre`` and the frame is rotated by ``theta`` in-plane.
    """

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    theta: float
    centre: tuple[float, float]

    def __post_init__(self) -> None:
        self.axes = [(np.arange(n, dtype=np.float32) - (n - 1) / 2) * s
                     for n, s in zip(self.shape, self.spacing)]
        self.u, self.v = self.body_uv(self.axes[1][:, None], self.axes[2][None, :])

    def body_uv(self, y, x):
        c, s = math.cos(self.theta), math.sin(self.theta)
        dx, dy = x - self.centre[1], y - self.centre[0]
        return (c * dx + s * dy).astype(np.float32), (-s * dx + c * dy).astype(np.float32)

    def world_yx(self, u: float, v: float) -> tuple[float, float]:
        c, s = math.cos(self.theta), math.sin(self.theta)
        return self.centre[0] + s * u + c * v, self.centre[1] + c * u - s * v

    def box(self, p, r):
        """Slices of the grid around body point ``p`` = (z, u, v) with half-size ``r`` mm (scalar
        or (z, in-plane)), and its coordinates z (n, 1, 1), u and v (1, ny, nx); None if empty."""
        rz, ruv = (r, r) if np.isscalar(r) else r
        y, x = self.world_yx(p[1], p[2])
        sl = []
        for c, h, ax, s in zip((p[0], y, x), (rz, ruv, ruv), self.axes, self.spacing):
            lo = int(np.searchsorted(ax, c - h - s))
            hi = int(np.searchsorted(ax, c + h + s))
            if hi <= lo:
                return None
            sl.append(slice(lo, hi))
        sl = tuple(sl)
        return sl, self.axes[0][sl[0], None, None], self.u[None, sl[1], sl[2]], self.v[None, sl[1], sl[2]]


def _rotation(rng: np.random.Generator, max_deg: float) -> np.ndarray:
    """A random rotation of at most about ``max_deg`` degrees per axis (z, u, v frame)."""
    a, b, c = np.deg2rad(rng.uniform(-max_deg, max_deg, 3))
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    ry = np.array([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]])
    rz = np.array([[math.cos(c), -math.sin(c), 0], [math.sin(c), math.cos(c), 0], [0, 0, 1]])
    return rx @ ry @ rz


def _ellipsoid_sd(zz, uu, vv, centre, axes, rot) -> np.ndarray:
    """Approximate signed distance (mm, negative inside) to a rotated ellipsoid."""
    c = [float(t) for t in centre]
    d = (zz - c[0], uu - c[1], vv - c[2])
    q = 0.0
    for i in range(3):
        comp = float(rot[0, i]) * d[0] + float(rot[1, i]) * d[1] + float(rot[2, i]) * d[2]
        q = q + (comp * (1.0 / float(axes[i]))) ** 2
    return ((np.sqrt(q) - 1.0) * float(min(axes))).astype(np.float32, copy=False)


def _smin(a: np.ndarray, b: np.ndarray, k: float) -> np.ndarray:
    """Polynomial smooth minimum (union of two signed distances, blended over ``k`` mm)."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _upsample(coarse: np.ndarray, shape) -> np.ndarray:
    """Separable linear interpolation of ``coarse`` onto ``shape`` (its corners map inside)."""
    out = coarse
    for axis in reversed(range(out.ndim)):
        c, n = out.shape[axis], shape[axis]
        pos = (np.arange(n, dtype=np.float32) + 0.5) * ((c - 1) / n)
        i0 = np.minimum(pos.astype(np.intp), c - 2)
        t = (pos - i0).reshape([-1 if a == axis else 1 for a in range(out.ndim)])
        out = np.take(out, i0, axis) * (1 - t) + np.take(out, i0 + 1, axis) * t
    return out


def _smooth_noise(rng, shape, spacing, cell_mm: float) -> np.ndarray:
    """Zero-mean, about unit-std value noise with features of ``cell_mm`` on a grid of ``shape``."""
    coarse = [max(2, int(math.ceil(n * s / cell_mm)) + 1) for n, s in zip(shape, spacing)]
    up = _upsample(rng.standard_normal(coarse, dtype=np.float32), shape)
    probe = up[::3, ::3, ::3]
    up -= probe.mean()
    up *= 1.0 / (float(probe.std()) + 1e-6)
    return up


def _fractal(rng, shape, spacing, cells=(24.0, 10.0, 4.0), gain=0.55) -> np.ndarray:
    out = np.zeros(shape, np.float32)
    amp, total = 1.0, 0.0
    for cell in cells:
        out += amp * _smooth_noise(rng, shape, spacing, cell)
        total += amp * amp
        amp *= gain
    return out / math.sqrt(total)


def _segment_distance(zz, uu, vv, a, b) -> np.ndarray:
    """Distance (mm) from the points to the segment a-b (z, u, v)."""
    a0, a1, a2 = (float(t) for t in a)
    d0, d1, d2 = (float(t) for t in np.asarray(b) - np.asarray(a))
    t = ((zz - a0) * d0 + (uu - a1) * d1 + (vv - a2) * d2) * (1.0 / max(d0 * d0 + d1 * d1 + d2 * d2, 1e-6))
    t = np.clip(t, 0.0, 1.0)
    return np.sqrt((zz - a0 - t * d0) ** 2 + (uu - a1 - t * d1) ** 2 + (vv - a2 - t * d2) ** 2)


def _vessel_tree(rng, start, targets, radius, length, generations) -> list:
    """Segments (a, b, radius) of a randomly branching, tapering tree (z, u, v mm) whose branches
    head for random ``targets`` (points inside the organ, (n, 3)), so the tree stays inside."""
    def towards(p):
        d = targets[rng.integers(len(targets))] - p
        return d / (np.linalg.norm(d) + 1e-9)

    start = np.asarray(start, float)
    segs, stack = [], [(start, towards(start), radius, length, generations)]
    while stack:
        p, d, r, length_, g = stack.pop()
        d = d + rng.normal(0.0, 0.15, 3)
        d /= np.linalg.norm(d)
        q = p + d * length_
        segs.append((p, q, r))
        if g > 0:
            for _ in range(2):
                nd = 0.5 * d + towards(q)  # branch off towards another part of the organ
                stack.append((q, nd / np.linalg.norm(nd), r * rng.uniform(0.65, 0.8),
                              length_ * rng.uniform(0.65, 0.85), g - 1))
    return segs


def _outline(rng, u, v, A: float, Bp: float, Ba: float, p_range: tuple[float, float], harmonics, amp: float):
    """A body outline in the (u, v) plane: polar angle ``phi``, radius ``rho`` and the outline's
    radius ``R0`` at each angle, a superellipse (exponent drawn in ``p_range``; lateral half-axis
    ``A``, posterior ``Bp``, anterior ``Ba``) modulated by angular ``harmonics`` of amplitude up to ``amp``."""
    phi = np.arctan2(v, u)
    rho = np.sqrt(u * u + v * v)
    p_exp = rng.uniform(*p_range)
    B = np.where(v > 0, Bp, Ba)
    R0 = (np.abs(np.cos(phi) / A) ** p_exp + np.abs(np.sin(phi) / B) ** p_exp) ** (-1.0 / p_exp)
    for m in harmonics:
        R0 = R0 * (1.0 + rng.uniform(0, amp) * np.cos(m * phi + rng.uniform(0, 2 * np.pi)))
    return phi, rho, R0


def _tube_coverage(weight: np.ndarray, segs, grid: _Grid, sl, zs, u, v) -> None:
    """Max-accumulate into ``weight`` (the box ``sl`` of the render grid) the coverage of the tubes
    ``segs`` = (a, b, radius), 0..1 with a half-voxel ramp at the wall."""
    for a, b, rr in segs:
        lo, hi = np.minimum(a, b) - rr - 2, np.maximum(a, b) + rr + 2
        got = grid.box((lo + hi) / 2, ((hi - lo)[0] / 2, 0.6 * max((hi - lo)[1:])))
        if got is None:
            continue
        gsl = tuple(slice(max(g.start, o.start), min(g.stop, o.stop)) for g, o in zip(got[0], sl))
        if any(g.stop <= g.start for g in gsl):
            continue
        dist = _segment_distance(zs[gsl[0], None, None], u[None, gsl[1], gsl[2]], v[None, gsl[1], gsl[2]], a, b)
        local = tuple(slice(g.start - o.start, g.stop - o.start) for g, o in zip(gsl, sl))
        np.maximum(weight[local], np.clip(rr - dist + 0.5, 0, 1), out=weight[local])


def _inside_fraction(grid: _Grid, centre, radius: float, probe: np.ndarray, mask: np.ndarray) -> float | None:
    """Share of the points ``centre + radius * probe`` (body frame, mm) that fall in ``mask`` (the
    render grid); None when one falls outside the grid."""
    pts = centre[None] + probe * radius
    yx = [grid.world_yx(p[1], p[2]) for p in pts]
    ijk = np.rint(np.array([[p[0], y, x] for p, (y, x) in zip(pts, yx)])
                  / np.array(grid.spacing) + (np.array(grid.shape) - 1) / 2).astype(int)
    if (ijk < 0).any() or (ijk >= np.array(grid.shape)).any():
        return None
    return float(mask[ijk[:, 0], ijk[:, 1], ijk[:, 2]].mean())


def _blur_and_slice(img: np.ndarray, sig_z: float, sig_xy: float, spacing, render_spacing, sub: int) -> np.ndarray:
    """The point-spread function (Gaussian, sigmas in mm), then for thick slices (``sub`` 2: rendered
    at half the slice spacing) a trapezoid integration over a box as wide as the slice."""
    img = ndimage.gaussian_filter(img, [sig_z / render_spacing[0], sig_xy / spacing[1], sig_xy / spacing[2]], truncate=3.0)
    if sub == 2:
        img = 0.25 * img[0:-2:2] + 0.5 * img[1:-1:2] + 0.25 * img[2::2]
    return img


def _grain(rng, shape, corr_lo: float, corr_hi: float, factor: float = 1.0) -> np.ndarray:
    """Unit-std noise correlated in-plane (sigma ``corr_lo..corr_hi`` voxels, times ``factor``)."""
    white = rng.standard_normal(shape, dtype=np.float32)
    corr = rng.uniform(corr_lo, corr_hi) * factor
    noise = ndimage.gaussian_filter(white, [0, corr, corr], truncate=2.5)
    noise /= noise[:, ::4, ::4].std() + 1e-6
    return noise


def _drift(rng, shape, spacing, half, amp_z: float, amp_yx: float) -> np.ndarray:
    """A smooth additive drift (HU): a cosine along z and linear ramps in y and x."""
    fz, fy, fx = half
    zc, yc, xc = ((np.arange(n) - (n - 1) / 2) * sp for n, sp in zip(shape, spacing))
    drift = (rng.uniform(-amp_z, amp_z) * np.cos(np.pi * zc / fz + rng.uniform(0, np.pi)))[:, None, None] \
        + (rng.uniform(-amp_yx, amp_yx) * yc / fy)[None, :, None] + (rng.uniform(-amp_yx, amp_yx) * xc / fx)[None, None, :]
    return drift.astype(np.float32)


def _largest_piece(inst: np.ndarray, objects, k: int):
    """(bounding slices, mask) of instance ``k``'s largest 26-connected piece, or None if it is gone."""
    osl = objects[k - 1] if k - 1 < len(objects) else None
    if osl is None:
        return None
    m = inst[osl] == k
    comp, n = ndimage.label(m, np.ones((3, 3, 3), bool))
    if n > 1:
        m = comp == 1 + int(np.argmax(np.bincount(comp.ravel())[1:]))
    return (osl, m) if m.any() else None


def _direction_poly(rng, amp: float, degree_max: int = 4):
    """A random polynomial P(n) of the unit direction n = (z, u, v) with |P| <= amp on the sphere:
    a band-limited (degree 2..``degree_max``) spherical-harmonic radius perturbation."""
    terms = [(i, j, k) for i in range(degree_max + 1) for j in range(degree_max + 1)
             for k in range(degree_max + 1) if 2 <= i + j + k <= degree_max]
    coef = [float(c) for c in rng.normal(0.0, 1.0, len(terms))]

    def raw(nz, nu, nv):
        pz, pu, pv = ([np.ones_like(a), a] for a in (nz, nu, nv))
        for pw in (pz, pu, pv):
            while len(pw) <= degree_max:
                pw.append(pw[-1] * pw[1])
        return sum(c * (pz[i] * pu[j]) * pv[k] for c, (i, j, k) in zip(coef, terms))

    probe = rng.normal(size=(256, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    val = raw(probe[:, 0], probe[:, 1], probe[:, 2])
    mean, scale = float(val.mean()), amp / (float(np.abs(val - val.mean()).max()) + 1e-9)
    return lambda nz, nu, nv: np.clip((raw(nz, nu, nv) - mean) * scale, -amp, amp)


@dataclass
class _Lesion:
    kind: int
    centre: np.ndarray  # (z, u, v) mm
    radius: float  # nominal mm
    extent: float  # bound of the shape's radius, mm


def _lesion_sd(rng, lesion: _Lesion, zz, uu, vv) -> np.ndarray:
    """Signed distance (mm) of a lobulated (tumour) or near-round (cyst) blob."""
    cz, cu, cv = (float(t) for t in lesion.centre)
    dz, du, dv = zz - cz, uu - cu, vv - cv
    rho = np.sqrt(dz * dz + du * du + dv * dv) + 1e-6
    r0 = lesion.radius
    amp = rng.uniform(0.1, 0.25) if lesion.kind == _TUMOUR else rng.uniform(0.0, 0.04)
    poly = _direction_poly(rng, amp)
    sd = rho - r0 * (1.0 + poly(dz / rho, du / rho, dv / rho))
    if lesion.kind == _TUMOUR:
        for _ in range(int(rng.integers(0, 4))):
            n = rng.normal(size=3)
            n /= np.linalg.norm(n)
            c = n * r0 * rng.uniform(0.6, 0.85)
            rl = r0 * rng.uniform(0.3, 0.5)
            lobe = np.sqrt((dz - c[0]) ** 2 + (du - c[1]) ** 2 + (dv - c[2]) ** 2) - rl
            sd = _smin(sd, lobe, 0.25 * rl)
    return sd.astype(np.float32)


def make_ood_phantom(seed: int, name: str | None = None, factors: dict | None = None) -> Case:
    """One out-of-family validation case (see the module docstring); never use it in training.

    Returns a :class:`Case` with ``image`` float32 HU and ``labels`` uint8 on a (z, y, x) grid of
    about 100-140 x 160-200 x 160-200 mm, ``spacing`` (z, y, x) mm of the drawn acquisition mode,
    and ``meta`` with the mode, the contrast phase, tissue values and one entry per lesion
    (class, centre voxel (z, y, x) and mm from the volume centre, equivalent-sphere diameter mm
    of the labelled voxels and the drawn one, mean HU of the final image over the lesion).
    ``factors`` (diagnostics only, :data:`FACTORS`) scale some drawn values; every draw stays.
    """
    unknown = set(factors or {}) - set(FACTORS)
    if unknown:
        raise ValueError(f"unknown factors {sorted(unknown)}; known: {', '.join(FACTORS)}")
    fac = {k: float((factors or {}).get(k, 1.0)) for k in FACTORS}
    if fac["tumour_edge"] <= 0:
        raise ValueError("factor tumour_edge must be > 0 (an edge has a width)")
    rng = np.random.default_rng(seed)
    mode = "iso_1mm" if rng.random() < 0.5 else "thick_2.5mm"
    spacing = OOD_MODES[mode]
    fov = (rng.uniform(100, 140), rng.uniform(160, 200), rng.uniform(160, 200))
    shape = tuple(int(round(f / s)) for f, s in zip(fov, spacing))
    sub = 2 if spacing[0] > 1.5 else 1  # thick slices: rendered at half the slice spacing
    render_shape = (shape[0] * sub + (sub - 1), shape[1], shape[2])
    render_spacing = (spacing[0] / sub, spacing[1], spacing[2])
    fz, fy, fx = (n * s / 2 for n, s in zip(shape, spacing))  # half field of view, mm

    # body half-axes (u lateral, v anterior / posterior), slightly tilted and off-centre
    A = rng.uniform(0.78, 0.93) * fx
    Bp = rng.uniform(0.62, 0.74) * fy
    Ba = Bp * rng.uniform(0.95, 1.12)
    theta = math.radians(rng.uniform(-10, 10))
    grid = _Grid(render_shape, render_spacing, theta,
                 (rng.uniform(-0.05, 0.05) * fy, rng.uniform(-0.04, 0.04) * fx))
    zs = grid.axes[0]
    u, v = grid.u, grid.v
    phase = float(rng.uniform(0, 1))  # 0 non-contrast .. 1 portal venous
    img = np.full(render_shape, -1000.0, np.float32)

    # CT table: level in world y, below the patient's back
    y_tab = grid.centre[0] + Bp * 1.08 + rng.uniform(4, 12)
    table = (grid.axes[1][:, None] > y_tab) & (grid.axes[1][:, None] < y_tab + 6) & (np.abs(grid.axes[2])[None, :] < 0.95 * fx)
    img[:, table] = rng.uniform(60, 200)

    # body outline: polar superellipse with harmonics, scaled along z
    phi, rho, R0 = _outline(rng, u, v, A, Bp, Ba, (2.0, 2.8), (2, 3, 4), 0.02)
    scale_z = (1.0 + rng.uniform(-0.04, 0.04) * zs / fz + 0.01 * np.sin(zs / fz * rng.uniform(1, 3))).astype(np.float32)
    depth = scale_z[:, None, None] * R0[None].astype(np.float32) - rho[None]
    t0, phi_fat = rng.uniform(4, 12), rng.uniform(-2.0, -1.2)
    t_fat = (t0 * (1.0 + 0.4 * np.cos(phi - phi_fat))).astype(np.float32)
    t_back = t0 * (1.0 + 0.4 * math.cos(math.pi / 2 - phi_fat))  # at the posterior midline
    t_mus = rng.uniform(4, 9)
    body = depth > 0
    img[body] = rng.uniform(-115, -90)
    skin = body & (depth < 1.6)
    img[skin] = rng.uniform(10, 40)
    muscle = (depth > t_fat[None]) & (depth < t_fat[None] + t_mus)
    mus_hu = rng.uniform(42, 58)
    img[muscle] = mus_hu
    inner = depth > t_fat[None] + t_mus
    img[inner] = rng.uniform(-100, -75)

    # ribs: bone bands in the wall, descending anteriorly
    band = (depth > t_fat[None] + t_mus * 0.3) & (depth < t_fat[None] + t_mus * 0.3 + rng.uniform(6, 9))
    idx = np.nonzero(band)
    pitch, z0, slope = rng.uniform(26, 34), rng.uniform(0, 30), rng.uniform(22, 32)
    ph = phi[idx[1], idx[2]]
    zr = zs[idx[0]] - z0 + slope * np.sin(ph)  # lower anteriorly (sin(phi) < 0 anterior)
    onrib = (np.abs(np.mod(zr, pitch) - pitch / 2) < rng.uniform(3.5, 4.5)) & (np.sin(ph) > -0.75) & (np.sin(ph) < 0.9)
    rib_hu = np.where(np.mod(zr, pitch) > pitch / 2 - 1.5, rng.uniform(600, 900), rng.uniform(250, 400))
    img[idx[0][onrib], idx[1][onrib], idx[2][onrib]] = rib_hu[onrib]
    del band, idx, zr, ph

    wall = float(t_fat.max() + t_mus)
    hard = np.zeros(render_shape, bool)  # voxels the organ must not take

    # bowel: tubes where two smooth noise fields both cross zero (the intersection of two thickened
    # level sets), in the anterior, inferior, left abdomen; fluid lumen with gas pockets
    cell = rng.uniform(20, 28)
    n1 = _smooth_noise(rng, render_shape, render_spacing, cell)
    n2 = _smooth_noise(rng, render_shape, render_spacing, cell)
    tube = np.maximum(np.abs(n1), np.abs(n2))
    del n1, n2
    bias = (-0.9 * v / Ba + 0.3 * u / A)[None] - 0.8 * (zs / fz)[:, None, None]
    width = rng.uniform(0.3, 0.45)
    bowel = (tube < width) & (bias > rng.uniform(-0.6, -0.2)) & (depth > wall + 2)
    lumen = bowel & (tube < width * rng.uniform(0.55, 0.7))
    img[bowel] = rng.uniform(30, 45) + 30 * phase
    img[lumen] = rng.uniform(0, 30)
    gas = lumen & (_smooth_noise(rng, render_shape, render_spacing, 10.0) > rng.uniform(0.3, 0.9))
    img[gas] = rng.uniform(-980, -850)
    del tube, bias, bowel, lumen, gas

    # spine, canal, arch, paraspinal and psoas muscles, aorta, IVC (extruded along z)
    vb_r = rng.uniform(10, 13)
    canal_c = Bp - t_back - t_mus - rng.uniform(12, 16)  # spinous tip just under the back's fat
    v_s = canal_c - 5.0 - vb_r - 1.0
    vb = ((u / (vb_r * 1.1)) ** 2 + ((v - v_s) / vb_r) ** 2) < 1
    vb_core = ((u / (vb_r * 1.1 - 2)) ** 2 + ((v - v_s) / (vb_r - 2)) ** 2) < 1
    canal = (u ** 2 + (v - canal_c) ** 2) < 5.0 ** 2
    arch = ((u ** 2 + (v - canal_c) ** 2) < 8.5 ** 2) & ~canal
    spinous = (np.abs(u) < 3.0) & (v > canal_c) & (v < canal_c + 5 + t_mus + rng.uniform(4, 8))
    para = ((((np.abs(u) - vb_r - 5) / 12) ** 2 + ((v - canal_c - 4) / 11) ** 2) < 1) & (depth[depth.shape[0] // 2] > t_fat)
    period, disc_w = rng.uniform(25, 30), rng.uniform(5, 8)
    disc = np.abs(np.mod(zs - rng.uniform(0, 30), period) - period / 2) < disc_w / 2
    img[:, para & ~arch & ~spinous] = mus_hu + rng.uniform(-5, 5)
    cortical, cancellous = rng.uniform(600, 1000), rng.uniform(180, 320)
    img[:, vb] = np.where(disc, rng.uniform(80, 105), cortical)[:, None]
    img[:, vb_core] = np.where(disc, rng.uniform(80, 105), cancellous)[:, None]
    img[:, arch | spinous] = cortical * 0.8
    img[:, canal] = rng.uniform(5, 20)
    psoas_r = np.clip(3 + 10 * (0.4 - zs / fz) / 1.4, 2, 12)[:, None, None]
    psoas = ((np.abs(u)[None] - vb_r - psoas_r * 0.8) ** 2 + ((v[None] - v_s + 3) / 0.8) ** 2) < psoas_r ** 2
    img[psoas & (depth > wall)] = mus_hu
    aorta_c, aorta_r = (vb_r * 0.6, v_s - vb_r - rng.uniform(10, 13)), rng.uniform(9, 12)
    aorta = ((u - aorta_c[0]) ** 2 + (v - aorta_c[1]) ** 2) < aorta_r ** 2
    ivc_c = (-vb_r * 1.4, v_s - vb_r - rng.uniform(8, 12))
    ivc = ((u - ivc_c[0]) / 13) ** 2 + ((v - ivc_c[1]) / 9) ** 2 < 1
    img[:, aorta] = 45 + phase * rng.uniform(100, 180)
    img[:, ivc] = 42 + phase * rng.uniform(70, 120)
    hard[:, vb | arch | spinous | canal | aorta | ivc | para] = True
    hard |= psoas

    # kidneys: cortex / medulla / sinus fat, lower in the slab
    for side in (-1.0, 1.0):
        c = np.array([-0.35 * fz + (-10 if side < 0 else 0) + rng.uniform(-8, 8),
                      side * (vb_r + rng.uniform(24, 32)), v_s + rng.uniform(-2, 6)])
        ax = np.array([rng.uniform(32, 42), rng.uniform(15, 19), rng.uniform(12, 15)])
        rot = _rotation(rng, 15)
        got = grid.box(c, (ax.max() + 2, ax.max() + 2))
        if got is None:
            continue
        sl, zz, uu, vv = got
        sd = _ellipsoid_sd(zz, uu, vv, c, ax, rot)
        kid = sd < 0
        hilum = ((uu - (c[1] - side * ax[1] * 0.7)) ** 2 + (vv - c[2]) ** 2 + ((zz - c[0]) * 0.4) ** 2) < (ax[1] * 0.45) ** 2
        box = img[sl]
        box[kid] = rng.uniform(30, 40) + phase * rng.uniform(20, 60)
        box[kid & (sd < -4.5)] = rng.uniform(28, 38) + phase * rng.uniform(5, 25)
        box[kid & hilum] = rng.uniform(-90, -60)
        hard[sl] |= kid

    # spleen (left, posterior-lateral) and stomach (left, anterior, with an air-fluid level)
    c = np.array([0.2 * fz + rng.uniform(-10, 10), 0.5 * A, 0.15 * Bp])
    ax = np.array([rng.uniform(35, 50), rng.uniform(15, 22), rng.uniform(28, 38)])
    got = grid.box(c, (ax.max() + 2, ax.max() + 2))
    if got is not None:
        sl, zz, uu, vv = got
        spleen = (_ellipsoid_sd(zz, uu, vv, c, ax, _rotation(rng, 20)) < 0) & (depth[sl] > wall)
        img[sl][spleen] = rng.uniform(40, 50) + phase * rng.uniform(10, 40)
        hard[sl] |= spleen
    c = np.array([0.25 * fz + rng.uniform(-10, 10), 0.3 * A + rng.uniform(-5, 5), -0.3 * Ba])
    ax = np.array([rng.uniform(28, 40), rng.uniform(22, 32), rng.uniform(16, 24)])
    got = grid.box(c, (ax.max() + 2, ax.max() + 2))
    if got is not None:
        sl, zz, uu, vv = got
        sd = _ellipsoid_sd(zz, uu, vv, c, ax, _rotation(rng, 20))
        st = (sd < 0) & (depth[sl] > wall)
        box = img[sl]
        box[st] = rng.uniform(35, 50) + 30 * phase
        content = st & (sd < -rng.uniform(2.5, 4))
        box[content] = rng.uniform(150, 300) if rng.random() < 0.2 else rng.uniform(5, 25)
        level = c[2] - ax[2] * rng.uniform(0.0, 0.6)  # gas rises anteriorly (smaller v)
        box[content & (np.broadcast_to(vv, st.shape) < level)] = rng.uniform(-990, -900)
        hard[sl] |= st

    # the host organ: smooth union of jittered ellipsoids, right upper abdomen
    lobes = [((0.1, -0.45, -0.02), (0.6, 0.5, 0.75)),
             ((-0.15, -0.55, 0.3), (0.45, 0.35, 0.5)),
             ((0.3, -0.05, -0.5), (0.3, 0.32, 0.25))]
    if rng.random() < 0.5:
        lobes.append(((rng.uniform(-0.3, 0.3), -0.3, rng.uniform(-0.3, 0.3)), (0.25, 0.2, 0.2)))
    lo_z = -fz + rng.uniform(-0.15, 0.35) * fz  # the organ's inferior tip may lie in the slab
    got = grid.box((0.0, -0.2 * A, 0.0), (fz * 1.05, max(A, Bp, Ba) * 1.05))
    sl, zz, uu, vv = got
    f = None
    for (cz, cu, cv), (az, au, av) in lobes:
        cen = np.array([cz * fz, cu * A, cv * (Bp if cv > 0 else Ba)]) + rng.normal(0, 4, 3)
        ax = np.array([az * fz * 1.3, au * A, av * Bp]) * rng.uniform(0.88, 1.15, 3)
        sd = _ellipsoid_sd(zz, uu, vv, cen, ax, _rotation(rng, 12))
        f = sd if f is None else _smin(f, sd, 8.0)
    box_shape = f.shape
    f += 4.0 * _smooth_noise(rng, box_shape, render_spacing, 30.0)
    f += np.clip((lo_z - zz) * 2.0, 0, None)  # ramp the inferior end
    organ = np.zeros(render_shape, bool)
    organ[sl] = (f < 0) & (depth[sl] > wall + 1) & ~hard[sl]
    del f

    # gallbladder: a water-dense pear at the organ's inferior-anterior surface, not organ
    if rng.random() < 0.6:
        c = np.array([lo_z + rng.uniform(20, 35), -0.2 * A + rng.uniform(-8, 8), -0.25 * Ba])
        ax = np.array([rng.uniform(22, 32), rng.uniform(10, 15), rng.uniform(10, 15)])
        got = grid.box(c, (ax.max() + 2, ax.max() + 2))
        if got is not None:
            gsl, gz, gu, gv = got
            sd = _ellipsoid_sd(gz, gu, gv, c, ax, _rotation(rng, 25))
            gb = (sd < 0) & (depth[gsl] > wall)
            gbox = img[gsl]
            gbox[gb] = rng.uniform(25, 45)
            gbox[gb & (sd < -1.8)] = rng.uniform(0, 20)
            organ[gsl] &= ~gb

    liver_hu = float(np.clip(rng.uniform(45, 60) + phase * rng.uniform(25, 65), 40, 130))
    vessel_hu = float(min(250.0, max(rng.uniform(100, 250), liver_hu + 40)))
    obox = organ[sl]
    tex = _fractal(rng, box_shape, render_spacing) * rng.uniform(3, 7)
    tex += rng.uniform(2, 6) * _smooth_noise(rng, box_shape, render_spacing, 60.0)
    tex *= fac["organ_texture"]
    liv = liver_hu + tex

    # vessels: portal tree from the hilum, hepatic veins towards the IVC
    vw = np.zeros(box_shape, np.float32)
    pick = np.flatnonzero(organ)
    pick = np.unravel_index(pick[rng.integers(len(pick), size=300)], render_shape)
    targets = np.stack([zs[pick[0]], u[pick[1], pick[2]], v[pick[1], pick[2]]], 1)

    def nearest(p):
        return targets[np.argmin(np.linalg.norm(targets - p, axis=1))]

    trees = [(nearest([lo_z + 0.45 * (fz - lo_z), -0.1 * A, 0.05 * Bp]), rng.uniform(4.5, 6.0)),
             (nearest([0.8 * fz, ivc_c[0], ivc_c[1]]), rng.uniform(4.0, 5.0))]
    for start, r in trees:
        _tube_coverage(vw, _vessel_tree(rng, start, targets, r, rng.uniform(20, 28), 4), grid, sl, zs, u, v)
    liv = liv * (1 - vw) + vessel_hu * vw
    vessels_outside = (vw > 0.5) & ~obox & (depth[sl] > wall) & ~hard[sl]
    ibox = img[sl]
    ibox[obox] = liv[obox]
    ibox[vessels_outside] = vessel_hu

    # lesions: probe-sphere placement of non-touching blobs inside the organ
    lesions: list[_Lesion] = []
    gap = 2.2 * max(spacing) + 1.0
    n_t, n_c = int(rng.integers(1, 9)), int(rng.integers(0, 7))
    sizes = [(_TUMOUR, math.exp(rng.uniform(math.log(4), math.log(50)))) for _ in range(n_t)]
    sizes += [(_CYST, math.exp(rng.uniform(math.log(4), math.log(30)))) for _ in range(n_c)]
    sizes.sort(key=lambda t: -t[1])
    cand = np.flatnonzero(organ)
    probe = rng.normal(size=(26, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    for kind, diam in sizes:
        r = diam / 2
        placed = False
        for attempt in range(60):
            if attempt and attempt % 20 == 0:
                r *= 0.75
            if r < 2.0:
                break
            extent = r * (1.4 if kind == _TUMOUR else 1.05)  # bounds the blob's radius
            zi, yi, xi = np.unravel_index(cand[rng.integers(len(cand))], render_shape)
            centre = np.array([zs[zi], u[yi, xi], v[yi, xi]])
            if any(np.linalg.norm(centre - o.centre) < extent + o.extent + gap for o in lesions):
                continue
            inside = _inside_fraction(grid, centre, 0.6 * r, probe, organ)
            if inside is None or inside < 0.9:
                continue
            lesions.append(_Lesion(kind, centre, r, extent))
            placed = True
            break
        if not placed and kind == _TUMOUR and not any(o.kind == _TUMOUR for o in lesions):
            for i in rng.permutation(len(cand))[:500]:  # at least one tumour: a small one anywhere free
                zi, yi, xi = np.unravel_index(cand[i], render_shape)
                centre = np.array([zs[zi], u[yi, xi], v[yi, xi]])
                if all(np.linalg.norm(centre - o.centre) >= 3.5 + o.extent + gap for o in lesions):
                    lesions.append(_Lesion(kind, centre, 2.5, 3.5))
                    break

    inst = np.zeros(render_shape, np.int16)
    drawn = []
    for k, les in enumerate(lesions, start=1):
        # edge: the 10-90 % width of the boundary's logistic profile, mm
        edge = rng.uniform(1.5, 5.0) * fac["tumour_edge"] if les.kind == _TUMOUR else rng.uniform(0.3, 0.8)
        edge = min(edge, 0.6 * les.radius)  # a small lesion keeps its contrast at the centre
        got = grid.box(les.centre, les.extent + edge + 1)
        lsl, lz_, lu, lv = got
        sd = _lesion_sd(rng, les, lz_, lu, lv)
        inside = organ[lsl]
        w = (1.0 / (1.0 + np.exp(np.clip(sd * (4.4 / edge), -30, 30)))) * inside
        lbox = img[lsl]
        if les.kind == _TUMOUR:
            delta = rng.uniform(15, 50)
            local = float(np.median(lbox[inside])) if inside.any() else liver_hu  # the organ around it
            kshape = rng.uniform(1.5, 4.0)
            g = rng.gamma(kshape, 1.0, size=[max(2, int(n * s / 5.0)) + 2 for n, s in zip(sd.shape, render_spacing)])
            g = _upsample(((g - kshape) / math.sqrt(kshape)).astype(np.float32), sd.shape)
            val = local - delta + rng.uniform(4, 10) * fac["tumour_texture"] * g
            if rng.random() < 0.3:  # enhancing rim
                rim = (sd > -rng.uniform(1.5, 3.0)) & (sd < 0.5)
                val = np.where(rim, local - delta * rng.uniform(0.1, 0.4), val)
            if les.radius >= 7.5 and rng.random() < 0.3:  # necrotic core
                core = 1.0 / (1.0 + np.exp((sd + 0.45 * les.radius) / 1.5))
                val = val * (1 - core) + max(local - delta - rng.uniform(10, 25), 5.0) * core
            info = {"contrast_hu": -delta, "edge_mm": edge}
        else:
            val = rng.uniform(-2, 22) + rng.normal(0, 1.0, sd.shape).astype(np.float32)
            info = {"edge_mm": edge}
        lbox[...] = lbox * (1 - w) + val * w
        ibox_inst = inst[lsl]
        ibox_inst[(sd < 0) & inside] = k
        drawn.append(info)

    # acquisition: PSF (Gaussian, then the slice box), noise, drift, gain
    sig_xy = rng.uniform(0.35, 0.7) * fac["psf"]
    sig_z = rng.uniform(0.3, 0.6) * spacing[0] / sub
    img = _blur_and_slice(img, sig_z, sig_xy, spacing, render_spacing, sub)
    if sub == 2:
        inst = inst[1::2]
        organ = organ[1::2]
    noise_sigma = float(rng.uniform(5, 25)) * fac["noise"]
    noise = _grain(rng, shape, 0.5, 0.9, fac["grain"])
    # noisier through the body centre (longer paths), quieter in air
    sig_map = np.broadcast_to((0.75 + 0.6 * np.clip(1 - rho / R0, 0, 1)).astype(np.float32)[None], shape).copy()
    sig_map /= max(float(sig_map[organ].mean()) if organ.any() else 1.0, 1e-3)
    sig_map[img < -900] *= 0.35
    img += noise * sig_map * noise_sigma
    del noise, sig_map
    drift = _drift(rng, shape, spacing, (fz, fy, fx), 4.0, 3.0)
    gain = rng.uniform(0.99, 1.01)
    img = (img + 1000.0) * gain - 1000.0 + drift
    img = np.clip(img, -1024, 3071).astype(np.float32)

    # labels, one 26-connected component per lesion
    labels = organ.astype(np.uint8)
    table_rows = []
    objects = ndimage.find_objects(inst)
    for k, (les, info) in enumerate(zip(lesions, drawn), start=1):
        piece = _largest_piece(inst, objects, k)
        if piece is None:
            continue
        osl, m = piece
        labels[osl][m] = les.kind
        idx = np.argwhere(m) + [s.start for s in osl]
        cz, cy, cx = idx.mean(0)
        vol = m.sum() * float(np.prod(spacing))
        table_rows.append({
            "class": "tumour" if les.kind == _TUMOUR else "cyst",
            "label": les.kind,
            "centre_voxel": [round(float(cz), 2), round(float(cy), 2), round(float(cx), 2)],
            "centre_mm": [round(float((t - (n - 1) / 2) * sp), 1) for t, n, sp in zip((cz, cy, cx), shape, spacing)],
            "diameter_mm": round(float((6.0 * vol / math.pi) ** (1 / 3)), 2),
            "nominal_diameter_mm": round(2 * les.radius, 2),
            "mean_hu": round(float(img[osl][m].mean()), 2),
            **{k2: round(float(v2), 2) for k2, v2 in info.items()},
        })
    meta = {
        "generator": "ood_phantom",
        "validation_only": True,
        "seed": int(seed),
        "mode": mode,
        "fov_mm": [round(float(n * s), 1) for n, s in zip(shape, spacing)],
        "phase": round(phase, 3),
        "organ_hu": round(liver_hu, 1),  # as drawn, before texture, drift and gain
        "organ_median_hu": round(float(np.median(img[labels == 1])), 1) if (labels == 1).any() else None,
        "vessel_hu": round(vessel_hu, 1),
        "noise_sigma": round(noise_sigma, 2),
        "lesions": table_rows,
    }
    return Case(
        image=img,
        labels=labels,
        spacing=tuple(float(s) for s in spacing),
        affine=affine_from_spacing(spacing, shape),
        name=name or f"ood_{seed:05d}",
        meta=meta,
    )
