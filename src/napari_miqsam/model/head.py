"""Instance head: per query a confidence in [0, 1] and a mask.

Mask logits are ``mask_embed(q) . mask_features`` at stride 2. With competition a learned
background slot joins the queries and a per-voxel softmax over (background, q_1..q_N) makes every
voxel belong to at most one instance; without it each query's mask is an independent sigmoid.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cnn import PointwiseConv3d


@dataclass
class LayerOutput:
    """Prediction of one decoder layer.

    mask_logits:  (B, N, D2, H2, W2) at stride 2 of the model input.
    score_logits: (B, N); confidence = sigmoid.
    bg_logits:    (B, 1, D2, H2, W2) background slot (None without competition).
    competition:  whether the slots compete through a softmax.
    """

    mask_logits: torch.Tensor
    score_logits: torch.Tensor
    bg_logits: torch.Tensor | None
    competition: bool

    def slot_logits(self) -> torch.Tensor:
        """(B, 1 + N, ...) logits of (background, queries)."""
        return torch.cat([self.bg_logits, self.mask_logits], dim=1)

    def instance_probabilities(self) -> torch.Tensor:
        """(B, N, ...) probability that a voxel belongs to each query's instance."""
        if self.competition:
            return torch.softmax(self.slot_logits(), dim=1)[:, 1:]
        return torch.sigmoid(self.mask_logits)

    def winners(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Per voxel, the winning slot and the foreground probability, each (B, D2, H2, W2).

        slot: 0 where the background wins, else 1 + the index of the winning query; fg: the
        probability of not being background. With competition this is the softmax over (background,
        queries) without materialising it: the winner is the largest logit, and ``1 - P(background)
        = sigmoid(logsumexp(query logits) - background logit)``. Without competition a voxel goes to
        its most likely query if that one's sigmoid exceeds 0.5, and fg is that sigmoid.
        """
        best, best_q = self.mask_logits.max(dim=1)
        if self.competition:
            bg = self.bg_logits[:, 0]
            fg = torch.sigmoid(torch.logsumexp(self.mask_logits, dim=1) - bg)
            won = best > bg
        else:
            fg = torch.sigmoid(best)
            won = fg > 0.5
        return torch.where(won, best_q + 1, torch.zeros_like(best_q)), fg

    @property
    def scores(self) -> torch.Tensor:
        return torch.sigmoid(self.score_logits)


class InstanceHead(nn.Module):
    def __init__(self, dim: int, mask_dim: int, competition: bool):
        super().__init__()
        self.competition = competition
        self.norm = nn.LayerNorm(dim)
        self.mask_embed = nn.Sequential(nn.Linear(dim, dim), nn.GELU(), nn.Linear(dim, mask_dim))
        self.score = nn.Linear(dim, 1)
        if competition:
            self.bg = PointwiseConv3d(mask_dim, 1)

    def background(self, mask_features: torch.Tensor) -> torch.Tensor | None:
        return self.bg(mask_features) if self.competition else None

    def forward(self, q: torch.Tensor, mask_features: torch.Tensor, bg_logits: torch.Tensor | None,
                mask_bias: torch.Tensor | None = None) -> LayerOutput:
        """mask_bias: (B, 1, D2, H2, W2) added to every query's mask logits (the kind prior), or None."""
        qn = self.norm(q)
        masks = torch.einsum("bnm,bmzyx->bnzyx", self.mask_embed(qn), mask_features)
        if mask_bias is not None:
            masks = masks + mask_bias
        return LayerOutput(masks, self.score(qn).squeeze(-1), bg_logits, self.competition)
