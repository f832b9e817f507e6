"""The general loss's elementwise formulas for tensor α and c: ρ, the ψ factor and ∂ρ/∂α.

Notation (Barron 2019, arXiv 1701.03077): xs = x/c, z = xs², b = |α−2|, q = z/b, L = log1p(q),
β = α/2, t = βL, u = (β−1)L, w = (1+q)^{(α−2)/2} = e^u. Then

    ρ      = (b/α)·expm1(t)      (α → 0: L with b = 2; α = 2: z/2; α = ±∞: ±expm1(±z/2))
    ψ      = ∂ρ/∂x = (xs/c)·w,   ψ/x = w/c²,   ∂ρ/∂c = −ψ·xs
    ∂ρ/∂α  = (b/4)·∫₀ᴸ e^{βσ}·(σ − 1 + e^{−σ}) dσ = (b/4)·Φ,   Φ = L³·Δ,   Δ = exp[0, u, t, t]

The last line follows from ρ = ½∫₀^z (1 + y/b)^{(α−2)/2} dy, differentiated under the integral; Δ is
the third divided difference of exp at the nodes 0, u, t, t (Hermite–Genocchi: a mean of exponentials,
so Δ > 0 and ∂ρ/∂α ≥ 0). The closed forms of Δ lose (1/L²)·eps to cancellation when the nodes are
close, which is why the paper's derivative is useless for small residuals (relative error 1 at x/c =
0.1 in float32). Here, with y = L·max(1, |β|, |β−1|) the nodes' largest size:

    y < 1.5: Δ = Σₙ eₙ·yⁿ,  eₙ = hₙ(p, r, r)/(n+3)!,  p = (β−1)/m, r = β/m   (hₙ: complete homogeneous
            symmetric polynomial; per-α coefficients, so one Horner pass per term over the data;
            in float32 economised to 8 terms)
    y ≥ 1.5: a divided-difference recursion that divides by a large node, chosen per α:
            0 ≤ β ≤ 2: Δ = (L·G(t) − E(t) + E(u))/L²      (L ≥ 1/max(1, β) ≥ ½)
            β > 2:     Δ = (t·e^u·G(L) − e^u·E(L) + E(u))/t²
            β < 0:     Δ = (e^u·G(L) − G(t))/u
            with E(v) = expm1(v)/v = exp[0, v] and G(v) = (v·e^v − e^v + 1)/v² = exp[0, v, v];
            each loses at most a factor ~25 to cancellation (float32: ~1e-6 relative). In float32,
            for α ∈ [0.6, 1.9] ∪ [2.1, 4] (most adaptive α), the cheaper expanded form of
            Φ = L³Δ in `_phi_mid_exp` (eight passes, cancellation ≲ 30 there) is used instead.
Measured against 50-digit numerical differentiation of the paper's formula, |x/c| from 1e-6 to 1e6,
α from −1e6 to 1e6: relative error ≤ 5e-14 in float64 and ≤ 2e-6 in float32.

`static=True` computes every branch (no data-dependent Python branching, so torch.compile can fuse
the whole function); the default skips branches no element needs, after cheap min/max reductions.
Results are in the inputs' dtype; callers decide the precision (see `general.GeneralLoss`).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

from core.losses.numerics import blend, lt_mask, tensor_max, tensor_min

# Below this |α|, ρ = L·(1 + αL/4 + …) equals the Cauchy member log1p(z/2) to float64 rounding, and
# b/α would overflow float32 for denormal α.
ZERO_ALPHA = 1e-20
# ∂ρ/∂α and d log Z/dα are logarithmically infinite at α = 2 exactly; there both are evaluated at
# α = 2 − this, so that the NLL's α-gradient stays consistent. Any α ≠ 2 is computed exactly.
ALPHA_GRAD_GAP = 1e-7
# Terms of Δ's series for y < 1.5: float64 the Taylor series (truncation below 2e-17), float32 its
# Chebyshev economisation to 8 terms (below 5e-9; its float32 Horner rounding is 2e-7).
_SERIES_TERMS = {torch.float32: 8, torch.float64: 22}
# Δ by its series where y < this (nodes ≤ 1.5 in size), by a far form beyond.
SERIES_RANGE = 1.5
# G(v) by its series below this |v| (terms (n+1)·vⁿ/(n+2)!), by (e^v − E(v))/v above.
_G_SERIES_BELOW = 0.5
_G_TERMS = {torch.float32: 9, torch.float64: 15}


def _exp_limit(dtype: torch.dtype) -> float:
    """Arguments of exp are clamped here: larger results only arise where the true value is beyond the
    dtype anyway (the caller saturates), and a finite stand-in keeps Inf − Inf from making NaN."""
    return math.log(torch.finfo(dtype).max) - 4


def special_members(alpha: torch.Tensor) -> torch.Tensor:
    """Where α is a member whose generic form divides by zero: α ≈ 0, α = 2, α = ±∞."""
    return (alpha.abs() < ZERO_ALPHA) | (alpha == 2) | torch.isinf(alpha)


def safe_log1p_q(x: torch.Tensor, scale: torch.Tensor, b: torch.Tensor, static: bool = False) -> torch.Tensor:
    """L = log1p(q), q = (x/c)²/b, without forming q where it would overflow.

    For |v| = |x|/(c·√b) past 2^(digits/2 + 2), log1p(v²) = 2·log|v| to the dtype's rounding, and
    log|v| = log|x| − log c − ½·log b needs no overflowing intermediate (exact even for |x| = 1e300).
    """
    return log1p_q_and_ratio(x, scale, b, static)[0]


def log1p_q_and_ratio(x: torch.Tensor, scale: torch.Tensor, b: torch.Tensor, static: bool = False
                      ) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, xs) = (safe log1p((x/c)²/b), x/c): `safe_log1p_q` keeping x/c for the caller."""
    xs = x / scale
    q = torch.mul(xs, xs)  # q = xs²/b: three roundings (b is often a power of two: exact)
    q = q.div_(b) if q.shape == torch.broadcast_shapes(q.shape, b.shape) else q / b
    out = q.log1p_()
    big_v = 2.0 ** (-math.log2(torch.finfo(x.dtype).eps) // 2 + 2)
    if static or not tensor_max(out) < math.inf:  # log1p of a finite q is exact; fix only overflow
        log_v = torch.log(x.abs()) - torch.log(scale) - 0.5 * torch.log(b)
        v = x / (scale * torch.sqrt(b))  # (for a huge b, (x/c)² can overflow where q = v² does not)
        out = torch.where(log_v > math.log(big_v), 2 * log_v, torch.log1p(v * v))
    return out, xs


def expm1_ratio(v: torch.Tensor, sign: int) -> torch.Tensor:
    """E(v) = expm1(v)/v = ∫₀¹ e^{vs} ds for v of the given sign (≥ 0 or ≤ 0); E(0) = 1."""
    lim = _exp_limit(v.dtype)
    tiny = torch.finfo(v.dtype).tiny
    vv = v.clamp(tiny, lim) if sign > 0 else v.clamp(max=-tiny)
    return torch.expm1(vv).div_(vv)


def _g_series(v: torch.Tensor) -> torch.Tensor:
    """G(v) = Σ_{n≥0} (n+1)·vⁿ/(n+2)! for |v| ≤ 1/2 (Horner)."""
    terms = _G_TERMS.get(v.dtype, _G_TERMS[torch.float64])
    acc = torch.full_like(v, terms / math.factorial(terms + 1))
    for n in range(terms - 2, -1, -1):
        acc.mul_(v).add_((n + 1) / math.factorial(n + 2))
    return acc


def g_function(v: torch.Tensor, sign: int, static: bool = False) -> torch.Tensor:
    """G(v) = (v·e^v − e^v + 1)/v² = ∫₀¹ s·e^{vs} ds = E'(v), for v of the given sign; G(0) = 1/2."""
    lim = _exp_limit(v.dtype)
    small = _G_SERIES_BELOW
    need_series = static or tensor_min(v.abs()) < small
    need_direct = static or tensor_max(v.abs()) >= small
    if need_direct:
        vv = v.clamp(small, lim) if sign > 0 else v.clamp(max=-small)
        direct = torch.exp(vv).sub_(expm1_ratio(vv, sign)).div_(vv)
        if not need_series:
            return direct
    series = _g_series(v.clamp(-small, small))
    if not need_direct:
        return series
    return blend(direct, series, lt_mask(v.abs(), small))


@functools.lru_cache(maxsize=64)
def _series_coefficients_cached(betas: tuple[float, ...], terms: int) -> torch.Tensor:
    rows = []
    for beta in betas:
        m = max(1.0, abs(beta), abs(beta - 1))
        p, r = (beta - 1) / m, beta / m
        coeffs, a, r_pow = [], 0.0, 1.0
        for n in range(terms):
            a = p * a + (n + 1) * r_pow  # hₙ(p, r, r) = p·hₙ₋₁ + (n+1)·rⁿ
            r_pow *= r
            coeffs.append(a / math.factorial(n + 3))
        rows.append(coeffs)
    return torch.tensor(rows, dtype=torch.float64)


@functools.lru_cache(maxsize=4)
def _economisation(taylor_terms: int, terms: int, span: float) -> torch.Tensor:
    """The (terms × taylor_terms) float64 map from a series' Taylor coefficients to the monomial
    coefficients of its Chebyshev economisation on [0, span]: the degree-(terms−1) polynomial closest
    in max norm there (truncated Chebyshev expansion), so fewer Horner passes for the same accuracy."""
    from numpy.polynomial import chebyshev, polynomial

    to_s = [span / 2, span / 2]  # y = (span/2)(s + 1), s ∈ [−1, 1]
    from_s = [-1.0, 2.0 / span]  # s = 2y/span − 1
    out = []
    for k in range(taylor_terms):
        cheb = chebyshev.poly2cheb(polynomial.polypow(to_s, k))[:terms]
        in_s = chebyshev.cheb2poly(cheb)
        in_y = sum(c * np.pad(polynomial.polypow(from_s, j), (0, terms))[:terms] for j, c in enumerate(in_s))
        out.append(in_y)
    return torch.tensor(np.array(out).T, dtype=torch.float64)


def delta_series_coefficients(beta: torch.Tensor, terms: int) -> torch.Tensor:
    """eₙ(β) for n < terms, shape (terms, *β.shape), float64: Δ = Σ eₙ·yⁿ for y = L·max(1, |β|, |β−1|) < 1."""
    if beta.numel() <= 16 and beta.device.type == "cpu":
        flat = _series_coefficients_cached(tuple(beta.double().reshape(-1).tolist()), terms)
        return flat.t().reshape((terms, *beta.shape))
    b64 = beta.double()
    m = torch.maximum(torch.maximum((b64 - 1).abs(), b64.abs()), torch.ones_like(b64))
    p, r = (b64 - 1) / m, b64 / m
    out, a, r_pow = [], torch.zeros_like(b64), torch.ones_like(b64)
    for n in range(terms):
        a = p * a + (n + 1) * r_pow
        r_pow = r_pow * r
        out.append(a / float(math.factorial(n + 3)))
    return torch.stack(out)


def _exp_ratio(v: torch.Tensor, e_v: torch.Tensor) -> torch.Tensor:
    """E(v) = expm1(v)/v given e^v, as tanh(v/2)·(1 + e^v)/v: exact for every v ≠ 0 (tanh and exp are
    vectorised on the CPU, expm1 is not)."""
    th = torch.tanh(v * 0.5)
    return th.addcmul_(th, e_v).div_(v)


def _delta_mid(log1p_q: torch.Tensor, beta: torch.Tensor, static: bool) -> torch.Tensor:
    """Δ = (L·G(t) − E(t) + E(u))/L² for 0 ≤ β ≤ 2 where y ≥ 1 (pivot L ≥ 1/max(1, β) ≥ ½): the class
    of the adaptive loss's α ∈ [0, 4], in vectorised passes. Where t ≥ ½ and |u| ≥ ¼ the plain
    exponential forms are exact to a few eps; G's series (t < ½) and E's tanh form (small |u|, α
    near 2) are computed only when some element needs them. Exponents are clamped in float64 (where
    huge values must saturate); a float32 element that large is recomputed in float64 by the caller."""
    dtype = log1p_q.dtype
    big_l = torch.maximum(log1p_q, 1 / beta.clamp(min=1.0))
    t = big_l * beta
    u = big_l * (beta - 1)  # ≠ 0: α = 2 itself is never passed here
    if static or dtype == torch.float64:
        lim = _exp_limit(dtype)
        e_t, e_u = torch.exp(t.clamp(max=lim)), torch.exp(u.clamp(max=lim))
    else:
        e_t, e_u = torch.exp(t), torch.exp(u)
    small_t = static or tensor_min(t) < _G_SERIES_BELOW  # some α < 1
    t_div = t.clamp(min=torch.finfo(dtype).tiny) if small_t else t
    g = torch.addcmul(torch.ones((), dtype=dtype, device=t.device), t - 1, e_t).div_(t_div).div_(t_div)
    if small_t:
        g = blend(g, _g_series(t.clamp(max=_G_SERIES_BELOW)), lt_mask(t, _G_SERIES_BELOW))
    e_of_t = _exp_ratio(t_div, e_t) if small_t else torch.sub(e_t, 1).div_(t)
    small_u = static or tensor_min(u.abs()) < 0.25  # some α near 2
    e_of_u = _exp_ratio(u, e_u) if small_u else torch.sub(e_u, 1).div_(u)
    return g.mul_(big_l).sub_(e_of_t).add_(e_of_u).div_(big_l).div_(big_l)


def _delta_far(log1p_q: torch.Tensor, beta: torch.Tensor, cls: str, static: bool = False) -> torch.Tensor:
    """Δ for y ≥ 1 by the recursion whose pivot (the largest node) is ≥ ½, for one class of β."""
    if cls == "mid":
        return _delta_mid(log1p_q, beta, static)
    lim = _exp_limit(log1p_q.dtype)
    # (clamped so that β of other classes, whose results are discarded, stay finite)
    m = beta.abs().clamp(min=1.0) if cls == "high" else (1 - beta).clamp(min=1.0)
    big_l = torch.maximum(log1p_q, 1 / m)
    t = big_l * beta
    u = big_l * (beta - 1)
    e_u = torch.exp(u.clamp(max=lim))
    if cls == "high":  # β > 2: pivot t
        # (t·G(L) − E(L)) > 0 before the factor e^u, so that huge values overflow to +Inf, never Inf − Inf
        num = g_function(big_l, +1, static).mul_(t).sub_(expm1_ratio(big_l, +1)).mul_(e_u)
        return num.add_(expm1_ratio(u, +1)).div_(t).div_(t)
    # β < 0: pivot −u
    return g_function(big_l, +1, static).mul_(e_u).sub_(g_function(t, -1, static)).div_(u)


def _classes(beta: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    return [("mid", (beta >= 0) & (beta <= 2)), ("high", beta > 2), ("low", beta < 0)]


def alpha_classes(alpha: torch.Tensor) -> tuple[str, ...]:
    """The far-form classes of ∂ρ/∂α that these α need ("mid": 0 ≤ α ≤ 4, "high": α > 4, "low": α < 0);
    reads α back (small), for callers that compile a kernel per set."""
    lo, hi = tensor_min(alpha.detach()), tensor_max(alpha.detach())
    return tuple(c for c, need in (("mid", lo <= 4 and hi >= 0), ("high", hi > 4), ("low", lo < 0)) if need)


def _phi_mid_exp(log1p_q: torch.Tensor, beta: torch.Tensor) -> torch.Tensor:
    """Φ = L³Δ for β ∈ MID_EXP_BETAS where y ≥ SERIES_RANGE, in eight vectorised passes:

        Φ = ∫₀ᴸ e^{βσ}(σ − 1 + e^{−σ}) dσ = e^t·(t/β² − 1/β² − 1/β) + 1/β² + 1/β − 1/(β−1) + e^u/(β−1),

    whose terms cancel by a factor ≲ 30 there (float32: ~2e-6 relative), but by 1/β² as β → 0 and
    1/|β−1| as α → 2, where the careful form is used instead."""
    big_l = torch.maximum(log1p_q, SERIES_RANGE / beta.clamp(min=1.0))
    t = big_l * beta
    k1, k2, k3 = 1 / (beta * beta), 1 / beta, 1 / (beta - 1)
    e = torch.exp(t)
    out = torch.addcmul(-(k1 + k2), t, k1).mul_(e)
    e_u = torch.sub(t, big_l, out=e).exp_()  # e^u, u = t − L
    return out.addcmul_(e_u, k3).add_(k1 + k2 - k3)


# β = α/2 for which float32 uses `_phi_mid_exp` (α ∈ [0.6, 1.9] ∪ [2.1, 4]).
MID_EXP_BETAS = (0.3, 0.95, 1.05, 2.0)


def _mid_exp_ok(beta: torch.Tensor) -> torch.Tensor:
    lo, a, b, hi = MID_EXP_BETAS
    return ((beta >= lo) & (beta <= a)) | ((beta >= b) & (beta <= hi))


def phi(log1p_q: torch.Tensor, beta: torch.Tensor, static: bool = False,
        classes: tuple[str, ...] | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """Φ = L³·Δ, Δ = exp[0, u, t, t] with u = (β−1)L, t = βL, for finite β (see the module docstring).

    The series covers y < SERIES_RANGE and a far form y ≥ SERIES_RANGE, both evaluated over the whole
    tensor and blended arithmetically (on the CPU, gathering the far elements costs more than
    computing them all).
    """
    dtype = log1p_q.dtype
    terms = _SERIES_TERMS.get(dtype, _SERIES_TERMS[torch.float64])
    if y is None:  # y = L·max(1, |β|, |β−1|) (callers that need it too pass it in)
        y = log1p_q * torch.maximum(torch.maximum((beta - 1).abs(), beta.abs()), torch.ones_like(beta))
    coeffs = delta_series_coefficients(beta, _SERIES_TERMS[torch.float64])
    if terms < coeffs.shape[0]:  # float32: the economised polynomial (8 terms instead of 13)
        econ = _economisation(coeffs.shape[0], terms, SERIES_RANGE)
        coeffs = (econ @ coeffs.reshape(coeffs.shape[0], -1)).reshape((terms, *coeffs.shape[1:]))
    coeffs = coeffs.to(dtype=dtype, device=log1p_q.device)
    yc = y.clamp(max=SERIES_RANGE)
    out = torch.addcmul(coeffs[terms - 2], coeffs[terms - 1], yc)
    for n in range(terms - 3, -1, -1):
        torch.addcmul(coeffs[n], out, yc, out=out)
    out.mul_(log1p_q).mul_(log1p_q).mul_(log1p_q)
    y_max = tensor_max(y)
    if not (static or y_max > SERIES_RANGE):  # (False for NaN, which the series keeps)
        return out
    # `classes` (static only): the far forms to compile in, when the caller knows which α occur
    present = [(c, k) for c, k in _classes(beta) if (c in classes if classes is not None else static or bool(k.any()))]
    if dtype == torch.float32 and not static:  # the cheap exponential form where it is exact enough
        split = []
        for cls, in_class in present:
            if cls == "mid":
                cheap = in_class & _mid_exp_ok(beta)
                split += [(c, k) for c, k in (("mid_exp", cheap), ("mid", in_class & ~cheap)) if bool(k.any())]
            else:
                split.append((cls, in_class))
        present = split
    big = torch.finfo(dtype).max
    far = None
    for cls, in_class in present:
        if cls == "mid_exp":
            part = _phi_mid_exp(log1p_q, beta)
        else:  # Δ·L³ with L the pivot-clamped one (= L at every element where the far form is used)
            part = _delta_far(log1p_q, beta, cls, static)
            big_l = torch.maximum(log1p_q, SERIES_RANGE / torch.maximum(torch.maximum((beta - 1).abs(), beta.abs()),
                                                                        torch.ones_like(beta)))
            part.mul_(big_l).mul_(big_l).mul_(big_l)
        if len(present) == 1 and not static:
            far = part
        else:  # finite everywhere: out-of-class elements (weight 0) must not turn into NaN
            part.nan_to_num_(nan=0.0, posinf=big, neginf=-big)
            weight = in_class.to(dtype)
            far = part * weight if far is None else torch.addcmul(far, part, weight)
    # finite for the blend: NaN/Inf arise only where an exponent (≤ y) is near the dtype's limit (for
    # float32 elements the caller recomputes in float64), and for NaN input, which the series keeps
    if static or not y_max <= 0.7 * math.log(big):
        far.nan_to_num_(nan=0.0, posinf=big, neginf=-big)
    return torch.lerp(far, out, lt_mask(y, SERIES_RANGE), out=out)


def delta(log1p_q: torch.Tensor, beta: torch.Tensor, static: bool = False) -> torch.Tensor:
    """Δ = exp[0, (β−1)L, βL, βL] = Φ/L³ (for tests and readers; the loss uses `phi`)."""
    return phi(log1p_q, beta, static).div_(log1p_q**3)


def drho_dalpha_from_log(log1p_q: torch.Tensor, alpha: torch.Tensor, static: bool = False,
                         classes: tuple[str, ...] | None = None, y: torch.Tensor | None = None) -> torch.Tensor:
    """∂ρ/∂α = (|α−2|/4)·Φ for finite α ≠ 2 (L = log1p(q) computed with this α's b)."""
    return phi(log1p_q, alpha / 2, static=static, classes=classes, y=y).mul_((alpha - 2).abs() / 4)


def drho_dalpha(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, static: bool = False,
                classes: tuple[str, ...] | None = None) -> torch.Tensor:
    """∂ρ/∂α(x, α, c) elementwise in the inputs' dtype, ≥ 0; 0 at α = ±∞; at α = 2 (where it is +∞)
    its value at α = 2 − ALPHA_GRAD_GAP. Relative accuracy a few eps for every x (see the docstring)."""
    finite = torch.isfinite(alpha)
    a = torch.where(finite, alpha, torch.zeros_like(alpha))
    a = torch.where(a == 2, torch.full_like(a, 2 - ALPHA_GRAD_GAP), a)
    log1p_q = safe_log1p_q(x, scale, (a - 2).abs(), static=static)
    out = drho_dalpha_from_log(log1p_q, a, static=static, classes=classes)
    if static or not bool(finite.all()):
        out = out * finite.to(out.dtype)
    return out


def rho_values(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, static: bool = False) -> torch.Tensor:
    """ρ(x, α, c) for tensors α and c, in the inputs' dtype, without autograd of its own.

    Generic α: (b/α)·expm1(t), switching to exp(t + log(b/α)) for t > 30 so that b/α < 1 cannot hide
    a representable value behind an overflowing expm1. The members where the generic form divides by
    zero (α ≈ 0, 2, ±∞) get their closed forms, only where present. Values beyond the dtype are ±Inf
    here; callers saturate.
    """
    special = special_members(alpha)
    any_special = static or bool(special.any())
    a = torch.where(special, torch.ones_like(alpha), alpha) if any_special else alpha
    b = (a - 2).abs()
    t = safe_log1p_q(x, scale, b, static=static).mul_(a / 2)
    huge = static or tensor_max(t) > 30
    rho = (t.clamp(max=30.0) if huge else t).expm1_().mul_(b / a)  # (in place when nothing is huge)
    if huge:
        t = safe_log1p_q(x, scale, b, static=static).mul_(a / 2)
        rho = torch.where(t > 30, torch.exp(t + torch.log(b / a.abs())), rho)
    if any_special:
        xs = x / scale
        z = xs * xs
        # z/2 to half an ulp; (xs·√½)² (two ulps) only where z overflows but z/2 need not
        half_z = torch.where(torch.isinf(z), (xs * math.sqrt(0.5)).square(), z * 0.5)
        cauchy = safe_log1p_q(x, scale, torch.full_like(b, 2.0), static=static)
        rho = torch.where(alpha.abs() < ZERO_ALPHA, cauchy, rho)
        rho = torch.where(alpha == 2, half_z, rho)
        rho = torch.where(alpha == -math.inf, -torch.expm1(-half_z), rho)
        rho = torch.where(alpha == math.inf, torch.expm1(half_z), rho)
    return rho


def psi_factor(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, static: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """xs = x/c and w = (q + 1)^{(α−2)/2}, so that ψ = (xs·w)/c and ψ/x = w/c² (in this order they
    overflow only where the true value does; w may be +Inf there, callers saturate). α = 2 gives
    w = 1, α = ±∞ gives w = exp(±z/2)."""
    special = (alpha == 2) | torch.isinf(alpha)
    any_special = static or bool(special.any())
    a = torch.where(special, torch.ones_like(alpha), alpha) if any_special else alpha
    log1p_q = safe_log1p_q(x, scale, (a - 2).abs(), static=static)
    w = torch.exp(log1p_q * ((a - 2) / 2))
    xs = x / scale
    if any_special:
        half_z = (xs * math.sqrt(0.5)).square()
        w = torch.where(alpha == 2, torch.ones_like(w), w)
        w = torch.where(alpha == -math.inf, torch.exp(-half_z), w)
        w = torch.where(alpha == math.inf, torch.exp(half_z), w)
    return xs, w


def _sqrt_one_plus(q: torch.Tensor) -> torch.Tensor:
    return torch.add(q, 1).sqrt_()


# Integer α with closed forms in q = z/|α−2| (besides 0 and 2, which are special members anyway):
# polynomials, square roots and ratios, where the generic expm1(α/2·log1p(q)) carries |t|·eps from its
# exponent (5 ulp at α = 4 in float64, hundreds at α = 3 for large x). Measured in float64 against
# 50 digits, x² exact: ≤ 2 ulp at α = −2, −1, 0, 1, 2, 4, 6; ≤ 2.6 ulp at 3; ≤ 3.8 ulp at 5, 7, 8.
# (For α ≤ −3 the generic form, whose exponent is negative, is already within about 2 ulp.)
INTEGER_MEMBERS = (-2, -1, 1, 3, 4, 5, 6, 7, 8)


def integer_rho(q: torch.Tensor, k: int) -> torch.Tensor:
    """ρ at integer α = k ∈ INTEGER_MEMBERS from q = z/|k−2| (out of place; q finite). With w = √(1 + q),
    odd powers use w^n − 1 = (q/(w + 1))·Σ_{j<n} w^j, the sum written as polynomials in q plus w times
    polynomials in q (w² = 1 + q), every term positive."""
    if k == 1:
        return q / _sqrt_one_plus(q).add_(1)
    if k == 4:
        return q * (q + 2) / 2
    if k == 6:
        return (q + 3).mul_(q).add_(3).mul_(q).mul_(2 / 3)
    if k == 8:
        return (q + 4).mul_(q).add_(6).mul_(q).add_(4).mul_(q).mul_(3 / 4)
    if k == -2:
        return 2 * q / (q + 1)
    w = _sqrt_one_plus(q)
    if k == -1:
        return 3 * q / (q + 1 + w)  # 3(1 − 1/w) = 3q/(w(w + 1)) = 3q/(1 + q + w)
    ratio = q / (w + 1)  # w − 1
    if k == 3:
        return ratio * (q + 2 + w) / 3  # (w³ − 1)/3
    if k == 5:
        return ratio * ((q + 3).mul_(q).add_(3) + w * (q + 2)) * (3 / 5)
    if k == 7:
        return ratio * ((q + 4).mul_(q).add_(6).mul_(q).add_(4) + w * (q + 3).mul_(q).add_(3)) * (5 / 7)
    raise ValueError(f"no closed form for α = {k}; integer members with one: {INTEGER_MEMBERS}")
