"""The one-command study: train a model per family, loss, latent size and seed, probe each, write the table.

    .venv/bin/python -m core.study --dataset cifar10 \\
        --losses mse,cauchy,geman_mcclure,welsch,smooth_l1,general,adaptive --latent-dims 128 --epochs 30
    .venv/bin/python -m core.study ... --latent-dims 64,128,256,512          # the latent-size sweep
    .venv/bin/python -m core.study ... --families vae,vqvae                  # VAE against VQ-VAE per loss
    .venv/bin/python -m core.study ... --with beta=0.5,1,2                   # any field, fixed or swept

The grid is families × losses × latent sizes × every `--with FIELD=V1,V2` with several values × seeds.
Each run is `<runs-root>/<study>[-<family>]-<loss>[-a<α>]-z<d>[-<field><value>...]-s<seed>` (the VAE, the
lab's first family, has no family tag), trained by `python -m core.train` in a subprocess. Running the
command again skips finished runs, resumes stopped or interrupted ones (`core.train --resume`) and
re-probes only what changed, so an interrupted study continues where it stopped; a run that already
exists with other settings is refused (pick another --study name). Then every finished run is probed
(`core.probes`: fitted on the train split, scored on the test split) and the study is written to
`<runs-root>/studies/<study>/` (core.report):

    study.json      the command, settings, runs, machine and times
    results.csv     one row per run (core.compare.COLUMNS)
    report.md       the table, the figures, the machine and the time it took
    figures/        accuracy, cross-entropy, the sweep against latent size, reconstructions, prior samples,
                    learned α and c maps

`--ship-to DIR` also copies the finished runs, slimmed for shipping (core.ship), and the study folder into
DIR (the app's checkpoints/).

Exit status (core.cli): 0 every run finished and was probed, 1 a run failed, 2 bad arguments or data,
3 a run is being trained by another process, 130 interrupted (run the same command again to continue).
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.cli import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, comma_list, field_args
from core.cli import threads as threads_type
from core.engine import StopSignal
from core.jobs import REPO, train_command, trainer_env
from core.report import machine, write_study
from core.runs import RunFormatError, now_iso, open_run, runs_root, write_bytes_atomic
from core.ship import ship

# The losses of the reference study (robust-loss VAEs on CIFAR-10).
DEFAULT_LOSSES = ("mse", "cauchy", "geman_mcclure", "welsch", "smooth_l1", "general", "adaptive")
# Config fields that do not decide what a run is (a finished run is reused whatever they say).
_NOT_IDENTITY = ("device", "compile", "study")

__all__ = ["DEFAULT_LOSSES", "RunSpec", "build_parser", "main", "plan_runs"]


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: its id and the training config fields the study sets."""

    run_id: str
    config: dict

    def train_args(self) -> list[str]:
        """`core.train`'s flags for this run's config (the run id and root are added by the caller)."""
        from core.config import all_fields

        return field_args(self.config, all_fields().values())


def _assignment(text: str) -> tuple[str, list[str]]:
    field, sep, values = text.partition("=")
    if not sep or not field.strip() or not values.strip():
        raise argparse.ArgumentTypeError(f"expected FIELD=VALUE[,VALUE...], got {text!r}")
    return field.strip().replace("-", "_"), [v.strip() for v in values.split(",") if v.strip()]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.study",
        description="Train a model per family, reconstruction loss, latent size (and any swept field) and seed, "
                    "probe their representations, and write the results table and report. Rerun the same "
                    "command to continue an interrupted study.")
    p.add_argument("--dataset", required=True, help="dataset name (see python -m core.datasets)")
    p.add_argument("--families", type=comma_list(str), default=["vae"], metavar="F[,F...]",
                   help="model families (default vae; e.g. vae,vqvae)")
    p.add_argument("--losses", type=comma_list(str), default=list(DEFAULT_LOSSES),
                   help=f"comma-separated reconstruction losses (default {','.join(DEFAULT_LOSSES)})")
    p.add_argument("--latent-dims", type=comma_list(int), required=True, metavar="D[,D...]",
                   help="latent sizes; several make the latent-size sweep (e.g. 64,128,256,512)")
    p.add_argument("--epochs", type=int, required=True, metavar="N")
    p.add_argument("--seeds", type=comma_list(int), default=[0], metavar="S[,S...]",
                   help="training seeds per grid point; several give error bars (default 0)")
    p.add_argument("--loss-alpha", type=float, default=1.0, metavar="A",
                   help="α of the 'general' loss (default 1: Charbonnier)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N training images")
    p.add_argument("--batch-size", type=int, default=None, metavar="N")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--beta", type=float, default=None, help="KL weight (VAE)")
    p.add_argument("--width", type=int, default=None, metavar="W", help="network channels")
    p.add_argument("--with", dest="assignments", type=_assignment, action="append", default=[],
                   metavar="FIELD=V[,V...]", help="set any configuration field; several values sweep it "
                                                  "(repeatable; a field a family does not have is left out for it)")
    p.add_argument("--runs-root", type=Path, default=None, metavar="DIR",
                   help="where the runs go (default $ROBUST_LOSS_LAB_RUNS or runs/)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name (default <dataset>-e<epochs>[-n<limit>]); runs are tagged with it")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where the study is written (default <runs-root>/studies/<study>)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--threads", type=threads_type, default=None, metavar="N",
                   help="CPU threads for training and probes")
    p.add_argument("--probe-train", type=int, default=10000, metavar="N",
                   help="probe-training images from the train split (0: all; default 10000)")
    p.add_argument("--probe-test", type=int, default=0, metavar="N", help="probe test images (0: the whole test split)")
    p.add_argument("--probe-seeds", type=comma_list(int), default=[0, 1, 2], metavar="S[,S...]",
                   help="MLP probe seeds (default 0,1,2)")
    p.add_argument("--probe-features", default="z", metavar="KEY",
                   help="the representation probed (z: μ of a VAE, z_e of a VQ-VAE; z_q: a VQ-VAE's codes)")
    p.add_argument("--ship-to", type=Path, default=None, metavar="DIR",
                   help="also copy the finished runs (slimmed) and the study here, e.g. checkpoints")
    p.add_argument("--ship-embeddings", type=int, default=2000, metavar="N",
                   help="validation embeddings (with images) kept per shipped run (default 2000)")
    p.add_argument("--no-report", action="store_true", help="train and probe only")
    p.add_argument("--quiet", action="store_true", help="only errors on stderr")
    return p


def _tag(value: object) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return text.replace("+", "").replace("/", "_")


def _typed(field: str, values: list[str]) -> list:
    """--with values as the field's type (the first family that has the field decides)."""
    from core.config import all_fields

    f = all_fields().get(field)
    if f is None:
        raise ValueError(f"--with {field}: no family has a field {field!r}")
    kind = {"int": int, "float": float, "bool": lambda v: v.lower() in ("1", "true", "yes")}.get(f.kind, str)
    try:
        return [kind(v) for v in values]
    except ValueError:
        raise ValueError(f"--with {field}: {values} are not {f.kind} values") from None


def plan_runs(args: argparse.Namespace, study: str) -> list[RunSpec]:
    """The runs the study needs, in order (family, loss, latent size, swept fields, then seed)."""
    from core.config import fields_for
    from core.families import get_family

    assigned = {field: _typed(field, values) for field, values in args.assignments}
    swept = [field for field, values in assigned.items() if len(values) > 1]
    specs = []
    for name in args.families:
        family = get_family(name)
        own = {f.name: f for f in fields_for(family)}
        base = {"family": name, "dataset": args.dataset, "epochs": args.epochs, "limit_train": args.limit_train,
                "batch_size": args.batch_size, "lr": args.lr, "beta": args.beta, "width": args.width,
                "study": study}
        base = {k: v for k, v in base.items() if k in own}
        base.update({k: v[0] for k, v in assigned.items() if len(v) == 1 and k in own})
        axes = [(k, assigned[k]) for k in swept if k in own]
        for loss, dim in itertools.product(args.losses, args.latent_dims):
            for point in itertools.product(*(values for _, values in axes)):
                for seed in args.seeds:
                    alpha = args.loss_alpha if loss == "general" else None
                    config = {**base, "loss": loss, "loss_alpha": alpha, "latent_dim": dim, "seed": seed,
                              **{k: v for (k, _), v in zip(axes, point, strict=True)}}
                    # a --with value whose field does not apply to this run (its `applies` rule) is left out
                    config = {k: v for k, v in config.items() if k not in assigned or k not in own
                              or own[k].applies_to(config)}
                    parts = [study, *([family.id_tag] if family.id_tag else []),
                             f"{loss}-a{_tag(alpha)}" if alpha is not None else loss, f"z{dim}",
                             *(f"{k.replace('_', '')}{_tag(v)}" for (k, _), v in zip(axes, point, strict=True)),
                             f"s{seed}"]
                    specs.append(RunSpec("-".join(parts), config))
    return specs


def _family_sections(runs: list, folder: Path, log) -> None:
    """Each family's own section of the report (Family.study_section), appended to report.md."""
    from core.families import family_of

    by_family: dict[str, list] = {}
    for run in runs:
        by_family.setdefault(family_of(run.config).name, []).append(run)
    sections = [s for name, group in by_family.items() if (s := family_of(group[0].config).study_section(group, log))]
    if sections:
        report = folder / "report.md"
        text = report.read_text(encoding="utf-8") if report.is_file() else ""
        write_bytes_atomic(report, (text.rstrip() + "\n\n" + "\n\n".join(sections) + "\n").encode("utf-8"))


def _normalized(spec: RunSpec) -> dict:
    from core.config import normalize_config

    return normalize_config({k: v for k, v in spec.config.items() if v is not None})


def _mismatch(run, spec: RunSpec) -> list[str]:
    from core.config import fields_for
    from core.families import family_of

    want = _normalized(spec)
    names = {f.name: f.default for f in fields_for(family_of(want)) if f.name not in _NOT_IDENTITY}
    # a field newer than the run reads as its default (the run was trained with what the default does)
    return [f"{k}={run.config.get(k, d)!r} (asked {want.get(k)!r})" for k, d in names.items()
            if run.config.get(k, d) != want.get(k)]


class _Log:
    def __init__(self, quiet: bool) -> None:
        self.quiet = quiet

    def __call__(self, message: str) -> None:
        if not self.quiet:
            print(f"core.study: {message}", file=sys.stderr, flush=True)


class _Interrupt(StopSignal):
    """SIGINT/SIGTERM while the study runs (engine.StopSignal's `installed()`): record the request and pass
    SIGTERM to the training child (it checkpoints and stops). Unlike the trainer's, a second Ctrl-C does not
    raise here: the study keeps waiting for the child, which gets the terminal's Ctrl-C itself."""

    def __init__(self) -> None:
        super().__init__()
        self.child: subprocess.Popen | None = None

    def _handler(self, signum: int, _frame) -> None:
        self.request(f"stopped by {signal.Signals(signum).name}")
        if self.child is not None and self.child.poll() is None:
            self.child.send_signal(signal.SIGTERM)


def _train(spec: RunSpec, root: Path, args: argparse.Namespace, log: _Log, interrupt: _Interrupt
           ) -> tuple[str, float]:
    """Bring one run to "finished": skip, resume or train it in a `core.train` subprocess.
    Returns (outcome, wall seconds spent here)."""
    path = root / spec.run_id
    flags = ["--quiet"]
    if path.exists():
        try:
            run = open_run(path)
        except RunFormatError as exc:
            raise ValueError(f"{path} is in the way and is not a readable run ({exc}); move it away or pick "
                             f"another --study name") from exc
        wrong = _mismatch(run, spec)
        if wrong:
            raise ValueError(f"run {spec.run_id} already exists with other settings: {', '.join(wrong)}; use another "
                             f"--study name (or delete {path})")
        state = run.status().get("state")
        if state == "finished" and run.has_embeddings:
            log(f"{spec.run_id}: finished already, skipped")
            return "skipped", 0.0
        if state == "failed":
            log(f"{spec.run_id}: failed earlier ({run.status().get('message')}); not retried")
            return "failed", 0.0
        if state == "running":
            log(f"{spec.run_id}: being trained by another process; left alone")
            return "locked", 0.0
        log(f"{spec.run_id}: {state}, resuming")
        resume: Path | None = path
    else:
        log(f"{spec.run_id}: training")
        resume = None
        flags += [*spec.train_args(), "--run-id", spec.run_id, "--runs-root", str(root)]
    if args.device:
        flags += ["--device", args.device]
    cmd = train_command(resume, threads=args.threads, extra_args=flags)
    started = time.perf_counter()
    # Same process group: a Ctrl-C in the terminal reaches the child too, and so does a kill of the group.
    # The study's runs root is the trainer's too: a run the config names (a neighbour run) is found there.
    env = trainer_env(ROBUST_LOSS_LAB_RUNS=str(root))
    child = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                             text=True)
    interrupt.child = child
    try:
        _, err = child.communicate()
    finally:
        interrupt.child = None
    seconds = time.perf_counter() - started
    by_status = {EXIT_OK: "trained", EXIT_FAILED: "failed", EXIT_LOCKED: "locked", EXIT_STOPPED: "stopped"}
    outcome = by_status.get(child.returncode, "error")
    if child.returncode < 0:  # killed by a signal: its last checkpoint stays, a rerun resumes it
        outcome = "stopped"
        err = f"the training process was killed by signal {-child.returncode}"
    if outcome == "error":
        raise ValueError(f"training {spec.run_id} exited with status {child.returncode}: {err.strip()}")
    if outcome != "trained" and err.strip():
        log(f"{spec.run_id}: {err.strip().splitlines()[-1]}")
    log(f"{spec.run_id}: {outcome} in {seconds:.0f} s")
    return outcome, seconds


# ---------------------------------------------------------------------------------------------------
# The command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study (see the module docstring); returns the exit status."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse has printed why (or the help)
        return int(exc.code or 0)
    log = _Log(args.quiet)
    started_wall, started_at = time.perf_counter(), None

    from core import datasets
    from core.config import ConfigError
    from core.probes import ProbeSettings, cached, probe_run

    started_at = now_iso()
    if args.dataset not in datasets.DATASET_NAMES:
        parser.error(f"unknown dataset {args.dataset!r}; choose one of {', '.join(datasets.DATASET_NAMES)}")
    if args.epochs < 1:
        parser.error("--epochs must be at least 1")
    study = args.study or f"{args.dataset}-e{args.epochs}" + (f"-n{args.limit_train}" if args.limit_train else "")
    root = (args.runs_root or runs_root()).expanduser().resolve()
    folder = (args.out or root / "studies" / study).expanduser()
    from core.device import configure_threads
    from core.train import flag_names

    configure_threads(args.threads)
    try:
        settings = ProbeSettings(probe_train=args.probe_train or None, probe_test=args.probe_test or None,
                                 seeds=tuple(args.probe_seeds), features=args.probe_features)
        specs = plan_runs(args, study)
        for spec in specs:  # every config checked before anything trains (a typo fails now, not an hour in)
            _normalized(spec)
        datasets.found_split_sizes(args.dataset)  # the data is there (else: where to get it)
    except ConfigError as exc:
        print(f"core.study: {exc.naming(flag_names())}", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, datasets.DatasetMissing, datasets.DatasetFormatError) as exc:
        print(f"core.study: {exc}", file=sys.stderr)
        return EXIT_USAGE
    log(f"study {study}: {len(specs)} runs under {root}")

    outcomes: dict[str, str] = {}
    interrupt = _Interrupt()
    with interrupt.installed():
        for spec in specs:
            if interrupt.requested:
                break
            try:
                outcomes[spec.run_id], _ = _train(spec, root, args, log, interrupt)
            except ValueError as exc:
                print(f"core.study: {exc}", file=sys.stderr)
                return EXIT_USAGE
        if interrupt.requested or "stopped" in outcomes.values():
            print(f"core.study: interrupted; run the same command again to continue study {study}",
                  file=sys.stderr)
            return EXIT_STOPPED

        runs = []
        for spec in specs:
            with contextlib.suppress(RunFormatError):
                runs.append(open_run(root / spec.run_id))
        for run in runs:
            if interrupt.requested:
                break
            if run.status().get("state") != "finished":
                continue
            reused = cached(run, settings) is not None
            numbers = probe_run(run, settings)["probes"]
            log(f"{run.run_id}: probes {'reused' if reused else 'fitted'}: MLP "
                f"{numbers['mlp']['accuracy']:.3f}, linear {numbers['linear']['accuracy']:.3f}, k-NN "
                f"{numbers['knn']['accuracy']:.3f}")
        if interrupt.requested:
            print(f"core.study: interrupted; run the same command again to continue study {study}", file=sys.stderr)
            return EXIT_STOPPED

    meta = {
        "command": "python -m core.study " + " ".join(sys.argv[1:] if argv is None else list(argv)),
        "settings": {"dataset": args.dataset, "families": args.families, "losses": args.losses,
                     "latent_dims": args.latent_dims, "epochs": args.epochs, "seeds": args.seeds,
                     "loss_alpha": args.loss_alpha, "limit_train": args.limit_train, "batch_size": args.batch_size,
                     "lr": args.lr, "beta": args.beta, "width": args.width,
                     "with": {k: v for k, v in args.assignments}},
        "probe_settings": settings.to_json(),
        "machine": machine(), "started": started_at, "finished": now_iso(),
        "wall_seconds": round(time.perf_counter() - started_wall, 1),
        "trained_now": sum(v == "trained" for v in outcomes.values()),
        "skipped": sum(v == "skipped" for v in outcomes.values()),
        "outcomes": outcomes,
    }
    if not args.no_report:
        write_study(study, runs, folder, meta)
        _family_sections(runs, folder, log)
        log(f"wrote {folder / 'report.md'} and {folder / 'results.csv'}")
    if args.ship_to is not None:
        shipped = ship(runs, folder if not args.no_report else None, args.ship_to, embeddings=args.ship_embeddings)
        log(f"shipped {len(shipped)} runs to {args.ship_to}")
    if "locked" in outcomes.values():
        return EXIT_LOCKED
    if any(r.status().get("state") != "finished" for r in runs) or len(runs) < len(specs):
        return EXIT_FAILED
    return EXIT_OK


if __name__ == "__main__":
    raise SystemExit(main())
