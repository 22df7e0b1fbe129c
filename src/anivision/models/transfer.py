"""A few-shot embedding that transfers to characters from other sources and artists.

The last pooled layer of an ImageNet backbone describes objects; an anime character is told
apart by its design: hair and eye colours, hairstyle, accessories. On characters from another
source (RESULTS section 17) three things transfer far better than the head's pooled features:

* pooled features of *intermediate* stages (texture and part detectors, less tied to
  ImageNet's classes and to one artist's style);
* a colour histogram (hue x saturation x value, square-rooted): a character's palette
  survives a change of artist, the head's features do not;
* SimpleShot's normalisation (Wang et al. 2019): each part centred on the mean of the
  training images and L2-normalised, so that no part dominates by its scale.

:class:`TransferEmbedding` wraps any timm backbone that has ``forward_intermediates`` (CNNs and
ViTs) and maps (B, 3, H, W) normalised images to (B, D) unit vectors: the concatenation of the
chosen parts, each centred and normalised, then centred and normalised again. The means are
buffers fitted on training images (:meth:`TransferEmbedding.fit`) and saved with the weights,
so enrolment, identification and export use exactly the embedding that was evaluated.

Its state dict holds the backbone under ``backbone.`` (what
:func:`~anivision.models.backbone.load_backbone_weights` reads) plus the means.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterable, Sequence

import torch
from torch import nn

from anivision.errors import AnivisionError

#: Hue x saturation x value bins of the colour histogram (192 bins).
COLOUR_BINS: tuple[int, int, int] = (12, 4, 4)
#: The default parts (``--parts``): the last two stages, the head and the colour histogram.
DEFAULT_PARTS = "stage-2,stage-1,head,colour"


@dataclass(frozen=True)
class TransferSpec:
    """Which parts make the embedding.

    Attributes:
        stages: ``forward_intermediates`` indices whose outputs are average-pooled (negative:
            from the end; ``-1`` is the last stage). Lite0's stages are 16, 24, 40, 112 and 320
            channels wide; the default ``(-2, -1)`` takes the 112- and 320-channel ones.
        head: include the backbone's own pooled features.
        colour: include the colour histogram.
    """

    stages: tuple[int, ...] = (-2, -1)
    head: bool = True
    colour: bool = True

    @classmethod
    def from_dict(cls, d: dict) -> "TransferSpec":
        return cls(tuple(int(s) for s in d.get("stages", ())), bool(d.get("head", True)), bool(d.get("colour", True)))

    def to_dict(self) -> dict:
        return {"stages": list(self.stages), "head": self.head, "colour": self.colour}


def parse_parts(text: str) -> TransferSpec:
    """``--parts`` text, e.g. ``stage-2,stage-1,head,colour`` (``stageN``: the N-th stage, negative from the end).

    Raises:
        AnivisionError: an unknown part, or none.
    """
    stages: list[int] = []
    head = colour = False
    for tok in (t.strip() for t in str(text).split(",") if t.strip()):
        if tok == "head":
            head = True
        elif tok == "colour":
            colour = True
        elif tok.startswith("stage") and tok[5:].lstrip("-").isdigit():
            stages.append(int(tok[5:]))
        else:
            raise AnivisionError(f"unknown part '{tok}' in --parts '{text}' (use stageN, stage-N, head, colour; e.g. {DEFAULT_PARTS})")
    if not (stages or head or colour):
        raise AnivisionError(f"--parts '{text}' names no part (e.g. {DEFAULT_PARTS})")
    return TransferSpec(tuple(dict.fromkeys(stages)), head, colour)


def colour_histogram(rgb: torch.Tensor, bins: Sequence[int] = COLOUR_BINS) -> torch.Tensor:
    """(B, H*S*V) normalised hue-saturation-value histograms of (B, 3, H, W) RGB images in [0, 1].

    Hue follows the usual hexcone formula; greys (no saturation) fall in hue bin 0, as in PIL.
    """
    r, g, b = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    maxc, _ = rgb.max(1)
    minc, _ = rgb.min(1)
    delta = maxc - minc
    safe = torch.where(delta > 0, delta, torch.ones_like(delta))
    hue = torch.where(maxc == r, (g - b) / safe, torch.where(maxc == g, 2.0 + (b - r) / safe, 4.0 + (r - g) / safe))
    hue = torch.where(delta > 0, torch.remainder(hue / 6.0, 1.0), torch.zeros_like(hue))
    sat = torch.where(maxc > 0, delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc)), torch.zeros_like(maxc))
    nh, ns, nv = (int(x) for x in bins)
    hi = (hue * nh).long().clamp(0, nh - 1)
    si = (sat * ns).long().clamp(0, ns - 1)
    vi = (maxc * nv).long().clamp(0, nv - 1)
    idx = ((hi * ns + si) * nv + vi).flatten(1)  # (B, H*W)
    hist = torch.zeros(rgb.shape[0], nh * ns * nv, dtype=rgb.dtype, device=rgb.device)
    hist.scatter_add_(1, idx, torch.ones_like(idx, dtype=rgb.dtype))
    return hist / idx.shape[1]


def _unit(x: torch.Tensor) -> torch.Tensor:
    return nn.functional.normalize(x, dim=-1, eps=1e-12)


class TransferEmbedding(nn.Module):
    """Centred, normalised parts of a backbone (and a colour histogram), concatenated.

    Args:
        backbone: a timm model with ``forward_intermediates`` (``num_classes=0``).
        spec: the parts.
        mean, std: the input normalisation (to recover RGB for the colour histogram).
        img_size: input side, for sizing the parts.
    """

    def __init__(self, backbone: nn.Module, spec: TransferSpec, mean: Sequence[float], std: Sequence[float], img_size: int) -> None:
        super().__init__()
        if not hasattr(backbone, "forward_intermediates"):
            raise AnivisionError(f"{type(backbone).__name__}: the transfer embedding needs a timm backbone with forward_intermediates")
        if not (spec.stages or spec.head or spec.colour):
            raise AnivisionError("the transfer embedding needs at least one part (stages, head or colour)")
        self.backbone = backbone
        self.spec = spec
        self.register_buffer("rgb_mean", torch.tensor(list(mean), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("rgb_std", torch.tensor(list(std), dtype=torch.float32).view(1, 3, 1, 1), persistent=False)
        was_training = backbone.training
        backbone.eval()
        with torch.no_grad():
            dims = [p.shape[1] for p in self.parts(torch.zeros(1, 3, img_size, img_size))]
        backbone.train(was_training)
        self.part_dims: list[int] = dims
        self.num_features = sum(dims)
        # Means of the training images: per part (before its normalisation) and of the concatenation.
        self.register_buffer("part_mean", torch.zeros(self.num_features))
        self.register_buffer("concat_mean", torch.zeros(self.num_features))

    def parts(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The raw (uncentred) parts of a batch: pooled stages, pooled head, colour histogram."""
        out: list[torch.Tensor] = []
        if self.spec.stages or self.spec.head:
            n = len(self.backbone.feature_info) if hasattr(self.backbone, "feature_info") else None
            idx = sorted({(s % n) if n and s < 0 else s for s in self.spec.stages}) if self.spec.stages else [n - 1 if n else -1]
            final, inter = self.backbone.forward_intermediates(x, indices=idx, intermediates_only=False)
            out += [t.float().mean((2, 3)) if t.ndim == 4 else t.float().mean(1) for t in inter] if self.spec.stages else []
            if self.spec.head:
                out.append(self.backbone.forward_head(final, pre_logits=True).float())
        if self.spec.colour:
            rgb = (x.float() * self.rgb_std + self.rgb_mean).clamp(0.0, 1.0)
            out.append(colour_histogram(rgb).sqrt())
        return out

    def _centred_parts(self, raw: list[torch.Tensor]) -> torch.Tensor:
        means = torch.split(self.part_mean, self.part_dims)
        return torch.cat([_unit(p - m) for p, m in zip(raw, means)], dim=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _unit(self._centred_parts(self.parts(x)) - self.concat_mean)

    def load_means(self, state: dict[str, torch.Tensor], source: str) -> None:
        """The means from a saved state dict (``model.safetensors`` of a run).

        Raises:
            AnivisionError: the file has no means, or means of another size (other parts or backbone).
        """
        for name in ("part_mean", "concat_mean"):
            t = state.get(name)
            if t is None:
                raise AnivisionError(f"{source}: no transfer-embedding means ({name}); the run was not saved with --embedding transfer")
            if t.shape != getattr(self, name).shape:
                raise AnivisionError(f"{source}: transfer-embedding means of size {tuple(t.shape)[0]}, the parts need {self.num_features}")
            getattr(self, name).copy_(t.float())

    @torch.no_grad()
    def fit(self, batches: Iterable[torch.Tensor]) -> None:
        """Set the means from batches of (normalised) training images, in eval mode."""
        was_training = self.training
        self.eval()
        raw: list[list[torch.Tensor]] = []
        for xb in batches:
            raw.append([p.double() for p in self.parts(xb.to(self.part_mean.device))])
        if not raw:
            raise AnivisionError("the transfer embedding needs at least one training image to fit its means")
        cols = [torch.cat([r[i] for r in raw]) for i in range(len(self.part_dims))]
        self.part_mean.copy_(torch.cat([c.mean(0) for c in cols]).float())
        self.concat_mean.copy_(self._centred_parts([c.float() for c in cols]).double().mean(0).float())
        self.train(was_training)
