"""How well weights fit the randomized training generator itself (data/randomized.py): before an
out-of-family number of a network trained on it means much, it should find the lesions of its own
training family.

    python benchmarks/randomized_fit.py --weights runs/ae1/miqsam_cpu.safetensors [--weights ...]

For each of ``--cases`` fresh randomized volumes (seeds from ``--seed``; training draws other seeds),
one click on the deepest voxel of the largest lesion; printed per weights: the share of clicks whose
lesion comes back as an instance with IoU >= 0.5 (clicked found), the share of clicks that land in no
instance at all (empty), the mean of the clicked lesion's best IoU with an instance (clicked_iou: moves
before clicked found does), and clicked found on solid and on aerated (lung-like) hosts apart. On the
generator with visible labels only (sixteenth session): shipped weights 2 of 20 found (clicked IoU
0.10), ae1 and vf1 (100 CPU minutes each on this generator) 4 and 3 of 20 (vf1 0.15), sc1 (70 minutes
on 64^3 crops, seventeenth session) 2 of 20 (0.28) (docs/experiments.md).
"""

from __future__ import annotations

import argparse
import json

import numpy as np


def largest_lesion(labels: np.ndarray) -> np.ndarray:
    """Mask of the largest lesion (26-connected, any kind >= 2) of a label volume."""
    from napari_miqsam.data.instances import instances_of

    inst, _ = instances_of(labels >= 2, 1)
    sizes = np.bincount(inst.ravel())
    sizes[0] = 0
    return inst == int(sizes.argmax())


def main(argv: list[str] | None = None) -> list[dict]:
    from napari_miqsam.data.prompts import simulate_click
    from napari_miqsam.data.randomized import make_randomized_phantom
    from napari_miqsam.evaluation.metrics import iou_matrix
    from napari_miqsam.inference.predictor import Predictor

    p = argparse.ArgumentParser()
    p.add_argument("--weights", action="append", default=None, help="weights to score (repeatable; default: shipped)")
    p.add_argument("--config", default=None, help="an untrained config instead of weights (tests: tiny)")
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--seed", type=int, default=700_000)
    p.add_argument("--shape", default=None, help="volume shape z,y,x (default: the generator's own)")
    args = p.parse_args(argv)
    shape = tuple(int(v) for v in args.shape.split(",")) if args.shape else None
    cases = [make_randomized_phantom(s, shape=shape) for s in range(args.seed, args.seed + args.cases)]
    models = [("config " + args.config, Predictor.from_config(args.config, seed=0))] if args.config else \
        [(w or "shipped", Predictor.from_weights(w)) for w in (args.weights or [None])]
    results = []
    for name, predictor in models:
        found, empty, ious = 0, 0, []
        by_host = {False: [0, 0], True: [0, 0]}
        for case in cases:
            lesion = largest_lesion(case.labels)
            predictor.set_image(case.image, case.spacing)
            # the voxel deepest inside the lesion; clicked found as `miqsam evaluate` scores it
            prediction = predictor.predict([simulate_click(lesion, "center", np.random.default_rng(0))])
            labels, _ = prediction.labels(threshold=0.2, min_volume=0)
            best = float(iou_matrix(labels, lesion).max(initial=0.0))
            hit = best >= 0.5
            found += hit
            ious.append(best)
            empty += prediction.empty_clicks()
            by_host[bool(case.meta["aerated"])][0] += hit
            by_host[bool(case.meta["aerated"])][1] += 1
        row = {"weights": name, "cases": len(cases), "clicked_found": found / len(cases), "empty": empty / len(cases),
               "clicked_iou": round(float(np.mean(ious)), 3),
               "found_solid_hosts": f"{by_host[False][0]}/{by_host[False][1]}",
               "found_aerated_hosts": f"{by_host[True][0]}/{by_host[True][1]}"}
        print(json.dumps(row))
        results.append(row)
    return results


if __name__ == "__main__":
    main()
