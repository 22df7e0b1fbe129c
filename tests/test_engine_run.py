"""The run folder: one same-run rule, resume, the best-epoch tracker."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from typing import ClassVar

import pytest
import torch
from torch import nn

from anivision.config import RunConfig
from anivision.engine.run import BestTracker, RunFolder, check_same_config
from anivision.errors import AnivisionError


@dataclass
class ToyConfig(RunConfig):
    lr: float = 0.1
    epochs: int = 3
    device: str | None = None
    sizes: tuple[int, int] = (1, 2)

    RUNTIME_KEYS: ClassVar[tuple[str, ...]] = ("device",)


def test_same_run_rule(tmp_path):
    run = RunFolder(tmp_path / "run", ToyConfig())
    run.claim()
    saved = json.loads((tmp_path / "run" / "config.json").read_text())
    assert saved == {"lr": 0.1, "epochs": 3, "device": None, "sizes": [1, 2]}
    RunFolder(tmp_path / "run", ToyConfig(device="cuda:1")).claim()  # a runtime key may change
    with pytest.raises(AnivisionError, match=r"different settings \(epochs, lr\)"):
        RunFolder(tmp_path / "run", ToyConfig(lr=0.2, epochs=4)).claim()
    # A key missing from an old config.json counts as its default (the field was added later)...
    (tmp_path / "run" / "config.json").write_text(json.dumps({"lr": 0.1, "epochs": 3}))
    check_same_config(tmp_path / "run" / "config.json", ToyConfig())
    with pytest.raises(AnivisionError, match="sizes"):
        check_same_config(tmp_path / "run" / "config.json", ToyConfig(sizes=(3, 3)))
    # ...and a key this version does not know is an error that names it.
    (tmp_path / "run" / "config.json").write_text(json.dumps({"lr": 0.1, "warp": 9}))
    with pytest.raises(AnivisionError, match="unknown config key.*warp"):
        RunFolder(tmp_path / "run", ToyConfig()).claim()
    (tmp_path / "run" / "config.json").write_text("{not json")
    with pytest.raises(AnivisionError, match="not valid JSON"):
        RunFolder(tmp_path / "run", ToyConfig()).claim()
    check_same_config(tmp_path / "run" / "config.json", ToyConfig(), unreadable_ok=True)


def test_config_round_trip_and_unknown_keys(tmp_path):
    cfg = ToyConfig(lr=0.3, sizes=(4, 5))
    cfg.save(tmp_path / "c.json")
    assert ToyConfig.load(tmp_path / "c.json") == cfg  # lists come back as tuples
    with pytest.raises(AnivisionError, match="unknown config key.*bogus"):
        ToyConfig.from_dict({"bogus": 1})


def test_finished_run_is_reused_only_with_the_same_config(tmp_path):
    run = RunFolder(tmp_path, ToyConfig())
    assert run.finished("metrics.json") is None
    run.claim()
    run.write_json("metrics.json", {"accuracy": 0.5})
    assert RunFolder(tmp_path, ToyConfig(device="cpu")).finished("metrics.json") == {"accuracy": 0.5}
    with pytest.raises(AnivisionError, match="epochs"):
        RunFolder(tmp_path, ToyConfig(epochs=9)).finished("metrics.json")


@pytest.mark.parametrize(
    "mode, values, best_epoch, stops_after",
    [
        ("max", [0.5, 0.7, 0.6, 0.6, 0.9], 1, 3),
        ("min", [1.0, 0.8, 0.9, 0.85, 0.1], 1, 3),
        ("last", [0.1, 0.2, 0.0, 0.0, 0.0], 4, None),
        ("max", [math.nan, 0.2, 0.1, 0.1, 0.1], 1, 3),
    ],
)
def test_best_tracker(mode, values, best_epoch, stops_after):
    t = BestTracker(mode, patience=2)
    stopped_at = None
    for e, v in enumerate(values):
        t.update(v, e)
        if t.should_stop and stopped_at is None:
            stopped_at = e
            break
    assert stopped_at == stops_after
    assert t.best_epoch == best_epoch
    u = BestTracker(mode, patience=2)
    u.load_state_dict(json.loads(json.dumps(t.state_dict())))
    assert (u.best_epoch, u.bad_epochs) == (t.best_epoch, t.bad_epochs)
    assert BestTracker("max").update(None, 0)  # no validation: the newest epoch is kept


def test_resume_restores_weights_optimizer_history_tracker_and_extras(tmp_path):
    torch.manual_seed(0)
    model = nn.Linear(3, 2)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    run = RunFolder(tmp_path, ToyConfig())
    run.claim()
    state = run.resume(model, opt, BestTracker("max", patience=5))
    assert (state.next_epoch, state.history, state.resumed) == (0, [], False)
    for epoch in state.epochs(2):
        model(torch.randn(4, 3)).sum().backward()
        opt.step()
        state.tracker.update(0.5 + epoch, epoch)
        run.end_epoch(state, epoch, {"epoch": epoch + 1}, model, opt, extra={"plateau_scale": 0.2 * (epoch + 1)})
    # A line of an epoch that did not finish: the resumed run drops it.
    with open(tmp_path / "metrics.jsonl", "a") as fh:
        fh.write('{"epoch": 3}\n')
    model2 = nn.Linear(3, 2)
    opt2 = torch.optim.SGD(model2.parameters(), lr=0.1, momentum=0.9)
    state2 = RunFolder(tmp_path, ToyConfig()).resume(model2, opt2, BestTracker("max", patience=5))
    assert state2.next_epoch == 2 and state2.resumed
    assert state2.history == [{"epoch": 1}, {"epoch": 2}]
    assert (state2.tracker.best, state2.tracker.best_epoch) == (1.5, 1)
    assert state2.extra["plateau_scale"] == pytest.approx(0.4)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), model2.state_dict().values()))
    assert torch.equal(opt.state_dict()["state"][0]["momentum_buffer"], opt2.state_dict()["state"][0]["momentum_buffer"])
    assert (tmp_path / "metrics.jsonl").read_text().splitlines() == ['{"epoch": 1}', '{"epoch": 2}']
    assert list(state2.epochs(5)) == [2, 3, 4]


def test_early_stop_is_remembered_across_resume(tmp_path):
    model = nn.Linear(2, 2)
    run = RunFolder(tmp_path, ToyConfig())
    state = run.resume(model, None, BestTracker("max", patience=1))
    for epoch in state.epochs(10):
        state.tracker.update(1.0 - epoch, epoch)
        run.end_epoch(state, epoch, {"epoch": epoch}, model, None)
    assert state.stopped and state.next_epoch == 2
    again = RunFolder(tmp_path, ToyConfig()).resume(model, None, BestTracker("max", patience=1))
    assert again.stopped and list(again.epochs(10)) == []


@dataclass
class PathConfig(RunConfig):
    data: str = ""
    weights: str = "none"

    DATA_KEYS: ClassVar[tuple[str, ...]] = ("data",)
    FILE_KEYS: ClassVar[tuple[str, ...]] = ("weights",)


def test_data_and_file_keys_compare_as_locations(tmp_path, monkeypatch):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    (tmp_path / "w.safetensors").write_bytes(b"x")
    monkeypatch.chdir(tmp_path)
    cfg = PathConfig(data="a", weights="w.safetensors").with_absolute_paths()
    assert cfg.data == str(tmp_path / "a") and cfg.weights == str(tmp_path / "w.safetensors")
    assert PathConfig(weights="none").with_absolute_paths().weights == "none"  # a name stays a name
    saved = cfg.to_dict()
    assert PathConfig(data="./a/../a", weights="w.safetensors").differences(saved) == []  # same place, other spelling
    assert PathConfig(data="b", weights="w.safetensors").differences(saved) == ["data"]  # both exist, differ
    gone = dict(saved, data=str(tmp_path / "moved-away"), weights=str(tmp_path / "gone.safetensors"))
    assert PathConfig(data="b", weights="w.safetensors").differences(gone) == ["weights"]  # data moved: fine; a file must be the same
