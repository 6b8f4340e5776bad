"""Data augmentation on batches of tensors (fastai's aug_transforms set): flip, rotate, zoom, lighting.

Works on a whole batch at once with one affine grid per image, so it costs little next to the model and
needs no per-image PIL work; images are decoded once and augmented freshly every epoch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from core.config import TrainConfig


@dataclass(frozen=True)
class Augment:
    flip: bool = False  # random horizontal flip, half the images
    rotate: float = 0.0  # max degrees either way
    zoom: float = 1.0  # max zoom in (1 = none)
    lighting: float = 0.0  # max brightness and contrast change, as a fraction

    @classmethod
    def from_config(cls, config: TrainConfig) -> Augment:
        return cls(config.flip, config.rotate, config.zoom, config.lighting)

    @property
    def active(self) -> bool:
        return self.flip or self.rotate > 0 or self.zoom > 1 or self.lighting > 0

    def __call__(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Float images (B, 3, H, W) in 0..255 -> augmented float images, each with its own random draw."""
        n = len(images)
        uniform = lambda low, high: low + (high - low) * torch.rand(n, generator=generator)  # noqa: E731
        x = images.float()
        if self.flip or self.rotate > 0 or self.zoom > 1:
            angle = uniform(-self.rotate, self.rotate) * (math.pi / 180)
            scale = 1 / uniform(1.0, self.zoom)  # sampling a smaller window zooms in
            mirror = torch.where(torch.rand(n, generator=generator) < 0.5, -1.0, 1.0) if self.flip else torch.ones(n)
            cos, sin = torch.cos(angle) * scale, torch.sin(angle) * scale
            theta = torch.stack([torch.stack([cos * mirror, -sin, torch.zeros(n)], 1),
                                 torch.stack([sin * mirror, cos, torch.zeros(n)], 1)], 1).to(x.device)  # (B, 2, 3)
            grid = F.affine_grid(theta, list(x.shape), align_corners=False)
            x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
        if self.lighting > 0:
            contrast = (1 + uniform(-self.lighting, self.lighting)).view(-1, 1, 1, 1).to(x.device)
            brightness = (uniform(-self.lighting, self.lighting) * 128).view(-1, 1, 1, 1).to(x.device)
            mean = x.mean(dim=(1, 2, 3), keepdim=True)
            x = (x - mean) * contrast + mean + brightness
        return x.clamp(0, 255)


def preview(augment: Augment, images: torch.Tensor, copies: int, seed: int = 0) -> torch.Tensor:
    """`copies` augmented versions of each uint8 image (N, 3, S, S): (N * copies, 3, S, S) uint8, for a show-batch."""
    generator = torch.Generator().manual_seed(seed)
    repeated = images.repeat_interleave(copies, dim=0)
    return augment(repeated.float(), generator).round().to(torch.uint8)
