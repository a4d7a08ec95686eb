"""Dual-branch hybrid encoder: CNN branch + saliency-gated ViT branch, fused, plus pixel decoder.

Output (``Embedding``) is everything the prompt-dependent part needs, so a Predictor can run the
encoder once per volume (or window) and decode many prompts from the cache.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from .cnn import CNNBranch, PointwiseConv3d
from .config import MIQSAMConfig
from .pixel_decoder import PixelDecoder
from .positional import fourier_features, grid_coords
from .vit import GatedViTBlock, PatchEmbed


@dataclass
class Embedding:
    """Cached encoder output for one volume or window.

    tokens:         (B, T, C) fused image tokens at stride 8, T = d*h*w.
    token_shape:    (d, h, w) token grid.
    mask_features:  (B, M, 4d, 4h, 4w) per-voxel mask features at stride 2.
    saliency_logits:(B, 1, d, h, w) boundary-saliency logits (s = sigmoid).
    input_shape:    (D, H, W) of the (padded) model input.
    kind_logits:    (B, 1 + K, 4d, 4h, 4w) logits of (background, lesion kinds) at stride 2, or
                    None without the kind prior (model/kind.py).
    """

    tokens: torch.Tensor
    token_shape: tuple[int, int, int]
    mask_features: torch.Tensor
    saliency_logits: torch.Tensor
    input_shape: tuple[int, int, int]
    kind_logits: torch.Tensor | None = None

    def to(self, dtype: torch.dtype) -> "Embedding":
        kinds = self.kind_logits.to(dtype) if self.kind_logits is not None else None
        return Embedding(self.tokens.to(dtype), self.token_shape, self.mask_features.to(dtype),
                         self.saliency_logits.to(dtype), self.input_shape, kinds)


class HybridEncoder(nn.Module):
    def __init__(self, cfg: MIQSAMConfig):
        super().__init__()
        self.cfg = cfg
        self.cnn = CNNBranch(cfg.in_channels, cfg.cnn_channels, cfg.cnn_blocks)
        self.patch_embed = PatchEmbed(cfg.in_channels, cfg.vit_dim, cfg.patch)
        self.pos = nn.Linear(6 * cfg.fourier_bands, cfg.vit_dim)
        self.cnn_to_tokens = nn.Linear(cfg.cnn_channels[2], cfg.vit_dim)
        self.blocks = nn.ModuleList(
            GatedViTBlock(cfg.vit_dim, cfg.vit_heads, cfg.mlp_ratio, cfg.gating, cfg.kv_pool) for _ in range(cfg.vit_depth)
        )
        self.norm = nn.LayerNorm(cfg.vit_dim)
        self.pixel_decoder = PixelDecoder(cfg.vit_dim, cfg.cnn_channels, cfg.mask_dim, cfg.mask_blocks)
        # lesion-kind head on the mask features (background + kinds), see model/kind.py
        self.kind_head = PointwiseConv3d(cfg.mask_dim, cfg.kinds + 1) if cfg.kind_prior else None

    def forward(self, x: torch.Tensor) -> Embedding:
        """x: (B, C_in, D, H, W) normalised volume, D, H, W multiples of 8."""
        if x.ndim != 5 or any(s % self.cfg.patch for s in x.shape[2:]):
            raise ValueError(f"encoder input must be (B, C, D, H, W) with sides divisible by 8, got {tuple(x.shape)}")
        f2, f4, f8, sal_logits = self.cnn(x)
        vit, grid = self.patch_embed(x)
        coords = grid_coords(grid, self.cfg.patch, self.cfg.position_extent / 2, device=x.device, dtype=vit.dtype)
        vit = vit + self.pos(fourier_features(coords, self.cfg.fourier_bands))[None]
        cnn_tokens = self.cnn_to_tokens(f8.flatten(2).transpose(1, 2))
        log_s = nn.functional.logsigmoid(sal_logits.flatten(1)) if self.cfg.gating else None
        for block in self.blocks:
            vit = block(vit, cnn_tokens, log_s, grid)
        if not self.cfg.gating:  # plain ViT: the branches are simply summed
            vit = vit + cnn_tokens
        tokens = self.norm(vit)
        b, t, c = tokens.shape
        fused8 = tokens.transpose(1, 2).reshape(b, c, *grid)
        mask_features = self.pixel_decoder(fused8, f4, f2)
        kinds = self.kind_head(mask_features) if self.kind_head is not None else None
        return Embedding(tokens, grid, mask_features, sal_logits, tuple(x.shape[2:]), kinds)
