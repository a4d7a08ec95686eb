"""``miqsam evaluate DATA``: one-click evaluation of the model against classical baselines."""

from __future__ import annotations

import argparse
import json
import math
import re
from pathlib import Path

from ..data.contrast_probes import CONTRAST_PROBES
from ..inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD
from . import add_model_spacing_argument, add_precision_argument, add_predict_options

HELP = "Evaluate one-click lesion segmentation (model vs region growing vs threshold+CC) on labelled data."

# phantom:N:SEED (the training generator), ood:N:SEED (out-of-family validation phantoms,
# data/ood_phantom.py), ood-thorax:N:SEED (out-of-family lung nodules, data/ood_thorax.py), any of
# them with -mirrored or -halved: the same phantoms with their intensities rewritten (data.contrast_probes)
_GENERATED = re.compile(rf"^(phantom|ood|ood-thorax)(?:-({'|'.join(CONTRAST_PROBES)}))?:(\d+)(?::(-?\d+))?$")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("data", help="data set folder (LiTS, KiTS or MSD layout), phantom:N:SEED (the training "
                        "generator's phantoms), ood:N:SEED (out-of-family validation phantoms, never trained on) or "
                        "ood-thorax:N:SEED (out-of-family chest phantoms: solid and ground-glass lung nodules); "
                        "phantom-mirrored, phantom-halved, ood-mirrored or ood-halved:N:SEED: the same phantoms with "
                        "their contrasts mirrored (80 - HU) or halved (0.5 HU + 80), a check of contrast invariance")
    parser.add_argument("--format", default="auto", choices=("auto", "lits", "kits", "msd", "phantom"),
                        help="data set layout (default: detected)")
    parser.add_argument("--weights", type=Path, default=None,
                        help="model weights (.safetensors); default: the shipped weights")
    parser.add_argument("--clicks", type=int, default=3, help="clicks per lesion class and case (default 3)")
    parser.add_argument("--seed", type=_seed_list, default=[0], metavar="SEED[,SEED...]",
                        help="seed of the instance and click choice; several (0,1,2) score one draw each on the "
                        "same embeddings and report the means over all of them, and each draw alone")
    parser.add_argument("--target", type=_target_list, default=["random"], metavar="TARGET[,TARGET...]",
                        help="which instance of each (case, class) is clicked: random (default), largest, median or "
                        "smallest (by voxels); several (largest,median,smallest) score one row each and report "
                        "each strategy's means too")
    parser.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help=f"confidence threshold (default {DEFAULT_THRESHOLD})")
    parser.add_argument("--min-volume", type=float, default=DEFAULT_MIN_VOLUME,
                        help=f"hide predicted instances smaller than this many mm³ (default {DEFAULT_MIN_VOLUME:g}; "
                        "the clicked one is kept)")
    parser.add_argument("--window", type=int, default=None,
                        help="sliding-window side in model voxels (default: the weights' config; smaller forces tiling)")
    add_model_spacing_argument(parser)
    add_precision_argument(parser)
    parser.add_argument("--limit", type=int, default=None, help="evaluate only the first N cases")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda or mps (under torchrun each rank uses its LOCAL_RANK GPU)")
    parser.add_argument("--min-size", type=int, default=10,
                        help="ignore instances smaller than this many voxels (default 10)")
    add_predict_options(parser)
    parser.add_argument("--no-model", action="store_true", help="baselines only")
    parser.add_argument("--no-baselines", action="store_true", help="model only")
    parser.add_argument("--json", type=Path, default=None, metavar="OUT.json",
                        help="write the full result (summary and per-case rows) here")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing JSON file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def _seed_list(text: str) -> list[int]:
    try:
        return [int(t) for t in text.split(",")]  # evaluate() refuses a repeated seed
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a seed or a comma-separated list of seeds") from None


def _target_list(text: str) -> list[str]:
    from ..evaluation.evaluate import TARGETS

    names = [t.strip() for t in text.split(",")]
    bad = [t for t in names if t not in TARGETS]
    if bad:
        raise argparse.ArgumentTypeError(f"{', '.join(map(repr, bad))}: not a target; use {', '.join(TARGETS)} "
                                         f"or a comma-separated list of them")
    return names  # evaluate() refuses a repeated one


def resolve_cases(data: str, fmt: str = "auto", limit: int | None = None) -> list:
    """Case references for ``DATA`` (a folder, ``phantom[-PROBE]:N[:SEED]``, ``ood[-PROBE]:N[:SEED]`` or
    ``ood-thorax[-PROBE]:N[:SEED]``)."""
    from ..data.datasets import list_cases, ood_phantom_cases, phantom_cases
    from ..errors import InputError

    m = _GENERATED.match(str(data))
    if m:
        family, probe, n, seed = m.group(1), m.group(2), int(m.group(3)), int(m.group(4) or 0)
        if family == "phantom":
            cases = phantom_cases(n, seed, contrast=probe)
        else:
            cases = ood_phantom_cases(n, seed, contrast=probe, site="thorax" if family == "ood-thorax" else "abdomen")
    elif fmt == "phantom":
        raise InputError(f"{data!r}: with --format phantom, DATA must be phantom:N:SEED")
    else:
        cases = list_cases(Path(data), fmt)
    if limit is not None:
        if limit < 1:
            raise InputError(f"--limit must be at least 1, got {limit}")
        cases = cases[:limit]
    return cases


def _jsonable(obj):
    if isinstance(obj, float):
        return None if math.isnan(obj) or math.isinf(obj) else obj
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if hasattr(obj, "item"):
        return _jsonable(obj.item())
    return obj


def write_json_atomic(path: Path, obj, overwrite: bool = True) -> None:
    """Write ``obj`` as JSON via a temporary file + ``os.replace`` (``data.io.atomic_write``)."""
    from ..data.io import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", encoding="utf-8") as fh:
            json.dump(_jsonable(obj), fh, indent=1)

    atomic_write(Path(path), write, overwrite)


def run(args: argparse.Namespace) -> int:
    """Evaluate; under ``torchrun`` each rank takes ``cases[rank::world]`` and rank 0 merges."""
    import sys

    from ..distributed import context as distributed_context
    from ..errors import InputError, WriteError
    from ..evaluation.evaluate import evaluate, format_markdown_table, merge_results
    from ..inference.options import PredictOptions

    if args.clicks < 1:
        raise InputError(f"--clicks must be at least 1, got {args.clicks}")
    if not 0.0 <= args.threshold <= 1.0:
        raise InputError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.min_volume < 0:
        raise InputError(f"--min-volume must be >= 0, got {args.min_volume}")
    if args.no_model and args.no_baselines:
        raise InputError("--no-model and --no-baselines leave nothing to evaluate")
    if args.json is not None and args.json.exists() and not args.overwrite:
        raise WriteError(f"{args.json}: the file exists; use --overwrite")
    options = PredictOptions.from_cli(args)
    cases = resolve_cases(args.data, args.format, args.limit)
    lesion_classes = None  # phantoms, and MSD sets without a dataset.json: each case's own lesion labels
    if not _GENERATED.match(str(args.data)) and args.format != "phantom":
        from ..data.datasets import dataset_lesion_classes

        # the data set's lesion labels, so an MSD Task03 case without a tumour is not scored on its liver
        lesion_classes = dataset_lesion_classes(args.data, args.format)
    rank, world, local_rank = distributed_context()
    if world > 1:
        from ..distributed import init

        init()
        import torch

        if torch.cuda.is_available() and args.device in ("auto", "cuda"):
            torch.cuda.set_device(local_rank % torch.cuda.device_count())
    predictor = None
    if not args.no_model:
        from ..inference.predictor import Predictor

        predictor = Predictor.from_weights(
            str(args.weights) if args.weights is not None else None, device=args.device,
            window=args.window, spacing=args.model_spacing, precision=args.precision,
        )
        if not getattr(predictor, "trained", True) and rank == 0:
            print("warning: the weights are UNTRAINED; the model's numbers are meaningless",
                  file=sys.stderr)
    result = evaluate(
        cases,
        predictor,
        clicks=args.clicks,
        seed=args.seed,
        threshold=args.threshold,
        min_volume=args.min_volume,
        min_size=args.min_size,
        progress=not args.quiet and rank == 0,
        baselines=not args.no_baselines,
        shard=(rank, world),
        lesion_classes=lesion_classes,
        targets=args.target,
        options=options if predictor is not None else None,
    )
    if world > 1:
        from ..distributed import gather_to_rank0

        parts = gather_to_rank0(result)
        if rank != 0:
            return 0
        result = merge_results(parts)
    result["data"] = str(args.data)
    result["weights"] = str(args.weights) if args.weights is not None else "default"
    if predictor is not None:
        result["kind_gate"] = options.kind_gate
        result["rescue"] = options.rescue
        result["refine"] = options.refine and predictor.model.refiner is not None
        result["grow"] = options.grow
        result["model_spacing"] = list(predictor.model_spacing)
        result["embed_dtype"] = str(predictor.embed_dtype).replace("torch.", "")
    print(format_markdown_table(result), end="")
    if args.json is not None:
        write_json_atomic(args.json, result, overwrite=True)
    return 0
