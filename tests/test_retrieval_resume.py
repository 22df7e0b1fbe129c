"""Retrieval runs through the engine: a fold killed mid-epoch resumes to the same result as an
unbroken run, and the same-run rule (runtime keys may change, old config.json files still load)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from anivision.data.reid import load_reid
from anivision.data.synth import generate
from anivision.errors import AnivisionError
from anivision.tasks.retrieval import RetrievalConfig, load_run_config, train_run

TINY_CNN = "test_efficientnet"
#: 3 epochs of 3 PK batches: the kill lands on the second batch of epoch 2 (global step 4).
CFG = RetrievalConfig(
    backbone=TINY_CNN, weights="none", img_size=32, epochs=3, p=3, k=2, batches_per_epoch=3, folds=2, amp=False
)
KILL_AT = 4


class Killed(Exception):
    """Stands in for a process killed mid-epoch."""


@pytest.fixture(scope="module")
def unbroken(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(data folder, run folder) of fold 0 trained without interruption."""
    root = tmp_path_factory.mktemp("retrieval_resume")
    generate("style", root / "data", n_per_class=3, size=32, seed=0, n_works=4, roles_per_work=3, progress=False)
    train_run(load_reid(root / "data"), CFG, root / "unbroken", only_fold=0, progress=False)
    return root / "data", root / "unbroken"


def _losses(run: Path) -> list[dict[str, float]]:
    keys = ("epoch", "train_loss", "id_loss", "triplet_loss", "train_acc", "lr")
    return [{k: row[k] for k in keys} for row in json.loads((run / "fold0" / "history.json").read_text())]


def test_killed_fold_resumes_to_the_unbroken_result(unbroken: tuple[Path, Path], tmp_path: Path) -> None:
    data_dir, ref = unbroken
    data = load_reid(data_dir)
    run = tmp_path / "run"

    def kill(step: int) -> None:
        if step == KILL_AT:
            raise Killed

    with pytest.raises(Killed):
        train_run(data, CFG, run, only_fold=0, progress=False, on_step=kill)
    state = json.loads((run / "fold0" / "checkpoint" / "state.json").read_text())
    assert state["epoch"] == 0 and len(state["history"]) == 1  # epoch 1 checkpointed, epoch 2 lost
    assert not (run / "fold0" / "model.safetensors").exists() and not (run / "metrics.json").exists()

    seen: list[int] = []
    train_run(data, CFG, run, only_fold=0, progress=False, on_step=seen.append)
    assert seen == list(range(3, 9))  # resumed at epoch 2's first step, not at the start

    assert _losses(run) == _losses(ref)
    for key in ("train_loss", "id_loss", "triplet_loss", "train_acc"):
        assert all(isinstance(row[key], float) for row in _losses(run)), key
    assert json.loads((run / "fold0" / "metrics.json").read_text()) == json.loads((ref / "fold0" / "metrics.json").read_text())
    got, want = load_file(str(run / "fold0" / "model.safetensors")), load_file(str(ref / "fold0" / "model.safetensors"))
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert not (run / "fold1").exists()  # only_fold: the other fold is not started


def test_same_run_rule(unbroken: tuple[Path, Path], tmp_path: Path) -> None:
    data_dir, ref = unbroken
    data = load_reid(data_dir)
    run = tmp_path / "run"
    shutil.copytree(ref, run)
    saved = json.loads((run / "config.json").read_text())
    assert saved == CFG.to_dict()

    # A changed runtime key reuses the finished fold (nothing retrains: on_step is never called).
    never = pytest.fail
    summary = train_run(data, dataclasses.replace(CFG, num_workers=1, eval_batch_size=8), run, only_fold=0, progress=False, on_step=never)
    assert summary["folds"][0]["mAP"] == json.loads((ref / "metrics.json").read_text())["folds"][0]["mAP"]

    # A changed setting is another run.
    for change in ({"epochs": 4}, {"lr": 0.05}, {"triplet_normalize": False}):
        with pytest.raises(AnivisionError, match=rf"different.*\b{next(iter(change))}\b"):
            train_run(data, dataclasses.replace(CFG, **change), run, only_fold=0, progress=False, on_step=never)

    # A config.json from before the engine: no runtime keys, no grad_clip (added since).
    old_style = {k: v for k, v in saved.items() if k not in (*RetrievalConfig.RUNTIME_KEYS, "grad_clip")}
    (run / "config.json").write_text(json.dumps(old_style))
    assert load_run_config(run) == dataclasses.replace(CFG, amp=True)  # missing keys: their defaults
    train_run(data, dataclasses.replace(CFG, num_workers=1), run, only_fold=0, progress=False, on_step=never)
    with pytest.raises(AnivisionError, match=r"different.*\bgrad_clip\b"):
        train_run(data, dataclasses.replace(CFG, grad_clip=1.0), run, only_fold=0, progress=False, on_step=never)
    # An unknown key: written by another version, so its meaning cannot be checked.
    (run / "config.json").write_text(json.dumps({**old_style, "mixup": 0.2}))
    with pytest.raises(AnivisionError, match="unknown config key"):
        train_run(data, CFG, run, only_fold=0, progress=False, on_step=never)
