"""The README's Python API section runs as written (on the example data its own commands make)."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import anivision as av
from anivision.cli import main

ROOT = Path(__file__).resolve().parents[1]


def _section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


def _blocks(section: str, lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", section, flags=re.S)


def test_readme_python_api_examples_run_as_written(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ANIVISION_CACHE", str(tmp_path / "cache"))
    section = _section("Python API")
    for block in _blocks(section, "bash"):
        for line in block.splitlines():
            cmd = line.split("#")[0].strip()
            if cmd:
                args = shlex.split(cmd)
                assert args[0] == "anivision"
                assert main(["-q", *args[1:]]) == 0, cmd
    code = _blocks(section, "python")
    assert code, "the README has no Python example"
    namespace: dict = {}
    exec(compile("\n".join(code), "README.md", "exec"), namespace)  # noqa: S102 - our own README
    out = capsys.readouterr().out
    assert "test accuracy" in out and "%" in out
    assert isinstance(namespace["clf"], av.ImageClassifier)
    assert len(namespace["preds"]) == 3 and namespace["preds"][0].label == namespace["preds"][1].label == namespace["preds"][2].label
    assert namespace["probs"].shape == (60, 6) and namespace["features"].shape[0] == 60
    assert isinstance(namespace["gallery"], av.Gallery) and (tmp_path / "gallery" / "gallery.json").exists()


def test_every_public_name_is_documented():
    doc = (ROOT / "docs" / "API.md").read_text()
    missing = [name for name in av.__all__ if f"`{name}" not in doc and f"{name}(" not in doc]
    assert not missing, f"docs/API.md does not list: {missing}"
