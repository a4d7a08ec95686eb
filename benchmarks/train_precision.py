"""One training step in float32 and under bfloat16 autocast on the CPU: seconds per forward + backward,
the loss terms and how closely the gradients agree (cosine, norm ratio), on the same batch.

    python benchmarks/train_precision.py --patch 128            # the shipped weights, the cpu config
    python benchmarks/train_precision.py --config tiny --weights none --patch 32 --repeats 2

Training autocasts to bfloat16 where the CPU computes it natively (``inference/precision.py``); this
says what that buys and what it changes. On a CPU without native bfloat16 the bfloat16 step is
emulated (slow). Run it on an otherwise idle machine: timings of a busy CPU say little.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch


def main(argv: list[str] | None = None) -> None:
    from napari_miqsam.inference.precision import cpu_has_native_bf16
    from napari_miqsam.model.config import get_config
    from napari_miqsam.model.miqsam import MIQSAM3D
    from napari_miqsam.model.weights import load_weights
    from napari_miqsam.training.loader import in_process_batches
    from napari_miqsam.training.losses import LossWeights, set_criterion
    from napari_miqsam.training.sources import CasePool, case_loader

    p = argparse.ArgumentParser()
    p.add_argument("--config", default="cpu")
    p.add_argument("--weights", default="default", help="'default' (shipped), a .safetensors path, or 'none' (random init)")
    p.add_argument("--spacing", type=float, default=1.3, help="model grid (mm), as the shipped training")
    p.add_argument("--patch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=4)
    p.add_argument("--threads", type=int, default=1, help="torch threads (one per rank in the shipped runs)")
    p.add_argument("--seed", type=int, default=5)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.weights == "none":
        model = MIQSAM3D(get_config(args.config, spacing=(args.spacing,) * 3))
    else:
        from napari_miqsam.model.weights import DEFAULT_WEIGHTS
        model, _ = load_weights(DEFAULT_WEIGHTS if args.weights == "default" else args.weights)
    model.train()
    cfg = model.cfg
    n, load, _ = case_loader("phantom", seed=args.seed)
    pool = CasePool(n, load, cfg, 2, 0, 1, seed=args.seed)
    batch = next(in_process_batches(pool, args.patch, 1, np.random.default_rng(args.seed), 10**9, 0))

    def step(amp: bool):
        model.zero_grad(set_to_none=True)
        torch.manual_seed(0)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=amp):
            emb, outputs = model(batch["image"], batch["points"], batch["labels"], batch["valid"])
            losses = set_criterion(outputs, list(batch["targets"]), emb.saliency_logits, batch["saliency"],
                                   emb.kind_logits, batch["kinds"], LossWeights())
        losses["loss"].backward()
        grads = torch.cat([q.grad.flatten() for q in model.parameters() if q.grad is not None])
        return {k: float(v.detach()) for k, v in losses.items()}, grads

    times: dict[bool, list[float]] = {False: [], True: []}
    for amp in (False, True):  # warm-up
        step(amp)
    for _ in range(args.repeats):
        for amp in (False, True):  # interleaved, so a change in the machine's load hits both
            t = time.perf_counter()
            step(amp)
            times[amp].append(time.perf_counter() - t)
    l32, g32 = step(False)
    l16, g16 = step(True)
    print(f"{args.config} config, patch {args.patch}, {args.threads} thread(s), native bfloat16: {cpu_has_native_bf16()}")
    for amp, name in ((False, "float32"), (True, "bfloat16 autocast")):
        print(f"  {name:18s} forward + backward {statistics.median(times[amp]):.2f} s (median of {args.repeats})")
    print(f"  speed-up {statistics.median(times[False]) / statistics.median(times[True]):.2f}x")
    print("  loss terms float32 / bfloat16: " + ", ".join(f"{k} {l32[k]:.4f} / {l16[k]:.4f}" for k in l32))
    cos = float(torch.nn.functional.cosine_similarity(g32, g16, dim=0))
    print(f"  gradient cosine {cos:.5f}, norm ratio {float(g16.norm() / g32.norm()):.4f}")


if __name__ == "__main__":
    main()
