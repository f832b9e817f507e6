"""What the Compare page shows, as view models built without Streamlit: which runs, which controls, which
sections, each a list of blocks (a chart, a picture, a table, a note) the page draws as it finds them.

    comparison = open_comparison(paths, title="fashion-mnist-reference")      the runs and their table
    controls(comparison) -> [Control]                 probe, latent size, sort: what the sections take
    sections_for(comparison) -> [Section]             the sections these runs can show, in page order
    section.view(comparison, choices) -> SectionView  its title and blocks (figures built by core.charts,
                                                      image grids by core.image_grid)

Sections are chosen by what the runs can show (`Section.applies`): VAE against VQ-VAE needs two families,
the latent-size sweep two latent sizes, prior samples a family with a prior, the learned α and c an
adaptive loss. A family that brings a new view (an ELBO table, neighbour grids, λ curves) adds a Section
with `register_section`; the page draws its blocks without a line of its own. `Section.uses` names the
choices a section depends on, so a page can cache each section's view by exactly those.

The runs come from a study (`core.study`) or from any finished runs a person picks (`pickable_runs`: one
dataset at a time, since probes and images are per dataset). `probe_command` is the shell line that
probes runs that lack probe results.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core import compare
from core.commands import pasteable
from core.runs import Run, RunInfo, list_runs, open_run

__all__ = [
    "COLUMN_TITLES",
    "PROBES",
    "SECTIONS",
    "SORTS",
    "Caption",
    "Chart",
    "Comparison",
    "Control",
    "Markdown",
    "Note",
    "Picture",
    "Section",
    "SectionView",
    "Table",
    "adaptive_figures",
    "controls",
    "grid_label",
    "open_comparison",
    "pickable_runs",
    "probe_bars",
    "probe_command",
    "reconstruction_grid",
    "register_section",
    "run_label",
    "sample_grid",
    "sections_for",
    "sweep_chart",
]

# The probes a table and a chart can show: key -> title.
PROBES = {"mlp": "MLP", "linear": "linear (logistic regression)", "knn": "k-NN (cosine)"}
SORTS = {"mlp_acc": "MLP accuracy, best first", "mlp_ce": "MLP cross-entropy, best first",
         "linear_acc": "linear accuracy, best first", "knn_acc": "k-NN accuracy, best first",
         "": "model and loss (study order)"}
# The table's columns, as the page titles them; columns not named here are shown under their own key.
COLUMN_TITLES = {
    "model": "model", "loss_label": "loss", "latent_dim": "latent size", "seed": "seed", "probed": "probed",
    "mlp_features": "MLP input", "mlp_acc": "MLP acc", "mlp_acc_std": "± acc", "mlp_ce": "MLP CE", "mlp_ce_std": "± CE",
    "linear_acc": "linear acc", "linear_ce": "linear CE", "knn_acc": "k-NN acc", "knn_k": "k-NN k", "knn_ce": "k-NN CE",
    "val_recon": "val recon", "val_kl": "val KL", "active_units": "active units", "val_commit": "val commit",
    "val_codes_used": "codes used (val)", "codes_used": "codes used", "val_perplexity": "code perplexity (val)",
    "perplexity_epoch": "code perplexity", "alpha_mean": "mean α", "scale_mean": "mean c", "train_s": "train s",
    "state": "state", "run_id": "run",
}
# Columns the page leaves out (in the CSV download): settings every run shares, internals, repeats.
_HIDDEN = ("family", "loss", "loss_alpha", "dataset", "study", "probe_features", "probe_train", "probe_test",
           "epochs", "limit_train", "probe_s", "val_loss", "val_codes_used_fraction")
_LAST = ("state", "run_id")  # after the families' own metrics
# Number formats (printf style) by column; the rest as they come.
FORMATS = {**dict.fromkeys(("mlp_acc", "mlp_acc_std", "mlp_ce", "mlp_ce_std", "linear_acc", "linear_ce", "knn_acc",
                             "knn_ce", "val_commit", "alpha_mean"), "%.3f"),
           "val_recon": "%.1f", "val_kl": "%.1f", "scale_mean": "%.4f", "train_s": "%.0f", "val_perplexity": "%.1f",
           "perplexity_epoch": "%.1f"}


# ---------------------------------------------------------------------------------------------------
# Blocks: what a section is made of


@dataclass
class Chart:
    """A plotly figure; `filename` (no extension) names its PNG (the chart's toolbar) and HTML download."""

    figure: Any
    filename: str
    caption: str = ""


@dataclass
class Picture:
    """A PNG (an image grid), shown at its own size and offered for download."""

    png: bytes
    filename: str
    caption: str = ""


@dataclass
class Table:
    """Rows under titled columns, with number formats; `csv` is the whole table (every column) as a file."""

    rows: list[dict]
    columns: list[str]
    titles: dict[str, str]
    formats: dict[str, str]
    csv: str
    filename: str
    caption: str = ""


@dataclass
class Note:
    """A message: kind "info" or "warning"; `command` a shell line to show in a block of its own."""

    kind: str
    text: str
    command: str | None = None


@dataclass
class Caption:
    """A line under a section (under all its blocks when they stand side by side)."""

    text: str


@dataclass
class Markdown:
    """Text in Markdown (a study's own report)."""

    text: str
    caption: str = ""


Block = Chart | Picture | Table | Note | Markdown | Caption


@dataclass
class SectionView:
    """A section as drawn: its title and blocks; `side_by_side` blocks share one row."""

    key: str
    title: str
    blocks: list[Block]
    side_by_side: bool = False


# ---------------------------------------------------------------------------------------------------
# The runs compared


@dataclass
class Comparison:
    """The runs compared (opened, usable) and their table rows, in the study's order."""

    title: str  # the study's name, or what was picked ("4 runs of digits")
    name: str  # a file-name stem for downloads
    runs: list[Run]
    rows: list[dict]
    report_dirs: list[Path] = field(default_factory=list)
    _objectives: dict | None = None

    @property
    def dataset(self) -> str | None:
        return self.rows[0]["dataset"] if self.rows else None

    @property
    def families(self) -> list[str]:
        return list(dict.fromkeys(r["family"] for r in self.rows))

    @property
    def several_families(self) -> bool:
        return len(self.families) > 1

    @property
    def latent_sizes(self) -> list[int]:
        return sorted({r["latent_dim"] for r in self.rows})

    def probed_latent_sizes(self, probe: str) -> list[int]:
        return sorted({r["latent_dim"] for r in self.rows if r.get(f"{probe}_acc") is not None})

    def finished(self, latent: int | None = None) -> list[Run]:
        """The finished runs with embeddings (at one latent size, when given), in table order."""
        by_id = {r["run_id"]: r for r in self.rows}
        return [run for run in self.runs if by_id[run.run_id]["state"] == "finished" and run.has_embeddings
                and (latent is None or by_id[run.run_id]["latent_dim"] == latent)]

    def objectives(self) -> dict:
        """Every finished run's trained objective, loaded once for all the sections that draw images."""
        if self._objectives is None:
            self._objectives = compare.load_objectives(self.finished())
        return self._objectives


def open_comparison(paths: Iterable[str | Path], *, title: str, report_dirs: Sequence[str | Path] = ()) -> Comparison:
    """The comparison of the runs at `paths` (already checked usable: see `compare.usable_runs`)."""
    runs = [open_run(p) for p in paths]
    rows = compare.results_table(runs)
    order = {r["run_id"]: i for i, r in enumerate(rows)}
    runs.sort(key=lambda run: order[run.run_id])
    stem = "".join(c if c.isalnum() or c in "-_." else "-" for c in title).strip("-") or "comparison"
    return Comparison(title, stem, runs, rows, [Path(d) for d in report_dirs])


def pickable_runs(roots: Iterable[str | Path] | None = None
                  ) -> tuple[dict[str, list[RunInfo]], list[tuple[RunInfo, str]]]:
    """Finished runs a person can compare, by dataset (newest first), and the damaged ones with what is
    wrong with each."""
    infos = [info for info in list_runs(roots) if info.error or info.state == "finished"]
    good, damaged = compare.usable_runs(infos, compare.RUN_CHECKS)
    by_dataset: dict[str, list[RunInfo]] = {}
    for info in compare.newest_first(good):
        by_dataset.setdefault(str(info.dataset), []).append(info)
    return by_dataset, damaged


def run_label(info: RunInfo) -> str:
    """A run as a pick list names it: family · loss · latent size · run id."""
    from core.families import family_of
    from core.families.recon import loss_label

    config = info.config or {}
    family = family_of(config)
    return f"{family.title} · {loss_label(config)} · z{family.latent_size(config)} · {info.run_id}"


def probe_command(paths: Iterable[str | Path]) -> str:
    """The shell line that fits the probes of these runs (pasteable into a new shell)."""
    return pasteable("python -m core.probes " + " ".join(shlex.quote(str(p)) for p in paths))


# ---------------------------------------------------------------------------------------------------
# Controls


@dataclass
class Control:
    """A choice the sections take: `key`, its label, the options (values) with their titles, the default."""

    key: str
    label: str
    options: list[Any]
    titles: dict[Any, str]
    default: Any
    help: str = ""

    def title(self, value: Any) -> str:
        return self.titles.get(value, str(value))


def controls(comparison: Comparison) -> list[Control]:
    """The probe, the latent size the charts and images show, and the table's order."""
    rows = comparison.rows
    probes = [p for p in PROBES if any(r.get(f"{p}_acc") is not None for r in rows)] or list(PROBES)
    sizes = comparison.latent_sizes or [0]
    sorts = [k for k in SORTS if not k or any(r.get(k) is not None for r in rows)]
    return [
        Control("probe", "Probe", probes, PROBES, probes[0],
                "Classifiers fitted on the train split's representations, scored on the test split"),
        Control("latent", "Latent size (charts and images)", sizes, {d: f"{d:,}" for d in sizes}, sizes[-1],
                "floats in z: a VAE's latent size, a VQ-VAE's grid² × code size"),
        Control("sort", "Sort the table by", sorts, SORTS, sorts[0] if sorts[0] else ""),
    ]


# ---------------------------------------------------------------------------------------------------
# Figures, shared with the study report (core.report)


def grid_label(row: dict, several_families: bool) -> str:
    """An image grid's row label: the loss, after the family's title when several families are compared."""
    return f"{row['family_title']} · {row['loss_label']}" if several_families else row["loss_label"]


def distinct_model_labels(models: Sequence[str]) -> dict[str, str]:
    """Model labels without the settings that do not tell them apart: among the models of one name only
    the settings that vary are kept, and a name that only one model has stands alone; when all share
    one name, the settings stand without it. "VICReg (small conv, D=64, μ=0)" beside "VICReg (small
    conv, D=64)" reads "μ=0" and "VICReg"; "Class-penalty AE (b=10, λ=10, one-hot targets, uses labels)" beside
    "Autoencoder (b=10, λ=0: unsupervised)" reads "Class-penalty AE (λ=10)" and "Autoencoder"."""
    parsed: dict[str, tuple[str, list[str]]] = {}
    for model in dict.fromkeys(models):
        head, bracket, rest = str(model).partition(" (")
        parsed[model] = (head, [p.strip() for p in rest.removesuffix(")").split(", ")] if bracket else [])
    groups: dict[str, list[list[str]]] = {}
    for head, parts in parsed.values():
        groups.setdefault(head, []).append(parts)
    out = {}
    for model, (head, parts) in parsed.items():
        siblings = groups[head]
        shared = set.intersection(*(set(p) for p in siblings))
        kept = [p for p in parts if p not in shared] if len(siblings) > 1 else []
        if not kept:
            out[model] = head
        else:
            out[model] = ", ".join(kept) if len(groups) == 1 else f"{head} ({', '.join(kept)})"
    return out


def probe_bars(rows: Sequence[dict], metric: str, latent: int) -> Any | None:
    """The metric per loss at one latent size, a bar per family (core.charts.probe_bars); None without data."""
    from core import charts

    bars = [b for b in compare.aggregate(rows, metric) if b["latent_dim"] == latent]
    if not bars:
        return None
    settings = [(b["family"], b["loss_label"]) for b in bars]
    if len(settings) > len(set(settings)):  # several models per loss (a swept setting): a bar each, named
        short = distinct_model_labels([b["model"] for b in bars])
        bars = [{**b, "loss_label": f"{short[b['model']]}<br>{b['loss_label']}"} for b in bars]
    title, _ = compare.METRICS[metric]
    over = sorted({b["error_over"] for b in bars})
    return charts.probe_bars(bars, title, accuracy=metric.endswith("_acc"),
                             subtitle=f"latent size {latent:,} · error bars: {', '.join(over)}")


def sweep_chart(rows: Sequence[dict], metric: str) -> Any | None:
    """The metric against latent size per loss and family; None when no series has two latent sizes."""
    from core import charts

    series = compare.sweep(rows, metric)
    if not any(len(s["dims"]) > 1 for s in series.values()):  # no line: every series is one latent size
        return None
    settings = [s.get("setting") for s in series.values()]
    if len(set(settings)) > 1 and None not in settings:  # a swept setting: name each line by what differs
        short = distinct_model_labels(settings)
        series = {f"{short[s['setting']]} · {s['loss_label']}": s for s in series.values()}
    title, _ = compare.METRICS[metric]
    over = sorted({s["error_over"] for s in series.values()})
    return charts.sweep_lines(series, f"{title} against latent size", ylabel=title.split(" (")[0],
                              subtitle=f"error bars: {', '.join(over)}")


def _labels(rows: Sequence[dict], several_families: bool) -> dict[str, str]:
    """Row labels by run id, made unique with the model's label, then the seed, where two runs would share one."""
    labels = {r["run_id"]: grid_label(r, several_families) for r in rows}
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    labels = {run_id: f"{r['model']} · {labels[run_id]}" if labels[run_id] in repeated and r.get("model") else
              labels[run_id] for run_id, r in ((r["run_id"], r) for r in rows)}
    repeated = {label for label in labels.values() if list(labels.values()).count(label) > 1}
    return {r["run_id"]: f"{labels[r['run_id']]} · seed {r['seed']}" if labels[r["run_id"]] in repeated
            else labels[r["run_id"]] for r in rows}


def reconstruction_grid(comparison: Comparison, latent: int, n: int = 10) -> tuple[bytes, dict] | None:
    """The same validation images (one per class) and what each run at `latent` decodes from their stored
    representation, as a labelled PNG grid; None when no run at that size can decode."""
    from core.image_grid import grid_png
    from core.latent_view import class_names

    runs = comparison.finished(latent)
    rec = compare.reconstructions(runs, n=n, objectives=comparison.objectives()) if runs else {"runs": []}
    if not rec["runs"]:
        return None
    labels = _labels([r for r in comparison.rows if r["latent_dim"] == latent], comparison.several_families)
    names = class_names(runs[0].config, rec["labels"]) if rec.get("labels") is not None else []
    rows = [("original", rec["originals"])] + [(labels[r["run_id"]], r["images"]) for r in rec["runs"]]
    columns = [names[int(c)] for c in rec["labels"]] if names else None
    return grid_png(rows, columns), rec


def sample_grid(comparison: Comparison, latent: int, n: int = 10) -> tuple[bytes, list[dict], list[str]] | None:
    """Samples from each run's prior at `latent` (the same seeded draw), as a labelled PNG grid, the
    samples, and the families that have no prior; None when no run at that size has one."""
    from core.families import FAMILIES
    from core.image_grid import grid_png

    runs = comparison.finished(latent)
    samples = compare.prior_samples(runs, n=n, objectives=comparison.objectives()) if runs else []
    drawn = {s["family"] for s in samples}
    shown = dict.fromkeys(r["family"] for r in comparison.rows if r["latent_dim"] == latent)
    without = [FAMILIES[f].title for f in shown if f not in drawn and f in FAMILIES]
    if not samples:
        return None
    labels = _labels([r for r in comparison.rows if r["latent_dim"] == latent], comparison.several_families)
    return grid_png([(labels[s["run_id"]], s["images"]) for s in samples]), samples, without


def adaptive_figures(comparison: Comparison, latent: int) -> list[tuple[dict, Any]]:
    """(maps, figure) for each finished run at `latent` whose reconstruction loss learned α and c."""
    from core import charts

    objectives = comparison.objectives()
    out = []
    for run in comparison.finished(latent):
        if run.config.get("loss") != "adaptive" or run.path not in objectives:
            continue
        maps = compare.adaptive_maps(run, objectives[run.path])
        if maps is not None:
            out.append((maps, charts.alpha_scale_maps(maps)))
    return out


# ---------------------------------------------------------------------------------------------------
# Sections


@dataclass
class Section:
    """One part of the page: `applies(comparison)` says whether these runs can show it, `build(comparison,
    choices)` makes its blocks; `uses` names the choices (control keys) it reads."""

    key: str
    title: str | Callable[[Comparison], str]
    applies: Callable[[Comparison], bool]
    build: Callable[[Comparison, dict], list[Block]]
    uses: tuple[str, ...] = ()
    side_by_side: bool = False

    def view(self, comparison: Comparison, choices: dict | None = None) -> SectionView:
        title = self.title(comparison) if callable(self.title) else self.title
        return SectionView(self.key, title, self.build(comparison, dict(choices or {})), self.side_by_side)


SECTIONS: list[Section] = []


def register_section(section: Section, *, before: str | None = None) -> Section:
    """Add a section to the page's list (at the end, or before the section keyed `before`)."""
    keys = [s.key for s in SECTIONS]
    SECTIONS.insert(keys.index(before) if before in keys else len(SECTIONS), section)
    return section


def sections_for(comparison: Comparison) -> list[Section]:
    """The sections these runs can show, in page order."""
    return [s for s in SECTIONS if s.applies(comparison)]


def _choice(comparison: Comparison, choices: dict, key: str) -> Any:
    default = {c.key: c.default for c in controls(comparison)}[key]
    return choices.get(key, default)


def _status_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    rows = comparison.rows
    blocks: list[Block] = []
    if not_done := [r for r in rows if r["state"] != "finished"]:
        blocks.append(Note("warning", "Not finished: " + ", ".join(f"{r['run_id']} ({r['state']})" for r in not_done)
                           + ". Run the study command again, or resume them on the Train page, to finish them."))
    paths = {run.run_id: run.path for run in comparison.runs}
    unprobed = [r["run_id"] for r in rows if r["state"] == "finished" and r["mlp_acc"] is None]
    if unprobed:
        blocks.append(Note("info", f"{len(unprobed)} finished run(s) have no probe results yet, so they have no "
                           f"numbers in the charts. Fit the probes in a terminal (about a minute a run on a CPU):",
                           probe_command(paths.get(run_id, run_id) for run_id in unprobed)))
    return blocks


def _table_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    rows = comparison.rows
    sort = _choice(comparison, choices, "sort")
    if sort:
        with_value = [r for r in rows if r.get(sort) is not None]
        rows = sorted(with_value, key=lambda r: r[sort], reverse=sort.endswith("_acc")) + [
            r for r in rows if r.get(sort) is None]
    names = compare.columns(rows)
    shown = [c for c in names if c not in _HIDDEN and any(r.get(c) is not None for r in rows)]
    shown = [c for c in shown if c not in _LAST] + [c for c in _LAST if c in shown]
    if not comparison.several_families:
        shown = [c for c in shown if c != "model" or len({r["model"] for r in rows}) > 1]
    probed = sorted({f"{r['family_title']}: {r['probed']}" for r in rows if r.get("probed")})
    caption = ("Accuracy and cross-entropy (nats) on the test split of probes fitted on the train split's "
               "representations; ± is the MLP probe's standard deviation over its probe seeds. Probed: "
               + ("; ".join(probed) if probed else "nothing yet") + ". Click a column header to sort.")
    return [Table(rows, shown, {c: COLUMN_TITLES.get(c, c) for c in shown}, {c: FORMATS[c] for c in shown
                                                                            if c in FORMATS},
                  compare.table_csv(comparison.rows), f"{comparison.name}-results", caption)]


def _bar_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    probe, latent = _choice(comparison, choices, "probe"), _choice(comparison, choices, "latent")
    blocks: list[Block] = []
    for metric in (f"{probe}_acc", f"{probe}_ce"):
        fig = probe_bars(comparison.rows, metric, latent)
        if fig is None:
            blocks.append(Note("info", f"No {compare.METRICS[metric][0]} at latent size {latent:,} yet."))
            continue
        blocks.append(Chart(fig, f"{comparison.name}-{metric}-z{latent}"))
    models = sorted({r["model"] for r in comparison.rows if r["latent_dim"] == latent})
    if comparison.several_families:
        blocks.append(Caption("Models at this latent size: " + "; ".join(models) + "."))
    return blocks


def _bars_title(comparison: Comparison) -> str:
    if comparison.several_families:
        from core.families import FAMILIES

        return " against ".join(FAMILIES[f].title for f in comparison.families if f in FAMILIES) + " per loss"
    return "Probe accuracy and cross-entropy per loss"


def _sweep_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    probe = _choice(comparison, choices, "probe")
    fig = sweep_chart(comparison.rows, f"{probe}_acc")
    caption = ("Latent size: the floats in the representation probed (a VAE's d; a VQ-VAE's grid² × code size, "
               "which passes at most grid² · log2 K bits).")
    return [Chart(fig, f"{comparison.name}-sweep-{probe}_acc", caption)] if fig is not None else []


def _reconstruction_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    latent = _choice(comparison, choices, "latent")
    made = reconstruction_grid(comparison, latent)
    if made is None:
        return [Note("info", f"No finished run at latent size {latent:,} can decode its representation.")]
    png, rec = made
    top = ("Top row: validation images, one per class. Below: " if rec["originals"] is not None else
           "The runs do not carry their images and the dataset is not installed, so only ")
    return [Picture(png, f"{comparison.name}-reconstructions-z{latent}",
                    f"{top}what each run decodes from the stored representation of those images (latent size "
                    f"{latent:,}).")]


def _sample_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    latent = _choice(comparison, choices, "latent")
    made = sample_grid(comparison, latent)
    blocks: list[Block] = []
    if made is not None:
        png, _, without = made
        caption = "The decoder applied to the same draws z ~ N(0, I) in each run."
        if without:
            caption += f" Not drawn for {', '.join(without)} runs: the family has no prior to sample from."
        blocks.append(Picture(png, f"{comparison.name}-samples-z{latent}", caption))
    return blocks


def _has_prior(comparison: Comparison) -> bool:
    from core.families import FAMILIES, Family

    return any(type(FAMILIES[f]).sample is not Family.sample for f in comparison.families if f in FAMILIES)


def _adaptive_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    latent = _choice(comparison, choices, "latent")
    out: list[Block] = []
    for maps, fig in adaptive_figures(comparison, latent):
        lo, hi = maps["alpha_bounds"]
        out.append(Chart(fig, f"{maps['run_id']}-alpha-scale", (
            f"Per pixel, averaged over colour channels: the shape α (learned within [{lo:g}, {hi:g}], mean "
            f"{maps['alpha_mean']:.3f}) and scale c (mean {maps['scale_mean']:.4g}) of the general distribution "
            f"whose negative log-likelihood the run minimised. Low α: heavy tails, outliers cost little; α = 2: "
            f"a Gaussian.")))
    return out or [Note("info", f"No finished adaptive run at latent size {latent:,}.")]


def _report_blocks(comparison: Comparison, choices: dict) -> list[Block]:
    from core.report import summary_text

    for folder in comparison.report_dirs:
        text = summary_text(Path(folder))
        if text:
            return [Markdown(text, f"From {Path(folder) / 'report.md'}, with its figures in "
                                   f"{Path(folder) / 'figures'}.")]
    return []


for _section in (
    Section("status", "", lambda c: bool(_status_blocks(c, {})), _status_blocks),
    Section("table", "Results per run", lambda c: bool(c.rows), _table_blocks, ("sort",)),
    Section("probe_bars", _bars_title, lambda c: any(r.get("mlp_acc") is not None or r.get("linear_acc")
                                                     is not None for r in c.rows), _bar_blocks,
            ("probe", "latent"), side_by_side=True),
    Section("sweep", "Accuracy against latent size", lambda c: len(c.probed_latent_sizes("mlp")) > 1
            or len(c.probed_latent_sizes("linear")) > 1, _sweep_blocks, ("probe",)),
    Section("reconstructions", "Reconstructions", lambda c: bool(c.finished()), _reconstruction_blocks,
            ("latent",)),
    Section("samples", "Samples from the prior", lambda c: bool(c.finished()) and _has_prior(c), _sample_blocks,
            ("latent",)),
    Section("adaptive", "What the adaptive loss learned", lambda c: any(r["loss"] == "adaptive" and r["state"] ==
                                                                        "finished" for r in c.rows), _adaptive_blocks,
            ("latent",)),
    Section("report", "The study's report", lambda c: bool(c.report_dirs), _report_blocks),
):
    register_section(_section)


# The sections later families bring (the ELBO table, anomalies and neighbours, the λ curves) register
# themselves when imported; importing them here makes every comparison offer them.
from core import family_sections  # noqa: E402, F401
