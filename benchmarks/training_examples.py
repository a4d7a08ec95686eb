"""How fast the training data path prepares examples (phantoms -> prepared cases -> lesion-centred
patches with clicks -> augmented, collated batches), with and without worker processes. On a GPU
this, not the network, can set the pace of training (docs/training.md).

    python benchmarks/training_examples.py --workers 0,2 --seconds 60

Prints examples per second after a warm-up batch (pools filled, workers started).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from napari_miqsam.model.config import get_config
from napari_miqsam.training.loader import ExampleStream, example_batches, in_process_batches
from napari_miqsam.training.sources import CasePool, case_loader


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--config", default="cpu")
    p.add_argument("--spacing", type=float, default=1.3, help="model grid (mm), as the shipped training")
    p.add_argument("--workers", default="0,2", help="comma-separated; 0 = in the training process")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--pool", type=int, default=16)
    p.add_argument("--refresh-every", type=int, default=1, help="steps between pool refreshes")
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--seed", type=int, default=50)
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    cfg = get_config(args.config, spacing=(args.spacing,) * 3)
    for workers in (int(w) for w in args.workers.split(",")):
        n, load, _ = case_loader("phantom", seed=args.seed)
        if workers:
            batches = example_batches(ExampleStream(n, load, cfg, args.patch, args.pool, args.refresh_every * args.batch,
                                                    args.seed), args.batch, workers)
        else:
            batches = in_process_batches(CasePool(n, load, cfg, args.pool, seed=args.seed), args.patch, args.batch,
                                         np.random.default_rng(args.seed), args.refresh_every)
        next(batches)  # warm-up: pools filled, workers started
        t0, examples = time.perf_counter(), 0
        while time.perf_counter() - t0 < args.seconds:
            examples += len(next(batches)["targets"])
        rate = examples / (time.perf_counter() - t0)
        print(f"workers={workers} batch={args.batch} patch={args.patch} spacing={args.spacing} mm: "
              f"{rate:.2f} examples/s ({examples} in {args.seconds:.0f} s)", flush=True)
        del batches


if __name__ == "__main__":
    main()
