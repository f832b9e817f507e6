"""The Loss Explorer in a real browser: frame rate while α or c is dragged, and the drag-end round trip.

    .venv/bin/python benchmarks/app.py [--drags 5] [--presses 10] [--repeats 20]

Runs `streamlit run app.py` and headless Debian Chromium (Playwright, 1280×800, the e2e tests' flags:
software rendering, no GPU) on this machine, and measures what a user sees:

- frame rate: the α (then c) slider is dragged with the mouse, 30 moves over 1 s (the e2e test's pace) and
  60 moves over 1 s (as fast as a display refreshes); the ρ chart's pixels are hashed after every
  animation frame, so a "redraw" is a frame whose pixels changed. Reported: redraws per second during
  the drag, the time from each input event to the next redraw, from the last move to the last redraw,
  and the renderer's main-thread time per redraw (Chrome's Performance.getMetrics TaskDuration over the
  drag, divided by the redraws). Baseline: the browser's own animation-frame rate on the same page
  (the ceiling any redraw rate can reach), so the ratio says how close to it the explorer gets.
- drag-end round trip: from releasing the mouse to the server's text below the component naming the new
  value (the report, Streamlit's rerun of the page, the delta and its rendering), timed in the browser
  (epoch milliseconds in both frames). Baseline: the same round trip for a one-slider Streamlit page
  (key press to text), served by a second server from this process: what every frame cost before.
- server time: the page's script time after a drag-end report (AppTest, same process) against an empty
  page's; the part of the round trip that is this page's own work.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "tests"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

from browser_harness import (  # noqa: E402 (the e2e tests' server and drag helpers)
    CHROMIUM,
    CHROMIUM_ARGS,
    WATCH_CANVAS_JS,
    drag_slider,
    find_component_frame,
    serve_app,
    wait_until_idle,
)

COMPONENT = "components.loss_explorer.loss_explorer"
RHO = 'canvas[data-chart="rho"]'

# Epoch ms at which `text` appears in the page's main document (MutationObserver), as a promise held in
# an object (a bare promise would make evaluate_handle wait for it).
TEXT_APPEARS_JS = """
(text) => ({appeared: new Promise((resolve) => {
  const seen = () => document.body.textContent.includes(text);
  if (seen()) return resolve(performance.timeOrigin + performance.now());
  const observer = new MutationObserver(() => {
    if (seen()) { observer.disconnect(); resolve(performance.timeOrigin + performance.now()); }
  });
  observer.observe(document.body, {childList: true, subtree: true, characterData: true});
})})
"""
# Epoch ms of the next pointerup / keydown in a frame, recorded under window.__releasedAt.
RECORD_JS = """
(kind) => { window.__releasedAt = null;
  document.addEventListener(kind, () => { window.__releasedAt = performance.timeOrigin + performance.now(); },
                            {capture: true, once: true}); }
"""
# Times every animation-frame callback the page registers from now on (window.__callbackMs): the
# explorer draws in one, so these are its JavaScript time per frame (the curves and the canvas commands).
TIME_CALLBACKS_JS = """
() => {
  const original = window.__originalRaf || window.requestAnimationFrame.bind(window);
  window.__originalRaf = original;
  window.__callbackMs = [];
  window.requestAnimationFrame = (callback) => original((t) => {
    const begin = performance.now();
    callback(t);
    window.__callbackMs.push(performance.now() - begin);
  });
}
"""
# Moves a slider from inside the frame as fast as events can be dispatched (one input event every
# `everyMs` for `seconds`), so the redraw rate is bounded by the page's own work, not by the mouse.
FLOOD_JS = """
([selector, everyMs, seconds]) => new Promise((resolve) => {
  const input = document.querySelector(selector);
  const lo = Number(input.min), hi = Number(input.max);
  let value = Number(input.value), step = 1, sent = 0;
  const timer = setInterval(() => {
    if (value + step > hi || value + step < lo) step = -step;
    value += step;
    input.value = String(value);
    input.dispatchEvent(new Event('input', {bubbles: true}));
    sent += 1;
  }, everyMs);
  setTimeout(() => { clearInterval(timer); resolve(sent); }, seconds * 1000);
})
"""
PLAIN_PAGE = """
import streamlit as st
value = st.slider("value", 0, 1000, 0, key="value")
st.write(f"the server has {value}")
"""


def _stats(values: list[float]) -> str:
    v = sorted(values)
    return f"median {statistics.median(v):6.1f}   p90 {v[min(len(v) - 1, round(0.9 * (len(v) - 1)))]:6.1f}   " \
           f"min {v[0]:6.1f}   max {v[-1]:6.1f}"


def _latencies(log: dict[str, Any]) -> list[float]:
    """ms from each input event to the first redraw at or after it."""
    frames = log["frames"]
    out = []
    for t in log["inputs"]:
        later = [f for f in frames if f >= t]
        if later:
            out.append(later[0] - t)
    return out


def _drag_once(page: Any, frame: Any, cdp: Any, slider: str, start: float, stop: float, moves: int) -> dict:
    before = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    log = drag_slider(page, frame, slider, start, stop, watch=RHO, moves=moves, seconds=1.0, settle_s=0.3)
    after = {m["name"]: m["value"] for m in cdp.send("Performance.getMetrics")["metrics"]}
    first, last = log["moves"][0], log["moves"][-1]
    during = [t for t in log["frames"] if first <= t <= last]
    return {
        "fps": 1000 * len(during) / (last - first),
        "redraws": len(during),
        "changes": len(log["inputs"]),
        "seconds": (last - first) / 1000,
        "latency": _latencies(log),
        "final": log["frames"][-1] - last if log["frames"] else float("nan"),
        "task_ms": 1000 * (after["TaskDuration"] - before["TaskDuration"]) / max(1, len(log["frames"])),
        "raf_fps": 1000 * log["animationFrames"] / (last - first + 300),
    }


def _flood(frame: Any, slider: str, seconds: float = 2.0) -> dict[str, float]:
    """Redraws per second and JS ms per frame with an input event every 4 ms, from inside the frame."""
    frame.evaluate(WATCH_CANVAS_JS, RHO)
    frame.evaluate(TIME_CALLBACKS_JS)
    sent = frame.evaluate(FLOOD_JS, [slider, 4, seconds])
    log = frame.evaluate("() => { window.__canvasWatch.stop = true; return window.__canvasWatch; }")
    callback_ms = [v for v in frame.evaluate("() => window.__callbackMs") if v > 0.2]  # the watcher's are ~0
    return {"fps": len(log["frames"]) / seconds, "raf": log["animationFrames"] / seconds, "sent": sent / seconds,
            "js_ms": statistics.median(callback_ms) if callback_ms else float("nan"),
            "js_p90": sorted(callback_ms)[round(0.9 * (len(callback_ms) - 1))] if callback_ms else float("nan")}


def _round_trip(page: Any, frame: Any, action: Any, text: str, kind: str) -> float:
    """ms from the release (pointerup/keydown in `frame`) to `text` in the main document."""
    frame.evaluate(RECORD_JS, kind)
    appears = page.evaluate_handle(TEXT_APPEARS_JS, text)
    action()
    shown = page.evaluate("(watch) => watch.appeared", appears)
    return shown - frame.evaluate("() => window.__releasedAt")


def browser_benchmark(args: argparse.Namespace) -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp, serve_app() as url, sync_playwright() as playwright:
        plain = Path(tmp) / "plain.py"
        plain.write_text(textwrap.dedent(PLAIN_PAGE))
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        print(f"browser: Chromium {browser.version}, headless, flags {' '.join(CHROMIUM_ARGS)}; 1280×800")
        page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
        start = time.perf_counter()
        page.goto(f"{url}/loss_explorer")
        wait_until_idle(page, timeout_ms=180_000)
        frame = find_component_frame(page, COMPONENT, ready="#heading:not(:empty)")
        print(f"first view of the explorer (server start excluded): {time.perf_counter() - start:.1f} s")
        frame.locator("#panel-rho").scroll_into_view_if_needed()
        cdp = page.context.new_cdp_session(page)
        cdp.send("Performance.enable")

        fps_rows: dict[str, dict[str, float]] = {}
        for name, slider, span in (("α", "#alpha", (0.55, 0.2)), ("c", "#scale", (0.5, 0.15))):
            for moves in (30, 60):
                runs = []
                for i in range(args.drags):
                    a, b = span if i % 2 == 0 else span[::-1]
                    runs.append(_drag_once(page, frame, cdp, slider, a, b, moves))
                    wait_until_idle(page, quiet_ms=500)
                label = f"{name} drag, {moves} mouse moves"
                fps = [r["fps"] for r in runs]
                raf = [r["raf_fps"] for r in runs]
                counts = ", ".join(f"{r['redraws']}/{r['changes']}" for r in runs)
                print(f"{label}: ρ redraws/s {_stats(fps)}; redraws/value changes {counts} in "
                      f"{statistics.median(r['seconds'] for r in runs):.2f} s")
                print(f"{label}: animation frames/s   {_stats(raf)}")
                print(f"{label}: input → redraw ms    {_stats([v for r in runs for v in r['latency']])}")
                print(f"{label}: last move → last redraw ms {_stats([r['final'] for r in runs])}")
                print(f"{label}: renderer main thread ms per redraw (all work, software compositing) "
                      f"{_stats([r['task_ms'] for r in runs])}")
                fps_rows[label] = {"fps": statistics.median(fps), "raf": statistics.median(raf),
                                   "per_change": sum(r["redraws"] for r in runs) / sum(r["changes"] for r in runs)}
            flood = _flood(frame, slider)
            wait_until_idle(page, quiet_ms=500)
            label = f"{name} moved from inside the page, {flood['sent']:.0f} input events/s"
            print(f"{label}: ρ redraws/s {flood['fps']:.1f} of {flood['raf']:.1f} animation frames/s; the explorer's "
                  f"JavaScript per frame median {flood['js_ms']:.1f} ms, p90 {flood['js_p90']:.1f} ms")
            fps_rows[label] = {"fps": flood["fps"], "raf": flood["raf"]}

        explorer_trips: dict[str, list[float]] = {"α": [], "c": []}
        for i in range(args.drags):
            for name, slider in (("α", "#alpha"), ("c", "#scale")):
                box = frame.locator(slider).bounding_box()
                y = box["y"] + box["height"] / 2
                x = box["x"] + box["width"] * (0.25 + 0.1 * i)
                page.mouse.move(x, y)
                page.mouse.down()
                for _ in range(8):  # a short drag, until the value differs from the server's
                    x += 6
                    page.mouse.move(x, y)
                    alpha = frame.locator("#alpha").get_attribute("aria-valuetext")
                    c = frame.locator("#scale").get_attribute("aria-valuetext")
                    text = f"loss chosen above (α = {alpha}, c = {c})"
                    if page.get_by_text(text).count() == 0:
                        break
                explorer_trips[name].append(_round_trip(page, frame, page.mouse.up, text, "pointerup"))
                wait_until_idle(page, quiet_ms=500)
        for name, trips in explorer_trips.items():
            print(f"drag-end round trip after a {name} drag (release → server's text) ms {_stats(trips)}")

        with serve_app(app=str(plain)) as plain_url:
            plain_page = browser.new_context(viewport={"width": 1280, "height": 800}).new_page()
            plain_page.goto(plain_url)
            wait_until_idle(plain_page, timeout_ms=120_000)
            slider = plain_page.get_by_role("slider")
            slider.focus()
            trips = []
            for i in range(1, args.presses + 1):
                trips.append(_round_trip(plain_page, plain_page.main_frame,
                                         lambda: plain_page.keyboard.press("ArrowRight"),
                                         f"the server has {i}", "keydown"))
                wait_until_idle(plain_page, quiet_ms=300)
            print(f"baseline: one-slider Streamlit page, key press → server's text ms {_stats(trips)}")
        browser.close()

    print()
    for label, row in fps_rows.items():
        if "inside the page" in label:  # the page's own ceiling: more input than frames
            verdict = "met" if row["fps"] >= 30 else "NOT met"
            print(f"{label}: {row['fps']:.1f} redraws/s = {row['fps'] / row['raf']:.2f}× the browser's own "
                  f"{row['raf']:.1f} animation frames/s; goal ≥ 30 redraws/s: {verdict}")
        else:  # a mouse drag can redraw no more often than the value changes
            print(f"{label}: {row['fps']:.1f} redraws/s, {row['per_change']:.2f} per value change (the mouse sets "
                  f"the pace, not the page); the browser's own rate {row['raf']:.1f} animation frames/s")
    base = statistics.median(trips)
    for name, values in explorer_trips.items():
        med = statistics.median(values)
        print(f"drag-end round trip after a {name} drag: {med:.0f} ms = {med / base:.2f}× a one-slider page's "
              f"{base:.0f} ms (paid once per drag, not per frame)")


def server_benchmark(args: argparse.Namespace) -> None:
    """Script time of the page after a drag-end report, against an empty page (AppTest, this process)."""
    import streamlit.runtime.scriptrunner.script_runner as script_runner
    import torch
    from streamlit.testing.v1 import AppTest

    from core import explorer as ex

    torch.set_num_threads(1)
    seconds: list[float] = []
    run_script = script_runner.exec_func_with_error_handling

    def timed(func, ctx):  # type: ignore[no-untyped-def]  (benchmark-only: the time of each execution)
        begin = time.perf_counter()
        try:
            return run_script(func, ctx)
        finally:
            seconds.append(time.perf_counter() - begin)

    script_runner.exec_func_with_error_handling = timed

    def runs(at: AppTest, reports: list[dict[str, Any]] | None) -> list[float]:
        out = []
        for i in range(args.repeats):
            if reports:
                at.session_state["explorer_live"] = {**reports[i % len(reports)], "event": f"bench:{i}"}
            seconds.clear()
            at.run()
            out.append(1000 * seconds[-1])
        return out

    empty = AppTest.from_string("import streamlit as st\nst.empty()", default_timeout=60)
    empty.run()
    base = runs(empty, None)
    at = AppTest.from_file(str(REPO / "pages" / "loss_explorer.py"), default_timeout=120)
    at.run()
    states = [ex.ExplorerState(alpha=a, scale=c) for a, c in ((1.3, 1.0), (-2.0, 1.0), (0.5, 2.5), (float("inf"), 0.7))]
    page = runs(at, [s.to_browser() for s in states])
    start = time.perf_counter()
    ex.browser_tables()
    tables_ms = 1000 * (time.perf_counter() - start)
    print(f"server: empty page script ms              {_stats(base)}")
    print(f"server: explorer after a drag-end report ms {_stats(page)}")
    print(f"server: the page's script = {statistics.median(page) / statistics.median(base):.0f}× an empty page's; "
          f"log Z table and the rest for the browser, computed once per server: {tables_ms:.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--drags", type=int, default=5, help="drags per slider and pace")
    parser.add_argument("--presses", type=int, default=10, help="key presses on the baseline page")
    parser.add_argument("--repeats", type=int, default=20, help="AppTest runs for the server time")
    args = parser.parse_args()
    chromium = subprocess.run([CHROMIUM, "--version"], capture_output=True, text=True).stdout.strip()
    print(f"machine: {platform.machine()}, {os.cpu_count()} CPUs, {platform.platform()}; {chromium}; "
          f"load average {os.getloadavg()[0]:.2f}")
    browser_benchmark(args)
    server_benchmark(args)
    print(f"load average after the run: {os.getloadavg()[0]:.2f} (2 cores shared with other work)")


if __name__ == "__main__":
    main()
