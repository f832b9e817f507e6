"""The general distribution p(x | μ, α, c) = exp(−ρ(x − μ, α, c)) / (c·Z(α)), for α ≥ 0.

Its negative log-likelihood is the adaptive loss; it can be negative (a density can exceed 1), which
is correct. Members and their scales: α = 2 is the normal N(0, c²) (standard deviation c), α = 0 the
Cauchy with scale √2·c (`students_t.cauchy_nll(x, √2·c)`), α → ∞ a density ∝ exp(1 − e^{x²/(2c²)}).
"""

from __future__ import annotations

import math

import torch

from core.losses.general import rho
from core.losses.numerics import TensorLike, as_tensors, check_alpha_nonnegative, check_scale
from core.losses.partition import log_partition


def nll(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """−log p(x | 0, α, c) = ρ(x, α, c) + log c + log Z(α), elementwise, for α ≥ 0 and c > 0."""
    x, alpha, scale, _ = as_tensors(x, alpha, scale)
    check_alpha_nonnegative(alpha)
    check_scale(scale)
    return rho(x, alpha, scale) + torch.log(scale).to(x.dtype) + log_partition(alpha).to(x.dtype)


def _sample_dtype(*values: torch.Tensor) -> torch.dtype:
    return torch.float64 if any(v.dtype == torch.float64 for v in values) else torch.get_default_dtype()


def sample(
    alpha: TensorLike,
    scale: TensorLike = 1.0,
    shape: tuple[int, ...] | torch.Size = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Draw from p(x | 0, α, c) (α ≥ 0) by rejection from its α = 0 member, the Cauchy with scale √2.

    Since ρ(x, α, 1) ≥ ρ(x, 0, 1) for α ≥ 0, a Cauchy draw x is kept with probability
    exp(ρ(x, 0, 1) − ρ(x, α, 1)) ≤ 1; the acceptance rate is Z(α)/Z(0) (1 at α = 0, 0.56 at 2, 0.46 at ∞).
    α and c broadcast against `shape`; the draws are made at c = 1 and multiplied by c. They are made
    on α's device, in α's and c's floating dtype (float64 if either is, else the default dtype); a
    `generator` must live on that device.
    """
    alpha_t = alpha if isinstance(alpha, torch.Tensor) else torch.as_tensor(alpha)
    device = alpha_t.device
    scale_t = scale if isinstance(scale, torch.Tensor) else torch.as_tensor(scale, device=device)
    if scale_t.device != device:
        raise ValueError(f"α is on {device} but c on {scale_t.device}: put both on one device")
    dtype = _sample_dtype(*(v for v in (alpha_t, scale_t) if v.is_floating_point()))
    alpha_t, scale_t = alpha_t.to(dtype), scale_t.to(dtype)
    check_alpha_nonnegative(alpha_t, "sample")
    check_scale(scale_t)
    shape = torch.broadcast_shapes(tuple(shape), alpha_t.shape, scale_t.shape)
    alpha_full = alpha_t.detach().expand(shape).reshape(-1)
    out = torch.empty(alpha_full.numel(), dtype=dtype, device=device)
    todo = torch.arange(alpha_full.numel(), device=device)
    while todo.numel() > 0:
        u = torch.rand(todo.numel(), generator=generator, dtype=torch.float64, device=device)
        proposal = (math.sqrt(2) * torch.tan(math.pi * (u - 0.5))).to(dtype)
        log_accept = rho(proposal, 0.0) - rho(proposal, alpha_full[todo])
        keep = torch.rand(todo.numel(), generator=generator, dtype=dtype, device=device) < torch.exp(log_accept)
        out[todo[keep]] = proposal[keep]
        todo = todo[~keep]
    return out.reshape(shape) * scale_t.detach().expand(shape)
