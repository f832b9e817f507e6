"""Loss Explorer: ρ(x, α, c), its derivative, weight, NLL and density drawn in the browser while α and c
are dragged (pages/components/loss_explorer); below, from the settled α and c, the formulas, the trade-off in
numbers and a 1-D fit of α and c to data. The numbers come from core.explorer (over core.losses).
"""

from __future__ import annotations

import streamlit as st

from core import explorer as ex
from pages.chrome import fast_figure, page_header
from pages.components.loss_explorer import loss_explorer

# Session-state keys, prefixed so they cannot collide with other pages'. Plain state, not widget keys,
# so leaving the page and coming back loses nothing.
STATE_KEY = "explorer_state"  # the settled ExplorerState
EVENT_KEY = "explorer_event"  # id of the browser's last report applied
PUSH_KEY = "explorer_push"  # bumped when this page moves α and c itself ("Show the fitted loss above")
SHOWN_FIT_KEY = "explorer_shown_fit"  # (state, sentence) of the last "Show the fitted loss above"
LIVE_KEY = "explorer_live"  # the browser component
FIT_POINTS = (500, 1000, 2000, 5000, 10000)
FIT_INLIER_ALPHAS = (0.0, 1.0, 2.0)


@st.cache_data(show_spinner=False)
def _browser_tables() -> dict:
    """log Z's table and the rest of what the browser needs, from core.losses once per server (~30 ms)."""
    return ex.browser_tables()


@st.cache_data(max_entries=32, show_spinner="Fitting α and c with the adaptive loss…")
def _fit(settings: ex.FitSettings) -> tuple[ex.FitData, ex.FitResult, ex.FitCurves]:
    """Draw the data and fit it; cached, so a move of α or c above never refits."""
    data = ex.make_data(settings)
    result = ex.fit_adaptive(data.x)
    return data, result, ex.fit_curves(data, result)


def _settle() -> str | None:
    """Apply the browser's latest report (the component's value, kept under its key) if it is new;
    returns what was wrong with it, if anything."""
    state, event, problem = ex.apply_browser_value(
        st.session_state[STATE_KEY], st.session_state.get(LIVE_KEY), st.session_state.get(EVENT_KEY)
    )
    st.session_state[STATE_KEY], st.session_state[EVENT_KEY] = state, event
    return problem


def _show_fit(alpha: float, scale: float) -> None:
    """Move the explorer to the fitted α and c, and tell the browser (a new push) to take them. A report
    that came with this click is applied first, or it would undo the fit when the page settles."""
    _settle()
    state, sentence = ex.fitted_state(st.session_state[STATE_KEY], alpha, scale)
    st.session_state[STATE_KEY] = state
    st.session_state[PUSH_KEY] += 1
    st.session_state[SHOWN_FIT_KEY] = (state, sentence)


st.session_state.setdefault(STATE_KEY, ex.ExplorerState())
st.session_state.setdefault(PUSH_KEY, 0)

page_header(
    "Loss Explorer",
    ":material/ssid_chart:",
    "One formula, every robust loss: drag α and c and watch the loss ρ, its derivative ψ, the weight ψ/x "
    "it gives each point, and (for α ≥ 0) its likelihood. Faint curves are the named cases; hover a chart "
    "to read values.",
)

# The browser's report is applied before anything is drawn, so every view below, and the state handed
# back to the component, is the settled one.
problem = _settle()
state = st.session_state[STATE_KEY]
loss_explorer(view=state.to_browser(), push=st.session_state[PUSH_KEY], tables=_browser_tables(), key=LIVE_KEY)
if problem:
    st.error(f"The explorer sent a state this page cannot use ({problem}) and kept the previous one; "
             "reload the page if the charts and this text disagree.", icon=":material/error:")

st.subheader("Formulas")
general, *members = ex.formula_rows(state.alpha)
st.latex(general.display)
st.latex(ex.PSI_LATEX)
member_col, nll_col = st.columns(2)
with member_col:
    for row in members:
        st.latex(row.display)
with nll_col:
    for latex in (ex.WEIGHT_LATEX, ex.NLL_LATEX, ex.PARTITION_LATEX, ex.log_z_latex(state.alpha)):
        st.latex(latex)
if state.show_t:
    st.latex(ex.STUDENTS_T_LATEX)

with st.expander(f"Why the adaptive loss cannot cheat: the trade-off in numbers at c = {ex.number_label(state.scale)}"):
    st.markdown(ex.tradeoff_markdown(state.scale))
    st.caption(
        "Lowering α buys a discount on outliers with a higher price on inliers (log Z(α) grows), so "
        "learning α by minimising the NLL settles where the data's tails are, not at the most robust α."
    )

st.subheader("Fit α and c to data")
st.caption(
    "Draw 1-D data, some of it outliers, and fit the location μ, shape α and scale c by minimising the "
    "adaptive loss −log p(x − μ | α, c), with α kept in [0, 3]."
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
data, result, curves = _fit(settings)

fit_chart, fit_numbers = st.columns([2, 1])
with fit_numbers:
    st.metric("Fitted α", f"{result.alpha:.3f}")
    st.metric("Fitted c", f"{result.scale:.3f}")
    st.metric("Fitted location μ", f"{result.loc:.3f}",
              help=f"Mean {result.mean:.3f}, median {result.median:.3f} of the same data.")
    if bound := result.bound_note():
        st.warning(bound, icon=":material/vertical_align_center:")
    st.caption(f"L-BFGS-B, {result.steps} evaluations in {result.seconds:.2f} s · mean NLL {result.mean_nll:.3f}. "
               f"Gaussian fit: mean {result.mean:.3f}, std {result.std:.3f}.")
    st.button("Show the fitted loss above", on_click=_show_fit, args=(result.alpha, result.scale),
              icon=":material/north:", key="explorer_use_fit")
    shown = st.session_state.get(SHOWN_FIT_KEY)
    if shown and shown[0] == state:
        st.caption(shown[1])
with fit_chart:
    figure = ex.fit_figure(ex.with_explorer_loss(curves, result, state), result, state)
    st.plotly_chart(fast_figure(*figure), key="explorer_chart_fit")
    st.caption(ex.explorer_fit_note(data, result, state))
