"""The ``featurepipe`` command line.

Sub-commands live in their own modules. :data:`COMMANDS` (a
:class:`~featurepipe.registry.Registry`) maps each command name to the
module that adds it: the module exposes ``register(subparsers)``, which
adds its parser(s) with ``subparsers.add_parser(...)`` and sets ``func``
(via ``set_defaults``) to a callable ``func(args) -> int`` returning the
exit status. One module may add several commands; it is imported once.
Adding a command is ``COMMANDS.register(name, "package.module")``;
modules are imported only when the parser is built, so keep their
top-level imports light (import heavy libraries inside ``func``).

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
from .registry import Registry

__all__ = ["COMMANDS", "main", "build_parser"]

#: Command name -> module path whose ``register(subparsers)`` adds that command (in help order).
COMMANDS = Registry("command")
for _name, _module in [("data", "featurepipe.cli_data"), ("recipes", "featurepipe.cli_run"),
                       ("benchmark", "featurepipe.cli_run"), ("fit", "featurepipe.cli_run"),
                       ("predict", "featurepipe.cli_run"), ("serve", "featurepipe.cli_run")]:
    COMMANDS.register(_name, _module, built_in=True)
del _name, _module


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
    for module in dict.fromkeys(module for _, module in COMMANDS.items()):  # each module once, in order
        importlib.import_module(module).register(subparsers)
    missing = [name for name in COMMANDS if name not in subparsers.choices]
    if missing:
        raise RuntimeError(f"command {missing[0]!r} is registered in featurepipe.cli.COMMANDS but its module "
                           f"{COMMANDS[missing[0]]!r} did not add it in register(subparsers)")
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
