"""Partial fine-tuning on cached activations of the frozen prefix (``--prefix-cache``)."""

import dataclasses
import json

import pytest
import torch
from torch import nn

from anivision.cli import main
from anivision.tasks.classify import NO_AUGMENT, resolve_train_config, train_option_defaults
from anivision.errors import AnivisionError
from anivision.models.backbone import create_backbone
from anivision.models.classifier import Classifier
from anivision.models.split import split_frozen_prefix
from anivision.strategies import Strategy, backbone_groups
from anivision.tasks.classify import train_classifier

from conftest import TINY_CNN, TINY_VIT, Killed, cli_train_config, kill_at_step


def _tiny_resnet() -> nn.Module:
    from timm.models.resnet import BasicBlock, ResNet

    return ResNet(BasicBlock, [1, 1, 1, 1], num_classes=0)


@pytest.mark.parametrize("name", [TINY_CNN, TINY_VIT, "vanilla_cnn", "resnet"])
@pytest.mark.parametrize("groups", [1, 2])
def test_prefix_then_suffix_equals_the_whole_model(name, groups):
    torch.manual_seed(0)
    backbone = _tiny_resnet() if name == "resnet" else create_backbone(name, "none", img_size=32)
    model = Classifier(backbone, 4).eval()
    Strategy("partial", backbone_groups(backbone), partial_groups=groups).apply(model, 0)
    prefix, suffix, k = split_frozen_prefix(backbone, model.head)
    assert k > 0
    assert not any(p.requires_grad for p in prefix.parameters())
    # Every trainable parameter of the classifier is in the suffix, and nothing frozen is.
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in suffix.parameters()} == trainable
    x = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(suffix(prefix(x)), model(x))


def test_training_more_groups_moves_the_cut_down():
    backbone = create_backbone(TINY_CNN, "none", img_size=32)
    model = Classifier(backbone, 3)
    cuts = []
    for g in (1, 2, 3):
        Strategy("partial", backbone_groups(backbone), partial_groups=g).apply(model, 0)
        cuts.append(split_frozen_prefix(backbone, model.head)[2])
    assert cuts[0] > cuts[1] > cuts[2]


def test_unknown_family_and_nothing_frozen_are_refused():
    class Odd(nn.Module):
        num_features = 4

        def forward(self, x):
            return x.mean(dim=(2, 3))

    with pytest.raises(AnivisionError, match="no frozen-prefix split"):
        split_frozen_prefix(Odd(), nn.Linear(4, 2))
    backbone = create_backbone(TINY_CNN, "none", img_size=32)
    model = Classifier(backbone, 3)
    Strategy("full", backbone_groups(backbone)).apply(model, 0)
    with pytest.raises(AnivisionError, match="no frozen prefix"):
        split_frozen_prefix(backbone, model.head)


def _cfg(data, out, cache, **extra):
    opts = train_option_defaults() | dict(
        data=str(data), out=str(out), backbone=TINY_CNN, weights="none", img_size=32, batch_size=8,
        epochs=3, strategy="partial", partial_groups=2, cache_dir=str(cache), dropout=0.0,
    )
    return resolve_train_config(opts | extra)


def test_prefix_cache_trains_exactly_like_the_live_network(tiny_data, cache_dir, tmp_path):
    cached = _cfg(tiny_data, tmp_path / "cached", cache_dir, prefix_cache=True)
    assert cached.prefix_cache and cached.aug == NO_AUGMENT  # the flag switches augmentation off
    live = dataclasses.replace(_cfg(tiny_data, tmp_path / "live", cache_dir), aug=NO_AUGMENT)
    m_live = train_classifier(live, progress=False)
    m_cached = train_classifier(cached, progress=False)
    assert m_cached["prefix_cache"] is True and m_live["prefix_cache"] is False
    h_live = [json.loads(l) for l in (tmp_path / "live" / "metrics.jsonl").read_text().splitlines()]
    h_cached = [json.loads(l) for l in (tmp_path / "cached" / "metrics.jsonl").read_text().splitlines()]
    for a, b in zip(h_live, h_cached, strict=True):
        for k in ("train_loss", "val_loss", "val_acc"):
            assert b[k] == pytest.approx(a[k], rel=1e-4, abs=1e-5), k
    assert m_cached["accuracy"] == pytest.approx(m_live["accuracy"])
    assert m_cached["nll"] == pytest.approx(m_live["nll"], rel=1e-4)
    # The activations were cached once: a second run with the same weights reuses the file.
    n_files = len(list((cache_dir / "features").iterdir()))
    train_classifier(_cfg(tiny_data, tmp_path / "again", cache_dir, prefix_cache=True, seed=42), progress=False)
    assert len(list((cache_dir / "features").iterdir())) == n_files


def test_prefix_cache_flag_at_the_cli(tiny_data, cache_dir, tmp_path):
    out = tmp_path / "run"
    args = ["-q", "train", "--data", str(tiny_data), "--backbone", TINY_VIT, "--weights", "none", "--img-size", "32",
            "--batch-size", "8", "--cache-dir", str(cache_dir), "--epochs", "2", "--strategy", "partial",
            "--prefix-cache", "--out", str(out)]
    assert main(args) == 0
    saved = json.loads((out / "config.json").read_text())
    assert saved["prefix_cache"] is True and saved["aug"]["hflip"] == 0.0
    assert json.loads((out / "metrics.json").read_text())["prefix_cache"] is True
    # Other strategies ignore the flag (a bench grid passes it to every cell).
    full = _cfg(tiny_data, tmp_path / "full", cache_dir, prefix_cache=True, strategy="full")
    assert full.prefix_cache is False and full.aug != NO_AUGMENT


def test_prefix_cache_run_resumes_after_kill(tiny_data, cache_dir, tmp_path):
    def args(out):
        return ["-q", "train", "--data", str(tiny_data), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                "--batch-size", "8", "--cache-dir", str(cache_dir), "--epochs", "3", "--strategy", "partial",
                "--partial-groups", "2", "--prefix-cache", "--out", str(out)]

    assert main(args(tmp_path / "whole")) == 0
    with pytest.raises(Killed):  # mid-epoch 3 (3 steps per epoch)
        train_classifier(cli_train_config(args(tmp_path / "killed")), progress=False, on_step=kill_at_step(7))
    assert not (tmp_path / "killed" / "metrics.json").exists()
    assert main(args(tmp_path / "killed")) == 0
    a = json.loads((tmp_path / "whole" / "metrics.json").read_text())
    b = json.loads((tmp_path / "killed" / "metrics.json").read_text())
    for k in ("accuracy", "nll", "confusion_matrix"):
        assert a[k] == b[k], k


def test_prefix_cache_that_would_not_fit_in_memory_is_refused(tiny_data, cache_dir, tmp_path, monkeypatch):
    monkeypatch.setattr("anivision.tasks.classify.data.memory_budget_bytes", lambda: 1000)
    cfg = _cfg(tiny_data, tmp_path / "big", cache_dir, prefix_cache=True)
    with pytest.raises(AnivisionError, match="would take .* GiB for \\d+ images"):
        train_classifier(cfg, progress=False)
    assert not (cache_dir / "features").exists()  # refused before computing anything
