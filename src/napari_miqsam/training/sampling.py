"""Training examples: a case prepared on the model grid, lesion-biased patches, simulated clicks,
augmentation, and collation.

Prompt simulation: pick a lesion class present, an instance of it, a click inside it (centre /
interior / near the boundary); sometimes a second positive click on another instance of that class
and sometimes a negative click on a lesion of another class. Target = ALL instances of the clicked
class in the patch (instances cut by the patch border stay targets).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
from scipy import ndimage
import torch
import torch.nn.functional as F

from ..data.instances import instances_of
from ..data.prompts import CLICK_MODES, simulate_click
from ..inference.preprocess import GridMap, extra_channels, normalise_and_read
from ..inference.resample import resample_to_model
from ..model.config import MIQSAMConfig

LESION_CLASSES = (2, 3)


@dataclass
class PreparedCase:
    """A case on the model grid. image: (D, H, W) float32 in [-1, 1]; classes: (D, H, W) uint8;
    instances: (D, H, W) int32 ids; instance_class[i] is the class of id i (index 0 unused)."""

    image: np.ndarray
    classes: np.ndarray
    instances: np.ndarray
    instance_class: np.ndarray
    name: str = ""
    lesion_classes: tuple[int, ...] = LESION_CLASSES  # label values of lesion kinds 0, 1, ... (kind_target)
    extra: np.ndarray | None = None  # (C - 1, D, H, W): the input channels after ``image`` (config ct_extra_windows)


def nearest_to_model(labels: np.ndarray, grid: GridMap) -> np.ndarray:
    """Nearest-neighbour resampling of an integer map onto the model grid."""
    idx = [np.clip(np.floor((np.arange(m) + 0.5) * f).astype(int), 0, n - 1)
           for m, f, n in zip(grid.model_shape, grid.scale, grid.shape)]
    return labels[np.ix_(*idx)]


def prepare_case(image: np.ndarray, labels: np.ndarray, spacing, cfg: MIQSAMConfig, name: str = "",
                 lesion_classes=LESION_CLASSES, model_spacing=None) -> PreparedCase:
    """Normalise and resample a case exactly as the Predictor does; instances per lesion class.
    ``model_spacing`` (mm, z y x) overrides the config's model grid (scale augmentation)."""
    grid = GridMap.build(image.shape, spacing, cfg.spacing if model_spacing is None else model_spacing)
    norm, read_as = normalise_and_read(image, cfg.ct_level, cfg.ct_half_width)
    img = resample_to_model(norm, grid.model_shape).numpy()
    extra = [resample_to_model(ch, grid.model_shape).numpy()
             for ch in extra_channels(image, cfg.ct_extra_windows, read_as, norm)]
    del norm
    cls = nearest_to_model(np.asarray(labels, dtype=np.uint8), grid)
    inst = np.zeros(cls.shape, dtype=np.int32)
    inst_class = [0]
    for c in lesion_classes:
        ids, n = instances_of(cls, c)
        if n:
            inst[ids > 0] = ids[ids > 0] + len(inst_class) - 1
            inst_class += [c] * n
    return PreparedCase(img, cls, inst, np.asarray(inst_class, dtype=np.int16), name, tuple(lesion_classes),
                        np.stack(extra) if extra else None)


PATCH_MULTIPLE = 8  # the encoder's token stride: every patch side is a multiple of it


@dataclass
class Example:
    """A training example; a patch side is ``patch`` where the case is larger, else the case's own
    side rounded up to a multiple of 8 (so a patch as large as the inference window shows the model
    whole cases, as the Predictor does)."""

    image: torch.Tensor  # (1, D, H, W)
    points: torch.Tensor  # (Q, 3) patch voxel coordinates (z, y, x)
    labels: torch.Tensor  # (Q,) 1 positive, 0 negative
    targets: torch.Tensor  # (K, D/2, H/2, W/2) soft occupancy at stride 2
    saliency: torch.Tensor  # (1, D/8, H/8, W/8) boundary target
    kinds: torch.Tensor  # (1 + K, D/2, H/2, W/2) soft occupancy of (background, lesion kinds)
    instances: torch.Tensor | None = None  # (D, H, W) int32 ids of the target instances, 0 elsewhere (refiner)


def draw_patch(patch: int | Sequence[int], rng: np.random.Generator) -> int:
    """A patch side: ``patch`` itself, or one of a sequence of sides drawn uniformly (variable patch
    sizes, so the network sees windows of the sizes the Predictor's tiling uses; a single side
    draws nothing from ``rng``)."""
    if isinstance(patch, (int, np.integer)):
        return int(patch)
    sides = [int(v) for v in patch]
    if not sides or any(v < 2 * PATCH_MULTIPLE or v % PATCH_MULTIPLE for v in sides):
        raise ValueError(f"patch sides must be multiples of {PATCH_MULTIPLE} (>= {2 * PATCH_MULTIPLE}), got {patch!r}")
    return sides[0] if len(sides) == 1 else sides[int(rng.integers(len(sides)))]


def patch_shape(case_shape, patch: int) -> tuple[int, int, int]:
    """Patch sides: ``patch`` where the case is larger, else the case's side rounded up to a multiple of 8."""
    m = PATCH_MULTIPLE
    return tuple(patch if n > patch else min(patch, -(-n // m) * m) for n in case_shape)


def _crop(arr: np.ndarray, start, size, fill) -> np.ndarray:
    out = np.full(tuple(size), fill, dtype=arr.dtype)
    src = tuple(slice(max(0, s), min(n, s + z)) for s, n, z in zip(start, arr.shape, size))
    dst = tuple(slice(a.start - s, a.stop - s) for a, s in zip(src, start))
    out[dst] = arr[src]
    return out


def _click(mask: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    mode = CLICK_MODES[rng.integers(len(CLICK_MODES))]
    return np.asarray(simulate_click(mask, mode, rng), dtype=float)


def boundary_target(classes: np.ndarray, stride: int = 8) -> torch.Tensor:
    """1 where a stride-cell contains a boundary between two classes (organ, lesions), (1, d, h, w)."""
    c = torch.from_numpy(classes.astype(np.int16))
    edge = torch.zeros_like(c, dtype=torch.bool)
    for axis in range(3):
        diff = torch.diff(c, dim=axis) != 0
        pad = [0, 0, 0, 0, 0, 0]
        pad[2 * (2 - axis) + 1] = 1
        edge |= F.pad(diff, pad)
    return F.max_pool3d(edge[None, None].float(), stride)[0]


def instance_occupancy(instances: np.ndarray, ids) -> torch.Tensor:
    """(K, d/2, h/2, w/2) fraction of each stride-2 cell that instance ``ids[k]`` fills, pooled only
    over each instance's own box (on even voxel bounds): the same numbers as pooling K whole-patch
    masks, at a fraction of the cost when the instances are small."""
    half = tuple(n // 2 for n in instances.shape)
    out = torch.zeros((len(ids), *half))
    boxes = ndimage.find_objects(instances)
    for k, i in enumerate(ids):
        box = boxes[int(i) - 1] if int(i) - 1 < len(boxes) else None
        if box is None:
            continue
        lo = [b.start // 2 * 2 for b in box]
        hi = [min(2 * h, -(-b.stop // 2) * 2) for b, h in zip(box, half)]
        if any(b <= a for a, b in zip(lo, hi)):
            continue  # only in the odd last voxel row, which pooling drops too
        crop = instances[tuple(slice(a, b) for a, b in zip(lo, hi))] == i
        out[k][tuple(slice(a // 2, b // 2) for a, b in zip(lo, hi))] = F.avg_pool3d(
            torch.from_numpy(crop.astype(np.float32))[None, None], 2)[0, 0]
    return out


def peak_normalised(occupancy: torch.Tensor) -> torch.Tensor:
    """Scale each (K, ...) occupancy map whose largest cell is below 1 so that it reaches 1.

    A lesion smaller than a stride-2 cell (under about 6 mm at 1.5 mm spacing) half-fills its cells
    at best, so a plain occupancy target teaches the network to call it background: measured, a
    perfect stride-2 mask with occupancy targets already loses a fifth of the instances (instance F1
    0.80 on validation phantoms). Raised to 1, its most-filled cell says "here"; where the boundary
    lies within the cells is the mask refiner's job (model/refine.py). Larger lesions are unchanged.
    """
    peak = occupancy.flatten(1).amax(1).clamp(min=1e-6)
    return (occupancy / peak.view(-1, *([1] * (occupancy.ndim - 1)))).clamp(max=1.0)


def kind_target(classes: np.ndarray, lesion_classes=LESION_CLASSES, instances: np.ndarray | None = None) -> torch.Tensor:
    """Soft occupancy (1 + K, d/2, h/2, w/2) of (not a lesion, kind 1..K) per stride-2 cell; kind k
    is ``lesion_classes[k - 1]`` (KiTS: 2 tumour, 3 cyst). With ``instances`` (lesion ids), each
    lesion's occupancy is ``peak_normalised`` so a lesion smaller than a cell still has a cell of
    its kind; the cells are then normalised to sum to 1."""
    kind = np.zeros(classes.shape, dtype=np.uint8)
    for k, c in enumerate(lesion_classes, start=1):
        kind[classes == c] = k
    # the lesion kinds' occupancy, and background as the rest: the same numbers as pooling a one-hot
    # map of all 1 + K channels (each cell's eight voxels sum to 1), without building that map
    lesions = F.avg_pool3d(torch.from_numpy(np.stack([kind == k for k in range(1, len(lesion_classes) + 1)])
                                            .astype(np.float32))[None], 2)[0]
    t = torch.cat([(1 - lesions.sum(0, keepdim=True)).clamp(min=0), lesions])
    if instances is None or not instances.any():
        return t
    raised = False
    for i, box in enumerate(ndimage.find_objects(instances), start=1):
        if box is None:
            continue
        lo = [b.start // 2 * 2 for b in box]
        hi = [min(n, -(-b.stop // 2) * 2) for b, n in zip(box, instances.shape)]
        region = tuple(slice(a, b) for a, b in zip(lo, hi))  # the lesion's box on even voxel bounds
        crop = instances[region] == i
        k = int(np.bincount(kind[region][crop]).argmax())
        if k == 0:
            continue
        occ = F.avg_pool3d(torch.from_numpy(crop).float()[None, None], 2, ceil_mode=True)[0, 0]
        if float(occ.max()) >= 1.0:
            continue
        cells = tuple(slice(a // 2, a // 2 + n) for a, n in zip(lo, occ.shape))
        t[k][cells] = torch.maximum(t[k][cells], occ / occ.max())
        raised = True
    if raised:
        t[0] = (1 - t[1:].sum(0)).clamp(min=0)
        t = t / t.sum(0, keepdim=True)
    return t


def sample_example(case: PreparedCase, patch: int, rng: np.random.Generator, neg_prob: float = 0.3,
                   extra_pos_prob: float = 0.2, extra_pos_max: int = 1) -> Example | None:
    """One lesion-centred training example, or None if the case has no lesion.

    Besides the click on the sampled lesion: up to ``extra_pos_max`` more positive clicks on
    lesions of its kind in the patch, each drawn with probability ``extra_pos_prob`` while the
    previous one was (a user clicking the lesions the first answer missed), and with probability
    ``neg_prob`` a negative click on a lesion of another kind."""
    present = sorted(set(case.instance_class[1:].tolist()))
    if not present:
        return None
    cls = present[rng.integers(len(present))]
    ids = np.nonzero(case.instance_class == cls)[0]
    inst = int(ids[rng.integers(len(ids))])
    where = np.nonzero(case.instances == inst)
    lo = [int(w.min()) for w in where]
    hi = [int(w.max()) + 1 for w in where]
    box = tuple(slice(a, b) for a, b in zip(lo, hi))
    click = _click(case.instances[box] == inst, rng) + np.asarray(lo)
    margin = min(8, patch // 4)
    size = patch_shape(case.image.shape, patch)
    start = []
    for axis in range(3):
        n = case.image.shape[axis]
        if n <= patch:
            start.append(-int(rng.integers(0, size[axis] - n + 1)))
        else:
            s = int(click[axis]) - int(rng.integers(margin, patch - margin))
            start.append(int(np.clip(s, 0, n - patch)))
    image = _crop(case.image, start, size, np.float32(-1.0))[None]
    if case.extra is not None:
        image = np.concatenate([image, *(_crop(ch, start, size, np.float32(-1.0))[None] for ch in case.extra)])
    inst_p = _crop(case.instances, start, size, np.int32(0))
    cls_p = _crop(case.classes, start, size, np.uint8(0))
    click_p = click - np.asarray(start)
    present_ids = np.unique(inst_p[inst_p > 0])
    target_ids = [i for i in present_ids if case.instance_class[i] == cls]
    other_ids = [i for i in present_ids if case.instance_class[i] != cls]
    points, labels = [click_p], [1]
    for _ in range(extra_pos_max):
        if not (len(target_ids) > 1 and rng.random() < extra_pos_prob):
            break
        j = target_ids[rng.integers(len(target_ids))]
        points.append(_click(inst_p == j, rng)); labels.append(1)
    if other_ids and rng.random() < neg_prob:
        j = other_ids[rng.integers(len(other_ids))]
        points.append(_click(inst_p == j, rng)); labels.append(0)
    targets = peak_normalised(instance_occupancy(inst_p, target_ids))
    own = np.where(np.isin(inst_p, target_ids), inst_p, 0).astype(np.int32)
    return Example(torch.from_numpy(image), torch.tensor(np.asarray(points), dtype=torch.float32),
                   torch.tensor(labels), targets, boundary_target(cls_p), kind_target(cls_p, case.lesion_classes, inst_p),
                   torch.from_numpy(own))


def random_contrast_curve(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random monotone transfer curve on normalised intensities, as knots (x, y) for ``np.interp``.

    SynthSeg's principle (Billot et al., Medical Image Analysis 2023) on a CT-shaped generator: the
    network should not learn which tissue has which absolute intensity, only how a lesion stands
    out from what surrounds it. 3-6 segments over [-1, 1], each with a slope between 0.3 and 1 of
    the steepest (so no contrast is squeezed by more than about 3x against the others), an output
    span of 1-2.4 centred in [-0.5, 0.5] (the ends may saturate at +-1, as tissue clipped by a CT
    window or an MR's dark air does), and in half the draws reversed (bright becomes dark).
    Monotone: lesions of one kind stay alike and kinds that differ stay apart.
    """
    n = int(rng.integers(3, 7))
    x = np.concatenate([[-1.0], np.sort(rng.uniform(-1.0, 1.0, n - 1)), [1.0]])
    rise = np.concatenate([[0.0], np.cumsum(np.diff(x) * rng.uniform(0.3, 1.0, n))])
    span, centre = float(rng.uniform(1.0, 2.4)), float(rng.uniform(-0.5, 0.5))
    y = centre + span * (rise / rise[-1] - 0.5)
    if rng.random() < 0.5:
        y = 2 * centre - y
    return x, y


def augment(ex: Example, rng: np.random.Generator, random_contrast: float = 0.0) -> Example:
    """Random flips, intensity scale/shift, contrast (gamma-like) and noise; masks follow the flips.
    ``random_contrast``: the probability of a :func:`random_contrast_curve` first (0 draws nothing
    from ``rng`` for it, so runs without it stay reproducible)."""
    if not 0.0 <= random_contrast <= 1.0:
        raise ValueError(f"random_contrast is a probability in [0, 1], got {random_contrast}")
    img, pts, tg, sal, kinds, inst = ex.image, ex.points.clone(), ex.targets, ex.saliency, ex.kinds, ex.instances
    for axis in range(3):
        if rng.random() < 0.5:
            img, tg, sal, kinds = img.flip(axis + 1), tg.flip(axis + 1), sal.flip(axis + 1), kinds.flip(axis + 1)
            inst = inst.flip(axis) if inst is not None else None
            pts[:, axis] = img.shape[axis + 1] - 1 - pts[:, axis]
    if random_contrast > 0 and rng.random() < random_contrast:
        x, y = random_contrast_curve(rng)
        # another modality, read as percentiles: every input channel is the first one (the Predictor's rule)
        repeat = img.shape[0]
        img = torch.from_numpy(np.clip(np.interp(img[:1].numpy(), x, y), -1.0, 1.0).astype(np.float32))
    else:
        repeat = 1  # the channels as they are
    img = img * float(rng.uniform(0.85, 1.15)) + float(rng.uniform(-0.12, 0.12))
    if rng.random() < 0.3:
        g = float(rng.uniform(0.8, 1.25))
        img = torch.sign(img) * img.abs().clamp(max=1.5) ** g
    img = img + torch.randn_like(img) * float(rng.uniform(0.0, 0.06))
    img = img.repeat(repeat, 1, 1, 1) if repeat > 1 else img
    return Example(img.clamp(-1.5, 1.5), pts, ex.labels, tg, sal, kinds, inst)


def _pad_to(t: torch.Tensor, shape, value: float) -> torch.Tensor:
    """Pad the last three dims of ``t`` at their ends to ``shape``."""
    extra = [s - n for s, n in zip(shape, t.shape[-3:])]
    if not any(extra):
        return t
    return F.pad(t, [0, extra[2], 0, extra[1], 0, extra[0]], value=value)


def collate(batch: list[Example]) -> dict:
    """Stack a batch; points are padded with a validity mask, and patches of different shapes (whole
    cases of different sizes) are padded at their ends to the largest: image with -1 (air), masks
    with 0 and the kind target with background."""
    shape = tuple(max(e.image.shape[1 + a] for e in batch) for a in range(3))
    if any(tuple(e.image.shape[1:]) != shape for e in batch):
        half, eighth = tuple(s // 2 for s in shape), tuple(s // PATCH_MULTIPLE for s in shape)
        padded = []
        for e in batch:
            kinds = torch.cat([_pad_to(e.kinds[:1], half, 1.0), _pad_to(e.kinds[1:], half, 0.0)])  # padding: background
            inst = _pad_to(e.instances, shape, 0) if e.instances is not None else None
            padded.append(Example(_pad_to(e.image, shape, -1.0), e.points, e.labels, _pad_to(e.targets, half, 0.0),
                                  _pad_to(e.saliency, eighth, 0.0), kinds, inst))
        batch = padded
    q = max(len(e.labels) for e in batch)
    pts = torch.zeros(len(batch), q, 3)
    lab = torch.zeros(len(batch), q, dtype=torch.long)
    valid = torch.zeros(len(batch), q, dtype=torch.bool)
    for i, e in enumerate(batch):
        n = len(e.labels)
        pts[i, :n], lab[i, :n], valid[i, :n] = e.points, e.labels, True
    return {"image": torch.stack([e.image for e in batch]), "points": pts, "labels": lab, "valid": valid,
            "targets": [e.targets for e in batch], "saliency": torch.stack([e.saliency for e in batch]),
            "kinds": torch.stack([e.kinds for e in batch]), "instances": [e.instances for e in batch]}
