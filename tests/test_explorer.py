"""The Loss Explorer's server side: core.explorer's numbers (log Z's table for the browser, the Student's t
NLL, the state the browser reports, the fit demo) against core.losses and closed forms, and the page
through AppTest: what it hands the browser component, and what it draws from the state the browser
reports (formulas, trade-off table, fit panel). The browser side is tests/test_e2e_explorer.py."""

from __future__ import annotations

import ast
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core import explorer as ex
from core.losses import log_partition, nll, students_t_nll

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "loss_explorer.py")
INF = float("inf")
LIVE_KEY = "explorer_live"  # the browser component's key on the page


# ------------------------------------------------------------------------------------------------------
# core.explorer


def _imports(path: Path) -> set[str]:
    """Dotted names a module imports (any depth in the file: function-level imports count too)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return names


def test_core_explorer_needs_neither_streamlit_nor_plotly() -> None:
    # Follow core.explorer's imports through the repository's own modules; none may pull in a view library.
    todo, seen, outside = ["core.explorer"], set(), set()
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        base = REPO.joinpath(*name.split("."))
        path = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
        if not path.is_file():
            continue  # `from core.losses import rho` also yields "core.losses.rho", not a module
        for imported in _imports(path):
            if imported.split(".")[0] == "core":
                todo.append(imported)
            else:
                outside.add(imported.split(".")[0])
    assert "core.losses" in seen
    assert not outside & {"streamlit", "plotly"}, outside


def test_slider_stops_reach_every_case_and_a_wide_c() -> None:
    options = ex.ALPHA_OPTIONS
    assert options[0] == -INF and options[-1] == INF
    assert -10.0 in options and 10.0 in options
    assert all(case.alpha in options for case in ex.NAMED_CASES)
    assert list(options) == sorted(options) and len(set(options)) == len(options) == 203
    scales = ex.SCALE_OPTIONS
    assert scales[0] == 0.01 and scales[-1] == 100.0 and {0.05, 1.0, 5.0, 20.0} <= set(scales)
    assert list(scales) == sorted(scales) and max(b / a for a, b in itertools.pairwise(scales)) < 1.25
    assert 6.0 in ex.HALF_WIDTH_OPTIONS and 30.0 in ex.HALF_WIDTH_OPTIONS and ex.HALF_WIDTH_OPTIONS[-1] == 100.0


def test_log_z_table_interpolates_the_library_to_1e8() -> None:
    table = ex.log_partition_table()
    assert table.knots[0] == 0.0 and table.knots[-1] == ex.ALPHA_MAX_FINITE and 2.0 in table.knots
    assert np.all(np.diff(table.knots) > 0) and table.knots.size < 1000  # a few hundred: small JSON
    np.testing.assert_allclose(table.values, log_partition(torch.from_numpy(table.knots)).numpy(), rtol=0, atol=1e-15)
    rng = np.random.default_rng(1)
    alphas = np.clip(np.concatenate([rng.uniform(0, 10, 50_000), 2 + rng.normal(0, 1e-4, 5000),
                                     rng.uniform(0, 1e-3, 5000)]), 0, 10)
    miss = np.abs(ex.interpolate_log_z(table, alphas) - log_partition(torch.from_numpy(alphas)).numpy())
    assert miss.max() < 1e-7
    assert table.log_z_inf == pytest.approx(0.70526025442, abs=1e-8)
    # the golden values of the distribution, through the table
    golden = {0.0: math.log(math.pi * math.sqrt(2)), 1.0: math.log(3.272306973), 2.0: math.log(math.sqrt(2 * math.pi))}
    for alpha, value in golden.items():
        assert float(ex.interpolate_log_z(table, np.array([alpha]))[0]) == pytest.approx(value, abs=1e-6)


def test_log_z_table_is_refined_where_it_must_be() -> None:
    # The starting knots alone miss log_partition by more than 1e-8 somewhere: refinement is what gets there.
    with pytest.raises(RuntimeError, match="did not reach"):
        ex.log_partition_table(max_rounds=1)
    coarse, fine = ex.log_partition_table(tol=1e-5), ex.log_partition_table(tol=1e-10)
    assert coarse.knots.size < ex.log_partition_table().knots.size < fine.knots.size
    with pytest.raises(ValueError, match="above 2"):
        ex.log_partition_table(alpha_max=1.0)


def test_students_t_overlay_is_the_normalised_t() -> None:
    from scipy import stats

    for nu in ex.NU_OPTIONS:
        assert ex.students_t_constant(nu) == pytest.approx(-stats.t.logpdf(0.0, nu), rel=1e-12)
    # with the explorer's scale s = c·√((ν+1)/ν), ν = 1 is exactly the general loss's α = 0 member
    x = torch.linspace(-40, 40, 801, dtype=torch.float64)
    np.testing.assert_allclose(students_t_nll(x, 1.0, ex.students_t_scale(0.8, 1.0)).numpy(),
                               nll(x, 0.0, 0.8).numpy(), rtol=1e-9)
    assert ex.students_t_scale(2.0, 3.0) == pytest.approx(2.0 * math.sqrt(4 / 3))


def test_browser_tables_are_strict_json_with_everything_the_browser_needs() -> None:
    tables = ex.browser_tables()
    text = json.dumps(tables, allow_nan=False)  # the browser's JSON.parse has no Infinity or NaN
    assert len(text) < 60_000
    assert tables["alpha_options"][0] == "-inf" and tables["alpha_options"][-1] == "+inf"
    assert [case["key"] for case in tables["cases"]] == ["welsch", "geman_mcclure", "cauchy", "charbonnier", "l2"]
    assert len(tables["t_constants"]) == len(tables["nu_options"]) == len(ex.NU_OPTIONS)
    assert tables["log_z"]["inf"] == pytest.approx(0.70526025442, abs=1e-8)
    assert tables["descriptions"][0] == ["eq", "+inf", ex.describe(INF)]


def test_labels_and_descriptions() -> None:
    assert [ex.alpha_label(a) for a in (-INF, INF, 0.0, -0.0, 1.5, -2.0, 0.1)] == ["−∞", "+∞", "0", "0", "1.5",
                                                                                   "−2", "0.1"]
    assert ex.alpha_latex(-INF) == r"-\infty"
    assert ex.rho_limit(-2.0) == 2.0 and ex.rho_limit(-INF) == 1.0 and ex.rho_limit(0.0) == INF
    assert len({ex.describe(a) for a in (-INF, -2.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, INF)}) == 9
    assert ex.describe(-2.0).startswith("Bounded by 2:") and ex.describe(-6.0).startswith("Bounded by 1.33:")
    assert [ex.number_label(v) for v in (0.05, 1.0, 20.236, 100.0)] == ["0.05", "1", "20.2", "100"]
    with pytest.raises(ValueError, match="NaN"):
        ex.describe(float("nan"))


def test_formula_rows_box_exactly_the_case_that_applies() -> None:
    for alpha, key in [(0.0, "cauchy"), (-INF, "welsch"), (2.0, "l2"), (INF, "plus_inf"), (0.5, "general")]:
        rows = ex.formula_rows(alpha)
        assert [row.key for row in rows if row.active] == [key]
        assert [row.key for row in rows if r"\boxed" in row.display] == [key]
    assert ex.log_z_latex(-1.0) == r"Z(\alpha) = \infty \text{ for } \alpha < 0"
    assert ex.log_z_latex(1.0) == rf"\log Z(1) = {float(log_partition(1.0)):.6f}"


def test_tradeoff_lower_alpha_costs_more_for_inliers_less_for_outliers() -> None:
    rows = ex.tradeoff_costs(1.3)
    inlier = [r.inlier_cost for r in rows]
    outlier = [r.outlier_cost for r in rows]
    assert [r.alpha for r in rows] == list(ex.TRADEOFF_ALPHAS)
    assert all(a > b for a, b in itertools.pairwise(inlier))
    assert all(a < b for a, b in itertools.pairwise(outlier))
    assert inlier[0] == pytest.approx(math.log(1.3) + math.log(math.pi * math.sqrt(2)), abs=1e-6)
    table = ex.tradeoff_markdown(1.3)
    assert "x = 6c = 7.8" in table and f"{outlier[-1]:.3f}" in table.splitlines()[-1]


def test_state_goes_to_the_browser_and_back() -> None:
    for alpha in (-INF, -2.0, 0.0, 1.37, INF):
        state = ex.ExplorerState(alpha=alpha, scale=20.236, half_width=15.0, fit_named=False, log_y=True,
                                 show_t=True, nu=7.0)
        sent = json.loads(json.dumps(state.to_browser(), allow_nan=False))
        assert ex.ExplorerState.from_browser(sent) == state
    good = ex.ExplorerState().to_browser()
    for bad, message in [({"alpha": float("nan")}, "α must be"), ({"alpha": "inf"}, "α must be"),
                         ({"scale": 0.0}, "c > 0"), ({"half_width": -1.0}, "x range"), ({"nu": 3.3}, "ν must be"),
                         ({"log_y": "yes"}, "not true or false"), ({"scale": None}, "malformed")]:
        with pytest.raises(ValueError, match=message):
            ex.ExplorerState.from_browser({**good, **bad})
    with pytest.raises(ValueError, match="lacks 'nu'"):
        ex.ExplorerState.from_browser({k: v for k, v in good.items() if k != "nu"})


def test_a_browser_report_is_applied_once() -> None:
    state = ex.ExplorerState()
    report = {**ex.ExplorerState(alpha=-2.0, scale=2.5).to_browser(), "event": "m:1"}
    after, event, problem = ex.apply_browser_value(state, report, None)
    assert (after.alpha, after.scale, event, problem) == (-2.0, 2.5, "m:1", None)
    # the component returns the same report on every rerun: it must not undo a change the server made since
    moved = ex.ExplorerState(alpha=0.5)
    assert ex.apply_browser_value(moved, report, "m:1") == (moved, "m:1", None)
    assert ex.apply_browser_value(moved, None, "m:1") == (moved, "m:1", None)
    kept, event, problem = ex.apply_browser_value(moved, {**report, "scale": -1.0, "event": "m:2"}, "m:1")
    assert kept == moved and event == "m:2" and "c > 0" in problem


def test_showing_a_fit_keeps_its_c_and_says_what_changed() -> None:
    state, text = ex.fitted_state(ex.ExplorerState(), 3.0, 20.236)
    assert (state.alpha, state.scale, state.half_width) == (3.0, 20.236, 100.0)  # c kept exactly: no clamp to 5
    assert text == "Shown above: α = 3, c = 20.2; the x range is now ±100 so that the curve's shape shows."
    state, text = ex.fitted_state(ex.ExplorerState(), 0.5, 250.0)
    assert state.scale == ex.SCALE_MAX and "c = 250 is outside the c slider's range, so c = 100 is shown" in text
    state, text = ex.fitted_state(ex.ExplorerState(log_y=True), 1.9876, 1.03)
    assert (state.alpha, state.scale, state.half_width, state.log_y) == (1.9876, 1.03, 6.0, True)
    assert text == "Shown above: α = 1.99, c = 1.03."


# ------------------------------------------------------------------------------------------------------
# The fit demo


def test_make_data_is_seeded_and_counts_outliers() -> None:
    settings = ex.FitSettings(n=1000, outlier_fraction=0.25, one_sided=True, outlier_width=10.0, seed=3)
    a, b = ex.make_data(settings), ex.make_data(settings)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.is_outlier.sum() == 250
    assert (a.x[a.is_outlier] >= 0).all() and (a.x[a.is_outlier] <= 10.0).all()
    other = ex.make_data(ex.FitSettings(n=1000, outlier_fraction=0.25, seed=4))
    assert not np.array_equal(a.x, other.x)


def test_fit_recovers_alpha_and_scale_of_clean_data() -> None:
    # Cauchy-like (α = 0) inliers at c = 2: the fit must find the heavy tail and the scale.
    data = ex.make_data(ex.FitSettings(n=10000, outlier_fraction=0.0, inlier_alpha=0.0, inlier_scale=2.0, seed=1))
    result = ex.fit_adaptive(data.x)
    assert result.alpha == pytest.approx(0.0, abs=0.15)
    assert result.scale == pytest.approx(2.0, rel=0.1)
    assert result.loc == pytest.approx(0.0, abs=0.1)
    assert result.mean_nll == pytest.approx(ex.mean_nll(data.x, result.loc, result.alpha, result.scale), abs=1e-4)
    assert result.bound_note() is None or "lower bound" in result.bound_note()


def test_a_fit_that_ends_on_the_alpha_bound_says_so() -> None:
    # 60 % one-sided outliers spread over 50 inlier scales: the case, α = 3.000 and c ≈ 20.
    upper = ex.fit_adaptive(ex.make_data(ex.FitSettings(outlier_fraction=0.6, outlier_width=50.0,
                                                        one_sided=True)).x)
    assert upper.alpha == pytest.approx(3.0, abs=1e-3) and upper.scale > 5.0
    assert upper.bound_note().startswith("α ended on the upper bound of its range [0, 3]")
    lower = ex.fit_adaptive(ex.make_data(ex.FitSettings(outlier_fraction=0.5, outlier_width=50.0)).x)
    assert lower.alpha == pytest.approx(0.0, abs=1e-3)
    assert lower.bound_note().startswith("α ended on the lower bound of its range [0, 3]")
    inside = ex.fit_adaptive(ex.make_data(ex.FitSettings(outlier_fraction=0.0)).x)
    assert inside.alpha == pytest.approx(2.0, abs=0.3) and inside.bound_note() is None


def test_fit_figure_is_valid_plotly_with_the_explorer_loss() -> None:
    import plotly.graph_objects as go

    data = ex.make_data(ex.FitSettings(n=500))
    result = ex.fit_adaptive(data.x)
    curves = ex.fit_curves(data, result)
    chosen = ex.ExplorerState(alpha=1.0, scale=2.0)
    traces, layout = ex.fit_figure(ex.with_explorer_loss(curves, result, chosen), result, chosen)
    go.Figure(data=traces, layout=layout)  # full validation: raises on any property plotly does not know
    overlay = traces[-1]
    assert overlay["name"] == "chosen above (α = 1, c = 2)"
    np.testing.assert_allclose(overlay["y"], np.exp(-nll(torch.from_numpy(curves.x - result.loc), 1.0, 2.0).numpy()))
    assert np.trapezoid(curves.fitted_density, curves.x) == pytest.approx(1.0, abs=0.05)
    assert "mean NLL ∞ (beyond float64)" in ex.explorer_fit_note(data, result, ex.ExplorerState(alpha=INF, scale=0.05))
    bounded = ex.ExplorerState(alpha=-2.0)
    traces, _ = ex.fit_figure(ex.with_explorer_loss(curves, result, bounded), result, bounded)
    assert len(traces) == 4 and "no density" in ex.explorer_fit_note(data, result, bounded)


def test_bad_input_names_the_fix() -> None:
    with pytest.raises(ValueError, match="c > 0"):
        ex.ExplorerState(scale=0.0)
    with pytest.raises(ValueError, match="NaN"):
        ex.ExplorerState(alpha=float("nan"))
    with pytest.raises(ValueError, match="outlier_fraction"):
        ex.make_data(ex.FitSettings(outlier_fraction=1.0))
    with pytest.raises(ValueError, match="two finite"):
        ex.fit_adaptive(np.array([1.0, np.nan]))


# ------------------------------------------------------------------------------------------------------
# The page through AppTest. The browser is simulated by writing its report into the component's key,
# which is what the component's value is when its frontend sends one.


def component_args(at: AppTest) -> dict[str, Any]:
    [component] = at.get("component_instance")
    assert component.proto.component_name == "pages.components.loss_explorer.loss_explorer"
    return json.loads(component.proto.json_args)


def report(at: AppTest, event: str, **changes: Any) -> AppTest:
    """Send the page a report from the browser: its current state with `changes`, under a new event id."""
    state = {**component_args(at)["view"], **changes}
    if "alpha" in changes:
        state["alpha"] = ex.alpha_to_json(changes["alpha"])
    at.session_state[LIVE_KEY] = {**state, "event": event}
    at.run()
    assert not at.exception, at.exception
    return at


def texts(at: AppTest) -> list[str]:
    return [element.value for kind in ("caption", "markdown", "warning", "error", "info") for element in
            getattr(at, kind)]


def fit_chart(at: AppTest) -> dict[str, Any]:
    charts = [json.loads(el.proto.spec) for el in at.get("plotly_chart")]
    [chart] = [c for c in charts if c["layout"].get("meta", {}).get("chart") == "fit"]
    return chart


def boxed(at: AppTest) -> list[str]:
    return [latex.value for latex in at.latex if r"\boxed" in latex.value]


@pytest.fixture
def explorer() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_hands_the_browser_its_state_and_the_library_tables(explorer: AppTest) -> None:
    args = component_args(explorer)
    assert args["view"] == ex.ExplorerState().to_browser() and args["push"] == 0
    assert args["tables"] == json.loads(json.dumps(ex.browser_tables()))
    assert len(boxed(explorer)) == 1 and r"\rho(x,1,c)" in boxed(explorer)[0]
    assert any("loss chosen above (α = 1, c = 1)" in text for text in texts(explorer))
    assert not any("core." in text for text in texts(explorer))  # captions name no internal modules
    assert explorer.metric[0].label == "Fitted α"


def test_the_server_follows_the_browser_when_a_drag_ends(explorer: AppTest) -> None:
    report(explorer, "tab:1", alpha=0.5, scale=2.0)
    assert component_args(explorer)["view"]["alpha"] == 0.5
    assert len(boxed(explorer)) == 1 and r"\frac{|\alpha-2|}{\alpha}" in boxed(explorer)[0]
    log_z = rf"\log Z(0.5) = {float(log_partition(0.5)):.6f}"
    assert sum(log_z in latex.value for latex in explorer.latex) == 1
    assert explorer.expander[0].label.endswith("at c = 2")
    assert "x = 6c = 12" in explorer.expander[0].markdown[0].value
    overlay = fit_chart(explorer)["data"][-1]
    assert overlay["name"] == "chosen above (α = 0.5, c = 2)"
    assert any("loss chosen above (α = 0.5, c = 2)" in text for text in texts(explorer))

    report(explorer, "tab:2", alpha=-INF, show_t=True)  # Welsch: no density
    assert r"\rho(x,-\infty,c)" in boxed(explorer)[0]
    assert any(r"Z(\alpha) = \infty \text{ for } \alpha < 0" in latex.value for latex in explorer.latex)
    assert any(r"\log\Gamma" in latex.value for latex in explorer.latex)  # the t's formula, with its overlay
    assert len(fit_chart(explorer)["data"]) == 4
    assert any("(α = −∞, c = 2) has no density" in text for text in texts(explorer))


def test_a_malformed_report_is_refused_clearly(explorer: AppTest) -> None:
    report(explorer, "tab:1", scale=-3.0)
    assert any("cannot use" in error.value and "c > 0" in error.value for error in explorer.error)
    assert component_args(explorer)["view"]["scale"] == 1.0  # the state was kept
    explorer.run()
    assert not explorer.error  # said once


def test_show_the_fitted_loss_moves_the_browser_without_clamping_c(explorer: AppTest) -> None:
    report(explorer, "tab:1", half_width=8.0)  # the browser's last report before the click
    explorer.slider(key="explorer_fit_outliers").set_value(0.6)
    explorer.slider(key="explorer_fit_width").set_value(50.0)
    explorer.toggle(key="explorer_fit_one_sided").set_value(True)
    explorer.button(key="explorer_fit_submit").click().run()
    assert not explorer.exception
    assert explorer.metric[0].value == "3.000"
    assert any(w.value.startswith("α ended on the upper bound") for w in explorer.warning)
    fitted_c = float(explorer.metric[1].value)
    assert fitted_c > 5.0
    explorer.button(key="explorer_use_fit").click().run()
    args = component_args(explorer)
    assert args["push"] == 1  # the browser takes the server's state
    assert args["view"]["alpha"] == pytest.approx(3.0, abs=1e-3)
    assert args["view"]["scale"] == pytest.approx(fitted_c, abs=5e-4) and args["view"]["half_width"] == 100.0
    assert any("the x range is now ±100" in c.value for c in explorer.caption)
    # the component keeps returning the report from before the click: it must not undo the fit
    explorer.run()
    assert component_args(explorer)["view"]["scale"] == pytest.approx(fitted_c, abs=5e-4)
    report(explorer, "tab:2", scale=1.0)  # a new report does apply
    assert component_args(explorer)["view"]["scale"] == 1.0
    assert not any("the x range is now" in c.value for c in explorer.caption)  # the note went with the state


def test_a_report_that_comes_with_the_fit_click_does_not_undo_the_fit(explorer: AppTest) -> None:
    # The browser sent its report (log y on, α = 0.5) and the user clicked before the rerun ran: both
    # arrive in one run, the click's callback first. The fit must win, the report's switches stay.
    fitted_alpha = float(explorer.metric[0].value)
    pending = {**ex.ExplorerState(alpha=0.5, log_y=True).to_browser(), "event": "tab:9"}
    explorer.session_state[LIVE_KEY] = pending
    explorer.button(key="explorer_use_fit").click().run()
    assert not explorer.exception
    view = component_args(explorer)["view"]
    assert view["alpha"] == pytest.approx(fitted_alpha, abs=5e-4) and view["log_y"] is True
    assert component_args(explorer)["push"] == 1


def test_the_explorer_keeps_its_state_across_a_page_switch() -> None:
    at = AppTest.from_file(str(REPO / "app.py"), default_timeout=120)
    at.run()
    at.switch_page("pages/loss_explorer.py").run()
    report(at, "tab:1", alpha=-2.0, scale=2.5, log_y=True)
    at.switch_page("pages/home.py").run()
    at.switch_page("pages/loss_explorer.py").run()
    assert not at.exception
    view = component_args(at)["view"]
    assert (view["alpha"], view["scale"], view["log_y"]) == (-2.0, 2.5, True)
