"""Training the mask refiner (``model/refine.py``) on the instances a frozen network finds.

For each training patch the network's last decoder layer is read exactly as the Predictor reads it
(winning slot, foreground probability, 26-connected pieces); each piece, cropped to its cells plus
one, is refined at stride 1, and the target is the union of the target instances the piece
touches. The loss (BCE + soft Dice) counts only the voxels the Predictor may give the instance (its
cells dilated by one cell into background), so the refiner learns what inference asks of it:
where, near a found lesion, its boundary lies. A piece on no target learns an empty mask.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from scipy import ndimage

from ..inference.postprocess import FULL, split_instances
from ..model.head import LayerOutput
from ..model.refine import MaskRefiner, refine_instance

MAX_CELLS = 40  # a piece's crop is at most this many stride-2 cells a side (a random part of a big one)


def piece_boxes(ids: np.ndarray, n: int, rng: np.random.Generator, limit: int) -> list[tuple[int, tuple, tuple]]:
    """(k, lo, hi) crops of up to ``limit`` random pieces: the cells plus one, as ``to_original_grid``."""
    boxes = []
    for k, sl in enumerate(ndimage.find_objects(ids, max_label=n), start=1):
        if sl is None:
            continue
        lo = [max(0, s.start - 1) for s in sl]
        hi = [min(ids.shape[a], s.stop + 1) for a, s in enumerate(sl)]
        for a in range(3):
            if hi[a] - lo[a] > MAX_CELLS:
                lo[a] = int(rng.integers(lo[a], hi[a] - MAX_CELLS + 1))
                hi[a] = lo[a] + MAX_CELLS
        boxes.append((k, tuple(lo), tuple(hi)))
    if len(boxes) > limit:
        boxes = [boxes[i] for i in rng.choice(len(boxes), size=limit, replace=False)]
    return boxes


def piece_target(ids: np.ndarray, k: int, lo, hi, instances: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Stride-1 target and loss weight of piece ``k`` over cells [lo, hi).

    target: the target instances (``instances``, stride-1 ids) that the piece's cells touch;
    weight: the piece's cells dilated by one cell into background (what inference may keep).
    """
    cells = tuple(slice(a, b) for a, b in zip(lo, hi))
    member = ids[cells] == k
    allowed = ndimage.binary_dilation(member, structure=FULL) & ((ids[cells] == 0) | member)
    up = lambda m: torch.from_numpy(m).repeat_interleave(2, 0).repeat_interleave(2, 1).repeat_interleave(2, 2)  # noqa: E731
    inst = instances[tuple(slice(2 * a, 2 * b) for a, b in zip(lo, hi))]
    touched = torch.unique(inst[up(member) & (inst > 0)])
    target = torch.isin(inst, touched) if len(touched) else torch.zeros_like(inst, dtype=torch.bool)
    return target.float(), up(allowed).float()


def refine_loss(refiner: MaskRefiner, images: torch.Tensor, out: LayerOutput, instances: list[torch.Tensor],
                rng: np.random.Generator, pieces: int = 6) -> dict[str, torch.Tensor]:
    """Mean BCE + soft Dice of the refined pieces of a batch (``out``: the last decoder layer).

    images: (B, 1, D, H, W) model-grid patches; instances: per example (D, H, W) target ids.
    Returns {'loss', 'bce', 'dice', 'pieces'}; the loss is 0 (with a graph) when nothing was found.
    """
    slot, fg = (t.detach().float().cpu() for t in out.winners())
    terms_bce, terms_dice = [], []
    for b in range(images.shape[0]):
        ids, n = split_instances(slot[b].numpy())
        if n == 0:
            continue
        ids_t = torch.from_numpy(ids)
        for k, lo, hi in piece_boxes(ids, n, rng, pieces):
            logits = refine_instance(refiner, images[b, 0], fg[b], ids_t, k, lo, hi)
            target, weight = piece_target(ids, k, lo, hi, instances[b].cpu())
            target, weight = target.to(logits.device), weight.to(logits.device)
            bce = F.binary_cross_entropy_with_logits(logits, target, weight=weight, reduction="sum") / weight.sum().clamp(min=1)
            p = torch.sigmoid(logits) * weight
            dice = 1 - (2 * (p * target).sum() + 1) / (p.sum() + (target * weight).sum() + 1)
            terms_bce.append(bce)
            terms_dice.append(dice)
    if not terms_bce:
        zero = sum(p.sum() * 0 for p in refiner.parameters())
        return {"loss": zero, "bce": zero.detach(), "dice": zero.detach(), "pieces": torch.tensor(0.0)}
    bce, dice = torch.stack(terms_bce).mean(), torch.stack(terms_dice).mean()
    return {"loss": bce + dice, "bce": bce.detach(), "dice": dice.detach(), "pieces": torch.tensor(float(len(terms_bce)))}
