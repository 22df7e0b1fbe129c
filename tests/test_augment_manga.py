"""The manga augmentation steps (greyscale, screentone) and runs saved before they existed."""

from __future__ import annotations

import dataclasses
import json

import torch

from anivision.data.transforms import AugmentConfig, DataConfig, Screentone, train_transform
from anivision.tasks.classify import TrainConfig

DCFG = DataConfig(32, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), crop_pct=1.0)
OFF = dict(crop_scale=None, hflip=0.0, rotation=0.0, color_jitter=(0.0, 0.0, 0.0, 0.0), random_erasing=0.0)


def test_greyscale_makes_channels_equal() -> None:
    torch.manual_seed(0)
    x = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)
    y = train_transform(DCFG, AugmentConfig(**OFF, grayscale=1.0))(x)
    assert torch.equal(y[0], y[1]) and torch.equal(y[1], y[2])
    assert not torch.equal(train_transform(DCFG, AugmentConfig(**OFF))(x)[0], y[0])


def test_screentone_darkens_in_a_periodic_dot_pattern() -> None:
    torch.manual_seed(0)
    white = torch.ones(3, 64, 64)
    toned = Screentone(p=1.0)(white)
    assert toned.min() < 0.97 and toned.max() <= 1.0 and toned.min() >= 0.0
    assert torch.equal(toned[0], toned[1])  # the same tone on every channel: grey stays grey
    assert toned[0].max() - toned[0].min() > 0.03 and toned[0].std() > 0.01  # dots, not a flat shade
    assert torch.equal(Screentone(p=0.0)(white), white)


def test_run_saved_before_the_manga_steps_is_the_same_run(tmp_path) -> None:
    cfg = TrainConfig(data=str(tmp_path / "d"), out=str(tmp_path / "r"))
    old = json.loads(json.dumps(cfg.to_dict(), default=list))
    for k in ("grayscale", "screentone"):
        del old["aug"][k]
    assert cfg.differences(old) == []
    changed = dataclasses.replace(cfg, aug=dataclasses.replace(cfg.aug, grayscale=0.5))
    assert changed.differences(old) == ["aug"]
