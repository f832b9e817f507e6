"""Training jobs: launch the command-line trainer as its own process, watch it, stop it, resume it.

The app never trains in its own process. `start(config)` makes the run directory (core.runs.create_run,
so a bad configuration is refused at once, with the fix) and launches

    python -m core.train --resume <run dir>      (a run without a checkpoint starts from epoch 1)

in a new session (`start_new_session=True`: closing the tab or restarting the app does not stop it),
its stdout and stderr appended to `<run>/train.log`; `$ROBUST_LOSS_LAB_TRAIN_ARGS` adds trainer flags
(e.g. `--threads 2`). All state lives in the run directory, so a second window, a reload or a
restarted server sees the same jobs:

    status.json / history.jsonl / .lock   written by the trainer (core.engine through core.runs)
    launch.json                           written here: {"pid", "host", "command", "launched",
                                          "status_at_launch", "stop_requested"}
    train.log                             the trainer's output (errors that happen before training starts)

What a run shows as (`job_state`), from those files:

    starting       launched, the process is alive, status.json not yet rewritten by it (importing torch,
                   loading data): status.json's "updated" still equals launch.json's "status_at_launch"
    running        status "running" and the trainer holds the lock; "stopping" once a stop was sent
    interrupted    status "running" but no process holds the lock (core.runs decides): resumable
    stopped        stopped by a signal after a clean checkpoint: resumable
    finished / failed
    launch failed  launched, the process is gone and never wrote a status: train.log's last lines say why
    created        made but never launched (or killed before it began): can be started

Stop sends SIGTERM to the trainer (it finishes its step, checkpoints and marks the run stopped), after
checking that the pid is a `core.train` process on this host (so a reused pid is never signalled).

What a run's progress, curves and row in the run list look like is `core.progress` (`progress`,
`Progress`, `curves`, `run_table`, `format_eta`, `format_age`; still reachable here by those names).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from core.paths import REPO
from core.runs import (
    Run,
    RunFormatError,
    RunInfo,
    RunLocked,
    create_run,
    delete_run,
    list_runs,
    now_iso,
    open_run,
    runs_root,
    write_json_atomic,
)

__all__ = [
    "ACTIVE_STATES",
    "LAUNCH_NAME",
    "LOG_NAME",
    "RESUMABLE_STATES",
    "JobError",
    "active_runs",
    "cuda_available",
    "delete",
    "job_state",
    "launch_error",
    "launch_info",
    "log_tail",
    "reap",
    "resume",
    "start",
    "stop",
    "train_command",
    "trainer_env",
    "wait_for",
]

LOG_NAME = "train.log"
LAUNCH_NAME = "launch.json"
ACTIVE_STATES = ("starting", "running", "stopping")
RESUMABLE_STATES = ("created", "stopped", "interrupted", "launch failed")
# Extra flags for every trainer the app launches, in shell syntax: "--threads 2" on a shared machine,
# "--compile" on a GPU. Only flags `--resume` accepts belong here (not config fields).
TRAIN_ARGS_ENV = "ROBUST_LOSS_LAB_TRAIN_ARGS"

# Processes this Python process launched, by pid: polled so they are reaped (no zombies) and so their
# exit code is known. Only a cache: everything the app shows is read from the run directory.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class JobError(Exception):
    """An action on a run that cannot be done now; the message says why and what to do instead."""


# ---------------------------------------------------------------------------------------------------
# Processes


def _as_run(run: Run | RunInfo | str | Path) -> Run:
    if isinstance(run, Run):
        return run
    if isinstance(run, RunInfo):
        return run.open()
    return open_run(run)


def reap() -> None:
    """Collect the exit status of launched trainers that have ended (a finished child left unwaited
    stays a zombie, which would look alive to `os.kill(pid, 0)`)."""
    for pid, child in list(_CHILDREN.items()):  # a copy: sessions run in threads and may reap at once
        if child.poll() is not None:
            _CHILDREN.pop(pid, None)


def _proc_state(pid: int) -> str | None:
    """The kernel's one-letter state of `pid` (R, S, D, Z, ...), None if there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return None
    except OSError:
        return "?"
    return stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else "?"


def _cmdline(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return None
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_trainer(pid: int | None, run_path: Path | None = None) -> bool:
    """True if `pid` is a live `python -m core.train` process on this host (training `run_path`, when given).

    Without /proc (not Linux) it falls back to "the pid exists"."""
    if not isinstance(pid, int) or pid <= 0:
        return False
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        _CHILDREN.pop(pid, None)
        return False
    if not Path("/proc/self/stat").exists():
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    state = _proc_state(pid)
    if state is None or state in ("Z", "X"):
        return False
    argv = _cmdline(pid)
    if argv is None or "core.train" not in argv:
        return False
    return run_path is None or str(run_path) in argv


def _this_host(host: Any) -> bool:
    return host in (None, socket.gethostname())


def launch_info(run: Run) -> dict:
    """launch.json ({} if the run was never launched from here, e.g. trained from the command line)."""
    try:
        data = json.loads((run.path / LAUNCH_NAME).read_text(encoding="utf-8"))
    except (FileNotFoundError, json.JSONDecodeError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _launched_alive(run: Run, launch: dict | None = None) -> bool:
    launch = launch_info(run) if launch is None else launch
    return bool(launch) and _this_host(launch.get("host")) and _is_trainer(launch.get("pid"), run.path)


def _env_args() -> list[str]:
    """Extra trainer flags from $ROBUST_LOSS_LAB_TRAIN_ARGS (shell syntax), e.g. "--threads 2"."""
    try:
        return shlex.split(os.environ.get(TRAIN_ARGS_ENV, ""))
    except ValueError as exc:
        raise JobError(f"{TRAIN_ARGS_ENV} cannot be parsed ({exc}); fix its quoting or unset it") from None


def train_command(run_path: Path | None, *, threads: int | None = None, extra_args: Sequence[str] = ()
                  ) -> list[str]:
    """The trainer's argv for (re)starting the run at `run_path`; None: a new run, which `extra_args` describe
    (config flags, `--run-id`, `--runs-root`)."""
    command = [sys.executable, "-m", "core.train"]
    if run_path is not None:
        command += ["--resume", str(run_path)]
    if threads:
        command += ["--threads", str(int(threads))]
    return command + [str(a) for a in extra_args]


def trainer_env(**extra: str) -> dict[str, str]:
    """The environment for a trainer process: ours plus `extra`, with this checkout first on PYTHONPATH (so
    `python -m core.train` imports this code whatever the caller's path)."""
    env = {**os.environ, **extra}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    return env


def _launch_what(run: Run, status: dict) -> str:
    """What a launch does, for train.log's line: "new run" or "resume in epoch e after step k of N"."""
    if not run.has_checkpoint:
        return "new run, from epoch 1"
    epoch, step, spe = (int(status.get(k) or 0) for k in ("epoch", "epoch_step", "steps_per_epoch"))
    if step and spe and step < spe:
        return f"resume in epoch {epoch + 1} after step {step} of {spe}"
    return f"resume after epoch {epoch}"


def _launch(run: Run, *, threads: int | None, extra_args: Sequence[str]) -> int:
    """Start the trainer for `run` in its own session; record launch.json; return its pid."""
    command = train_command(run.path, threads=threads, extra_args=[*_env_args(), *extra_args])
    status_before = run.status()
    env = trainer_env(PYTHONUNBUFFERED="1")
    log_path = run.path / LOG_NAME
    with open(log_path, "ab") as log:
        log.write(f"--- {now_iso()} {_launch_what(run, status_before)}: {shlex.join(command)}\n".encode())
        log.flush()
        try:
            child = subprocess.Popen(command, cwd=REPO, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                     stderr=subprocess.STDOUT, start_new_session=True, close_fds=True)
        except OSError as exc:
            raise JobError(f"could not start the trainer ({exc}); try `{' '.join(command)}` in a terminal") from exc
    _CHILDREN[child.pid] = child
    write_json_atomic(run.path / LAUNCH_NAME, {
        "pid": child.pid, "host": socket.gethostname(), "command": command, "launched": now_iso(),
        "status_at_launch": status_before.get("updated"), "stop_requested": None,
    }, durable=False)
    return child.pid


# ---------------------------------------------------------------------------------------------------
# Actions


def _check_dataset(name: str) -> None:
    from core.datasets import dataset_status

    for entry in dataset_status():
        if entry["name"] == name and not entry["found"]:
            raise JobError(f"{entry['title']} is not on disk, so it cannot be trained on yet. To fix:\n{entry['fix']}")


def cuda_available() -> bool:
    """Whether PyTorch sees a GPU here (what "auto" will pick)."""
    import torch

    return bool(torch.cuda.is_available())


def _check_device(device: str) -> None:
    if str(device).startswith("cuda") and not cuda_available():
        raise JobError("device 'cuda' was chosen but PyTorch sees no GPU here; choose cpu (or auto)")


def start(config: dict, *, root: str | Path | None = None, threads: int | None = None,
          extra_args: Sequence[str] = ()) -> Run:
    """Create a run from `config` (core.config's fields) under `root` (default the runs root) and launch
    its trainer. ConfigError (a ValueError) for a bad config, JobError for missing data or device."""
    from core.config import normalize_config

    normalize_config(config)  # ConfigError before anything is written
    _check_dataset(config.get("dataset", "digits"))
    _check_device(config.get("device", "auto"))
    run = create_run(config, root=root)
    try:
        _launch(run, threads=threads, extra_args=extra_args)
    except JobError:
        delete_run(run.path)  # nothing half-made is left behind
        raise
    return run


def resume(run: Run | RunInfo | str | Path, *, threads: int | None = None, extra_args: Sequence[str] = ()) -> int:
    """Relaunch the trainer on a stopped, interrupted or never-started run; returns the new pid."""
    run = _as_run(run)
    if run.shipped:
        raise JobError(f"{run.run_id} is a shipped run (under checkpoints/), read-only; train a new run instead")
    state = job_state(run)
    if state not in RESUMABLE_STATES:
        reason = {"finished": "it has finished all its epochs",
                  "failed": "it failed (see its message); train a new run with a lower learning rate or "
                            "another loss"}.get(state, f"it is {state}")
        raise JobError(f"run {run.run_id} cannot be resumed: {reason}")
    _check_device(run.config.get("device", "auto"))
    return _launch(run, threads=threads, extra_args=extra_args)


def _trainer_pid(run: Run) -> int | None:
    """The pid of the process training `run` on this host, verified, or None."""
    status = run.status()
    pid = status.get("pid")
    if status.get("state") == "running" and _this_host(status.get("host")):
        # The lock file names its holder: a pid from status.json is signalled only if it is that holder
        # on this host and a core.train process, so a reused pid is never hit.
        holder = run.lock_holder()
        if holder is not None and holder.pid == pid and _this_host(holder.host) and _is_trainer(pid):
            return int(pid)
    launch = launch_info(run)
    if _launched_alive(run, launch):
        return int(launch["pid"])
    return None


def stop(run: Run | RunInfo | str | Path, *, wait_s: float = 0.0) -> bool:
    """Ask the trainer of `run` to stop (SIGTERM: it checkpoints and marks the run stopped).

    Returns True if a signal was sent. wait_s > 0: wait up to that long for the process to end
    (JobError if it has not). JobError if the run is trained by a process this host cannot signal."""
    run = _as_run(run)
    pid = _trainer_pid(run)
    if pid is None:
        status = run.status()
        if status.get("state") == "running":
            raise JobError(f"run {run.run_id} is trained by pid {status.get('pid')} on {status.get('host')}; "
                           f"stop it there (Ctrl-C or kill -TERM)")
        return False
    launch = launch_info(run)
    if launch:
        write_json_atomic(run.path / LAUNCH_NAME, {**launch, "stop_requested": now_iso()}, durable=False)
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    if wait_s > 0:
        deadline = time.monotonic() + wait_s
        while _is_trainer(pid):
            if time.monotonic() > deadline:
                raise JobError(f"run {run.run_id}'s trainer (pid {pid}) has not stopped after {wait_s:.0f} s")
            time.sleep(0.1)
        reap()
    return True


def delete(run: Run | RunInfo | str | Path) -> None:
    """Delete a run directory (core.runs.delete_run) unless it is shipped, training or starting."""
    run = _as_run(run)
    training = f"run {run.run_id} is training; stop it first, then delete it"
    if _launched_alive(run):  # launched from here and still starting up: it does not hold the lock yet
        raise JobError(training)
    try:
        delete_run(run.path)  # refuses a shipped run (PermissionError) and a locked one (RunLocked)
    except RunLocked as exc:
        raise JobError(training) from exc
    except PermissionError as exc:
        raise JobError(str(exc)) from exc


# ---------------------------------------------------------------------------------------------------
# What a run shows as


def job_state(run: Run, status: dict | None = None, launch: dict | None = None) -> str:
    """The run's state for the app (see the module docstring for the list)."""
    status = run.status() if status is None else status
    launch = launch_info(run) if launch is None else launch
    state = str(status.get("state", "created"))
    untouched = bool(launch) and status.get("updated") == launch.get("status_at_launch")
    if launch and untouched:
        if _launched_alive(run, launch):
            return "starting"
        if state in ("created", "stopped", "interrupted"):
            return "launch failed" if launch_error(run) else state
    if state == "running":
        # launch.json describes this process only if its pid is the one training (a later command-line
        # resume leaves an older launch.json behind).
        asked = launch.get("stop_requested")
        ours = bool(launch) and launch.get("pid") == status.get("pid")
        return "stopping" if ours and asked and asked >= launch.get("launched", "") else "running"
    return state


def launch_error(run: Run) -> str:
    """The trainer's last error line in train.log after the last launch ("core.train: ..."), or ""."""
    text = log_tail(run, 60)
    last_launch = text.rfind("\n--- ")
    tail = text[last_launch + 1:] if last_launch >= 0 else text
    errors = [line for line in tail.splitlines() if line.startswith("core.train:") or "Error" in line]
    return errors[-1].removeprefix("core.train: ") if errors else ""


def log_tail(run: Run, lines: int = 20) -> str:
    """The last `lines` lines of train.log ("" if there is none)."""
    try:
        with open(run.path / LOG_NAME, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - 64 * 1024))
            text = fh.read().decode(errors="replace")
    except FileNotFoundError:
        return ""
    return "\n".join(text.splitlines()[-lines:])


def active_runs(root: str | Path | None = None) -> list[Run]:
    """Runs under the runs root (checkpoints/ are never trained) that are starting, running or stopping."""
    reap()
    out = []
    for info in list_runs([Path(root) if root is not None else runs_root()]):
        if info.error is not None:
            continue
        with contextlib.suppress(RunFormatError, OSError):
            run = info.open()
            if job_state(run, info.status) in ACTIVE_STATES:
                out.append(run)
    return out


def wait_for(run: Run, states: Iterable[str], timeout_s: float, poll_s: float = 0.2) -> str:
    """Block until `job_state(run)` is one of `states`; returns it (TimeoutError with the log tail if not)."""
    wanted = set(states)
    deadline = time.monotonic() + timeout_s
    while True:
        reap()
        state = job_state(run)
        if state in wanted:
            return state
        if time.monotonic() > deadline:
            raise TimeoutError(f"run {run.run_id} is {state!r}, not {sorted(wanted)}, after {timeout_s:.0f} s; "
                               f"train.log ends:\n{log_tail(run)}")
        time.sleep(poll_s)


# Moved to core.progress (what a run shows as); kept reachable here for older callers.
_MOVED = ("Progress", "progress", "curves", "run_table", "format_eta", "format_age", "loss_label")


def __getattr__(name: str) -> Any:
    if name in _MOVED:
        from core import progress as _progress

        return getattr(_progress, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
