"""End-to-end classification: train, resume, evaluate, predict, and bad input at the CLI."""

import csv
import json
import os
import subprocess
import sys

import pytest
from PIL import Image

from anivision.cli import main
from anivision.tasks.classify import train_classifier

from conftest import assert_same_results, TINY_CNN, TINY_VIT, Killed, cli_train_config, kill_at_step, make_class_folders, run_cli


def _train_args(data, out, cache, *extra):
    return ["-q", "train", "--data", str(data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
            "--batch-size", "8", "--cache-dir", str(cache), "--out", str(out), *extra]


def test_train_writes_run_and_report(tiny_data, cache_dir, tmp_path):
    (tiny_data / "class1" / "broken.jpg").write_bytes(b"\xff\xd8\xff not really")
    (tiny_data / "class2" / "zero.png").write_bytes(b"")
    out = tmp_path / "run"
    assert main(_train_args(tiny_data, out, cache_dir, "--epochs", "2", "--strategy", "full")) == 0
    m = json.loads((out / "metrics.json").read_text())
    for key in ("accuracy", "precision_macro", "recall_macro", "f1_macro", "f1_weighted", "nll", "ece",
                "n_images", "n_skipped", "per_class", "confusion_matrix", "classes", "latency_ms",
                "inference_images_per_second", "params_total", "trainable_percent", "avg_epoch_seconds"):
        assert key in m, key
    assert m["n_skipped"] == 2 and len(m["skipped"]) == 2
    assert m["classes"] == ["class0", "class1", "class2"]
    assert sum(map(sum, m["confusion_matrix"])) == m["n_images"] == m["split"]["test"]
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l)["epoch"] for l in lines] == [1, 2]
    for f in ("report.md", "confusion_matrix.png", "reliability.png", "curves.png", "split.csv", "config.json", "model.safetensors", "skipped.txt"):
        assert (out / f).exists(), f
    report = (out / "report.md").read_text()
    assert "broken.jpg" in report and "Per-class" in report
    # The run folder refuses a different config rather than mixing two runs.
    assert main(_train_args(tiny_data, out, cache_dir, "--epochs", "3", "--strategy", "full")) == 2


def test_linear_probe_on_cached_features_learns(tiny_data, cache_dir, tmp_path):
    out = tmp_path / "lp"
    assert main(_train_args(tiny_data, out, cache_dir, "--epochs", "30", "--strategy", "linear_probe", "--lr-head", "0.05")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["feature_cache"] is True
    assert m["trainable_percent"] < 50
    # Colour classes are separable even through a random tiny backbone's features.
    assert m["accuracy"] > 0.5
    ev = tmp_path / "ev"
    assert main(["-q", "evaluate", str(out), "--out", str(ev)]) == 0
    m2 = json.loads((ev / "metrics.json").read_text())
    # The saved model (backbone + head) reproduces the feature-path test accuracy.
    assert m2["accuracy"] == pytest.approx(m["accuracy"])
    assert m2["n_images"] == m["n_images"]


def test_evaluate_on_folder_and_predict(tiny_data, cache_dir, tmp_path):
    out = tmp_path / "run"
    assert main(_train_args(tiny_data, out, cache_dir, "--epochs", "1", "--backbone", TINY_VIT)) == 0
    other = make_class_folders(tmp_path / "other", n_classes=2, n_per_class=3, seed=5)
    assert main(["-q", "evaluate", str(out), "--data", str(other), "--out", str(tmp_path / "e")]) == 0
    assert json.loads((tmp_path / "e" / "metrics.json").read_text())["n_images"] == 6
    wrong = tmp_path / "wrong"
    (wrong / "zebra").mkdir(parents=True)
    Image.new("RGB", (8, 8)).save(wrong / "zebra" / "a.png")
    assert main(["-q", "evaluate", str(out), "--data", str(wrong)]) == 2
    preds = tmp_path / "preds.csv"
    (other / "class0" / "bad.jpg").write_bytes(b"nope")
    assert main(["-q", "predict", str(out), str(other / "class0"), str(other / "class1" / "*.png"), "--top-k", "2", "--out", str(preds)]) == 0
    rows = list(csv.DictReader(open(preds)))
    assert len(rows) == 6
    assert list(rows[0].keys()) == ["path", "pred_1", "prob_1", "pred_2", "prob_2"]
    for r in rows:
        assert r["pred_1"] in ("class0", "class1", "class2")
        assert 0 <= float(r["prob_2"]) <= float(r["prob_1"]) <= 1


def test_resume_after_kill_matches_uninterrupted(tiny_data, cache_dir, tmp_path):
    common = ["--epochs", "3", "--strategy", "progressive", "--unfreeze-every", "1", "--dropout", "0.3"]
    full_out, killed_out = tmp_path / "full", tmp_path / "killed"
    assert main(_train_args(tiny_data, full_out, cache_dir, *common)) == 0
    # 24 training images, batch 8 -> 3 steps per epoch; step 7 is in the middle of epoch 3.
    with pytest.raises(Killed):
        train_classifier(cli_train_config(_train_args(tiny_data, killed_out, cache_dir, *common)), progress=False, on_step=kill_at_step(7))
    assert not (killed_out / "metrics.json").exists()
    state = json.loads((killed_out / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 1  # epochs 1 and 2 finished, the third was interrupted
    assert main(_train_args(tiny_data, killed_out, cache_dir, *common)) == 0
    assert_same_results(full_out, killed_out)


def test_early_stopping(tiny_data, cache_dir, tmp_path):
    out = tmp_path / "es"
    # lr 0 on everything: validation never improves after epoch 1, so patience 2 stops at epoch 3.
    assert main(_train_args(tiny_data, out, cache_dir, "--epochs", "10", "--patience", "2", "--lr-head", "0", "--lr-backbone", "0", "--monitor", "val_loss")) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert m["epochs_run"] == 3 and m["best_epoch"] == 1


@pytest.mark.parametrize(
    "args, words",
    [
        (["train", "--data", "/no/such/dir", "--out", "x"], "no such"),
        (["train", "--data", "{empty}", "--out", "{tmp}/o"], "no class sub-folders"),
        (["train", "--data", "{data}", "--backbone", "not_a_net", "--weights", "none", "--out", "{tmp}/o"], "unknown backbone"),
        (["train", "--data", "{data}", "--backbone", TINY_CNN, "--weights", "{tmp}/missing.pth", "--out", "{tmp}/o"], "not found"),
        (["split", "{data}", "--ratios", "90/5/5", "--out", "{tmp}/s.csv"], None),
        (["split", "{small}", "--out", "{tmp}/s.csv"], "needs at least 3"),
        (["evaluate", "{tmp}/nothing"], "no such run"),
        (["predict", "{tmp}", "x.png"], "not a trained run"),
    ],
)
def test_bad_input_gives_one_line_and_exit_2(args, words, tiny_data, tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    small = make_class_folders(tmp_path / "small", n_classes=2, n_per_class=2)
    fmt = {"data": str(tiny_data), "tmp": str(tmp_path), "empty": str(tmp_path / "empty"), "small": str(small)}
    argv = ["-q"] + [a.format(**fmt) for a in args]
    code = main(argv)
    err = capsys.readouterr().err.strip()
    if words is None:
        assert code == 0
        return
    assert code == 2
    assert err.startswith("error: ") and words in err and "Traceback" not in err
    assert len(err.splitlines()) == 1


def test_cli_subprocess_no_traceback(tmp_path):
    r = run_cli(["train", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o")])
    assert r.returncode == 2 and "Traceback" not in r.stderr and "missing" in r.stderr


def test_two_process_ddp_on_cpu(tiny_data, cache_dir, tmp_path):
    """torchrun + gloo: two CPU processes train one model; rank 0 writes the run."""
    out = tmp_path / "ddp"
    args = _train_args(tiny_data, out, cache_dir, "--epochs", "2", "--batch-size", "4")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29533", "-m", "anivision.cli", *args],
        capture_output=True, text=True, env=env,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((out / "metrics.json").read_text())
    assert m["world_size"] == 2 and m["epochs_run"] == 2
    state = json.loads((out / "checkpoint" / "state.json").read_text())
    assert state["world_size"] == 2


def test_cosine_head_trains_with_cosface_and_reloads(tiny_data, cache_dir, tmp_path, capsys):
    # --head cosine: the run records it, the saved model reproduces the test accuracy through a
    # CosineLinear layer, and its logits are 16 * cosines (bounded, blind to the feature norm).
    import torch

    import anivision as av
    from anivision.models.classifier import COSINE_SCALE, CosineLinear

    out = tmp_path / "cos"
    assert main(_train_args(tiny_data, out, cache_dir, "--epochs", "30", "--strategy", "linear_probe", "--lr-head", "0.05",
                            "--head", "cosine", "--margin", "0.2")) == 0
    cfg = json.loads((out / "config.json").read_text())
    assert (cfg["head"], cfg["margin"]) == ("cosine", 0.2)
    m = json.loads((out / "metrics.json").read_text())
    assert m["accuracy"] > 0.5
    assert main(["-q", "evaluate", str(out), "--out", str(tmp_path / "ev")]) == 0
    assert json.loads((tmp_path / "ev" / "metrics.json").read_text())["accuracy"] == pytest.approx(m["accuracy"])
    clf = av.load(out)
    last = clf.model.head[1]
    assert isinstance(last, CosineLinear) and last.bias is None
    logits = clf.outputs(sorted(str(p) for p in (tiny_data / "class0").iterdir()), "logits").values
    assert abs(logits).max() <= COSINE_SCALE + 1e-4 and abs(logits).max() > 1.0
    x = torch.randn(3, last.in_features)
    torch.testing.assert_close(last(x), last(5 * x))
    assert main(_train_args(tiny_data, tmp_path / "bad", cache_dir, "--head", "cosine", "--margin", "1.5")) == 2
    assert "--margin must be in [0, 1)" in capsys.readouterr().err
