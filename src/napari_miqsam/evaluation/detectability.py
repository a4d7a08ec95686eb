"""How visible each lesion is in its image: a reference observer for "could anything find it?".

For a lesion of known shape, the contrast statistic is ``t = mean(organ ring 1.5-5 mm outside it) -
mean(inside it)``. The same statistic at the lesion's shape moved to many places in lesion-free
organ gives its null distribution (noise, organ texture, vessels, drift, blur: whatever the image
has). The lesion's detectability is

    d' = |t - mean(null)| / std(null)

the separation, in null standard deviations, between the lesion and empty organ for an observer
that knows the lesion's exact shape and is told to look there. An observer that must also search
the organ has about ``organ volume / lesion volume`` independent places to look; to keep its
expected false positives at ``f`` per search it needs ``z = Phi^-1(1 - f / places)``, and finds the
lesion with probability ``Phi(d' - z)`` (:func:`search_recall`).

This is a yardstick for the data, not a bound proven for every model: the mean contrast is the
best linear statistic only for a flat lesion in white noise (a rim-enhancing lesion or strongly
correlated noise lets a better filter do somewhat better), while a real model knows neither the
shape nor the size it is looking for (so does worse). numpy / scipy only; no model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.stats import norm

RING_MM = (1.5, 5.0)
MIN_NULL = 30  # fewer lesion-free placements than this: no null, d' is NaN


@dataclass
class Visibility:
    """One lesion: its size, its contrast statistic and how far that stands from empty organ."""

    label: int  # the instance id in ``lesions``
    voxels: int
    diameter_mm: float  # equivalent sphere
    contrast: float  # t = ring mean - lesion mean (HU); > 0 for a darker lesion
    null_mean: float
    null_std: float
    n_null: int
    places: float  # organ voxels / lesion voxels: independent places a searcher must look
    d_prime: float  # NaN: no room in the organ for MIN_NULL lesion-free placements, or the lesion's
    # own ring is mostly outside the organ (a lesion on its surface)


def _shell(mask: np.ndarray, spacing: Sequence[float],
           ring_mm: tuple[float, float]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Voxel offsets (relative to the box corner) of a lesion mask and of its ring, in a box
    padded by the ring's outer radius; and that padding (voxels per axis)."""
    sp = np.asarray(spacing, float)
    pad = np.ceil(ring_mm[1] / sp).astype(int) + 1
    box = np.pad(mask, [(p, p) for p in pad])
    dist = ndimage.distance_transform_edt(~box, sampling=sp)
    ring = (dist > ring_mm[0]) & (dist < ring_mm[1])
    return np.argwhere(box), np.argwhere(ring), pad


def _statistic(image: np.ndarray, organ: np.ndarray, inside: np.ndarray, ring: np.ndarray) -> float | None:
    """Ring mean - inside mean at absolute voxel indices (ring voxels outside the organ left out);
    None when fewer than half the ring is organ."""
    r = tuple(ring.T)
    ok = organ[r]
    if ok.sum() < 0.5 * len(ring):
        return None
    return float(image[r][ok].mean() - image[tuple(inside.T)].mean())


def lesion_visibility(image: np.ndarray, labels: np.ndarray, lesions: np.ndarray, spacing: Sequence[float], *,
                      organ_label: int = 1, placements: int = 200, seed: int = 0,
                      ring_mm: tuple[float, float] = RING_MM) -> list[Visibility]:
    """One :class:`Visibility` per instance present in ``lesions`` (instance ids 1..K, e.g. from
    ``instances_of``), in id order.

    image: (z, y, x) intensities; labels: the case's label map (``organ_label`` marks the organ the
    lesions lie in; any other non-zero label is not organ). The null places each lesion's shape at
    up to ``placements`` random organ voxels where the whole shape is organ and at least half its
    ring is; ``seed`` fixes them.
    """
    image = np.asarray(image, np.float32)
    labels = np.asarray(labels)
    if image.shape != labels.shape or image.shape != lesions.shape:
        raise ValueError(f"shape mismatch: image {image.shape}, labels {labels.shape}, lesions {lesions.shape}")
    sp = np.asarray(spacing, float)
    organ = labels == organ_label
    organ_voxels = int(organ.sum())
    depth = ndimage.distance_transform_edt(organ, sampling=sp)  # mm to the nearest non-organ voxel
    rng = np.random.default_rng(seed)
    shape = np.asarray(image.shape)
    out = []
    for j, sl in enumerate(ndimage.find_objects(lesions), start=1):
        if sl is None:
            continue
        mask = lesions[sl] == j
        n = int(mask.sum())
        inside, ring, pad = _shell(mask, sp, ring_mm)
        corner = np.array([s.start for s in sl]) - pad
        # the lesion where it is (ring voxels beyond the image edge dropped)
        ring_here = ring + corner
        keep = np.all((ring_here >= 0) & (ring_here < shape), axis=1)
        t = _statistic(image, organ, inside + corner, ring_here[keep])
        # the same shape in empty organ
        half = (np.array(mask.shape) // 2) + pad
        reach = float(np.sqrt((((inside - half) * sp) ** 2).sum(1)).max())  # mm from the box centre
        centres = np.argwhere(depth > reach)  # the whole shape fits in organ around these
        null = []
        tries = min(len(centres), placements * 5)
        for c in centres[rng.integers(0, len(centres), size=tries)] if len(centres) else []:
            at = c - half
            if np.any(at < 0) or np.any(at + 2 * pad + np.array(mask.shape) > shape):
                continue  # the box (ring included) must lie in the image; ``depth`` already keeps the shape in organ
            s = _statistic(image, organ, inside + at, ring + at)
            if s is not None:
                null.append(s)
                if len(null) == placements:
                    break
        null_arr = np.asarray(null)
        mu = float(null_arr.mean()) if len(null_arr) else float("nan")
        sd = float(null_arr.std(ddof=1)) if len(null_arr) > 1 else float("nan")
        enough = len(null_arr) >= MIN_NULL and t is not None and sd > 0
        out.append(Visibility(
            label=j, voxels=n,
            diameter_mm=float(2 * (3 * n * sp.prod() / (4 * np.pi)) ** (1 / 3)),
            contrast=float(t) if t is not None else float("nan"),
            null_mean=mu, null_std=sd, n_null=len(null_arr),
            places=organ_voxels / max(n, 1),
            d_prime=abs(t - mu) / sd if enough else float("nan"),
        ))
    return out


def search_recall(v: Visibility, false_positives: float = 0.1) -> float:
    """Probability that an observer who knows the lesion's shape, searching every place in the
    organ with ``false_positives`` expected false alarms, finds it: ``Phi(d' - z)``. A lesion whose
    d' could not be measured (NaN: too large for a null, or on the organ's surface) counts as found,
    so the yardstick errs on the generous side."""
    if not np.isfinite(v.d_prime):
        return 1.0
    z = norm.isf(false_positives / max(v.places, 1.0))
    return float(norm.cdf(v.d_prime - z))


def expected_row_f1(recalls: Sequence[float], false_positives: float = 0.1) -> float:
    """Expected instance F1 of one evaluation row (one lesion class of one case) for a searcher:
    the clicked lesion (drawn uniformly, as ``evaluate`` does) is always found, every other one
    with its ``recalls`` probability, plus ``false_positives`` expected false alarms; the ratio of
    expectations 2 tp / (2 tp + fn + fp) (mean over which lesion is clicked)."""
    r = np.asarray(recalls, float)
    if r.size == 0:
        return 1.0
    f1 = []
    for k in range(r.size):
        tp = 1.0 + r.sum() - r[k]
        fn = r.size - tp
        f1.append(2 * tp / (2 * tp + fn + false_positives))
    return float(np.mean(f1))
