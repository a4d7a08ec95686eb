"""Grow a small instance's mask out to the lesion's half-contrast edge in the image.

The network finds most small lesions but often draws them too small: on validation phantoms many
missed lesions under 12 mm were covered by a predicted piece lying wholly inside them at 15-40% of
their volume (evidence: docs/experiments.md), so each cost a false positive and a false negative at
IoU 0.5. The network's masks come from 2-cell-wide stride-2 features; the image itself says where a
small lesion ends. This step (numpy/scipy only) reads it, per instance, on the model grid at stride 1:

  1. core: the instance's current mask (refined logits above the edge level; its own coarse cells
     when the refiner drew it empty);
  2. its intensity ``inside`` (median over the core) and ``outside`` (median over a ring
     ``reach_mm``..``2 reach_mm`` from the core, other instances excluded), and the ring's noise
     (scaled MAD);
  3. if ``|inside - outside|`` is at least ``min_contrast`` noise sigmas, the voxels within ``reach_mm``
     of the core whose lightly smoothed intensity lies past the half-contrast level towards
     ``inside`` (and not beyond ``inside`` by more than the contrast, in the smoothed image nor, by
     more than three noise sigmas more, in the raw one: fat, air and bone are not a hypodense
     lesion; nor, raw, two noise sigmas short of the half-contrast level: smoothing darkens the
     tissue next to fat), connected to the core, join the mask;
  4. a growth that fills most of the outer edge of its reach is a leak into similar tissue, not a
     lesion's edge: then nothing is added.

The half-contrast (half-maximum) edge is the classical semi-automatic lesion boundary. This is our
addition to MIQ-SAM3D; ``PredictOptions.grow`` turns it on or off (measured on validation phantoms), with
or without the mask refiner.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

from .postprocess import FULL

MAD_TO_SIGMA = 1.4826


def robust_level(values: np.ndarray) -> tuple[float, float]:
    """Median and noise sigma (scaled median absolute deviation) of some intensities."""
    median = float(np.median(values))
    return median, MAD_TO_SIGMA * float(np.median(np.abs(values - median)))


def grow_to_edge(image: np.ndarray, logits: np.ndarray, level: float = 0.0, blocked: np.ndarray | None = None, *,
                 seed: np.ndarray | None = None, spacing: Sequence[float] = (1.0, 1.0, 1.0), reach_mm: float = 4.0,
                 min_contrast: float = 3.5, smooth: float = 1.2, leak: float = 0.5, min_ring: int = 20) -> np.ndarray:
    """One instance's logits (stride 1, same shape as ``image``) with its mask grown to the edge.

    image: (D, H, W) float intensities of the model grid around the instance (a margin of at least
        ``2 reach_mm`` keeps the ring whole); logits: its mask logits there; level: the edge level;
    blocked: voxels of other instances (never added, not part of the ring); seed: the core to use
        when no logit exceeds ``level`` (the instance's own coarse cells: a refiner may draw a
        lesion smaller than a voxel); spacing: mm per voxel.
    smooth: the Gaussian (voxels of the finest axis) the intensities are read through; leak: the
    fraction of the reach's outer edge a growth may fill. The defaults were chosen on validation
    phantoms (docs/experiments.md).
    Returns a new array: added voxels (a seed core's included) get ``level + 1``; everything else
    is unchanged. Unchanged (a copy) when the core is empty, the ring too small, the contrast too
    low, or the growth leaks.
    """
    image = np.asarray(image, dtype=np.float32)
    logits = np.asarray(logits, dtype=np.float32)
    if image.shape != logits.shape:
        raise ValueError(f"image {image.shape} and logits {logits.shape} must have the same shape")
    out = logits.copy()
    core = logits > level
    if not core.any() and seed is not None:
        core = np.asarray(seed, bool)
    if not core.any():
        return out
    blocked = np.zeros(image.shape, bool) if blocked is None else np.asarray(blocked, bool) & ~core
    dist = ndimage.distance_transform_edt(~core, sampling=tuple(float(s) for s in spacing))
    ring = (dist > reach_mm) & (dist <= 2 * reach_mm) & ~blocked
    if int(ring.sum()) < min_ring:
        return out
    img = ndimage.gaussian_filter(image, smooth / np.asarray(spacing, float) * float(np.min(spacing))) if smooth else image
    inside = float(np.median(img[core]))
    outside, sigma = robust_level(img[ring])
    contrast = inside - outside
    if abs(contrast) < max(min_contrast * sigma, 1e-6):
        return out
    towards = np.sign(contrast) * (img - outside)  # 0 at the surroundings, |contrast| at the core
    # far past the lesion in the raw image (fat, air, bone next to it): smoothing blurs such a
    # voxel into the lesion's range, so the raw value decides; likewise a raw value clearly of the
    # surroundings (smoothing darkens tissue next to fat)
    raw_sigma = robust_level(image[ring])[1]
    raw = np.sign(contrast) * (image - outside)
    plausible = (raw > abs(contrast) / 2 - 2 * raw_sigma) & (raw < 2 * abs(contrast) + 3 * raw_sigma)
    lesion_like = (towards > abs(contrast) / 2) & (towards < 2 * abs(contrast)) & plausible
    cand = (lesion_like & (dist <= reach_mm) & ~blocked) | core
    comp, _ = ndimage.label(cand, structure=FULL)
    grown = np.isin(comp, np.unique(comp[core]))
    rim = (dist > reach_mm - float(np.max(spacing))) & (dist <= reach_mm) & ~blocked
    if rim.any() and float((grown & rim).sum()) > leak * float(rim.sum()):
        return out
    add = grown & ~(logits > level)  # a seed core joins too
    out[add] = np.maximum(out[add], level + 1.0)
    return out
