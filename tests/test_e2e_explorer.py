"""End to end in a real browser (headless Debian Chromium under Playwright).

- The explorer's browser maths (pages/components/loss_explorer/frontend/loss_math.js) evaluated in Chromium on a
  grid of α, c and x, against core.losses in float64: ρ, ψ, ψ/x, log Z from core.explorer's table,
  the NLL, the density and the Student's t NLL.
- `streamlit run app.py` on a free port: the α and c sliders dragged with the mouse through 30 positions
  over one second; the ρ chart's pixels are watched every animation frame, and must change at least 20
  times during the drag and show the final α within 100 ms of the last move; the server then hears the
  final value (the fit panel's sentence below the component names it).
- The controls a user clicks: presets, ±∞ from the keyboard, the α < 0 info box, "Show the fitted loss
  above" (the server moving the sliders), with screenshots at 1280×800 in the test's tmp_path.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from playwright.sync_api import expect

from core import explorer as ex
from core.losses import log_partition, nll, psi, rho, students_t_nll, weight

pytest_plugins = ["browser_harness"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
LOSS_MATH_JS = REPO / "pages" / "components" / "loss_explorer" / "frontend" / "loss_math.js"
INF = float("inf")

# α near every member whose generic form divides by zero, and on both sides of 0 and 2.
ALPHAS = [-INF, -10.0, -2.0, -0.5, -1e-3, -1e-7, 0.0, 1e-9, 1e-6, 1e-4, 1e-3, 0.01, 0.3, 1.0, 1.5, 1.9, 1.999,
          1.99999, 2 - 1e-7, 2.0, 2 + 1e-7, 2.00001, 2.001, 2.1, 3.0, 4.7, 10.0, INF]
SCALES = [0.01, 0.05, 0.7, 1.0, 3.3, 20.0, 100.0]
XS = sorted({*np.linspace(-30, 30, 41).tolist(), 0.0, 1e-3, -1e-3, 0.1, -0.1, 0.5, 2.5, -7.0})

EVALUATE_JS = """
({alphas, scales, xs, table, nus, tConstants}) => {
  const M = window.RobustLossMath;
  const out = {rho: [], psi: [], weight: [], nll: [], logZ: [], t: []};
  for (const a of alphas.map(M.alphaFromJson)) {
    out.logZ.push(M.logZ(a, table));
    for (const c of scales) {
      for (const x of xs) {
        out.rho.push(M.rho(x, a, c));
        out.psi.push(M.psi(x, a, c));
        out.weight.push(M.weight(x, a, c));
        out.nll.push(a >= 0 ? M.nll(x, a, c, table) : null);
      }
    }
  }
  nus.forEach((nu, i) => {
    for (const c of scales) {
      for (const x of xs) out.t.push(M.studentsTNll(x, nu, M.studentsTScale(c, nu), tConstants[i]));
    }
  });
  return out;
}
"""


def _assert_close(name: str, got: np.ndarray, want: np.ndarray, rtol: float = 1e-5) -> None:
    """Relative agreement where the library's value is finite; where it has left float64's range (core.losses
    saturates at the largest float, the browser says Infinity) both must be beyond it."""
    beyond = ~np.isfinite(want) | (np.abs(want) >= np.finfo(np.float64).max)
    assert np.all(np.abs(got[beyond]) >= np.finfo(np.float64).max), f"{name}: finite where the library overflows"
    ok = ~beyond
    error = np.abs(got[ok] - want[ok]) / np.maximum(np.abs(want[ok]), 1e-300)
    worst = int(np.argmax(error))
    assert error[worst] <= rtol, f"{name}: relative error {error[worst]:.2e} at flat index {worst}"


def test_browser_maths_are_core_losses(browser_page: Any) -> None:
    page = browser_page
    page.set_content("<!doctype html><title>loss maths</title>")
    page.add_script_tag(path=str(LOSS_MATH_JS))
    table = ex.log_partition_table()
    nus = list(ex.NU_OPTIONS)
    got = page.evaluate(EVALUATE_JS, {
        "alphas": [ex.alpha_to_json(a) for a in ALPHAS], "scales": SCALES, "xs": XS, "table": table.to_browser(),
        "nus": nus, "tConstants": [ex.students_t_constant(nu) for nu in nus],
    })
    x = torch.tensor(XS, dtype=torch.float64)[None, None, :]
    c = torch.tensor(SCALES, dtype=torch.float64)[None, :, None]
    a = torch.tensor(ALPHAS, dtype=torch.float64)[:, None, None]
    with torch.no_grad():
        for name, fn in (("rho", rho), ("psi", psi), ("weight", weight)):
            want = fn(x, a, c).expand(len(ALPHAS), len(SCALES), len(XS)).reshape(-1).numpy()
            _assert_close(name, np.array(got[name], dtype=np.float64), want)
        dense = [i for i, alpha in enumerate(ALPHAS) if alpha >= 0]
        want_nll = nll(x, a[dense], c).reshape(-1).numpy()
        got_nll = np.array(got["nll"], dtype=object).reshape(len(ALPHAS), -1)[dense].astype(np.float64).reshape(-1)
        _assert_close("nll", got_nll, want_nll)
        _assert_close("density", np.exp(-got_nll), np.exp(-want_nll))
        got_log_z = np.array(got["logZ"], dtype=np.float64)[dense]
        want_log_z = log_partition(torch.tensor([ALPHAS[i] for i in dense], dtype=torch.float64)).numpy()
        assert np.max(np.abs(got_log_z - want_log_z)) < 1e-6
        xs = torch.tensor(XS, dtype=torch.float64)
        want_t = np.concatenate([students_t_nll(xs, nu, ex.students_t_scale(s, nu)).numpy()
                                 for nu in nus for s in SCALES])
        _assert_close("students_t", np.array(got["t"], dtype=np.float64), want_t)
    assert [ex.alpha_label(alpha) for alpha in ALPHAS] == page.evaluate(
        "(alphas) => alphas.map((a) => RobustLossMath.alphaLabel(RobustLossMath.alphaFromJson(a)))",
        [ex.alpha_to_json(alpha) for alpha in ALPHAS])
    rules = [[op, ex.alpha_to_json(bound), text] for op, bound, text in ex.DESCRIPTION_RULES]
    options = [ex.alpha_to_json(alpha) for alpha in ex.ALPHA_OPTIONS]
    described = page.evaluate(
        "([alphas, rules]) => alphas.map((a) => RobustLossMath.describe(RobustLossMath.alphaFromJson(a), rules))",
        [options, rules])
    assert described == [ex.describe(alpha) for alpha in ex.ALPHA_OPTIONS]
    # numbers as the page writes them, exact ties (1.625, 20.25, 0.125) included
    numbers = [*ex.SCALE_OPTIONS, *ex.HALF_WIDTH_OPTIONS, *ex.NU_OPTIONS, 1.625, 20.25, 0.125, 9.996, 20.236, 0.0101]
    assert page.evaluate("(values) => values.map(RobustLossMath.numberLabel)", numbers) == [
        ex.number_label(v) for v in numbers]
    ties = [1.625, -1.625, 0.125, 2.675, 1.635, -0.005, 0.015]
    assert page.evaluate("(values) => values.map((v) => RobustLossMath.alphaLabel(v))", ties) == [
        ex.alpha_label(v) for v in ties]


def test_log_z_interpolation_between_knots_in_the_browser(browser_page: Any) -> None:
    # 20,000 α between the table's knots, where interpolation errs most, including α within 1e-5 of 0 and 2.
    page = browser_page
    page.set_content("<!doctype html><title>log Z</title>")
    page.add_script_tag(path=str(LOSS_MATH_JS))
    table = ex.log_partition_table()
    rng = np.random.default_rng(0)
    alphas = np.concatenate([rng.uniform(0, 10, 16000), 2 + rng.normal(0, 1e-5, 2000), rng.uniform(0, 1e-5, 2000)])
    alphas = np.clip(alphas, 0, 10)
    got = np.array(page.evaluate("([alphas, table]) => alphas.map((a) => RobustLossMath.logZ(a, table))",
                                 [alphas.tolist(), table.to_browser()]))
    want = log_partition(torch.tensor(alphas, dtype=torch.float64)).numpy()
    assert np.max(np.abs(got - want)) < 1e-6
    assert page.evaluate("(t) => RobustLossMath.logZ(Infinity, t)", table.to_browser()) == pytest.approx(
        0.70526025442, abs=1e-8)
    assert math.isnan(page.evaluate("(t) => RobustLossMath.logZ(-0.5, t)", table.to_browser()))


# ---------------------------------------------------------------------------------------------------------
# The app in the browser.

IFRAME = 'iframe[title="pages.components.loss_explorer.loss_explorer"]'
COMPONENT = "pages.components.loss_explorer.loss_explorer"


@pytest.fixture
def explorer_page(streamlit_app: str, chromium: Any, wait_for_app: Callable[..., None],
                  component_frame: Callable[..., Any]) -> Iterator[Any]:
    """The Loss Explorer at 1280×800, idle, in a fresh browser context (a fresh session)."""
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(f"{streamlit_app}/loss_explorer")
        wait_for_app(page, timeout_ms=120_000)
        component_frame(page, COMPONENT, ready="#heading:not(:empty)")
        yield page
    finally:
        context.close()


@pytest.fixture
def frame(explorer_page: Any, component_frame: Callable[..., Any]) -> Any:
    """The explorer component's frame on `explorer_page`."""
    return component_frame(explorer_page, COMPONENT, ready="#heading:not(:empty)")


def check_drag(log: dict[str, Any], value_text: str, what: str) -> tuple[int, float]:
    """≥ 20 redraws of ρ during the drag, the final one within 100 ms of the last move and showing the
    final value; returns (redraws during the drag, ms from the last move to the last redraw)."""
    moves, frames = log["moves"], log["frames"]
    assert len(moves) >= 30, f"only {len(moves)} pointer moves reached the component"
    first, last = moves[0], moves[-1]
    during = [t for t in frames if first <= t <= last]
    assert len(during) >= 20, f"ρ redrawn {len(during)} times while {what} was dragged"
    assert frames[-1] >= last, "no redraw after the last move"
    latency = frames[-1] - last
    assert latency <= 100, f"the final frame came {latency:.0f} ms after the last move"
    assert value_text in log["labels"][-1], (value_text, log["labels"][-1])
    return len(during), latency


def test_dragging_alpha_redraws_rho_at_the_speed_of_the_hand(
    explorer_page: Any, frame: Any, slider_drag: Callable[..., Any], tmp_path: Path
) -> None:
    page = explorer_page
    frame.locator("#panel-rho").scroll_into_view_if_needed()
    log = slider_drag(page, frame, "#alpha", 0.55, 0.2, watch='canvas[data-chart="rho"]')
    final = frame.locator("#alpha").get_attribute("aria-valuetext")
    assert final not in ("1", None)
    check_drag(log, f"α = {final},", "α")
    assert frame.locator("#heading").inner_text().startswith(f"α = {final}, c = 1")
    # the server hears the final α when the drag ends: the fit panel prices the chosen loss
    page.get_by_text(f"loss chosen above (α = {final}, c = 1)").wait_for(timeout=30_000)
    page.wait_for_timeout(500)
    assert frame.locator("#alpha").get_attribute("aria-valuetext") == final  # the rerun did not pull it back
    page.screenshot(path=str(tmp_path / "after_alpha_drag.png"))


def test_dragging_c_redraws_rho_at_the_speed_of_the_hand(
    explorer_page: Any, frame: Any, slider_drag: Callable[..., Any]
) -> None:
    page = explorer_page
    frame.locator("#panel-rho").scroll_into_view_if_needed()
    log = slider_drag(page, frame, "#scale", 0.5, 0.15, watch='canvas[data-chart="rho"]')
    final = frame.locator("#scale").get_attribute("aria-valuetext")
    assert final not in ("1", None)
    check_drag(log, f"c = {final},", "c")
    page.get_by_text(f"loss chosen above (α = 1, c = {final})").wait_for(timeout=30_000)


def test_every_control_of_the_explorer(explorer_page: Any, frame: Any, tmp_path: Path) -> None:
    page = explorer_page
    heading = frame.locator("#heading")
    # the named cases, one click away; the pill of the case shown is lit
    for button, alpha, name in [("Welsch −∞", "−∞", "Welsch"), ("Cauchy 0", "0", "Cauchy"), ("L2 2", "2", "L2"),
                                ("Geman-McClure −2", "−2", "Geman-McClure")]:
        frame.get_by_role("button", name=button).click()
        expect(heading).to_have_text(f"α = {alpha}, c = 1 · {name}")
        expect(frame.get_by_role("button", name=button)).to_have_attribute("aria-pressed", "true")
    # α < 0 has no density: the info box stands where −log p and p were, and log Z is "—"
    expect(frame.locator("#no-density")).to_be_visible()
    expect(frame.locator("#panel-nll")).to_be_hidden()
    expect(frame.locator("#no-density")).to_contain_text("No likelihood at α = −2")
    expect(frame.locator("#metric-logz")).to_have_text("—")
    expect(frame.locator("#metric-limit")).to_have_text("2")
    frame.locator("#panel-tradeoff").scroll_into_view_if_needed()
    page.screenshot(path=str(tmp_path / "geman_mcclure.png"))
    page.get_by_text("loss chosen above (α = −2, c = 1) has no density").wait_for(timeout=30_000)

    # ±∞ from the keyboard, at the ends of the α slider
    frame.locator("#alpha").focus()
    page.keyboard.press("End")
    expect(heading).to_have_text("α = +∞, c = 1 · +∞ limit")
    expect(frame.locator("#metric-logz")).to_have_text("0.70526")
    page.keyboard.press("Home")
    expect(heading).to_have_text("α = −∞, c = 1 · Welsch")

    # the switches and the x range redraw the charts' descriptions and legend
    frame.get_by_role("button", name="Charbonnier 1").click()
    frame.get_by_label("Student's t beside −log p").check()
    nll_chart = frame.locator('canvas[data-chart="nll"]')
    expect(nll_chart).to_have_attribute("aria-label", re.compile("Student's t at ν = 3$"))
    expect(frame.locator("#legend")).to_contain_text("Student's t, ν = 3")
    frame.locator("#nu").focus()
    page.keyboard.press("ArrowRight")
    expect(nll_chart).to_have_attribute("aria-label", re.compile("Student's t at ν = 4$"))
    frame.locator("#range").focus()
    page.keyboard.press("ArrowRight")
    expect(frame.locator('canvas[data-chart="rho"]')).to_have_attribute("aria-label", re.compile("x from −7 to 7"))
    frame.get_by_label("Log y axis").check()
    frame.get_by_label("Fit y axes to the named cases").uncheck()
    # hovering a chart reads the chosen curve at the pointer
    box = frame.locator('canvas[data-chart="rho"]').bounding_box()
    page.mouse.move(box["x"] + box["width"] * 0.55, box["y"] + box["height"] / 2)
    expect(frame.locator("#panel-rho .readout")).to_have_text(re.compile(r"^x = \S+ · ρ = \S+$"))

    # the server moves the sliders: "Show the fitted loss above" (the page says what it showed)
    button = page.get_by_role("button", name="Show the fitted loss above")
    button.scroll_into_view_if_needed()
    button.click()
    sentence = re.compile(r"^Shown above: α = (\S+), c = (\d+(?:\.\d+)?)")
    shown = page.get_by_text(sentence)
    shown.wait_for(timeout=30_000)
    alpha, c = sentence.match(shown.inner_text()).groups()
    expect(heading).to_have_text(f"α = {alpha}, c = {c} · general α", timeout=30_000)
    expect(frame.locator("#scale")).to_have_attribute("aria-valuetext", c)
    page.get_by_text(f"loss chosen above (α = {alpha}, c = {c})").wait_for(timeout=30_000)
    page.screenshot(path=str(tmp_path / "fitted.png"))
    assert (tmp_path / "fitted.png").stat().st_size > 20_000
