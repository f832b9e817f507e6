"""The comparison of runs behind the Compare page and the study report, free of Streamlit and plotly.

Data: `list_studies()` groups runs by their config's "study"; `results_table(runs)` gives one row per run
(family, model, loss, latent size, seed, the representation probed, probe accuracy and cross-entropy,
validation numbers and the family's own metrics, timings), `columns(rows)` the table's columns;
`aggregate(rows, metric)` folds training seeds into mean ± standard deviation per family, model, loss and latent
size; `sweep(rows, metric)` the metric against latent size per loss and family. What the models draw,
each through its family (a view a family cannot offer is left out): `reconstructions` (the same
validation images decoded under each run), `prior_samples` (each run's prior, where it has one),
`adaptive_maps` (the learned per-pixel α and c); `load_objectives(runs)` loads the trained models once.

Damaged runs: one bad run must not take a page down. `list_studies(checks=...)` records each study's
damaged runs in `StudyInfo.problems` (what is wrong: `core.run_check.run_problem`); `usable_runs` splits
any list of runs into the usable ones and the damaged ones with their problems; `unreadable_runs` lists
the run folders whose config cannot be read (they name no study); `embedding_runs` gives the Embeddings
page its runs. `newest_first(infos)` orders runs for a default choice with runs dated in the future (a
wrong clock, a crafted config) after every other.

Charts are drawn by core.charts (plotly) and image grids by core.image_grid, for pages and reports alike.
"""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.families import FAMILIES, family_of, load_objective
from core.families.recon import loss_label
from core.latent_view import rows_at, validation_images
from core.losses import LOSSES
from core.probes import summary
from core.run_check import EMBEDDING_CHECKS, RUN_CHECKS, run_problem
from core.runs import Run, RunFormatError, RunInfo, checkpoints_root, list_runs, runs_root

__all__ = [
    "COLUMNS",
    "EMBEDDING_CHECKS",
    "METRICS",
    "RUN_CHECKS",
    "StudyInfo",
    "adaptive_maps",
    "aggregate",
    "columns",
    "embedding_runs",
    "fingerprint",
    "list_studies",
    "listing_stamp",
    "load_objectives",
    "newest_first",
    "pick_validation_images",
    "prior_samples",
    "reconstructions",
    "representation_title",
    "results_row",
    "results_table",
    "study_dir",
    "sweep",
    "table_csv",
    "unreadable_runs",
    "usable_runs",
]

# What a table row holds, in column order (CSV and page); a family's own metrics follow (`columns`).
COLUMNS = (
    "model", "loss_label", "latent_dim", "seed", "probed", "mlp_features", "mlp_acc", "mlp_acc_std", "mlp_ce",
    "mlp_ce_std", "linear_acc", "linear_ce", "knn_acc", "knn_ce", "knn_k", "val_recon", "val_kl", "active_units",
    "alpha_mean", "scale_mean", "train_s", "probe_s", "epochs", "limit_train", "probe_train", "probe_test",
    "probe_features", "state", "family", "loss", "loss_alpha", "dataset", "study", "run_id",
)
# Metrics a chart can show: key -> (title, higher is better).
METRICS = {
    "mlp_acc": ("MLP probe accuracy", True),
    "mlp_ce": ("MLP probe cross-entropy (nats)", False),
    "linear_acc": ("linear probe accuracy", True),
    "linear_ce": ("linear probe cross-entropy (nats)", False),
    "knn_acc": ("k-NN probe accuracy (cosine)", True),
    "knn_ce": ("k-NN probe cross-entropy (nats)", False),
    "val_recon": ("validation reconstruction loss", False),
    "val_kl": ("validation KL (VAE)", False),
    "active_units": ("active latent units (VAE)", True),
    "val_commit": ("validation commitment (VQ-VAE)", False),
    "codes_used": ("codes used in the last epoch (VQ-VAE)", True),
}
STUDIES_DIR = "studies"  # <root>/studies/<name>/: a study's report, table and figures


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
    family_rank = _family_order(config.get("family", "vae"))
    loss = config.get("loss", "")
    rank = _LOSS_ORDER.index(loss) if isinstance(loss, str) and loss in _LOSS_ORDER else len(_LOSS_ORDER)
    return (family_rank, rank, _number(config.get("loss_alpha")) or 0.0, _number(config.get("latent_dim")) or 0.0,
            _number(config.get("seed")) or 0.0)


# ---------------------------------------------------------------------------------------------------
# Damaged runs (what is wrong with one: core.run_check)


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


def listing_stamp(roots: Iterable[str | Path] | None = None) -> tuple:
    """What a cached list of runs depends on: every run folder under the roots with the change times of
    its config, status and embeddings (stat calls only; a cache keyed by it refreshes when a run is
    added, removed, moves on or finishes)."""
    roots = [runs_root(), checkpoints_root()] if roots is None else [Path(r) for r in roots]
    out = []
    for root in roots:
        try:
            children = sorted(Path(root).expanduser().iterdir())
        except OSError:
            continue
        for child in children:
            if child.name.startswith(".") or not child.is_dir():
                continue
            stamps = []
            for name in (Run.CONFIG, Run.STATUS, Run.EMBEDDINGS, Run.PROBES, Run.MODEL):
                try:
                    stamps.append((child / name).stat().st_mtime_ns)
                except OSError:
                    stamps.append(0)
            out.append((str(child), *stamps))
    return tuple(out)


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


# Epoch-record numbers a table row carries besides the validation metrics (val_*): the families' own.
EPOCH_EXTRAS = ("active_units", "alpha_mean", "scale_mean", "codes_used", "perplexity_epoch")


def representation_title(config: dict, key: str) -> str:
    """What a representation of a run's family is called in tables ("μ", "z_e (before quantisation)")."""
    family = family_of(config)
    return next((r.title for r in family.representations if r.key == key), key)


# How probes.json names what the MLP probe was fed (core.probes), as tables write it.
_MLP_FEATURES = {"z = mu + sigma * eps": "z = μ + σε (a sample)", "z": "z"}


def results_row(run: Run) -> dict:
    """One row of the comparison table for a run (None where a number is not there yet)."""
    cfg, status = run.config, run.status()
    family = family_of(cfg)
    last = _last_epoch(run)
    probes = run.probes()
    numbers = summary(probes)
    settings = (probes or {}).get("settings") or {}
    split = (probes or {}).get("split") or {}
    mlp = ((probes or {}).get("probes") or {}).get("mlp") or {}
    probe_s = None
    if probes:
        probe_s = round((_number(probes.get("seconds")) or 0.0) + (_number(probes.get("encode_seconds")) or 0.0), 1)
    features = str(settings.get("features", "z")) if probes else None
    row = {
        "run_id": run.run_id, "study": cfg.get("study"), "dataset": cfg.get("dataset"), "family": family.name,
        "family_title": family.title, "model": family.describe(cfg), "setting": family.describe(cfg, latent=False),
        "loss": cfg.get("loss"),
        "loss_alpha": cfg.get("loss_alpha"), "loss_label": loss_label(cfg), "latent_dim": family.latent_size(cfg),
        "seed": cfg.get("seed"), "epochs": cfg.get("epochs"), "limit_train": cfg.get("limit_train"),
        "state": status.get("state"), **numbers,
        "probe_features": features,
        "probed": representation_title(cfg, features) if features else None,
        "mlp_features": (_MLP_FEATURES.get(str(mlp.get("features"))) if mlp.get("features") != features else
                         representation_title(cfg, features)) if mlp else None,
        "train_s": round(elapsed, 1) if (elapsed := _number(last.get("elapsed_s"))) is not None else None,
        "probe_s": probe_s,
        "probe_train": (split.get("train") or {}).get("n"), "probe_test": (split.get("test") or {}).get("n"),
        "probe_seeds": len(settings.get("seeds") or []) or None,
    }
    # History values are numbers or None, whatever a damaged line held (the table's columns are numeric).
    row.update({k: _number(v) for k, v in last.items() if k.startswith("val_") or k in EPOCH_EXTRAS})
    return row


# Row keys that are not table columns (what the page and the charts use besides).
_NOT_COLUMNS = ("probe_seeds", "family_title", "setting")


def columns(rows: Sequence[dict]) -> list[str]:
    """The table's columns for these rows: COLUMNS, then any family's metrics the rows hold."""
    out = list(COLUMNS)
    for row in rows:
        out += [k for k in row if k not in out and k not in _NOT_COLUMNS]
    return out


def results_table(runs: Iterable[Run]) -> list[dict]:
    """One row per run, in the study's loss order; keys as COLUMNS (plus probe_seeds)."""
    runs = sorted(runs, key=lambda r: _run_order(r.config))
    return [results_row(run) for run in runs]


def table_csv(rows: Sequence[dict], names: Sequence[str] | None = None) -> str:
    """The table as CSV text (floats to 6 significant digits, empty for missing); columns: `columns(rows)`."""
    names = columns(rows) if names is None else names
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(names)
    for row in rows:
        writer.writerow(["" if row.get(c) is None else (f"{row[c]:.6g}" if isinstance(row[c], float) else row[c])
                         for c in names])
    return out.getvalue()


AGGREGATE_BY = ("family", "model", "loss_label", "latent_dim")


def aggregate(rows: Sequence[dict], metric: str = "mlp_acc", by: Sequence[str] = AGGREGATE_BY) -> list[dict]:
    """Fold rows with the same `by` values (by default the same family, model, loss and latent size, i.e.
    the training seeds of one setting: runs of a swept setting, such as the class penalty's λ, stay apart):
    the mean of `metric`, its error and what the error is over.

    Several runs: standard deviation over them (ddof 1). One run: the MLP probe's standard deviation over
    its probe seeds (metric mlp_acc / mlp_ce), else no error. Rows lacking the metric are left out. Each
    item also names the loss, the family's title and the model (its first run's `model`)."""
    groups: dict[tuple, list[dict]] = {}
    for row in rows:
        if _number(row.get(metric)) is not None:
            groups.setdefault(tuple(row.get(k) for k in by), []).append(row)
    out = []
    for key, members in groups.items():
        values = np.array([float(m[metric]) for m in members])
        first = members[0]
        if len(members) > 1:
            error, over = float(values.std(ddof=1)), f"{len(members)} training seeds"
        elif _number(first.get(f"{metric}_std")) is not None and (first.get("probe_seeds") or 0) > 1:
            error, over = float(first[f"{metric}_std"]), f"{first['probe_seeds']} probe seeds"
        else:
            error, over = 0.0, "one run"
        out.append({**dict(zip(by, key, strict=True)), "loss": first.get("loss"), "family": first.get("family"),
                    "family_title": first.get("family_title") or first.get("family"), "model": first.get("model"),
                    "setting": first.get("setting") or first.get("model"),
                    "metric": metric, "mean": float(values.mean()), "error": error, "error_over": over,
                    "n": len(members)})
    return out


def sweep(rows: Sequence[dict], metric: str = "mlp_acc") -> dict[str, dict]:
    """`metric` against latent size, per loss and family: {label: {"loss", "loss_label", "family", "setting",
    "dims", "mean", "error"}} ("setting" None unless a family has several models per loss and size),
    dims ascending; the label is the loss, with the family's title when the rows hold several families and
    the model's setting (its label without what follows from the latent size) when a family has several
    models per loss and size."""
    items = sorted(aggregate(rows, metric), key=lambda r: (_family_order(r["family"]), r["latent_dim"]))
    several = len({r["family"] for r in items}) > 1
    settings = [(r["family"], r["loss_label"], r["latent_dim"]) for r in items]
    models = len(settings) > len(set(settings))  # several models per loss and size: a swept setting
    out: dict[str, dict] = {}
    for item in items:
        label = f"{item['loss_label']} · {item['family_title']}" if several else item["loss_label"]
        label = f"{label} · {item['setting']}" if models else label
        series = out.setdefault(label, {"loss": item["loss"], "loss_label": item["loss_label"],
                                        "family": item["family"], "setting": item["setting"] if models else None,
                                        "dims": [], "mean": [], "error": [], "error_over": set()})
        series["dims"].append(item["latent_dim"])
        series["mean"].append(item["mean"])
        series["error"].append(item["error"])
        series["error_over"].add(item["error_over"])
    for series in out.values():
        series["error_over"] = ", ".join(sorted(series["error_over"]))
    return out


def _family_order(family: Any) -> int:
    names = list(FAMILIES)
    return names.index(family) if family in names else len(names)


# ---------------------------------------------------------------------------------------------------
# What the models draw


def load_objectives(runs: Iterable[Run]) -> dict[Path, torch.nn.Module]:
    """Each run's trained objective, by run path; a run whose weights are missing or do not fit its
    config is left out (one such run must not keep the others' images from being drawn)."""
    out = {}
    for run in runs:
        try:
            out[run.path] = load_objective(run)
        except RunFormatError:
            continue
    return out


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


def _labels(run: Run) -> dict:
    family = family_of(run.config)
    return {"run_id": run.run_id, "family": family.name, "family_title": family.title,
            "model": family.describe(run.config),
            "loss": run.config["loss"], "loss_label": loss_label(run.config),
            "latent_dim": family.latent_size(run.config)}


@torch.no_grad()
def reconstructions(runs: Sequence[Run], n: int = 10, index: np.ndarray | None = None,
                    objectives: dict[Path, torch.nn.Module] | None = None) -> dict:
    """The same validation images under each run: {"index", "labels" (their classes), "originals"
    (n,C,H,W) uint8, or None when neither the runs nor an installed dataset hold them, "runs": [{"run_id",
    "family", "family_title", "loss_label", "model", "images" (n,C,H,W) uint8}]}, decoded by each family
    from the saved embeddings (a VAE's decoder(μ), a VQ-VAE's decoder(z_q)). objectives: from
    `load_objectives(runs)` (loaded here when not given); runs without one, or whose family has no decoder,
    are left out."""
    runs = [r for r in runs if r.has_embeddings]
    if not runs:
        return {"index": np.zeros(0, dtype=np.int64), "labels": np.zeros(0, dtype=np.int64), "originals": None,
                "runs": []}
    objectives = load_objectives(runs) if objectives is None else objectives
    first = runs[0].embeddings()
    index = pick_validation_images(runs[0], n, first) if index is None else np.asarray(index, dtype=np.int64)
    first_rows = rows_at(first["index"], index)
    labels = first["labels"][torch.as_tensor(first_rows)].numpy() if first_rows is not None else None
    out: dict = {"index": index, "labels": labels, "originals": None, "runs": []}
    looked_for_originals = False
    for run in runs:
        emb = first if run is runs[0] else run.embeddings()
        rows = rows_at(emb["index"], index)
        if rows is None:
            continue
        if not looked_for_originals:  # every run embeds the same validation split: the first one's will do
            out["originals"], looked_for_originals = validation_images(run, rows, emb), True
        if run.path not in objectives:
            continue
        images = family_of(run.config).decode(objectives[run.path], emb["z"][torch.as_tensor(rows)])
        if images is not None:
            out["runs"].append({**_labels(run), "images": images.numpy()})
    return out


@torch.no_grad()
def prior_samples(runs: Sequence[Run], n: int = 10, seed: int = 0,
                  objectives: dict[Path, torch.nn.Module] | None = None) -> list[dict]:
    """Samples from each run's prior (the same seeded draw for runs of one latent size: a VAE's
    decoder(z), z ~ N(0, I)); runs whose family has no prior, or no weights, are left out."""
    objectives = load_objectives(runs) if objectives is None else objectives
    out = []
    for run in runs:
        if run.path not in objectives:
            continue
        images = family_of(run.config).sample(objectives[run.path], n, seed)
        if images is not None:
            out.append({**_labels(run), "images": images.numpy()})
    return out


@torch.no_grad()
def adaptive_maps(run: Run, objective: torch.nn.Module | None = None) -> dict | None:
    """The learned α and c per pixel of a run whose reconstruction loss learns them, as (C, H, W) arrays,
    with their ranges and bounds; None for a run whose loss learns nothing."""
    objective = load_objective(run) if objective is None else objective
    maps = family_of(run.config).loss_maps(objective)
    if maps is None:
        return None
    alpha = maps["alpha"].numpy().astype(np.float32)
    scale = maps["scale"].numpy().astype(np.float32)
    loss = objective.loss
    return {"run_id": run.run_id, "alpha": alpha, "scale": scale,
            "alpha_bounds": (float(loss.alpha_lo), float(loss.alpha_hi)),
            "alpha_mean": float(alpha.mean()), "scale_mean": float(scale.mean()),
            "alpha_range": (float(alpha.min()), float(alpha.max())), "scale_range": (float(scale.min()),
                                                                                       float(scale.max()))}
