"""Few-shot character recognition with Prototypical Networks (Snell et al., 2017).

A character is its prototype: the mean embedding of its K support images. A query belongs to
the nearest prototype, by squared euclidean distance (as Snell et al.) or cosine distance. Any
timm backbone is the embedding; meta-training fine-tunes it on episodes of the training
classes (the AniWho recipe), and new characters need no retraining, only new prototypes.

What lives here:

- class-disjoint splits (:func:`class_disjoint_split`, :class:`ClassSplit` saved as
  ``classes.json``): few-shot accuracy is only meaningful on classes never trained on;
- the maths (:func:`prototypes`, :func:`episode_distances`, :func:`evaluate_episodes`):
  1,000 episodes on cached embeddings are one batched gather and a few batched matmuls;
- meta-training (:func:`train_fewshot`), resumable, best checkpoint by validation episodes;
- evaluation (:func:`evaluate_fewshot`), including the AniWho Table 8 grid;
- enrolment and open-set identification (:func:`enroll_gallery`, :func:`identify_paths`).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from anivision.data.cache import DecodedImages, decode_images, default_cache_dir
from anivision.data.datasets import CachedImageDataset
from anivision.data.folder import LabeledImages, load_labeled, scan_class_folders
from anivision.data.samplers import EpisodeSampler
from anivision.data.splits import PARTS, parse_ratios
from anivision.data.transforms import AugmentConfig, cache_size, eval_transform, train_transform
from anivision.embeddings import embed_paths, forward_batches, model_fingerprint, pick_device
from anivision.files import atomic_write_json, atomic_write_text
from anivision.engine.checkpoint import load_checkpoint, load_weights, save_checkpoint, save_weights
from anivision.engine.loop import seed_everything
from anivision.errors import AnivisionError
from anivision.models.backbone import DEFAULT_BACKBONE, DEFAULT_WEIGHTS, DataConfig, create_backbone, data_config

log = logging.getLogger(__name__)

DISTANCES = ("euclidean", "cosine")
#: Default class split: 60/20/20 of the classes (16 classes -> 10/3/3; AniWho used 90/20/20 of 130).
DEFAULT_CLASS_RATIOS = "60/20/20"
#: The AniWho Table 8 layout: {5, 20}-way x {1, 5}-shot.
GRID_WAYS = (5, 20)
GRID_SHOTS = (1, 5)


def episode_ci95(accs: np.ndarray) -> float:
    """``1.96 * std / sqrt(T)`` of per-episode accuracies (population std, as easyfsl)."""
    from anivision.metrics.stats import episode_ci95 as _ci

    return _ci(accs)


# ------------------------------------------------------------------------ class splits


@dataclass
class ClassSplit:
    """Class-disjoint partition of a dataset's classes, frozen as ``classes.json``.

    Attributes:
        train: classes episodes are trained on.
        val: classes that choose the best checkpoint.
        test: held-out classes, never seen in training.
        unused: classes left out when explicit counts sum to fewer than all classes.
        seed: the shuffling seed.
        spec: the counts or ratios the split was made from (e.g. ``"10/3/3"``).
    """

    train: list[str]
    val: list[str]
    test: list[str]
    unused: list[str] = dataclasses.field(default_factory=list)
    seed: int = 0
    spec: str = ""

    def part(self, name: str) -> list[str]:
        """Classes of ``train``, ``val``, ``test``, ``unseen`` (val + test: never trained on) or ``all``."""
        if name == "all":
            return self.train + self.val + self.test
        if name == "unseen":
            return self.val + self.test
        if name not in PARTS:
            raise AnivisionError(f"unknown split '{name}' (choose train, val, test, unseen or all)")
        return list(getattr(self, name))

    def save(self, path: str | Path) -> None:
        atomic_write_json(path, dataclasses.asdict(self))

    @classmethod
    def load(cls, path: str | Path) -> "ClassSplit":
        """Read ``classes.json`` (or the ``classes.json`` of a run folder)."""
        p = Path(path)
        if p.is_dir():
            p = p / "classes.json"
        if not p.is_file():
            raise AnivisionError(f"{p}: no such class-split file (classes.json)")
        try:
            d = json.loads(p.read_text())
            return cls(**{k: d[k] for k in ("train", "val", "test")}, unused=d.get("unused", []), seed=int(d.get("seed", 0)), spec=str(d.get("spec", "")))
        except (json.JSONDecodeError, KeyError, TypeError) as exc:
            raise AnivisionError(f"{p}: not a class-split file (needs train, val, test class lists)") from exc


def _allocate(n: int, ratios: tuple[float, float, float]) -> list[int]:
    """Largest-remainder allocation of ``n`` classes; each non-zero ratio gets at least one."""
    want = [r * n for r in ratios]
    counts = [int(math.floor(w)) for w in want]
    for i in sorted(range(3), key=lambda i: -(want[i] - counts[i]))[: n - sum(counts)]:
        counts[i] += 1
    for i, r in enumerate(ratios):
        if r > 0 and counts[i] == 0:
            j = int(np.argmax(counts))
            if counts[j] > 1:
                counts[j] -= 1
                counts[i] += 1
    return counts


def parse_class_counts(text: str) -> tuple[int, int, int]:
    """Parse ``"10/3/3"`` (train/val/test classes) or ``"10/3"`` (train/test, no validation)."""
    try:
        parts = [int(x) for x in text.replace(",", "/").split("/")]
    except ValueError:
        raise AnivisionError(f"--classes '{text}': expected class counts like 10/3/3 (train/val/test)") from None
    if len(parts) == 2:
        parts = [parts[0], 0, parts[1]]
    if len(parts) != 3 or any(p < 0 for p in parts) or parts[0] < 1:
        raise AnivisionError(f"--classes '{text}': expected train/val/test class counts like 10/3/3, train at least 1")
    return parts[0], parts[1], parts[2]


def class_disjoint_split(
    classes: Sequence[str], counts: str | None = None, ratios: str | None = None, seed: int = 0
) -> ClassSplit:
    """Shuffle class names (seeded) and cut them into train/val/test classes.

    Args:
        classes: all class names of the dataset.
        counts: ``"10/3/3"``: exact numbers of classes; they may sum to fewer than all classes
            (the rest are recorded as ``unused``).
        ratios: ``"60/20/20"`` or fractions: shares of the classes (largest remainder, at
            least one class for each non-zero share). Default :data:`DEFAULT_CLASS_RATIOS`.
        seed: seed of the shuffle; the same classes and seed give the same split.

    Raises:
        AnivisionError: both or bad specs, or more classes asked for than exist.
    """
    if counts and ratios:
        raise AnivisionError("give either --classes (counts) or --ratios, not both")
    names = sorted(classes)
    n = len(names)
    if counts:
        c = parse_class_counts(counts)
        if sum(c) > n:
            raise AnivisionError(f"--classes {counts} asks for {sum(c)} classes; the dataset has {n}")
        spec = counts
    else:
        spec = ratios or DEFAULT_CLASS_RATIOS
        c = tuple(_allocate(n, parse_ratios(spec)))  # type: ignore[assignment]
    order = np.random.default_rng(seed).permutation(n)
    shuffled = [names[i] for i in order]
    a, b, t = c
    # Within each part classes are sorted, so the file reads well and does not leak the order.
    return ClassSplit(
        train=sorted(shuffled[:a]),
        val=sorted(shuffled[a : a + b]),
        test=sorted(shuffled[a + b : a + b + t]),
        unused=sorted(shuffled[a + b + t :]),
        seed=int(seed),
        spec=spec,
    )


def select_classes(images: LabeledImages, names: Sequence[str], source: str) -> tuple[list[int], np.ndarray, list[str]]:
    """Images of the classes ``names``, relabelled 0..len(names)-1.

    Returns:
        (indices into ``images``, (n,) int64 labels, class names in label order).

    Raises:
        AnivisionError: a class is not in the dataset.
    """
    index = {c: i for i, c in enumerate(images.classes)}
    missing = [c for c in names if c not in index]
    if missing:
        raise AnivisionError(f"{source}: class(es) {', '.join(missing)} not found in the dataset ({len(images.classes)} classes)")
    remap = {index[c]: j for j, c in enumerate(names)}
    idx = [i for i, y in enumerate(images.labels) if y in remap]
    labels = np.asarray([remap[images.labels[i]] for i in idx], dtype=np.int64)
    return idx, labels, list(names)


# ---------------------------------------------------------------------- the maths


def prototypes(support: torch.Tensor) -> torch.Tensor:
    """Class prototypes: the mean of each class's support embeddings.

    Args:
        support: (..., N, K, D) embeddings, K per class.

    Returns:
        (..., N, D).
    """
    return support.mean(dim=-2)


def episode_distances(queries: torch.Tensor, protos: torch.Tensor, distance: str = "euclidean") -> torch.Tensor:
    """Distance of every query to every prototype.

    ``euclidean`` is the *squared* euclidean distance, as in Snell et al.: ``-d`` are then the
    logits of a linear classifier on the embeddings. ``cosine`` is ``1 - cos``.

    Args:
        queries: (..., M, D).
        protos: (..., N, D).
        distance: ``"euclidean"`` or ``"cosine"``.

    Returns:
        (..., M, N) distances.
    """
    if distance == "euclidean":
        # ||q||^2 + ||p||^2 - 2 q.p: batched matmuls instead of an (M, N, D) difference tensor.
        qq = (queries * queries).sum(-1, keepdim=True)
        pp = (protos * protos).sum(-1).unsqueeze(-2)
        return (qq + pp - 2.0 * queries @ protos.transpose(-1, -2)).clamp_min(0.0)
    if distance == "cosine":
        q = nn.functional.normalize(queries, dim=-1)
        p = nn.functional.normalize(protos, dim=-1)
        return 1.0 - q @ p.transpose(-1, -2)
    raise AnivisionError(f"unknown distance '{distance}' (choose {' or '.join(DISTANCES)})")


def protonet_logits(queries: torch.Tensor, protos: torch.Tensor, distance: str = "euclidean", cosine_scale: float = 10.0) -> torch.Tensor:
    """Logits for the episode loss: ``-d`` for euclidean, ``scale * cos`` for cosine.

    Cosine similarities lie in [-1, 1], too flat for a softmax over classes; a fixed scale
    (temperature 0.1) lets the loss sharpen, as in cosine-classifier few-shot baselines.

    Args:
        queries: (..., M, D); protos: (..., N, D).

    Returns:
        (..., M, N) logits.
    """
    d = episode_distances(queries, protos, distance)
    return -d if distance == "euclidean" else cosine_scale * (1.0 - d)


def evaluate_episodes(
    features: np.ndarray | torch.Tensor,
    episodes: np.ndarray,
    k_shot: int,
    distance: str = "euclidean",
    max_chunk_bytes: int = 256 << 20,
) -> np.ndarray:
    """Accuracy of a prototypical classifier on each episode, vectorised over episodes.

    For a chunk of t episodes (bounding memory), the (t, N, K, D) supports are gathered and
    averaged into (t, N, D) prototypes and the (t, N * Q, D) queries are gathered; distances
    are one batched matmul, then argmins and accuracies are batched too. Computed in float64 so that the
    argmin does not depend on summation order (the naive loop in the tests gives exactly the
    same per-episode accuracies).

    Args:
        features: (M, D) embeddings.
        episodes: (T, N, K + Q) int indices into ``features``, support first (from
            :meth:`EpisodeSampler.sample`).
        k_shot: K.
        distance: ``"euclidean"`` (squared) or ``"cosine"``.
        max_chunk_bytes: memory bound of one gathered chunk.

    Returns:
        (T,) float64 accuracy of each episode, in [0, 1].
    """
    feats = torch.as_tensor(np.asarray(features) if not isinstance(features, torch.Tensor) else features).to(torch.float64)
    if distance not in DISTANCES:
        raise AnivisionError(f"unknown distance '{distance}' (choose {' or '.join(DISTANCES)})")
    ep = torch.as_tensor(np.asarray(episodes, dtype=np.int64))
    t_all, n_way, per_class = ep.shape
    n_query = per_class - k_shot
    if n_query < 1:
        raise AnivisionError(f"episodes have {per_class} images per class; {k_shot}-shot leaves no queries")
    dim = feats.shape[1]
    # Per-image work is done once, not once per episode: euclidean precomputes every squared
    # norm ||q||^2, cosine normalises every query-side embedding (prototypes are means of the
    # raw embeddings, as in episode_distances, and are normalised after averaging).
    sq_norms = (feats * feats).sum(-1)  # (M,)
    q_feats = nn.functional.normalize(feats, dim=-1) if distance == "cosine" else feats
    chunk = max(1, int(max_chunk_bytes // max(1, n_way * per_class * dim * 8)))
    # Query j of class c has episode label c: queries are laid out class by class.
    target = torch.arange(n_way).repeat_interleave(n_query)
    out = torch.empty(t_all, dtype=torch.float64)
    for s in range(0, t_all, chunk):
        e = ep[s : s + chunk]
        protos = prototypes(feats[e[:, :, :k_shot]])  # (t, N, K, D) -> (t, N, D)
        q_idx = e[:, :, k_shot:].reshape(e.shape[0], n_way * n_query)  # (t, N * Q)
        dots = q_feats[q_idx] @ protos.transpose(-1, -2)  # (t, N * Q, N)
        if distance == "euclidean":
            # Squared euclidean as ||q||^2 + ||p||^2 - 2 q.p, the same formula as episode_distances.
            dist = (sq_norms[q_idx].unsqueeze(-1) + (protos * protos).sum(-1).unsqueeze(-2) - 2.0 * dots).clamp_min(0.0)
        else:
            dist = 1.0 - dots / protos.norm(dim=-1).clamp_min(1e-12).unsqueeze(-2)
        out[s : s + chunk] = (dist.argmin(-1) == target).to(torch.float64).mean(-1)
    return out.numpy()


def episode_accuracy(
    features: np.ndarray,
    labels: np.ndarray,
    n_way: int,
    k_shot: int,
    n_query: int,
    episodes: int,
    seed: int = 0,
    distance: str = "euclidean",
    skip_small_classes: bool = False,
    class_names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Mean accuracy ± 95% CI of ``episodes`` seeded N-way K-shot episodes on embeddings.

    Args:
        features: (M, D) embeddings of readable images.
        labels: (M,) class ids.

    Returns:
        ``accuracy`` and ``ci95`` (fractions), ``std``, ``n_way``, ``k_shot``, ``n_query``,
        ``episodes``, ``classes`` (those episodes drew from), ``excluded_classes``, ``seconds``.
    """
    sampler = EpisodeSampler(labels, n_way, k_shot, n_query, episodes, seed=seed, skip_small_classes=skip_small_classes, class_names=class_names)
    t0 = time.perf_counter()
    idx, _ = sampler.sample()
    accs = evaluate_episodes(features, idx, k_shot, distance)
    names = [str(class_names[c]) if class_names is not None else str(c) for c in sampler.class_ids]
    return {
        "accuracy": float(accs.mean()),
        "ci95": episode_ci95(accs),
        "std": float(accs.std()),
        "n_way": n_way,
        "k_shot": k_shot,
        "n_query": n_query,
        "episodes": episodes,
        "distance": distance,
        "seed": seed,
        "classes": names,
        "excluded_classes": sampler.excluded,
        "seconds": time.perf_counter() - t0,
    }


# ---------------------------------------------------------------------- training


@dataclass
class FewShotTrainConfig:
    """Everything that defines a meta-training run (saved as the run's ``config.json``).

    The optimisation follows AniWho's few-shot recipe (easy-few-shot-learning): SGD, momentum
    0.9, weight decay 5e-4, lr 0.01 divided by 10 at 50% and 80% of the epochs; random
    resized crop, colour jitter 0.4, horizontal flip. AniWho ran 100 epochs of 100 episodes;
    the defaults here are shorter for a CPU.
    """

    data: str = ""
    out: str = ""
    backbone: str = DEFAULT_BACKBONE
    weights: str = DEFAULT_WEIGHTS
    img_size: int = 128
    crop_pct: float = 1.0  # face crops are already tight: no eval-time centre crop
    classes: str | None = None
    ratios: str | None = None
    seed: int = 0
    epochs: int = 20
    episodes_per_epoch: int = 100
    n_way: int = 5
    k_shot: int = 5
    n_query: int = 10
    val_episodes: int = 300
    val_max_per_class: int | None = None  # cap on validation images per class (embedded every epoch)
    distance: str = "euclidean"
    cosine_scale: float = 10.0
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    milestones: tuple[float, float] = (0.5, 0.8)
    gamma: float = 0.1
    min_crop_scale: float = 0.08  # torchvision's RandomResizedCrop default, as easyfsl
    color_jitter: float = 0.4
    pretrain: str = "none"
    pretrain_epochs: int = 3
    pretrain_batch_size: int = 64
    skip_small_classes: bool = False
    workers: int = 0
    device: str | None = None
    cache_dir: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "FewShotTrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise AnivisionError(f"unknown few-shot config key(s): {', '.join(unknown)}")
        d = dict(d)
        if isinstance(d.get("milestones"), list):
            d["milestones"] = tuple(d["milestones"])
        return cls(**d)

    def validate(self) -> None:
        """Raise AnivisionError for values no run can use."""
        if not self.data:
            raise AnivisionError("fewshot train needs --data DIR")
        if not self.out:
            raise AnivisionError("fewshot train needs --out RUN_DIR")
        if not Path(self.data).exists():
            raise AnivisionError(f"{self.data}: no such dataset folder or manifest")
        for name in ("epochs", "episodes_per_epoch", "img_size", "k_shot", "n_query", "val_episodes", "pretrain_batch_size"):
            if getattr(self, name) < 1:
                raise AnivisionError(f"--{name.replace('_', '-')} must be at least 1")
        if self.n_way < 2:
            raise AnivisionError("--n-way must be at least 2")
        if self.val_max_per_class is not None and self.val_max_per_class < self.k_shot + self.n_query:
            raise AnivisionError(f"--val-max-per-class must be at least k-shot + n-query ({self.k_shot + self.n_query})")
        if self.distance not in DISTANCES:
            raise AnivisionError(f"unknown distance '{self.distance}' (choose {' or '.join(DISTANCES)})")
        if self.pretrain not in ("none", "supervised"):
            raise AnivisionError(f"unknown --pretrain '{self.pretrain}' (choose none or supervised)")
        if self.pretrain == "supervised" and self.pretrain_epochs < 1:
            raise AnivisionError("--pretrain-epochs must be at least 1")

    def augment(self) -> AugmentConfig:
        """The episode-training augmentation: random resized crop, colour jitter, h-flip."""
        j = self.color_jitter
        return AugmentConfig(
            crop_scale=(self.min_crop_scale, 1.0), hflip=0.5, vflip=0.0, rotation=0.0, translate=0.0, zoom=0.0,
            color_jitter=(j, j, j, 0.0), random_erasing=0.0,
        )


def multistep_lr(epoch: int, epochs: int, base_lr: float, milestones: Sequence[float] = (0.5, 0.8), gamma: float = 0.1) -> float:
    """``MultiStepLR`` as a pure function of the epoch (so a resumed run needs no scheduler state).

    Milestones are fractions of ``epochs``: with 100 epochs and (0.5, 0.8) the rate drops at
    epochs 50 and 80 (0-based), as ``MultiStepLR(milestones=[50, 80])``.
    """
    steps = [max(1, int(round(m * epochs))) for m in milestones]
    return base_lr * gamma ** sum(epoch >= s for s in steps)


def _check_same_run(cfg_path: Path, cfg: FewShotTrainConfig) -> None:
    if not cfg_path.exists():
        return
    old = json.loads(cfg_path.read_text())
    new = json.loads(json.dumps(cfg.to_dict()))
    diff = sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k) and k not in ("device", "workers", "cache_dir"))
    if diff:
        raise AnivisionError(f"{cfg_path.parent}: holds a run with a different config ({', '.join(diff)}); choose a new --out")


def _embed_decoded(backbone: nn.Module, decoded: DecodedImages, indices: np.ndarray, labels: np.ndarray, dcfg: DataConfig, device: torch.device, progress: bool) -> tuple[np.ndarray, np.ndarray]:
    """(n, D) features and (n,) labels of the readable images at ``indices`` (eval transform)."""
    ds = CachedImageDataset(decoded, indices, labels, eval_transform(dcfg))
    feats = forward_batches(backbone, ds, batch_size=64, device=device, desc="val embed", progress=progress)
    return feats, ds.targets


def _pretrain_supervised(
    cfg: FewShotTrainConfig, backbone: nn.Module, decoded: DecodedImages, train_idx: np.ndarray, labels: np.ndarray,
    n_classes: int, dcfg: DataConfig, device: torch.device, run_dir: Path, progress: bool,
) -> None:
    """Ordinary cross-entropy training of backbone + linear head on the training classes.

    The head is dropped afterwards; the backbone is the starting point of episode training.
    Resumable: ``pretrain/`` holds an epoch checkpoint and, when done, ``backbone.safetensors``.
    """
    from anivision.engine.loop import train_one_epoch
    from anivision.models.classifier import Classifier

    pdir = run_dir / "pretrain"
    done = pdir / "backbone.safetensors"
    if done.exists():
        load_weights(backbone, done)
        return
    model = Classifier(backbone, n_classes, dropout=0.2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    state = load_checkpoint(pdir / "checkpoint", model, opt) or {}
    ds = CachedImageDataset(decoded, train_idx, labels, train_transform(dcfg, cfg.augment()))
    for epoch in range(int(state.get("epoch", -1)) + 1, cfg.pretrain_epochs):
        gen = seed_everything(cfg.seed * 1000 + 500 + epoch)
        for g in opt.param_groups:
            g["lr"] = multistep_lr(epoch, cfg.pretrain_epochs, cfg.lr, cfg.milestones, cfg.gamma)
        loader = DataLoader(ds, batch_size=cfg.pretrain_batch_size, shuffle=True, generator=gen, num_workers=cfg.workers)
        model.train()
        stats = train_one_epoch(model, loader, opt, nn.CrossEntropyLoss(), device, desc=f"pretrain {epoch + 1}/{cfg.pretrain_epochs}", progress=progress)
        log.info("pretrain epoch %d/%d: loss %.4f acc %.4f (%.0fs)", epoch + 1, cfg.pretrain_epochs, stats.loss, stats.accuracy, stats.seconds)
        save_checkpoint(pdir / "checkpoint", model, opt, {"epoch": epoch})
    save_weights(backbone, done)


def _train_episodes(
    backbone: nn.Module, loader: DataLoader, optimizer: torch.optim.Optimizer, cfg: FewShotTrainConfig,
    device: torch.device, desc: str, progress: bool,
) -> dict[str, float]:
    """One epoch of episodes: prototypes from supports, cross-entropy of queries on ``-distance``."""
    n, k, q = cfg.n_way, cfg.k_shot, cfg.n_query
    target = torch.arange(n, device=device).repeat_interleave(q)
    total_loss = total_acc = 0.0
    seen = 0
    t0 = time.perf_counter()
    backbone.train()
    bar = tqdm(loader, desc=desc, disable=not progress, leave=False, dynamic_ncols=True)
    for x, _ in bar:
        x = x.to(device, non_blocking=True).contiguous(memory_format=torch.channels_last)
        z = backbone(x).view(n, k + q, -1)  # (N, K + Q, D): the sampler lays episodes out class by class
        logits = protonet_logits(z[:, k:].reshape(n * q, -1), prototypes(z[:, :k]), cfg.distance, cfg.cosine_scale)
        loss = nn.functional.cross_entropy(logits, target)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += 1
        total_loss += float(loss.detach())
        total_acc += float((logits.detach().argmax(1) == target).float().mean())
        bar.set_postfix(loss=f"{total_loss / seen:.3f}", acc=f"{total_acc / seen:.3f}")
    return {"train_loss": total_loss / max(seen, 1), "train_acc": total_acc / max(seen, 1), "epoch_seconds": time.perf_counter() - t0}


def train_fewshot(cfg: FewShotTrainConfig, progress: bool = True) -> dict[str, Any]:
    """Meta-train (or resume) a prototypical network on class-disjoint episodes.

    Writes into ``cfg.out``: ``config.json``, ``classes.json`` (train/val/test classes; the
    test classes are never read here), ``metrics.jsonl`` (one line per epoch; epoch 0 is the
    starting point), ``checkpoint/`` (last epoch, for resume), ``model.safetensors`` (backbone
    weights with the best validation-episode accuracy) and ``train.json`` (summary).

    Returns:
        The summary: best epoch, best and initial validation accuracy, classes, timings.

    Raises:
        AnivisionError: bad data or config, too few classes for the episodes, or ``cfg.out``
            holds a different run.
    """
    cfg.validate()
    run_dir = Path(cfg.out)
    run_dir.mkdir(parents=True, exist_ok=True)
    _check_same_run(run_dir / "config.json", cfg)
    if (run_dir / "train.json").exists() and (run_dir / "config.json").exists():
        log.info("%s: run already finished; reusing it", run_dir)
        return json.loads((run_dir / "train.json").read_text())
    atomic_write_json(run_dir / "config.json", cfg.to_dict())

    images = load_labeled(cfg.data)
    split_path = run_dir / "classes.json"
    if split_path.exists():
        split = ClassSplit.load(split_path)
    else:
        split = class_disjoint_split(images.classes, cfg.classes, cfg.ratios, cfg.seed)
        split.save(split_path)
    log.info("classes: %d train, %d val, %d test (held out: %s)", len(split.train), len(split.val), len(split.test), ", ".join(split.test) or "none")
    train_idx, train_labels, _ = select_classes(images, split.train, cfg.data)
    val_idx, val_labels, _ = select_classes(images, split.val, cfg.data)

    device = pick_device(cfg.device)
    seed_everything(cfg.seed)
    backbone = create_backbone(cfg.backbone, cfg.weights, img_size=cfg.img_size)
    base = data_config(backbone, cfg.img_size)
    dcfg = DataConfig(base.img_size, base.mean, base.std, crop_pct=cfg.crop_pct)
    backbone.to(device).to(memory_format=torch.channels_last)

    # One decoded-image cache for train + val classes; labels cover that whole list.
    paths = [images.paths[i] for i in train_idx] + [images.paths[i] for i in val_idx]
    labels_all = np.concatenate([train_labels, val_labels + len(split.train)])
    n_train = len(train_idx)
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=cfg.cache_dir or default_cache_dir(), progress=progress)
    if decoded.errors:
        atomic_write_text(run_dir / "skipped.txt", "\n".join(decoded.errors.values()) + "\n")
    tr_positions = np.arange(n_train)
    va_positions = _cap_per_class(np.arange(n_train, len(paths)), labels_all, decoded.valid, cfg.val_max_per_class, cfg.seed)
    train_set = CachedImageDataset(decoded, tr_positions, labels_all, train_transform(dcfg, cfg.augment()))
    # Validate the episode shape early (before any pretraining): small classes, too few classes.
    EpisodeSampler(train_set.targets, cfg.n_way, cfg.k_shot, cfg.n_query, 1, skip_small_classes=cfg.skip_small_classes, class_names=split.train)
    val_sampler = _val_sampler(cfg, decoded, va_positions, labels_all, split)

    if cfg.pretrain == "supervised":
        _pretrain_supervised(cfg, backbone, decoded, tr_positions, labels_all, len(split.train), dcfg, device, run_dir, progress)

    optimizer = torch.optim.SGD(backbone.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    ckpt_dir = run_dir / "checkpoint"
    state = load_checkpoint(ckpt_dir, backbone, optimizer) or {}
    start = int(state.get("epoch", 0)) + 1 if state else 1
    best = state.get("best")
    best_epoch = int(state.get("best_epoch", 0))
    history: list[dict[str, Any]] = list(state.get("history", []))
    if start > 1:
        log.info("resuming %s at epoch %d", run_dir, start)

    def validate() -> float | None:
        if val_sampler is None:
            return None
        feats, _ = _embed_decoded(backbone, decoded, va_positions, labels_all - len(split.train), dcfg, device, progress)
        idx, _ = val_sampler.sample()
        return float(evaluate_episodes(feats, idx, cfg.k_shot, cfg.distance).mean())

    if not history:
        # Epoch 0: the starting point, so the log shows what meta-training adds.
        v0 = validate()
        history.append({"epoch": 0, "val_acc": v0})
        if v0 is not None:
            log.info("epoch 0 (before meta-training): val %d-way %d-shot acc %.4f", val_sampler.n_way, cfg.k_shot, v0)
    atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(h) + "\n" for h in history))

    for epoch in range(start, cfg.epochs + 1):
        # Episodes and augmentation depend only on (seed, epoch): a resumed run matches an unbroken one.
        seed_everything(cfg.seed * 1000 + epoch)
        lr = multistep_lr(epoch - 1, cfg.epochs, cfg.lr, cfg.milestones, cfg.gamma)
        for g in optimizer.param_groups:
            g["lr"] = lr
        sampler = EpisodeSampler(train_set.targets, cfg.n_way, cfg.k_shot, cfg.n_query, cfg.episodes_per_epoch,
                                 seed=cfg.seed * 1000 + epoch, skip_small_classes=cfg.skip_small_classes, class_names=split.train)
        loader = DataLoader(train_set, batch_sampler=sampler, num_workers=cfg.workers)
        row: dict[str, Any] = {"epoch": epoch, "lr": lr}
        row.update(_train_episodes(backbone, loader, optimizer, cfg, device, f"epoch {epoch}/{cfg.epochs}", progress))
        row["val_acc"] = validate()
        # Without validation classes the last epoch is the one kept.
        if row["val_acc"] is None or best is None or row["val_acc"] > best:
            best, best_epoch = row["val_acc"], epoch
            save_weights(backbone, run_dir / "model.safetensors", metadata={"backbone": cfg.backbone, "epoch": str(epoch)})
        history.append(row)
        with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as fh:
            fh.write(json.dumps(row) + "\n")
        save_checkpoint(ckpt_dir, backbone, optimizer, {"epoch": epoch, "best": best, "best_epoch": best_epoch, "history": history})
        msg = f"epoch {epoch}/{cfg.epochs}: loss {row['train_loss']:.4f} acc {row['train_acc']:.4f}"
        if row["val_acc"] is not None:
            msg += f" | val {val_sampler.n_way}-way {cfg.k_shot}-shot acc {row['val_acc']:.4f}"  # type: ignore[union-attr]
        log.info("%s | %.0fs, lr %.0e", msg, row["epoch_seconds"], lr)

    summary = {
        "run": str(run_dir),
        "best_epoch": best_epoch,
        "best_val_acc": best,
        "initial_val_acc": history[0].get("val_acc") if history else None,
        "val_n_way": val_sampler.n_way if val_sampler else None,
        "classes": dataclasses.asdict(split),
        "n_train_images": len(train_set),
        "n_skipped": len(decoded.errors),
        "epochs": cfg.epochs,
        "avg_epoch_seconds": float(np.mean([h["epoch_seconds"] for h in history if "epoch_seconds" in h])) if len(history) > 1 else 0.0,
    }
    atomic_write_json(run_dir / "train.json", summary)
    return summary


def _cap_per_class(positions: np.ndarray, labels: np.ndarray, valid: np.ndarray, cap: int | None, seed: int) -> np.ndarray:
    """At most ``cap`` readable positions per class (seeded choice, sorted); all when ``cap`` is None.

    Validation images are embedded every epoch; a few hundred per class already give
    thousands of distinct episodes, so a cap saves CPU time on large classes.
    """
    positions = positions[valid[positions]]
    if cap is None:
        return positions
    rng = np.random.default_rng(seed)
    keep = []
    for c in np.unique(labels[positions]):
        pos = positions[labels[positions] == c]
        keep.append(np.sort(rng.choice(pos, size=min(cap, len(pos)), replace=False)))
    return np.sort(np.concatenate(keep)) if keep else positions


def _val_sampler(cfg: FewShotTrainConfig, decoded: DecodedImages, positions: np.ndarray, labels: np.ndarray, split: ClassSplit) -> EpisodeSampler | None:
    """Fixed validation episodes (same every epoch, so epochs compare without sampling noise).

    With fewer validation classes than ``n_way`` the episodes use all of them (e.g. 3-way);
    with fewer than 2 there is no validation and the last epoch is kept.
    """
    if len(split.val) < 2:
        log.warning("fewer than 2 validation classes: no validation episodes, the last epoch is kept")
        return None
    ok = positions[decoded.valid[positions]]
    val_labels = labels[ok] - len(split.train)
    need = cfg.k_shot + cfg.n_query
    usable = sum(int((val_labels == c).sum()) >= need for c in range(len(split.val)))
    n_way = min(cfg.n_way, max(usable, 2))
    if n_way < cfg.n_way:
        log.info("validation uses %d-way episodes: only %d validation classes", n_way, usable)
    return EpisodeSampler(val_labels, n_way, cfg.k_shot, cfg.n_query, cfg.val_episodes, seed=cfg.seed,
                          skip_small_classes=cfg.skip_small_classes, class_names=split.val)


# -------------------------------------------------------------------- using backbones


@dataclass
class BackboneSpec:
    """A backbone to embed with: a timm name, its weights, and its input config.

    ``weights`` is a weights name or an absolute file path, so that a gallery made with it
    can rebuild the same network later.
    """

    backbone: str
    weights: str
    img_size: int
    run: str | None = None
    distance: str = "euclidean"
    crop_pct: float = 1.0


def backbone_spec(run: str | None, backbone: str | None, weights: str | None, img_size: int | None) -> BackboneSpec:
    """Resolve ``--run RUN`` or ``--backbone NAME --weights W`` into a :class:`BackboneSpec`.

    Raises:
        AnivisionError: both or neither given, or ``RUN`` is not a finished run.
    """
    if run and (backbone or weights):
        raise AnivisionError("give either --run RUN_DIR or --backbone/--weights, not both")
    if run:
        r = Path(run)
        for f in ("config.json", "model.safetensors", "classes.json"):
            if not (r / f).exists():
                raise AnivisionError(f"{r}: not a few-shot run ({f} missing; train with 'anivision fewshot train')")
        cfg = FewShotTrainConfig.from_dict(json.loads((r / "config.json").read_text()))
        return BackboneSpec(cfg.backbone, str((r / "model.safetensors").resolve()), int(img_size or cfg.img_size), run=str(r), distance=cfg.distance, crop_pct=cfg.crop_pct)
    if not backbone:
        backbone = DEFAULT_BACKBONE
    w = weights or DEFAULT_WEIGHTS
    if Path(w).is_file():
        w = str(Path(w).resolve())
    return BackboneSpec(backbone, w, int(img_size or 128))


def build_backbone(spec: BackboneSpec, device: str | None = None) -> tuple[nn.Module, DataConfig]:
    """Create the backbone of ``spec`` in eval mode with its :class:`DataConfig`."""
    model = create_backbone(spec.backbone, spec.weights, img_size=spec.img_size)
    base = data_config(model, spec.img_size)
    model.to(pick_device(device)).eval()
    return model, DataConfig(base.img_size, base.mean, base.std, crop_pct=spec.crop_pct)


def evaluate_fewshot(
    data: str,
    spec: BackboneSpec,
    cells: Sequence[tuple[int, int]],
    n_query: int = 10,
    episodes: int = 1000,
    seed: int = 0,
    split: str | None = None,
    class_split: str | None = None,
    distance: str | None = None,
    skip_small_classes: bool = False,
    out: str | Path | None = None,
    cache_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Few-shot accuracy ± 95% CI on cached embeddings of unseen classes.

    Args:
        data: class-per-folder dataset (or CSV manifest).
        spec: the backbone; with a run, its held-out test classes are the default.
        cells: (n_way, k_shot) pairs; one pair is a single evaluation, several a grid. A cell
            that the classes cannot fill is marked ``n/a`` with the reason, not an error.
        n_query: Q per class.
        episodes: T per cell.
        seed: episode seed (cells use the same seed).
        split: ``train``/``val``/``test``/``all`` classes; default ``test`` with a run, else ``all``.
        class_split: ``classes.json`` or run folder defining the split when ``spec`` has no run.
        distance: default: the run's distance, else euclidean.
        skip_small_classes: leave out classes with fewer than K + Q images (else an error).
        out: folder for ``fewshot.json`` (and ``fewshot.md`` for a grid).

    Returns:
        With one cell: that cell's result (``accuracy``, ``ci95``, ...) plus common keys; with
        several: ``{"grid": [cells...], ...}``. Accuracies are fractions.
    """
    distance = distance or spec.distance
    if distance not in DISTANCES:
        raise AnivisionError(f"unknown distance '{distance}' (choose {' or '.join(DISTANCES)})")
    images = load_labeled(data)
    split = split or ("test" if spec.run else "all")
    if split == "all" and not class_split:
        names = list(images.classes)
    else:
        source = class_split or spec.run
        if not source:
            raise AnivisionError(f"--split {split} needs --run RUN_DIR or --class-split classes.json (which classes are {split} classes)")
        names = ClassSplit.load(source).part(split)
        if not names:
            raise AnivisionError(f"{source}: the class split has no {split} classes")
    idx, labels, names = select_classes(images, names, data)
    model, dcfg = build_backbone(spec, device)
    emb = embed_paths(model, [images.paths[i] for i in idx], dcfg, cache_dir=cache_dir or default_cache_dir(), progress=progress)
    if emb.skipped:
        log.warning("skipped %d unreadable image(s), e.g. %s", len(emb.skipped), emb.skipped[0])
    feats, labs = emb.features[emb.valid], labels[emb.valid]
    results = []
    for n_way, k_shot in cells:
        try:
            r = episode_accuracy(feats, labs, n_way, k_shot, n_query, episodes, seed, distance, skip_small_classes, names)
        except AnivisionError as exc:
            if len(cells) == 1:
                raise
            r = {"n_way": n_way, "k_shot": k_shot, "n_query": n_query, "episodes": episodes, "accuracy": None, "ci95": None, "note": str(exc)}
        results.append(r)
    common = {
        "data": str(data), "split": split, "backbone": spec.backbone, "weights": spec.weights, "run": spec.run,
        "img_size": dcfg.img_size, "distance": distance, "seed": seed, "n_classes": len(names), "n_images": int(len(feats)),
        "n_skipped": len(emb.skipped), "skipped": emb.skipped,
    }
    report: dict[str, Any] = {**results[0], **common} if len(cells) == 1 else {"grid": results, **common, "classes": names}
    if out is not None:
        out_dir = Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(out_dir / "fewshot.json", report)
        if len(cells) > 1:
            atomic_write_text(out_dir / "fewshot.md", grid_markdown(results, common))
        report["out"] = str(out_dir)
    return report


def format_cell(r: dict[str, Any]) -> str:
    """``"75.52 ± 1.10"`` in percent, or ``"n/a"``."""
    return "n/a" if r.get("accuracy") is None else f"{100 * r['accuracy']:.2f} ± {100 * r['ci95']:.2f}"


def grid_markdown(results: Sequence[dict[str, Any]], common: dict[str, Any]) -> str:
    """The AniWho Table 8 layout: rows N-way, columns K-shot, accuracy ± 95% CI in percent."""
    ways = sorted({r["n_way"] for r in results})
    shots = sorted({r["k_shot"] for r in results})
    cell = {(r["n_way"], r["k_shot"]): r for r in results}
    src = f"run `{common['run']}`" if common.get("run") else f"`{common['backbone']}` ({common['weights']})"
    lines = [
        f"Few-shot accuracy (%) ± 95% CI over {results[0]['episodes']} episodes, {results[0]['n_query']} queries per class, "
        f"{common['distance']} distance; {src}; {common['split']} classes of `{common['data']}` ({common['n_classes']} classes).",
        "",
        "| | " + " | ".join(f"{k}-shot" for k in shots) + " |",
        "|---|" + "---|" * len(shots),
    ]
    notes = []
    for n in ways:
        row = []
        for k in shots:
            r = cell.get((n, k))
            if r is None:
                row.append("")
                continue
            text = format_cell(r)
            if r.get("note"):
                notes.append(f"{n}-way {k}-shot: {r['note']}")
                text += f" [{len(notes)}]"
            row.append(text)
        lines.append(f"| {n}-way | " + " | ".join(row) + " |")
    if notes:
        lines.append("")
        lines += [f"[{i}] {t}" for i, t in enumerate(notes, 1)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------- enrolment and identification


def loo_own_and_other(features: np.ndarray, labels: np.ndarray, protos: np.ndarray, distance: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Leave-one-out distances of enrolment images to their own and to the other prototypes.

    The own prototype of image i is recomputed without i (``(n * p - x_i) / (n - 1)``), so the
    distance is what a new, unseen image of that character would get.

    Args:
        features: (M, D); labels: (M,) in 0..C-1; protos: (C, D) means over all images.

    Returns:
        own (M,) distances (NaN for classes with a single image), other (M,) distance to the
        nearest other prototype, and correct (M,) bool, whether the leave-one-out nearest
        prototype is the right one.
    """
    f = torch.as_tensor(features, dtype=torch.float64)
    p = torch.as_tensor(protos, dtype=torch.float64)
    y = torch.as_tensor(labels, dtype=torch.int64)
    counts = torch.bincount(y, minlength=p.shape[0]).to(torch.float64)
    n = counts[y].unsqueeze(1)  # (M, 1)
    loo = (n * p[y] - f) / (n - 1).clamp_min(1.0)  # (M, D)
    own = episode_distances(f.unsqueeze(1), loo.unsqueeze(1), distance).reshape(-1)  # (M,)
    own[counts[y] < 2] = float("nan")
    d_all = episode_distances(f, p, distance)  # (M, C)
    d_all[torch.arange(len(y)), y] = float("inf")
    other = d_all.min(1).values
    return own.numpy(), other.numpy(), (own < other).numpy()


def enroll_gallery(
    gallery: str,
    out: str | Path,
    spec: BackboneSpec,
    k_shot: int | None = None,
    seed: int = 0,
    distance: str | None = None,
    percentile: float = 95.0,
    cache_dir: str | None = None,
    device: str | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Enrol one prototype per character folder of ``gallery``.

    Open-set threshold rule: for every enrolment image, the leave-one-out distance to its own
    character's prototype is computed (prototype re-averaged without that image). The
    threshold is the ``percentile``-th percentile of these distances: a query farther than
    that from every prototype is ``unknown``, so about ``100 - percentile`` % of genuine
    images of enrolled characters are expected to be rejected. ``gallery.json`` records the
    rule, the leave-one-out accuracy and the fraction of enrolment images whose nearest
    *other* prototype is within the threshold (a rough impostor acceptance rate).

    Writes ``out/prototypes.safetensors`` (``prototypes`` (C, D) float32) and
    ``out/gallery.json``.

    Args:
        gallery: class-per-folder images, one folder per character.
        out: gallery folder to write.
        spec: backbone to embed with.
        k_shot: use K seeded-random readable images per character (default: all).
        seed: seed for picking the K images.
        distance: default: the run's distance, else euclidean.
        percentile: of own-class leave-one-out distances, for the threshold.

    Raises:
        AnivisionError: no images, a character with no readable image or fewer than K.
    """
    from safetensors.torch import save_file

    distance = distance or spec.distance
    if distance not in DISTANCES:
        raise AnivisionError(f"unknown distance '{distance}' (choose {' or '.join(DISTANCES)})")
    if not 0 < percentile <= 100:
        raise AnivisionError(f"--threshold-percentile must be in (0, 100], got {percentile}")
    images = scan_class_folders(gallery)
    model, dcfg = build_backbone(spec, device)
    emb = embed_paths(model, images.paths, dcfg, cache_dir=cache_dir or default_cache_dir(), progress=progress)
    labels = np.asarray(images.labels, dtype=np.int64)
    rng = np.random.default_rng(seed)
    keep: list[int] = []
    for c, name in enumerate(images.classes):
        ok = np.flatnonzero((labels == c) & emb.valid)
        if len(ok) == 0:
            raise AnivisionError(f"{gallery}/{name}: no readable image to enrol")
        if k_shot is not None:
            if len(ok) < k_shot:
                raise AnivisionError(f"{gallery}/{name}: {len(ok)} readable image(s); --k-shot {k_shot} needs {k_shot}")
            ok = np.sort(rng.choice(ok, size=k_shot, replace=False))
        keep.extend(int(i) for i in ok)
    keep_arr = np.asarray(keep, dtype=np.int64)
    feats, labs = emb.features[keep_arr], labels[keep_arr]
    n_cls = len(images.classes)
    protos = np.stack([feats[labs == c].mean(0) for c in range(n_cls)]).astype(np.float32)
    own, other, correct = loo_own_and_other(feats, labs, protos, distance)
    has_own = ~np.isnan(own)
    threshold = float(np.percentile(own[has_own], percentile)) if has_own.any() else None
    if threshold is None:
        log.warning("every character has a single image: no leave-one-out distances, so no 'unknown' threshold")
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    tmp = out_dir / "prototypes.safetensors.tmp"
    save_file({"prototypes": torch.from_numpy(protos)}, str(tmp))
    tmp.replace(out_dir / "prototypes.safetensors")
    meta = {
        "classes": images.classes,
        "counts": [int((labs == c).sum()) for c in range(n_cls)],
        "backbone": spec.backbone,
        "weights": spec.weights,
        "run": spec.run,
        "model_fingerprint": model_fingerprint(model),
        "img_size": dcfg.img_size,
        "crop_pct": dcfg.crop_pct,
        "distance": distance,
        "threshold": threshold,
        "threshold_rule": f"{percentile:g}th percentile of leave-one-out distances of enrolment images to their own prototype",
        "threshold_percentile": percentile,
        "k_shot": k_shot,
        "seed": seed,
        "loo_accuracy": float(correct[has_own].mean()) if has_own.any() else None,
        "impostor_within_threshold": float((other <= threshold).mean()) if threshold is not None else None,
        "gallery": str(gallery),
        "skipped": emb.skipped,
    }
    atomic_write_json(out_dir / "gallery.json", meta)
    return meta | {"out": str(out_dir)}


def load_gallery(gallery: str | Path) -> tuple[dict[str, Any], np.ndarray]:
    """``(gallery.json contents, (C, D) prototypes)`` of a gallery folder."""
    from safetensors.torch import load_file

    g = Path(gallery)
    if not (g / "gallery.json").is_file() or not (g / "prototypes.safetensors").is_file():
        raise AnivisionError(f"{g}: not a gallery folder (make one with 'anivision enroll')")
    meta = json.loads((g / "gallery.json").read_text())
    return meta, load_file(str(g / "prototypes.safetensors"))["prototypes"].numpy()


def identify_paths(
    gallery: str | Path,
    inputs: list[str],
    top_k: int = 3,
    threshold: float | None = None,
    device: str | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Nearest enrolled characters of images, with ``unknown`` beyond the threshold.

    Rows have ``path``, ``pred_1``, ``dist_1``, ... ``pred_K``, ``dist_K``, nearest first.
    When the nearest distance exceeds the threshold, ``pred_1`` is ``unknown`` (``dist_1`` the
    nearest distance) and the characters follow as ``pred_2`` ... (nearest first), so the
    closest candidates stay visible.

    Args:
        gallery: folder written by :func:`enroll_gallery`.
        inputs: image files, folders or glob patterns.
        top_k: K.
        threshold: override of the gallery's threshold; ``math.inf`` disables ``unknown``.

    Returns:
        (rows, skipped): ``skipped`` maps unreadable paths to their reason.

    Raises:
        AnivisionError: not a gallery, no input matches, or the backbone weights changed.
    """
    from anivision.data.folder import expand_inputs

    if top_k < 1:
        raise AnivisionError("--top-k must be at least 1")
    meta, protos = load_gallery(gallery)
    spec = BackboneSpec(meta["backbone"], meta["weights"], int(meta["img_size"]), run=meta.get("run"), distance=meta["distance"], crop_pct=float(meta.get("crop_pct", 1.0)))
    model, dcfg = build_backbone(spec, device)
    if model_fingerprint(model) != meta.get("model_fingerprint"):
        raise AnivisionError(f"{gallery}: the backbone weights {meta['weights']} changed since enrolment; re-run 'anivision enroll'")
    thr = meta.get("threshold") if threshold is None else threshold
    paths = expand_inputs(inputs)
    # Decoded here rather than via embed_paths: the reasons of unreadable files are reported.
    decoded = decode_images(paths, cache_size(dcfg), cache_dir=None, progress=progress)
    ds = CachedImageDataset(decoded, np.arange(len(paths)), None, eval_transform(dcfg))
    valid = ds.indices
    feats = forward_batches(model, ds, batch_size=64, desc="identify", progress=progress) if len(ds) else np.zeros((0, protos.shape[1]), np.float32)
    dist = episode_distances(torch.as_tensor(feats, dtype=torch.float64), torch.as_tensor(protos, dtype=torch.float64), spec.distance).numpy()
    classes = meta["classes"]
    k = min(top_k, len(classes))
    order = np.argsort(dist, axis=1, kind="stable")
    rows = []
    for j, i in enumerate(valid):
        ranked = [(classes[int(c)], float(dist[j, c])) for c in order[j, :k]]
        if thr is not None and ranked and ranked[0][1] > thr:
            ranked = [("unknown", ranked[0][1])] + ranked[: k - 1]
        row: dict[str, Any] = {"path": paths[int(i)]}
        for r, (name, d) in enumerate(ranked, 1):
            row[f"pred_{r}"], row[f"dist_{r}"] = name, d
        rows.append(row)
    return rows, dict(decoded.errors)
