"""Running a benchmark grid: every cell in turn, resumable, with the time left after each."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from anivision.engine.distributed import init_distributed
from anivision.engine.run import RunFolder, check_same_config
from anivision.errors import AnivisionError
from anivision.reports.bench import write_failures, write_results_csv
from anivision.tasks.bench.grid import _check_grid, _one_line, cell_config, cell_name, default_weights, metrics_row, prepare_bench_split
from anivision.tasks.classify import TrainConfig, train_classifier

log = logging.getLogger(__name__)


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


@dataclass
class Cell:
    """One backbone x strategy x seed cell and its resolved training config."""

    backbone: str
    strategy: str
    seed: int
    weights: str
    cfg: TrainConfig

    @property
    def label(self) -> str:
        return f"{self.backbone} / {self.strategy} / seed {self.seed}"


def plan_cells(
    out: Path, data: str | None, split_csv: Path, backbones: Sequence[str], strategies: Sequence[str], seeds: Sequence[int],
    base: Mapping[str, Any], common_weights: str | None, weights_map: Mapping[str, str],
) -> list[Cell]:
    """Every cell's config, seed by seed, built (and checked against its folder) before anything trains:
    a bad option fails the command at once instead of producing a grid of identical failures."""
    cells = []
    for seed in seeds:
        for backbone in backbones:
            weights = weights_map.get(backbone) or common_weights or default_weights(backbone)
            for strategy in strategies:
                cfg = cell_config(
                    base, data=data, split=str(split_csv), backbone=backbone, strategy=strategy, seed=seed,
                    weights=weights, out=str(out / "runs" / cell_name(backbone, strategy, seed)),
                )
                # The same rule train_classifier applies, up front for the whole grid (a changed --epochs
                # on a rerun would otherwise fail every cell in turn); an unreadable config fails its cell alone.
                check_same_config(Path(cfg.out) / "config.json", cfg, unreadable_ok=True)
                cells.append(Cell(backbone, strategy, seed, weights, cfg))
    return cells


def run_cell(cell: Cell, progress: bool) -> dict[str, Any]:
    """Train (or reuse) one cell; a failure becomes a row with ``status == "failed"``, never an exception."""
    run_dir = Path(cell.cfg.out)
    row: dict[str, Any] = {"backbone": cell.backbone, "strategy": cell.strategy, "seed": cell.seed, "weights": cell.weights,
                           "status": "ok", "error": "", "reused": (run_dir / "metrics.json").exists(), "run_dir": str(run_dir)}
    t0 = time.perf_counter()
    try:
        metrics = train_classifier(cell.cfg, progress=progress)
    except Exception as exc:  # noqa: BLE001 - one cell's failure must not stop the grid
        row.update(status="failed", error=_one_line(exc))
        log.debug("cell %s failed", run_dir, exc_info=True)
    else:
        row.update(metrics_row(metrics))
    row["cell_seconds"] = round(time.perf_counter() - t0, 3)
    return row


def _cell_line(i: int, n: int, cell: Cell, row: Mapping[str, Any], left: float | None) -> str:
    eta = f"; about {format_duration(left)} left" if left else ""
    if row["status"] == "ok":
        how = "reused" if row["reused"] else f"{row['cell_seconds']:.1f}s"
        return f"[{i}/{n}] {cell.label}: accuracy {100 * row['accuracy']:.2f}% ({how}{eta})"
    return f"[{i}/{n}] {cell.label}: FAILED: {row['error']}{eta}"


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
    the grid is stopped. Under torchrun every process runs every cell (each cell is one DDP
    job); rank 0 alone makes the split and writes the grid's files.

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
        One row per cell (see ``ID_COLUMNS`` and ``METRIC_COLUMNS`` in :mod:`anivision.reports.bench`);
        a failed cell has ``status == "failed"``, its one-line ``error`` and no metrics. Under
        torchrun only rank 0's rows hold metrics.

    Raises:
        AnivisionError: a bad grid, bad train options or no usable split (nothing is trained).
    """
    backbones, strategies, seeds = _check_grid(backbones, strategies, seeds)
    base = dict(base_args or {})
    common_weights = base.pop("weights", None)
    weights_map = dict(weights_map or {})
    stray = [b for b in weights_map if b not in backbones]
    if stray:
        raise AnivisionError(f"--weights-map names '{stray[0]}', which is not one of the backbones")
    out = Path(out)
    grid = RunFolder(out, None, init_distributed(), metrics_log=None)
    progress = progress and grid.is_main
    data_s = str(data) if data else None
    split_csv = grid.main_first(lambda: prepare_bench_split(out, data_s, str(split) if split else None, base.get("ratios"), seeds[0]))
    cells = plan_cells(out, data_s, split_csv, backbones, strategies, seeds, base, common_weights, weights_map)
    grid.write_json("bench_args.json", {
        "data": data_s, "split": str(split_csv), "backbones": backbones, "strategies": strategies, "seeds": seeds,
        "base_args": {k: v for k, v in base.items() if v is not None}, "weights": common_weights, "weights_map": weights_map,
    })
    rows: list[dict[str, Any]] = []
    for i, cell in enumerate(cells, start=1):
        if progress:
            print(f"[{i}/{len(cells)}] {cell.label} ...", flush=True)
        rows.append(run_cell(cell, progress))
        if progress:
            left = estimate_seconds_left(rows, [(c.backbone, c.strategy) for c in cells[i:]])
            print(_cell_line(i, len(cells), cell, rows[-1], left), flush=True)
        if grid.is_main:
            write_results_csv(out / "results.csv", rows)
            write_failures(out / "failures.json", rows)
    return rows
