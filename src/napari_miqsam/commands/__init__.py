"""commands"""

from __future__ import annotations

import argparse


def add_model_spacing_argument(parser: argparse.ArgumentParser) -> None:
    """``--model-spacing MM [MM MM]``, shared by the commands that build a Predictor."""
    parser.add_argument("--model-spacing", type=float, nargs="+", default=None, metavar="MM",
                        help="model-grid spacing in mm, one number or Z Y X (default: the weights' inference spacing)")
