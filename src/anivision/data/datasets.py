"""Torch datasets over the decoded-image cache."""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch.utils.data import Dataset

from anivision.data.cache import DecodedImages


class CachedImageDataset(Dataset):
    """Images from a :class:`DecodedImages` cache with their labels.

    Only valid (decodable) images are included, so an epoch never meets a corrupt file.

    Args:
        decoded: the decoded images.
        indices: which images (positions in ``decoded``) form this dataset.
        labels: label of every image in ``decoded`` (length N), or None (label -1).
        transform: maps a (3, S, S) uint8 tensor to the model input.
    """

    def __init__(
        self,
        decoded: DecodedImages,
        indices: list[int] | np.ndarray,
        labels: list[int] | np.ndarray | None,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        idx = np.asarray(indices, dtype=np.int64)
        self.indices = idx[decoded.valid[idx]] if len(idx) else idx
        self.decoded = decoded
        self.labels = np.asarray(labels, dtype=np.int64) if labels is not None else None
        self.transform = transform

    def __len__(self) -> int:
        return len(self.indices)

    @property
    def targets(self) -> np.ndarray:
        """(len,) labels of the included images."""
        if self.labels is None:
            return np.full(len(self.indices), -1, dtype=np.int64)
        return self.labels[self.indices]

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        j = int(self.indices[i])
        # Copy out of the memory map: the tensor must own its memory to be collated and augmented.
        x = torch.from_numpy(np.array(self.decoded.pixels[j], copy=True)).permute(2, 0, 1)
        y = int(self.labels[j]) if self.labels is not None else -1
        return self.transform(x), y
