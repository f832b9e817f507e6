"""Shared test set-up: the repo on sys.path, few threads (the machine has 2 cores), empty run roots, and
no trainer process outliving its test."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

os.environ.setdefault("OMP_NUM_THREADS", "1")

import torch  # noqa: E402

torch.set_num_threads(1)



@pytest.fixture()
def roots(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[Path, Path]:
    """Empty user-runs and shipped-runs folders, set in the environment: (runs, checkpoints)."""
    user, shipped = tmp_path / "runs", tmp_path / "checkpoints"
    user.mkdir()
    shipped.mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(user))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(shipped))
    return user, shipped


@pytest.fixture(autouse=True)
def stop_launched_trainers() -> Iterator[None]:
    """Every trainer a test launched through core.jobs is gone when it ends, pass or fail."""
    yield
    jobs = sys.modules.get("core.jobs")
    if jobs is None:  # the test launched nothing
        return
    for pid, child in list(jobs._CHILDREN.items()):
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            try:
                child.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                child.wait(timeout=10)
        jobs._CHILDREN.pop(pid, None)
