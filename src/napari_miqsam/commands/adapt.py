"""``miqsam adapt DATA --weights BASE [--steps N] -o NEW.safetensors``: fine-tune on your own labelled volumes."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("fine-tune weights on your own labelled volumes (a data set folder, e.g. from `miqsam collect`) for a few "
        "steps per volume on the CPU, into a new weights file; scores old and new weights on a held-out volume")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from ..training.adapt import ADAPT_DEFAULTS, STEPS_PER_VOLUME, TRAIN_MODES

    parser.add_argument("data", type=Path, help="data set folder (KiTS layout from `miqsam collect`; LiTS and MSD also read)")
    parser.add_argument("--weights", default="default", metavar="BASE",
                        help="weights to start from (default: the shipped ones); never overwritten")
    parser.add_argument("--steps", type=int, default=0,
                        help=f"training steps (default: {STEPS_PER_VOLUME} per labelled volume trained on; more over-fits "
                             "a few volumes: docs/results.md, adaptation curve)")
    parser.add_argument("--minutes", type=float, default=0.0, help="stop after this many minutes if sooner (default: no time limit)")
    parser.add_argument("-o", "--out", type=Path, default=None, metavar="NEW.safetensors",
                        help="the new weights file (default: a fresh name in the user weights folder); a JSON card goes beside it")
    parser.add_argument("--train", default="decoder", choices=TRAIN_MODES,
                        help="decoder: query generator, decoder and heads, encoder frozen (default; cheaper per step); all: the whole network")
    parser.add_argument("--held-out", type=int, default=1,
                        help="volumes (the data set's last) kept out of training to score old vs new weights (default 1; 0: none)")
    parser.add_argument("--clicks", type=int, default=3, help="simulated clicks per held-out volume and lesion kind (default 3)")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (default: every available core)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"], help="where to train (default cpu)")
    parser.add_argument("--batch", type=int, default=ADAPT_DEFAULTS["batch"], help="patches per step (default %(default)s)")
    parser.add_argument("--patch", type=int, default=ADAPT_DEFAULTS["patch"], help="patch side in model voxels (default %(default)s)")
    parser.add_argument("--lr", type=float, default=ADAPT_DEFAULTS["lr"], help="peak learning rate (default %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output file (never the shipped or base weights)")


def run(args: argparse.Namespace) -> int:
    from ..training.adapt import adapt
    from ..user_weights import new_weights_path

    out = args.out if args.out is not None else new_weights_path()
    result = adapt(args.data, args.weights, out, minutes=args.minutes, train=args.train, steps=args.steps,
                   held_out=args.held_out, clicks=args.clicks, threads=args.threads, device=args.device,
                   batch=args.batch, patch=args.patch, lr=args.lr, seed=args.seed, overwrite=args.overwrite)
    print(f"{result.steps} steps ({result.train}) in {result.minutes:.1f} min; {result.summary()}")
    return 0
