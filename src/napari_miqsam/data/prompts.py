"""Click simulation, shared by evaluation and training.

A simulated user clicks one lesion: at its centre (the interior voxel farthest from the
boundary), somewhere well inside it, or close to its boundary (a sloppy click, still inside).
Distances are physical (mm, ``sampling=spacing``), computed on the instance's bounding box only,
so a click costs little even on a 512 x 512 x 800 volume.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from ..errors import InputError
from .instances import bbox_of

__all__ = ["CLICK_MODES", "simulate_click", "simulate_clicks"]

CLICK_MODES: tuple[str, ...] = ("center", "interior", "boundary")


def simulate_click(
    instance_mask: np.ndarray,
    mode: str,
    rng: np.random.Generator,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
) -> tuple[int, int, int]:
    """One click (z, y, x voxel index) inside ``instance_mask``.

    Args:
        instance_mask: bool (z, y, x), True on ONE instance (it need not be connected).
        mode: ``'center'`` (deterministic: the voxel farthest from the boundary), ``'interior'``
            (random voxel at >= 40% of that maximum distance), ``'boundary'`` (random voxel
            inside, within ~2 in-plane voxels of the boundary).
        rng: numpy Generator (the only source of randomness).
        spacing: (z, y, x) mm, used for the distances.

    Returns:
        Python ints (z, y, x), always a voxel where ``instance_mask`` is True.

    Raises:
        InputError: empty mask or unknown mode.
    """
    if mode not in CLICK_MODES:
        raise InputError(f"unknown click mode {mode!r}; use one of {CLICK_MODES}")
    mask = np.asarray(instance_mask, bool)
    box = bbox_of(mask)
    if box is None:
        raise InputError("cannot click an empty instance mask")
    crop = np.pad(mask[box], 1)  # the frame makes the bounding box edge count as boundary
    sp = tuple(float(s) for s in spacing)
    if len(sp) != mask.ndim:
        sp = (sp + (1.0,) * mask.ndim)[: mask.ndim]
    dist = ndimage.distance_transform_edt(crop, sampling=sp)
    inside = np.flatnonzero(crop.ravel())
    d_in = dist.ravel()[inside]
    if mode == "center":
        flat = inside[int(np.argmax(d_in))]
    elif mode == "interior":
        cand = inside[d_in >= 0.4 * float(d_in.max())]
        flat = cand[int(rng.integers(0, cand.size))]
    else:
        thr = max(2.0 * min(sp), float(d_in.min()))
        cand = inside[d_in <= thr + 1e-6]
        flat = cand[int(rng.integers(0, cand.size))]
    idx = np.unravel_index(int(flat), crop.shape)
    return tuple(int(i) - 1 + int(s.start) for i, s in zip(idx, box))  # type: ignore[return-value]


def simulate_clicks(
    instance_mask: np.ndarray,
    n: int,
    rng: np.random.Generator,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    modes: Sequence[str] = CLICK_MODES,
) -> list[tuple[tuple[int, int, int], str]]:
    """``n`` clicks cycling through ``modes``; returns [(point, mode), ...]."""
    return [
        (simulate_click(instance_mask, modes[i % len(modes)], rng, spacing), modes[i % len(modes)])
        for i in range(int(n))
    ]
