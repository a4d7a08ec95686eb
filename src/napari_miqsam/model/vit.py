"""ViT branch: 3D patch tokens and transformer blocks whose self-attention is gated by the CNN's
boundary saliency.

Spatial gating, per block:
  * attention logits get ``w_h * log(s_j)`` added for every key token j (``w_h`` learned per head,
    initialised to 1): tokens the CNN finds salient (boundaries) are attended to more;
  * a per-token gate ``g = sigmoid(W [cnn_i, vit_i])`` fuses the block output with the projected CNN
    token: ``x_i <- g * vit_i + (1 - g) * cnn_i``.
With ``gated=False`` a block is a plain pre-norm ViT block.

Pooled keys (``kv_pool`` = p > 1, a speed option; 1 is the exact attention): keys and values are
averaged over p x p x p cells of the token grid (as PVT's spatial-reduction attention, Wang et al.
2021), so each query scores T / p^3 keys instead of T. A pooled key stands for the n tokens of its
cell: its logit gets ``log n`` added (and the cell's mean ``w_h * log s``), so a cell of identical
tokens gets exactly the weight its n tokens had. On 2 CPU cores the attention is half of a 152^3
window's embedding, and it is the T^2 softmax: 2x2x2 cells cut it about 8x.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def pool_tokens(x: torch.Tensor, grid: tuple[int, int, int], p: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, C) tokens on ``grid`` -> (B, T', C) means over p^3 cells (cells at the far edges may be
    partial) and (T',) the number of tokens in each cell."""
    b, t, c = x.shape
    v = x.transpose(1, 2).reshape(b, c, *grid)
    pooled = F.avg_pool3d(v, p, p, ceil_mode=True)  # partial edge cells: the mean of what they hold
    counts = [torch.full((-(-n // p),), float(p), device=x.device, dtype=x.dtype) for n in grid]
    for cnt, n in zip(counts, grid):
        if n % p:
            cnt[-1] = n % p
    n_cell = (counts[0][:, None, None] * counts[1][None, :, None] * counts[2][None, None, :]).flatten()
    return pooled.flatten(2).transpose(1, 2), n_cell


class SaliencyGatedAttention(nn.Module):
    def __init__(self, dim: int, heads: int, gated: bool, kv_pool: int = 1):
        super().__init__()
        self.heads = heads
        self.kv_pool = kv_pool
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.gated = gated
        if gated:
            self.saliency_weight = nn.Parameter(torch.ones(heads))

    def forward(self, x: torch.Tensor, log_saliency: torch.Tensor | None,
                grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """x: (B, T, C) on the token ``grid`` (needed only with kv_pool > 1); log_saliency: (B, T) =
        log s_j of every key token, or None."""
        b, t, c = x.shape
        h = self.heads
        if self.kv_pool > 1 and grid is not None:
            # q from every token; k, v from the cell means (the projection is linear, so projecting
            # the mean of the tokens is the mean of their projections)
            w_q, w_kv = self.qkv.weight.split([c, 2 * c])
            b_q, b_kv = self.qkv.bias.split([c, 2 * c])
            q = F.linear(x, w_q, b_q).view(b, t, h, c // h).transpose(1, 2)
            pooled, n_cell = pool_tokens(x, grid, self.kv_pool)
            k, v = F.linear(pooled, w_kv, b_kv).view(b, -1, 2, h, c // h).permute(2, 0, 3, 1, 4)
            bias = n_cell.log().view(1, 1, 1, -1).expand(b, h, 1, -1)
            if self.gated and log_saliency is not None:
                ls, _ = pool_tokens(log_saliency[..., None], grid, self.kv_pool)
                bias = bias + self.saliency_weight.view(1, -1, 1, 1) * ls[..., 0][:, None, None, :]
            y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias.to(q.dtype))
            return self.proj(y.transpose(1, 2).reshape(b, t, c))
        q, k, v = self.qkv(x).view(b, t, 3, h, c // h).permute(2, 0, 3, 1, 4)
        bias = None
        if self.gated and log_saliency is not None:
            bias = self.saliency_weight.view(1, -1, 1, 1) * log_saliency[:, None, None, :]
            bias = bias.to(q.dtype)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)
        return self.proj(y.transpose(1, 2).reshape(b, t, c))


class GatedViTBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float, gated: bool, kv_pool: int = 1):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SaliencyGatedAttention(dim, heads, gated, kv_pool)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.gated = gated
        if gated:
            self.gate = nn.Linear(2 * dim, dim)

    def forward(self, x: torch.Tensor, cnn_tokens: torch.Tensor, log_saliency: torch.Tensor | None,
                grid: tuple[int, int, int] | None = None) -> torch.Tensor:
        """x, cnn_tokens: (B, T, C) on the token ``grid``; log_saliency: (B, T)."""
        x = x + self.attn(self.norm1(x), log_saliency, grid)
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
