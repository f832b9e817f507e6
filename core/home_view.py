"""What the Home page shows, free of Streamlit and plotly: the shipped study's headline result, the run
list and the datasets, as plain values.

    headline()  -> Headline | None     from checkpoints/studies/<name>/results.csv (written by core.study):
                                       the per-loss probe accuracy (bars for core.charts.probe_bars, the
                                       Compare page's chart), one sentence saying what it found, and what
                                       it was measured on
    run_rows()  -> rows of the run list, the Home page's columns
    dataset_rows() -> [{"Dataset", "On disk", "Where"}], plus each missing dataset's fix steps

The sentence is computed from the table: the loss whose runs a probe classifies best, its accuracy, and the
MSE baseline's, per model family.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from core.commands import REPO, FixStep, fix_steps
from core.families import FAMILIES
from core.runs import checkpoints_root

STUDIES_DIR = "studies"  # <root>/studies/<name>/ (core.compare.study_dir)

__all__ = ["HOME_RUN_COLUMNS", "Headline", "dataset_rows", "headline", "other_studies", "read_results", "run_rows"]

HOME_RUN_COLUMNS = ("Run", "State", "Dataset", "Model", "Loss", "Epoch", "Where")
# The probe metrics a headline can use, best first: (results.csv column, its spread's column, how it reads).
_METRICS = (("mlp_acc", "mlp_acc_std", "MLP probe accuracy"), ("linear_acc", None, "linear probe accuracy"),
            ("knn_acc", None, "k-NN probe accuracy"))


@dataclass(frozen=True)
class Headline:
    study: str
    dataset: str  # its title ("Fashion-MNIST")
    metric: str  # "MLP probe accuracy"
    latent: int | None  # the latent size the bars are for (the largest the study trained)
    bars: tuple[dict, ...]  # one per family and loss, as core.compare.aggregate's items (core.charts.probe_bars)
    sentence: str  # what it found, in Markdown
    caption: str  # what the numbers were measured on


def _number(text: Any) -> float | None:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return value if math.isfinite(value) else None


def read_results(path: Path) -> list[dict[str, Any]]:
    """results.csv's rows, numbers as floats (None where empty), other cells as text."""
    with open(path, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [{k: (_number(v) if _number(v) is not None else (v or None)) for k, v in row.items()} for row in rows]


def _dataset_title(name: str) -> str:
    from core.datasets import dataset_info

    try:
        return dataset_info(name).title.split(" (")[0]
    except (KeyError, ValueError):
        return name


def _percent(value: float) -> str:
    return f"{100 * value:.1f} %"


def _bar(row: dict, column: str, spread: str | None, probe_seeds: int) -> dict:
    family = str(row.get("family") or "vae")  # results.csv before model families: VAEs
    title = FAMILIES[family].title if family in FAMILIES else family
    error = row.get(spread) if spread and isinstance(row.get(spread), float) and probe_seeds > 1 else None
    return {"family": family, "family_title": title, "loss": row.get("loss"),
            "loss_label": str(row.get("loss_label") or row.get("loss")), "latent_dim": row.get("latent_dim"),
            "model": row.get("model") or title, "metric": column, "mean": float(row[column]),
            "error": error or 0.0, "error_over": f"{probe_seeds} probe seeds" if error is not None else "one run",
            "n": 1}


def _sentence(bars: list[dict], dataset: str, metric: str) -> str:
    parts = []
    for family in dict.fromkeys(b["family_title"] for b in bars):
        mine = sorted((b for b in bars if b["family_title"] == family), key=lambda b: -b["mean"])
        best, worst = mine[0], mine[-1]
        baseline = next((b for b in mine if b["loss"] == "mse"), None)
        if baseline is not None and baseline is not best:
            versus = f", against {_percent(baseline['mean'])} with MSE"
        else:
            versus = f", against {_percent(worst['mean'])} with {worst['loss_label']}" if worst is not best else ""
        parts.append(f"a probe classifies a {family}'s latents best when it was trained with the "
                     f"**{best['loss_label']}** loss: {metric} {_percent(best['mean'])}{versus}")
    if not parts:
        return ""
    return f"On {dataset}, " + "; ".join(parts) + "."


def _probe_seeds(folder: Path) -> int:
    try:
        settings = json.loads((folder / "study.json").read_text(encoding="utf-8")).get("probe_settings") or {}
        return len(settings.get("seeds") or [])
    except (OSError, ValueError, AttributeError):
        return 0


def _losses_compared(results: Path) -> int:
    return len({r.get("loss") for r in read_results(results) if r.get("state") in (None, "finished")})


def headline(root: Path | None = None) -> Headline | None:
    """The headline of the shipped study (under `root`/studies, default checkpoints/) that compares the
    most reconstruction losses (the lab's subject; ties by name), or None when no results.csv holds a
    probe accuracy."""
    folder = (Path(root) if root is not None else checkpoints_root()) / STUDIES_DIR
    studies = sorted(folder.glob("*/results.csv"))
    for results in sorted(studies, key=lambda f: (-_losses_compared(f), f.parent.name)):
        rows = [r for r in read_results(results) if r.get("state") in (None, "finished")]
        found = next(((c, s, m) for c, s, m in _METRICS if any(isinstance(r.get(c), float) for r in rows)), None)
        if found is None:
            continue
        column, spread, metric = found
        measured = [r for r in rows if isinstance(r.get(column), float)]
        dims = sorted({int(r["latent_dim"]) for r in measured if isinstance(r.get("latent_dim"), float)})
        if dims:
            measured = [r for r in measured if r.get("latent_dim") == dims[-1]]
        seeds = _probe_seeds(results.parent)
        bars = [_bar(r, column, spread, seeds) for r in measured]
        dataset = _dataset_title(str(measured[0].get("dataset") or ""))
        first = measured[0]
        settings = [f"latent size {dims[-1]}" if dims else ""]
        if isinstance(first.get("epochs"), float):
            settings.append(f"{int(first['epochs'])} epochs")
        if isinstance(first.get("limit_train"), float):
            settings.append(f"on {int(first['limit_train']):,} training images")
        families = " and ".join(f"{f}s" for f in dict.fromkeys(b["family_title"] for b in bars))
        probe = ("an MLP with one hidden layer, fitted on the latents of training images and scored on the test "
                 f"split; error bars: the spread over {seeds} probe seeds" if column == "mlp_acc" and seeds > 1
                 else f"{metric} on the test split")
        caption = (f"Study `{results.parent.name}`: {families} on {dataset}, {', '.join(s for s in settings if s)}. "
                   f"The probe: {probe}.")
        return Headline(results.parent.name, dataset, metric, dims[-1] if dims else None, tuple(bars),
                        _sentence(bars, dataset, metric), caption)
    return None


def _swept(settings: dict) -> list[str]:
    """What a study's command swept, for people: "4 losses", "Class penalty λ (0, 0.001, 0.01, 0.25, 10)"."""
    fields = {f.name: f for family in settings.get("families") or [] if family in FAMILIES
              for f in FAMILIES[family].fields}
    swept = []
    if len(losses := settings.get("losses") or []) > 1:
        swept.append(f"{len(losses)} losses")
    if len(dims := settings.get("latent_dims") or []) > 1:
        label = fields["latent_dim"].label if "latent_dim" in fields else "latent size"
        swept.append(f"{label} ({', '.join(map(str, dims))})")
    for name, values in (settings.get("with") or {}).items():
        if isinstance(values, list) and len(values) > 1:
            f = fields.get(name)
            words = ", ".join(f.title_of(v) if f else str(v) for v in values)
            swept.append(f"{f.label if f else name} ({words})")
    return swept


def other_studies(headline_study: str | None, root: Path | None = None) -> list[str]:
    """A line for each shipped study besides the headline's: its name, families and dataset, what its
    command swept, and how many of its runs are shipped ("`fmnist`: VICReg on Fashion-MNIST; 4 losses ×
    Variance weight μ (25, 0) × Views (…); 16 runs, 8 of them shipped")."""
    base = Path(root) if root is not None else checkpoints_root()
    lines = []
    for results in sorted((base / STUDIES_DIR).glob("*/results.csv")):
        if results.parent.name == headline_study or not (rows := read_results(results)):
            continue
        try:
            settings = json.loads((results.parent / "study.json").read_text(encoding="utf-8")).get("settings") or {}
        except (OSError, ValueError, AttributeError):
            settings = {}
        families = [FAMILIES[f].title if f in FAMILIES else f
                    for f in dict.fromkeys(str(r.get("family") or "vae") for r in rows)]
        dataset = _dataset_title(str(rows[0].get("dataset") or ""))
        swept = " × ".join(_swept(settings))
        shipped = sum((base / str(r["run_id"])).is_dir() for r in rows if r.get("run_id"))
        kept = f", {shipped} of them shipped" if shipped < len(rows) else ""
        lines.append(f"`{results.parent.name}`: {' and '.join(families)} on {dataset}"
                     f"{'; ' + swept if swept else ''}; {len(rows)} runs{kept}")
    return lines


def run_rows() -> list[dict[str, str]]:
    """Every run, newest first, in the Home page's columns (core.train_view's formatting)."""
    from core.progress import run_table
    from core.runs import list_runs  # by name: a core.progress imported earlier would hide its absence
    from core.train_view import table_rows

    return table_rows(run_table(list_runs()), HOME_RUN_COLUMNS)


def dataset_rows() -> list[dict[str, Any]]:
    """[{"Dataset", "On disk", "Where", "fix": [FixStep]}] for every registered dataset."""
    from core.datasets import dataset_status

    out = []
    for status in dataset_status():
        steps: list[FixStep] = [] if status.get("found") else fix_steps(str(status.get("fix") or ""))
        where = str(status.get("where") or "—")
        with contextlib.suppress(ValueError):  # inside the repository (its .venv, data/): the short path
            where = Path(where).relative_to(REPO).as_posix()
        out.append({"Dataset": str(status.get("title") or status.get("name")), "On disk": bool(status.get("found")),
                    "Where": where, "fix": steps})
    return out
