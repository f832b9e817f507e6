"""core.losses against independent references: mpmath at 40 digits, closed forms, finite differences."""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from scipy import integrate, stats

from core.losses import LOSSES, AdaptiveLoss, log_partition, make_loss, nll, psi, rho, sample, weight
from core.losses.partition import TABLE_PATH, compute_partition_table, load_partition_table

mpmath.mp.dps = 40
INF = math.inf


def rho_reference(x: float, alpha: float, c: float) -> mpmath.mpf:
    """ρ by the paper's formula and limits, in 40-digit arithmetic (independent of our numerics)."""
    z = (mpmath.mpf(x) / c) ** 2
    if alpha == INF:
        return mpmath.expm1(z / 2)
    if alpha == -INF:
        return -mpmath.expm1(-z / 2)
    a = mpmath.mpf(alpha)
    if a == 2:
        return z / 2
    if a == 0:
        return mpmath.log1p(z / 2)
    b = abs(a - 2)
    return b / a * ((z / b + 1) ** (a / 2) - 1)


def psi_reference(x: float, alpha: float, c: float) -> mpmath.mpf:
    return mpmath.diff(lambda t: rho_reference(t, alpha, c), mpmath.mpf(x))


ALPHAS = [-INF, -1e3, -100.0, -10.0, -2.0, -1.0, -1e-3, -1e-8, 0.0, 1e-8, 1e-7, 1e-4, 1e-3, 0.5, 1.0, 1.5,
          2 - 1e-8, 2.0, 2 + 1e-8, 2.5, 3.0, 10.0, 100.0, 1e3, INF]
XS = [float(v) for v in np.logspace(-6, 6, 25)]
F32_MAX = float(np.finfo(np.float32).max)


def test_special_cases_equal_closed_forms():
    x = torch.linspace(-20, 20, 401, dtype=torch.float64)
    c = 1.7
    z = (x / c) ** 2
    torch.testing.assert_close(rho(x, 2.0, c), z / 2)
    torch.testing.assert_close(rho(x, 0.0, c), torch.log(z / 2 + 1))
    torch.testing.assert_close(rho(x, -INF, c), 1 - torch.exp(-z / 2))
    torch.testing.assert_close(rho(x, INF, c), torch.expm1(z / 2))
    torch.testing.assert_close(rho(x, 1.0, c), torch.sqrt(z + 1) - 1)
    torch.testing.assert_close(rho(x, -2.0, c), 2 * z / (z + 4))
    # continuity through the special cases
    for a in (2.0, 0.0):
        for eps in (1e-6, -1e-6):
            torch.testing.assert_close(rho(x, a + eps, c), rho(x, a, c), rtol=1e-4, atol=1e-8)
    torch.testing.assert_close(rho(x, -1e9, c), rho(x, -INF, c), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("alpha", ALPHAS)
def test_float32_rho_psi_match_40_digit_reference(alpha: float):
    x = torch.tensor(XS + [-v for v in XS[::5]], dtype=torch.float32)
    for c in (1.0, 0.25):
        xs = (x * c).float()  # so that |x/c| spans 1e-6 .. 1e6
        ours_rho = rho(xs, torch.tensor(alpha, dtype=torch.float32), c).tolist()
        ours_psi = psi(xs, torch.tensor(alpha, dtype=torch.float32), c).tolist()
        for i, xv in enumerate(xs.tolist()):
            ref = rho_reference(xv, alpha, c)
            if abs(ref) < F32_MAX:
                rel = abs(float((ours_rho[i] - ref) / ref)) if ref != 0 else abs(ours_rho[i])
                assert rel < 1e-5, f"rho α={alpha} x={xv} c={c}: ours {ours_rho[i]} ref {ref}"
            else:
                assert ours_rho[i] == F32_MAX  # saturates instead of Inf
            if abs(xv / c) < 1e4:  # ψ by 40-digit numerical differentiation
                ref_psi = psi_reference(xv, alpha, c)
                if 0 < abs(ref_psi) < F32_MAX:
                    rel = abs(float((ours_psi[i] - ref_psi) / ref_psi))
                    assert rel < 1e-4, f"psi α={alpha} x={xv}: ours {ours_psi[i]} ref {ref_psi}"


@pytest.mark.parametrize("alpha", ALPHAS)
def test_fixed_alpha_fast_path_matches_the_reference(alpha: float):
    """Training's path (α and c plain numbers, float32): its forward against 40 digits and its backward
    against the float64 ψ, over |x/c| from 1e-6 to 1e6, and finite at the extremes."""
    for c in (1.0, 0.25):
        x = (torch.tensor(XS + [-v for v in XS[::5]], dtype=torch.float64) * c).float().requires_grad_(True)
        value = rho(x, alpha, c)
        (grad,) = torch.autograd.grad(value.sum(), x)
        ref_psi = psi(x.detach().double(), alpha, c)
        for i, xv in enumerate(x.detach().tolist()):
            ref = rho_reference(xv, alpha, c)
            if abs(ref) < F32_MAX:
                rel = abs(float((value[i].item() - ref) / ref)) if ref != 0 else abs(value[i].item())
                assert rel < 1e-5, f"fixed rho α={alpha} x={xv} c={c}: ours {value[i].item()} ref {ref}"
            r = ref_psi[i].item()
            if float(np.finfo(np.float32).tiny) < abs(r) < F32_MAX:  # where ψ is a normal float32
                assert abs(grad[i].item() - r) <= 1e-4 * abs(r), f"fixed psi α={alpha} x={xv} c={c}"
    extreme = torch.tensor([0.0, 1e-30, 1e30, -1e30], requires_grad=True)
    for c in (1e-8, 1e8):
        value = rho(extreme, alpha, c)
        (grad,) = torch.autograd.grad(value.sum(), extreme)
        assert torch.isfinite(value).all() and torch.isfinite(grad).all(), f"α={alpha} c={c}"


def test_small_alpha_keeps_accuracy_where_the_direct_formula_fails():
    x = torch.tensor([0.3, 1.0, 3.0])
    for alpha in (1e-3, 1e-4, 1e-7):
        a = torch.tensor(alpha)
        b = abs(alpha - 2)
        direct = b / a * (((x**2) / b + 1) ** (a / 2) - 1)  # the paper's formula, float32
        ref = torch.tensor([float(rho_reference(v, alpha, 1.0)) for v in x.tolist()])
        ours_err = ((rho(x, a) - ref) / ref).abs().max()
        direct_err = ((direct - ref) / ref).abs().max()
        assert ours_err < 1e-6
        assert direct_err > 100 * ours_err  # the reason for the expm1/log1p form


def test_psi_agrees_with_autograd_and_weight_is_psi_over_x():
    x = torch.linspace(-8, 8, 161, dtype=torch.float64, requires_grad=True)
    for alpha in (-INF, -3.0, -2.0, 0.0, 0.7, 1.0, 2.0, 4.0, INF):
        (grad,) = torch.autograd.grad(rho(x, alpha, 1.3).sum(), x)
        torch.testing.assert_close(psi(x.detach(), alpha, 1.3), grad)
        # an independent autograd: the paper's formula written directly, for generic α
        if math.isfinite(alpha) and alpha not in (0.0, 2.0):
            xd = x.detach().clone().requires_grad_(True)
            b = abs(alpha - 2)
            direct = b / alpha * (((xd / 1.3) ** 2 / b + 1) ** (alpha / 2) - 1)
            (g2,) = torch.autograd.grad(direct.sum(), xd)
            torch.testing.assert_close(psi(x.detach(), alpha, 1.3), g2)
        nonzero = x.detach() != 0
        torch.testing.assert_close(
            weight(x.detach(), alpha, 1.3)[nonzero], (psi(x.detach(), alpha, 1.3) / x.detach())[nonzero]
        )
    assert weight(0.0, 0.5, 2.0).item() == pytest.approx(0.25)


@pytest.mark.parametrize("alpha", [-5.0, -1.5, -0.5, 0.0, 0.3, 0.99, 1.0, 1.5, 1.999, 2.5, 10.0])
def test_gradients_match_finite_differences(alpha: float):
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(12, generator=gen, dtype=torch.float64) * 3).requires_grad_(True)
    a = torch.tensor(alpha, dtype=torch.float64, requires_grad=True)
    c = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, a, c: rho(x, a, c), (x, a, c), eps=1e-7, atol=1e-6, rtol=1e-5)


def test_extreme_inputs_stay_finite_in_values_and_gradients():
    xs = [0.0, 1e-30, 1e-6, 1.0, 1e6, 1e30, -1e30]
    cs = [1e-8, 1.0, 1e8]
    alphas = [-INF, -1e6, -1e3, -2.0, -1e-8, 0.0, 1e-8, 1.0, 2.0 - 1e-7, 2.0, 2.0 + 2.4e-7, 3.0, 1e3, 1e6, INF]
    grid = torch.tensor([(x, c, a) for x in xs for c in cs for a in alphas], dtype=torch.float32)
    x = grid[:, 0].clone().requires_grad_(True)
    c = grid[:, 1].clone().requires_grad_(True)
    a = grid[:, 2].clone().requires_grad_(True)
    value = rho(x, a, c)
    value.sum().backward()
    for name, t in [("rho", value), ("d/dx", x.grad), ("d/dalpha", a.grad), ("d/dc", c.grad)]:
        bad = ~torch.isfinite(t)
        assert not bad.any(), f"{name} not finite at (x, c, α) = {grid[bad][:5].tolist()}"
    for fn in (psi, weight):
        assert torch.isfinite(fn(grid[:, 0], grid[:, 2], grid[:, 1])).all()
    nonneg = grid[:, 2] >= 0
    assert torch.isfinite(nll(grid[nonneg, 0], grid[nonneg, 2], grid[nonneg, 1])).all()


def test_log_partition_golden_values_and_closed_forms():
    golden = {0.0: math.pi * math.sqrt(2), 0.5: 3.638993131, 1.0: 3.272306973, 1.5: 2.965924889,
              2.0: math.sqrt(2 * math.pi), 3.0: 2.153202857, 8.0: 2.054500222}
    got = log_partition(torch.tensor(list(golden), dtype=torch.float64))
    want = torch.log(torch.tensor(list(golden.values()), dtype=torch.float64))
    assert (got - want).abs().max() < 1e-6
    assert float(log_partition(torch.tensor(INF, dtype=torch.float64))) == pytest.approx(0.70526025442, abs=1e-9)
    with pytest.raises(ValueError, match="α ≥ 0"):
        log_partition(-0.5)


@pytest.mark.parametrize("alpha", [0.0, 0.5, 1.0, 2.0, 3.0, 8.0, INF])
def test_density_integrates_to_one(alpha: float):
    def p(x: float) -> float:
        return float(torch.exp(-nll(torch.tensor(x, dtype=torch.float64), alpha, 0.7)))

    total, _ = integrate.quad(p, -np.inf, np.inf, epsabs=1e-12, epsrel=1e-10, limit=500)
    assert abs(total - 1) < 1e-5


def test_nll_can_be_negative_and_rejects_bad_input():
    assert float(nll(0.0, 2.0, 0.01)) < 0  # a narrow density exceeds 1: correct, not a bug
    with pytest.raises(ValueError, match="α ≥ 0"):
        nll(torch.ones(3), -1.0, 1.0)
    with pytest.raises(ValueError, match="scale c must be > 0"):
        nll(torch.ones(3), 1.0, 0.0)
    with pytest.raises(ValueError, match="scale c must be > 0"):
        rho(torch.ones(3), 1.0, torch.tensor([1.0, -1.0, 1.0]))


def _cdf_by_quadrature(alpha: float, scale: float):
    grid = np.linspace(-400, 400, 400_001)
    dens = torch.exp(-nll(torch.from_numpy(grid), alpha, scale)).numpy()
    cdf = integrate.cumulative_trapezoid(dens, grid, initial=0)
    cdf /= cdf[-1]
    return lambda v: np.interp(v, grid, cdf)


@pytest.mark.parametrize("alpha", [0.0, 1.0, 2.0, 5.0])
def test_samples_follow_the_density(alpha: float):
    gen = torch.Generator().manual_seed(1)
    draws = sample(alpha, 1.5, (6000,), generator=gen).double().numpy()
    if alpha == 0.0:
        cdf = stats.cauchy(scale=1.5 * math.sqrt(2)).cdf
    elif alpha == 2.0:
        cdf = stats.norm(scale=1.5).cdf
    else:
        cdf = _cdf_by_quadrature(alpha, 1.5)
    assert stats.kstest(draws, cdf).pvalue > 1e-3
    # and a wrong α is rejected, so the test can fail
    wrong = stats.norm(scale=1.5).cdf if alpha != 2.0 else stats.cauchy(scale=1.5 * math.sqrt(2)).cdf
    assert stats.kstest(draws, wrong).pvalue < 1e-3


def test_sample_broadcasts_alpha_and_scale():
    gen = torch.Generator().manual_seed(0)
    out = sample(torch.tensor([0.0, 2.0]), torch.tensor([1.0, 10.0]), (5000, 2), generator=gen)
    assert out.shape == (5000, 2)
    iqr = out.quantile(0.75, dim=0) - out.quantile(0.25, dim=0)
    assert iqr[1] / iqr[0] > 3  # the second column has 10× the scale


def test_adaptive_loss_recovers_alpha_and_scale_from_samples():
    torch.manual_seed(0)
    data = sample(0.5, 2.0, (20000, 1), generator=torch.Generator().manual_seed(3))
    loss = AdaptiveLoss(1, alpha_init=1.5, scale_init=1.0)
    opt = torch.optim.Adam(loss.parameters(), lr=0.05)
    for _ in range(400):
        opt.zero_grad()
        loss(data).mean().backward()
        opt.step()
    assert float(loss.alpha().detach()) == pytest.approx(0.5, abs=0.1)
    assert float(loss.scale().detach()) == pytest.approx(2.0, abs=0.1)


def test_adaptive_loss_shapes_bounds_and_errors():
    loss = AdaptiveLoss(5, alpha_lo=0.0, alpha_hi=3.0)
    out = loss(torch.randn(7, 5))
    assert out.shape == (7, 5) and out.dtype == torch.float32
    assert loss.alpha().shape == (5,) and torch.allclose(loss.alpha(), torch.full((5,), 1.5))
    assert torch.allclose(loss.scale(), torch.ones(5))
    assert len(list(loss.parameters())) == 2
    with pytest.raises(ValueError, match="last dimension"):
        loss(torch.randn(7, 4))
    with pytest.raises(ValueError, match="α ≥ 0"):
        AdaptiveLoss(3, alpha_lo=-1.0)


def test_broadcasting_dtypes_and_gradient_shapes():
    x = torch.randn(4, 6, requires_grad=True)
    alpha = torch.full((6,), 0.5, requires_grad=True)
    scale = torch.full((1, 6), 2.0, requires_grad=True)
    out = rho(x, alpha, scale)
    assert out.shape == (4, 6)
    out.sum().backward()
    assert x.grad.shape == x.shape and alpha.grad.shape == (6,) and scale.grad.shape == (1, 6)
    for dtype in (torch.bfloat16, torch.float16):
        xh = torch.linspace(-3, 3, 11).to(dtype).requires_grad_(True)
        yh = rho(xh, 1.0, 1.0)
        assert yh.dtype == dtype
        yh.sum().backward()
        assert xh.grad.dtype == dtype
        torch.testing.assert_close(yh.float(), rho(xh.detach().float(), 1.0, 1.0), rtol=1e-2, atol=1e-2)
    assert rho(3.0, 0.0).dtype == torch.float32 and rho(3.0, 0.0).shape == ()


def test_registry_builds_every_loss_by_name():
    r = torch.randn(3, 10) * 0.3
    for name, info in LOSSES.items():
        fn = make_loss(name, 10, alpha=1.5 if name == "general" else None)
        out = fn(r)
        assert out.shape == r.shape and torch.isfinite(out).all(), name
        assert (len(list(fn.parameters())) > 0) == info.learnable
    assert not LOSSES["geman_mcclure"].has_likelihood and not LOSSES["welsch"].has_likelihood
    assert not LOSSES["smooth_l1"].in_family and LOSSES["cauchy"].in_family
    torch.testing.assert_close(make_loss("mse", 10)(r), r**2)
    torch.testing.assert_close(make_loss("cauchy", 10, scale=0.5)(r), rho(r, 0.0, 0.5))
    with pytest.raises(ValueError, match="needs alpha"):
        make_loss("general", 10)
    with pytest.raises(ValueError, match="unknown loss"):
        make_loss("huber2", 10)


@pytest.mark.slow
def test_shipped_partition_table_matches_a_fresh_computation():
    shipped = load_partition_table(TABLE_PATH)
    assert shipped is not None, "core/losses/log_partition_table.safetensors is missing or stale"
    fresh = compute_partition_table()
    for key in fresh:
        torch.testing.assert_close(shipped[key], fresh[key], rtol=0, atol=1e-12)
