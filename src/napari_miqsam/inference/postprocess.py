"""From the model's stride-2 slot maps to instances in the original grid.

Steps (all numpy/scipy, no model call):
  1. ``split_instances``: 26-connected components of the foreground of the assembled map (a
     lesion cut by a window border is one connected piece, so one instance);
  2. ``kind_consistency`` (with a kind head): each piece's lesion kind, read by the kind head over
     the piece, is compared with that of the clicked piece; pieces of another kind are dropped;
  3. ``to_original_grid``: instances containing a negative click are removed, and each instance's
     mask is rebuilt at the original resolution inside its bounding box by trilinear interpolation
     of its mask logits: the stride-1 logits a ``refine`` function gives (the mask refiner's,
     ``model/refine.py``, and/or grown to the image's edge, ``inference/grow.py``), else the
     stride-2 foreground probability; either way restricted to the instance's cells dilated by one
     cell into background, so edges are smooth, not blocky.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage

from .prediction import Instance
from .preprocess import GridMap
from .resample import interpolate_separable

FULL = np.ones((3, 3, 3), dtype=bool)


def split_instances(slot: np.ndarray) -> tuple[np.ndarray, int]:
    """Instance ids (int32) from a slot map (0 background, q >= 1 winning query): each connected
    foreground piece is one instance, whatever its winning queries (splitting a piece where they
    change cut one lesion in two far more often than it held two touching lesions apart:
    docs/experiments.md, "Inference settings")."""
    ids, n = ndimage.label(slot > 0, structure=FULL)
    return ids.astype(np.int32), int(n)


def instance_scores(ids: np.ndarray, n: int, score_map: np.ndarray) -> np.ndarray:
    """Mean confidence (of the winning query in its window) over each instance's cells, (n,)."""
    if n == 0:
        return np.zeros(0)
    flat = ids.ravel()
    total = np.bincount(flat, weights=score_map.ravel(), minlength=n + 1)[1:n + 1]
    return total / np.maximum(np.bincount(flat, minlength=n + 1)[1:n + 1], 1)


def select(ids: np.ndarray, scores: np.ndarray, order: np.ndarray) -> tuple[np.ndarray, int, np.ndarray]:
    """Keep the instances ``order`` (0-based indices, in that order), relabelled 1..k."""
    order = np.asarray(order, dtype=int)
    remap = np.zeros(len(scores) + 1, dtype=np.int32)
    remap[order + 1] = np.arange(1, len(order) + 1)
    return remap[ids], len(order), scores[order]


def keep_best(ids: np.ndarray, n: int, scores: np.ndarray, limit: int) -> tuple[np.ndarray, int, np.ndarray]:
    """Keep at most ``limit`` instances (highest score, then largest), relabelled 1..k."""
    if n <= limit:
        return ids, n, scores
    sizes = np.bincount(ids.ravel(), minlength=n + 1)[1:]
    return select(ids, scores, np.lexsort((-sizes, -scores))[:limit])  # primary key: score, then size


def pieces_at(ids: np.ndarray, cells: np.ndarray) -> np.ndarray:
    """Instance ids (1-based, sorted, unique) under each cell of ``cells`` ((P, 3) ints), or, for a
    cell on background, the most frequent id of its 3x3x3 neighbourhood (a click on an edge)."""
    found = set()
    for c in np.asarray(cells, dtype=int).reshape(-1, 3):
        c = np.clip(c, 0, np.asarray(ids.shape) - 1)
        if ids[tuple(c)]:
            found.add(int(ids[tuple(c)]))
            continue
        box = ids[tuple(slice(max(0, v - 1), v + 2) for v in c)]
        near = box[box > 0]
        if near.size:
            found.add(int(np.bincount(near).argmax()))
    return np.array(sorted(found), dtype=int)


def kind_consistency(ids: np.ndarray, n: int, kind_probs: np.ndarray, clicked: np.ndarray,
                     fallback: np.ndarray | None = None) -> np.ndarray:
    """How much each piece is of the clicked piece's lesion kind, (n,) in [0, 1].

    kind_probs: (K, *ids.shape) P(kind_k | cell) from the kind head (lesion kinds only, not
    renormalised). A piece's kind distribution ``q`` is its kind mass summed over its cells and
    normalised over the kinds; each clicked piece (``clicked``, 1-based ids) is a prototype ``p``,
    its own ``q``, or ``fallback`` (the clicks' own kind distribution) is the one prototype when no
    piece is clicked. Returns the largest ``q . p / max(p)`` over the prototypes: 1 for a piece
    wholly of a prototype's main kind, ~0 for one of another kind than every clear prototype, and
    never far below 1 when a prototype is undecided (then the kind cannot be told and nothing
    should be dropped for it). Several clicked pieces keep what is like any of them: a user who
    clicks a second lesion asks for lesions like it too, not like the average of the two.
    """
    if n == 0:
        return np.zeros(0)
    # each piece's kind mass: one bincount per kind (ndimage.sum with an index took 4x as long)
    flat = ids.ravel()
    mass = np.stack([np.bincount(flat, weights=k.ravel(), minlength=n + 1)[1:n + 1] for k in kind_probs], axis=1)
    q = mass / np.maximum(mass.sum(1, keepdims=True), 1e-8)  # (n, K)
    clicked = np.asarray(clicked, dtype=int)
    if clicked.size:
        protos = q[clicked - 1]
    elif fallback is not None:
        protos = np.asarray(fallback, dtype=float).reshape(1, -1)
        protos = protos / max(float(protos.sum()), 1e-8)
    else:
        return np.ones(n)
    agree = (q @ protos.T) / np.maximum(protos.max(1), 1e-8)  # (n, prototypes)
    return np.clip(agree.max(1), 0.0, 1.0)


#: refine(k, lo, hi) -> instance k's logits at stride 1 over stride-2 cells [lo, hi) (model/refine.py,
#: inference/grow.py), or None: that instance's upsampled stride-2 foreground is its mask
Refine = Callable[[int, tuple, tuple], "np.ndarray | None"]


def to_original_grid(ids: np.ndarray, n: int, fg: np.ndarray, scores: np.ndarray, grid: GridMap,
                     stride: int = 2, negative: np.ndarray | None = None,
                     refine: Refine | None = None, mask_level: float = 0.0) -> list[Instance]:
    """Rebuild each instance at the original resolution (see module docstring).

    ids/fg: (d2, h2, w2) instance ids and foreground probability on the stride-``stride`` model map.
    negative: (P, 3) original voxel coordinates; an instance containing one is dropped.
    refine: one instance's stride-1 logits, refined and/or grown (None, or None returned for an
        instance: interpolate ``fg``).
    mask_level: the logit a voxel must exceed to be inside (0: probability 0.5; negative: larger masks).
    """
    instances = []
    neg = np.round(np.asarray(negative, float)).astype(int).reshape(-1, 3) if negative is not None else np.zeros((0, 3), int)
    for k, sl in enumerate(ndimage.find_objects(ids, max_label=n), start=1):
        if sl is None:
            continue
        lo = [max(0, s.start - 1) for s in sl]
        hi = [min(ids.shape[a], s.stop + 1) for a, s in enumerate(sl)]
        cells = tuple(slice(a, b) for a, b in zip(lo, hi))
        member = ids[cells] == k
        grown = ndimage.binary_dilation(member, structure=FULL) & ((ids[cells] == 0) | member)
        ranges = [grid.cells_to_original(a, lo[a], hi[a], stride) for a in range(3)]
        coords = [grid.cell_coords(a, r[0], r[1], stride) - lo[a] for a, r in enumerate(ranges)]
        logits = refine(k, tuple(lo), tuple(hi)) if refine is not None else None
        if logits is not None:
            logits = logits.astype(np.float32, copy=False)
            fine = [grid.cell_coords(a, r[0], r[1], 1) - stride * lo[a] for a, r in enumerate(ranges)]
            inside = interpolate_separable(logits, tuple(fine)) > mask_level
        else:
            inside = interpolate_separable(fg[cells].astype(np.float32), tuple(coords)) > 1.0 / (1.0 + np.exp(-mask_level))
        near = [np.clip(np.round(c).astype(int), 0, member.shape[a] - 1) for a, c in enumerate(coords)]
        allowed = grown[np.ix_(*near)]
        mask = inside & allowed
        if not mask.any():  # a sub-voxel instance: keep its nearest original voxels
            mask = member[np.ix_(*near)]
            if not mask.any():
                continue
        bbox = tuple(slice(r[0], r[1]) for r in ranges)
        # crop to the mask's own bounding box
        nz = [np.nonzero(mask.any(axis=tuple(b for b in range(3) if b != a)))[0] for a in range(3)]
        tight = tuple(slice(int(i[0]), int(i[-1]) + 1) for i in nz)
        mask = mask[tight]
        bbox = tuple(slice(b.start + t.start, b.start + t.stop) for b, t in zip(bbox, tight))
        if len(neg):
            inside = np.all([(neg[:, a] >= bbox[a].start) & (neg[:, a] < bbox[a].stop) for a in range(3)], axis=0)
            hit = any(mask[tuple(p[a] - bbox[a].start for a in range(3))] for p in neg[inside])
            if hit:
                continue
        instances.append(Instance(float(scores[k - 1]), bbox, mask))
    return instances
