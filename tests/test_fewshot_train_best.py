"""Meta-training keeps the best validation epoch, and epoch 0 (the starting embedding) is a
candidate: a meta-training that only makes validation worse never replaces the starting weights."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file
from test_fewshot import make_shapes
from test_fewshot_train import Killed, tiny_config

import anivision.tasks.fewshot.train as train_module
from anivision.tasks.fewshot import train_fewshot


def scripted_validation(monkeypatch: pytest.MonkeyPatch, accuracies: list[float]) -> list[dict[str, torch.Tensor]]:
    """Make validation return ``accuracies`` in turn (epoch 0 first); returns the weights each call saw."""
    seen: list[dict[str, torch.Tensor]] = []

    def fake(backbone, data, cfg, device, progress):  # noqa: ANN001 - same signature as the real one
        seen.append({k: v.detach().clone() for k, v in backbone.state_dict().items()})
        return accuracies[len(seen) - 1]

    monkeypatch.setattr(train_module, "validation_accuracy", fake)
    return seen


def saved_epoch(run: Path) -> str:
    with safe_open(str(run / "model.safetensors"), "pt") as fh:
        return fh.metadata()["epoch"]


def same_weights(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> bool:
    return got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fewshot_best")
    make_shapes(root / "data")
    return root


def test_worse_meta_training_keeps_the_starting_weights(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = scripted_validation(monkeypatch, [0.80, 0.50, 0.60, 0.70])
    cfg = tiny_config(data, "worse")
    s = train_fewshot(cfg, progress=False)
    run = Path(cfg.out)
    assert s["best_epoch"] == 0 and s["best_val_acc"] == pytest.approx(0.80) and s["initial_val_acc"] == pytest.approx(0.80)
    best = load_file(str(run / "model.safetensors"))
    assert same_weights(best, seen[0]) and saved_epoch(run) == "0"
    # Meta-training did change the weights: the last checkpoint is not the starting point.
    assert not same_weights(load_file(str(run / "checkpoint" / "model.safetensors")), seen[0])


def test_better_epoch_replaces_the_starting_weights(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    seen = scripted_validation(monkeypatch, [0.40, 0.70, 0.60, 0.50])
    cfg = tiny_config(data, "better")
    s = train_fewshot(cfg, progress=False)
    assert s["best_epoch"] == 1 and s["best_val_acc"] == pytest.approx(0.70)
    assert same_weights(load_file(str(Path(cfg.out) / "model.safetensors")), seen[1]) and saved_epoch(Path(cfg.out)) == "1"


def test_epoch_zero_best_survives_a_kill_and_resume(data: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Killed in epoch 2 after epoch 1 (worse than epoch 0) was checkpointed; the resumed run
    # must still know epoch 0 is the best and keep its weights.
    seen = scripted_validation(monkeypatch, [0.90, 0.50, 0.60, 0.70])
    cfg = tiny_config(data, "killed")

    def kill(step: int) -> None:
        if step == 4:
            raise Killed

    with pytest.raises(Killed):
        train_fewshot(cfg, progress=False, on_step=kill)
    run = Path(cfg.out)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["best_epoch"] == 0
    seen.clear()
    seen.append({})  # resumed runs validate from epoch 2 on: values 0.60, 0.70
    s = train_fewshot(cfg, progress=False)
    assert s["best_epoch"] == 0 and saved_epoch(run) == "0"
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1, 2, 3]
