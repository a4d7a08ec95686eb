"""Set losses given a matching: mask CE/BCE + Dice on matched queries, confidence BCE, deep
supervision over every decoder layer, and two auxiliary losses on the encoder: boundary saliency
and lesion kind (soft cross-entropy + soft Dice of the kind head, see model/kind.py; or, with
relative kinds, a lesion/background term plus cluster coherence and separation per volume).

Targets are soft occupancies at stride 2 (the fraction of each 2x2x2 cell inside the instance).
With competition the mask loss is a per-voxel cross-entropy over (background, queries): the target
slot of a voxel is the query matched to the instance covering it; unmatched queries get no voxels.
Without competition each query gets a sigmoid BCE (unmatched ones towards empty).

That voxel loss is a mean over the whole patch, where a 5 mm lesion is a handful of cells among
hundreds of thousands; the optional instance term (``LossWeights.instance``) adds, per matched
instance, the mean of the same log-likelihood over that instance's own cells, so every lesion weighs
the same whatever its size (like the per-instance Dice, but a likelihood: it keeps pulling on cells
of a lesion the query has missed entirely, where the Dice gradient is weak).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ..model.head import LayerOutput
from .matching import match_queries


@dataclass(frozen=True)
class LossWeights:
    mask: float = 5.0
    dice: float = 5.0
    conf: float = 2.0
    saliency: float = 0.5
    kind: float = 1.0
    instance: float = 0.0  # per-instance mean log-likelihood over the instance's own cells (0: off)


def dice_loss(p: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean soft-Dice loss over rows of (M, V)."""
    return (1 - (2 * (p * t).sum(1) + 1) / (p.sum(1) + t.sum(1) + 1)).mean()


def instance_nll(logp: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """Mean over instances of the occupancy-weighted mean negative log-likelihood over each
    instance's own cells: logp (M, V) log-probabilities of the matched queries, t (M, V) targets."""
    t = t.float()
    return (-(t * logp).sum(1) / t.sum(1).clamp(min=1e-6)).mean()


def layer_loss(out: LayerOutput, targets: list[torch.Tensor], w: LossWeights) -> dict[str, torch.Tensor]:
    """Losses of one decoder layer, averaged over the batch.

    targets[b]: (K_b, d2, h2, w2) soft occupancy of the K_b target instances of batch item b.
    """
    probs_all = out.instance_probabilities()
    terms = {"mask": [], "dice": [], "conf": [], "instance": []}
    for b, tgt in enumerate(targets):
        probs = probs_all[b].flatten(1)  # (N, V)
        t = tgt.flatten(1).to(probs.dtype)  # (K, V)
        if probs.shape[0] == 1 and t.shape[0] > 1:
            # a single query (the no-PC-IQG ablation) cannot hold several instances apart: its
            # target is the union, and connected components split it at inference
            t = t.sum(0, keepdim=True).clamp(max=1.0)
        qi, ti = match_queries(probs.detach(), out.scores[b].detach(), t)
        qi_t = torch.as_tensor(qi, device=probs.device, dtype=torch.long)
        ti_t = torch.as_tensor(ti, device=probs.device, dtype=torch.long)
        n = probs.shape[0]
        if out.competition:
            slot_t = torch.zeros(n + 1, t.shape[1], device=t.device, dtype=t.dtype)
            slot_t[qi_t + 1] = t[ti_t]
            slot_t[0] = (1 - slot_t[1:].sum(0)).clamp(min=0)
            logp = F.log_softmax(out.slot_logits()[b].flatten(1).float(), dim=0)
            terms["mask"].append(-(slot_t * logp).sum(0).mean())
            own = logp[qi_t + 1]  # (M, V) log P(voxel -> the matched query)
        else:
            mt = torch.zeros(n, t.shape[1], device=t.device, dtype=t.dtype)
            mt[qi_t] = t[ti_t]
            terms["mask"].append(F.binary_cross_entropy_with_logits(out.mask_logits[b].flatten(1).float(), mt))
            own = F.logsigmoid(out.mask_logits[b].flatten(1).float()[qi_t])
        terms["instance"].append(instance_nll(own, t[ti_t]) if len(qi) else probs.sum() * 0)
        terms["dice"].append(dice_loss(probs[qi_t], t[ti_t]) if len(qi) else probs.sum() * 0)
        conf_t = torch.zeros(n, device=probs.device)
        conf_t[qi_t] = 1.0
        terms["conf"].append(F.binary_cross_entropy_with_logits(out.score_logits[b].float(), conf_t))
    return {k: torch.stack(v).mean() for k, v in terms.items()}


def kind_loss(kind_logits: torch.Tensor, kind_target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Soft cross-entropy + soft Dice of (B, 1 + K, ...) kind logits against (B, 1 + K', ...) occupancies.

    Lesions fill about 1% of a patch, so the cross-entropy alone is satisfied by a head that calls
    small lesions background (measured: centres of 10 mm tumours read P(background) 0.99). The Dice
    term, one per lesion kind over the whole batch (as in nnU-Net), weighs each kind by its own
    size instead. A target with fewer kinds than the head (one lesion kind) is zero-padded.
    """
    t = kind_target.to(kind_logits.device, torch.float32)
    extra = kind_logits.shape[1] - t.shape[1]
    if extra < 0:
        raise ValueError(f"the targets have {t.shape[1] - 1} lesion kinds, the model {kind_logits.shape[1] - 1}")
    if extra:
        t = torch.cat([t, t.new_zeros((t.shape[0], extra, *t.shape[2:]))], dim=1)
    logp = F.log_softmax(kind_logits.float(), dim=1)
    ce = -(t * logp).sum(1).mean()
    if not dice_weight:
        return ce
    p = logp.exp()[:, 1:].transpose(0, 1).flatten(1)  # (K, B * V)
    return ce + dice_weight * dice_loss(p, t[:, 1:].transpose(0, 1).flatten(1))


def relative_kind_loss(kind_logits: torch.Tensor, kind_target: torch.Tensor, dice_weight: float = 1.0) -> torch.Tensor:
    """Exemplar-relative kind loss of (B, 1 + E, ...) kind logits against (B, 1 + K', ...) occupancies.

    The head's E lesion channels are latent clusters, not data-set classes (``relative_kinds``): a
    labelled kind of one volume may land in any cluster, as long as all its lesions land in the same
    one and the volume's other kinds in others. Three terms:

    * lesion or not: soft cross-entropy of P(background) against the target's background share, plus
      a soft Dice of the lesion probability (small lesions would otherwise be called background);
    * coherence: per volume and labelled kind j, the kind's prototype ``c_j`` is the mean cluster
      distribution ``q(v) = P(cluster | v, lesion)`` over its cells (weighted by occupancy); each cell
      pays ``-log(q(v) . c_j)``, which is small only when the cell and its kind agree on one cluster;
    * separation: each pair of kinds of one volume pays ``-log(1 - c_i . c_j)``.

    At inference ``s(v) = pi . P(kind | v)`` (``model.kind.same_kind``) with ``pi`` read at the click
    is then P(lesion | v) times the agreement of v's cluster with the clicked lesion's: the same kind
    whatever the kind is. A data set's fixed classes (tumour, cyst) are simply two kinds.
    """
    t = kind_target.to(kind_logits.device, torch.float32)
    logp = F.log_softmax(kind_logits.float(), dim=1)
    bg_t = t[:, 0]
    log_lesion = torch.logsumexp(logp[:, 1:], dim=1)
    loss = -(bg_t * logp[:, 0] + (1 - bg_t) * log_lesion).mean()
    if dice_weight:
        loss = loss + dice_weight * dice_loss((1 - logp[:, 0].exp()).flatten()[None], (1 - bg_t).flatten()[None])
    q = torch.softmax(kind_logits.float()[:, 1:], dim=1)  # (B, E, ...) cluster given lesion
    coherence, separation = [], []
    for b in range(t.shape[0]):
        protos = []
        for j in range(1, t.shape[1]):
            w = t[b, j]
            mass = w.sum()
            if float(mass) <= 0:
                continue
            proto = (q[b] * w).flatten(1).sum(1) / mass  # (E,)
            agree = torch.einsum("e...,e->...", q[b], proto)
            coherence.append(-(w * torch.log(agree.clamp(min=1e-6))).sum() / mass)
            protos.append(proto)
        for i in range(len(protos)):
            for j in range(i + 1, len(protos)):
                separation.append(-torch.log((1 - protos[i] @ protos[j]).clamp(min=1e-6)))
    if coherence:
        loss = loss + torch.stack(coherence).mean()
    if separation:
        loss = loss + torch.stack(separation).mean()
    return loss


def set_criterion(outputs: list[LayerOutput], targets: list[torch.Tensor], saliency_logits: torch.Tensor,
                  saliency_target: torch.Tensor, kind_logits: torch.Tensor | None = None,
                  kind_target: torch.Tensor | None = None, w: LossWeights = LossWeights(),
                  relative_kinds: bool = False) -> dict[str, torch.Tensor]:
    """Total loss with deep supervision (every layer's prediction weighted equally).

    kind_logits / kind_target: the encoder's lesion-kind logits and their soft targets (both
    (B, 1 + K, d2, h2, w2)); the kind term is left out when either is None. relative_kinds: the
    kind term is :func:`relative_kind_loss` (latent clusters) instead of :func:`kind_loss` (classes).
    """
    parts = {"mask": 0.0, "dice": 0.0, "conf": 0.0, "instance": 0.0}
    for out in outputs:
        for k, v in layer_loss(out, targets, w).items():
            parts[k] = parts[k] + v / len(outputs)
    sal = F.binary_cross_entropy_with_logits(saliency_logits.float(), saliency_target.float())
    total = (w.mask * parts["mask"] + w.dice * parts["dice"] + w.conf * parts["conf"]
             + w.instance * parts["instance"] + w.saliency * sal)
    result = {"saliency": sal.detach(), **{k: v.detach() for k, v in parts.items()}}
    if kind_logits is not None and kind_target is not None:
        kl = (relative_kind_loss if relative_kinds else kind_loss)(kind_logits, kind_target)
        total = total + w.kind * kl
        result["kind"] = kl.detach()
    return {"loss": total, **result}
