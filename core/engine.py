"""The training loop: trains a run's model (whatever its family), writing progress, checkpoints and results
into its directory.

    data = load_training_data(config, device)      # uint8 tensors on the device, loaded once
    run = create_run({**config, "split": data.split})
    result = run_training(run, data=data)          # -> TrainResult(state, epoch, global_step, message)

`run_training(run)` also continues a run that has a checkpoint (`--resume`): it picks up at the exact step it
was saved at and reproduces the uninterrupted run (bit for bit on a CPU with the same thread count).

How a step works (no DataLoader, no host round trip):
- the epoch's order is `randperm(n)` from a CPU generator seeded by (seed, epoch); a batch is a slice
  of it, and the images, labels and indices are gathered from tensors already on the device;
- the family's objective takes that `Batch` and returns its terms (core/families/base.py); its noise
  comes from generators seeded by (seed, stream, global step), so neither the order nor the noise
  depends on how the run was interrupted;
- loss = Σ_t w_t · Σ_batch term_t / batch size, the weights from the family (for a VAE:
  recon + β·KL); the optimiser the config names (Adam by default, fused on CUDA) over every parameter
  of the objective (the network's, and the adaptive loss's α and c);
- on CUDA: bf16 autocast, channels_last, cuDNN autotuning; `compile=True` wraps the objective in
  `torch.compile`;
- the terms' sums stay on the device and are read every `log_every` steps (one sync), where a NaN/Inf
  or a blown-up loss stops the run as "failed" with the reason. Checkpoints are written only after
  the check passes (and the weights are checked finite), so the last checkpoint is always a good one.

What it writes (core.runs does the writing, atomically; the files are described once, in
docs/RUN_FORMAT.md): status.json (at most every 0.5 s, at each epoch end and at the end, with the
phase: training, validating, writing embeddings), history.jsonl (a step record every `log_every` steps,
an epoch record per epoch), a checkpoint at each epoch end and when stopped by SIGINT/SIGTERM (committed
in one rename, signals held off while it commits), and at the end the weights and the validation
embeddings. On resume, records after the checkpoint are dropped, so the history reads as one run; a run
whose epochs are all trained but whose finishing steps were cut off is finished by `--resume`.

Failure: a NaN/Inf loss or weights, or a loss that grows DIVERGENCE_FACTOR-fold over its first value,
stops the run as "failed" with the reason; the last checkpoint (written only after the checks passed)
is kept.

Data parallel: run under `torchrun --nproc_per_node=N -m core.train ...`; each rank takes every N-th
image of each global batch (with the matching rows of every noise draw) and scales its loss by
N / batch size, so the averaged gradient equals the single-process one. Rank 0 does all file I/O.
"""

from __future__ import annotations

import base64
import contextlib
import math
import os
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from core import datasets
from core.device import resolve_device, tune_backend
from core.distributed import DistContext
from core.families import Batch, Family, Objective, family_of, weights_of
from core.families.base import load_weights, mix_seed
from core.families.recon import track_training_fraction
from core.runs import Checkpoint, Run, RunFormatError, now_iso

__all__ = [
    "DIVERGENCE_FACTOR",
    "EMBEDDING_IMAGE_BYTES",
    "AlreadyFinished",
    "StopSignal",
    "TrainResult",
    "TrainingData",
    "build_objective",
    "build_optimizer",
    "epoch_permutation",
    "load_training_data",
    "run_training",
]

EMBEDDING_IMAGE_BYTES = 16 * 1024 * 1024  # images are saved with the embeddings up to this size
STATUS_INTERVAL_S = 0.5
# Divergence: a training or validation loss (per image) whose size passes DIVERGENCE_FACTOR times the
# size of the run's first loss (the untrained model's, on the first batch; at least 1) has blown up,
# even while finite. A healthy run's loss falls from there; it does not grow a thousandfold.
DIVERGENCE_FACTOR = 1e3
# Images/s is smoothed over about this many seconds of training (an exponential moving average), so it
# and the ETA do not jump with every short log window.
SPEED_SMOOTHING_S = 5.0


class AlreadyFinished(Exception):
    """The run has already trained all its epochs."""


# ---------------------------------------------------------------------------------------------------
# Data, randomness, the objective and its optimiser


@dataclass
class TrainingData:
    """The training and validation splits, as uint8 tensors on the training device."""

    train: datasets.ImageSet
    val: datasets.ImageSet
    split: dict[str, int]  # {"train", "val", "test"} sizes (recorded in config.json)


def load_training_data(config: dict, device: str | torch.device = "cpu", root: Any = None) -> TrainingData:
    """Load the config's dataset once onto `device` (DatasetMissing names the fix if it is absent).

    The validation split is cut to the config's recorded size when that is smaller (a training limit
    caps validation too)."""
    name, limit = config["dataset"], config.get("limit_train")
    train_set = datasets.load_split(name, "train", device, limit=limit, root=root)
    split = datasets.found_split_sizes(name, limit, root=root)
    recorded = (config.get("split") or {}).get("val")
    val_limit = recorded if isinstance(recorded, int) and recorded < split["val"] else None
    if val_limit is None and config.get("version", 2) != 1 and limit is not None and limit < split["val"]:
        val_limit = limit
    val_set = datasets.load_split(name, "val", device, limit=val_limit, root=root)
    split["val"] = len(val_set)
    return TrainingData(train_set, val_set, split)


def epoch_permutation(seed: int, epoch: int, n: int) -> torch.Tensor:
    """The order of the n training images in `epoch` (CPU, int64): the same on every device and rank."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(mix_seed(seed, 1, epoch)))


def build_objective(config: dict, device: torch.device) -> Objective:
    """The family's objective from the config, seeded by config["seed"], on `device` (bf16 autocast and
    channels_last on CUDA)."""
    torch.manual_seed(int(config["seed"]))
    objective = track_training_fraction(family_of(config).build(config))  # annealed α: any family's loss
    cuda = device.type == "cuda"
    objective.amp, objective.channels_last = cuda, cuda
    objective = objective.to(device)
    if cuda:
        objective.to(memory_format=torch.channels_last)
    return objective


def build_optimizer(config: dict, params: list[nn.Parameter], device: torch.device) -> torch.optim.Optimizer:
    """torch.optim's Adam, AdamW or RAdam (config["optimizer"]) with the config's lr and weight decay."""
    name, lr, decay = config.get("optimizer") or "adam", float(config["lr"]), float(config.get("weight_decay", 0.0))
    cuda = device.type == "cuda"
    if name == "adamw":
        return torch.optim.AdamW(params, lr=lr, weight_decay=decay, fused=cuda)
    if name == "radam":
        return torch.optim.RAdam(params, lr=lr, weight_decay=decay)
    return torch.optim.Adam(params, lr=lr, weight_decay=decay, fused=cuda)


# ---------------------------------------------------------------------------------------------------
# Signals


class StopSignal:
    """A stop request, set by SIGINT/SIGTERM (while `installed()`) or by calling `request()`.

    The loop finishes its step, checkpoints and marks the run stopped. A second SIGINT while stopping
    raises KeyboardInterrupt (to get out of a stuck step), except inside `shielded()`, which a checkpoint's
    commit runs in: there it is held back and raised when the commit is complete, so no signal ever
    leaves a checkpoint half-written."""

    def __init__(self) -> None:
        self.reason: str | None = None
        self._shield_depth = 0
        self._held_interrupt = False

    @property
    def requested(self) -> bool:
        return self.reason is not None

    def request(self, reason: str = "stop requested") -> None:
        if self.reason is None:
            self.reason = reason

    def _handler(self, signum: int, _frame: Any) -> None:
        if self.requested and signum == signal.SIGINT:
            if self._shield_depth:
                self._held_interrupt = True
                return
            raise KeyboardInterrupt
        self.request(f"stopped by {signal.Signals(signum).name}")

    @contextlib.contextmanager
    def shielded(self) -> Iterator[None]:
        """Run the block to its end whatever signals arrive; a forced interrupt is raised after it."""
        self._shield_depth += 1
        try:
            yield
        finally:
            self._shield_depth -= 1
        if not self._shield_depth and self._held_interrupt:
            self._held_interrupt = False
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def installed(self) -> Iterator[StopSignal]:
        """Handle SIGINT and SIGTERM in this block (only possible in the main thread; elsewhere a no-op)."""
        if threading.current_thread() is not threading.main_thread():
            yield self
            return
        previous = {s: signal.signal(s, self._handler) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            yield self
        finally:
            for s, h in previous.items():
                signal.signal(s, h)


# ---------------------------------------------------------------------------------------------------
# Optimiser state <-> safetensors + JSON


def _optimizer_to_files(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    extra: dict[str, dict] = {}
    for pid, state in sd["state"].items():
        for key, value in state.items():
            if torch.is_tensor(value):
                tensors[f"state.{pid}.{key}"] = value
            else:
                extra.setdefault(str(pid), {})[key] = value
    return tensors, {"param_groups": sd["param_groups"], "state_extra": extra}


def _optimizer_from_files(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict] = {}
    for name, value in tensors.items():
        _, pid, key = name.split(".", 2)
        state.setdefault(int(pid), {})[key] = value
    for pid, extra in meta.get("state_extra", {}).items():
        state.setdefault(int(pid), {}).update(extra)
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    # Loaded moments are contiguous; give them their parameter's layout (channels_last on CUDA).
    for p, st in opt.state.items():
        for key, value in list(st.items()):
            if torch.is_tensor(value) and value.shape == p.shape and value.stride() != p.stride():
                st[key] = torch.empty_like(p).copy_(value)


def _rng_state() -> dict:
    out = {"cpu": base64.b64encode(torch.get_rng_state().numpy().tobytes()).decode()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        out["cuda"] = base64.b64encode(torch.cuda.get_rng_state().numpy().tobytes()).decode()
    return out


def _set_rng_state(state: dict) -> None:
    if "cpu" in state:
        torch.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["cpu"])), dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.frombuffer(bytearray(base64.b64decode(state["cuda"])), dtype=torch.uint8))


# ---------------------------------------------------------------------------------------------------
# The loop


@dataclass
class TrainResult:
    state: str  # "finished" | "stopped" | "failed"
    epoch: int  # completed epochs
    global_step: int
    message: str


class _Failure(Exception):
    """Training produced a non-finite or blown-up value; the run is marked failed with this message."""


class _Trainer:
    def __init__(self, run: Run, data: TrainingData, device: torch.device, ctx: DistContext, compile_: bool,
                 stop: StopSignal, on_progress: Callable[[dict], None] | None, log_every: int | None) -> None:
        self.run, self.cfg, self.data, self.device, self.ctx = run, run.config, data, device, ctx
        self.stop, self.on_progress = stop, on_progress
        cfg = self.cfg
        self.family: Family = family_of(cfg)
        self.terms = self.family.active_terms(cfg)
        self.term_names = [t.name for t in self.terms]
        weights = self.family.loss_weights(cfg)
        self.weights = [(i, float(weights[name])) for i, name in enumerate(self.term_names) if name in weights]
        self.batch = int(cfg["batch_size"])
        self.seed = int(cfg["seed"])
        self.epochs = int(cfg["epochs"])
        self.n = len(data.train)
        steps = math.ceil(self.n / self.batch)
        tail = self.n % self.batch
        if ctx.enabled and tail and tail < ctx.world_size:
            steps -= 1  # a last batch smaller than the number of ranks would leave a rank empty
        if steps < 1:
            raise ValueError(f"{self.n} training images cannot fill one batch across {ctx.world_size} processes")
        self.steps = steps
        self.log_every = log_every or max(1, min(50, steps // 10))

        self.objective = build_objective(cfg, device)
        self.optimizer = build_optimizer(cfg, list(self.objective.parameters()), device)
        module: nn.Module = self.objective
        if ctx.enabled:
            module = nn.parallel.DistributedDataParallel(
                module, device_ids=[device.index] if device.type == "cuda" else None)
        if compile_:
            module = torch.compile(module, dynamic=False)
        self.module = module

        k = len(self.term_names)
        self.acc = torch.zeros(k, device=device)  # term sums since the last log point (this rank)
        self.window_images = 0  # images in those sums (all ranks)
        self.counts: dict[str, torch.Tensor] = {}  # the family's per-epoch counts (this rank)
        self.loss_reference: float | None = None  # see DIVERGENCE_FACTOR
        self.global_step = 0
        self.saved_step = -1
        self.epoch_done = 0
        self.epoch_step = 0
        self.epoch_acc = [0.0] * (k + 1)  # term sums, images (this epoch, all ranks)
        self.epoch_time = 0.0  # seconds spent training in the current epoch (before a stop)
        self.elapsed = 0.0
        self.last_status = 0.0
        self.images_per_s: float | None = None
        self.eta_s: float | None = None
        self.speed_clock: float | None = None  # when images_per_s was last updated
        self.val_seconds = 0.0  # how long the last validation took
        self.phase = "training"
        self.started = now_iso()
        self.message = ""
        self.warning: str | None = None

    # -- checkpoint -------------------------------------------------------------------------------
    def restore(self) -> bool:
        ckpt = self.run.load_checkpoint()
        if ckpt is None:
            return False
        t = ckpt.trainer
        try:
            load_weights(self.objective, ckpt.model)
            _optimizer_from_files(self.optimizer, ckpt.optimizer, t["optimizer"])
        except (RuntimeError, ValueError, KeyError) as exc:
            raise RunFormatError(f"{self.run.path}: the checkpoint does not fit this run's model ({exc})") from exc
        if len(t["epoch_acc"]) != len(self.epoch_acc):
            raise RunFormatError(f"{self.run.path}: the checkpoint logs {len(t['epoch_acc']) - 1} terms, this run's "
                                 f"family {len(self.term_names)}; the checkpoint is from another model")
        self.global_step, self.epoch_done, self.epoch_step = t["global_step"], t["epoch"], t["epoch_step"]
        self.saved_step = self.global_step
        self.epoch_acc = [float(v) for v in t["epoch_acc"]]
        self.epoch_time = float(t.get("epoch_time_s", 0.0))
        self.elapsed = float(t.get("elapsed_s", 0.0))
        # The sums of a log window cut short by a stop: restored as they were, so the run logs at the same
        # steps and sums in the same order as an uninterrupted one (the same history, to the last digit).
        window = t.get("window") or [0.0] * (len(self.term_names) + 1)
        self.acc = torch.tensor(window[:-1], dtype=torch.float32, device=self.device)
        self.window_images = int(window[-1])
        self.counts = {k: v.to(self.device) for k, v in ckpt.counts.items()}
        self.loss_reference = t.get("loss_reference")
        if isinstance(t.get("log_every"), int) and t["log_every"] > 0:
            self.log_every = t["log_every"]  # log at the same steps as before the stop
        _set_rng_state(t.get("rng", {}))
        if t.get("steps_per_epoch") != self.steps:
            raise ValueError(f"the checkpoint has {t.get('steps_per_epoch')} steps per epoch, this setup "
                             f"{self.steps} (a different number of processes?); resume with the same setup")
        return True

    def checkpoint(self) -> None:
        if self.saved_step == self.global_step:
            return
        self._check_weights()
        self.saved_step = self.global_step
        if not self.ctx.is_main:
            return
        with self.stop.shielded():  # a signal now waits until the checkpoint is committed
            opt_tensors, opt_meta = _optimizer_to_files(self.optimizer)
            trainer = {
                "global_step": self.global_step, "epoch": self.epoch_done, "epoch_step": self.epoch_step,
                "steps_per_epoch": self.steps, "epoch_acc": self.epoch_acc, "epoch_time_s": self.epoch_time,
                "elapsed_s": self.elapsed, "seed": self.seed, "world_size": self.ctx.world_size,
                "optimizer": opt_meta, "rng": _rng_state(), "saved": now_iso(),
                "window": [*(float(v) for v in self.acc.tolist()), self.window_images],
                "loss_reference": self.loss_reference, "log_every": self.log_every, "terms": self.term_names,
            }
            self.run.save_checkpoint(Checkpoint(weights_of(self.objective), opt_tensors, trainer, dict(self.counts)))

    def _check_weights(self) -> None:
        with torch.no_grad():
            bad = [name for name, p in self.objective.named_parameters() if not bool(torch.isfinite(p).all())]
        if bad:
            raise _Failure(f"parameters became NaN/Inf ({', '.join(bad[:3])}) at step {self.global_step}")

    # -- reporting --------------------------------------------------------------------------------
    def status(self, state: str, **extra: Any) -> dict:
        return {
            "state": state, "phase": self.phase, "epoch": self.epoch_done, "epochs": self.epochs,
            "step": self.global_step, "epoch_step": self.epoch_step, "steps_per_epoch": self.steps,
            "total_steps": self.steps * self.epochs, "pid": os.getpid(), "host": socket.gethostname(),
            "device": str(self.device), "world_size": self.ctx.world_size, "started": self.started,
            "finished": None, "message": self.message, "warning": self.warning, "eta_s": self.eta_s,
            "images_per_s": self.images_per_s, **extra,
        }

    def report(self, state: str = "running", *, force: bool = False, **extra: Any) -> None:
        if not self.ctx.is_main:
            return
        now = time.monotonic()
        if not force and now - self.last_status < STATUS_INTERVAL_S:
            return
        self.last_status = now
        status = self.status(state, **extra)
        self.run.write_status(status)
        if self.on_progress is not None:
            self.on_progress(status)

    def _phase_progress(self, phase: str) -> Callable[[int, int], None]:
        """A callback for the family's evaluation and embedding loops: status.json shows the phase."""
        def report(done: int, total: int) -> None:
            self.phase = phase
            self.report(force=done == 0, phase_done=done, phase_total=total)
        return report

    # -- the loop ---------------------------------------------------------------------------------
    def fit(self) -> TrainResult:
        resumed = self.restore()
        if self.epoch_done >= self.epochs and self.run.has_embeddings and \
                self.run.status().get("state") == "finished":
            raise AlreadyFinished(f"run {self.run.run_id} has already trained its {self.epochs} epochs")
        if self.ctx.is_main:
            gs, ep = self.global_step, self.epoch_done
            self.run.truncate_history(lambda r: (r["kind"] == "epoch" and (r.get("epoch") or 0) <= ep)
                                      or (r["kind"] == "step" and (r.get("step") or 0) <= gs))
        if not resumed:
            self.message = ""
        elif self.epoch_done >= self.epochs:
            self.message = "all epochs trained; finishing (weights, embeddings)"
        else:
            self.message = f"resumed in epoch {self.epoch_done + 1} after step {self.epoch_step} of {self.steps}"
        self.report(force=True)
        try:
            if self.epoch_done < self.epochs:
                result = self._epochs()
                if result is not None:
                    return result
            self._finish()
        except _Failure as exc:
            kept = (f"the checkpoint of epoch {self.epoch_done} (step {self.saved_step}) is kept"
                    if self.saved_step >= 0 else "no checkpoint had been written yet")
            self.message = f"{exc}; {kept}. Lower the learning rate (--lr) or change the loss, and train a new run"
            self.report("failed", force=True, finished=now_iso())
            return TrainResult("failed", self.epoch_done, self.global_step, self.message)
        return TrainResult("finished", self.epoch_done, self.global_step, self.message)

    def _sync_stats(self, acc: torch.Tensor) -> list[float]:
        stats = self.ctx.all_reduce_sum(acc.clone())
        return [float(v) for v in stats.tolist()]

    def _stop_agreed(self) -> bool:
        if not self.ctx.enabled:
            return self.stop.requested
        flag = torch.tensor([1.0 if self.stop.requested else 0.0], device=self.ctx.comm_device())
        return bool(self.ctx.all_reduce_max(flag).item() > 0)

    def _loss_of(self, sums: list[float], images: int) -> float:
        """The training loss per image from term sums: Σ_t w_t · sum_t / images."""
        total = 0.0
        for i, w in self.weights:
            total += w * sums[i]
        return total / max(1, images)

    def _check_loss(self, loss: float, where: str) -> None:
        """_Failure when a per-image loss is NaN/Inf or has grown DIVERGENCE_FACTOR-fold over the first one."""
        if not math.isfinite(loss):
            raise _Failure(f"the loss became {'NaN' if math.isnan(loss) else 'Inf'} {where}")
        reference = max(1.0, abs(self.loss_reference or 0.0))
        if abs(loss) > DIVERGENCE_FACTOR * reference:
            raise _Failure(f"the training diverged: the loss reached {loss:.3g} {where}, over "
                           f"{DIVERGENCE_FACTOR:g} times its first value ({self.loss_reference:.3g})")

    def _step(self, images: torch.Tensor, labels: torch.Tensor, perm: torch.Tensor, s: int) -> int:
        """One optimiser step on slice s of the epoch's order; returns the global batch size."""
        rank, world = self.ctx.rank, self.ctx.world_size
        idx = perm[s * self.batch : (s + 1) * self.batch]
        global_batch = idx.numel()
        if world > 1:
            idx = idx[rank::world]
        batch = Batch(images[idx], labels[idx], idx, self.global_step + 1, self.seed, global_batch, rank, world,
                      self.global_step / (self.steps * self.epochs))
        out = self.module(batch)
        terms = out["terms"]
        local = idx.numel()
        sums = [(t.sum() if t.ndim else t * local) for t in (terms[name] for name in self.term_names)]
        loss = None
        for i, w in self.weights:
            part = sums[i] if w == 1.0 else w * sums[i]
            loss = part if loss is None else loss + part
        loss = loss * (world / global_batch)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.acc += torch.stack([v.detach().float() for v in sums])
        for name, value in out.get("counts", {}).items():
            value = value.detach()
            self.counts[name] = self.counts[name] + value if name in self.counts else value.clone()
        return global_batch

    def _epochs(self) -> TrainResult | None:
        images, labels = self.data.train.images, self.data.train.labels
        world = self.ctx.world_size
        for epoch in range(self.epoch_done + 1, self.epochs + 1):
            perm = epoch_permutation(self.seed, epoch, self.n).to(self.device)
            t_epoch = time.perf_counter() - self.epoch_time  # a resumed epoch keeps its earlier time
            self.phase = "training"
            for s in range(self.epoch_step, self.steps):
                global_batch = self._step(images, labels, perm, s)
                self.window_images += global_batch
                self.global_step += 1
                self.epoch_step = s + 1
                if self.loss_reference is None:  # the untrained model's loss: one sync, once per run
                    self.loss_reference = self._loss_of(self._sync_stats(self.acc), global_batch)
                last = self.epoch_step == self.steps
                if last or self.epoch_step % self.log_every == 0:
                    sums = self._sync_stats(self.acc)
                    self.acc.zero_()
                    self.epoch_acc = [a + b for a, b in zip(self.epoch_acc, [*sums, self.window_images], strict=True)]
                    self._check_loss(self._loss_of(sums, self.window_images),
                                     f"at epoch {epoch}, step {self.epoch_step} (global step {self.global_step})")
                    self.epoch_time = time.perf_counter() - t_epoch
                    self._log_step(epoch, sums, self.window_images)
                    self.window_images = 0
                    if not last and self._stop_agreed():
                        return self._stopped(epoch)
                elif world == 1 and self.stop.requested:
                    self.epoch_time = time.perf_counter() - t_epoch
                    return self._stopped(epoch)
            self.epoch_time = time.perf_counter() - t_epoch
            self._end_epoch(epoch)
            if epoch < self.epochs and self._stop_agreed():
                return self._stopped(epoch + 1)
        return None

    def _speed(self, window_images: int) -> None:
        """Images per second as an exponential moving average over about SPEED_SMOOTHING_S seconds of
        training, and the ETA: the images left at that rate plus the validations left at the last one's
        duration."""
        now = time.perf_counter()
        last, self.speed_clock = self.speed_clock, now
        if last is not None and now > last and window_images:
            rate = window_images / (now - last)
            keep = math.exp(-(now - last) / SPEED_SMOOTHING_S)
            self.images_per_s = rate if self.images_per_s is None else keep * self.images_per_s + (1 - keep) * rate
        elif self.images_per_s is None and self.epoch_time > 0:
            self.images_per_s = self.epoch_acc[-1] / self.epoch_time
        if self.images_per_s:
            left = (self.steps * self.epochs - self.global_step) * self.batch
            self.eta_s = left / self.images_per_s + (self.epochs - self.epoch_done) * self.val_seconds

    def _log_step(self, epoch: int, sums: list[float], window_images: int) -> None:
        self._speed(window_images)
        if not self.ctx.is_main:
            return
        n = max(1, window_images)
        record = {
            "kind": "step", "epoch": epoch, "epoch_step": self.epoch_step, "step": self.global_step,
            "epoch_float": (epoch - 1) + self.epoch_step / self.steps, "time": time.time(),
            "elapsed_s": self.elapsed + self.epoch_time, "loss": self._loss_of(sums, window_images),
        }
        record.update({name: sums[i] / n for i, name in enumerate(self.term_names)})
        record["images_per_s"] = self.images_per_s
        self.run.append_history(record)
        self.report()

    def _end_epoch(self, epoch: int) -> None:
        *sums, count = self.epoch_acc
        count = max(1.0, count)
        failed = torch.zeros(1, device=self.ctx.comm_device() if self.ctx.enabled else "cpu")
        counts = {k: self.ctx.all_reduce_sum(v.clone()) for k, v in sorted(self.counts.items())}
        metrics: dict = {}
        why = ""
        if self.ctx.is_main:
            started = time.perf_counter()
            metrics = self.family.evaluate(self.objective, self.data.val.images, self.cfg,
                                           progress=self._phase_progress("validating"))
            self.val_seconds = time.perf_counter() - started
            try:
                self._check_loss(metrics["val_loss"], f"on the validation set at the end of epoch {epoch}")
            except _Failure as exc:
                why = str(exc)
                failed += 1
        if self.ctx.enabled:
            self.ctx.all_reduce_max(failed)
        if failed.item() > 0:
            raise _Failure(why or f"the validation loss became NaN/Inf or diverged at the end of epoch {epoch}")
        self.phase = "training"
        self.speed_clock = None  # the validation's time is not training time
        self.elapsed += self.epoch_time
        epoch_s = self.epoch_time
        self.epoch_done, self.epoch_step, self.epoch_time = epoch, 0, 0.0
        self.epoch_acc = [0.0] * len(self.epoch_acc)
        self.counts = {}
        # The epoch's record goes before its checkpoint: a crash between the two then redoes the epoch on
        # resume (which drops records newer than the checkpoint) instead of losing the record for good.
        if self.ctx.is_main:
            record = {"kind": "epoch", "epoch": epoch, "epoch_step": self.steps, "step": self.global_step,
                      "epoch_float": float(epoch), "time": time.time(), "elapsed_s": self.elapsed,
                      "loss": self._loss_of(sums, int(count)) if count else None}
            record.update({name: sums[i] / count for i, name in enumerate(self.term_names)})
            record.update({"images_per_s": self.images_per_s, "epoch_s": epoch_s,
                           **self.family.epoch_metrics(counts, self.cfg), **metrics})
            self.warning = self.family.health(record, self.cfg)
            self.run.append_history(record)
        self.checkpoint()
        self.message = f"epoch {epoch}/{self.epochs} done" + (f"; {self.warning}" if self.warning else "")
        self.report(force=True, last_epoch=metrics or None)
        self.ctx.barrier()

    def _stopped(self, epoch: int) -> TrainResult:
        # A window cut short is checked for NaN/Inf here and kept in the checkpoint (not logged), so the
        # resumed run logs exactly what an uninterrupted one would.
        if self.window_images and not all(math.isfinite(v) for v in self.acc.tolist()):
            raise _Failure(f"the loss became NaN/Inf at epoch {epoch}, step {self.epoch_step}")
        self.checkpoint()  # raises _Failure (caught in fit) if the weights went bad since the last check
        where = (f"after step {self.epoch_step} of {self.steps} of epoch {epoch}" if self.epoch_step
                 else f"before epoch {epoch}")
        self.message = (f"{self.stop.reason or 'stopped'} {where}; continue with "
                        f".venv/bin/python -m core.train --resume {self.run.path}")
        self.report("stopped", force=True, finished=now_iso())
        self.ctx.barrier()
        return TrainResult("stopped", self.epoch_done, self.global_step, self.message)

    def _finish(self) -> None:
        """The finishing steps, after the last epoch's checkpoint: the weights file, the embeddings, the
        final status. Each is rewritten whole from the trained model, so a resume after a crash anywhere in
        here does them again and the run ends finished."""
        if self.ctx.is_main:
            with self.stop.shielded():
                self.run.save_weights(weights_of(self.objective), self.global_step)
            val = self.data.val
            tensors = self.family.embed(self.objective, val.images, progress=self._phase_progress("writing embeddings"))
            tensors.update({"labels": val.labels.cpu(), "index": torch.arange(len(val), dtype=torch.int64),
                            "source_index": val.index.cpu()})
            if val.images.numel() <= EMBEDDING_IMAGE_BYTES:
                tensors["images"] = val.images.cpu()
            self.run.save_embeddings(tensors)
            last = self.run.history("epoch")
            tail = ""
            if last and last[-1].get("val_loss") is not None:
                tail = f"; validation loss {last[-1]['val_loss']:.4g}"
            self.message = f"finished {self.epochs} epochs{tail}" + (f"; {self.warning}" if self.warning else "")
            self.eta_s = 0.0
            self.phase = "done"
            self.report("finished", force=True, finished=now_iso())
        self.ctx.barrier()


def run_training(run: Run, *, data: TrainingData | None = None, device: str | torch.device | None = None,
          compile: bool | None = None, dist_ctx: DistContext | None = None, stop: StopSignal | None = None,
          on_progress: Callable[[dict], None] | None = None, log_every: int | None = None) -> TrainResult:
    """Train `run` (continuing from its checkpoint if it has one) and return how it ended.

    data: preloaded splits (else loaded here from the config). device: default the config's ("auto").
    compile: default the config's. stop: a StopSignal (install its handlers to react to SIGINT/SIGTERM).
    on_progress(status) is called whenever status.json is written (the command line's progress bar).
    log_every: steps between history lines and NaN checks (default ~10 per epoch, at most 50).
    Raises RunLocked if another process trains the run, AlreadyFinished, DatasetMissing, DeviceError.
    """
    ctx = dist_ctx or DistContext()
    cfg = run.config
    dev = resolve_device(device or cfg.get("device", "auto"), ctx.local_rank if ctx.enabled else None)
    ctx.init(dev)
    tune_backend(dev)
    if data is None:
        data = load_training_data(cfg, dev)
    else:
        data = TrainingData(data.train.to(dev), data.val.to(dev), data.split)
    expected = cfg["split"]
    if len(data.train) != expected["train"] or len(data.val) != expected["val"]:
        raise ValueError(f"the dataset now gives {len(data.train)} training and {len(data.val)} validation "
                         f"images, the run was made with {expected['train']} and {expected['val']}: the data "
                         f"files changed; train a new run")
    stop = stop or StopSignal()
    use_compile = bool(cfg.get("compile", False)) if compile is None else compile
    lock = run.lock() if ctx.is_main else contextlib.nullcontext()
    with lock:
        trainer = _Trainer(run, data, dev, ctx, use_compile, stop, on_progress, log_every)
        return trainer.fit()
