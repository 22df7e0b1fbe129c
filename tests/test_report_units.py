"""Reports speak one unit: accuracy-like figures in percent with two decimals, in every report and
log line; the JSON files keep fractions; an evaluation on another folder names it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from anivision.reports.bench import write_bench_report
from anivision.reports.fewshot import grid_markdown
from anivision.reports.retrieval import write_report as write_retrieval_report
from anivision.tasks.classify import evaluate_run, train_classifier

from conftest import TINY_CNN, cli_train_config, make_class_folders

PCT = r"\d{1,3}\.\d{2}%"
# An accuracy-like word followed by a bare fraction ("acc 0.8438", "F1: 0.812"), the old style.
BARE = re.compile(r"(?i)\b(acc(uracy)?|top-?\d( accuracy)?|precision|recall|f1|ece|calibration error|mAP|mINP|rank-?\d+)\b\W{0,3}0\.\d{3,}")


def _no_bare_fraction(text: str) -> None:
    hit = BARE.search(text)
    assert hit is None, f"accuracy shown as a bare fraction: {hit.group(0)!r}"


def _table(lines: list[str], header_start: str) -> list[dict[str, str]]:
    """Rows of the markdown table whose header line starts with ``header_start``."""
    i = next(i for i, line in enumerate(lines) if line.startswith(header_start))
    cols = [c.strip() for c in lines[i].strip("|").split("|")]
    rows = []
    for line in lines[i + 2:]:
        if not line.startswith("|"):
            break
        rows.append(dict(zip(cols, (c.strip() for c in line.strip("|").split("|")))))
    return rows


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One tiny classification run (2 epochs, validation split), its log lines and metrics."""
    root = tmp_path_factory.mktemp("units")
    data = make_class_folders(root / "data", n_classes=3, n_per_class=12, size=32)
    out = root / "emo-full"
    args = ["train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
            "--batch-size", "8", "--cache-dir", str(root / "cache"), "--out", str(out), "--epochs", "2", "--strategy", "full"]
    logger, handler = logging.getLogger("anivision"), _Records()
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    try:
        metrics = train_classifier(cli_train_config(args), progress=False)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)
    yield {"root": root, "out": out, "metrics": metrics, "log": handler.lines}


def test_epoch_log_lines_show_percent(tiny_run):
    epochs = [line for line in tiny_run["log"] if line.startswith("epoch ")]
    assert len(epochs) == 2, tiny_run["log"]
    for line in epochs:
        # epoch 1/2: train loss 1.0986 acc 33.33% | val loss 1.0912 acc 50.00% | 0.4s, 95 img/s
        assert re.match(rf"epoch \d/2: train loss \d+\.\d{{4}} acc {PCT} \| val loss \d+\.\d{{4}} acc {PCT} \|", line), line
        _no_bare_fraction(line)


def test_training_report_speaks_percent(tiny_run):
    out, m = tiny_run["out"], tiny_run["metrics"]
    text = (out / "report.md").read_text()
    body = text.split("## Resolved configuration")[0]  # the config JSON keeps its own numbers
    _no_bare_fraction(body)
    lines = body.splitlines()
    summary = {r["metric"]: r["value"] for r in _table(lines, "| metric | value |")}
    assert summary["accuracy"] == f"{100 * m['accuracy']:.2f}%"
    assert re.fullmatch(PCT, summary["top3 accuracy"])
    assert re.fullmatch(rf"{PCT} / {PCT} / {PCT}", summary["macro precision / recall / F1"])
    assert re.fullmatch(PCT, summary["weighted F1"]) and re.fullmatch(PCT, summary["ECE (15 bins)"])
    assert re.fullmatch(r"\d+\.\d{4}", summary["NLL (test loss)"])  # a loss keeps its natural unit
    assert re.fullmatch(rf"val loss \d+\.\d{{4}}, val acc {PCT}", summary["best validation"])
    assert f"- Accuracy: {100 * m['accuracy']:.2f}%" in lines
    assert any(re.fullmatch(rf"- ECE: {PCT}", line) for line in lines)
    assert re.search(rf"Expected calibration error: {PCT}\.", body)
    for row in _table(lines, "| class | precision |"):
        assert all(re.fullmatch(PCT, row[k]) for k in ("precision", "recall", "f1")), row
    history = _table(lines, "| epoch |")
    assert len(history) == 2
    for row in history:
        assert re.fullmatch(PCT, row["train_acc"]) and re.fullmatch(PCT, row["val_acc"]), row
        assert re.fullmatch(r"\d+\.\d{4}", row["train_loss"]), row
    # The files keep fractions.
    saved = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= saved["accuracy"] <= 1.0 and saved["accuracy"] == pytest.approx(m["accuracy"])


def test_evaluation_on_another_folder_names_it(tiny_run):
    root, run = tiny_run["root"], tiny_run["out"]
    other = make_class_folders(root / "new-emotions", n_classes=2, n_per_class=3, size=32, seed=5)
    m = evaluate_run(run, data=str(other), out=root / "ev-other", progress=False)
    assert m["data"] == str(other)  # the key the CLI's summary line names the folder with
    assert json.loads((root / "ev-other" / "metrics.json").read_text())["data"] == str(other)
    text = (root / "ev-other" / "report.md").read_text()
    lines = text.splitlines()
    assert lines[0] == f"# evaluation of emo-full on {other} (6 images)"
    summary = {r["metric"]: r["value"] for r in _table(lines, "| metric | value |")}
    assert summary["data"] == f"`{other}`" and summary["images"] == "6"
    assert re.fullmatch(PCT, summary["accuracy"])
    _no_bare_fraction(text)

    own = evaluate_run(run, out=root / "ev-test", progress=False)
    first = (root / "ev-test" / "report.md").read_text().splitlines()[0]
    assert first == f"# evaluation of emo-full on its test split ({own['n_images']} images)"
    assert own["data"] == "test split"


def _bench_rows(root: Path) -> list[dict]:
    """Two strategies x two seeds of one backbone, each with a run folder like a real cell's."""
    labels = np.array([0, 0, 1, 1, 2, 2, 0, 1])
    rows = []
    for strategy, acc, f1 in (("linear_probe", 0.625, 0.75), ("full", 0.875, 0.8125)):
        for seed in (1, 2):
            d = root / f"net__{strategy}__s{seed}"
            d.mkdir(parents=True)
            n_right = round(acc * labels.size)
            preds = np.where(np.arange(labels.size) < n_right, labels, (labels + 1) % 3)
            np.save(d / "test_labels.npy", labels)
            np.save(d / "test_logits.npy", np.eye(3)[preds])
            per_class = {"cat": {"f1": f1}, "dog": {"f1": f1 - 0.0625}}
            (d / "metrics.json").write_text(json.dumps({"accuracy": acc, "per_class": per_class}))
            rows.append({
                "backbone": "net", "strategy": strategy, "seed": seed, "weights": "none", "status": "ok", "run_dir": str(d),
                "accuracy": acc + 0.0001 * (2 * seed - 1), "top3_accuracy": 1.0, "f1_macro": f1, "nll": 0.5123, "ece": 0.0456,
                "epochs_run": 3, "avg_epoch_seconds": 0.5, "trainable_percent": 100.0, "params_total": 1000,
                "train_images_per_second": 100.0, "inference_images_per_second": 200.0, "latency_ms": 1.5,
            })
    return rows


def test_bench_report_speaks_percent(tmp_path):
    out = tmp_path / "bench"
    write_bench_report(out, _bench_rows(tmp_path / "runs"))
    for name in ("table.md", "per_class_f1.md", "paired.md", "bench.md"):
        _no_bare_fraction((out / name).read_text())
    table = (out / "table.md").read_text()
    assert "Test accuracy (%)" in table and "macro F1 (%)" in table
    assert "| net | full | **87.52** | 0.01 | 81.25 | 0.512 | 3 | 0.50 | 2 |" in table  # accuracy and macro F1 in percent, loss as is
    f1 = (out / "per_class_f1.md").read_text()
    assert "Test F1 (%) per class" in f1
    assert "| cat | 75.00 | 81.25 | +6.25 |" in f1 and "| dog | 68.75 | 75.00 | +6.25 |" in f1
    paired = (out / "paired.md").read_text()
    assert "| net / full | net / linear_probe | 2 | 87.50 | 62.50 | **+25.00** |" in paired
    assert re.search(rf"\*\*net / full\*\*, {PCT} test accuracy", (out / "bench.md").read_text())
    # results.csv keeps fractions.
    assert "0.8751" in (out / "results.csv").read_text()


def test_fewshot_grid_speaks_percent():
    results = [{"n_way": n, "k_shot": k, "accuracy": 0.81563, "ci95": 0.00391, "episodes": 1000, "n_query": 15}
               for n in (3, 5) for k in (1, 5)]
    common = {"run": "runs/fs", "distance": "euclidean", "split": "test", "data": "data/chars", "n_classes": 9}
    text = grid_markdown(results, common)
    assert "Few-shot accuracy (%) ± 95% CI" in text
    assert "| 3-way | 81.56 ± 0.39 | 81.56 ± 0.39 |" in text
    _no_bare_fraction(text)


def test_retrieval_report_speaks_percent(tmp_path):
    cmc = np.clip(np.linspace(0.445, 1.0, 10), 0, 1).tolist()
    fold = {"fold": 0, "test_works": ["w1", "w2"], "excluded_works": [], "n_query": 4, "n_gallery": 6,
            "mINP": 0.2125, "mAP": 0.445, "rank1": 0.5, "rank5": 0.875, "rank10": 1.0, "cmc": cmc,
            "per_work": {"w1": {"AP": 0.5625, "INP": 0.25, "n_query": 2, "n_gallery": 3},
                         "w2": {"AP": 0.3275, "INP": 0.175, "n_query": 2, "n_gallery": 3}}}
    keys = ("mINP", "mAP", "rank1", "rank5", "rank10")
    summary = {
        "kind": "baseline", "n_folds": 1, "excluded_works": [], "folds": [fold], "cmc_mean": cmc,
        "mean": {k: fold[k] for k in keys}, "std": {k: 0.0 for k in keys},
        "model": {"backbone": "tiny", "weights": "none", "img_size": 32, "metric": "cosine"},
        "protocol": {"folds": 1, "seed": 0, "query_ratio": 0.5},
        "data": {"source": "data/works", "images": 10, "works": 2, "roles": 4},
    }
    text = write_retrieval_report(tmp_path / "ret", summary).read_text()
    assert "## Results (%)" in text and "## Per-work AP (%)" in text
    assert "| 0 | 2 | 4 | 6 | 21.25 | 44.50 | 50.00 | 87.50 | 100.00 |" in text
    assert "| w1 | 0 | 2 | 3 | 56.25 | 25.00 |" in text
    _no_bare_fraction(text)
