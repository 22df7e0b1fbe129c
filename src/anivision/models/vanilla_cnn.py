"""A small from-scratch CNN baseline, registered with timm as ``vanilla_cnn``.

The cartoon-emotion study compares transfer learning against a CNN trained from scratch
(conv + BatchNorm + LeakyReLU). Registering it with timm makes it one more backbone name:
``timm.create_model("vanilla_cnn", num_classes=0)`` works, and it has the same
``group_matcher`` / ``reset_classifier`` / ``num_features`` interface the strategies rely on.
"""

from __future__ import annotations

import torch
from torch import nn
from timm.models import register_model


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.LeakyReLU(0.1, inplace=True),
        nn.MaxPool2d(2),
    )


class VanillaCNN(nn.Module):
    """Four conv stages (32-64-128-256 channels), global average pooling, linear head.

    Args:
        num_classes: classifier outputs; 0 gives a feature extractor (``forward`` -> (B, 256)).
        in_chans: input channels.
        widths: channels of each stage.
        drop_rate: dropout before the classifier.
    """

    def __init__(
        self,
        num_classes: int = 1000,
        in_chans: int = 3,
        widths: tuple[int, ...] = (32, 64, 128, 256),
        drop_rate: float = 0.0,
        **_: object,
    ) -> None:
        super().__init__()
        chans = (in_chans,) + tuple(widths)
        self.stages = nn.Sequential(*[_block(chans[i], chans[i + 1]) for i in range(len(widths))])
        self.num_features = widths[-1]
        self.drop = nn.Dropout(drop_rate)
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()
        # timm's data-config resolution reads this.
        self.pretrained_cfg = {
            "input_size": (3, 128, 128),
            "mean": (0.5, 0.5, 0.5),
            "std": (0.5, 0.5, 0.5),
            "interpolation": "bilinear",
            "crop_pct": 1.0,
            "crop_mode": "center",
            "num_classes": num_classes,
        }
        self.default_cfg = self.pretrained_cfg

    @torch.jit.ignore
    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups: one per conv stage (timm convention)."""
        return {"stem": r"^stages\.0\.", "blocks": r"^stages\.(\d+)"}

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int, global_pool: str | None = None) -> None:
        self.head = nn.Linear(self.num_features, num_classes) if num_classes > 0 else nn.Identity()

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, C, H/16, W/16) feature map."""
        return self.stages(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean(dim=(2, 3))
        x = self.drop(x)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def vanilla_cnn(pretrained: bool = False, **kwargs: object) -> VanillaCNN:
    """Small from-scratch CNN baseline (about 1.2M parameters)."""
    if pretrained:
        raise ValueError("vanilla_cnn has no pretrained weights; it is trained from scratch")
    kwargs.pop("pretrained_cfg", None)
    kwargs.pop("pretrained_cfg_overlay", None)
    return VanillaCNN(**kwargs)  # type: ignore[arg-type]
