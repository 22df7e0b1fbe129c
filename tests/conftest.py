"""Shared fixtures: tiny generated image datasets (no downloaded data, CPU, seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from anivision.cli import build_parser
from anivision.commands.classify import build_train_config

torch.set_num_threads(min(2, torch.get_num_threads()))

# A tiny timm backbone for tests (tens of thousands of parameters, any input size >= 16 px).
TINY_CNN = "test_efficientnet"
TINY_VIT = "test_vit"


def make_class_folders(root: Path, n_classes: int = 3, n_per_class: int = 12, size: int = 40, seed: int = 0) -> Path:
    """Write ``root/class<i>/<j>.png``: each class a distinct colour with noise, so it is learnable."""
    rng = np.random.default_rng(seed)
    palette = [(220, 40, 40), (40, 200, 60), (50, 70, 230), (230, 200, 40), (200, 60, 200), (40, 200, 200)]
    for c in range(n_classes):
        d = root / f"class{c}"
        d.mkdir(parents=True, exist_ok=True)
        base = np.array(palette[c % len(palette)], dtype=np.int16)
        for j in range(n_per_class):
            noise = rng.integers(-60, 60, size=(size, size, 3), dtype=np.int16)
            arr = np.clip(base + noise, 0, 255).astype(np.uint8)
            Image.fromarray(arr).save(d / f"img{j:03d}.png")
    return root


def run_cli(args: list[str], env_extra: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``python -m anivision.cli ARGS`` in a subprocess (for exit codes, stderr and killed runs)."""
    env = dict(os.environ, **(env_extra or {}))
    return subprocess.run([sys.executable, "-m", "anivision.cli", *args], capture_output=True, text=True, env=env)


def cli_train_config(args: list[str]):
    """The TrainConfig that ``anivision ARGS`` (a ``train`` command line, ``-q`` allowed) would train."""
    return build_train_config(build_parser().parse_args([a for a in args if a not in ("-q", "--quiet")]))


def assert_same_results(a: Path, b: Path, keys: tuple[str, ...] = ("accuracy", "nll", "f1_macro", "confusion_matrix", "epochs_run")) -> None:
    """Two classification run folders ended with the same test metrics and the same training losses."""
    import json

    ma, mb = (json.loads((d / "metrics.json").read_text()) for d in (a, b))
    for k in keys:
        assert ma[k] == mb[k], k
    ha, hb = ([json.loads(line)["train_loss"] for line in (d / "metrics.jsonl").read_text().splitlines()] for d in (a, b))
    assert ha == hb


class Killed(Exception):
    """Raised by :func:`kill_at_step`: a run stopped mid-epoch (power cut, OOM killer)."""


def kill_at_step(step: int):
    """An ``on_step`` callback for the training loop that stops the run before global ``step``.

    Nothing after the last finished epoch is saved, exactly as when the process is killed there.
    """

    def on_step(s: int) -> None:
        if s == step:
            raise Killed(f"killed at step {step}")

    return on_step


@pytest.fixture()
def tiny_data(tmp_path: Path) -> Path:
    """3 classes x 12 images of 40 px."""
    return make_class_folders(tmp_path / "data")


@pytest.fixture()
def cache_dir(tmp_path: Path) -> Path:
    return tmp_path / "cache"
