"""The mask refiner's 3x3x3 convolutions: PyTorch's Conv3d module vs ``model.refine.conv3d`` (the
same weights through oneDNN directly), and what the refiner adds to a click.

    python benchmarks/refiner_conv.py [--weights W] [--threads 2] [--sides 16,24,32,40,48,64]

Prints the median time of each convolution on crops the refiner sees (a lesion's box at stride 1),
then, on one phantom embedded once, the median click with ``PredictOptions.refine`` off and on
(alternating). Measures; asserts nothing.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from torch import nn

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.inference.options import PredictOptions
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.config import get_config
from napari_miqsam.model.miqsam import MIQSAM3D
from napari_miqsam.model.refine import conv3d


def median_ms(f, repeat: int = 7) -> float:
    f()
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        f()
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None)
    p.add_argument("--config", default=None,
                   help="an untrained model of this configuration instead of weights (tiny: the smoke test's)")
    p.add_argument("--model-spacing", type=float, default=None,
                   help="model grid spacing in mm for the click timing (default: the weights')")
    p.add_argument("--sides", default="16,24,32,40,48,64", help="comma-separated crop sides of the convolution timing")
    p.add_argument("--repeat", type=int, default=7, help="timed runs per convolution")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--clicks", type=int, default=9)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    print(f"torch {torch.__version__}, {args.threads} threads")
    with torch.inference_mode():
        for side in (int(v) for v in args.sides.split(",")):
            for cin, cout in ((2, 12), (12, 12), (12, 1)):
                conv = nn.Conv3d(cin, cout, 3, padding=1)
                x = torch.randn(1, cin, side, side, side)
                err = float((conv(x) - conv3d(x, conv)).abs().max())
                print(f"{side}^3 {cin:>2} -> {cout:>2}: Conv3d {median_ms(lambda: conv(x), args.repeat):7.1f} ms, "
                      f"conv3d {median_ms(lambda: conv3d(x, conv), args.repeat):7.1f} ms (max difference {err:.1e})")
    if args.config:
        predictor = Predictor(MIQSAM3D(get_config(args.config)), trained=False, device="cpu", spacing=args.model_spacing)
    else:
        predictor = Predictor.from_weights(args.weights, device="cpu", spacing=args.model_spacing)
    if predictor.model.refiner is None:
        print("these weights have no mask refiner")
        return
    case = make_phantom(8)
    predictor.set_image(case.image, case.spacing)
    ids, _ = instances_of(case.labels, 2)
    where = np.argwhere(ids == int(np.argmax(np.bincount(ids.ravel())[1:])) + 1)
    click = tuple(int(v) for v in where[len(where) // 2])
    times = {False: [], True: []}
    for _ in range(args.clicks):
        for refine in (False, True):
            t = time.perf_counter()
            predictor.predict([click], options=PredictOptions(refine=refine))
            times[refine].append(time.perf_counter() - t)
    print(f"one click on phantom 8 ({case.image.shape} voxels, one window), median of {args.clicks}: "
          f"refine off {1000 * statistics.median(times[False]):.0f} ms, on {1000 * statistics.median(times[True]):.0f} ms")


if __name__ == "__main__":
    main()
