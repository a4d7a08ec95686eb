"""ViT branch: 3D patch tokens and transformer blocks whose self-attention is gated by the CNN's
boundary saliency.

Spatial gating, per block:
  * attention logits get ``w_h * log(s_j)`` added for every key token j (``w_h`` learned per head,
    initialised to 1): tokens the CNN finds salient (boundaries) are attended to more;
  * a per-token gate ``g = sigmoid(W [cnn_i, vit_i])`` fuses the block output with the projected CNN
    token: ``x_i <- g * vit_i + (1 - g) * cnn_i``.
With ``gated=False`` a block is a plain pre-norm ViT block.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class SaliencyGatedAttention(nn.Module):
    def __init__(self, dim: int, heads: int, gated: bool):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.gated = gated
        if gated:
            self.saliency_weight = nn.Parameter(torch.ones(heads))

    def forward(self, x: torch.Tensor, log_saliency: torch.Tensor | None) -> torch.Tensor:
        """x: (B, T, C); log_saliency: (B, T) = log s_j of every key token, or None."""
        b, t, c = x.shape
        q, k, v = self.qkv(x).view(b, t, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        bias = None
        if self.gated and log_saliency is not None:
            bias = self.saliency_weight.view(1, -1, 1, 1) * log_saliency[:, None, None, :]
            bias = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class GatedViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, gated: bool):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SaliencyGatedAttention(dim, heads, gated)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gated = gated
        if gated:
            self.gate = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, cnn_tokens: torch.Tensor, log_saliency: torch.Tensor | None) -> torch.Tensor:
        """x, cnn_tokens: (B, T, C); log_saliency: (B, T)."""
        x = x + self.attn(self.norm1(x), log_saliency)
        x = x + self.mlp(self.norm2(x))
        if self.gated:
            g = torch.sigmoid(self.gate(torch.cat([cnn_tokens, x], dim=-1)))
            x = g * x + (1 - g) * cnn_tokens
        return x


class PatchEmbed(nn.Module):
    """(B, C_in, D, H, W) -> (B, T, dim) tokens at stride ``patch`` and the token grid shape."""

    def __init__(self, in_channels: int, dim: int, patch: int):
        super().__init__()
        self.proj = nn.Conv3d(in_channels, dim, patch, stride=patch)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int, int]]:
        y = self.proj(x)
        return y.flatten(2).transpose(1, 2), tuple(y.shape[2:])
