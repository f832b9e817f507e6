"""A small convolutional VAE for 1x8x8, 1x28x28 and 3x32x32 images (any C×H×W with H, W ≥ 4).

Encoder: a 3x3 stem, then stride-2 4x4 convolutions that halve the image while both sides are even and
above 4 (at most three times: 8→4, 28→14→7, 32→16→8→4), channels doubling from `width`; a linear layer
gives μ and log σ² (each `latent_dim`). Decoder: the mirror image with transposed convolutions, and a
sigmoid so that x̂ lies in [0, 1], the range the pixels are scaled to.

    z = μ + exp(½ log σ²) · ε,  ε ~ N(0, I)

ε is passed in by the caller (the training loop draws it from its own seeded generator, which keeps
training reproducible and resumable); without it, `forward` draws it with torch's global generator.
GroupNorm, not BatchNorm: no running statistics, the same in train and eval mode, safe under DDP and
`torch.func.vmap`.
"""

from __future__ import annotations

import itertools

import torch
from torch import nn

__all__ = ["ConvVAE", "downsampling_plan", "kl_divergence"]


def _groups(channels: int) -> int:
    return min(8, channels)


def downsampling_plan(height: int, width: int, max_steps: int = 3) -> int:
    """How many stride-2 halvings the encoder applies to an H×W image."""
    steps = 0
    while steps < max_steps and height % 2 == 0 and width % 2 == 0 and min(height, width) > 4:
        height, width, steps = height // 2, width // 2, steps + 1
    return steps


class ConvVAE(nn.Module):
    """Convolutional VAE. `image_shape` = (C, H, W); `latent_dim` = size of z; `width` = first channels."""

    def __init__(self, image_shape: tuple[int, int, int] | list[int], latent_dim: int = 16, width: int = 32) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if min(h, w) < 4 or latent_dim < 1 or width < 1:
            raise ValueError(f"ConvVAE needs images of at least 4×4 and positive sizes; got {image_shape}, "
                             f"latent_dim={latent_dim}, width={width}")
        self.image_shape = (c, h, w)
        self.latent_dim = int(latent_dim)
        self.width = int(width)
        steps = downsampling_plan(h, w)
        chans = [width * 2**i for i in range(steps + 1)]  # width, 2w, 4w, ...
        self.feature_shape = (chans[-1], h >> steps, w >> steps)
        features = chans[-1] * (h >> steps) * (w >> steps)

        enc: list[nn.Module] = [nn.Conv2d(c, width, 3, padding=1), nn.GroupNorm(_groups(width), width), nn.SiLU()]
        for cin, cout in itertools.pairwise(chans):
            enc += [nn.Conv2d(cin, cout, 4, stride=2, padding=1), nn.GroupNorm(_groups(cout), cout), nn.SiLU()]
        self.encoder = nn.Sequential(*enc, nn.Flatten())
        self.to_stats = nn.Linear(features, 2 * latent_dim)

        self.from_latent = nn.Linear(latent_dim, features)
        dec: list[nn.Module] = []
        for cin, cout in itertools.pairwise(chans[::-1]):
            dec += [nn.GroupNorm(_groups(cin), cin), nn.SiLU(), nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)]
        dec += [nn.GroupNorm(_groups(width), width), nn.SiLU(), nn.Conv2d(width, c, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """x: (B, C, H, W) in [0, 1] -> μ, log σ²: (B, latent_dim) each."""
        stats = self.to_stats(self.encoder(x))
        mu, logvar = stats.chunk(2, dim=1)
        return mu, logvar

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        """z: (B, latent_dim) -> x̂: (B, C, H, W) in [0, 1]."""
        h = self.from_latent(z).view(-1, *self.feature_shape)
        return torch.sigmoid(self.decoder(h))

    @staticmethod
    def reparametrize(mu: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor | None = None) -> torch.Tensor:
        """z = μ + exp(½ log σ²) · ε."""
        if eps is None:
            eps = torch.randn_like(mu)
        return mu + torch.exp(0.5 * logvar) * eps.to(mu.dtype)

    def forward(self, x: torch.Tensor, eps: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (x̂, μ, log σ²)."""
        mu, logvar = self.encode(x)
        return self.decode(self.reparametrize(mu, logvar, eps)), mu, logvar

    def spec(self) -> dict:
        """What rebuilds this model (stored in a run's config)."""
        return {"kind": "conv_vae", "image_shape": list(self.image_shape), "latent_dim": self.latent_dim,
                "width": self.width}


def kl_divergence(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(μ, σ²) ‖ N(0, I)) per example, summed over latent dimensions:
    ½ Σ (μ² + σ² − log σ² − 1). Computed in float32."""
    mu, logvar = mu.float(), logvar.float()
    return 0.5 * (mu.square() + logvar.exp() - logvar - 1.0).sum(dim=1)


