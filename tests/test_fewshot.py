"""Few-shot: class-disjoint splits, the vectorised evaluator against a naive loop, and the CLI end to end.

The prototypical network itself is tested in ``test_fewshot_protonet.py``, meta-training's
resume and same-run rule in ``test_fewshot_train.py``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from anivision.cli import main
from anivision.data.samplers import EpisodeSampler
from anivision.engine.schedules import multistep
from anivision.errors import AnivisionError
from anivision.tasks import fewshot as fs
from anivision.tasks.fewshot import train as fs_train

TINY = ["--backbone", "test_efficientnet", "--weights", "none", "--img-size", "32"]


# ------------------------------------------------------------------------------- helpers


def make_shapes(root: Path, n_classes: int = 6, n_per_class: int = 8, size: int = 32, seed: int = 0) -> Path:
    """``root/char<c>/<i>.png``: each class one colour and one shape, jittered in place and size."""
    rng = np.random.default_rng(seed)
    colours = [(220, 40, 40), (40, 190, 60), (50, 70, 230), (230, 200, 40), (200, 60, 200), (40, 200, 200)]
    for c in range(n_classes):
        d = root / f"char{c}"
        d.mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = Image.new("RGB", (size, size), tuple(int(v) for v in rng.integers(0, 60, 3)))
            draw = ImageDraw.Draw(img)
            r = int(rng.integers(size // 4, size // 2 - 2))
            cx, cy = (int(v) for v in rng.integers(r, size - r, 2))
            box = [cx - r, cy - r, cx + r, cy + r]
            colour = colours[c % len(colours)]
            [draw.ellipse, draw.rectangle, lambda b, fill: draw.polygon([(b[0], b[3]), (b[2], b[3]), ((b[0] + b[2]) // 2, b[1])], fill=fill)][c % 3](box, fill=colour)
            img.save(d / f"{i:02d}.png")
    return root


def naive_episode_accuracies(features: np.ndarray, episodes: np.ndarray, k_shot: int, distance: str) -> np.ndarray:
    """Prototypical-network accuracy, one episode, one query, one class at a time (float64)."""
    accs = []
    for ep in episodes:
        n_way = ep.shape[0]
        protos = [features[ep[c, :k_shot]].astype(np.float64).mean(axis=0) for c in range(n_way)]
        correct = total = 0
        for c in range(n_way):
            for qi in ep[c, k_shot:]:
                q = features[qi].astype(np.float64)
                if distance == "euclidean":
                    d = [float(((q - p) ** 2).sum()) for p in protos]
                else:
                    d = [1.0 - float(q @ p / (np.linalg.norm(q) * np.linalg.norm(p))) for p in protos]
                correct += int(np.argmin(d) == c)
                total += 1
        accs.append(correct / total)
    return np.asarray(accs)


# ------------------------------------------------------------------------- the maths


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_vectorised_evaluator_equals_naive_loop(distance: str) -> None:
    rng = np.random.default_rng(0)
    n_classes, per_class, dim = 12, 20, 16
    centres = rng.normal(0, 1.0, (n_classes, dim))
    feats = (centres[:, None, :] + rng.normal(0, 1.2, (n_classes, per_class, dim))).reshape(-1, dim).astype(np.float32)
    labels = np.repeat(np.arange(n_classes), per_class)
    idx, _ = EpisodeSampler(labels, n_way=5, k_shot=3, n_query=6, n_tasks=200, seed=3).sample()
    # A tiny chunk bound forces several chunks, so chunking is covered too.
    fast = fs.evaluate_episodes(feats, idx, k_shot=3, distance=distance, max_chunk_bytes=50_000)
    slow = naive_episode_accuracies(feats, idx, 3, distance)
    assert np.array_equal(fast, slow)
    assert 0.3 < fast.mean() < 0.99  # the episodes are neither trivial nor hopeless


def test_distances_match_reference() -> None:
    g = torch.Generator().manual_seed(0)
    q, p = torch.randn(4, 7, 8, generator=g, dtype=torch.float64), torch.randn(4, 3, 8, generator=g, dtype=torch.float64)
    assert torch.allclose(fs.episode_distances(q, p, "euclidean"), torch.cdist(q, p) ** 2)
    cos = torch.nn.functional.cosine_similarity(q[:, :, None, :], p[:, None, :, :], dim=-1)
    assert torch.allclose(fs.episode_distances(q, p, "cosine"), 1 - cos)
    assert torch.allclose(fs.protonet_logits(q, p, "cosine", 10.0), 10 * cos)
    with pytest.raises(AnivisionError, match="unknown distance"):
        fs.episode_distances(q, p, "manhattan")


def test_episode_accuracy_ci() -> None:
    rng = np.random.default_rng(1)
    feats = rng.normal(size=(60, 4)).astype(np.float32)
    r = fs.episode_accuracy(feats, np.repeat(np.arange(6), 10), 3, 1, 4, episodes=100, seed=0)
    idx, _ = EpisodeSampler(np.repeat(np.arange(6), 10), 3, 1, 4, 100, seed=0).sample()
    accs = fs.evaluate_episodes(feats, idx, 1)
    assert r["accuracy"] == pytest.approx(accs.mean())
    assert r["ci95"] == pytest.approx(1.96 * accs.std() / np.sqrt(100))


def test_loo_distances_match_naive() -> None:
    rng = np.random.default_rng(2)
    feats = rng.normal(size=(9, 5))
    labels = np.array([0, 0, 0, 1, 1, 1, 1, 2, 2])
    protos = np.stack([feats[labels == c].mean(0) for c in range(3)])
    own, other, correct = fs.loo_own_and_other(feats, labels, protos, "euclidean")
    for i in range(9):
        rest = [j for j in range(9) if labels[j] == labels[i] and j != i]
        assert own[i] == pytest.approx(((feats[i] - feats[rest].mean(0)) ** 2).sum())
        assert other[i] == pytest.approx(min(((feats[i] - protos[c]) ** 2).sum() for c in range(3) if c != labels[i]))
    assert np.array_equal(correct, own < other)


def test_multistep_lr() -> None:
    """The few-shot recipe's schedule (x0.1 at 50% and 80% of the epochs) is the engine's multistep."""
    cfg = fs.FewShotTrainConfig()
    lrs = [multistep(e, 100, 0.01, cfg.milestones, cfg.gamma) for e in range(100)]
    assert lrs[49] == 0.01 and lrs[50] == pytest.approx(0.001) and lrs[79] == pytest.approx(0.001) and lrs[80] == pytest.approx(1e-4)
    assert multistep(0, 1, 0.01) == 0.01
    lr_fn = fs_train.epoch_lr(50, 100, cfg)
    assert lr_fn(0, {"base_lr": 0.01}) == lr_fn(99, {"base_lr": 0.01}) == pytest.approx(0.001)


# ---------------------------------------------------------------------- class splits


def test_class_disjoint_split_counts_ratios_seed(tmp_path: Path) -> None:
    classes = [f"c{i:02d}" for i in range(16)]
    s = fs.class_disjoint_split(classes, counts="10/3/3", seed=5)
    assert (len(s.train), len(s.val), len(s.test)) == (10, 3, 3)
    assert not (set(s.train) & set(s.val)) and not (set(s.train) & set(s.test)) and not (set(s.val) & set(s.test))
    assert sorted(s.part("all")) == classes
    assert fs.class_disjoint_split(classes, counts="10/3/3", seed=5) == s
    assert fs.class_disjoint_split(classes, counts="10/3/3", seed=6) != s
    r = fs.class_disjoint_split(classes, ratios="60/20/20", seed=5)
    assert (len(r.train), len(r.val), len(r.test)) == (10, 3, 3)
    part = fs.class_disjoint_split(classes, counts="5/2/2")
    assert len(part.unused) == 7
    s.save(tmp_path / "classes.json")
    assert fs.ClassSplit.load(tmp_path) == s
    with pytest.raises(AnivisionError, match="asks for 17 classes"):
        fs.class_disjoint_split(classes, counts="10/4/3")
    with pytest.raises(AnivisionError, match="not both"):
        fs.class_disjoint_split(classes, counts="10/3/3", ratios="60/20/20")


# ----------------------------------------------------------------------- end to end


def test_train_resume_evaluate_enroll_identify(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    data = make_shapes(tmp_path / "data")
    run, cache = tmp_path / "run", tmp_path / "cache"
    train = ["-q", "fewshot", "train", "--data", str(data), *TINY, "--epochs", "2", "--episodes-per-epoch", "2",
             "--n-way", "2", "--k-shot", "2", "--n-query", "2", "--val-episodes", "20", "--classes", "2/2/2",
             "--out", str(run), "--cache-dir", str(cache)]

    # Interrupt the second epoch (Ctrl-C: exit 130), then rerun the same command: it continues from epoch 2.
    real = fs_train.train_one_epoch
    calls = {"n": 0}

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(fs_train, "train_one_epoch", flaky)
    assert main(train) == 130
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 1
    monkeypatch.setattr(fs_train, "train_one_epoch", real)
    assert main(train) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [0, 1, 2]
    split = json.loads((run / "classes.json").read_text())
    assert len(split["test"]) == 2 and not set(split["test"]) & set(split["train"] + split["val"])
    for f in ("config.json", "model.safetensors", "train.json"):
        assert (run / f).exists()
    # A different config in the same folder is refused.
    assert main([*train[:-4], "--seed", "9", "--out", str(run), "--cache-dir", str(cache)]) == 2

    # Evaluate on the run's held-out test classes.
    out = tmp_path / "eval"
    assert main(["-q", "fewshot", "evaluate", str(run), "--n-way", "2", "--k-shot", "1", "--n-query", "3",
                 "--episodes", "50", "--out", str(out), "--cache-dir", str(cache)]) == 0
    r = json.loads((out / "fewshot.json").read_text())
    assert r["classes"] == split["test"] and r["episodes"] == 50 and 0 <= r["accuracy"] <= 1 and r["ci95"] >= 0

    # The grid with a plain backbone: 20-way cells are marked, not a crash.
    grid = tmp_path / "grid"
    assert main(["-q", "fewshot", "evaluate", "--data", str(data), *TINY, "--grid", "--n-query", "2", "--episodes", "20",
                 "--out", str(grid), "--cache-dir", str(cache)]) == 0
    cells = {(c["n_way"], c["k_shot"]): c for c in json.loads((grid / "fewshot.json").read_text())["grid"]}
    assert cells[(5, 1)]["accuracy"] is not None and cells[(20, 5)]["accuracy"] is None
    assert "n/a [" in (grid / "fewshot.md").read_text()
    # Too few classes for one evaluation: a one-line error, exit 2.
    capsys.readouterr()
    assert main(["-q", "fewshot", "evaluate", str(run), "--n-way", "5", "--k-shot", "1", "--n-query", "2", "--cache-dir", str(cache)]) == 2
    assert "5-way episodes need 5 classes" in capsys.readouterr().err

    # Enrol 3 characters (one unreadable file), identify files, a folder and a glob.
    gallery_src = tmp_path / "gallery_src"
    for c in ("char0", "char1", "char2"):
        (gallery_src / c).mkdir(parents=True)
        for f in sorted((data / c).iterdir())[:5]:
            (gallery_src / c / f.name).write_bytes(f.read_bytes())
    (gallery_src / "char0" / "broken.png").write_bytes(b"not an image")
    gallery = tmp_path / "gallery"
    assert main(["-q", "enroll", str(run), str(gallery_src), "--out", str(gallery), "--cache-dir", str(cache)]) == 0
    meta = json.loads((gallery / "gallery.json").read_text())
    assert meta["classes"] == ["char0", "char1", "char2"] and meta["counts"] == [5, 5, 5] and meta["threshold"] > 0
    assert (gallery / "prototypes.safetensors").exists()
    queries = tmp_path / "queries"
    queries.mkdir()
    (queries / "a.png").write_bytes((data / "char1" / "07.png").read_bytes())
    (queries / "bad.jpg").write_bytes(b"\x00" * 10)
    preds = tmp_path / "preds.csv"
    assert main(["-q", "identify", str(gallery), str(queries), str(data / "char2" / "0[67].png"), "--top-k", "2",
                 "--threshold", "inf", "--out", str(preds)]) == 0
    with open(preds, newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["path", "pred_1", "dist_1", "pred_2", "dist_2"]
    assert len(rows) == 3  # bad.jpg listed and skipped
    assert all(r["pred_1"] != "unknown" for r in rows)
    assert "bad.jpg" in capsys.readouterr().err
    # A threshold of 0 makes everything unknown, the nearest character follows as pred_2.
    assert main(["-q", "identify", str(gallery), str(queries / "a.png"), "--top-k", "2", "--threshold", "0", "--out", str(preds)]) == 0
    with open(preds, newline="") as fh:
        row = next(csv.DictReader(fh))
    assert row["pred_1"] == "unknown" and row["pred_2"] in meta["classes"] and row["dist_1"] == row["dist_2"]

