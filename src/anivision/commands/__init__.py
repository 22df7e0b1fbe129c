"""CLI sub-commands of the features; each module has ``register(subparsers)``.

This module holds what every command shares: the parser class (defaults shown in ``--help``,
hidden deprecated spellings), one wording for the options several commands have
(:func:`add_shared`), and :func:`deprecated` for an old spelling kept for one release.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from typing import Any, Sequence


def print_help_when_bare(parser: argparse.ArgumentParser) -> None:
    """Make a command group given no sub-command (``anivision data``) print its help and exit 2,
    instead of failing with a bare usage line."""

    def show_help(args: argparse.Namespace) -> int:
        parser.print_help()
        return 2

    parser.set_defaults(func=show_help)


# ------------------------------------------------------------------------------ help texts


class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Appends ``(default: X)`` to an option's help unless the help already says its default,
    the default is None (then the help says it in words) or the option is an off-by-default switch;
    a command's usage line starts with its positional arguments and required options."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if isinstance(action, argparse.BooleanOptionalAction) and "default" not in text:
            return f"{text} (default: {action.option_strings[0 if action.default else 1]})"
        if "default" in text or action.default is None or action.default is False or action.default is argparse.SUPPRESS:
            return text
        if not action.option_strings and action.nargs not in (argparse.OPTIONAL, argparse.ZERO_OR_MORE):
            return text
        return f"{text} (default: %(default)s)"

    def _format_usage(self, usage: Any, actions: Any, groups: Any, prefix: Any) -> str:
        # (argparse also formats the usage of a parent's positionals alone, to name its sub-parsers: left as is)
        if usage is None and any(a.option_strings for a in actions) and not any(isinstance(a, argparse._SubParsersAction) for a in actions):
            first = [a for a in actions if not a.option_strings] + [a for a in actions if a.option_strings and a.required]
            try:
                usage = " ".join(t for t in ("%(prog)s", self._format_actions_usage(first, []), "[options]") if t)
            except AttributeError:  # a Python whose argparse lacks this helper: argparse's own usage line
                usage = None
        return super()._format_usage(usage, actions, groups, prefix)


#: One wording per option that several commands have; ``add_shared`` may add what it means there.
SHARED_HELP = {
    "--out": "where to write",
    "--seed": "random seed",
    "--epochs": "training epochs",
    "--batch-size": "images per batch",
    "--img-size": "input side in pixels",
    "--top-k": "how many best matches to list per image",
    "--distance": "distance between embeddings",
    "--amp": "mixed precision (float16 autocast) on CUDA; ignored on a CPU",
    "--workers": "worker processes that read and decode images",
    "--device": "where to compute: cpu, cuda, cuda:1, ...",
    "--cache-dir": "folder of the decoded-image and feature caches",
    "--engine": "inference engine: torch, or onnx (the model exported to ONNX once, cached in the run folder's onnx/, "
                "and run with ONNX Runtime; needs anivision[export])",
    "--index": "gallery search index: exact (numpy, argpartition top-k), faiss (exact, faiss-cpu flat) or ivfpq "
               "(approximate, for ~1M+ images; re-ranked exactly); faiss and ivfpq need anivision[index]",
}
_SHARED_KWARGS: dict[str, dict[str, Any]] = {
    "--seed": {"type": int}, "--epochs": {"type": int}, "--batch-size": {"type": int}, "--img-size": {"type": int},
    "--top-k": {"type": int}, "--workers": {"type": int}, "--distance": {"choices": ("cosine", "euclidean")},
    "--amp": {"action": argparse.BooleanOptionalAction}, "--engine": {"choices": ("torch", "onnx")},
    "--index": {"choices": ("exact", "faiss", "ivfpq")},
}
_SHARED_DEFAULT_TEXT = {"--device": "cuda if available, else cpu", "--cache-dir": "$ANIVISION_CACHE or ~/.cache/anivision"}


def add_shared(
    parser: argparse.ArgumentParser, flag: str, what: str = "", *, default: Any = None, default_text: str = "", **kwargs: Any
) -> argparse.Action:
    """Add a shared option with its one wording (:data:`SHARED_HELP`), followed by ``what``.

    Args:
        parser: the (sub-)command's parser.
        flag: one of :data:`SHARED_HELP`'s options.
        what: the rest of the sentence for this command (``"the run folder"`` after "where to write").
        default: the argparse default; the help shows it.
        default_text: the default in words when ``default`` is None (``"the run's, else 128"``).
        **kwargs: more ``add_argument`` arguments (``required=True``, ``metavar``).
    """
    text = " ".join(t for t in (SHARED_HELP[flag], what) if t)
    words = default_text or (_SHARED_DEFAULT_TEXT.get(flag, "") if default is None else "")
    if words:
        text += f" (default: {words})"
    return parser.add_argument(flag, default=default, help=text, **{**_SHARED_KWARGS.get(flag, {}), **kwargs})


# ------------------------------------------------------------------------------ deprecated spellings


@dataclass(frozen=True)
class _Deprecated:
    old: str
    new: str
    position: int | None = None
    sets: tuple[str, Any] | None = None
    fallback: str | None = None


def deprecated(
    parser: argparse.ArgumentParser,
    old: str,
    new: str,
    *,
    position: int | None = None,
    sets: tuple[str, Any] | None = None,
    fallback: str | None = None,
) -> None:
    """Accept ``old``, a spelling kept for one release: hidden from ``--help``, it prints
    ``note: OLD is deprecated; use NEW`` to stderr and then acts exactly as ``new``.

    Args:
        parser: a :class:`Parser` (the CLI's sub-parsers are).
        old: the old option, e.g. ``--metric``; ``old VALUE`` and ``old=VALUE`` both work.
        new: the option that replaces it (``--distance``), or with ``position`` the name of the
            positional argument whose value it gives (``SOURCE``).
        position: ``old VALUE`` fills the positional argument at this index (0-based).
        sets: ``old`` is a switch that sets ``(dest, value)`` instead (``--no-progress`` -> quiet).
        fallback: with ``position``: the value of that positional when a command line in the
            old spelling leaves it out (the old option's default).
    """
    d = _Deprecated(old, new, position, sets, fallback)
    if isinstance(parser, Parser):
        parser.deprecated.append(d)
    # Also a hidden option, for a plain ArgumentParser (a Parser rewrites OLD before argparse sees it).
    if sets is not None:
        parser.add_argument(old, action=_DeprecatedOption, nargs=0, dest=sets[0], const=sets[1], default=argparse.SUPPRESS,
                            help=argparse.SUPPRESS, deprecated=d)
        return
    if position is not None:
        dest = [a for a in parser._actions if not a.option_strings][position].dest
    else:
        dest = parser._option_string_actions[new].dest
    parser.add_argument(old, action=_DeprecatedOption, dest=dest, default=argparse.SUPPRESS, help=argparse.SUPPRESS, deprecated=d)


class _DeprecatedOption(argparse.Action):
    """The hidden option of :func:`deprecated`: one note, then the new option's value."""

    def __init__(self, *args: Any, deprecated: _Deprecated, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.deprecated = deprecated

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any, option_string: str | None = None) -> None:
        _note(self.deprecated)
        setattr(namespace, self.dest, self.const if self.nargs == 0 else values)


def _note(d: _Deprecated) -> None:
    print(f"note: {d.old} is deprecated; use {d.new}", file=sys.stderr)


class Parser(argparse.ArgumentParser):
    """The CLI's parser: defaults shown in every ``--help`` (:class:`HelpFormatter`) and old
    spellings registered with :func:`deprecated`. Sub-parsers of a :class:`Parser` are too."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", HelpFormatter)
        super().__init__(*args, **kwargs)
        self.deprecated: list[_Deprecated] = []

    def parse_known_args(self, args: Sequence[str] | None = None, namespace: argparse.Namespace | None = None) -> Any:
        if not self.deprecated:
            return super().parse_known_args(args, namespace)
        argv, sets = self._rewrite(list(sys.argv[1:] if args is None else args))
        ns, extras = super().parse_known_args(argv, namespace)
        for dest, value in sets:
            setattr(ns, dest, value)
        return ns, extras

    def _rewrite(self, args: list[str]) -> tuple[list[str], list[tuple[str, Any]]]:
        """Old spellings -> new ones (printing one note each); the switches they set."""
        by_old = {d.old: d for d in self.deprecated}
        out: list[str] = []
        filled: dict[int, str] = {}
        sets: list[tuple[str, Any]] = []
        i = 0
        while i < len(args):
            if args[i] == "--":  # the rest is positional
                out += args[i:]
                break
            name, eq, value = args[i].partition("=")
            d = by_old.get(name)
            if d is None:
                out.append(args[i])
                i += 1
                continue
            _note(d)
            i += 1
            if d.sets is not None:
                sets.append(d.sets)
                continue
            if not eq:
                if i >= len(args):
                    self.error(f"argument {d.old}: expected one argument")
                value, i = args[i], i + 1
            if d.position is None:
                out += [d.new, value]
            elif d.position in filled:
                self.error(f"{d.new} given twice")
            else:
                filled[d.position] = value
        return (self._place(out, filled) if filled else out), sets

    def _place(self, args: list[str], filled: dict[int, str]) -> list[str]:
        """Put the positional values given by old options where their positional arguments are."""
        given: list[str] = []
        options: list[str] = []
        i = 0
        while i < len(args):
            tok = args[i]
            if tok == "--":
                given += args[i + 1:]
                break
            i += 1
            if not tok.startswith("-") or len(tok) == 1 or tok[1:2].isdigit():
                given.append(tok)
                continue
            options.append(tok)
            action = self._option_string_actions.get(tok)
            nargs = 0 if action is None else (1 if action.nargs is None else action.nargs)
            if nargs == argparse.OPTIONAL:
                nargs = 1 if i < len(args) and not args[i].startswith("-") else 0
            elif nargs in (argparse.ZERO_OR_MORE, argparse.ONE_OR_MORE):
                nargs = next((j for j, t in enumerate(args[i:]) if t.startswith("-")), len(args) - i)
            options += args[i:i + int(nargs)]
            i += int(nargs)
        fallbacks = {d.position: d.fallback for d in self.deprecated if d.position is not None and d.fallback is not None}
        slots = [a for a in self._actions if not a.option_strings]
        rest = iter(given)
        placed: list[str] = []
        for pos, action in enumerate(slots):
            value = filled.get(pos) or next(rest, None) or fallbacks.get(pos)
            if value is None:
                if pos < max(filled):
                    self.error(f"the following arguments are required: {action.metavar or action.dest}")
                break
            placed.append(value)
        return placed + list(rest) + options
