"""Command line: train a VAE into a new run directory, or continue one.

    python -m core.train --dataset cifar10 --loss cauchy --latent-dim 128 --epochs 30
    python -m core.train --resume runs/<run_id>
    torchrun --nproc_per_node=2 -m core.train --dataset mnist --loss welsch ...   (DistributedDataParallel)

The run directory's path is the first line on stdout (printed as soon as it exists); progress goes to
stderr (a live bar on a terminal, a line per epoch otherwise). SIGINT/SIGTERM finish the current step,
checkpoint and mark the run stopped; `--resume` continues it exactly.

Exit status: 0 finished, 1 failed (NaN/Inf or diverged, see status.json), 2 bad arguments, missing data
or a damaged run (the message names the file and the fix), 3 run locked by another process, 130 stopped
by a signal. Importable: `main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from core import datasets
from core.config import DEFAULTS, ConfigError, normalize_config

__all__ = ["CONFIG_FLAGS", "EXIT_FAILED", "EXIT_LOCKED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "build_parser",
           "config_args", "main"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_STOPPED = 0, 1, 2, 3, 130

# Config key -> CLI flag, for the fields a new run takes from the command line (a resumed run from its
# config.json, so they are refused with --resume).
CONFIG_FLAGS = {
    "dataset": "--dataset", "loss": "--loss", "loss_alpha": "--loss-alpha", "loss_scale": "--loss-scale",
    "adaptive_alpha_lo": "--adaptive-alpha-lo", "adaptive_alpha_hi": "--adaptive-alpha-hi",
    "latent_dim": "--latent-dim", "epochs": "--epochs", "batch_size": "--batch-size", "lr": "--lr",
    "beta": "--beta", "seed": "--seed", "limit_train": "--limit-train", "width": "--width", "study": "--study",
    "run_id": "--run-id", "runs_root": "--runs-root",
}


def config_args(config: dict) -> list[str]:
    """The trainer's flags for the fields of `config` that have a flag and are not None, e.g.
    {"loss": "cauchy", "latent_dim": 8} -> ["--loss", "cauchy", "--latent-dim", "8"]."""
    args = []
    for key, flag in CONFIG_FLAGS.items():
        if config.get(key) is not None:
            args += [flag, str(config[key])]
    return args


def _loss_names() -> list[str]:
    try:
        from core.losses import LOSSES
    except ImportError:  # the loss package is broken: let config validation say so
        return []
    return list(LOSSES)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train a VAE with a chosen reconstruction loss; writes a run directory "
                    "(docs/RUN_FORMAT.md) and prints its path.",
        epilog="Objective: mean over the batch of Σ_pixels ρ(x − x̂) + β·KL, pixels in [0, 1]. "
               "Data-parallel: torchrun --nproc_per_node=N -m core.train ...",
    )
    d = DEFAULTS
    p.add_argument("--dataset", choices=datasets.DATASET_NAMES, default=None, help=f"default {d['dataset']}")
    losses = _loss_names()
    p.add_argument("--loss", choices=losses or None, default=None, help=f"reconstruction loss (default {d['loss']})")
    p.add_argument("--loss-alpha", type=float, default=None, metavar="A",
                   help="α for --loss general (ν for students_t)")
    p.add_argument("--loss-scale", type=float, default=None, metavar="C", help="scale c (default: the loss's)")
    p.add_argument("--adaptive-alpha-lo", type=float, default=None, metavar="A", help="adaptive loss: lowest α (0)")
    p.add_argument("--adaptive-alpha-hi", type=float, default=None, metavar="A", help="adaptive loss: highest α (3)")
    p.add_argument("--latent-dim", type=int, default=None, metavar="D", help=f"default {d['latent_dim']}")
    p.add_argument("--epochs", type=int, default=None, metavar="N", help=f"default {d['epochs']}")
    p.add_argument("--beta", type=float, default=None, metavar="B", help=f"KL weight (default {d['beta']})")
    p.add_argument("--lr", type=float, default=None, metavar="LR", help=f"Adam's learning rate (default {d['lr']})")
    p.add_argument("--batch-size", type=int, default=None, metavar="N",
                   help=f"global batch (default {d['batch_size']})")
    p.add_argument("--seed", type=int, default=None, metavar="S", help=f"default {d['seed']}")
    p.add_argument("--width", type=int, default=None, metavar="W", help=f"VAE channels (default {d['width']})")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N training images")
    p.add_argument("--study", default=None, help="tag the run as part of a study")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None, help="default auto (cuda if present)")
    p.add_argument("--compile", action="store_true", default=None, help="torch.compile the model (GPU)")
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for torch")
    p.add_argument("--runs-root", type=Path, default=None, metavar="DIR",
                   help="where to create the run (default $ROBUST_LOSS_LAB_RUNS or runs/)")
    p.add_argument("--run-id", default=None, metavar="ID", help="name of the run directory (default: generated)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped or interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    # For watching or interrupting tiny runs (demos, tests): sleep this long after each step.
    p.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    p.add_argument("--log-every", type=int, default=None, help=argparse.SUPPRESS)
    return p


class ProgressBar:
    """A one-line bar on a terminal; one line per epoch (and the end) when stderr is not a terminal."""

    def __init__(self, stream: TextIO, width: int = 24) -> None:
        self.stream, self.width = stream, width
        self.live = stream.isatty()
        self.last_epoch = -1
        self.last_draw = 0.0

    def __call__(self, status: dict) -> None:
        epochs, spe = status.get("epochs") or 1, status.get("steps_per_epoch") or 1
        total = status.get("total_steps") or epochs * spe
        frac = min(1.0, (status.get("step") or 0) / max(1, total))
        state, last = status.get("state"), status.get("last_epoch") or {}
        done = int(status.get("epoch") or 0)
        # A report at an epoch's end names that epoch; one during training names the epoch under way.
        shown = done if last or state != "running" else min(epochs, done + 1)
        parts = [f"epoch {shown}/{epochs}"]
        if self.live:
            filled = int(frac * self.width)
            parts.append("[" + "#" * filled + "." * (self.width - filled) + f"] {100 * frac:3.0f}%")
        if last:
            parts.append(f"val loss {last['val_loss']:.4g}  kl {last['val_kl']:.3g}  active units "
                         f"{last['active_units']}")
        if status.get("images_per_s"):
            parts.append(f"{status['images_per_s']:,.0f} img/s")
        eta = status.get("eta_s")
        if eta is not None and state == "running":
            parts.append(f"eta {int(eta) // 60}:{int(eta) % 60:02d}")
        line = "  ".join(parts)
        if self.live:
            now = time.monotonic()
            if state == "running" and not last and now - self.last_draw < 0.1:
                return
            self.last_draw = now
            self.stream.write("\r" + line.ljust(110))
            if state != "running":
                self.stream.write("\n")
        elif last and done != self.last_epoch:  # not a terminal: one line per epoch
            self.last_epoch = done
            self.stream.write(line + "\n")
        self.stream.flush()


def _err(msg: str) -> None:
    print(f"core.train: {msg}", file=sys.stderr, flush=True)


def _config_from_args(args: argparse.Namespace) -> dict:
    return {key: getattr(args, key) for key in DEFAULTS if getattr(args, key, None) is not None}


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    args = parser.parse_args(argv)

    from core.device import DeviceError, configure_threads, resolve_device
    from core.distributed import DistContext
    from core.engine import AlreadyFinished, StopSignal, load_training_data, train
    from core.runs import RunFormatError, RunLocked, create_run, open_run

    if args.resume is not None:
        given = [flag for key, flag in CONFIG_FLAGS.items() if getattr(args, key, None) is not None]
        if given:
            _err(f"{', '.join(given)} cannot be changed when resuming: the run keeps its config.json "
                 f"(only --device, --compile, --threads and --quiet apply)")
            return EXIT_USAGE
    try:
        configure_threads(args.threads)
    except ValueError as exc:
        _err(str(exc))
        return EXIT_USAGE
    if args.resume is None:
        try:
            normalize_config(_config_from_args(args))  # refuse bad arguments before touching anything
        except ConfigError as exc:
            _err(exc.naming(CONFIG_FLAGS))
            return EXIT_USAGE

    ctx = DistContext.from_env()
    progress = None if args.quiet or not ctx.is_main else ProgressBar(sys.stderr)
    stop = StopSignal()
    try:
        if args.resume is not None:
            run = open_run(args.resume)
            if run.shipped:
                _err(f"{run.path} is a shipped run (read-only); train a new run instead")
                return EXIT_USAGE
            cfg = run.config
            device = resolve_device(args.device or cfg.get("device", "auto"),
                                    ctx.local_rank if ctx.enabled else None)
            ctx.init(device)
            data = load_training_data(cfg, device)
        else:
            cfg = normalize_config(_config_from_args(args))  # refuse bad arguments before loading data
            device = resolve_device(args.device or cfg["device"], ctx.local_rank if ctx.enabled else None)
            ctx.init(device)
            data = load_training_data(cfg, device)
            run = None
            if ctx.is_main:
                run = create_run({**cfg, "split": data.split, **({"run_id": args.run_id} if args.run_id else {})},
                                 root=args.runs_root)
            path = ctx.broadcast_text(str(run.path) if run else None)
            run = run or open_run(path)
        if ctx.is_main:
            print(run.path, flush=True)
        with stop.installed():
            result = train(run, data=data, device=device, compile=args.compile, dist_ctx=ctx, stop=stop,
                           on_progress=progress, log_every=args.log_every, step_delay=args.step_delay)
    except ConfigError as exc:
        _err(exc.naming(CONFIG_FLAGS))
        return EXIT_USAGE
    except (datasets.DatasetMissing, datasets.DatasetFormatError, DeviceError, RunFormatError,
            AlreadyFinished, FileExistsError, PermissionError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except RunLocked as exc:
        _err(str(exc))
        return EXIT_LOCKED
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: out now, without a checkpoint
        _err("interrupted; the run continues from its last checkpoint with --resume")
        return EXIT_STOPPED
    finally:
        ctx.close()
    if ctx.is_main and not args.quiet:
        print(f"{result.state}: {result.message}", file=sys.stderr, flush=True)
    return {"finished": EXIT_OK, "stopped": EXIT_STOPPED}.get(result.state, EXIT_FAILED)


if __name__ == "__main__":
    raise SystemExit(main())
