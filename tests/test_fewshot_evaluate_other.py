"""``fewshot evaluate``: a meta-trained run on another dataset (every class of it by default),
the grid's ``n/a`` reasons in grid terms, default output folders named after what was
evaluated, and ``--out`` that will not silently replace another evaluation's result."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_fewshot import make_shapes

from anivision.cli import main
from anivision.reports.fewshot import class_list
from anivision.tasks.fewshot import FewShotTrainConfig, backbone_spec, default_class_set, evaluation_name, train_fewshot
from anivision.tasks.fewshot.evaluate import cell_problem

OTHER_CLASSES = ["bae", "fauna", "gura", "kronii", "mumei"]


@pytest.fixture(scope="module")
def setup(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, Path]:
    """(a run meta-trained on char0..char5, another generated set with other names, the cache)."""
    root = tmp_path_factory.mktemp("fewshot_other")
    make_shapes(root / "data")
    cfg = FewShotTrainConfig(data=str(root / "data"), out=str(root / "run"), backbone="test_efficientnet", weights="none", img_size=32,
                             classes="2/2/2", epochs=1, episodes_per_epoch=2, n_way=2, k_shot=2, n_query=2, val_episodes=5,
                             cache_dir=str(root / "cache"))
    train_fewshot(cfg, progress=False)
    # Another source: different characters, 12 images each (2-shot + the default 10 queries).
    make_shapes(root / "tmp", n_classes=5, n_per_class=12, seed=7)
    for i, name in enumerate(OTHER_CLASSES):
        (root / "other").mkdir(exist_ok=True)
        (root / "tmp" / f"char{i}").rename(root / "other" / name)
    return root / "run", root / "other", root / "cache"


def _evaluate(args: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(["fewshot", "evaluate", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_run_evaluates_on_another_dataset_with_the_documented_command(
    setup: tuple[Path, Path, Path], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    run, other, cache = setup
    monkeypatch.setenv("ANIVISION_CACHE", str(cache))
    code, out, err = _evaluate([str(run), "--data", str(other), "--n-way", "3", "--k-shot", "2", "--episodes", "20"], capsys)
    assert code == 0, err
    folder = run / "fewshot-other-all-3way-2shot"
    r = json.loads((folder / "fewshot.json").read_text())
    assert r["classes"] == OTHER_CLASSES and r["split"] == "all" and r["n_classes"] == 5
    assert r["data"] == str(other) and (r["n_way"], r["k_shot"], r["episodes"]) == (3, 2, 20) and 0 <= r["accuracy"] <= 1
    assert f"all 5 classes of {other} (not the run's dataset: every class): bae, fauna, gura, kronii, mumei" in out
    assert str(folder) in out

    # A second evaluation with another N-way lands in its own folder; the first result stays.
    code, out, err = _evaluate([str(run), "--data", str(other), "--n-way", "2", "--k-shot", "2", "--episodes", "20"], capsys)
    assert code == 0, err
    assert json.loads((run / "fewshot-other-all-2way-2shot" / "fewshot.json").read_text())["n_way"] == 2
    assert json.loads((folder / "fewshot.json").read_text())["n_way"] == 3

    # The run's own test classes are not in the other set: asked for explicitly, a one-line error.
    code, out, err = _evaluate([str(run), "--data", str(other), "--class-set", "test", "--n-way", "2", "--episodes", "20"], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith(f"error: {other}: 2 of the 2 test classes of {run}")
    assert "not in this dataset" in err and "it has 5 classes" in err


def test_default_class_set_follows_the_dataset(setup: tuple[Path, Path, Path], tmp_path: Path) -> None:
    run, other, _ = setup
    spec = backbone_spec(str(run), None, None, None)
    data = FewShotTrainConfig.load(run / "config.json").data
    assert default_class_set(spec, data) == "test"
    shutil.copytree(data, tmp_path / "copy")  # the same characters elsewhere (moved or copied): still held out
    assert default_class_set(spec, tmp_path / "copy") == "test"
    assert default_class_set(spec, other) == "all"
    assert default_class_set(backbone_spec(None, "test_efficientnet", "none", 32), data) == "all"
    assert evaluation_name(other, "all", [(5, 1), (20, 5)], "test_efficientnet") == "fewshot-test_efficientnet-other-all-grid"
    assert evaluation_name(tmp_path / "my chars.csv", "test", [(5, 5)]) == "fewshot-my_chars-test-5way-5shot"


def test_grid_notes_say_what_is_wrong_in_grid_terms(
    setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    run, other, cache = setup
    code, out, err = _evaluate([str(run), "--data", str(other), "--grid", "--episodes", "10", "--cache-dir", str(cache)], capsys)
    assert code == 0, err
    folder = run / "fewshot-other-all-grid"
    cells = {(c["n_way"], c["k_shot"]): c for c in json.loads((folder / "fewshot.json").read_text())["grid"]}
    assert cells[(5, 1)]["accuracy"] is not None  # 1 + 10 images: every class has 12
    assert cells[(5, 5)]["note"] == "5-shot needs 15 images in every class (5 support + 10 query); 5 of the 5 classes have fewer: bae 12, fauna 12, gura 12, ... (2 more)"
    assert cells[(20, 1)]["note"] == cells[(20, 5)]["note"] == "20-way needs 20 classes; there are 5"
    md = (folder / "fewshot.md").read_text()
    assert "Classes: bae, fauna, gura, kronii, mumei." in md and "all 5 classes of" in md
    assert "20-way 1-shot: 20-way needs 20 classes; there are 5" in md
    assert "20-way 5-shot (10 queries, 10 episodes): n/a — 20-way needs 20 classes; there are 5" in out
    for text in (out, err, md):
        assert "--" not in text.replace("---|", "") and "lower" not in text

    # Small classes left out: the cell needs N classes with K + Q images.
    code, out, err = _evaluate([str(run), "--data", str(other), "--grid", "--episodes", "10", "--skip-small-classes",
                                "--out", str(tmp_path / "g"), "--cache-dir", str(cache)], capsys)
    assert code == 0, err
    cells = {(c["n_way"], c["k_shot"]): c for c in json.loads((tmp_path / "g" / "fewshot.json").read_text())["grid"]}
    assert cells[(5, 5)]["note"] == "5-way 5-shot needs 5 classes with 15 images (5 support + 10 query); 0 have them"
    assert "--" not in out and "lower" not in out


def test_cell_problem_matches_the_sampler() -> None:
    names = ["a", "b", "c", "d"]
    labels = np.repeat(np.arange(4), [3, 6, 6, 6])
    assert cell_problem(labels, 3, 1, 2, False, names) is None
    assert cell_problem(labels, 5, 1, 2, False, names) == "5-way needs 5 classes; there are 4"
    assert cell_problem(labels, 3, 2, 2, False, names) == "2-shot needs 4 images in every class (2 support + 2 query); 1 of the 4 classes have fewer: a 3"
    assert cell_problem(labels, 3, 2, 2, True, names) is None
    assert cell_problem(labels, 4, 2, 2, True, names) == "4-way 2-shot needs 4 classes with 4 images (2 support + 2 query); 3 have them"
    assert class_list([]) == "none" and class_list(list("abcdefghij"), 3) == "a, b, c, ... (7 more)"


def test_out_holding_another_evaluation_needs_force(setup: tuple[Path, Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    run, other, cache = setup
    out = tmp_path / "eval"
    base = [str(run), "--data", str(other), "--k-shot", "1", "--n-query", "2", "--episodes", "10", "--out", str(out), "--cache-dir", str(cache)]
    assert _evaluate([*base, "--n-way", "3"], capsys)[0] == 0
    first = json.loads((out / "fewshot.json").read_text())
    assert _evaluate([*base, "--n-way", "3"], capsys)[0] == 0  # the same evaluation again: overwritten
    assert json.loads((out / "fewshot.json").read_text())["accuracy"] == first["accuracy"]

    code, _, err = _evaluate([*base, "--n-way", "2"], capsys)
    assert code == 2 and err.count("\n") == 1
    assert f"{out}: holds fewshot.json of another evaluation (cells 3-way 1-shot, not 2-way 1-shot)" in err and "--force" in err
    assert json.loads((out / "fewshot.json").read_text())["n_way"] == 3  # untouched
    code, _, err = _evaluate([*base, "--n-way", "2", "--force"], capsys)
    assert code == 0, err
    assert json.loads((out / "fewshot.json").read_text())["n_way"] == 2

    # A grid there is another evaluation too; with --force a single cell replaces its table.
    assert _evaluate([*base, "--grid"], capsys)[0] == 2
    assert _evaluate([*base, "--grid", "--force"], capsys)[0] == 0 and (out / "fewshot.md").exists()
    assert _evaluate([*base, "--n-way", "2", "--force"], capsys)[0] == 0 and "20-way" not in (out / "fewshot.md").read_text()
    assert (out / "report.html").exists()
