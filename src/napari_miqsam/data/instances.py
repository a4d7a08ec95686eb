"""Instances (26-connected components) of one or more semantic classes."""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage

__all__ = ["instances_of", "relabel_sequential", "bbox_of"]


def relabel_sequential(labels: np.ndarray, min_size: int = 0) -> tuple[np.ndarray, int]:
    """Drop components smaller than ``min_size`` voxels and renumber the rest 1..K.

    Args:
        labels: integer instance label volume (0 = background).
        min_size: minimum instance size in voxels (0 keeps all).

    Returns:
        (int32 label volume of the same shape, K).
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int32), 0
    n = int(labels.max()) if labels.size else 0
    if n <= 0:
        return np.zeros(labels.shape, np.int32), 0
    counts = np.bincount(labels.ravel().astype(np.intp, copy=False), minlength=n + 1)
    keep = counts >= max(1, int(min_size))
    keep[0] = False
    remap = np.zeros(n + 1, np.int32)
    k = int(keep.sum())
    remap[keep] = np.arange(1, k + 1, dtype=np.int32)
    return remap[labels], k


def instances_of(
    labels: np.ndarray, cls: int | Sequence[int], min_size: int = 0
) -> tuple[np.ndarray, int]:
    """26-connected components of the voxels whose class is ``cls`` (or any of ``cls``).

    Args:
        labels: (z, y, x) integer class volume (e.g. KiTS: 0 bg, 1 organ, 2 tumour, 3 cyst).
        cls: one class id or several (their union forms the components).
        min_size: components with fewer voxels are dropped.

    Returns:
        (int32 instance labels 1..K with 0 background, K), numbered consecutively in scan order.
    """
    labels = np.asarray(labels)
    classes = [int(cls)] if np.isscalar(cls) else [int(c) for c in cls]  # type: ignore[arg-type]
    if len(classes) == 1:
        mask = labels == classes[0]
    else:
        mask = np.isin(labels, classes)
    structure = np.ones((3,) * labels.ndim, bool)
    inst, n = ndimage.label(mask, structure=structure)
    inst = inst.astype(np.int32, copy=False)
    if min_size > 1 and n:
        return relabel_sequential(inst, min_size)
    return inst, int(n)


def bbox_of(mask: np.ndarray, pad: int = 0) -> tuple[slice, ...] | None:
    """Bounding box slices of the True voxels of ``mask`` (grown by ``pad``), None if empty."""
    mask = np.asarray(mask, bool)
    out = []
    for axis in range(mask.ndim):
        other = tuple(a for a in range(mask.ndim) if a != axis)
        idx = np.flatnonzero(mask.any(axis=other))
        if idx.size == 0:
            return None
        out.append(slice(max(0, int(idx[0]) - pad), min(mask.shape[axis], int(idx[-1]) + 1 + pad)))
    return tuple(out)
