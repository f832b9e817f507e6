"""End to end in a real browser: `streamlit run app.py` on a free port, headless Chromium (Playwright)
opens the Loss Explorer, moves the α slider with the keyboard, and the page shows the new α and a
redrawn ρ chart whose values are core.losses' ρ at the new α. A screenshot goes to the test's tmp_path."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core.losses import rho

pytest_plugins = ["browser_harness"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

# The chosen curve of a chart (the trace drawn last), as plain numbers, whatever form plotly.js keeps.
CHOSEN_TRACE_JS = """
(chart) => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find((el) => el.layout && el.layout.meta && el.layout.meta.chart === chart);
  if (!gd) return null;
  const decode = (a) => {
    if (a && a.bdata) {
      const bytes = Uint8Array.from(atob(a.bdata), (c) => c.charCodeAt(0));
      return Array.from(a.dtype === 'f8' ? new Float64Array(bytes.buffer) : new Float32Array(bytes.buffer));
    }
    return Array.from(a);
  };
  const trace = gd.data[gd.data.length - 1];
  return {name: trace.name, x: decode(trace.x), y: decode(trace.y)};
}
"""


def _chosen(page: Any) -> dict[str, Any]:
    trace = page.evaluate(CHOSEN_TRACE_JS, "rho")
    assert trace is not None, "no ρ chart on the page"
    return trace


def test_moving_alpha_redraws_the_explorer(
    streamlit_app: str, browser_page: Any, wait_for_app: Callable[..., None], tmp_path: Path
) -> None:
    page = browser_page
    page.goto(f"{streamlit_app}/loss_explorer")
    page.get_by_text("α = 1, c = 1 · Charbonnier").wait_for(timeout=120_000)
    wait_for_app(page, timeout_ms=120_000)
    # Served through app.py's menu, not Streamlit's legacy listing of every file in pages/.
    nav = page.locator('[data-testid="stSidebarNav"]').inner_text()
    assert "Loss Explorer" in nav and "chrome" not in nav

    before = _chosen(page)
    assert before["name"] == "α = 1"

    slider = page.get_by_role("slider", name="Shape α")
    slider.focus()
    page.keyboard.press("ArrowRight")
    page.get_by_text("α = 1.1, c = 1").wait_for(timeout=30_000)
    page.wait_for_function(f"() => ({CHOSEN_TRACE_JS})('rho')?.name === 'α = 1.1'", timeout=30_000)
    assert slider.get_attribute("aria-valuetext") == "1.1"

    after = _chosen(page)
    x, y = np.array(after["x"]), np.array(after["y"])
    expected = rho(torch.tensor(x, dtype=torch.float32), 1.1, 1.0).numpy()
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(y, np.array(before["y"]))  # the chart was redrawn with the new curve

    shot = tmp_path / "loss_explorer.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 20_000
