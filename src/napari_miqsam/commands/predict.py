"""``miqsam predict``: one or more clicks on a NIfTI/TIFF volume -> instance labels + CSV.

The label volume is written in the input's format and geometry (NIfTI: the same affine and header
spacing), and a CSV of the instances (id, score, voxels, volume_mm3, centroid) next to it.
``IMAGE`` may also be a folder: every volume in it is processed (sharded across ranks under torchrun).
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

from ..errors import InputError, WriteError
from ..inference.prediction import DEFAULT_MIN_VOLUME, DEFAULT_THRESHOLD
from . import add_model_spacing_argument, add_precision_argument, add_predict_options

HELP = "segment every lesion of the clicked kind in a NIfTI/TIFF volume; writes labels + CSV"
VOLUME_SUFFIXES = (".nii", ".nii.gz", ".tif", ".tiff")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("image", type=Path, help="input volume (.nii, .nii.gz, .tif, .tiff) or a folder of them")
    p.add_argument("--point", nargs=3, type=float, action="append", metavar=("Z", "Y", "X"), default=[],
                   help="positive click in voxel coordinates (z, y, x); repeatable")
    p.add_argument("--negative", nargs=3, type=float, action="append", metavar=("Z", "Y", "X"), default=[],
                   help="negative click (not this); repeatable")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD, help=f"confidence threshold in [0, 1] (default {DEFAULT_THRESHOLD})")
    p.add_argument("--min-volume", type=float, default=DEFAULT_MIN_VOLUME,
                   help=f"hide instances smaller than this (spacing units cubed, mm³ for CT; default "
                   f"{DEFAULT_MIN_VOLUME:g}); the clicked instance is always kept")
    p.add_argument("--kind", default=None,
                   help="look for this lesion kind instead of the kind the model reads at the click: one of the "
                   "weights' kind names (shipped: tumour or cyst, labels 2 and 3 as in KiTS) or its number 1..K "
                   "(default: read it)")
    add_predict_options(p)
    add_model_spacing_argument(p)
    add_precision_argument(p)
    p.add_argument("--weights", type=Path, default=None, help=".safetensors weights (default: shipped)")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda", "mps"])
    p.add_argument("--channel", type=int, default=None, help="channel of a multichannel (4D) volume")
    p.add_argument("--modality", default="auto", choices=["auto", "ct", "other"],
                   help="how intensities are read: ct (the HU window), other (MR, microscopy: percentiles) or auto "
                   "(default: CT when the values look like HU, which a crop without air may not)")
    p.add_argument("-o", "--output", type=Path, required=True,
                   help="output label file (same format as the input), or a folder when IMAGE is a folder")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def write_csv(path: Path, rows: list[dict], overwrite: bool) -> None:
    """Write the instance table atomically."""
    from ..data.io import atomic_write

    def write(tmp: Path) -> None:
        with open(tmp, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["id", "score", "voxels", "volume_mm3", "centroid_z", "centroid_y", "centroid_x"])
            for r in rows:
                w.writerow([r["id"], f"{r['score']:.4f}", r["voxels"], f"{r['volume_mm3']:.2f}",
                            *(f"{c:.2f}" for c in r["centroid"])])

    atomic_write(path, write, overwrite)


def csv_path_for(output: Path) -> Path:
    name = output.name
    stem = name[: -len(suffix_of(output))] if suffix_of(output) in VOLUME_SUFFIXES else output.stem
    return output.with_name(stem + ".csv")


def predict_file(predictor, image: Path, output: Path, args, options=None) -> int:
    from ..data.io import read_volume, write_labels

    if suffix_of(output) != suffix_of(image) and not (suffix_of(output) in (".tif", ".tiff") and suffix_of(image) in (".tif", ".tiff")):
        raise InputError(f"the output {output.name} must have the input's format ({suffix_of(image)})")
    csv_out = csv_path_for(output)
    for path in (output, csv_out):
        if path.exists() and not args.overwrite:
            raise WriteError(f"{path} exists; pass --overwrite to replace it")
    from tqdm import tqdm

    vol = read_volume(image)
    with tqdm(desc=f"embed {image.name}", unit="window", file=sys.stderr, leave=False) as bar:
        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)
        predictor.set_image(vol.data, vol.spacing, modality=args.modality, channel=args.channel, progress=progress)
    prediction = predictor.predict(args.point, args.negative, options=options)
    labels, rows = prediction.labels(args.threshold, args.min_volume)
    write_labels(output, labels, like=vol, overwrite=args.overwrite)
    write_csv(csv_out, rows, args.overwrite)
    kind = prediction.kind_summary()
    read = f"; click read as {kind}" if kind else ""
    hidden = prediction.hidden_by_kind_gate(args.threshold, args.min_volume)
    gate = f"; the kind gate hid {hidden} more read as another kind (--kind-gate 0 keeps them)" if hidden else ""
    empty = prediction.empty_clicks()
    missed = f"; nothing under {empty} of the positive clicks (read as background: README, When a click finds nothing)" if empty else ""
    how = prediction.values_read() if args.modality == "auto" else None
    values = f"; values read as {how}" if how else ""
    floor = prediction.below_window_note()
    below = f"; {floor}" if floor else ""
    print(f"{image.name}: {len(rows)} instance(s) at threshold {args.threshold}{read}{values}{gate}{missed}{below} -> {output} "
          f"(+ {csv_out.name})")
    return len(rows)


def kind_index(kind: str | None, kinds: int, names: tuple[str, ...] = ()) -> int | None:
    """``--kind`` as an index into the weights' ``kinds`` lesion kinds (0: they have no kind head),
    by one of their ``names`` (``Predictor.kind_names``) or by number 1..kinds."""
    if kind is None:
        return None
    if kinds == 0:
        raise InputError("these weights have no lesion-kind head, so --kind cannot be used")
    if kind.strip().lower() in names:
        return names.index(kind.strip().lower())
    if kind.isdigit() and 1 <= int(kind) <= kinds:
        return int(kind) - 1
    allowed = f"{', '.join(names)} or " if names else ""
    raise InputError(f"--kind must be {allowed}a number 1..{kinds}, got {kind!r}")


def run(args: argparse.Namespace) -> int:
    from ..distributed import context as distributed_context
    from ..inference.options import PredictOptions
    from ..inference.predictor import Predictor

    if not args.point:
        raise InputError("give at least one positive click with --point Z Y X")
    if not 0.0 <= args.threshold <= 1.0:
        raise InputError(f"--threshold must lie in [0, 1], got {args.threshold}")
    if args.min_volume < 0:
        raise InputError(f"--min-volume must be >= 0, got {args.min_volume}")
    PredictOptions.from_cli(args)  # a bad flag is refused before the weights load
    predictor = Predictor.from_weights(args.weights, device=args.device, spacing=args.model_spacing,
                                       precision=args.precision)
    options = PredictOptions.from_cli(
        args, kind=kind_index(args.kind, predictor.cfg.kinds if predictor.cfg.kind_prior else 0, predictor.kind_names))
    if not predictor.trained:
        print(f"warning: the weights {args.weights or 'shipped default'} are UNTRAINED; results are meaningless",
              file=sys.stderr)
    if args.image.is_dir():
        rank, world, _ = distributed_context()
        files = sorted(p for p in args.image.iterdir() if suffix_of(p) in VOLUME_SUFFIXES)
        if not files:
            raise InputError(f"no .nii/.nii.gz/.tif/.tiff volume in {args.image}")
        if not args.output.is_dir():
            raise WriteError(f"with a folder of volumes, -o must be an existing folder: {args.output}")
        for f in files[rank::world]:
            predict_file(predictor, f, args.output / f.name, args, options)
        return 0
    if not args.image.exists():
        raise InputError(f"input file not found: {args.image}")
    predict_file(predictor, args.image, args.output, args, options)
    return 0
