"""``miqsam collect IMAGE LABELS --into DIR``: add a volume labelled elsewhere to a user data set folder."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("add a labelled volume (NIfTI or TIFF image + labels) to a data set folder in the KiTS layout "
        "that `miqsam adapt` and `miqsam train` read; the same image again updates its case")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("image", type=Path, help="the image (.nii, .nii.gz, .tif, .tiff)")
    parser.add_argument("labels", type=Path,
                        help="its labels on the same grid: 0 background, 1 organ (optional), 2.. lesion kinds (KiTS: 2 tumour, 3 cyst)")
    parser.add_argument("--into", type=Path, required=True, metavar="DIR", help="the data set folder (created if missing)")
    kinds = parser.add_mutually_exclusive_group()
    kinds.add_argument("--kind-offset", type=int, default=0, metavar="N",
                       help="add N to every non-zero label (1 when the lesion kinds are numbered from 1 and there is no organ label)")
    kinds.add_argument("--as-kind", type=int, default=None, metavar="V",
                       help="every non-zero voxel is lesion kind V (instance ids or a binary mask of one kind; 2: tumour)")
    parser.add_argument("--replace", action="store_true",
                        help="replace the labels of an image already in the data set (default: merge, new lesion voxels overwrite)")


def run(args: argparse.Namespace) -> int:
    from ..data.user_dataset import collect_files

    result = collect_files(args.image, args.labels, args.into, kind_offset=args.kind_offset, as_kind=args.as_kind,
                           mode="replace" if args.replace else "merge")
    print(result.summary())
    return 0
