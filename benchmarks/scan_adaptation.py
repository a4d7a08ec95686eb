"""Test-time adaptation from one click: learn the clicked lesion's look on the user's own scan, then
predict (eighteenth session; docs/experiments.md). Measured, not shipped.

For every click: the base weights predict; the clicked lesion's mask is the shown instance holding
the click, else a region grown from the click (``evaluation.baselines``) cut to a ball of twice the
blob radius at the click (the first maximum over scales of the scale-normalised Laplacian of
Gaussian), else that ball. Transformed copies of that lesion (flips, transpositions, log-uniform zoom
0.7-1.4, contrast x 0.8-1.2, its contrast to its own ring added onto the local level) are pasted into
64^3 crops of the same scan on the model grid, where the smoothed scan looks like the lesion's host;
a copy of the whole network (mask refiner frozen, saliency loss off) is trained for ``--steps``
steps of two examples, one pasted and one from four training phantoms (replay, so the copy does not
forget what it knew), at ``--lr``; the scan is embedded with the copy and the same click predicted.
The weights on disk never change. 25-30 s a click (60 steps, one thread, beside a second run).

    python benchmarks/scan_adaptation.py ood:12:1000 --json runs/tt/val
    python benchmarks/scan_adaptation.py ood:12:1000 --json runs/tt/val.0 --shard 0/2 --threads 1  # and val.1, 1/2
    python benchmarks/scan_adaptation.py --merge runs/tt/val.0 runs/tt/val.1 --json runs/tt/val

writes the base and the adapted result (``miqsam evaluate``'s JSON: ``STEM.base.json`` and
``STEM.adapted.json`` for ``--json STEM``, so ``miqsam compare`` reads them) and prints both summaries
and the paired comparison. ``--policy if-missed`` adapts only when no shown instance holds the
click; ``--mask oracle`` takes the clicked lesion from the labels (an upper bound on the mask step).

Measured (docs/experiments.md, eighteenth session), shipped weights, 1 click: on `ood:12:1000` Dice
0.439 -> 0.50-0.54 and wrong-class 0.139 -> 0.05-0.10, but instance F1 0.369 -> 0.35-0.39 (two runs
differ by 0.04; 150 steps: 0.239; the encoder frozen: 0.312); on `ood:12:1012` F1 0.417 -> 0.370; on
the real LiTS case (largest / median / smallest tumour) Dice 0.349 -> 0.443, F1 0.156 -> 0.245; lung
CT and brain MR stay at 0. Not shipped.
"""

from __future__ import annotations

import argparse
import copy
import json
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

HOST_TOLERANCE = 0.6  # a pasting place's smoothed level lies within this share of the lesion's contrast of its ring's
MIN_TOLERANCE = 0.04  # ... or within this many input units (8 HU in the CT window)
OWN_CROP = 0.3  # the share of pasted examples whose crop is centred near the clicked lesion itself
SURE_SCORE = 0.5  # a shown instance holding the click is the clicked lesion's mask from this confidence up
REPLAY_SEED = 5_000_000  # training phantoms replayed during adaptation (seeds far from every yardstick's)


def blob_radius(image, point, spacing, sigmas_mm=(1.0, 1.5, 2.0, 2.8, 4.0, 5.6, 8.0, 11.0)) -> float:
    """Radius (mm) of the blob at ``point``: sqrt(3) x the first scale at which the scale-normalised
    Laplacian of Gaussian at the point (its sign taken at the second scale) stops growing."""
    half = [int(np.ceil(40.0 / s)) for s in spacing]
    box = tuple(slice(max(0, c - h), min(n, c + h + 1)) for c, h, n in zip(point, half, image.shape))
    crop = np.asarray(image[box], np.float32)
    q = tuple(c - b.start for c, b in zip(point, box))
    vals = [float(s ** 2 * ndimage.gaussian_laplace(crop, [s / sp for sp in spacing])[q]) for s in sigmas_mm]
    sign = np.sign(vals[1]) or 1.0
    for i in range(len(vals) - 1):
        if sign * vals[i] >= sign * vals[i + 1]:
            return sigmas_mm[i] * np.sqrt(3.0)
    return sigmas_mm[-1] * np.sqrt(3.0)


def clicked_lesion(prediction, point, image, spacing) -> tuple[np.ndarray, str]:
    """The clicked lesion's mask on the image's grid, and where it came from (``prediction`` was made
    from the one positive click ``point``)."""
    from napari_miqsam.evaluation.baselines import grow_with_window

    held = np.nonzero(prediction.clicked() & (prediction.scores >= SURE_SCORE))[0]  # by descending score
    if len(held):
        inst = prediction.instances[int(held[0])]
        mask = np.zeros(image.shape, bool)
        mask[inst.bbox] = inst.mask
        return mask, "model"
    p = tuple(int(round(c)) for c in point)
    grown = np.asarray(grow_with_window(image, p, spacing, max_diameter_mm=60.0)[0]) > 0
    grids = np.ogrid[tuple(slice(0, n) for n in image.shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, p, spacing))
    r = blob_radius(image, p, spacing)
    capped = grown & (d2 <= max(2.0 * r, 3.0) ** 2)
    return (capped, "grown") if capped.any() else (d2 <= r ** 2, "blob")


def erase_lookalikes(img, smooth, exemplar, known, host, ring_level, contrast):
    """The scan with its unlabelled look-alikes of the exemplar painted over with host tissue.

    A pasted crop's other real lesions of the clicked kind would otherwise be taught as background
    (nobody labelled them). A look-alike: a connected region whose smoothed level lies past half the
    exemplar's contrast from its ring's level (on the exemplar's side), not a known lesion, at most 8x
    the exemplar's size (and at most 30,000 voxels), and at least half surrounded by host tissue; it is
    replaced (one voxel wider) by the ring's level plus the scan's own fine texture there."""
    sign = 1.0 if contrast >= 0 else -1.0
    look = sign * (smooth - ring_level) > 0.5 * abs(contrast)
    look &= ~ndimage.binary_dilation(known | exemplar, iterations=1)
    parts, n = ndimage.label(look)
    if not n:
        return img, 0
    sizes = np.bincount(parts.ravel(), minlength=n + 1)
    limit = min(8 * int(exemplar.sum()) + 27, 30_000)
    erase = np.zeros(img.shape, bool)
    count = 0
    for i, box in enumerate(ndimage.find_objects(parts), start=1):
        if box is None or sizes[i] > limit:
            continue
        wide = tuple(slice(max(0, b.start - 2), min(m, b.stop + 2)) for b, m in zip(box, img.shape))
        region = parts[wide] == i
        shell = ndimage.binary_dilation(region, iterations=2) & ~region
        if shell.any() and host[wide][shell].mean() >= 0.5:
            erase[wide] |= region
            count += 1
    erase = ndimage.binary_dilation(erase, iterations=1) & ~ndimage.binary_dilation(known | exemplar, iterations=1)
    out = img.copy()
    out[erase] = ring_level + (img - smooth)[erase]
    return out, count


class Paster:
    """Pasted-copy examples of ``exemplar`` (bool, model grid) into ``case`` (sampling.PreparedCase)."""

    def __init__(self, case, exemplar, rng, zoom=(0.7, 1.4), copies=(1, 4), erase=False):
        self.case, self.rng, self.zoom, self.copies = case, rng, zoom, copies
        img = case.image
        ring = ndimage.binary_dilation(exemplar, iterations=3) & ~ndimage.binary_dilation(exemplar, iterations=1)
        self.ring_level = float(np.median(img[ring]))
        self.contrast = float(np.median(img[exemplar])) - self.ring_level
        smooth = ndimage.gaussian_filter(img, 1.0)
        host = np.abs(smooth - self.ring_level) < max(HOST_TOLERANCE * abs(self.contrast), MIN_TOLERANCE)
        host &= ~ndimage.binary_dilation(exemplar | (case.instances > 0), iterations=4)
        self.host = host
        self.image = img
        self.erased = 0
        if erase:
            self.image, self.erased = erase_lookalikes(img, smooth, exemplar, case.instances > 0, host,
                                                       self.ring_level, self.contrast)
        inner = np.argwhere(ndimage.binary_erosion(host, iterations=2))
        self.host_voxels = inner if len(inner) >= 50 else np.argwhere(host)
        box = ndimage.find_objects(exemplar.astype(np.int32))[0]
        box = tuple(slice(max(0, b.start - 2), min(n, b.stop + 2)) for b, n in zip(box, img.shape))
        self.source = (img[box] - self.ring_level).astype(np.float32)
        self.source_mask = exemplar[box].astype(np.float32)
        self.centre = np.array([(b.start + b.stop) / 2 for b in box])
        self.lesion_class = int(case.instance_class[1])

    def _copy(self):
        rng = self.rng
        perm = rng.permutation(3)
        c, m = self.source.transpose(perm), self.source_mask.transpose(perm)
        for axis in range(3):
            if rng.random() < 0.5:
                c, m = np.flip(c, axis), np.flip(m, axis)
        z = float(np.exp(rng.uniform(np.log(self.zoom[0]), np.log(self.zoom[1]))))
        if abs(z - 1) > 0.05:
            c, m = ndimage.zoom(c, z, order=1), ndimage.zoom(m, z, order=1)
        return c * float(rng.uniform(0.8, 1.2)), np.clip(ndimage.gaussian_filter(m, 0.5), 0.0, 1.0)

    def example(self, patch):
        import torch

        from napari_miqsam.training.sampling import (Example, _click, _crop, augment, boundary_target,
                                                     instance_occupancy, kind_target, peak_normalised)
        rng, img = self.rng, self.image
        if rng.random() < OWN_CROP or len(self.host_voxels) == 0:
            centre = self.centre + rng.integers(-(patch // 4), patch // 4 + 1, 3)
        else:
            centre = self.host_voxels[rng.integers(len(self.host_voxels))]
        start = [int(np.clip(int(c) - patch // 2, min(0, n - patch), max(0, n - patch))) for c, n in zip(centre, img.shape)]
        size = (patch,) * 3
        image = _crop(img, start, size, np.float32(-1.0)).copy()
        inst = _crop(self.case.instances, start, size, np.int32(0)).copy()
        host = _crop(self.host.astype(np.uint8), start, size, np.uint8(0)).astype(bool)
        next_id = int(inst.max())
        for _ in range(int(rng.integers(self.copies[0], self.copies[1] + 1))):
            c, m = self._copy()
            free = np.argwhere(host & ~ndimage.binary_dilation(inst > 0, iterations=2))
            if len(free) == 0:
                break
            at = free[rng.integers(len(free))]
            lo = [int(a) - s // 2 for a, s in zip(at, m.shape)]
            src = tuple(slice(max(0, -a), min(s, p - a)) for a, s, p in zip(lo, m.shape, size))
            dst = tuple(slice(max(0, a), min(p, a + s)) for a, s, p in zip(lo, m.shape, size))
            mm, cc = m[src], c[src]
            outside = mm < 0.1
            level = float(np.median(image[dst][outside])) if outside.any() else self.ring_level
            image[dst] = (1 - mm) * image[dst] + mm * (level + cc)
            label = (mm > 0.5) & (inst[dst] == 0)
            if label.sum() >= 2:
                next_id += 1
                inst[dst][label] = next_id
        ids = [int(i) for i in np.unique(inst) if i > 0]
        if not ids:
            return None
        classes = np.where(inst > 0, self.lesion_class, 0).astype(np.uint8)
        point = _click(inst == ids[rng.integers(len(ids))], rng)
        return augment(Example(torch.from_numpy(image)[None], torch.tensor(np.asarray([point]), dtype=torch.float32),
                               torch.tensor([1]), peak_normalised(instance_occupancy(inst, ids)), boundary_target(classes),
                               kind_target(classes, self.case.lesion_classes, inst), torch.from_numpy(inst)), rng)


class AdaptingPredictor:
    """``set_image`` / ``predict`` as ``evaluation.evaluate`` asks; each ``predict`` adapts a copy of
    ``base``'s network to the scan first (see the module docstring)."""

    def __init__(self, base, steps=60, lr=5e-5, batch=2, patch=64, replay=4, seed=0, policy="always", oracle=None,
                 replay_shape=None, erase=False, train="all"):
        self.erase, self.train = erase, train
        self.base, self.steps, self.lr, self.batch, self.patch = base, steps, lr, batch, patch
        self.replay_shape = replay_shape
        self.replay, self.seed, self.policy, self.oracle = replay, seed, policy, oracle
        self.log: list[dict] = []
        self._replay_cases = None

    def set_image(self, image, spacing=(1.0, 1.0, 1.0), modality="auto"):
        self.image, self.spacing, self.modality = np.asarray(image, np.float32), tuple(spacing), modality
        self.base.set_image(self.image, spacing=self.spacing, modality=modality)

    def _replay(self, rng):
        from napari_miqsam.data.phantom import make_phantom
        from napari_miqsam.training.sampling import augment, prepare_case, sample_example

        if self._replay_cases is None:
            shape = {} if self.replay_shape is None else {"shape": self.replay_shape}
            cases = [make_phantom(REPLAY_SEED + i, **shape) for i in range(self.replay)]
            self._replay_cases = [prepare_case(np.asarray(c.image, np.float32), np.asarray(c.labels), c.spacing,
                                               self.base.model.cfg, model_spacing=self.base.model_spacing) for c in cases]
        while (e := sample_example(self._replay_cases[rng.integers(len(self._replay_cases))], self.patch, rng)) is None:
            pass
        return augment(e, rng)

    def predict(self, positive, negative=(), options=None):
        import torch

        from napari_miqsam.inference.predictor import Predictor
        from napari_miqsam.inference.preprocess import GridMap
        from napari_miqsam.training.losses import LossWeights, set_criterion
        from napari_miqsam.training.sampling import collate, nearest_to_model, prepare_case

        kw = {} if options is None else {"options": options}
        prediction = self.base.predict(positive, negative, **kw)
        t0 = time.perf_counter()
        if self.oracle is not None:
            p = tuple(int(round(c)) for c in positive[0])
            parts, _ = ndimage.label(self.oracle["labels"] == self.oracle["labels"][p])
            mask, source = parts == parts[p], "oracle"
        else:
            mask, source = clicked_lesion(prediction, positive[0], self.image, self.spacing)
        if self.policy == "if-missed" and source == "model":
            self.log.append({"source": source, "adapted": False})
            return prediction
        kind = int(np.argmax(prediction.kind)) if prediction.kind is not None else 0
        labels = np.zeros(self.image.shape, np.uint8)
        labels[mask] = 2 + kind
        model = copy.deepcopy(self.base.model)
        cfg = model.cfg
        if cfg.in_channels != 1:
            raise SystemExit("scan adaptation reads one input channel; these weights have more")
        kinds = tuple(range(2, 2 + max(cfg.kinds, kind + 1)))  # label 2 + k is the weights' kind k
        case = prepare_case(self.image, labels, self.spacing, cfg, lesion_classes=kinds, model_spacing=self.base.model_spacing)
        exemplar = nearest_to_model(mask.astype(np.uint8), GridMap.build(self.image.shape, self.spacing, self.base.model_spacing)) > 0
        if not exemplar.any():  # smaller than a model voxel: the click's voxel
            z = self.base.grid.to_model(np.asarray([positive[0]], float))[0]
            z = tuple(np.clip(np.round(z).astype(int), 0, np.array(case.image.shape) - 1))
            exemplar[z] = True
            case.instances[z] = 1
            case.instance_class = np.asarray([0, 2 + kind], np.int16)
        rng = np.random.default_rng(self.seed)
        torch.manual_seed(self.seed)
        paster = Paster(case, exemplar, rng, erase=self.erase)
        model.train()
        model.requires_grad_(True)
        if model.refiner is not None:
            model.refiner.requires_grad_(False)
        if self.train == "decoder":  # the encoder frozen: its features stay the base's
            model.encoder.requires_grad_(False)
        params = [p for p in model.parameters() if p.requires_grad]
        optim = torch.optim.AdamW(params, lr=self.lr, weight_decay=0.0)
        losses = []
        for _ in range(self.steps):
            batch = [self._replay(rng)] if self.replay else []
            while len(batch) < self.batch:
                if (e := paster.example(self.patch)) is not None:
                    batch.append(e)
            b = collate(batch)
            emb, outputs = model(b["image"], b["points"], b["labels"], b["valid"])
            loss = set_criterion(outputs, b["targets"], emb.saliency_logits, b["saliency"], emb.kind_logits, b["kinds"],
                                 LossWeights(saliency=0.0), relative_kinds=cfg.relative_kinds)["loss"]
            optim.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(params, 1.0)
            optim.step()
            losses.append(float(loss.detach()))
        adapted = Predictor(model.eval(), trained=self.base.trained, device="cpu", metadata=self.base.metadata,
                            spacing=self.base.model_spacing)
        adapted.set_image(self.image, spacing=self.spacing, modality=self.modality)
        out = adapted.predict(positive, negative, **kw)
        self.log.append({"source": source, "adapted": True, "lesion_voxels": int(mask.sum()),
                         "seconds": round(time.perf_counter() - t0, 1), "contrast": round(paster.contrast, 3),
                         "erased": paster.erased,
                         "loss_first": round(float(np.mean(losses[:5])), 3) if losses else None,
                         "loss_last": round(float(np.mean(losses[-5:])), 3) if losses else None,
                         "shown_before": len(prediction.shown()), "shown_after": len(out.shown())})
        return out


def summary(result: dict) -> str:
    m = result["model"]
    return " ".join(f"{k}={m[k]:.3f}" for k in ("dice", "instance_recall", "instance_precision", "instance_f1",
                                                 "wrong_class_rate", "clicked_found")) + f" rows={m['n_rows']}"


def report(base: dict, adapted: dict) -> None:
    from napari_miqsam.evaluation.compare import compare, format_comparison

    print("base   ", summary(base))
    print("adapted", summary(adapted))
    print(format_comparison(compare(base, adapted), "base", "adapted"))


def main(argv: list[str] | None = None) -> tuple[dict, dict]:
    import torch

    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.evaluation.evaluate import evaluate, merge_results
    from napari_miqsam.inference.predictor import Predictor

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", nargs="?", help="ood:N:SEED, phantom:N:SEED or a data set folder (as miqsam evaluate)")
    ap.add_argument("--json", required=True, help="writes JSON.base.json and JSON.adapted.json")
    ap.add_argument("--weights", default=None, help="base weights (default: the shipped ones)")
    ap.add_argument("--config", default=None, help="an untrained config instead of weights (smoke runs)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--lr", type=float, default=5e-5)
    ap.add_argument("--patch", type=int, default=64)
    ap.add_argument("--replay", type=int, default=4, help="training phantoms replayed (0: none, batch of pasted only)")
    ap.add_argument("--policy", choices=("always", "if-missed"), default="always")
    ap.add_argument("--mask", choices=("predicted", "oracle"), default="predicted")
    ap.add_argument("--erase", action="store_true", help="paint the scan's unlabelled look-alikes over with host tissue")
    ap.add_argument("--train", choices=("all", "decoder"), default="all", help="what learns (decoder: the encoder frozen)")
    ap.add_argument("--clicks", type=int, default=1)
    ap.add_argument("--seeds", default="0")
    ap.add_argument("--targets", default="random")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--shape", default=None, help="Z,Y,X: phantom:N:SEED and the replayed phantoms at this size (smoke runs)")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--shard", default="0/1", help="R/W: cases R, R+W, ...")
    ap.add_argument("--merge", nargs="+", default=None, help="merge shard outputs (their --json paths) into --json")
    a = ap.parse_args(argv)
    out = Path(a.json)
    paths = lambda p: (Path(f"{p}.base.json"), Path(f"{p}.adapted.json"))  # noqa: E731
    if a.merge:
        results = [merge_results([json.loads(paths(p)[i].read_text()) for p in a.merge]) for i in (0, 1)]
        for path, res in zip(paths(out), results):
            path.write_text(json.dumps(res))
        report(*results)
        return results[0], results[1]
    if a.threads:
        torch.set_num_threads(a.threads)
    base = Predictor.from_config(a.config) if a.config else Predictor.from_weights(a.weights, device="cpu")
    oracle = {} if a.mask == "oracle" else None
    shape = tuple(int(v) for v in a.shape.split(",")) if a.shape else None
    adapting = AdaptingPredictor(base, steps=a.steps, lr=a.lr, patch=a.patch, replay=a.replay, policy=a.policy,
                                 oracle=oracle, replay_shape=shape, erase=a.erase, train=a.train)
    if shape is not None:
        from napari_miqsam.data.phantom import make_phantom

        family, n, seed = a.data.split(":")
        if family != "phantom":
            raise SystemExit("--shape is for phantom:N:SEED")
        cases = [make_phantom(int(seed) + i, shape=shape) for i in range(int(n))]
    else:
        cases = resolve_cases(a.data, limit=a.limit)
    if oracle is not None:
        cases = [_Remember(c, oracle) for c in cases]
    rank, world = (int(v) for v in a.shard.split("/"))
    kw = dict(clicks=a.clicks, seed=[int(v) for v in a.seeds.split(",")], targets=tuple(a.targets.split(",")),
              progress=False, baselines=False, shard=(rank, world))
    t0 = time.perf_counter()
    before = evaluate(cases, base, **kw)
    after = evaluate(cases, adapting, **kw)
    after["adaptation"] = {"log": adapting.log, "options": vars(a), "minutes": round((time.perf_counter() - t0) / 60, 1)}
    out.parent.mkdir(parents=True, exist_ok=True)
    for path, res in zip(paths(out), (before, after)):
        path.write_text(json.dumps(res, default=float))
    report(before, after)
    return before, after


class _Remember:
    """A case reference that leaves its labels where the oracle mask reads them."""

    def __init__(self, ref, store: dict):
        self.ref, self.store = ref, store

    def load(self):
        case = self.ref.load() if hasattr(self.ref, "load") else self.ref
        self.store["labels"] = np.asarray(case.labels)
        return case


if __name__ == "__main__":
    main()
