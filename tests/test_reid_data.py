"""work/role indexing, the cross-role k-fold protocol, and the PK sampler."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from anivision.data.pk_sampler import PKSampler
from anivision.data.reid import kfold_works, load_reid, make_folds, read_reid_csv, scan_reid_tree, split_roles, summarize
from anivision.errors import AnivisionError

# work -> number of roles; "solo" has one role and can never be split into query and gallery.
ROLES = {"w0": 2, "w1": 3, "w2": 4, "w3": 5, "w4": 2, "w5": 3, "solo": 1}


def make_tree(root: Path, roles: dict[str, int] = ROLES, per_role: int = 2) -> Path:
    """Write ``root/<work>/r<j>/<i>.png`` (8 px images: the protocol never decodes them)."""
    img = Image.new("RGB", (8, 8), (120, 30, 200))
    for w, n_roles in roles.items():
        for j in range(n_roles):
            d = root / w / f"r{j}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(per_role):
                img.save(d / f"{i}.png")
    return root


def test_scan_tree_counts_and_ignored(tmp_path: Path) -> None:
    root = make_tree(tmp_path / "data")
    (root / "w0" / "r0" / "notes.txt").write_text("not an image")
    Image.new("RGB", (8, 8)).save(root / "w1" / "loose.png")  # no role folder
    (root / "synth.json").write_text("{}")  # metadata beside the works: not counted
    data = scan_reid_tree(root)
    assert len(data) == 2 * sum(ROLES.values())
    assert data.work_counts()["w3"] == {"roles": 5, "images": 10}
    assert data.work_counts()["solo"] == {"roles": 1, "images": 2}
    assert data.role_counts()["w2/r3"] == 2
    assert sorted(Path(p).name for p in data.ignored) == ["loose.png", "notes.txt"]
    text = summarize(data)
    assert "7 works" in text and "1 work(s) with a single role" in text
    # Search galleries accept images without a role folder.
    assert "-" in scan_reid_tree(root, strict=False).roles


def test_csv_manifest(tmp_path: Path) -> None:
    make_tree(tmp_path / "imgs", {"a": 2, "b": 2}, per_role=1)
    csv_path = tmp_path / "list.csv"
    csv_path.write_text("path,work,role\nimgs/a/r0/0.png,a,r0\nimgs/a/r1/0.png,a,r1\nimgs/b/r0/0.png,b,r0\n")
    data = load_reid(csv_path)
    assert data.works == ["a", "a", "b"] and Path(data.paths[0]).is_file()
    (tmp_path / "bad.csv").write_text("path,label\nx.png,a\n")
    with pytest.raises(AnivisionError, match="missing column"):
        read_reid_csv(tmp_path / "bad.csv")
    with pytest.raises(AnivisionError, match="no such folder"):
        scan_reid_tree(tmp_path / "missing")


def test_kfold_partitions_works() -> None:
    works = [f"w{i}" for i in range(11)] * 3  # duplicates as in per-image lists
    folds = kfold_works(works, 5, seed=3)
    flat = [w for f in folds for w in f]
    assert sorted(flat) == sorted(set(works))  # every work a test work exactly once
    assert {len(f) for f in folds} <= {2, 3}
    assert folds == kfold_works(list(reversed(works)), 5, seed=3)  # depends on the set only
    assert folds != kfold_works(works, 5, seed=4)
    with pytest.raises(AnivisionError, match="more than"):
        kfold_works(works, 12)
    with pytest.raises(AnivisionError, match="at least 2"):
        kfold_works(works, 1)


@pytest.mark.parametrize("n_roles,ratio,n_query", [(2, 0.4, 1), (5, 0.4, 2), (10, 0.4, 4), (3, 0.01, 1), (3, 0.99, 2)])
def test_split_roles_ratio(n_roles: int, ratio: float, n_query: int) -> None:
    roles = [f"r{i}" for i in range(n_roles)]
    q, g = split_roles(roles, ratio, seed=0, work="w")
    assert len(q) == n_query and not set(q) & set(g) and sorted(q + g) == roles


def test_cross_role_protocol(tmp_path: Path) -> None:
    data = scan_reid_tree(make_tree(tmp_path / "data"))
    folds = make_folds(data, n_folds=3, query_ratio=0.4, seed=0)
    keys = data.role_keys()
    works = np.asarray(data.works)
    seen_test: Counter[str] = Counter()
    for f in folds:
        seen_test.update(f.test_works)
        q_roles = {keys[i] for i in f.query_idx}
        g_roles = {keys[i] for i in f.gallery_idx}
        assert not q_roles & g_roles  # no role on both sides
        assert set(works[f.query_idx]) <= set(f.test_works) and set(works[f.gallery_idx]) <= set(f.test_works)
        assert not set(works[f.train_idx]) & set(f.test_works)
        assert sorted(set(f.train_works) | set(f.test_works)) == data.work_names
        for w in set(f.test_works) - set(f.excluded_works):
            assert set(works[f.query_idx]) >= {w} and set(works[f.gallery_idx]) >= {w}  # both sides per work
        assert len(f.train_idx) + len(f.query_idx) + len(f.gallery_idx) + 2 * len(f.excluded_works) == len(data)
    assert all(seen_test[w] == 1 for w in data.work_names)
    excluded = [w for f in folds for w in f.excluded_works]
    assert excluded == ["solo"]  # single-role work: excluded once, counted
    # Same arguments, same folds (the baseline is scored on the trained run's folds).
    assert [f.describe() for f in folds] == [f.describe() for f in make_folds(data, 3, 0.4, 0)]


def test_fold_without_splittable_work_fails(tmp_path: Path) -> None:
    data = scan_reid_tree(make_tree(tmp_path / "data", {"a": 1, "b": 1, "c": 2}))
    with pytest.raises(AnivisionError, match="no test work has two or more roles"):
        make_folds(data, n_folds=3)
    with pytest.raises(AnivisionError, match="query-ratio"):
        make_folds(data, n_folds=2, query_ratio=1.0)


def test_pk_sampler_batches() -> None:
    # 6 classes with 2..12 images, each class spread over 3 groups (roles).
    sizes = [2, 5, 8, 12, 6, 9]
    labels = np.repeat(np.arange(6), sizes)
    groups = np.concatenate([np.arange(n) % 3 for n in sizes])
    sampler = PKSampler(labels, p=4, k=3, groups=groups, batches_per_epoch=7, seed=1)
    batches = list(sampler)
    assert len(batches) == len(sampler) == 7
    for b in batches:
        counts = Counter(labels[b].tolist())
        assert len(b) == 12 and len(counts) == 4 and set(counts.values()) == {3}  # P distinct x K each
        for c in counts:
            chunk = [i for i in b if labels[i] == c]
            if sizes[c] >= 3:
                assert len(set(chunk)) == 3 and len(set(groups[chunk])) == 3  # K different roles
    assert batches == list(sampler)  # same epoch, same batches (resumable)
    sampler.set_epoch(1)
    assert batches != list(sampler)
    with pytest.raises(ValueError):
        PKSampler(labels, p=7, k=2)
