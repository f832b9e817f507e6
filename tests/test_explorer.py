"""The Loss Explorer: core.explorer's numbers against closed forms, and the page (AppTest) computing and
drawing what its controls say. Chart values are read back from the figures' JSON the page sends."""

from __future__ import annotations

import ast
import base64
import itertools
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from streamlit.testing.v1 import AppTest

from core import explorer as ex
from core.losses import log_partition

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "loss_explorer.py")
INF = float("inf")


def closed_rho(x: np.ndarray, alpha: float, c: float) -> np.ndarray:
    """ρ of the named cases written out in float64 (Barron 2019, the special cases of eq. 1)."""
    z = (np.asarray(x, dtype=np.float64) / c) ** 2
    if alpha == -INF:
        return 1 - np.exp(-z / 2)
    if alpha == -2:
        return 2 * z / (z + 4)
    if alpha == 0:
        return np.log1p(z / 2)
    if alpha == 1:
        return np.sqrt(z + 1) - 1
    if alpha == 2:
        return z / 2
    if alpha == INF:
        return np.expm1(z / 2)
    b = abs(alpha - 2)
    return b / alpha * ((z / b + 1) ** (alpha / 2) - 1)


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


def test_alpha_options_reach_every_case() -> None:
    options = ex.ALPHA_OPTIONS
    assert options[0] == -INF and options[-1] == INF
    assert -10.0 in options and 10.0 in options
    assert all(case.alpha in options for case in ex.NAMED_CASES)
    assert list(options) == sorted(options) and len(set(options)) == len(options) == 203


@pytest.mark.parametrize("alpha", [-INF, -2.0, 0.0, 1.0, 2.0, 0.5, 3.7, -6.3])
def test_curve_table_matches_closed_forms(alpha: float) -> None:
    c = 1.7
    table = ex.curve_table(alpha, c, 8.0)
    np.testing.assert_allclose(table.rho, closed_rho(table.x, alpha, c), rtol=2e-5, atol=1e-6)
    # ψ is dρ/dx: central differences of the float64 closed form.
    h = 1e-4
    fd = (closed_rho(table.x.astype(np.float64) + h, alpha, c) - closed_rho(table.x.astype(np.float64) - h, alpha, c))
    np.testing.assert_allclose(table.psi, fd / (2 * h), rtol=1e-3, atol=1e-5)
    nonzero = table.x != 0
    np.testing.assert_allclose(table.weight[nonzero], table.psi[nonzero] / table.x[nonzero], rtol=1e-4, atol=1e-7)
    np.testing.assert_allclose(table.weight[~nonzero], 1 / c**2, rtol=1e-5)  # ψ/x → 1/c² at x = 0
    if alpha >= 0:
        log_z = float(log_partition(alpha))
        assert table.log_z == pytest.approx(log_z, abs=1e-6)
        np.testing.assert_allclose(table.nll, table.rho + math.log(c) + log_z, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(table.density, np.exp(-table.nll), rtol=1e-6)
    else:
        assert table.nll is None and table.density is None and table.log_z is None
        assert np.nanmax(table.rho) < ex.rho_limit(alpha)  # bounded: a far outlier costs a constant


@pytest.mark.parametrize("alpha", [0.5, 1.0, 2.0, 3.0, INF])
def test_density_integrates_to_one(alpha: float) -> None:
    table = ex.curve_table(alpha, 0.8, 40.0, points=40001)
    assert np.trapezoid(table.density, table.x) == pytest.approx(1.0, abs=2e-3)


def test_batched_tables_match_one_call_per_alpha() -> None:
    alphas = [-INF, -2.0, 0.0, 1.0, 2.0, INF, 4.2]
    batched = ex.curve_tables(alphas, 0.9, 5.0)
    for alpha, table in zip(alphas, batched, strict=True):
        single = ex.curve_table(alpha, 0.9, 5.0)
        for quantity in ("rho", "psi", "weight", "nll", "density"):
            a, b = getattr(table, quantity), getattr(single, quantity)
            assert (a is None) == (b is None)
            if a is not None:
                np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)  # same maths, vectorised


def test_plus_infinity_overflow_is_a_gap_not_inf() -> None:
    table = ex.curve_table(INF, 1.0, 30.0)
    for quantity in ("rho", "psi", "weight", "nll"):
        values = getattr(table, quantity)
        assert not np.isinf(values).any()
        assert np.isnan(values[0]) and np.isfinite(values[len(values) // 2])
    mid = len(table.x) // 2
    assert table.rho[mid] == 0.0


def test_reference_tables_are_the_named_cases() -> None:
    refs = ex.reference_tables(1.0, 6.0)
    assert list(refs) == ["welsch", "geman_mcclure", "cauchy", "charbonnier", "l2"]
    assert [t.alpha for t in refs.values()] == [-INF, -2.0, 0.0, 1.0, 2.0]


def test_tradeoff_lower_alpha_costs_more_for_inliers_less_for_outliers() -> None:
    rows = ex.tradeoff_costs(1.3)
    inlier = [r.inlier_cost for r in rows]
    outlier = [r.outlier_cost for r in rows]
    assert [r.alpha for r in rows] == list(ex.TRADEOFF_ALPHAS)
    assert all(a > b for a, b in itertools.pairwise(inlier))
    assert all(a < b for a, b in itertools.pairwise(outlier))
    assert inlier[0] == pytest.approx(math.log(1.3) + math.log(math.pi * math.sqrt(2)), abs=1e-5)
    x, curves = ex.nll_curves(ex.TRADEOFF_ALPHAS, 1.3, 6.0)
    assert curves.shape == (len(ex.TRADEOFF_ALPHAS), x.size)
    with pytest.raises(ValueError, match="α ≥ 0"):
        ex.nll_curves((-1.0, 1.0), 1.0, 6.0)


def test_formula_rows_highlight_exactly_the_case_that_applies() -> None:
    for alpha, key in [(0.0, "cauchy"), (-INF, "welsch"), (2.0, "l2"), (INF, "plus_inf"), (0.5, "general")]:
        active = [row.key for row in ex.formula_rows(alpha) if row.active]
        assert active == [key]


def test_labels_and_descriptions() -> None:
    assert [ex.alpha_label(a) for a in (-INF, INF, 0.0, -0.0, 1.5, -2.0, 0.1)] == ["−∞", "+∞", "0", "0", "1.5",
                                                                                   "−2", "0.1"]
    assert ex.alpha_latex(-INF) == r"-\infty"
    assert ex.rho_limit(-2.0) == 2.0 and ex.rho_limit(-INF) == 1.0 and ex.rho_limit(0.0) == INF
    assert len({ex.describe(a) for a in (-INF, -2.0, 0.0, 0.5, 1.0, 1.5, 2.0, 3.0, INF)}) == 9


def test_display_range_ignores_gaps_and_pads() -> None:
    lo, hi = ex.display_range([np.array([0.0, np.nan, 10.0]), None])
    assert lo == pytest.approx(-0.5) and hi == pytest.approx(10.5)
    assert ex.display_range([np.array([np.nan])]) is None


def test_bad_input_names_the_fix() -> None:
    with pytest.raises(ValueError, match="c > 0"):
        ex.curve_table(1.0, 0.0, 6.0)
    with pytest.raises(ValueError, match="NaN"):
        ex.curve_table(float("nan"), 1.0, 6.0)
    with pytest.raises(ValueError, match="odd"):
        ex.x_grid(6.0, 100)
    with pytest.raises(ValueError, match="outlier_fraction"):
        ex.make_data(ex.FitSettings(outlier_fraction=1.0))
    with pytest.raises(ValueError, match="two finite"):
        ex.fit_adaptive(np.array([1.0, np.nan]))


def test_make_data_is_seeded_and_counts_outliers() -> None:
    settings = ex.FitSettings(n=1000, outlier_fraction=0.25, one_sided=True, outlier_width=10.0, seed=3)
    a, b = ex.make_data(settings), ex.make_data(settings)
    np.testing.assert_array_equal(a.x, b.x)
    assert a.is_outlier.sum() == 250
    assert (a.x[a.is_outlier] >= 0).all() and (a.x[a.is_outlier] <= 10.0).all()
    other = ex.make_data(ex.FitSettings(n=1000, outlier_fraction=0.25, seed=4))
    assert not np.array_equal(a.x, other.x)


def test_fit_recovers_alpha_and_scale_of_clean_data() -> None:
    data = ex.make_data(ex.FitSettings(n=4000, outlier_fraction=0.0, inlier_alpha=1.0, inlier_scale=2.0, seed=1))
    result = ex.fit_adaptive(data.x)
    assert result.alpha == pytest.approx(1.0, abs=0.2)
    assert result.scale == pytest.approx(2.0, rel=0.1)
    assert result.loc == pytest.approx(0.0, abs=0.15)
    assert result.history[-1] <= result.history[0]
    assert result.mean_nll == pytest.approx(result.history[-1], abs=1e-3)


def test_fit_resists_one_sided_outliers_that_pull_the_mean() -> None:
    data = ex.make_data(ex.FitSettings(n=2000, outlier_fraction=0.3, one_sided=True, seed=0))
    result = ex.fit_adaptive(data.x)
    assert result.mean > 2.0  # the Gaussian fit is dragged toward the outliers
    assert abs(result.loc) < 0.5  # the adaptive fit stays with the inliers
    assert result.alpha < 1.0  # and chooses a heavy tail
    curves = ex.fit_curves(data, result)
    total = (curves.inlier_density + curves.outlier_density).sum() * curves.bin_width
    assert total == pytest.approx(1.0, abs=1e-9)
    # The fitted density peaks at the fitted location; its heavy tails reach past the data's range.
    assert abs(curves.x[np.argmax(curves.fitted_density)] - result.loc) < 2 * (curves.x[1] - curves.x[0])
    assert 0.8 < np.trapezoid(curves.fitted_density, curves.x) <= 1.0 + 1e-3


# ------------------------------------------------------------------------------------------------------
# The page, through AppTest


def decode(array: Any) -> np.ndarray:
    """A trace's x or y from figure JSON: plotly's typed array {"dtype", "bdata"} or a plain list."""
    if isinstance(array, dict) and "bdata" in array:
        values = np.frombuffer(base64.b64decode(array["bdata"]), dtype=np.dtype(array["dtype"]).newbyteorder("<"))
        return values.astype(np.float64)
    return np.asarray(array, dtype=np.float64)


def charts(at: AppTest) -> dict[str, dict[str, Any]]:
    """The page's plotly figures, keyed by the `layout.meta.chart` name the page gives each."""
    specs = [json.loads(element.proto.spec) for element in at.get("plotly_chart")]
    return {spec["layout"]["meta"]["chart"]: spec for spec in specs}


def chosen_trace(spec: dict[str, Any]) -> tuple[np.ndarray, np.ndarray]:
    """The chosen α's curve: the trace drawn last (over the faint named cases)."""
    trace = spec["data"][-1]
    return decode(trace["x"]), decode(trace["y"])


@pytest.fixture
def explorer() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def test_page_default_view_draws_charbonnier(explorer: AppTest) -> None:
    view = explorer.session_state["explorer_view"]
    assert view["alpha"] == 1.0 and view["case"] == "charbonnier" and view["scale"] == 1.0
    figures = charts(explorer)
    assert set(figures) == {"rho", "psi", "weight", "nll", "density", "tradeoff", "fit"}
    x, y = chosen_trace(figures["rho"])
    assert x[0] == -6.0 and x[-1] == 6.0
    np.testing.assert_allclose(y, np.sqrt(x**2 + 1) - 1, rtol=1e-5, atol=1e-6)
    names = [trace["name"] for trace in figures["rho"]["data"][:-1]]
    assert names == ["Welsch −∞", "Geman-McClure −2", "Cauchy 0", "Charbonnier 1", "L2 2"]
    assert explorer.pills(key="explorer_preset").value == "charbonnier"


def test_moving_alpha_changes_what_the_page_computes(explorer: AppTest) -> None:
    before = chosen_trace(charts(explorer)["rho"])[1]
    explorer.select_slider(key="explorer_alpha").set_value(0.0).run()
    assert not explorer.exception
    assert explorer.session_state["explorer_view"]["alpha"] == 0.0
    assert explorer.pills(key="explorer_preset").value == "cauchy"  # the slider lights its preset
    x, after = chosen_trace(charts(explorer)["rho"])
    np.testing.assert_allclose(after, np.log1p(x**2 / 2), rtol=1e-5, atol=1e-6)
    assert not np.allclose(before, after)
    density_x, density = chosen_trace(charts(explorer)["density"])
    np.testing.assert_allclose(density, 1 / (math.pi * math.sqrt(2) * (density_x**2 / 2 + 1)), rtol=1e-4)

    explorer.select_slider(key="explorer_alpha").set_value(0.5).run()
    assert explorer.pills(key="explorer_preset").value is None
    boxed = [latex.value for latex in explorer.latex if r"\boxed" in latex.value]
    assert len(boxed) == 1 and r"\frac{|\alpha-2|}{\alpha}" in boxed[0]
    x, y = chosen_trace(charts(explorer)["rho"])
    np.testing.assert_allclose(y, closed_rho(x, 0.5, 1.0), rtol=1e-5, atol=1e-6)


def test_preset_welsch_sets_minus_infinity_and_drops_the_likelihood(explorer: AppTest) -> None:
    explorer.pills(key="explorer_preset").set_value("welsch").run()
    assert not explorer.exception
    assert explorer.select_slider(key="explorer_alpha").value == -INF
    view = explorer.session_state["explorer_view"]
    assert view["alpha"] == -INF and view["case"] == "welsch" and view["log_z"] is None
    figures = charts(explorer)
    assert "nll" not in figures and "density" not in figures
    assert any("No likelihood" in info.value for info in explorer.info)
    x, y = chosen_trace(figures["rho"])
    np.testing.assert_allclose(y, 1 - np.exp(-(x**2) / 2), rtol=1e-5, atol=1e-6)
    boxed = [latex.value for latex in explorer.latex if r"\boxed" in latex.value]
    assert len(boxed) == 1 and r"\rho(x,-\infty,c)" in boxed[0]


def test_plus_infinity_scale_and_range_controls(explorer: AppTest) -> None:
    explorer.select_slider(key="explorer_alpha").set_value(INF).run()
    explorer.slider(key="explorer_scale").set_value(2.0).run()
    explorer.slider(key="explorer_range").set_value(10.0).run()
    assert not explorer.exception
    view = explorer.session_state["explorer_view"]
    assert (view["alpha"], view["scale"], view["half_width"]) == (INF, 2.0, 10.0)
    x, y = chosen_trace(charts(explorer)["rho"])
    assert x[0] == -10.0 and x[-1] == 10.0
    np.testing.assert_allclose(y, np.expm1((x / 2) ** 2 / 2), rtol=1e-5)
    assert view["log_z"] == pytest.approx(0.70526025442, abs=1e-5)


def test_y_axes_fit_the_named_cases_unless_told_not_to(explorer: AppTest) -> None:
    explorer.select_slider(key="explorer_alpha").set_value(8.0).run()
    rho_layout = charts(explorer)["rho"]["layout"]
    _, hi = rho_layout["yaxis"]["range"]
    assert hi == pytest.approx(18 * 1.05, rel=1e-3)  # L2's ρ at x = 6 is the highest named case
    assert np.nanmax(chosen_trace(charts(explorer)["rho"])[1]) > hi  # α = 8 runs off the top
    explorer.toggle(key="explorer_clip").set_value(False).run()
    assert "range" not in charts(explorer)["rho"]["layout"]["yaxis"]


def test_tradeoff_chart_shows_the_trade(explorer: AppTest) -> None:
    tradeoff = charts(explorer)["tradeoff"]
    traces = tradeoff["data"][: len(ex.TRADEOFF_ALPHAS)]
    middle = [decode(t["y"])[len(decode(t["x"])) // 2] for t in traces]  # x = 0
    edge = [decode(t["y"])[-1] for t in traces]  # x = 6
    assert all(a > b for a, b in itertools.pairwise(middle))
    assert all(a < b for a, b in itertools.pairwise(edge))


def test_every_figure_is_valid_plotly(explorer: AppTest) -> None:
    import plotly.graph_objects as go

    for name, spec in charts(explorer).items():
        go.Figure(spec)  # full validation: raises on any property plotly does not know
        assert spec["layout"]["template"] == {}, name


def test_fit_panel_refits_on_submit_and_feeds_the_charts(explorer: AppTest) -> None:
    fit = explorer.session_state["explorer_view"]["fit"]
    assert 0.0 <= fit["alpha"] < 0.5 and fit["outlier_fraction"] == 0.2  # 20% wide outliers: heavy tail
    explorer.slider(key="explorer_fit_outliers").set_value(0.0).run()
    assert explorer.session_state["explorer_view"]["fit"] == fit  # a form applies nothing until submitted
    explorer.slider(key="explorer_fit_outliers").set_value(0.0)
    explorer.button(key="explorer_fit_submit").click().run()
    assert not explorer.exception
    clean = explorer.session_state["explorer_view"]["fit"]
    assert clean["outlier_fraction"] == 0.0
    assert clean["alpha"] == pytest.approx(2.0, abs=0.3)  # Gaussian inliers: α near 2
    assert clean["scale"] == pytest.approx(1.0, rel=0.1)
    fit_chart = charts(explorer)["fit"]
    assert decode(fit_chart["data"][1]["y"]).sum() == 0.0  # no outliers in the histogram
    explorer.button(key="explorer_use_fit").click().run()
    assert explorer.session_state["explorer_view"]["alpha"] == pytest.approx(clean["alpha"], abs=0.051)
    assert explorer.session_state["explorer_view"]["scale"] == pytest.approx(clean["scale"], abs=0.006)
