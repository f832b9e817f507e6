"""Barron's VAE experiment (Barron 2019, "A General and Adaptive Robust Loss Function", §VAE):
the 12-run grid of representations × distributions, its ELBO table beside Barron's, and the report.

    .venv/bin/python -m core.barron --dataset fashion_mnist --epochs 5 --limit-train 10000 --width 8 \\
        --threads 1 [--ship-to checkpoints]

One command: it runs `python -m core.study` (core.study.main) over the grid — a VAE per representation
(pixels, DCT, CDF 9/7 wavelet) and distribution (normal, Cauchy, Student's t, the general distribution),
with Barron's colour pairing where the images have colour (pixels + RGB, DCT + YUV, wavelets + YUV; grey
images have one channel and colour does not apply) — then writes the study's usual report (core.report)
and, beside it in `<runs-root>/studies/<study>/`:

    elbo.md        the ELBO table (nats per image, bits per dimension) with Barron's numbers beside it, the
                   orderings compared, and why the numbers differ (dataset, size, architecture, prior, ...)
    elbo.csv       one row per run: representation, distribution, ELBO, bits/dim, nats/dim, Barron's
    elbo.json      the table, the orderings and the differences, as data
    figures/elbo-maps-<run>.png   the learned α (or ν) and scale per coefficient, in the representation's
                                  own layout (wavelet subbands outlined, DCT frequencies), ranges written
    figures/elbo-gallery.png      the same validation images and each run's reconstructions and prior samples

Rerunning the command continues an interrupted grid (core.study skips finished runs). `--ship-to DIR`
copies the runs (core.ship: slimmed, images once per dataset) and the study folder into DIR.

The views (Streamlit-free; plotly is imported inside the figure builders only): `elbo_table(runs)`,
`elbo_rows(table)`, `elbo_figure(table)`, `coefficient_maps(run)`, `coefficient_map_figure(view)`,
`gallery(runs)`, `gallery_png(view)`.

The ELBOs are continuous densities of pixels in [0, 1]: nats per image, higher is better, and they can be
large positive numbers (bits/dim = −ELBO / (D·ln 2) is then negative). Barron's are the same quantity on
Celeb-A at 64×64×3; the orderings compare, the values do not (the report says why).
"""

from __future__ import annotations

import argparse
import io
import json
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["BARRON_ELBO", "BARRON_SETUP", "BARRON_STEPS", "COLOUR_OF", "DISTRIBUTIONS", "REPRESENTATIONS",
           "auto_rate", "cell_of", "coefficient_map_figure", "coefficient_maps", "coefficient_maps_png",
           "diagnostics", "differences", "elbo_figure", "elbo_rows", "elbo_table", "gallery",
           "gallery_png", "grid", "kendall_tau", "main", "orderings", "report_markdown", "study_argvs", "write_report"]

REPRESENTATIONS = ("pixels", "dct", "wavelet")
DISTRIBUTIONS = ("normal", "cauchy", "students_t", "general")
COLOUR_OF = {"pixels": "rgb", "dct": "yuv", "wavelet": "yuv"}  # Barron's pairing, for colour images
TITLE = {"pixels": "pixels", "dct": "DCT", "wavelet": "CDF 9/7 wavelets", "normal": "Normal", "cauchy": "Cauchy",
         "students_t": "Student's t", "general": "general (adaptive α, c)"}
# Barron 2019, the VAE table (validation ELBO, nats per image, Celeb-A 64×64×3) (the paper's table).
BARRON_ELBO: dict[str, dict[str, int]] = {
    "pixels": {"normal": 8662, "cauchy": 9602, "students_t": 10177, "general": 10240},
    "dct": {"normal": 31837, "cauchy": 31295, "students_t": 32804, "general": 32806},
    "wavelet": {"normal": 31505, "cauchy": 35779, "students_t": 36373, "general": 36316},
}
BARRON_STEPS = 50_000
BARRON_SETUP = {
    "dataset": "Celeb-A (centre-cropped to 160×160, resized to 64×64)", "image_shape": (3, 64, 64),
    "dims": 3 * 64 * 64, "latent": 16, "steps": BARRON_STEPS, "batch": 32,
    "architecture": "six 5×5 stride-2 convolutions (32, 32, 64, 64, 128, 4·latent channels), a dense layer, "
                    "and six transposed convolutions back (the TFP VAE example)",
    "prior": "a learned mixture of 100 diagonal Gaussians, with a one-sample KL",
    "optimiser": "Adam, learning rate 1e-3 with a cosine decay to 0 over the last 20% of 50,000 steps",
    "evaluation": "Celeb-A's validation partition",
    "colour": "RGB for pixels, Barron's scaled YUV for DCT and wavelets",
}


# ---------------------------------------------------------------------------------------------------
# The grid and the command


def grid(channels: int, representations: Sequence[str] = REPRESENTATIONS,
         distributions: Sequence[str] = DISTRIBUTIONS) -> list[dict]:
    """The grid's VAE settings: one dict per run (representation, distribution, and colour for colour images)."""
    out = []
    for rep in representations:
        for dist in distributions:
            cell = {"representation": rep, "distribution": dist}
            if channels == 3:
                cell["colour"] = COLOUR_OF[rep]
            out.append(cell)
    return out


AUTO_RATE_MAX = 100.0  # beyond this Adam's steps would move a scale by over 10% per step


def auto_rate(steps: int) -> float:
    """The likelihood rate k that gives a run of `steps` optimiser steps the room Barron's 50,000 steps gave
    his scales to move (k·steps = 50,000; between 1 and AUTO_RATE_MAX), to two significant digits."""
    k = min(AUTO_RATE_MAX, max(1.0, BARRON_STEPS / max(1, steps)))
    digits = 1 - math.floor(math.log10(k))
    return float(round(k, digits))


def cell_of(config: dict) -> tuple[str, str] | None:
    """(representation, distribution) of a grid run's config, or None for a run outside the grid."""
    dist = config.get("distribution") or "loss"
    if dist not in DISTRIBUTIONS:
        return None
    return str(config.get("representation") or "pixels"), str(dist)


def _parser() -> argparse.ArgumentParser:
    from core.cli import comma_list, threads

    p = argparse.ArgumentParser(
        prog="python -m core.barron",
        description="Barron's VAE experiment: train the grid of representations × distributions through "
                    "core.study, and write the ELBO table beside Barron's, the figures and the report.")
    p.add_argument("--dataset", required=True, help="dataset name (python -m core.datasets)")
    p.add_argument("--epochs", type=int, required=True, metavar="N")
    p.add_argument("--limit-train", type=int, default=None, metavar="N")
    p.add_argument("--latent-dim", type=int, default=16, metavar="D", help="latent size (default 16, Barron's)")
    p.add_argument("--width", type=int, default=None, metavar="W", help="network channels (default the VAE's)")
    p.add_argument("--batch-size", type=int, default=None, metavar="N")
    p.add_argument("--lr", type=float, default=None)
    p.add_argument("--seeds", type=comma_list(int), default=[0], metavar="S[,S...]")
    p.add_argument("--likelihood-rate", default="auto", metavar="K|auto",
                   help="k of the likelihoods' parameters (core.losses.likelihoods); auto: 50,000 / the run's "
                        "steps, the room Barron's 50,000 steps gave them; 1: Barron's parameterisation as is")
    p.add_argument("--representations", type=comma_list(str), default=list(REPRESENTATIONS), metavar="R[,R...]")
    p.add_argument("--distributions", type=comma_list(str), default=list(DISTRIBUTIONS), metavar="D[,D...]")
    p.add_argument("--study", default=None, metavar="NAME", help="default barron-<dataset>-e<epochs>[-n<limit>]")
    p.add_argument("--runs-root", type=Path, default=None, metavar="DIR")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default=None)
    p.add_argument("--threads", type=threads, default=None, metavar="N")
    p.add_argument("--probe-train", default=None, metavar="N", help="passed to core.study")
    p.add_argument("--probe-seeds", default=None, metavar="S[,S...]", help="passed to core.study")
    p.add_argument("--ship-to", type=Path, default=None, metavar="DIR")
    p.add_argument("--ship-embeddings", type=int, default=2000, metavar="N")
    p.add_argument("--quiet", action="store_true")
    return p


def _steps(dataset: str, limit: int | None, batch: int, epochs: int) -> int:
    from core import datasets

    return math.ceil(datasets.split_sizes(dataset, limit)["train"] / batch) * epochs


def study_argvs(args: argparse.Namespace, study: str, root: Path, folder: Path, channels: int,
                rate: float) -> list[list[str]]:
    """core.study's command lines for the grid: one per colour space (a grey dataset has one)."""
    reps = [r for r in REPRESENTATIONS if r in args.representations]
    dists = [d for d in DISTRIBUTIONS if d in args.distributions]
    groups: dict[str | None, list[str]] = {}
    for rep in reps:
        groups.setdefault(COLOUR_OF[rep] if channels == 3 else None, []).append(rep)
    out = []
    for colour, members in groups.items():
        argv = ["--dataset", args.dataset, "--losses", "mse", "--latent-dims", str(args.latent_dim),
                "--epochs", str(args.epochs), "--seeds", ",".join(map(str, args.seeds)), "--study", study,
                "--runs-root", str(root),
                "--out", str(folder), "--no-report",
                "--with", f"representation={','.join(members)}", "--with", f"distribution={','.join(dists)}",
                "--with", f"likelihood_rate={rate:g}"]
        if colour is not None:
            argv += ["--with", f"colour={colour}"]
        for flag, value in (("--limit-train", args.limit_train), ("--width", args.width),
                            ("--batch-size", args.batch_size), ("--lr", args.lr), ("--device", args.device),
                            ("--threads", args.threads), ("--probe-train", args.probe_train),
                            ("--probe-seeds", args.probe_seeds)):
            if value is not None:
                argv += [flag, str(value)]
        if args.quiet:
            argv.append("--quiet")
        out.append(argv)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Run the grid and write the report (see the module docstring); returns core.study's exit status."""
    from core import datasets
    from core import study as study_cli
    from core.cli import EXIT_OK, EXIT_USAGE
    from core.runs import RunFormatError, now_iso, open_run, runs_root

    p = _parser()
    try:
        args = p.parse_args(argv)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.dataset not in datasets.DATASET_NAMES:
        p.error(f"unknown dataset {args.dataset!r}; choose one of {', '.join(datasets.DATASET_NAMES)}")
    for name, allowed in (("representations", REPRESENTATIONS), ("distributions", DISTRIBUTIONS)):
        wrong = [v for v in getattr(args, name) if v not in allowed]
        if wrong:
            p.error(f"--{name}: unknown {', '.join(wrong)}; choose from {', '.join(allowed)}")
    channels = datasets.dataset_info(args.dataset).image_shape[0]
    from core.config import defaults

    batch = args.batch_size or int(defaults()["batch_size"])
    steps = _steps(args.dataset, args.limit_train, batch, args.epochs)
    rate = auto_rate(steps) if args.likelihood_rate == "auto" else float(args.likelihood_rate)
    limit = f"-n{args.limit_train}" if args.limit_train else ""
    study = args.study or f"barron-{args.dataset}-e{args.epochs}{limit}"
    root = (args.runs_root or runs_root()).expanduser().resolve()
    folder = root / "studies" / study
    started, clock = now_iso(), time.perf_counter()
    argvs = study_argvs(args, study, root, folder, channels, rate)
    outcomes: dict[str, str] = {}
    runs = []
    finished_before = set()
    for sub in argvs:
        specs = study_cli.plan_runs(study_cli.build_parser().parse_args(sub), study)
        for spec in specs:
            try:
                if open_run(root / spec.run_id).status().get("state") == "finished":
                    finished_before.add(spec.run_id)
            except RunFormatError:
                pass
        code = study_cli.main(sub)
        if code not in (EXIT_OK,):
            print(f"core.barron: core.study {' '.join(sub)} exited with {code}", file=sys.stderr)
            return code
        for spec in specs:
            try:
                run = open_run(root / spec.run_id)
            except RunFormatError:
                outcomes[spec.run_id] = "missing"
                continue
            runs.append(run)
            outcomes[spec.run_id] = str(run.status().get("state"))
    if not runs:
        print("core.barron: no run of the grid was found", file=sys.stderr)
        return EXIT_USAGE
    from core.probes import ProbeSettings
    from core.report import machine, write_study

    meta = {
        "command": "python -m core.barron " + " ".join(sys.argv[1:] if argv is None else list(argv)),
        "settings": {"dataset": args.dataset, "families": ["vae"], "losses": ["mse"], "latent_dims": [args.latent_dim],
                     "epochs": args.epochs, "seeds": args.seeds, "loss_alpha": None,
                     "limit_train": args.limit_train, "batch_size": args.batch_size, "lr": args.lr, "beta": None,
                     "width": args.width, "with": {"representation": args.representations,
                                                   "distribution": args.distributions,
                                                   "likelihood_rate": [rate]}},
        "probe_settings": ProbeSettings().to_json(), "machine": machine(), "started": started, "finished": now_iso(),
        "wall_seconds": round(time.perf_counter() - clock, 1), "outcomes": outcomes,
        "trained_now": sum(v == "finished" for k, v in outcomes.items() if k not in finished_before),
        "skipped": len(finished_before),
        "barron": {"likelihood_rate": rate, "steps": steps, "study_commands": [" ".join(a) for a in argvs]},
    }
    write_study(study, runs, folder, meta)
    from core.families import get_family
    from core.runs import write_bytes_atomic

    section = get_family("vae").study_section(runs, lambda _m: None)  # as core.study appends it
    if section:
        old = (folder / "report.md").read_text(encoding="utf-8") if (folder / "report.md").is_file() else ""
        write_bytes_atomic(folder / "report.md", (old.rstrip() + "\n\n" + section + "\n").encode("utf-8"))
    report = write_report(runs, folder, meta)
    if not args.quiet:
        print(f"core.barron: wrote {report}", file=sys.stderr)
    if args.ship_to is not None:
        from core.ship import ship

        shipped = ship(runs, folder, args.ship_to, embeddings=args.ship_embeddings)
        if not args.quiet:
            print(f"core.barron: shipped {len(shipped)} runs and the study to {args.ship_to}", file=sys.stderr)
    return EXIT_OK


# ---------------------------------------------------------------------------------------------------
# The table


def _last_epoch(run: Any) -> dict:
    epochs = run.history("epoch")
    return epochs[-1] if epochs else {}


def kendall_tau(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Kendall's τ between two scorings of the same items (ties count as neither): 1 = the same order,
    −1 = reversed; None for fewer than two items."""
    n = len(a)
    if n < 2:
        return None
    total = 0
    for i in range(n):
        for j in range(i + 1, n):
            total += int(np.sign(a[i] - a[j]) * np.sign(b[i] - b[j]))
    return total / (n * (n - 1) / 2)


def _ranked(scores: dict[str, float]) -> list[str]:
    return [k for k, _ in sorted(scores.items(), key=lambda kv: -kv[1])]


def elbo_table(runs: Sequence[Any]) -> dict:
    """The grid's ELBOs from its finished runs' last validation: {"cells": {rep: {dist: cell}}, "dims",
    "dataset", "image_shape", "representations", "distributions", "orderings"}; a cell holds "elbo" (nats
    per image, the mean over seeds), "elbo_std", "bpd", "nats_per_dim", "barron", "barron_per_dim",
    "runs", "seeds"."""
    cells: dict[str, dict[str, dict]] = {}
    shapes, datasets_seen, colours = set(), set(), set()
    for run in runs:
        cfg = run.config
        cell = cell_of(cfg)
        if cell is None or run.status().get("state") != "finished":
            continue
        last = _last_epoch(run)
        if last.get("val_elbo") is None:
            continue
        shape = tuple((cfg.get("model") or {}).get("image_shape") or ())
        shapes.add(shape)
        datasets_seen.add(cfg.get("dataset"))
        colours.add(cfg.get("colour") or "rgb")
        entry = cells.setdefault(cell[0], {}).setdefault(cell[1], {"values": [], "runs": [], "seeds": []})
        entry["values"].append(float(last["val_elbo"]))
        entry["runs"].append(run.run_id)
        entry["seeds"].append(cfg.get("seed"))
    dims = math.prod(next(iter(shapes))) if len(shapes) == 1 else None
    for rep, row in cells.items():
        for dist, entry in row.items():
            values = np.array(entry.pop("values"))
            entry["elbo"] = float(values.mean())
            entry["elbo_std"] = float(values.std(ddof=1)) if len(values) > 1 else None
            entry["nats_per_dim"] = entry["elbo"] / dims if dims else None
            entry["bpd"] = -entry["elbo"] / (dims * math.log(2)) if dims else None
            entry["barron"] = BARRON_ELBO.get(rep, {}).get(dist)
            entry["barron_per_dim"] = entry["barron"] / BARRON_SETUP["dims"] if entry["barron"] is not None else None
    table = {"cells": cells, "dims": dims, "image_shape": next(iter(shapes)) if len(shapes) == 1 else None,
             "dataset": next(iter(datasets_seen)) if len(datasets_seen) == 1 else None,
             "colours": sorted(colours),
             "representations": [r for r in REPRESENTATIONS if r in cells],
             "distributions": [d for d in DISTRIBUTIONS if any(d in row for row in cells.values())]}
    table["orderings"] = orderings(table)
    return table


def orderings(table: dict) -> dict:
    """How the table's orders compare with Barron's: per representation (which distribution is best),
    per distribution (which representation is best), and over every cell: Kendall's τ with Barron's."""
    cells = table["cells"]
    out: dict[str, Any] = {"by_representation": [], "by_distribution": []}
    for rep in table["representations"]:
        ours = {d: c["elbo"] for d, c in cells[rep].items()}
        theirs = {d: BARRON_ELBO[rep][d] for d in ours}
        keys = list(ours)
        out["by_representation"].append({
            "representation": rep, "ours": _ranked(ours), "barron": _ranked(theirs),
            "tau": kendall_tau([ours[k] for k in keys], [theirs[k] for k in keys]),
            "same_best": bool(ours) and _ranked(ours)[0] == _ranked(theirs)[0]})
    for dist in table["distributions"]:
        ours = {r: cells[r][dist]["elbo"] for r in table["representations"] if dist in cells[r]}
        theirs = {r: BARRON_ELBO[r][dist] for r in ours}
        keys = list(ours)
        out["by_distribution"].append({
            "distribution": dist, "ours": _ranked(ours), "barron": _ranked(theirs),
            "tau": kendall_tau([ours[k] for k in keys], [theirs[k] for k in keys]),
            "same_best": bool(ours) and _ranked(ours)[0] == _ranked(theirs)[0]})
    pairs = [(c["elbo"], BARRON_ELBO[rep][dist]) for rep, row in cells.items() for dist, c in row.items()]
    out["overall_tau"] = kendall_tau([a for a, _ in pairs], [b for _, b in pairs])
    out["cells"] = len(pairs)
    return out


def elbo_rows(table: dict) -> list[dict]:
    """The table as rows for a data frame or a CSV: one per cell."""
    rows = []
    for rep in table["representations"]:
        for dist in table["distributions"]:
            c = table["cells"][rep].get(dist)
            if c is None:
                continue
            rows.append({"representation": rep, "distribution": dist, "elbo": c["elbo"], "elbo_std": c["elbo_std"],
                         "bits_per_dim": c["bpd"], "nats_per_dim": c["nats_per_dim"], "barron_elbo": c["barron"],
                         "barron_nats_per_dim": c["barron_per_dim"], "runs": " ".join(c["runs"])})
    return rows


def _steps_of(run: Any) -> int | None:
    last = _last_epoch(run)
    return int(last["step"]) if isinstance(last.get("step"), int) else None


COLLAPSED_SCALE = 1e-4  # a learned scale below this has collapsed towards the floor (1e-8)


def diagnostics(run: Any, objective: torch.nn.Module | None = None, n: int = 1000,
                            threshold: float = COLLAPSED_SCALE) -> dict | None:
    """What a run's reconstructions and learned scales do, on up to n stored validation images at z = μ:
    {"mse" (pixel mean squared error), "offset" (mean of x̂ − mean of x), "count" (coefficients whose scale
    collapsed below `threshold`), "dims", "nats" (their part of −distortion per image), "total"
    (−distortion over all coefficients), "mean" (of x)}; None for a run without learned scales or images.

    A coefficient that is (nearly) the same in every image — Fashion-MNIST's black surround — is matched by
    the decoder to within its float precision, and its continuous density grows without bound as its scale
    shrinks (the floor stops it): an ELBO of [0, 1] pixels rewards it."""
    from core.families import load_objective
    from core.families.base import to_unit
    from core.runs import RunFormatError

    try:
        objective = load_objective(run) if objective is None else objective
        images = run.embeddings().get("images")
    except RunFormatError:
        return None
    loss = getattr(objective, "loss", None)
    if images is None or loss is None or not callable(getattr(loss, "scale", None)):
        return None
    with torch.no_grad():
        scale = loss.scale().float()
        x = to_unit(images[:n])
        mu, _ = objective.model.encode(x)
        x_hat = objective.model.decode(mu).float()
        residual = x - x_hat
        per_coefficient = loss((objective.representation(residual) if objective.representation is not None
                                else residual).flatten(1)).mean(dim=0)
    mask = scale < threshold
    return {"mse": float(residual.square().mean()), "offset": float(x_hat.mean() - x.mean()),
            "mean": float(x.mean()),
            "count": int(mask.sum()), "dims": int(scale.numel()), "threshold": threshold,
            "nats": float(-per_coefficient[mask].sum()), "total": float(-per_coefficient.sum())}


def differences(table: dict, runs: Sequence[Any], degenerate: dict[str, dict] | None = None) -> list[str]:
    """Why this grid's numbers differ from Barron's, one sentence each, from the runs' own settings (and,
    given `degenerate` — run id -> `diagnostics` — from what their collapsed scales add)."""
    grid_runs = [r for r in runs if cell_of(r.config) is not None]
    cfg = grid_runs[0].config if grid_runs else {}
    shape, dims = table.get("image_shape"), table.get("dims")
    out = []
    if shape and dims:
        c, h, w = shape
        ours = [cell["nats_per_dim"] for row in table["cells"].values() for cell in row.values()]
        theirs = [cell["barron_per_dim"] for row in table["cells"].values() for cell in row.values()]
        out.append(f"Dataset and size: {table.get('dataset')} at {c}×{h}×{w} = {dims:,} dimensions per image, "
                   f"against {BARRON_SETUP['dataset']} at 3×64×64 = {BARRON_SETUP['dims']:,}. An ELBO in nats per "
                   f"image grows with the number of dimensions, so only per-dimension values come near to "
                   f"comparing: here {min(ours):.2f} to {max(ours):.2f} nats per dimension, Barron's "
                   f"{min(theirs):.2f} to {max(theirs):.2f}; and they depend on the images themselves (how much "
                   f"of each image is flat background a decoder can match closely).")
        if degenerate:
            out.append(_constant_pixels(table, degenerate))
            offsets = _offsets(table, degenerate)
            if offsets:
                out.append(offsets)
        if c == 1:
            out.append("Colour: the images are grey (one channel), so the colour space does not apply: the rows "
                       "are pixels, DCT and wavelets of the grey channel, where Barron's DCT and wavelet rows "
                       "were on YUV.")
    width, latent = cfg.get("width"), cfg.get("latent_dim")
    if width is not None:
        out.append(f"Architecture: the lab's ConvVAE (a 3×3 stem, stride-2 4×4 convolutions from {width} channels, "
                   f"GroupNorm, SiLU, a sigmoid mean, latent {latent}) against Barron's {BARRON_SETUP['architecture']}"
                   f", latent {BARRON_SETUP['latent']}.")
    out.append(f"Prior: here N(0, I) with the analytic KL; Barron's was {BARRON_SETUP['prior']}. A learned prior "
               f"lowers the rate, and so raises every ELBO, without touching the distortion the table compares.")
    steps = _steps_of(grid_runs[0]) if grid_runs else None
    if steps is not None:
        rate = cfg.get("likelihood_rate", 1.0)
        out.append(f"Training: {steps:,} optimiser steps of batch {cfg.get('batch_size')} at a constant learning "
                   f"rate {cfg.get('lr')} against Barron's {BARRON_STEPS:,} steps of batch {BARRON_SETUP['batch']} "
                   f"({BARRON_SETUP['optimiser']}). The per-coefficient scales start at 0.01 as Barron's did; so "
                   f"that they can travel as far in this shorter run, their latents move at k = {rate:g} times "
                   f"the rate Barron's parameterisation gives them (k·steps ≈ {rate * steps:,.0f}).")
    split = (cfg.get("split") or {}).get("val")
    out.append(f"Evaluation: the held-out validation split ({split:,} images carved from the official training "
               f"set, never trained on) with one z ~ q(z|x) per image, as Barron's estimate used one sample; "
               f"Barron evaluated on {BARRON_SETUP['evaluation']}." if split else
               "Evaluation: the held-out validation split, one z ~ q(z|x) per image.")
    return out


def _cell_info(table: dict, info: dict[str, dict], rep: str, dist: str) -> dict | None:
    cell = table["cells"].get(rep, {}).get(dist)
    return next((info[r] for r in cell["runs"] if info.get(r)), None) if cell else None


def _offsets(table: dict, degenerate: dict[str, dict]) -> str | None:
    """The sentence on heavy-tailed likelihoods on DCT and wavelets letting the image go: the cells whose
    reconstructions are far worse than the normal's, with their brightness offset."""
    normal = [i for rep in table["representations"] if (i := _cell_info(table, degenerate, rep, "normal"))]
    bound = 2 * max((i["mse"] for i in normal), default=0.0)
    drifted, means = [], []
    for rep in ("dct", "wavelet"):
        for dist in ("cauchy", "students_t", "general"):
            info = _cell_info(table, degenerate, rep, dist)
            if info is not None and (abs(info["offset"]) > 0.05 or (bound and info["mse"] > bound)):
                drifted.append(f"{TITLE[rep]} / {TITLE[dist]} MSE {info['mse']:.3f}, offset {info['offset']:+.2f}")
                means.append(info["mean"])
    if not drifted:
        return None
    mse = f" (the normal's MSE: {min(i['mse'] for i in normal):.3f} to {max(i['mse'] for i in normal):.3f})" \
        if normal else ""
    return (f"Images let go: a heavy-tailed distribution charges little (about a log) for a large error in a "
            f"few coefficients, and its gradient there, ~1/r, is weak; an error spread evenly over the image — "
            f"its brightness — lands in a few coefficients of the DCT (its DC term) and of the wavelet (the "
            f"lowpass block). These runs reconstruct far from their images at z = μ (pixel MSE, and mean x̂ − "
            f"mean x): {'; '.join(drifted)}{mse}. Their decoders start at sigmoid(0) = 0.5 against a mean "
            f"brightness of {sum(means) / len(means):.2f} here; those with a large offset kept most of it, and "
            f"those without one lost latent units (the report's active units) and decode blurs (the gallery). "
            f"Their ELBOs come from the detail coefficients, not from faithful images. Celeb-A's mean is near "
            f"0.5, where the decoders start, so Barron's runs had less to let go.")


def _constant_pixels(table: dict, degenerate: dict[str, dict]) -> str:
    """The sentence on collapsed scales: which cells have them, how many, and what they add."""
    parts, worst = [], None
    for rep in table["representations"]:
        for dist, cell in table["cells"][rep].items():
            info = next((degenerate[r] for r in cell["runs"] if degenerate.get(r)), None)
            if info is None:
                continue
            parts.append(f"{TITLE[rep]} / {TITLE[dist]} {info['count']}")
            if worst is None or info["nats"] > worst[2]["nats"]:
                worst = (rep, dist, info)
    if worst is None:
        return "Collapsed scales: not measured (no stored validation images)."
    rep, dist, info = worst
    return (f"Constant pixels: coefficients that are (nearly) the same in every image, like Fashion-MNIST's "
            f"black surround, are matched by the decoder almost exactly, and a continuous density there grows "
            f"without bound as the scale shrinks (the floor, 1e-8, stops it). Scales that fell below "
            f"{info['threshold']:g}, of {info['dims']:,}: {'; '.join(parts)}. In {TITLE[rep]} / {TITLE[dist]} "
            f"those {info['count']} coefficients alone add {info['nats']:,.0f} of the {info['total']:,.0f} nats "
            f"of −distortion per image (at z = μ; the other {info['dims'] - info['count']:,} add "
            f"{info['total'] - info['nats']:,.0f}). Celeb-A photographs have no such pixels; in the DCT and "
            f"wavelet rows a coefficient mixes many pixels, fewer collapse, and the pixel row's lead here is "
            f"largely this. A dequantised likelihood (uniform noise of one grey level added to the pixels) "
            f"would bound it; neither Barron's experiment nor this one dequantises.")


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None:
        return "–"
    return f"{value:,.{digits}f}"


def report_markdown(table: dict, runs: Sequence[Any], level: int = 1, degenerate: dict[str, dict] | None = None
                    ) -> str:
    """The report: the table beside Barron's, the orderings, the differences, the units. `level`: the
    Markdown level of its title (2 as a section of a study's report.md); `degenerate`: see `differences`."""
    cells, reps, dists = table["cells"], table["representations"], table["distributions"]
    h1, h2 = "#" * level, "#" * (level + 1)
    lines = [f"{h1} Barron's VAE experiment: ELBOs on pixels, DCT and wavelets", ""]
    dims = table.get("dims")
    lines += [
        f"Validation ELBO of a VAE whose reconstruction likelihood is placed on each representation with each "
        f"distribution, on **{table.get('dataset')}** ({'×'.join(map(str, table.get('image_shape') or ()))}, "
        f"{dims:,} dimensions), beside Barron's (Celeb-A 64×64×3, 12,288 dimensions). ELBO = −(rate + "
        f"distortion): nats per image, higher is better; bits/dim = −ELBO / (D·ln 2). **These are continuous "
        f"densities of pixels in [0, 1]**: they can be large positive numbers (a density above 1 per pixel), "
        f"and bits/dim is then negative; they are not the discrete bits/dim of 8-bit images."
        if dims else "No finished grid run with an ELBO yet.", ""]
    if not reps:
        return "\n".join(lines)
    head = "| representation | " + " | ".join(TITLE[d] for d in dists) + " |"
    lines += [f"{h2} ELBO, nats per image (bits/dim) — ours", "", head, "|---" * (len(dists) + 1) + "|"]
    for rep in reps:
        row = [f"{_fmt(cells[rep][d]['elbo'])} ({_fmt(cells[rep][d]['bpd'], 3)})" if d in cells[rep] else "–"
               for d in dists]
        lines.append(f"| {TITLE[rep]} | " + " | ".join(row) + " |")
    lines += ["", f"{h2} Barron's (Celeb-A 64×64, nats per image)", "", head, "|---" * (len(dists) + 1) + "|"]
    for rep in reps:
        lines.append(f"| {TITLE[rep]} | " + " | ".join(f"{BARRON_ELBO[rep][d]:,}" for d in dists) + " |")
    lines += ["", f"{h2} Per dimension (nats): ours / Barron's", "", head, "|---" * (len(dists) + 1) + "|"]
    for rep in reps:
        row = [f"{cells[rep][d]['nats_per_dim']:.3f} / {cells[rep][d]['barron_per_dim']:.3f}" if d in cells[rep]
               else "–" for d in dists]
        lines.append(f"| {TITLE[rep]} | " + " | ".join(row) + " |")
    if degenerate:
        lines += ["", f"{h2} Reconstructions at z = μ: pixel MSE (mean x̂ − mean x)", "", head,
                  "|---" * (len(dists) + 1) + "|"]
        for rep in reps:
            row = [f"{i['mse']:.4f} ({i['offset']:+.3f})" if (i := _cell_info(table, degenerate, rep, d)) else "–"
                   for d in dists]
            lines.append(f"| {TITLE[rep]} | " + " | ".join(row) + " |")
    o = table["orderings"]
    lines += ["", f"{h2} Orderings", ""]
    for item in o["by_representation"]:
        tau = "–" if item["tau"] is None else f"{item['tau']:+.2f}"
        lines.append(f"- {TITLE[item['representation']]}: ours {' > '.join(TITLE[d] for d in item['ours'])}; "
                     f"Barron's {' > '.join(TITLE[d] for d in item['barron'])} (Kendall τ {tau}; "
                     f"{'the same' if item['same_best'] else 'a different'} best distribution).")
    for item in o["by_distribution"]:
        tau = "–" if item["tau"] is None else f"{item['tau']:+.2f}"
        lines.append(f"- {TITLE[item['distribution']]}: ours {' > '.join(TITLE[r] for r in item['ours'])}; "
                     f"Barron's {' > '.join(TITLE[r] for r in item['barron'])} (τ {tau}).")
    if o["overall_tau"] is not None:
        lines.append(f"- Over all {o['cells']} cells, Kendall's τ between our ELBOs and Barron's is "
                     f"{o['overall_tau']:+.2f}.")
    lines += ["", f"{h2} Why the numbers differ", ""] + [f"- {s}" for s in differences(table, runs, degenerate)]
    lines += ["", "Each representation is linear with |det J| = 1 (core/representations.py, tested), so within "
              "this table the ELBOs are of the same images and compare across rows; the wavelet on 28×28 "
              "images takes 2 levels (28 → 14 → 7), the most that keep every split even and so volume-"
              "preserving (docs/REPRESENTATIONS.md).", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# Learned parameters in the representation's layout


def coefficient_maps(run: Any, objective: torch.nn.Module | None = None) -> dict | None:
    """The learned per-coefficient parameters of a run's likelihood (or adaptive loss) as (C, H, W) arrays
    in the representation's layout: {"run_id", "representation", "colour", "regions", "panels": [{"name",
    "title", "values", "range", "log10"}]}; None for a run that learns none."""
    from core.families import load_objective
    from core.representations import layout

    objective = load_objective(run) if objective is None else objective
    loss = getattr(objective, "loss", None)
    shape = tuple(getattr(objective, "image_shape", ()) or ())
    if loss is None or not shape:
        return None
    with torch.no_grad():
        if callable(getattr(loss, "maps", None)):
            maps = loss.maps()
        elif callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None)):
            maps = {"alpha": loss.alpha(), "scale": loss.scale()}
        else:
            return None
    cfg = run.config
    rep = cfg.get("representation") or "pixels"
    panels = []
    for name, tensor in maps.items():
        values = tensor.detach().float().cpu().numpy().reshape(shape)
        log10 = name in ("scale", "nu")
        shown = np.log10(values) if log10 else values
        title = {"alpha": "α (shape)", "nu": "log₁₀ ν (degrees of freedom)", "scale": "log₁₀ c (scale)"}[name]
        bounds = (float(loss.alpha_lo), float(loss.alpha_hi)) if name == "alpha" and hasattr(loss, "alpha_lo") else None
        panels.append({"name": name, "title": title, "values": shown, "log10": log10,
                       "range": (float(values.min()), float(values.max())), "bounds": bounds,
                       "mean": float(values.mean())})
    regions = layout(rep, shape[1], shape[2], getattr(getattr(objective, "representation", None), "levels", None)
                     if rep == "wavelet" else None)
    return {"run_id": run.run_id, "representation": rep, "colour": cfg.get("colour") or "rgb",
            "distribution": cfg.get("distribution") or "loss", "image_shape": shape, "regions": regions,
            "panels": panels}


_VIRIDIS = np.array([[68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
                     [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)


def _colours(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    t = np.clip((values - lo) / ((hi - lo) or 1.0), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return np.round(_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def _ascii(text: str) -> str:
    for greek, name in (("α", "alpha"), ("ν", "nu"), ("₁₀", "10"), ("×", "x"), ("–", "-"), ("→", "->")):
        text = text.replace(greek, name)
    return text


def coefficient_maps_png(view: dict, *, zoom: int | None = None) -> bytes:
    """The maps as one PNG: a row per channel, a panel per parameter, wavelet subbands outlined, each
    panel's range written under it (for log₁₀ panels, the range of the parameter itself)."""
    from PIL import Image, ImageDraw

    c, h, w = view["image_shape"]
    zoom = zoom or max(4, math.ceil(160 / w))
    cell_w, cell_h = w * zoom + 24, h * zoom + 46
    canvas = Image.new("RGB", (max(cell_w * len(view["panels"]), 240), 18 + cell_h * c), "white")
    draw = ImageDraw.Draw(canvas)
    colour = f" + {view['colour'].upper()}" if c == 3 else ""
    draw.text((6, 2), _ascii(f"{view['representation']}{colour} / {view['distribution']}"), fill=(0, 0, 0))
    for k, panel in enumerate(view["panels"]):
        values = panel["values"]
        lo, hi = float(values.min()), float(values.max())
        for ch in range(c):
            x0, y0 = k * cell_w + 12, 18 + ch * cell_h
            label = panel["title"] + (f", channel {ch}" if c > 1 else "")
            draw.text((x0, y0), _ascii(label), fill=(17, 24, 39))
            tile = Image.fromarray(_colours(values[ch], lo, hi)).resize((w * zoom, h * zoom), Image.NEAREST)
            canvas.paste(tile, (x0, y0 + 14))
            for region in view["regions"]:
                if view["representation"] != "wavelet":
                    break
                box = (x0 + region.left * zoom, y0 + 14 + region.top * zoom,
                       x0 + (region.left + region.width) * zoom - 1, y0 + 14 + (region.top + region.height) * zoom - 1)
                draw.rectangle(box, outline=(255, 255, 255))
            a, b = panel["range"]
            draw.text((x0, y0 + 16 + h * zoom), _ascii(f"{a:.3g} to {b:.3g}"), fill=(17, 24, 39))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


def coefficient_map_figure(view: dict, channel: int = 0):
    """A plotly figure of the maps (one heatmap per parameter, for one channel), wavelet subbands outlined;
    the colour bars are labelled with each parameter's range."""
    from plotly import graph_objects as go
    from plotly.subplots import make_subplots

    panels = view["panels"]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[p["title"] for p in panels],
                        horizontal_spacing=0.12)
    for k, panel in enumerate(panels, start=1):
        a, b = panel["range"]
        fig.add_trace(go.Heatmap(z=panel["values"][channel], colorscale="Viridis",
                                 colorbar={"title": {"text": f"{a:.3g} to {b:.3g}"}, "x": k / len(panels) - 0.02,
                                           "len": 0.9},
                                 hovertemplate="row %{y}, column %{x}: %{z:.4g}<extra></extra>"), row=1, col=k)
        fig.update_yaxes(autorange="reversed", scaleanchor=f"x{k if k > 1 else ''}", row=1, col=k)
        if view["representation"] == "wavelet":
            for region in view["regions"]:
                fig.add_shape(type="rect", x0=region.left - 0.5, x1=region.left + region.width - 0.5,
                              y0=region.top - 0.5, y1=region.top + region.height - 0.5,
                              line={"color": "white", "width": 1}, row=1, col=k)
    axis = {"pixels": "pixel", "dct": "frequency", "wavelet": "coefficient"}[view["representation"]]
    fig.update_xaxes(title_text=f"{axis} (horizontal)")
    fig.update_layout(title=f"{view['run_id']}: learned parameters per coefficient ({view['representation']})",
                      height=380, margin={"t": 70, "l": 40, "r": 40, "b": 40})
    return fig


def elbo_figure(table: dict):
    """A plotly chart of the ELBO per dimension: ours as bars and Barron's as markers, grouped by
    representation, one colour per distribution (hover: nats per image)."""
    from plotly import graph_objects as go

    palette = {"normal": "#2563eb", "cauchy": "#dc2626", "students_t": "#16a34a", "general": "#9333ea"}
    fig = go.Figure()
    reps = table["representations"]
    for dist in table["distributions"]:
        ours = [table["cells"][r].get(dist) for r in reps]
        fig.add_trace(go.Bar(name=f"{TITLE[dist]} (ours)", x=[TITLE[r] for r in reps],
                             y=[c["nats_per_dim"] if c else None for c in ours], marker_color=palette[dist],
                             offsetgroup=dist, customdata=[c["elbo"] if c else None for c in ours],
                             hovertemplate="%{y:.3f} nats/dim (%{customdata:,.0f} per image)<extra></extra>"))
        fig.add_trace(go.Scatter(name=f"{TITLE[dist]} (Barron)", x=[TITLE[r] for r in reps],
                                 y=[BARRON_ELBO[r][dist] / BARRON_SETUP["dims"] for r in reps], mode="markers",
                                 marker={"symbol": "diamond-open", "size": 11, "color": palette[dist]},
                                 offsetgroup=dist, customdata=[BARRON_ELBO[r][dist] for r in reps],
                                 hovertemplate="Barron: %{y:.3f} nats/dim (%{customdata:,} per image)<extra></extra>"))
    fig.update_layout(barmode="group", title="Validation ELBO per dimension (continuous densities of [0, 1] pixels)",
                      yaxis_title="nats per dimension (higher is better)", legend={"orientation": "h"}, height=420)
    return fig


# ---------------------------------------------------------------------------------------------------
# Reconstructions and prior samples


def gallery(runs: Sequence[Any], n: int = 8, seed: int = 0) -> dict:
    """The same validation images (the first n of the first run's embeddings, which every run of a study
    shares), each run's reconstructions decoder(μ) and its prior samples decoder(z), z ~ N(0, I) drawn
    with `seed`: {"originals": (n, C, H, W) uint8 or None, "runs": [{"run_id", "label", "reconstructions",
    "samples"}]}."""
    from core.families import family_of, load_objective
    from core.runs import RunFormatError

    originals = None
    out = []
    for run in runs:
        try:
            emb = run.embeddings()
            objective = load_objective(run)
        except RunFormatError:
            continue
        family = family_of(run.config)
        if originals is None and "images" in emb:
            originals = emb["images"][:n]
        label = f"{run.config.get('representation') or 'pixels'} / {run.config.get('distribution') or 'loss'}"
        rec = family.reconstruct(objective, originals) if originals is not None else None
        out.append({"run_id": run.run_id, "label": label,
                    "reconstructions": None if rec is None else rec.numpy(),
                    "samples": (lambda s: None if s is None else s.numpy())(family.sample(objective, n, seed))})
    return {"originals": None if originals is None else originals.numpy(), "runs": out}


def gallery_png(view: dict, *, zoom: int = 3) -> bytes:
    """The gallery as one PNG, a row per run: its reconstructions of the validation images (shown in the
    first row) on the left, its prior samples on the right."""
    from PIL import Image, ImageDraw

    runs = [r for r in view["runs"] if r["reconstructions"] is not None or r["samples"] is not None]
    if not runs:
        raise ValueError("gallery_png needs at least one run with images")
    first = next(a for r in runs for a in (r["reconstructions"], r["samples"]) if a is not None)
    n, h, w = max(len(a) for r in runs for a in (r["reconstructions"], r["samples"]) if a is not None), *first.shape[2:]
    label_w, pad, gap, head = 170, 2, 16, 16
    tile_w, tile_h = w * zoom + pad, h * zoom + pad
    right = label_w + n * tile_w + gap
    canvas = Image.new("RGB", (right + n * tile_w, head + (len(runs) + 1) * tile_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((label_w, 2), "reconstructions decoder(mu)", fill=(17, 24, 39))
    draw.text((right, 2), "prior samples decoder(z), z ~ N(0, I)", fill=(17, 24, 39))

    def paste(images: np.ndarray | None, x0: int, y0: int) -> None:
        if images is None:
            return
        rgb = np.repeat(images, 3, axis=1) if images.shape[1] == 1 else images
        for k, image in enumerate(rgb):
            tile = Image.fromarray(np.ascontiguousarray(image.transpose(1, 2, 0)))
            canvas.paste(tile.resize((w * zoom, h * zoom), Image.NEAREST), (x0 + k * tile_w, y0))

    rows = [("validation images", view["originals"], None)] + [(r["label"], r["reconstructions"], r["samples"])
                                                               for r in runs]
    for i, (label, left, samples) in enumerate(rows):
        y0 = head + i * tile_h
        draw.text((4, y0 + h * zoom // 2 - 6), _ascii(label), fill=(17, 24, 39))
        paste(left, label_w, y0)
        paste(samples, right, y0)
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# ---------------------------------------------------------------------------------------------------
# Writing the report


def write_report(runs: Sequence[Any], folder: Path, meta: dict | None = None) -> Path:
    """Write elbo.md, elbo.csv, elbo.json and the figures for the grid's runs into `folder`; returns the
    path of elbo.md."""
    from core.runs import write_bytes_atomic, write_json_atomic

    folder = Path(folder)
    figures = folder / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    grid_runs = [r for r in runs if cell_of(r.config) is not None and r.status().get("state") == "finished"]
    table = elbo_table(grid_runs)
    degenerate = {r.run_id: d for r in grid_runs if (d := diagnostics(r)) is not None}
    text = report_markdown(table, grid_runs, degenerate=degenerate)
    written = []
    for run in grid_runs:
        view = coefficient_maps(run)
        if view is not None:
            name = f"elbo-maps-{run.run_id}.png"
            write_bytes_atomic(figures / name, coefficient_maps_png(view))
            means = ", ".join(f"{p['name']} {p['range'][0]:.3g} to {p['range'][1]:.3g}" for p in view["panels"])
            written.append((name, f"{view['representation']} / {view['distribution']}: {means}"))
    shown = gallery(grid_runs)
    if shown["runs"]:
        write_bytes_atomic(figures / "elbo-gallery.png", gallery_png(shown))
        written.insert(0, ("elbo-gallery.png", "the same validation images, each run's reconstructions decoder(μ) "
                                               "and its prior samples (the same z ~ N(0, I) for every run)"))
    if written:
        text += "\n## Figures\n\n" + "\n".join(f"- [{name}](figures/{name}): {caption}" for name, caption in written)
        text += "\n"
    if meta:
        text += f"\nCommand: `{meta.get('command', '')}`\n"
    path = folder / "elbo.md"
    write_bytes_atomic(path, text.encode("utf-8"))
    rows = elbo_rows(table)
    csv = io.StringIO()
    if rows:
        csv.write(",".join(rows[0]) + "\n")
        for row in rows:
            csv.write(",".join("" if v is None else str(v) for v in row.values()) + "\n")
    write_bytes_atomic(folder / "elbo.csv", csv.getvalue().encode("utf-8"))
    write_json_atomic(folder / "elbo.json", {"table": json.loads(json.dumps(table, default=str)),
                                             "differences": differences(table, grid_runs, degenerate),
                                             "collapsed_scales": degenerate,
                                             "barron": BARRON_ELBO, "barron_setup": BARRON_SETUP,
                                             "figures": [n for n, _ in written], "meta": meta or {}})
    return path


if __name__ == "__main__":
    raise SystemExit(main())
