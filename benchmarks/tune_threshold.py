"""Choose the default confidence threshold on held-out VALIDATION phantoms (seeds 900000+, used
neither for training nor for the 40-case evaluation), from cached predictions (no extra model call
per threshold).

    python benchmarks/tune_threshold.py --weights runs/cpu/miqsam_cpu.safetensors --cases 8
"""

from __future__ import annotations

import argparse
import json

import numpy as np

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.data.prompts import CLICK_MODES, simulate_click
from napari_miqsam.evaluation.evaluate import score
from napari_miqsam.inference.predictor import Predictor

THRESHOLDS = (0.2, 0.3, 0.4, 0.5, 0.6, 0.7)


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None)
    p.add_argument("--cases", type=int, default=8)
    p.add_argument("--clicks", type=int, default=2)
    args = p.parse_args()
    predictor = Predictor.from_weights(args.weights, device="cpu")
    rows = {t: [] for t in THRESHOLDS}
    rng = np.random.default_rng(0)
    for i in range(args.cases):
        case = make_phantom(900_000 + i)
        predictor.set_image(case.image, case.spacing)
        for cls in (2, 3):
            ids, n = instances_of(case.labels, cls, 10)
            if not n:
                continue
            target = ids == int(rng.integers(1, n + 1))
            for c in range(args.clicks):
                pred = predictor.predict([simulate_click(target, CLICK_MODES[c % 3], rng, case.spacing)])
                for t in THRESHOLDS:
                    rows[t].append(score(pred.labels(t)[0], case.labels, cls, case.spacing, ids, 10))
    summary = {t: {k: round(float(np.mean([r[k] for r in rs])), 3) for k in ("dice", "instance_f1", "nsd_1mm", "wrong_class_rate")}
               for t, rs in rows.items()}
    for t, s in summary.items():
        print(t, json.dumps(s))


if __name__ == "__main__":
    main()
