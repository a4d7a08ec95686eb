"""PC-IQG: prompt-conditioned instance-query generator.

One click becomes N specialised queries:
  1. the fused stride-8 token feature and the stride-2 mask feature at each clicked voxel are
     sampled trilinearly and, with a Fourier encoding of the click position, projected to a point
     embedding; a label embedding marks it positive or negative;
  2. the positive point embeddings are averaged into the prompt embedding ``p``;
  3. N learned query embeddings are modulated by ``p`` (FiLM: ``q_n * (1 + gamma(p)) + beta(p)``)
     and refined by an MLP.
The point embeddings are also returned as prompt tokens: the decoder's queries attend to them, so
negative clicks act as "not this". With ``pciqg=False`` a single query is made from ``p`` alone.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .config import MIQSAMConfig
from .encoder import Embedding
from .positional import centred_points, fourier_features, grid_sample_coords


def mlp(dims: list[int]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i in range(len(dims) - 1):
        layers.append(nn.Linear(dims[i], dims[i + 1]))
        if i < len(dims) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


def sample_at_points(feature_map: torch.Tensor, points: torch.Tensor, input_shape: tuple[int, int, int]) -> torch.Tensor:
    """Trilinear sample of a (B, C, d, h, w) map covering an input of ``input_shape`` voxels.

    points: (B, P, 3) voxel coordinates (z, y, x) of the model input. Returns (B, P, C).
    """
    norm = grid_sample_coords(points, input_shape)  # (B, P, 3) in [-1, 1], (z, y, x)
    grid = norm.flip(-1)[:, :, None, None, :]  # grid_sample wants (x, y, z)
    out = F.grid_sample(feature_map, grid.to(feature_map.dtype), mode="bilinear", padding_mode="border", align_corners=False)
    return out[:, :, :, 0, 0].transpose(1, 2)


class QueryGenerator(nn.Module):
    def __init__(self, cfg: MIQSAMConfig):
        super().__init__()
        d = cfg.vit_dim
        self.cfg = cfg
        self.point_proj = mlp([d + cfg.mask_dim + 6 * cfg.fourier_bands, d, d])
        self.label_embed = nn.Embedding(2, d)  # 0 = negative, 1 = positive
        self.prompt_norm = nn.LayerNorm(d)
        n = cfg.num_queries if cfg.pciqg else 1
        self.queries = nn.Parameter(torch.randn(n, d) * 0.5)
        if cfg.pciqg:
            self.film = nn.Linear(d, 2 * d)
        self.refine = mlp([d, 2 * d, d])
        self.out_norm = nn.LayerNorm(d)

    @property
    def num_queries(self) -> int:
        return self.queries.shape[0]

    def point_embeddings(self, emb: Embedding, points: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """points (B, P, 3) model-input voxels (z, y, x); labels (B, P) 1 positive / 0 negative -> (B, P, C)."""
        b, c = emb.tokens.shape[0], emb.tokens.shape[2]
        token_map = emb.tokens.transpose(1, 2).reshape(b, c, *emb.token_shape)
        feats = torch.cat([
            sample_at_points(token_map, points, emb.input_shape),
            sample_at_points(emb.mask_features, points, emb.input_shape),
            fourier_features(centred_points(points, emb.input_shape, self.cfg.position_extent / 2), self.cfg.fourier_bands),
        ], dim=-1)
        return self.prompt_norm(self.point_proj(feats) + self.label_embed(labels.long()))

    def forward(self, emb: Embedding, points: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns queries (B, N, C) and prompt tokens (B, P, C).

        valid: (B, P) bool, False for padding entries (batches with different point counts).
        Every batch item needs at least one valid positive point.
        """
        tokens = self.point_embeddings(emb, points, labels)
        return self.queries_from_prompt(tokens, labels, valid), tokens

    def queries_from_prompt(self, tokens: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
        """Point embeddings (B, P, C) -> queries (B, N, C) (the embeddings may come from several windows)."""
        pos = (valid & (labels == 1)).to(tokens.dtype)[..., None]
        prompt = (tokens * pos).sum(1) / pos.sum(1).clamp(min=1.0)  # (B, C)
        if self.cfg.pciqg:
            gamma, beta = self.film(prompt).chunk(2, dim=-1)
            q = self.queries[None] * (1 + gamma[:, None]) + beta[:, None]
        else:
            q = self.queries[None] + prompt[:, None]
        q = q + self.refine(q)
        return self.out_norm(q)
