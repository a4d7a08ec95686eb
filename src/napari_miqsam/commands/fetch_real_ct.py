"""``miqsam fetch-real-ct``: download one real liver CT (LiTS case 117) and write it in the KiTS layout."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("download one real liver CT with tumours (LiTS case 117, MIT-licensed) into the cache as a "
        "KiTS-layout data set; prints its folder")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="cache folder (default: $MIQSAM_CACHE or ~/.cache/napari-miqsam)")


def run(args: argparse.Namespace) -> int:
    from ..data.real_ct import fetch_real_ct

    print(fetch_real_ct(args.cache))  # the only line on stdout, for `miqsam evaluate "$(miqsam fetch-real-ct)"`
    return 0
