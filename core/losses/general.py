"""Barron's general robust loss ρ(x, α, c), its derivative ψ and its IRLS weight ψ/x.

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1)            (Barron 2019, eq. 1)

with the limits ρ(x, 2, c) = ½(x/c)², ρ(x, 0, c) = log(½(x/c)² + 1), ρ(x, −∞, c) = 1 − exp(−½(x/c)²)
and ρ(x, +∞, c) = exp(½(x/c)²) − 1.

Numerics (details in `formulas` and `fixed`). With z = (x/c)², b = |α−2|, L = log1p(z/b), t = αL/2:
ρ = (b/α)·expm1(t), with no cancellation (the direct power form loses 1e-3 relative accuracy in float32
at α = 1e-3 and returns 0 at α = 1e-7). log1p(z/b) is taken as 2·log|x/(c√b)| where z/b would overflow,
so a huge residual keeps its exact value (ρ(1e30, 1, 1) = 1e30 in float32). Values and gradients are
exact to the dtype wherever they are representable, saturate at the dtype's largest finite number
beyond, and are never NaN: no branch is left to produce Inf·0.

Two paths:
* α and c plain numbers (training's case): `fixed.FixedShapeLoss`, a few in-place passes that compute
  ρ and ψ together and save ψ (1× the input) for a one-multiply backward.
* α or c tensors (the adaptive loss): `GeneralLoss`, closed-form gradients for x, α and c that save only
  the three inputs, computed in the inputs' precision; the rare elements whose exponents are large
  enough to cost float32 accuracy (|αL/2| or |(α−2)L/2| > 16) are recomputed in float64. Gradients of
  broadcast α and c are summed to their shapes inside backward, again in float64 wherever the float32
  sum would overflow, and saturated, so a batch of near-limit residuals cannot sum to ±Inf.

    ψ(x) = ∂ρ/∂x = (x/c²)·(z/b + 1)^{(α−2)/2},      ∂ρ/∂c = −ψ(x)·x/c,
    ∂ρ/∂α = (b/4)·L³·exp[0, (α/2−1)L, αL/2, αL/2] ≥ 0      (`formulas.drho_dalpha`: exact for every x,
                                                              where the paper's form cancels for small x)
On CUDA both paths run as fused kernels (`fused`), the same formulas compiled by torch.compile.
"""

from __future__ import annotations

import math

import torch

from core.losses import formulas, fused
from core.losses.fixed import FixedShapeLoss
from core.losses.numerics import (
    TensorLike,
    as_tensors,
    check_scale,
    compute_dtype,
    saturate_,
    saturating_cast,
    sum_to_shape,
    tensor_max,
)

# float32 elements whose exponents exceed this are recomputed in float64 (float32 loses |arg|·eps).
_FLOAT32_EXPONENT = 16.0


def _integer_closed_forms(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, rho: torch.Tensor
                          ) -> torch.Tensor:
    """ρ replaced by the closed forms of `formulas.integer_rho` where α is such an integer."""
    for k in formulas.INTEGER_MEMBERS:
        at_k = alpha == k
        if not bool(at_k.any()):
            continue
        q = (x / scale).square() / abs(k - 2)
        ok = at_k & (q < torch.finfo(q.dtype).max ** 0.2)  # elsewhere the generic form (huge q) stays
        rho = torch.where(ok, formulas.integer_rho(torch.where(ok, q, torch.zeros_like(q)), k), rho)
    return rho


def _rho_threshold(alpha: torch.Tensor) -> torch.Tensor:
    """Per α, the ρ above which a float32 value came through an exponent > 16 (and is recomputed)."""
    e16 = math.expm1(_FLOAT32_EXPONENT)
    b = (alpha - 2).abs()
    generic = torch.where(alpha > 0, b / alpha.clamp(min=1e-30) * e16, torch.full_like(alpha, math.inf))
    out = torch.where(alpha.abs() < formulas.ZERO_ALPHA, torch.full_like(alpha, _FLOAT32_EXPONENT), generic)
    out = torch.where(alpha == math.inf, torch.full_like(alpha, e16), out)
    return torch.where((alpha == 2) | (alpha == -math.inf), torch.full_like(alpha, math.inf), out)


def _flat_broadcast(shape: torch.Size, idx: torch.Tensor, *tensors: torch.Tensor) -> list[torch.Tensor]:
    return [t.expand(shape).reshape(-1)[idx] for t in tensors]


def general_rho(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ρ for tensors (x, α, c) in their common compute dtype, exact (float64 for the risky float32
    elements), saturated; no autograd of its own."""
    rho = formulas.rho_values(x, alpha, scale)
    rho = _integer_closed_forms(x, alpha, scale, rho)
    if rho.dtype == torch.float32:
        threshold = _rho_threshold(alpha)
        if not tensor_max(torch.sub(rho, threshold)) <= 0:  # NaN lands here too
            shape = rho.shape
            flat = rho.reshape(-1)
            idx = (~(flat <= threshold.expand(shape).reshape(-1))).nonzero().squeeze(1)
            xe, ae, ce = (t.double() for t in _flat_broadcast(shape, idx, x, alpha, scale))
            exact = _integer_closed_forms(xe, ae, ce, formulas.rho_values(xe, ae, ce))
            flat[idx] = saturating_cast(exact, torch.float32)
    return saturate_(rho)


def _risk(log1p_q: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """max(|αL/2|, |(α−2)L/2|) bounded above by L·max(1, |α/2|, |α/2 − 1|), elementwise."""
    beta = alpha / 2
    m = torch.maximum(torch.maximum((beta - 1).abs(), beta.abs()), torch.ones_like(beta))
    return log1p_q * m


def elementwise_grads(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, g: torch.Tensor,
                      need: tuple[bool, bool, bool]) -> tuple[list[torch.Tensor | None], torch.Tensor]:
    """[g·∂ρ/∂x, g·∂ρ/∂α, g·∂ρ/∂c] (broadcast shape, None where not needed) and the elementwise risk
    (exponent size; > 16 marks float32 elements to recompute in float64). Inputs in one dtype."""
    special = (alpha == 2) | torch.isinf(alpha)
    if not bool(special.any()):
        log1p_q, xs = formulas.log1p_q_and_ratio(x, scale, (alpha - 2).abs())
        risk = _risk(log1p_q, alpha)  # (= y of ∂ρ/∂α's series)
        w = torch.mul(log1p_q, (alpha - 2) / 2).exp_() if (need[0] or need[2]) else None
        d_alpha = formulas.drho_dalpha_from_log(log1p_q, alpha, y=risk) if need[1] else None
    else:
        xs, w = formulas.psi_factor(x, alpha, scale)
        d_alpha = formulas.drho_dalpha(x, alpha, scale) if need[1] else None
        a = torch.where(special, torch.ones_like(alpha), alpha)
        risk = _risk(formulas.safe_log1p_q(x, scale, (a - 2).abs()), a)
        half_z = (xs * math.sqrt(0.5)).square()
        risk = torch.where(torch.isinf(alpha), half_z, torch.where(alpha == 2, torch.zeros_like(risk), risk))
    # ψ = (xs·w)/c, in an order that overflows only where the true value does. Saturation: float64 here
    # (a value beyond must not meet a zero later as Inf·0); float32 elements beyond its range are
    # recomputed in float64 by the caller, and the reduction saturates the rest.
    sat = saturate_ if x.dtype == torch.float64 else (lambda t: t)
    out: list[torch.Tensor | None] = [None, None, None]
    if need[0] or need[2]:
        grad_x = sat(sat(xs * w).div_(scale)).mul_(g)
        if need[2]:  # −ψ·xs·g, written as +(ψ·g)·xs: the sign is applied to the reduced sum (GeneralLoss)
            out[2] = sat(grad_x * xs)
        out[0] = grad_x if need[0] else None
    if need[1]:
        out[1] = sat(d_alpha).mul_(g)
    return out, risk


class GeneralLoss(torch.autograd.Function):
    """ρ(x, α, c) with closed-form gradients for x, α and c; saves only its three inputs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, alpha, scale)
        dtype = compute_dtype(x, alpha, scale)
        if fused.available(x, alpha, scale):
            return fused.general_rho(x, alpha, scale)
        return general_rho(x.to(dtype), alpha.to(dtype), scale.to(dtype)).to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        x, alpha, scale = ctx.saved_tensors
        need = tuple(bool(n) for n in ctx.needs_input_grad)
        if fused.available(x, alpha, scale):
            grads = fused.general_grads(x, alpha, scale, grad_out, need)
        else:
            dtype = compute_dtype(x, alpha, scale)
            xd, ad, cd, g = x.to(dtype), alpha.to(dtype), scale.to(dtype), grad_out.to(dtype)
            grads, risk = elementwise_grads(xd, ad, cd, g, need)
            if dtype == torch.float32 and not tensor_max(risk) <= _FLOAT32_EXPONENT:
                shape = risk.shape
                idx = (~(risk.reshape(-1) <= _FLOAT32_EXPONENT)).nonzero().squeeze(1)
                parts = (t.double() for t in _flat_broadcast(shape, idx, xd, ad, cd, g))
                exact, _ = elementwise_grads(*parts, need)
                for grad, e in zip(grads, exact, strict=True):
                    if grad is not None:
                        grad.reshape(-1)[idx] = saturating_cast(e, grad.dtype)
        shapes = (x.shape, alpha.shape, scale.shape)
        dtypes = (x.dtype, alpha.dtype, scale.dtype)
        out = [None if g is None else sum_to_shape(g, s, d) for g, s, d in zip(grads, shapes, dtypes, strict=True)]
        if out[2] is not None and not fused.available(x, alpha, scale):
            out[2] = out[2].neg_()  # (the eager c-gradient is summed as ψ·xs·g)
        return tuple(out)


def _is_number(v: object) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def rho(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """The general robust loss ρ(x, α, c), elementwise; α and c broadcast against x.

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1), for every real α and α = ±∞.
    Differentiable in x, α and c; bf16/fp16 inputs are computed in float32 and returned in their dtype.
    """
    if _is_number(alpha) and _is_number(scale) and isinstance(x, torch.Tensor) and x.is_floating_point():
        # Plain numbers go straight to the fixed-shape path: turned into device tensors, reading them
        # back would cost a host-device sync every training step.
        if not scale > 0:
            raise ValueError(f"scale c must be > 0; got {scale} (use a small positive c instead)")
        if fused.available(x):
            return fused.fixed_rho(x, float(alpha), float(scale))
        return FixedShapeLoss.apply(x, float(alpha), float(scale))
    x, alpha, scale, _ = as_tensors(x, alpha, scale)
    check_scale(scale)
    fixed = alpha.numel() == 1 and scale.numel() == 1 and not (alpha.requires_grad or scale.requires_grad)
    wider = compute_dtype(alpha, scale) == torch.float64 and x.dtype != torch.float64  # computed in float64
    if fixed and alpha.dim() <= x.dim() and scale.dim() <= x.dim() and not wider:
        a, c = float(alpha), float(scale)  # (a host read: pass numbers on CUDA to avoid its sync)
        out = fused.fixed_rho(x, a, c) if fused.available(x) else FixedShapeLoss.apply(x, a, c)
        return out.reshape(torch.broadcast_shapes(x.shape, alpha.shape, scale.shape))
    return GeneralLoss.apply(x, alpha, scale)


def _exact_psi_parts(x: TensorLike, alpha: TensorLike, scale: TensorLike
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
    """(xs, w, c) in float64 (exact for float32 inputs) and the dtype to return. Plain numbers α and c
    are taken at full precision (as `rho` takes them), not rounded to x's dtype."""
    numbers = {k: torch.tensor(float(v), dtype=torch.float64) for k, v in (("alpha", alpha), ("scale", scale))
               if _is_number(v)}
    x, alpha, scale, out_dtype = as_tensors(x, alpha, scale)
    alpha, scale = numbers.get("alpha", alpha).to(x.device), numbers.get("scale", scale).to(x.device)
    check_scale(scale)
    dtype = torch.float64 if x.device.type == "cpu" or compute_dtype(x, alpha, scale) == torch.float64 \
        else torch.float32
    cd = scale.to(dtype)
    xs, w = formulas.psi_factor(x.to(dtype), alpha.to(dtype), cd)
    return xs, w, cd, out_dtype


def psi(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """ψ(x, α, c) = ∂ρ/∂x = (x/c²)·((x/c)²/|α−2| + 1)^{α/2 − 1}; α = 2: x/c², α = −∞: (x/c²)·e^{−z/2}."""
    xs, w, cd, out_dtype = _exact_psi_parts(x, alpha, scale)
    return saturating_cast(saturate_(xs * w) / cd, out_dtype)


def weight(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """The IRLS weight ψ(x)/x = (1/c²)·((x/c)²/|α−2| + 1)^{α/2 − 1}; its value at x = 0 is 1/c²."""
    _, w, cd, out_dtype = _exact_psi_parts(x, alpha, scale)
    return saturating_cast(saturate_(w / cd) / cd, out_dtype)
