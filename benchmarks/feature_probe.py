"""Where is a family's lesion information lost: in the encoder, or in what reads it? A probe of the
frozen encoder (no decoder, no clicks).

    python benchmarks/feature_probe.py --fit ood:36:2000 --fit phantom:36:5200000 --test ood:12:3000 --test "$(miqsam fetch-real-ct)"

Every volume is embedded once, whole, on the weights' model grid. Each stride-2 cell gets the
encoder's mask features and its token features (trilinear from stride 8), with their mean over the
3x3x3 neighbouring cells beside them (224 numbers for the ``cpu`` config); its target is "on a lesion
of any kind". Per ``--fit`` family, a small MLP (224 -> 64 -> 1) is trained on those cells (all lesion cells and
``--background`` random others per volume, weighted back to the volume's share) and read on every
``--test`` family, beside the reading training gave the network: its kind head's lesion-versus-
background logit. Printed per (reading, test family): average precision (AP) of lesion cells, and the
share of lesions "seen" (half of their cells above the score that 0.1% / 1% of non-lesion cells
exceed), for all lesions and for those smaller and larger than 264 mm3 (an 8 mm ball).

A reading fitted on the test family itself is an oracle: it tells what the frozen features hold. If
it finds far more than the kind head, the encoder holds the information and the reading misses it;
if it finds no more, only a changed encoder can. Data as ``miqsam evaluate`` takes it (``ood:N:SEED``:
N volumes from SEED; a folder, such as LiTS 117 from ``miqsam fetch-real-ct``, a test only, never
fitted), plus ``randomized:N:SEED``. Nineteenth session's numbers: docs/experiments.md.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import torch
import torch.nn.functional as F

SMALL_MM3 = 15 * 2.6 ** 3  # "small": under 15 stride-2 cells of the 1.3 mm grid (264 mm3, an 8 mm ball)


def load_cases(spec: str, shape=None):
    """(image, labels, spacing) of each case of ``spec``: anything ``miqsam evaluate`` takes as DATA
    (``phantom:N:SEED``, ``ood:N:SEED``, a folder), or ``randomized:N:SEED`` (the randomized training
    generator). ``shape`` replaces the phantoms' own (tests)."""
    from dataclasses import replace

    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.data.datasets import PhantomRef

    family, _, rest = spec.partition(":")
    if family == "randomized":
        from napari_miqsam.data.randomized import make_randomized_phantom

        n, _, seed = rest.partition(":")
        cases = [make_randomized_phantom(s, shape=shape) for s in range(int(seed or 0), int(seed or 0) + int(n))]
    else:
        refs = resolve_cases(spec)
        if shape is not None:
            refs = [replace(r, shape=tuple(shape)) if isinstance(r, PhantomRef) else r for r in refs]
        cases = [r.load() for r in refs]
    return [(c.image, c.labels, c.spacing) for c in cases]


def image_features(x: torch.Tensor, shape) -> torch.Tensor:
    """The model-grid image itself per stride-2 cell, no network: the cell's mean, its means over 3, 5
    and 9 cells (centre-surround contrasts for the MLP to form), the spread, minimum and maximum over
    3 cells. (7, *shape)."""
    m = F.avg_pool3d(x, 2, 2)[..., : shape[0], : shape[1], : shape[2]]
    mean = [F.avg_pool3d(m, k, 1, k // 2, count_include_pad=False) for k in (3, 5, 9)]
    var = F.avg_pool3d(m * m, 3, 1, 1, count_include_pad=False) - mean[0] ** 2
    return torch.cat([m, *mean, var.clamp(min=0).sqrt(), -F.max_pool3d(-m, 3, 1, 1), F.max_pool3d(m, 3, 1, 1)], 1)[0]


def cells(model, case, rng: np.random.Generator, background: int, model_spacing: float | None = None,
          features: str = "encoder") -> dict:
    """Features, targets and weights of one volume's stride-2 cells (all lesion cells, some others).
    ``features``: ``encoder`` (the network's), ``image`` (:func:`image_features`, no network) or ``both``."""
    from napari_miqsam.training.sampling import prepare_case

    image, labels, spacing = case
    kinds = tuple(int(v) for v in np.unique(labels) if v >= 2)
    grid = None if model_spacing is None else (model_spacing,) * 3
    pc = prepare_case(image, labels, spacing, model.cfg, lesion_classes=kinds, model_spacing=grid)
    img = torch.from_numpy(pc.image)
    channels = img[None] if pc.extra is None else torch.cat([img[None], torch.from_numpy(pc.extra)])  # more CT windows
    pad = [-(-n // 8) * 8 - n for n in img.shape]
    x = F.pad(channels, [0, pad[2], 0, pad[1], 0, pad[0]], value=-1.0)[None]
    with torch.inference_mode():
        emb = model.embed(x)
        mf = emb.mask_features[0].float()
        tok = emb.tokens.transpose(1, 2).reshape(1, emb.tokens.shape[2], *emb.token_shape).float()
        tok = F.interpolate(tok, size=mf.shape[1:], mode="trilinear", align_corners=False)[0]
        feat = torch.cat([mf, tok], 0)
        feat = torch.cat([feat, F.avg_pool3d(feat[None], 3, 1, 1, count_include_pad=False)[0]], 0)
        if features != "encoder":
            pixels = image_features(x[:, :1], mf.shape[1:])
            feat = pixels if features == "image" else torch.cat([feat, pixels], 0)
        if emb.kind_logits is None:  # weights without a kind head: no reading of their own to compare
            kind = torch.zeros(mf.shape[1:])
        else:
            kl = emb.kind_logits[0].float()
            kind = torch.logsumexp(kl[1:], 0) - kl[0]
    d2, h2, w2 = ((n + 1) // 2 for n in img.shape)
    lesion = (pc.classes[::2, ::2, ::2] >= 2)[:d2, :h2, :w2].ravel()
    inst = pc.instances[::2, ::2, ::2][:d2, :h2, :w2].ravel()
    feat = feat[:, :d2, :h2, :w2].reshape(feat.shape[0], -1).T.numpy()
    kind = kind[:d2, :h2, :w2].ravel().numpy()
    pos, neg = np.flatnonzero(lesion), np.flatnonzero(~lesion)
    keep = rng.choice(neg, min(background, len(neg)), replace=False)
    idx = np.concatenate([pos, keep])
    w = np.concatenate([np.ones(len(pos)), np.full(len(keep), len(neg) / max(len(keep), 1))])
    return {"X": feat[idx].astype(np.float32), "y": lesion[idx].astype(np.float32), "w": w.astype(np.float32),
            "kind": kind[idx], "inst": inst[idx]}


def gather(model, spec: str, background: int, shape=None, model_spacing: float | None = None,
           features: str = "encoder") -> dict:
    parts = []
    for i, case in enumerate(load_cases(spec, shape)):
        c = cells(model, case, np.random.default_rng(i), background, model_spacing, features)
        c["vol"] = np.full(len(c["y"]), i)
        parts.append(c)
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def fit_reading(d: dict, steps: int, batch: int, seed: int = 0):
    """An MLP trained on weighted, class-balanced minibatches; returns a scoring function."""
    torch.manual_seed(seed)
    X = torch.from_numpy(d["X"])
    mu, sd = X.mean(0), X.std(0) + 1e-6
    X = (X - mu) / sd
    y = torch.from_numpy(d["y"])
    w = torch.from_numpy(d["w"])
    w = torch.where(y > 0, w / w[y > 0].sum(), w / w[y == 0].sum())  # lesion and background weigh alike
    net = torch.nn.Sequential(torch.nn.Linear(X.shape[1], 64), torch.nn.GELU(), torch.nn.Linear(64, 1))
    opt = torch.optim.Adam(net.parameters(), lr=3e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.multinomial(w, batch, replacement=True, generator=g)
        loss = F.binary_cross_entropy_with_logits(net(X[idx])[:, 0], y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()

    def score(t: dict) -> np.ndarray:
        with torch.no_grad():
            return net((torch.from_numpy(t["X"]) - mu) / sd)[:, 0].numpy()
    return score


def average_precision(score: np.ndarray, y: np.ndarray, w: np.ndarray) -> float:
    order = np.argsort(-score, kind="stable")
    y, w = y[order], w[order]
    tp, fp = np.cumsum(y * w), np.cumsum((1 - y) * w)
    return float((tp / np.maximum(tp + fp, 1e-12) * y * w).sum() / max((y * w).sum(), 1e-12))


def lesions_seen(score: np.ndarray, t: dict, false_share: float, cell_mm3: float) -> dict:
    """Share of lesions with half their cells above the score ``false_share`` of background exceeds
    (``cell_mm3``: one stride-2 cell's volume, to tell small lesions from large)."""
    neg = t["y"] == 0
    s, w = score[neg], t["w"][neg]
    order = np.argsort(-s)
    thr = s[order][min(np.searchsorted(np.cumsum(w[order]) / w.sum(), false_share), len(s) - 1)]
    seen = {"all": [], "small": [], "large": []}
    for v in np.unique(t["vol"]):
        m = (t["vol"] == v) & (t["y"] == 1)
        for i in np.unique(t["inst"][m]):
            if i == 0:
                continue
            c = score[m][t["inst"][m] == i]
            hit = float((c > thr).mean() >= 0.5)
            seen["all"].append(hit)
            seen["small" if len(c) * cell_mm3 < SMALL_MM3 else "large"].append(hit)
    return {k: [round(float(np.mean(v)), 3) if v else None, len(v)] for k, v in seen.items()}


def report(reading: str, test: str, score: np.ndarray, t: dict, cell_mm3: float) -> dict:
    row = {"reading": reading, "test": test, "ap": round(average_precision(score, t["y"], t["w"]), 3),
           "seen_0.1%": lesions_seen(score, t, 1e-3, cell_mm3), "seen_1%": lesions_seen(score, t, 1e-2, cell_mm3)}
    print(json.dumps(row), flush=True)
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    from napari_miqsam.inference.predictor import Predictor

    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--weights", default=None, help="weights file (default: shipped)")
    p.add_argument("--config", default=None, help="an untrained config instead of weights (tests: tiny)")
    p.add_argument("--fit", action="append", default=[], help="phantom:N:SEED, ood:N:SEED or randomized:N:SEED to fit a reading on (repeatable)")
    p.add_argument("--test", action="append", default=[], help="what to read: any miqsam evaluate DATA, e.g. ood:12:3000 or \"$(miqsam fetch-real-ct)\" (repeatable)")
    p.add_argument("--background", type=int, default=30_000, help="background cells kept per volume")
    p.add_argument("--steps", type=int, default=2000)
    p.add_argument("--batch", type=int, default=16384)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--features", choices=("encoder", "image", "both"), default="encoder",
                   help="what the fitted readings read: the encoder's features, the image alone (no network), or both")
    p.add_argument("--model-spacing", type=float, default=None,
                   help="embed on this isotropic grid (mm) instead of the weights' own")
    p.add_argument("--shape", default=None, help="phantom shape z,y,x (tests; the ood family keeps its own)")
    p.add_argument("--json", default=None, help="write the rows here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else None
    predictor = Predictor.from_config(args.config) if args.config else Predictor.from_weights(args.weights)
    model = predictor.model.eval()
    cell_mm3 = float(np.prod([2.0 * (args.model_spacing or v) for v in model.cfg.spacing]))
    tests = {spec: gather(model, spec, args.background, shape, args.model_spacing, args.features) for spec in args.test}
    rows = [report("kind head", spec, t["kind"], t, cell_mm3) for spec, t in tests.items()] if model.cfg.kind_prior else []
    for spec in args.fit:
        score = fit_reading(gather(model, spec, args.background, shape, args.model_spacing, args.features), args.steps, args.batch)
        rows += [report(f"fitted on {spec}", name, score(t), t, cell_mm3) for name, t in tests.items()]
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(rows, fh, indent=1)
    return rows


if __name__ == "__main__":
    main()
