"""A study's report: study.json, results.csv, report.md and figures/, written from its runs.

    write_study(study, runs, folder, meta) -> study.json's content
    write_figures(runs, rows, folder) -> [Figure]       the figures alone (what write_study links to)
    summary_text(folder) -> report.md before its figures (what the Compare page shows)
    machine() -> where it ran (CPU, cores, torch and its threads, the GPU if any)

Figures are the Compare page's own (core.compare_view): image grids (reconstructions, prior samples) as
PNG, embedded in report.md; charts (probe accuracy and cross-entropy per loss, the latent-size sweep, the
adaptive loss's α and c) as plotly HTML (plotly.js from its CDN, so each file is a few KB and no copy of
plotly.js is kept in a study folder) with the figure's plotly JSON beside it (`plotly.io.read_json` opens it
offline), linked from report.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
from dataclasses import dataclass
from pathlib import Path

from core import compare
from core.runs import write_bytes_atomic, write_json_atomic

__all__ = ["FIGURES_HEADING", "Figure", "machine", "summary_text", "write_figures", "write_study"]


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


def _recon(value) -> str:
    """A validation reconstruction loss: a sum over pixels (tens, hundreds) to 0.1, a mean per pixel
    (hundredths) to 3 significant digits."""
    if isinstance(value, float) and abs(value) < 1:
        return f"{value:.3g}"
    return _fmt(value, 1)


# The families' own columns, in the table when a row holds them: key -> (title, digits).
_FAMILY_COLUMNS = {"val_kl": ("val KL", 1), "active_units": ("active units", 3), "val_commit": ("val commit", 3),
                   "val_codes_used": ("codes used", 3)}


def _markdown_table(rows: list[dict]) -> str:
    """The results as a Markdown table: the model (when several), loss, latent size, seed, the probes, the
    validation reconstruction, the families' own metrics that the rows hold, and the training time."""
    several = len({r.get("model") for r in rows}) > 1
    extra = [k for k in _FAMILY_COLUMNS if any(r.get(k) is not None for r in rows)]
    head = (["model"] if several else []) + ["loss", "latent", "seed", "MLP acc", "MLP CE", "linear acc",
                                             "linear CE", "k-NN acc (k)", "k-NN CE", "val recon"]
    head += [_FAMILY_COLUMNS[k][0] for k in extra] + ["train s"]
    lines = ["| " + " | ".join(head) + " |", "| " + " | ".join(["---"] * len(head)) + " |"]
    for r in rows:
        mlp = f"{_fmt(r['mlp_acc'])} ± {_fmt(r['mlp_acc_std'])}" if r["mlp_acc"] is not None else "–"
        mlp_ce = f"{_fmt(r['mlp_ce'])} ± {_fmt(r['mlp_ce_std'])}" if r["mlp_ce"] is not None else "–"
        knn = f"{_fmt(r['knn_acc'])} ({r['knn_k']})" if r["knn_acc"] is not None else "–"
        cells = ([r["model"]] if several else []) + [
            r["loss_label"], str(r["latent_dim"]), str(r["seed"]), mlp, mlp_ce, _fmt(r["linear_acc"]),
            _fmt(r["linear_ce"]), knn, _fmt(r["knn_ce"]), _recon(r.get("val_recon"))]
        for key in extra:
            value = r.get(key)
            digits = _FAMILY_COLUMNS[key][1]
            cells.append(_fmt(int(value) if isinstance(value, float) and value.is_integer() and digits == 3
                              else value, digits))
        cells.append(_fmt(r["train_s"], 0))
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


@dataclass
class Figure:
    """A figure of the report: its file (a PNG image, or a chart's HTML with its plotly JSON beside it)."""

    file: str
    caption: str
    kind: str  # "image" or "chart"

    @property
    def json(self) -> str:
        return self.file.rsplit(".", 1)[0] + ".json"

    def markdown(self) -> list[str]:
        if self.kind == "image":
            return [f"![{self.caption}](figures/{self.file})", "", f"*{self.caption}*", ""]
        return [f"- [{self.caption}](figures/{self.file}) (interactive chart; the figure as plotly JSON: "
                f"[{self.json}](figures/{self.json}))", ""]


def write_figures(runs: list, rows: list[dict], folder: Path, study: str = "study") -> list[Figure]:
    """Write the study's figures into `folder`: charts (probe accuracy and cross-entropy per loss at the
    largest latent size, the latent-size sweep, the adaptive loss's α and c) as HTML and plotly JSON, the
    same figures the Compare page draws; image grids (reconstructions, prior samples) as PNG."""
    from core import charts
    from core import compare_view as cv

    folder.mkdir(parents=True, exist_ok=True)
    written: list[Figure] = []

    def chart(stem: str, fig, caption: str) -> None:
        write_bytes_atomic(folder / f"{stem}.html", charts.report_html(fig).encode("utf-8"))
        write_bytes_atomic(folder / f"{stem}.json", charts.figure_json(fig).encode("utf-8"))
        written.append(Figure(f"{stem}.html", caption, "chart"))

    def image(name: str, png: bytes, caption: str) -> None:
        write_bytes_atomic(folder / name, png)
        written.append(Figure(name, caption, "image"))

    comparison = cv.Comparison(study, study, list(runs), list(rows))
    dims = comparison.latent_sizes
    if not dims:
        return written
    latent = dims[-1]
    for metric, stem in (("mlp_acc", "accuracy"), ("mlp_ce", "cross_entropy")):
        fig = cv.probe_bars(rows, metric, latent)
        if fig is not None:
            over = sorted({b["error_over"] for b in compare.aggregate(rows, metric) if b["latent_dim"] == latent})
            chart(stem, fig, f"{compare.METRICS[metric][0]} by loss (latent {latent}); error bars: {', '.join(over)}")
    fig = cv.sweep_chart(rows, "mlp_acc")
    if fig is not None:
        chart("sweep", fig, "MLP probe accuracy against latent size, per loss" + (" and family" if
                                                                                   comparison.several_families
                                                                                   else ""))
    made = cv.reconstruction_grid(comparison, latent)
    if made is not None:
        image("reconstructions.png", made[0], "the same validation images (one per class) and what each run "
                                              "decodes from their stored representation")
    sampled = cv.sample_grid(comparison, latent)
    if sampled is not None:
        image("samples.png", sampled[0], "the decoder applied to the same z ~ N(0, I) in each run with a prior")
    for maps, fig in cv.adaptive_figures(comparison, latent)[:1]:
        chart("adaptive", fig, f"the adaptive loss's learned α (mean {maps['alpha_mean']:.3f}) and c (mean "
                               f"{maps['scale_mean']:.4f}) per pixel")
    return written


def _families_text(settings: dict, rows: list[dict]) -> str:
    """Which models were trained: each family with its summary and the models' labels."""
    from core.families import FAMILIES

    names = settings.get("families") or sorted({r.get("family") or "vae" for r in rows}) or ["vae"]
    names = [names] if isinstance(names, str) else list(names)
    parts = []
    for name in names:
        family = FAMILIES.get(name)
        if family is None:
            continue
        models = sorted({r["model"] for r in rows if r.get("family") == name and r.get("model") != family.title})
        text = f"**{family.title}**: {family.summary}"
        if any(f.name == "beta" for f in family.fields):
            text += f" KL weight β = {settings.get('beta') or 1}."
        if models:
            text += f" Models: {'; '.join(models)}."
        parts.append(text)
    return "\n".join(f"- {p}" for p in parts)


def _probe_text(probe: dict, rows: list[dict]) -> str:
    """How the probes were fitted, naming what each family's probes were fed."""
    fed: dict[str, tuple[str, str]] = {}  # family title -> (what the MLP was fed, what the others were)
    for r in rows:
        if r.get("probed"):
            mlp = "z = μ + σ·ε" if str(r.get("mlp_features") or "").startswith("z = ") else r["probed"]
            fed.setdefault(r.get("family_title") or str(r.get("family")), (mlp, r["probed"]))

    def on(i: int) -> str:
        if not fed:
            return "the representation"
        if len(fed) == 1:
            return next(iter(fed.values()))[i]
        return "each model's representation (" + "; ".join(f"{f}: {v[i]}" for f, v in fed.items()) + ")"

    return (f"Probes (core.probes) are fitted on the representations of the first {probe.get('probe_train') or 'all'}"
            f" images of the **train** split and scored on {probe.get('probe_test') or 'all'} images of the **test** "
            f"split (never the same images). MLP: one hidden layer of {', '.join(map(str, probe.get('hidden', [])))} "
            f"on {on(0)}, mean ± std over {len(probe.get('seeds', []))} probe seeds; linear: logistic regression on "
            f"{on(1)}; k-NN: cosine on {on(1)}, best of k ∈ {{{', '.join(map(str, probe.get('ks', [])))}}}. "
            f"Cross-entropy in nats.")


FIGURES_HEADING = "## Figures"


def summary_text(folder: Path) -> str:
    """A study report's text before its figures (what the Compare page shows), or "" when there is none."""
    try:
        text = (Path(folder) / "report.md").read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return ""
    for marker in (f"\n{FIGURES_HEADING}\n", "\n!["):
        if marker in text:
            return text.split(marker, 1)[0].rstrip() + "\n"
    return text


def write_study(study: str, runs: list, folder: Path, meta: dict, *, figures: bool = True) -> dict:
    """Write study.json, results.csv, figures/ and report.md for `runs` into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = compare.results_table(runs)
    write_bytes_atomic(folder / "results.csv", compare.table_csv(rows).encode("utf-8"))
    written = write_figures(runs, rows, folder / "figures", study) if figures else []
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
               "probe_seconds": round(probe_s, 1), "figures": [f.file for f in written]}
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
        f"Trained on **{settings.get('dataset')}** with each reconstruction loss, latent size(s) "
        f"{', '.join(map(str, settings.get('latent_dims', [])))} (floats in the representation z), "
        f"{settings.get('epochs')} epochs on {settings.get('limit_train') or 'all'} training images, seed(s) "
        f"{', '.join(map(str, settings.get('seeds', [])))}; general loss at α = {settings.get('loss_alpha')}.",
        "",
        _families_text(settings, rows),
        "",
        _probe_text(probe, rows),
        "",
        _markdown_table(rows),
        "",
    ]
    if written:
        lines += [FIGURES_HEADING, ""]
        for figure in written:
            lines += figure.markdown()
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
