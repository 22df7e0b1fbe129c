"""Meta-training through the engine: a run killed mid-epoch resumes to the same end, the
same-run rule, supervised pretraining and the episode-shape errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from test_fewshot import make_shapes

from anivision.errors import AnivisionError
from anivision.tasks.fewshot import FewShotTrainConfig, train_fewshot

EPISODES = 3  # per epoch: global steps 3, 4, 5 are epoch 2


class Killed(Exception):
    """Stands for the process dying."""


def tiny_config(root: Path, out: str, **kw) -> FewShotTrainConfig:
    values = dict(
        data=str(root / "data"), out=str(root / out), backbone="test_efficientnet", weights="none", img_size=32,
        classes="2/2/2", epochs=3, episodes_per_epoch=EPISODES, n_way=2, k_shot=2, n_query=2, val_episodes=10,
        cache_dir=str(root / "cache"),
    )
    return FewShotTrainConfig(**(values | kw))


def results(run: Path) -> tuple[list[dict], dict, dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """What must not depend on an interruption: metrics rows and summary (timings aside), best and last weights."""
    rows = [{k: v for k, v in json.loads(line).items() if k != "epoch_seconds"} for line in (run / "metrics.jsonl").read_text().splitlines()]
    summary = {k: v for k, v in json.loads((run / "train.json").read_text()).items() if k not in ("avg_epoch_seconds", "run")}
    return rows, summary, load_file(str(run / "model.safetensors")), load_file(str(run / "checkpoint" / "model.safetensors"))


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, list[int]]:
    """Tiny data and one uninterrupted run; the global steps its ``on_step`` saw."""
    root = tmp_path_factory.mktemp("fewshot_train")
    make_shapes(root / "data")
    steps: list[int] = []
    train_fewshot(tiny_config(root, "reference"), progress=False, on_step=steps.append)
    return root, steps


def test_resume_after_kill_mid_epoch_equals_unbroken_run(reference: tuple[Path, list[int]]) -> None:
    root, steps = reference
    assert steps == list(range(3 * EPISODES))  # one global step per episode, before each optimizer step
    cfg = tiny_config(root, "killed")

    def kill(step: int) -> None:
        if step == EPISODES + 1:  # the second episode of epoch 2
            raise Killed

    with pytest.raises(Killed):
        train_fewshot(cfg, progress=False, on_step=kill)
    run = Path(cfg.out)
    assert json.loads((run / "checkpoint" / "state.json").read_text())["epoch"] == 1
    assert [json.loads(line)["epoch"] for line in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    assert not (run / "train.json").exists()

    resumed: list[int] = []
    train_fewshot(cfg, progress=False, on_step=resumed.append)
    assert resumed == list(range(EPISODES, 3 * EPISODES))  # from the start of epoch 2
    rows, summary, best, last = results(run)
    ref_rows, ref_summary, ref_best, ref_last = results(root / "reference")
    assert [r["epoch"] for r in rows] == [0, 1, 2, 3]
    assert rows == ref_rows and summary == ref_summary
    for got, want in ((best, ref_best), (last, ref_last)):
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


def test_same_run_rule(reference: tuple[Path, list[int]]) -> None:
    root, _ = reference
    cfg = tiny_config(root, "reference")
    want = json.loads((root / "reference" / "train.json").read_text())
    # Runtime keys may change: the finished run is reused, not retrained.
    assert train_fewshot(dataclasses.replace(cfg, device="cpu", workers=0, cache_dir=str(root / "other-cache")), progress=False) == want
    for change in ({"seed": 1}, {"lr": 0.1}, {"amp": True}, {"grad_clip": 1.0}):
        with pytest.raises(AnivisionError, match=f"different .*{next(iter(change))}"):
            train_fewshot(dataclasses.replace(cfg, **change), progress=False)
    # An older config.json without the new keys counts as their defaults.
    saved = json.loads((root / "reference" / "config.json").read_text())
    older = {k: v for k, v in saved.items() if k not in ("grad_clip", "amp")}
    assert not cfg.differences(older)


def test_supervised_pretraining_then_episodes(reference: tuple[Path, list[int]]) -> None:
    root, _ = reference
    cfg = tiny_config(root, "pretrained", pretrain="supervised", pretrain_epochs=1, pretrain_batch_size=8, epochs=1, episodes_per_epoch=1)
    steps: list[int] = []
    s = train_fewshot(cfg, progress=False, on_step=steps.append)
    assert steps == [0, 1, 2]  # 16 training images in batches of 8, then one episode
    assert (Path(cfg.out) / "pretrain" / "backbone.safetensors").exists()
    assert s["best_epoch"] in (0, 1) and s["n_train_images"] == 16  # epoch 0 (before meta-training) is a candidate too


def test_train_errors_for_small_classes(tmp_path: Path) -> None:
    data = make_shapes(tmp_path / "data", n_classes=4, n_per_class=4)
    cfg = FewShotTrainConfig(data=str(data), out=str(tmp_path / "run"), backbone="test_efficientnet", weights="none", img_size=32,
                             classes="2/1/1", n_way=2, k_shot=2, n_query=3, cache_dir=str(tmp_path / "cache"))
    with pytest.raises(AnivisionError, match=r"has 4 images; 2-shot \+ 3-query episodes need 5"):
        train_fewshot(cfg, progress=False)
