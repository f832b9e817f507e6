"""The one-command study: train a VAE per loss (and latent size, and seed), probe each, write the table.

    python -m core.study --dataset cifar10 \\
        --losses mse,cauchy,geman_mcclure,welsch,smooth_l1,general,adaptive --latent-dims 128 --epochs 30
    python -m core.study ... --latent-dims 64,128,256,512          # the latent-size sweep: more sizes

Each run is `<runs-root>/<study>-<loss>-z<d>-s<seed>` (general: `<study>-general-a<α>-z<d>-s<seed>`),
trained by `python -m core.train` in a subprocess. Running the command again skips finished runs,
resumes stopped or interrupted ones (`core.train --resume`) and re-probes only what changed, so an
interrupted study continues where it stopped; a run that already exists with other settings is refused
(pick another --study name). Then every finished run is probed (`core.probes`: fitted on the train split,
scored on the test split) and the study is written to `<runs-root>/studies/<study>/`:

    study.json      the command, settings, runs, machine and times
    results.csv     one row per run (core.compare.COLUMNS)
    report.md       the table, the figures, the machine and the time it took
    figures/        accuracy.svg, cross_entropy.svg, sweep.svg (several sizes), reconstructions.png,
                    samples.png, adaptive.png (adaptive runs)

`--ship-to DIR` also copies the finished runs, slimmed for shipping (weights, history, probes and the
first `--ship-embeddings` validation embeddings with their images; no optimiser state), and the study
folder into DIR (the app's checkpoints/).

Exit status: 0 every run finished and was probed, 1 a run failed, 2 bad arguments or data,
3 a run is being trained by another process, 130 interrupted (run the same command again to continue).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from core.engine import StopSignal
from core.jobs import REPO, train_command, trainer_env
from core.runs import (
    FORMAT,
    Run,
    RunFormatError,
    now_iso,
    open_run,
    runs_root,
    write_bytes_atomic,
    write_json_atomic,
    write_safetensors_atomic,
)
from core.train import EXIT_FAILED, EXIT_LOCKED, EXIT_OK, EXIT_STOPPED, EXIT_USAGE, config_args

SEED_000_LOSSES = ("mse", "cauchy", "geman_mcclure", "welsch", "smooth_l1", "general", "adaptive")
# Config fields a finished run must share with the study's request to be reused.
_MATCH = ("dataset", "loss", "loss_alpha", "latent_dim", "epochs", "batch_size", "lr", "beta", "seed",
          "limit_train", "width", "loss_scale", "adaptive_alpha_lo", "adaptive_alpha_hi")

__all__ = ["RunSpec", "build_parser", "main", "plan_runs", "ship", "write_study"]


@dataclass(frozen=True)
class RunSpec:
    """One run of the study: its id and the training config fields the study sets."""

    run_id: str
    config: dict

    def train_args(self) -> list[str]:
        """`core.train`'s flags for this run's config (the run id and root are added by the caller)."""
        return config_args(self.config)


def _csv(kind: type, text: str) -> list:
    try:
        values = [kind(v.strip()) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
    if not values:
        raise argparse.ArgumentTypeError("expected at least one value")
    return values


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m core.study",
        description="Train a VAE per reconstruction loss (and latent size and seed), probe their latents, and "
                    "write the results table and report. Rerun the same command to continue an interrupted study.")
    p.add_argument("--dataset", required=True, help="dataset name (see python -m core.datasets)")
    p.add_argument("--losses", type=lambda t: _csv(str, t), default=list(SEED_000_LOSSES),
                   help=f"comma-separated losses (default: seed 000's set, {','.join(SEED_000_LOSSES)})")
    p.add_argument("--latent-dims", type=lambda t: _csv(int, t), required=True, metavar="D[,D...]",
                   help="latent sizes; several make the latent-size sweep (e.g. 64,128,256,512)")
    p.add_argument("--epochs", type=int, required=True, metavar="N")
    p.add_argument("--seeds", type=lambda t: _csv(int, t), default=[0], metavar="S[,S...]",
                   help="VAE seeds per (loss, latent size); several give error bars (default 0)")
    p.add_argument("--loss-alpha", type=float, default=1.0, metavar="A",
                   help="α of the 'general' loss (default 1: Charbonnier)")
    p.add_argument("--limit-train", type=int, default=None, metavar="N", help="train on the first N training images")
    p.add_argument("--batch-size", type=int, default=None, metavar="N")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--beta", type=float, default=None, help="KL weight")
    p.add_argument("--width", type=int, default=None, metavar="W", help="VAE channels")
    p.add_argument("--runs-root", type=Path, default=None, metavar="DIR",
                   help="where the runs go (default $ROBUST_LOSS_LAB_RUNS or runs/)")
    p.add_argument("--study", default=None, metavar="NAME",
                   help="study name (default <dataset>-e<epochs>[-n<limit>]); runs are tagged with it")
    p.add_argument("--out", type=Path, default=None, metavar="DIR",
                   help="where the study is written (default <runs-root>/studies/<study>)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--threads", type=int, default=None, metavar="N", help="CPU threads for training and probes")
    p.add_argument("--probe-train", type=int, default=10000, metavar="N",
                   help="probe-training images from the train split (0: all; default 10000)")
    p.add_argument("--probe-test", type=int, default=0, metavar="N", help="probe test images (0: the whole test split)")
    p.add_argument("--probe-seeds", type=lambda t: _csv(int, t), default=[0, 1, 2], metavar="S[,S...]",
                   help="MLP probe seeds (default 0,1,2)")
    p.add_argument("--ship-to", type=Path, default=None, metavar="DIR",
                   help="also copy the finished runs (slimmed) and the study here, e.g. checkpoints")
    p.add_argument("--ship-embeddings", type=int, default=2000, metavar="N",
                   help="validation embeddings (with images) kept per shipped run (default 2000)")
    p.add_argument("--no-report", action="store_true", help="train and probe only")
    p.add_argument("--quiet", action="store_true", help="only errors on stderr")
    # For watching or interrupting tiny studies (tests): passed to core.train.
    p.add_argument("--step-delay", type=float, default=0.0, help=argparse.SUPPRESS)
    return p


def _tag(value: float) -> str:
    return f"{value:g}".replace("+", "")


def plan_runs(args: argparse.Namespace, study: str) -> list[RunSpec]:
    """The runs the study needs, in order (loss, then latent size, then seed)."""
    specs = []
    for loss in args.losses:
        for dim in args.latent_dims:
            for seed in args.seeds:
                alpha = args.loss_alpha if loss == "general" else None
                name = f"{loss}-a{_tag(alpha)}" if alpha is not None else loss
                config = {"dataset": args.dataset, "loss": loss, "loss_alpha": alpha, "latent_dim": dim,
                          "epochs": args.epochs, "seed": seed, "limit_train": args.limit_train,
                          "batch_size": args.batch_size, "lr": args.lr, "beta": args.beta, "width": args.width,
                          "study": study}
                specs.append(RunSpec(f"{study}-{name}-z{dim}-s{seed}", config))
    return specs


def _check_plan(specs: list[RunSpec]) -> None:
    """Validate every config before training anything (a typo fails now, not an hour in)."""
    from core.config import normalize_config

    for spec in specs:
        normalize_config({k: v for k, v in spec.config.items() if v is not None})


def _mismatch(run, spec: RunSpec) -> list[str]:
    from core.config import normalize_config

    want = normalize_config({k: v for k, v in spec.config.items() if v is not None})
    return [f"{k}={run.config.get(k)!r} (asked {want.get(k)!r})" for k in _MATCH if run.config.get(k) != want.get(k)]


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
    if args.step_delay:
        flags += ["--step-delay", str(args.step_delay)]
    cmd = train_command(resume, threads=args.threads, extra_args=flags)
    started = time.perf_counter()
    # Same process group: a Ctrl-C in the terminal reaches the child too, and so does a kill of the group.
    child = subprocess.Popen(cmd, cwd=REPO, env=trainer_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
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


def machine() -> dict:
    """Where the study ran: CPU model and cores, torch and its threads, the GPU if any."""
    import torch

    cpu = platform.processor() or ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    return {"cpu": cpu, "cores": os.cpu_count(), "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
            "gpu": gpu, "python": platform.python_version(), "platform": platform.platform(),
            "host": platform.node(), "load_average": [round(v, 2) for v in os.getloadavg()]}


# ---------------------------------------------------------------------------------------------------
# Writing the study


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def _markdown_table(rows: list[dict]) -> str:
    head = ("| loss | latent | seed | MLP acc | MLP CE | linear acc | linear CE | k-NN acc (k) | k-NN CE | "
            "val recon | val KL | active units | train s |")
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in rows:
        mlp = f"{_fmt(r['mlp_acc'])} ± {_fmt(r['mlp_acc_std'])}" if r["mlp_acc"] is not None else "–"
        mlp_ce = f"{_fmt(r['mlp_ce'])} ± {_fmt(r['mlp_ce_std'])}" if r["mlp_ce"] is not None else "–"
        knn = f"{_fmt(r['knn_acc'])} ({r['knn_k']})" if r["knn_acc"] is not None else "–"
        lines.append(f"| {r['loss_label']} | {r['latent_dim']} | {r['seed']} | {mlp} | {mlp_ce} | "
                     f"{_fmt(r['linear_acc'])} | {_fmt(r['linear_ce'])} | {knn} | {_fmt(r['knn_ce'])} | "
                     f"{_fmt(r['val_recon'], 1)} | {_fmt(r['val_kl'], 1)} | {_fmt(r['active_units'])} | "
                     f"{_fmt(r['train_s'], 0)} |")
    return "\n".join(lines)


def write_figures(runs: list, rows: list[dict], folder: Path) -> list[tuple[str, str]]:
    """Write the study's figures into `folder`; returns (file name, caption) pairs."""
    from core import compare

    folder.mkdir(parents=True, exist_ok=True)
    written: list[tuple[str, str]] = []

    def put(name: str, data: str | bytes, caption: str) -> None:
        write_bytes_atomic(folder / name, data.encode("utf-8") if isinstance(data, str) else data)
        written.append((name, caption))

    dims = sorted({r["latent_dim"] for r in rows})
    for metric, name in (("mlp_acc", "accuracy.svg"), ("mlp_ce", "cross_entropy.svg")):
        bars = [b for b in compare.aggregate(rows, metric) if b["latent_dim"] == dims[-1]] if dims else []
        if bars:
            title, _ = compare.METRICS[metric]
            svg = compare.bar_chart_svg([b["loss_label"] for b in bars], [b["mean"] for b in bars],
                                        [b["error"] for b in bars], [compare.loss_colour(b["loss"]) for b in bars],
                                        title=f"{title}, latent {dims[-1]}", ylabel=title.split(" (")[0],
                                        ymax=1.0 if metric.endswith("acc") else None)
            put(name, svg, f"{title} by loss (latent {dims[-1]}); error bars: {bars[0]['error_over']}")
    if len(dims) > 1:
        svg = compare.line_chart_svg(compare.sweep(rows, "mlp_acc"), title="MLP probe accuracy against latent size",
                                     xlabel="latent size", ylabel="accuracy")
        put("sweep.svg", svg, "MLP probe accuracy against latent size, per loss")
    finished = [r for r in runs if r.status().get("state") == "finished" and r.has_embeddings]
    shown = [r for r in finished if r.config["latent_dim"] == dims[-1]] if dims else []
    if shown:
        models = compare.load_models(shown)
        rec = compare.reconstructions(shown, n=10, models=models)
        if rec["runs"]:
            grid = [("original", rec["originals"])] + [(r["loss_label"], r["images"]) for r in rec["runs"]]
            put("reconstructions.png", compare.image_grid_png(grid),
                "the same validation images (one per class) and their reconstructions decoder(μ) under each loss")
        samples = compare.prior_samples(shown, n=10, models=models)
        if samples:
            put("samples.png", compare.image_grid_png([(s["loss_label"], s["images"]) for s in samples]),
                "decoder(z) for the same z ~ N(0, I) under each loss")
        for run in shown:
            maps = compare.adaptive_maps(run)
            if maps is None:
                continue
            lo, hi = maps["alpha_bounds"]
            panels = [(f"learned alpha (bounds {lo:g} to {hi:g})", maps["alpha"].mean(axis=0), *maps["alpha_range"]),
                      ("learned scale c", maps["scale"].mean(axis=0), *maps["scale_range"])]
            put("adaptive.png", compare.heatmap_png(panels),
                f"the adaptive loss's learned α (mean {maps['alpha_mean']:.3f}) and c (mean {maps['scale_mean']:.4f}) "
                f"per pixel")
            break
    return written


def write_study(study: str, runs: list, folder: Path, meta: dict, *, figures: bool = True) -> dict:
    """Write study.json, results.csv, figures/ and report.md for `runs` into `folder`."""
    from core import compare

    folder.mkdir(parents=True, exist_ok=True)
    rows = compare.results_table(runs)
    write_bytes_atomic(folder / "results.csv", compare.table_csv(rows).encode("utf-8"))
    written = write_figures(runs, rows, folder / "figures") if figures else []
    train_s = sum(r["train_s"] or 0.0 for r in rows)
    probe_s = sum(r["probe_s"] or 0.0 for r in rows)
    # Earlier invocations (a study continued after an interruption, or re-reported) keep their times.
    previous = []
    with contextlib.suppress(OSError, ValueError):
        previous = json.loads((folder / "study.json").read_text(encoding="utf-8")).get("invocations", [])
    invocations = [*previous, {k: meta.get(k) for k in ("started", "finished", "wall_seconds", "trained_now",
                                                          "skipped", "command")}]
    summary = {"format": "robust-loss-lab/study", "version": 1, "study": study, **meta, "invocations": invocations,
               "runs": [r["run_id"] for r in rows], "training_seconds": round(train_s, 1),
               "probe_seconds": round(probe_s, 1), "figures": [name for name, _ in written]}
    write_json_atomic(folder / "study.json", summary)

    m = meta.get("machine", {})
    where = f"{m.get('cpu')} ({m.get('cores')} cores, torch {m.get('torch')}, {m.get('torch_threads')} threads"
    where += f"; load average {m['load_average'][0]} when written)" if m.get("load_average") else ")"
    if m.get("gpu"):
        where += f", GPU {m['gpu']}"
    settings = meta.get("settings", {})
    probe = meta.get("probe_settings", {})
    lines = [
        f"# Study `{study}`",
        "",
        f"Command: `{meta.get('command', '')}`",
        "",
        f"VAEs trained on **{settings.get('dataset')}** with each reconstruction loss (+ β·KL, β = "
        f"{settings.get('beta') or 1}), latent size(s) {', '.join(map(str, settings.get('latent_dims', [])))}, "
        f"{settings.get('epochs')} epochs on {settings.get('limit_train') or 'all'} training images, seed(s) "
        f"{', '.join(map(str, settings.get('seeds', [])))}; general loss at α = {settings.get('loss_alpha')}.",
        "",
        f"Probes (core.probes) are fitted on the latents of the first {probe.get('probe_train') or 'all'} images of "
        f"the **train** split and scored on {probe.get('probe_test') or 'all'} images of the **test** split (never "
        f"the same images). MLP: one hidden layer of {', '.join(map(str, probe.get('hidden', [])))} on "
        f"z = μ + σ·ε, mean ± std over {len(probe.get('seeds', []))} probe seeds; linear: logistic regression on "
        f"μ; k-NN: cosine on μ, best of k ∈ {{{', '.join(map(str, probe.get('ks', [])))}}}. Cross-entropy in nats.",
        "",
        _markdown_table(rows),
        "",
    ]
    for name, caption in written:
        lines += [f"![{caption}](figures/{name})", "", f"*{caption}*", ""]
    lines += [
        "## Machine and time",
        "",
        f"- Machine: {where}.",
        f"- Training: {train_s:.0f} s summed over the runs (their own epoch clocks); probing: {probe_s:.0f} s "
        f"(encoding the splits and fitting the three probes).",
        f"- This invocation: {meta.get('wall_seconds', 0):.0f} s wall clock, started {meta.get('started')}; "
        f"runs trained now: {meta.get('trained_now', 0)}, skipped as finished: {meta.get('skipped', 0)}.",
        *[f"- Earlier invocation: {inv.get('wall_seconds') or 0:.0f} s wall clock, started {inv.get('started')}; "
          f"runs trained: {inv.get('trained_now')}." for inv in invocations[:-1] if inv.get("trained_now")],
        "",
    ]
    failed = [r for r in rows if r["state"] != "finished"]
    if failed:
        lines += ["Not finished: " + ", ".join(f"{r['run_id']} ({r['state']})" for r in failed), ""]
    write_bytes_atomic(folder / "report.md", "\n".join(lines).encode("utf-8"))
    return summary


# ---------------------------------------------------------------------------------------------------
# Shipping


_SHIPPED_FILES = (Run.CONFIG, Run.STATUS, Run.HISTORY, Run.MODEL, Run.PROBES)


def ship(runs: list, study_folder: Path | None, dest: Path, *, embeddings: int = 2000) -> list[Path]:
    """Copy finished runs into `dest` (the app's checkpoints/) for shipping, and the study folder to
    `dest/studies/<name>`: weights, config, status, history, probes, and the first `embeddings` validation
    embeddings with their images; not the optimiser state (a shipped run is read-only, never resumed).
    Each run is assembled in a hidden folder and renamed into place."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shipped = []
    for run in runs:
        if run.status().get("state") != "finished" or not run.has_embeddings:
            continue
        tmp = dest / f".shipping-{run.run_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in _SHIPPED_FILES:
            if (run.path / name).is_file():
                shutil.copy2(run.path / name, tmp / name)
        emb = run.embeddings()
        keep = {k: v[:embeddings] for k, v in emb.items()}
        write_safetensors_atomic(tmp / Run.EMBEDDINGS, keep,
                                 {"format": FORMAT, "subset": f"first {len(keep['mu'])} of {len(emb['mu'])}"})
        final = dest / run.run_id
        if final.exists():
            old = dest / f".replaced-{run.run_id}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        shipped.append(final)
    if study_folder is not None and study_folder.is_dir():
        target = dest / "studies" / study_folder.name
        tmp = dest / "studies" / f".shipping-{study_folder.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(study_folder, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    return shipped


# ---------------------------------------------------------------------------------------------------
# The command


def main(argv: Sequence[str] | None = None) -> int:
    """Run the study (see the module docstring); returns the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
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
    from core.train import CONFIG_FLAGS

    try:
        configure_threads(args.threads)  # the trainer's own check: --threads 0 is refused here as there
        settings = ProbeSettings(probe_train=args.probe_train or None, probe_test=args.probe_test or None,
                                 seeds=tuple(args.probe_seeds))
        specs = plan_runs(args, study)
        _check_plan(specs)
        datasets.found_split_sizes(args.dataset)  # the data is there (else: where to get it)
    except ConfigError as exc:
        print(f"core.study: {exc.naming(CONFIG_FLAGS)}", file=sys.stderr)
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
        "settings": {"dataset": args.dataset, "losses": args.losses, "latent_dims": args.latent_dims,
                     "epochs": args.epochs, "seeds": args.seeds, "loss_alpha": args.loss_alpha,
                     "limit_train": args.limit_train, "batch_size": args.batch_size, "lr": args.lr, "beta": args.beta,
                     "width": args.width},
        "probe_settings": settings.to_json(),
        "machine": machine(), "started": started_at, "finished": now_iso(),
        "wall_seconds": round(time.perf_counter() - started_wall, 1),
        "trained_now": sum(v == "trained" for v in outcomes.values()),
        "skipped": sum(v == "skipped" for v in outcomes.values()),
        "outcomes": outcomes,
    }
    if not args.no_report:
        write_study(study, runs, folder, meta)
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
