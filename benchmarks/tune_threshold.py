"""Choose the default confidence threshold on held-out VALIDATION phantoms (seeds 900000+, used
neither for training nor for the 40-case evaluation), from cached predictions (no extra model call
per threshold).

    python benchmarks/tune_threshold.py --weights runs/cpu/miqsam_cpu.safetensors --cases 8

Each setting compared here is a ``PredictOptions`` field (``inference/options.py``), passed to
``Predictor.predict(..., options=...)``. ``--min-volume 0,30`` scores every threshold at each
smallest shown volume (``Prediction.labels(threshold, min_volume)``, mm³), and ``--kind-gate 0,0.5``
predicts at each kind gate (``kind_gate``; 0: off), and ``--refine both`` with and without the mask
refiner (``refine``; weights with a refiner only). ``--mask-level 0,-0.5`` predicts at each mask edge
level (``mask_level``), and ``--model-spacing 1.3,1.5`` runs the same cases and clicks with the model
grid at each spacing (``Predictor(spacing=...)``); ``--window 160`` sets the sliding-window side in
model voxels (``Predictor(window=...)``; default: the weights'), and ``--grow both`` with and without
growing small masks to the image's edge (``grow``); ``--given-kind both`` with the kind read at the
click and with the clicked lesion's true kind given (``kind``). ``--snap`` is ``snap_radius``.
(Kind scoring and splitting pieces by winning query, once compared here, are gone: measured worse,
docs/experiments.md, "Inference settings".)
``--seeds 0,1,2,3`` scores four draws of the clicked instance and clicks per case (seed 0 alone is
the draw of the numbers quoted before 2026-12-04): which instance is clicked moves the means by
more than most of the differences compared here, so compare candidates over several draws.
"""

from __future__ import annotations

import argparse
import itertools
import json

import numpy as np

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.data.prompts import CLICK_MODES, simulate_click
from napari_miqsam.evaluation.evaluate import score
from napari_miqsam.inference.prediction import DEFAULT_MIN_VOLUME
from napari_miqsam.inference.options import KIND_GATE, PredictOptions
from napari_miqsam.inference.predictor import Predictor
from napari_miqsam.model.config import get_config
from napari_miqsam.model.miqsam import MIQSAM3D
from napari_miqsam.training.sampling import LESION_CLASSES  # lesion label -> kind index, as in training

THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None)
    p.add_argument("--config", default=None,
                   help="an untrained model of this configuration instead of weights (tiny: the smoke test's)")
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--clicks", type=int, default=2)
    p.add_argument("--snap", type=int, default=1, help="PredictOptions.snap_radius")
    p.add_argument("--min-volume", default=str(DEFAULT_MIN_VOLUME), help="comma-separated mm³ values")
    p.add_argument("--kind-gate", default=str(KIND_GATE), help="comma-separated PredictOptions.kind_gate values")
    p.add_argument("--refine", choices=("on", "off", "both"), default="on")
    p.add_argument("--grow", choices=("on", "off", "both"), default="on",
                   help="grow small masks to the image's edge (default: on, as PredictOptions)")
    p.add_argument("--mask-level", default="0", help="comma-separated PredictOptions.mask_level values")
    p.add_argument("--model-spacing", default=None,
                   help="comma-separated model-grid spacings in mm (Predictor spacing; default: the weights')")
    p.add_argument("--window", type=int, default=None, help="sliding-window side in model voxels (default: the weights')")
    p.add_argument("--thresholds", default=",".join(map(str, THRESHOLDS)), help="comma-separated")
    p.add_argument("--given-kind", choices=("on", "off", "both"), default="off",
                   help="on: tell the model the clicked lesion's true kind (PredictOptions.kind) instead "
                        "of the kind it reads at the click")
    p.add_argument("--shape", default=None,
                   help="phantom shape z,y,x in voxels (default: the phantom's own, its field of view / spacing)")
    p.add_argument("--first-seed", type=int, default=900_000,
                   help="phantom seed of the first case (default: the validation phantoms, 900000+; a training "
                        "seed, e.g. 3600000 for --seed 26 of the training, scores cases the network was trained on)")
    p.add_argument("--seeds", default="0",
                   help="comma-separated seeds of the instance and click draw; every draw is scored and the "
                        "means are over all of them (measured: draws differ by up to 0.05 Dice on validation, 0.07 on the 40-case table; docs/experiments.md)")
    args = p.parse_args(argv)
    volumes = [float(v) for v in args.min_volume.split(",")]
    thresholds = [float(t) for t in args.thresholds.split(",")]
    choice = {"on": (True,), "off": (False,), "both": (True, False)}
    gates = [float(g) for g in args.kind_gate.split(",")]
    levels = [float(v) for v in args.mask_level.split(",")]
    spacings = [None] if args.model_spacing is None else [float(v) for v in args.model_spacing.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    shape = None if args.shape is None else tuple(int(v) for v in args.shape.split(","))
    modes = [(g, r, lv, gr, gk) for g in gates for r in choice[args.refine] for lv in levels
             for gr in choice[args.grow] for gk in choice[args.given_kind]]
    rows = {(ms, m, t, v): [] for ms in spacings for m in modes for t in thresholds for v in volumes}
    for ms in spacings:  # the same cases and clicks at every model spacing
        if args.config:
            predictor = Predictor(MIQSAM3D(get_config(args.config)), trained=False, device="cpu", spacing=ms,
                                  window=args.window)
        else:
            predictor = Predictor.from_weights(args.weights, device="cpu", spacing=ms, window=args.window)
        rngs = [np.random.default_rng(seed) for seed in seeds]  # seed 0 alone: the draw of earlier sessions
        for i in range(args.cases):
            case = make_phantom(args.first_seed + i, shape=shape)
            predictor.set_image(case.image, case.spacing)
            lesions = {cls: instances_of(case.labels, cls, 10) for cls in (2, 3)}  # once per case, not per draw
            for rng, (cls, (ids, n)) in itertools.product(rngs, lesions.items()):
                if not n:
                    continue
                target = ids == int(rng.integers(1, n + 1))
                for c in range(args.clicks):
                    click = simulate_click(target, CLICK_MODES[c % 3], rng, case.spacing)
                    for m in modes:
                        options = PredictOptions(kind_gate=m[0], refine=m[1], mask_level=m[2], grow=m[3],
                                                 kind=LESION_CLASSES.index(cls) if m[4] else None, snap_radius=args.snap)
                        pred = predictor.predict([click], options=options)
                        for t in thresholds:
                            for v in volumes:
                                lab = pred.labels(t, v)[0]
                                rows[ms, m, t, v].append(score(lab, case.labels, cls, case.spacing, ids, 10))
    keys = ("dice", "instance_f1", "instance_precision", "instance_recall", "nsd_1mm", "wrong_class_rate")
    for (ms, m, t, v), rs in rows.items():
        summary = {k: round(float(np.mean([r[k] for r in rs])), 3) for k in keys}
        print(f"model_spacing={'weights' if ms is None else f'{ms:g}'} kind_gate={m[0]:g} threshold={t} "
              f"min_volume={v:g} refine={'on' if m[1] else 'off'} mask_level={m[2]:g} grow={'on' if m[3] else 'off'} "
              f"given_kind={'on' if m[4] else 'off'}", json.dumps(summary))


if __name__ == "__main__":
    main()
