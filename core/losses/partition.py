"""log Z(α), the log partition function of the general distribution p(x | α, c) ∝ exp(−ρ(x, α, c)).

    Z(α) = ∫ exp(−ρ(x, α, 1)) dx,   finite for α ≥ 0 (and α = +∞); Z(0) = π√2, Z(2) = √(2π).

Computed here, once per process, by our own quadrature in float64 and tabulated:

* Quadrature. With x = e^v the integral 2∫₀^∞ f(x) dx becomes 2∫ f(e^v)·e^v dv over the real line, where
  the integrand is analytic in a strip |Im v| < π/2 and decays exponentially at both ends (even the
  Cauchy tail 2/x² becomes 2e^{−v}). The trapezoidal rule on such an integrand converges geometrically
  (error ~ exp(−π²/h)); h = 0.05 on v ∈ [−40, 40] is exact to float64 rounding (h = 0.1 already errs by 1e-8 at α = ∞,
  whose integrand grows double-exponentially off the real line).
* Table. log Z and its derivative d log Z/dα = −E_p[∂ρ/∂α] are tabulated on knots geometric in
  |α−2| (Z changes fastest at α = 2, where d log Z/dα has a logarithmic singularity) from 1e-7 to
  1e6, and interpolated by cubic Hermite splines, which stay differentiable in α for the adaptive loss.
  Between the last knot and α = ∞ the value is interpolated linearly in 1/α.

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

import torch
from safetensors.torch import load_file, save_file

from core.losses.general import _drho_dalpha, _rho_unscaled

_QUAD_STEP = 0.05
_QUAD_SPAN = 40.0
_KNOT_RATIO = 1.05
_NEAR_TWO = 1e-7
_FAR = 1e6
TABLE_PATH = Path(__file__).with_name("log_partition_table.safetensors")
_SETTINGS = {"quad_step": _QUAD_STEP, "quad_span": _QUAD_SPAN, "knot_ratio": _KNOT_RATIO,
             "near_two": _NEAR_TWO, "far": _FAR, "version": 1}


def _quadrature_nodes() -> tuple[torch.Tensor, torch.Tensor]:
    """Nodes x = e^v and weights 2·h·e^v of the trapezoidal rule for 2∫₀^∞ f(x) dx."""
    v = torch.arange(-_QUAD_SPAN, _QUAD_SPAN + _QUAD_STEP / 2, _QUAD_STEP, dtype=torch.float64)
    x = torch.exp(v)
    return x, 2 * _QUAD_STEP * x


def _integrate(alphas: torch.Tensor, chunk: int = 64) -> tuple[torch.Tensor, torch.Tensor]:
    """log Z(α) and d log Z/dα for each α (float64), by the trapezoidal rule in v = log x."""
    x, w = _quadrature_nodes()
    log_z, dlog_z = [], []
    one = torch.ones((), dtype=torch.float64)
    for part in alphas.split(chunk):
        a = part[:, None]
        density = torch.exp(-_rho_unscaled(x[None, :], a, one)) * w
        z = density.sum(dim=1)
        drho = _drho_dalpha(x[None, :], a.expand(-1, x.numel()), one)
        log_z.append(torch.log(z))
        # far in the tails exp(−ρ) underflows to 0 where ∂ρ/∂α overflows: those nodes contribute nothing
        weighted = torch.where(density > 0, density * drho, torch.zeros_like(density))
        dlog_z.append(-weighted.sum(dim=1) / z)
    return torch.cat(log_z), torch.cat(dlog_z)


def _knots() -> torch.Tensor:
    """α knots: 0, then 2 ∓ d for d geometric from 2 (resp. 1e-7) towards 1e-7 (resp. 1e6)."""
    below = 2 * _KNOT_RATIO ** -torch.arange(0, math.ceil(math.log(2 / _NEAR_TWO, _KNOT_RATIO)) + 1)
    below = below[below >= _NEAR_TWO]
    above = _NEAR_TWO * _KNOT_RATIO ** torch.arange(0, math.ceil(math.log(_FAR / _NEAR_TWO, _KNOT_RATIO)) + 1)
    knots = torch.cat([2 - below.double(), 2 + above.double()])
    return torch.unique(knots)


def compute_partition_table() -> dict[str, torch.Tensor]:
    """Knots, log Z and d log Z/dα at the knots, and log Z(∞), by quadrature (float64, CPU)."""
    knots = _knots()
    log_z, dlog_z = _integrate(knots)
    log_z_inf, _ = _integrate(torch.tensor([math.inf], dtype=torch.float64))
    return {"knots": knots, "log_z": log_z, "dlog_z": dlog_z, "log_z_inf": log_z_inf}


def write_partition_table(path: Path = TABLE_PATH) -> None:
    """Compute the table and write it atomically (temporary name, then rename)."""
    table = compute_partition_table()
    tmp = path.with_name(path.name + ".tmp")
    save_file(table, str(tmp), metadata={"settings": json.dumps(_SETTINGS, sort_keys=True)})
    tmp.chmod(0o644)
    os.replace(tmp, path)


def _load_table(path: Path) -> dict[str, torch.Tensor] | None:
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
def partition_table() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(knots, log Z at knots, d log Z/dα at knots, log Z(∞)), float64 on the CPU, loaded once."""
    table = _load_table(TABLE_PATH) or compute_partition_table()
    return table["knots"], table["log_z"], table["dlog_z"], float(table["log_z_inf"])


@functools.lru_cache(maxsize=4)
def _table_on(device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """The partition table on `device`, copied there once (not at every call)."""
    knots, values, slopes, log_z_inf = partition_table()
    return knots.to(device), values.to(device), slopes.to(device), log_z_inf


def _hermite(alpha: torch.Tensor, knots: torch.Tensor, values: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
    """Cubic Hermite interpolation through (knots, values) with the given slopes; differentiable in α."""
    i = torch.searchsorted(knots, alpha.detach().clamp(knots[0], knots[-1]), right=True) - 1
    i = i.clamp(0, knots.numel() - 2)
    k0, k1 = knots[i], knots[i + 1]
    h = k1 - k0
    t = (alpha - k0) / h
    t2, t3 = t * t, t * t * t
    return (
        (2 * t3 - 3 * t2 + 1) * values[i]
        + (t3 - 2 * t2 + t) * h * slopes[i]
        + (-2 * t3 + 3 * t2) * values[i + 1]
        + (t3 - t2) * h * slopes[i + 1]
    )


def log_partition(alpha: torch.Tensor | float) -> torch.Tensor:
    """log Z(α) for α ≥ 0 or α = +∞, elementwise; differentiable in α. Raises ValueError for α < 0."""
    alpha = torch.as_tensor(alpha)
    if not alpha.is_floating_point():
        alpha = alpha.to(torch.get_default_dtype())
    if alpha.device.type == "cpu" and not bool((alpha >= 0).all()):
        raise ValueError(
            "log Z(α) is infinite for α < 0: the general distribution exists only for α ≥ 0. "
            "Use rho() for α < 0, or constrain α to [0, ∞) (AdaptiveLoss does)."
        )
    knots, values, slopes, log_z_inf = _table_on(alpha.device)
    a = alpha.double()
    finite = torch.isfinite(a)
    a_in = torch.where(finite & (a <= knots[-1]), a, knots[-1])
    inside = _hermite(a_in, knots, values, slopes)
    # Beyond the last knot: linear in 1/α from log Z(knots[-1]) to log Z(∞).
    far_knot = knots[-1]
    inv = torch.where(finite & (a > far_knot), 1 / a.clamp(min=1.0), torch.zeros_like(a))
    far = log_z_inf + (values[-1] - log_z_inf) * inv * far_knot
    out = torch.where(finite & (a <= far_knot), inside, far)
    return out.to(alpha.dtype)
