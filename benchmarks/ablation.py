"""Ablation study: full MIQ-SAM3D vs without spatial gating, without PC-IQG (single query),
without competition and without the kind prior, each trained with the same (small) budget on phantoms and evaluated the same way.

    python benchmarks/ablation.py train --steps 2400 --batch 2    # trains runs/ablation/<variant>/
    python benchmarks/ablation.py evaluate                         # 40 phantoms x 3 clicks, like docs/results.md
    python benchmarks/ablation.py table                            # Markdown table; numbers go to docs/results.md

Each action takes ``--variants``, so variants can train / evaluate in parallel processes (one per core,
``OMP_NUM_THREADS=1``); evaluate writes ``benchmarks/results/ablation/<variant>.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = {
    "full": {},
    "no_gating": {"gating": False},
    "no_pciqg": {"pciqg": False},
    "no_competition": {"competition": False},
    "no_kind_prior": {"kind_prior": False},
}
METRICS = ("dice", "nsd_1mm", "instance_f1", "instance_recall", "instance_precision", "wrong_class_rate", "dice_std_over_clicks")


def run_name(variant: str, train_seed: int) -> str:
    """The folder / results name of one training run: ``full``, ``full_seed1``, ..."""
    return variant if train_seed == 0 else f"{variant}_seed{train_seed}"


def train_all(args) -> None:
    from napari_miqsam.training.loop import TrainOptions, train

    for name in args.variants:
        opt = TrainOptions(config=args.config, data="phantom", out=str(Path(args.out) / run_name(name, args.train_seed)),
                           steps=args.steps, batch=args.batch, patch=args.patch, pool=args.pool, seed=args.train_seed,
                           threads=args.threads,
                           warmup=min(200, args.steps // 10), ablation=VARIANTS[name], resume=True)
        train(opt)


def evaluate_all(args) -> None:
    """One JSON per variant under ``--results`` (so variants can be evaluated in parallel processes)."""
    from napari_miqsam.commands.evaluate import write_json_atomic
    from napari_miqsam.data.phantom import make_phantom
    from napari_miqsam.evaluation.evaluate import evaluate
    from napari_miqsam.inference.predictor import Predictor
    from napari_miqsam.model.weights import read_metadata

    shape = None if args.shape is None else tuple(int(v) for v in args.shape.split(","))
    cases = [make_phantom(seed, shape=shape) for seed in range(args.seed, args.seed + args.cases)]
    for name in (run_name(v, args.train_seed) for v in args.variants):
        weights = Path(args.out) / name / f"miqsam_{args.config}.safetensors"
        predictor = Predictor.from_weights(weights, device="cpu", spacing=args.model_spacing)
        res = evaluate(cases, predictor, clicks=args.clicks, seed=0, progress=True, baselines=False)
        meta = read_metadata(weights)  # what the variant was trained with
        row = {k: res["model"][k] for k in METRICS if k in res["model"]}
        row.update(steps=int(meta.get("steps", 0)), train_minutes=float(meta.get("train_minutes", "nan")),
                   train_seed=args.train_seed, cases=args.cases, first_seed=args.seed, clicks=args.clicks)
        print(name, json.dumps(row), file=sys.stderr)
        Path(args.results).mkdir(parents=True, exist_ok=True)
        write_json_atomic(Path(args.results) / f"{name}.json", row)


def table(args) -> None:
    """The Markdown table of every evaluated run (in VARIANTS order, then by training seed)."""
    found = {p.stem: p for p in Path(args.results).glob("*.json")}
    groups = {v: {n: json.loads(found[n].read_text())
                  for n in sorted((n for n in found if n == v or n.startswith(f"{v}_seed")), key=lambda n: (len(n), n))}
              for v in VARIANTS}
    rows = {n: r for g in groups.values() for n, r in g.items()}
    if not rows:
        raise SystemExit(f"no results under {args.results}; run the evaluate action first")
    lines = ["| variant | steps | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 2) + "|"]
    for name, r in rows.items():
        lines.append(f"| {name} | {r['steps']} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in METRICS) + " |")
    if any(len(g) > 1 for g in groups.values()):  # the mean over training seeds, per variant
        lines += ["", "| variant (mean over training seeds) | runs | " + " | ".join(METRICS) + " |",
                  "|---" * (len(METRICS) + 2) + "|"]
        for v, g in groups.items():
            if g:
                means = [sum(r.get(k, float("nan")) for r in g.values()) / len(g) for k in METRICS]
                lines.append(f"| {v} | {len(g)} | " + " | ".join(f"{m:.3f}" for m in means) + " |")
    print("\n".join(lines))


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["train", "evaluate", "table"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--config", default="cpu", help="model configuration (tiny: the smoke test's)")
    p.add_argument("--patch", type=int, default=64, help="training crop side in model voxels")
    p.add_argument("--steps", type=int, default=2400, help="training steps per variant (default: the budget of the table in docs/results.md)")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--pool", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--train-seed", type=int, default=0,
                   help="training seed (initialisation and phantom stream); runs other than 0 go to <variant>_seed<k>")
    p.add_argument("--cases", type=int, default=40, help="evaluation cases (default: the main table of docs/results.md)")
    p.add_argument("--clicks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0, help="first phantom seed of the evaluation cases")
    p.add_argument("--shape", default=None,
                   help="phantom shape z,y,x in voxels (default: the phantom's own, its field of view / spacing)")
    p.add_argument("--model-spacing", type=float, default=None,
                   help="evaluate on a model grid of this spacing in mm (default: the weights')")
    p.add_argument("--results", default="benchmarks/results/ablation", help="folder of the per-variant JSON")
    args = p.parse_args(argv)
    {"train": train_all, "evaluate": evaluate_all, "table": table}[args.action](args)


if __name__ == "__main__":
    main()
