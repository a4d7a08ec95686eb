"""One-click evaluation: the model against two classical baselines on labelled cases.

Protocol, per case and per lesion class present in it:

1. pick one instance of that class among the instances of at least ``min_size`` voxels: by
   default uniformly at random, with a rng seeded by (seed, case index), so a sharded run draws the
   same; or by a target strategy (:data:`TARGETS`): the largest, the median-sized or the smallest;
2. simulate ``clicks`` single-point prompts on it, cycling through the modes
   center / interior / boundary (:mod:`napari_miqsam.data.prompts`);
3. for each click, predict with the model (one ``set_image`` per case, one ``predict`` per
   click) and with the baselines, and score the prediction against ALL instances of that class:
   Dice and NSD (1 mm, 2 mm) of the union, instance recall / precision / F1 (IoU >= 0.5,
   Hungarian), and the wrong-class rate (predicted voxels on lesions of another class);
4. average over the clicks (and report the std of Dice over the clicks).

The summary is the mean over (case, class) rows. Several seeds (``seed=[0, 1, 2]``) score several
draws of step 1-2 on one embedding per case; each draw is exactly the run with that one seed, the
summary is the mean over all (case, class, seed) rows (every draw has the same rows, so this is the
mean of the draws' means), and ``draws`` holds each draw's own summary. Several target strategies
(``targets=("largest", "median", "smallest")``) score one row per (case, class, seed, target); each
strategy restarts the draw's rng, so its clicks are drawn as in a run with that strategy alone and
``random`` gives today's rows whatever else is asked for; the summary is the mean over all rows and
``by_target`` holds each strategy's own summary. ``shard=(rank, world)`` evaluates
``cases[rank::world]``; :func:`merge_results` concatenates the rows of the shards and recomputes
the means, giving the same numbers as a single-process run.
"""

from __future__ import annotations

import math
import sys
import time
from typing import Any, Iterable, Sequence

import numpy as np

from ..data.datasets import lesion_classes_in
from ..data.instances import instances_of, relabel_sequential
from ..data.phantom import Case
from ..data.prompts import CLICK_MODES, simulate_click
from ..errors import InputError
from .baselines import denoise, grow_with_window, threshold_cc
from ..inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD
from .metrics import dice, instance_scores, iou_matrix, nsd, wrong_class_rate

__all__ = ["METHODS", "METRICS", "TARGETS", "evaluate", "format_markdown_table", "merge_results", "pick_target",
           "score"]

#: Per-click metrics, averaged over clicks then over (case, class) rows.
METRICS: tuple[str, ...] = (
    "dice",
    "nsd_1mm",
    "nsd_2mm",
    "instance_recall",
    "instance_precision",
    "instance_f1",
    "wrong_class_rate",
    "clicked_found",
)
#: Row-level metrics (one value per (case, class)).
ROW_METRICS: tuple[str, ...] = METRICS + ("dice_std_over_clicks",)
METHODS: tuple[str, ...] = ("model", "region_grow", "threshold_cc")
#: How the clicked instance of a (case, class) is chosen: drawn at random, or by its size in voxels.
TARGETS: tuple[str, ...] = ("random", "largest", "median", "smallest")


def score(
    pred_labels: np.ndarray,
    labels: np.ndarray,
    cls: int,
    spacing: Sequence[float],
    gt_instances: np.ndarray | None = None,
    min_size: int = 0,
    iou: float = 0.5,
    clicked: np.ndarray | None = None,
) -> dict[str, float]:
    """All per-click metrics of one predicted instance volume against class ``cls``.

    Args:
        pred_labels: (z, y, x) integer instances (0 background) or a bool mask (one instance).
        labels: (z, y, x) class volume.
        cls: the lesion class prompted.
        spacing: (z, y, x) mm.
        gt_instances: ``instances_of(labels, cls, min_size)[0]`` if already computed.
        min_size: predicted instances smaller than this are ignored in the instance scores.
        clicked: bool (z, y, x), the clicked lesion: ``clicked_found`` is 1.0 when a predicted
            instance matches it (its best IoU >= ``iou``, as benchmarks/failure_analysis.py reads
            the clicked lesion), else 0.0 (NaN without it).
    """
    pred = np.asarray(pred_labels)
    if pred.dtype == bool:
        pred = pred.astype(np.int32)
    if pred.shape != labels.shape:
        raise InputError(
            f"the prediction has shape {pred.shape}, the labels {labels.shape}: predictions must "
            f"be in the original voxel grid"
        )
    if gt_instances is None:
        gt_instances, _ = instances_of(labels, cls, min_size)
    pred_mask = pred > 0
    gt_mask = labels == cls
    inst_pred = relabel_sequential(pred, min_size)[0] if min_size > 1 else pred
    s = instance_scores(inst_pred, gt_instances, iou)
    return {
        "dice": dice(pred_mask, gt_mask),
        "nsd_1mm": nsd(pred_mask, gt_mask, spacing, 1.0),
        "nsd_2mm": nsd(pred_mask, gt_mask, spacing, 2.0),
        "instance_recall": s["recall"],
        "instance_precision": s["precision"],
        "instance_f1": s["f1"],
        "wrong_class_rate": wrong_class_rate(pred_mask, labels, cls),
        "clicked_found": float("nan") if clicked is None else float(iou_matrix(pred, clicked).max(initial=0.0) >= iou),
    }


def _load(case: Any) -> Case:
    if isinstance(case, Case):
        return case
    if hasattr(case, "load"):
        return case.load()
    raise InputError(f"not a case: {case!r} (expected a Case or an object with .load())")


def _resolve_predictor(predictor: Any) -> Any:
    if predictor is None:
        return None
    if hasattr(predictor, "set_image") and hasattr(predictor, "predict"):
        return predictor
    if callable(predictor):
        made = predictor()
        if not (hasattr(made, "set_image") and hasattr(made, "predict")):
            raise InputError("the predictor factory did not return an object with set_image/predict")
        return made
    raise InputError("predictor must have set_image() and predict(), or be a factory of one")


def _mean(values: Iterable[float]) -> float:
    v = [float(x) for x in values if x is not None and not (isinstance(x, float) and math.isnan(x))]
    return float(np.mean(v)) if v else float("nan")


def _summarise(rows: list[dict], methods: Sequence[str]) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for m in methods:
        mrows = [r["methods"][m] for r in rows if m in r.get("methods", {})]
        if not mrows:
            continue
        out[m] = {k: _mean(r.get(k) for r in mrows) for k in ROW_METRICS}
        out[m]["n_rows"] = len(mrows)
    return out


def _row_key(row: dict) -> tuple[int, int, int, str]:
    return row["index"], row["class"], row.get("seed", 0), row.get("target", "random")


def _summaries(rows: list[dict], methods: Sequence[str]) -> dict:
    """``model``, ``baselines`` and ``by_class`` summaries of ``rows``."""
    summary = _summarise(rows, methods)
    by_class = {str(cls): _summarise([r for r in rows if r["class"] == cls], methods)
                for cls in sorted({r["class"] for r in rows})}
    return {"model": summary.get("model", {}), "baselines": {m: summary[m] for m in methods if m != "model"},
            "by_class": by_class}


def _assemble(rows: list[dict], clicks: int, seeds: Sequence[int], threshold: float, extra: dict,
              targets: Sequence[str] = ("random",)) -> dict:
    rows = sorted(rows, key=_row_key)
    methods = [m for m in METHODS if any(m in r["methods"] for r in rows)]
    out = {
        **_summaries(rows, methods),
        "cases": rows,
        "n_cases": len({r["index"] for r in rows}),
        "n_rows": len(rows),
        "clicks": int(clicks),
        "seed": int(seeds[0]) if len(seeds) == 1 else [int(s) for s in seeds],
        "targets": list(targets),
        "threshold": float(threshold),
        **extra,
    }
    if len(seeds) > 1:
        out["draws"] = {str(s): _summaries([r for r in rows if r.get("seed", 0) == s], methods) for s in seeds}
    if len(targets) > 1:
        out["by_target"] = {t: _summaries([r for r in rows if r.get("target", "random") == t], methods)
                            for t in targets}
    return out


def _seeds(seed: int | Sequence[int]) -> list[int]:
    seeds = [int(seed)] if np.ndim(seed) == 0 else [int(s) for s in seed]
    if not seeds or len(set(seeds)) != len(seeds):
        raise InputError(f"seed must be one seed or distinct seeds, got {seed}")
    return seeds


def _targets(targets: str | Sequence[str]) -> list[str]:
    names = [targets] if isinstance(targets, str) else [str(t) for t in targets]
    bad = [t for t in names if t not in TARGETS]
    if not names or bad or len(set(names)) != len(names):
        raise InputError(f"targets must be distinct names among {', '.join(TARGETS)}, got {targets}")
    return names


def pick_target(instances: np.ndarray, n: int, target: str, rng: np.random.Generator) -> int:
    """The label (1..n) of the instance to click in ``instances`` (int labels 1..n, 0 background).

    ``random`` draws it uniformly with ``rng``; the others draw that same number (so the clicks that
    follow come from the same rng state) and take instead the ``largest``, the ``median``-sized
    (rank ``(n - 1) // 2`` by ascending size: the smaller of the two middle ones for an even ``n``)
    or the ``smallest`` instance by voxel count; equal sizes go to the lower label.
    """
    drawn = int(rng.integers(1, n + 1))
    if target == "random":
        return drawn
    sizes = np.bincount(np.asarray(instances).ravel(), minlength=n + 1)[1 : n + 1]
    ascending = np.lexsort((np.arange(n), sizes))  # by size, then by label
    if target == "smallest":
        return int(ascending[0]) + 1
    if target == "median":
        return int(ascending[(n - 1) // 2]) + 1
    if target == "largest":
        return int(np.lexsort((np.arange(n), -sizes))[0]) + 1
    raise InputError(f"unknown target strategy {target!r}; use one of {', '.join(TARGETS)}")


def evaluate(
    cases: Iterable[Any],
    predictor: Any = None,
    clicks: int = 3,
    seed: int | Sequence[int] = 0,
    threshold: float = DEFAULT_THRESHOLD,
    lesion_classes: Sequence[int] | None = None,
    min_size: int = 10,
    progress: bool = True,
    shard: tuple[int, int] | None = None,
    baselines: bool = True,
    iou: float = 0.5,
    min_volume: float = DEFAULT_MIN_VOLUME,
    targets: str | Sequence[str] = ("random",),
    options: Any = None,
) -> dict:
    """Evaluate one-click multi-instance segmentation; see the module docstring.

    Args:
        cases: :class:`Case` objects or references with ``.load() -> Case`` (``CaseRef``,
            ``PhantomRef``); materialised as a list (loading is lazy, one case at a time).
        predictor: an object with ``set_image(volume, spacing=...)`` and
            ``predict(positive=[(z, y, x)], negative=[]) -> Prediction`` where
            ``Prediction.labels(threshold, min_volume) -> (uint16 instance labels in the original
            grid, table)``; or a zero-argument factory returning one; or None (baselines only).
        clicks: clicks per (case, class), modes cycling center / interior / boundary.
        seed: seeds the instance choice and the clicks (per case: ``(seed, case index)``); several
            seeds score one draw each on the same embedding, and the summary is their mean.
        threshold: confidence threshold passed to ``Prediction.labels``.
        lesion_classes: classes to prompt (those present in each case); None = every label
            value >= 2 present (or 1 if it is the only one).
        min_size: gt and predicted instances smaller than this (voxels) are ignored for the
            instance scores and are never the clicked target.
        progress: tqdm bar on stderr.
        shard: ``(rank, world)``: only ``cases[rank::world]``.
        baselines: also run region growing and threshold + connected components.
        iou: IoU threshold for instance matching.
        min_volume: smallest shown instance (spacing units cubed), passed to ``Prediction.labels``.
        targets: how the clicked instance is chosen (:data:`TARGETS`, :func:`pick_target`); several
            give one row per (case, class, seed, target).
        options: a ``PredictOptions`` passed to every ``predictor.predict`` call (the kind gate,
            growing, refining); None: the predictor's defaults (and no ``options`` argument).

    Returns:
        ``{"model": {metric: mean}, "baselines": {"region_grow": {...}, "threshold_cc":
        {...}}, "by_class": {...}, "cases": [rows], "n_cases", "n_rows", "clicks", "seed",
        "targets", "threshold", "shard"}`` (and ``"draws": {seed: {"model", "baselines", "by_class"}}``
        with several seeds, ``"by_target": {target: {...}}`` with several targets); each row has
        ``case``, ``index``, ``class``, ``seed``, ``target``,
        ``n_gt_instances``, ``target_voxels``, ``points``, timings and ``methods`` ->
        {method: {metric: mean over clicks, "dice_std_over_clicks", "dice_per_click"}}.
    """
    from tqdm import tqdm

    if clicks < 1:
        raise InputError(f"clicks must be >= 1, got {clicks}")
    seeds = _seeds(seed)
    strategies = _targets(targets)
    all_cases = list(cases)
    rank, world = (0, 1) if shard is None else (int(shard[0]), int(shard[1]))
    if world < 1 or not 0 <= rank < world:
        raise InputError(f"shard must be (rank, world) with 0 <= rank < world, got {shard}")
    indices = list(range(rank, len(all_cases), world))
    model = _resolve_predictor(predictor)
    rows: list[dict] = []
    bar = tqdm(indices, desc="evaluate", unit="case", disable=not progress, file=sys.stderr)
    for index in bar:
        case = _load(all_cases[index])
        rows.extend(
            _evaluate_case(case, index, model, clicks, seeds, (threshold, min_volume), lesion_classes,
                           min_size, baselines, iou, strategies, {} if options is None else {"options": options})
        )
    bar.close()
    return _assemble(rows, clicks, seeds, threshold, {"shard": [rank, world], "min_volume": float(min_volume)},
                     strategies)


def _evaluate_case(
    case: Case,
    index: int,
    model: Any,
    clicks: int,
    seeds: Sequence[int],
    shown: tuple[float, float],
    lesion_classes: Sequence[int] | None,
    min_size: int,
    baselines: bool,
    iou: float,
    targets: Sequence[str] = ("random",),
    predict_kw: dict | None = None,
) -> list[dict]:
    image = np.asarray(case.image, np.float32)
    labels = np.asarray(case.labels)
    spacing = tuple(float(s) for s in case.spacing)
    present = lesion_classes_in(labels)
    classes = [c for c in (lesion_classes if lesion_classes is not None else present) if c in present]
    todo = []
    for cls in classes:
        inst, n = instances_of(labels, cls, min_size)
        if n:
            todo.append((int(cls), inst, n))
    if not todo:
        return []
    embed_s = float("nan")
    if model is not None:
        t0 = time.perf_counter()
        # a case may say what it is (a contrast probe stays CT though its values no longer look like HU)
        modality = case.meta.get("modality")
        model.set_image(image, spacing=spacing, **({"modality": modality} if modality else {}))
        embed_s = time.perf_counter() - t0
    smoothed = denoise(image, spacing) if baselines else None
    rows = []
    for seed, strategy in ((s, t) for s in seeds for t in targets):
        rng = np.random.default_rng([int(seed), int(index)])  # one stream per draw, as a run with that seed alone
        for cls, inst, n in todo:
            tmask = inst == pick_target(inst, n, strategy, rng)
            per: dict[str, list[dict]] = {}
            points = []
            predict_s = []
            for i in range(clicks):
                mode = CLICK_MODES[i % len(CLICK_MODES)]
                point = simulate_click(tmask, mode, rng, spacing)
                points.append({"point": list(point), "mode": mode})
                if model is not None:
                    t0 = time.perf_counter()
                    prediction = model.predict(positive=[point], negative=[], **(predict_kw or {}))
                    lab, _table = prediction.labels(*shown)
                    predict_s.append(time.perf_counter() - t0)
                    per.setdefault("model", []).append(
                        score(np.asarray(lab), labels, cls, spacing, inst, min_size, iou, tmask))
                if baselines:
                    rg, window = grow_with_window(image, point, spacing, smoothed=smoothed)
                    per.setdefault("region_grow", []).append(
                        score(rg, labels, cls, spacing, inst, min_size, iou, tmask))
                    tc = threshold_cc(image, point, spacing, smoothed=smoothed, seed_mask=rg,
                                      window=window)
                    per.setdefault("threshold_cc", []).append(
                        score(tc, labels, cls, spacing, inst, min_size, iou, tmask))
            methods = {}
            for m, scores in per.items():
                agg = {k: float(np.mean([s[k] for s in scores])) for k in METRICS}
                d = [s["dice"] for s in scores]
                agg["dice_std_over_clicks"] = float(np.std(d))
                agg["dice_per_click"] = [float(x) for x in d]
                methods[m] = agg
            rows.append({
                "case": case.name,
                "index": int(index),
                "class": int(cls),
                "seed": int(seed),
                "target": strategy,
                "n_gt_instances": int(n),
                "target_voxels": int(tmask.sum()),
                "spacing": list(spacing),
                "shape": [int(s) for s in image.shape],
                "points": points,
                "embed_s": embed_s,
                "predict_s": float(np.mean(predict_s)) if predict_s else float("nan"),
                "methods": methods,
            })
    return rows


def merge_results(partials: Sequence[dict]) -> dict:
    """Merge shard results: concatenate their rows and recompute every mean."""
    partials = [p for p in partials if p]
    if not partials:
        raise InputError("nothing to merge")
    rows = [r for p in partials for r in p.get("cases", [])]
    seen = set()
    unique = []
    for r in rows:
        key = _row_key(r)
        if key not in seen:
            seen.add(key)
            unique.append(r)
    first = partials[0]
    return _assemble(unique, first["clicks"], _seeds(first["seed"]), first.get("threshold", DEFAULT_THRESHOLD),
                     {"shard": [0, 1], "merged_from": len(partials),
                      "min_volume": first.get("min_volume", DEFAULT_MIN_VOLUME)},
                     _targets(first.get("targets", ["random"])))


_LABELS = {
    "dice": "Dice",
    "nsd_1mm": "NSD@1mm",
    "nsd_2mm": "NSD@2mm",
    "instance_recall": "Inst. recall",
    "instance_precision": "Inst. precision",
    "instance_f1": "Inst. F1",
    "wrong_class_rate": "Wrong-class",
    "clicked_found": "Clicked found",
    "dice_std_over_clicks": "Dice std (clicks)",
}


def format_markdown_table(result: dict) -> str:
    """The summary as a Markdown table (one row per method), with a per-class breakdown."""
    cols = list(ROW_METRICS)

    def table(summary: dict[str, dict]) -> list[str]:
        lines = ["| Method | " + " | ".join(_LABELS[c] for c in cols) + " |",
                 "|---|" + "---:|" * len(cols)]
        for name in METHODS:
            s = summary.get(name)
            if not s:
                continue
            cells = ["n/a" if (v := s.get(c)) is None or (isinstance(v, float) and math.isnan(v))
                     else f"{v:.3f}" for c in cols]
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        return lines

    summary = {"model": result.get("model", {}), **result.get("baselines", {})}
    out = [
        f"One-click evaluation: {result.get('n_cases', 0)} cases, {result.get('n_rows', 0)} "
        f"(case, class) rows, {result.get('clicks')} clicks each "
        f"(center/interior/boundary), {_seed_words(result.get('seed'))}{_target_words(result.get('targets'))}, threshold "
        f"{result.get('threshold', DEFAULT_THRESHOLD)}, min volume {result.get('min_volume', 0):g} mm³",
        "",
        *table(summary),
    ]
    by_class = result.get("by_class", {})
    if len(by_class) > 1:
        for cls, s in by_class.items():
            out += ["", f"Class {cls}:", "", *table(s)]
    for seed, draw in result.get("draws", {}).items():
        out += ["", f"Draw {seed} alone:", "", *table({"model": draw["model"], **draw["baselines"]})]
    for target, part in result.get("by_target", {}).items():
        out += ["", f"Target {target} alone:", "", *table({"model": part["model"], **part["baselines"]})]
    return "\n".join(out) + "\n"


def _target_words(targets) -> str:
    if not targets or list(targets) == ["random"]:
        return ""  # the default: the table reads as it always has
    return f", clicked instance: {', '.join(targets)} (one row per (case, class) each)"


def _seed_words(seed) -> str:
    if isinstance(seed, list):
        return f"seeds {', '.join(map(str, seed))} (each a draw of the clicked instances and clicks; means over all)"
    return f"seed {seed}"
