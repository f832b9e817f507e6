"""Barron's general robust loss ρ(x, α, c), its derivative ψ and its IRLS weight ψ/x.

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1)            (Barron 2019, eq. 1)

with the limits ρ(x, 2, c) = ½(x/c)², ρ(x, 0, c) = log(½(x/c)² + 1), ρ(x, −∞, c) = 1 − exp(−½(x/c)²)
and ρ(x, +∞, c) = exp(½(x/c)²) − 1.

Numerics. With z = (x/c)², b = |α−2|, L = log1p(z/b) and t = αL/2 the loss is

    ρ = (b/α)·expm1(t) = (b/2)·L·E(t),   E(t) = expm1(t)/t,   E(0) = 1,

which has no 1/α (so α = 0 is not a special case) and loses nothing to cancellation: the direct power
form loses 1e-3 relative accuracy in float32 at α = 1e-3 and returns 0 at α = 1e-7. Only α = 2 (b = 0)
and α = ±∞ (b = ∞) need their closed forms. Values or gradients whose true size is beyond the dtype's
range saturate at its largest finite number instead of becoming Inf, and every branch is kept finite,
so no NaN can reach a gradient.

Gradients are closed-form (`GeneralLoss.backward`), and only the inputs are saved for backward: the
reference implementation leaves the derivative to autograd and keeps about 11 inputs' worth alive.

    ψ(x) = ∂ρ/∂x = (x/c²)·(z/b + 1)^{(α−2)/2},        ∂ρ/∂c = −ψ(x)·x/c,

and for ∂ρ/∂α two forms, each free of cancellation where the other is not (derived in `_drho_dalpha`).
"""

from __future__ import annotations

import math

import torch

Number = float | int
TensorLike = torch.Tensor | Number

# Below this |t| = |αL/2|, E(t) = expm1(t)/t is replaced by its series 1 + t/2 (error t²/6 < 1e-12).
_SERIES_T = 1e-6
# ∂ρ/∂α is logarithmically infinite at α = 2 exactly; there it is evaluated at |α−2| = this.
_ALPHA_GRAD_GAP = 1e-7


def _compute_dtype(*tensors: torch.Tensor) -> torch.dtype:
    """float64 if any input is float64, else float32 (bf16 and fp16 are computed in float32)."""
    return torch.float64 if any(t.dtype == torch.float64 for t in tensors) else torch.float32


def _as_tensors(
    x: TensorLike, alpha: TensorLike, scale: TensorLike
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.dtype]:
    """Tensors on x's device, and the dtype the result is returned in (x's floating dtype)."""
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    # Plain numbers take x's precision (float32 at least, so bf16 inputs do not round α or c).
    number_dtype = x.dtype if x.dtype in (torch.float32, torch.float64) else torch.float32
    alpha, scale = (
        v if isinstance(v, torch.Tensor) and v.is_floating_point()
        else torch.as_tensor(v, dtype=number_dtype, device=x.device)
        for v in (alpha, scale)
    )
    return x, alpha, scale, x.dtype


def _check_scale(scale: torch.Tensor) -> None:
    # A data-dependent check costs a device sync on CUDA; skip it there (c > 0 is then the caller's duty).
    if scale.device.type == "cpu" and not bool((scale > 0).all()):
        raise ValueError("scale c must be > 0 everywhere; got a value <= 0 (use a small positive c instead)")


def _saturate(t: torch.Tensor) -> torch.Tensor:
    """Replace ±Inf with the dtype's largest finite number; NaN is left alone (it would be a bug)."""
    big = torch.finfo(t.dtype).max
    return torch.nan_to_num(t, nan=float("nan"), posinf=big, neginf=-big)


def _expm1_over_t(t: torch.Tensor) -> torch.Tensor:
    """E(t) = expm1(t)/t, with E(0) = 1 and the series 1 + t/2 near 0."""
    small = t.abs() < _SERIES_T
    safe_t = torch.where(small, torch.ones_like(t), t)
    return torch.where(small, 1 + t / 2, torch.expm1(safe_t) / safe_t)


def _scaled_parts(
    x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """xs = x/c, z = xs², b = |α−2| and L = log1p(z/b) = log(1 + z/b), each finite where it can be.

    When z/b overflows, L is taken from logarithms: log(z/b) = 2·log|xs| − log b (exact to rounding).
    b = 0 (α = 2) and b = ∞ (α = ±∞) give L = ∞ and L = 0; callers replace those branches.
    """
    big = torch.finfo(x.dtype).max
    xs = (x / scale).clamp(-big, big)
    z = xs * xs
    b = (alpha - 2).abs()
    q = z / b
    log_q = 2 * torch.log(xs.abs()) - torch.log(b)
    log1p_q = torch.where(torch.isfinite(q), torch.log1p(q), log_q)
    return xs, z, b, log1p_q


def _rho_unscaled(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ρ(x, α, c) in the compute dtype (no autograd of its own)."""
    _, z, b, log1p_q = _scaled_parts(x, alpha, scale)
    t = alpha * log1p_q / 2
    rho = (b / 2) * log1p_q * _expm1_over_t(t)
    rho = torch.where(alpha == 2, z / 2, rho)
    rho = torch.where(alpha == -math.inf, -torch.expm1(-z / 2), rho)
    rho = torch.where(alpha == math.inf, torch.expm1(z / 2), rho)
    return _saturate(rho)


def _dpsi_factor(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """xs = x/c and the factor w = (z/b + 1)^{(α−2)/2}, so that ψ = w·xs/c and ψ/x = w/c²."""
    xs, z, _, log1p_q = _scaled_parts(x, alpha, scale)
    # (α−2)/2 · L: finite for finite α ≠ 2 (L = 0 at x = 0). The limits: α = 2 gives w = 1,
    # α = ±∞ gives w = exp(±z/2).
    generic = torch.where(torch.isfinite(alpha) & (alpha != 2), (alpha - 2) / 2 * log1p_q, torch.zeros_like(z))
    exponent = torch.where(alpha == -math.inf, -z / 2, generic)
    exponent = torch.where(alpha == math.inf, z / 2, exponent)
    return xs, torch.exp(exponent)


def _drho_dalpha(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """∂ρ/∂α, computed in float64 (it sums over many elements and is needed only by the adaptive loss).

    With s = sign(α−2), q = z/b, L = log1p(q), t = αL/2 and u = (α−2)L/2:

    form A (|α| < 1; no 1/α):   ∂ρ/∂α = −s·[(L²/2)·G(t) − (e^t/2)·(L − q/(1+q))],
                                 G(t) = (t·e^t − e^t + 1)/t² = 1/2 + t/3 + t²/8 + …
    form B (|α| ≥ 1; no 1/b):   ∂ρ/∂α = [(z+b)·e^u·(L − q/(1+q))/2 + s·expm1(u) − ρ] / α
                                        = [e^u·((z+b)·((L − q/(1+q))/2 − 1/α) + s) − s + b/α] / α,
    the second line using ρ = ((z+b)·e^u − b)/α, so that e^u, the only factor that can overflow,
    appears once and Inf − Inf cannot happen.

    The limits α → ±∞ have ∂ρ/∂α → 0. At α = 2 the true value is +∞ (ρ − z/2 ≈ (z/4)·δ·log(z/|δ|),
    δ = α−2), so it is evaluated at |δ| = 1e-7: large but finite.
    """
    x, scale = x.double(), scale.double()
    alpha = alpha.double()
    finite = torch.isfinite(alpha)
    a = torch.where(finite, alpha, torch.zeros_like(alpha))
    near_two = (a - 2).abs() < _ALPHA_GRAD_GAP
    a = torch.where(near_two, 2 - _ALPHA_GRAD_GAP * torch.ones_like(a), a)
    s = torch.sign(a - 2)
    _, z, b, log1p_q = _scaled_parts(x, a, scale)
    q_ratio = 1 - 1 / (1 + z / b)  # q/(1+q), finite for q = ∞
    inner = log1p_q - q_ratio  # L − q/(1+q) ≥ 0

    t = a * log1p_q / 2
    small = t.abs() < 1e-4
    safe_t = torch.where(small, torch.ones_like(t), t)
    g_t = torch.where(small, 0.5 + t / 3 + t * t / 8, (torch.expm1(safe_t) * (safe_t - 1) + safe_t) / safe_t**2)
    form_a = -s * (log1p_q**2 / 2 * g_t - torch.exp(t) / 2 * inner)

    u = (a - 2) * log1p_q / 2
    safe_a = torch.where(a.abs() < 1, torch.ones_like(a), a)
    bracket = (z + b) * (inner / 2 - 1 / safe_a) + s
    form_b = (torch.exp(u) * bracket - s + b / safe_a) / safe_a

    grad = torch.where(a.abs() < 1, form_a, form_b)
    grad = torch.where(finite, grad, torch.zeros_like(grad))
    return grad


def _sum_to(grad: torch.Tensor, shape: torch.Size) -> torch.Tensor:
    """Sum a broadcast gradient back down to an input's shape."""
    if grad.shape == shape:
        return grad
    extra = grad.dim() - len(shape)
    grad = grad.sum(dim=tuple(range(extra))) if extra > 0 else grad
    dims = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    return grad.sum(dim=dims, keepdim=True) if dims else grad


class GeneralLoss(torch.autograd.Function):
    """ρ(x, α, c) with closed-form gradients for x, α and c; saves only its three inputs."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
        ctx.save_for_backward(x, alpha, scale)
        dtype = _compute_dtype(x, alpha, scale)
        return _rho_unscaled(x.to(dtype), alpha.to(dtype), scale.to(dtype)).to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        x, alpha, scale = ctx.saved_tensors
        dtype = _compute_dtype(x, alpha, scale)
        xd, ad, cd = x.to(dtype), alpha.to(dtype), scale.to(dtype)
        g = grad_out.to(dtype)
        grad_x = grad_alpha = grad_scale = None
        if ctx.needs_input_grad[0] or ctx.needs_input_grad[2]:
            xs, w = _dpsi_factor(xd, ad, cd)
            dpsi_dxs = _saturate(xs * w)  # f'(xs), ρ = f(x/c)
            if ctx.needs_input_grad[0]:
                grad_x = _sum_to(_saturate(g * _saturate(dpsi_dxs / cd)), x.shape).to(x.dtype)
            if ctx.needs_input_grad[2]:
                # ∂ρ/∂c = −f'(xs)·xs/c
                d_scale = _saturate(-_saturate(dpsi_dxs * xs) / cd)
                grad_scale = _sum_to(_saturate(g * d_scale), scale.shape).to(scale.dtype)
        if ctx.needs_input_grad[1]:
            d_alpha = _drho_dalpha(xd, ad, cd).to(dtype)
            grad_alpha = _sum_to(_saturate(g * _saturate(d_alpha)), alpha.shape).to(alpha.dtype)
        return grad_x, grad_alpha, grad_scale


def rho(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """The general robust loss ρ(x, α, c), elementwise; α and c broadcast against x.

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1), for every real α and α = ±∞.
    Differentiable in x, α and c; bf16/fp16 inputs are computed in float32 and returned in their dtype.
    """
    x, alpha, scale, _ = _as_tensors(x, alpha, scale)
    _check_scale(scale)
    return GeneralLoss.apply(x, alpha, scale)


def psi(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """ψ(x, α, c) = ∂ρ/∂x = (x/c²)·((x/c)²/|α−2| + 1)^{α/2 − 1}; α = 2: x/c², α = −∞: (x/c²)·e^{−z/2}."""
    x, alpha, scale, out_dtype = _as_tensors(x, alpha, scale)
    _check_scale(scale)
    dtype = _compute_dtype(x, alpha, scale)
    xs, w = _dpsi_factor(x.to(dtype), alpha.to(dtype), scale.to(dtype))
    return _saturate(_saturate(xs * w) / scale.to(dtype)).to(out_dtype)


def weight(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """The IRLS weight ψ(x)/x = (1/c²)·((x/c)²/|α−2| + 1)^{α/2 − 1}; its value at x = 0 is 1/c²."""
    x, alpha, scale, out_dtype = _as_tensors(x, alpha, scale)
    _check_scale(scale)
    dtype = _compute_dtype(x, alpha, scale)
    cd = scale.to(dtype)
    _, w = _dpsi_factor(x.to(dtype), alpha.to(dtype), cd)
    return _saturate(w / (cd * cd)).to(out_dtype)
