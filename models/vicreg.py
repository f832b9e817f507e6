"""VICReg's networks (Bardes, Ponce & LeCun 2022, arXiv 2105.04906): an encoder and a projector.

    y = encoder(normalise(x))        the representation: probed, projected, compared (D = latent_dim)
    z = projector(y)                 the embedding the VICReg loss sees (the last width of `projector`)

Encoders (`ENCODERS`), each a backbone of F features and a head F → F → BN → ReLU → D (the course-scale
recipe of the VICReg course study: "ResNet-18, fc 512→512, then BN-ReLU-Linear to D = 128"):

- "resnet18": torchvision's ResNet-18 with its stem made for 32×32 images (a 3×3 stride-1 convolution,
  no max-pool; solo-learn and the course do the same), F = 512. Any channel count.
- "small": four 3×3 convolutions (the 2nd and 3rd of stride 2: 28→14→7, 8→4→2) with BatchNorm and ReLU,
  global average pooling, F = 4·width. For 28×28 and 8×8 images, so that a CPU can train it.

Projector: Linear-BN-ReLU for every width but the last, then a Linear without bias (the official
"8192-8192-8192" MLP; the course uses 512-512-512). BatchNorm everywhere (VICReg's own choice; under
DDP the family converts it to SyncBatchNorm), so `eval()` is needed for deterministic embeddings.
`normalise` is a fixed per-channel (x − mean)/std stored as buffers, so training (on augmented views)
and embedding (on plain images) see the same scaling.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["ENCODERS", "BatchNorm1d", "BatchNorm2d", "Projector", "SmallConvBackbone", "VICRegNet",
           "resnet18_backbone"]

ENCODERS = ("resnet18", "small")


class _WithoutCounter:
    """Batch norm without the integer `num_batches_tracked` counter: it only matters with momentum=None (a
    cumulative average), never used here, and without it every saved tensor is a float. Loading weights
    from a plain dict (no version metadata) would make torch's batch norm add the counter back: the
    state is read as of the current version instead."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.num_batches_tracked = None

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, *args, **kwargs) -> None:
        super()._load_from_state_dict(state_dict, prefix, {**local_metadata, "version": 2}, *args, **kwargs)


class BatchNorm1d(_WithoutCounter, nn.BatchNorm1d):
    """nn.BatchNorm1d without the `num_batches_tracked` counter."""


class BatchNorm2d(_WithoutCounter, nn.BatchNorm2d):
    """nn.BatchNorm2d without the `num_batches_tracked` counter."""


def resnet18_backbone(channels: int) -> tuple[nn.Module, int]:
    """torchvision's ResNet-18 for 32×32 images: 3×3 stride-1 stem, no max-pool, no classifier; F = 512."""
    from torchvision.models import resnet18

    net = resnet18(weights=None, norm_layer=BatchNorm2d)
    net.conv1 = nn.Conv2d(channels, 64, kernel_size=3, stride=1, padding=1, bias=False)
    net.maxpool = nn.Identity()
    net.fc = nn.Identity()
    return net, 512


class SmallConvBackbone(nn.Sequential):
    """3×3 convolutions width, 2w (stride 2), 4w (stride 2), 4w, each BN + ReLU; global average pool."""

    def __init__(self, channels: int, width: int) -> None:
        w = int(width)
        plan = [(channels, w, 1), (w, 2 * w, 2), (2 * w, 4 * w, 2), (4 * w, 4 * w, 1)]
        layers: list[nn.Module] = []
        for cin, cout, stride in plan:
            layers += [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), BatchNorm2d(cout),
                       nn.ReLU(inplace=True)]
        super().__init__(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.features = 4 * w


class Projector(nn.Sequential):
    """widths [D, h1, ..., hk]: (Linear-BN-ReLU) between consecutive widths, the last Linear without bias."""

    def __init__(self, widths: Sequence[int]) -> None:
        widths = [int(w) for w in widths]
        layers: list[nn.Module] = []
        for cin, cout in itertools.pairwise(widths[:-1]):
            layers += [nn.Linear(cin, cout), BatchNorm1d(cout), nn.ReLU(inplace=True)]
        layers.append(nn.Linear(widths[-2], widths[-1], bias=False))
        super().__init__(*layers)


class VICRegNet(nn.Module):
    """Encoder + projector. `represent(x)` -> y (B, D); `forward(x)` -> (y, z). x in [0, 1], (B, C, H, W)."""

    def __init__(self, image_shape: Sequence[int], latent_dim: int = 128, encoder: str = "small", width: int = 32,
                 projector: Sequence[int] = (512, 512, 512), mean: Sequence[float] | None = None,
                 std: Sequence[float] | None = None) -> None:
        super().__init__()
        c, h, w = (int(v) for v in image_shape)
        if encoder not in ENCODERS:
            raise ValueError(f"unknown encoder {encoder!r}; choose one of {', '.join(ENCODERS)}")
        if min(h, w) < 4 or latent_dim < 1 or width < 1 or not projector or min(projector) < 1:
            raise ValueError(f"VICRegNet needs images of at least 4×4 and positive sizes; got {list(image_shape)}, "
                             f"latent_dim={latent_dim}, width={width}, projector={list(projector)}")
        self.image_shape = (c, h, w)
        self.latent_dim = int(latent_dim)
        self.embedding_dim = int(projector[-1])
        if encoder == "resnet18":
            backbone, features = resnet18_backbone(c)
        else:
            backbone = SmallConvBackbone(c, width)
            features = backbone.features
        self.backbone = backbone
        self.head = nn.Sequential(nn.Linear(features, features), BatchNorm1d(features), nn.ReLU(inplace=True),
                                  nn.Linear(features, self.latent_dim))
        self.projector = Projector([self.latent_dim, *projector])
        self.register_buffer("mean", torch.tensor(list(mean) if mean else [0.5] * c, dtype=torch.float32).view(c, 1, 1))
        self.register_buffer("std", torch.tensor(list(std) if std else [0.5] * c, dtype=torch.float32).view(c, 1, 1))

    def represent(self, x: torch.Tensor) -> torch.Tensor:
        """y = encoder((x − mean)/std): the representation, (B, D)."""
        return self.head(self.backbone((x - self.mean) / self.std))

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.represent(x)
        return y, self.projector(y)
