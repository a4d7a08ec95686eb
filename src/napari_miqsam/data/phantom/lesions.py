"""Tumours and cysts: how many, how big, where in the organ, and how each one looks.

Tumours: hypodense by 15-50 HU, lobulated, soft-edged, heterogeneous, sometimes a necrotic core or
a bright rim. Cysts: 0-20 HU, round, sharp-edged. Diameters 4-60 mm (cysts up to 45 mm),
log-uniform; every lesion is its own 26-connected component.

``varied=True`` (``make_phantom(look='varied')``, training only, ``--data phantom-varied``): tumours also come round, sharp-edged and
homogeneous, as small real metastases do (each tumour: round with probability 0.4, edge softness
0-3 mm, texture 0-8 HU); cysts and everything else as above. ``wide=True`` (``look='wide'``, ``--data phantom-wide``)
widens that again: edge softness 0-5 mm, texture 0-12 HU. The evaluation phantoms use neither.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from .case import CYST, ORGAN, TUMOUR
from .geometry import _Grid, _rotation, _smooth_noise, lobed_q

__all__ = ["lesion_shape", "paint_lesion", "place_lesions"]


def place_lesions(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    grid: _Grid,
    organ_box: tuple[slice, ...] | None,
    organ_hu: float,
    varied: bool = False,
    wide: bool = False,
) -> list[dict]:
    """Place and paint tumours and cysts inside the organ (``labels == ORGAN``), in place
    (``varied``: tumours of varied look, module docstring).

    Returns the lesion table, one dict per painted lesion (see :func:`paint_lesion`).
    """
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
        shape_params = lesion_shape(rng, cls, diam / 2.0, varied)
        ok = False
        for attempt in range(6):
            rb = shape_params["bound"]
            # the centre is well inside; a big lesion may be clipped by the organ surface
            need = rb * (0.65 if cls == TUMOUR else 0.8) + margin
            cidx = np.argwhere(dist > need) if attempt else cand_all[dist[tuple(cand_all.T)] > need]
            if len(cidx) == 0:
                shape_params = lesion_shape(rng, cls, max(d_min / 2, shape_params["r0"] * 0.7), varied)
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
            shape_params = lesion_shape(rng, cls, max(d_min / 2, shape_params["r0"] * 0.7), varied)
        if not ok:
            continue
        info = paint_lesion(rng, img, labels, grid, c, cls, shape_params, organ_hu, varied, wide)
        if info is None:
            continue
        placed_c.append(c)
        placed_r.append(shape_params["bound"])
        table.append(info)
    return table


def lesion_shape(rng: np.random.Generator, cls: int, r0: float, varied: bool = False) -> dict:
    """Random lesion geometry of nominal radius ``r0`` (canonical mm).

    A cyst is one near-spherical ellipsoid; a tumour one ellipsoid plus 0-3 smaller lobes, with a
    surface perturbation (``varied``: 40% of tumours are round, as a cyst). ``bound`` is the radius
    of a sphere that holds it all.
    """
    if cls == CYST or (varied and rng.random() < 0.4):
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


def paint_lesion(
    rng: np.random.Generator,
    img: np.ndarray,
    labels: np.ndarray,
    grid: _Grid,
    c: np.ndarray,
    cls: int,
    shp: dict,
    organ_hu: float,
    varied: bool = False,
    wide: bool = False,
) -> dict | None:
    """Paint one lesion of shape ``shp`` centred at ``c`` (mm), clipped to the organ, in place
    (``varied``: a tumour's edge softness 0-3 mm and texture 0-8 HU, not 1-3 mm and 3-8 HU).

    Returns its row of the lesion table (class, centre voxel, nominal and measured diameter in mm,
    noise-free HU, voxel count, and for tumours contrast / necrotic / rim), or None if nothing of
    it falls inside the organ.
    """
    rb = shp["bound"]
    soft_mm = 0.0 if cls == CYST else float(rng.uniform(0.0 if varied else 1.0, 5.0 if wide else 3.0))
    if wide:  # a small lesion keeps its contrast at the centre
        soft_mm = min(soft_mm, 0.6 * float(shp["r0"]))
    sl = grid.box(c, (rb + soft_mm,) * 3)
    if sl is None:
        return None
    d = grid.coords(sl, c)
    q = lobed_q(d, shp["lobes"])
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
        texture = float(rng.uniform(0.0 if varied else 3.0, 12.0 if wide else 8.0))
        les += np.float32(texture) * _smooth_noise(rng, bshape, np.full(3, 2.5) / step)
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
        if varied:  # the drawn look, so a test (and a reader) can see the variety
            detail.update(round=len(shp["lobes"]) == 1 and shp["pert"] == 0.0, soft_mm=soft_mm, texture_hu=texture)
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
