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
so no NaN can reach a gradient. q = z/b itself saturates there too (|x/c| beyond about 1e19·√b in
float32), past which values stay finite but are no longer exact.

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

# Below this |α|, ρ = L·(1 + αL/4 + …) equals the Cauchy member log1p(z/2) to float64 rounding.
_ZERO_ALPHA = 1e-20
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


def _special_members(alpha: torch.Tensor) -> torch.Tensor:
    """Where α is a member whose generic form divides by zero: α ≈ 0, α = 2, α = ±∞."""
    return (alpha.abs() < _ZERO_ALPHA) | (alpha == 2) | torch.isinf(alpha)


def _v2_and_log(x: torch.Tensor, scale: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """q = (x/c)²/b, saturated at the dtype's maximum, and L = log1p(q)."""
    big = torch.finfo(x.dtype).max
    v2 = (x / (scale * torch.sqrt(b))).square_().clamp_(max=big)
    return v2, torch.log1p(v2)


def _rho_unscaled(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ρ(x, α, c) for tensors α and c, in the compute dtype (no autograd of its own).

    Generic α: ρ = (b/α)·expm1((α/2)·L). The members where that divides by zero (α ≈ 0, 2, ±∞) are
    computed with safe stand-in values and then replaced by their closed forms, only where present.
    """
    big = torch.finfo(x.dtype).max
    special = _special_members(alpha)
    a = torch.where(special, torch.ones_like(alpha), alpha)
    b = (a - 2).abs()
    _, log1p_q = _v2_and_log(x, scale, b)
    rho = torch.expm1(log1p_q * (a / 2)) * (b / a)
    if bool(special.any()):
        z = (x / scale).square_().clamp_(max=big)
        rho = torch.where(alpha.abs() < _ZERO_ALPHA, torch.log1p(z / 2), rho)
        rho = torch.where(alpha == 2, z / 2, rho)
        rho = torch.where(alpha == -math.inf, -torch.expm1(-z / 2), rho)
        rho = torch.where(alpha == math.inf, torch.expm1(z / 2), rho)
    return rho.clamp_(max=big)


def _dpsi_factor(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """xs = x/c and the factor w = (z/b + 1)^{(α−2)/2}, so that ψ = w·xs/c and ψ/x = w/c².

    The limits: α = 2 gives w = 1, α = ±∞ gives w = exp(±z/2). α = 0 needs nothing special here.
    """
    big = torch.finfo(x.dtype).max
    special = (alpha == 2) | torch.isinf(alpha)
    a = torch.where(special, torch.ones_like(alpha), alpha)
    _, log1p_q = _v2_and_log(x, scale, (a - 2).abs())
    w = torch.exp(log1p_q * ((a - 2) / 2))
    xs = (x / scale).clamp_(-big, big)
    if bool(special.any()):
        half_z = (xs * xs).clamp_(max=big) / 2
        w = torch.where(alpha == 2, torch.ones_like(w), w)
        w = torch.where(alpha == -math.inf, torch.exp(-half_z), w)
        w = torch.where(alpha == math.inf, torch.exp(half_z), w)
    return xs, w


def _g_series(t: torch.Tensor) -> torch.Tensor:
    """G(t) = (t·e^t − e^t + 1)/t² = Σ_{n≥2} (n−1)·t^{n−2}/n!, with the series where |t| < 1e-2."""
    small = t.abs() < 1e-2
    if bool(small.all()):
        return 0.5 + t * (1 / 3 + t * (1 / 8 + t * (1 / 30 + t / 144)))
    safe_t = torch.where(small, torch.ones_like(t), t)
    direct = torch.expm1(safe_t).mul_(safe_t - 1).add_(safe_t).div_(safe_t * safe_t)
    if not bool(small.any()):
        return direct
    return torch.where(small, 0.5 + t * (1 / 3 + t * (1 / 8 + t * (1 / 30 + t / 144))), direct)


def _drho_dalpha(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """∂ρ/∂α in x's dtype. With s = sign(α−2), q = z/b, L = log1p(q), t = αL/2 and u = (α−2)L/2:

    form A (|α| < 1; no 1/α):   ∂ρ/∂α = −s·[(L²/2)·G(t) − (e^t/2)·(L − q/(1+q))],
                                 G(t) = (t·e^t − e^t + 1)/t² = 1/2 + t/3 + t²/8 + …
    form B (|α| ≥ 1; no 1/b):   ∂ρ/∂α = [b·e^t·((L − q/(1+q))/2 − 1/α) + s·expm1(u) + b/α] / α.

    Form A cancels badly near α = 2 and form B near α = 0, so each is used where the other fails. q is
    saturated at the dtype's maximum so that no Inf·0 can arise. The limits α → ±∞ have ∂ρ/∂α → 0; at
    α = 2 the true value is +∞ (ρ − z/2 ≈ (z/4)·δ·log(z/|δ|), δ = α−2), so it is evaluated at
    δ = −1e-7: large but finite. Only the form(s) that some α needs are computed.
    """
    big = torch.finfo(x.dtype).max
    finite = torch.isfinite(alpha)
    a = torch.where(finite, alpha, torch.zeros_like(alpha))
    a = torch.where((a - 2).abs() < _ALPHA_GRAD_GAP, torch.full_like(a, 2 - _ALPHA_GRAD_GAP), a)
    s = torch.sign(a - 2)
    b = (a - 2).abs()
    q, log1p_q = _v2_and_log(x, scale, b)
    inner = q.add(1).reciprocal_().sub_(1).add_(log1p_q)  # L − q/(1+q) = L + 1/(1+q) − 1 ≥ 0
    e_t = torch.mul(log1p_q, a / 2).exp_().clamp_(max=big)
    use_a = a.abs() < 1
    grad = None
    if bool(use_a.any()):
        t = torch.mul(log1p_q, a / 2)
        grad = _g_series(t).mul_(log1p_q).mul_(log1p_q).mul_(0.5).sub_(e_t * inner * 0.5).mul_(-s)
    if not bool(use_a.all()):
        a_b = torch.where(use_a, torch.ones_like(a), a)
        form_b = inner.mul_(0.5).sub_(1 / a_b).mul_(e_t).mul_(b)
        form_b.add_(torch.mul(log1p_q, (a_b - 2) / 2).expm1_().mul_(s)).add_(b / a_b).div_(a_b)
        grad = form_b if grad is None else torch.where(use_a, grad, form_b)
    if not bool(finite.all()):
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
            g_dpsi = _saturate(w.mul_(xs).mul_(g))  # g·f'(xs), where ρ = f(x/c)
            if ctx.needs_input_grad[0]:
                grad_x = _sum_to(_saturate(g_dpsi / cd), x.shape).to(x.dtype)
            if ctx.needs_input_grad[2]:
                # ∂ρ/∂c = −f'(xs)·xs/c
                grad_scale = _sum_to(_saturate(g_dpsi.mul_(xs).div_(cd).neg_()), scale.shape).to(scale.dtype)
        if ctx.needs_input_grad[1]:
            d_alpha = _saturate(_drho_dalpha(xd, ad, cd).mul_(g))
            grad_alpha = _sum_to(d_alpha, alpha.shape).to(alpha.dtype)
        return grad_x, grad_alpha, grad_scale


def _rho_fixed(x: torch.Tensor, a: float, c: float) -> torch.Tensor:
    """ρ for a fixed number α and c, in few in-place passes (x float32 or float64).

    v = x/(c·√b) so that v² = z/b never overflows before it must; then ρ = (b/α)·expm1((α/2)·log1p(v²)),
    or a cheaper exact form for the named members (Charbonnier: v²/(√(v²+1) + 1), no cancellation).
    """
    big = torch.finfo(x.dtype).max
    if a == 2:
        return torch.mul(x, 1 / c).square_().mul_(0.5).clamp_(max=big)
    if math.isinf(a):
        sign = 1.0 if a > 0 else -1.0
        out = torch.mul(x, 1 / c).square_().mul_(sign * 0.5).expm1_()
        return out.clamp_(max=big) if a > 0 else out.neg_()
    b = abs(a - 2)
    # v² = x²/(c²b) in one fused pass, held finite (Charbonnier's v²/(√(v²+1) + 1) is NaN at inf)
    v2 = torch.addcmul(x.new_zeros(()), x, x, value=1 / (c * c * b)).clamp_(max=big)
    if a == 0:
        return v2.log1p_()
    if a == 1:  # √(v²+1) − 1 = v²/(√(v²+1) + 1)
        return v2.div_(v2.add(1).sqrt_().add_(1))
    if a == -2:  # (b/α)·(1/(v²+1) − 1) = 2v²/(v²+1)
        return v2.div_(v2.add(1)).mul_(2)
    out = v2.log1p_().mul_(a / 2).expm1_().mul_(b / a)
    return out.clamp_(max=big) if a > 0 else out


def _one_plus_power_inplace(v2: torch.Tensor, p: float) -> torch.Tensor:
    """v2 ← (v2 + 1)^p, with cheap exact passes for the exponents of the named losses (log1p, a
    multiply and exp take half the time of torch.pow here)."""
    if p == -1:
        return v2.add_(1).reciprocal_()
    if p == -0.5:
        return v2.add_(1).rsqrt_()
    if p == -2:
        return v2.add_(1).reciprocal_().square_()
    return v2.log1p_().mul_(p).exp_()


def _psi_fixed(x: torch.Tensor, grad_out: torch.Tensor, a: float, c: float) -> torch.Tensor:
    """grad_out·ψ(x) for a fixed number α and c: grad_out·(x/c²)·(v² + 1)^{(α−2)/2}, v = x/(c·√b)."""
    big = torch.finfo(x.dtype).max
    if a == 2:
        out = torch.mul(x, grad_out)
    elif math.isinf(a):
        sign = 1.0 if a > 0 else -1.0
        out = torch.mul(x, 1 / c).square_().mul_(sign * 0.5).exp_().mul_(x).mul_(grad_out)
    else:
        b = abs(a - 2)
        v2 = torch.addcmul(x.new_zeros(()), x, x, value=1 / (c * c * b))
        power = _one_plus_power_inplace(v2, (a - 2) / 2)
        out = torch.addcmul(x.new_zeros(()), power, x, value=1 / (c * c)).mul_(grad_out)
        return out.nan_to_num_(nan=float("nan"), posinf=big, neginf=-big)
    return out.mul_(1 / (c * c)).nan_to_num_(nan=float("nan"), posinf=big, neginf=-big)


class FixedShapeLoss(torch.autograd.Function):
    """ρ(x, α, c) for numbers α and c (the named losses): differentiable in x only, saves only x.

    The common case in training, so it avoids the generic path's masks: about a dozen in-place passes
    over the data for forward and backward together.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: float, c: float) -> torch.Tensor:
        ctx.save_for_backward(x)
        ctx.a, ctx.c = a, c
        xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        out = _rho_fixed(xc, a, c)
        return out.to(x.dtype)

    @staticmethod
    def backward(ctx, grad_out: torch.Tensor):
        (x,) = ctx.saved_tensors
        xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        grad = _psi_fixed(xc, grad_out.to(xc.dtype), ctx.a, ctx.c)
        return grad.to(x.dtype), None, None


def rho(x: TensorLike, alpha: TensorLike, scale: TensorLike = 1.0) -> torch.Tensor:
    """The general robust loss ρ(x, α, c), elementwise; α and c broadcast against x.

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1), for every real α and α = ±∞.
    Differentiable in x, α and c; bf16/fp16 inputs are computed in float32 and returned in their dtype.
    """
    if (isinstance(alpha, (int, float)) and isinstance(scale, (int, float)) and isinstance(x, torch.Tensor)
            and x.is_floating_point() and x.dtype != torch.float64):
        # Plain numbers go straight to the fixed-shape path: turned into device tensors, reading them
        # back would cost a host-device sync every training step.
        if not scale > 0:
            raise ValueError(f"scale c must be > 0; got {scale} (use a small positive c instead)")
        return FixedShapeLoss.apply(x, float(alpha), float(scale))
    x, alpha, scale, _ = _as_tensors(x, alpha, scale)
    _check_scale(scale)
    fixed = alpha.numel() == 1 and scale.numel() == 1 and not (alpha.requires_grad or scale.requires_grad)
    if fixed and alpha.dim() <= x.dim() and scale.dim() <= x.dim() and x.dtype != torch.float64:
        out = FixedShapeLoss.apply(x, float(alpha), float(scale))
        return out.reshape(torch.broadcast_shapes(x.shape, alpha.shape, scale.shape))
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
