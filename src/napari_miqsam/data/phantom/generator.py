"""``make_phantom``: assembles anatomy, lesions and acquisition into one labelled case."""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ...errors import InputError
from .acquisition import acquire, sample_spacing
from .anatomy import Canvas, Tissue, paint_abdomen
from .case import CYST, ORGAN, TUMOUR, Case
from .geometry import _check_triplet, _Grid, _log_uniform, _smooth_noise, affine_from_spacing
from .lesions import place_lesions

__all__ = ["FOV_MM", "SMALL_SHAPE", "make_phantom"]

#: Physical field of view (z, y, x) in mm of a default case.
FOV_MM: tuple[float, float, float] = (120.0, 180.0, 180.0)
#: The phantoms' looks (:func:`make_phantom`): the evaluation look and two wider ones for training.
LOOKS = ("default", "varied", "wide")

#: A small shape for tests and the napari sample data (fast: well under 0.3 s).
SMALL_SHAPE: tuple[int, int, int] = (32, 64, 64)


def make_phantom(
    seed: int,
    shape: Sequence[int] | None = None,
    spacing: Sequence[float] | None = None,
    *,
    name: str | None = None,
    look: str = "default",
) -> Case:
    """Generate one synthetic abdominal CT case.

    Args:
        seed: any int; the case is a deterministic function of (seed, shape, spacing); the
            anatomy (in canonical mm) depends on the seed only.
        shape: (z, y, x) voxels; default: ``round(FOV_MM / spacing)``.
        spacing: (z, y, x) mm; default: drawn by :func:`sample_spacing`.
        name: case name (default ``phantom_<seed>``).
        look: one of :data:`LOOKS`. ``'default'``: the evaluation phantoms (and stage 9's
            training data). For training only: ``'varied'`` (``--data phantom-varied``), tumours
            of varied look (round, sharp or homogeneous too; ``lesions.py``); ``'wide'``
            (``--data phantom-wide``), varied and wider still: tumour edges 0-5 mm and texture
            0-12 HU, an extra organ texture (1-3 scales of 1.5-15 mm, 0-8 HU each), noise 5-40 HU
            with an in-plane grain of 0-1.2 mm (``acquisition.acquire``).

    Returns:
        A :class:`Case` with ``image`` float32 HU, ``labels`` uint8 (0/1/2/3), ``spacing``,
        ``affine`` and ``meta`` (phase, organ HU, noise sigma, the lesion table with each
        lesion's class, centre voxel, diameter (mm) and noise-free HU).

    The anatomy always fills the field of view: a grid smaller than 120 x 180 x 180 mm holds a
    proportionally smaller patient (``meta['scale']``), so tiny test volumes still show every
    structure.
    """
    if look not in LOOKS:
        raise InputError(f"look must be one of {', '.join(LOOKS)}, got {look!r}")
    wide = look == "wide"
    # one independent stream per stage, so that e.g. the spacing never shifts the anatomy
    seq = np.random.SeedSequence(int(seed) & 0xFFFFFFFFFFFFFFFF)
    r_geo, r_anat, r_les, r_tex, r_noise, r_wide = (np.random.default_rng(s) for s in seq.spawn(6))
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

    img = np.empty(shape, np.float32)
    img.fill(-1000.0)
    canvas = Canvas(grid=grid, image=img, tissue=np.zeros(shape, np.uint8))
    att, organ, vessel_hu = paint_abdomen(canvas, r_anat, r_tex)

    labels = np.zeros(shape, np.uint8)
    if organ.box is not None:
        labels[organ.box][canvas.tissue[organ.box] == Tissue.ORGAN] = ORGAN
        if wide:
            _extra_organ_texture(img, labels, organ.box, grid, r_wide)
    lesions = place_lesions(r_les, img, labels, grid, organ.box, att.organ_hu, look != "default", wide)
    scan = acquire(img, grid, spacing, r_noise, wide)

    meta = {
        "generator": "napari_miqsam.data.phantom",
        "seed": int(seed),
        "scale": float(k),
        "phase": att.phase,
        "organ_hu": att.organ_hu,
        "vessel_hu": float(vessel_hu),
        "noise_sigma": scan.noise_sigma,
        "blur_sigma_vox": scan.blur_sigma_vox,
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


def _extra_organ_texture(img, labels, box, grid: _Grid, rng: np.random.Generator) -> None:
    """Add a multi-scale organ texture inside the organ, in place: 1-3 octaves of smooth noise,
    each with features of 1.5-15 mm (log-uniform) and 0-8 HU, as parenchyma mottles at several
    scales at once (perfusion, fat, fibrosis) rather than at the one scale of the base texture."""
    sub = img[box]
    organ = labels[box] == ORGAN
    for _ in range(int(rng.integers(1, 4))):
        cell = _log_uniform(rng, 1.5, 15.0)
        tex = _smooth_noise(rng, sub.shape, np.full(3, cell) / np.asarray(grid.step))
        sub[organ] += np.float32(rng.uniform(0.0, 8.0)) * tex[organ]
