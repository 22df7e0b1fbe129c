"""Train-config resolution: defaults < recipe < YAML < flags, and the recipes' published values."""

import json

import pytest

from anivision.tasks.classify import TrainConfig, recipe_values, resolve_train_config, train_option_defaults
from anivision.errors import AnivisionError


def _opts(tmp_path, **kw):
    o = train_option_defaults()
    o.update(data=str(tmp_path), out=str(tmp_path / "run"))
    o.update(kw)
    return o


def test_fer_recipe_per_strategy(tmp_path):
    full = resolve_train_config(_opts(tmp_path, recipe="fer", strategy="full"))
    assert (full.optimizer, full.lr_head, full.lr_backbone, full.weight_decay) == ("adamw", 1e-3, 1e-5, 1e-4)
    assert (full.epochs, full.patience, full.warmup_epochs, full.grad_clip, full.schedule) == (40, 10, 3.0, 1.0, "cosine")
    assert full.img_size == 224 and full.crop_pct == pytest.approx(224 / 256)
    assert full.aug.crop_scale == (0.8, 1.0) and full.aug.rotation == 10.0 and full.aug.random_erasing == 0.1
    lp = resolve_train_config(_opts(tmp_path, recipe="fer", strategy="linear_probe"))
    assert (lp.lr_head, lp.epochs, lp.patience) == (1e-3, 20, 5)
    part = resolve_train_config(_opts(tmp_path, recipe="fer", strategy="partial"))
    assert (part.lr_head, part.lr_backbone, part.epochs, part.patience) == (1e-3, 1e-4, 30, 7)


def test_aniwho_recipe(tmp_path):
    c = resolve_train_config(_opts(tmp_path, recipe="aniwho", strategy="full"))
    assert (c.optimizer, c.momentum, c.lr_head, c.schedule, c.plateau_factor, c.plateau_patience, c.min_lr) == (
        "sgd", 0.9, 0.005, "plateau", 0.2, 3, 1e-5)
    assert (c.monitor, c.patience, c.img_size, c.dropout) == ("val_loss", 6, 96, 0.2)
    assert c.aug.vflip == 0.5 and c.aug.translate == 0.2 and c.aug.zoom == 0.2


def test_openset_recipe_is_the_defaults_plus_cosine_head_and_greyscale(tmp_path):
    c = resolve_train_config(_opts(tmp_path, recipe="openset"))
    d = TrainConfig()
    assert (c.head, c.margin, c.label_smoothing, c.aug.grayscale) == ("cosine", 0.25, 0.0, 0.3)
    assert c.aug.crop_scale == d.aug.crop_scale and c.aug.color_jitter == d.aug.color_jitter
    assert (c.strategy, c.epochs, c.img_size, c.lr_backbone) == (d.strategy, d.epochs, d.img_size, d.lr_backbone)
    assert d.head == "linear" and d.aug.grayscale == 0.0  # the defaults themselves are untouched
    c = resolve_train_config(_opts(tmp_path, recipe="openset", head="linear", margin=0.1))
    assert (c.head, c.margin, c.aug.grayscale) == ("linear", 0.1, 0.3)  # flags beat the recipe
    lp = resolve_train_config(_opts(tmp_path, recipe="openset", strategy="linear_probe"))
    assert (lp.head, lp.epochs, lp.lr_head) == ("cosine", 20, 3e-3)


def test_flags_override_yaml_override_recipe(tmp_path):
    y = tmp_path / "c.yaml"
    y.write_text("epochs: 7\nlr-head: 0.01\nimg_size: 64\n")
    c = resolve_train_config(_opts(tmp_path, recipe="fer", strategy="full", config=str(y), img_size=48))
    assert c.epochs == 7 and c.lr_head == 0.01  # YAML beats the recipe
    assert c.img_size == 48  # the flag beats YAML
    assert c.lr_backbone == 1e-5  # untouched recipe value
    d = resolve_train_config(_opts(tmp_path, strategy="linear_probe", no_feature_cache=True, grad_clip=0))
    assert d.feature_cache is False and d.grad_clip is None
    assert TrainConfig.from_dict(d.to_dict()) == d  # config.json round trip


def test_bad_config(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("nonsense_key: 1\n")
    with pytest.raises(AnivisionError, match="unknown config key"):
        resolve_train_config(_opts(tmp_path, config=str(bad)))
    with pytest.raises(AnivisionError, match="at least 1"):
        resolve_train_config(_opts(tmp_path, epochs=0))
    with pytest.raises(AnivisionError, match="unknown recipe"):
        recipe_values("magic", "full")
    with pytest.raises(AnivisionError, match="needs --out"):
        resolve_train_config({**train_option_defaults(), "data": str(tmp_path)})


def test_config_saved_before_a_field_existed_still_matches(tmp_path):
    cfg = resolve_train_config(train_option_defaults() | {"data": str(tmp_path), "out": str(tmp_path / "o")})
    old = json.loads(json.dumps(cfg.to_dict()))
    del old["prefix_cache"]  # a run folder written by an older anivision
    del old["amp"]
    assert cfg.differences(old) == []
    old["epochs"] = cfg.epochs + 1
    assert cfg.differences(old) == ["epochs"]
    old["epochs"] = cfg.epochs
    old["device"], old["out"] = "cuda:3", "/elsewhere"  # runtime keys: a moved folder, another machine
    assert cfg.differences(old) == []
    old["no_such_key"] = 1
    with pytest.raises(AnivisionError, match="unknown config key.*no_such_key"):
        cfg.differences(old)
