"""The phantom's anatomy: one function per structure, painted into a tissue map and an HU image.

Each ``paint_*`` function draws its parameters from the anatomy stream and paints into a
:class:`Canvas`; :func:`paint_abdomen` calls them in a fixed order. The order matters twice: a
structure is painted only where an earlier one left the right tissue (the organ only in visceral
fat or bowel, the gallbladder only in the organ), and every function consumes the shared random
stream, so reordering them, or drawing one number more or less, changes every later patient
(tests/test_phantom_golden.py pins the result).

Geometry is in canonical mm, (z, y, x): z increases superiorly, y posteriorly, x towards the
patient's left.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .geometry import _curve, _ellipsoid_q, _Grid, _paint_spheres_chain, _rotation, _smooth_noise

__all__ = [
    "Attenuation",
    "Canvas",
    "Organ",
    "Tissue",
    "Trunk",
    "draw_attenuation",
    "paint_abdomen",
    "paint_body",
    "paint_bowel",
    "paint_gallbladder",
    "paint_great_vessels",
    "paint_kidneys",
    "paint_organ",
    "paint_organ_vessels",
    "paint_ribs",
    "paint_spine",
    "paint_spleen",
    "paint_stomach",
]


class Tissue:
    """Codes of the internal tissue map (never exported as labels)."""

    AIR, SUBCUTANEOUS_FAT, MUSCLE, VISCERAL_FAT, BONE, SOFT, BOWEL, ORGAN, GALLBLADDER = range(9)
    #: the bowel loop being painted (so that it may overlap itself but not earlier loops)
    CURRENT_LOOP = 9


@dataclass
class Canvas:
    """The volume being painted: HU image and tissue map, both (z, y, x) on ``grid``."""

    grid: _Grid
    image: np.ndarray  # float32 HU
    tissue: np.ndarray  # uint8 Tissue codes


@dataclass(frozen=True)
class Attenuation:
    """One patient's tissue values (HU) at its contrast phase (0 non-contrast .. 1 portal venous)."""

    phase: float
    organ_hu: float
    blood_hu: float
    fat_hu: float
    muscle_hu: float
    cortical_hu: float
    cancellous_hu: float


@dataclass(frozen=True)
class Trunk:
    """The body outline (canonical mm): centre ``cy``, semi-axes, fat and muscle wall thickness."""

    cy: float
    ax0: float
    ay0: float
    fat_mm: float
    muscle_mm: float

    @property
    def amean(self) -> float:
        return 0.5 * (self.ax0 + self.ay0)

    @property
    def r_fat2(self) -> float:
        """Squared normalised radius of the inner edge of the subcutaneous fat."""
        return (1 - self.fat_mm / self.amean) ** 2

    @property
    def r_muscle2(self) -> float:
        """Squared normalised radius of the inner edge of the muscle wall."""
        return (1 - (self.fat_mm + self.muscle_mm) / self.amean) ** 2

    @property
    def spine_y(self) -> float:
        """y (mm) of the vertebral body centre."""
        return max(self.cy + self.ay0 - self.fat_mm - 36.0, self.cy + 0.25 * self.ay0)


@dataclass(frozen=True)
class Organ:
    """The target organ's main lobe (centre, semi-axes, mm) and its bounding box (None: off-grid)."""

    centre: np.ndarray
    semi: tuple[float, float, float]
    box: tuple[slice, ...] | None


def draw_attenuation(rng: np.random.Generator) -> Attenuation:
    phase = float(rng.uniform(0.0, 1.0))
    organ_hu = float(np.clip(42.0 + 85.0 * phase + rng.normal(0, 4), 40.0, 130.0))
    blood_hu = 40.0 + 150.0 * phase
    fat_hu = float(rng.uniform(-110, -90))
    muscle_hu = float(rng.uniform(40, 60))
    cortical_hu = float(rng.uniform(700, 1100))
    cancellous_hu = float(rng.uniform(150, 300))
    return Attenuation(phase, organ_hu, blood_hu, fat_hu, muscle_hu, cortical_hu, cancellous_hu)


def paint_body(canvas: Canvas, rng: np.random.Generator, att: Attenuation) -> Trunk:
    """Elliptic body (flatter posteriorly): subcutaneous fat, muscle wall, visceral fat inside."""
    img, tis = canvas.image, canvas.tissue
    z_ax, y_ax, x_ax = canvas.grid.axes
    cy = float(rng.uniform(0, 8))
    ax0, ay0 = float(rng.uniform(80, 87)), float(rng.uniform(66, 76))
    zs = 1.0 + 0.03 * np.sin(2 * np.pi * z_ax / 150.0 + rng.uniform(0, 2 * np.pi))
    ry = ((y_ax[None, :] - cy) / (ay0 * zs[:, None])) ** 2  # (nz, ny)
    rx = (x_ax[None, :] / (ax0 * zs[:, None])) ** 2  # (nz, nx)
    ry = np.where(y_ax[None, :] > cy, ry ** 1.25, ry).astype(np.float32)
    rho2 = ry[:, :, None] + rx[:, None, :]
    trunk = Trunk(cy, ax0, ay0, float(rng.uniform(4, 14)), float(rng.uniform(5, 8)))
    body = rho2 < 1.0
    img[body] = att.fat_hu
    tis[body] = Tissue.SUBCUTANEOUS_FAT
    m = rho2 < trunk.r_fat2
    img[m] = att.muscle_hu
    tis[m] = Tissue.MUSCLE
    m = rho2 < trunk.r_muscle2
    img[m] = att.fat_hu + 10.0
    tis[m] = Tissue.VISCERAL_FAT
    return trunk


def paint_spine(canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk) -> None:
    """Vertebrae extruded along z with periodic discs; canal, arch, processes; paraspinal, psoas."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    z_ax = grid.axes[0]
    y_vb = trunk.spine_y
    period = float(rng.uniform(24, 30))
    zphase = float(rng.uniform(0, period))
    disc = ((z_ax + zphase) % period) < 6.0  # (nz,)
    sl = grid.box((0, y_vb + 20, 0), (1e6, 50, 40))
    if sl is None:
        return
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
    sub_i[:, mus2d] = att.muscle_hu + 5
    sub_t[:, mus2d] = Tissue.MUSCLE
    bone2d = vb_out | arch | spinous
    sub_i[:, bone2d] = att.cortical_hu
    sub_t[:, bone2d] = Tissue.BONE
    sub_i[:, vb_in] = att.cancellous_hu
    nd = (((z_ax + zphase) % period) > 9.0) & (((z_ax + zphase) % period) < 17.0)
    tr = np.zeros(sub_i.shape, bool)
    tr[nd] = transverse & (sub_t[nd] != Tissue.AIR)
    sub_i[tr] = att.cortical_hu * 0.7
    sub_t[tr] = Tissue.BONE
    dmask = disc[:, None, None] & vb_out[None]
    sub_i[dmask] = float(rng.uniform(70, 95))
    sub_i[:, canal] = float(rng.uniform(5, 15))
    sub_t[:, canal] = Tissue.SOFT


def paint_great_vessels(
    canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk
) -> None:
    """Aorta (left of the midline) and IVC (right) in front of the spine, extruded along z."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    y_vb, phase = trunk.spine_y, att.phase
    for (yy, xx, ry_, rx_, hu) in (
        (y_vb - 18.0, float(rng.uniform(5, 10)), 8.0, 8.0, att.blood_hu + 40 * phase),
        (y_vb - 15.0, float(rng.uniform(-20, -16)), 7.0, 9.5, att.blood_hu),
    ):
        sl = grid.box((0, yy, xx), (1e6, ry_, rx_))
        if sl is None:
            continue
        _, dy, dx = grid.coords(sl, (0, yy, xx))
        m2 = (dy[0] / ry_) ** 2 + (dx[0] / rx_) ** 2 < 1.0
        img[sl][:, m2] = hu
        tis[sl][:, m2] = Tissue.SOFT


def paint_ribs(canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk) -> None:
    """Six ribs: bright arcs within the muscle wall, descending anteriorly."""
    img, tis = canvas.image, canvas.tissue
    z_ax, y_ax, x_ax = canvas.grid.axes
    amean = trunk.amean
    rib_r = math.sqrt(trunk.r_fat2) - 0.5 * trunk.muscle_mm / amean  # within the muscle wall
    yy2 = (y_ax[:, None] - trunk.cy) / trunk.ay0
    xx2 = x_ax[None, :] / trunk.ax0
    rr2 = np.sqrt(yy2 ** 2 + xx2 ** 2)
    band = np.abs(rr2 - rib_r) < 6.0 / amean
    by, bx = np.nonzero(band)
    if not by.size:
        return
    phi = np.arctan2(np.abs(xx2[0, bx]), yy2[by, 0])  # 0 posterior .. pi anterior
    drr = (rr2[by, bx] - rib_r) * amean  # mm
    keep = (phi > 0.35) & (phi < 2.3)
    by, bx, phi, drr = by[keep], bx[keep], phi[keep], drr[keep]
    z_top = float(rng.uniform(45, 70))
    rib_gap = float(rng.uniform(18, 24))
    slope = float(rng.uniform(24, 34))  # mm of descent per radian
    for j in range(6):
        zc = z_top - j * rib_gap - slope * phi  # (P,)
        dz = (z_ax[:, None] - zc[None, :]) / 4.0
        q = dz * dz + (drr / 3.5)[None, :] ** 2  # (nz, P)
        iz, ip = np.nonzero(q < 1.0)
        if iz.size == 0:
            continue
        vals = np.where(q[iz, ip] > 0.45, att.cortical_hu * 0.8, att.cancellous_hu + 50)
        img[iz, by[ip], bx[ip]] = vals
        tis[iz, by[ip], bx[ip]] = Tissue.BONE


def paint_kidneys(canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk) -> None:
    """Two kidneys beside the spine: enhancing cortex, medulla, a fatty sinus facing medially."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    phase = att.phase
    zr = float(rng.uniform(-40, -15))
    for side, zc in ((-1, zr), (1, zr + float(rng.uniform(5, 20)))):
        c = (zc, trunk.spine_y - 2.0 + float(rng.uniform(-3, 3)), side * float(rng.uniform(40, 46)))
        semi = (float(rng.uniform(24, 30)), float(rng.uniform(11, 14)), float(rng.uniform(13, 16)))
        rot = _rotation(rng, 0.35)
        h = max(semi) + 1
        sl = grid.box(c, (h, h, h))
        if sl is None:
            continue
        d = grid.coords(sl, c)
        q = _ellipsoid_q(d, semi, rot)
        out = (q < 1.0) & (tis[sl] == Tissue.VISCERAL_FAT)
        inner = q < 0.68
        sinus = inner & (d[2] * side < -semi[2] * 0.3)
        sub_i, sub_t = img[sl], tis[sl]
        sub_i[out] = 35 + 150 * phase
        sub_i[out & inner] = 35 + 60 * phase
        sub_i[out & sinus] = att.fat_hu + 20
        sub_t[out] = Tissue.SOFT


def paint_spleen(canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk) -> None:
    """A tilted ellipsoid posterolaterally on the patient's left."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    c = (float(rng.uniform(15, 35)), trunk.cy + 8.0, 56.0)
    semi = (float(rng.uniform(26, 34)), float(rng.uniform(26, 32)), float(rng.uniform(10, 13)))
    rot = np.array(
        [[1, 0, 0], [0, math.cos(0.6), -math.sin(0.6)], [0, math.sin(0.6), math.cos(0.6)]]
    )
    sl = grid.box(c, (max(semi) + 1,) * 3)
    if sl is None:
        return
    q = _ellipsoid_q(grid.coords(sl, c), semi, rot)
    m = (q < 1.0) & (tis[sl] == Tissue.VISCERAL_FAT)
    img[sl][m] = 45 + 70 * att.phase
    tis[sl][m] = Tissue.SOFT


def paint_stomach(canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk) -> None:
    """Wall and content with an air-fluid level; sometimes positive oral contrast."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    c = (float(rng.uniform(25, 45)), trunk.cy - 22.0, float(rng.uniform(22, 34)))
    semi = (float(rng.uniform(20, 28)), float(rng.uniform(16, 22)), float(rng.uniform(22, 30)))
    sl = grid.box(c, (max(semi) + 1,) * 3)
    if sl is None:
        return
    d = grid.coords(sl, c)
    q = _ellipsoid_q(d, semi, _rotation(rng, 0.3))
    wall = 4.0 / min(semi)
    m = (q < 1.0) & (tis[sl] == Tissue.VISCERAL_FAT)
    content = m & (q < 1.0 - wall)
    fluid_hu = float(rng.uniform(220, 320)) if rng.random() < 0.15 else float(rng.uniform(5, 25))
    level = float(rng.uniform(-0.6, 0.3)) * semi[1]
    gas = content & (d[1] < level)
    sub_i, sub_t = img[sl], tis[sl]
    sub_i[m] = 40 + 50 * att.phase
    sub_i[content] = fluid_hu
    sub_i[gas] = -1000.0
    sub_t[m] = Tissue.BOWEL


def paint_bowel(canvas: Canvas, rng: np.random.Generator, att: Attenuation, trunk: Trunk) -> None:
    """7-13 loops: curved tubes with a wall and fluid, gas above a fluid level, or faeces."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    cy, phase = trunk.cy, att.phase
    n_loops = int(rng.integers(7, 14))
    for _ in range(n_loops):
        start = np.array(
            [rng.uniform(-60, 20), cy + rng.uniform(-45, 5), rng.uniform(-20, 60)], dtype=float
        )
        r = float(rng.uniform(6, 13))
        pts = _curve(rng, start, rng.normal(size=3), float(rng.uniform(30, 80)), r * 0.6)
        kind = rng.choice(3, p=[0.45, 0.3, 0.25])  # fluid, gas, faeces/collapsed
        inner_hu = (
            float(rng.uniform(0, 30)) if kind == 0 else (-1000.0 if kind == 1 else float(rng.uniform(-60, 40)))
        )
        wall_hu = 40 + 60 * phase
        gas_fluid_hu = float(rng.uniform(0, 20))
        for p in pts:
            s2 = grid.box(p, (r, r, r))
            if s2 is None:
                continue
            dz, dy, dx = grid.coords(s2, p)
            dd = dz * dz + dy * dy + dx * dx
            sub_t = tis[s2]
            free = sub_t == Tissue.VISCERAL_FAT
            mine = free | (sub_t == Tissue.CURRENT_LOOP)
            outer = (dd < r * r) & free
            lumen = (dd < (r - 2.5) ** 2) & mine
            sub_i = img[s2]
            sub_i[outer] = wall_hu
            if kind == 1:  # gas rises anteriorly (small y) above a fluid level
                sub_i[lumen & (dy >= 0.3 * r)] = gas_fluid_hu
                sub_i[lumen & (dy < 0.3 * r)] = -1000.0
            else:
                sub_i[lumen] = inner_hu
            sub_t[outer] = Tissue.CURRENT_LOOP
        lo_ = pts.min(0) - r
        hi_ = pts.max(0) + r
        s3 = grid.box((lo_ + hi_) / 2, (hi_ - lo_) / 2)
        if s3 is not None:
            sub_t = tis[s3]
            sub_t[sub_t == Tissue.CURRENT_LOOP] = Tissue.BOWEL


def paint_organ(
    canvas: Canvas,
    rng: np.random.Generator,
    texture_rng: np.random.Generator,
    att: Attenuation,
    trunk: Trunk,
) -> Organ:
    """The target organ (liver-like): two lobes with a lobulated surface and two-scale texture.

    Painted over visceral fat and bowel; its shape noise and texture come from ``texture_rng``.
    """
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    step = np.asarray(grid.step)
    ra, r_tex = rng, texture_rng
    lc = np.array([float(ra.uniform(0, 14)), trunk.cy - 8.0 + float(ra.uniform(-4, 4)), float(ra.uniform(-30, -24))])
    lsemi = (float(ra.uniform(44, 52)), float(ra.uniform(40, 46)), float(ra.uniform(38, 44)))
    lrot = _rotation(ra, 0.25)
    llc = lc + np.array([float(ra.uniform(6, 16)), -float(ra.uniform(18, 26)), float(ra.uniform(30, 40))])
    llsemi = (float(ra.uniform(20, 28)), float(ra.uniform(16, 22)), float(ra.uniform(26, 34)))
    llrot = _rotation(ra, 0.3)
    lo = np.minimum(lc - max(lsemi), llc - max(llsemi)) - 4
    hi = np.maximum(lc + max(lsemi), llc + max(llsemi)) + 4
    lsl = grid.box((lo + hi) / 2, (hi - lo) / 2)
    if lsl is not None:
        bshape = tuple(s.stop - s.start for s in lsl)
        q = np.minimum(
            _ellipsoid_q(grid.coords(lsl, lc), lsemi, lrot),
            _ellipsoid_q(grid.coords(lsl, llc), llsemi, llrot),
        )
        q += 0.07 * _smooth_noise(r_tex, bshape, 18.0 / step)
        sub_t = tis[lsl]
        liver = (q < 1.0) & ((sub_t == Tissue.VISCERAL_FAT) | (sub_t == Tissue.BOWEL))
        tex = _smooth_noise(r_tex, bshape, 3.0 / step) * np.float32(ra.uniform(2.0, 5.0))
        tex += _smooth_noise(r_tex, bshape, 25.0 / step) * np.float32(ra.uniform(2.0, 6.0))
        tex += np.float32(att.organ_hu)
        img[lsl][liver] = tex[liver]
        sub_t[liver] = Tissue.ORGAN
    return Organ(centre=lc, semi=lsemi, box=lsl)


def paint_gallbladder(canvas: Canvas, rng: np.random.Generator, organ: Organ) -> None:
    """In 80 % of patients: water-dense, carved out of the organ (a distractor for cyst prompts)."""
    img, tis, grid = canvas.image, canvas.tissue, canvas.grid
    if rng.random() >= 0.8:
        return
    lc, lsemi = organ.centre, organ.semi
    c = lc + np.array([-lsemi[0] * 0.55, -lsemi[1] * 0.35, lsemi[2] * 0.45])
    semi = (float(rng.uniform(22, 32)), float(rng.uniform(9, 14)), float(rng.uniform(9, 14)))
    sl = grid.box(c, (max(semi) + 1,) * 3)
    if sl is None:
        return
    q = _ellipsoid_q(grid.coords(sl, c), semi, _rotation(rng, 0.5))
    m = (q < 1.0) & (tis[sl] == Tissue.ORGAN)
    img[sl][m] = float(rng.uniform(0, 25))
    tis[sl][m] = Tissue.GALLBLADDER


def paint_organ_vessels(
    canvas: Canvas, rng: np.random.Generator, att: Attenuation, organ: Organ
) -> float:
    """Two branching trees inside the organ (portal from the hilum, hepatic veins to the IVC).

    They stay labelled organ. Usually brighter than the parenchyma; darker in some non-contrast
    scans. Returns the vessel HU.
    """
    ra, lc, lsemi = rng, organ.centre, organ.semi
    if ra.random() < 0.12 and att.phase < 0.2:
        vessel_hu = att.organ_hu - float(ra.uniform(5, 15))
    else:
        vessel_hu = att.organ_hu + float(ra.uniform(20, 70))
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
            _paint_spheres_chain(
                canvas.image, canvas.tissue, canvas.grid, pts, radii, vessel_hu, Tissue.ORGAN
            )
            n_seg += 1
            if depth < 2 and r * 0.7 > 1.2:
                tip = pts[-1]
                tdir = pts[-1] - pts[-2]
                for _ in range(2):
                    stack.append((tip, tdir + ra.normal(0, 0.8, 3) * np.linalg.norm(tdir), r * 0.7, depth + 1))
    return vessel_hu


def paint_abdomen(
    canvas: Canvas, rng: np.random.Generator, texture_rng: np.random.Generator
) -> tuple[Attenuation, Organ, float]:
    """Paint the whole abdomen in its fixed order; returns the tissue HU, the organ, the vessel HU."""
    att = draw_attenuation(rng)
    trunk = paint_body(canvas, rng, att)
    paint_spine(canvas, rng, att, trunk)
    paint_great_vessels(canvas, rng, att, trunk)
    paint_ribs(canvas, rng, att, trunk)
    paint_kidneys(canvas, rng, att, trunk)
    paint_spleen(canvas, rng, att, trunk)
    paint_stomach(canvas, rng, att, trunk)
    paint_bowel(canvas, rng, att, trunk)
    organ = paint_organ(canvas, rng, texture_rng, att, trunk)
    paint_gallbladder(canvas, rng, organ)
    vessel_hu = paint_organ_vessels(canvas, rng, att, organ)
    return att, organ, vessel_hu
