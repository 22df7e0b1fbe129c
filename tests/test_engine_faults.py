"""Fault injection: a checkpoint is one atomic unit, and a run folder is locked to one process."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from torch import nn

from anivision.cli import main
from anivision.config import RunConfig
from anivision.engine import checkpoint as ckpt
from anivision.engine.run import BestTracker, RunFolder
from anivision.errors import AnivisionError
from anivision.tasks.classify import train_classifier

from conftest import assert_same_results, cli_train_config

fcntl = pytest.importorskip("fcntl")

FAULTS = ("after_model", "after_optimizer", "between_renames")


class Fault(Exception):
    """A process killed (or a disk filled up) in the middle of a checkpoint save."""


def _inject(monkeypatch, where: str, on_save: int = 1) -> None:
    """Make the ``on_save``-th checkpoint save from now on die at ``where``."""
    calls = {"n": 0}

    def armed() -> bool:
        calls["n"] += 1
        return calls["n"] == on_save

    if where == "after_model":  # model.safetensors written, optimizer not yet
        real_flatten = ckpt._flatten_optimizer
        monkeypatch.setattr(ckpt, "_flatten_optimizer", lambda opt: (_ for _ in ()).throw(Fault(where)) if armed() else real_flatten(opt))
    elif where == "after_optimizer":  # both tensor files written, state.json not yet (ENOSPC)
        real_json = ckpt.atomic_write_json

        def write_json(path, obj):
            if Path(path).name == "state.json" and armed():
                raise OSError(28, "No space left on device")
            real_json(path, obj)

        monkeypatch.setattr(ckpt, "atomic_write_json", write_json)
    else:  # the old checkpoint moved aside, the new one not yet renamed into place
        real_replace = os.replace

        def replace(src, dst, *a, **k):
            if ".new-" in Path(src).name and Path(src).is_dir() and armed():
                raise Fault(where)
            real_replace(src, dst, *a, **k)

        monkeypatch.setattr(os, "replace", replace)


def _toy(value: float) -> tuple[nn.Linear, torch.optim.Optimizer]:
    """A model, and an optimizer with a momentum buffer, whose every tensor equals ``value``."""
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    model(torch.ones(1, 3)).sum().backward()
    opt.step()
    with torch.no_grad():
        for p in model.parameters():
            p.fill_(value)
            opt.state[p]["momentum_buffer"].fill_(value)
    return model, opt


def _assert_consistent(folder: Path, expected_epochs: tuple[int, ...]) -> int:
    model, opt = _toy(-1.0)
    state = ckpt.load_checkpoint(folder, model, opt, recover=True)
    assert state is not None and state["epoch"] in expected_epochs
    epoch = state["epoch"]
    assert torch.all(model.weight == float(epoch)), "weights from another epoch than state.json"
    assert all(torch.all(s["momentum_buffer"] == float(epoch)) for s in opt.state.values()), "optimizer from another epoch"
    # Recovery leaves exactly the checkpoint folder: no .new-*/.old-* siblings.
    assert sorted(p.name for p in folder.parent.iterdir()) == [folder.name]
    return epoch


@pytest.mark.parametrize("where", FAULTS)
def test_interrupted_save_leaves_one_whole_checkpoint(tmp_path, monkeypatch, where):
    folder = tmp_path / "run" / "checkpoint"
    ckpt.save_checkpoint(folder, *_toy(0.0), {"epoch": 0})
    _inject(monkeypatch, where)
    with pytest.raises((Fault, OSError)):
        ckpt.save_checkpoint(folder, *_toy(1.0), {"epoch": 1})
    monkeypatch.undo()
    # Killed between the renames, both checkpoints are whole: the newer one wins.
    epoch = _assert_consistent(folder, (1,) if where == "between_renames" else (0,))
    # The next save works on top of whatever the fault left.
    ckpt.save_checkpoint(folder, *_toy(epoch + 1.0), {"epoch": epoch + 1})
    assert _assert_consistent(folder, (epoch + 1,)) == epoch + 1


def test_old_single_folder_checkpoints_still_load(tmp_path):
    folder = tmp_path / "checkpoint"
    folder.mkdir()
    model, opt = _toy(3.0)
    ckpt.save_weights(model, folder / "model.safetensors")  # the layout an older version wrote in place
    (folder / "state.json").write_text(json.dumps({"epoch": 3}))
    fresh = nn.Linear(3, 2)
    assert ckpt.load_checkpoint(folder, fresh)["epoch"] == 3
    assert torch.all(fresh.weight == 3.0)


@dataclass
class ToyConfig(RunConfig):
    epochs: int = 4


def _toy_run(out: Path) -> list[dict]:
    """A tiny deterministic training run through RunFolder (each epoch reseeds from its number)."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    run = RunFolder(out, ToyConfig())
    run.claim()
    state = run.resume(model, opt, BestTracker("min"))
    for epoch in state.epochs(4):
        g = torch.Generator().manual_seed(epoch)
        x = torch.randn(16, 4, generator=g)
        loss = ((model(x) - x.sum(1, keepdim=True)) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        state.tracker.update(loss.item(), epoch)
        run.end_epoch(state, epoch, {"epoch": epoch, "loss": loss.item(), "w": model.weight.sum().item()}, model, opt)
    return state.history


@pytest.mark.parametrize("where", FAULTS)
def test_run_killed_mid_save_resumes_to_identical_metrics(tmp_path, monkeypatch, where):
    full = _toy_run(tmp_path / "full")
    _inject(monkeypatch, where, on_save=3)  # dies while saving epoch 2
    with pytest.raises((Fault, OSError)):
        _toy_run(tmp_path / "killed")
    monkeypatch.undo()
    assert _toy_run(tmp_path / "killed") == full
    lines = (tmp_path / "killed" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(l) for l in lines] == full


def _train_args(data, out, cache, *extra):
    return ["-q", "train", "--data", str(data), "--backbone", "test_efficientnet", "--weights", "none", "--img-size", "32",
            "--batch-size", "8", "--cache-dir", str(cache), "--out", str(out), "--epochs", "3", *extra]


def test_classify_run_killed_between_renames_resumes_identically(tiny_data, cache_dir, tmp_path, monkeypatch):
    full_out, killed_out = tmp_path / "full", tmp_path / "killed"
    assert main(_train_args(tiny_data, full_out, cache_dir)) == 0
    _inject(monkeypatch, "between_renames", on_save=2)  # dies while saving epoch 2 of 3
    with pytest.raises(Fault):
        train_classifier(cli_train_config(_train_args(tiny_data, killed_out, cache_dir)), progress=False)
    monkeypatch.undo()
    assert not (killed_out / "checkpoint").exists()
    assert main(_train_args(tiny_data, killed_out, cache_dir)) == 0
    assert_same_results(full_out, killed_out)
    assert not list(killed_out.glob("checkpoint.*"))


_HOLDER = """
import sys, time
from anivision.engine.run import RunFolder
RunFolder(sys.argv[1]).claim()
print("ready", flush=True)
time.sleep(120)
"""


def _flock_free(path: Path) -> bool:
    with open(path / ".lock", "a+") as fh:
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return False
        fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
        return True


def test_second_process_cannot_claim_a_run_folder_until_the_first_dies(tmp_path):
    out = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", _HOLDER, str(out)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(AnivisionError, match=rf"another anivision process is using this run folder \(pid {holder.pid}\)"):
            RunFolder(out, ToyConfig()).claim()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    run = RunFolder(out, ToyConfig())
    run.claim()  # the OS dropped the dead process's lock: nothing stale to clean up
    assert (out / ".lock").read_text().strip() == str(os.getpid())
    RunFolder(out, ToyConfig()).claim()  # the same process may claim its folder again
    assert not _flock_free(out)
    run.release()
    assert _flock_free(out)
