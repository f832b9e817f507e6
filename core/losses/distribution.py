"""The general distribution p(x | μ, α, c) = exp(−ρ(x − μ, α, c)) / (c·Z(α)), for α ≥ 0.

Its negative log-likelihood is the adaptive loss; it can be negative (a density can exceed 1), which
is correct. Members: α = 2 is the normal N(0, c²), α = 0 the Cauchy with scale √2·c.
"""

from __future__ import annotations

import torch

from core.losses.general import TensorLike, _as_tensors, _check_scale, rho
from core.losses.partition import log_partition


def _check_alpha_nonnegative(alpha: torch.Tensor) -> None:
    if alpha.device.type == "cpu" and not bool((alpha >= 0).all()):
        raise ValueError(
            "nll needs α ≥ 0: for α < 0 (Geman-McClure, Welsch) exp(−ρ) does not integrate, so there is "
            "no normalised likelihood. Use rho() for those losses, or keep α in [0, ∞)."
        )


def nll(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """−log p(x | 0, α, c) = ρ(x, α, c) + log c + log Z(α), elementwise, for α ≥ 0 and c > 0."""
    x, alpha, scale, _ = _as_tensors(x, alpha, scale)
    _check_alpha_nonnegative(alpha)
    _check_scale(scale)
    out = rho(x, alpha, scale) + torch.log(scale).to(x.dtype) + log_partition(alpha).to(x.dtype)
    return out


def density(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """p(x | 0, α, c) = exp(−nll)."""
    return torch.exp(-nll(x, alpha, scale))


def sample(
    alpha: TensorLike,
    scale: TensorLike = 1.0,
    shape: tuple[int, ...] | torch.Size = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw from p(x | 0, α, c) (α ≥ 0) by rejection from its α = 0 member, the Cauchy with scale √2.

    Since ρ(x, α, 1) ≥ ρ(x, 0, 1) for α ≥ 0, a Cauchy draw x is kept with probability
    exp(ρ(x, 0, 1) − ρ(x, α, 1)) ≤ 1; the acceptance rate is Z(α)/Z(0) (1 at α = 0, 0.56 at 2, 0.46 at ∞).
    α and c broadcast against `shape`; the draws are made at c = 1 and multiplied by c.
    """
    alpha, scale = torch.as_tensor(alpha, dtype=torch.float32), torch.as_tensor(scale, dtype=torch.float32)
    _check_alpha_nonnegative(alpha)
    _check_scale(scale)
    shape = torch.broadcast_shapes(tuple(shape), alpha.shape, scale.shape)
    alpha_full = alpha.expand(shape).reshape(-1)
    out = torch.empty(alpha_full.numel(), dtype=torch.float32)
    todo = torch.arange(alpha_full.numel())
    while todo.numel() > 0:
        u = torch.rand(todo.numel(), generator=generator, dtype=torch.float64)
        proposal = (2**0.5 * torch.tan(torch.pi * (u - 0.5))).float()
        a = alpha_full[todo]
        log_accept = rho(proposal, 0.0) - rho(proposal, a)
        keep = torch.rand(todo.numel(), generator=generator) < torch.exp(log_accept)
        out[todo[keep]] = proposal[keep]
        todo = todo[~keep]
    return out.reshape(shape) * scale.expand(shape)
