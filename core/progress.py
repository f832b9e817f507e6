"""What a run shows as while it trains and after: its progress, its curves and its row in the run list.

Read from the run directory only (status.json, history.jsonl, launch.json through `core.jobs.job_state`),
so every window, reload and page shows the same thing:

    progress(run) -> Progress     state, phase (training / validating / writing embeddings) with its own
                                  fraction, the epoch under way, steps, ETA counted down since the last
                                  status write, images/s (smoothed by the engine), losses, the family's
                                  health warning
    curves(run)                   {"steps": {"x", "loss", <term>...}, "epochs": {"x", <every number>...}}
    run_table()                   one row per run, newest first

Epochs are counted the way the trainer's messages count them: a run is "in epoch e" from its first step
of epoch e until that epoch's validation ends, and a run stopped "after step k of N of epoch e" shows
epoch e (with step k of N), so the header and the message agree.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from core.families import family_of
from core.families.recon import loss_label
from core.jobs import job_state, launch_error, reap
from core.runs import Run, RunFormatError, RunInfo, list_runs

__all__ = ["TRAINING_STATES", "Progress", "curves", "format_age", "format_eta", "progress", "run_table"]

TRAINING_STATES = ("running", "stopping")


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
    epoch_step: int = 0  # steps done in the epoch under way (or cut off)
    steps_per_epoch: int | None = None
    phase_done: int | None = None  # images done in the phase (validating, writing embeddings)
    phase_total: int | None = None

    @property
    def training(self) -> bool:
        return self.state in TRAINING_STATES

    @property
    def current_epoch(self) -> int:
        """The epoch the run is in: the one under way while it trains, the one a stop cut short, else the
        last one completed."""
        if self.epoch >= self.epochs:
            return self.epochs
        mid_epoch = bool(self.steps_per_epoch) and 0 < self.epoch_step < (self.steps_per_epoch or 0)
        return self.epoch + 1 if self.training or self.state == "starting" or mid_epoch else self.epoch

    @property
    def epoch_label(self) -> str:
        """"epoch k/N", with k the epoch under way while running (see `current_epoch`)."""
        return f"epoch {self.current_epoch}/{self.epochs}"

    @property
    def in_epoch_step(self) -> str | None:
        """"step k of N" within the epoch under way or cut off; None at an epoch boundary or when unknown."""
        spe = self.steps_per_epoch
        if not spe or self.state == "finished" or self.phase in ("validating", "writing embeddings", "done"):
            return None
        if self.training or 0 < self.epoch_step < spe:
            return f"step {self.epoch_step} of {spe}"
        return None


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


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def progress(run: Run, status: dict | None = None, *, now: float | None = None) -> Progress:
    """Summarise status.json and the last history records of `run`."""
    status = run.status() if status is None else status
    state = job_state(run, status)
    epochs = int(status.get("epochs") or run.config.get("epochs") or 0)
    step = int(status.get("step") or 0)
    spe = _int(status.get("steps_per_epoch"))
    total = status.get("total_steps") or (spe * epochs if spe else None)
    fraction = min(1.0, step / total) if total else 0.0
    if state == "finished":
        fraction = 1.0
    eta = status.get("eta_s")
    if eta is not None and state in TRAINING_STATES:
        since = _age_s(status.get("updated"), now)
        eta = max(0.0, float(eta) - (since or 0.0))
    elif state != "finished":
        eta = None
    records = run.history()
    last_step = next((r for r in reversed(records) if r["kind"] == "step"), {})
    last_epoch = next((r for r in reversed(records) if r["kind"] == "epoch"), {})
    message = str(status.get("message") or "")
    if state == "launch failed":
        message = launch_error(run)
    elif state == "starting":
        message = "starting the trainer (loading PyTorch and the data)…"
    names = [t.name for t in family_of(run.config).active_terms(run.config)]
    source = last_step or last_epoch
    done, total_phase = _int(status.get("phase_done")), _int(status.get("phase_total"))
    phase = str(status.get("phase") or "")
    phase_fraction = min(1.0, done / total_phase) if done is not None and total_phase else None
    if state not in TRAINING_STATES and phase in ("validating", "writing embeddings"):
        phase = ""  # a run stopped or killed there is not validating any more
    return Progress(
        run_id=run.run_id, state=state, phase=phase, phase_fraction=phase_fraction,
        epoch=int(status.get("epoch") or 0), epochs=epochs, step=step,
        total_steps=int(total) if total else None, fraction=float(fraction), eta_s=eta,
        images_per_s=status.get("images_per_s"), message=message, warning=status.get("warning"),
        device=status.get("device"), loss=source.get("loss"), terms={n: source.get(n) for n in names},
        val_loss=last_epoch.get("val_loss"), last_epoch=last_epoch,
        epoch_step=int(status.get("epoch_step") or 0), steps_per_epoch=spe,
        phase_done=done, phase_total=total_phase,
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
        keys = [k for k in keys if any(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                       for r in rows)]
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
    run, state, phase, dataset, model, loss, latent, epoch (the one under way, as the live panel counts),
    val loss, age, where, path, shipped, error, and the opened `Run` and its `Progress` ("open", "progress":
    None for a damaged run), each status read once, so whatever a page draws from one table agrees.
    Values a run lacks are None."""
    reap()
    rows = []
    for info in list_runs() if infos is None else infos:
        row = {"run": info.run_id, "state": info.state, "phase": "", "dataset": info.dataset, "model": None,
               "loss": None, "latent": info.latent_dim, "epoch": None, "val loss": None,
               "age": format_age(info.created, now), "where": "checkpoints/ (shipped)" if info.shipped else "runs/",
               "path": str(info.path), "shipped": info.shipped, "error": info.error or "", "open": None,
               "progress": None}
        if info.error is None:
            try:
                run = info.open()
                p = progress(run, info.status or run.status(), now=now)
                family = family_of(run.config)
                row.update(state=p.state, phase=p.phase if p.training else "", model=family.describe(run.config),
                           loss=loss_label(run.config), latent=family.latent_size(run.config),
                           epoch=f"{p.current_epoch}/{p.epochs}"
                           + (f", {p.in_epoch_step}" if p.in_epoch_step and not p.training else ""),
                           open=run, progress=p)
                if isinstance(p.val_loss, (int, float)) and math.isfinite(p.val_loss):
                    row["val loss"] = float(p.val_loss)
            except (RunFormatError, OSError, ValueError, TypeError, KeyError) as exc:
                row.update(state="broken", error=str(exc), open=None, progress=None)
        rows.append(row)
    return rows
