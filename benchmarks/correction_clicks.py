"""What further clicks buy: one click, then K corrections by a simulated user.

    python benchmarks/correction_clicks.py ood:20:1000 --corrections 3 [--weights W] [--json OUT.json]
    python benchmarks/correction_clicks.py "$(miqsam fetch-real-ct)" --corrections 5

Per (case, lesion class): the first click is at the centre of the class's largest lesion. Then, K
times, the largest error of the current answer gets a click, as a user would place it: the largest
lesion of the class that no shown instance matches (IoU < 0.5) and that has no click yet gets a
positive click at its centre; if there is none, or a false instance (touching no lesion of the class)
is larger, that instance gets a negative click at its centre; with neither, the answer stays. Two
ways of using the clicks are scored after every click (`evaluate.score`, default thresholds):

* joint: all clicks in one ``Predictor.predict`` call, what the widget and ``miqsam predict`` do;
* union: one call per positive click, the answers' instances put together (a voxel keeps the first
  answer's instance), an instance holding a negative click dropped.

Measurements and what they mean: docs/experiments.md ("What further clicks buy").
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from napari_miqsam.commands.evaluate import resolve_cases
from napari_miqsam.data.datasets import lesion_classes_in
from napari_miqsam.data.instances import instances_of
from napari_miqsam.data.prompts import simulate_click
from napari_miqsam.evaluation.evaluate import _load, score
from napari_miqsam.evaluation.metrics import iou_matrix
from napari_miqsam.inference.predictor import Predictor

SHOWN = ("dice", "instance_recall", "instance_precision", "instance_f1", "wrong_class_rate")
MIN_SIZE = 10  # voxels; as `miqsam evaluate --min-size`


def _united(answers: list[np.ndarray], negative: list) -> np.ndarray:
    out = np.zeros(answers[0].shape, np.int32)
    offset = 0
    for lab in answers:
        free = (lab > 0) & (out == 0)
        out[free] = lab[free] + offset
        offset += int(lab.max())
    for p in negative:
        hit = out[tuple(int(round(c)) for c in p)]
        if hit:
            out[out == hit] = 0
    return out


def _next_click(answer: np.ndarray, inst: np.ndarray, n: int, clicked: set, rng, spacing) -> tuple[str, tuple] | None:
    """The simulated user's next click on ``answer`` (see the module docstring), or None."""
    sizes = np.bincount(inst.ravel(), minlength=n + 1)
    m = iou_matrix(answer, inst)  # shown x lesions, both in id order
    best = m.max(0) if m.size else np.zeros(n)
    missed = [g for g in range(1, n + 1) if best[g - 1] < 0.5 and g not in clicked]
    shown = np.unique(answer[answer > 0])
    false = [int(k) for k in shown if not np.any(inst[answer == k])]
    miss = max(missed, key=lambda g: sizes[g], default=None)
    fp = max(false, key=lambda k: int(np.count_nonzero(answer == k)), default=None)
    if miss is not None and (fp is None or sizes[miss] >= np.count_nonzero(answer == fp)):
        clicked.add(miss)
        return "positive", simulate_click(inst == miss, "center", rng, spacing)
    if fp is not None:
        return "negative", simulate_click(answer == fp, "center", rng, spacing)
    return None


def run_case(predictor: Predictor, case, corrections: int) -> list[dict]:
    image, labels = np.asarray(case.image, np.float32), np.asarray(case.labels)
    spacing = tuple(float(s) for s in case.spacing)
    predictor.set_image(image, spacing=spacing)
    rng = np.random.default_rng(0)
    rows = []
    for cls in lesion_classes_in(labels):
        inst, n = instances_of(labels, cls, MIN_SIZE)
        if not n:
            continue
        first = int(np.argmax(np.bincount(inst.ravel())[1:])) + 1
        pos, neg, clicked, singles = [simulate_click(inst == first, "center", rng, spacing)], [], {first}, []
        row = {"case": case.name, "class": int(cls), "n_lesions": int(n), "clicks": [], "joint": [], "union": []}
        for k in range(corrections + 1):
            joint = np.asarray(predictor.predict(positive=pos, negative=neg).labels()[0], np.int32)
            if len(singles) < len(pos):
                singles.append(np.asarray(predictor.predict(positive=[pos[-1]]).labels()[0], np.int32))
            row["joint"].append(score(joint, labels, cls, spacing, inst, MIN_SIZE))
            row["union"].append(score(_united(singles, neg), labels, cls, spacing, inst, MIN_SIZE))
            if k == corrections:
                break
            step = _next_click(joint, inst, n, clicked, rng, spacing)
            row["clicks"].append(None if step is None else step[0])
            if step is not None:
                (pos if step[0] == "positive" else neg).append(step[1])
        rows.append(row)
    return rows


def table(rows: list[dict]) -> str:
    k = len(rows[0]["joint"])
    lines = ["| clicks | " + " | ".join(f"joint {m}" for m in SHOWN) + " | " + " | ".join(f"union {m}" for m in SHOWN) + " |",
             "|---" * (1 + 2 * len(SHOWN)) + "|"]
    for i in range(k):
        cells = [f"{np.nanmean([r[mode][i][m] for r in rows]):.3f}" for mode in ("joint", "union") for m in SHOWN]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    done = [c for r in rows for c in r["clicks"]]
    lines.append(f"\n{len(rows)} rows; corrections placed: {done.count('positive')} positive, "
                 f"{done.count('negative')} negative, {done.count(None)} none left")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("data", help="phantom:N:SEED, ood:N:SEED or a data set folder")
    ap.add_argument("--corrections", type=int, default=3)
    ap.add_argument("--weights", default=None, help="a .safetensors file (default: the shipped weights)")
    ap.add_argument("--config", default=None, help="an untrained model of this config instead (tests)")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    predictor = (Predictor.from_config(args.config) if args.config else Predictor.from_weights(args.weights, device="cpu"))
    t0, rows = time.time(), []
    for ref in resolve_cases(args.data, limit=args.limit):
        rows += run_case(predictor, _load(ref), args.corrections)
    print(table(rows))
    print(f"({time.time() - t0:.0f} s)")
    if args.json:
        with open(args.json, "w", encoding="utf-8") as fh:
            json.dump({"data": args.data, "weights": args.weights, "corrections": args.corrections, "rows": rows}, fh)


if __name__ == "__main__":
    main()
