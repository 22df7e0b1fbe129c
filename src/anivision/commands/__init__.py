"""CLI sub-commands of the features; each module has ``register(subparsers)``."""

from __future__ import annotations

import argparse


def print_help_when_bare(parser: argparse.ArgumentParser) -> None:
    """Make a command group given no sub-command (``anivision data``) print its help and exit 2,
    instead of failing with a bare usage line."""

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=show_help)
