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

Progress: `progress(run)` summarises status.json and the last history records (fraction done, ETA
counted down from the last status write, losses); `curves(run)` gives the series to plot.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from core.families import family_of
from core.families.recon import loss_label
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
    "Progress",
    "active_runs",
    "cuda_available",
    "curves",
    "delete",
    "format_age",
    "format_eta",
    "job_state",
    "launch_info",
    "log_tail",
    "progress",
    "reap",
    "resume",
    "run_table",
    "start",
    "stop",
    "train_command",
    "trainer_env",
    "wait_for",
]

REPO = Path(__file__).resolve().parents[1]
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


def _launch(run: Run, *, threads: int | None, extra_args: Sequence[str]) -> int:
    """Start the trainer for `run` in its own session; record launch.json; return its pid."""
    command = train_command(run.path, threads=threads, extra_args=[*_env_args(), *extra_args])
    status_before = run.status()
    env = trainer_env(PYTHONUNBUFFERED="1")
    log_path = run.path / LOG_NAME
    with open(log_path, "ab") as log:
        log.write(f"--- {now_iso()} {' '.join(command)}\n".encode())
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
            return "launch failed" if _log_error(run) else state
    if state == "running":
        # launch.json describes this process only if its pid is the one training (a later command-line
        # resume leaves an older launch.json behind).
        asked = launch.get("stop_requested")
        ours = bool(launch) and launch.get("pid") == status.get("pid")
        return "stopping" if ours and asked and asked >= launch.get("launched", "") else "running"
    return state


def _log_error(run: Run) -> str:
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


@dataclass
class Progress:
    """A run's progress for display. fraction: optimiser steps done / all steps (0..1)."""

    run_id: str
    state: str
    phase: str  # "training", "validating", "writing embeddings", "done", or "" before the trainer starts
    phase_fraction: float | None  # how far the phase is, for validating and writing embeddings
    epoch: int  # completed epochs
    epochs: int
    step: int
    total_steps: int | None
    fraction: float
    eta_s: float | None  # seconds left, counted down since status.json was written; None when unknown
    images_per_s: float | None
    message: str
    warning: str | None  # the family's health warning (a collapsed posterior or codebook)
    device: str | None
    loss: float | None  # last logged training loss per image
    terms: dict[str, float | None]  # last logged training terms (recon, kl, ...)
    val_loss: float | None  # last epoch's validation loss
    last_epoch: dict  # the last epoch record: validation metrics, learned α/c, codes used, ...

    @property
    def epoch_label(self) -> str:
        """"epoch k/N", with k the epoch under way while running."""
        current = self.epoch + 1 if self.state in ("running", "stopping") and self.epoch < self.epochs else self.epoch
        return f"epoch {current}/{self.epochs}"


def _age_s(iso: str | None, now: float | None = None) -> float | None:
    if not iso:
        return None
    try:
        stamp = datetime.fromisoformat(str(iso))
    except ValueError:
        return None
    if stamp.tzinfo is None:
        stamp = stamp.replace(tzinfo=timezone.utc)
    return max(0.0, (now if now is not None else time.time()) - stamp.timestamp())


def progress(run: Run, status: dict | None = None, *, now: float | None = None) -> Progress:
    """Summarise status.json and the last history records of `run`."""
    status = run.status() if status is None else status
    state = job_state(run, status)
    epochs = int(status.get("epochs") or run.config.get("epochs") or 0)
    step = int(status.get("step") or 0)
    spe = status.get("steps_per_epoch")
    total = status.get("total_steps") or (int(spe) * epochs if spe else None)
    fraction = min(1.0, step / total) if total else 0.0
    if state == "finished":
        fraction = 1.0
    eta = status.get("eta_s")
    if eta is not None and state in ("running", "stopping"):
        since = _age_s(status.get("updated"), now)
        eta = max(0.0, float(eta) - (since or 0.0))
    elif state != "finished":
        eta = None
    records = run.history()
    steps = [r for r in records if r["kind"] == "step"]
    epochs_done = [r for r in records if r["kind"] == "epoch"]
    last_step = steps[-1] if steps else {}
    last_epoch = epochs_done[-1] if epochs_done else {}
    message = str(status.get("message") or "")
    if state == "launch failed":
        message = _log_error(run)
    elif state == "starting":
        message = "starting the trainer (loading PyTorch and the data)…"
    from core.families import family_of

    names = [t.name for t in family_of(run.config).active_terms(run.config)]
    source = last_step or last_epoch
    done, total_phase = status.get("phase_done"), status.get("phase_total")
    phase_fraction = (min(1.0, done / total_phase) if isinstance(done, int) and isinstance(total_phase, int)
                      and total_phase > 0 else None)
    return Progress(
        run_id=run.run_id, state=state, phase=str(status.get("phase") or ""), phase_fraction=phase_fraction,
        epoch=int(status.get("epoch") or 0), epochs=epochs, step=step,
        total_steps=int(total) if total else None, fraction=float(fraction), eta_s=eta,
        images_per_s=status.get("images_per_s"), message=message, warning=status.get("warning"),
        device=status.get("device"), loss=source.get("loss"), terms={n: source.get(n) for n in names},
        val_loss=last_epoch.get("val_loss"), last_epoch=last_epoch,
    )


_BOOKKEEPING = frozenset({"kind", "epoch", "epoch_step", "step", "epoch_float", "time", "elapsed_s", "images_per_s",
                          "epoch_s"})


def curves(run: Run) -> dict[str, dict[str, list]]:
    """Series to plot, from history.jsonl: {"steps": {"x": fractional epochs, "loss": [...], <term>: [...]},
    "epochs": {"x": epochs, <every number an epoch record holds>: [...]}} (None where a record lacks it)."""
    out: dict[str, dict[str, list]] = {}
    for kind, x_key in (("step", "epoch_float"), ("epoch", "epoch")):
        rows = run.history(kind)
        keys = [k for k in dict.fromkeys(k for r in rows for k in r) if k not in _BOOKKEEPING]
        keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) for r in rows)]
        out[f"{kind}s"] = {"x": [r.get(x_key) for r in rows], **{k: [r.get(k) for r in rows] for k in keys}}
    return out


def format_eta(seconds: float | None) -> str:
    """"1:05" (m:ss), "2:03:04" past an hour, "—" when unknown."""
    if seconds is None or not math.isfinite(seconds):
        return "—"
    s = round(float(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def format_age(iso: str | None, now: float | None = None) -> str:
    """How long ago an ISO time was: "just now", "5 min", "3 h", "2 d"."""
    age = _age_s(iso, now)
    if age is None:
        return "?"
    if age < 60:
        return "just now"
    if age < 3600:
        return f"{int(age // 60)} min"
    if age < 86400:
        return f"{int(age // 3600)} h"
    return f"{int(age // 86400)} d"


def run_table(infos: Iterable[RunInfo] | None = None, *, now: float | None = None) -> list[dict]:
    """One row per run (default: every run under the runs root and checkpoints/), newest first:
    run, state, dataset, model, loss, latent, epoch, val loss, age, where, path, shipped, error."""
    reap()
    rows = []
    for info in list_runs() if infos is None else infos:
        row = {"run": info.run_id, "state": info.state, "dataset": info.dataset or "", "model": "", "loss": "",
               "latent": info.latent_dim, "epoch": "", "val loss": None, "age": format_age(info.created, now),
               "where": "checkpoints/ (shipped)" if info.shipped else "runs/", "path": str(info.path),
               "shipped": info.shipped, "error": info.error or ""}
        if info.error is None:
            try:
                run = info.open()
                status = info.status or run.status()
                row["latent"] = family_of(run.config).latent_size(run.config)
                row["state"] = job_state(run, status)
                family = family_of(run.config)
                row["model"] = family.describe(run.config)
                row["loss"] = loss_label(run.config)
                row["epoch"] = f"{int(status.get('epoch') or 0)}/{status.get('epochs') or run.config.get('epochs')}"
                epochs = run.history("epoch")
                if epochs and epochs[-1].get("val_loss") is not None:
                    row["val loss"] = round(float(epochs[-1]["val_loss"]), 4)
            except (RunFormatError, OSError, ValueError, TypeError) as exc:
                row["state"], row["error"] = "broken", str(exc)
        rows.append(row)
    return rows


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
