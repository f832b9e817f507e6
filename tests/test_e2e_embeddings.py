"""End to end in a real browser: the Embeddings page under `streamlit run` on a run with 10,000 points.

A short real Fashion-MNIST run is trained here. Fashion-MNIST's validation split is 5,000 images
(core/datasets.py), so to reach 10,000 points its model then encodes the official 10,000-image test
split, and those latents (with their images and labels) are written as the run's embeddings file. Headless
Chromium (Playwright, SwiftShader WebGL) opens the page: the 3-D chart is a plotly gl3d scene drawn on a
WebGL canvas, with all 10,000 points in ten class traces and ten legend entries; the page stays
responsive: a JavaScript round trip and an animation frame come back quickly, and a legend click
hides a class within a couple of seconds. A screenshot goes to the test's tmp_path."""

from __future__ import annotations

import io
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

POINTS = 10_000
TIMEOUT_MS = 120_000
CLASSES = list(datasets.dataset_info("fashion_mnist").classes)

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


@pytest.fixture(scope="module")
def big_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root holding one real Fashion-MNIST run whose embeddings hold 10,000 real encoded images."""
    try:
        sizes = datasets.found_split_sizes("fashion_mnist")
    except datasets.DatasetMissing as exc:
        pytest.skip(f"Fashion-MNIST is not installed (needed for a 10,000-point run): {exc}")
    assert sizes["test"] == POINTS
    from core.objective import encode
    from core.runs import open_run
    from core.train import main as train_main

    root = tmp_path_factory.mktemp("emb-e2e-runs")
    # A small model (width 8) keeps training and encoding to seconds on 2 shared cores.
    status = train_main(["--dataset", "fashion_mnist", "--limit-train", "2000", "--epochs", "1", "--latent-dim", "16",
                         "--width", "8", "--runs-root", str(root), "--threads", "1", "--quiet"])
    assert status == 0, f"training failed with exit status {status}"
    [path] = list(root.iterdir())
    run = open_run(path)
    test = datasets.load_split("fashion_mnist", "test")
    mu, logvar = encode(run.load_model(), test.images)
    run.save_embeddings({"mu": mu, "logvar": logvar, "labels": test.labels, "source_index": test.index,
                         "index": torch.arange(len(test), dtype=torch.int64), "images": test.images})
    assert run.embeddings()["mu"].shape == (POINTS, 16)
    return root


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

    # The WebGL canvas really shows the points: coloured pixels (the axes and grid are grey) in many
    # shades. With every class hidden the same canvas is a single colour, with none saturated.
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
    page.screenshot(path=str(tmp_path / "embeddings.png"), full_page=True)
    assert (tmp_path / "embeddings.png").stat().st_size > 20_000
