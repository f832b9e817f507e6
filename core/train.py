"""Command line: train a model into a new run directory, or continue one.

    .venv/bin/python -m core.train --dataset cifar10 --loss cauchy --latent-dim 128 --epochs 30
    .venv/bin/python -m core.train --family vqvae --dataset fashion_mnist --loss adaptive --latent-dim 64
    .venv/bin/python -m core.train --resume runs/<run_id>
    torchrun --nproc_per_node=2 -m core.train --dataset mnist --loss welsch ...   (DistributedDataParallel)

Every configuration field is a flag (`core.config`: the common fields, the reconstruction loss's and each
family's; `--help` lists them). The run directory's path is the first line on stdout (printed as soon
as it exists); progress goes to stderr (a live bar on a terminal, a line per epoch otherwise).
SIGINT/SIGTERM finish the current step, checkpoint and mark the run stopped; `--resume` continues it
exactly.

Exit status (core.cli): 0 finished, 1 failed (NaN/Inf or diverged, see status.json), 2 bad arguments,
missing data or a damaged run (the message names the file and the fix), 3 run locked by another process,
130 stopped by a signal. Importable: `main(argv) -> int`.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from core import datasets
from core.cli import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, add_field_flags, config_from_args
from core.cli import threads as threads_type
from core.config import all_fields, normalize_config
from core.families import FAMILIES
from core.fields import ConfigError

__all__ = ["ProgressReport", "build_parser", "flag_names", "main"]


def flag_names() -> dict[str, str]:
    """Config field -> its flag, for messages (ConfigError.naming)."""
    return {name: f.flag for name, f in all_fields().items()}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.train",
        description="Train a model (a VAE, a VQ-VAE, ...) with a chosen reconstruction loss; writes a run "
                    "directory (docs/RUN_FORMAT.md) and prints its path.",
        epilog="Objective (a VAE): mean over the batch of Σ_pixels ρ(x − x̂) + β·KL, pixels in [0, 1]. "
               "Data-parallel: torchrun --nproc_per_node=N -m core.train ...",
    )
    fields = all_fields()
    p.add_argument("--family", choices=list(FAMILIES), default=None, help="the model family (default vae)")
    add_field_flags(p.add_argument_group("configuration (a new run)"), fields.values(), skip=("family",))
    p.add_argument("--threads", type=threads_type, default=None, metavar="N", help="CPU threads for torch")
    p.add_argument("--runs-root", type=Path, default=None, metavar="DIR",
                   help="where to create the run (default $ROBUST_LOSS_LAB_RUNS or runs/)")
    p.add_argument("--run-id", default=None, metavar="ID", help="name of the run directory (default: generated)")
    p.add_argument("--resume", type=Path, default=None, metavar="RUN_DIR", help="continue a stopped or interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.add_argument("--log-every", type=int, default=None, help=argparse.SUPPRESS)
    return p


class ProgressReport:
    """Progress on stderr: a tqdm bar over the run's steps on a terminal; one line per epoch otherwise."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.live = stream.isatty()
        self.bar = None
        self.last_epoch = -1

    def __call__(self, status: dict) -> None:
        epochs = status.get("epochs") or 1
        done, last = int(status.get("epoch") or 0), status.get("last_epoch") or {}
        line = f"epoch {done}/{epochs}"
        if last.get("val_loss") is not None:
            line += f"  validation loss {last['val_loss']:.4g}"
        if status.get("images_per_s"):
            line += f"  {status['images_per_s']:,.0f} img/s"
        if status.get("warning") and last:
            line += f"  warning: {status['warning']}"
        if self.live:
            self._draw(status, last)
        elif last and done != self.last_epoch:
            self.last_epoch = done
            print(line, file=self.stream, flush=True)

    def _draw(self, status: dict, last: dict) -> None:
        from tqdm import tqdm

        total = status.get("total_steps") or 1
        if self.bar is None:
            self.bar = tqdm(total=total, file=self.stream, unit="step", dynamic_ncols=True, leave=True)
        self.bar.n = min(total, int(status.get("step") or 0))
        shown = int(status.get("epoch") or 0) + (0 if last or status.get("state") != "running" else 1)
        post = {"epoch": f"{min(shown, status.get('epochs') or 1)}/{status.get('epochs')}",
                "phase": status.get("phase") or ""}
        if last.get("val_loss") is not None:
            post["val"] = f"{last['val_loss']:.4g}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()
        if status.get("state") != "running":
            self.bar.close()


def _err(msg: str) -> None:
    print(f"core.train: {msg}", file=sys.stderr, flush=True)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status (see the module docstring)."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed why (or the help)
        return int(exc.code or 0)
    fields = all_fields()

    from core.device import DeviceError, configure_threads, resolve_device
    from core.distributed import DistContext
    from core.engine import AlreadyFinished, StopSignal, load_training_data, run_training
    from core.runs import RunFormatError, RunLocked, create_run, open_run

    given = config_from_args(args, fields.values())
    if args.resume is not None:
        changed = [fields[k].flag for k in given if k not in ("device", "compile")]
        if changed:
            _err(f"{', '.join(changed)} cannot be changed when resuming: the run keeps its config.json "
                 f"(only --device, --compile, --threads and --quiet apply)")
            return EXIT_USAGE
    configure_threads(args.threads)
    if args.resume is None:
        try:
            normalize_config(given)  # refuse bad arguments before touching anything
        except ConfigError as exc:
            _err(exc.naming(flag_names()))
            return EXIT_USAGE

    ctx = DistContext.from_env()
    progress = None if args.quiet or not ctx.is_main else ProgressReport(sys.stderr)
    stop = StopSignal()
    try:
        if args.resume is not None:
            run = open_run(args.resume)
            if run.shipped:
                _err(f"{run.path} is a shipped run (read-only); train a new run instead")
                return EXIT_USAGE
            cfg = run.config
            device = resolve_device(args.device or cfg.get("device", "auto"), ctx.local_rank if ctx.enabled else None)
            ctx.init(device)
            data = load_training_data(cfg, device)
        else:
            cfg = normalize_config(given)
            device = resolve_device(args.device or cfg["device"], ctx.local_rank if ctx.enabled else None)
            ctx.init(device)
            data = load_training_data(cfg, device)
            run = None
            if ctx.is_main:
                run = create_run({**given, "split": data.split, **({"run_id": args.run_id} if args.run_id else {})},
                                 root=args.runs_root)
            path = ctx.broadcast_text(str(run.path) if run else None)
            run = run or open_run(path)
        if ctx.is_main:
            print(run.path, flush=True)
        with stop.installed():
            result = run_training(run, data=data, device=device, compile=args.compile, dist_ctx=ctx, stop=stop,
                           on_progress=progress, log_every=args.log_every)
    except ConfigError as exc:
        _err(exc.naming(flag_names()))
        return EXIT_USAGE
    except (datasets.DatasetMissing, datasets.DatasetFormatError, DeviceError, RunFormatError,
            AlreadyFinished, FileExistsError, PermissionError, ValueError) as exc:
        _err(str(exc))
        return EXIT_USAGE
    except RunLocked as exc:
        _err(str(exc))
        return EXIT_LOCKED
    except KeyboardInterrupt:  # a second Ctrl-C while stopping: out now; the last checkpoint is whole
        _err("interrupted; the run continues from its last checkpoint with --resume")
        return EXIT_STOPPED
    finally:
        ctx.close()
    if ctx.is_main and not args.quiet:
        print(f"{result.state}: {result.message}", file=sys.stderr, flush=True)
    return {"finished": EXIT_OK, "stopped": EXIT_STOPPED}.get(result.state, EXIT_FAILED)


if __name__ == "__main__":
    raise SystemExit(main())
