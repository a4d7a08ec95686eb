"""Out-of-family validation phantoms of the chest: lung nodules, for validation only.

The second abdominal generator (:mod:`.ood_phantom`) draws the training phantoms' two lesion kinds
in a solid organ, so it cannot show whether a model finds lesions of another organ. This module
draws chest CT: two lungs with their vessel trees, and two kinds of nodule that are both brighter
than the lung and differ from each other in density. It reuses :mod:`.ood_phantom`'s geometry
helpers and was written without reading the training generators' painting code (their docstrings
only); it must never be drawn from in training: it is reached only through
``miqsam evaluate ood-thorax:N[:SEED]``.

Construction, in (z, y, x) with z superior, y posterior and x towards the patient's left (the
body frame of :mod:`.ood_phantom`: u lateral, v posterior):

* the chest: a polar superellipse, wider than deep, tilted in-plane by up to 8 degrees; skin,
  subcutaneous fat, a muscle band thicker in front (pectoral); ribs as bone arcs in the wall at a
  20-28 mm pitch that descend anteriorly; a vertebral column with canal; the descending aorta
  left of the spine;
* the mediastinum: a fat-filled column between the lungs with the heart (a tilted ellipsoid,
  blood pool 35-60 HU, plus 60-200 HU in a contrast phase; a myocardial wall), the ascending aorta
  and the pulmonary trunk; below the diaphragm's two domes, liver (right) and spleen or stomach
  (left) at soft-tissue density;
* the lungs (label 1): what is left inside the wall, with a smoothly displaced surface;
  parenchyma -900..-820 HU, denser towards the back (+10..60 HU, gravity), fractal texture 6-18 HU;
  from each hilum a branching, tapering vessel tree (6 generations, 2.5-6 mm at the root) of the
  blood pool's density, labelled lung as in the abdominal family;
* nodules: solid (label 2): 1-8, 4-35 mm, 10-60 HU, lobulated (degree 2-4 radial harmonics,
  amplitude 0.1-0.3) and in 40 % spiculated (4-9 thin spicules, labelled with the nodule), edge
  10-90 % width 0.4-1.2 mm; ground glass (label 3): 0-5, 6-30 mm, -720..-450 HU with 15-35 HU
  texture, near-round, soft-edged (1.5-4 mm), in 30 % a solid core (part-solid, still label 3).
  Centres are drawn in lung voxels with a probe-sphere test (most of a sphere of 0.6 radius in the
  lung, so nodules may touch the pleura), separated by a gap so each is its own 26-connected
  component;
* acquisition: thin (1.25 mm) or thick (5 mm) slices at 0.75 mm in-plane, p = 1/2; thick slices are
  rendered at half the slice spacing and integrated; Gaussian PSF; in-plane correlated noise of
  10-35 HU (chest protocols are often low-dose), quieter in air; a smooth drift.

Labels: 0 background, 1 lung (with its vessels), 2 solid nodule, 3 ground-glass nodule. Everything
comes from one ``np.random.default_rng(seed)``, so a case is reproducible.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .ood_phantom import (
    _blur_and_slice,
    _direction_poly,
    _drift,
    _ellipsoid_sd,
    _fractal,
    _grain,
    _Grid,
    _inside_fraction,
    _largest_piece,
    _outline,
    _rotation,
    _segment_distance,
    _smin,
    _smooth_noise,
    _tube_coverage,
    _vessel_tree,
)
from .phantom import Case, affine_from_spacing

__all__ = ["THORAX_CLASSES", "THORAX_MODES", "make_ood_thorax"]

#: The acquisition modes: name -> voxel spacing (z, y, x) mm; each case draws one, p = 1/2.
THORAX_MODES: dict[str, tuple[float, float, float]] = {
    "thin_1.25mm": (1.25, 0.75, 0.75),
    "thick_5mm": (5.0, 0.75, 0.75),
}
_SOLID, _GGO = 2, 3
#: label value -> class name
THORAX_CLASSES = {_SOLID: "solid nodule", _GGO: "ground-glass nodule"}


def _nodule_sd(rng, kind: int, centre, r0: float, zz, uu, vv) -> np.ndarray:
    """Signed distance (mm) of a solid (lobulated, maybe spiculated) or ground-glass (near-round) nodule."""
    cz, cu, cv = (float(t) for t in centre)
    dz, du, dv = zz - cz, uu - cu, vv - cv
    rho = np.sqrt(dz * dz + du * du + dv * dv) + 1e-6
    amp = rng.uniform(0.1, 0.3) if kind == _SOLID else rng.uniform(0.03, 0.12)
    poly = _direction_poly(rng, amp)
    sd = rho - r0 * (1.0 + poly(dz / rho, du / rho, dv / rho))
    if kind == _SOLID and r0 >= 3.0 and rng.random() < 0.4:  # spicules: thin tubes out of the surface
        for _ in range(int(rng.integers(4, 10))):
            n = rng.normal(size=3)
            n /= np.linalg.norm(n)
            a = n * r0 * 0.7
            b = n * r0 * (1.0 + rng.uniform(0.4, 1.0))
            tube = _segment_distance(dz, du, dv, a, b) - rng.uniform(0.6, 1.0)
            sd = _smin(sd, tube, 0.8)
    return sd.astype(np.float32)


def make_ood_thorax(seed: int, name: str | None = None) -> Case:
    """One out-of-family chest case (see the module docstring); never use it in training.

    Returns a :class:`Case` with ``image`` float32 HU and ``labels`` uint8 (0 background, 1 lung,
    2 solid nodule, 3 ground-glass nodule) on a (z, y, x) grid of about 100-140 x 200-240 x
    200-240 mm, ``spacing`` of the drawn acquisition mode, and ``meta`` with the mode, the contrast
    phase, the lung's drawn density and one entry per nodule (class, centre voxel, diameters,
    mean HU of the final image over it).
    """
    rng = np.random.default_rng(seed)
    mode = "thin_1.25mm" if rng.random() < 0.5 else "thick_5mm"
    spacing = THORAX_MODES[mode]
    fov = (rng.uniform(100, 140), rng.uniform(200, 240), rng.uniform(200, 240))
    shape = tuple(int(round(f / s)) for f, s in zip(fov, spacing))
    sub = 2 if spacing[0] > 1.5 else 1
    render_shape = (shape[0] * sub + (sub - 1), shape[1], shape[2])
    render_spacing = (spacing[0] / sub, spacing[1], spacing[2])
    fz, fy, fx = (n * s / 2 for n, s in zip(shape, spacing))

    A = rng.uniform(0.82, 0.94) * fx  # lateral half-axis
    Bp = rng.uniform(0.55, 0.68) * fy  # posterior
    Ba = Bp * rng.uniform(0.9, 1.05)  # anterior
    theta = math.radians(rng.uniform(-8, 8))
    grid = _Grid(render_shape, render_spacing, theta, (rng.uniform(-0.05, 0.05) * fy, rng.uniform(-0.04, 0.04) * fx))
    zs = grid.axes[0]
    u, v = grid.u, grid.v
    phase = float(rng.uniform(0, 1))  # 0 non-contrast .. 1 arterial-venous
    blood_hu = float(rng.uniform(35, 60) + phase * rng.uniform(60, 200))
    img = np.full(render_shape, -1000.0, np.float32)

    # chest wall
    phi, rho, R0 = _outline(rng, u, v, A, Bp, Ba, (2.2, 3.0), (2, 3), 0.025)
    scale_z = (1.0 + rng.uniform(-0.05, 0.05) * zs / fz).astype(np.float32)
    depth = scale_z[:, None, None] * R0[None].astype(np.float32) - rho[None]
    t_fat = rng.uniform(3, 14)
    t_mus = (rng.uniform(4, 8) + rng.uniform(4, 10) * np.clip(-np.sin(phi), 0, None)).astype(np.float32)  # pectoral
    body = depth > 0
    img[body] = rng.uniform(-110, -85)
    img[body & (depth < 1.5)] = rng.uniform(10, 40)
    mus_hu = rng.uniform(40, 60)
    img[(depth > t_fat) & (depth < t_fat + t_mus[None])] = mus_hu
    wall = float(t_fat + t_mus.max())
    inner_wall = (t_fat + t_mus)[None]  # the muscle's inner surface, per direction

    # ribs: arcs in the wall just inside the muscle, descending anteriorly
    rib_band = (depth > inner_wall) & (depth < inner_wall + rng.uniform(7, 10))
    idx = np.nonzero(rib_band)
    pitch, z0, slope = rng.uniform(20, 28), rng.uniform(0, 28), rng.uniform(18, 30)
    ph = phi[idx[1], idx[2]]
    zr = zs[idx[0]] - z0 + slope * np.sin(ph)
    onrib = (np.abs(np.mod(zr, pitch) - pitch / 2) < rng.uniform(4.0, 5.5)) & (np.sin(ph) > -0.85)
    img[idx[0][onrib], idx[1][onrib], idx[2][onrib]] = np.where(
        np.abs(np.mod(zr[onrib], pitch) - pitch / 2) > 2.5, rng.uniform(500, 800), rng.uniform(150, 300))
    ribs = np.zeros(render_shape, bool)
    ribs[idx[0][onrib], idx[1][onrib], idx[2][onrib]] = True
    del idx, zr, ph, rib_band

    # spine and descending aorta (extruded along z)
    # the canal just in front of the back's muscle, the paraspinal muscles beside it in the wall
    vb_r = rng.uniform(12, 16)
    v_c = Bp - t_fat - rng.uniform(16, 22)
    v_s = v_c - 6.0 - vb_r
    vb = ((u / (vb_r * 1.05)) ** 2 + ((v - v_s) / vb_r) ** 2) < 1
    canal = (u ** 2 + (v - v_c) ** 2) < 6.0 ** 2
    arch = ((u ** 2 + (v - v_c) ** 2) < 10.0 ** 2) & ~canal
    para = (((np.abs(u) - 20.0) / 15) ** 2 + ((v - v_c - 4.0) / 10) ** 2) < 1
    img[:, para] = mus_hu
    img[:, vb] = rng.uniform(180, 320)
    img[:, arch] = rng.uniform(500, 800)
    img[:, canal] = rng.uniform(5, 20)
    ao_c, ao_r = (vb_r * 0.9 + rng.uniform(2, 6), v_s - vb_r * 0.4), rng.uniform(10, 14)
    aorta = ((u - ao_c[0]) ** 2 + (v - ao_c[1]) ** 2) < ao_r ** 2
    img[:, aorta] = blood_hu
    solid = np.zeros(render_shape, bool)  # voxels the lungs must not take
    solid[:, vb | canal | arch | para | aorta] = True
    solid |= ribs

    # mediastinum: a fat column between the lungs, with heart and great vessels
    med_u, med_v = rng.uniform(-6, 12), -0.2 * Ba + rng.uniform(-8, 8)
    med_a = rng.uniform(0.2, 0.28) * A
    med_b = abs(v_s - vb_r - med_v) + rng.uniform(0, 8)
    widen = (1.0 + 0.35 * np.clip(-zs / fz, 0, None)).astype(np.float32)  # wider towards the heart
    med = (((u[None] - med_u) / (med_a * widen[:, None, None])) ** 2 + ((v[None] - med_v) / med_b) ** 2) < 1
    med &= depth > wall
    img[med] = rng.uniform(-100, -70)
    solid |= med
    heart_c = np.array([-0.45 * fz + rng.uniform(-10, 10), med_u + rng.uniform(10, 25), med_v - rng.uniform(0, 10)])
    heart_ax = np.array([rng.uniform(45, 60), rng.uniform(45, 60), rng.uniform(38, 50)])
    got = grid.box(heart_c, (heart_ax.max() + 2, heart_ax.max() + 2))
    if got is not None:
        hsl, hz, hu_, hv = got
        sd = _ellipsoid_sd(hz, hu_, hv, heart_c, heart_ax, _rotation(rng, 20))
        heart = (sd < 0) & (depth[hsl] > wall)
        hbox = img[hsl]
        hbox[heart] = mus_hu + rng.uniform(-5, 10)  # myocardium
        hbox[heart & (sd < -rng.uniform(6, 10))] = blood_hu  # blood pool
        solid[hsl] |= heart
    for du_, dv_, r_ in ((rng.uniform(-5, 5), rng.uniform(-5, 8), rng.uniform(13, 17)),  # ascending aorta
                         (rng.uniform(12, 22), rng.uniform(-12, -4), rng.uniform(11, 15))):  # pulmonary trunk
        vessel = (((u - med_u - du_) ** 2 + (v - med_v - dv_) ** 2) < r_ ** 2)[None] & (zs > rng.uniform(-0.1, 0.3) * fz)[:, None, None]
        img[vessel & med] = blood_hu

    # diaphragm domes: below them liver (right, u < 0) and spleen / stomach (left)
    dome = np.where(u < med_u, -fz * rng.uniform(0.3, 0.7), -fz * rng.uniform(0.5, 1.0)) \
        + rng.uniform(25, 45) * (1.0 - (((np.abs(u - med_u) - 0.45 * A) / (0.55 * A)) ** 2) - (v / Bp) ** 2)
    below = zs[:, None, None] < dome[None].astype(np.float32)
    abdomen = below & (depth > wall) & ~solid
    img[abdomen & (u < med_u)[None]] = rng.uniform(50, 65) + phase * rng.uniform(20, 50)
    img[abdomen & (u >= med_u)[None]] = rng.uniform(40, 55) + phase * rng.uniform(10, 40)
    solid |= below

    # lungs: everything else inside the wall, with a smoothly displaced surface
    gap_pl = rng.uniform(1.0, 3.0)  # pleura and extrapleural fat
    disp = 2.0 * _smooth_noise(rng, render_shape, render_spacing, 25.0)
    lung = (depth - inner_wall - gap_pl + disp > 0) & ~solid
    lung = ndimage.binary_opening(lung, np.ones((1, 3, 3), bool))
    del disp
    lung_hu = float(rng.uniform(-900, -820))
    grav = float(rng.uniform(10, 60))
    tex = _fractal(rng, render_shape, render_spacing, cells=(20.0, 8.0, 3.0)) * rng.uniform(6, 18)
    par = lung_hu + grav * np.clip(v / Bp, -1, 1)[None] + tex
    del tex

    # vessel trees from the two hila
    vw = np.zeros(render_shape, np.float32)
    full = tuple(slice(0, n) for n in render_shape)
    pick = np.flatnonzero(lung)
    for side in (-1.0, 1.0):
        own = pick[(u.ravel()[pick % (render_shape[1] * render_shape[2])] - med_u) * side > 0]
        if len(own) < 50:
            continue
        sel = np.unravel_index(own[rng.integers(len(own), size=300)], render_shape)
        targets = np.stack([zs[sel[0]], u[sel[1], sel[2]], v[sel[1], sel[2]]], 1)
        hilum = np.array([rng.uniform(-0.15, 0.15) * fz, med_u + side * (med_a + 4), med_v + rng.uniform(0, 12)])
        segs = _vessel_tree(rng, hilum, targets, rng.uniform(2.5, 6.0), rng.uniform(22, 32), 6)
        _tube_coverage(vw, segs, grid, full, zs, u, v)
    vw *= lung
    par = par * (1 - vw) + blood_hu * vw
    del vw
    img[lung] = par[lung]
    del par

    # nodules: probe-sphere placement in the lungs
    gap = 2.2 * max(spacing) + 1.0
    sizes = [(_SOLID, math.exp(rng.uniform(math.log(4), math.log(35)))) for _ in range(int(rng.integers(1, 9)))]
    sizes += [(_GGO, math.exp(rng.uniform(math.log(6), math.log(30)))) for _ in range(int(rng.integers(0, 6)))]
    sizes.sort(key=lambda t: -t[1])
    cand = np.flatnonzero(lung)
    probe = rng.normal(size=(26, 3))
    probe /= np.linalg.norm(probe, axis=1, keepdims=True)
    placed: list[tuple[int, np.ndarray, float, float]] = []  # kind, centre, radius, extent
    for kind, diam in sizes:
        r = diam / 2
        for attempt in range(60):
            if attempt and attempt % 20 == 0:
                r *= 0.75
            if r < 2.0 or len(cand) == 0:
                break
            extent = r * (2.1 if kind == _SOLID else 1.15)  # spicules reach out to 2 radii
            zi, yi, xi = np.unravel_index(cand[rng.integers(len(cand))], render_shape)
            centre = np.array([zs[zi], u[yi, xi], v[yi, xi]])
            if any(np.linalg.norm(centre - c) < extent + e + gap for _, c, _, e in placed):
                continue
            inside = _inside_fraction(grid, centre, 0.6 * r, probe, lung)
            if inside is None or inside < 0.75:
                continue
            placed.append((kind, centre, r, extent))
            break
    if not any(k == _SOLID for k, *_ in placed) and len(cand):  # at least one solid nodule
        for i in rng.permutation(len(cand))[:500]:
            zi, yi, xi = np.unravel_index(cand[i], render_shape)
            centre = np.array([zs[zi], u[yi, xi], v[yi, xi]])
            if all(np.linalg.norm(centre - c) >= 3.5 + e + gap for _, c, _, e in placed):
                placed.append((_SOLID, centre, 2.5, 3.5))
                break

    inst = np.zeros(render_shape, np.int16)
    drawn = []
    inside_body = depth > wall * 0.5
    for k, (kind, centre, r, extent) in enumerate(placed, start=1):
        edge = rng.uniform(0.4, 1.2) if kind == _SOLID else rng.uniform(1.5, 4.0)
        edge = min(edge, 0.6 * r)
        lsl, lz_, lu, lv = grid.box(centre, extent + edge + 1)  # the centre is a lung voxel: never empty
        sd = _nodule_sd(rng, kind, centre, r, lz_, lu, lv)
        allowed = (lung[lsl] | (~solid[lsl] & inside_body[lsl])) & ~ribs[lsl]  # may touch the pleura
        w = (1.0 / (1.0 + np.exp(np.clip(sd * (4.4 / edge), -30, 30)))) * allowed
        lbox = img[lsl]
        if kind == _SOLID:
            hu = float(rng.uniform(10, 60))
            val = hu + rng.uniform(3, 8) * _smooth_noise(rng, sd.shape, render_spacing, 3.0)
            info = {"hu": hu, "edge_mm": edge}
        else:
            hu = float(rng.uniform(-720, -450))
            val = hu + rng.uniform(15, 35) * _fractal(rng, sd.shape, render_spacing, cells=(8.0, 3.0))
            core = rng.random() < 0.3 and r >= 5.0
            if core:  # part-solid
                cw = 1.0 / (1.0 + np.exp(np.clip((sd + r * rng.uniform(0.5, 0.7)) * 2.0, -30, 30)))
                val = val * (1 - cw) + rng.uniform(0, 40) * cw
            info = {"hu": hu, "edge_mm": edge, "solid_core": bool(core)}
        lbox[...] = lbox * (1 - w) + val * w
        ibox = inst[lsl]
        ibox[(sd < 0) & allowed] = k
        drawn.append(info)

    # acquisition
    sig_xy = rng.uniform(0.35, 0.8)
    sig_z = rng.uniform(0.3, 0.6) * spacing[0] / sub
    img = _blur_and_slice(img, sig_z, sig_xy, spacing, render_spacing, sub)
    if sub == 2:
        inst = inst[1::2]
        lung = lung[1::2]
    noise_sigma = float(rng.uniform(10, 35))
    noise = _grain(rng, shape, 0.5, 1.0)
    quiet = np.where(img < -950, np.float32(0.4), np.float32(1.0))
    img += noise * quiet * noise_sigma
    del noise, quiet
    img = np.clip(img + _drift(rng, shape, spacing, (fz, fy, fx), 5.0, 4.0), -1024, 3071).astype(np.float32)

    labels = lung.astype(np.uint8)
    rows = []
    objects = ndimage.find_objects(inst)
    for k, ((kind, _c, r, _e), info) in enumerate(zip(placed, drawn), start=1):
        piece = _largest_piece(inst, objects, k)
        if piece is None:
            continue
        osl, m = piece
        labels[osl][m] = kind
        idx = np.argwhere(m) + [s.start for s in osl]
        cz, cy, cx = idx.mean(0)
        vol = m.sum() * float(np.prod(spacing))
        rows.append({
            "class": THORAX_CLASSES[kind],
            "label": kind,
            "centre_voxel": [round(float(cz), 2), round(float(cy), 2), round(float(cx), 2)],
            "diameter_mm": round(float((6.0 * vol / math.pi) ** (1 / 3)), 2),
            "nominal_diameter_mm": round(2 * r, 2),
            "mean_hu": round(float(img[osl][m].mean()), 2),
            **{k2: (round(float(v2), 2) if not isinstance(v2, bool) else v2) for k2, v2 in info.items()},
        })
    meta = {
        "generator": "ood_thorax",
        "validation_only": True,
        "seed": int(seed),
        "mode": mode,
        "fov_mm": [round(float(n * s), 1) for n, s in zip(shape, spacing)],
        "phase": round(phase, 3),
        "lung_hu": round(lung_hu, 1),
        "blood_hu": round(blood_hu, 1),
        "noise_sigma": round(noise_sigma, 2),
        "lesions": rows,
    }
    return Case(
        image=img,
        labels=labels,
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        affine=affine_from_spacing(spacing, shape),
        name=name or f"ood_thorax_{seed:05d}",
        meta=meta,
    )
