"""The Train page in a real browser, as a user meets it: a form that starts only what is on
screen (bug 3), a training run whose live panel, Runs table and Manage-run box move together (bug 1), and
feedback drawn where the user is looking (bug 4). One `streamlit run` server, headless Chromium at 1280×800,
a real trainer process paced by the fault injector."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from conftest import fault_env

pytest_plugins = ["browser_harness"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 120_000
VIEWPORT = {"width": 1280, "height": 800}

# One reading of everything the page says about runs, taken in one go in the page (so it cannot straddle a
# redraw): each progress bar's text, the Runs table's rows (the grid's accessible cells) and the run picked
# in the Manage-run box.
SNAPSHOT_JS = """
() => {
  const bars = [...document.querySelectorAll('[data-testid="stProgress"]')].map(e => e.innerText.trim());
  const grid = document.querySelector('[data-testid="stDataFrame"]');
  const rows = grid ? [...grid.querySelectorAll('[role="row"]')].slice(1).map(
      r => [...r.querySelectorAll('[role="gridcell"]')].map(c => c.innerText.trim())) : [];
  return {bars, rows};
}
"""


def _box(locator: Any) -> dict:
    locator.wait_for(timeout=TIMEOUT_MS)
    return locator.bounding_box()


def _in_view(page: Any, locator: Any) -> bool:
    """Whether the element is drawn inside the visible part of the window."""
    box = _box(locator)
    return box is not None and box["y"] >= 0 and box["y"] + box["height"] <= VIEWPORT["height"]


def _field(page: Any, label: str) -> Any:
    return page.get_by_role("textbox", name=label, exact=True)


def _start_button(page: Any) -> Any:
    return page.get_by_role("button", name="Start training")


def _idle(page: Any) -> None:
    from browser_harness import wait_until_idle

    wait_until_idle(page, TIMEOUT_MS, quiet_ms=800)


def _epoch(text: str) -> int | None:
    match = re.search(r"epoch (\d+)/\d+", text)
    return int(match.group(1)) if match else None


def _together(page: Any, run_id: str, after: int, timeout_s: float = 150) -> int:
    """Wait until the live panel's bar, the Manage-run box's bar and the run's row in the Runs table all say
    "running" in one same epoch, later than `after`; return that epoch. (Each view lags a redraw at most,
    so on a loaded machine they agree once the run's epoch holds still for a redraw.)"""
    seen: list[dict] = []
    deadline = time.monotonic() + timeout_s
    while True:
        snap = page.evaluate(SNAPSHOT_JS)
        seen = [*seen[-4:], snap]
        row = next((r for r in snap["rows"] if r and r[0] == run_id), None)
        live = [t for t in snap["bars"] if re.search(r"running\b.*· epoch", t)]
        if row and len(live) == 2 and row[1].startswith("running"):
            shown = {_epoch(live[0]), _epoch(live[1]), int(row[6].split("/")[0])}
            if len(shown) == 1 and (epoch := shown.pop()) is not None and epoch > after:
                return epoch
        assert time.monotonic() < deadline, f"the views never agreed on the run training: {seen}"
        page.wait_for_timeout(300)


def test_the_train_page_starts_what_it_shows_moves_together_and_answers_beside_the_control(
        streamlit_server, chromium, tmp_path: Path) -> None:
    runs, shipped = tmp_path / "runs", tmp_path / "checkpoints"
    runs.mkdir()
    shipped.mkdir()
    url = streamlit_server(env={"ROBUST_LOSS_LAB_RUNS": str(runs), "ROBUST_LOSS_LAB_CHECKPOINTS": str(shipped),
                                "ROBUST_LOSS_LAB_TRAIN_ARGS": "--threads 1", **fault_env(step_delay="0.6")})
    context = chromium.new_context(viewport=VIEWPORT)
    page = context.new_page()
    try:
        page.goto(f"{url}/train", timeout=TIMEOUT_MS)
        _idle(page)
        start = _start_button(page)
        assert start.is_enabled()

        # -- Bug 3: a wrong value turns Start off, and says which field and why beside the button. -------------
        epochs = _field(page, "Epochs")
        for typed, why in (("abc", "Epochs must be a whole number, got “abc”"),
                           ("0", "Epochs must be between 1 and 1e6, got 0")):
            epochs.fill(typed)
            epochs.press("Enter")
            note = page.get_by_text("Start is off until this is fixed")
            note.wait_for(timeout=TIMEOUT_MS)
            page.get_by_text(why).first.wait_for(timeout=TIMEOUT_MS)
            _idle(page)
            assert start.is_disabled() and epochs.input_value() == typed  # nothing snapped back
            button, beside = _box(start), _box(note)
            assert abs(beside["y"] - button["y"]) < 150 and beside["x"] > button["x"]  # next to the button
        epochs.fill("3")
        lr = _field(page, "Learning rate")
        lr.fill("1e9")
        lr.press("Enter")
        page.get_by_text("Learning rate must be at most 10, got 1e9").first.wait_for(timeout=TIMEOUT_MS)
        _idle(page)
        assert start.is_disabled()
        lr.fill("0.002")
        lr.press("Enter")
        _idle(page)
        assert start.is_enabled()
        # Typed, then Start clicked at once (no Enter, no pause): the click carries what is on screen.
        epochs.fill("abc")
        start.click()
        page.get_by_text("Not started: Epochs must be a whole number, got “abc”").first.wait_for(timeout=TIMEOUT_MS)
        assert list(runs.iterdir()) == []
        epochs.fill("30")
        _field(page, "Training images").fill("256")
        _field(page, "Latent size").fill("4")
        _idle(page)
        start.click()
        started = page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text=re.compile(r"^Started "))
        started.first.wait_for(timeout=TIMEOUT_MS)
        [run_dir] = list(runs.iterdir())
        config = json.loads((run_dir / "config.json").read_text())
        assert (config["epochs"], config["lr"], config["limit_train"], config["latent_dim"]) == (30, 0.002, 256, 4)

        # -- Bug 1: the live panel, the Runs table and the Manage-run box refresh together. ---------------------
        first = _together(page, run_dir.name, after=1)
        assert _together(page, run_dir.name, after=first) > first  # ...and keep moving, without a reload

        # -- Bug 4: feedback where the user is looking. ------------------------------------------------------------
        stop = page.get_by_role("button", name="Stop").last  # the Manage-run box's, far down the page
        stop.scroll_into_view_if_needed()
        stop.click()
        stopping = page.locator('[data-testid="stAlertContentSuccess"]').filter(has_text=re.compile(r"^Stopping "))
        stopping.first.wait_for(timeout=TIMEOUT_MS)
        assert _in_view(page, stopping.first)
        page.get_by_text(re.compile(r"stopped · epoch \d+/30")).first.wait_for(timeout=TIMEOUT_MS)

        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("run/config.json", (run_dir / "config.json").read_bytes())
            archive.writestr("run/model.pt", b"\x80\x04anything")
        importer = page.get_by_role("button", name="Import run")
        importer.scroll_into_view_if_needed()
        page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
            {"name": "bad.zip", "mimeType": "application/zip", "buffer": buffer.getvalue()})
        _idle(page)
        importer.scroll_into_view_if_needed()
        importer.click()
        refused = page.locator('[data-testid="stAlertContentError"]').filter(has_text="Upload refused")
        refused.first.wait_for(timeout=TIMEOUT_MS)
        assert _in_view(page, refused.first), "the upload's answer is drawn off screen"
        assert page.locator('[data-testid="stToast"]').filter(has_text="Upload refused").count() >= 1
        page.screenshot(path=str(tmp_path / "feedback.png"))
    finally:
        context.close()
