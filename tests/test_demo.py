"""``anivision demo``: the embedded synthetic character task runs end to end and says what to expect."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from anivision.cli import main
from anivision.commands.demo import DEMO_EPOCHS


def test_demo_tiny_runs_end_to_end_and_learns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv("ANIVISION_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "demo"
    assert main(["-q", "demo", "--out", str(out), "--n-per-class", "8", "--n-classes", "4"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    # The last lines: the test result, where the report is, what to expect.
    assert printed[-3].startswith("test: accuracy")
    assert printed[-2] == f"report: {out / 'run' / 'report.md'}"
    assert printed[-1].startswith("expected: ") and "chance is 25.0%" in printed[-1]
    assert (out / "run" / "report.md").is_file()
    synth = json.loads((out / "data" / "synth.json").read_text())
    assert synth["task"] == "character" and synth["n_classes"] == 4
    m = json.loads((out / "run" / "metrics.json").read_text())
    config = json.loads((out / "run" / "config.json").read_text())
    assert config["strategy"] == "linear_probe" and config["epochs"] == DEMO_EPOCHS["linear_probe"]
    assert m["n_images"] == 4
    # Four cartoon characters are easy for ImageNet features: far better than chance (25%).
    assert m["accuracy"] >= 0.75


def test_demo_refuses_too_few_classes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["-q", "demo", "--out", str(tmp_path / "demo"), "--n-classes", "1"]) == 2
    assert "--n-classes" in capsys.readouterr().err
    assert not (tmp_path / "demo").exists()
