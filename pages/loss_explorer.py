"""Loss Explorer: the general loss ρ(x, α, c), its derivative, weight, NLL and density, live; and a
1-D fit of α and c with the adaptive loss. The numbers come from core.explorer (over core.losses);
this page only lays out controls and draws.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from core import explorer as ex
from pages.chrome import fast_figure, page_header

# Session-state keys, prefixed so they cannot collide with other pages' widgets. The controls keep their
# values for the whole session (persist_state="session"): leaving the page and coming back loses nothing.
ALPHA_KEY = "explorer_alpha"
PRESET_KEY = "explorer_preset"
SCALE_KEY = "explorer_scale"
RANGE_KEY = "explorer_range"
CLIP_KEY = "explorer_clip"
# What the page computed on its last run (α, c, case, log Z, fit): read by tests and the benchmark.
VIEW_KEY = "explorer_view"

DEFAULTS: dict[str, Any] = {
    ALPHA_KEY: 1.0,
    PRESET_KEY: "charbonnier",
    SCALE_KEY: 1.0,
    RANGE_KEY: 6.0,
    CLIP_KEY: True,
}

CASE_COLORS = {
    "welsch": "#9467bd",
    "geman_mcclure": "#d62728",
    "cauchy": "#2ca02c",
    "charbonnier": "#ff7f0e",
    "l2": "#1f77b4",
}
CHOSEN_COLOR = "#111827"
# Light to dark as α grows, so the trade-off chart reads as one ordered family.
TRADEOFF_COLORS = ("#fde725", "#7ad151", "#22a884", "#2a788e", "#414487", "#440154")
ACTIVE_FORMULA_COLOR = "#c2410c"
CHART_HEIGHT = 320
# Inside the plot at the top middle, where these U- and S-shaped curves leave room.
INSET_LEGEND = {"x": 0.5, "xanchor": "center", "y": 1.0, "yanchor": "top", "font": {"size": 10},
                "bgcolor": "rgba(255,255,255,0.7)"}
FIT_POINTS = (500, 1000, 2000, 5000, 10000)
FIT_INLIER_ALPHAS = (0.0, 1.0, 2.0)


# select_slider formats all 203 options on every run: look the labels up instead of formatting them.
ALPHA_LABELS = {alpha: ex.alpha_label(alpha) for alpha in ex.ALPHA_OPTIONS}


def _case_label(key: str) -> str:
    case = ex.CASES_BY_KEY[key]
    return f"{case.name} {ex.alpha_label(case.alpha)}"


def _on_preset() -> None:
    """A preset moves the α slider to its α (the pill itself stays lit until α moves away)."""
    key = st.session_state.get(PRESET_KEY)
    if key:
        st.session_state[ALPHA_KEY] = ex.CASES_BY_KEY[key].alpha


def _on_alpha() -> None:
    """Moving α lights the preset it lands on, and no preset otherwise."""
    case = ex.case_for(st.session_state[ALPHA_KEY])
    st.session_state[PRESET_KEY] = case.key if case in ex.NAMED_CASES else None


def _nearest_alpha_option(alpha: float) -> float:
    return min(ex.ALPHA_OPTIONS, key=lambda option: abs(option - alpha))


def _use_fit(alpha: float, scale: float) -> None:
    """Show the fitted loss on the charts above: α to the nearest slider stop, c to two decimals."""
    st.session_state[ALPHA_KEY] = _nearest_alpha_option(alpha)
    st.session_state[SCALE_KEY] = min(max(round(scale, 2), 0.05), 5.0)
    _on_alpha()


# What does not depend on α is cached by (c, x range), so an α move recomputes only the chosen curve.
@st.cache_data(max_entries=64, show_spinner=False)
def _references(scale: float, half_width: float) -> dict[str, ex.CurveTable]:
    return ex.reference_tables(scale, half_width)


@st.cache_data(max_entries=64, show_spinner=False)
def _tradeoff(scale: float, half_width: float) -> tuple[Any, Any]:
    return ex.nll_curves(ex.TRADEOFF_ALPHAS, scale, half_width)


@st.cache_data(max_entries=64, show_spinner=False)
def _tradeoff_costs(scale: float) -> list[ex.TradeoffRow]:
    return ex.tradeoff_costs(scale)


for state_key, default in DEFAULTS.items():
    st.session_state.setdefault(state_key, default)

page_header(
    "Loss Explorer",
    ":material/ssid_chart:",
    "One formula, every robust loss: move α and c and watch the loss ρ, its derivative ψ, the weight "
    "ψ/x it gives each point, and (for α ≥ 0) its likelihood. Faint curves are the named cases.",
)

with st.sidebar:
    st.subheader("The loss")
    st.select_slider(
        "Shape α",
        options=ex.ALPHA_OPTIONS,
        format_func=ALPHA_LABELS.__getitem__,
        key=ALPHA_KEY,
        on_change=_on_alpha,
        persist_state="session",
        help="Steps of 0.1 from −10 to 10, with −∞ and +∞ at the ends. Arrow keys move one step.",
    )
    st.pills(
        "Named cases",
        options=[case.key for case in ex.NAMED_CASES],
        format_func=_case_label,
        key=PRESET_KEY,
        on_change=_on_preset,
        persist_state="session",
    )
    st.slider("Scale c", min_value=0.05, max_value=5.0, step=0.05, key=SCALE_KEY, persist_state="session",
              help="Residuals are measured in units of c: the quadratic bowl is about c wide.")
    st.slider("x range ±", min_value=1.0, max_value=30.0, step=0.5, key=RANGE_KEY, persist_state="session")
    st.toggle("Fit y axes to the named cases", key=CLIP_KEY, persist_state="session",
              help="Off: each axis fits the chosen curve too (α > 2 then dwarfs the others).")

alpha: float = st.session_state[ALPHA_KEY]
scale: float = st.session_state[SCALE_KEY]
half_width: float = st.session_state[RANGE_KEY]
clip: bool = st.session_state[CLIP_KEY]

chosen = ex.curve_table(alpha, scale, half_width)
refs = _references(scale, half_width)
case = ex.case_for(alpha)
alpha_text = ex.alpha_label(alpha)

st.session_state[VIEW_KEY] = {
    "alpha": alpha,
    "scale": scale,
    "half_width": half_width,
    "case": case.key if case else None,
    "log_z": chosen.log_z,
    "rho_limit": ex.rho_limit(alpha),
}

heading = f"α = {alpha_text}, c = {scale:g}"
st.markdown(f"#### {heading} · {case.name if case else 'general α'}")
st.caption(ex.describe(alpha))

metric_cols = st.columns(4)
metric_cols[0].metric("Shape α", alpha_text)
metric_cols[1].metric("Scale c", f"{scale:g}")
metric_cols[2].metric(
    "log Z(α)", "—" if chosen.log_z is None else f"{chosen.log_z:.5f}",
    help="log of the normaliser Z(α) = ∫ exp(−ρ(x, α, 1)) dx; infinite for α < 0 (no density).",
)
limit = ex.rho_limit(alpha)
metric_cols[3].metric("ρ as |x| → ∞", "∞" if limit == ex.POS_INF else f"{limit:.4g}",
                      help="A finite limit means a far outlier costs a constant: it stops pulling.")


def _curve_figure(quantity: str, title: str, y_title: str, *, legend: bool) -> Any:
    """The chosen curve over the faint named cases for one quantity ('rho', 'psi', 'weight', ...)."""
    data = []
    shown = []
    for key, table in refs.items():
        values = getattr(table, quantity)
        if values is None:
            continue
        shown.append(table)
        data.append({
            "type": "scatter", "mode": "lines", "x": table.x, "y": values, "name": _case_label(key),
            "line": {"color": CASE_COLORS[key], "width": 1.5}, "opacity": 0.45, "hoverinfo": "skip",
        })
    data.append({
        "type": "scatter", "mode": "lines", "x": chosen.x, "y": getattr(chosen, quantity),
        "name": f"α = {alpha_text}", "line": {"color": CHOSEN_COLOR, "width": 3},
    })
    # The density is bounded, so it always fits; the others fit the named cases when `clip` is on.
    y_range = ex.display_range([getattr(t, quantity) for t in shown]) if clip and quantity != "density" else None
    layout: dict[str, Any] = {
        "title": {"text": title},
        "height": CHART_HEIGHT,
        "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
        "xaxis": {"title": {"text": "x"}, "range": [-half_width, half_width]},
        "yaxis": {"title": {"text": y_title}},
        "showlegend": legend,
        "legend": INSET_LEGEND,
        "meta": {"chart": quantity},
        "uirevision": quantity,
    }
    if y_range is not None:
        layout["yaxis"]["range"] = list(y_range)
    return fast_figure(data, layout)


def _tradeoff_figure() -> Any:
    """NLL for several α at this c: lower α costs more at x = 0 and less far out."""
    x, curves = _tradeoff(scale, half_width)
    data = [
        {
            "type": "scatter", "mode": "lines", "x": x, "y": values,
            "name": f"α = {ex.alpha_label(a)}", "line": {"color": color, "width": 2},
        }
        for a, values, color in zip(ex.TRADEOFF_ALPHAS, curves, TRADEOFF_COLORS, strict=True)
    ]
    if chosen.has_density and alpha not in ex.TRADEOFF_ALPHAS:
        data.append({
            "type": "scatter", "mode": "lines", "x": chosen.x, "y": chosen.nll, "name": f"α = {alpha_text}",
            "line": {"color": CHOSEN_COLOR, "width": 3, "dash": "dash"},
        })
    # Fit the axis to α ≤ 2, where the trade-off is; steeper members may leave the top of the chart.
    gentle = [values for a, values in zip(ex.TRADEOFF_ALPHAS, curves, strict=True) if a <= 2.0]
    y_range = ex.display_range(gentle) if clip else None
    layout: dict[str, Any] = {
        "title": {"text": "Trade-off: −log p(x | α, c) for several α"},
        "height": CHART_HEIGHT,
        "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
        "xaxis": {"title": {"text": "x"}, "range": [-half_width, half_width]},
        "yaxis": {"title": {"text": "NLL"}},
        "legend": {"orientation": "h", "x": 0, "y": -0.2, "font": {"size": 10}},
        "meta": {"chart": "tradeoff"},
        "uirevision": "tradeoff",
    }
    if y_range is not None:
        layout["yaxis"]["range"] = list(y_range)
    return fast_figure(data, layout)


top = st.columns(3)
top[0].plotly_chart(_curve_figure("rho", "Loss ρ(x, α, c)", "ρ", legend=True), key="explorer_chart_rho")
top[1].plotly_chart(_curve_figure("psi", "Derivative ψ(x, α, c) = ∂ρ/∂x", "ψ", legend=False),
                    key="explorer_chart_psi")
top[2].plotly_chart(_curve_figure("weight", "Weight ψ(x)/x (IRLS)", "ψ/x", legend=False),
                    key="explorer_chart_weight")

if chosen.has_density:
    bottom = st.columns(3)
    bottom[0].plotly_chart(_curve_figure("nll", "−log p(x | α, c)", "NLL", legend=False), key="explorer_chart_nll")
    bottom[1].plotly_chart(_curve_figure("density", "Density p(x | α, c)", "p", legend=False),
                           key="explorer_chart_density")
else:
    bottom = st.columns([2, 1])
    bottom[0].info(
        f"No likelihood at α = {alpha_text}: Z(α) = ∫ exp(−ρ) dx is infinite for α < 0, so ρ has no "
        "normalised density and cannot be learned as an NLL. Pick α ≥ 0 to see −log p and p.",
        icon=":material/info:",
    )
bottom[-1].plotly_chart(_tradeoff_figure(), key="explorer_chart_tradeoff")

with st.expander("Why the adaptive loss cannot cheat: the trade-off in numbers", expanded=False):
    rows = _tradeoff_costs(scale)
    outlier_at = f"{ex.OUTLIER_AT:g}c"
    table = [f"| α | cost of an inlier (x = 0) | cost of an outlier (x = {outlier_at}) |", "| --- | --- | --- |"]
    table += [f"| {ex.alpha_label(r.alpha)} | {r.inlier_cost:.3f} | {r.outlier_cost:.3f} |" for r in rows]
    st.markdown("\n".join(table))
    st.caption(
        "Lowering α buys a discount on outliers with a higher price on inliers (log Z(α) grows), so "
        "learning α by minimising the NLL settles where the data's tails are, not at the most robust α."
    )

st.subheader("Formulas")
formula_col, nll_col = st.columns([3, 2])
with formula_col:
    for row in ex.formula_rows(alpha):
        if row.active:
            st.latex(
                rf"\boxed{{\color{{{ACTIVE_FORMULA_COLOR}}}{{{row.latex}}}}}"
                rf"\quad\longleftarrow\ \alpha = {ex.alpha_latex(alpha)}"
            )
        else:
            st.latex(rf"{row.name_latex}:\ {row.latex}")
with nll_col:
    st.latex(ex.PSI_LATEX)
    st.latex(ex.WEIGHT_LATEX)
    st.latex(ex.NLL_LATEX)
    st.latex(ex.PARTITION_LATEX)
    if chosen.log_z is not None:
        st.latex(rf"\log Z({ex.alpha_latex(alpha)}) = {chosen.log_z:.6f}")
    else:
        st.latex(r"Z(\alpha) = \infty \text{ for } \alpha < 0")


# ---------------------------------------------------------------------------------------------------------
# Fit panel.


@st.cache_data(max_entries=32, show_spinner="Fitting α and c with the adaptive loss…")
def _fit(settings: ex.FitSettings) -> tuple[ex.FitResult, ex.FitCurves]:
    """Draw the data and fit it; cached, so moving α above never refits."""
    data = ex.make_data(settings)
    result = ex.fit_adaptive(data.x)
    return result, ex.fit_curves(data, result)


st.subheader("Fit α and c to data")
st.caption(
    "Draw 1-D data, some of it outliers, and fit the location μ, shape α and scale c by minimising the "
    "adaptive loss −log p(x − μ | α, c) (core.losses.AdaptiveLoss, α in [0, 3])."
)
with st.form("explorer_fit_form"):
    form_cols = st.columns(5)
    n_points = form_cols[0].select_slider("Points", options=FIT_POINTS, value=2000, key="explorer_fit_n")
    outlier_fraction = form_cols[1].slider("Outlier fraction", 0.0, 0.6, 0.2, 0.05, key="explorer_fit_outliers")
    outlier_width = form_cols[2].slider("Outlier spread (× inlier scale)", 2.0, 50.0, 20.0, 1.0,
                                        key="explorer_fit_width")
    inlier_alpha = form_cols[3].selectbox("Inliers drawn with α", FIT_INLIER_ALPHAS, index=2,
                                          format_func=ex.alpha_label, key="explorer_fit_inlier_alpha")
    seed = form_cols[4].number_input("Seed", min_value=0, max_value=1_000_000, value=0, step=1,
                                     key="explorer_fit_seed")
    one_sided = st.toggle("One-sided outliers (they pull the mean)", key="explorer_fit_one_sided")
    st.form_submit_button("Fit α and c", type="primary", icon=":material/play_arrow:", key="explorer_fit_submit")

settings = ex.FitSettings(
    n=int(n_points), outlier_fraction=float(outlier_fraction), inlier_alpha=float(inlier_alpha),
    outlier_width=float(outlier_width), one_sided=bool(one_sided), seed=int(seed),
)
result, curves = _fit(settings)
st.session_state[VIEW_KEY]["fit"] = {
    "alpha": result.alpha, "scale": result.scale, "loc": result.loc, "seconds": result.seconds,
    "outlier_fraction": settings.outlier_fraction,
}

fit_chart, fit_numbers = st.columns([3, 1])
with fit_numbers:
    st.metric("Fitted α", f"{result.alpha:.3f}")
    st.metric("Fitted c", f"{result.scale:.3f}")
    st.metric("Fitted location μ", f"{result.loc:.3f}",
              help=f"Mean {result.mean:.3f}, median {result.median:.3f} of the same data.")
    st.caption(f"L-BFGS-B, {result.steps} evaluations in {result.seconds:.2f} s · mean NLL {result.mean_nll:.3f}. "
               f"Gaussian fit: mean {result.mean:.3f}, std {result.std:.3f}.")
    st.button("Show the fitted loss above", on_click=_use_fit, args=(result.alpha, result.scale),
              icon=":material/north:", key="explorer_use_fit")
with fit_chart:
    fit_data = [
        {"type": "bar", "x": curves.bin_centers, "y": curves.inlier_density, "width": curves.bin_width,
         "name": "inliers", "marker": {"color": "#93c5fd"}},
        {"type": "bar", "x": curves.bin_centers, "y": curves.outlier_density, "width": curves.bin_width,
         "name": "outliers", "marker": {"color": "#fca5a5"}},
        {"type": "scatter", "mode": "lines", "x": curves.x, "y": curves.fitted_density,
         "name": f"adaptive fit (α = {result.alpha:.2f}, c = {result.scale:.2f})",
         "line": {"color": CHOSEN_COLOR, "width": 3}},
        {"type": "scatter", "mode": "lines", "x": curves.x, "y": curves.gaussian_density,
         "name": f"Gaussian fit (σ = {result.std:.2f})", "line": {"color": "#6b7280", "width": 2, "dash": "dash"}},
    ]
    fit_layout = {
        "title": {"text": "Data (histogram as a density) and the fitted p(x − μ | α, c)"},
        "height": 360,
        "barmode": "stack",
        "bargap": 0,
        "margin": {"l": 50, "r": 10, "t": 40, "b": 40},
        "xaxis": {"title": {"text": "x"}},
        "yaxis": {"title": {"text": "density"}},
        "legend": {"orientation": "h", "y": -0.2},
        "meta": {"chart": "fit"},
    }
    st.plotly_chart(fast_figure(fit_data, fit_layout), key="explorer_chart_fit")
