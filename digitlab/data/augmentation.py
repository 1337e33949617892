"""Random affine distortions of whole training batches: one `affine_grid` and one `grid_sample` per batch, on
the batch's device, with the random draws seeded by (seed, epoch, batch, rank) alone."""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class RandomAffine:
    """Each image rotated, scaled and shifted by its own amounts, drawn uniformly from the ranges below.

    Args:
        rotation: Largest rotation, in degrees, either way.
        scale: Largest relative change of size, either way (0.1: from 90 % to 110 %).
        translation: Largest shift along each axis, as a fraction of the image's side (0.1: 2.8 pixels).
        seed: With the epoch, the batch's position in it and the process's rank, fixes every draw.
    """

    rotation: float = 0.0
    scale: float = 0.0
    translation: float = 0.0
    seed: int = 0

    @property
    def active(self) -> bool:
        return bool(self.rotation or self.scale or self.translation)

    def generator(self, epoch: int, batch: int, rank: int = 0) -> torch.Generator:
        # A generator per batch, not one carried along: a run resumed mid-epoch draws the same distortions
        # from its restored position alone, whenever its checkpoint was taken.
        key = hashlib.blake2b(f"{self.seed}/{epoch}/{batch}/{rank}".encode(), digest_size=8).digest()
        return torch.Generator().manual_seed(int.from_bytes(key, "little") >> 1)

    def matrices(self, count: int, generator: torch.Generator) -> torch.Tensor:
        """``[count, 2, 3]`` affine matrices mapping output to input coordinates (`affine_grid`'s convention)."""
        draws = torch.rand(count, 4, generator=generator, dtype=torch.float64) * 2 - 1  # uniform in [-1, 1]
        angle = draws[:, 0] * math.radians(self.rotation)
        size = 1 + draws[:, 1] * self.scale
        shift = draws[:, 2:] * self.translation * 2  # affine_grid's coordinates span 2 per side
        cos, sin = torch.cos(angle) / size, torch.sin(angle) / size
        rows = [torch.stack([cos, -sin, shift[:, 0]], 1), torch.stack([sin, cos, shift[:, 1]], 1)]
        return torch.stack(rows, 1).float()

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Float images ``[N, C, H, W]`` distorted, on their device; blank (0) where a shift uncovers."""
        if not self.active or len(images) == 0:
            return images
        theta = self.matrices(len(images), generator).to(images.device)
        grid = F.affine_grid(theta, list(images.shape), align_corners=False)
        return F.grid_sample(images, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
