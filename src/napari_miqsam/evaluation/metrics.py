"""Segmentation metrics (pure numpy / scipy).

Conventions: masks are bool (z, y, x); instance volumes are integer labels (0 background);
spacing is (z, y, x) in mm. Empty-vs-empty is a perfect score (1.0) for Dice, NSD and the
instance scores; predicting nothing where something exists scores 0.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

__all__ = [
    "dice",
    "instance_scores",
    "match_instances",
    "nsd",
    "surface_distances",
    "wrong_class_rate",
]


def dice(pred: np.ndarray, gt: np.ndarray) -> float:
    """Dice = 2|P & G| / (|P| + |G|); 1.0 when both are empty."""
    p = np.asarray(pred, bool)
    g = np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    sp, sg = int(p.sum()), int(g.sum())
    if sp + sg == 0:
        return 1.0
    return 2.0 * int(np.logical_and(p, g).sum()) / (sp + sg)


def _union_box(a: np.ndarray, b: np.ndarray, margin: Sequence[int]) -> tuple[slice, ...]:
    u = a | b
    out = []
    for axis in range(u.ndim):
        other = tuple(i for i in range(u.ndim) if i != axis)
        idx = np.flatnonzero(u.any(axis=other))
        out.append(slice(max(0, int(idx[0]) - margin[axis]),
                         min(u.shape[axis], int(idx[-1]) + 1 + margin[axis])))
    return tuple(out)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Voxels of ``mask`` with a 6-neighbour outside it (outside the array counts as outside)."""
    eroded = ndimage.binary_erosion(mask, structure=ndimage.generate_binary_structure(mask.ndim, 1),
                                    border_value=0)
    return mask & ~eroded


def surface_distances(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float]
) -> tuple[np.ndarray, np.ndarray]:
    """Distances (mm) from each pred surface voxel to the gt surface, and vice versa.

    Both masks must be non-empty. The work is done on the union bounding box grown by one voxel
    (every surface voxel lies inside it, so the distances are exact).
    """
    p = np.asarray(pred, bool)
    g = np.asarray(gt, bool)
    sp = tuple(float(s) for s in spacing)
    box = _union_box(p, g, [1] * p.ndim)
    p, g = p[box], g[box]
    sp_p, sp_g = _surface(p), _surface(g)
    d_to_g = ndimage.distance_transform_edt(~sp_g, sampling=sp)
    d_to_p = ndimage.distance_transform_edt(~sp_p, sampling=sp)
    return d_to_g[sp_p], d_to_p[sp_g]


def nsd(
    pred: np.ndarray, gt: np.ndarray, spacing: Sequence[float], tolerance_mm: float
) -> float:
    """Normalised surface Dice at ``tolerance_mm``.

    NSD = (#pred-surface voxels within tolerance of the gt surface + #gt-surface voxels within
    tolerance of the pred surface) / (#pred-surface + #gt-surface). Surface voxels are found by
    6-connected erosion; distances are Euclidean in mm (anisotropic spacing). Both empty -> 1.0,
    exactly one empty -> 0.0.
    """
    p = np.asarray(pred, bool)
    g = np.asarray(gt, bool)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    has_p, has_g = bool(p.any()), bool(g.any())
    if not has_p and not has_g:
        return 1.0
    if not has_p or not has_g:
        return 0.0
    dp, dg = surface_distances(p, g, spacing)
    tol = float(tolerance_mm) + 1e-6
    return float(((dp <= tol).sum() + (dg <= tol).sum()) / (dp.size + dg.size))


def _compact(labels: np.ndarray) -> tuple[np.ndarray, int]:
    """Renumber the non-zero labels of a 1D array 1..K (order preserved)."""
    ids, inv = np.unique(labels, return_inverse=True)
    if ids.size and ids[0] == 0:
        return inv.astype(np.intp), int(ids.size - 1)
    return inv.astype(np.intp) + 1, int(ids.size)


def iou_matrix(pred_labels: np.ndarray, gt_labels: np.ndarray) -> np.ndarray:
    """IoU (P x G) between the (compacted, sorted by id) predicted and gt instances."""
    p = np.asarray(pred_labels)
    g = np.asarray(gt_labels)
    if p.shape != g.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs gt {g.shape}")
    sel = (p != 0) | (g != 0)
    pv, n_p = _compact(p[sel].ravel())
    gv, n_g = _compact(g[sel].ravel())
    if n_p == 0 or n_g == 0:
        return np.zeros((n_p, n_g))
    joint = np.bincount(pv * (n_g + 1) + gv, minlength=(n_p + 1) * (n_g + 1)).reshape(
        n_p + 1, n_g + 1
    )
    size_p = joint.sum(axis=1)[1:]
    size_g = joint.sum(axis=0)[1:]
    inter = joint[1:, 1:].astype(float)
    union = size_p[:, None] + size_g[None, :] - inter
    return inter / np.maximum(union, 1)


def match_instances(
    pred_labels: np.ndarray, gt_labels: np.ndarray, iou: float = 0.5
) -> tuple[int, int, int]:
    """One-to-one matching (Hungarian on IoU); a pair counts when IoU >= ``iou``.

    Returns:
        (tp, fp, fn): matched pairs, unmatched predictions, unmatched gt instances.
    """
    m = iou_matrix(pred_labels, gt_labels)
    n_p, n_g = m.shape
    if n_p == 0 or n_g == 0:
        return 0, n_p, n_g
    rows, cols = linear_sum_assignment(m, maximize=True)
    tp = int((m[rows, cols] >= iou).sum())
    return tp, n_p - tp, n_g - tp


def instance_scores(
    pred_labels: np.ndarray, gt_labels: np.ndarray, iou: float = 0.5
) -> dict[str, float]:
    """Instance recall, precision and F1 (with tp, fp, fn).

    recall = tp / (tp + fn), precision = tp / (tp + fp), F1 = 2tp / (2tp + fp + fn); no gt and
    no prediction -> all 1.0; a ratio with an empty denominator is 1.0 when the other kind of
    error is also absent, else 0.0 (e.g. predicting nothing on a case with lesions: 0, 0, 0).
    """
    tp, fp, fn = match_instances(pred_labels, gt_labels, iou)
    if tp + fp + fn == 0:
        return {"recall": 1.0, "precision": 1.0, "f1": 1.0, "tp": 0, "fp": 0, "fn": 0}
    recall = tp / (tp + fn) if tp + fn else (1.0 if fp == 0 else 0.0)
    precision = tp / (tp + fp) if tp + fp else (1.0 if fn == 0 else 0.0)
    f1 = 2 * tp / (2 * tp + fp + fn)
    return {"recall": float(recall), "precision": float(precision), "f1": float(f1),
            "tp": tp, "fp": fp, "fn": fn}


def wrong_class_rate(pred_mask: np.ndarray, labels: np.ndarray, target_class: int) -> float:
    """Fraction of predicted voxels on lesions of ANOTHER lesion class (label >= 2, != target).

    0.0 for an empty prediction. With KiTS labels and target 2 (tumour), the cyst voxels (3)
    count as wrong-class; organ and background voxels do not (they are ordinary false
    positives, already in Dice and precision).
    """
    p = np.asarray(pred_mask, bool)
    lab = np.asarray(labels)
    if p.shape != lab.shape:
        raise ValueError(f"shape mismatch: pred {p.shape} vs labels {lab.shape}")
    n = int(p.sum())
    if n == 0:
        return 0.0
    on = lab[p]
    return float(((on >= 2) & (on != int(target_class))).sum() / n)
