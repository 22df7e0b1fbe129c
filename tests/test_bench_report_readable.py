"""The benchmark's markdown and figures read without a legend: one number per table cell, units in
the headers, and with one seed the value plus a sentence that there is no spread or interval.

The rows are built here (no training): each cell gets the few files the report reads from its
run folder (``metrics.json`` with per-class F1, ``test_labels.npy``, ``test_logits.npy``).
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pytest

from anivision.metrics.stats import mean_ci
from anivision.reports import bench as bench_report
from anivision.reports.bench import write_bench_report

BACKBONES = ("resnet18", "vit_small")
STRATEGIES = (("linear_probe", 0.5, 0.45), ("partial", 0.75, 0.7), ("full", 0.8333, 0.81))
F1 = {s: f1 for s, _, f1 in STRATEGIES}
LABELS = np.array([0, 0, 1, 1, 2, 2, 0, 1, 2, 0, 1, 2])
ONE_SEED = "One seed per cell: no spread or interval"
#: Columns that hold names or free text rather than numbers.
NAME_COLUMNS = {"backbone", "strategy", "class", "A", "B", "error"}
NUMBER = re.compile(r"^(\*\*)?[+-]?\d+(\.\d+)?(\*\*)?$")


def _rows(root: Path, seeds: tuple[int, ...], failed: tuple[tuple[str, str, int], ...] = ()) -> list[dict]:
    """Every backbone x strategy x seed; the accuracy moves a little with the seed; ``failed``
    lists (backbone, strategy, seed) cells that failed."""
    rows = []
    for b in BACKBONES:
        for strategy, acc, f1 in STRATEGIES:
            for seed in seeds:
                d = root / f"{b}__{strategy}__s{seed}"
                if (b, strategy, seed) in failed:
                    rows.append({"backbone": b, "strategy": strategy, "seed": seed, "weights": "none", "status": "failed",
                                 "run_dir": str(d), "error": "RuntimeError: out of memory"})
                    continue
                d.mkdir(parents=True)
                n_right = round(acc * LABELS.size) - seed % 2
                preds = np.where(np.arange(LABELS.size) < n_right, LABELS, (LABELS + 1) % 3)
                np.save(d / "test_labels.npy", LABELS)
                np.save(d / "test_logits.npy", np.eye(3)[preds])
                per_class = {"cat": {"f1": f1}, "dog": {"f1": f1 - 0.05}}
                (d / "metrics.json").write_text(json.dumps({"accuracy": n_right / LABELS.size, "per_class": per_class}))
                rows.append({
                    "backbone": b, "strategy": strategy, "seed": seed, "weights": "none", "status": "ok", "run_dir": str(d),
                    "accuracy": n_right / LABELS.size, "f1_macro": f1, "nll": 2.0912, "epochs_run": 1,
                    "avg_epoch_seconds": 0.0123, "trainable_percent": 100.0, "params_total": 11.7e6,
                    "train_images_per_second": 812.0, "inference_images_per_second": 2400.0, "latency_ms": 1.52,
                })
    return rows


def _tables(text: str) -> list[tuple[list[str], list[list[str]]]]:
    """(header, body rows) of every markdown table in ``text``."""
    tables, lines, i = [], text.splitlines(), 0
    while i < len(lines):
        if lines[i].startswith("|") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = [c.strip() for c in lines[i].strip().strip("|").split("|")]
            body, i = [], i + 2
            while i < len(lines) and lines[i].startswith("|"):
                body.append([c.strip() for c in lines[i].strip().strip("|").split("|")])
                i += 1
            tables.append((header, body))
        else:
            i += 1
    return tables


def _column(table: tuple[list[str], list[list[str]]], name: str) -> list[str]:
    header, body = table
    return [r[header.index(name)] for r in body]


@pytest.fixture
def capture_plots(monkeypatch: pytest.MonkeyPatch) -> dict:
    """The arguments ``write_bench_report`` passes to the two plot functions (the plots still get drawn)."""
    calls: dict = {}
    for name in ("plot_bars_with_errors", "plot_heatmap"):
        original = getattr(bench_report, name)

        def spy(*args, _name=name, _original=original, **kwargs):
            calls[_name] = (args, kwargs)
            return _original(*args, **kwargs)

        monkeypatch.setattr(bench_report, name, spy)
    return calls


@pytest.fixture
def one_seed(tmp_path: Path, capture_plots: dict) -> dict:
    rows = _rows(tmp_path / "runs", (42,))
    out = tmp_path / "one"
    write_bench_report(out, rows)
    return {"out": out, "rows": rows, "plots": dict(capture_plots)}


@pytest.fixture
def three_seeds(tmp_path: Path, capture_plots: dict) -> dict:
    rows = _rows(tmp_path / "runs", (42, 43, 44))
    out = tmp_path / "three"
    write_bench_report(out, rows)
    return {"out": out, "rows": rows, "plots": dict(capture_plots)}


MARKDOWN = ("table.md", "bench.md", "per_class_f1.md", "paired.md")


@pytest.mark.parametrize("grid", ["one_seed", "three_seeds"])
def test_every_cell_holds_one_number_or_a_name(grid, request):
    out = request.getfixturevalue(grid)["out"]
    for name in MARKDOWN:
        tables = _tables((out / name).read_text())
        assert tables, name
        for header, body in tables:
            for h in header:  # one header per quantity: no legend in brackets after a list
                assert not re.search(r"\(.*,.*\)", h), (name, h)
            for row in body:
                assert len(row) == len(header), (name, row)
                for h, cell in zip(header, row):
                    assert "n=" not in cell and "±" not in cell, (name, h, cell)
                    assert not re.search(r"[(\[].*,.*[)\]]", cell), (name, h, cell)  # no tuples or [low, high]
                    if h not in NAME_COLUMNS:
                        assert cell == "—" or NUMBER.match(cell), (name, h, cell)


def test_headers_carry_units(three_seeds):
    out = three_seeds["out"]
    main, ci, cost = _tables((out / "table.md").read_text())
    assert main[0] == ["backbone", "strategy", "accuracy (%)", "± std (pp)", "macro F1 (%)", "test loss", "epochs",
                       "s/epoch", "seeds"]
    assert ci[0] == ["backbone", "strategy", "accuracy (%)", "95% CI low (%)", "95% CI high (%)", "± half width (pp)", "seeds"]
    assert cost[0][2:] == ["params (M)", "trainable (%)", "train (img/s)", "inference (img/s)", "latency (ms)", "s/epoch"]
    assert _tables((out / "bench.md").read_text())[0][0] == main[0]
    f1 = _tables((out / "per_class_f1.md").read_text())[0]
    assert f1[0] == ["class", "linear_probe F1 (%)", "full F1 (%)", "Δ (pp)"]
    pooled, seed_matched = _tables((out / "paired.md").read_text())[:2]
    assert pooled[0] == ["A", "B", "seeds", "accuracy A (%)", "accuracy B (%)", "Δ (pp)", "95% CI low (pp)",
                         "95% CI high (pp)", "p"]
    assert seed_matched[0] == ["A", "B", "seed", "Δ (pp)", "95% CI low (pp)", "95% CI high (pp)", "p"]
    assert _column(seed_matched, "seed")[:3] == ["42", "43", "44"]


def test_one_seed_shows_the_value_and_says_there_is_no_interval(one_seed):
    out = one_seed["out"]
    table = (out / "table.md").read_text()
    main = _tables(table)[0]
    assert _column(main, "accuracy (%)")[:3] == ["50.00", "75.00", "**83.33**"]
    assert set(_column(main, "± std (pp)")) == {"—"} and set(_column(main, "seeds")) == {"1"}
    assert f"{ONE_SEED} (— for ± std); add --seeds 42,43,44." in table
    assert "No interval: every cell has one seed; add --seeds 42,43,44." in table
    assert len(_tables(table)) == 2  # main and cost: no confidence-interval table full of dashes
    bench_md = (out / "bench.md").read_text()
    assert ONE_SEED in bench_md and "83.33% test accuracy (one seed)" in bench_md
    assert "One seed per cell: F1 of a single run" in (out / "per_class_f1.md").read_text()
    paired = (out / "paired.md").read_text()
    assert "One common seed per comparison" in paired and "add --seeds 42,43,44" in paired
    assert len(_tables(paired)) == 2  # pooled tables only: the seed-matched one would repeat them

    args, kwargs = one_seed["plots"]["plot_bars_with_errors"]
    assert kwargs["title"] == "test accuracy per cell (one seed, no interval)"
    assert all(math.isnan(e) for e in args[2])  # no error bars
    assert "one seed" in one_seed["plots"]["plot_heatmap"][1]["title"]


def test_three_seeds_show_spread_and_interval_without_the_one_seed_sentence(three_seeds):
    out = three_seeds["out"]
    for name in MARKDOWN:
        text = (out / name).read_text()
        assert "One seed per cell" not in text and "One common seed" not in text and "--seeds" not in text, name
    main, ci, _ = _tables((out / "table.md").read_text())
    assert set(_column(main, "seeds")) == {"3"}
    assert all(NUMBER.match(v) for v in _column(main, "± std (pp)") + _column(ci, "95% CI low (%)"))
    args, kwargs = three_seeds["plots"]["plot_bars_with_errors"]
    assert kwargs["title"] == "test accuracy per cell (mean ± 95% CI over 3 seeds)"
    assert all(e > 0 for e in args[2])
    assert "mean over 3 seeds" in three_seeds["plots"]["plot_heatmap"][1]["title"]


def test_tables_match_bench_json(three_seeds):
    """bench.json keeps its meaning (accuracy in percent, sample std, t half width, NaN as null);
    the tables show the same numbers rounded."""
    out, rows = three_seeds["out"], three_seeds["rows"]
    summary = json.loads((out / "bench.json").read_text())
    cells = {(c["backbone"], c["strategy"]): c for c in summary["cells"]}
    main, ci, _ = _tables((out / "table.md").read_text())
    for i, (b, s) in enumerate(zip(_column(main, "backbone"), _column(main, "strategy"))):
        accs = np.array([100 * r["accuracy"] for r in rows if r["backbone"] == b and r["strategy"] == s])
        mean, half = mean_ci(accs, 0.95, method="t")
        c = cells[(b, s)]
        assert c["n"] == 3 and c["acc_mean"] == pytest.approx(mean) and c["acc_ci"] == pytest.approx(half)
        assert c["acc_std"] == pytest.approx(accs.std(ddof=1)) and c["f1_mean"] == pytest.approx(F1[s])  # a fraction
        assert main[1][i][2].strip("*") == f"{c['acc_mean']:.2f}" and main[1][i][3] == f"{c['acc_std']:.2f}"
        assert ci[1][i][3] == f"{c['acc_mean'] - c['acc_ci']:.2f}" and ci[1][i][5] == f"{c['acc_ci']:.2f}"
        assert main[1][i][4] == f"{100 * c['f1_mean']:.2f}"


def test_one_seed_json_keeps_null_spread(one_seed):
    summary = json.loads((one_seed["out"] / "bench.json").read_text())
    assert all(c["n"] == 1 and c["acc_std"] is None and c["acc_ci"] is None for c in summary["cells"])
    assert summary["best_cell"]["acc_mean"] == pytest.approx(100 * 10 / 12)


def test_mixed_grid_names_the_one_seed_cells_and_the_failures(tmp_path, capture_plots):
    failed = (("vit_small", "partial", 43), ("vit_small", "partial", 44))
    out = tmp_path / "mixed"
    write_bench_report(out, _rows(tmp_path / "runs", (42, 43, 44), failed))
    table = (out / "table.md").read_text()
    main, ci, _ = _tables(table)
    assert main[0][-2:] == ["seeds", "failed"]
    row = main[1][_column(main, "strategy").index("partial", 3)]
    assert row[:2] == ["vit_small", "partial"] and row[3] == "—" and row[-2:] == ["1", "2"]
    assert "One finished seed in vit_small / partial: no spread or interval (— for ± std); rerun the same command" in table
    assert "One finished seed in vit_small / partial: no interval (—)" in table
    assert "One seed per cell" not in table
    assert capture_plots["plot_bars_with_errors"][1]["title"] == (
        "test accuracy per cell (mean ± 95% CI over seeds; cells with one seed: no interval)")
