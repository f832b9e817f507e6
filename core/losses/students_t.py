"""Normalised negative log-likelihoods of the Student's t, Cauchy and normal distributions.

For likelihood comparisons beside the general distribution (Barron's VAE experiment fits a normal, a
Cauchy, a Student's t and the general distribution per coefficient). Scale conventions:

    students_t_nll(x, ν, s) = ½(ν+1)·log1p((x/s)²/ν) + ½·log ν + log s + lgamma(ν/2) − lgamma((ν+1)/2) + ½·log π
                              (density ∝ (1 + (x/s)²/ν)^{−(ν+1)/2}; s is the t's scale, not its std)
    cauchy_nll(x, s)        = log(π·s) + log1p((x/s)²)                 (the t at ν = 1, same s)
    normal_nll(x, s)        = ½(x/s)² + log s + ½·log 2π                (s is the standard deviation)

The general distribution's `nll` at α = 2 with scale c is normal_nll(x, c); at α = 0 it is
cauchy_nll(x, √2·c). Elementwise, broadcasting, float32/float64, plain autograd. log1p((x/s)²/ν) is
taken as 2·log|x/(s√ν)| where the square would overflow, so huge residuals give their exact finite
NLL (and finite gradients); ν = ∞ is the normal; for ν ≥ 1e4 the lgamma difference, which cancels,
comes from its asymptotic series instead.
"""

from __future__ import annotations

import math

import torch

from core.losses.numerics import TensorLike, check_scale

_LOG_PI = math.log(math.pi)
_HALF_LOG_TWO_PI = 0.5 * math.log(2 * math.pi)
_ASYMPTOTIC_NU = 1e4


def _tensors(x: TensorLike, *params: TensorLike) -> list[torch.Tensor]:
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    out = [x.to(dtype)]
    for p in params:
        t = p if isinstance(p, torch.Tensor) and p.is_floating_point() else torch.as_tensor(p, dtype=dtype)
        out.append(t.to(device=x.device, dtype=torch.promote_types(t.dtype, dtype)))
    return out


def log1p_square_ratio(x: torch.Tensor, denom: torch.Tensor) -> torch.Tensor:
    """log1p((x/d)²) for d > 0 without overflow: 2·log|x/d| where (x/d)² would lose or overflow.

    Both branches are finite for every finite x, so autograd's gradient is finite too.
    """
    big_v = 2.0 ** (-math.log2(torch.finfo(x.dtype).eps) // 2 + 2)
    ax = x.abs()
    threshold = big_v * denom
    small = torch.log1p((torch.minimum(ax, threshold) / denom).square())  # (x/d never formed past the switch)
    large = 2 * (torch.log(ax.clamp(min=torch.finfo(x.dtype).tiny)) - torch.log(denom))
    return torch.where(ax > threshold, large, small)


def _t_constant(nu: torch.Tensor) -> torch.Tensor:
    """½·log ν + lgamma(ν/2) − lgamma((ν+1)/2) + ½·log π (→ ½·log 2π as ν → ∞)."""
    safe_small = nu.clamp(max=_ASYMPTOTIC_NU)
    exact = (0.5 * torch.log(safe_small) + torch.lgamma(safe_small / 2) - torch.lgamma((safe_small + 1) / 2)
             + 0.5 * _LOG_PI)
    big = nu.clamp(min=_ASYMPTOTIC_NU)
    inv = 1 / big  # lgamma(z) − lgamma(z + ½) = −½·log z + 1/(8z) − 1/(192z³) + 1/(640z⁵) − …, z = ν/2
    asymptotic = _HALF_LOG_TWO_PI + inv / 4 - inv**3 / 24 + inv**5 / 20
    return torch.where(nu < _ASYMPTOTIC_NU, exact, asymptotic)


def students_t_nll(x: TensorLike, df: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """−log p_t(x | ν, s), elementwise (see the module docstring); ν > 0 (ν = ∞: the normal), s > 0."""
    x, nu, s = _tensors(x, df, scale)
    if nu.device.type == "cpu" and not bool((nu > 0).all()):
        raise ValueError("Student's t needs ν > 0 degrees of freedom (use ν = inf for the normal)")
    check_scale(s)
    finite = torch.isfinite(nu)
    nu_f = torch.where(finite, nu, torch.ones_like(nu))
    out = 0.5 * (nu_f + 1) * log1p_square_ratio(x, s * torch.sqrt(nu_f)) + _t_constant(nu_f) + torch.log(s)
    if not bool(finite.all()):  # (only then: the normal's square overflows for huge x, its gradient too)
        out = torch.where(finite, out, normal_nll(x, s))
    return out


def cauchy_nll(x: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """−log p(x) of the Cauchy distribution with scale s: log(π·s) + log1p((x/s)²)."""
    x, s = _tensors(x, scale)
    check_scale(s)
    return log1p_square_ratio(x, s) + torch.log(s) + _LOG_PI


def normal_nll(x: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """−log p(x) of N(0, s²): ½(x/s)² + log s + ½·log 2π; saturates (no +Inf) where ½(x/s)² overflows."""
    x, s = _tensors(x, scale)
    check_scale(s)
    out = (x / (s * math.sqrt(2))).square() + torch.log(s) + _HALF_LOG_TWO_PI
    return torch.nan_to_num(out, nan=float("nan"), posinf=torch.finfo(out.dtype).max)
