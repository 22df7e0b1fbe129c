"""Embeddings of a whole image collection: resumable shards, one rank per shard, one merged file.

The collection (files, folders, globs; sorted) is cut into shards of ``shard_size`` images.
Shard ``i`` is embedded by rank ``i % world_size`` (one process, or every process of a
``torchrun`` job) and written as ``OUT/shards/shard-00000.npy`` (the (n, D) float32 features)
and then ``shard-00000.json`` (its paths and which were readable): each through a temporary
file and a rename, the JSON last, so a shard with its JSON is whole. A rerun after a kill skips
those shards. When every shard is there, rank 0 merges them, in the collection's order, into
``OUT/embeddings.npy`` and ``OUT/paths.csv`` (``index,path,valid``; unreadable images keep a
row of zeros and ``valid`` 0). ``OUT/manifest.json`` records what is embedded (model
fingerprint, input config, the file list's hash, shard size): another collection or model in
the same folder is an error, never a mix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import nn

from anivision.data.folder import expand_inputs
from anivision.data.transforms import DataConfig
from anivision.embeddings import embed_paths, model_fingerprint
from anivision.engine.distributed import DistInfo, barrier
from anivision.errors import AnivisionError
from anivision.files import atomic_write_csv, atomic_write_json, read_json, replacing
from anivision.progress import progress_bar
from anivision.tasks.classify import ImageClassifier
from anivision.tasks.fewshot.evaluate import backbone_spec, build_backbone
from anivision.tasks.retrieval.predictor import StyleRetriever

log = logging.getLogger(__name__)


@dataclass
class EmbedSource:
    """The model that embeds: ``model`` maps (B, 3, H, W) to (B, D); ``name`` says what it is."""

    model: nn.Module
    data_config: DataConfig
    name: str

    @property
    def fingerprint(self) -> str:
        """``name:sha1-of-the-weights``: what an index of these embeddings was built with."""
        return f"{self.name}:{model_fingerprint(self.model)}"


def embedding_source(run: str | None = None, backbone: str | None = None, weights: str | None = None,
                     img_size: int | None = None, device: str | None = None) -> EmbedSource:
    """The embedding model of a run (classification: backbone features; few-shot: the
    meta-trained backbone; retrieval: the first trained fold's retrieval features) or of a timm
    ``backbone`` with ``weights``.

    Raises:
        AnivisionError: both or neither of run and backbone, or not a run folder.
    """
    if run and (backbone or weights):
        raise AnivisionError("give either --run RUN or --backbone/--weights, not both")
    if not run:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)  # --weights none: the same random network in every rank and every rerun
            model, dcfg = build_backbone(backbone_spec(None, backbone, weights, img_size), device)
        return EmbedSource(model, dcfg, backbone or "tf_efficientnet_lite0")
    r = Path(run)
    if not r.is_dir():
        raise AnivisionError(f"{r}: no such run folder")
    if (r / "folds.json").is_file():
        retriever = StyleRetriever.load(r, device=device)
        return EmbedSource(retriever.model, retriever.data_config, f"retrieval run {r.name}")
    classes = r / "classes.json"
    if classes.is_file() and isinstance(json.loads(classes.read_text()), list):
        clf = ImageClassifier.load(r, device)
        return EmbedSource(clf.model.backbone, clf.data_config, f"classification run {r.name}")
    model, dcfg = build_backbone(backbone_spec(str(r), None, None, img_size), device)
    return EmbedSource(model, dcfg, f"few-shot run {r.name}")


@dataclass
class EmbeddedCollection:
    """A merged ``anivision embed`` folder: ``embeddings`` (N, D) float32 (memory-mapped),
    ``paths`` (N,), ``valid`` (N,) bool, ``fingerprint`` of the model."""

    out: Path
    embeddings: np.ndarray
    paths: list[str]
    valid: np.ndarray
    fingerprint: str


def load_collection(out: str | Path) -> EmbeddedCollection:
    """Read a finished ``anivision embed`` folder.

    Raises:
        AnivisionError: not a finished embedding folder.
    """
    d = Path(out)
    if not (d / "embeddings.npy").is_file() or not (d / "paths.csv").is_file() or not (d / "manifest.json").is_file():
        raise AnivisionError(f"{d}: not a finished 'anivision embed' folder (embeddings.npy, paths.csv, manifest.json)")
    rows = [line.split(",", 2) for line in (d / "paths.csv").read_text(encoding="utf-8").splitlines()[1:]]
    manifest = read_json(d / "manifest.json", expect=dict)
    return EmbeddedCollection(d, np.load(d / "embeddings.npy", mmap_mode="r"), [r[2] for r in rows],
                              np.array([r[1] == "1" for r in rows], bool), manifest["fingerprint"])


def _manifest(paths: list[str], source: EmbedSource, shard_size: int) -> dict[str, Any]:
    c = source.data_config
    return {
        "count": len(paths), "shard_size": shard_size, "shards": -(-len(paths) // shard_size),
        "files_sha1": hashlib.sha1("\n".join(paths).encode()).hexdigest(), "model": source.name,
        "fingerprint": source.fingerprint, "input": [c.img_size, list(c.mean), list(c.std), c.crop_pct],
    }


def _check_manifest(out: Path, manifest: dict[str, Any]) -> None:
    """Raise when ``out`` holds another collection's or model's shards."""
    p = out / "manifest.json"
    if not p.is_file():
        return
    old = read_json(p, expect=dict)
    words = {"count": "collection", "files_sha1": "collection", "model": "model", "fingerprint": "model",
             "input": "input size", "shard_size": "shard size", "shards": "shard size"}
    diff = list(dict.fromkeys(words[k] for k in manifest if old.get(k) != manifest[k]))
    if diff:
        raise AnivisionError(f"{out}: holds embeddings of another {' and '.join(diff)} (see its manifest.json); use another --out")


def _shard_files(out: Path, i: int) -> tuple[Path, Path]:
    return out / "shards" / f"shard-{i:05d}.npy", out / "shards" / f"shard-{i:05d}.json"


def _write_shard(out: Path, i: int, paths: list[str], features: np.ndarray, valid: np.ndarray) -> None:
    """The shard's .npy, then its .json (the completion mark), each via a temporary file and rename."""
    npy, meta = _shard_files(out, i)
    with replacing(npy) as tmp, open(tmp, "wb") as fh:
        np.save(fh, features.astype(np.float32, copy=False), allow_pickle=False)
    atomic_write_json(meta, {"shard": i, "paths": paths, "valid": [bool(v) for v in valid]})


def _shard_done(out: Path, i: int) -> bool:
    npy, meta = _shard_files(out, i)
    return npy.is_file() and meta.is_file()


def _merge(out: Path, paths: list[str], n_shards: int) -> tuple[int, int]:
    """Shards -> ``embeddings.npy`` + ``paths.csv`` in collection order; (dim, unreadable count)."""
    first = np.load(_shard_files(out, 0)[0], mmap_mode="r")
    dim = int(first.shape[1])
    tmp = out / f"embeddings.npy.{os.getpid()}.tmp"
    merged = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.float32, shape=(len(paths), dim))
    valid: list[bool] = []
    at = 0
    for i in range(n_shards):
        npy, meta = _shard_files(out, i)
        shard = read_json(meta, expect=dict)
        feats = np.load(npy, mmap_mode="r")
        if shard["paths"] != paths[at:at + len(shard["paths"])] or len(feats) != len(shard["paths"]):
            raise AnivisionError(f"{meta}: does not hold images {at}..{at + len(feats) - 1} of the collection; delete {out / 'shards'} and rerun")
        merged[at:at + len(feats)] = feats
        valid += shard["valid"]
        at += len(feats)
    merged.flush()
    del merged
    os.replace(tmp, out / "embeddings.npy")
    rows = [{"index": i, "valid": int(v), "path": p} for i, (p, v) in enumerate(zip(paths, valid))]
    atomic_write_csv(out / "paths.csv", rows, ["index", "valid", "path"])
    return dim, valid.count(False)


def embed_collection(
    data: str | list[str], out: str | Path, source: EmbedSource, shard_size: int = 1024, batch_size: int = 64,
    info: DistInfo | None = None, progress: bool = True, on_shard: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Embed every image of ``data`` into ``out`` (see the module docstring), resumably.

    Args:
        data: files, folders (recursively) or glob patterns.
        out: the output folder.
        source: the model (:func:`embedding_source`).
        shard_size: images per shard (the unit of work, of resuming and of a rank's share).
        info: this process's rank and world size (:func:`anivision.engine.distributed.init_distributed`).
        on_shard: called with each shard index this process has just written (tests use it to
            kill a run).

    Returns:
        ``{"out", "count", "dim", "shards", "computed", "unreadable", "fingerprint"}``; only rank 0 merges
        (``dim`` and ``unreadable`` are None on the other ranks).

    Raises:
        AnivisionError: no image, ``shard_size < 1``, or ``out`` holds another collection's embeddings.
    """
    info = info or DistInfo()
    if shard_size < 1:
        raise AnivisionError(f"--shard-size must be at least 1, got {shard_size}")
    paths = [os.path.abspath(p) for p in expand_inputs([data] if isinstance(data, (str, Path)) else list(data))]
    out = Path(out)
    manifest = _manifest(paths, source, shard_size)
    _check_manifest(out, manifest)
    barrier(info)  # every rank checked the old manifest before rank 0 writes the new one
    if info.is_main:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        atomic_write_json(out / "manifest.json", manifest)
    barrier(info)
    mine = [i for i in range(manifest["shards"]) if i % info.world_size == info.rank and not _shard_done(out, i)]
    for i in progress_bar(mine, progress, desc=f"embed shards (rank {info.rank})"):
        part = paths[i * shard_size:(i + 1) * shard_size]
        emb = embed_paths(source.model, part, source.data_config, batch_size=batch_size, cache_dir=None, progress=False)
        _write_shard(out, i, part, emb.features, emb.valid)
        if on_shard is not None:
            on_shard(i)
    barrier(info)
    dim = unreadable = None
    if info.is_main:
        dim, unreadable = _merge(out, paths, manifest["shards"])
    barrier(info)
    return {"out": str(out), "count": len(paths), "dim": dim, "shards": manifest["shards"], "computed": mine,
            "unreadable": unreadable, "fingerprint": source.fingerprint}
