"""``anivision faces train``: train the face detector's neck and head on a face-box folder.

The backbone is frozen, so its features are computed once per augmented view (``RUN/views/``, one
safetensors file per round of views, deterministic from (seed, round, image)) and each epoch
trains the head on them through the engine's :func:`~anivision.engine.loop.train_one_epoch`.
Killed at any moment, the run resumes: finished view rounds are read back and training goes on
after the last checkpointed epoch (:class:`~anivision.engine.run.RunFolder`).
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch.utils.data import DataLoader, TensorDataset

from anivision.engine.loop import seed_everything, train_one_epoch
from anivision.engine.optim import param_groups
from anivision.engine.run import RunFolder
from anivision.engine.schedules import warmup_cosine
from anivision.files import absolute_path, atomic_write_json
from anivision.models.detector import STRIDE, FaceDetectorNet, detector_loss, detector_targets
from anivision.progress import progress_bar
from anivision.tasks.faces.config import FaceTrainConfig
from anivision.tasks.faces.data import FaceBoxes, read_face_boxes
from anivision.tasks.faces.views import load_rgb, make_view

log = logging.getLogger(__name__)

#: Weights and description of a trained detector inside its run folder.
WEIGHTS_FILE = "detector.safetensors"
META_FILE = "detector.json"
#: safetensors metadata key holding the detector's description (JSON).
META_KEY = "anivision_detector"


def to_input(arr: np.ndarray) -> torch.Tensor:
    """(B, H, W, 3) or (H, W, 3) uint8 -> normalised float (B, 3, H, W) (mean = std = 0.5)."""
    t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dim() == 3:
        t = t[None]
    return t.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


def _round_views(cfg: FaceTrainConfig, data: FaceBoxes, pics: list[Any], r: int) -> tuple[np.ndarray, list[np.ndarray]]:
    """Round ``r``'s canvases (N, S, S, 3) and their (7, S/8, S/8) targets."""
    n = len(data.images)
    canvases, targets = [], []
    g = cfg.canvas // STRIDE
    for i in range(n):
        rng = np.random.default_rng([cfg.seed, r, i])
        others = [int(j) for j in rng.choice(n, size=min(3, n - 1), replace=False) if j != i][:3] if n > 1 else []
        group = [(pics[i], data.images[i].boxes)] + [(pics[j], data.images[j].boxes) for j in others]
        # Round 0 is the plain colour view of each image; later rounds are fully augmented.
        grey_p, mosaic_p = (0.0, 0.0) if r == 0 else (cfg.grey_p, cfg.mosaic_p)
        arr, keep, ignore = make_view(group, rng, cfg.canvas, cfg.img_size, grey_p=grey_p, mosaic_p=mosaic_p)
        canvases.append(arr)
        targets.append(detector_targets(keep, ignore, g, g))
    return np.stack(canvases), targets


def build_views(cfg: FaceTrainConfig, data: FaceBoxes, model: FaceDetectorNet, folder: Path) -> TensorDataset:
    """Backbone features and targets of every view, computed once per round and kept in ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    pics: list[Any] = []
    parts: dict[str, list[torch.Tensor]] = {"f3": [], "f4": [], "f5": [], "t": []}
    model.eval()
    for r in progress_bar(range(cfg.views), cfg.progress, desc="views", unit="round"):
        path = folder / f"round_{r:03d}.safetensors"
        if not path.is_file():
            if not pics:
                pics = [load_rgb(str(im.path)) for im in data.images]
            canvases, targets = _round_views(cfg, data, pics, r)
            feats: list[list[torch.Tensor]] = [[], [], []]
            for s in range(0, len(canvases), 16):
                for k, f in enumerate(model.features(to_input(canvases[s : s + 16]))):
                    feats[k].append(f.half().contiguous())
            shard = {f"f{k + 3}": torch.cat(feats[k]).contiguous() for k in range(3)}
            shard["t"] = torch.from_numpy(np.stack(targets)).half()
            tmp = path.with_name(path.name + ".tmp")
            save_file(shard, str(tmp))
            tmp.replace(path)
        shard = load_file(str(path))
        for k in parts:
            parts[k].append(shard[k])
    return TensorDataset(*(torch.cat(parts[k]) for k in ("f3", "f4", "f5", "t")))


def head_step(model: torch.nn.Module, batch: Any) -> tuple[torch.Tensor, dict[str, float]]:
    """The training step: the head on cached features, TTFNet loss."""
    f3, f4, f5, t = batch
    hm, ltrb = model(f3.float(), f4.float(), f5.float())
    return detector_loss(hm, ltrb, t.float())


def detector_meta(cfg: FaceTrainConfig) -> dict[str, Any]:
    """What :func:`anivision.tasks.faces.predictor.load_detector` needs to rebuild the model."""
    return {"kind": "anivision-face-detector", "backbone": cfg.backbone, "width": cfg.width, "img_size": cfg.img_size, "stride": STRIDE}


def _fit(cfg: FaceTrainConfig, run: RunFolder, model: FaceDetectorNet, views: TensorDataset, on_step: Callable[[int], None] | None) -> list[dict[str, Any]]:
    head = model.head
    opt = torch.optim.AdamW(param_groups([("head", head, cfg.lr)], cfg.weight_decay))
    state = run.resume(head, opt)
    steps_per_epoch = -(-len(views) // cfg.batch_size)
    total = steps_per_epoch * cfg.epochs

    def lr_fn(step: int, group: dict) -> float:
        return warmup_cosine(step, total, cfg.warmup_steps, group["base_lr"], group["base_lr"] * 0.01)

    for epoch in state.epochs(cfg.epochs):
        gen = seed_everything(cfg.seed * 1000 + epoch)
        loader = DataLoader(views, batch_size=cfg.batch_size, shuffle=True, generator=gen)
        model.train()
        stats = train_one_epoch(
            head, loader, opt, head_step, lr_fn, start_step=epoch * steps_per_epoch, grad_clip=10.0,
            channels_last=False, on_step=on_step, desc=f"epoch {epoch + 1}/{cfg.epochs}", progress=cfg.progress,
        )
        row = {"epoch": epoch + 1, "loss": stats.loss, **stats.logs, "lr": stats.lr, "seconds": round(stats.seconds, 2)}
        log.info("epoch %d: loss %.4f (heatmap %.4f, box %.4f)", epoch + 1, stats.loss, stats.logs.get("hm", 0), stats.logs.get("box", 0))
        run.end_epoch(state, epoch, row, head, opt)
    return state.history


def train_detector(cfg: FaceTrainConfig, on_step: Callable[[int], None] | None = None) -> dict[str, Any]:
    """Train a detector into ``cfg.out``; a finished run is reused, a killed one resumes.

    Returns:
        ``metrics.json``: the per-epoch history, the data counts and the weights file.

    Raises:
        AnivisionError: bad data folder or flag values, or ``out`` holds another run.
    """
    cfg.validate()
    cfg.boxes = absolute_path(cfg.boxes)
    if cfg.weights not in ("none", "imagenet", "efficientnet_lite0_imagenet"):
        cfg.weights = absolute_path(cfg.weights)
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    run = RunFolder(cfg.out, cfg)
    if (done := run.finished("metrics.json")) is not None:
        return done
    run.claim()
    data = read_face_boxes(cfg.boxes, cfg.split)
    t0 = time.perf_counter()
    torch.manual_seed(cfg.seed)
    model = FaceDetectorNet(cfg.backbone, cfg.weights, cfg.width)
    views = build_views(cfg, data, model, run.path / "views")
    t_views = time.perf_counter() - t0
    history = _fit(cfg, run, model, views, on_step)
    model.eval()
    run.save_weights(model, WEIGHTS_FILE, metadata={"format": "pt", META_KEY: json.dumps(detector_meta(cfg))})
    atomic_write_json(run.path / META_FILE, detector_meta(cfg))
    metrics = {
        "history": history, "final_loss": history[-1]["loss"] if history else None,
        "n_images": len(data.images), "n_faces": data.n_faces, "n_negatives": data.n_negatives,
        "problems": data.problems, "n_views": len(views), "views_seconds": round(t_views, 1),
        "train_seconds": round(sum(h.get("seconds", 0) for h in history), 1), "weights": WEIGHTS_FILE,
    }
    run.write_json("metrics.json", metrics)
    if not cfg.keep_views:
        shutil.rmtree(run.path / "views", ignore_errors=True)
    run.release()
    return metrics
