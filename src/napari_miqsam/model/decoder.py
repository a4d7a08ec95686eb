"""CQRD: competitive query refinement decoder.

Each layer, as named steps:
  1. query self-attention - the queries see each other (and the prompt tokens, so negative clicks
     say "not this") and compete for instances;
  2. masked cross-attention - each query attends only to image tokens inside its current mask
     (from the previous layer's prediction; a query with an empty mask attends everywhere);
  3. FFN.
Competition for voxels happens in the head (per-voxel softmax over queries + background).

Each layer's attention mask is read from the instance head evaluated at the token grid it is used
on (Mask2Former's habit): the head's mask logits are linear in the mask features, so they are taken
on the mask features (and the background slot's logits, and the kind bias) averaged over each
token's cell, which is exactly the cell's mean stride-2 logit, and the per-token competition decides
which tokens a query sees. The full stride-2 prediction is made only where someone reads it: after
every layer in training (deep supervision), after the last layer only at inference.
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

    def image_keys_values(self, tokens: torch.Tensor, keys: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The cross-attention's projections of the image tokens, each (B, heads, T, C / heads): the
        keys (tokens + position) and the values (tokens). They do not depend on the prompt, so a
        Predictor makes them once per window (:class:`DecoderContext`)."""
        attn = self.cross_attn
        c, h = attn.embed_dim, attn.num_heads
        w, b = attn.in_proj_weight, attn.in_proj_bias
        k = F.linear(keys, w[c:2 * c], b[c:2 * c])
        v = F.linear(tokens, w[2 * c:], b[2 * c:])
        split = lambda t: t.view(t.shape[0], t.shape[1], h, c // h).transpose(1, 2)  # noqa: E731
        return split(k), split(v)

    def masked_cross_attention(self, q: torch.Tensor, kv: tuple[torch.Tensor, torch.Tensor], mask: torch.Tensor | None) -> torch.Tensor:
        """nn.MultiheadAttention(q, keys, tokens, attn_mask=mask) on the projections of
        :meth:`image_keys_values`; mask: (B * heads, N, T), True = blocked."""
        attn = self.cross_attn
        c, h = attn.embed_dim, attn.num_heads
        b, n, _ = q.shape
        k, v = kv
        qh = F.linear(q, attn.in_proj_weight[:c], attn.in_proj_bias[:c]).view(b, n, h, c // h).transpose(1, 2)
        allowed = None if mask is None else ~mask.view(b, h, n, -1)
        y = F.scaled_dot_product_attention(qh, k, v, attn_mask=allowed)
        return self.norm2(q + attn.out_proj(y.transpose(1, 2).reshape(b, n, c)))

    def forward(self, q, prompt, prompt_valid, kv, mask):
        q = self.query_self_attention(q, prompt, prompt_valid)
        q = self.masked_cross_attention(q, kv, mask)
        return self.norm3(q + self.ffn(q))


@dataclass
class DecoderContext:
    """What the decoder computes from the embedding alone, whatever the prompt: the image tokens'
    attention keys (with their position encoding) and every layer's projections of them, the
    background slot's logits, the lesion-kind probabilities, and the mask features and background logits averaged to the token grid (what
    the attention masks are read from). A Predictor makes it once per window and reuses it for
    every click.

    keys:           (B, T, C) tokens + position encoding.
    bg_logits:      (B, 1, D2, H2, W2) background slot at stride 2 (None without competition).
    kind_probs:     (B, K, D2, H2, W2) lesion-kind probabilities (None without the kind prior).
    token_features: (B, M, d, h, w) mask features averaged over each token's cell.
    token_bg:       (B, 1, d, h, w) background logits there (None without competition).
    image_kv:       per decoder layer, its cross-attention's projected keys and values
                    (:meth:`CQRDLayer.image_keys_values`).
    """

    keys: torch.Tensor
    bg_logits: torch.Tensor | None
    kind_probs: torch.Tensor | None
    token_features: torch.Tensor
    token_bg: torch.Tensor | None
    image_kv: list[tuple[torch.Tensor, torch.Tensor]]


class CQRD(nn.Module):
    def __init__(self, cfg: MIQSAMConfig):
        super().__init__()
        self.cfg = cfg
        self.heads = cfg.decoder_heads
        self.pos = nn.Linear(6 * cfg.fourier_bands, cfg.vit_dim)
        self.layers = nn.ModuleList(CQRDLayer(cfg.vit_dim, cfg.decoder_heads) for _ in range(cfg.decoder_layers))
        self.head = InstanceHead(cfg.vit_dim, cfg.mask_dim, cfg.competition)
        self.kind_prior = KindPrior() if cfg.kind_prior else None

    def attention_mask(self, out: LayerOutput) -> torch.Tensor:
        """Boolean (B * heads, N, T) mask, True = blocked: tokens outside each query's current mask.

        out: the instance head's prediction at the token grid (:meth:`token_prediction`); a token is
        in a query's mask when the query wins more than half of it there."""
        probs = out.instance_probabilities().detach().flatten(2)  # (B, N, T)
        blocked = probs < 0.5
        blocked[blocked.all(dim=-1)] = False  # an empty mask attends everywhere
        return blocked.repeat_interleave(self.heads, dim=0)

    def token_prediction(self, q: torch.Tensor, ctx: DecoderContext, bias: torch.Tensor | None) -> LayerOutput:
        """The instance head at the token grid: (B, N, d, h, w) mask logits, each the mean of the
        stride-2 logits over the token's cell (the head is linear in the features). bias: the kind
        bias already averaged to the token grid, or None."""
        with torch.no_grad():  # only read for the attention mask, which has no gradient
            return self.head(q, ctx.token_features, ctx.token_bg, bias)

    def context(self, emb: Embedding) -> DecoderContext:
        """The prompt-independent part of the decoder's work (see :class:`DecoderContext`)."""
        tokens = emb.tokens
        coords = grid_coords(emb.token_shape, self.cfg.patch, self.cfg.position_extent / 2, device=tokens.device, dtype=tokens.dtype)
        keys = tokens + self.pos(fourier_features(coords, self.cfg.fourier_bands))[None]
        kind_probs = None
        if self.kind_prior is not None and emb.kind_logits is not None:
            kind_probs = lesion_kind_probs(emb.kind_logits)
        with torch.no_grad():
            token_features = F.adaptive_avg_pool3d(emb.mask_features, emb.token_shape)
            token_bg = self.head.background(token_features)
        image_kv = [layer.image_keys_values(tokens, keys) for layer in self.layers]
        return DecoderContext(keys, self.head.background(emb.mask_features), kind_probs, token_features, token_bg, image_kv)

    def forward(self, emb: Embedding, queries: torch.Tensor, prompt: torch.Tensor, prompt_valid: torch.Tensor,
                kind: torch.Tensor | None = None, context: DecoderContext | None = None,
                region: tuple[slice, slice, slice] | None = None,
                deep_supervision: bool | None = None) -> list[LayerOutput]:
        """kind: (B, K) kind distribution of the prompt (model/kind.py), or None for no kind prior.
        context: ``self.context(emb)`` if already made (it is made here otherwise).
        region: (z, y, x) slices of stride-2 cells; the LAST output then covers only them (the
        Predictor reads only the part of a window it owns). Per cell the numbers are the same as
        without it.
        deep_supervision: return the stride-2 prediction after the query generator and after every
        layer (``decoder_layers + 1`` outputs, for the losses); False: only the last layer's, a list
        of one. None (default): in training mode only. The attention masks are the same either way.
        """
        ctx = context if context is not None else self.context(emb)
        deep = self.training if deep_supervision is None else deep_supervision
        bg = ctx.bg_logits
        bias = bias_tok = None
        if self.kind_prior is not None and kind is not None and ctx.kind_probs is not None:
            bias = self.kind_prior(ctx.kind_probs, kind).to(emb.mask_features.dtype)
            with torch.no_grad():
                bias_tok = F.adaptive_avg_pool3d(bias, emb.token_shape)
        n = len(self.layers)
        q = queries
        outputs = []
        if deep or n == 0:
            outputs.append(self._predict(q, emb.mask_features, bg, bias, region if n == 0 else None))
        for i, layer in enumerate(self.layers):
            mask = self.attention_mask(self.token_prediction(q, ctx, bias_tok))
            q = layer(q, prompt, prompt_valid, ctx.image_kv[i], mask)
            if deep or i == n - 1:  # deep supervision: a prediction after every layer
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
