"""Randomized training phantoms (the SynthSeg principle), for TRAINING ONLY.

``phantom.py`` draws one fixed abdomen with two fixed lesion classes; a network trained on it learns
that generator's look. Here every volume draws its own anatomy, its own lesion kinds and its own
acquisition, so widely that the network never sees the same contrast twice and has to answer
"one click -> every lesion of the same kind" from what the clicked lesion looks like *relative to
the other lesions of the same volume* (Billot et al. 2023, SynthSeg). Validation must use another
generator (and real scans), never this one.

What is drawn (canonical mm; see :func:`make_randomized_phantom` for the grid):

* acquisition: slice thickness log-uniform 0.6-5 mm, in-plane 0.5-1.5 mm (isotropic in-plane);
  field of view 90-150 mm (z) x 140-165 mm (y, x) (the model grid is 1.3 mm: 70-127 voxels per
  side); anisotropic partial-volume blur; a smooth multiplicative bias field (up to +-10 %), an
  additive offset (+-30 HU); noise sigma 3-30 HU (log-uniform), white or correlated; clipped to
  [-1024, 3000];
* body: an outline with random harmonics, sometimes larger than the field of view (a cropped view),
  subcutaneous fat and a muscle wall of random thickness and HU; a visceral filling that mixes fat
  and soft tissue in random proportion; sometimes a spine (vertebrae, discs, canal, paraspinal
  muscles) and ribs;
* host organs (label 1): 1-4 smooth lobulated blobs, base -20..180 HU, random two-scale texture and
  gradient, with tubular vessels inside them (brighter or darker than the organ, lesion-sized);
  sometimes one is cut by the volume border;
* aerated hosts (``AERATED_FRACTION`` of the volumes, lung-like): every host is -920..-700 HU with
  4-11 soft-tissue vessels (-40..80 HU), and every lesion kind is soft tissue (-80..90 HU), so
  hundreds of HU brighter than its host; the kind rule below still holds. (Not ground glass: at
  -650..-350 HU it lies below the CT window the network reads, as flat as the lung around it.)
  On the CT window the host then reads as dark as air: a lesion is told from a vessel by its
  shape, not by being brighter than its surroundings;
* distractors (label 0, painted only outside the hosts): bowel loops (wall; fluid, gas with a
  level, positive contrast or faeces), large vessels, and round structures (water cysts, lymph
  nodes, and look-alikes with the intensity of one of the drawn lesion kinds);
* lesion kinds (labels 2..1+K, K = 1..4): see :func:`draw_kind`; 1-8 lesions per kind, clustered or
  scattered, at most 20 in all, inside the hosts (a few exophytic ones bulge out), each its own
  26-connected component with a gap of at least ``max(1.5 voxel diagonals, 2.8 mm)`` to the next
  (so they stay apart on the 1.3 mm model grid too).

Every label is a lesion the network can see: after the acquisition a lesion whose contrast to its
surroundings, read noise-free on the CT window the network reads (-160..240 HU), is under 10 HU or
under Rose's criterion for the noise (5 sigma / sqrt(voxels)) gets back the label it was painted
over (``meta['unseen_lesions']`` counts them; a kind left without a lesion is dropped). Small,
soft-edged lesions in noisy thick slices were otherwise targets with nothing in the image to find.

Kinds within a volume must be told apart by eye, else "the same kind" is ill-posed. The rule
(:func:`kind_differences`; a new kind is redrawn until it holds against every earlier one): two kinds
differ if at least one of

* contrast: their signed contrasts to the host differ by >= 20 HU;
* texture: one is homogeneous (texture <= 4 HU) and the other textured (>= 12 HU);
* rim: one has a rim and the other none;
* size: their diameter ranges are disjoint with a factor >= 1.2 between them.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.special import ndtr, ndtri

from ..errors import InputError
from ..model.config import MIQSAMConfig
from .phantom.acquisition import _gauss_noise_gain
from .phantom.case import Case
from .phantom.geometry import (
    _capsule_dist,
    _check_triplet,
    _curve,
    _ellipsoid_q,
    _Grid,
    _log_uniform,
    _rotation,
    _smooth_noise,
    affine_from_spacing,
    lobed_q,
)

__all__ = [
    "AERATED_FRACTION",
    "FOV_YX_MM",
    "FOV_Z_MM",
    "INPLANE_MM",
    "MAX_LESIONS",
    "SLICE_MM",
    "draw_kind",
    "kind_differences",
    "make_randomized_phantom",
    "sample_randomized_spacing",
]

FOV_Z_MM = (90.0, 150.0)
#: In-plane field of view; kept <= 165 mm so a case is at most ~127 voxels per side at 1.3 mm.
FOV_YX_MM = (140.0, 165.0)
SLICE_MM = (0.6, 5.0)
INPLANE_MM = (0.5, 1.5)
LESION_DIAMETER_MM = (3.0, 60.0)
MAX_LESIONS = 20
MAX_KINDS = 4
#: Share of volumes whose hosts are aerated (lung-like parenchyma; module docstring).
AERATED_FRACTION = 0.2
AERATED_HOST_HU = (-920.0, -700.0)
AERATED_VESSEL_HU = (-40.0, 80.0)
AERATED_SOLID_HU = (-80.0, 90.0)
#: The CT window the network reads (the config's ``ct_level`` +- ``ct_half_width``: -160..240 HU).
#: A lesion is judged visible on it (``_drop_unseen_lesions``).
MODEL_WINDOW_HU = (MIQSAMConfig.ct_level - MIQSAMConfig.ct_half_width, MIQSAMConfig.ct_level + MIQSAMConfig.ct_half_width)
#: A lesion stays labelled only if it stands out by at least this much (HU, noise-free) ...
VISIBLE_HU = 10.0
#: ... and by at least ROSE_K noise sigmas / sqrt(its voxels) (Rose's criterion).
ROSE_K = 5.0
#: Voxel budget of a default-size case: finer grids get a smaller field of view (then a coarser
#: in-plane spacing) so one case stays within the training loop's time budget.
MAX_VOXELS = 9_000_000

# the kind-distinctness rule (module docstring)
CONTRAST_STEP_HU = 20.0
HOMOGENEOUS_MAX_HU = 4.0
TEXTURED_MIN_HU = 12.0
SIZE_GAP_FACTOR = 1.2

# tissue codes of the internal painting map; host organ i is _HOST + i
_AIR, _SFAT, _MUSCLE, _FILL, _BONE, _BOWEL, _VESSEL, _OTHER, _CUR = range(9)
_HOST = 16


def sample_randomized_spacing(rng: np.random.Generator) -> tuple[float, float, float]:
    """Spacing (z, y, x) mm: slice log-uniform in ``SLICE_MM``, in-plane log-uniform in ``INPLANE_MM``."""
    z = _log_uniform(rng, *SLICE_MM)
    xy = _log_uniform(rng, *INPLANE_MM)
    return (round(z, 4), round(xy, 4), round(xy, 4))


# ----------------------------------------------------------------------------------------------
# lesion kinds


def draw_kind(rng: np.random.Generator, d_lo: float, d_hi: float, min_contrast: float = 10.0) -> dict:
    """One lesion kind's appearance; sizes in mm within ``[d_lo, d_hi]``.

    * contrast to the host (``delta_hu``): |delta| log-uniform in [``min_contrast``, 120] HU
      (``min_contrast`` >= 10; the generator passes 0.6 x the noise sigma so a kind stays visible),
      random sign; or (15 %) near iso-dense (+-8 HU) with a mandatory rim;
    * rim (15 % otherwise): 1-3 mm thick, +-30..100 HU;
    * texture: homogeneous (0-4 HU) or (45 %) textured (12-30 HU), correlation 0.8-5 mm;
    * necrotic core (25 %): the inner 30-65 % of the radius 15-60 HU darker;
    * calcification spots (10 %): 1-5 per lesion, 0.8-2.5 mm radius, 200-900 HU;
    * edge blur sigma: 0-0.3 mm (30 %, sharp) or 0.3-2.5 mm;
    * shape: round, lobulated (extra lobes + strong radial modulation) or elongated (axes up to 2.2:1);
    * layout: clustered (30 %: 3-8 small lesions near each other) or scattered (1-8 lesions);
    * diameter range: centre log-uniform in [d_lo, d_hi], ratio hi/lo 1.3-3 (log-uniform).
    """
    iso = rng.random() < 0.15
    if iso:
        delta = float(rng.uniform(-8.0, 8.0))
        with_rim = True
    else:
        delta = float(rng.choice((-1.0, 1.0))) * _log_uniform(rng, max(10.0, min(min_contrast, 80.0)), 120.0)
        with_rim = rng.random() < 0.15
    rim = None
    if with_rim:
        rim = {"thickness_mm": float(rng.uniform(1.0, 3.0)),
               "delta_hu": float(rng.choice((-1.0, 1.0)) * rng.uniform(30.0, 100.0))}
    textured = rng.random() < 0.45
    texture_hu = float(rng.uniform(TEXTURED_MIN_HU, 30.0) if textured else rng.uniform(0.0, HOMOGENEOUS_MAX_HU))
    necrotic = None
    if rng.random() < 0.25:
        necrotic = {"core_fraction": float(rng.uniform(0.3, 0.65)), "delta_hu": -float(rng.uniform(15.0, 60.0))}
    edge = float(rng.uniform(0.0, 0.3) if rng.random() < 0.3 else rng.uniform(0.3, 2.5))
    shape = str(rng.choice(("round", "lobulated", "elongated"), p=(0.4, 0.35, 0.25)))
    layout = "clustered" if rng.random() < 0.3 else "scattered"
    hi_c = min(d_hi, max(d_lo * 1.3, 16.0)) if layout == "clustered" else d_hi
    ratio = _log_uniform(rng, 1.3, 3.0)
    centre = _log_uniform(rng, d_lo, max(hi_c, d_lo * 1.01))
    lo = max(d_lo, centre / math.sqrt(ratio))
    hi = min(hi_c if layout == "clustered" else d_hi, max(lo * 1.3, centre * math.sqrt(ratio)))
    hi = max(hi, lo * 1.05)
    if layout == "clustered":
        n = int(rng.integers(3, 9))
    else:
        n = int(rng.choice(np.arange(1, 9), p=np.array([8, 6, 5, 4, 3, 2, 2, 2]) / 32.0))
    return {
        "delta_hu": delta,
        "rim": rim,
        "texture_hu": texture_hu,
        "texture_corr_mm": float(rng.uniform(0.8, 5.0)),
        "necrotic": necrotic,
        "calcified": bool(rng.random() < 0.1),
        "edge_sigma_mm": edge,
        "shape": shape,
        "elongation": float(rng.uniform(1.0, 1.3) if shape != "elongated" else rng.uniform(1.4, 2.2)),
        "radial_modulation": float(rng.uniform(0.0, 0.04) if shape != "lobulated" else rng.uniform(0.08, 0.2)),
        "layout": layout,
        "size_range_mm": (float(lo), float(hi)),
        "n_lesions": n,
    }


def kind_differences(a: dict, b: dict) -> list[str]:
    """The visible respects in which two kinds of one volume differ (empty: not distinguishable).

    ``a`` and ``b`` are kind dicts as in ``meta['kinds']``; the rule is the module docstring's.
    """
    out = []
    if abs(a["delta_hu"] - b["delta_hu"]) >= CONTRAST_STEP_HU:
        out.append("contrast")
    ta, tb = a["texture_hu"], b["texture_hu"]
    if (ta <= HOMOGENEOUS_MAX_HU and tb >= TEXTURED_MIN_HU) or (tb <= HOMOGENEOUS_MAX_HU and ta >= TEXTURED_MIN_HU):
        out.append("texture")
    if (a["rim"] is None) != (b["rim"] is None):
        out.append("rim")
    (alo, ahi), (blo, bhi) = a["size_range_mm"], b["size_range_mm"]
    if ahi * SIZE_GAP_FACTOR <= blo or bhi * SIZE_GAP_FACTOR <= alo:
        out.append("size")
    return out


def _draw_kinds(rng: np.random.Generator, n_kinds: int, d_lo: float, d_hi: float, min_contrast: float) -> list[dict]:
    """``n_kinds`` kinds, each redrawn until :func:`kind_differences` holds against all earlier ones."""
    kinds: list[dict] = []
    for _ in range(n_kinds):
        for _attempt in range(40):
            k = draw_kind(rng, d_lo, d_hi, min_contrast)
            if all(kind_differences(k, p) for p in kinds):
                break
        else:  # practically never: move the contrast to a free slot
            deltas = [p["delta_hu"] for p in kinds]
            up = max(deltas) + 30.0
            k["delta_hu"] = up if up <= 150.0 else min(deltas) - 30.0
        kinds.append(k)
    total = sum(k["n_lesions"] for k in kinds)
    while total > MAX_LESIONS:  # trim the largest counts
        j = int(np.argmax([k["n_lesions"] for k in kinds]))
        kinds[j]["n_lesions"] -= 1
        total -= 1
    for i, k in enumerate(kinds):
        k["label"] = 2 + i
    return kinds


def _aerate_kinds(rng: np.random.Generator, kinds: list[dict], host_hu: float) -> None:
    """Make every kind soft tissue in an aerated host of about ``host_hu`` (ground glass, -650..-350
    HU, lies below the CT window the network reads, as flat as the lung around it, so it is not a
    kind it could be asked to find):
    ``delta_hu`` is redrawn (in place) until the kind rule holds against the earlier kinds again."""
    for i, kd in enumerate(kinds):
        for _attempt in range(40):
            kd["delta_hu"] = float(rng.uniform(*AERATED_SOLID_HU)) - host_hu
            if all(kind_differences(kd, p) for p in kinds[:i]):
                break
        else:  # practically never: the next free soft-tissue slot
            kd["delta_hu"] = max(p["delta_hu"] for p in kinds[:i]) + CONTRAST_STEP_HU
        kd["aerated"] = True


# ----------------------------------------------------------------------------------------------
# painting helpers


def _paint_tube(img, tis, grid: _Grid, pts: np.ndarray, radius: float, value: float, allowed: Sequence[int],
                new_code: int | None) -> None:
    """Paint a tube (poly-line ``pts`` mm, ``radius`` mm) as capsules, only on ``allowed`` tissue."""
    for p0, p1 in zip(pts[:-1], pts[1:]):
        lo, hi = np.minimum(p0, p1) - radius, np.maximum(p0, p1) + radius
        sl = grid.box((lo + hi) / 2, (hi - lo) / 2)
        if sl is None:
            continue
        d = _capsule_dist(grid.coords(sl, p0), p1 - p0)
        sub_t = tis[sl]
        m = d < np.float32(radius)
        m &= np.isin(sub_t, allowed)
        if m.any():
            img[sl][m] = value
            if new_code is not None:
                sub_t[m] = new_code


def _blob_q(rng: np.random.Generator, grid: _Grid, sl, c, semi, rot, pert: float, cell_mm: float) -> np.ndarray:
    """Normalised radius of a perturbed ellipsoid in box ``sl`` (q < 1 inside)."""
    q = _ellipsoid_q(grid.coords(sl, c), semi, rot)
    if pert > 0:
        shp = q.shape
        n = _smooth_noise(rng, shp, np.asarray([cell_mm] * 3) / np.asarray(grid.step))
        np.clip(n, -1.0, 1.0, out=n)
        q *= 1.0 + np.float32(pert) * n
    return q


def _random_point_in(rng: np.random.Generator, tis: np.ndarray, grid: _Grid, codes: Sequence[int],
                     tries: int = 64) -> np.ndarray | None:
    """A random canonical-mm point whose voxel has one of ``codes`` (rejection sampling)."""
    for _ in range(tries):
        idx = tuple(int(rng.integers(0, n)) for n in tis.shape)
        if tis[idx] in codes:
            return np.array([grid.axes[a][idx[a]] for a in range(3)], dtype=float)
    return None


# ----------------------------------------------------------------------------------------------
# the generator


def make_randomized_phantom(
    seed: int,
    shape: tuple | None = None,
    spacing: tuple | None = None,
    name: str | None = None,
) -> Case:
    """Generate one randomized training case (see the module docstring for what is drawn).

    Args:
        seed: any int; the case is a deterministic function of (seed, shape, spacing).
        shape: (z, y, x) voxels; default ``round(fov / spacing)`` for a drawn field of view.
            A given shape holds the drawn anatomy scaled down to fit in-plane when its extent is
            smaller than the drawn field of view (``meta['scale']`` < 1), so tiny volumes still
            show organs and lesions.
        spacing: (z, y, x) mm; default drawn by :func:`sample_randomized_spacing`.
        name: case name (default ``randomized_<seed>``).

    Returns:
        A :class:`~napari_miqsam.data.phantom.Case`: float32 HU image, uint8 labels (0 background,
        1 host organs, 2..1+K lesion kinds), spacing, affine and ``meta`` with the kinds (their
        drawn parameters), the lesion table (label, centre voxel, diameters in mm, host fraction),
        the organs, the distractors and the acquisition.
    """
    seq = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF)
    # a ninth stream for the host style: the first eight children of a SeedSequence do not depend on
    # how many are spawned, so a volume that is not aerated is the same as before the option existed
    r_acq, r_body, r_host, r_kind, r_dis, r_les, r_tex, r_noise, r_style = (
        np.random.default_rng(s) for s in seq.spawn(9))
    aerated = bool(r_style.random() < AERATED_FRACTION)

    fov = np.array([r_acq.uniform(*FOV_Z_MM), r_acq.uniform(*FOV_YX_MM), r_acq.uniform(*FOV_YX_MM)])
    drawn_spacing = spacing is None
    if drawn_spacing:
        spacing = sample_randomized_spacing(r_acq)
    spacing = _check_triplet(spacing, "spacing", float)
    capped = False
    if shape is None:
        n_vox = float(np.prod(fov / np.asarray(spacing)))
        if n_vox > MAX_VOXELS:  # shrink the field of view towards its minimum, then coarsen in-plane
            capped = True
            f = (MAX_VOXELS / n_vox) ** (1 / 3)
            fov = np.maximum(fov * f, [FOV_Z_MM[0], FOV_YX_MM[0], FOV_YX_MM[0]])
            n_vox = float(np.prod(fov / np.asarray(spacing)))
            if n_vox > MAX_VOXELS and drawn_spacing:
                xy = round(spacing[1] * math.sqrt(n_vox / MAX_VOXELS) + 1e-4, 4)
                spacing = (spacing[0], xy, xy)
        shape = tuple(max(8, int(round(f_ / s))) for f_, s in zip(fov, spacing))
    shape = _check_triplet(shape, "shape", int)
    if min(shape) < 4:
        raise InputError(f"shape must be at least 4 voxels per axis, got {shape}")
    extent = np.asarray(shape, float) * np.asarray(spacing)
    k = float(min(1.0, extent[1] / fov[1], extent[2] / fov[2]))
    fov = extent / k  # canonical field of view (mm) that the grid shows
    grid = _Grid(shape, spacing, k)  # type: ignore[arg-type]
    step = np.asarray(grid.step)
    half = fov / 2.0

    img = np.empty(shape, np.float32)
    tis = np.zeros(shape, np.uint8)
    body = _paint_body(r_body, img, tis, grid, half)
    spine = _paint_spine(r_body, img, tis, grid, body) if r_body.random() < 0.6 else None
    ribs = _paint_ribs(r_body, img, tis, grid, body) if r_body.random() < 0.4 else 0
    organs, partial_fov = _paint_hosts(r_host, r_tex, img, tis, grid, body, half, r_style if aerated else None)

    # kinds: sizes between what the grid resolves and what the hosts hold (the first lesion of every
    # kind together fill at most 30 % of the host volume)
    n_kinds = int(r_kind.choice(np.arange(1, MAX_KINDS + 1)))
    d_lo = max(LESION_DIAMETER_MM[0], 1.6 * spacing[0], 2.5 * max(spacing[1], spacing[2]))
    inradius = max([min(o["semi_mm"]) for o in organs], default=20.0)
    host_mm3 = sum(o["n_voxels"] for o in organs) * float(np.prod(step))
    d_fit = (6.0 * 0.3 * host_mm3 / (n_kinds * math.pi)) ** (1 / 3)
    d_hi = min(LESION_DIAMETER_MM[1], 1.5 * inradius * k, d_fit * k)
    d_hi = max(d_hi, d_lo * 1.6)
    noise_sigma = _log_uniform(r_noise, 3.0, 30.0)
    kinds = _draw_kinds(r_kind, n_kinds, d_lo, d_hi, 0.6 * noise_sigma)
    if aerated and organs:
        _aerate_kinds(r_style, kinds, float(np.mean([o["base_hu"] for o in organs])))

    distractors = _paint_distractors(r_dis, img, tis, grid, body, organs, kinds)
    n_org_vessels = _paint_organ_vessels(r_dis, img, tis, grid, organs, r_style if aerated else None)

    labels = (tis >= _HOST).astype(np.uint8)
    under = labels.copy()  # what each lesion was painted over (host or not)
    lesions = _place_lesions(r_les, img, labels, tis, grid, organs, kinds, d_lo)
    clean = img.copy()  # as painted: each lesion's contrast is read on it blurred, without noise

    acquisition = _acquire(r_noise, img, grid, spacing, noise_sigma)
    lesions, unseen = _drop_unseen_lesions(clean, labels, under, lesions, acquisition["blur_sigma_vox"], noise_sigma)
    del clean, under
    kinds = _drop_absent_kinds(labels, kinds, lesions)
    acquisition.update({"spacing": tuple(float(s) for s in spacing), "shape": tuple(int(n) for n in shape),
                        "fov_mm": tuple(float(e) for e in extent), "voxel_cap_applied": capped,
                        "partial_fov": partial_fov})
    meta = {
        "generator": "napari_miqsam.data.randomized",
        "seed": int(seed),
        "scale": k,
        "n_kinds": len(kinds),
        "n_kinds_drawn": n_kinds,
        "aerated": aerated,
        "kinds": kinds,
        "lesions": lesions,
        "unseen_lesions": unseen,
        "body": body["meta"],
        "spine": spine,
        "ribs": ribs,
        "organs": [{kk: v for kk, v in o.items() if not kk.startswith("_")} for o in organs],
        "distractors": {**distractors, "organ_vessels": n_org_vessels},
        "acquisition": acquisition,
    }
    return Case(
        image=img,
        labels=labels,
        spacing=tuple(float(s) for s in spacing),  # type: ignore[arg-type]
        affine=affine_from_spacing(spacing, shape),
        name=name or f"randomized_{int(seed):05d}",
        meta=meta,
    )


def _paint_body(rng, img, tis, grid: _Grid, half: np.ndarray) -> dict:
    """Air, body outline (random harmonics), subcutaneous fat, muscle wall, visceral filling."""
    z_ax, y_ax, x_ax = grid.axes
    cropped = rng.random() < 0.35  # a body larger than the field of view
    if cropped:
        ay, ax = half[1] * rng.uniform(1.0, 1.5), half[2] * rng.uniform(1.05, 1.6)
    else:
        ay, ax = half[1] * rng.uniform(0.72, 0.95), half[2] * rng.uniform(0.75, 0.97)
    cy, cx = half[1] * rng.uniform(-0.08, 0.08), half[2] * rng.uniform(-0.05, 0.05)
    yy = (y_ax[:, None] - np.float32(cy))
    xx = (x_ax[None, :] - np.float32(cx))
    theta = np.arctan2(yy, xx)
    rmod = np.ones_like(theta)
    for n in range(2, 6):
        rmod += np.float32(rng.uniform(0, 0.05)) * np.cos(n * theta + np.float32(rng.uniform(0, 2 * np.pi)))
    rho2d = (np.sqrt((yy / np.float32(ay)) ** 2 + (xx / np.float32(ax)) ** 2) / rmod).astype(np.float32)
    zs = (1.0 + rng.uniform(0, 0.04) * np.sin(2 * np.pi * z_ax / rng.uniform(150, 400) + rng.uniform(0, 2 * np.pi)))
    amean = 0.5 * (ay + ax)
    tf, tm = float(rng.uniform(3, 25)), float(rng.uniform(3, 14))
    layers = tf + tm
    if layers > 0.3 * amean:  # a small body keeps room for its organs
        tf, tm = tf * 0.3 * amean / layers, tm * 0.3 * amean / layers
    t_mus, t_fill = 1 - tf / amean, 1 - (tf + tm) / amean
    rho = rho2d[None] / zs.astype(np.float32)[:, None, None]
    tis[...] = rho < 1.0
    tis += rho < t_mus
    tis += rho < t_fill  # 0 air, 1 subcutaneous fat, 2 muscle, 3 filling
    del rho
    fat_hu = float(rng.uniform(-130, -80))
    muscle_hu = float(rng.uniform(30, 70))
    vfat_hu = float(rng.uniform(-120, -70))
    lut = np.array([-1000.0, fat_hu, muscle_hu, vfat_hu], np.float32)
    np.take(lut, tis, out=img)
    # visceral filling: fat with soft-tissue patches (mesentery, fat-poor patients)
    soft_frac = float(rng.uniform(0.0, 0.7))
    soft_hu = float(rng.uniform(10, 50))
    cell = rng.uniform(8, 25)
    field = _smooth_noise(rng, img.shape, cell / np.asarray(grid.step))
    thr = float(ndtri(1.0 - soft_frac)) if soft_frac > 0 else np.inf  # the field is ~N(0, 1)
    fill = tis == _FILL
    img[fill & (field > thr)] = soft_hu
    return {
        "cy": cy, "cx": cx, "ay": ay, "ax": ax, "rho2d": rho2d, "zs": zs, "t_mus": t_mus, "t_fill": t_fill,
        "amean": amean, "tf": tf, "tm": tm, "muscle_hu": muscle_hu,
        "meta": {"cropped": bool(cropped), "semi_axes_mm": (float(ay), float(ax)), "fat_mm": tf, "muscle_mm": tm,
                 "fat_hu": fat_hu, "muscle_hu": muscle_hu, "visceral_fat_hu": vfat_hu,
                 "soft_fraction": soft_frac, "soft_hu": soft_hu},
    }


def _paint_spine(rng, img, tis, grid: _Grid, body: dict) -> dict | None:
    """A vertebral column extruded along z (cortex, cancellous bone, discs, canal, arch, muscles)."""
    z_ax = grid.axes[0]
    ay_fill = body["ay"] * body["t_fill"]
    u = float(np.clip(body["amean"] / 130.0, 0.45, 1.0))  # a small body has a small spine
    ry, rx = u * float(rng.uniform(10, 16)), u * float(rng.uniform(12, 19))
    y_vb = body["cy"] + ay_fill - ry - u * float(rng.uniform(12, 26))
    x_vb = body["cx"] + float(rng.uniform(-6, 6))
    sl = grid.box((0.0, y_vb + 15 * u, x_vb), (1e6, ry + 40 * u, rx + 35 * u))
    if sl is None:
        return None
    _, dy, dx = grid.coords(sl, (0.0, y_vb, x_vb))
    dy, dx = dy[0] / np.float32(u), dx[0] / np.float32(u)  # posterior elements in units of a full-size spine
    ry, rx = ry / u, rx / u
    cortical, cancellous = float(rng.uniform(500, 1100)), float(rng.uniform(120, 350))
    vb_out = (dy / ry) ** 2 + (dx / rx) ** 2 < 1.0
    vb_in = (dy / (ry - 2)) ** 2 + (dx / (rx - 2)) ** 2 < 1.0
    cdy = dy - ry - 6.0
    canal = cdy ** 2 + dx ** 2 < 6.0 ** 2
    arch = (cdy ** 2 + dx ** 2 < 9.5 ** 2) & ~canal & (cdy > -4)
    spinous = (np.abs(dx) < 2.5) & (cdy > 7) & (cdy < 24)
    para = ((cdy - 10) / 10.0) ** 2 + ((np.abs(dx) - 17) / 11.0) ** 2 < 1.0
    halo = (dy / (ry + 9)) ** 2 + (dx / (rx + 12)) ** 2 < 1.0  # retroperitoneal fat: no organ grows into it
    sub_i, sub_t = img[sl], tis[sl]
    inside = sub_t != _AIR
    sub_t[halo[None] & (sub_t == _FILL)] = _OTHER
    m = para[None] & inside & (sub_t != _MUSCLE)
    sub_i[m] = body["muscle_hu"] + 5
    sub_t[m] = _MUSCLE
    bone = (vb_out | arch | spinous)[None] & inside
    sub_i[bone] = cortical
    sub_t[bone] = _BONE
    sub_i[vb_in[None] & inside] = cancellous
    period = u * float(rng.uniform(22, 32))
    phase = float(rng.uniform(0, period))
    disc = ((z_ax[sl[0]] + phase) % period) < u * float(rng.uniform(5, 8))
    sub_i[disc[:, None, None] & vb_out[None] & inside] = float(rng.uniform(60, 100))
    m = canal[None] & inside
    sub_i[m] = float(rng.uniform(0, 30))
    sub_t[m] = _OTHER
    return {"centre_yx_mm": (float(y_vb), float(x_vb)), "radius_mm": float(u * (rx + 12)), "scale": u,
            "cortical_hu": cortical, "cancellous_hu": cancellous}


def _paint_ribs(rng, img, tis, grid: _Grid, body: dict) -> int:
    """Rib cross-sections: bright arcs in the muscle wall that descend anteriorly."""
    z_ax = grid.axes[0]
    rho2d, amean = body["rho2d"], body["amean"]
    rib_r = 1.0 - (body["tf"] + 0.5 * body["tm"]) / amean
    by, bx = np.nonzero(np.abs(rho2d - rib_r) < 3.5 / amean)
    if by.size == 0:
        return 0
    yy = grid.axes[1][by] - body["cy"]
    xx = grid.axes[2][bx] - body["cx"]
    phi = np.arctan2(np.abs(xx), yy)  # 0 posterior .. pi anterior
    keep = (phi > 0.35) & (phi < 2.4)
    by, bx, phi = by[keep], bx[keep], phi[keep]
    drr = (rho2d[by, bx] - rib_r) * amean
    cortical = float(rng.uniform(400, 900))
    z_top = float(rng.uniform(0.2, 0.6) * z_ax[-1] + 40)
    u = float(np.clip(amean / 130.0, 0.6, 1.0))
    gap, slope = u * float(rng.uniform(18, 26)), u * float(rng.uniform(20, 34))
    sz = float(grid.step[0])
    n_off = int(math.ceil(2 * 2.2 / sz)) + 2
    n = 0
    for j in range(8):
        zc = z_top - j * gap - slope * phi
        i0 = np.floor((zc - 2.2) / sz + (len(z_ax) - 1) / 2.0).astype(np.intp)
        iz = i0[:, None] + np.arange(n_off)[None, :]
        ok = (iz >= 0) & (iz < len(z_ax))
        if not ok.any():
            continue
        zz = z_ax[np.clip(iz, 0, len(z_ax) - 1)]
        q = ((zz - zc[:, None]) / 2.2) ** 2 + (drr[:, None] / 3.0) ** 2
        ok &= q < 1.0
        p, o = np.nonzero(ok)
        if p.size == 0:
            continue
        izs, ys, xs = iz[p, o], by[p], bx[p]
        on_body = tis[izs, ys, xs] != _AIR
        izs, ys, xs, qv = izs[on_body], ys[on_body], xs[on_body], q[p, o][on_body]
        img[izs, ys, xs] = np.where(qv > 0.45, cortical, cortical * 0.35)
        tis[izs, ys, xs] = _BONE
        n += 1
    return n


def _paint_hosts(rng, r_tex, img, tis, grid: _Grid, body: dict, half: np.ndarray,
                 r_air: np.random.Generator | None = None) -> tuple[list[dict], bool]:
    """1-4 host organs: perturbed (two-lobe) ellipsoids on the filling, textured, random HU.

    With ``r_air`` (an aerated volume) every host's base HU is drawn from it in ``AERATED_HOST_HU``
    instead; everything else is drawn as for a solid host."""
    n_org = int(rng.choice((1, 2, 3, 4), p=(0.3, 0.3, 0.22, 0.18)))
    lim = np.array([half[0], min(body["ay"] * body["t_fill"], half[1]), min(body["ax"] * body["t_fill"], half[2])])
    # centres are drawn on a coarse (~4 mm) map of the filling, away from its edges
    step = np.asarray(grid.step)
    stride = np.maximum(1, np.round(4.0 / step)).astype(int)
    free = tis[:: stride[0], :: stride[1], :: stride[2]] == _FILL
    cstep = stride * step
    dist = ndimage.distance_transform_edt(free, sampling=cstep) if free.any() else np.zeros(free.shape)
    z_c = grid.axes[0][:: stride[0]]
    partial_fov = False
    organs: list[dict] = []
    for i in range(n_org):
        big = i == 0
        # the first organ lies deep in the filling and in the middle 60 % of the slab (always present)
        deep = dist >= (0.6 * dist.max() if big else min(8.0, 0.5 * dist.max()))
        if big:
            deep &= (np.abs(z_c) <= 0.6 * half[0])[:, None, None]
        cand = np.argwhere(deep)
        if len(cand) == 0:
            cand = np.argwhere(dist >= dist.max())
        idx = cand[int(rng.integers(len(cand)))]
        c = np.array([grid.axes[a][min(int(j) * int(stride[a]), tis.shape[a] - 1)] for a, j in enumerate(idx)])
        clear = float(dist[tuple(idx)])
        semi = np.array([rng.uniform(25, 60), rng.uniform(20, 50), rng.uniform(20, 50)])
        semi *= 1.0 if big else rng.uniform(0.6, 1.0)
        semi = np.minimum(semi, np.maximum(0.75 * lim, 8.0))
        semi[1:] = np.minimum(semi[1:], max(10.0, 2.0 * clear))
        if not big and rng.random() < 0.2:  # partial field of view: this organ is cut by a volume border
            a = 0 if rng.random() < 0.6 else int(rng.integers(1, 3))
            c[a] = float(rng.choice((-1.0, 1.0))) * (half[a] - rng.uniform(0.0, 0.5) * semi[a])
            partial_fov = True
        rot = _rotation(rng, 0.6)
        lobes = [(c, semi, rot)]
        if rng.random() < 0.5:  # a second lobe
            v = rng.normal(size=3)
            v *= rng.uniform(0.4, 0.8) * semi.mean() / (np.linalg.norm(v) + 1e-9)
            lobes.append((c + v, semi * rng.uniform(0.45, 0.75), _rotation(rng)))
        lo = np.min([lc - max(ls) for lc, ls, _ in lobes], axis=0) - 4
        hi = np.max([lc + max(ls) for lc, ls, _ in lobes], axis=0) + 4
        sl = grid.box((lo + hi) / 2, (hi - lo) / 2)
        base = float(rng.uniform(-20, 180))
        if r_air is not None:
            base = float(r_air.uniform(*AERATED_HOST_HU))
        code = _HOST + i
        info = {"centre_mm": tuple(float(v) for v in c), "semi_mm": tuple(float(s) for s in semi),
                "base_hu": base, "code": code}
        if sl is None:
            continue
        pert = float(rng.uniform(0.03, 0.12))
        q = None
        for lc, ls, lr in lobes:
            qi = _ellipsoid_q(grid.coords(sl, lc), ls, lr)
            q = qi if q is None else np.minimum(q, qi)
        bshape = q.shape
        nfield = _smooth_noise(r_tex, bshape, np.full(3, rng.uniform(15, 30)) / step)
        q += np.float32(pert) * nfield
        sub_t = tis[sl]
        m = (q < 1.0) & ((sub_t == _FILL) | (sub_t >= _HOST))
        if not m.any():
            continue
        fine_hu, coarse_hu = float(rng.uniform(0, 10)), float(rng.uniform(0, 12))
        tex = _smooth_noise(r_tex, bshape, np.full(3, rng.uniform(1.5, 5)) / step) * np.float32(fine_hu)
        tex += _smooth_noise(r_tex, bshape, np.full(3, rng.uniform(10, 30)) / step) * np.float32(coarse_hu)
        g = rng.normal(size=3)
        g *= rng.uniform(0, 12) / (np.linalg.norm(g) * max(semi) + 1e-9)
        dz, dy, dx = grid.coords(sl, c)
        tex += dz * np.float32(g[0]) + dy * np.float32(g[1]) + dx * np.float32(g[2])
        tex += np.float32(base)
        img[sl][m] = tex[m]
        sub_t[m] = code
        info.update({"texture_fine_hu": fine_hu, "texture_coarse_hu": coarse_hu, "perturbation": pert,
                     "lobes": len(lobes), "n_voxels": int(m.sum()), "_box": sl})
        organs.append(info)
    return organs, partial_fov


def _paint_distractors(rng, img, tis, grid: _Grid, body: dict, organs: list[dict], kinds: list[dict]) -> dict:
    """Unlabelled structures outside the hosts: bowel loops, large vessels, round look-alikes."""
    lim_y = body["ay"] * body["t_fill"]
    lim_x = body["ax"] * body["t_fill"]
    half_z = grid.axes[0][-1]
    phase = float(rng.uniform(0, 1))  # contrast phase of the blood pool
    out = {"bowel_loops": 0, "large_vessels": 0, "round": []}

    # bowel loops
    for _ in range(int(rng.integers(0, 9))):
        start = _random_point_in(rng, tis, grid, (_FILL,))
        if start is None:
            break
        r = float(rng.uniform(5, 13))
        wall = float(rng.uniform(1.5, 3.0))
        pts = _curve(rng, start, rng.normal(size=3), float(rng.uniform(30, 90)), r * 0.7)
        content = int(rng.choice(4, p=(0.4, 0.3, 0.12, 0.18)))  # fluid, gas, positive contrast, faeces
        wall_hu = float(rng.uniform(20, 90))
        inner_hu = (float(rng.uniform(-5, 30)), float(rng.uniform(0, 20)), float(rng.uniform(150, 400)),
                    float(rng.uniform(-120, 20)))[content]
        for p in pts:
            sl = grid.box(p, (r, r, r))
            if sl is None:
                continue
            dz, dy, dx = grid.coords(sl, p)
            dd = dz * dz + dy * dy + dx * dx
            sub_t, sub_i = tis[sl], img[sl]
            free = sub_t == _FILL
            outer = (dd < r * r) & free
            lumen = (dd < (r - wall) ** 2) & (free | (sub_t == _CUR))
            sub_i[outer] = wall_hu
            if content == 1:  # gas rises anteriorly (small y) above a fluid level
                sub_i[lumen & (dy >= 0.3 * r)] = inner_hu
                sub_i[lumen & (dy < 0.3 * r)] = -1000.0
            elif content == 3:  # faeces: mottled gas and solid
                mot = lumen & (_smooth_noise(rng, lumen.shape, np.full(3, 2.5) / np.asarray(grid.step)) > 0.6)
                sub_i[lumen] = inner_hu
                sub_i[mot] = -600.0
            else:
                sub_i[lumen] = inner_hu
            sub_t[outer] = _CUR
        lo, hi = pts.min(0) - r, pts.max(0) + r
        sl = grid.box((lo + hi) / 2, (hi - lo) / 2)
        if sl is not None:
            sub_t = tis[sl]
            sub_t[sub_t == _CUR] = _BOWEL
        out["bowel_loops"] += 1

    # large vessels, mostly along z (aorta / IVC / iliac-like), carved into the filling only
    for _ in range(int(rng.integers(0, 4))):
        start = np.array([-half_z - 10, body["cy"] + rng.uniform(-0.6, 0.6) * lim_y,
                          body["cx"] + rng.uniform(-0.6, 0.6) * lim_x])
        direction = np.array([1.0, rng.normal(0, 0.15), rng.normal(0, 0.15)])
        if rng.random() < 0.3:  # an oblique one
            start[0] = rng.uniform(-half_z, half_z)
            direction = rng.normal(size=3)
        r = float(rng.uniform(2.5, 12))
        hu = float(40 + phase * rng.uniform(80, 260)) if rng.random() < 0.8 else float(rng.uniform(-20, 40))
        pts = _curve(rng, start, direction, 2 * half_z + 20, max(2.0, r))
        _paint_tube(img, tis, grid, pts, r, hu, (_FILL, _BOWEL), _VESSEL)
        out["large_vessels"] += 1

    # round distractors: water cysts, lymph nodes, and look-alikes of a lesion kind (not lesions!)
    for _ in range(int(rng.integers(1, 8))):
        c = _random_point_in(rng, tis, grid, (_FILL,))
        if c is None:
            break
        what = str(rng.choice(("cyst", "node", "mimic"), p=(0.35, 0.35, 0.3)))
        d = _log_uniform(rng, 6, 35)
        if what == "cyst":
            hu, sigma, tex_hu = float(rng.uniform(-5, 20)), 0.0, 0.0
        elif what == "node":
            hu, sigma, tex_hu = float(rng.uniform(20, 80)), float(rng.uniform(0.3, 1.5)), float(rng.uniform(0, 8))
        else:
            kd = kinds[int(rng.integers(len(kinds)))]
            org = organs[int(rng.integers(len(organs)))] if organs else {"base_hu": 50.0}
            hu = float(org["base_hu"] + kd["delta_hu"])
            sigma, tex_hu = kd["edge_sigma_mm"] / grid.k, kd["texture_hu"]
            lo_, hi_ = kd["size_range_mm"]
            d = _log_uniform(rng, lo_, hi_) / grid.k
        semi = (d / 2) * rng.uniform(0.75, 1.25, 3)
        rb = float(max(semi)) * 1.1 + 3 * sigma + 1
        sl = grid.box(c, (rb, rb, rb))
        if sl is None:
            continue
        q = _blob_q(rng, grid, sl, c, semi, _rotation(rng), 0.05, max(3.0, d / 3))
        sub_t, sub_i = tis[sl], img[sl]
        allowed = sub_t == _FILL
        w = _edge_weight(q, d / 2, sigma) * allowed
        val = np.float32(hu)
        if tex_hu > 0:
            val = val + np.float32(tex_hu) * _smooth_noise(rng, q.shape, np.full(3, 2.0) / np.asarray(grid.step))
        sub_i += w * (val - sub_i)
        sub_t[(q < 1.0) & allowed] = _OTHER
        out["round"].append({"what": what, "hu": hu, "diameter_mm": float(d * grid.k)})
    return out


def _paint_organ_vessels(rng, img, tis, grid: _Grid, organs: list[dict],
                         r_air: np.random.Generator | None = None) -> int:
    """Tubular vessels inside the host organs (they stay label 1): lesion-sized, brighter or darker.

    With ``r_air`` (aerated hosts) 4-11 more per host, soft tissue (``AERATED_VESSEL_HU``), as in a lung."""
    n = 0
    for org in organs:
        code = org["code"]
        sign = 1.0 if rng.random() < 0.7 else -1.0
        hu = org["base_hu"] + sign * float(rng.uniform(25, 150))
        n_vessels = int(rng.integers(0, 6))
        if r_air is not None:
            hu = float(r_air.uniform(*AERATED_VESSEL_HU))
            n_vessels += int(r_air.integers(4, 7))
        sl = org["_box"]
        for _ in range(n_vessels):
            # a start point inside this organ
            start = None
            for _t in range(40):
                idx = tuple(int(rng.integers(s.start, s.stop)) for s in sl)
                if tis[idx] == code:
                    start = np.array([grid.axes[a][idx[a]] for a in range(3)], dtype=float)
                    break
            if start is None:
                break
            r = float(rng.uniform(1.2, 5.0))
            pts = _curve(rng, start, rng.normal(size=3), float(rng.uniform(20, 70)), max(1.0, r * 0.8))
            _paint_tube(img, tis, grid, pts, r, hu, (code,), None)
            n += 1
    return n


def _edge_weight(q: np.ndarray, r_mm: float, sigma_mm: float) -> np.ndarray:
    """Blend weight of a profile with normalised radius ``q``: an edge blurred by ``sigma_mm``."""
    if sigma_mm < 0.05:
        return (q < 1.0).astype(np.float32)
    return ndtr((1.0 - q) * np.float32(r_mm / sigma_mm)).astype(np.float32)


# ----------------------------------------------------------------------------------------------
# lesions


def _lesion_geometry(rng: np.random.Generator, kind: dict, r0: float) -> dict:
    """Lobes (centre offset, semi-axes, rotation), modulation and bounding radius; canonical mm."""
    e = kind["elongation"] * rng.uniform(0.9, 1.1)
    axes = np.array([e, rng.uniform(1.0, max(1.0, e ** 0.5)), 1.0])
    semi = r0 * axes / np.prod(axes) ** (1 / 3)
    lobes = [(np.zeros(3), semi, _rotation(rng))]
    if kind["shape"] == "lobulated":
        for _ in range(int(rng.integers(1, 4))):
            v = rng.normal(size=3)
            v *= rng.uniform(0.35, 0.65) * r0 / (np.linalg.norm(v) + 1e-9)
            lobes.append((v, r0 * rng.uniform(0.4, 0.7, 3), _rotation(rng)))
    pert = kind["radial_modulation"]
    bound = max(float(np.linalg.norm(c)) + float(max(s)) for c, s, _ in lobes) / (1.0 - pert) + 0.5
    return {"r0": r0, "lobes": lobes, "pert": pert, "bound": bound}


def _place_lesions(rng, img, labels, tis, grid: _Grid, organs, kinds, d_min: float) -> list[dict]:
    """Place every kind's lesions in the hosts (first the largest of each kind), then paint them.

    A lesion that finds no room is retried smaller (not below its kind's range) and then dropped,
    except the first lesion of a kind, which may finally shrink to ``d_min`` (mm) so that every
    kind is present."""
    k = grid.k
    step = np.asarray(grid.step)
    host = labels.astype(bool)
    stride = np.maximum(1, np.round(3.0 / step)).astype(int)
    coarse = host[:: stride[0], :: stride[1], :: stride[2]]
    if not coarse.any():
        return []
    cstep = stride * step
    dist = ndimage.distance_transform_edt(coarse, sampling=cstep).astype(np.float32)
    origin = np.array([grid.axes[a][0] for a in range(3)], dtype=float)
    gap = max(float(np.sqrt((step ** 2).sum())) * 1.5, 2.8 / k)
    margin = float(np.sqrt((cstep ** 2).sum())) * 0.5
    min_vox = 4

    plan: list[list] = []  # [kind index, diameter canonical mm, is first of kind]
    for ki, kd in enumerate(kinds):
        lo, hi = kd["size_range_mm"]
        ds = sorted((_log_uniform(rng, lo, hi) / k for _ in range(kd["n_lesions"])), reverse=True)
        plan += [[ki, d, j == 0] for j, d in enumerate(ds)]
    plan.sort(key=lambda t: (not t[2], -t[1]))

    placed_c: list[np.ndarray] = []
    placed_r: list[float] = []
    cluster_c: dict[int, np.ndarray] = {}
    table: list[dict] = []
    for ki, diam, first in plan:
        kd = kinds[ki]
        lo_c = kd["size_range_mm"][0] / k
        exo = rng.random() < 0.08
        done = None
        for attempt in range(12 if first else 8):
            geo = _lesion_geometry(rng, kd, diam / 2)
            rb = geo["bound"]
            # the centre well inside a host (big lesions may be clipped by its surface);
            # later attempts relax the depth, first lesions of a kind may finally shrink
            need = margin + (rb * (0.7 if not exo else 0.3) if attempt < 4 else 0.0)
            cand = np.argwhere(dist > need)
            if kd["layout"] == "clustered" and ki in cluster_c and len(cand):
                pos = origin + cand * cstep
                near = np.sqrt(((pos - cluster_c[ki]) ** 2).sum(1)) < max(25.0 / k, 4.0 * lo_c) + rb
                cand = cand[near] if near.any() and attempt < 6 else cand
            if len(cand) == 0:
                diam = _shrunk(diam, lo_c, d_min / k, first and attempt >= 4)
                continue
            for t in rng.integers(0, len(cand), size=min(48 if first else 24, len(cand))):
                c = origin + cand[t] * cstep + rng.uniform(-0.25, 0.25, 3) * cstep
                if placed_c and np.any(np.linalg.norm(np.asarray(placed_c) - c, axis=1)
                                       < np.asarray(placed_r) + rb + gap):
                    continue
                done = _paint_lesion(rng, img, labels, tis, grid, c, kd, geo, organs, exo, min_vox)
                if done is not None:
                    break
            if done is not None:
                break
            if attempt >= 1:
                diam = _shrunk(diam, lo_c, d_min / k, first and attempt >= 4)
        if done is None:
            continue
        placed_c.append(c)
        placed_r.append(geo["bound"])
        cluster_c.setdefault(ki, c)
        done.update({"kind": ki, "nominal_diameter_mm": float(diam * k)})
        table.append(done)
    return table


def _shrunk(diam: float, range_lo: float, d_min: float, below_range: bool) -> float:
    """The next, 20 % smaller diameter to try: not below the kind's range unless ``below_range``."""
    return max(0.8 * diam, d_min if below_range else min(range_lo, diam))


def lesion_contrast(image: np.ndarray, lesion: np.ndarray, others: np.ndarray, ring_vox) -> float:
    """How far a lesion stands out from its surroundings in ``image`` (HU): the largest of
    |median - ring median| over its core, its outer voxel layer (a rim) and the whole lesion. The
    ring: the voxels between 1 and 2.5 ``ring_vox`` (z, y, x voxels) from the lesion, not in ``others``
    and not touching the lesion; NaN when it is empty."""
    away = ndimage.distance_transform_edt(~lesion, sampling=1.0 / np.maximum(1.0, np.asarray(ring_vox, float)))
    ring = (away > 1.0) & (away <= 2.5) & ~others & ~ndimage.binary_dilation(lesion)
    if not ring.any():
        return float("nan")
    edge = lesion & ~ndimage.binary_erosion(lesion)
    bg = float(np.median(image[ring]))
    return max(abs(float(np.median(image[part])) - bg) for part in (lesion & ~edge, edge, lesion) if part.any())


def _drop_unseen_lesions(clean: np.ndarray, labels: np.ndarray, under: np.ndarray, lesions: list[dict],
                         blur_sigma_vox, noise_sigma: float) -> tuple[list[dict], int]:
    """Unlabel (in place) the lesions the network cannot see, so no target asks for an invisible one.

    A lesion is read on the painted volume blurred as acquired (no noise), clipped to the CT window
    the network reads (``MODEL_WINDOW_HU``): below its floor a lung and ground glass are one flat
    value. It stays a lesion if its :func:`lesion_contrast` is at least ``VISIBLE_HU`` and at least
    ``ROSE_K`` noise sigmas over the square root of its voxel count (Rose's detectability criterion,
    taking the voxels as independent); otherwise its voxels get back the label they were painted
    over. ``clean`` is blurred and clipped in place. Returns the visible lesions' table and how many
    were unlabelled."""
    img = clean
    for axis, sig in enumerate(blur_sigma_vox):
        ndimage.gaussian_filter1d(img, sig, axis=axis, output=img, mode="nearest", truncate=3.0)
    np.clip(img, *MODEL_WINDOW_HU, out=img)
    comps, _ = ndimage.label(labels >= 2, structure=np.ones((3, 3, 3), bool))
    boxes = ndimage.find_objects(comps)
    ring_vox = np.maximum(1.0, 2.0 * np.asarray(blur_sigma_vox, float))
    kept = []
    for les in lesions:
        cid = int(comps[les.pop("_voxel")])
        sl = tuple(slice(max(0, b.start - 3 * int(r) - 2), b.stop + 3 * int(r) + 2) for b, r in zip(boxes[cid - 1], ring_vox))  # holds the ring
        sub = comps[sl]
        mine = sub == cid
        c = lesion_contrast(img[sl], mine, sub > 0, ring_vox)
        need = max(VISIBLE_HU, ROSE_K * noise_sigma / math.sqrt(max(1, int(mine.sum()))))
        les["contrast_hu"] = round(c, 1) if np.isfinite(c) else None
        if np.isfinite(c) and c < need:
            labels[sl][mine] = under[sl][mine]
        else:
            kept.append(les)
    return kept, len(lesions) - len(kept)


def _drop_absent_kinds(labels: np.ndarray, kinds: list[dict], lesions: list[dict]) -> list[dict]:
    """Drop kinds without a placed lesion (a host too small for them) and renumber the labels so
    that the kinds stay 2..1+K; sets each kind's ``n_placed``."""
    for kd in kinds:
        kd["n_placed"] = sum(1 for les in lesions if les["label"] == kd["label"])
    present = [kd for kd in kinds if kd["n_placed"]]
    if len(present) == len(kinds):
        return kinds
    lut = np.arange(256, dtype=np.uint8)
    for i, kd in enumerate(present):
        lut[kd["label"]] = 2 + i
    labels[...] = lut[labels]
    for les in lesions:
        les["label"] = int(lut[les["label"]])
        les["kind"] = les["label"] - 2
    for kd in present:
        kd["label"] = int(lut[kd["label"]])
    return present


def _paint_lesion(rng, img, labels, tis, grid: _Grid, c, kd: dict, geo: dict, organs, exo: bool,
                  min_vox: int) -> dict | None:
    """Paint one lesion of kind ``kd`` at ``c`` (canonical mm); None (nothing painted) if too small."""
    code = int(tis[grid.index_of(c)])
    if code < _HOST:
        return None
    k = grid.k
    sigma = kd["edge_sigma_mm"] / k
    rb = geo["bound"]
    sl = grid.box(c, (rb + 3 * sigma + 1,) * 3)
    if sl is None:
        return None
    step = np.asarray(grid.step)
    r0 = geo["r0"]
    d = grid.coords(sl, c)
    q = lobed_q(d, geo["lobes"])
    bshape = q.shape
    if geo["pert"] > 0:
        n = _smooth_noise(rng, bshape, np.full(3, max(2.0, r0 * 0.6)) / step)
        np.clip(n, -1.0, 1.0, out=n)
        q *= 1.0 + np.float32(geo["pert"]) * n
    sub_t = tis[sl]
    sub_l = labels[sl]
    if exo:
        allowed = (sub_t != _AIR) & (sub_t != _BONE) & (sub_l <= 1)
    else:
        allowed = sub_t >= _HOST
        allowed &= sub_l == 1
    mask = (q < 1.0) & allowed
    lab, nlab = ndimage.label(mask, structure=np.ones((3, 3, 3), bool))
    if nlab > 1:
        sizes = np.bincount(lab.ravel())
        sizes[0] = 0
        mask = lab == int(sizes.argmax())
    n_vox = int(mask.sum())
    if n_vox < min_vox:
        return None
    host_frac = float((sub_t[mask] >= _HOST).mean())
    base = next(o["base_hu"] for o in organs if o["code"] == code)
    val = np.full(bshape, np.float32(base + kd["delta_hu"]), np.float32)
    if kd["texture_hu"] > 0.5:
        val += np.float32(kd["texture_hu"]) * _smooth_noise(rng, bshape, np.full(3, kd["texture_corr_mm"] / k) / step)
    if kd["necrotic"] is not None and r0 * k > 5.0:
        f = kd["necrotic"]["core_fraction"]
        val += np.float32(kd["necrotic"]["delta_hu"]) * np.clip((f - q) / 0.15 + 0.5, 0.0, 1.0)
    if kd["rim"] is not None:
        t = min(0.5, kd["rim"]["thickness_mm"] / k / max(r0, 1e-3))
        val += np.float32(kd["rim"]["delta_hu"]) * np.clip((q - (1.0 - t)) / 0.08 + 0.5, 0.0, 1.0)
    if kd["calcified"]:
        for _ in range(int(rng.integers(1, 6))):
            off = rng.normal(size=3)
            off *= rng.uniform(0.15, 0.7) * r0 / (np.linalg.norm(off) + 1e-9)
            rc = min(float(rng.uniform(0.8, 2.5)) / k, 0.25 * r0)  # a spot, not the whole lesion
            dd = (d[0] - np.float32(off[0])) ** 2 + (d[1] - np.float32(off[1])) ** 2 + (d[2] - np.float32(off[2])) ** 2
            val[dd < rc * rc] = float(rng.uniform(200, 900))
    w = _edge_weight(q, r0, sigma)
    w *= allowed
    w[mask] = np.maximum(w[mask], 0.5)
    w[(q < 1.0) & allowed & ~mask] = 0.0  # fragments cut off the component stay host
    sub_i = img[sl]
    sub_i += w * (val - sub_i)
    sub_l[mask] = kd["label"]
    sp = np.asarray(step) * k
    first_vox = np.argwhere(mask)[0]
    return {
        "_voxel": tuple(int(a.start + v) for a, v in zip(sl, first_vox)),  # internal: finds the lesion again
        "label": int(kd["label"]),
        "centre_vox": tuple(int(v) for v in grid.index_of(c)),
        "diameter_mm": float(2.0 * (3.0 * n_vox * float(np.prod(sp)) / (4 * math.pi)) ** (1 / 3)),
        "n_voxels": n_vox,
        "host_organ": int(code - _HOST),
        "host_fraction": host_frac,
        "exophytic": bool(exo),
        "hu": float(base + kd["delta_hu"]),
    }


def _acquire(rng, img: np.ndarray, grid: _Grid, spacing, noise_sigma: float) -> dict:
    """Partial-volume blur, bias field, offset, noise (white or correlated), clipping; in place."""
    shape = img.shape
    psf_mm = float(rng.uniform(0.3, 0.9))  # in-plane point-spread sigma; the slice profile is ~0.45 voxel
    sig = (float(rng.uniform(0.35, 0.55)), psf_mm / spacing[1], psf_mm / spacing[2])
    correlated = rng.random() < 0.4
    if correlated:  # noise before the blur: its grain follows the point-spread function
        extra = float(rng.uniform(0.0, 0.6))
        sig = (sig[0], sig[1] + extra, sig[2] + extra)
        gain = _gauss_noise_gain(sig[0]) * _gauss_noise_gain(sig[1]) * _gauss_noise_gain(sig[2])
        noise = rng.standard_normal(shape, dtype=np.float32)
        noise *= np.float32(noise_sigma / gain)
        img += noise
        del noise
    for axis in range(3):
        ndimage.gaussian_filter1d(img, sig[axis], axis=axis, output=img, mode="nearest", truncate=3.0)
    bias_amp = float(rng.uniform(0.0, 0.1))
    bias_cell = float(rng.uniform(60, 150))
    if bias_amp > 0.005:
        b = _smooth_noise(rng, shape, bias_cell / np.asarray(grid.step))
        np.clip(b, -2.0, 2.0, out=b)
        b *= np.float32(bias_amp / 2.0)
        b += 1.0
        img *= b
        del b
    offset = float(rng.uniform(-30.0, 30.0))
    img += np.float32(offset)
    if not correlated:
        noise = rng.standard_normal(shape, dtype=np.float32)
        noise *= np.float32(noise_sigma)
        img += noise
        del noise
    np.clip(img, -1024.0, 3000.0, out=img)
    return {"blur_sigma_vox": tuple(float(s) for s in sig), "noise_sigma_hu": noise_sigma,
            "noise_correlated": bool(correlated), "bias_amplitude": bias_amp, "bias_cell_mm": bias_cell,
            "offset_hu": offset}
