"""ρ(x, α, c) for α and c plain numbers (the losses training uses): few passes, ψ computed alongside.

The forward pass computes ρ and ψ = ∂ρ/∂x together, sharing the transcendental passes, and saves ψ for
backward (one tensor of the input's size, like saving x), so backward is one multiply. With
q = (x/c)²/b, b = |α−2| (in-place passes over two buffers):

    generic α:  L = log1p(q):       ρ = (b/α)·expm1(αL/2),   ψ = x·exp((α−2)L/2 − 2·log c)
    α = 1:      S = √(1 + z):                    ρ = z/(S + 1), ψ·c² = x/S                 (q = z)
    α = 0:      ρ = log1p(q),                    ψ·c² = x/(1 + q)                          (q = z/2)
    α = −2:     ρ = 2q/(1 + q),                  ψ·c² = x/(1 + q)²                         (q = z/4)
    α = 2:      ρ = (x/(c√2))²,                  ψ = x/c² (x itself is saved)
    α = ±∞:     ρ = ±expm1(±z/2),                ψ·c² = x·e^{±z/2}
    integer α:  closed forms (`formulas.integer_rho`) for ρ, ψ as for a generic α.

ψ shares L = log1p(q) with ρ; the cost at a generic α is one log1p, one expm1, one exp and five simple
passes (exp and multiplies are vectorised on the CPU; log1p and expm1 are not, and dominate). These
forms are exact to the dtype's rounding while q and the exponents stay moderate (|αL/2|, |(α−2)L/2| ≤ 16
in float32); one min/max reduction over x checks that, and the few elements beyond (huge residuals) are
recomputed by the exact float64 formulas of `core.losses.formulas` and patched in, so values and
gradients are exact wherever they are representable and saturate only beyond the dtype's range.
"""

from __future__ import annotations

import math

import torch

from core.losses import formulas
from core.losses.numerics import saturate_, saturating_cast

# Exponents of exp/expm1 are kept below this in the fast forms (float32 loses |arg|·eps to rounding).
_FAST_EXPONENT = {torch.float32: 16.0, torch.float64: 600.0}
# Outside this range of c, 1/c² and c² leave float32's comfortable range: the exact path is used.
_FAST_SCALE = (1e-15, 1e15)
# |2·log c| up to which 1/c² is folded into ψ's exponent (c in [0.018, 55]).
_FOLD_SHIFT = 8.0


def safe_abs_x(a: float, c: float, dtype: torch.dtype) -> float:
    """The largest |x| for which member a's fast forms are exact and cannot overflow or underflow."""
    t_max = _FAST_EXPONENT[dtype]
    big = torch.finfo(dtype).max
    if a == 2.0:
        return 0.5 * min(math.sqrt(big), c * math.sqrt(2 * big))  # x·x and ρ = x²/(2c²) stay finite
    if math.isinf(a):
        return c * math.sqrt(2 * t_max)  # the exponent z/2 stays ≤ t_max
    b = abs(a - 2)
    if a in (1.0, 0.0):
        q_max = big ** 0.9  # only q itself may overflow
    elif a == -2.0:
        q_max = big ** 0.45  # (1 + q)² must stay finite
    else:  # |αL/2| and |(α−2)L/2| ≤ t_max
        q_max = math.expm1(min(t_max / max(abs(a) / 2, abs(a - 2) / 2), math.log(big ** 0.9)))
    return min(c * math.sqrt(b * q_max), 0.5 * math.sqrt(big))  # (and x·x itself stays finite)


def _integer_member(a: float) -> bool:
    return a == int(a) and int(a) in formulas.INTEGER_MEMBERS


def _forward_members(x: torch.Tensor, a: float, c: float, with_psi: bool
                     ) -> tuple[torch.Tensor, torch.Tensor | None, float]:
    """(ρ, saved, saved_scale) by the fast forms: ψ = saved·saved_scale (saved is x itself for α = 2 and
    ψ for a generic α, else ψ·c²); saved is None without a gradient."""
    inv_c2 = 1.0 / (c * c)
    if a == 2.0:  # x·x·(½/c²): half an ulp at c = 1 (the limit keeps x·x finite)
        rho = torch.mul(x, x).mul_(0.5 * inv_c2)
        return rho, (x if with_psi else None), inv_c2
    if math.isinf(a):
        half_z = torch.mul(x, 1.0 / (c * math.sqrt(2.0))).square_()
        if a > 0:
            rho = torch.expm1(half_z)
            psi = torch.addcmul(x, x, rho, out=half_z) if with_psi else None  # x·e^{z/2} = x·(1 + ρ)
        else:
            rho = torch.neg(half_z).expm1_().neg_()
            psi = half_z.neg_().exp_().mul_(x) if with_psi else None
        return rho, psi, inv_c2
    b = abs(a - 2)
    if a in (1.0, 0.0, -2.0) or _integer_member(a):  # (x·x)/(c²b): one rounding less than x·x·(1/(c²b))
        q = torch.mul(x, x).div_(c * c * b)
    else:  # (one pass; log1p does not notice the half ulp)
        q = torch.addcmul(x.new_zeros(()), x, x, value=1.0 / (c * c * b))
    if a == 1.0:
        s = torch.add(q, 1).sqrt_()
        rho = q.div_(s.add_(1))  # z/(S + 1): no cancellation
        psi = torch.div(x, s.sub_(1), out=s) if with_psi else None
        return rho, psi, inv_c2
    if a == 0.0:
        rho = torch.log1p(q)
        psi = torch.div(x, q.add_(1), out=q) if with_psi else None
        return rho, psi, inv_c2
    if a == -2.0:
        one_q = torch.add(q, 1)
        rho = q.div_(one_q).mul_(2)
        psi = torch.div(x, one_q.square_(), out=one_q) if with_psi else None
        return rho, psi, inv_c2
    if _integer_member(a):
        rho = formulas.integer_rho(q, int(a))
        psi = q.log1p_().mul_((a - 2) / 2).exp_().mul_(x) if with_psi else None
        return rho, psi, inv_c2
    log_q = torch.log1p(q)
    psi = None
    # ψ = x·exp((α−2)L/2 − 2·log c) = (x/c²)·(1 + q)^{(α−2)/2}: 1/c² folded into the exponent (saving
    # backward a pass) while that shift is small enough not to cost exp's accuracy (|arg|·eps)
    fold = abs(2 * math.log(c)) <= _FOLD_SHIFT
    if with_psi:
        shift = x.new_full((), -2 * math.log(c) if fold else 0.0)
        psi = torch.addcmul(shift, log_q, x.new_ones(()), value=(a - 2) / 2, out=q).exp_().mul_(x)
    return log_q.mul_(a / 2).expm1_().mul_(b / a), psi, (1.0 if fold else inv_c2)


def _exact(x: torch.Tensor, a: float, c: float) -> tuple[torch.Tensor, torch.Tensor]:
    """ρ and ψ by the exact formulas in float64 (for the few elements the fast forms cannot hold)."""
    x64 = x.to(torch.float64)
    alpha = torch.tensor(a, dtype=torch.float64, device=x.device)
    scale = torch.tensor(c, dtype=torch.float64, device=x.device)
    rho = formulas.rho_values(x64, alpha, scale)
    xs, w = formulas.psi_factor(x64, alpha, scale)
    psi = saturate_(xs * w) / scale
    return rho, psi


def fixed_rho_psi(x: torch.Tensor, a: float, c: float, with_psi: bool
                  ) -> tuple[torch.Tensor, torch.Tensor | None, float, tuple[torch.Tensor, torch.Tensor] | None]:
    """(ρ, saved, saved_scale, patch) for x float32/float64: the gradient is saved·saved_scale·grad_out,
    except at the flat indices patch[0], where ψ is patch[1] (computed exactly, float64)."""
    dtype = x.dtype
    if not (_FAST_SCALE[0] <= c <= _FAST_SCALE[1]):
        rho, psi = _exact(x, a, c)
        return saturating_cast(rho, dtype), (saturating_cast(psi, dtype) if with_psi else None), 1.0, None
    x_lo, x_hi = torch.aminmax(x) if x.numel() else (x.new_zeros(()), x.new_zeros(()))
    limit = safe_abs_x(a, c, dtype)
    rho, saved, saved_scale = _forward_members(x, a, c, with_psi)
    if bool(torch.maximum(-x_lo, x_hi) <= limit):  # False for NaN too: those are recomputed (NaN again)
        return rho, saved, saved_scale, None
    flat = x.reshape(-1)
    idx = (~(flat.abs() <= limit)).nonzero().squeeze(1)
    rho_e, psi_e = _exact(flat[idx], a, c)
    rho.view(-1)[idx] = saturating_cast(rho_e, dtype)
    return saturate_(rho), saved, saved_scale, ((idx, psi_e) if with_psi else None)


class FixedShapeLoss(torch.autograd.Function):
    """ρ(x, α, c) for numbers α and c: differentiable in x only; saves one tensor of x's size (ψ or ψ·c²).

    bf16/fp16 inputs are computed in float32 and returned in their dtype. Double backward is not
    supported (the saved ψ is a constant for autograd): it raises instead of returning a wrong Hessian.
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: float, c: float) -> torch.Tensor:
        xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        with_psi = ctx.needs_input_grad[0]
        rho, saved, saved_scale, patch = fixed_rho_psi(xc, a, c, with_psi)
        if with_psi:
            ctx.save_for_backward(saved)
            ctx.saved_scale, ctx.patch, ctx.x_dtype = saved_scale, patch, x.dtype
        return rho.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (saved,) = ctx.saved_tensors
        g = grad_out.to(saved.dtype)
        grad = torch.mul(saved, g)
        if ctx.saved_scale != 1.0:
            grad.mul_(ctx.saved_scale)
        saturate_(grad)
        if ctx.patch is not None:
            idx, psi_e = ctx.patch
            g_e = g.expand(saved.shape).reshape(-1)[idx].to(torch.float64)
            grad.view(-1)[idx] = saturating_cast(psi_e * g_e, grad.dtype)
        return grad.to(ctx.x_dtype), None, None
