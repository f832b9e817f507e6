"""The numbers behind the Loss Explorer page; no Streamlit, no plotly (a view draws what this returns).

Every value comes from `core.losses`. For a shape α and scale c > 0 (Barron, CVPR 2019):

    ρ(x, α, c) = |α−2|/α · (((x/c)²/|α−2| + 1)^{α/2} − 1)      the loss (limits at α = 0, 2, ±∞)
    ψ(x, α, c) = ∂ρ/∂x = x/c² · ((x/c)²/|α−2| + 1)^{α/2 − 1}    its derivative (the "influence")
    w(x, α, c) = ψ/x                                            the IRLS weight
    −log p(x | α, c) = ρ(x, α, c) + log c + log Z(α)            the adaptive loss (α ≥ 0 only)
    p(x | α, c) = exp(−ρ(x, α, c)) / (c·Z(α))                  its density

The six curves are drawn in the browser while a slider moves (pages/components/loss_explorer computes ρ, ψ
and ψ/x with the same cancellation-free forms as core.losses), so this module hands the browser what it
cannot compute itself: log Z(α) as a table (`log_partition_table`, refined until its interpolation
errs by less than LOG_Z_TOLERANCE), the Student's t normalisers, the slider stops and the sentences
(`browser_tables`). It also holds the explorer's state as the server keeps it (`ExplorerState`, updated
from the browser by `apply_browser_value`), the formulas, the trade-off table, and the page's small
1-D demo: data with outliers (`make_data`) fitted by `core.losses.AdaptiveLoss` (`fit_adaptive`).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from core.losses import AdaptiveLoss, log_partition, nll, sample, students_t_nll

NEG_INF = float("-inf")
POS_INF = float("inf")

# The α slider: every tenth in [−10, 10] with −∞ and +∞ at its ends, so one control reaches every case.
ALPHA_STEP = 0.1
ALPHA_OPTIONS: tuple[float, ...] = (NEG_INF, *(round(k * ALPHA_STEP, 1) for k in range(-100, 101)), POS_INF)
ALPHA_MAX_FINITE = 10.0

# The c slider: about 22 stops a decade from 0.01 to 100, round numbers a reader can type. A fitted c
# between stops is kept exactly (the slider sits at the nearest stop).
_SCALE_MANTISSAS = (1, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.8, 2, 2.2, 2.5, 2.8, 3, 3.5, 4, 4.5, 5, 5.5, 6, 7, 8, 9)
SCALE_OPTIONS: tuple[float, ...] = (
    *(round(m * 10.0**e, 4) for e in range(-2, 2) for m in _SCALE_MANTISSAS), 100.0,
)
SCALE_MIN, SCALE_MAX = SCALE_OPTIONS[0], SCALE_OPTIONS[-1]

# The x range (±half width): fine steps where the curves' shape changes, coarse far out.
HALF_WIDTH_OPTIONS: tuple[float, ...] = (
    1.0, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 10.0, 12.0, 15.0, 20.0, 25.0, 30.0, 40.0, 50.0, 60.0,
    80.0, 100.0,
)

# Degrees of freedom offered for the Student's t overlay.
NU_OPTIONS: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0, 10.0, 15.0, 20.0, 30.0, 50.0, 100.0)

# Points per curve: enough for the sharpest curve on screen (Welsch at a small c), few enough to redraw fast.
GRID_POINTS = 401

# α values on the trade-off chart: the range the adaptive loss usually learns in ([0, 3] by default).
TRADEOFF_ALPHAS: tuple[float, ...] = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0)

# How far out (in units of c) the trade-off table prices an "outlier".
OUTLIER_AT = 6.0

# How far the browser's interpolation of the log Z table may stray from core.losses.log_partition.
LOG_Z_TOLERANCE = 1e-8


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
STUDENTS_T_LATEX = (
    r"-\log p_t(x\mid\nu,s) = \tfrac{\nu+1}{2}\log\!\left(1 + \tfrac{(x/s)^2}{\nu}\right) + \log s"
    r" + \tfrac{1}{2}\log(\nu\pi) + \log\Gamma(\tfrac{\nu}{2}) - \log\Gamma(\tfrac{\nu+1}{2}),"
    r"\quad s = c\sqrt{(\nu+1)/\nu}"
)


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


def number_label(value: float) -> str:
    """A positive number as the page shows c, ν and the x range: three significant digits ('20.2', '0.05')."""
    return f"{value:.3g}"


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


# How a loss with this α treats outliers, one sentence per band of α: the first rule that holds wins.
# Data, not code, so that the browser (which redraws the sentence while α is dragged) applies the same
# rules: ("eq" | "gt" | "lt", α, sentence); "{limit}" is ρ's limit as |x| → ∞, written as α is.
DESCRIPTION_RULES: tuple[tuple[str, float, str], ...] = (
    ("eq", POS_INF, "Grows like exp(x²/2): outliers dominate everything; the opposite of robust."),
    ("gt", 2.0, "Steeper than quadratic: outliers weigh more than under L2."),
    ("eq", 2.0, "Quadratic: the weight is constant, so every point pulls in proportion to its residual."),
    ("gt", 1.0, "Between Charbonnier and L2: quadratic near zero, growing like |x|^α far out."),
    ("eq", 1.0, "Quadratic near zero, linear far out (a smooth L1): bounded influence."),
    ("gt", 0.0, "Sub-linear far out: influence ψ falls back toward zero for large residuals."),
    ("eq", 0.0, "Logarithmic: influence decays like 1/x; the most robust α with a proper density."),
    ("eq", NEG_INF, "Bounded by 1: far outliers cost a constant and have no influence at all."),
    ("lt", 0.0, "Bounded by {limit}: redescending, far outliers stop pulling; no density (Z(α) is infinite "
                "for α < 0)."),
)


def describe(alpha: float) -> str:
    """One sentence on how a loss with this α treats outliers (what the curves will show)."""
    for op, bound, sentence in DESCRIPTION_RULES:
        if (op == "eq" and alpha == bound) or (op == "gt" and alpha > bound) or (op == "lt" and alpha < bound):
            return sentence.replace("{limit}", alpha_label(rho_limit(alpha)))
    raise ValueError(f"alpha is NaN: pick a real number or ±inf (got {alpha!r}).")


def alpha_to_json(alpha: float) -> float | str:
    """α for JSON, which has no infinity: ±∞ become the strings '+inf' and '-inf'."""
    if math.isinf(alpha):
        return "+inf" if alpha > 0 else "-inf"
    return float(alpha)


def alpha_from_json(value: Any) -> float:
    """The inverse of `alpha_to_json`; ValueError for anything that is not a real α or ±inf."""
    if value in ("+inf", "-inf"):
        return POS_INF if value == "+inf" else NEG_INF
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"α must be a finite number or '+inf'/'-inf', got {value!r}.")
    return float(value)


def nearest(options: tuple[float, ...], value: float) -> float:
    """The option closest to `value` (on a log scale for positive options such as c)."""
    if all(o > 0 for o in options) and value > 0:
        return min(options, key=lambda o: abs(math.log(o / value)))
    return min(options, key=lambda o: abs(o - value))


# ---------------------------------------------------------------------------------------------------------
# The explorer's state, as the server keeps it between the browser's reports.


@dataclass(frozen=True)
class ExplorerState:
    """What the explorer shows: shape α, scale c, the x range ±half_width and the display switches.

    The browser changes it while a control moves and reports the settled value when the drag ends; the
    server keeps that copy for what it draws itself (formulas, trade-off table, fit panel) and for a
    return to the page. `fit_named`: y axes fit the named cases (else every curve drawn); `log_y`: a
    symmetric log y axis, sign(y)·log10(1 + |y|); `show_t`: the Student's t NLL with ν beside −log p.
    """

    alpha: float = 1.0
    scale: float = 1.0
    half_width: float = 6.0
    fit_named: bool = True
    log_y: bool = False
    show_t: bool = False
    nu: float = 3.0

    def __post_init__(self) -> None:
        check_alpha_scale(self.alpha, self.scale)
        if not (math.isfinite(self.half_width) and self.half_width > 0):
            raise ValueError(f"the x range must be a positive number, got {self.half_width!r}.")
        if self.nu not in NU_OPTIONS:
            raise ValueError(f"ν must be one of {', '.join(f'{n:g}' for n in NU_OPTIONS)}; got {self.nu!r}.")

    @property
    def case(self) -> NamedCase | None:
        return case_for(self.alpha)

    @property
    def has_density(self) -> bool:
        return self.alpha >= 0

    def to_browser(self) -> dict[str, Any]:
        """The state as JSON (α = ±∞ as strings), for the browser component."""
        return {**asdict(self), "alpha": alpha_to_json(self.alpha)}

    @classmethod
    def from_browser(cls, value: dict[str, Any]) -> ExplorerState:
        """The state the browser reported; ValueError (naming what is wrong) for a malformed report."""
        try:
            return cls(
                alpha=alpha_from_json(value["alpha"]),
                scale=float(value["scale"]),
                half_width=float(value["half_width"]),
                fit_named=_flag(value, "fit_named"),
                log_y=_flag(value, "log_y"),
                show_t=_flag(value, "show_t"),
                nu=float(value["nu"]),
            )
        except KeyError as missing:
            raise ValueError(f"the explorer's report lacks {missing}.") from None
        except TypeError as bad:
            raise ValueError(f"the explorer's report is malformed: {bad}.") from None


def _flag(value: dict[str, Any], name: str) -> bool:
    if not isinstance(value[name], bool):
        raise ValueError(f"the explorer's report has {name} = {value[name]!r}, not true or false.")
    return value[name]


def apply_browser_value(
    state: ExplorerState, value: Any, last_event: str | None
) -> tuple[ExplorerState, str | None, str | None]:
    """(state, event id, problem) after the browser's latest report.

    The component keeps returning its last report on every rerun; each report carries a fresh event id
    ('mount:sequence'), so a report is applied once, and a change the server made since (the fit's "show
    the fitted loss") is not undone by an old report. A malformed report is not applied: the state stays
    and `problem` says what was wrong (its event counts as seen, so it is reported once).
    """
    if not isinstance(value, dict) or not value.get("event"):
        return state, last_event, None
    event = str(value["event"])
    if event == last_event:
        return state, last_event, None
    try:
        return ExplorerState.from_browser(value), event, None
    except ValueError as error:
        return state, event, str(error)


# ---------------------------------------------------------------------------------------------------------
# log Z(α) for the browser: a table of core.losses.log_partition, interpolated by cubic Hermite splines.


@dataclass(frozen=True)
class LogZTable:
    """log Z at knots α ∈ [0, alpha_max] with its slopes d log Z/dα, and log Z(+∞)."""

    knots: np.ndarray
    values: np.ndarray
    slopes: np.ndarray
    log_z_inf: float

    def to_browser(self) -> dict[str, Any]:
        return {"knots": self.knots.tolist(), "values": self.values.tolist(), "slopes": self.slopes.tolist(),
                "inf": self.log_z_inf}


def _log_partition_and_slope(knots: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """log Z and d log Z/dα at `knots`, from core.losses.log_partition and its autograd (float64)."""
    alpha = torch.tensor(knots, dtype=torch.float64, requires_grad=True)
    values = log_partition(alpha)
    (slopes,) = torch.autograd.grad(values.sum(), alpha)
    return values.detach().numpy(), slopes.numpy()


def interpolate_log_z(table: LogZTable, alpha: np.ndarray) -> np.ndarray:
    """The browser's log Z(α) for α in the table's range: cubic Hermite through (knot, value, slope).

    With t = (α − k_i)/h, h = k_{i+1} − k_i:
    (2t³ − 3t² + 1)·v_i + (t³ − 2t² + t)·h·s_i + (−2t³ + 3t²)·v_{i+1} + (t³ − t²)·h·s_{i+1}.
    """
    k = table.knots
    a = np.asarray(alpha, dtype=np.float64)
    i = np.clip(np.searchsorted(k, a, side="right") - 1, 0, k.size - 2)
    h = k[i + 1] - k[i]
    t = (a - k[i]) / h
    t2, t3 = t * t, t * t * t
    return ((2 * t3 - 3 * t2 + 1) * table.values[i] + (t3 - 2 * t2 + t) * h * table.slopes[i]
            + (-2 * t3 + 3 * t2) * table.values[i + 1] + (t3 - t2) * h * table.slopes[i + 1])


def _geometric(lo: float, hi: float, ratio: float) -> np.ndarray:
    n = max(1, math.ceil(math.log(hi / lo) / math.log(ratio)))
    return lo * (hi / lo) ** (np.arange(n + 1) / n)


def log_partition_table(
    alpha_max: float = ALPHA_MAX_FINITE, tol: float = LOG_Z_TOLERANCE, max_rounds: int = 30
) -> LogZTable:
    """A table of log Z(α) on [0, alpha_max] whose Hermite interpolation (`interpolate_log_z`) is within
    `tol` of core.losses.log_partition, refined where it is not.

    Knots start geometric in |α − 2| (log Z's slope is logarithmically singular at α = 2) and in α near
    0, plus a uniform step; then every interval whose interpolation misses log_partition by more than
    `tol` at a quarter, half or three quarters of its width is halved, until none does (a few hundred
    knots, about 10 ms). The values come from log_partition itself, so the table cannot go stale.
    """
    if not (math.isfinite(alpha_max) and alpha_max > 2):
        raise ValueError(f"alpha_max must be a finite number above 2, got {alpha_max!r}.")
    knots = np.unique(np.concatenate([
        [0.0, 2.0, alpha_max],
        2 - _geometric(1e-7, 2.0, 1.5),
        2 + _geometric(1e-7, alpha_max - 2, 1.5),
        _geometric(1e-6, 1.0, 1.5),
        np.arange(0.0, alpha_max, 0.25),
    ]))
    knots = knots[(knots >= 0) & (knots <= alpha_max)]
    for _ in range(max_rounds):
        values, slopes = _log_partition_and_slope(knots)
        table = LogZTable(knots, values, slopes, float(log_partition(torch.tensor(POS_INF, dtype=torch.float64))))
        width = np.diff(knots)
        probes = np.concatenate([knots[:-1] + f * width for f in (0.25, 0.5, 0.75)])
        with torch.no_grad():
            exact = log_partition(torch.from_numpy(probes)).numpy()
        miss = np.abs(interpolate_log_z(table, probes) - exact).reshape(3, -1).max(axis=0)
        if not (miss > tol).any():
            return table
        knots = np.sort(np.concatenate([knots, (knots[:-1] + width / 2)[miss > tol]]))
    raise RuntimeError(f"the log Z table did not reach {tol:g} in {max_rounds} rounds: raise tol or max_rounds.")


# ---------------------------------------------------------------------------------------------------------
# Student's t (core.losses.students_t_nll), drawn beside the general NLL.


def students_t_constant(nu: float) -> float:
    """The t's normaliser −log p_t(0 | ν, 1) = ½ log ν + lgamma(ν/2) − lgamma((ν+1)/2) + ½ log π, from
    core.losses.students_t_nll; the browser adds ½(ν+1)·log1p((x/s)²/ν) + log s to it."""
    return float(students_t_nll(torch.tensor(0.0, dtype=torch.float64), nu, 1.0))


def students_t_scale(scale: float, nu: float) -> float:
    """The t's scale s = c·√((ν+1)/ν), which gives it the general loss's curvature 1/c² at x = 0, so that
    ν = 1 is exactly the α = 0 (Cauchy) member and ν → ∞ tends to the α = 2 (normal) one."""
    return scale * math.sqrt((nu + 1) / nu)


def browser_tables() -> dict[str, Any]:
    """Everything the browser component needs beyond the state, as JSON: the slider stops, the named
    cases, log Z's table, the t's normalisers for each ν, the sentences and the trade-off's α."""
    return {
        "alpha_options": [alpha_to_json(a) for a in ALPHA_OPTIONS],
        "scale_options": list(SCALE_OPTIONS),
        "half_width_options": list(HALF_WIDTH_OPTIONS),
        "nu_options": list(NU_OPTIONS),
        "t_constants": [students_t_constant(nu) for nu in NU_OPTIONS],
        "log_z": log_partition_table().to_browser(),
        "cases": [{"key": c.key, "name": c.name, "alpha": alpha_to_json(c.alpha)} for c in NAMED_CASES],
        "plus_inf_name": PLUS_INF_CASE.name,
        "tradeoff_alphas": list(TRADEOFF_ALPHAS),
        "descriptions": [[op, alpha_to_json(bound), sentence] for op, bound, sentence in DESCRIPTION_RULES],
        "grid_points": GRID_POINTS,
    }


def fitted_state(state: ExplorerState, alpha: float, scale: float) -> tuple[ExplorerState, str]:
    """The explorer moved to a fitted (α, c), and a sentence saying what was shown and what was changed.

    α and c are kept exactly (the sliders sit at their nearest stop); c beyond the c slider's range is
    clamped to it, and the x range is widened or narrowed to about 6c when ±half_width would show less
    than 2c or more than 30c, so the fitted curve's shape is on screen. Both are said, never silent.
    """
    shown_scale = min(max(scale, SCALE_MIN), SCALE_MAX)
    notes = []
    if shown_scale != scale:
        notes.append(f"c = {number_label(scale)} is outside the c slider's range, so c = "
                     f"{number_label(shown_scale)} is shown")
    half_width = state.half_width
    if not 2 * shown_scale <= half_width <= 30 * shown_scale:
        half_width = nearest(HALF_WIDTH_OPTIONS, 6 * shown_scale)
        notes.append(f"the x range is now ±{number_label(half_width)} so that the curve's shape shows")
    text = f"Shown above: α = {alpha_label(alpha)}, c = {number_label(shown_scale)}"
    text += f"; {'; '.join(notes)}." if notes else "."
    return replace(state, alpha=alpha, scale=shown_scale, half_width=half_width), text


ACTIVE_FORMULA_COLOR = "#c2410c"


@dataclass(frozen=True)
class FormulaRow:
    """One formula for the page, `active` when it is the case that applies to the chosen α."""

    key: str
    name: str
    name_latex: str
    latex: str
    active: bool
    alpha: float

    @property
    def display(self) -> str:
        """The formula for st.latex: 'name: ρ = …', or, where it applies to α, boxed in colour with an
        arrow to α."""
        if self.active:
            return (rf"\boxed{{\color{{{ACTIVE_FORMULA_COLOR}}}{{{self.latex}}}}}"
                    rf"\quad\longleftarrow\ \alpha = {alpha_latex(self.alpha)}")
        return rf"{self.name_latex}:\ {self.latex}"


def formula_rows(alpha: float) -> list[FormulaRow]:
    """ρ in general and for each named case (and +∞), with the one that applies to α marked active."""
    match = case_for(alpha)
    rows = [FormulaRow("general", "general", r"\textsf{general}", GENERAL_RHO_LATEX, match is None, alpha)]
    for case in (*NAMED_CASES, PLUS_INF_CASE):
        name_latex = r"\alpha \to +\infty" if case is PLUS_INF_CASE else rf"\textsf{{{case.name}}}"
        latex = rf"\rho(x,{alpha_latex(case.alpha)},c) = {case.rho_latex}"
        rows.append(FormulaRow(case.key, case.name, name_latex, latex, match is case, alpha))
    return rows


def log_z_latex(alpha: float) -> str:
    """log Z at α for st.latex, or why there is none."""
    if alpha < 0:
        return r"Z(\alpha) = \infty \text{ for } \alpha < 0"
    value = float(log_partition(torch.tensor(alpha, dtype=torch.float64)))
    return rf"\log Z({alpha_latex(alpha)}) = {value:.6f}"


@dataclass(frozen=True)
class TradeoffRow:
    """What one α charges an inlier (x = 0) and an outlier (x = OUTLIER_AT·c) under the NLL."""

    alpha: float
    inlier_cost: float
    outlier_cost: float


def tradeoff_costs(scale: float, alphas: tuple[float, ...] = TRADEOFF_ALPHAS) -> list[TradeoffRow]:
    """−log p(0 | α, c) = log c + log Z(α) and −log p(OUTLIER_AT·c | α, c) for each α."""
    check_alpha_scale(0.0, scale)
    points = torch.tensor([[0.0, OUTLIER_AT * scale]], dtype=torch.float64)
    with torch.no_grad():
        costs = nll(points, torch.tensor(alphas, dtype=torch.float64)[:, None], scale)
    return [TradeoffRow(a, float(row[0]), float(row[1])) for a, row in zip(alphas, costs, strict=True)]


def tradeoff_markdown(scale: float) -> str:
    """The trade-off as a Markdown table at this c: each α's price for an inlier and for an outlier."""
    outlier_at = f"x = {OUTLIER_AT:g}c = {number_label(OUTLIER_AT * scale)}"
    lines = [f"| α | cost of an inlier (x = 0) | cost of an outlier ({outlier_at}) |", "| --- | --- | --- |"]
    lines += [f"| {alpha_label(r.alpha)} | {r.inlier_cost:.3f} | {r.outlier_cost:.3f} |" for r in tradeoff_costs(scale)]
    return "\n".join(lines)


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


# A fitted α this close to an end of its range has ended on the bound (it prints as the bound).
BOUND_TOLERANCE = 1e-3


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
    alpha_lo: float = 0.0
    alpha_hi: float = 3.0

    def bound_note(self) -> str | None:
        """A sentence when α ended on an end of its range (the optimum may lie beyond it), else None."""
        if self.alpha_hi - self.alpha < BOUND_TOLERANCE:
            return (f"α ended on the upper bound of its range [{self.alpha_lo:g}, {self.alpha_hi:g}]: these "
                    f"data want lighter tails than α = {self.alpha_hi:g} gives, so the fit is held by the bound "
                    "rather than settled at its best α.")
        if self.alpha - self.alpha_lo < BOUND_TOLERANCE:
            return (f"α ended on the lower bound of its range [{self.alpha_lo:g}, {self.alpha_hi:g}]: these "
                    f"data have tails at least as heavy as α = {self.alpha_lo:g}"
                    + (" (Cauchy), the heaviest member with a density." if self.alpha_lo == 0 else "."))
        return None


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
        alpha_lo=alpha_lo,
        alpha_hi=alpha_hi,
    )


def mean_nll(x: np.ndarray, loc: float, alpha: float, scale: float) -> float:
    """The mean of −log p(x − loc | α, c) over the data (α ≥ 0), in float64."""
    with torch.no_grad():
        return float(nll(torch.from_numpy(np.asarray(x, dtype=np.float64) - loc), alpha, scale).mean())


@dataclass(frozen=True)
class FitCurves:
    """What the fit chart draws: a histogram (inliers and outliers stacked, as densities), the two fits,
    and the explorer's loss (α, c from the charts above) centred at the fitted μ, where it has a density."""

    bin_centers: np.ndarray
    bin_width: float
    inlier_density: np.ndarray
    outlier_density: np.ndarray
    x: np.ndarray
    fitted_density: np.ndarray
    gaussian_density: np.ndarray
    explorer_density: np.ndarray | None = None


def _density(x: np.ndarray, alpha: float, scale: float) -> np.ndarray:
    with torch.no_grad():
        return torch.exp(-nll(torch.from_numpy(x), alpha, scale)).numpy()


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
    return FitCurves(
        bin_centers=(edges[:-1] + edges[1:]) / 2,
        bin_width=width,
        inlier_density=inlier_counts / norm,
        outlier_density=outlier_counts / norm,
        x=grid,
        fitted_density=_density(grid - result.loc, result.alpha, result.scale),
        gaussian_density=_density(grid - result.mean, 2.0, max(result.std, 1e-12)),
    )


def with_explorer_loss(curves: FitCurves, result: FitResult, state: ExplorerState) -> FitCurves:
    """The fit curves with the explorer's p(x − μ | α, c) added (none for α < 0, which has no density)."""
    density = _density(curves.x - result.loc, state.alpha, state.scale) if state.has_density else None
    return replace(curves, explorer_density=density)


def explorer_fit_note(data: FitData, result: FitResult, state: ExplorerState) -> str:
    """How the loss chosen above scores on the demo data, next to the fit's own score."""
    loss = f"α = {alpha_label(state.alpha)}, c = {number_label(state.scale)}"
    if not state.has_density:
        return (f"The loss chosen above ({loss}) has no density (α < 0), so it cannot score these data as a "
                "likelihood; pick α ≥ 0 above to compare it with the fit.")
    score = mean_nll(data.x, result.loc, state.alpha, state.scale)
    score_text = "∞ (beyond float64)" if math.isinf(score) else f"{score:.3f}" if abs(score) < 1e5 else f"{score:.3g}"
    return (f"The loss chosen above ({loss}), centred at the fitted μ: mean NLL {score_text} on these data, "
            f"against the fit's {result.mean_nll:.3f}.")


FIT_COLORS = {"inliers": "#93c5fd", "outliers": "#fca5a5", "fit": "#111827", "gaussian": "#6b7280",
              "explorer": "#c2410c"}


def fit_figure(curves: FitCurves, result: FitResult, state: ExplorerState) -> tuple[list[dict], dict]:
    """The fit chart as plotly traces and layout (plain dicts): the histogram, the adaptive and Gaussian
    fits, and the explorer's loss. The legend sits above the plot, clear of the curves and the x title."""
    data: list[dict[str, Any]] = [
        {"type": "bar", "x": curves.bin_centers, "y": curves.inlier_density, "width": curves.bin_width,
         "name": "inliers", "marker": {"color": FIT_COLORS["inliers"]}},
        {"type": "bar", "x": curves.bin_centers, "y": curves.outlier_density, "width": curves.bin_width,
         "name": "outliers", "marker": {"color": FIT_COLORS["outliers"]}},
        {"type": "scatter", "mode": "lines", "x": curves.x, "y": curves.fitted_density,
         "name": f"adaptive fit (α = {result.alpha:.2f}, c = {number_label(result.scale)})",
         "line": {"color": FIT_COLORS["fit"], "width": 3}},
        {"type": "scatter", "mode": "lines", "x": curves.x, "y": curves.gaussian_density,
         "name": f"Gaussian fit (σ = {result.std:.2f})",
         "line": {"color": FIT_COLORS["gaussian"], "width": 2, "dash": "dash"}},
    ]
    if curves.explorer_density is not None:
        data.append({
            "type": "scatter", "mode": "lines", "x": curves.x, "y": curves.explorer_density,
            "name": f"chosen above (α = {alpha_label(state.alpha)}, c = {number_label(state.scale)})",
            "line": {"color": FIT_COLORS["explorer"], "width": 2, "dash": "dot"},
        })
    layout = {
        "height": 380,
        "barmode": "stack",
        "bargap": 0,
        "margin": {"l": 50, "r": 10, "t": 60, "b": 45},
        "xaxis": {"title": {"text": "x"}},
        "yaxis": {"title": {"text": "density"}},
        "legend": {"orientation": "h", "x": 0, "xanchor": "left", "y": 1.02, "yanchor": "bottom",
                   "traceorder": "normal"},
        "meta": {"chart": "fit"},
    }
    return data, layout
