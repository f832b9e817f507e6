"""The comparison of runs behind the Compare page and the study report, free of Streamlit and plotly.

Data: `list_studies()` groups runs by their config's "study"; `results_table(runs)` gives one row per run
(model, loss, latent size, seed, probe accuracy and cross-entropy, validation numbers, timings);
`aggregate(rows, metric)` folds seeds into mean ± standard deviation; `sweep(rows, metric)` the metric
against latent size per model and loss. What the models draw, each through its family: `reconstructions`
(the same validation images decoded under each run), `prior_samples` (each run's prior, where it has
one), `adaptive_maps` (the learned per-pixel α and c); `load_objectives(runs)` loads the trained models
once for those.

Damaged runs: one bad run must not take a page down. `list_studies(checks=...)` records each study's
damaged runs in `StudyInfo.problems` (what is wrong: `core.run_check.run_problem`); `usable_runs` splits
any list of runs into the usable ones and the damaged ones with their problems; `unreadable_runs` lists
the run folders whose config cannot be read (they name no study); `embedding_runs` gives the Embeddings
page its runs. `newest_first(infos)` orders runs for a default choice with runs dated in the future (a
wrong clock, a crafted config) after every other.

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

from core.families import family_of, load_objective
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
    "bar_chart_svg",
    "colourise",
    "columns",
    "embedding_runs",
    "fingerprint",
    "heatmap_png",
    "image_grid_png",
    "line_chart_svg",
    "list_studies",
    "load_objectives",
    "loss_colour",
    "newest_first",
    "pick_validation_images",
    "prior_samples",
    "reconstructions",
    "results_row",
    "results_table",
    "study_dir",
    "sweep",
    "table_csv",
    "unreadable_runs",
    "usable_runs",
]

# What a table row holds, in column order (CSV and page).
COLUMNS = (
    "model", "loss_label", "latent_dim", "seed", "mlp_acc", "mlp_acc_std", "mlp_ce", "mlp_ce_std", "linear_acc",
    "linear_ce", "knn_acc", "knn_ce", "knn_k", "val_recon", "val_kl", "active_units", "alpha_mean",
    "scale_mean", "train_s", "probe_s", "epochs", "limit_train", "probe_train", "probe_test", "probe_features",
    "state", "family", "loss", "loss_alpha", "dataset", "study", "run_id",
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
# One colour per loss, the same in every chart (colour-blind-safe Tableau 10).
_COLOURS = {
    "mse": "#4e79a7", "cauchy": "#59a14f", "geman_mcclure": "#e15759", "welsch": "#b07aa1",
    "smooth_l1": "#f28e2b", "general": "#edc948", "adaptive": "#76b7b2", "charbonnier": "#ff9da7",
    "l1": "#9c755f", "students_t": "#bab0ac",
}
STUDIES_DIR = "studies"  # <root>/studies/<name>/: a study's report, table and figures


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
    from core.families import FAMILIES

    families = list(FAMILIES)
    family = config.get("family", "vae")
    family_rank = families.index(family) if isinstance(family, str) and family in families else len(families)
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


def results_row(run: Run) -> dict:
    """One row of the comparison table for a run (None where a number is not there yet)."""
    cfg, status = run.config, run.status()
    family = family_of(cfg)
    last = _last_epoch(run)
    probes = run.probes()
    numbers = summary(probes)
    settings = (probes or {}).get("settings") or {}
    split = (probes or {}).get("split") or {}
    probe_s = None
    if probes:
        probe_s = round((_number(probes.get("seconds")) or 0.0) + (_number(probes.get("encode_seconds")) or 0.0), 1)
    row = {
        "run_id": run.run_id, "study": cfg.get("study"), "dataset": cfg.get("dataset"), "family": family.name,
        "model": family.describe(cfg), "loss": cfg.get("loss"), "loss_alpha": cfg.get("loss_alpha"),
        "loss_label": loss_label(cfg), "latent_dim": family.latent_size(cfg), "seed": cfg.get("seed"),
        "epochs": cfg.get("epochs"), "limit_train": cfg.get("limit_train"), "state": status.get("state"),
        **numbers,
        "probe_features": settings.get("features", "z") if probes else None,
        "train_s": round(elapsed, 1) if (elapsed := _number(last.get("elapsed_s"))) is not None else None,
        "probe_s": probe_s,
        "probe_train": (split.get("train") or {}).get("n"), "probe_test": (split.get("test") or {}).get("n"),
        "probe_seeds": len(settings.get("seeds") or []) or None,
    }
    # History values are numbers or None, whatever a damaged line held (the table's columns are numeric).
    row.update({k: _number(v) for k, v in last.items() if k.startswith("val_") or k in EPOCH_EXTRAS})
    return row


def columns(rows: Sequence[dict]) -> list[str]:
    """The table's columns for these rows: COLUMNS, then any family's metrics the rows hold."""
    out = list(COLUMNS)
    for row in rows:
        out += [k for k in row if k not in out and k != "probe_seeds"]
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
    return {"run_id": run.run_id, "family": family.name, "model": family.describe(run.config),
            "loss": run.config["loss"], "loss_label": loss_label(run.config),
            "latent_dim": family.latent_size(run.config)}


@torch.no_grad()
def reconstructions(runs: Sequence[Run], n: int = 10, index: np.ndarray | None = None,
                    objectives: dict[Path, torch.nn.Module] | None = None) -> dict:
    """The same validation images under each run: {"index", "originals" (n,C,H,W) uint8, or None when
    neither the runs nor an installed dataset hold them, "runs": [{"run_id", "loss_label", "model",
    "images" (n,C,H,W) uint8}]}, decoded by each family from the saved embeddings (a VAE's decoder(μ), a
    VQ-VAE's decoder(z_q)). objectives: from `load_objectives(runs)` (loaded here when not given); runs
    without one, or whose family has no decoder, are left out."""
    runs = [r for r in runs if r.has_embeddings]
    if not runs:
        return {"index": np.zeros(0, dtype=np.int64), "originals": None, "runs": []}
    objectives = load_objectives(runs) if objectives is None else objectives
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
