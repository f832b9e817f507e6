"""log Z(α), the log partition function of the general distribution p(x | α, c) ∝ exp(−ρ(x, α, c)).

    Z(α) = ∫ exp(−ρ(x, α, 1)) dx,   finite for α ≥ 0 (and α = +∞); Z(0) = π√2, Z(2) = √(2π).

Computed here by our own quadrature in float64 and tabulated:

* Quadrature. With x = e^v the integral 2∫₀^∞ f(x) dx becomes 2∫ f(e^v)·e^v dv over the real line, where
  the integrand is analytic in a strip |Im v| < π/2 and decays exponentially at both ends (even the
  Cauchy tail 2/x² becomes 2e^{−v}). The trapezoidal rule on such an integrand converges geometrically
  (error ~ exp(−π²/h)); h = 0.05 on v ∈ [−40, 40] is exact to float64 rounding. d log Z/dα = −E_p[∂ρ/∂α]
  uses `formulas.drho_dalpha`, exact to a few eps for every x and every α ≠ 2.
* Table. Cubic Hermite interpolation of the values and slopes, on four pieces whose knots are placed
  by a fixed spacing rule (deterministic, found by refining until the interpolation met 2e-11 in value
  and 5e-10 in slope at every interval's Gauss points):
    - α ∈ [0, 2 − 0.01]: log Z itself. Near α = 0 log Z bends sharply (the Cauchy tail is cut off by
      exp(−α·log²x/4)-like factors whose derivatives grow like (2n)!), so the spacing there is 1.4e-4,
      growing linearly with α; towards α = 2 it shrinks in proportion to |α − 2|.
    - |α − 2| ≤ 0.01: log Z has a δ·log|δ| singularity at δ = α − 2 (d log Z/dα = ¼·log|δ| + K + …;
      ¼ = E_N[x²]/4). The table holds G(δ) = log Z(2 + δ) − log Z(2) − S(δ), S(δ) = (δ/4)(log|δ| − 1),
      which is C¹ through δ = 0, at knots geometric in |δ| down to 1e-12 (and 0). G is the integral of
      its slope G' = d log Z/dα − ¼·log|δ| (Gauss–Legendre, interval by interval from 0): a difference
      of two values would lose all precision as δ → 0.
    - α ∈ [2 + 0.01, 4]: log Z itself, spacing proportional to α − 2.
    - α ≥ 4, α = ∞ included: log Z as a function of w = 1/α ∈ [0, 1/4], where it is analytic.
  At α = 2 exactly d log Z/dα is −∞; there it is evaluated at α = 2 − ALPHA_GRAD_GAP, the point where
  `drho_dalpha` evaluates ∂ρ/∂α, so that the NLL's α-gradient stays consistent. Elsewhere value and
  slope are within 1e-9 of the quadrature (tests: a dense grid against a 30-digit mpmath integral).

The table takes a few seconds to compute, so it is kept in `log_partition_table.safetensors` beside this
file, written by `python -m core.losses.make_table` (the tests recompute it and compare); if the file is
missing or was made with other settings, it is computed on first use instead.
"""

from __future__ import annotations

import functools
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from core.losses.formulas import ALPHA_GRAD_GAP, drho_dalpha, rho_values

_QUAD_STEP = 0.05
_QUAD_SPAN = 40.0
_NEAR_TWO = 0.01          # |α − 2| below this: the G + S representation
_DELTA_MIN = 1e-12        # the innermost knots of that piece (and δ = 0)
_W_LAST = 0.25            # α ≥ 1/_W_LAST: interpolated in w = 1/α
_SPACING = {"zero": 1.4e-4, "zero_growth": 25.0, "two": 2.2e-3, "near": 0.012, "w": 6e-4}
_GAUSS_POINTS = 8
LOG_Z_TWO = 0.5 * math.log(2 * math.pi)
TABLE_PATH = Path(__file__).with_name("log_partition_table.safetensors")
_SETTINGS = {"quad_step": _QUAD_STEP, "quad_span": _QUAD_SPAN, "near_two": _NEAR_TWO, "delta_min": _DELTA_MIN,
             "w_last": _W_LAST, "spacing": _SPACING, "gauss_points": _GAUSS_POINTS, "version": 2}
_PIECES = ("low", "near", "high", "far")


def _quadrature_nodes() -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes x = e^v and weights 2·h·e^v of the trapezoidal rule for 2∫₀^∞ f(x) dx."""
    v = torch.arange(-_QUAD_SPAN, _QUAD_SPAN + _QUAD_STEP / 2, _QUAD_STEP, dtype=torch.float64)
    x = torch.exp(v)
    return x, 2 * _QUAD_STEP * x


def integrate_log_partition(alphas: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """log Z(α) and d log Z/dα for each α ≥ 0 (float64, CPU), by the trapezoidal rule in v = log x."""
    x, w = _quadrature_nodes()
    log_z, dlog_z = [], []
    one = torch.ones((), dtype=torch.float64)
    for part in alphas.to(torch.float64).reshape(-1).split(chunk):
        a = part[:, None]
        density = torch.exp(-rho_values(x[None, :], a, one)) * w
        z = density.sum(dim=1)
        drho = drho_dalpha(x[None, :], a, one)
        # far in the tails exp(−ρ) underflows to 0 where ∂ρ/∂α may be huge: those nodes contribute nothing
        weighted = torch.where(density > 0, density * drho, torch.zeros_like(density))
        log_z.append(torch.log(z))
        dlog_z.append(-weighted.sum(dim=1) / z)
    return torch.cat(log_z), torch.cat(dlog_z)


def singular_part(delta: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S(δ) = (δ/4)(log|δ| − 1) and S'(δ) = ¼·log|δ|, with S(0) = 0 and S'(0) = ¼·log(ALPHA_GRAD_GAP)."""
    zero = delta == 0
    safe = torch.where(zero, torch.ones_like(delta), delta.abs())
    log_abs = torch.log(safe)
    value = torch.where(zero, torch.zeros_like(delta), delta / 4 * (log_abs - 1))
    slope = torch.where(zero, torch.full_like(delta, 0.25 * math.log(ALPHA_GRAD_GAP)), log_abs / 4)
    return value, slope


def _walk(start: float, stop: float, step) -> np.ndarray:
    """Knots from start to stop (both included), each step(k) after the previous."""
    knots = [start]
    while knots[-1] < stop:
        knots.append(knots[-1] + step(knots[-1]))
    knots[-1] = stop
    if knots[-1] - knots[-2] < 0.25 * step(knots[-2]):
        del knots[-2]
    return np.array(knots)


def knot_layout() -> dict[str, np.ndarray]:
    """The knots of the four pieces, in their own variables (α, δ = α − 2, α, w = 1/α)."""
    sp = _SPACING
    low = _walk(0.0, 2 - _NEAR_TWO, lambda a: min(sp["zero"] * (1 + sp["zero_growth"] * a), sp["two"] * (2 - a)))
    high = _walk(2 + _NEAR_TWO, 1 / _W_LAST, lambda a: sp["two"] * (a - 2))
    far = _walk(0.0, _W_LAST, lambda w: sp["w"])
    # |δ| from _NEAR_TWO down: steps of near·(_NEAR_TWO/δ)^{1/3}·δ, at most ×2 per knot
    side = [_NEAR_TWO]
    while side[-1] > _DELTA_MIN:
        d = side[-1]
        side.append(d / (1 + min(1.0, sp["near"] * (_NEAR_TWO / d) ** (1 / 3))))
    side[-1] = _DELTA_MIN
    side = np.array(side[::-1])
    near = np.concatenate([-side[::-1], [0.0], side])
    return {"low": low, "near": near, "high": high, "far": far}


def _near_two_piece(delta: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """G and G' at the δ knots: G' from the quadrature, G by integrating G' outward from δ = 0."""
    d = torch.from_numpy(delta)
    alpha = 2 + d
    actual = alpha - 2  # exact in float64 (Sterbenz); δ as the quadrature sees it
    _, slope = integrate_log_partition(alpha)
    _, s_slope = singular_part(actual)
    g_slope = slope - s_slope
    zero = int(np.flatnonzero(delta == 0)[0])
    g_slope[zero] = 0.5 * (g_slope[zero - 1] + g_slope[zero + 1])  # the limit K, to ~δ_min·log²δ_min
    nodes, weights = np.polynomial.legendre.leggauss(_GAUSS_POINTS)
    lo, hi = d[:-1], d[1:]
    mid, half = (lo + hi) / 2, (hi - lo) / 2
    sigma = mid[:, None] + half[:, None] * torch.from_numpy(nodes)[None, :]
    _, f_slope = integrate_log_partition((2 + sigma).reshape(-1))
    _, s_sig = singular_part((2 + sigma).reshape(-1) - 2)
    pieces = ((f_slope - s_sig).reshape(sigma.shape) * torch.from_numpy(weights)[None, :]).sum(1) * half
    g = torch.zeros_like(d)
    right = torch.cumsum(pieces[zero:], 0)
    left = -torch.flip(torch.cumsum(torch.flip(pieces[:zero], [0]), 0), [0])
    g[zero + 1:] = right
    g[:zero] = left
    return g, g_slope


def compute_partition_table() -> dict[str, torch.Tensor]:
    """Knots, values and slopes of the four pieces (float64, CPU), by quadrature: a few seconds."""
    layout = knot_layout()
    table: dict[str, torch.Tensor] = {}
    for piece in ("low", "high"):
        knots = torch.from_numpy(layout[piece])
        values, slopes = integrate_log_partition(knots)
        table.update({f"{piece}_knots": knots, f"{piece}_values": values, f"{piece}_slopes": slopes})
    g, g_slope = _near_two_piece(layout["near"])
    table.update({"near_knots": torch.from_numpy(layout["near"]), "near_values": g, "near_slopes": g_slope})
    w = torch.from_numpy(layout["far"])
    # w = 0 is α = ∞ (the value) and, for the slope df/dw = −α²·f'(α), α = 1e12 (its limit to 1e-12)
    alpha = torch.where(w > 0, 1 / w.clamp(min=1e-300), torch.full_like(w, 1e12))
    values, slopes = integrate_log_partition(alpha)
    values[w == 0] = integrate_log_partition(torch.tensor([math.inf], dtype=torch.float64))[0]
    table.update({"far_knots": w, "far_values": values, "far_slopes": -alpha * alpha * slopes})
    return table


def write_partition_table(path: Path = TABLE_PATH) -> None:
    """Compute the table and write it atomically (temporary name, then rename)."""
    table = compute_partition_table()
    tmp = path.with_name(path.name + ".tmp")
    save_file(table, str(tmp), metadata={"settings": json.dumps(_SETTINGS, sort_keys=True)})
    tmp.chmod(0o644)
    os.replace(tmp, path)


def load_partition_table(path: Path = TABLE_PATH) -> dict[str, torch.Tensor] | None:
    """The table stored at `path`, or None if it is missing, unreadable or made with other settings."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            settings = json.loads((f.metadata() or {}).get("settings", "null"))
    except (OSError, ValueError):
        return None
    if settings != _SETTINGS:
        return None
    return load_file(str(path))


@functools.lru_cache(maxsize=1)
def partition_table() -> dict[str, torch.Tensor]:
    """The table (float64, CPU), loaded once per process (computed if the shipped file is stale)."""
    return load_partition_table(TABLE_PATH) or compute_partition_table()


@functools.lru_cache(maxsize=4)
def _table_on(device: torch.device) -> dict[str, torch.Tensor]:
    """The partition table on `device`, copied there once (not at every call)."""
    return {k: v.to(device) for k, v in partition_table().items()}


def _hermite(at: torch.Tensor, knots: torch.Tensor, values: torch.Tensor, slopes: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Cubic Hermite interpolation through (knots, values, slopes): (value, slope) at `at`."""
    i = (torch.searchsorted(knots, at.clamp(knots[0], knots[-1]), right=True) - 1).clamp(0, knots.numel() - 2)
    k0 = knots[i]
    h = knots[i + 1] - k0
    t = (at - k0) / h
    t2 = t * t
    v0, v1, s0, s1 = values[i], values[i + 1], slopes[i] * h, slopes[i + 1] * h
    value = ((2 * t2 * t - 3 * t2 + 1) * v0 + (t2 * t - 2 * t2 + t) * s0
             + (3 * t2 - 2 * t2 * t) * v1 + (t2 * t - t2) * s1)
    slope = ((6 * t2 - 6 * t) * (v0 - v1) + (3 * t2 - 4 * t + 1) * s0 + (3 * t2 - 2 * t) * s1) / h
    return value, slope


def log_partition_and_slope(alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """log Z(α) and d log Z/dα for α ≥ 0 (float64 tensors on α's device; no autograd)."""
    tab = _table_on(alpha.device)
    a = alpha.detach().to(torch.float64)
    delta = a - 2
    low, low_s = _hermite(a, tab["low_knots"], tab["low_values"], tab["low_slopes"])
    high, high_s = _hermite(a, tab["high_knots"], tab["high_values"], tab["high_slopes"])
    g, _ = _hermite(delta, tab["near_knots"], tab["near_values"], tab["near_slopes"])
    s, _ = singular_part(delta.clamp(-_NEAR_TWO, _NEAR_TWO))
    # the slope at α = 2 (−∞) is the slope at 2 − ALPHA_GRAD_GAP, where ∂ρ/∂α is evaluated too
    slope_at = torch.where(delta == 0, torch.full_like(delta, -ALPHA_GRAD_GAP), delta)
    _, g_s = _hermite(slope_at, tab["near_knots"], tab["near_values"], tab["near_slopes"])
    _, s_s = singular_part(slope_at.clamp(-_NEAR_TWO, _NEAR_TWO))
    near, near_s = LOG_Z_TWO + s + g, s_s + g_s
    w = 1 / a.clamp(min=1 / _W_LAST)  # ∞ → 0
    far, far_w = _hermite(w, tab["far_knots"], tab["far_values"], tab["far_slopes"])
    far_s = -far_w * w * w  # d/dα = d/dw · (−1/α²)
    is_low, is_high, is_far = delta < -_NEAR_TWO, (delta > _NEAR_TWO) & (a < 1 / _W_LAST), a >= 1 / _W_LAST
    value = torch.where(is_low, low, torch.where(is_high, high, torch.where(is_far, far, near)))
    slope = torch.where(is_low, low_s, torch.where(is_high, high_s, torch.where(is_far, far_s, near_s)))
    nan = torch.isnan(a)
    return torch.where(nan, a, value), torch.where(nan, a, slope)


class _LogPartition(torch.autograd.Function):
    """log Z(α) with its tabulated slope as the gradient (double backward is not supported)."""

    @staticmethod
    def forward(ctx, alpha: torch.Tensor) -> torch.Tensor:
        value, slope = log_partition_and_slope(alpha)
        ctx.save_for_backward(slope)
        ctx.dtype = alpha.dtype
        return value.to(alpha.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor) -> torch.Tensor:
        (slope,) = ctx.saved_tensors
        return (grad_out.to(torch.float64) * slope).to(ctx.dtype)


def log_partition(alpha: torch.Tensor | float) -> torch.Tensor:
    """log Z(α) for α ≥ 0 or α = +∞, elementwise, in α's dtype; differentiable in α (d log Z/dα from
    the same table). Within 1e-9 of the integral in float64 (1e-7 in float32, its rounding).
    Raises ValueError for α < 0, where Z is infinite."""
    alpha = torch.as_tensor(alpha)
    if not alpha.is_floating_point():
        alpha = alpha.to(torch.get_default_dtype())
    if alpha.device.type == "cpu" and bool((alpha < 0).any()):
        raise ValueError(
            "log Z(α) is infinite for α < 0: the general distribution exists only for α ≥ 0. "
            "Use rho() for α < 0, or constrain α to [0, ∞) (AdaptiveLoss does)."
        )
    return _LogPartition.apply(alpha)
