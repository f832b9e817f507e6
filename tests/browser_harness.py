"""End-to-end harness: the real app under `streamlit run` and a real headless Chromium, as pytest fixtures.

Load it in a test module with `pytest_plugins = ["browser_harness"]` (tests/ is on sys.path under
pytest's default import mode), or once for the suite from tests/conftest.py. Fixtures:

- `streamlit_server`: a factory, `start(env=None, app="app.py") -> base URL`, for tests that need their
  own server (e.g. a runs directory in `ROBUST_LOSS_LAB_RUNS`); every server it started is stopped when
  the test ends, pass or fail.
- `streamlit_app`: one shared server of app.py for the whole session (base URL, no trailing slash).
- `chromium`: one headless Chromium for the session (Debian's /usr/bin/chromium driven by Playwright;
  nothing is downloaded). `browser_page`: a fresh 1400×1000 page per test, closed afterwards.

- `wait_for_app`: `wait_until_idle(page, timeout_ms=60_000)`, which returns once Streamlit has finished
  the current rerun.
- `component_frame`: `find_component_frame(page, name, ready=None)`, the frame of a custom component.
- `slider_drag`: `drag_slider(page, frame, slider, start, stop, ...)`, a mouse drag of a range input in
  a frame that watches a canvas's pixels every animation frame (see `drag_slider`).

Plain helpers: `free_port`, `serve_app` (a context manager doing what the server fixtures do),
`wait_until_idle`, `find_component_frame` and `drag_slider`. Test modules should take them through the
fixtures rather than import this module, so that pytest can still rewrite its asserts when it loads it
as a plugin (benchmarks may import it).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]
SERVER_START_TIMEOUT_S = 90.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _log_tail(log_path: Path, chars: int = 3000) -> str:
    try:
        return log_path.read_text(errors="replace")[-chars:]
    except OSError:
        return "(no log)"


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Stop the server and anything it started: SIGTERM to its process group, SIGKILL after 10 s."""
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=10)


@contextlib.contextmanager
def serve_app(
    app: str = "app.py", env: dict[str, str] | None = None, timeout: float = SERVER_START_TIMEOUT_S
) -> Iterator[str]:
    """Run `streamlit run <app>` on a free local port and yield its base URL once /_stcore/health says
    ok. The server (its whole process group) is stopped on exit, however the block ends."""
    port = free_port()
    log = Path(tempfile.mkstemp(prefix="streamlit-e2e-", suffix=".log")[1])
    command = [
        sys.executable, "-m", "streamlit", "run", app,
        "--server.headless", "true",
        "--server.fileWatcherType", "none",
        "--server.address", "127.0.0.1",
        "--server.port", str(port),
        "--browser.gatherUsageStats", "false",
    ]
    server_env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1", **(env or {})}
    with log.open("wb") as log_file:
        process = subprocess.Popen(
            command, cwd=REPO, env=server_env, stdout=log_file, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"streamlit exited with code {process.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.read().decode().strip() == "ok":
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not answer /_stcore/health in {timeout:.0f} s:\n{_log_tail(log)}")
            time.sleep(0.2)
        yield url
    finally:
        _stop(process)
        log.unlink(missing_ok=True)


BUSY_SELECTOR = '[data-testid="stStatusWidget"], [data-testid="stSkeleton"]'


def wait_until_idle(page: Any, timeout_ms: float = 60_000, quiet_ms: float = 1_500) -> None:
    """Wait until the app is drawn and Streamlit has shown no "running" indicator or loading skeleton
    for `quiet_ms` in a row. (The indicator appears only some hundreds of ms into a run, so its
    absence at one instant proves nothing.)"""
    page.wait_for_selector('[data-testid="stApp"]', timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    quiet_since: float | None = None
    while True:
        now = time.monotonic()
        if page.locator(BUSY_SELECTOR).count() > 0:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif (now - quiet_since) * 1000 >= quiet_ms:
            return
        if now > deadline:
            raise TimeoutError(f"the app was still running after {timeout_ms / 1000:.0f} s")
        time.sleep(0.1)


def find_component_frame(page: Any, name: str, ready: str | None = None, timeout_ms: float = 60_000) -> Any:
    """The Playwright frame of the custom component declared as `name` (its iframe's title), once the
    selector `ready` (if given) is on it."""
    page.locator(f'iframe[title="{name}"]').first.wait_for(timeout=timeout_ms)
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        for frame in page.frames:
            if f"/component/{name}/" in frame.url:
                if ready:
                    frame.wait_for_selector(ready, timeout=timeout_ms)
                return frame
        time.sleep(0.05)
    raise TimeoutError(f"no frame of the component {name!r} on the page")


# Watches a canvas from outside the app's code: after each animation frame's callbacks have run (a
# task queued from an animation-frame callback runs after all of them, so after the app has drawn),
# it hashes the canvas's pixels and records the time of every change with the canvas's aria-label
# then; it also records the times of pointer moves and input events. Times are the frame's
# performance.now(), in ms.
WATCH_CANVAS_JS = """
(selector) => {
  const canvas = document.querySelector(selector);
  const context = canvas.getContext('2d');
  const log = {moves: [], inputs: [], frames: [], labels: [], animationFrames: 0, stop: false};
  const hash = () => {
    const pixels = new Uint32Array(context.getImageData(0, 0, canvas.width, canvas.height).data.buffer);
    let h = 0;
    for (let i = 0; i < pixels.length; i++) h = (Math.imul(h, 31) + pixels[i]) | 0;
    return h;
  };
  let last = hash();
  document.addEventListener('pointermove', () => log.moves.push(performance.now()), true);
  document.addEventListener('input', () => log.inputs.push(performance.now()), true);
  const check = () => {
    const h = hash();
    if (h !== last) {
      last = h;
      log.frames.push(performance.now());
      log.labels.push(canvas.getAttribute('aria-label'));
    }
  };
  const tick = () => {
    log.animationFrames += 1;
    setTimeout(check, 0);
    if (!log.stop) requestAnimationFrame(tick);
  };
  requestAnimationFrame(tick);
  window.__canvasWatch = log;
}
"""


def drag_slider(
    page: Any, frame: Any, slider: str, start: float, stop: float, *, watch: str, moves: int = 30,
    seconds: float = 1.0, settle_s: float = 0.4, thumb_px: float = 16.0,
) -> dict[str, Any]:
    """Drag the range input `slider` (a selector in `frame`) with the mouse, from fraction `start` of its
    track to `stop`, through `moves` positions evenly spread over `seconds`, while watching the canvas
    `watch` (WATCH_CANVAS_JS). Holds the button `settle_s` after the last move, then releases it.
    Returns the watch log: pointer-move, input and pixel-change times (ms) and the canvas's labels."""
    frame.evaluate(WATCH_CANVAS_JS, watch)
    box = frame.locator(slider).bounding_box()
    y = box["y"] + box["height"] / 2

    def at(fraction: float) -> float:  # the thumb's centre at this fraction of the track
        return box["x"] + thumb_px / 2 + fraction * (box["width"] - thumb_px)

    page.mouse.move(at(start), y)
    page.mouse.down()
    began = time.perf_counter()
    for i in range(1, moves + 1):
        page.mouse.move(at(start + (stop - start) * i / moves), y)
        pause = began + seconds * i / moves - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    time.sleep(settle_s)
    log = frame.evaluate("() => { window.__canvasWatch.stop = true; return window.__canvasWatch; }")
    page.mouse.up()
    return log


@pytest.fixture
def component_frame() -> Callable[..., Any]:
    """`find_component_frame`, as a fixture."""
    return find_component_frame


@pytest.fixture
def slider_drag() -> Callable[..., dict[str, Any]]:
    """`drag_slider`, as a fixture."""
    return drag_slider


@pytest.fixture
def wait_for_app() -> Callable[..., None]:
    """`wait_until_idle`, as a fixture, for test modules that load this harness only as a plugin."""
    return wait_until_idle


@pytest.fixture
def streamlit_server() -> Iterator[Callable[..., str]]:
    """Factory fixture: `start(env=None, app="app.py")` serves the app and returns its URL; all servers
    started are stopped when the test ends."""
    with contextlib.ExitStack() as stack:

        def start(env: dict[str, str] | None = None, app: str = "app.py") -> str:
            return stack.enter_context(serve_app(app=app, env=env))

        yield start


@pytest.fixture(scope="session")
def streamlit_app() -> Iterator[str]:
    """One server of app.py shared by the session's browser tests."""
    with serve_app() as url:
        yield url


@pytest.fixture(scope="session")
def chromium() -> Iterator[Any]:
    """Headless Debian Chromium under Playwright (no browser download)."""
    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: run `bash scripts/system-packages.sh` (installs Debian chromium).")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


@pytest.fixture
def browser_page(chromium: Any) -> Iterator[Any]:
    """A fresh page (its own context: no shared cookies or session) for one test."""
    context = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    try:
        yield page
    finally:
        context.close()
