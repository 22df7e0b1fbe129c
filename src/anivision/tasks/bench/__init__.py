"""The benchmark matrix: backbones x fine-tuning strategies x seeds on one frozen split.

``run_bench`` trains one classifier per cell with :func:`anivision.tasks.classify.train_classifier`
into ``BENCH_DIR/runs/<backbone>__<strategy>__s<seed>/`` and returns one flat row per cell;
``anivision.reports.bench.write_bench_report`` turns the rows into the Table-1 style report.

Every cell shares one split (``--split`` or ``BENCH_DIR/split.csv``, made once with the first
seed), so every cell is scored on the same test images and cells can be compared pairwise. The
grid is resumable: a finished cell's run folder returns its stored metrics, an interrupted one
resumes from its checkpoint, and a failed cell is recorded and retried on the next run.
"""


from anivision.tasks.bench.grid import cell_config, cell_name, default_weights, metrics_row, prepare_bench_split
from anivision.tasks.bench.run import Cell, estimate_seconds_left, format_duration, plan_cells, run_bench, run_cell

__all__ = [
    "Cell", "cell_config", "cell_name", "default_weights", "estimate_seconds_left", "format_duration", "metrics_row",
    "plan_cells", "prepare_bench_split", "run_bench", "run_cell",
]
