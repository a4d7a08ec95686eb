"""``miqsam phantom OUT``: write synthetic abdominal CT phantoms in the KiTS21 layout."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

HELP = "Write synthetic abdominal CT phantoms (KiTS21 layout: case_XXXXX/imaging.nii.gz + segmentation.nii.gz)."


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("out", type=Path, help="output folder (created if missing)")
    parser.add_argument("--cases", type=int, default=10, help="number of cases (default 10)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first case; case i uses seed+i")
    parser.add_argument("--shape", type=int, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="voxels per axis (default: field of view 120x180x180 mm / spacing)")
    parser.add_argument("--spacing", type=float, nargs=3, metavar=("Z", "Y", "X"), default=None,
                        help="voxel size in mm (default: drawn per case, 0.8-5 mm slices)")
    parser.add_argument("--overwrite", action="store_true", help="replace existing case files")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args: argparse.Namespace) -> int:
    from ..data.phantom import write_phantoms
    from ..errors import InputError

    if args.cases < 1:
        raise InputError(f"--cases must be at least 1, got {args.cases}")
    folders = write_phantoms(
        args.out, args.cases, args.seed, shape=args.shape, spacing=args.spacing,
        progress=not args.quiet, overwrite=args.overwrite,
    )
    print(f"wrote {len(folders)} cases to {args.out}", file=sys.stdout)
    return 0
