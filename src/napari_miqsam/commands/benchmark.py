"""``miqsam benchmark``: measured speed and memory of the Predictor on generated phantoms.

For each volume: the model grid, the number of sliding windows, the encoder's input size(s) (the
windows padded to the model's input multiple) and their total volume over the grid's,
``set_image_s`` (embedding) and its seconds per million model-grid voxels, ``predict_ms`` (one click
on the cached embedding, median of >= 5), ``threshold_ms`` (re-threshold of a cached prediction,
median) and ``peak_rss_mb`` (peak resident memory of a fresh process that did only that volume).
Nothing here asserts a target: it prints the numbers; docs/results.md reports them with this command.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import platform
import statistics
import sys
import time
from pathlib import Path

from . import add_model_spacing_argument, add_precision_argument, add_predict_options

HELP = "measure embedding / click / threshold time and peak memory on phantoms; prints a table"

DEFAULT_VOLUMES = [
    ((64, 64, 64), (1.5, 1.5, 1.5)),
    ((128, 128, 128), (1.5, 1.5, 1.5)),
    ((128, 256, 256), (1.5, 1.5, 1.5)),
    ((200, 512, 512), (2.5, 0.8, 0.8)),
]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--weights", type=Path, default=None, help="weights file (default: shipped)")
    add_model_spacing_argument(p)
    add_precision_argument(p)
    p.add_argument("--repeats", type=int, default=5, help="clicks timed per volume (median reported)")
    p.add_argument("--quick", action="store_true", help="only the two smallest volumes")
    add_predict_options(p)
    p.add_argument("--json", type=Path, default=None, help="write the results here")


def _measure(shape, spacing, weights, device, repeats, queue, model_spacing=None, options=None,
             precision="auto") -> None:
    import resource

    import numpy as np
    import torch

    from ..data.phantom import make_phantom
    from ..data.instances import instances_of
    from ..inference.predictor import Predictor

    case = make_phantom(1234, shape=shape, spacing=spacing)
    predictor = Predictor.from_weights(weights, device=device, spacing=model_spacing, precision=precision)
    ids, n = instances_of(case.labels, 2)
    if n == 0:
        ids, n = instances_of(case.labels, (2, 3))
    clicks = []
    for k in range(1, max(n, 1) + 1):
        where = np.argwhere(ids == k) if n else np.array([[s // 2 for s in shape]])
        clicks.append(tuple(int(v) for v in where[len(where) // 2]))
    t = time.perf_counter()
    predictor.set_image(case.image, case.spacing)
    set_image_s = time.perf_counter() - t
    predict_ms, preds = [], []
    for i in range(repeats):
        t = time.perf_counter()
        preds.append(predictor.predict([clicks[i % len(clicks)]], options=options))
        predict_ms.append((time.perf_counter() - t) * 1000)
    threshold_ms = []
    for thr in np.linspace(0.2, 0.8, 7):
        t = time.perf_counter()
        preds[0].labels(float(thr))
        threshold_ms.append((time.perf_counter() - t) * 1000)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB -> MB on Linux
    grid_voxels = int(np.prod(predictor.grid.model_shape))
    inputs = [tuple(cw.embedding.input_shape) for cw in predictor._windows]  # what the encoder ran on (padded)
    window_voxels = sum(int(np.prod(s)) for s in inputs)
    queue.put({"shape": list(shape), "spacing": list(spacing), "model_spacing": list(predictor.model_spacing),
               "windows": len(predictor._windows), "grow": options is None or options.grow,
               "model_grid": [int(n) for n in predictor.grid.model_shape],
               # the encoder's inputs (windows padded to the model's input multiple), how much they cover
               # beyond the volume (1.0: no overlap, no padding) and the embedding's cost per million
               # model-grid voxels: a tiling regression shows in all three at once
               "window_sizes": [list(s) for s in sorted(set(inputs))],
               "window_volume_ratio": round(window_voxels / grid_voxels, 2),
               "embed_s_per_mvoxel": round(set_image_s / (grid_voxels / 1e6), 3),
               "set_image_s": round(set_image_s, 3), "predict_ms": round(statistics.median(predict_ms), 1),
               "threshold_ms": round(statistics.median(threshold_ms), 2), "peak_rss_mb": round(rss, 1),
               "instances": len(preds[0]), "device": str(predictor.device),
               "embed_dtype": str(predictor.embed_dtype).replace("torch.", ""), "threads": torch.get_num_threads()})


def run(args: argparse.Namespace) -> int:
    import torch

    from ..errors import MiqsamError
    from ..inference.options import PredictOptions

    options = PredictOptions.from_cli(args)
    volumes = DEFAULT_VOLUMES[:2] if args.quick else DEFAULT_VOLUMES
    ctx = mp.get_context("spawn")  # a fresh process per volume: an honest peak RSS
    results = []
    for shape, spacing in volumes:
        queue = ctx.Queue()
        proc = ctx.Process(target=_measure, args=(shape, spacing, args.weights, args.device, max(5, args.repeats), queue,
                                                       args.model_spacing, options, args.precision))
        proc.start()
        proc.join()
        if proc.exitcode != 0 or queue.empty():
            raise MiqsamError(f"the benchmark of {shape} failed (exit code {proc.exitcode})")
        r = queue.get()
        results.append(r)
        print(f"{'x'.join(map(str, shape))}: set_image {r['set_image_s']:.2f} s, predict {r['predict_ms']:.0f} ms, "
              f"threshold {r['threshold_ms']:.1f} ms, peak {r['peak_rss_mb']:.0f} MB", file=sys.stderr)
    out = {"device": results[0]["device"], "threads": results[0]["threads"], "torch": torch.__version__,
           "precision": args.precision, "embed_dtype": results[0]["embed_dtype"],
           "python": platform.python_version(), "machine": platform.machine(), "processor": platform.processor(),
           "results": results}
    print("| shape (z, y, x) | spacing mm | model spacing mm | model grid | windows | window input | window volume / grid | "
          "embed s per M grid voxels | set_image_s | predict_ms | threshold_ms | peak_rss_mb |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        sizes = ", ".join("x".join(map(str, s)) for s in r["window_sizes"])
        print(f"| {'x'.join(map(str, r['shape']))} | {'x'.join(map(str, r['spacing']))} | "
              f"{'x'.join(f'{v:g}' for v in r['model_spacing'])} | {'x'.join(map(str, r['model_grid']))} | {r['windows']} | {sizes} | "
              f"{r['window_volume_ratio']:.2f} | {r['embed_s_per_mvoxel']:.2f} | "
              f"{r['set_image_s']:.2f} | {r['predict_ms']:.0f} | {r['threshold_ms']:.1f} | {r['peak_rss_mb']:.0f} |")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.json.with_suffix(".tmp")
        tmp.write_text(json.dumps(out, indent=2))
        tmp.replace(args.json)
    return 0
