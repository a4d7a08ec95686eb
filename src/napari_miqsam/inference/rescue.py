"""Exemplar-relative rescue: a piece the kind gate would drop stays when it looks like the clicked one.

    keep[dropped] = contrast_matches(ids, image, clicked, dropped + 1, ratio=CONTRAST_RATIO)  # 0-based dropped

The kind head reads a lesion's kind against the two fixed kinds it was trained on (tumour, cyst). On
scans it was not made from that split can run through one real class: on the LiTS case of
``miqsam fetch-real-ct`` a click on the largest (heterogeneous) tumour had the gate drop most of the
smaller, darker tumours as "cysts" (docs/experiments.md, "Exemplar-relative rescue"). This step asks
the image instead of the head, relative to the exemplar the user clicked: a dropped piece whose
contrast to its surroundings (median inside minus median of a ring around it, on the stride-2 image)
has the same sign as the clicked piece's and lies within ``ratio`` of it is kept. Pieces of a kind
that really differs (a cyst's contrast is several times a tumour's, or of the other sign) stay
dropped. Off by default (``PredictOptions.rescue``): on the out-of-family yardstick it measured
within noise and in family it traded precision for recall. Numpy/scipy only, no model call.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .options import CONTRAST_RATIO

RING_CELLS = 2  # the surroundings: a ring this many stride-2 cells wide around the piece
_BALL = ndimage.generate_binary_structure(3, 1)


def piece_contrast(ids: np.ndarray, image: np.ndarray, pieces: np.ndarray, ring: int = RING_CELLS) -> np.ndarray:
    """Median image value inside each piece of ``pieces`` (1-based ids) minus the median over a ring
    ``ring`` cells wide around it that no piece covers; NaN where the ring is empty. (P,)."""
    pieces = np.asarray(pieces, dtype=int).reshape(-1)
    out = np.full(len(pieces), np.nan)
    boxes = ndimage.find_objects(ids)
    for j, k in enumerate(pieces):
        sl = boxes[k - 1] if k - 1 < len(boxes) else None
        if sl is None:
            continue
        box = tuple(slice(max(0, s.start - ring), min(n, s.stop + ring)) for s, n in zip(sl, ids.shape))
        sub = ids[box]
        member = sub == k
        around = ndimage.binary_dilation(member, _BALL, iterations=ring) & (sub == 0)
        if around.any():
            img = image[box]
            out[j] = float(np.median(img[member]) - np.median(img[around]))
    return out


def contrast_matches(ids: np.ndarray, image: np.ndarray, clicked: np.ndarray, candidates: np.ndarray,
                     ratio: float = CONTRAST_RATIO) -> np.ndarray:
    """Which of ``candidates`` (1-based ids) look like the clicked pieces: their contrast has the
    sign of the clicked pieces' mean contrast and lies within a factor ``ratio`` of it. (C,) bool;
    all False when nothing is clicked, the clicked contrast is zero or unmeasurable, or ``ratio`` < 1."""
    candidates = np.asarray(candidates, dtype=int).reshape(-1)
    clicked = np.asarray(clicked, dtype=int).reshape(-1)
    if ratio < 1 or not clicked.size or not candidates.size:
        return np.zeros(len(candidates), dtype=bool)
    ref = piece_contrast(ids, image, clicked)
    ref = float(np.nanmean(ref)) if np.isfinite(ref).any() else 0.0
    if ref == 0.0:
        return np.zeros(len(candidates), dtype=bool)
    rel = piece_contrast(ids, image, candidates) / ref  # NaN (no ring) compares False
    return (rel >= 1.0 / ratio) & (rel <= ratio)
