"""``miqsam fetch-real-ct``: download real labelled scans (yardsticks, never training data) and
write them in the KiTS layout: LiTS case 117 (liver CT, the default), or pyradiomics' test scans
of another organ (``--scans lung-ct``) or modality (``--scans brain-mr``)."""

from __future__ import annotations

import argparse
from pathlib import Path

HELP = ("download real labelled scans into the cache as a KiTS-layout data set and print its folder: "
        "one liver CT with tumours (LiTS case 117, the default), two lung CTs or two brain MRs")
SCANS = ("lits117", "lung-ct", "brain-mr")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--scans", choices=SCANS, default="lits117",
                        help="lits117: LiTS case 117, liver CT, 66 tumours (liver-ct-segmentation-package's wheel, "
                             "MIT); lung-ct: two chest CTs, one lung tumour each; brain-mr: two brain MRs, one "
                             "tumour each (both from pyradiomics 2.2.0's source distribution) (default lits117)")
    parser.add_argument("--cache", type=Path, default=None, metavar="DIR",
                        help="cache folder (default: $MIQSAM_CACHE or ~/.cache/napari-miqsam)")


def run(args: argparse.Namespace) -> int:
    if args.scans == "lits117":
        from ..data.real_ct import fetch_real_ct

        folder = fetch_real_ct(args.cache)
    else:
        from ..data.pyradiomics_scans import fetch_pyradiomics_scans

        folder = fetch_pyradiomics_scans(args.scans, args.cache)
    print(folder)  # the only line on stdout, for `miqsam evaluate "$(miqsam fetch-real-ct)"`
    return 0
