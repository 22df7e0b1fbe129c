"""A small anchor-free face detector: EfficientNet-Lite0 features, a light FPN and a TTFNet head.

:class:`FaceDetectorNet` maps an image batch to two stride-8 maps: a face-centre heatmap
(``hm``, logits) and the distances from each cell to the box's four sides (``ltrb``, pixels).
The head follows TTFNet (Liu et al., 2019, "Training-Time-Friendly Network for Real-Time Object
Detection"): an elliptical Gaussian per box is the heatmap target (focal loss, as CenterNet),
and every cell under a smaller Gaussian regresses the box with a GIoU loss, weighted by the
Gaussian, so each face trains many cells rather than one; this is what makes it converge in few
steps. Faces are nearly square and rarely overlap, so one scale (stride 8, with stride 16 and 32
context) is enough.

The backbone is frozen by design (BatchNorm statistics too): training reads its features from a
cache (:meth:`FaceDetectorNet.features` once per augmented view) and trains only the neck and
head, which keeps a training run within minutes of CPU. :func:`decode` turns the maps into
boxes; :func:`detector_targets` and :func:`detector_loss` are the training side, pure functions
of tensors.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms, generalized_box_iou_loss

from anivision.models.backbone import DEFAULT_BACKBONE, create_backbone

#: Stride of the output maps in input pixels.
STRIDE = 8
#: Backbone feature levels used (timm ``out_indices``): strides 8, 16 and 32.
OUT_INDICES = (2, 3, 4)
#: TTFNet's Gaussian sizes: heatmap target (alpha) and the regression area (beta), as a share of the box.
ALPHA = 0.54
BETA = 0.54


def _conv_bn(c_in: int, c_out: int, k: int = 3) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, padding=k // 2, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True))


class DetectorHead(nn.Module):
    """Light FPN (stride 32 -> 16 -> 8) and the heatmap / box-side outputs at stride 8.

    Args:
        in_channels: channels of the three backbone levels (strides 8, 16, 32).
        width: channels of the neck and head.
    """

    def __init__(self, in_channels: tuple[int, int, int] = (40, 112, 320), width: int = 64) -> None:
        super().__init__()
        c3, c4, c5 = in_channels
        self.lat5 = _conv_bn(c5, width, 1)
        self.ctx5 = _conv_bn(width, width)
        self.lat4 = _conv_bn(c4, width, 1)
        self.ctx4 = nn.Sequential(_conv_bn(width, width), _conv_bn(width, width))
        self.lat3 = _conv_bn(c3, width, 1)
        self.ctx3 = _conv_bn(width, width)
        self.hm = nn.Conv2d(width, 1, 1)
        self.ltrb = nn.Conv2d(width, 4, 1)
        nn.init.constant_(self.hm.bias, -math.log((1 - 0.01) / 0.01))  # prior 0.01, as RetinaNet
        nn.init.normal_(self.ltrb.weight, std=0.01)
        nn.init.constant_(self.ltrb.bias, 1.0)

    def forward(self, f3: torch.Tensor, f4: torch.Tensor, f5: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(hm logits (B, 1, H/8, W/8), ltrb pixels (B, 4, H/8, W/8))``."""
        p5 = self.ctx5(self.lat5(f5))
        p4 = self.lat4(f4) + F.interpolate(p5, size=f4.shape[-2:], mode="nearest")
        p4 = self.ctx4(p4)
        p3 = self.lat3(f3) + F.interpolate(p4, size=f3.shape[-2:], mode="nearest")
        p3 = self.ctx3(p3)
        ltrb = torch.exp(self.ltrb(p3).float().clamp(max=6.0)) * STRIDE
        return self.hm(p3), ltrb


class FaceDetectorNet(nn.Module):
    """Frozen timm backbone (``features_only``) plus :class:`DetectorHead`.

    Args:
        backbone: timm model name; its levels at strides 8, 16 and 32 are used.
        weights: backbone weights (see :func:`~anivision.models.backbone.create_backbone`);
            ``"none"`` when a whole trained detector's weights are loaded next.
        width: neck and head channels.
    """

    def __init__(self, backbone: str = DEFAULT_BACKBONE, weights: str = "none", width: int = 64) -> None:
        super().__init__()
        self.backbone = create_backbone(backbone, weights, features_only=True, out_indices=OUT_INDICES)
        self.backbone.requires_grad_(False)
        self.head = DetectorHead(tuple(self.backbone.feature_info.channels()), width)

    def train(self, mode: bool = True) -> "FaceDetectorNet":
        super().train(mode)
        self.backbone.eval()  # frozen, BatchNorm statistics included
        return self

    @torch.no_grad()
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Backbone features at strides 8, 16, 32 of a normalised (B, 3, H, W) batch."""
        return list(self.backbone(x))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.head(*self.features(x))


# ------------------------------------------------------------------------------ training side


def _gaussian(h: int, w: int, cx: float, cy: float, sx: float, sy: float) -> np.ndarray:
    ys = (np.arange(h, dtype=np.float32) + 0.5) * STRIDE
    xs = (np.arange(w, dtype=np.float32) + 0.5) * STRIDE
    return np.exp(-((xs[None, :] - cx) ** 2) / (2 * sx * sx) - ((ys[:, None] - cy) ** 2) / (2 * sy * sy))


def detector_targets(boxes: np.ndarray, ignore: np.ndarray, h: int, w: int) -> np.ndarray:
    """Training targets of one image on an (h, w) stride-8 grid, stacked as (7, h, w) float32.

    Channels: 0 heatmap target (max of each box's Gaussian, 1 at its centre cell); 1 heatmap
    weight (0 inside ``ignore`` boxes: faces cut by the crop, neither positive nor negative);
    2-5 the box (x0, y0, x1, y1) each cell regresses; 6 its regression weight (TTFNet: the
    Gaussian, normalised per box and scaled by the log of the box area).

    Args:
        boxes: (N, 4) x0, y0, x1, y1 in input pixels.
        ignore: (M, 4) regions where the heatmap is not trained.
    """
    t = np.zeros((7, h, w), np.float32)
    t[1] = 1.0
    for x0, y0, x1, y1 in np.asarray(ignore, np.float32).reshape(-1, 4):
        c0, r0 = int(max(np.floor(x0 / STRIDE), 0)), int(max(np.floor(y0 / STRIDE), 0))
        t[1, r0:int(np.ceil(y1 / STRIDE)), c0:int(np.ceil(x1 / STRIDE))] = 0.0
    area = np.full((h, w), np.inf, np.float32)
    for x0, y0, x1, y1 in np.asarray(boxes, np.float32).reshape(-1, 4):
        bw, bh = max(x1 - x0, 1.0), max(y1 - y0, 1.0)
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2
        g = _gaussian(h, w, cx, cy, ALPHA * bw / 6, ALPHA * bh / 6)
        ci, cj = min(max(int(cy // STRIDE), 0), h - 1), min(max(int(cx // STRIDE), 0), w - 1)
        g[ci, cj] = 1.0
        t[0] = np.maximum(t[0], g)
        t[1][g > 0.01] = 1.0  # a face is always trained, even inside another face's ignore region
        gr = _gaussian(h, w, cx, cy, BETA * bw / 6, BETA * bh / 6)
        gr[ci, cj] = max(gr[ci, cj], 1.0)
        xs = (np.arange(w) + 0.5) * STRIDE
        ys = (np.arange(h) + 0.5) * STRIDE
        inside = (xs[None, :] > x0) & (xs[None, :] < x1) & (ys[:, None] > y0) & (ys[:, None] < y1)
        region = ((gr > 0.05) & inside) | (gr >= 1.0)
        take = region & (bw * bh < area)  # overlapping faces: the smaller one wins (as FCOS)
        if not take.any():
            continue
        area[take] = bw * bh
        t[2:6, take] = np.array([x0, y0, x1, y1], np.float32)[:, None]
        wgt = gr * take
        t[6][take] = (wgt / wgt.sum() * np.log(max(bw * bh, 2.0)))[take]
    return t


def focal_loss(logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """CornerNet/CenterNet penalty-reduced focal loss, summed, on (B, 1, H, W) maps."""
    p = torch.sigmoid(logits.float()).clamp(1e-4, 1 - 1e-4)
    pos = (target >= 1.0).float()
    pos_loss = -torch.log(p) * (1 - p) ** 2 * pos
    neg_loss = -torch.log(1 - p) * p**2 * (1 - target) ** 4 * (1 - pos)
    return ((pos_loss + neg_loss) * weight).sum()


def cell_centres(h: int, w: int, device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel x and y of each stride-8 cell's centre, each (h, w)."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * STRIDE
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * STRIDE
    return xs[None, :].expand(h, w), ys[:, None].expand(h, w)


def ltrb_to_boxes(ltrb: torch.Tensor) -> torch.Tensor:
    """(B, 4, H, W) side distances -> (B, 4, H, W) x0, y0, x1, y1 boxes."""
    xs, ys = cell_centres(ltrb.shape[-2], ltrb.shape[-1], ltrb.device)
    return torch.stack([xs - ltrb[:, 0], ys - ltrb[:, 1], xs + ltrb[:, 2], ys + ltrb[:, 3]], 1)


def detector_loss(hm: torch.Tensor, ltrb: torch.Tensor, targets: torch.Tensor, box_weight: float = 5.0) -> tuple[torch.Tensor, dict[str, float]]:
    """TTFNet loss of a batch: focal heatmap loss per face plus weighted GIoU of the boxes.

    Args:
        hm: (B, 1, H, W) heatmap logits.
        ltrb: (B, 4, H, W) predicted side distances in pixels.
        targets: (B, 7, H, W) from :func:`detector_targets`.
        box_weight: weight of the GIoU term (TTFNet: 5).

    Returns:
        ``(loss, {"hm": ..., "box": ...})``.
    """
    n_faces = (targets[:, 0] >= 1.0).sum().clamp(min=1).float()
    l_hm = focal_loss(hm, targets[:, :1], targets[:, 1:2]) / n_faces
    wgt = targets[:, 6]
    mask = wgt > 0
    if mask.any():
        pred = ltrb_to_boxes(ltrb).permute(0, 2, 3, 1)[mask]
        tgt = targets[:, 2:6].permute(0, 2, 3, 1)[mask]
        l_box = (generalized_box_iou_loss(pred, tgt, reduction="none") * wgt[mask]).sum() / wgt[mask].sum().clamp(min=1e-6)
    else:
        l_box = ltrb.sum() * 0.0
    loss = l_hm + box_weight * l_box
    return loss, {"hm": float(l_hm.detach()), "box": float(l_box.detach())}


@torch.no_grad()
def decode(hm: torch.Tensor, ltrb: torch.Tensor, min_score: float = 0.05, max_det: int = 100, nms_iou: float = 0.5) -> list[torch.Tensor]:
    """Boxes from the output maps: 3x3 peaks of the heatmap, their boxes, then NMS.

    Returns:
        One (N, 5) tensor per image: x0, y0, x1, y1 (input pixels), score; best first.
    """
    p = torch.sigmoid(hm.float())
    peaks = p * (F.max_pool2d(p, 3, stride=1, padding=1) == p)
    boxes = ltrb_to_boxes(ltrb.float())
    out = []
    for b in range(p.shape[0]):
        scores = peaks[b, 0].flatten()
        k = min(max_det, scores.numel())
        top, idx = scores.topk(k)
        keep = top >= min_score
        top, idx = top[keep], idx[keep]
        bx = boxes[b].flatten(1)[:, idx].T
        if len(top):
            sel = batched_nms(bx, top, torch.zeros_like(idx), nms_iou)
            bx, top = bx[sel], top[sel]
        out.append(torch.cat([bx, top[:, None]], 1))
    return out
