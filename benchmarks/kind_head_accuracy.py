"""How well the kind head tells tumour, cyst and background apart, per stride-2 cell (3 mm at the
model spacing), on validation phantoms (seeds 900000+, used neither for training nor evaluation).

    python benchmarks/kind_head_accuracy.py [--weights W.safetensors] [--cases 4]

Prints, for each true class (background, organ, tumour, cyst), the fraction of its cells that the
kind head's argmax calls background / tumour / cyst.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from napari_miqsam.data.phantom import make_phantom
from napari_miqsam.inference.predictor import STRIDE, Predictor
from napari_miqsam.training.sampling import nearest_to_model

NAMES = ("background", "organ", "tumour", "cyst")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None)
    p.add_argument("--cases", type=int, default=4)
    args = p.parse_args()
    predictor = Predictor.from_weights(args.weights, device="cpu")
    counts = np.zeros((4, 3))
    for i in range(args.cases):
        case = make_phantom(900_000 + i)
        predictor.set_image(case.image, case.spacing)
        if len(predictor._windows) != 1:
            raise SystemExit("this check expects volumes that fit one window")
        logits = predictor._windows[0].embedding.kind_logits
        if logits is None:
            raise SystemExit("these weights have no kind head")
        called = torch.softmax(logits[0].float(), 0).argmax(0).numpy()
        truth = nearest_to_model(np.asarray(case.labels, np.uint8), predictor.grid)[::STRIDE, ::STRIDE, ::STRIDE]
        called = called[tuple(slice(0, n) for n in truth.shape)]
        for c in range(4):
            counts[c] += np.bincount(called[truth == c], minlength=3)[:3]
    print(f"{args.cases} validation phantoms; rows: true class, columns: kind head's call (cells)")
    print(f"{'':>12} {'background':>11} {'tumour':>8} {'cyst':>8} {'cells':>8}")
    for c in range(4):
        frac = counts[c] / max(counts[c].sum(), 1)
        print(f"{NAMES[c]:>12} {frac[0]:11.3f} {frac[1]:8.3f} {frac[2]:8.3f} {int(counts[c].sum()):8d}")


if __name__ == "__main__":
    main()
