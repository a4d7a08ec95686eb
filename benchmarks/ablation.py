"""Ablation study: full MIQ-SAM3D vs without spatial gating, without PC-IQG (single query),
without competition and without the kind prior, each trained with the same (small) budget on phantoms and evaluated the same way.

    python benchmarks/ablation.py train --steps 600 --batch 2      # trains runs/ablation/<variant>/
    python benchmarks/ablation.py evaluate --cases 12 --json benchmarks/results/ablation.json

Prints a Markdown table; numbers go to the README.
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


def train_all(args) -> None:
    from napari_miqsam.training.loop import TrainOptions, train

    for name in args.variants:
        opt = TrainOptions(config="cpu", data="phantom", out=str(Path(args.out) / name), steps=args.steps,
                           batch=args.batch, patch=64, pool=args.pool, seed=0, threads=args.threads,
                           warmup=min(200, args.steps // 10), ablation=VARIANTS[name], resume=True)
        train(opt)


def evaluate_all(args) -> None:
    from napari_miqsam.data.phantom import make_phantom
    from napari_miqsam.evaluation.evaluate import evaluate
    from napari_miqsam.inference.predictor import Predictor

    cases = [make_phantom(seed) for seed in range(args.seed, args.seed + args.cases)]
    results = {}
    for name in args.variants:
        weights = Path(args.out) / name / "miqsam_cpu.safetensors"
        predictor = Predictor.from_weights(weights, device="cpu")
        res = evaluate(cases, predictor, clicks=args.clicks, seed=0, progress=True)
        results[name] = {k: res["model"][k] for k in METRICS if k in res["model"]}
        print(name, json.dumps(results[name]), file=sys.stderr)
    lines = ["| variant | " + " | ".join(METRICS) + " |", "|---" * (len(METRICS) + 1) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r.get(k, float('nan')):.3f}" for k in METRICS) + " |")
    print("\n".join(lines))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"steps": args.steps, "cases": args.cases, "results": results}, indent=2))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("action", choices=["train", "evaluate"])
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    p.add_argument("--out", default="runs/ablation")
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--pool", type=int, default=40)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--cases", type=int, default=12)
    p.add_argument("--clicks", type=int, default=1)
    p.add_argument("--seed", type=int, default=0, help="first phantom seed of the evaluation cases")
    p.add_argument("--json", default=None)
    args = p.parse_args()
    train_all(args) if args.action == "train" else evaluate_all(args)


if __name__ == "__main__":
    main()
