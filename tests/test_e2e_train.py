"""End to end in a real browser: the Train page under `streamlit run`, driven by headless Chromium.

One tiny digits run is started from the form; the tab is closed and a second window opened (the run
goes on and shows there); the progress bar moves; Stop checkpoints it; Resume carries it to the end.
The trainer is a real process; the runs folder is a temporary one."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import fault_env

from core.runs import open_run

pytest_plugins = ["browser_harness"]
pytestmark = [pytest.mark.browser, pytest.mark.slow]

TIMEOUT_MS = 120_000


@pytest.fixture()
def runs_dir(tmp_path: Path) -> Iterator[Path]:
    """The server's runs folder; any trainer still alive in it at the end is stopped."""
    runs = tmp_path / "runs"
    runs.mkdir()
    yield runs
    for status_file in runs.glob("*/launch.json"):
        pid = json.loads(status_file.read_text()).get("pid")
        # OSError: the process is already gone (no /proc entry) or not ours
        with contextlib.suppress(OSError, TypeError):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            if b"core.train" in cmdline:
                os.killpg(pid, signal.SIGKILL)


def _open_train_page(context: Any, url: str) -> Any:
    from browser_harness import wait_until_idle

    page = context.new_page()
    page.goto(f"{url}/train", timeout=TIMEOUT_MS)
    wait_until_idle(page, TIMEOUT_MS)
    page.get_by_role("heading", name="New run").wait_for(timeout=TIMEOUT_MS)
    return page


def _running_progress(page: Any) -> int:
    """The live panel's progress (0..100) once it shows the run training."""
    bar = page.locator('[data-testid="stProgress"]').filter(has_text=re.compile(r"running · epoch"))
    bar.first.wait_for(timeout=TIMEOUT_MS)
    return int(bar.first.get_by_role("progressbar").get_attribute("aria-valuenow"))


def test_start_watch_stop_resume_and_finish_from_the_browser(streamlit_server, chromium, runs_dir: Path,
                                                             tmp_path: Path) -> None:
    shipped = tmp_path / "checkpoints"
    shipped.mkdir()
    url = streamlit_server(env={"ROBUST_LOSS_LAB_RUNS": str(runs_dir), "ROBUST_LOSS_LAB_CHECKPOINTS": str(shipped),
                                # one thread (shared machine); a pause per step (the fault injector's) so the
                                # tiny run can be watched
                                "ROBUST_LOSS_LAB_TRAIN_ARGS": "--threads 1", **fault_env(step_delay="0.06")})
    first_window = chromium.new_context(viewport={"width": 1400, "height": 1000})
    page = _open_train_page(first_window, url)
    assert page.get_by_text("Nothing is training").is_visible()
    epochs = page.get_by_role("textbox", name="Epochs", exact=True)
    epochs.fill("15")
    epochs.press("Enter")
    latent = page.get_by_role("textbox", name="Latent size", exact=True)
    latent.fill("4")
    latent.press("Enter")
    page.get_by_role("button", name="Start training").click()
    page.get_by_text(re.compile(r"^Started \S+digits-\S*mse-z4")).first.wait_for(timeout=TIMEOUT_MS)
    [run_dir] = list(runs_dir.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["dataset"], config["loss"], config["epochs"], config["latent_dim"]) == ("digits", "mse", 15, 4)

    # Close the tab; a second window shows the same run, still training, its bar moving.
    first_window.close()
    second_window = chromium.new_context(viewport={"width": 1400, "height": 1000})
    try:
        page = _open_train_page(second_window, url)
        first = _running_progress(page)
        deadline = time.monotonic() + 60
        while (now := _running_progress(page)) <= first:
            assert time.monotonic() < deadline, "the progress bar did not move"
            page.wait_for_timeout(300)
        assert first < now < 100  # (the first reading may be step 0)

        page.get_by_role("button", name="Stop").first.click()
        page.get_by_text(re.compile(r"stopped · epoch")).first.wait_for(timeout=TIMEOUT_MS)
        status = json.loads((run_dir / "status.json").read_text())
        assert status["state"] == "stopped" and 0 < status["step"] < status["total_steps"]
        stopped_at = status["step"]
        assert open_run(run_dir).load_checkpoint().trainer["global_step"] == stopped_at

        page.get_by_role("button", name="Resume").click()
        page.get_by_text(re.compile(r"finished · epoch 15/15")).first.wait_for(timeout=TIMEOUT_MS)
    finally:
        second_window.close()
    status = json.loads((run_dir / "status.json").read_text())
    assert status["state"] == "finished" and status["step"] == status["total_steps"]
    records = [json.loads(line) for line in (run_dir / "history.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if r["kind"] == "step"]
    assert steps == sorted(set(steps)) and any(s > stopped_at for s in steps)  # one history, resumed, not redone
    assert (run_dir / "embeddings.safetensors").is_file()
