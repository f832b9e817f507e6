"""The adaptive loss: the general distribution's NLL with α and c learned per dimension (Barron §3).

    α = (α_max − α_min)·sigmoid(ℓ_α) + α_min,    c = softplus(ℓ_c) + c_min

The NLL, not ρ, is minimised: with ρ alone a learnable c only grows and α only falls, since both shrink
every residual's cost. The NLL's log c + log Z(α) makes small c and low α pay for inliers.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from core.losses.distribution import nll


def _logit(p: float) -> float:
    return math.log(p / (1 - p))


def _softplus_inverse(y: float) -> float:
    return y + math.log(-math.expm1(-y))


class AdaptiveLoss(nn.Module):
    """Per-dimension learned α ∈ [alpha_lo, alpha_hi] and c > scale_lo; forward gives the NLL.

    forward(residual) takes a residual of shape (N, num_dims) (or anything ending in num_dims) and returns
    the per-element NLL ρ(r, α, c) + log c + log Z(α), float32. Register `parameters()` with the optimiser.
    """

    def __init__(
        self,
        num_dims: int,
        alpha_lo: float = 0.0,
        alpha_hi: float = 3.0,
        scale_lo: float = 1e-8,
        scale_init: float = 1.0,
        alpha_init: float | None = None,
    ) -> None:
        super().__init__()
        if not 0 <= alpha_lo < alpha_hi or not math.isfinite(alpha_hi):
            raise ValueError(
                f"need 0 ≤ alpha_lo < alpha_hi < ∞ (got {alpha_lo}, {alpha_hi}): the NLL exists only for α ≥ 0"
            )
        if not 0 < scale_lo < scale_init:
            raise ValueError(f"need 0 < scale_lo < scale_init (got {scale_lo}, {scale_init})")
        alpha_init = (alpha_lo + alpha_hi) / 2 if alpha_init is None else alpha_init
        if not alpha_lo < alpha_init < alpha_hi:
            raise ValueError(f"alpha_init {alpha_init} must lie strictly inside ({alpha_lo}, {alpha_hi})")
        self.num_dims = num_dims
        self.alpha_lo, self.alpha_hi, self.scale_lo = alpha_lo, alpha_hi, scale_lo
        fraction = (alpha_init - alpha_lo) / (alpha_hi - alpha_lo)
        self.alpha_latent = nn.Parameter(torch.full((num_dims,), _logit(fraction)))
        self.scale_latent = nn.Parameter(torch.full((num_dims,), _softplus_inverse(scale_init - scale_lo)))

    def alpha(self) -> torch.Tensor:
        """α per dimension, shape (num_dims,)."""
        return (self.alpha_hi - self.alpha_lo) * torch.sigmoid(self.alpha_latent) + self.alpha_lo

    def scale(self) -> torch.Tensor:
        """c per dimension, shape (num_dims,)."""
        return F.softplus(self.scale_latent) + self.scale_lo

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        if residual.shape[-1] != self.num_dims:
            raise ValueError(f"residual's last dimension is {residual.shape[-1]}, expected {self.num_dims}")
        return nll(residual.float(), self.alpha(), self.scale())

    def extra_repr(self) -> str:
        return f"num_dims={self.num_dims}, alpha in [{self.alpha_lo}, {self.alpha_hi}], scale > {self.scale_lo}"
