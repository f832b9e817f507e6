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



FAULTS = REPO / "tests" / "faults"


def fault_env(**faults: str) -> dict[str, str]:
    """Environment variables that arm the fault injector (tests/faults/sitecustomize.py) in every Python
    process started with them: RLL_FAULT_<NAME>=value, and the injector first on PYTHONPATH."""
    path = os.pathsep.join(p for p in (str(FAULTS), os.environ.get("PYTHONPATH", "")) if p)
    return {"PYTHONPATH": path, **{f"RLL_FAULT_{k.upper()}": str(v) for k, v in faults.items()}}


@pytest.fixture()
def pace_trainers(monkeypatch: pytest.MonkeyPatch):
    """pace_trainers(seconds): every trainer this test's processes start sleeps that long after each step
    (through the fault injector, so product code has no test hook), slow enough to watch and stop."""

    def pace(seconds: float) -> None:
        for key, value in fault_env(step_delay=str(seconds)).items():
            monkeypatch.setenv(key, value)

    return pace


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
