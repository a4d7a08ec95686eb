"""Where the one-click model loses: every lesion, every predicted instance and every click of an
evaluation, with the lesion's size, contrast and noise and each false positive's location.

    python benchmarks/failure_analysis.py phantom:40:0 --json phantom.json      # in-family
    python benchmarks/failure_analysis.py ood:40:0 --json ood.json              # out-of-family
    python benchmarks/failure_analysis.py "$(miqsam fetch-real-ct)" --json real.json   # a CHECK only
    python benchmarks/failure_analysis.py --load phantom.json ood.json real.json      # side by side

The clicks are exactly those of ``miqsam evaluate DATA --clicks 3 --seed 0`` with the same
weights, threshold, smallest shown volume and ``PredictOptions`` (it calls evaluate's own per-case
loop, ``evaluation.evaluate._evaluate_case``, through a predictor that keeps each ``Prediction``),
and the per-row Dice / instance F1 it prints are evaluate's. For each (case, lesion class) row and
each click it records:

* ``lesions``: every ground-truth lesion of the clicked class (26-connected, >= ``--min-size``
  voxels, as evaluate's instances): volume (mm³), equivalent diameter, contrast (mean HU in the
  lesion minus mean HU of the host organ, label 1, in a 2-4 mm shell around it), the organ's noise
  there (HU std of that shell) and their ratio (CNR), an edge ratio (contrast across the boundary,
  mean HU of the lesion within 1.5 mm of its surface minus the organ within 1.5 mm outside it,
  over the full contrast: ~1 a sharp step, lower a soft edge), whether it is the clicked one, and
  per click its best IoU with a predicted instance and whether it is found (Hungarian match with
  IoU >= 0.5, as evaluate's instance recall);
* ``instances``: every shown predicted instance (what evaluate scores): its confidence, volume,
  best IoU, and where its voxels lie; an unmatched one (a false positive) is ``seg_error`` (>= 20 %
  of it on true lesions of the clicked class, IoU < 0.5: a segmentation error, not a detection
  error), else by the plurality of its voxels ``wrong_class`` (lesions of another class), ``organ``
  (label 1, vessels included: both generators label them organ) or ``outside`` (label 0);
* ``clicks``: the kind the click was read as (``Prediction.kind``, kind k = lesion label
  ``LESION_CLASSES[k]``) against the truth, whether the clicked lesion came back with IoU >= 0.5,
  the click's Dice / tp / fp / fn, and what Dice and F1 the click would score with each failure mode
  removed (the counterfactuals the "cost" table averages, over clicks then rows as evaluate).

``--load`` prints the summaries of saved JSONs side by side without running anything; several
DATA arguments are run one after the other and printed side by side. The smoke test runs
``--config tiny --shape 32,64,64 --model-spacing 2 phantom:1:0`` (an untrained tiny model).
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

import numpy as np
from scipy import ndimage
from scipy.optimize import linear_sum_assignment

from napari_miqsam.commands.evaluate import write_json_atomic
from napari_miqsam.data.instances import bbox_of, instances_of, relabel_sequential
from napari_miqsam.evaluation.evaluate import _evaluate_case, _load  # evaluate's own loop: same clicks
from napari_miqsam.evaluation.metrics import iou_matrix
from napari_miqsam.inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD
from napari_miqsam.training.sampling import LESION_CLASSES  # kind index k <-> lesion label, as in training

DIAMETERS = (("< 6 mm", 0, 6), ("6-8 mm", 6, 8), ("8-12 mm", 8, 12), ("12-20 mm", 12, 20),
             ("20-30 mm", 20, 30), (">= 30 mm", 30, np.inf))
CNRS = (("< 1", 0, 1), ("1-2", 1, 2), ("2-3", 2, 3), ("3-5", 3, 5), (">= 5", 5, np.inf))
CONTRASTS = (("< 10 HU", 0, 10), ("10-20 HU", 10, 20), ("20-40 HU", 20, 40), (">= 40 HU", 40, np.inf))
FP_KINDS = ("seg_error", "wrong_class", "organ", "outside")
SEG_ERROR_FRACTION = 0.2  # of an unmatched instance's voxels on true lesions of the clicked class


class _Recorder:
    """A predictor that passes every call through and keeps each (click, Prediction)."""

    def __init__(self, predictor: Any):
        self.predictor = predictor
        self.calls: list[tuple[tuple, Any]] = []

    def set_image(self, image, spacing=(1.0, 1.0, 1.0)):
        self.calls.clear()
        return self.predictor.set_image(image, spacing=spacing)

    def predict(self, positive, negative=(), **kw):
        prediction = self.predictor.predict(positive=positive, negative=negative, **kw)
        self.calls.append((tuple(int(v) for v in positive[0]), prediction))
        return prediction


def _f1(tp: int, fp: int, fn: int) -> float:
    return 1.0 if tp + fp + fn == 0 else 2 * tp / (2 * tp + fp + fn)


def _dice(inter: int, p: int, g: int) -> float:
    return 1.0 if p + g == 0 else 2 * inter / (p + g)


def lesion_properties(image: np.ndarray, labels: np.ndarray, mask: np.ndarray,
                      spacing: Sequence[float]) -> dict:
    """Volume, diameter, contrast to the organ shell (2-4 mm), its noise, CNR and edge ratio."""
    sp = np.asarray(spacing, float)
    pad = [int(math.ceil(5.0 / s)) + 1 for s in sp]
    box = bbox_of(mask, 0)
    box = tuple(slice(max(0, b.start - p), min(n, b.stop + p)) for b, p, n in zip(box, pad, mask.shape))
    m, lab, img = mask[box], labels[box], image[box]
    d_out = ndimage.distance_transform_edt(~m, sampling=sp)
    d_in = ndimage.distance_transform_edt(m, sampling=sp)
    organ = lab == 1
    shell = organ & (d_out > 2.0) & (d_out <= 4.0)
    volume = float(m.sum() * sp.prod())
    out = {"voxels": int(m.sum()), "volume_mm3": volume, "diameter_mm": float((6 * volume / math.pi) ** (1 / 3)),
           "mean_hu": float(img[m].mean()), "shell_voxels": int(shell.sum()),
           "contrast_hu": float("nan"), "noise_hu": float("nan"), "cnr": float("nan"), "edge_ratio": float("nan")}
    if shell.sum() >= 5:
        contrast = float(img[m].mean() - img[shell].mean())
        noise = float(img[shell].std())
        out.update(contrast_hu=contrast, noise_hu=noise, cnr=abs(contrast) / max(noise, 1e-6))
        inner = m & (d_in <= 1.5)
        outer = organ & (d_out <= 1.5)
        if inner.any() and outer.any() and abs(contrast) > 1e-6:
            out["edge_ratio"] = float((img[inner].mean() - img[outer].mean()) / contrast)
    return out


def _shown(prediction, threshold: float, min_volume: float, min_size: int) -> tuple[np.ndarray, np.ndarray, list]:
    """The label volume evaluate scores, its instances as evaluate counts them (>= min_size voxels,
    renumbered 1..K) and each one's confidence."""
    lab = np.asarray(prediction.labels(threshold, min_volume)[0])
    inst = relabel_sequential(lab, min_size)[0] if min_size > 1 else lab.astype(np.int32)
    ids = np.unique(inst[inst > 0])
    scores = []
    for i in ids:
        original = int(lab[inst == i].flat[0])  # relabel_sequential keeps each label whole
        scores.append(float(prediction.instances[original - 1].score))
    return lab, inst, scores


def analyse_click(click: dict, prediction, image, labels, cls: int, gt: np.ndarray, n_gt: int,
                  spacing, args, organ_hu: float) -> tuple[dict, list[dict], list[dict]]:
    """One click: per-lesion IoU / found, per-instance rows, and the click row with counterfactuals."""
    lab, inst, scores = _shown(prediction, args.threshold, args.min_volume, args.min_size)
    n_p = len(scores)
    m = iou_matrix(inst, gt) if n_p and n_gt else np.zeros((n_p, n_gt))
    matched_p, matched_g = {}, {}
    if n_p and n_gt:
        for r, c in zip(*linear_sum_assignment(m, maximize=True)):
            if m[r, c] >= args.iou:
                matched_p[r], matched_g[c] = c, r
    tp, fp, fn = len(matched_p), n_p - len(matched_p), n_gt - len(matched_p)
    best_iou = m.max(axis=0) if n_p else np.zeros(n_gt)
    voxel = float(np.prod(spacing))
    gmask = labels == cls
    pmask = lab > 0
    inst_rows = []
    fp_voxels_off = {k: 0 for k in FP_KINDS}
    over_seg = 0
    seg_fix_lesions: set[int] = set()
    n_cat = {k: 0 for k in FP_KINDS}
    for r in range(n_p):
        sel = inst == r + 1
        on = labels[sel]
        g_on = gt[sel]
        n = int(sel.sum())
        frac = {"same": float(np.mean((on == cls) & (g_on > 0))), "other": float(np.mean((on >= 2) & (on != cls))),
                "organ": float(np.mean(on == 1)), "outside": float(np.mean(on == 0))}
        off = int((~gmask[sel]).sum())
        row = {"score": scores[r], "voxels": n, "volume_mm3": n * voxel, "best_iou": float(m[r].max()) if n_gt else 0.0,
               "frac_same_class": frac["same"], "frac_other_class": frac["other"], "frac_organ": frac["organ"],
               "frac_outside": frac["outside"], "contrast_hu": float(image[sel].mean() - organ_hu)}
        if r in matched_p:
            row["category"] = "match"
            over_seg += off
        else:
            if frac["same"] >= SEG_ERROR_FRACTION:
                cat = "seg_error"
                touched = int(np.argmax(m[r])) if n_gt else -1
                row["of_missed_lesion"] = bool(touched >= 0 and touched not in matched_g)
                if row["of_missed_lesion"]:
                    seg_fix_lesions.add(touched)
            else:
                cat = max(("wrong_class", "organ", "outside"),
                          key=lambda k: frac["other" if k == "wrong_class" else k])
            row["category"] = cat
            n_cat[cat] += 1
            fp_voxels_off[cat] += off
        inst_rows.append(row)
    lesion_rows = [{"lesion": j + 1, "best_iou": float(best_iou[j]), "found": j in matched_g} for j in range(n_gt)]
    # Dice counterfactuals on the union masks (evaluate's Dice: lab > 0 against labels == cls)
    inter, p, g = int((pmask & gmask).sum()), int(pmask.sum()), int(gmask.sum())
    base_dice = _dice(inter, p, g)
    missed = np.isin(gt, [j + 1 for j in range(n_gt) if j not in matched_g]) | (gmask & (gt == 0))
    fn_missed = int((missed & ~pmask).sum())
    fn_found = int((gmask & ~missed & ~pmask).sum())
    dice_cf = {"missed_lesions_segmented": _dice(inter + fn_missed, p + fn_missed, g),
               "found_lesions_fully_covered": _dice(inter + fn_found, p + fn_found, g),
               "over_segmentation_removed": _dice(inter, p - over_seg, g),
               "all_fp_voxels_removed": _dice(inter, p - over_seg - sum(fp_voxels_off.values()), g)}
    for k in FP_KINDS:
        dice_cf[f"{k}_removed"] = _dice(inter, p - fp_voxels_off[k], g)
    # F1 counterfactuals on the instance counts
    f1_cf = {f"{k}_removed": _f1(tp, fp - n_cat[k], fn) for k in FP_KINDS}
    f1_cf["all_fp_removed"] = _f1(tp, 0, fn)
    k = len(seg_fix_lesions)  # a seg-error piece of a missed lesion, fixed, becomes its match
    f1_cf["seg_error_fixed"] = _f1(tp + k, fp - n_cat["seg_error"], fn - k)
    untouched = [j for j in range(n_gt) if j not in matched_g and best_iou[j] == 0]
    touched = [j for j in range(n_gt) if j not in matched_g and best_iou[j] > 0]
    f1_cf["untouched_misses_found"] = _f1(tp + len(untouched), fp, fn - len(untouched))
    f1_cf["touched_misses_found"] = _f1(tp + len(touched), fp, fn - len(touched))
    f1_cf["all_misses_found"] = _f1(n_gt, fp, 0)
    click.update(tp=tp, fp=fp, fn=fn, f1=_f1(tp, fp, fn), dice=base_dice, dice_cf=dice_cf, f1_cf=f1_cf,
                 fn_untouched=len(untouched), fn_touched=len(touched))
    return click, lesion_rows, inst_rows


def analyse_case(case, index: int, recorder: _Recorder, args, predict_kw: dict, lesion_classes) -> dict:
    """Run evaluate's loop on one case and analyse every click it made."""
    rows = _evaluate_case(case, index, recorder, args.clicks, [args.seed], (args.threshold, args.min_volume),
                          lesion_classes, args.min_size, False, args.iou, ("random",), predict_kw)
    image = np.asarray(case.image, np.float32)
    labels = np.asarray(case.labels)
    spacing = tuple(float(s) for s in case.spacing)
    organ_hu = float(np.median(image[labels == 1])) if (labels == 1).any() else float("nan")
    out = {"rows": [], "lesions": [], "instances": [], "clicks": []}
    calls = iter(list(recorder.calls))
    for row in rows:
        cls = row["class"]
        gt, n_gt = instances_of(labels, cls, args.min_size)
        props = [lesion_properties(image, labels, gt == j + 1, spacing) for j in range(n_gt)]
        clicked = None
        per_lesion = [[] for _ in range(n_gt)]
        row_clicks = []
        for c, pt in enumerate(row["points"]):
            point, prediction = next(calls)
            assert list(point) == list(pt["point"]), "the recorded click is not evaluate's"
            clicked = int(gt[tuple(point)]) or clicked
            kind = prediction.kind
            read = None
            if kind is not None and len(kind):
                kk = int(np.argmax(kind))
                read = LESION_CLASSES[kk] if kk < len(LESION_CLASSES) else -1
            true_k = LESION_CLASSES.index(cls) if cls in LESION_CLASSES else None
            click = {"case": case.name, "index": index, "class": cls, "click": c, "mode": pt["mode"],
                     "point": list(point), "clicked_lesion": int(gt[tuple(point)]),
                     "kind_read": read, "kind_correct": None if read is None else bool(read == cls),
                     "p_true_kind": None if kind is None or true_k is None or true_k >= len(kind) else float(kind[true_k])}
            click, lrows, irows = analyse_click(click, prediction, image, labels, cls, gt, n_gt, spacing, args, organ_hu)
            cl = click["clicked_lesion"]
            click["clicked_iou"] = lrows[cl - 1]["best_iou"] if cl else None
            click["clicked_found"] = lrows[cl - 1]["found"] if cl else None
            for lr in lrows:
                per_lesion[lr["lesion"] - 1].append(lr)
            for ir in irows:
                ir.update(case=case.name, index=index, class_=cls, click=c)
            out["instances"] += [{("class" if k == "class_" else k): v for k, v in ir.items()} for ir in irows]
            row_clicks.append(click)
        for j in range(n_gt):
            out["lesions"].append({"case": case.name, "index": index, "class": cls, "lesion": j + 1, **props[j],
                                   "clicked": j + 1 == clicked,
                                   "iou_per_click": [r["best_iou"] for r in per_lesion[j]],
                                   "found_per_click": [r["found"] for r in per_lesion[j]],
                                   "found_fraction": float(np.mean([r["found"] for r in per_lesion[j]]))})
        out["clicks"] += row_clicks
        out["rows"].append({"case": case.name, "index": index, "class": cls, "n_gt_instances": n_gt,
                            "spacing": list(spacing), "clicked_lesion": clicked,
                            "evaluate_dice": row["methods"]["model"]["dice"],
                            "evaluate_f1": row["methods"]["model"]["instance_f1"],
                            "dice": float(np.mean([c["dice"] for c in row_clicks])),
                            "f1": float(np.mean([c["f1"] for c in row_clicks]))})
        assert abs(out["rows"][-1]["f1"] - out["rows"][-1]["evaluate_f1"]) < 1e-9, "F1 differs from evaluate's"
    return out


def run(data: str, args) -> dict:
    from napari_miqsam.commands.evaluate import resolve_cases
    from napari_miqsam.data.datasets import dataset_lesion_classes, phantom_cases
    from napari_miqsam.inference.options import PredictOptions
    from napari_miqsam.inference.predictor import Predictor

    if args.shape and data.startswith("phantom:"):
        n, _, seed = data[len("phantom:"):].partition(":")
        cases = phantom_cases(int(n), int(seed or 0), shape=tuple(int(v) for v in args.shape.split(",")))
    else:
        cases = resolve_cases(data, "auto", args.limit)
    lesion_classes = None if data.startswith(("phantom:", "ood:")) else dataset_lesion_classes(data, "auto")
    if args.config:
        from napari_miqsam.model.config import get_config
        from napari_miqsam.model.miqsam import MIQSAM3D

        predictor = Predictor(MIQSAM3D(get_config(args.config)), trained=False, device="cpu", spacing=args.model_spacing)
    else:
        predictor = Predictor.from_weights(args.weights, device=args.device, spacing=args.model_spacing)
    options = PredictOptions.from_cli(argparse.Namespace())  # `miqsam evaluate` without option flags
    recorder = _Recorder(predictor)
    out = {"data": data, "weights": args.weights or ("untrained " + args.config if args.config else "default"),
           "clicks": args.clicks, "seed": args.seed, "threshold": args.threshold, "min_volume": args.min_volume,
           "min_size": args.min_size, "rows": [], "lesions": [], "instances": [], "clicks_rows": []}
    for index, ref in enumerate(cases):
        if not args.quiet:
            print(f"{data}: case {index + 1}/{len(cases)}", file=sys.stderr, flush=True)
        part = analyse_case(_load(ref), index, recorder, args, {"options": options}, lesion_classes)
        out["rows"] += part["rows"]
        out["lesions"] += part["lesions"]
        out["instances"] += part["instances"]
        out["clicks_rows"] += part["clicks"]
    return out


# ---------------------------------------------------------------------------------------------- summaries

def _nanmean(v) -> float:
    v = [float(x) for x in v if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")


def _row_mean(run: dict, value) -> float:
    """Mean over rows of the mean over the row's clicks of ``value(click)`` (evaluate's averaging)."""
    by_row: dict[tuple, list] = {}
    for c in run["clicks_rows"]:
        by_row.setdefault((c["index"], c["class"]), []).append(value(c))
    return _nanmean(_nanmean(v) for v in by_row.values())


def summarise(run: dict) -> dict:
    s: dict[str, Any] = {}
    clicks, lesions, inst = run["clicks_rows"], run["lesions"], run["instances"]
    s["rows"] = len(run["rows"])
    s["dice"] = _row_mean(run, lambda c: c["dice"])
    s["f1"] = _row_mean(run, lambda c: c["f1"])
    s["recall"] = _row_mean(run, lambda c: c["tp"] / (c["tp"] + c["fn"]) if c["tp"] + c["fn"] else (1.0 if c["fp"] == 0 else 0.0))
    s["precision"] = _row_mean(run, lambda c: c["tp"] / (c["tp"] + c["fp"]) if c["tp"] + c["fp"] else (1.0 if c["fn"] == 0 else 0.0))
    s["lesions"] = len(lesions)
    n_lc = sum(len(l["found_per_click"]) for l in lesions)
    s["lesion_clicks"] = n_lc
    found = [f for l in lesions for f in l["found_per_click"]]
    s["pooled_recall"] = float(np.mean(found)) if found else float("nan")
    others = [f for l in lesions if not l["clicked"] for f in l["found_per_click"]]
    s["other_lesions_recall"] = float(np.mean(others)) if others else float("nan")
    misses = [(l, i) for l in lesions for i, f in zip(l["iou_per_click"], l["found_per_click"]) if not f]
    s["misses"] = len(misses)
    s["misses_untouched"] = sum(1 for _, i in misses if i == 0)
    s["misses_touched"] = len(misses) - s["misses_untouched"]

    def binned(key, bins, absval=False):
        out = []
        for name, lo, hi in bins:
            sel = [l for l in lesions if l[key] is not None and not math.isnan(l[key])
                   and lo <= (abs(l[key]) if absval else l[key]) < hi]
            f = [x for l in sel for x in l["found_per_click"]]
            out.append((name, len(sel), float(np.mean(f)) if f else float("nan")))
        nan = [l for l in lesions if l[key] is None or math.isnan(l[key])]
        if nan:
            f = [x for l in nan for x in l["found_per_click"]]
            out.append(("no organ shell", len(nan), float(np.mean(f)) if f else float("nan")))
        return out

    s["by_diameter"] = binned("diameter_mm", DIAMETERS)
    s["by_cnr"] = binned("cnr", CNRS)
    s["by_contrast"] = binned("contrast_hu", CONTRASTS, absval=True)
    s["by_class"] = {}
    for cls in sorted({l["class"] for l in lesions}):
        sel = [l for l in lesions if l["class"] == cls]
        f = [x for l in sel for x in l["found_per_click"]]
        s["by_class"][cls] = (len(sel), float(np.mean(f)), float(np.median([l["diameter_mm"] for l in sel])),
                              _nanmean(l["contrast_hu"] for l in sel), _nanmean(l["noise_hu"] for l in sel),
                              _nanmean(l["cnr"] for l in sel), _nanmean(l["edge_ratio"] for l in sel))
    s["missed_median_diameter"] = float(np.median([l["diameter_mm"] for l, _ in misses])) if misses else float("nan")
    hits = [l["diameter_mm"] for l in lesions for f in l["found_per_click"] if f]
    s["found_median_diameter"] = float(np.median(hits)) if hits else float("nan")
    fp = [i for i in inst if i["category"] != "match"]
    s["fp_per_click"] = len(fp) / max(len(clicks), 1)
    s["fp"] = {k: (sum(1 for i in fp if i["category"] == k), _nanmean(i["score"] for i in fp if i["category"] == k),
                   _nanmean(i["volume_mm3"] for i in fp if i["category"] == k)) for k in FP_KINDS}
    s["match_score"] = _nanmean(i["score"] for i in inst if i["category"] == "match")
    s["organ_fp_darker"] = _nanmean(float(i["contrast_hu"] < 0) for i in fp if i["category"] == "organ")
    s["seg_error_of_missed"] = sum(1 for i in fp if i["category"] == "seg_error" and i.get("of_missed_lesion"))
    ci = [c["clicked_iou"] for c in clicks if c["clicked_iou"] is not None]
    s["clicked_iou_mean"] = _nanmean(ci)
    s["clicked_iou_median"] = float(np.median(ci)) if ci else float("nan")
    s["clicked_found"] = _nanmean(float(c["clicked_found"]) for c in clicks if c["clicked_found"] is not None)
    kc = [c for c in clicks if c["kind_correct"] is not None]
    s["kind_correct"] = float(np.mean([c["kind_correct"] for c in kc])) if kc else float("nan")
    s["kind_by_class"] = {cls: float(np.mean([c["kind_correct"] for c in kc if c["class"] == cls]))
                          for cls in sorted({c["class"] for c in kc})}
    s["f1_kind_right"] = _nanmean(c["f1"] for c in kc if c["kind_correct"])
    s["f1_kind_wrong"] = _nanmean(c["f1"] for c in kc if not c["kind_correct"])
    s["dice_kind_right"] = _nanmean(c["dice"] for c in kc if c["kind_correct"])
    s["dice_kind_wrong"] = _nanmean(c["dice"] for c in kc if not c["kind_correct"])
    s["f1_gain"] = {k: _row_mean(run, lambda c, k=k: c["f1_cf"][k]) - s["f1"] for k in clicks[0]["f1_cf"]} if clicks else {}
    s["dice_gain"] = {k: _row_mean(run, lambda c, k=k: c["dice_cf"][k]) - s["dice"] for k in clicks[0]["dice_cf"]} if clicks else {}
    return s


def _fmt(v, spec=".3f") -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "n/a"
    return format(v, spec)


def print_summaries(runs: list[dict]) -> None:
    sums = [summarise(r) for r in runs]
    names = [r["data"] if r["data"].startswith(("phantom:", "ood:")) else Path(r["data"]).name for r in runs]
    head = "| | " + " | ".join(names) + " |"
    sep = "|---|" + "---:|" * len(runs)

    def table(title, lines):
        print(f"\n{title}\n\n{head}\n{sep}")
        for label, cells in lines:
            print(f"| {label} | " + " | ".join(cells) + " |")

    table("Overall (means over (case, class) rows of the means over clicks, as miqsam evaluate)", [
        ("rows / lesions / lesion-clicks", [f"{s['rows']} / {s['lesions']} / {s['lesion_clicks']}" for s in sums]),
        ("Dice", [_fmt(s["dice"]) for s in sums]),
        ("instance recall / precision / F1", [f"{_fmt(s['recall'])} / {_fmt(s['precision'])} / {_fmt(s['f1'])}" for s in sums]),
        ("pooled recall (all lesion-clicks)", [_fmt(s["pooled_recall"]) for s in sums]),
        ("recall of the lesions NOT clicked", [_fmt(s["other_lesions_recall"]) for s in sums]),
        ("misses: nothing on it / touched (IoU 0-0.5)", [f"{s['misses_untouched']} / {s['misses_touched']}" for s in sums]),
        ("median diameter found / missed (mm)", [f"{_fmt(s['found_median_diameter'], '.1f')} / {_fmt(s['missed_median_diameter'], '.1f')}" for s in sums]),
    ])
    for key, title in (("by_diameter", "Recall by equivalent diameter (lesions, recall over lesion-clicks)"),
                       ("by_cnr", "Recall by contrast-to-noise ratio |lesion - organ shell| / organ std"),
                       ("by_contrast", "Recall by |contrast| to the organ shell")):
        labels = [b[0] for b in sums[0][key]]
        for s in sums[1:]:
            labels += [b[0] for b in s[key] if b[0] not in labels]
        lines = []
        for lab in labels:
            cells = []
            for s in sums:
                b = next((b for b in s[key] if b[0] == lab), None)
                cells.append("-" if b is None or b[1] == 0 else f"{_fmt(b[2])} ({b[1]})")
            lines.append((lab, cells))
        table(title, lines)
    classes = sorted({c for s in sums for c in s["by_class"]})
    table("Lesions by class: n, recall, median diameter, mean contrast (HU), organ noise (HU), CNR, edge ratio", [
        (f"class {c}", [("-" if c not in s["by_class"] else
                          "{} / {} / {} / {} / {} / {} / {}".format(s["by_class"][c][0], *(
                              _fmt(v, f) for v, f in zip(s["by_class"][c][1:], (".3f", ".1f", ".1f", ".1f", ".2f", ".2f")))))
                         for s in sums]) for c in classes])
    table("False positives (unmatched shown instances): count, mean confidence, mean volume mm³", [
        ("per click", [_fmt(s["fp_per_click"], ".2f") for s in sums]),
        *[(k, [f"{s['fp'][k][0]} / {_fmt(s['fp'][k][1], '.2f')} / {_fmt(s['fp'][k][2], '.0f')}" for s in sums]) for k in FP_KINDS],
        ("seg_error pieces of a lesion otherwise missed", [str(s["seg_error_of_missed"]) for s in sums]),
        ("organ FPs darker than the organ", [_fmt(s["organ_fp_darker"], ".2f") for s in sums]),
        ("matched instances: mean confidence", [_fmt(s["match_score"], ".2f") for s in sums]),
    ])
    table("The click", [
        ("clicked lesion IoU mean / median", [f"{_fmt(s['clicked_iou_mean'])} / {_fmt(s['clicked_iou_median'])}" for s in sums]),
        ("clicked lesion found (IoU >= 0.5)", [_fmt(s["clicked_found"]) for s in sums]),
        ("click read as the right kind", [_fmt(s["kind_correct"]) for s in sums]),
        *[(f"  of class {c}", [_fmt(s["kind_by_class"].get(c)) for s in sums]) for c in classes],
        ("F1 when read right / wrong", [f"{_fmt(s['f1_kind_right'])} / {_fmt(s['f1_kind_wrong'])}" for s in sums]),
        ("Dice when read right / wrong", [f"{_fmt(s['dice_kind_right'])} / {_fmt(s['dice_kind_wrong'])}" for s in sums]),
    ])
    keys = list(sums[0]["f1_gain"])
    table("What each failure mode costs: instance F1 gained if it were fixed (all else equal)", [
        (k, [_fmt(s["f1_gain"].get(k), "+.3f") for s in sums]) for k in keys])
    keys = list(sums[0]["dice_gain"])
    table("What each failure mode costs: Dice gained if its voxels were fixed (all else equal)", [
        (k, [_fmt(s["dice_gain"].get(k), "+.3f") for s in sums]) for k in keys])


def _restore(run: dict) -> dict:
    """NaN for the nulls a JSON holds in numeric fields."""
    for l in run["lesions"]:
        for k in ("contrast_hu", "noise_hu", "cnr", "edge_ratio"):
            if l.get(k) is None:
                l[k] = float("nan")
    return run


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("data", nargs="*", help="phantom:N:SEED, ood:N:SEED or a data set folder; several: side by side")
    p.add_argument("--load", nargs="+", default=None, help="print the summaries of saved --json files (no model run)")
    p.add_argument("--weights", default=None, help="model weights (default: the shipped weights)")
    p.add_argument("--config", default=None, help="an untrained model of this configuration instead (tiny: the smoke test)")
    p.add_argument("--model-spacing", type=float, default=None, help="model grid spacing, mm (default: the weights')")
    p.add_argument("--shape", default=None, help="phantom shape z,y,x (phantom:N:SEED only; default: the phantom's own)")
    p.add_argument("--limit", type=int, default=None, help="only the first N cases")
    p.add_argument("--clicks", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD)
    p.add_argument("--min-volume", type=float, default=DEFAULT_MIN_VOLUME)
    p.add_argument("--min-size", type=int, default=10)
    p.add_argument("--iou", type=float, default=0.5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--json", default=None, help="write every row (lesions, instances, clicks) of every run here")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    if not args.data and not args.load:
        p.error("give DATA or --load")
    runs = [_restore(r) for path in (args.load or []) for r in json.loads(Path(path).read_text())["runs"]]
    runs += [run(d, args) for d in args.data]
    print_summaries(runs)
    if args.json:
        write_json_atomic(Path(args.json), {"runs": runs})  # NaN -> null, numpy scalars -> numbers


if __name__ == "__main__":
    main()
