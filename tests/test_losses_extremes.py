"""Huge residuals keep their exact values and gradients (float32, against
the paper's formulas in 50-digit arithmetic), and no value or gradient is ever ±Inf/NaN, even when
a scalar α or c sums the gradients of a batch of near-limit residuals."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch

from core.losses import psi, rho, weight

INF = math.inf
F32_MAX = float(np.finfo(np.float32).max)
F32_TINY = float(np.finfo(np.float32).tiny)


def _ctx():
    return mpmath.workdps(50)


def rho_paper(x, alpha, c):
    """ρ by the paper's formula and limits (mpmath; x, α, c mpf or ±inf)."""
    z = (x / c) ** 2
    if alpha == INF:
        return mpmath.expm1(z / 2)
    if alpha == -INF:
        return -mpmath.expm1(-z / 2)
    if alpha == 2:
        return z / 2
    if alpha == 0:
        return mpmath.log1p(z / 2)
    b = abs(alpha - 2)
    return b / alpha * ((z / b + 1) ** (alpha / 2) - 1)


def psi_paper(x, alpha, c):
    """ψ = (x/c²)·(z/b + 1)^{α/2 − 1} and its limits."""
    z = (x / c) ** 2
    if alpha == INF:
        return x / c**2 * mpmath.exp(z / 2)
    if alpha == -INF:
        return x / c**2 * mpmath.exp(-z / 2)
    if alpha == 2:
        return x / c**2
    b = abs(alpha - 2)
    return x / c**2 * (z / b + 1) ** (alpha / 2 - 1)


def drho_dalpha_paper(x, alpha, c):
    """∂ρ/∂α by numerical differentiation of the paper's formula (independent of our derivation), at 150
    digits: for small (x/c)² the formula cancels ~3·log10(b/z) digits, which the extra precision absorbs."""
    if not mpmath.isfinite(alpha):
        return mpmath.mpf(0)
    with mpmath.workdps(150):  # (an explicit step: mpmath's default one is far too coarse at α = 0)
        return mpmath.diff(lambda a: rho_paper(x, a, c), alpha, h=mpmath.mpf(10) ** -40)


def rel_err(ours: float, ref) -> float:
    return abs(float((mpmath.mpf(ours) - ref) / ref)) if ref != 0 else abs(ours)


HUGE_X = [1e3, 1e10, 1e19, 1e20, 1e25, 1e30, -1e30, 3e38]
ALPHAS = [-INF, -1e6, -2.0, -0.5, 0.0, 1e-7, 0.5, 1.0, 1.5, 1.9, 2.0, 2.5, 4.0, 1e6, INF]
SCALES = [1e-8, 1.0, 1e8]


def _check_value(name: str, ours: float, ref, where: str) -> None:
    """Exact to 1e-5 where the true value is a normal float32; saturated where it is beyond."""
    if abs(ref) > F32_MAX:
        assert abs(ours) == F32_MAX and math.copysign(1, ours) == float(mpmath.sign(ref)), f"{name} {where}: {ours}"
    elif abs(ref) >= F32_TINY:
        assert rel_err(ours, ref) <= 1e-5, f"{name} {where}: ours {ours} exact {mpmath.nstr(ref, 10)}"
    else:
        assert math.isfinite(ours), f"{name} {where}"


@pytest.mark.parametrize("path", ["numbers", "tensors"])
def test_huge_residuals_are_exact_in_float32(path: str):
    """ρ(1e20, 1, 1) = 1e20, not the 1.8e19 a saturated (x/c)² gives; ψ, ψ/x, ∂ρ/∂x, ∂ρ/∂c, ∂ρ/∂α too."""
    assert float(rho(torch.tensor([1e20]), 1.0, 1.0)) == pytest.approx(1e20, rel=1e-6)
    assert float(rho(torch.tensor([1e30]), 1.0, 1.0)) == pytest.approx(1e30, rel=1e-6)
    with _ctx():
        for c in SCALES:
            for alpha in ALPHAS:
                x = torch.tensor(HUGE_X, dtype=torch.float32, requires_grad=True)
                if path == "numbers":
                    value = rho(x, alpha, c)
                    (gx,) = torch.autograd.grad(value.sum(), x)
                    ga = gc = None
                else:  # one α and c per element: the elementwise gradients, no reduction
                    a = torch.full_like(x, alpha).requires_grad_(True)
                    s = torch.full_like(x, c).requires_grad_(True)
                    value = rho(x, a, s)
                    gx, ga, gc = torch.autograd.grad(value.sum(), (x, a, s))
                xs = x.detach()
                ps, wt = psi(xs, alpha, c), weight(xs, alpha, c)
                a32 = float(torch.tensor(alpha, dtype=torch.float32))
                for i, xv in enumerate(xs.tolist()):
                    xm, am, cm = mpmath.mpf(xv), (mpmath.mpf(a32) if math.isfinite(a32) else a32), mpmath.mpf(
                        float(torch.tensor(c, dtype=torch.float32)))
                    where = f"x={xv:g} α={alpha:g} c={c:g}"
                    ref_psi = psi_paper(xm, am, cm)
                    _check_value("rho", value[i].item(), rho_paper(xm, am, cm), where)
                    _check_value("psi", ps[i].item(), ref_psi, where)
                    _check_value("psi/x", wt[i].item(), ref_psi / xm, where)
                    _check_value("d/dx", gx[i].item(), ref_psi, where)
                    if gc is not None:
                        _check_value("d/dc", gc[i].item(), -ref_psi * xm / cm, where)
                        if am != 2:  # +∞ at α = 2 exactly (evaluated at 2 − 1e-7 instead)
                            _check_value("d/dalpha", ga[i].item(), drho_dalpha_paper(xm, am, cm), where)


# The grid of extremes: |x| ≤ 1e30, c ∈ {1e-8, 1, 1e8} and these α (30 cells, 16 of which gave
# ±Inf gradients before).
GRID_ALPHAS = [-1e6, -INF, -2.0, 0.0, 1e-7, 1.0, 2.0, 4.0, 1e6, INF]
GRID_X = [0.0, 1e-30, -1e-30, 1e-3, 1.0, -1.0, 1e10, 1e20, -1e20, 1e30, -1e30] * 8


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_no_value_or_gradient_is_inf_or_nan_with_scalar_alpha_and_scale(dtype: torch.dtype):
    big = torch.finfo(dtype).max
    for alpha in GRID_ALPHAS:
        for c in SCALES:
            x = torch.tensor(GRID_X, dtype=dtype, requires_grad=True)
            a = torch.tensor(alpha, dtype=dtype, requires_grad=True)
            s = torch.tensor(c, dtype=dtype, requires_grad=True)
            value = rho(x, a, s)
            value.sum().backward()
            for name, t in [("rho", value), ("d/dx", x.grad), ("d/dalpha", a.grad), ("d/dc", s.grad)]:
                assert torch.isfinite(t).all(), f"{name} not finite at α={alpha} c={c} ({dtype})"
            # the reduction is the float64 sum of the elementwise gradients, saturated
            a_el = torch.full_like(x, alpha).requires_grad_(True)
            s_el = torch.full_like(x, c).requires_grad_(True)
            ga, gc = torch.autograd.grad(rho(x.detach(), a_el, s_el).sum(), (a_el, s_el))
            for total, parts in ((a.grad, ga), (s.grad, gc)):
                want = parts.double().sum().clamp(-big, big)
                assert float(total) == pytest.approx(float(want), rel=1e-6), f"α={alpha} c={c}"


def test_reduction_over_broadcast_dimensions_accumulates_in_float64():
    """Per-dimension α and c against a batch: each column's gradient is its float64 column sum."""
    x = torch.tensor([[1e30, 1.0, 3e38], [1e30, -2.0, 3e38], [1e30, 0.5, -3e38]], requires_grad=True)
    a = torch.tensor([1.5, 1.5, 4.0], requires_grad=True)
    s = torch.tensor([1e-8, 1.0, 1e8], requires_grad=True)
    rho(x, a, s).sum().backward()
    assert torch.isfinite(a.grad).all() and torch.isfinite(s.grad).all() and torch.isfinite(x.grad).all()
    assert float(s.grad[0]) == -F32_MAX  # −3 × (1e30·ψ/c) is beyond float32: saturated, not −Inf
    a_el = a.detach().expand(3, 3).clone().requires_grad_(True)
    s_el = s.detach().expand(3, 3).clone().requires_grad_(True)
    ga, gs = torch.autograd.grad(rho(x.detach(), a_el, s_el).sum(), (a_el, s_el))
    torch.testing.assert_close(s.grad, gs.double().sum(0).clamp(-F32_MAX, F32_MAX).float(), rtol=1e-6, atol=0)
    torch.testing.assert_close(a.grad, ga.double().sum(0).clamp(-F32_MAX, F32_MAX).float(), rtol=1e-6, atol=0)
