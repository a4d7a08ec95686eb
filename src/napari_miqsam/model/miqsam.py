"""MIQ-SAM3D: assembles the hybrid encoder, PC-IQG, CQRD and the instance head.

The expensive step (``embed``) is separate from the cheap prompt step (``decode``) so that a
Predictor can embed a volume once and answer many clicks from the cache.
"""

from __future__ import annotations

import torch
from torch import nn

from .config import MIQSAMConfig
from .decoder import CQRD
from .encoder import Embedding, HybridEncoder
from .head import LayerOutput
from .kind import point_kinds, prompt_kind
from .query_generator import QueryGenerator
from .refine import MaskRefiner


class MIQSAM3D(nn.Module):
    def __init__(self, cfg: MIQSAMConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder = HybridEncoder(cfg)
        self.query_generator = QueryGenerator(cfg)
        self.decoder = CQRD(cfg)
        # stride-1 refinement of each found instance (inference and its own training stage)
        self.refiner = MaskRefiner(cfg.refine_width) if cfg.refine else None

    def embed(self, volume: torch.Tensor) -> Embedding:
        """volume: (B, 1, D, H, W) normalised, sides multiples of 8 -> cached Embedding."""
        return self.encoder(volume)

    def decode(self, emb: Embedding, points: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None) -> list[LayerOutput]:
        """Prompt step.

        points: (B, P, 3) voxel coordinates (z, y, x) of the model input (floats allowed).
        labels: (B, P) 1 = positive, 0 = negative. valid: (B, P) bool (default all True).
        Returns the prediction after the query generator and after every decoder layer; the last
        one is the model's answer, the others serve deep supervision.
        """
        if valid is None:
            valid = torch.ones(labels.shape, dtype=torch.bool, device=labels.device)
        queries, prompt = self.query_generator(emb, points, labels, valid)
        kinds = self.point_kinds(emb, points)
        kind = prompt_kind(kinds, labels, valid) if kinds is not None else None
        return self.decoder(emb, queries, prompt, valid, kind)

    @staticmethod
    def point_kinds(emb: Embedding, points: torch.Tensor) -> torch.Tensor | None:
        """(B, P, K) lesion-kind distribution at each point (model-input voxels), None without the kind prior."""
        return point_kinds(emb.kind_logits, points, emb.input_shape) if emb.kind_logits is not None else None

    def forward(self, volume: torch.Tensor, points: torch.Tensor, labels: torch.Tensor, valid: torch.Tensor | None = None):
        emb = self.embed(volume)
        return emb, self.decode(emb, points, labels, valid)
