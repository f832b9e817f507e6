"""End to end in a real browser: the Embeddings page under `streamlit run` in headless Chromium (Playwright,
SwiftShader WebGL), at 1280×800.

- WebGL contexts: a browser keeps about 16 live WebGL contexts a page and kills the
  oldest past that, and Streamlit replaces a chart (so plotly makes a new context) whenever its figure
  changes. An init script counts every WebGL context the page makes (held weakly, so counting keeps none
  alive) and the console's "Too many active WebGL contexts" messages; twelve camera steps with two 3-D
  scenes on the page, and a study's grid turned four times, must never pass the limit, and every chart
  on screen must keep drawing (its context alive, the SVG point picker full).
- 10,000 points: a short real Fashion-MNIST run whose embeddings are the official 10,000-image test split;
  the 3-D chart holds them all in ten class traces, the page stays responsive and a legend click hides a
  class within a couple of seconds."""

from __future__ import annotations

import io
import json
import shutil
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from core import datasets

pytest_plugins = ["browser_harness"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
POINTS = 10_000
TIMEOUT_MS = 180_000
CLASSES = list(datasets.dataset_info("fashion_mnist").classes)
SHIPPED_POINTS = 1500  # validation embeddings kept per shipped run

# Before any page script: count WebGL contexts (weakly held) and keep the console's context warnings.
COUNT_CONTEXTS_JS = """
window.__webgl = {made: 0, refs: []};
const getContext = HTMLCanvasElement.prototype.getContext;
HTMLCanvasElement.prototype.getContext = function (type, attributes) {
  const context = getContext.call(this, type, attributes);
  if (context && /webgl/i.test(String(type)) && !window.__webgl.refs.some((r) => r.deref() === context)) {
    window.__webgl.made += 1;
    window.__webgl.refs.push(new WeakRef(context));
  }
  return context;
};
"""
CONTEXTS_JS = """
() => {
  const alive = window.__webgl.refs.map((r) => r.deref()).filter((c) => c && !c.isContextLost());
  return {made: window.__webgl.made, alive: alive.length,
          onScreen: alive.filter((c) => c.canvas.isConnected).length};
}
"""
# Every plotly chart on the page: its kind, whether a 3-D scene's context is alive, how many SVG points.
CHARTS_JS = """
() => Array.from(document.querySelectorAll('.js-plotly-plot')).map((gd) => {
  const scene = gd._fullLayout && gd._fullLayout.scene && gd._fullLayout.scene._scene;
  const gl = scene && scene.glplot && scene.glplot.gl;
  return {scene: !!scene, webgl: gl ? !gl.isContextLost() : null,
          svgPoints: gd.querySelectorAll('.scatterlayer path.point').length};
})
"""


def _press(page: Any, label: str, key: str, times: int, wait: Callable[..., None]) -> None:
    """Move the slider labelled `label` by `times` key presses, one rerun each."""
    slider = page.locator('[data-testid="stSlider"]').filter(has_text=label).get_by_role("slider")
    for _ in range(times):
        slider.focus()
        page.keyboard.press(key)
        wait(page, timeout_ms=TIMEOUT_MS)


def _open_page(page: Any, url: str, wait: Callable[..., None], warnings: list[str]) -> None:
    page.on("console", lambda m: warnings.append(m.text) if "WebGL contexts" in m.text else None)
    page.add_init_script(COUNT_CONTEXTS_JS)
    page.goto(f"{url}/embeddings", timeout=TIMEOUT_MS)
    wait(page, timeout_ms=TIMEOUT_MS)


def test_webgl_contexts_stay_under_the_limit_through_repeated_reruns(
        streamlit_server: Callable[..., str], chromium: Any, wait_for_app: Callable[..., None],
        tmp_path: Path) -> None:
    # The shipped reference study's seven VAE runs (and their shared images), as the page's only runs.
    shipped = tmp_path / "checkpoints"
    for run in (REPO / "checkpoints").glob("fashion-mnist-reference-*"):
        if "-vqvae-" not in run.name:
            shutil.copytree(run, shipped / run.name)
    shutil.copytree(REPO / "checkpoints" / "images", shipped / "images")
    url = streamlit_server(env={"ROBUST_LOSS_LAB_RUNS": str(tmp_path / "runs"),
                                "ROBUST_LOSS_LAB_CHECKPOINTS": str(shipped)})
    context = chromium.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    warnings: list[str] = []
    try:
        _open_page(page, url, wait_for_app, warnings)
        page.get_by_text("Two side by side").click()
        wait_for_app(page, timeout_ms=TIMEOUT_MS)
        page.get_by_text("Projection and display settings").click()
        _press(page, "Azimuth", "ArrowRight", 12, wait_for_app)
        time.sleep(1.5)  # past the half second after which a replaced chart's context is released
        counts = page.evaluate(CONTEXTS_JS)
        charts = page.evaluate(CHARTS_JS)
        page.screenshot(path=str(tmp_path / "two-side-by-side.png"))
        assert counts["made"] >= 24, f"twelve camera steps should have redrawn both 3-D scenes: {counts}"
        assert not warnings, f"the browser dropped WebGL contexts: {warnings[:3]}"
        assert counts["alive"] <= 4 and counts["onScreen"] == 2, counts  # two scenes, the replaced ones released
        scenes = [c for c in charts if c["scene"]]
        assert len(scenes) == 2 and all(c["webgl"] for c in scenes), charts
        # The point picker is SVG (no WebGL context) and still holds every point.
        assert any(c["svgPoints"] == SHIPPED_POINTS for c in charts if not c["scene"]), charts

        # A study's grid: 2-D views through the shared camera, turned with it, without a single new context.
        page.get_by_text("A study (grid)").click()
        wait_for_app(page, timeout_ms=TIMEOUT_MS)
        before = page.evaluate(CONTEXTS_JS)
        _press(page, "Azimuth", "ArrowRight", 4, wait_for_app)
        time.sleep(1.5)
        after, charts = page.evaluate(CONTEXTS_JS), page.evaluate(CHARTS_JS)
        page.screenshot(path=str(tmp_path / "grid.png"))
        assert after["made"] == before["made"] and after["onScreen"] == 0, (before, after)
        assert len(charts) == 8 and all(c["svgPoints"] == SHIPPED_POINTS for c in charts), charts
        assert not warnings, warnings[:3]
    finally:
        context.close()


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root holding one real Fashion-MNIST run whose embeddings hold 10,000 real encoded images."""
    try:
        sizes = datasets.found_split_sizes("fashion_mnist")
    except datasets.DatasetMissing as exc:
        pytest.skip(f"Fashion-MNIST is not installed (needed for a 10,000-point run): {exc}")
    assert sizes["test"] == POINTS
    from core.families import family_of, load_objective
    from core.runs import open_run
    from core.train import main as train_main

    root = tmp_path_factory.mktemp("emb-e2e-runs")
    # A small model (width 8) keeps training and encoding to seconds on 2 shared cores.
    status = train_main(["--dataset", "fashion_mnist", "--limit-train", "2000", "--epochs", "1", "--latent-dim", "16",
                         "--width", "8", "--runs-root", str(root), "--threads", "1", "--quiet"])
    assert status == 0, f"training failed with exit status {status}"
    [path] = list(root.iterdir())
    # The embeddings are of the test split here, not the (training-limited) validation split: say so in the
    # config's split, or the run check rightly refuses 10,000 rows for a 2,000-image validation split.
    config = json.loads((path / "config.json").read_text())
    config["split"]["val"], config["limit_train"] = POINTS, None  # (a training limit caps validation too)
    (path / "config.json").write_text(json.dumps(config))
    run = open_run(path)
    test = datasets.load_split("fashion_mnist", "test")
    emb = family_of(run.config).embed(load_objective(run), test.images)
    run.save_embeddings({**emb, "labels": test.labels, "source_index": test.index,
                         "index": torch.arange(len(test), dtype=torch.int64), "images": test.images})
    assert run.embeddings()["z"].shape == (POINTS, 16)
    return root


# The 3-D chart's state, read from plotly.js itself: its class traces (name, point count, visibility),
# whether the scene has a live WebGL context, and the canvas size.
SCENE_JS = """
() => {
  const gd = Array.from(document.querySelectorAll('.js-plotly-plot'))
    .find((el) => el._fullLayout && el._fullLayout.scene && el._fullLayout.scene._scene);
  if (!gd) return null;
  const scene = gd._fullLayout.scene._scene;
  const gl = scene.glplot && scene.glplot.gl;
  const canvas = gl && gl.canvas;
  const traces = gd._fullData.filter((t) => t.type === 'scatter3d' && t.legendgroup)
    .map((t) => ({name: t.name, n: t._length, visible: t.visible}));
  return {traces, webgl: !!gl && !gl.isContextLost(),
          canvas: canvas ? [canvas.width, canvas.height] : null,
          legend: Array.from(gd.querySelectorAll('g.legend g.traces text.legendtext')).map((e) => e.textContent)};
}
"""


def test_embeddings_page_draws_10000_points_in_3d_and_stays_responsive(
        big_run: Path, streamlit_server: Callable[..., str], browser_page: Any, wait_for_app: Callable[..., None],
        tmp_path: Path) -> None:
    (tmp_path / "checkpoints").mkdir()
    url = streamlit_server(env={"ROBUST_LOSS_LAB_RUNS": str(big_run),
                                "ROBUST_LOSS_LAB_CHECKPOINTS": str(tmp_path / "checkpoints")})
    page = browser_page
    page.goto(f"{url}/embeddings", timeout=TIMEOUT_MS)
    page.wait_for_function(f"() => {{ const s = ({SCENE_JS})(); return s && s.legend.length === {len(CLASSES)}; }}",
                           timeout=TIMEOUT_MS)
    wait_for_app(page, timeout_ms=TIMEOUT_MS)
    page.get_by_text(f"{POINTS:,} points · PCA took").wait_for(timeout=TIMEOUT_MS)

    scene = page.evaluate(SCENE_JS)
    assert scene["webgl"], "the 3-D scene has no live WebGL context"
    assert scene["canvas"][0] > 300 and scene["canvas"][1] > 300
    assert [t["name"] for t in scene["traces"]] == CLASSES and scene["legend"][: len(CLASSES)] == CLASSES
    assert sum(t["n"] for t in scene["traces"]) == POINTS
    assert all(t["visible"] is True for t in scene["traces"])

    # The WebGL canvas really shows the points: coloured pixels (the axes and grid are grey) in many shades.
    chart = page.locator(".js-plotly-plot").first
    assert chart.evaluate("(gd) => !!gd._fullLayout.scene"), "the first chart on the page is not the 3-D one"
    from PIL import Image

    shot = np.asarray(Image.open(io.BytesIO(chart.locator(".gl-container canvas").first.screenshot())).convert("RGB"))
    coloured = float(((shot.max(-1).astype(int) - shot.min(-1)) > 60).mean())
    shades = len(np.unique(shot.reshape(-1, 3) // 16, axis=0))
    assert coloured > 0.01 and shades > 30, f"the 3-D scene looks empty ({coloured:.2%} coloured, {shades} shades)"

    # Responsive: a JavaScript round trip and the next animation frame come back at once.
    started = time.perf_counter()
    page.evaluate("() => new Promise((done) => requestAnimationFrame(() => done(1)))")
    frame_s = time.perf_counter() - started
    assert frame_s < 1.0, f"an animation frame took {frame_s:.2f} s"

    # A legend click hides a class (plotly waits out its double-click window first) within 2 s.
    legend_item = chart.locator("g.legend g.traces").filter(has=page.get_by_text("Trouser", exact=True))
    started = time.perf_counter()
    legend_item.locator("rect.legendtoggle").click()
    page.wait_for_function(
        f"() => ({SCENE_JS})().traces.find((t) => t.name === 'Trouser').visible === 'legendonly'", timeout=2_000)
    toggle_s = time.perf_counter() - started
    after = page.evaluate(SCENE_JS)
    assert [t["name"] for t in after["traces"] if t["visible"] is True] == [c for c in CLASSES if c != "Trouser"]
    assert toggle_s < 2.0, f"the legend click took {toggle_s:.2f} s"
    print(f"\n10,000-point 3-D chart: animation frame {frame_s * 1000:.0f} ms, legend toggle {toggle_s * 1000:.0f} ms")
