"""The per-loss comparison behind the Compare page and the study report, free of Streamlit and plotly.

Data: `list_studies()` groups runs by their config's "study"; `results_table(runs)` gives one row per run
(loss, latent size, seed, probe accuracy and cross-entropy, validation numbers, timings);
`aggregate(rows, metric)` folds seeds into mean ± standard deviation; `reconstructions(runs)` decodes the
same validation images' μ under each run; `prior_samples(runs)` decodes the same z ~ N(0, I) under each
(`load_models(runs)` loads the VAEs once for both);
`adaptive_maps(run)` gives the learned per-pixel α and c of an adaptive run; `sweep(rows, metric)` the
metric against latent size per loss.

Damaged runs: one bad run must not take a page down. `run_problem(info, checks)` says what is wrong
with a run (its config's fields, its embeddings' and weights' safetensors headers against the config,
its history's and probes' readability), reading no tensor data; `list_studies` records each study's
damaged runs in `StudyInfo.problems`; `usable_runs` splits any list of runs into the usable ones and
the damaged ones with their problems; `unreadable_runs` lists the run folders whose config cannot be
read (they name no study); `embedding_runs` gives the Embeddings page its runs. `newest_first(infos)`
orders runs for a default choice with runs dated in the future (a wrong clock, a crafted config) after
every other.

Figures, as files a report can embed and a page can offer for download: `bar_chart_svg`,
`line_chart_svg` (plain SVG text) and `image_grid_png`, `heatmap_png` (PNG bytes, drawn with Pillow).
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.latent_view import reconstruct, rows_at, validation_images
from core.losses import LOSSES
from core.probes import summary
from core.runs import Run, RunFormatError, RunInfo, checkpoints_root, list_runs, runs_root

__all__ = [
    "COLUMNS",
    "EMBEDDING_CHECKS",
    "METRICS",
    "RUN_CHECKS",
    "StudyInfo",
    "adaptive_maps",
    "aggregate",
    "bar_chart_svg",
    "colourise",
    "config_problem",
    "embedding_runs",
    "embeddings_problem",
    "fingerprint",
    "heatmap_png",
    "image_grid_png",
    "line_chart_svg",
    "list_studies",
    "load_models",
    "loss_colour",
    "loss_label",
    "newest_first",
    "pick_validation_images",
    "prior_samples",
    "reconstructions",
    "results_row",
    "results_table",
    "run_problem",
    "study_dir",
    "sweep",
    "table_csv",
    "unreadable_runs",
    "usable_runs",
    "weights_problem",
]

# What a table row holds, in column order (CSV and page).
COLUMNS = (
    "loss_label", "latent_dim", "seed", "mlp_acc", "mlp_acc_std", "mlp_ce", "mlp_ce_std", "linear_acc",
    "linear_ce", "knn_acc", "knn_ce", "knn_k", "val_recon", "val_kl", "active_units", "alpha_mean",
    "scale_mean", "train_s", "probe_s", "epochs", "limit_train", "probe_train", "probe_test", "state", "loss",
    "loss_alpha", "dataset", "study", "run_id",
)
# Metrics a chart can show: key -> (title, higher is better).
METRICS = {
    "mlp_acc": ("MLP probe accuracy (z = μ + σε)", True),
    "mlp_ce": ("MLP probe cross-entropy (nats)", False),
    "linear_acc": ("linear probe accuracy (μ)", True),
    "linear_ce": ("linear probe cross-entropy (nats)", False),
    "knn_acc": ("k-NN probe accuracy (cosine, μ)", True),
    "knn_ce": ("k-NN probe cross-entropy (nats)", False),
    "val_recon": ("validation reconstruction loss", False),
    "val_kl": ("validation KL", False),
    "active_units": ("active latent units", True),
}
# One colour per loss, the same in every chart (colour-blind-safe Tableau 10).
_COLOURS = {
    "mse": "#4e79a7", "cauchy": "#59a14f", "geman_mcclure": "#e15759", "welsch": "#b07aa1",
    "smooth_l1": "#f28e2b", "general": "#edc948", "adaptive": "#76b7b2", "charbonnier": "#ff9da7",
    "l1": "#9c755f", "students_t": "#bab0ac",
}
STUDIES_DIR = "studies"  # <root>/studies/<name>/: a study's report, table and figures


def loss_label(loss: str, alpha: float | None = None) -> str:
    """'Cauchy', 'MSE', 'General (α=1)': the loss's title from the registry, with α where it is chosen."""
    info = LOSSES.get(loss)
    title = info.title if info else loss
    if loss == "general" and alpha is not None:
        return f"General (α={alpha:g})"
    if loss == "students_t" and alpha is not None:
        return f"Student's t (ν={alpha:g})"
    return title


def loss_colour(loss: str) -> str:
    return _COLOURS.get(loss, "#79706e")


# ---------------------------------------------------------------------------------------------------
# Studies and their tables


@dataclass
class StudyInfo:
    """A study: its name, its runs (any state, damaged ones included), what is wrong with each damaged
    run (by path), and the folders holding its report (if written)."""

    name: str
    runs: list[RunInfo] = field(default_factory=list)
    report_dirs: list[Path] = field(default_factory=list)
    problems: dict[Path, str] = field(default_factory=dict)

    @property
    def shipped(self) -> bool:
        return bool(self.runs) and all(r.shipped for r in self.runs)

    @property
    def usable(self) -> list[RunInfo]:
        """The runs the page can show: every run but the damaged ones."""
        return [r for r in self.runs if r.path not in self.problems]

    @property
    def finished(self) -> list[RunInfo]:
        return [r for r in self.usable if r.state == "finished"]


def study_dir(root: Path, name: str) -> Path:
    """Where a study's report lives under a runs root."""
    return Path(root) / STUDIES_DIR / name


def list_studies(roots: Iterable[str | Path] | None = None, *, checks: Collection[str] = ()) -> list[StudyInfo]:
    """Studies found under `roots` (default: the user's runs and the shipped checkpoints), by name.

    A study is the set of runs whose config names it; runs of one name in several roots are one study.
    checks: what `run_problem` looks at in each run (e.g. RUN_CHECKS); the damaged runs' problems go in
    `StudyInfo.problems`. A run whose config.json cannot be read names no study (see `usable_runs`)."""
    roots = [runs_root(), checkpoints_root()] if roots is None else [Path(r) for r in roots]
    studies: dict[str, StudyInfo] = {}
    for info in list_runs(roots):
        name = (info.config or {}).get("study")
        if isinstance(name, str) and name:
            study = studies.setdefault(name, StudyInfo(name))
            study.runs.append(info)
            if checks and (problem := run_problem(info, checks)):
                study.problems[info.path] = problem
    for root in roots:
        for name, study in studies.items():
            folder = study_dir(root, name)
            if (folder / "study.json").is_file():
                study.report_dirs.append(folder)
    for study in studies.values():
        study.runs.sort(key=lambda r: _run_order(r.config or {}))
    return sorted(studies.values(), key=lambda s: (not s.shipped, s.name))


_LOSS_ORDER = tuple(LOSSES)  # the registry's order: MSE first, the adaptive loss last


def _number(value: Any) -> float | None:
    """A finite int or float as float, else None (a damaged file's strings, lists and nulls)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def _run_order(config: dict) -> tuple:
    # Every key a number, whatever a damaged config holds: a sort must never compare a str with an int.
    loss = config.get("loss", "")
    rank = _LOSS_ORDER.index(loss) if isinstance(loss, str) and loss in _LOSS_ORDER else len(_LOSS_ORDER)
    return (rank, _number(config.get("loss_alpha")) or 0.0, _number(config.get("latent_dim")) or 0.0,
            _number(config.get("seed")) or 0.0)


# ---------------------------------------------------------------------------------------------------
# Damaged runs

RUN_CHECKS = ("config", "embeddings", "model", "history", "probes")  # what the Compare page reads
EMBEDDING_CHECKS = ("config", "embeddings")  # what the Embeddings page reads (weights only on a click)
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_INT_DTYPES = ("I64", "I32")


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def config_problem(config: Any) -> str | None:
    """What is wrong with a run's config.json for these pages (None if nothing): the fields they read,
    with the types they need, and a model spec that builds. The fix names the field."""
    if not isinstance(config, dict):
        return f"config.json holds {_type_name(config)}, not an object; restore it from a copy or retrain the run"

    def bad(key: str, want: str) -> str:
        return (f"config.json: {key!r} should be {want}, not {_type_name(config.get(key))} "
                f"({config.get(key)!r:.40}); correct it, or retrain the run")

    for key in ("run_id", "dataset", "loss"):
        if not isinstance(config.get(key), str):
            return bad(key, "a name")
    for key in ("latent_dim",):
        if not _is_int(config.get(key)) or config[key] < 1:
            return bad(key, "a whole number ≥ 1")
    for key in ("seed", "epochs", "limit_train"):
        if config.get(key) is not None and not _is_int(config[key]):
            return bad(key, "a whole number or null")
    for key in ("loss_alpha", "loss_scale", "adaptive_alpha_lo", "adaptive_alpha_hi"):
        if config.get(key) is not None and _number(config[key]) is None:
            return bad(key, "a number or null")
    for key in ("study", "created"):
        if config.get(key) is not None and not isinstance(config[key], str):
            return bad(key, "text or null")
    split = config.get("split")
    if not isinstance(split, dict) or not all(_is_int(split.get(k)) and split[k] >= 0 for k in ("train", "val")):
        return bad("split", "an object of image counts (train, val, test)")
    model = config.get("model")
    if not isinstance(model, dict):
        return bad("model", "an object (kind, image_shape, latent_dim, width)")
    shape = model.get("image_shape")
    if (model.get("kind") != "conv_vae" or not isinstance(shape, list) or len(shape) != 3
            or not all(_is_int(v) and v >= 1 for v in shape) or not _is_int(model.get("width"))
            or model["width"] < 1 or model.get("latent_dim") != config["latent_dim"]):
        return (f"config.json: 'model' {model!r:.120} is not a conv_vae spec of image_shape [C, H, W], width and "
                f"the run's latent_dim {config['latent_dim']}; correct it, or retrain the run")
    return None


def _header(file: Path) -> tuple[dict[str, tuple[str, tuple[int, ...]]], str | None]:
    """A safetensors file's tensors {name: (dtype, shape)} from its header, or why it cannot be read.
    safe_open maps the file and checks the header covers it exactly; it reads no tensor data."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(file), framework="pt") as fh:
            return {k: (fh.get_slice(k).get_dtype(), tuple(fh.get_slice(k).get_shape()))
                    for k in fh.keys()}, None  # noqa: SIM118 (a safe_open handle is no dict)
    except (SafetensorError, OSError, ValueError) as exc:
        return {}, str(exc)


def _redo(folder: Path, shipped: bool, *files: str) -> str:
    """How to get damaged files back: shipped runs from the repository; others from their checkpoint
    (a resume of a finished run rewrites its weights and embeddings once they are gone), else retrain."""
    if shipped:
        return "restore checkpoints/ from the repository (git checkout checkpoints/)"
    checkpoint = getattr(Run, "CHECKPOINT", "checkpoint.safetensors")
    if (folder / checkpoint).is_file() or (folder / "trainer_state.json").is_file():
        return (f"delete {' and '.join(files)} and run `python -m core.train --resume {folder}` to write "
                f"{'it' if len(files) == 1 else 'them'} again from the checkpoint")
    return "the run has no checkpoint to rebuild it from: retrain it"


def embeddings_problem(file: Path, config: dict, *, shipped: bool = False) -> str | None:
    """What is wrong with a run's embeddings.safetensors (None if nothing): readable, with μ and log σ²
    of (n, latent_dim), n ≥ 1 and at most the validation split, labels and index of (n,), images of
    (n, C, H, W) uint8 when there. Headers only."""
    tensors, error = _header(file)
    fix = _redo(file.parent, shipped, Run.EMBEDDINGS)
    if error is not None:
        return f"{file.name} cannot be read ({error}): it is damaged or cut short; {fix}"
    d = config["latent_dim"]
    n_max = config["split"]["val"]
    mu = tensors.get("mu")
    if mu is None or len(mu[1]) != 2 or mu[1][1] != d or mu[0] not in _FLOAT_DTYPES or not 1 <= mu[1][0] <= n_max:
        got = f"{mu[0]} {list(mu[1])}" if mu else "missing"
        return (f"{file.name}: mu is {got}, not float (n, {d}) with 1 ≤ n ≤ {n_max:,} (config.json's latent_dim and "
                f"validation split); {fix}")
    n = mu[1][0]
    wanted = {"logvar": ((n, d), _FLOAT_DTYPES), "labels": ((n,), _INT_DTYPES), "index": ((n,), _INT_DTYPES),
              "source_index": ((n,), _INT_DTYPES), "images": ((n, *config["model"]["image_shape"]), ("U8",))}
    for key, (shape, dtypes) in wanted.items():
        entry = tensors.get(key)
        if entry is None and key in ("logvar", "labels", "index"):
            return f"{file.name} lacks {key!r}; {fix}"
        if entry is not None and (entry[1] != shape or entry[0] not in dtypes):
            return f"{file.name}: {key} is {entry[0]} {list(entry[1])}, not {'/'.join(dtypes)} {list(shape)}; {fix}"
    return None


def weights_problem(file: Path, config: dict, *, shipped: bool = False) -> str | None:
    """What is wrong with a run's model.safetensors (None if nothing): readable, holding exactly the
    tensors of the model and loss config.json describes (the model built on the meta device)."""
    import torch

    from core.objective import build_loss, build_model

    tensors, error = _header(file)
    fix = _redo(file.parent, shipped, Run.MODEL, Run.EMBEDDINGS)
    if error is not None:
        return f"{file.name} cannot be read ({error}): it is damaged or cut short; {fix}"
    try:
        with torch.device("meta"):
            model = build_model(config)
        loss = build_loss(config)
    except (ValueError, TypeError, KeyError, RuntimeError) as exc:
        return f"config.json describes a model or loss that cannot be built ({exc}); correct it, or retrain the run"
    wanted = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    wanted.update({f"loss.{k}": tuple(v.shape) for k, v in loss.state_dict().items()})
    for key, shape in wanted.items():
        if key not in tensors:
            return f"{file.name} lacks {key}, which config.json's model has; {fix}"
        if tensors[key][1] != shape or tensors[key][0] not in _FLOAT_DTYPES:
            return (f"{file.name}: {key} is {tensors[key][0]} {list(tensors[key][1])}, config.json's model has "
                    f"{list(shape)}; {fix}")
    if extra := sorted(set(tensors) - set(wanted)):
        return f"{file.name} holds {', '.join(extra[:3])}, which config.json's model has not; {fix}"
    return None


def _probes_problem(results: Any) -> str | None:
    """What in probes.json the table cannot read (None if nothing): the numbers `results_row` takes."""
    if not isinstance(results, dict):
        return "it is not a JSON object"
    probes = results.get("probes")
    if probes is None:
        return None
    if not isinstance(probes, dict):
        return f"'probes' is {_type_name(probes)}, not an object"
    for name in ("mlp", "linear", "knn"):
        probe = probes.get(name)
        if not probe:
            continue
        if not isinstance(probe, dict):
            return f"probes.{name} is {_type_name(probe)}, not an object"
        for key in ("accuracy", "cross_entropy"):
            if _number(probe.get(key)) is None:
                return f"probes.{name}.{key} is {probe.get(key)!r:.30}, not a number"
        for key in ("accuracy_std", "cross_entropy_std", "best_k"):
            if probe.get(key) is not None and _number(probe[key]) is None:
                return f"probes.{name}.{key} is {probe[key]!r:.30}, not a number"
    for key in ("seconds", "encode_seconds"):
        if results.get(key) is not None and _number(results[key]) is None:
            return f"{key!r} is {results[key]!r:.30}, not a number"
    settings, split = results.get("settings"), results.get("split")
    if settings is not None and (not isinstance(settings, dict)
                                 or not isinstance(settings.get("seeds") or [], list)):
        return "'settings' is not an object with a list of seeds"
    if split is not None:
        if not isinstance(split, dict):
            return f"'split' is {_type_name(split)}, not an object"
        for key in ("train", "test"):
            part = split.get(key)
            if part is not None and (not isinstance(part, dict) or (part.get("n") is not None
                                                                    and not _is_int(part["n"]))):
                return f"split.{key} is not an object with a count n"
    return None


def run_problem(info: RunInfo, checks: Collection[str] = RUN_CHECKS) -> str | None:
    """What is wrong with a run, naming the file (and field) and the fix, or None when the pages can
    show it. checks: "config", "embeddings", "model" (the files' safetensors headers against the
    config; absent files are not damage), "history" (readable text), "probes" (the numbers the table
    reads). No tensor data is read."""
    if info.error:
        return info.error
    problem = config_problem(info.config)
    if problem or info.config is None:
        return problem
    config = info.config
    if "embeddings" in checks and (info.path / Run.EMBEDDINGS).is_file():
        problem = embeddings_problem(info.path / Run.EMBEDDINGS, config, shipped=info.shipped)
    if not problem and "model" in checks and (info.path / Run.MODEL).is_file():
        problem = weights_problem(info.path / Run.MODEL, config, shipped=info.shipped)
    if problem or not ({"history", "probes"} & set(checks)):
        return problem
    try:
        run = info.open()
    except (RunFormatError, OSError, RecursionError) as exc:
        return str(exc)
    if "history" in checks:
        try:
            run.history()
        except UnicodeDecodeError as exc:
            return (f"history.jsonl is not UTF-8 text ({exc.reason} at byte {exc.start}); remove the damaged line, "
                    f"or restore the file from a copy")
        except (RunFormatError, OSError, ValueError, RecursionError) as exc:
            return f"history.jsonl cannot be read ({exc}); remove the damaged line, or restore the file from a copy"
    if "probes" in checks and (info.path / Run.PROBES).is_file():
        try:
            why = _probes_problem(run.probes())
        except (RunFormatError, OSError, ValueError, RecursionError) as exc:
            why = f"it cannot be read ({exc})"
        if why is not None:
            return f"probes.json: {why}; delete it and compute the probes again (python -m core.probes {info.path})"
    return None


def usable_runs(infos: Iterable[RunInfo], checks: Collection[str] = EMBEDDING_CHECKS
                ) -> tuple[list[RunInfo], list[tuple[RunInfo, str]]]:
    """Split runs into those the pages can show and the damaged ones with what is wrong with each, both
    in the given order."""
    good: list[RunInfo] = []
    damaged: list[tuple[RunInfo, str]] = []
    for info in infos:
        problem = run_problem(info, checks)
        if problem:
            damaged.append((info, problem))
        else:
            good.append(info)
    return good, damaged


def unreadable_runs(roots: Iterable[str | Path] | None = None) -> list[RunInfo]:
    """Run folders whose config.json or status.json cannot be read (so they name no study), with
    `error` saying why."""
    return [info for info in list_runs(roots) if info.error]


def embedding_runs(roots: Iterable[str | Path] | None = None
                   ) -> tuple[list[RunInfo], list[tuple[RunInfo, str]]]:
    """The Embeddings page's runs: those with embeddings that pass EMBEDDING_CHECKS, newest first (see
    `newest_first`), and the damaged ones (unreadable folders, bad embeddings) with what is wrong."""
    infos = [info for info in list_runs(roots) if info.error or (info.path / Run.EMBEDDINGS).is_file()]
    good, damaged = usable_runs(infos, EMBEDDING_CHECKS)
    return newest_first(good), damaged


def _created(info: RunInfo) -> datetime | None:
    try:
        when = datetime.fromisoformat(info.created)
    except (TypeError, ValueError):
        return None
    return when if when.tzinfo else when.replace(tzinfo=timezone.utc)


def newest_first(infos: Iterable[RunInfo], now: datetime | None = None) -> list[RunInfo]:
    """Runs by their config's `created`, newest first; a run dated after `now` (a wrong clock, or a
    crafted config) or not dated at all comes after every other, so it is never a page's default."""
    now = now or datetime.now(timezone.utc)

    def key(info: RunInfo) -> tuple:
        when = _created(info)
        plausible = when is not None and when <= now
        return (plausible, when.timestamp() if plausible and when else 0.0, info.run_id)

    return sorted(infos, key=key, reverse=True)


def _last_epoch(run: Run) -> dict:
    epochs = run.history("epoch")
    return epochs[-1] if epochs else {}


def fingerprint(paths: Iterable[str | Path]) -> tuple:
    """What a cached view of these runs depends on: each run's path and the change times of its status,
    probes, weights and embeddings (a cache keyed by it refreshes when a run moves on)."""
    out = []
    for path in paths:
        stamps = []
        for name in (Run.STATUS, Run.PROBES, Run.MODEL, Run.EMBEDDINGS, Run.HISTORY):
            try:
                stamps.append((Path(path) / name).stat().st_mtime_ns)
            except OSError:
                stamps.append(0)
        out.append((str(path), *stamps))
    return tuple(out)


def results_row(run: Run) -> dict:
    """One row of the comparison table for a run (None where a number is not there yet)."""
    cfg, status = run.config, run.status()
    last = _last_epoch(run)
    probes = run.probes()
    numbers = summary(probes)
    settings = (probes or {}).get("settings") or {}
    split = (probes or {}).get("split") or {}
    probe_s = None
    if probes:
        probe_s = round((_number(probes.get("seconds")) or 0.0) + (_number(probes.get("encode_seconds")) or 0.0), 1)
    row = {
        "run_id": run.run_id, "study": cfg.get("study"), "dataset": cfg.get("dataset"), "loss": cfg.get("loss"),
        "loss_alpha": cfg.get("loss_alpha"), "loss_label": loss_label(cfg.get("loss", ""), cfg.get("loss_alpha")),
        "latent_dim": cfg.get("latent_dim"), "seed": cfg.get("seed"), "epochs": cfg.get("epochs"),
        "limit_train": cfg.get("limit_train"), "state": status.get("state"),
        **numbers,
        # History values are numbers or None, whatever a damaged line held (the table's columns are numeric)
        "val_recon": _number(last.get("val_recon")), "val_kl": _number(last.get("val_kl")),
        "active_units": _number(last.get("active_units")), "alpha_mean": _number(last.get("alpha_mean")),
        "scale_mean": _number(last.get("scale_mean")),
        "train_s": round(elapsed, 1) if (elapsed := _number(last.get("elapsed_s"))) is not None else None,
        "probe_s": probe_s,
        "probe_train": (split.get("train") or {}).get("n"), "probe_test": (split.get("test") or {}).get("n"),
        "probe_seeds": len(settings.get("seeds") or []) or None,
    }
    return row


def results_table(runs: Iterable[Run]) -> list[dict]:
    """One row per run, in the study's loss order; keys as COLUMNS (plus probe_seeds)."""
    runs = sorted(runs, key=lambda r: _run_order(r.config))
    return [results_row(run) for run in runs]


def table_csv(rows: Sequence[dict], columns: Sequence[str] = COLUMNS) -> str:
    """The table as CSV text (floats to 6 significant digits, empty for missing)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                         for c in columns])
    return out.getvalue()


def aggregate(rows: Sequence[dict], metric: str = "mlp_acc", by: Sequence[str] = ("loss_label", "latent_dim")
              ) -> list[dict]:
    """Fold rows with the same `by` values: mean of `metric`, its error and what the error is over.

    Several runs (VAE seeds): standard deviation over the runs. One run: the MLP probe's standard
    deviation over its probe seeds (metric mlp_acc / mlp_ce), else no error. Rows lacking the metric
    are left out."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if isinstance(row.get(metric), (int, float)):
            groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    out = []
    for key, members in groups.items():
        values = np.array([float(m[metric]) for m in members])
        if len(members) > 1:
            error, over = float(values.std(ddof=1)), f"{len(members)} VAE seeds"
        elif isinstance(members[0].get(f"{metric}_std"), (int, float)) and (members[0].get("probe_seeds") or 0) > 1:
            error, over = float(members[0][f"{metric}_std"]), f"{members[0]['probe_seeds']} probe seeds"
        else:
            error, over = 0.0, "one run"
        out.append({**dict(zip(by, key, strict=True)), "loss": members[0].get("loss"), "metric": metric,
                    "mean": float(values.mean()), "error": error, "error_over": over, "n": len(members)})
    return out


def sweep(rows: Sequence[dict], metric: str = "mlp_acc") -> dict[str, dict]:
    """metric against latent size, per loss: {loss_label: {"loss", "dims", "mean", "error"}} (dims sorted)."""
    out: dict[str, dict] = {}
    for item in sorted(aggregate(rows, metric), key=lambda r: r["latent_dim"]):
        series = out.setdefault(item["loss_label"], {"loss": item["loss"], "dims": [], "mean": [], "error": []})
        series["dims"].append(item["latent_dim"])
        series["mean"].append(item["mean"])
        series["error"].append(item["error"])
    return out


# ---------------------------------------------------------------------------------------------------
# What the models draw


def load_models(runs: Iterable[Run]) -> dict[Path, torch.nn.Module]:
    """Each run's VAE, by run path; a run whose weights are missing or do not fit its config is left out
    (one such run must not keep the others' images from being drawn)."""
    models = {}
    for run in runs:
        try:
            models[run.path] = run.load_model()
        except RunFormatError:
            continue
    return models


def pick_validation_images(run: Run, n: int = 10, embeddings: dict[str, torch.Tensor] | None = None
                           ) -> np.ndarray:
    """Positions in the validation split of up to n images, one per class in class order, then the next
    images (from the run's embeddings: every run of a study embeds the same validation images)."""
    emb = embeddings if embeddings is not None else run.embeddings()
    labels, index = emb["labels"].tolist(), emb["index"].tolist()
    chosen: list[int] = []
    for cls in sorted(set(labels)):
        chosen.append(index[labels.index(cls)])
    chosen += [i for i in index if i not in chosen]
    return np.array(chosen[:n], dtype=np.int64)


@torch.no_grad()
def reconstructions(runs: Sequence[Run], n: int = 10, index: np.ndarray | None = None,
                    models: dict[Path, torch.nn.Module] | None = None) -> dict:
    """The same validation images under each run: {"index", "originals" (n,C,H,W) uint8, or None when
    neither the runs nor an installed dataset hold them, "runs": [{"run_id", "loss_label", "images"
    (n,C,H,W) uint8}]}, x̂ = decoder(μ) from the saved embeddings. models: from `load_models(runs)`
    (loaded here when not given); runs without one are left out."""
    runs = [r for r in runs if r.has_embeddings]
    if not runs:
        return {"index": np.zeros(0, dtype=np.int64), "originals": None, "runs": []}
    models = load_models(runs) if models is None else models
    first = runs[0].embeddings()
    index = pick_validation_images(runs[0], n, first) if index is None else np.asarray(index, dtype=np.int64)
    out: dict = {"index": index, "originals": None, "runs": []}
    looked_for_originals = False
    for run in runs:
        emb = first if run is runs[0] else run.embeddings()
        rows = rows_at(emb["index"], index)
        if rows is None:
            continue
        if not looked_for_originals:  # every run embeds the same validation split: the first one's will do
            out["originals"], looked_for_originals = validation_images(run, rows, emb), True
        if run.path not in models:
            continue
        images = reconstruct(models[run.path], emb["mu"][torch.as_tensor(rows)])
        out["runs"].append({"run_id": run.run_id, "loss": run.config["loss"],
                            "loss_label": loss_label(run.config["loss"], run.config.get("loss_alpha")),
                            "latent_dim": run.config["latent_dim"], "images": images})
    return out


@torch.no_grad()
def prior_samples(runs: Sequence[Run], n: int = 10, seed: int = 0,
                  models: dict[Path, torch.nn.Module] | None = None) -> list[dict]:
    """decoder(z) for the same z ~ N(0, I) (seeded, one draw per latent size) under each run. models: from
    `load_models(runs)` (loaded here when not given); runs without one are left out."""
    models = load_models(runs) if models is None else models
    draws: dict[int, torch.Tensor] = {}
    out = []
    for run in runs:
        d = int(run.config["latent_dim"])
        if d not in draws:
            draws[d] = torch.randn(n, d, generator=torch.Generator().manual_seed(seed))
        if run.path not in models:
            continue
        out.append({"run_id": run.run_id, "loss": run.config["loss"],
                    "loss_label": loss_label(run.config["loss"], run.config.get("loss_alpha")),
                    "latent_dim": d, "images": reconstruct(models[run.path], draws[d])})
    return out


@torch.no_grad()
def adaptive_maps(run: Run) -> dict | None:
    """The learned α and c per pixel of an adaptive run, as (C, H, W) arrays, with their ranges; None for
    a run whose loss learns nothing."""
    loss = run.load_loss()
    if not (callable(getattr(loss, "alpha", None)) and callable(getattr(loss, "scale", None))):
        return None
    shape = tuple(run.config["model"]["image_shape"])
    alpha = loss.alpha().reshape(shape).numpy().astype(np.float32)
    scale = loss.scale().reshape(shape).numpy().astype(np.float32)
    return {"run_id": run.run_id, "alpha": alpha, "scale": scale,
            "alpha_bounds": (float(loss.alpha_lo), float(loss.alpha_hi)),
            "alpha_mean": float(alpha.mean()), "scale_mean": float(scale.mean()),
            "alpha_range": (float(alpha.min()), float(alpha.max())), "scale_range": (float(scale.min()),
                                                                                       float(scale.max()))}


# ---------------------------------------------------------------------------------------------------
# Figures: SVG charts


def _nice_max(value: float) -> float:
    if value <= 0 or not math.isfinite(value):
        return 1.0
    step = 10 ** math.floor(math.log10(value))
    for mult in (1, 2, 2.5, 5, 10):
        if value <= mult * step:
            return mult * step
    return 10 * step


def _svg(width: int, height: int, body: list[str]) -> str:
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="Helvetica, Arial, sans-serif" font-size="12">\n'
            f'<rect width="100%" height="100%" fill="white"/>\n' + "\n".join(body) + "\n</svg>\n")


def _frame(width: int, left: int, right: int, top: int, plot_h: float, top_value: float, title: str,
           ylabel: str) -> tuple[Callable[[float], float], list[str]]:
    """What both charts start with: the title, a y axis from 0 to top_value (six gridlines with their
    values) and the y label. Returns the value → SVG y map and those elements."""

    def y(v: float) -> float:
        return top + plot_h * (1 - v / top_value)

    body = [f'<text x="{width / 2}" y="22" text-anchor="middle" font-size="14">{escape(title)}</text>']
    for i in range(6):
        v = top_value * i / 5
        body.append(f'<line x1="{left}" x2="{width - right}" y1="{y(v):.1f}" y2="{y(v):.1f}" stroke="#e5e7eb"/>')
        body.append(f'<text x="{left - 6}" y="{y(v) + 4:.1f}" text-anchor="end">{v:.3g}</text>')
    body.append(f'<text transform="translate(16 {top + plot_h / 2}) rotate(-90)" text-anchor="middle">'
                f'{escape(ylabel)}</text>')
    return y, body


def bar_chart_svg(labels: Sequence[str], values: Sequence[float], errors: Sequence[float] | None = None,
                  colours: Sequence[str] | None = None, *, title: str = "", ylabel: str = "",
                  ymax: float | None = None) -> str:
    """A vertical bar chart with optional error bars (±error) and the value above each bar, as SVG."""
    n = len(labels)
    errors = list(errors) if errors is not None else [0.0] * n
    colours = list(colours) if colours is not None else ["#4e79a7"] * n
    width, height, left, right, top, bottom = max(320, 90 * n + 90), 340, 60, 20, 40, 80
    top_value = ymax or _nice_max(max([v + e for v, e in zip(values, errors, strict=True)] + [0.0]))
    plot_w, plot_h = width - left - right, height - top - bottom
    y, body = _frame(width, left, right, top, plot_h, top_value, title, ylabel)
    slot = plot_w / max(1, n)
    for i, (label, value, err, colour) in enumerate(zip(labels, values, errors, colours, strict=True)):
        x0 = left + i * slot + slot * 0.15
        bar_w = slot * 0.7
        body.append(f'<rect x="{x0:.1f}" y="{y(value):.1f}" width="{bar_w:.1f}" height="{y(0) - y(value):.1f}" '
                    f'fill="{colour}"><title>{escape(label)}: {value:.4g} ± {err:.2g}</title></rect>')
        cx = x0 + bar_w / 2
        if err > 0:
            body.append(f'<line x1="{cx:.1f}" x2="{cx:.1f}" y1="{y(value + err):.1f}" y2="{y(max(0, value - err)):.1f}"'
                        f' stroke="#111827" stroke-width="1.5"/>')
            for yy in (value + err, max(0, value - err)):
                body.append(f'<line x1="{cx - 5:.1f}" x2="{cx + 5:.1f}" y1="{y(yy):.1f}" y2="{y(yy):.1f}" '
                            f'stroke="#111827" stroke-width="1.5"/>')
        body.append(f'<text x="{cx:.1f}" y="{y(value + err) - 5:.1f}" text-anchor="middle">{value:.3f}</text>')
        body.append(f'<text transform="translate({cx:.1f} {height - bottom + 14}) rotate(25)" '
                    f'text-anchor="start">{escape(label)}</text>')
    body.append(f'<line x1="{left}" x2="{width - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="#111827"/>')
    return _svg(width, height, body)


def line_chart_svg(series: dict[str, dict], *, title: str = "", xlabel: str = "", ylabel: str = "") -> str:
    """Lines with error bars over a log₂ x axis (latent sizes): series = sweep(...) output."""
    width, height, left, right, top, bottom = 640, 360, 60, 170, 40, 50
    xs = sorted({x for s in series.values() for x in s["dims"]})
    highs = [m + e for s in series.values() for m, e in zip(s["mean"], s["error"], strict=True)]
    top_value = _nice_max(max([*highs, 0.0]))
    plot_w, plot_h = width - left - right, height - top - bottom
    lx = [math.log2(x) for x in xs] or [0.0]
    span = (max(lx) - min(lx)) or 1.0

    def px(x: float) -> float:
        return left + plot_w * ((math.log2(x) - min(lx)) / span if len(xs) > 1 else 0.5)

    py, body = _frame(width, left, right, top, plot_h, top_value, title, ylabel)
    for x in xs:
        body.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 16}" text-anchor="middle">{x}</text>')
    body.append(f'<text x="{left + plot_w / 2}" y="{height - 10}" text-anchor="middle">{escape(xlabel)}</text>')
    for i, (label, s) in enumerate(series.items()):
        colour = loss_colour(s.get("loss", ""))
        points = " ".join(f"{px(x):.1f},{py(m):.1f}" for x, m in zip(s["dims"], s["mean"], strict=True))
        body.append(f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for x, m, e in zip(s["dims"], s["mean"], s["error"], strict=True):
            body.append(f'<circle cx="{px(x):.1f}" cy="{py(m):.1f}" r="3.5" fill="{colour}"/>')
            if e > 0:
                body.append(f'<line x1="{px(x):.1f}" x2="{px(x):.1f}" y1="{py(m + e):.1f}" y2="{py(m - e):.1f}" '
                            f'stroke="{colour}"/>')
        ly = top + 16 * i + 6
        body.append(f'<line x1="{left + plot_w + 12}" x2="{left + plot_w + 30}" y1="{ly}" y2="{ly}" '
                    f'stroke="{colour}" stroke-width="3"/>')
        body.append(f'<text x="{left + plot_w + 36}" y="{ly + 4}">{escape(label)}</text>')
    return _svg(width, height, body)


# ---------------------------------------------------------------------------------------------------
# Figures: PNG images


def _rgb(images: np.ndarray) -> np.ndarray:
    """(n, C, H, W) uint8 with C = 1 or 3 -> (n, H, W, 3)."""
    images = np.asarray(images)
    if images.shape[1] == 1:
        images = np.repeat(images, 3, axis=1)
    return np.ascontiguousarray(images.transpose(0, 2, 3, 1))


def _ascii(text: str) -> str:
    """Pillow's built-in font has no Greek: spell α, ν, μ, σ, ε out in PNG labels."""
    for greek, name in (("α", "alpha"), ("ν", "nu"), ("μ", "mu"), ("σ", "sigma"), ("ε", "eps")):
        text = text.replace(greek, name)
    return text


def image_grid_png(rows: Sequence[tuple[str, np.ndarray | None]], *, zoom: int = 3, pad: int = 2,
                   label_width: int = 150) -> bytes:
    """A labelled grid: one row of images per (label, (n, C, H, W) uint8). PNG bytes. Rows without images
    (None or empty: originals a run does not carry, with no dataset installed) are left out."""
    from PIL import Image, ImageDraw

    rows = [(label, _rgb(images)) for label, images in rows if images is not None and len(images)]
    if not rows:
        raise ValueError("image_grid_png needs at least one non-empty row of images")
    cols = max(len(images) for _, images in rows)
    h, w = rows[0][1].shape[1:3]
    cell_h, cell_w = h * zoom + pad, w * zoom + pad
    canvas = Image.new("RGB", (label_width + cols * cell_w + pad, len(rows) * cell_h + pad), "white")
    draw = ImageDraw.Draw(canvas)
    for r, (label, images) in enumerate(rows):
        y0 = pad + r * cell_h
        draw.text((6, y0 + cell_h // 2 - 6), _ascii(label), fill=(17, 24, 39))
        for c, image in enumerate(images):
            tile = Image.fromarray(image).resize((w * zoom, h * zoom), Image.NEAREST)
            canvas.paste(tile, (label_width + pad + c * cell_w, y0))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


# Viridis at 9 points (its published anchor colours); values in between are interpolated linearly.
_VIRIDIS = np.array([
    [68, 1, 84], [71, 44, 122], [59, 81, 139], [44, 113, 142], [33, 144, 141], [39, 173, 129],
    [92, 200, 99], [170, 220, 50], [253, 231, 37]], dtype=np.float64)


def colourise(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """(H, W) floats -> (H, W, 3) uint8 viridis colours, lo dark, hi bright."""
    t = np.clip((np.asarray(values, dtype=np.float64) - lo) / ((hi - lo) or 1.0), 0, 1) * (len(_VIRIDIS) - 1)
    i = np.minimum(np.floor(t).astype(int), len(_VIRIDIS) - 2)
    f = (t - i)[..., None]
    return np.round(_VIRIDIS[i] * (1 - f) + _VIRIDIS[i + 1] * f).astype(np.uint8)


def heatmap_png(panels: Sequence[tuple[str, np.ndarray, float, float]], *, zoom: int = 8) -> bytes:
    """Side-by-side heatmaps, one per (title, (H, W) values, lo, hi), each with its colour range written
    under it. PNG bytes."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("heatmap_png needs at least one panel")
    h, w = np.asarray(panels[0][1]).shape
    zoom = max(zoom, math.ceil(140 / w))  # room for the range labels under small images
    cell_w, cell_h = w * zoom + 20, h * zoom + 50
    canvas = Image.new("RGB", (cell_w * len(panels), cell_h), "white")
    draw = ImageDraw.Draw(canvas)
    for k, (title, values, lo, hi) in enumerate(panels):
        x0 = k * cell_w + 10
        draw.text((x0, 4), _ascii(title), fill=(17, 24, 39))
        tile = Image.fromarray(colourise(values, lo, hi)).resize((w * zoom, h * zoom), Image.NEAREST)
        canvas.paste(tile, (x0, 20))
        bar = colourise(np.linspace(lo, hi, w * zoom)[None, :].repeat(6, axis=0), lo, hi)
        canvas.paste(Image.fromarray(bar), (x0, 24 + h * zoom))
        draw.text((x0, 32 + h * zoom), f"{lo:.4g}", fill=(17, 24, 39))
        draw.text((x0 + w * zoom - 44, 32 + h * zoom), f"{hi:.4g}", fill=(17, 24, 39))
    buffer = io.BytesIO()
    canvas.save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()
