"""One vocabulary across the CLI: every option explained with its default, one spelling per concept,
old spellings kept (hidden, with a note) for one release, required options required at parse time,
and ``--weights imagenet`` without a network failing at once with one line."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest
import timm
import torch
from PIL import Image
from safetensors.torch import save_file

from anivision.cli import build_parser, main
from anivision.commands import SHARED_HELP, HelpFormatter, fewshot
from anivision.models import backbone
from anivision.models.backbone import DEFAULT_BACKBONE, create_backbone


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, parser) of the parser and every sub-parser below it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _walk(sub, (*path, name))


PARSERS = list(_walk(build_parser()))
LEAVES = [(p, sp) for p, sp in PARSERS if not any(isinstance(a, argparse._SubParsersAction) for a in sp._actions)]


def _visible(parser: argparse.ArgumentParser) -> list[argparse.Action]:
    """The parser's arguments that --help shows, except -h itself."""
    return [a for a in parser._actions if a.help is not argparse.SUPPRESS and not isinstance(a, (argparse._HelpAction, argparse._VersionAction, argparse._SubParsersAction))]


def test_the_walk_reaches_every_command() -> None:
    names = {" ".join(p) for p, _ in LEAVES}
    assert {"train", "demo", "synth", "data check", "faces crop", "bench", "fewshot train", "fewshot evaluate",
            "enroll", "identify", "retrieval train", "retrieval evaluate", "retrieval search"} <= names


@pytest.mark.parametrize("path,parser", PARSERS, ids=[" ".join(p) or "anivision" for p, _ in PARSERS])
def test_every_option_says_what_it_does_and_its_default(path: tuple[str, ...], parser: argparse.ArgumentParser) -> None:
    assert issubclass(parser.formatter_class, argparse.ArgumentDefaultsHelpFormatter)
    formatter = parser._get_formatter()
    for action in _visible(parser):
        name = "/".join(action.option_strings) or action.metavar or action.dest
        assert (action.help or "").strip(), f"{' '.join(path)} {name}: no help"
        switch = isinstance(action, argparse._StoreTrueAction)
        needs_default = not action.required and not switch and (action.option_strings or action.nargs == "?")
        if needs_default:
            shown = formatter._get_help_string(action)
            assert "default" in shown, f"{' '.join(path)} {name}: the help does not show the default"
            assert "None" not in shown % {"default": action.default}, f"{' '.join(path)} {name}: shows 'None' as its default"


def test_shared_concepts_have_one_spelling_and_one_wording() -> None:
    flags_by_dest: dict[str, set[tuple[str, ...]]] = {}
    for path, parser in LEAVES:
        for action in _visible(parser):
            flags = tuple(action.option_strings)
            # A run is the first positional, except where a command takes several sources
            # (serve: classifiers; embed: a run or a backbone).
            banned = {"--metric", "--no-progress", "--no-amp"} | (set() if path[0] in ("serve", "embed") else {"--run"})
            assert not banned & set(flags) or flags == ("--amp", "--no-amp"), (path, flags)
            if action.dest in ("distance", "out", "cache_dir", "device", "workers", "seed", "top_k", "batch_size", "img_size", "epochs"):
                flags_by_dest.setdefault(action.dest, set()).add(flags)
            for flag in flags:
                if flag in SHARED_HELP:
                    assert action.help.startswith(SHARED_HELP[flag]), f"{' '.join(path)} {flag}: {action.help!r}"
            if "--split" in flags:  # a split CSV, nothing else; faces name a split of images.csv
                assert action.metavar == ("NAME" if path[0] == "faces" else "SPLIT.csv"), path
            if "--amp" in flags:
                assert isinstance(action, argparse.BooleanOptionalAction), path
            if action.dest == "distance":
                assert tuple(action.choices) == ("cosine", "euclidean"), path
    assert {dest: sorted(f) for dest, f in flags_by_dest.items()} == {
        "distance": [("--distance",)], "out": [("--out",)], "cache_dir": [("--cache-dir",)], "device": [("--device",)],
        "workers": [("--workers",)], "seed": [("--seed",)], "top_k": [("--top-k",)], "batch_size": [("--batch-size",)],
        "img_size": [("--img-size",)], "epochs": [("--epochs",)],
    }


def test_the_run_or_gallery_comes_first() -> None:
    parser = build_parser()
    a = parser.parse_args(["fewshot", "evaluate", "runs/proto", "--n-way", "3"])
    assert a.run == "runs/proto" and a.n_way == 3
    assert parser.parse_args(["fewshot", "evaluate", "--data", "d"]).run is None
    a = parser.parse_args(["enroll", "tf_efficientnet_lite0", "chars/", "--weights", "none", "--out", "g"])
    assert (a.source, a.characters, a.weights, a.out) == ("tf_efficientnet_lite0", "chars/", "none", "g")
    # Positionals and options may interleave.
    a = parser.parse_args(["enroll", "runs/proto", "--k-shot", "2", "chars/", "--out", "g"])
    assert (a.source, a.characters, a.k_shot) == ("runs/proto", "chars/", 2)
    a = parser.parse_args(["identify", "g", "x.png", "y.png"])
    assert (a.gallery, a.paths) == ("g", ["x.png", "y.png"])


# ------------------------------------------------------------------------ old spellings


@pytest.mark.parametrize(
    "argv,expected,notes",
    [
        (["retrieval", "search", "RUN", "q.jpg", "--gallery", "G"], {"gallery_images": "G", "run_dir": "RUN"}, ["--gallery"]),
        (["retrieval", "train", "--data", "D", "--out", "O", "--metric", "euclidean"], {"distance": "euclidean"}, ["--metric"]),
        (["retrieval", "evaluate", "RUN", "--metric=euclidean"], {"distance": "euclidean"}, ["--metric"]),
        (["fewshot", "evaluate", "--run", "R", "--split", "unseen"], {"run": "R", "class_set": "unseen"}, ["--run", "--split"]),
        (["enroll", "--run", "R", "--gallery", "G", "--out", "O"], {"source": "R", "characters": "G"}, ["--run", "--gallery"]),
        (["enroll", "--backbone", "resnet10t", "--weights", "none", "--gallery", "G", "--out", "O"],
         {"source": "resnet10t", "characters": "G", "weights": "none"}, ["--backbone", "--gallery"]),
        (["enroll", "--gallery", "G", "--out", "O"], {"source": DEFAULT_BACKBONE, "characters": "G"}, ["--gallery"]),
        (["enroll", "R", "--out", "O", "--gallery", "G"], {"source": "R", "characters": "G"}, ["--gallery"]),
        (["data", "check", "D", "--no-progress"], {"quiet": True}, ["--no-progress"]),
        (["faces", "crop", "S", "D", "--no-progress"], {"quiet": True}, ["--no-progress"]),
    ],
)
def test_old_spellings_still_parse_with_a_note(argv: list[str], expected: dict, notes: list[str], capsys: pytest.CaptureFixture) -> None:
    args = build_parser().parse_args(argv)
    for key, value in expected.items():
        assert getattr(args, key) == value, key
    err = capsys.readouterr().err.splitlines()
    assert [line.split(" is deprecated")[0] for line in err] == [f"note: {old}" for old in notes]
    assert all("; use " in line for line in err)


def test_no_progress_runs_quietly_with_a_note(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "synth"
    assert main(["synth", "--task", "emotion", "--out", str(out), "--n-per-class", "1", "--size", "24", "--no-progress"]) == 0
    captured = capsys.readouterr()
    assert captured.err.strip() == "note: --no-progress is deprecated; use -q/--quiet"
    assert "synth emotion: wrote" in captured.out


def test_amp_is_one_word_with_its_own_default_per_task() -> None:
    parser = build_parser()
    base = ["retrieval", "train", "--data", "D", "--out", "O"]
    assert parser.parse_args(base).amp is True
    assert parser.parse_args([*base, "--no-amp"]).amp is False
    assert parser.parse_args(["fewshot", "train", "--data", "D", "--out", "O"]).amp is False
    assert parser.parse_args(["fewshot", "train", "--data", "D", "--out", "O", "--amp"]).amp is True
    assert parser.parse_args(["train", "--data", "D", "--out", "O", "--amp"]).amp is True


# ------------------------------------------------------------------------ required at parse time


@pytest.mark.parametrize(
    "argv,missing",
    [
        (["train", "--data", "D"], "--out"),
        (["bench", "--data", "D", "--backbones", "resnet18"], "--out"),
        (["enroll", "R", "--out", "O"], "CHARACTERS"),
        (["enroll", "R", "C"], "--out"),
        (["retrieval", "search", "RUN", "q.jpg"], "--gallery-images"),
    ],
)
def test_required_options_fail_at_parse_time(argv: list[str], missing: str, capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required" in err and missing in err.splitlines()[-1]


def test_train_without_out_names_it(capsys: pytest.CaptureFixture) -> None:
    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["train", "--data", "D"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "the following arguments are required: --out" in err
    assert err.splitlines()[0].startswith("usage: anivision train --out RUN [options]")


# ------------------------------------------------------------------------ printed numbers


def test_accuracies_print_as_percent_with_two_decimals() -> None:
    assert fewshot._percent(0.874449, 0.011) == "87.44% ± 1.10"
    assert fewshot._percent(None, None) == "n/a"


# ------------------------------------------------------------------------ --weights imagenet offline


def _characters(root: Path) -> Path:
    for c, colour in (("a", (200, 30, 30)), ("b", (30, 30, 200))):
        (root / c).mkdir(parents=True)
        for i in range(2):
            Image.new("RGB", (32, 32), colour).save(root / c / f"{i}.png")
    return root


@pytest.mark.parametrize("how", ["HF_HUB_OFFLINE", "unreachable"])
def test_imagenet_weights_without_network_fail_fast_in_one_line(
    how: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    # Not in the local cache (whatever this machine holds), and no network.
    monkeypatch.setattr(backbone, "hub_weights_source", lambda name: ("https://huggingface.co", None))
    if how == "HF_HUB_OFFLINE":
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.setattr(backbone, "host_reachable", lambda url, timeout=3.0: pytest.fail("asked the network while offline"))
    else:
        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(backbone, "host_reachable", lambda url, timeout=3.0: False)
    chars = _characters(tmp_path / "chars")
    start = time.monotonic()
    rc = main(["-q", "enroll", "resnet10t", str(chars), "--weights", "imagenet", "--out", str(tmp_path / "g"),
               "--cache-dir", str(tmp_path / "cache")])
    elapsed = time.monotonic() - start
    captured = capsys.readouterr()
    assert rc == 2 and elapsed < 5.0
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in captured.err, captured.err
    assert lines[0].startswith("error: cannot fetch ImageNet weights for 'resnet10t'")
    assert "--weights none" in lines[0] and "--weights FILE" in lines[0]


def test_cached_imagenet_weights_load_without_network(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    full = timm.create_model("resnet10t", pretrained=False)  # with its 1000-class head, as on the hub
    cached = tmp_path / "model.safetensors"
    save_file({k: v.contiguous() for k, v in full.state_dict().items()}, str(cached))
    monkeypatch.setattr(backbone, "hub_weights_source", lambda name: ("https://huggingface.co", str(cached)))
    monkeypatch.setattr(backbone, "host_reachable", lambda url, timeout=3.0: False)
    model = create_backbone("resnet10t", "imagenet")
    assert torch.equal(model.state_dict()["conv1.0.weight"], full.state_dict()["conv1.0.weight"])


def test_help_formatter_is_the_clis() -> None:
    assert all(sp.formatter_class is HelpFormatter for _, sp in PARSERS)
