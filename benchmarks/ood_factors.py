"""Which property of the out-of-family phantoms costs the model most? Evaluate with one of them scaled.

    OMP_NUM_THREADS=1 torchrun --nproc_per_node=2 benchmarks/ood_factors.py --factors noise=0 \\
        -- evaluate ood:20:1000 --clicks 3 --seed 0 --no-baselines --json runs/f_noise0.json

Runs ``miqsam`` (the arguments after ``--``) with ``data.ood_phantom.make_ood_phantom`` drawing every
case with ``factors`` (``data.ood_phantom.FACTORS``: noise, grain, psf, organ_texture,
tumour_texture, tumour_edge; each a multiplier of the drawn value, so ``noise=0`` is the same case
without scanner noise). A factor that helps when taken away names a property the network is not
robust to; what to train on follows from that, not from copying this generator (it stays validation
only). Measurements: docs/experiments.md ("Which property of the second family costs most").
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import napari_miqsam.data.ood_phantom as ood
from napari_miqsam.cli import main as miqsam


def parse_factors(text: str) -> dict[str, float]:
    """``"noise=0,grain=0.5"`` -> ``{"noise": 0.0, "grain": 0.5}`` (names checked by the generator)."""
    out = {}
    for item in filter(None, (t.strip() for t in text.split(","))):
        name, _, value = item.partition("=")
        if name not in ood.FACTORS or not value:
            raise SystemExit(f"bad factor {item!r}: use NAME=VALUE with NAME one of {', '.join(ood.FACTORS)}")
        out[name] = float(value)
    return out


def run(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ours, rest = (argv[: argv.index("--")], argv[argv.index("--") + 1:]) if "--" in argv else (argv, [])
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--factors", default="", help="NAME=VALUE,... (empty: the cases as they are)")
    args = p.parse_args(ours)
    if not rest:
        p.error("give the miqsam command after --, e.g. -- evaluate ood:20:1000 --clicks 3")
    ood.make_ood_phantom = partial(ood.make_ood_phantom, factors=parse_factors(args.factors))
    return miqsam(rest)


if __name__ == "__main__":
    sys.exit(run())
