"""Seconds per training step of an adaptation: encoder frozen (``--train decoder``) vs the whole
network (``--train all``), on the same phantoms, threads and patch.

    python benchmarks/adapt_step_time.py --config tiny --patch 32 --steps 12
    python benchmarks/adapt_step_time.py --config cpu --patch 128 --steps 8      # the adapt defaults

Prints the median time of the steps after the first two (warm-up, pool filling), per mode, and
the ratio. Run it on an otherwise idle machine: timings of a busy CPU say little.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time


def step_times(config: str, freeze: bool, patch: int, batch: int, steps: int, threads: int, shape) -> list[float]:
    from napari_miqsam.training.loop import TrainOptions, train

    stamps: list[float] = []
    with tempfile.TemporaryDirectory() as out:
        opt = TrainOptions(config=config, data="phantom", out=out, steps=steps, batch=batch, patch=patch, pool=2,
                           cases=4, warmup=1, lr=1e-4, checkpoint_every=10**9, device="cpu", threads=threads,
                           phantom_shape=shape, freeze_encoder=freeze)
        train(opt, log=lambda *a: None, on_step=lambda step, elapsed: stamps.append(time.perf_counter()))
    return [b - a for a, b in zip(stamps, stamps[1:])][1:]


def main() -> None:
    from napari_miqsam.training.adapt import available_cores

    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", default="tiny")
    p.add_argument("--patch", type=int, default=32)
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--steps", type=int, default=12)
    p.add_argument("--threads", type=int, default=0, help="0: every available core")
    p.add_argument("--shape", type=int, nargs=3, default=None, help="phantom shape (default: the generator's)")
    args = p.parse_args()
    threads = args.threads or available_cores()
    med = {}
    for mode, freeze in (("decoder", True), ("all", False)):
        t = step_times(args.config, freeze, args.patch, args.batch, args.steps, threads, args.shape)
        med[mode] = statistics.median(t)
        print(f"{args.config} patch {args.patch} batch {args.batch}, {threads} threads, --train {mode}: "
              f"{med[mode]:.3f} s/step (median of {len(t)}; min {min(t):.3f}, max {max(t):.3f})")
    print(f"decoder-only step time / whole-network step time: {med['decoder'] / med['all']:.2f}")


if __name__ == "__main__":
    main()
