"""CQRD: competitive query refinement decoder.

Each layer, as named steps:
  1. query self-attention - the queries see each other (and the prompt tokens, so negative clicks
     say "not this") and compete for instances;
  2. masked cross-attention - each query attends only to image tokens inside its current mask
     (from the previous layer's prediction; a query with an empty mask attends everywhere);
  3. FFN.
Competition for voxels happens in the head (per-voxel softmax over queries + background). The
prediction after every layer is returned for deep supervision.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from .config import MIQSAMConfig
from .encoder import Embedding
from .head import InstanceHead, LayerOutput
from .kind import KindPrior, lesion_kind_probs
from .positional import fourier_features, grid_coords


class CQRDLayer(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn = nn.MultiheadAttention(dim, heads, batch_first=True)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.ffn = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))
        self.norm3 = nn.LayerNorm(dim)

    def query_self_attention(self, q: torch.Tensor, prompt: torch.Tensor, prompt_valid: torch.Tensor) -> torch.Tensor:
        kv = torch.cat([q, prompt], dim=1)
        pad = None
        if not bool(prompt_valid.all()):  # padding only exists in training batches
            pad = torch.cat([torch.zeros(q.shape[:2], dtype=torch.bool, device=q.device), ~prompt_valid], dim=1)
        return self.norm1(q + self.self_attn(q, kv, kv, key_padding_mask=pad, need_weights=False)[0])

    def masked_cross_attention(self, q: torch.Tensor, tokens: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
        return self.norm2(q + self.cross_attn(q, keys, tokens, attn_mask=mask, need_weights=False)[0])

    def forward(self, q, prompt, prompt_valid, tokens, keys, mask):
        q = self.query_self_attention(q, prompt, prompt_valid)
        q = self.masked_cross_attention(q, tokens, keys, mask)
        return self.norm3(q + self.ffn(q))


@dataclass
class DecoderContext:
    """What the decoder computes from the embedding alone, whatever the prompt: the image tokens'
    attention keys (with their position encoding), the background slot's logits and the lesion-kind
    probabilities. A Predictor makes it once per window and reuses it for every click."""

    keys: torch.Tensor
    bg_logits: torch.Tensor | None
    kind_probs: torch.Tensor | None


class CQRD(nn.Module):
    def __init__(self, cfg: MIQSAMConfig):
        super().__init__()
        self.cfg = cfg
        self.heads = cfg.decoder_heads
        self.pos = nn.Linear(6 * cfg.fourier_bands, cfg.vit_dim)
        self.layers = nn.ModuleList(CQRDLayer(cfg.vit_dim, cfg.decoder_heads) for _ in range(cfg.decoder_layers))
        self.head = InstanceHead(cfg.vit_dim, cfg.mask_dim, cfg.competition)
        self.kind_prior = KindPrior() if cfg.kind_prior else None

    def attention_mask(self, out: LayerOutput, token_shape: tuple[int, int, int]) -> torch.Tensor:
        """Boolean (B * heads, N, T) mask, True = blocked: tokens outside each query's current mask."""
        probs = out.instance_probabilities().detach()  # (B, N, D2, H2, W2)
        pooled = F.adaptive_avg_pool3d(probs, token_shape).flatten(2)  # (B, N, T)
        blocked = pooled < 0.5
        blocked[blocked.all(dim=-1)] = False  # an empty mask attends everywhere
        return blocked.repeat_interleave(self.heads, dim=0)

    def context(self, emb: Embedding) -> DecoderContext:
        """The prompt-independent part of the decoder's work (see :class:`DecoderContext`)."""
        tokens = emb.tokens
        coords = grid_coords(emb.token_shape, self.cfg.patch, self.cfg.position_extent / 2, device=tokens.device, dtype=tokens.dtype)
        keys = tokens + self.pos(fourier_features(coords, self.cfg.fourier_bands))[None]
        kind_probs = None
        if self.kind_prior is not None and emb.kind_logits is not None:
            kind_probs = lesion_kind_probs(emb.kind_logits)
        return DecoderContext(keys, self.head.background(emb.mask_features), kind_probs)

    def forward(self, emb: Embedding, queries: torch.Tensor, prompt: torch.Tensor, prompt_valid: torch.Tensor,
                kind: torch.Tensor | None = None, context: DecoderContext | None = None,
                region: tuple[slice, slice, slice] | None = None) -> list[LayerOutput]:
        """kind: (B, K) kind distribution of the prompt (model/kind.py), or None for no kind prior.
        context: ``self.context(emb)`` if already made (it is made here otherwise).
        region: (z, y, x) slices of stride-2 cells; the LAST output then covers only them (the
        Predictor reads only the part of a window it owns; every earlier layer's prediction still
        covers the whole window, since its attention mask needs it). Per cell the numbers are the
        same as without it."""
        tokens = emb.tokens
        ctx = context if context is not None else self.context(emb)
        keys, bg = ctx.keys, ctx.bg_logits
        bias = None
        if self.kind_prior is not None and kind is not None and ctx.kind_probs is not None:
            bias = self.kind_prior(ctx.kind_probs, kind).to(emb.mask_features.dtype)
        n = len(self.layers)
        q = queries
        outputs = [self._predict(q, emb.mask_features, bg, bias, region if n == 0 else None)]
        for i, layer in enumerate(self.layers):  # deep supervision: a prediction after every layer
            mask = self.attention_mask(outputs[-1], emb.token_shape)
            q = layer(q, prompt, prompt_valid, tokens, keys, mask)
            outputs.append(self._predict(q, emb.mask_features, bg, bias, region if i == n - 1 else None))
        return outputs

    def _predict(self, q, mask_features, bg, bias, region) -> LayerOutput:
        """The instance head, on the cells of ``region`` only when given."""
        if region is not None:
            cells = (Ellipsis, *region)
            mask_features = mask_features[cells]
            bg = None if bg is None else bg[cells]
            bias = None if bias is None else bias[cells]
        return self.head(q, mask_features, bg, bias)
