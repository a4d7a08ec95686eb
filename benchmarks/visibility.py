"""How visible the lesions of a phantom set are, and the instance F1 that visibility allows.

    python benchmarks/visibility.py --cases 40 --start 0 [--family ood] [--json out.json]

No model runs. For every lesion of the 40 evaluation phantoms (seeds 0-39, the cases of
``miqsam evaluate phantom:40:0``; with ``--family ood`` the second, separately written
generator's, the cases of ``miqsam evaluate ood:40:0``; with ``--family real`` the real LiTS case
of ``miqsam fetch-real-ct``, one case, a yardstick only): its detectability d' for an observer that knows its exact shape
(``napari_miqsam.evaluation.detectability``: ring-minus-inside contrast against the same statistic
at up to 200 lesion-free places in the organ). Then, per evaluation row (case, lesion class), the
expected instance F1 of a *searcher* that knows each lesion's shape, finds the clicked lesion, and
scans the organ with ``--false-positives`` expected false alarms per lesion it looks for: the
yardstick for what the image itself allows, to set beside the model's instance F1 on the same rows.
Prints d' by diameter and class and the rows' mean expected F1 at each false-alarm level; with
``--against benchmarks/results/evaluate.json`` also the model's F1 on the same rows.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict

import numpy as np

from napari_miqsam.data.datasets import list_cases
from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.ood_phantom import make_ood_phantom
from napari_miqsam.data.phantom import CYST, TUMOUR, make_phantom
from napari_miqsam.data.real_ct import fetch_real_ct
from napari_miqsam.evaluation.detectability import expected_row_f1, lesion_visibility, search_recall

DIAMETERS = (("< 6 mm", 0, 6), ("6-8 mm", 6, 8), ("8-12 mm", 8, 12), ("12-20 mm", 12, 20), (">= 20 mm", 20, np.inf))
MIN_SIZE = 10  # voxels: evaluate()'s default instance floor


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--cases", type=int, default=40)
    p.add_argument("--start", type=int, default=0, help="first phantom seed (0: the evaluation set)")
    p.add_argument("--family", choices=("phantom", "ood", "real"), default="phantom",
                   help="phantom: the training generator's evaluation cases (phantom:N:START); ood: the second, "
                        "separately written generator's (ood:N:START); real: the LiTS case of miqsam fetch-real-ct")
    p.add_argument("--false-positives", default="0.1,0.5", help="comma-separated expected false alarms per search")
    p.add_argument("--json", default=None, help="write every lesion's row here")
    p.add_argument("--against", default=None,
                   help="an evaluate JSON of the same cases (e.g. benchmarks/results/evaluate.json): set the "
                        "model's per-row instance F1 beside the searcher's")
    args = p.parse_args(argv)
    fps = [float(v) for v in args.false_positives.split(",")]
    lesions, rows = [], []
    if args.family == "real":
        args.start, args.cases = 0, 1
    for i in range(args.start, args.start + args.cases):
        if args.family == "real":
            case = list_cases(fetch_real_ct())[0].load()
        else:
            case = make_ood_phantom(i) if args.family == "ood" else make_phantom(i)
        for cls in (TUMOUR, CYST):
            ids, n = instances_of(case.labels, cls, MIN_SIZE)
            if not n:
                continue
            vis = lesion_visibility(case.image, case.labels, ids, case.spacing, seed=i)
            recalls = {f: [search_recall(v, f) for v in vis] for f in fps}
            lesions += [dict(asdict(v), case=i, cls=cls, noise_sigma=case.meta.get("noise_sigma"),
                             **{f"recall_fp{f}": recalls[f][k] for f in fps}) for k, v in enumerate(vis)]
            rows.append({"case": i, "cls": cls, **{f"f1_fp{f}": expected_row_f1(recalls[f], f) for f in fps}})
    print(f"{len(lesions)} lesions in {len(rows)} rows (case, class) of {args.family} seeds {args.start}-{args.start + args.cases - 1}")
    for cls, name in ((TUMOUR, "tumours"), (CYST, "cysts")):
        ls = [r for r in lesions if r["cls"] == cls]
        if not ls:  # the real case has no cysts
            print(f"{name}: none")
            continue
        print(f"{name}: {len(ls)}; median d' {np.nanmedian([r['d_prime'] for r in ls]):.1f}")
        print("  diameter   | n  | median d' | d' < 2 | d' < 3 | d' < 5 | not measured (large, or on the organ surface)")
        for label, lo, hi in DIAMETERS:
            sel = [r for r in ls if lo <= r["diameter_mm"] < hi]
            if not sel:
                continue
            d = np.array([r["d_prime"] for r in sel])
            fin = d[np.isfinite(d)]
            med = f"{np.median(fin):9.1f}" if fin.size else "      n/a"
            print(f"  {label:10s} | {len(sel):2d} | {med} | {np.mean(fin < 2) if fin.size else 0:6.2f} | "
                  f"{np.mean(fin < 3) if fin.size else 0:6.2f} | {np.mean(fin < 5) if fin.size else 0:6.2f} | "
                  f"{int((~np.isfinite(d)).sum())}")
        for f in fps:
            rec = np.mean([r[f"recall_fp{f}"] for r in ls])
            print(f"  expected recall of a shape-knowing searcher, {f} false alarms per search: {rec:.3f}")
    for f in fps:
        key = f"f1_fp{f}"
        by = ", ".join(f"{name} {np.mean([r[key] for r in rows if r['cls'] == c]):.3f}"
                       for c, name in ((TUMOUR, "tumour"), (CYST, "cyst")) if any(r["cls"] == c for r in rows))
        print(f"expected instance F1 over rows, {f} false alarms per search: {np.mean([r[key] for r in rows]):.3f} ({by})")
    if args.against:
        compare(rows, args.against, fps[0])
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"lesions": lesions, "rows": rows}, fh, indent=1)


def compare(rows: list[dict], path: str, f: float) -> None:
    """The model's instance F1 per (case, class) row of an evaluate JSON beside the searcher's."""
    with open(path) as fh:
        model = {(r["index"], r["class"]): r["methods"]["model"]["instance_f1"] for r in json.load(fh)["cases"]}
    ref = {(r["case"], r["cls"]): r[f"f1_fp{f}"] for r in rows}
    keys = sorted(set(model) & set(ref))
    if not keys:
        print(f"{path}: no rows in common with these cases")
        return
    r = np.array([ref[k] for k in keys])
    m = np.array([model[k] for k in keys])
    easy = r >= 0.95
    print(f"{len(keys)} rows in common with {path}: searcher {r.mean():.3f}, model {m.mean():.3f}; in the "
          f"{int(easy.sum())} rows where the searcher scores >= 0.95 the model averages {m[easy].mean():.3f} "
          f"({int((easy & (m < 0.7)).sum())} under 0.7), {(r - m)[easy].sum() / max((r - m).sum(), 1e-9):.0%} of the gap")


if __name__ == "__main__":
    main()
