"""commands"""

from __future__ import annotations

import argparse


def add_model_spacing_argument(parser: argparse.ArgumentParser) -> None:
    """``--model-spacing MM [MM MM]``, shared by the commands that build a Predictor."""
    parser.add_argument("--model-spacing", type=float, nargs="+", default=None, metavar="MM",
                        help="model-grid spacing in mm, one number or Z Y X (default: the weights' inference spacing)")


def add_precision_argument(parser: argparse.ArgumentParser) -> None:
    """``--precision``, shared by the commands that build a Predictor (inference/precision.py)."""
    parser.add_argument("--precision", default="auto", choices=["auto", "float32", "bfloat16"],
                        help="the encoder's number format (default auto: bfloat16 on a CPU that computes it "
                        "natively, about twice as fast there and within noise of float32; else float32)")


def add_predict_options(parser: argparse.ArgumentParser, *, kind_gate: bool = True, refine: bool = True) -> None:
    """The flags of ``inference.options.PredictOptions`` (read back by ``PredictOptions.from_cli``):
    ``--kind-gate``, ``--rescue``, ``--no-refine`` (a command passes False for one it has not) and ``--no-grow``;
    and the removed ``--kind-scoring``, kept as a clear error."""
    from ..inference.options import CONTRAST_RATIO, KIND_GATE, RESCUE

    if kind_gate:
        parser.add_argument("--kind-gate", type=float, default=None, metavar="G",
                            help=f"kind gate, only the clicked kind (the widget's check box): drop instances whose lesion-kind "
                            f"agreement with the clicked one is below G, in [0, 1] (default {KIND_GATE:g}; 0: keep every kind)")
        parser.add_argument("--rescue", type=float, default=None, metavar="R",
                            help=f"keep an instance the kind gate would drop when its contrast to its surroundings has the "
                            f"clicked lesion's sign and lies within a factor R of it, e.g. {CONTRAST_RATIO:g} (default {RESCUE:g}: never; "
                            f"it helps where the kind head splits one kind of lesion in two, docs/experiments.md)")
    if refine:
        parser.add_argument("--no-refine", action="store_true",
                            help="upsample the stride-2 masks instead of redrawing them with the weights' mask refiner "
                            "(small masks are still grown to edges unless --no-grow)")
    parser.add_argument("--no-grow", action="store_true",
                        help="do not grow small masks to edges (the image's half-contrast edge around each small "
                        "instance); keep them as the network draws them")
    parser.add_argument("--kind-scoring", nargs="?", action=RemovedFlag, help=argparse.SUPPRESS)


class RemovedFlag(argparse.Action):
    """A flag that is gone: using it is a usage error that says why (``inference.options.REMOVED``)."""

    def __call__(self, parser, namespace, values, option_string=None):
        from ..inference.options import REMOVED

        parser.error(f"{option_string} was removed: {REMOVED[self.dest]}")
