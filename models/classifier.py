"""An MLP classifier head for probes on latents (a VAE's μ or reparametrised z, any family's z).

    logits = W_L · act(... act(W_1 x + b_1) ...) + b_L          (output "linear", the default)
    scores = sigmoid(logits)                                      (output "sigmoid": the class-penalty study's)

`hidden=()` is a linear probe. Dropout (if any) sits after each hidden activation. A sigmoid before a
cross-entropy caps the margins (every score lies in (0, 1)), which slows training: it is offered only to
reproduce that study.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

__all__ = ["MLPClassifier"]


class MLPClassifier(nn.Module):
    """in_dim -> hidden... -> num_classes logits."""

    def __init__(self, in_dim: int, num_classes: int, hidden: Sequence[int] = (256,), dropout: float = 0.0,
                 activation: str = "silu", output: str = "linear") -> None:
        super().__init__()
        acts = {"silu": nn.SiLU, "relu": nn.ReLU}
        if activation not in acts or output not in ("linear", "sigmoid"):
            raise ValueError(f"activation must be silu or relu, output linear or sigmoid; got {activation}, {output}")
        if in_dim < 1 or num_classes < 2:
            raise ValueError(f"MLPClassifier needs in_dim ≥ 1 and num_classes ≥ 2, got {in_dim}, {num_classes}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        self.in_dim, self.num_classes, self.hidden = int(in_dim), int(num_classes), tuple(int(h) for h in hidden)
        layers: list[nn.Module] = []
        prev = self.in_dim
        for size in self.hidden:
            layers += [nn.Linear(prev, size), acts[activation]()]
            if dropout:
                layers.append(nn.Dropout(dropout))
            prev = size
        layers.append(nn.Linear(prev, self.num_classes))
        if output == "sigmoid":
            layers.append(nn.Sigmoid())
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """x: (B, in_dim) -> logits (B, num_classes)."""
        return self.net(x)
