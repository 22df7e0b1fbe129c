"""``anivision embed``: sharded, resumable embedding of a collection; torchrun ranks; the merge."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from anivision.data.folder import expand_inputs
from anivision.embeddings import embed_paths
from anivision.errors import AnivisionError
from anivision.tasks.embed import embed_collection, embedding_source, load_collection

from conftest import TINY_CNN, Killed, make_class_folders, run_cli

ONE_THREAD = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}  # torchrun's default per rank: the same numerics


@pytest.fixture()
def collection(tmp_path: Path) -> Path:
    data = make_class_folders(tmp_path / "data", n_classes=3, n_per_class=7, size=32)
    (data / "class1" / "broken.png").write_bytes(b"not an image")
    return data


def _source():
    return embedding_source(None, TINY_CNN, "none", 32, "cpu")


def test_embed_collection_merges_shards_in_collection_order(collection, tmp_path):
    src = _source()
    r = embed_collection(str(collection), tmp_path / "emb", src, shard_size=4, progress=False)
    paths = [os.path.abspath(p) for p in expand_inputs([str(collection)])]
    assert r["count"] == 22 and r["shards"] == 6 and r["computed"] == list(range(6)) and r["unreadable"] == 1
    got = load_collection(tmp_path / "emb")
    assert got.paths == paths and got.fingerprint == src.fingerprint
    want = embed_paths(src.model, paths, src.data_config, cache_dir=None, progress=False)
    np.testing.assert_array_equal(got.valid, want.valid)
    np.testing.assert_allclose(got.embeddings, want.features, rtol=1e-5, atol=1e-6)
    assert not got.embeddings[~got.valid].any()  # the unreadable image keeps a row of zeros
    with open(tmp_path / "emb" / "paths.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["path"] for r in rows] == paths and rows[paths.index(os.path.abspath(collection / "class1" / "broken.png"))]["valid"] == "0"


def test_killed_run_resumes_without_recomputing_finished_shards(collection, tmp_path):
    src = _source()
    out = tmp_path / "emb"

    def kill_after_2(i: int) -> None:
        if i == 2:
            raise Killed("killed after shard 2")

    with pytest.raises(Killed):
        embed_collection(str(collection), out, src, shard_size=4, progress=False, on_shard=kill_after_2)
    assert not (out / "embeddings.npy").exists()
    stamps = {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir()}
    assert len(stamps) == 6  # shards 0-2, .npy and .json each
    computed: list[int] = []
    r = embed_collection(str(collection), out, src, shard_size=4, progress=False, on_shard=computed.append)
    assert computed == r["computed"] == [3, 4, 5]
    assert {p.name: p.stat().st_mtime_ns for p in (out / "shards").iterdir() if p.name in stamps} == stamps
    whole = embed_collection(str(collection), tmp_path / "whole", src, shard_size=4, progress=False)
    np.testing.assert_array_equal(load_collection(out).embeddings, load_collection(tmp_path / "whole").embeddings)
    assert whole["computed"] == list(range(6))
    again = embed_collection(str(collection), out, src, shard_size=4, progress=False)
    assert again["computed"] == []


def test_other_collection_or_model_in_the_same_folder_is_an_error(collection, tmp_path):
    src = _source()
    embed_collection(str(collection), tmp_path / "emb", src, shard_size=4, progress=False)
    with pytest.raises(AnivisionError, match="another collection") as e:
        embed_collection(str(collection / "class0"), tmp_path / "emb", src, shard_size=4, progress=False)
    assert "\n" not in str(e.value)
    with pytest.raises(AnivisionError, match="another shard size"):
        embed_collection(str(collection), tmp_path / "emb", src, shard_size=5, progress=False)
    with pytest.raises(AnivisionError, match="--shard-size must be at least 1"):
        embed_collection(str(collection), tmp_path / "x", src, shard_size=0, progress=False)
    with pytest.raises(AnivisionError, match="either --run RUN or --backbone"):
        embedding_source("somewhere", TINY_CNN)


def test_torchrun_two_ranks_equal_one_process(collection, tmp_path):
    common = ["--backbone", TINY_CNN, "--weights", "none", "--img-size", "32", "--shard-size", "3", "-q"]
    one = run_cli(["embed", str(collection), "--out", str(tmp_path / "one"), *common], ONE_THREAD)
    assert one.returncode == 0, one.stderr
    env = dict(os.environ, **ONE_THREAD)
    two = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port", "29557",
         "-m", "anivision.cli", "embed", str(collection), "--out", str(tmp_path / "two"), *common],
        capture_output=True, text=True, env=env, timeout=300,
    )
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("embeddings ->") == 1  # rank 0 reports
    a, b = load_collection(tmp_path / "one"), load_collection(tmp_path / "two")
    assert a.paths == b.paths and len(a.paths) == 22
    np.testing.assert_array_equal(a.valid, b.valid)
    np.testing.assert_allclose(b.embeddings, a.embeddings, rtol=1e-5, atol=1e-6)
    assert json.loads((tmp_path / "two" / "manifest.json").read_text())["shards"] == 8
    assert len(list((tmp_path / "two" / "shards").glob("*.npy"))) == 8


def test_cli_errors_are_one_line(tmp_path):
    r = run_cli(["embed", str(tmp_path / "nothing"), "--out", str(tmp_path / "o"), "--backbone", TINY_CNN, "--weights", "none"])
    assert r.returncode == 2 and r.stderr.strip().count("\n") == 0 and "no such file, folder or pattern" in r.stderr
    r = run_cli(["embed", str(tmp_path), "--out", str(tmp_path / "o"), "--run", str(tmp_path / "norun")])
    assert r.returncode == 2 and "no such run folder" in r.stderr


def test_python_api_embed_is_the_cli_s(collection, tmp_path):
    import anivision as av

    got = av.embed(collection, backbone=TINY_CNN, weights="none", img_size=32, out=tmp_path / "api", shard_size=8)
    assert run_cli(["embed", str(collection), "--backbone", TINY_CNN, "--weights", "none", "--img-size", "32",
                    "--shard-size", "8", "--out", str(tmp_path / "cli"), "-q"], ONE_THREAD).returncode == 0
    cli = load_collection(tmp_path / "cli")
    assert got.paths == cli.paths and got.fingerprint == cli.fingerprint and got.embeddings.shape == (22, cli.embeddings.shape[1])
    np.testing.assert_allclose(got.embeddings, cli.embeddings, rtol=1e-4, atol=1e-5)
