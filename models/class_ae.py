"""A stacked MLP autoencoder (the class-penalty study's 784-800-200-b, mirrored) and the class targets
that pull its latents apart.

    encoder: x (flattened) -> Linear-ReLU -> ... -> Linear -> z (b numbers, no activation)
    decoder: z -> Linear-ReLU -> ... -> Linear -> sigmoid -> x̂ in [0, 1]

Targets (`class_targets`): one point t_c per class c in the b-dimensional latent space,

    one_hot      t_c = r · e_c (rows of the identity, zero-padded when b > C): only C of b dimensions used
    simplex      the C vertices of a regular simplex centred at 0, at radius r, rotated by a fixed random
                 orthogonal matrix so every dimension is used: ‖t_c − t_d‖ = r·√(2C/(C−1))
    orthogonal   C orthonormal rows of a fixed random orthogonal b×b matrix, times r: ‖t_c − t_d‖ = r·√2

(the rotations come from a fixed seed, so a run's targets are the same on every machine).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["TARGETS", "MLPAutoencoder", "class_targets", "penalty"]

TARGETS = ("one_hot", "simplex", "orthogonal")
_TARGET_SEED = 20190  # the targets' fixed rotation


class MLPAutoencoder(nn.Module):
    """image_shape (C, H, W) -> hidden sizes -> bottleneck b, and the mirror image back."""

    def __init__(self, image_shape: Sequence[int], hidden: Sequence[int], bottleneck: int) -> None:
        super().__init__()
        self.image_shape = tuple(int(v) for v in image_shape)
        pixels = math.prod(self.image_shape)
        sizes = [pixels, *map(int, hidden), int(bottleneck)]
        self.latent_dim = int(bottleneck)
        enc: list[nn.Module] = []
        for i in range(len(sizes) - 1):
            enc.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                enc.append(nn.ReLU())
        dec: list[nn.Module] = []
        back = sizes[::-1]
        for i in range(len(back) - 1):
            dec.append(nn.Linear(back[i], back[i + 1]))
            if i < len(back) - 2:
                dec.append(nn.ReLU())
        self.encoder, self.decoder = nn.Sequential(*enc), nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """x (B, C, H, W) in [0, 1] -> z (B, b)."""
        return self.encoder(x.flatten(1))

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z (B, b) -> x̂ (B, C, H, W) in [0, 1]."""
        return torch.sigmoid(self.decoder(z)).view(-1, *self.image_shape)


def class_targets(kind: str, classes: int, dims: int, radius: float = 1.0) -> torch.Tensor:
    """The (classes, dims) target points (see the module docstring), float32."""
    if kind not in TARGETS:
        raise ValueError(f"unknown targets {kind!r}; choose one of {', '.join(TARGETS)}")
    if dims < classes:
        raise ValueError(f"a bottleneck of {dims} cannot hold {classes} separated class targets; use at least "
                         f"{classes}")
    if kind == "one_hot":
        out = torch.zeros(classes, dims)
        out[:, :classes] = torch.eye(classes)
        return out * radius
    gen = torch.Generator().manual_seed(_TARGET_SEED)
    rotation, _ = torch.linalg.qr(torch.randn(dims, dims, generator=gen, dtype=torch.float64))
    if kind == "orthogonal":
        return (rotation[:classes] * radius).float()
    vertices = torch.eye(classes, dtype=torch.float64) - 1.0 / classes  # centred simplex in C dims
    vertices = vertices / vertices.norm(dim=1, keepdim=True) * radius
    padded = torch.zeros(classes, dims, dtype=torch.float64)
    padded[:, :classes] = vertices
    return (padded @ rotation).float()


def penalty(z: torch.Tensor, targets: torch.Tensor, labels: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """R_i = ‖z_i − t_{y_i}‖₂ per example (B,), computed as √(‖·‖² + ε) so that its gradient is finite
    at z_i = t_{y_i} (where the norm's own gradient is undefined)."""
    return ((z.float() - targets[labels]).square().sum(dim=1) + eps).sqrt()
