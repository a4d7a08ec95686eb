"""Paired comparison of two ``miqsam evaluate`` results on the same cases and clicks.

Two weights (or settings) scored on the same cases with the same click draws give paired rows: one
(case, class, draw, target strategy) row each, with the same clicked points (a result written before
``--target`` existed has only ``random`` rows). Their difference is far less noisy than
the difference of two means read off two tables, but rows of one case are not independent (one
phantom's lesions, several draws), so the uncertainty is a *cluster* bootstrap: cases (by name) are
resampled with replacement, every row of a drawn case comes along, and the statistic is the mean
difference over the rows drawn (``scipy.stats.bootstrap``, paired, percentile interval). Rows are
paired and clustered by case name, so the rows of several results (other cases, or other click
draws of the same cases) can simply be put together on each side, in any order.

    result = compare(json.load(open("a.json")), json.load(open("b.json")))
    print(format_comparison(result))

Measured on 2026-12-04 (README, Results): differences of 0.01-0.02 Dice between candidates are
within what one draw of clicks moves; this module says, per metric, whether a difference is.
"""

from __future__ import annotations

import inspect
import math
from typing import Any, Sequence

import numpy as np
from scipy.stats import bootstrap

from ..errors import InputError
from .evaluate import ROW_METRICS

__all__ = ["LOWER_IS_BETTER", "compare", "format_comparison", "paired_rows"]

# SciPy 1.15 renamed ``random_state`` to ``rng`` (SPEC 7); pyproject allows SciPy 1.10+.
_RNG_ARG = "rng" if "rng" in inspect.signature(bootstrap).parameters else "random_state"

#: A row counts as moved when its value changes by more than this (half the tables' last digit).
ROW_TOLERANCE = 5e-4

#: Metrics where a smaller value is the better one.
LOWER_IS_BETTER: frozenset[str] = frozenset({"wrong_class_rate", "dice_std_over_clicks"})


def _case(row: dict) -> str:
    """The row's case: its name (a result written before rows were named: its index)."""
    return str(row.get("case") or f"#{row['index']}")


def _key(row: dict) -> tuple:
    return _case(row), row["class"], row.get("seed", 0), row.get("target", "random")


def _points(row: dict) -> list:
    return [list(p["point"]) for p in row.get("points", [])]


def paired_rows(a: dict, b: dict, method: str = "model", lesion_class: int | None = None) -> list[tuple[str, dict, dict]]:
    """``(case name, a's metrics, b's metrics)`` for every row both results scored with ``method``
    (only the rows of ``lesion_class`` if given).

    Refuses results that are not paired: different rows (cases, classes, draws or ``--target``
    strategies), different clicked points on a row (another ``--seed`` or ``--clicks``), since their
    difference would mix the draw's noise into the comparison, or one row twice (the same result
    pooled twice).
    """
    results = {"first": a, "second": b}
    for name, result in results.items():
        if not isinstance(result, dict) or not isinstance(result.get("cases"), list):
            raise InputError(f"the {name} result has no per-case rows; write it with `miqsam evaluate ... --json`")
    rows = {}
    for name, result in results.items():
        rows[name] = {}
        for r in result["cases"]:
            if method in r.get("methods", {}):
                if _key(r) in rows[name]:
                    raise InputError(f"the {name} result has row {_key(r)} twice: pool results of different "
                                     "cases or click draws, each once")
                rows[name][_key(r)] = r
        if not rows[name]:
            scored = sorted({m for r in result["cases"] for m in r.get("methods", {})})
            raise InputError(f"the {name} result has no rows scored with {method!r} "
                             f"(it has: {', '.join(scored) or 'none'}; choose with --method)")
    ka, kb = set(rows["first"]), set(rows["second"])
    if lesion_class is not None and not any(k[1] == lesion_class for k in ka):
        raise InputError(f"no row of lesion class {lesion_class} (the results have {sorted({k[1] for k in ka})})")
    if ka != kb:
        only = sorted(ka ^ kb, key=str)[:3]
        raise InputError(
            f"the two results score different rows ({len(ka)} and {len(kb)}, {len(ka ^ kb)} in one only, e.g. "
            f"{only}): evaluate both on the same DATA, --seed, --target and --limit")
    out = []
    for key in sorted(ka):
        if lesion_class is not None and key[1] != lesion_class:
            continue
        ra, rb = rows["first"][key], rows["second"][key]
        if _points(ra) != _points(rb):
            raise InputError(f"row {key} was clicked at different points in the two results "
                             f"({_points(ra)} vs {_points(rb)}): evaluate both with the same --clicks and --seed")
        out.append((key[0], ra["methods"][method], rb["methods"][method]))
    return out


def _value(metrics: dict, name: str) -> float:
    v = metrics.get(name)
    return float("nan") if v is None else float(v)


def compare(a: dict, b: dict, metrics: Sequence[str] = ROW_METRICS, method: str = "model",
            n_resamples: int = 10_000, confidence: float = 0.95, seed: int = 0,
            lesion_class: int | None = None) -> dict[str, Any]:
    """Per metric: both means over the paired rows, their difference (second minus first), its
    cluster-bootstrap interval over cases, how many rows moved each way (by more than
    :data:`ROW_TOLERANCE`), and a verdict.

    The verdict is ``better`` / ``worse`` (for the second result; lower is better for
    :data:`LOWER_IS_BETTER`) when the interval excludes 0, else ``within noise``. Rows where either
    value is missing (NaN, e.g. no surface to score) are left out of that metric, as in the tables.
    """
    pairs = paired_rows(a, b, method, lesion_class)
    cases = np.array([i for i, _, _ in pairs])
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {"n_rows": len(pairs), "n_cases": len(np.unique(cases)),
                           "confidence": confidence, "method": method, "lesion_class": lesion_class, "metrics": {}}
    for name in metrics:
        va = np.array([_value(ma, name) for _, ma, _ in pairs])
        vb = np.array([_value(mb, name) for _, _, mb in pairs])
        ok = np.isfinite(va) & np.isfinite(vb)
        if not ok.any():
            continue
        d = (vb - va)[ok]
        _, case = np.unique(cases[ok], return_inverse=True)
        s, n = np.bincount(case, weights=d), np.bincount(case).astype(float)  # per case: sum and count of rows
        diff = float(s.sum() / n.sum())
        low = high = float("nan")
        if len(s) > 1:
            ci = bootstrap((s, n), lambda s_, n_, axis=-1: s_.sum(axis=axis) / n_.sum(axis=axis), paired=True,
                           vectorized=True, n_resamples=n_resamples, confidence_level=confidence,
                           method="percentile", **{_RNG_ARG: rng}).confidence_interval
            low, high = float(ci.low), float(ci.high)
        sign = -1.0 if name in LOWER_IS_BETTER else 1.0
        if math.isfinite(low) and min(sign * low, sign * high) > 0:
            verdict = "better"
        elif math.isfinite(low) and max(sign * low, sign * high) < 0:
            verdict = "worse"
        else:
            verdict = "within noise"
        out["metrics"][name] = {
            "first": float(va[ok].mean()), "second": float(vb[ok].mean()), "difference": diff,
            "ci_low": low, "ci_high": high, "verdict": verdict, "n_rows": int(ok.sum()),
            "rows_better": int(np.sum(sign * d > ROW_TOLERANCE)), "rows_worse": int(np.sum(sign * d < -ROW_TOLERANCE)),
        }
    return out


def format_comparison(result: dict, first: str = "first", second: str = "second") -> str:
    """A markdown table of :func:`compare`'s result."""
    pct = round(100 * result["confidence"])
    which = "" if result.get("lesion_class") is None else f" of lesion class {result['lesion_class']}"
    lines = [f"{second} vs {first}: {result['n_rows']} paired rows{which} over {result['n_cases']} cases "
             f"(interval: cases resampled, {pct}%)", "",
             f"| metric | {first} | {second} | difference | {pct}% interval | rows better / worse | verdict |",
             "|---|---|---|---|---|---|---|"]
    for name, m in result["metrics"].items():
        ci = "n/a" if not math.isfinite(m["ci_low"]) else f"{m['ci_low']:+.3f} to {m['ci_high']:+.3f}"
        lines.append(f"| {name} | {m['first']:.3f} | {m['second']:.3f} | {m['difference']:+.3f} | {ci} | "
                     f"{m['rows_better']} / {m['rows_worse']} | {m['verdict']} |")
    return "\n".join(lines)
