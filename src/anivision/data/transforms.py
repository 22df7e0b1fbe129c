"""Train and eval transforms on uint8 image tensors from the decoded-image cache."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchvision.transforms import v2



@dataclass(frozen=True)
class DataConfig:
    """Input preprocessing a backbone expects.

    Attributes:
        img_size: square input side in pixels.
        mean: per-channel mean on the [0, 1] scale.
        std: per-channel std on the [0, 1] scale.
        crop_pct: eval-time centre-crop fraction (resize to img_size / crop_pct, crop img_size).
    """

    img_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    crop_pct: float = 0.875


@dataclass
class AugmentConfig:
    """Training augmentation; zero or None switches a step off.

    Attributes:
        crop_scale: RandomResizedCrop area range, or None for a plain centre crop.
        hflip: horizontal flip probability.
        vflip: vertical flip probability.
        rotation: max rotation in degrees.
        translate: max translation as a fraction of the side.
        zoom: max zoom in or out as a fraction (RandomAffine scale 1 +/- zoom).
        color_jitter: (brightness, contrast, saturation, hue).
        random_erasing: probability of erasing a random rectangle.
        grayscale: probability of turning an image grey (most manga is greyscale: the colour of
            a coloured page should not be what tells classes apart).
        screentone: probability of overlaying a random halftone dot pattern (manga screentone),
            so that printed tone is not mistaken for content.
    """

    crop_scale: tuple[float, float] | None = (0.8, 1.0)
    hflip: float = 0.5
    vflip: float = 0.0
    rotation: float = 10.0
    translate: float = 0.0
    zoom: float = 0.0
    color_jitter: tuple[float, float, float, float] = (0.2, 0.2, 0.2, 0.05)
    random_erasing: float = 0.1
    grayscale: float = 0.0
    screentone: float = 0.0


class Screentone(torch.nn.Module):
    """Blend a random halftone dot screen into a (3, H, W) float image in [0, 1], with probability ``p``.

    The screen is a product of two sines at a random period (3-7 px), angle and phase; it
    darkens the image by up to ``strength`` where the dots are, like the tone of printed manga.
    """

    def __init__(self, p: float, strength: float = 0.25) -> None:
        super().__init__()
        self.p, self.strength = p, strength

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if torch.rand(()) >= self.p:
            return x
        h, w = x.shape[-2:]
        period, angle, amp = 3 + 4 * torch.rand(()), torch.pi * torch.rand(()), self.strength * (0.3 + 0.7 * torch.rand(()))
        phase = 2 * torch.pi * torch.rand(2)
        yy, xx = torch.meshgrid(torch.arange(h, dtype=x.dtype), torch.arange(w, dtype=x.dtype), indexing="ij")
        u = xx * torch.cos(angle) + yy * torch.sin(angle)
        v = -xx * torch.sin(angle) + yy * torch.cos(angle)
        dots = 0.5 * (1 + torch.sin(2 * torch.pi * u / period + phase[0]) * torch.sin(2 * torch.pi * v / period + phase[1]))
        return (x * (1 - amp * dots)).clamp(0, 1)


def cache_size(cfg: DataConfig) -> int:
    """Side at which images are cached: the eval resize before the centre crop (e.g. 256 for 224)."""
    return max(cfg.img_size, round(cfg.img_size / cfg.crop_pct))


def eval_transform(cfg: DataConfig) -> v2.Compose:
    """(3, S, S) uint8 -> (3, img_size, img_size) float, normalised; S from :func:`cache_size`."""
    return v2.Compose(
        [
            v2.CenterCrop(cfg.img_size),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize(cfg.mean, cfg.std),
        ]
    )


def train_transform(cfg: DataConfig, aug: AugmentConfig) -> v2.Compose:
    """(3, S, S) uint8 -> augmented (3, img_size, img_size) float, normalised."""
    steps: list = []
    if aug.crop_scale is not None:
        steps.append(v2.RandomResizedCrop(cfg.img_size, scale=aug.crop_scale, antialias=True))
    else:
        steps.append(v2.CenterCrop(cfg.img_size))
    if aug.hflip > 0:
        steps.append(v2.RandomHorizontalFlip(aug.hflip))
    if aug.vflip > 0:
        steps.append(v2.RandomVerticalFlip(aug.vflip))
    if aug.rotation > 0 or aug.translate > 0 or aug.zoom > 0:
        steps.append(
            v2.RandomAffine(
                degrees=aug.rotation,
                translate=(aug.translate, aug.translate) if aug.translate > 0 else None,
                scale=(1 - aug.zoom, 1 + aug.zoom) if aug.zoom > 0 else None,
            )
        )
    if any(v > 0 for v in aug.color_jitter):
        b, c, s, h = aug.color_jitter
        steps.append(v2.ColorJitter(brightness=b or None, contrast=c or None, saturation=s or None, hue=h or None))
    if aug.grayscale > 0:
        steps.append(v2.RandomGrayscale(aug.grayscale))
    steps.append(v2.ToDtype(torch.float32, scale=True))
    if aug.screentone > 0:
        steps.append(Screentone(aug.screentone))
    steps.append(v2.Normalize(cfg.mean, cfg.std))
    if aug.random_erasing > 0:
        steps.append(v2.RandomErasing(p=aug.random_erasing, value=0))
    return v2.Compose(steps)
