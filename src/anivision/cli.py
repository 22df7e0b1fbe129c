"""The ``anivision`` command line: the parser and the dispatch, nothing else.

Each ``anivision.commands`` module adds its sub-commands with ``register(subparsers)``; a handler
turns flags into typed arguments and calls the same library functions as the Python API. Errors
the user caused print one line and exit with status 2; ``--debug`` (anywhere on the command
line) shows the traceback instead.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Sequence

from anivision.commands import Parser, bench, classify, data, demo, embed, explain, export, faces, fewshot, retrieval, serve, synth
from anivision.errors import INTERRUPTED, INTERRUPTED_RESUMABLE, AnivisionError, end_of_startup
from anivision.files import os_error_line
from anivision.version import __version__

log = logging.getLogger("anivision")

#: Commands that continue from their last finished epoch when rerun (what Ctrl-C tells the user).
RESUMABLE = ("train", "fewshot train", "retrieval train", "bench")

#: Command modules in the order their sub-commands are listed.
COMMAND_MODULES = (classify, demo, synth, data, faces, bench, fewshot, retrieval, embed, serve, explain, export)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="anivision",
        description="Recognise what is in anime and manga character images.",
        epilog="-q and --debug (tracebacks instead of one-line errors) work anywhere on the line. "
        "'anivision COMMAND --help' lists a command's options and their defaults.",
    )
    parser.add_argument("--version", action="version", version=f"anivision {__version__}")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bars or per-epoch lines, in every command (anywhere on the line)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for module in COMMAND_MODULES:
        module.register(sub)
    return parser


def _setup_logging(quiet: bool) -> None:
    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    for noisy in ("timm", "PIL", "matplotlib", "urllib3", "httpx", "huggingface_hub"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _command(argv: list[str]) -> str:
    """The command words of ``argv`` (``train``, ``fewshot train``), for the Ctrl-C message."""
    words = [a for a in argv if not a.startswith("-")][:2]
    return " ".join(words) if " ".join(words) in RESUMABLE else (words[0] if words else "")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``anivision`` console script; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    # --debug and --quiet work anywhere on the line, before or after the sub-command.
    debug = "--debug" in argv
    quiet = "--quiet" in argv or "-q" in argv
    argv = [a for a in argv if a not in ("--debug", "--quiet", "-q")]
    end_of_startup()  # from here on Ctrl-C is a KeyboardInterrupt that the handler below reports
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        args.quiet = quiet or bool(getattr(args, "quiet", False))  # also set by the deprecated --no-progress
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        _setup_logging(args.quiet)
        return int(args.func(args) or 0)
    except AnivisionError as exc:
        if debug:
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(INTERRUPTED_RESUMABLE if _command(argv) in RESUMABLE else INTERRUPTED, file=sys.stderr)
        return 130
    except OSError as exc:  # a full disk, a read-only or forbidden place: one line naming the path
        line = os_error_line(exc)
        if debug or line is None:
            return _unexpected(exc, debug)
        print(f"error: {line}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: one line, not a traceback
        return _unexpected(exc, debug)


def _unexpected(exc: Exception, debug: bool) -> int:
    """A bug or an unforeseen failure: one line (the traceback with ``--debug``), exit 1."""
    if debug:
        raise exc
    first = (str(exc).strip().splitlines() or [""])[0]
    print(f"error: {type(exc).__name__}: {first} (rerun with --debug for the traceback)", file=sys.stderr)
    return 1


if __name__ == "__main__":
    sys.exit(main())
