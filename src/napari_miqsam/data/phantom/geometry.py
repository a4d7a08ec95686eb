"""Geometry of the phantom generators: the voxel grid in canonical mm, shapes, curves, the affine.

Shared by :mod:`.anatomy`, :mod:`.lesions` and the randomized training generator
(``data/randomized.py``). Offsets are broadcast (dz, dy, dx) arrays in canonical mm.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from ...errors import InputError

__all__ = ["affine_from_spacing"]


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


def _check_triplet(value, name: str, kind) -> tuple:
    """``value`` as three positive ``kind`` numbers (z, y, x), else an InputError naming ``name``."""
    try:
        t = tuple(kind(v) for v in value)
    except (TypeError, ValueError) as exc:
        raise InputError(f"{name} must be three numbers (z, y, x), got {value!r}") from exc
    if len(t) != 3 or not all(v > 0 for v in t):
        raise InputError(f"{name} must be three positive numbers (z, y, x), got {value!r}")
    return t


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
        """The voxel index (z, y, x) nearest to the point ``p`` (mm), clipped to the grid."""
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


def lobed_q(d: tuple, lobes) -> np.ndarray:
    """Normalised radius of a union of ellipsoids: the smallest :func:`_ellipsoid_q` over ``lobes``,
    each ``(centre offset (z, y, x), semi-axes, rotation)``, of offsets ``d`` (broadcast (dz, dy, dx))."""
    q = None
    for lc, semi, rot in lobes:
        dd = (d[0] - np.float32(lc[0]), d[1] - np.float32(lc[1]), d[2] - np.float32(lc[2]))
        qi = _ellipsoid_q(dd, semi, rot)
        q = qi if q is None else np.minimum(q, qi)
    return q


def _log_uniform(rng: np.random.Generator, lo: float, hi: float) -> float:
    """One draw whose logarithm is uniform on [log lo, log hi] (sizes, scales, contrasts)."""
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


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
