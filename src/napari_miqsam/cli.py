"""The ``miqsam`` command line.

Each subcommand lives in ``napari_miqsam.commands.<name>`` and exposes ``HELP`` (one line),
``add_arguments(parser)`` and ``run(args) -> int``; a command spelt with hyphens
(``fetch-real-ct``) lives in the module with underscores (``fetch_real_ct``). Project errors are printed as one sentence
and exit with status 2; nothing here imports napari.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from .errors import MiqsamError

COMMANDS = ("predict", "phantom", "evaluate", "compare", "train", "collect", "adapt", "benchmark", "fetch-real-ct")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="miqsam",
        description="MIQ-SAM3D: one point prompt -> every lesion of that kind in a 3D volume.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            module = importlib.import_module(f"napari_miqsam.commands.{name.replace('-', '_')}")
        except ModuleNotFoundError as exc:  # a command whose module is not written yet
            if exc.name and exc.name.startswith("napari_miqsam.commands"):
                continue
            raise
        p = sub.add_parser(name, help=module.HELP, description=module.HELP)
        module.add_arguments(p)
        p.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 0
    try:
        return int(args._run(args) or 0)
    except MiqsamError as exc:
        print(f"miqsam {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"miqsam {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
