"""``anivision bench``: the grid, its files, resuming, failed cells, and the report's numbers."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from anivision.cli import main
from anivision.errors import AnivisionError
from anivision.reports.bench import accuracy_gain_matrix, paired_comparison
from anivision.tasks.bench import cell_name, run_bench

from conftest import TINY_CNN, TINY_VIT, make_class_folders

STRATEGIES = ("linear_probe", "full")
SEEDS = (1, 2)
# The unknown backbone sits between the two real ones, so cells after a failure must still run.
BACKBONES = (TINY_CNN, "no_such_net", TINY_VIT)


def _bench_args(data: Path, out: Path, cache: Path, *extra: str) -> list[str]:
    return ["-q", "bench", "--data", str(data), "--backbones", ",".join(BACKBONES), "--strategies", ",".join(STRATEGIES),
            "--seeds", ",".join(map(str, SEEDS)), "--weights", "none", "--img-size", "32", "--epochs", "1",
            "--batch-size", "8", "--cache-dir", str(cache), "--out", str(out), *extra]


def _rows(out: Path) -> list[dict[str, str]]:
    with open(out / "results.csv", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture(scope="module")
def bench(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One real grid (2 backbones x 2 strategies x 2 seeds + a failing backbone), run once."""
    root = tmp_path_factory.mktemp("bench")
    data = make_class_folders(root / "data", n_classes=3, n_per_class=10, size=32)
    out, cache = root / "b", root / "cache"
    # Exit status 1: the grid finished but some cells failed.
    assert main(_bench_args(data, out, cache)) == 1
    return {"data": data, "out": out, "cache": cache}


def test_bench_writes_every_file_with_one_row_per_cell(bench):
    out = bench["out"]
    for f in ("results.csv", "failures.json", "table.md", "heatmap.png", "bars.png", "per_class_f1.md",
              "paired.md", "bench.md", "bench.json", "split.csv"):
        assert (out / f).is_file(), f
    rows = _rows(out)
    assert len(rows) == len(BACKBONES) * len(STRATEGIES) * len(SEEDS)
    assert {(r["backbone"], r["strategy"], int(r["seed"])) for r in rows} == {
        (b, s, seed) for b in BACKBONES for s in STRATEGIES for seed in SEEDS}
    for col in ("accuracy", "top3_accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "nll", "ece",
                "n_images", "n_skipped", "epochs_run", "best_epoch", "avg_epoch_seconds", "train_images_per_second",
                "inference_images_per_second", "latency_ms", "params_total", "trainable_percent", "status", "error"):
        assert col in rows[0], col
    for r in rows:
        if r["backbone"] == "no_such_net":
            continue
        run = out / "runs" / cell_name(r["backbone"], r["strategy"], int(r["seed"]))
        m = json.loads((run / "metrics.json").read_text())
        assert r["status"] == "ok" and float(r["accuracy"]) == pytest.approx(m["accuracy"])
        # Every cell is trained and tested on the bench's one split.
        assert json.loads((run / "config.json").read_text())["split"] == str(out / "split.csv")
        assert np.array_equal(np.load(run / "test_labels.npy"), np.load(out / "runs" / cell_name(TINY_CNN, "full", 1) / "test_labels.npy"))
    table = (out / "table.md").read_text()
    assert "| backbone | strategy | accuracy (%) | ± std (pp) |" in table and "95% confidence" in table
    assert f"| {TINY_VIT} | full |" in table and "| no_such_net | full | — |" in table  # one row per cell
    assert "One seed per cell" not in table  # two seeds finished in every cell that ran
    assert f"{TINY_VIT} / full" in (out / "paired.md").read_text()
    assert "class0" in (out / "per_class_f1.md").read_text()
    summary = json.loads((out / "bench.json").read_text())
    assert summary["n_cells"] == 12 and summary["n_failed"] == 4 and summary["peak_rss_mb"] > 0
    assert "heatmap.png" in (out / "bench.md").read_text()


def test_failed_cell_is_recorded_and_the_grid_goes_on(bench):
    rows = _rows(bench["out"])
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["backbone"] for r in failed} == {"no_such_net"} and len(failed) == 4
    assert all("no_such_net" in r["error"] and "\n" not in r["error"] and r["accuracy"] == "" for r in failed)
    failures = json.loads((bench["out"] / "failures.json").read_text())
    assert [f["error"] for f in failures] == [r["error"] for r in failed]
    # test_vit comes after the failing backbone in the grid and still ran, for both seeds.
    assert all(r["status"] == "ok" for r in rows if r["backbone"] == TINY_VIT)
    assert "no_such_net" in (bench["out"] / "bench.md").read_text()


def test_heatmap_is_mean_gain_over_linear_probe(bench):
    rows = [r for r in _rows(bench["out"]) if r["status"] == "ok"]
    summary = json.loads((bench["out"] / "bench.json").read_text())["heatmap"]
    assert summary["columns"] == ["full"]
    for i, b in enumerate(summary["rows"]):
        if b == "no_such_net":
            assert summary["values"][i] == [None]
            continue
        acc = {s: [float(r["accuracy"]) for r in rows if r["backbone"] == b and r["strategy"] == s] for s in STRATEGIES}
        assert len(acc["full"]) == len(acc["linear_probe"]) == 2
        expected = 100.0 * (sum(acc["full"]) / 2 - sum(acc["linear_probe"]) / 2)
        assert summary["values"][i][0] == pytest.approx(expected)


def test_rerun_reuses_finished_cells(bench, monkeypatch):
    out = bench["out"]
    stamps = {p: p.stat().st_mtime_ns for p in (out / "runs").glob("*/*") if p.name in ("metrics.json", "model.safetensors", "metrics.jsonl")}
    assert len(stamps) == 8 * 3

    def no_training(*args, **kwargs):
        raise AssertionError("a finished cell was trained again")

    monkeypatch.setattr("anivision.tasks.classify.train.train_one_epoch", no_training)
    assert main(_bench_args(bench["data"], out, bench["cache"])) == 1
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps
    rows = _rows(out)
    ok = [r for r in rows if r["backbone"] != "no_such_net"]
    assert all(r["status"] == "ok" and r["reused"] == "True" for r in ok)
    assert sum(r["status"] == "failed" for r in rows) == 4  # retried, failed again, still recorded
    # Other settings on the same folder fail at once, before any cell, rather than cell by cell.
    assert main(_bench_args(bench["data"], out, bench["cache"], "--epochs", "2")) == 2
    assert _rows(out) == rows
    # Cells moved into another folder (grids run separately, then merged) are reused when the
    # split is the same file.
    import shutil

    moved = out.parent / "merged"
    shutil.copytree(out / "runs", moved / "runs")
    assert main(_bench_args(bench["data"], moved, bench["cache"], "--split", str(out / "split.csv"))) == 1
    assert all(r["reused"] == "True" for r in _rows(moved) if r["backbone"] != "no_such_net")


def test_paired_comparison_pools_seed_means(tmp_path):
    y = np.array([0, 1, 2, 0, 1, 2])
    rows = []
    # A: right on 5/6 and 4/6 images; B: right on 2/6 with both seeds.
    preds = {("a", 1): [0, 1, 2, 0, 1, 0], ("a", 2): [0, 1, 2, 0, 0, 0], ("b", 1): [0, 1, 0, 1, 0, 1], ("b", 2): [0, 1, 0, 1, 0, 1]}
    for (name, seed), p in preds.items():
        d = tmp_path / f"{name}{seed}"
        d.mkdir()
        np.save(d / "test_labels.npy", y)
        np.save(d / "test_logits.npy", np.eye(3)[p])
        rows.append({"backbone": "m", "strategy": name, "seed": seed, "status": "ok", "run_dir": str(d),
                     "accuracy": float(np.mean(np.array(p) == y))})
    c = paired_comparison(rows, ("m", "a"), ("m", "b"), n_boot=200)
    assert c["seeds"] == [1, 2] and c["n_items"] == 6
    assert c["diff"] == pytest.approx((5 / 6 + 4 / 6) / 2 - 2 / 6)
    assert [p["diff"] for p in c["per_seed"]] == pytest.approx([5 / 6 - 2 / 6, 4 / 6 - 2 / 6])
    assert c["ci_low"] <= c["diff"] <= c["ci_high"]
    gain, backbones, cols = accuracy_gain_matrix(rows, baseline="b")
    assert backbones == ["m"] and cols == ["a"] and gain[0, 0] == pytest.approx(100 * c["diff"])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--backbones", "", "--strategies", "full"], "--backbones"),
        (["--backbones", TINY_CNN, "--strategies", "full,finetune"], "unknown strategy 'finetune'"),
        (["--backbones", TINY_CNN, "--seeds", "1,two"], "'two' is not an integer"),
        (["--backbones", TINY_CNN, "--seed", "3"], "--seeds"),
        (["--backbones", TINY_CNN, "--weights-map", "resnet18"], "backbone=WEIGHTS"),
        (["--backbones", TINY_CNN, "--weights-map", "resnet18=none"], "not one of the backbones"),
        (["--backbones", TINY_CNN, "--epochs", "0"], "--epochs"),
    ],
)
def test_bad_input_fails_before_training(tiny_data, tmp_path, capsys, extra, message):
    out = tmp_path / "b"
    assert main(["-q", "bench", "--data", str(tiny_data), "--weights", "none", "--out", str(out), *extra]) == 2
    assert message in capsys.readouterr().err
    assert not (out / "runs").exists()


def test_run_bench_rejects_grid_keys_in_base_args(tiny_data, tmp_path):
    with pytest.raises(AnivisionError, match="set by the grid"):
        run_bench(tiny_data, tmp_path / "b", [TINY_CNN], ["full"], [1], {"seed": 3}, progress=False)
    with pytest.raises(AnivisionError, match="unknown train option"):
        run_bench(tiny_data, tmp_path / "b", [TINY_CNN], ["full"], [1], {"img_sz": 3}, progress=False)


def test_bench_under_torchrun_two_cpu_processes(tiny_data, tmp_path):
    """torchrun + gloo: every cell is one 2-process job (the linear probe on rank 0 alone); rank 0 writes the grid."""
    import os
    import subprocess
    import sys

    out = tmp_path / "ddp-bench"
    args = ["-q", "bench", "--data", str(tiny_data), "--backbones", TINY_CNN, "--strategies", "linear_probe,partial,full",
            "--seeds", "1", "--weights", "none", "--img-size", "32", "--epochs", "2", "--batch-size", "4",
            "--prefix-cache", "--cache-dir", str(tmp_path / "cache"), "--out", str(out)]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29541", "-m", "anivision.cli", *args]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = _rows(out)
    assert [(x["strategy"], x["status"]) for x in rows] == [("linear_probe", "ok"), ("partial", "ok"), ("full", "ok")]
    assert [x["world_size"] for x in rows] == ["1", "2", "2"]  # the probe trains on cached features, on rank 0
    assert rows[1]["prefix_cache"] == "True"
    assert (out / "table.md").exists() and (out / "heatmap.png").exists()


def test_time_left_comes_from_matching_finished_cells():
    from anivision.tasks.bench import estimate_seconds_left, format_duration

    done = [
        {"backbone": "a", "strategy": "full", "status": "ok", "reused": False, "cell_seconds": 100.0},
        {"backbone": "a", "strategy": "partial", "status": "ok", "reused": False, "cell_seconds": 40.0},
        {"backbone": "b", "strategy": "full", "status": "ok", "reused": False, "cell_seconds": 300.0},
        {"backbone": "b", "strategy": "partial", "status": "ok", "reused": True, "cell_seconds": 0.0},  # not timed
        {"backbone": "c", "strategy": "full", "status": "failed", "reused": False, "cell_seconds": 1.0},
    ]
    # a/full: its own mean; b/partial: the other partial cells; d/progressive: all timed cells.
    assert estimate_seconds_left(done, [("a", "full"), ("b", "partial"), ("d", "progressive")]) == pytest.approx(
        100.0 + 40.0 + (100.0 + 40.0 + 300.0) / 3
    )
    assert estimate_seconds_left(done, []) is None
    assert estimate_seconds_left(done[3:], [("a", "full")]) is None
    assert [format_duration(x) for x in (40, 725, 11100)] == ["40s", "12m", "3h 05m"]
