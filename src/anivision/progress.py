"""Progress bars, one rule for every command: shown only when asked (no ``-q``) and only on a
terminal, never in redirected logs or pipes (tqdm's ``disable=None``)."""

from __future__ import annotations

from typing import Any, Iterable

from tqdm.auto import tqdm


def progress_bar(iterable: Iterable[Any] | None = None, progress: bool = True, **kwargs: Any) -> tqdm:
    """A tqdm bar over ``iterable`` (or a manual one with ``total=``) following the rule above."""
    return tqdm(iterable, disable=None if progress else True, **kwargs)
