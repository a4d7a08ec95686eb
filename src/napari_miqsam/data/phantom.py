"""Synthetic abdominal CT phantoms with a labelled target organ, tumours and cysts.

The phantom is the project's stand-in for LiTS/KiTS when no real data is on disk: it is used to
train the shipped default weights, by the tests, by the napari sample data and by
``miqsam evaluate phantom:N:SEED``. It is built to look like a contrast-phase abdominal CT slab:

* air (-1000 HU) around an elliptic body; subcutaneous fat (~-100 HU); an abdominal-wall muscle
  ring (~50 HU); visceral fat (~-90 HU) inside;
* a vertebra column posteriorly (cortical bone 700-1100 HU, cancellous 150-300 HU, discs, canal,
  posterior arch, spinous process), paraspinal and psoas muscles, ribs (bright arcs descending
  anteriorly), aorta and IVC;
* kidneys (cortex / medulla), spleen, stomach (air-fluid level, sometimes oral contrast), bowel
  loops (wall, fluid, gas pockets), a gallbladder (a water-dense distractor outside the organ);
* the target organ (liver-like, lobulated, textured; 40-130 HU from non-contrast to portal venous
  phase) with a tree of tubular vessels (labelled organ) and 0-8 tumours (hypodense by 15-50 HU,
  lobulated, soft-edged, heterogeneous, sometimes a bright rim or a necrotic core) and 0-8 cysts
  (0-20 HU, round, sharp-edged); lesion diameters 4-60 mm, log-uniform; every lesion is its own
  26-connected component;
* partial-volume blur (anisotropic, from the spacing), correlated Gaussian noise (sigma 8-25 HU
  after blur), a smooth global intensity drift.

Labels follow KiTS: 0 background, 1 organ, 2 tumour, 3 cyst.

Everything is vectorised numpy/scipy and drawn from ``np.random.default_rng`` streams spawned
from the seed, so a case is reproducible; the anatomy is defined in "canonical millimetres" (a
field of view of 120 x 180 x 180 mm) and mapped onto the requested grid, so the same seed gives
the same patient at any spacing. Coordinates are (z, y, x): z increases superiorly, y posteriorly,
x towards the patient's left (radiological display: the organ shows on the image's left).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError

__all__ = [
    "BACKGROUND",
    "CLASS_NAMES",
    "CYST",
    "Case",
    "FOV_MM",
    "ORGAN",
    "SMALL_SHAPE",
    "TUMOUR",
    "affine_from_spacing",
    "make_phantom",
    "sample_spacing",
    "write_phantoms",
]

BACKGROUND, ORGAN, TUMOUR, CYST = 0, 1, 2, 3
CLASS_NAMES = {BACKGROUND: "background", ORGAN: "organ", TUMOUR: "tumour", CYST: "cyst"}

#: Physical field of view (z, y, x) in mm of a default case.
FOV_MM: tuple[float, float, float] = (120.0, 180.0, 180.0)
#: A small shape for tests and the napari sample data (fast: well under 0.3 s).
SMALL_SHAPE: tuple[int, int, int] = (32, 64, 64)

# tissue codes of the internal painting map (not exported as labels)
_AIR, _SFAT, _MUSCLE, _VFAT, _BONE, _SOFT, _BOWEL, _LIVER, _GB, _CUR = range(10)


@dataclass
class Case:
    """One labelled volume.

    Attributes:
        image: float32 (z, y, x) intensities (Hounsfield units for CT).
        labels: uint8 (z, y, x) classes: 0 background, 1 organ, 2 tumour, 3 cyst (KiTS).
        spacing: voxel size (z, y, x) in mm.
        affine: 4x4 NIfTI affine in nibabel's axis order, i.e. mapping the voxel index
            (x, y, z) = reversed array index to world mm (what ``nibabel`` writes).
        name: case identifier.
        meta: free-form provenance (phantom parameters, lesion table, source paths, ...).
    """

    image: np.ndarray
    labels: np.ndarray
    spacing: tuple[float, float, float]
    affine: np.ndarray
    name: str = "case"
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(int(n) for n in self.image.shape)  # type: ignore[return-value]


def affine_from_spacing(
    spacing: Sequence[float], shape: Sequence[int] | None = None
) -> np.ndarray:
    """NIfTI affine (nibabel axis order) for a (z, y, x) array with ``spacing`` (z, y, x) mm.

    The array is stored by nibabel as (x, y, z). x and y are flipped (LPS-like, as DICOM-derived
    CT usually is) so that x index increasing = patient left and y index increasing = posterior,
    matching the phantom's anatomy; z increases superiorly. The volume centre is at world 0.
    """
    sz, sy, sx = (float(s) for s in spacing)
    aff = np.diag([-sx, -sy, sz, 1.0])
    if shape is not None:
        centre = (np.array(shape[::-1], dtype=float) - 1.0) / 2.0
        aff[:3, 3] = -aff[:3, :3] @ centre
    return aff


def sample_spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    """Draw a clinical CT spacing (z, y, x) in mm.

    Slice spacing: log-normal around 1.8 mm clipped to [0.8, 5.0] (mostly 1-3 mm, sometimes thick
    5 mm slices); in-plane: uniform in [0.6, 1.0] mm, isotropic in-plane.
    """
    if rng.random() < 0.1:
        z = float(rng.uniform(4.0, 5.0))
    else:
        z = float(np.clip(np.exp(rng.normal(math.log(1.8), 0.42)), 0.8, 5.0))
    xy = float(rng.uniform(0.6, 1.0))
    return (round(z, 4), round(xy, 4), round(xy, 4))


# ----------------------------------------------------------------------------------------------
# helpers


class _Grid:
    """Voxel grid in canonical mm (centred at 0); boxes and broadcast coordinates."""

    def __init__(self, shape: tuple[int, int, int], spacing: tuple[float, float, float], k: float):
        self.shape = shape
        self.k = float(k)
        self.step = tuple(s / k for s in spacing)  # canonical mm per voxel
        self.axes = [
            ((np.arange(n, dtype=np.float32) - (n - 1) / 2.0) * np.float32(st))
            for n, st in zip(shape, self.step)
        ]

    def box(self, centre: Sequence[float], half: Sequence[float]) -> tuple[slice, ...] | None:
        """Index slices of the voxels within ``centre +- half`` (mm); None if empty."""
        out = []
        for c, h, n, st in zip(centre, half, self.shape, self.step):
            i0 = max(0, int(math.ceil((c - h) / st + (n - 1) / 2.0)))
            i1 = min(n, int(math.floor((c + h) / st + (n - 1) / 2.0)) + 1)
            if i1 <= i0:
                return None
            out.append(slice(i0, i1))
        return tuple(out)

    def coords(self, sl: tuple[slice, ...], centre: Sequence[float] = (0.0, 0.0, 0.0)):
        """Broadcastable (dz, dy, dx) offsets (mm) of the box voxels from ``centre``."""
        z = self.axes[0][sl[0]] - np.float32(centre[0])
        y = self.axes[1][sl[1]] - np.float32(centre[1])
        x = self.axes[2][sl[2]] - np.float32(centre[2])
        return z[:, None, None], y[None, :, None], x[None, None, :]

    def index_of(self, p: Sequence[float]) -> tuple[int, int, int]:
        return tuple(  # type: ignore[return-value]
            int(np.clip(round(c / st + (n - 1) / 2.0), 0, n - 1))
            for c, st, n in zip(p, self.step, self.shape)
        )


def _rotation(rng: np.random.Generator, max_angle: float = math.pi) -> np.ndarray:
    """Random rotation matrix (rows = rotated axes) with angle up to ``max_angle`` radians."""
    axis = rng.normal(size=3)
    axis /= np.linalg.norm(axis) + 1e-12
    a = rng.uniform(-max_angle, max_angle)
    kx = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + math.sin(a) * kx + (1 - math.cos(a)) * (kx @ kx)


def _ellipsoid_q(d: tuple, semi: Sequence[float], rot: np.ndarray | None = None) -> np.ndarray:
    """Normalised radius sqrt(sum (proj_j / a_j)^2) of offsets ``d`` (broadcast (dz, dy, dx))."""
    dz, dy, dx = d
    if rot is None:
        q2 = (dz / semi[0]) ** 2 + (dy / semi[1]) ** 2 + (dx / semi[2]) ** 2
    else:
        q2 = None
        for j in range(3):
            e = rot[j]
            p = (dz * np.float32(e[0]) + dy * np.float32(e[1]) + dx * np.float32(e[2])) / np.float32(
                semi[j]
            )
            q2 = p * p if q2 is None else q2 + p * p
    return np.sqrt(q2, dtype=np.float32)


def _smooth_noise(
    rng: np.random.Generator, shape: Sequence[int], cell: Sequence[float]
) -> np.ndarray:
    """Smooth random field (float32, std ~1) with correlation length ~``cell`` voxels per axis.

    A coarse Gaussian grid is smoothed and linearly upsampled axis by axis, which costs a few
    passes over the output instead of a full-resolution Gaussian filter.
    """
    cell = [max(1.0, float(c)) for c in cell]
    cshape = [int((n - 1) / c + 1) + 3 for n, c in zip(shape, cell)]
    g = rng.standard_normal(cshape, dtype=np.float32)
    g = ndimage.gaussian_filter(g, 0.6, mode="wrap")
    g /= max(float(g.std()), 1e-6)
    for axis, (n, c) in enumerate(zip(shape, cell)):
        pos = np.arange(n, dtype=np.float32) / np.float32(c) + np.float32(rng.uniform(0, 1))
        i0 = pos.astype(np.intp)
        w = (pos - i0).astype(np.float32)
        bshape = [1] * g.ndim
        bshape[axis] = n
        w = w.reshape(bshape)
        a = np.take(g, i0, axis=axis)
        b = np.take(g, i0 + 1, axis=axis)
        a += (b - a) * w
        g = a
    return g


def _paint_spheres_chain(
    img: np.ndarray,
    tis: np.ndarray,
    grid: _Grid,
    points: np.ndarray,
    radii: np.ndarray,
    value: float,
    inside: int,
) -> None:
    """Paint a tube given as a chain of spheres (mm centres/radii), only where ``tis == inside``."""
    for p, r in zip(points, radii):
        sl = grid.box(p, (r, r, r))
        if sl is None:
            continue
        dz, dy, dx = grid.coords(sl, p)
        m = (dz * dz + dy * dy + dx * dx) <= np.float32(r * r)
        m &= tis[sl] == inside
        img[sl][m] = value


def _curve(
    rng: np.random.Generator, start: np.ndarray, direction: np.ndarray, length: float, step: float
) -> np.ndarray:
    """A gently curving poly-line (n, 3) from ``start`` along ``direction`` (mm)."""
    n = max(2, int(length / step) + 1)
    d = direction / (np.linalg.norm(direction) + 1e-9)
    pts = [start]
    for _ in range(n - 1):
        d = d + rng.normal(0, 0.12, 3)
        d /= np.linalg.norm(d) + 1e-9
        pts.append(pts[-1] + d * step)
    return np.asarray(pts)


def _capsule_dist(d: tuple, seg: np.ndarray) -> np.ndarray:
    """Distance (mm) of box offsets ``d`` (relative to seg start) to the segment start->end."""
    dz, dy, dx = d
    v = seg.astype(np.float32)
    vv = float(v @ v) + 1e-9
    t = (dz * v[0] + dy * v[1] + dx * v[2]) / np.float32(vv)
    np.clip(t, 0.0, 1.0, out=t)
    ez = dz - t * v[0]
    ey = dy - t * v[1]
    ex = dx - t * v[2]
    return np.sqrt(ez * ez + ey * ey + ex * ex)


def _gauss_noise_gain(sigma: float, truncate: float = 4.0) -> float:
    """Factor by which a discrete 1D Gaussian filter scales the std of white noise."""
    if sigma <= 0:
        return 1.0
    r = int(truncate * sigma + 0.5)
    x = np.arange(-r, r + 1, dtype=float)
    w = np.exp(-0.5 * (x / sigma) ** 2)
    w /= w.sum()
    return float(np.sqrt((w * w).sum()))


# ----------------------------------------------------------------------------------------------
# the generator


def _check_triplet(value, name: str, kind) -> tuple:
    try:
        t = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be three numbers (z, y, x), got {value!r}") from exc
    if len(t) != 3 or not all(v > 0 for v in t):
        raise InputError(f"{name} must be three positive numbers (z, y, x), got {value!r}")
    return t


def make_phantom(
    seed: int,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    *,
    name: str | None = None,
) -> Case:
    """Generate one synthetic abdominal CT case.

    Args:
        seed: any int; the case is a deterministic function of (seed, shape, spacing); the
            anatomy (in canonical mm) depends on the seed only.
        shape: (z, y, x) voxels; default: ``round(FOV_MM / spacing)``.
        spacing: (z, y, x) mm; default: drawn by :func:`sample_spacing`.
        name: case name (default ``phantom_<seed>``).

    Returns:
        A :class:`Case` with ``image`` float32 HU, ``labels`` uint8 (0/1/2/3), ``spacing``,
        ``affine`` and ``meta`` (phase, organ HU, noise sigma, the lesion table with each
        lesion's class, centre voxel, diameter (mm) and noise-free HU).

    The anatomy always fills the field of view: a grid smaller than 120 x 180 x 180 mm holds a
    proportionally smaller patient (``meta['scale']``), so tiny test volumes still show every
    structure.
    """
    seq = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF)
    r_geo, r_anat, r_les, r_tex, r_noise = (np.random.default_rng(s) for s in seq.spawn(5))
    if spacing is None:
        spacing = sample_spacing(r_geo)
    spacing = _check_triplet(spacing, "spacing", float)
    if shape is None:
        shape = tuple(max(8, int(round(f / s))) for f, s in zip(FOV_MM, spacing))
    shape = _check_triplet(shape, "shape", int)
    if min(shape) < 4:
        raise InputError(f"shape must be at least 4 voxels per axis, got {shape}")
    extent = [n * s for n, s in zip(shape, spacing)]
    k = min(e / f for e, f in zip(extent, FOV_MM))
    grid = _Grid(shape, spacing, k)  # type: ignore[arg-type]
    z_ax, y_ax, x_ax = grid.axes
    step = np.asarray(grid.step)

    ra = r_anat
    phase = float(ra.uniform(0.0, 1.0))  # 0 non-contrast .. 1 portal venous
    organ_hu = float(np.clip(42.0 + 85.0 * phase + ra.normal(0, 4), 40.0, 130.0))
    blood_hu = 40.0 + 150.0 * phase
    fat_hu = float(ra.uniform(-110, -90))
    muscle_hu = float(ra.uniform(40, 60))
    cortical_hu = float(ra.uniform(700, 1100))
    cancellous_hu = float(ra.uniform(150, 300))

    img = np.empty(shape, np.float32)
    img.fill(-1000.0)
    tis = np.zeros(shape, np.uint8)

    # --- body: subcutaneous fat, muscle wall, visceral fat -------------------------------------
    cy = float(ra.uniform(0, 8))
    ax0, ay0 = float(ra.uniform(80, 87)), float(ra.uniform(66, 76))
    zs = 1.0 + 0.03 * np.sin(2 * np.pi * z_ax / 150.0 + ra.uniform(0, 2 * np.pi))
    ry = ((y_ax[None, :] - cy) / (ay0 * zs[:, None])) ** 2  # (nz, ny)
    rx = (x_ax[None, :] / (ax0 * zs[:, None])) ** 2  # (nz, nx)
    # posterior is flatter than anterior
    ry = np.where(y_ax[None, :] > cy, ry ** 1.25, ry).astype(np.float32)
    rho2 = ry[:, :, None] + rx[:, None, :]
    tf = float(ra.uniform(4, 14))
    tm = float(ra.uniform(5, 8))
    amean = 0.5 * (ax0 + ay0)
    r_fat2 = (1 - tf / amean) ** 2
    r_mus2 = (1 - (tf + tm) / amean) ** 2
    body = rho2 < 1.0
    img[body] = fat_hu
    tis[body] = _SFAT
    m = rho2 < r_fat2
    img[m] = muscle_hu
    tis[m] = _MUSCLE
    m = rho2 < r_mus2
    img[m] = fat_hu + 10.0
    tis[m] = _VFAT
    del m, body, rho2

    # --- spine (extruded along z, discs periodic) ----------------------------------------------
    y_vb = max(cy + ay0 - tf - 36.0, cy + 0.25 * ay0)
    period = float(ra.uniform(24, 30))
    zphase = float(ra.uniform(0, period))
    disc = ((z_ax + zphase) % period) < 6.0  # (nz,)
    sl = grid.box((0, y_vb + 20, 0), (1e6, 50, 40))
    if sl is not None:
        _, dy, dx = grid.coords(sl, (0, y_vb, 0))
        dy2, dx2 = dy[0], dx[0]  # (ny,1), (1,nx)
        vb_q = (dy2 / 10.0) ** 2 + (dx2 / 12.0) ** 2
        vb_out = vb_q < 1.0
        vb_in = (dy2 / 8.2) ** 2 + (dx2 / 10.2) ** 2 < 1.0
        cdy = dy2 - 16.0
        canal = cdy ** 2 + dx2 ** 2 < 6.0 ** 2
        arch = (cdy ** 2 + dx2 ** 2 < 9.5 ** 2) & ~canal & (cdy > -4)
        spinous = (np.abs(dx2) < 2.5) & (cdy > 7) & (cdy < 22)
        transverse = (np.abs(dx2) < 21) & (np.abs(cdy + 1.0) < 2.2) & (np.abs(dx2) > 8)
        # paraspinal muscles and psoas (2D, extruded)
        para = ((cdy - 10) / 10.0) ** 2 + ((np.abs(dx2) - 16) / 12.0) ** 2 < 1.0
        psoas = (dy2 / 9.0) ** 2 + ((np.abs(dx2) - 22) / 8.0) ** 2 < 1.0
        sub_i = img[sl]
        sub_t = tis[sl]
        mus2d = (para | psoas) & ~vb_out
        sub_i[:, mus2d] = muscle_hu + 5
        sub_t[:, mus2d] = _MUSCLE
        bone2d = vb_out | arch | spinous
        sub_i[:, bone2d] = cortical_hu
        sub_t[:, bone2d] = _BONE
        sub_i[:, vb_in] = cancellous_hu
        nd = (((z_ax + zphase) % period) > 9.0) & (((z_ax + zphase) % period) < 17.0)
        tr = np.zeros(sub_i.shape, bool)
        tr[nd] = transverse & (sub_t[nd] != _AIR)
        sub_i[tr] = cortical_hu * 0.7
        sub_t[tr] = _BONE
        dmask = disc[:, None, None] & vb_out[None]
        sub_i[dmask] = float(ra.uniform(70, 95))
        sub_i[:, canal] = float(ra.uniform(5, 15))
        sub_t[:, canal] = _SOFT

    # --- aorta and IVC ----------------------------------------------------------------------------
    for (yy, xx, ry_, rx_, hu) in (
        (y_vb - 18.0, float(ra.uniform(5, 10)), 8.0, 8.0, blood_hu + 40 * phase),
        (y_vb - 15.0, float(ra.uniform(-20, -16)), 7.0, 9.5, blood_hu),
    ):
        sl = grid.box((0, yy, xx), (1e6, ry_, rx_))
        if sl is None:
            continue
        _, dy, dx = grid.coords(sl, (0, yy, xx))
        m2 = (dy[0] / ry_) ** 2 + (dx[0] / rx_) ** 2 < 1.0
        img[sl][:, m2] = hu
        tis[sl][:, m2] = _SOFT

    # --- ribs: bright arcs descending anteriorly ---------------------------------------------------
    rib_r = math.sqrt(r_fat2) - 0.5 * tm / amean  # within the muscle wall
    yy2 = (y_ax[:, None] - cy) / ay0
    xx2 = x_ax[None, :] / ax0
    rr2 = np.sqrt(yy2 ** 2 + xx2 ** 2)
    band = np.abs(rr2 - rib_r) < 6.0 / amean
    by, bx = np.nonzero(band)
    if by.size:
        phi = np.arctan2(np.abs(xx2[0, bx]), yy2[by, 0])  # 0 posterior .. pi anterior
        drr = (rr2[by, bx] - rib_r) * amean  # mm
        keep = (phi > 0.35) & (phi < 2.3)
        by, bx, phi, drr = by[keep], bx[keep], phi[keep], drr[keep]
        z_top = float(ra.uniform(45, 70))
        rib_gap = float(ra.uniform(18, 24))
        slope = float(ra.uniform(24, 34))  # mm of descent per radian
        for j in range(6):
            zc = z_top - j * rib_gap - slope * phi  # (P,)
            dz = (z_ax[:, None] - zc[None, :]) / 4.0
            q = dz * dz + (drr / 3.5)[None, :] ** 2  # (nz, P)
            iz, ip = np.nonzero(q < 1.0)
            if iz.size == 0:
                continue
            vals = np.where(q[iz, ip] > 0.45, cortical_hu * 0.8, cancellous_hu + 50)
            img[iz, by[ip], bx[ip]] = vals
            tis[iz, by[ip], bx[ip]] = _BONE

    # --- kidneys ---------------------------------------------------------------------------------
    zr = float(ra.uniform(-40, -15))
    for side, zc in ((-1, zr), (1, zr + float(ra.uniform(5, 20)))):
        c = (zc, y_vb - 2.0 + float(ra.uniform(-3, 3)), side * float(ra.uniform(40, 46)))
        semi = (float(ra.uniform(24, 30)), float(ra.uniform(11, 14)), float(ra.uniform(13, 16)))
        rot = _rotation(ra, 0.35)
        h = max(semi) + 1
        sl = grid.box(c, (h, h, h))
        if sl is None:
            continue
        d = grid.coords(sl, c)
        q = _ellipsoid_q(d, semi, rot)
        out = (q < 1.0) & (tis[sl] == _VFAT)
        inner = q < 0.68
        sinus = inner & (d[2] * side < -semi[2] * 0.3)
        sub_i, sub_t = img[sl], tis[sl]
        sub_i[out] = 35 + 150 * phase
        sub_i[out & inner] = 35 + 60 * phase
        sub_i[out & sinus] = fat_hu + 20
        sub_t[out] = _SOFT

    # --- spleen ----------------------------------------------------------------------------------
    c = (float(ra.uniform(15, 35)), cy + 8.0, 56.0)
    semi = (float(ra.uniform(26, 34)), float(ra.uniform(26, 32)), float(ra.uniform(10, 13)))
    rot = np.array(
        [[1, 0, 0], [0, math.cos(0.6), -math.sin(0.6)], [0, math.sin(0.6), math.cos(0.6)]]
    )
    sl = grid.box(c, (max(semi) + 1,) * 3)
    if sl is not None:
        q = _ellipsoid_q(grid.coords(sl, c), semi, rot)
        m = (q < 1.0) & (tis[sl] == _VFAT)
        img[sl][m] = 45 + 70 * phase
        tis[sl][m] = _SOFT

    # --- stomach (air-fluid level, sometimes positive oral contrast) -------------------------------
    c = (float(ra.uniform(25, 45)), cy - 22.0, float(ra.uniform(22, 34)))
    semi = (float(ra.uniform(20, 28)), float(ra.uniform(16, 22)), float(ra.uniform(22, 30)))
    sl = grid.box(c, (max(semi) + 1,) * 3)
    if sl is not None:
        d = grid.coords(sl, c)
        q = _ellipsoid_q(d, semi, _rotation(ra, 0.3))
        wall = 4.0 / min(semi)
        m = (q < 1.0) & (tis[sl] == _VFAT)
        content = m & (q < 1.0 - wall)
        fluid_hu = float(ra.uniform(220, 320)) if ra.random() < 0.15 else float(ra.uniform(5, 25))
        level = float(ra.uniform(-0.6, 0.3)) * semi[1]
        gas = content & (d[1] < level)
        sub_i, sub_t = img[sl], tis[sl]
        sub_i[m] = 40 + 50 * phase
        sub_i[content] = fluid_hu
        sub_i[gas] = -1000.0
        sub_t[m] = _BOWEL

    # --- bowel loops: curved tubes with wall, fluid / gas / faeces ---------------------------------
    n_loops = int(ra.integers(7, 14))
    for _ in range(n_loops):
        start = np.array(
            [ra.uniform(-60, 20), cy + ra.uniform(-45, 5), ra.uniform(-20, 60)], dtype=float
        )
        r = float(ra.uniform(6, 13))
        pts = _curve(ra, start, ra.normal(size=3), float(ra.uniform(30, 80)), r * 0.6)
        kind = ra.choice(3, p=[0.45, 0.3, 0.25])  # fluid, gas, faeces/collapsed
        inner_hu = (
            float(ra.uniform(0, 30)) if kind == 0 else (-1000.0 if kind == 1 else float(ra.uniform(-60, 40)))
        )
        wall_hu = 40 + 60 * phase
        gas_fluid_hu = float(ra.uniform(0, 20))
        for p in pts:
            s2 = grid.box(p, (r, r, r))
            if s2 is None:
                continue
            dz, dy, dx = grid.coords(s2, p)
            dd = dz * dz + dy * dy + dx * dx
            sub_t = tis[s2]
            free = sub_t == _VFAT
            mine = free | (sub_t == _CUR)
            outer = (dd < r * r) & free
            lumen = (dd < (r - 2.5) ** 2) & mine
            sub_i = img[s2]
            sub_i[outer] = wall_hu
            if kind == 1:  # gas rises anteriorly (small y) above a fluid level
                sub_i[lumen & (dy >= 0.3 * r)] = gas_fluid_hu
                sub_i[lumen & (dy < 0.3 * r)] = -1000.0
            else:
                sub_i[lumen] = inner_hu
            sub_t[outer] = _CUR
        lo_ = pts.min(0) - r
        hi_ = pts.max(0) + r
        s3 = grid.box((lo_ + hi_) / 2, (hi_ - lo_) / 2)
        if s3 is not None:
            sub_t = tis[s3]
            sub_t[sub_t == _CUR] = _BOWEL

    # --- target organ (liver-like) ------------------------------------------------------------------
    lc = np.array([float(ra.uniform(0, 14)), cy - 8.0 + float(ra.uniform(-4, 4)), float(ra.uniform(-30, -24))])
    lsemi = (float(ra.uniform(44, 52)), float(ra.uniform(40, 46)), float(ra.uniform(38, 44)))
    lrot = _rotation(ra, 0.25)
    llc = lc + np.array([float(ra.uniform(6, 16)), -float(ra.uniform(18, 26)), float(ra.uniform(30, 40))])
    llsemi = (float(ra.uniform(20, 28)), float(ra.uniform(16, 22)), float(ra.uniform(26, 34)))
    llrot = _rotation(ra, 0.3)
    lo = np.minimum(lc - max(lsemi), llc - max(llsemi)) - 4
    hi = np.maximum(lc + max(lsemi), llc + max(llsemi)) + 4
    lsl = grid.box((lo + hi) / 2, (hi - lo) / 2)
    organ_box = lsl
    if lsl is not None:
        bshape = tuple(s.stop - s.start for s in lsl)
        q = np.minimum(
            _ellipsoid_q(grid.coords(lsl, lc), lsemi, lrot),
            _ellipsoid_q(grid.coords(lsl, llc), llsemi, llrot),
        )
        q += 0.07 * _smooth_noise(r_tex, bshape, 18.0 / step)
        sub_t = tis[lsl]
        liver = (q < 1.0) & ((sub_t == _VFAT) | (sub_t == _BOWEL))
        tex = _smooth_noise(r_tex, bshape, 3.0 / step) * np.float32(ra.uniform(2.0, 5.0))
        tex += _smooth_noise(r_tex, bshape, 25.0 / step) * np.float32(ra.uniform(2.0, 6.0))
        tex += np.float32(organ_hu)
        img[lsl][liver] = tex[liver]
        sub_t[liver] = _LIVER
        del q, tex, liver

    # gallbladder: water-dense, outside the organ label (a distractor for cyst prompts)
    if ra.random() < 0.8:
        c = lc + np.array([-lsemi[0] * 0.55, -lsemi[1] * 0.35, lsemi[2] * 0.45])
        semi = (float(ra.uniform(22, 32)), float(ra.uniform(9, 14)), float(ra.uniform(9, 14)))
        sl = grid.box(c, (max(semi) + 1,) * 3)
        if sl is not None:
            q = _ellipsoid_q(grid.coords(sl, c), semi, _rotation(ra, 0.5))
            m = (q < 1.0) & (tis[sl] == _LIVER)
            img[sl][m] = float(ra.uniform(0, 25))
            tis[sl][m] = _GB

    # vessels inside the organ: portal tree from the hilum, hepatic veins to the IVC
    if ra.random() < 0.12 and phase < 0.2:
        vessel_hu = organ_hu - float(ra.uniform(5, 15))
    else:
        vessel_hu = organ_hu + float(ra.uniform(20, 70))
    roots = [
        (lc + np.array([-8.0, 8.0, 22.0]), float(ra.uniform(5.0, 7.0))),
        (lc + np.array([lsemi[0] * 0.6, 14.0, 14.0]), float(ra.uniform(4.0, 6.0))),
    ]
    for root, r0 in roots:
        stack = [(root, ra.normal(size=3) * np.array([0.5, 1, 1]) + np.array([0, 0, -1.0]), r0, 0)]
        n_seg = 0
        while stack and n_seg < 12:
            p0, dvec, r, depth = stack.pop()
            length = float(ra.uniform(22, 40)) * (0.75 ** depth)
            pts = _curve(ra, p0, dvec, length, max(1.0, r * 0.5))
            radii = np.linspace(r, r * 0.75, len(pts))
            _paint_spheres_chain(img, tis, grid, pts, radii, vessel_hu, _LIVER)
            n_seg += 1
            if depth < 2 and r * 0.7 > 1.2:
                tip = pts[-1]
                tdir = pts[-1] - pts[-2]
                for _ in range(2):
                    stack.append((tip, tdir + ra.normal(0, 0.8, 3) * np.linalg.norm(tdir), r * 0.7, depth + 1))

    labels = np.zeros(shape, np.uint8)
    if organ_box is not None:
        labels[organ_box][tis[organ_box] == _LIVER] = ORGAN

    # --- lesions ----------------------------------------------------------------------------------
    lesions = _place_lesions(r_les, img, labels, tis, grid, organ_box, organ_hu, spacing, k)

    # --- global drift, noise, partial-volume blur ----------------------------------------------------
    rn = r_noise
    zn = z_ax / 60.0
    yn = y_ax / 90.0
    xn = x_ax / 90.0
    drift_zy = (rn.uniform(-6, 6) * zn[:, None] + rn.uniform(-6, 6) * yn[None, :]
                + rn.uniform(-8, 2) * (yn[None, :] ** 2)).astype(np.float32)
    drift_x = (rn.uniform(-6, 6) * xn + rn.uniform(-8, 2) * xn ** 2).astype(np.float32)
    sigma_mm_xy = float(rn.uniform(0.35, 0.6))
    sig = (0.42, sigma_mm_xy / spacing[1], sigma_mm_xy / spacing[2])
    noise_sigma = float(rn.uniform(8.0, 25.0))
    gain = _gauss_noise_gain(sig[0]) * _gauss_noise_gain(sig[1]) * _gauss_noise_gain(sig[2])
    noise = rn.standard_normal(shape, dtype=np.float32)
    noise *= np.float32(noise_sigma / gain)
    img += noise
    del noise
    img += drift_zy[:, :, None]
    img += drift_x[None, None, :]
    for axis in range(3):
        ndimage.gaussian_filter1d(img, sig[axis], axis=axis, output=img, mode="nearest", truncate=4.0)
    np.clip(img, -1024.0, 3071.0, out=img)

    meta = {
        "generator": "napari_miqsam.data.phantom",
        "seed": int(seed),
        "scale": float(k),
        "phase": phase,
        "organ_hu": organ_hu,
        "vessel_hu": float(vessel_hu),
        "noise_sigma": noise_sigma,
        "blur_sigma_vox": tuple(float(s) for s in sig),
        "lesions": lesions,
        "n_tumours": sum(1 for les in lesions if les["class"] == TUMOUR),
        "n_cysts": sum(1 for les in lesions if les["class"] == CYST),
    }
    return Case(
        image=img,
        labels=labels,
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        affine=affine_from_spacing(spacing, shape),
        name=name or f"phantom_{int(seed):05d}",
        meta=meta,
    )


def _place_lesions(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    tis: np.ndarray,
    grid: _Grid,
    organ_box: tuple[slice, ...] | None,
    organ_hu: float,
    spacing: tuple[float, float, float],
    k: float,
) -> list[dict]:
    """Place and paint tumours and cysts inside the organ; returns the lesion table."""
    if organ_box is None:
        return []
    step = np.asarray(grid.step)
    # coarse inside-distance of the organ (~3 mm cells) for rejection sampling of centres
    stride = np.maximum(1, np.round(3.0 / step)).astype(int)
    organ = labels[organ_box] == ORGAN
    coarse = organ[:: stride[0], :: stride[1], :: stride[2]]
    if not coarse.any():
        return []
    cstep = stride * step
    dist = ndimage.distance_transform_edt(coarse, sampling=cstep)
    origin = np.array([grid.axes[a][organ_box[a].start] for a in range(3)], dtype=float)
    # a lesion must be its own 26-connected component: keep more than one voxel diagonal apart
    gap = float(np.sqrt((step ** 2).sum())) * 1.5 + 1.0
    margin = float(np.sqrt((cstep ** 2).sum())) * 0.5 + 2.0
    d_min = max(4.0, 2.2 * float(step.max()))
    d_max = 60.0

    def n_of() -> int:
        return 0 if rng.random() < 0.05 else int(rng.integers(1, 9))

    n_t, n_c = n_of(), n_of()
    plan = [(TUMOUR, math.exp(rng.uniform(math.log(d_min), math.log(max(d_max, d_min))))) for _ in range(n_t)]
    plan += [(CYST, math.exp(rng.uniform(math.log(d_min), math.log(max(d_max * 0.75, d_min))))) for _ in range(n_c)]
    # the largest of each class first (so each class present gets a place), then by size
    plan.sort(key=lambda t: -t[1])
    firsts = []
    for cls in (TUMOUR, CYST):
        for i, (c, _) in enumerate(plan):
            if c == cls:
                firsts.append(plan.pop(i))
                break
    plan = firsts + plan

    placed_c: list[np.ndarray] = []
    placed_r: list[float] = []
    table: list[dict] = []
    cand_all = np.argwhere(dist > margin + d_min * 0.3)
    for cls, diam in plan:
        shape_params = _lesion_shape(rng, cls, diam / 2.0)
        ok = False
        for attempt in range(6):
            rb = shape_params["bound"]
            # the centre is well inside; a big lesion may be clipped by the organ surface
            need = rb * (0.65 if cls == TUMOUR else 0.8) + margin
            cidx = np.argwhere(dist > need) if attempt else cand_all[dist[tuple(cand_all.T)] > need]
            if len(cidx) == 0:
                shape_params = _lesion_shape(rng, cls, max(d_min / 2, shape_params["r0"] * 0.7))
                continue
            tries = rng.integers(0, len(cidx), size=min(24, len(cidx)))
            for t in tries:
                c = origin + cidx[t] * cstep + rng.uniform(-0.5, 0.5, 3) * cstep * 0.5
                if placed_c:
                    dd = np.sqrt(((np.asarray(placed_c) - c) ** 2).sum(1))
                    if np.any(dd < np.asarray(placed_r) + rb + gap):
                        continue
                ok = True
                break
            if ok:
                break
            shape_params = _lesion_shape(rng, cls, max(d_min / 2, shape_params["r0"] * 0.7))
        if not ok:
            continue
        info = _paint_lesion(rng, img, labels, grid, c, cls, shape_params, organ_hu)
        if info is None:
            continue
        placed_c.append(c)
        placed_r.append(shape_params["bound"])
        table.append(info)
    return table


def _lesion_shape(rng: np.random.Generator, cls: int, r0: float) -> dict:
    """Random lesion geometry of nominal radius ``r0`` (canonical mm)."""
    if cls == CYST:
        semi = [r0 * rng.uniform(0.9, 1.1) for _ in range(3)]
        lobes = [(np.zeros(3), semi, _rotation(rng))]
        pert = 0.0
    else:
        semi = [r0 * rng.uniform(0.8, 1.15) for _ in range(3)]
        lobes = [(np.zeros(3), semi, _rotation(rng))]
        for _ in range(int(rng.integers(0, 4))):
            v = rng.normal(size=3)
            v *= rng.uniform(0.35, 0.65) * r0 / (np.linalg.norm(v) + 1e-9)
            lobes.append((v, [r0 * rng.uniform(0.4, 0.7) for _ in range(3)], _rotation(rng)))
        pert = float(rng.uniform(0.04, 0.12))
    bound = max(float(np.linalg.norm(c)) + max(s) for c, s, _ in lobes) * (1.0 + pert) + 0.5
    return {"r0": float(r0), "lobes": lobes, "pert": pert, "bound": bound}


def _paint_lesion(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    grid: _Grid,
    c: np.ndarray,
    cls: int,
    shp: dict,
    organ_hu: float,
) -> dict | None:
    rb = shp["bound"]
    soft_mm = 0.0 if cls == CYST else float(rng.uniform(1.0, 3.0))
    sl = grid.box(c, (rb + soft_mm,) * 3)
    if sl is None:
        return None
    d = grid.coords(sl, c)
    q = None
    for lc, semi, rot in shp["lobes"]:
        dd = (d[0] - np.float32(lc[0]), d[1] - np.float32(lc[1]), d[2] - np.float32(lc[2]))
        qi = _ellipsoid_q(dd, semi, rot)
        q = qi if q is None else np.minimum(q, qi)
    bshape = q.shape
    step = np.asarray(grid.step)
    r0 = shp["r0"]
    if shp["pert"] > 0:
        n = np.clip(_smooth_noise(rng, bshape, np.full(3, max(2.0, r0 * 0.6)) / step), -1, 1)
        q = q + np.float32(shp["pert"]) * n
    organ = labels[sl] == ORGAN
    mask = (q < 1.0) & organ
    if not mask.any():
        return None
    # keep one 26-connected component (rasterisation of thin necks can split a lobulated lesion)
    lab, nlab = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if nlab > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(sizes.argmax())
    sub = img[sl]
    if cls == CYST:
        hu = float(rng.uniform(0.0, 20.0))
        sub[mask] = hu
        detail = {}
    else:
        contrast = float(rng.uniform(15.0, 50.0))
        hu = organ_hu - contrast
        les = np.full(bshape, hu, np.float32)
        les += np.float32(rng.uniform(3.0, 8.0)) * _smooth_noise(rng, bshape, np.full(3, 2.5) / step)
        necrotic = r0 > 10 and rng.random() < 0.45
        rim = rng.random() < 0.3
        if necrotic:
            depth = float(rng.uniform(10, 25))
            les -= np.float32(depth) * np.clip((0.55 - q) / 0.25, 0, 1)
        if rim:
            boost = float(rng.uniform(12, 35))
            les += np.float32(boost) * np.clip(1 - np.abs(q - 0.85) / 0.12, 0, 1)
        # soft edge: blend weight 0.5 at the label boundary
        e = np.float32(max(0.05, soft_mm / max(r0, 1e-3)))
        w = np.clip((1.0 + e - q) / (2 * e), 0.0, 1.0)
        w = w * w * (3 - 2 * w)
        w *= organ
        w[mask] = np.maximum(w[mask], 0.5)
        sub += w * (les - sub)
        detail = {"contrast_hu": contrast, "necrotic": bool(necrotic), "rim": bool(rim)}
    labels[sl][mask] = cls
    centre_vox = grid.index_of(c)
    n_vox = int(mask.sum())
    spacing = tuple(s * grid.k for s in grid.step)
    return {
        "class": int(cls),
        "centre_vox": tuple(int(v) for v in centre_vox),
        "nominal_diameter_mm": float(2 * r0 * grid.k),
        "diameter_mm": float(2.0 * (3.0 * n_vox * float(np.prod(spacing)) / (4 * math.pi)) ** (1 / 3)),
        "hu": float(hu),
        "n_voxels": n_vox,
        **detail,
    }


# ----------------------------------------------------------------------------------------------


def write_phantoms(
    out: Path | str,
    cases: int,
    seed: int,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> list[Path]:
    """Write ``cases`` phantoms in the KiTS21 layout; case ``i`` uses seed ``seed + i``.

    Files: ``out/case_XXXXX/imaging.nii.gz`` (int16 HU) and ``segmentation.nii.gz`` (uint8),
    spacing and affine in the headers. Returns the case folders.
    """
    from tqdm import tqdm

    from .io import write_image, write_labels

    out = Path(out)
    if cases < 0:
        raise InputError(f"cases must be >= 0, got {cases}")
    out.mkdir(parents=True, exist_ok=True)
    folders: list[Path] = []
    for i in tqdm(range(int(cases)), desc="phantoms", unit="case", disable=not progress):
        case = make_phantom(seed + i, shape=shape, spacing=spacing)
        folder = out / f"case_{i:05d}"
        folder.mkdir(exist_ok=True)
        hu = np.round(case.image).astype(np.int16)
        write_image(folder / "imaging.nii.gz", hu, spacing=case.spacing, affine=case.affine,
                    overwrite=overwrite)
        write_labels(folder / "segmentation.nii.gz", case.labels, spacing=case.spacing,
                     affine=case.affine, overwrite=overwrite)
        folders.append(folder)
    return folders
