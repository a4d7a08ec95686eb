"""Hungarian matching of queries to ground-truth instances (no gradients).

Cost of pairing query n with instance k (Mask2Former-style):
    w_dice * (1 - soft Dice) + w_bce * mean BCE(mask) - w_conf * confidence_n
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment


@torch.no_grad()
def match_queries(probs: torch.Tensor, scores: torch.Tensor, targets: torch.Tensor,
                  w_dice: float = 5.0, w_bce: float = 5.0, w_conf: float = 2.0) -> tuple[np.ndarray, np.ndarray]:
    """One-to-one matching.

    probs:   (N, V) instance probabilities of the N queries over V voxels.
    scores:  (N,) confidences in [0, 1].
    targets: (K, V) ground-truth occupancy in [0, 1] (soft at stride 2).
    Returns (query_indices, target_indices), each of length min(N, K).
    """
    n, k = probs.shape[0], targets.shape[0]
    if k == 0 or n == 0:
        return np.zeros(0, dtype=int), np.zeros(0, dtype=int)
    p = probs.float().clamp(1e-6, 1 - 1e-6)
    t = targets.float()
    inter = p @ t.T  # (N, K)
    dice = 1 - (2 * inter + 1) / (p.sum(1, keepdim=True) + t.sum(1)[None] + 1)
    bce = -(torch.log(p) @ t.T + torch.log1p(-p) @ (1 - t).T) / p.shape[1]
    cost = w_dice * dice + w_bce * bce - w_conf * scores.float()[:, None]
    qi, ti = linear_sum_assignment(cost.cpu().numpy())
    return qi, ti
