"""Lesion-kind prior: which voxels are lesions of the kind the user clicked.

The encoder's kind head (a 1x1x1 convolution on the stride-2 mask features) gives per-voxel logits
over (background, kind_1..kind_K) (KiTS: tumour, cyst). It is trained with an auxiliary
cross-entropy against the dataset's lesion classes, which makes the mask features tell the kinds
apart.

At prompt time the kind distribution around the positive clicks, ``pi`` (lesion-kind probabilities
summed over a few cells around each click, normalised over the kinds, averaged over the clicks),
gives a same-kind probability per voxel

    s(v) = sum_k pi_k * P(kind_k | v)

and every query's mask logit gets ``w * log(s(v) + eps)`` added (``w >= 0`` learned, 0 at the
start): voxels of another kind, or of no lesion, are pushed towards the background slot. This is
our addition to MIQ-SAM3D: it makes the click's kind explicit instead of leaving it to the queries.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .query_generator import sample_at_points

EPS = 1e-4
WEIGHT_SCALE = 8.0  # w moves this much faster than its raw parameter (Adam steps are ~lr in size)


def point_kinds(kind_logits: torch.Tensor, points: torch.Tensor, input_shape: tuple[int, int, int],
                radius: int = 1) -> torch.Tensor:
    """Kind distribution over the lesion kinds only around each point, (B, P, K).

    kind_logits: (B, 1 + K, d2, h2, w2); points: (B, P, 3) voxels (z, y, x) of the model input.
    The lesion-kind probabilities P(k | v) are summed over a (2 radius + 1)^3 neighbourhood of
    stride-2 cells around the point and normalised over the kinds, so a click on a lesion's edge
    reads the lesion's kind (background cells add almost nothing to any kind). radius 0: the
    point alone.
    """
    r = torch.arange(-radius, radius + 1, device=points.device, dtype=points.dtype) * 2.0  # cells -> voxels
    offsets = torch.cartesian_prod(r, r, r) if radius else torch.zeros(1, 3, device=points.device, dtype=points.dtype)
    b, p, _ = points.shape
    around = (points[:, :, None, :] + offsets).reshape(b, -1, 3)  # (B, P * O, 3)
    probs = torch.softmax(sample_at_points(kind_logits, around, input_shape).float(), dim=-1)
    mass = probs[..., 1:].reshape(b, p, len(offsets), -1).sum(2)  # (B, P, K)
    return mass / mass.sum(-1, keepdim=True).clamp(min=1e-8)


def snap_to_lesion(kind_logits: torch.Tensor, point: torch.Tensor, radius: int = 1) -> torch.Tensor:
    """Move a click that lands just off a lesion onto it.

    kind_logits: (1, 1 + K, d2, h2, w2); point: (3,) voxels (z, y, x) of the model input. If the
    stride-2 cell under the point is more likely background than lesion, the point moves to the
    centre of the most lesion-like cell within ``radius`` cells, when that one is more likely
    lesion; otherwise it stays.
    """
    shape = torch.tensor(kind_logits.shape[2:], device=point.device)
    cell = torch.clamp(torch.floor(point / 2).long(), min=torch.zeros_like(shape), max=shape - 1)
    lo = torch.clamp(cell - radius, min=0)
    hi = torch.minimum(cell + radius + 1, shape)
    box = kind_logits[0, :, lo[0]:hi[0], lo[1]:hi[1], lo[2]:hi[2]].float()
    lesion = 1.0 - torch.softmax(box, dim=0)[0]
    here = tuple((cell - lo).tolist())
    if float(lesion[here]) >= 0.5 or float(lesion.max()) < 0.5:
        return point
    best = torch.tensor(np.unravel_index(int(lesion.argmax()), tuple(lesion.shape)), device=point.device)
    return ((lo + best) * 2).to(point.dtype) + 0.5


def prompt_kind(kinds: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Average the (B, P, K) point kinds over the valid positive points -> pi, (B, K)."""
    pos = (valid & (labels == 1)).to(kinds.dtype)[..., None]
    return (kinds * pos).sum(1) / pos.sum(1).clamp(min=1.0)


def lesion_kind_probs(kind_logits: torch.Tensor) -> torch.Tensor:
    """P(kind_k | v) for the lesion kinds only (no renormalisation), (B, K, d2, h2, w2), float32."""
    return torch.softmax(kind_logits.float(), dim=1)[:, 1:]


def same_kind(kind_probs: torch.Tensor, kind: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-voxel same-kind probability ``s(v)`` and lesion probability ``1 - P(background | v)``.

    kind_probs: :func:`lesion_kind_probs` of the kind logits, (B, K, d2, h2, w2); kind: pi, (B, K).
    Returns two (B, d2, h2, w2) maps; ``s <= lesion`` everywhere, and ``s / lesion`` is
    P(clicked kind | lesion) at v.
    """
    probs = kind_probs.float()
    return torch.einsum("bk,bkzyx->bzyx", kind.float(), probs), probs.sum(1)


class KindPrior(nn.Module):
    """The learned weight ``w`` of the same-kind bias on the mask logits."""

    def __init__(self):
        super().__init__()
        self.raw_weight = nn.Parameter(torch.zeros(()))

    @property
    def weight(self) -> torch.Tensor:
        """w = scale * (softplus(raw) - softplus(0)): never negative, exactly 0 before training."""
        return WEIGHT_SCALE * (F.softplus(self.raw_weight) - F.softplus(torch.zeros_like(self.raw_weight)))

    def forward(self, kind_probs: torch.Tensor, kind: torch.Tensor) -> torch.Tensor:
        """``w * log(s + eps)`` per voxel, (B, 1, d2, h2, w2), float32.

        kind_probs: :func:`lesion_kind_probs` of the kind logits, (B, K, ...); kind: pi, (B, K).
        """
        same = same_kind(kind_probs, kind)[0][:, None]
        return self.weight * torch.log(same + EPS)


def widen_kind_head(weight: torch.Tensor, bias: torch.Tensor, kinds: int,
                    generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """A kind head with ``kinds`` lesion channels made from a trained one with fewer, (1 + K, C, ...).

    Lesion channel j of the new head starts as a copy of the old channel ``j * K // kinds`` (each old
    kind fills a block of new ones) with ``log(copies)`` taken off its bias, so P(background | v) and
    each old kind's total probability are exactly as before; a small random perturbation of the copies
    lets training pull them apart (into the clusters of :attr:`MIQSAMConfig.relative_kinds`).
    """
    old = weight.shape[0] - 1
    if kinds < old:
        raise ValueError(f"cannot narrow a kind head from {old} to {kinds} lesion kinds")
    src = [j * old // kinds for j in range(kinds)]
    copies = torch.tensor([src.count(s) for s in src], dtype=bias.dtype)
    idx = torch.tensor([0] + [1 + s for s in src])
    w, b = weight[idx].clone(), bias[idx].clone()
    b[1:] -= torch.log(copies)
    noise = torch.randn(w[1:].shape, generator=generator, dtype=w.dtype)
    w[1:] += 0.01 * w[1:].abs().mean() * noise
    return w, b
