"""The ``featurepipe`` command line.

Sub-commands live in their own modules, listed in :data:`_COMMAND_MODULES`.
Each module exposes ``register(subparsers)``, which adds its parser(s) with
``subparsers.add_parser(...)`` and sets ``func`` (via ``set_defaults``) to a
callable ``func(args) -> int`` returning the exit status. Adding a command
is adding its module name to the tuple; modules are imported when the
parser is built, so keep their top-level imports light (import heavy
libraries inside ``func``).

Exit status: 0 success, 1 the command ran and found problems (e.g. bad
files), 2 usage errors (argparse) and errors in the input (a message
names the file or option; ``--traceback`` shows the Python traceback),
130 interrupted (Ctrl-C: one line, plus how to resume when the command
set ``args.interrupt_hint``).

Start-up: this module and the command modules import only the standard
library at their top, and the packages import their names on first use, so
``featurepipe --help`` and ``featurepipe recipes`` load neither
scikit-learn nor TensorFlow, and a benchmark of handcrafted recipes never
imports TensorFlow. TensorFlow's C++ start-up notices (oneDNN, absl) are
kept off stderr unless ``--verbose`` (:func:`featurepipe._logging.quiet_tensorflow`).
"""

from __future__ import annotations

import argparse
import importlib
import sys

from ._logging import quiet_tensorflow
from ._version import __version__

__all__ = ["main", "build_parser"]

_COMMAND_MODULES = ("featurepipe.cli_data", "featurepipe.cli_run")


def build_parser():
    """The argument parser with every registered sub-command."""
    parser = argparse.ArgumentParser(
        prog="featurepipe",
        description="Classical medical-image classification pipelines: datasets, features, benchmarks.",
    )
    parser.add_argument("--version", action="version", version=f"featurepipe {__version__}")
    parser.add_argument("--traceback", action="store_true",
                        help="show the full Python traceback when a command fails")
    parser.add_argument("--verbose", action="store_true",
                        help="let TensorFlow print its start-up log lines (hidden by default)")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for name in _COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv=None):
    """Run the command line with ``argv`` (default: ``sys.argv[1:]``); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    quiet_tensorflow(verbose=args.verbose)
    func = getattr(args, "func", None)
    if func is None:
        # ``featurepipe`` or ``featurepipe data`` alone: show the relevant help.
        (getattr(args, "help_parser", None) or parser).print_help()
        return 2
    try:
        return int(func(args) or 0)
    except (ValueError, OSError) as exc:
        if args.traceback:
            raise
        print(f"featurepipe: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        if args.traceback:
            raise
        print("featurepipe: interrupted", file=sys.stderr)
        hint = getattr(args, "interrupt_hint", None)
        if hint:
            print(f"featurepipe: {hint}", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover - exercised through ``python -m featurepipe``
    sys.exit(main())
