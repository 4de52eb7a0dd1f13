"""The ``varprinciple`` command: a thin shell over the Python API.

Each sub-command lives in ``varprinciple/commands/<name>.py`` and exposes
``register(subparsers)``, which adds its parser and sets ``func`` to a handler
``handler(args) -> int``. Heavy imports (torch, matplotlib) happen inside handlers.
The package's own errors are printed as one line and exit with code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys

from ._version import __version__
from .errors import LogValidationError, VarPrincipleError

__all__ = ["main", "build_parser"]

COMMANDS = ("test", "simulate", "power", "collect", "report", "study")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="varprinciple",
        description="Is training noise curvature-aligned? Collect noise logs, test, report.")
    p.add_argument("--version", action="version", version=f"varprinciple {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    p.add_argument("-q", "--quiet", action="store_true", help="log warnings and errors only")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        try:
            mod = importlib.import_module(f".commands.{name}", __package__)
        except ModuleNotFoundError as exc:
            if exc.name == f"{__package__}.commands.{name}":
                continue  # command not built yet
            raise
        mod.register(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except LogValidationError as exc:
        lines = exc.lines()
        print(f"varprinciple: error: {len(lines)} problem{'s' if len(lines) != 1 else ''} in the log set "
              "(use --skip-invalid to analyse the valid runs):", file=sys.stderr)
        for line in lines:
            print(f"  {line}", file=sys.stderr)
        return 2
    except VarPrincipleError as exc:
        print(f"varprinciple: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("varprinciple: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
