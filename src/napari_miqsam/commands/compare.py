"""``miqsam compare A.json B.json [C.json ...]``: is B better than A, beyond the noise of the cases?

``A1.json+A2.json B1.json+B2.json`` pools results on each side: other cases (e.g. ``ood:40:0`` and
``ood:40:40``) or other click draws of the same cases (``--seed 0`` and ``--seed 1``). Rows pair and
cluster by case name, so the files may be given in any order."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

HELP = ("Compare `miqsam evaluate --json` results scored on the same cases and clicks: paired differences "
        "with a bootstrap interval over cases.")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("results", type=Path, nargs="+", metavar="RESULT.json",
                        help="evaluate results (same DATA, --clicks and --seed); each after the first is compared with "
                        "the first. A+B pools two results of other cases or click draws (e.g. ood:40:0+ood:40:40) into one")
    parser.add_argument("--method", default="model", help="which method's rows to compare (default: model)")
    parser.add_argument("--by-class", action="store_true",
                        help="also compare the rows of each lesion class alone (phantoms: 2 tumour, 3 cyst)")
    parser.add_argument("--resamples", type=int, default=10_000, help="bootstrap resamples (default 10000)")
    parser.add_argument("--confidence", type=float, default=0.95, help="interval's confidence level (default 0.95)")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json", help="write the comparisons here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")


def _load(path: Path) -> dict:
    from ..errors import InputError

    try:
        with open(path, encoding="utf-8") as fh:
            return json.load(fh)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not a JSON file ({exc.msg}, line {exc.lineno})") from None


def _load_pooled(path: Path) -> dict:
    """One result, or the rows of ``A.json+B.json+...`` put together."""
    from ..errors import InputError

    if path.exists() or "+" not in str(path):
        return _load(path)
    parts = [Path(name) for name in str(path).split("+")]
    results = [_load(part) for part in parts]
    for part, result in zip(parts, results):
        if not isinstance(result, dict) or not isinstance(result.get("cases"), list):
            raise InputError(f"{part}: no per-case rows to pool; write it with `miqsam evaluate ... --json`")
    return {**results[0], "cases": [r for result in results for r in result["cases"]]}


def _label(path: Path) -> str:
    return path.stem if path.exists() else "+".join(Path(p).stem for p in str(path).split("+"))


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError, WriteError
    from ..evaluation.compare import compare, format_comparison
    from .evaluate import write_json_atomic

    if len(args.results) < 2:
        raise InputError("give at least two results to compare")
    if args.resamples < 100:
        raise InputError(f"--resamples must be at least 100, got {args.resamples}")
    if not 0.5 <= args.confidence < 1.0:
        raise InputError(f"--confidence must lie in [0.5, 1), got {args.confidence}")
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise WriteError(f"{args.json}: the file exists; use --overwrite")
    first = _load_pooled(args.results[0])
    out = []
    for path in args.results[1:]:
        second = _load_pooled(path)
        rows = first.get("cases") if isinstance(first, dict) else None  # compare() refuses a result without rows
        classes = sorted({int(r["class"]) for r in rows}) if args.by_class and isinstance(rows, list) else []
        for cls in [None, *classes]:  # all rows, then each lesion class alone
            try:
                result = compare(first, second, method=args.method, n_resamples=args.resamples,
                                 confidence=args.confidence, lesion_class=cls)
            except InputError as exc:
                raise InputError(f"{args.results[0]} vs {path}: {exc}") from None
            print(format_comparison(result, _label(args.results[0]), _label(path)), end="\n\n")
            out.append({"first": str(args.results[0]), "second": str(path), **result})
    if args.json is not None:
        write_json_atomic(args.json, out, overwrite=True)
    return 0
