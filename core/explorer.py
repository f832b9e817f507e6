"""The numbers behind the Loss Explorer page; no Streamlit, no plotly (a view draws what this returns).

Every value comes from `core.losses`. For a shape α and scale c > 0 (Barron, CVPR 2019):

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1)      the loss (limits at α = 0, 2, ±∞)
    ψ(x, α, c) = ∂ρ/∂x = x/c² · ((x/c)²/|α−2| + 1)^{α/2 − 1}    its derivative (the "influence")
    w(x, α, c) = ψ/x                                            the IRLS weight
    −log p(x | α, c) = ρ(x, α, c) + log c + log Z(α)            the adaptive loss (α ≥ 0 only)
    p(x | α, c) = exp(−ρ(x, α, c)) / (c·Z(α))                  its density

This module tabulates those on grids (`curve_tables`, `reference_tables`, `nll_curves`), names the
members of the family with their formulas (`NAMED_CASES`, `formula_rows`), and runs the page's small
1-D demo: data with outliers (`make_data`) fitted by `core.losses.AdaptiveLoss` (`fit_adaptive`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from core.losses import AdaptiveLoss, log_partition, nll, psi, rho, sample, weight

NEG_INF = float("-inf")
POS_INF = float("inf")

# The α slider: every tenth in [−10, 10] with −∞ and +∞ at its ends, so one control reaches every case.
ALPHA_STEP = 0.1
ALPHA_OPTIONS: tuple[float, ...] = (NEG_INF, *(round(k * ALPHA_STEP, 1) for k in range(-100, 101)), POS_INF)

# Points per curve: enough for the sharpest curve on screen (Welsch at a small c), few enough to redraw fast.
GRID_POINTS = 401

# α values on the trade-off chart: the range the adaptive loss usually learns in ([0, 3] by default).
TRADEOFF_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

# How far out (in units of c) the trade-off table prices an "outlier".
OUTLIER_AT = 6.0


@dataclass(frozen=True)
class NamedCase:
    """A member of the family with a name, its α, and ρ written out for that α."""

    key: str
    name: str
    alpha: float
    rho_latex: str


# The named members drawn as reference curves and offered as presets (paper's first figure).
NAMED_CASES: tuple[NamedCase, ...] = (
    NamedCase("welsch", "Welsch", NEG_INF, r"1 - \exp\!\left(-\tfrac{1}{2}(x/c)^2\right)"),
    NamedCase("geman_mcclure", "Geman-McClure", -2.0, r"\frac{2\,(x/c)^2}{(x/c)^2 + 4}"),
    NamedCase("cauchy", "Cauchy", 0.0, r"\log\!\left(\tfrac{1}{2}(x/c)^2 + 1\right)"),
    NamedCase("charbonnier", "Charbonnier", 1.0, r"\sqrt{(x/c)^2 + 1} - 1"),
    NamedCase("l2", "L2", 2.0, r"\tfrac{1}{2}(x/c)^2"),
)
# The +∞ limit has a closed form but no name in the paper; it is a formula, not a preset.
PLUS_INF_CASE = NamedCase("plus_inf", "+∞ limit", POS_INF, r"\exp\!\left(\tfrac{1}{2}(x/c)^2\right) - 1")
CASES_BY_KEY: dict[str, NamedCase] = {case.key: case for case in (*NAMED_CASES, PLUS_INF_CASE)}

GENERAL_RHO_LATEX = (
    r"\rho(x,\alpha,c) = \frac{|\alpha-2|}{\alpha}"
    r"\left(\left(\frac{(x/c)^2}{|\alpha-2|} + 1\right)^{\alpha/2} - 1\right)"
)
PSI_LATEX = (
    r"\psi(x,\alpha,c) = \frac{\partial\rho}{\partial x} = \frac{x}{c^2}"
    r"\left(\frac{(x/c)^2}{|\alpha-2|} + 1\right)^{\alpha/2 - 1}"
)
WEIGHT_LATEX = r"w(x,\alpha,c) = \frac{\psi(x,\alpha,c)}{x} \quad\text{(the IRLS weight)}"
NLL_LATEX = r"-\log p(x\mid\alpha,c) = \rho(x,\alpha,c) + \log c + \log Z(\alpha)"
PARTITION_LATEX = r"Z(\alpha) = \int_{-\infty}^{\infty} e^{-\rho(x,\alpha,1)}\,dx"


def alpha_label(alpha: float) -> str:
    """α as a person reads it: '−∞', '+∞', or the number with at most two decimals ('1.5', '0')."""
    if alpha == NEG_INF:
        return "−∞"
    if alpha == POS_INF:
        return "+∞"
    text = f"{alpha:.2f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text.replace("-", "−")


def alpha_latex(alpha: float) -> str:
    """α for st.latex: '-\\infty', '+\\infty', '-2', '1.5'."""
    return alpha_label(alpha).replace("−", "-").replace("∞", r"\infty")


def case_for(alpha: float) -> NamedCase | None:
    """The named case (or the +∞ limit) whose α is exactly `alpha`, else None."""
    for case in CASES_BY_KEY.values():
        if case.alpha == alpha:
            return case
    return None


def check_alpha_scale(alpha: float, scale: float) -> None:
    """Raise ValueError naming the fix when α is NaN or c is not a positive finite number."""
    if math.isnan(alpha):
        raise ValueError("alpha is NaN: pick a real number or ±inf.")
    if not (math.isfinite(scale) and scale > 0):
        raise ValueError(f"scale c must be a positive finite number, got {scale!r}: pick c > 0.")


def rho_limit(alpha: float) -> float:
    """lim_{|x|→∞} ρ(x, α, c): (2 − α)/(−α) for α < 0 (1 at α = −∞), +∞ otherwise. Independent of c."""
    if alpha == NEG_INF:
        return 1.0
    if alpha < 0:
        return (2.0 - alpha) / -alpha
    return POS_INF


def describe(alpha: float) -> str:
    """One sentence on how a loss with this α treats outliers (what the curves will show)."""
    if alpha == POS_INF:
        return "Grows like exp(x²/2): outliers dominate everything; the opposite of robust."
    if alpha > 2:
        return "Steeper than quadratic: outliers weigh more than under L2."
    if alpha == 2:
        return "Quadratic: the weight is constant, so every point pulls in proportion to its residual."
    if alpha > 1:
        return "Between Charbonnier and L2: quadratic near zero, growing like |x|^α far out."
    if alpha == 1:
        return "Quadratic near zero, linear far out (a smooth L1): bounded influence."
    if alpha > 0:
        return "Sub-linear far out: influence ψ falls back toward zero for large residuals."
    if alpha == 0:
        return "Logarithmic: influence decays like 1/x; the most robust α with a proper density."
    if alpha == NEG_INF:
        return "Bounded by 1: far outliers cost a constant and have no influence at all."
    return (
        f"Bounded by {alpha_label(rho_limit(alpha))}: redescending, far outliers stop pulling; "
        "no density (Z(α) is infinite for α < 0)."
    )


def _finite_or_nan(values: torch.Tensor) -> np.ndarray:
    """A float32 array (what core.losses computes in) with overflow replaced by NaN, which a chart draws
    as a gap: ±inf, and the float32 maximum core.losses saturates to (e.g. exp(x²/2) at α = +∞)."""
    array = values.detach().to(torch.float32).cpu().numpy()
    return np.where(np.abs(array) < np.finfo(np.float32).max, array, np.float32(np.nan))


def x_grid(half_width: float, points: int = GRID_POINTS) -> np.ndarray:
    """Evenly spaced x on [−half_width, half_width]; odd `points` so that x = 0 is on the grid."""
    if not (math.isfinite(half_width) and half_width > 0):
        raise ValueError(f"half_width must be a positive finite number, got {half_width!r}.")
    if points < 3 or points % 2 == 0:
        raise ValueError(f"points must be an odd number ≥ 3 (so x = 0 is on the grid), got {points}.")
    return np.linspace(-half_width, half_width, points)


@dataclass(frozen=True)
class CurveTable:
    """ρ, ψ and the weight on a grid of x for one (α, c); NLL and density only where α ≥ 0. Float32."""

    alpha: float
    scale: float
    x: np.ndarray
    rho: np.ndarray
    psi: np.ndarray
    weight: np.ndarray
    nll: np.ndarray | None
    density: np.ndarray | None
    log_z: float | None

    @property
    def has_density(self) -> bool:
        return self.nll is not None


def curve_tables(
    alphas: list[float] | tuple[float, ...], scale: float, half_width: float, points: int = GRID_POINTS
) -> list[CurveTable]:
    """ρ, ψ, ψ/x and (α ≥ 0) −log p and p on `points` x in [−half_width, half_width], for each α.

    All α go through core.losses in one broadcast call per quantity (α as a column against x as a row):
    the same numbers as one call per α, at the cost of one.
    """
    for alpha in alphas:
        check_alpha_scale(alpha, scale)
    x = x_grid(half_width, points)
    xt = torch.from_numpy(x).to(torch.float32)[None, :]
    at = torch.tensor(list(alphas), dtype=torch.float32)[:, None]
    with torch.no_grad():
        rho_v = _finite_or_nan(rho(xt, at, scale))
        psi_v = _finite_or_nan(psi(xt, at, scale))
        weight_v = _finite_or_nan(weight(xt, at, scale))
        # The likelihood exists only for α ≥ 0; core.losses refuses the rest, so ask only for those.
        has_density = [i for i, alpha in enumerate(alphas) if alpha >= 0]
        nll_rows: dict[int, np.ndarray] = {}
        log_z_rows: dict[int, float] = {}
        if has_density:
            nll_t = nll(xt, at[has_density], scale)
            log_z_t = log_partition(torch.tensor([alphas[i] for i in has_density], dtype=torch.float64))
            for row, i in enumerate(has_density):
                nll_rows[i] = _finite_or_nan(nll_t[row])
                log_z_rows[i] = float(log_z_t[row])
    x32 = x.astype(np.float32)
    tables = []
    for i, alpha in enumerate(alphas):
        nll_i = nll_rows.get(i)
        density_i = None if nll_i is None else np.nan_to_num(np.exp(-nll_i), nan=0.0)
        tables.append(
            CurveTable(alpha, scale, x32, rho_v[i], psi_v[i], weight_v[i], nll_i, density_i, log_z_rows.get(i))
        )
    return tables


def curve_table(alpha: float, scale: float, half_width: float, points: int = GRID_POINTS) -> CurveTable:
    """`curve_tables` for one α."""
    return curve_tables([alpha], scale, half_width, points)[0]


def reference_tables(scale: float, half_width: float, points: int = GRID_POINTS) -> dict[str, CurveTable]:
    """The named cases' curves at this c and x range, keyed by `NamedCase.key` (the faint curves)."""
    tables = curve_tables([case.alpha for case in NAMED_CASES], scale, half_width, points)
    return {case.key: table for case, table in zip(NAMED_CASES, tables, strict=True)}


def nll_curves(
    alphas: tuple[float, ...], scale: float, half_width: float, points: int = GRID_POINTS
) -> tuple[np.ndarray, np.ndarray]:
    """x and −log p(x | α, c), one row per α ≥ 0: the trade-off chart (lower α pays more near x = 0
    and less far out). Raises ValueError for α < 0, which has no likelihood."""
    if any(not alpha >= 0 for alpha in alphas):
        raise ValueError(f"the trade-off needs α ≥ 0 (a density), got {alphas}.")
    check_alpha_scale(0.0, scale)
    x = x_grid(half_width, points)
    with torch.no_grad():
        values = nll(torch.from_numpy(x).to(torch.float32)[None, :],
                     torch.tensor(alphas, dtype=torch.float32)[:, None], scale)
    return x.astype(np.float32), _finite_or_nan(values)


@dataclass(frozen=True)
class TradeoffRow:
    """What one α charges an inlier (x = 0) and an outlier (x = OUTLIER_AT·c) under the NLL."""

    alpha: float
    inlier_cost: float
    outlier_cost: float


def tradeoff_costs(scale: float, alphas: tuple[float, ...] = TRADEOFF_ALPHAS) -> list[TradeoffRow]:
    """−log p(0 | α, c) = log c + log Z(α) and −log p(OUTLIER_AT·c | α, c) for each α."""
    check_alpha_scale(0.0, scale)
    points = torch.tensor([[0.0, OUTLIER_AT * scale]], dtype=torch.float32)
    with torch.no_grad():
        costs = nll(points, torch.tensor(alphas, dtype=torch.float32)[:, None], scale).to(torch.float64)
    return [TradeoffRow(a, float(row[0]), float(row[1])) for a, row in zip(alphas, costs, strict=True)]


def display_range(arrays: list[np.ndarray | None], pad: float = 0.05) -> tuple[float, float] | None:
    """A y-axis range that fits the finite values of these curves, padded by `pad` of the span.

    The page fits its axes to the named cases so that α = 10 or +∞ runs off the chart instead of
    flattening every other curve to a line at zero. None when there is no finite value.
    """
    present = [a.reshape(-1) for a in arrays if a is not None]
    values = np.concatenate(present) if present else np.array([])
    values = values[np.isfinite(values)]
    if values.size == 0:
        return None
    lo, hi = float(values.min()), float(values.max())
    span = hi - lo if hi > lo else max(abs(hi), 1.0)
    return lo - pad * span, hi + pad * span


@dataclass(frozen=True)
class FormulaRow:
    """One formula for the page, `active` when it is the case that applies to the chosen α."""

    key: str
    name: str
    name_latex: str
    latex: str
    active: bool


def formula_rows(alpha: float) -> list[FormulaRow]:
    """ρ in general and for each named case (and +∞), with the one that applies to α marked active."""
    match = case_for(alpha)
    rows = [FormulaRow("general", "general", r"\textsf{general}", GENERAL_RHO_LATEX, match is None)]
    for case in (*NAMED_CASES, PLUS_INF_CASE):
        name_latex = r"\alpha \to +\infty" if case is PLUS_INF_CASE else rf"\textsf{{{case.name}}}"
        latex = rf"\rho(x,{alpha_latex(case.alpha)},c) = {case.rho_latex}"
        rows.append(FormulaRow(case.key, case.name, name_latex, latex, match is case))
    return rows


# ---------------------------------------------------------------------------------------------------------
# The fit demo: 1-D data, a fraction of it outliers, fitted by the adaptive loss (location, α and c).


@dataclass(frozen=True)
class FitSettings:
    """How the demo's data are drawn: inliers from p(x | inlier_alpha, inlier_scale) around 0, outliers
    uniform on [−outlier_width, outlier_width]·inlier_scale (or [0, outlier_width]·inlier_scale one-sided)."""

    n: int = 2000
    outlier_fraction: float = 0.2
    inlier_alpha: float = 2.0
    inlier_scale: float = 1.0
    outlier_width: float = 20.0
    one_sided: bool = False
    seed: int = 0

    def check(self) -> None:
        """Raise ValueError naming the fix for settings that cannot make data."""
        if not 10 <= self.n <= 1_000_000:
            raise ValueError(f"n must be between 10 and 1,000,000 points, got {self.n}.")
        if not 0.0 <= self.outlier_fraction < 1.0:
            raise ValueError(f"outlier_fraction must be in [0, 1), got {self.outlier_fraction}.")
        if not (self.inlier_alpha >= 0 and not math.isnan(self.inlier_alpha)):
            raise ValueError(f"inlier_alpha must be ≥ 0 (a density exists), got {self.inlier_alpha}.")
        if not (math.isfinite(self.inlier_scale) and self.inlier_scale > 0):
            raise ValueError(f"inlier_scale must be positive, got {self.inlier_scale}.")
        if not (math.isfinite(self.outlier_width) and self.outlier_width > 0):
            raise ValueError(f"outlier_width must be positive, got {self.outlier_width}.")


@dataclass(frozen=True)
class FitData:
    """The demo's points and which of them were drawn as outliers."""

    x: np.ndarray
    is_outlier: np.ndarray


def make_data(settings: FitSettings) -> FitData:
    """Draw the demo data: (1 − f)·n inliers from `core.losses.sample`, f·n uniform outliers; seeded."""
    settings.check()
    generator = torch.Generator().manual_seed(settings.seed)
    n_out = round(settings.outlier_fraction * settings.n)
    n_in = settings.n - n_out
    inliers = sample(settings.inlier_alpha, settings.inlier_scale, (n_in,), generator=generator)
    lo = 0.0 if settings.one_sided else -settings.outlier_width
    u = torch.rand(n_out, generator=generator, dtype=torch.float64)
    outliers = (lo + (settings.outlier_width - lo) * u) * settings.inlier_scale
    x = np.concatenate([inliers.detach().to(torch.float64).reshape(-1).numpy(), outliers.numpy()])
    is_outlier = np.concatenate([np.zeros(n_in, dtype=bool), np.ones(n_out, dtype=bool)])
    return FitData(x=x, is_outlier=is_outlier)


@dataclass(frozen=True)
class FitResult:
    """The adaptive loss's fit (loc, α, c) next to the Gaussian fit (mean, std) and the median."""

    alpha: float
    scale: float
    loc: float
    mean_nll: float
    steps: int  # objective evaluations
    seconds: float
    history: np.ndarray = field(repr=False)
    mean: float
    std: float
    median: float


def robust_scale(x: np.ndarray) -> float:
    """1.4826·median|x − median(x)| (the Gaussian-consistent MAD), falling back to the std, then to 1."""
    mad = 1.4826 * float(np.median(np.abs(x - np.median(x))))
    if mad > 0 and math.isfinite(mad):
        return mad
    std = float(np.std(x))
    return std if std > 0 and math.isfinite(std) else 1.0


def fit_adaptive(x: np.ndarray, max_evals: int = 200, alpha_lo: float = 0.0, alpha_hi: float = 3.0) -> FitResult:
    """Fit μ, α and c to 1-D data by minimising the mean of −log p(x − μ | α, c) (AdaptiveLoss).

    The NLL, not ρ, is minimised: with ρ alone a learnable c runs off to infinity. Three parameters and
    a smooth objective suit quasi-Newton: SciPy's L-BFGS-B on the AdaptiveLoss parameters and μ, with
    gradients from autograd, settles in 10 to 60 evaluations (a fraction of a second for 10,000 points),
    at a lower NLL than 300 Adam steps reach. SciPy rather than torch.optim because the first torch
    optimiser in a process imports torch._dynamo (2 to 10 s here), which the page's first view would pay.
    It starts from the median and the MAD, with α where `AdaptiveLoss` puts it.
    """
    from scipy.optimize import minimize

    if max_evals < 1:
        raise ValueError(f"max_evals must be ≥ 1, got {max_evals}.")
    data = np.asarray(x, dtype=np.float64).reshape(-1)
    if data.size < 2 or not np.all(np.isfinite(data)):
        raise ValueError("fit_adaptive needs at least two finite data points.")
    start = time.perf_counter()
    center = float(np.median(data))
    spread = robust_scale(data)
    # Fit in standardised units (x − median)/MAD so the optimiser sees the same problem at any data scale.
    z = torch.from_numpy((data - center) / spread).to(torch.float32).reshape(-1, 1)
    loss_fn = AdaptiveLoss(1, alpha_lo=alpha_lo, alpha_hi=alpha_hi, scale_init=1.0)
    loc = torch.nn.Parameter(torch.zeros(1))
    params = [*loss_fn.parameters(), loc]
    sizes = [p.numel() for p in params]
    history: list[float] = []

    def objective(theta: np.ndarray) -> tuple[float, np.ndarray]:
        with torch.no_grad():
            for p, chunk in zip(params, np.split(theta, np.cumsum(sizes)[:-1]), strict=True):
                p.copy_(torch.from_numpy(chunk).reshape(p.shape))
                p.grad = None
        loss = loss_fn(z - loc).mean()
        loss.backward()
        history.append(float(loss.detach()))
        grad = torch.cat([p.grad.reshape(-1) for p in params]).to(torch.float64).numpy()
        return history[-1], grad

    theta0 = torch.cat([p.detach().reshape(-1) for p in params]).to(torch.float64).numpy()
    minimize(objective, theta0, jac=True, method="L-BFGS-B", options={"maxfun": max_evals, "maxiter": max_evals})
    with torch.no_grad():
        alpha = float(loss_fn.alpha().reshape(-1)[0])
        scale = float(loss_fn.scale().reshape(-1)[0]) * spread
        loc_v = center + float(loc[0]) * spread
        # Back in data units: −log p(x | μ, α, c) = −log p(z | ·) + log(MAD).
        mean_nll = float(loss_fn(z - loc).mean()) + math.log(spread)
    if not all(math.isfinite(v) for v in (alpha, scale, loc_v, mean_nll)):
        raise RuntimeError(f"the fit diverged (α={alpha}, c={scale}, μ={loc_v}); try other data settings.")
    return FitResult(
        alpha=alpha,
        scale=scale,
        loc=loc_v,
        mean_nll=mean_nll,
        steps=len(history),
        seconds=time.perf_counter() - start,
        history=np.asarray(history) + math.log(spread),
        mean=float(np.mean(data)),
        std=float(np.std(data)),
        median=center,
    )


@dataclass(frozen=True)
class FitCurves:
    """What the fit chart draws: a histogram (inliers and outliers stacked, as densities) and two fits."""

    bin_centers: np.ndarray
    bin_width: float
    inlier_density: np.ndarray
    outlier_density: np.ndarray
    x: np.ndarray
    fitted_density: np.ndarray
    gaussian_density: np.ndarray


def fit_curves(data: FitData, result: FitResult, bins: int = 100, points: int = GRID_POINTS) -> FitCurves:
    """Histogram of the data as a density (stacked by kind, summing to the total), the adaptive fit's
    p(x − μ | α, c), and the Gaussian fit (α = 2, c = std, centred on the mean) over the data's range."""
    lo, hi = float(data.x.min()), float(data.x.max())
    if hi <= lo:
        lo, hi = lo - 1.0, hi + 1.0
    edges = np.linspace(lo, hi, bins + 1)
    width = float(edges[1] - edges[0])
    norm = data.x.size * width
    inlier_counts, _ = np.histogram(data.x[~data.is_outlier], bins=edges)
    outlier_counts, _ = np.histogram(data.x[data.is_outlier], bins=edges)
    grid = np.linspace(lo, hi, points)
    with torch.no_grad():
        fitted = torch.exp(-nll(torch.from_numpy(grid - result.loc).float(), result.alpha, result.scale))
        gaussian = torch.exp(-nll(torch.from_numpy(grid - result.mean).float(), 2.0, max(result.std, 1e-12)))
    return FitCurves(
        bin_centers=(edges[:-1] + edges[1:]) / 2,
        bin_width=width,
        inlier_density=inlier_counts / norm,
        outlier_density=outlier_counts / norm,
        x=grid,
        fitted_density=_finite_or_nan(fitted),
        gaussian_density=_finite_or_nan(gaussian),
    )
