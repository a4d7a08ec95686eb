"""Which lesions the model finds, by size and contrast, on held-out VALIDATION phantoms (seeds
900000+, used neither for training nor for the 40-case evaluation).

    python benchmarks/detection_by_size.py --cases 20 [--weights W] [--json rows.json]

Per case and class, one click on the largest lesion of that class (its deepest voxel), default
Predictor settings, threshold 0.2; then, for every lesion of that class, the best IoU with a shown
instance (found: IoU >= 0.5, the evaluation's matching rule; touched: IoU > 0), its equivalent
diameter, and its contrast-to-noise ratio in the image: (mean of the organ 1.5-5 mm outside the
lesion - mean inside) / standard deviation of that ring. Prints found / touched rates by diameter
and by contrast-to-noise, so one can see whether misses are small lesions, faint ones, or both.
"""

from __future__ import annotations

import argparse
import json

import numpy as np
from scipy import ndimage

from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.phantom import CYST, TUMOUR, make_phantom
from napari_miqsam.evaluation.detectability import lesion_visibility
from napari_miqsam.inference.predictor import Predictor

DIAMETERS = (("< 6 mm", 0, 6), ("6-8 mm", 6, 8), ("8-12 mm", 8, 12), ("12-20 mm", 12, 20), (">= 20 mm", 20, np.inf))
CNRS = (("< 1", -np.inf, 1.0), ("1-1.5", 1.0, 1.5), ("1.5-2", 1.5, 2.0), ("2-3", 2.0, 3.0), (">= 3", 3.0, np.inf))
D_PRIMES = (("< 3", -np.inf, 3.0), ("3-5", 3.0, 5.0), ("5-10", 5.0, 10.0), (">= 10 or not measured", 10.0, np.inf))


def lesion_rows(case, ids: np.ndarray, labels: np.ndarray) -> list[dict]:
    """One row per lesion (``ids``: one class's instances): diameter, contrast-to-noise, d' and best
    IoU with the shown instances ``labels``."""
    sp = np.asarray(case.spacing)
    vis = {v.label: v for v in lesion_visibility(case.image, case.labels, ids, case.spacing)}
    rows = []
    for j, sl in enumerate(ndimage.find_objects(ids), start=1):
        if sl is None:
            continue
        m = ids == j
        ious = [((labels == u) & m).sum() / ((labels == u) | m).sum() for u in np.unique(labels[m]) if u]
        pad = tuple(slice(max(0, s.start - 8), s.stop + 8) for s in sl)  # 5 mm at >= 0.7 mm voxels
        outside = ndimage.distance_transform_edt(~m[pad], sampling=sp)
        ring = (outside > 1.5) & (outside < 5.0) & (case.labels[pad] == 1)
        values = case.image[pad]
        cnr = (values[ring].mean() - values[m[pad]].mean()) / max(float(values[ring].std()), 1e-3) if ring.any() else np.nan
        d_prime = vis[j].d_prime
        rows.append({"diameter_mm": vis[j].diameter_mm,
                     "cnr": float(cnr), "d_prime": d_prime if np.isfinite(d_prime) else np.inf,
                     "iou": float(max(ious, default=0.0))})
    return rows


def summary(rows: list[dict], key: str, bins) -> list[str]:
    out = []
    for name, lo, hi in bins:
        sel = [r for r in rows if lo <= r[key] < hi or (hi == np.inf and r[key] == np.inf)]
        if sel:
            found = np.mean([r["iou"] >= 0.5 for r in sel])
            touched = np.mean([r["iou"] > 0 for r in sel])
            out.append(f"  {key} {name}: n={len(sel)} found={found:.2f} touched={touched:.2f}")
    return out


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--weights", default=None)
    p.add_argument("--cases", type=int, default=20)
    p.add_argument("--threshold", type=float, default=0.2)
    p.add_argument("--json", default=None, help="write every lesion's row here")
    args = p.parse_args()
    predictor = Predictor.from_weights(args.weights, device="cpu")
    rows = {TUMOUR: [], CYST: []}
    for i in range(args.cases):
        case = make_phantom(900_000 + i)
        predictor.set_image(case.image, case.spacing)
        for cls in rows:
            ids, n = instances_of(case.labels, cls, 10)
            if not n:
                continue
            largest = int(np.bincount(ids.ravel())[1:].argmax()) + 1
            depth = ndimage.distance_transform_edt(ids == largest, sampling=case.spacing)
            click = np.unravel_index(int(depth.argmax()), depth.shape)
            labels = predictor.predict([click]).labels(args.threshold)[0]
            rows[cls] += [dict(r, case=i) for r in lesion_rows(case, ids, labels)]
    for cls, name in ((TUMOUR, "tumours"), (CYST, "cysts")):
        rs = rows[cls]
        if not rs:
            continue
        print(f"{name}: {len(rs)}, found {np.mean([r['iou'] >= 0.5 for r in rs]):.2f}, "
              f"touched {np.mean([r['iou'] > 0 for r in rs]):.2f}")
        print("\n".join(summary(rs, "diameter_mm", DIAMETERS) + summary(rs, "cnr", CNRS) + summary(rs, "d_prime", D_PRIMES)))
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"tumour": rows[TUMOUR], "cyst": rows[CYST]}, fh, indent=1)


if __name__ == "__main__":
    main()
