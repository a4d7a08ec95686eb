"""Classical one-click baselines, honest versions of what a user could do without a model.

* :func:`region_grow` - "connected threshold" from the click (as ITK's ConnectedThreshold or
  the magic wand of 3D Slicer / ITK-SNAP): the intensity window is the robust mean +- k robust
  std of a small ball around the click on a lightly denoised image; the 6-connected component
  of the click is taken. If it leaks (runs out of the search box or beyond the size cap), the
  window is narrowed and retried; a thin opening cuts one-voxel bridges into neighbours.
  Returns one instance.
* :func:`threshold_cc` - "threshold the whole volume at the clicked lesion's intensity and take
  connected components": the window is estimated from the region-grown lesion, components
  smaller than a 4 mm sphere or larger than 10x the clicked lesion are dropped. Class-agnostic: it finds
  every region with that intensity (other lesions, but also e.g. fluid-filled bowel for a cyst).

Both work on the raw intensities (Hounsfield units for CT), coordinates (z, y, x) voxels,
spacing (z, y, x) mm.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import ndimage

from ..data.instances import relabel_sequential
from ..errors import InputError

__all__ = ["denoise", "grow_with_window", "region_grow", "threshold_cc"]

_CROSS = ndimage.generate_binary_structure(3, 1)


def denoise(image: np.ndarray, spacing: Sequence[float], sigma_mm: float = 0.8) -> np.ndarray:
    """Light Gaussian smoothing (sigma ``sigma_mm`` physical, at most 1 voxel), float32."""
    sig = [min(1.0, sigma_mm / float(s)) for s in spacing]
    sig = [s if s >= 0.3 else 0.0 for s in sig]
    return ndimage.gaussian_filter(np.asarray(image, np.float32), sig, mode="nearest")


def _check_point(image: np.ndarray, point: Sequence[int]) -> tuple[int, int, int]:
    if image.ndim != 3:
        raise InputError(f"expected a 3D (z, y, x) image, got shape {image.shape}")
    p = tuple(int(round(float(c))) for c in point)
    if len(p) != 3 or any(c < 0 or c >= n for c, n in zip(p, image.shape)):
        raise InputError(f"point {tuple(point)} lies outside the volume {image.shape}")
    return p  # type: ignore[return-value]


def _box(shape, point, half_mm, spacing) -> tuple[slice, ...]:
    return tuple(
        slice(max(0, c - int(math.ceil(half_mm / s))), min(n, c + int(math.ceil(half_mm / s)) + 1))
        for c, n, s in zip(point, shape, spacing)
    )


def _ball_stats(sm: np.ndarray, point, spacing, radius_mm: float) -> tuple[float, float]:
    sl = _box(sm.shape, point, radius_mm, spacing)
    grids = np.ogrid[tuple(slice(s.start, s.stop) for s in sl)]
    d2 = sum(((g - c) * float(s)) ** 2 for g, c, s in zip(grids, point, spacing))
    vals = sm[sl][d2 <= radius_mm ** 2]
    med = float(np.median(vals))
    mad = float(np.median(np.abs(vals - med))) * 1.4826
    return med, mad


def region_grow(
    image: np.ndarray,
    point: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    k: float = 3.0,
    radius_mm: float = 2.5,
    max_diameter_mm: float = 90.0,
    smoothed: np.ndarray | None = None,
) -> np.ndarray:
    """Connected-threshold region growing from one click.

    1. Window = robust mean +- ``k`` robust std of a ball of ``radius_mm`` around the click
       (on the lightly denoised image); the 6-connected component of the click is grown.
    2. Half-maximum refinement: the surroundings' intensity is measured on a shell 1-3 voxels
       outside that core; if the contrast is clear, the window edge on the surroundings' side is
       moved to half-way between lesion and surroundings (the usual half-maximum boundary), the
       other edge symmetrically, and the region is grown again.
    3. Leak control: a component that reaches the search box (0.75 x ``max_diameter_mm`` around
       the click) or exceeds a ``max_diameter_mm`` sphere is rejected; the window is narrowed
       and a 6-connected opening cuts thin bridges; as a last resort the leak is clipped to a
       ball around the click.

    Args:
        image: (z, y, x) intensities (HU).
        point: the click (z, y, x) voxel.
        spacing: (z, y, x) mm.
        k: half-width of the initial window in robust standard deviations.
        radius_mm: radius of the ball around the click used for the statistics.
        max_diameter_mm: size cap and search-box size.
        smoothed: ``denoise(image, spacing)`` if already computed (saves time on repeats).

    Returns:
        bool (z, y, x) mask of one connected region containing the click (at least the click).
    """
    return grow_with_window(image, point, spacing, k, radius_mm, max_diameter_mm, smoothed)[0]


def grow_with_window(
    image: np.ndarray,
    point: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    k: float = 3.0,
    radius_mm: float = 2.5,
    max_diameter_mm: float = 90.0,
    smoothed: np.ndarray | None = None,
) -> tuple[np.ndarray, tuple[float, float]]:
    """:func:`region_grow` that also returns the (lo, hi) intensity window it used."""
    image = np.asarray(image)
    p = _check_point(image, point)
    sp = tuple(float(s) for s in spacing)
    half = max_diameter_mm * 0.75
    box = _box(image.shape, p, half, sp)
    if smoothed is None:
        crop = denoise(image[box], sp)
    else:
        crop = np.asarray(smoothed[box], np.float32)
    q = tuple(c - s.start for c, s in zip(p, box))
    med, mad = _ball_stats(crop, q, sp, max(radius_mm, max(sp[1:]) * 1.01))
    floor = max(3.0, 0.02 * abs(med))  # a flat ball (phantom, clipped intensities)
    sd = max(mad, floor)
    cap = (math.pi / 6.0) * max_diameter_mm ** 3 / float(np.prod(sp))
    border = np.zeros(crop.shape, bool)
    for axis, (s, n) in enumerate(zip(box, image.shape)):
        idx = [slice(None)] * 3
        if s.start > 0:
            idx[axis] = 0
            border[tuple(idx)] = True
        if s.stop < n:
            idx[axis] = -1
            border[tuple(idx)] = True

    def component(lo: float, hi: float):
        """(accepted component or None, last component seen)."""
        win = (crop >= lo) & (crop <= hi)
        last = None
        for opened in (False, True):
            m = ndimage.binary_opening(win, _CROSS) if opened else win
            if not m[q]:
                continue
            lab, _ = ndimage.label(m, _CROSS)
            comp = lab == lab[q]
            last = comp
            if comp.sum() <= cap and not (comp & border).any():
                return comp, comp
        return None, last

    core = None
    best = None
    window = (med - k * sd, med + k * sd)
    for kk in (k, k * 0.8, k * 0.6, k * 0.45):
        window = (med - kk * sd, med + kk * sd)
        core, last = component(*window)
        best = last if last is not None else best
        if core is not None:
            break
    if core is not None:
        # half-maximum refinement against the surroundings
        outer = ndimage.binary_dilation(core, _CROSS, iterations=3)
        inner = ndimage.binary_dilation(core, _CROSS, iterations=1)
        shell = outer & ~inner
        if shell.any():
            sur = float(np.median(crop[shell]))
            contrast = sur - med
            if abs(contrast) > 2.0 * k * sd * 0.5 and abs(contrast) > 2 * floor:
                mid = med + 0.5 * contrast
                lo, hi = (med - 0.5 * abs(contrast), mid) if contrast > 0 else (mid, med + 0.5 * abs(contrast))
                refined, _ = component(lo, hi)
                if refined is not None and refined.sum() >= core.sum():
                    core, window = refined, (lo, hi)
        out = np.zeros(image.shape, bool)
        out[box] = ndimage.binary_fill_holes(core)
        return out, window
    out = np.zeros(image.shape, bool)
    if best is None:
        out[p] = True
        return out, window
    # still leaking: keep the part within a ball around the click
    grids = np.ogrid[tuple(slice(0, n) for n in crop.shape)]
    r = max_diameter_mm / 4.0
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, q, sp))
    comp = best & (d2 <= r * r)
    lab, _ = ndimage.label(comp, _CROSS)
    out[box] = lab == lab[q]
    return out, window


def threshold_cc(
    image: np.ndarray,
    point: Sequence[int],
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    min_diameter_mm: float = 4.0,
    max_factor: float = 10.0,
    lo_pct: float = 10.0,
    smoothed: np.ndarray | None = None,
    seed_mask: np.ndarray | None = None,
    window: tuple[float, float] | None = None,
) -> np.ndarray:
    """Global threshold at the clicked lesion's intensity + connected components.

    Args:
        image: (z, y, x) intensities (HU).
        point: the click (z, y, x).
        spacing: (z, y, x) mm.
        min_diameter_mm: components smaller than a sphere of this diameter are dropped.
        lo_pct: see ``seed_mask``.
        window: (lo, hi) intensity window to use with ``seed_mask`` (as returned by
            :func:`grow_with_window`).
        max_factor: components larger than ``max_factor`` x the clicked lesion are dropped
            (organs, background); the clicked lesion is always kept.
        smoothed: ``denoise(image, spacing)`` if already computed.
        seed_mask: the clicked lesion if already grown; the window is then its
            [lo_pct, 100 - lo_pct] intensity percentiles. By default the lesion and the window
            come from :func:`region_grow` (half-maximum window).

    Returns:
        int32 (z, y, x) instance labels 1..K (0 background).
    """
    image = np.asarray(image)
    p = _check_point(image, point)
    sp = tuple(float(s) for s in spacing)
    sm = smoothed if smoothed is not None else denoise(image, sp)
    if seed_mask is not None and window is not None:
        lesion = np.asarray(seed_mask, bool)
        lo, hi = (float(v) for v in window)
    elif seed_mask is not None:
        lesion = np.asarray(seed_mask, bool)
        vals = sm[lesion]
        lo, hi = (float(v) for v in np.percentile(vals, [lo_pct, 100 - lo_pct])) if (
            vals.size >= 5) else (float(vals.min()) - 5.0, float(vals.max()) + 5.0)
    else:
        lesion, (lo, hi) = grow_with_window(image, p, sp, smoothed=sm)
    win = (sm >= lo) & (sm <= hi)
    win = ndimage.binary_opening(win, _CROSS)
    lab, n = ndimage.label(win, _CROSS)
    sizes = np.bincount(lab.ravel(), minlength=n + 1)
    vox = float(np.prod(sp))
    min_vox = max(2, int((math.pi / 6.0) * min_diameter_mm ** 3 / vox))
    max_vox = max_factor * max(int(lesion.sum()), min_vox)
    keep = (sizes >= min_vox) & (sizes <= max_vox)
    keep[0] = False
    # the clicked lesion is always one instance: its own grown mask
    hit = np.unique(lab[lesion])
    keep[hit] = False
    lab = np.where(keep[lab], lab, 0)
    k_max = int(lab.max()) + 1
    lab[lesion] = k_max
    out, _ = relabel_sequential(lab)
    return out
