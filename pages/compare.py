"""Compare: the runs of a study side by side. Seed 000's table (loss, probe accuracy, cross-entropy),
bar charts with the error over seeds, reconstructions of the same validation images, prior samples, the
adaptive loss's learned α and c, and the latent-size sweep. The numbers and images come from
core.compare (probes from core.probes, computed by `python -m core.study`); this page lays out and draws.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from core import compare
from pages.chrome import page_header

STUDY_KEY = "compare_study"
PROBE_KEY = "compare_probe"
DIM_KEY = "compare_latent_dim"
SORT_KEY = "compare_sort"
# What the page showed on its last run (study, rows, charts): read by tests.
VIEW_KEY = "compare_view"

PROBES = {"MLP (z = μ + σε)": "mlp", "linear (μ)": "linear", "k-NN (cosine, μ)": "knn"}
TABLE_COLUMNS = {
    "loss_label": "loss", "latent_dim": "latent", "seed": "seed", "mlp_acc": "MLP acc", "mlp_acc_std": "± (seeds)",
    "mlp_ce": "MLP CE", "linear_acc": "linear acc", "linear_ce": "linear CE", "knn_acc": "k-NN acc",
    "knn_k": "k", "knn_ce": "k-NN CE", "val_recon": "val recon", "val_kl": "val KL", "active_units": "active units",
    "alpha_mean": "mean α", "scale_mean": "mean c", "train_s": "train s", "state": "state",
}
SORTS = {"MLP accuracy": ("mlp_acc", False), "MLP cross-entropy": ("mlp_ce", True),
         "linear accuracy": ("linear_acc", False), "k-NN accuracy": ("knn_acc", False),
         "loss (study order)": (None, True)}
CHART_HEIGHT = 340

page_header(
    "Compare",
    ":material/compare_arrows:",
    "How the reconstruction loss shapes what a VAE learns: probes trained on each run's latents (fitted on the "
    "train split, scored on the test split), reconstructions, prior samples and learned α and c, side by side.",
)


# The caches below take compare.fingerprint(paths) as `stamp`, so they refresh when a run moves on. It must
# not be named with a leading underscore: Streamlit leaves such arguments out of the cache key.


@st.cache_data(max_entries=16, show_spinner=False)
def _table(paths: tuple[str, ...], stamp: tuple) -> list[dict]:
    from core.runs import open_run

    return compare.results_table(open_run(p) for p in paths)


@st.cache_data(max_entries=16, show_spinner="Decoding reconstructions and prior samples…")
def _images(paths: tuple[str, ...], stamp: tuple) -> dict[str, Any]:
    from core.runs import open_run

    runs = [open_run(p) for p in paths]
    models = compare.load_models(runs)  # once, for both the reconstructions and the samples
    rec = compare.reconstructions(runs, n=10, models=models)
    samples = compare.prior_samples(runs, n=10, models=models)
    out: dict[str, Any] = {"reconstructions": None, "samples": None}
    if rec["runs"]:
        grid = [("original", rec["originals"])] + [(r["loss_label"], r["images"]) for r in rec["runs"]]
        out["reconstructions"] = {"png": compare.image_grid_png(grid), "labels": [r["loss_label"] for r in rec["runs"]],
                                  "index": rec["index"].tolist(), "originals": rec["originals"] is not None}
    if samples:
        out["samples"] = {"png": compare.image_grid_png([(s["loss_label"], s["images"]) for s in samples]),
                          "labels": [s["loss_label"] for s in samples]}
    return out


@st.cache_data(max_entries=16, show_spinner=False)
def _adaptive(path: str, stamp: tuple) -> dict | None:
    from core.runs import open_run

    maps = compare.adaptive_maps(open_run(path))
    if maps is None:
        return None
    lo, hi = maps["alpha_bounds"]
    maps["png"] = compare.heatmap_png([(f"learned alpha (bounds {lo:g} to {hi:g})", maps["alpha"].mean(axis=0),
                                        *maps["alpha_range"]),
                                       ("learned scale c", maps["scale"].mean(axis=0), *maps["scale_range"])])
    return maps


def _empty_state() -> None:
    st.info(
        "No studies found yet. A study trains a VAE per loss and probes each; start one from a shell:\n\n"
        "```bash\npython -m core.study --dataset digits --losses mse,cauchy,welsch --latent-dims 8 --epochs 5\n```\n\n"
        "Its runs appear here (and on the Embeddings page) when it is done. The shipped reference study lives in "
        "`checkpoints/`.",
        icon=":material/info:",
    )
    st.session_state[VIEW_KEY] = {"study": None, "rows": []}


def _bar_chart(bars: list[dict], title: str, *, accuracy: bool) -> go.Figure:
    fig = go.Figure(go.Bar(
        x=[b["loss_label"] for b in bars], y=[b["mean"] for b in bars],
        error_y={"type": "data", "array": [b["error"] for b in bars], "visible": True},
        marker_color=[compare.loss_colour(b["loss"]) for b in bars],
        text=[f"{b['mean']:.3f}" for b in bars], textposition="outside",
        hovertemplate="%{x}: %{y:.4f} ± %{error_y.array:.3f}<extra></extra>",
    ))
    fig.update_layout(title=title, height=CHART_HEIGHT, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      yaxis={"range": [0, 1.05] if accuracy else None, "title": title.split(" (")[0]})
    return fig


def _sweep_chart(series: dict[str, dict], title: str) -> go.Figure:
    fig = go.Figure()
    for label, s in series.items():
        fig.add_trace(go.Scatter(x=s["dims"], y=s["mean"], name=label, mode="lines+markers",
                                 error_y={"type": "data", "array": s["error"], "visible": True},
                                 line={"color": compare.loss_colour(s["loss"])}))
    fig.update_layout(title=title, height=CHART_HEIGHT, margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      xaxis={"type": "log", "title": "latent size", "tickvals": sorted({d for s in series.values()
                                                                                        for d in s["dims"]})})
    return fig


def _study_label(study: compare.StudyInfo) -> str:
    where = "shipped" if study.shipped else "your runs"
    damaged = f", {len(study.problems)} damaged" if study.problems else ""
    return f"{study.name} ({len(study.finished)}/{len(study.runs)} runs finished{damaged}, {where})"


def _damaged(items: list[tuple[str, str]], what: str) -> None:
    """Name each damaged run and what is wrong with it (the page shows the others)."""
    lines = "\n".join(f"- `{run_id}`: {problem}" for run_id, problem in items)
    st.warning(f"{what}:\n\n{lines}", icon=":material/report:")


unreadable = [(info.run_id, info.error or "") for info in compare.unreadable_runs()]
if unreadable:
    _damaged(unreadable, f"{len(unreadable)} run folder(s) could not be read and are left out")
studies = compare.list_studies(checks=compare.RUN_CHECKS)
if not studies:
    _empty_state()
    if unreadable:
        st.session_state[VIEW_KEY]["unreadable"] = dict(unreadable)
    st.stop()

by_name = {s.name: s for s in studies}
if st.session_state.get(STUDY_KEY) not in by_name:
    st.session_state[STUDY_KEY] = studies[0].name
name = st.selectbox("Study", list(by_name), key=STUDY_KEY, format_func=lambda n: _study_label(by_name[n]))
study = by_name[name]
damaged = {info.run_id: study.problems[info.path] for info in study.runs if info.path in study.problems}
if damaged:
    _damaged(list(damaged.items()), f"{len(damaged)} damaged run(s) of {name} skipped")
paths = tuple(str(info.path) for info in study.usable)
stamp = compare.fingerprint(paths)
rows = _table(paths, stamp)
if not rows:
    st.info(f"No run of {name} can be shown.", icon=":material/info:")
    st.session_state[VIEW_KEY] = {"study": name, "rows": [], "damaged": damaged, "unreadable": dict(unreadable)}
    st.stop()
finished = [r for r in rows if r["state"] == "finished"]
unprobed = [r for r in finished if r["mlp_acc"] is None]
dims = sorted({r["latent_dim"] for r in rows})
dataset = rows[0]["dataset"] if rows else "?"

st.caption(f"Dataset **{dataset}** · {len(rows)} runs · latent size(s) {', '.join(map(str, dims))}"
           + (f" · reports in `{study.report_dirs[0]}`" if study.report_dirs else ""))
if not_done := [r for r in rows if r["state"] != "finished"]:
    st.warning("Not finished: " + ", ".join(f"{r['run_id']} ({r['state']})" for r in not_done)
               + ". Run the study command again to continue them.", icon=":material/hourglass_top:")
if unprobed:
    cmd = "python -m core.probes " + " ".join(str(info.path) for info in study.usable
                                               if info.run_id in {r["run_id"] for r in unprobed})
    st.info(f"{len(unprobed)} finished run(s) have no probe results yet; compute them with\n\n```bash\n{cmd}\n```",
            icon=":material/info:")

# -- the table -------------------------------------------------------------------------------------
st.subheader("Probe accuracy and cross-entropy per loss")
controls = st.columns([2, 2, 3])
probe_label = controls[0].radio("Probe", list(PROBES), key=PROBE_KEY, horizontal=False)
probe = PROBES[probe_label]
if st.session_state.get(DIM_KEY) not in dims:
    st.session_state[DIM_KEY] = dims[-1]
latent = controls[1].selectbox("Latent size (charts)", dims, key=DIM_KEY)
sort_label = controls[2].selectbox("Sort table by", list(SORTS), key=SORT_KEY)
sort_key, ascending = SORTS[sort_label]

frame = pd.DataFrame(rows, columns=list(TABLE_COLUMNS))
if sort_key is not None:
    frame = frame.sort_values(sort_key, ascending=ascending, na_position="last", kind="stable")
shown = frame.rename(columns=TABLE_COLUMNS)
st.dataframe(
    shown, hide_index=True, width="stretch",
    column_config={label: st.column_config.NumberColumn(label, format="%.3f") for key, label in TABLE_COLUMNS.items()
                   if key.endswith(("_acc", "_ce", "_std", "alpha_mean"))}
    | {"mean c": st.column_config.NumberColumn("mean c", format="%.4f"),
       "val recon": st.column_config.NumberColumn("val recon", format="%.1f"),
       "val KL": st.column_config.NumberColumn("val KL", format="%.1f")},
)
st.caption("Accuracy and cross-entropy (nats) on the test split of probes fitted on the train split's latents. "
           "MLP: seed 000's classifier on reparametrised samples, ± its standard deviation over probe seeds. "
           "Click a column header to sort.")
csv_text = compare.table_csv(rows)
st.download_button("Download the table (CSV)", csv_text, file_name=f"{name}-results.csv", mime="text/csv",
                   key="compare_download_csv", icon=":material/download:")

# -- bar charts ------------------------------------------------------------------------------------
view: dict[str, Any] = {"study": name, "rows": rows, "probe": probe, "latent_dim": latent,
                        "order": [rows[i]["run_id"] for i in frame.index], "damaged": damaged,
                        "unreadable": dict(unreadable)}
charts: dict[str, list[dict]] = {}
chart_cols = st.columns(2)
for col, (metric, accuracy) in zip(chart_cols, ((f"{probe}_acc", True), (f"{probe}_ce", False)), strict=True):
    bars = [b for b in compare.aggregate(rows, metric) if b["latent_dim"] == latent]
    charts[metric] = bars
    title = compare.METRICS[metric][0]
    with col:
        if not bars:
            st.caption(f"No {title} yet.")
            continue
        st.plotly_chart(_bar_chart(bars, title, accuracy=accuracy), key=f"compare_bar_{metric}")
        st.caption(f"Error bars: {bars[0]['error_over']}.")
        svg = compare.bar_chart_svg([b["loss_label"] for b in bars], [b["mean"] for b in bars],
                                    [b["error"] for b in bars], [compare.loss_colour(b["loss"]) for b in bars],
                                    title=f"{title}, latent {latent}", ylabel=title.split(" (")[0],
                                    ymax=1.0 if accuracy else None)
        st.download_button("Download chart (SVG)", svg, file_name=f"{name}-{metric}-z{latent}.svg",
                           mime="image/svg+xml", key=f"compare_download_{metric}", icon=":material/download:")
view["charts"] = charts

# -- latent-size sweep -----------------------------------------------------------------------------
if len(dims) > 1:
    st.subheader("Latent-size sweep")
    metric = f"{probe}_acc"
    series = compare.sweep(rows, metric)
    st.plotly_chart(_sweep_chart(series, f"{compare.METRICS[metric][0]} against latent size"),
                    key="compare_sweep")
    st.download_button("Download sweep (SVG)", compare.line_chart_svg(
        series, title=f"{compare.METRICS[metric][0]} against latent size", xlabel="latent size",
        ylabel="accuracy"), file_name=f"{name}-sweep-{metric}.svg", mime="image/svg+xml",
        key="compare_download_sweep", icon=":material/download:")
    view["sweep"] = series

# -- what the models draw --------------------------------------------------------------------------
shown_paths = tuple(str(info.path) for info in study.usable if info.state == "finished" and info.latent_dim == latent)
images = _images(shown_paths, compare.fingerprint(shown_paths)) if shown_paths else {}
rec_col, sample_col = st.columns(2)
with rec_col:
    st.subheader("Reconstructions")
    if images.get("reconstructions"):
        top = ("Top row: validation images, one per class. Below: " if images["reconstructions"]["originals"]
               else "The runs do not carry their images and the dataset is not installed. ")
        st.image(images["reconstructions"]["png"], output_format="PNG",
                 caption=f"{top}decoder(μ) under each loss (latent {latent}).")
        st.download_button("Download reconstructions (PNG)", images["reconstructions"]["png"],
                           file_name=f"{name}-reconstructions-z{latent}.png", mime="image/png",
                           key="compare_download_recon", icon=":material/download:")
    else:
        st.caption("No finished runs with embeddings at this latent size.")
with sample_col:
    st.subheader("Samples from the prior")
    if images.get("samples"):
        st.image(images["samples"]["png"], output_format="PNG",
                 caption="decoder(z) for the same z ~ N(0, I) under each loss.")
        st.download_button("Download samples (PNG)", images["samples"]["png"],
                           file_name=f"{name}-samples-z{latent}.png", mime="image/png",
                           key="compare_download_samples", icon=":material/download:")
    else:
        st.caption("No finished runs at this latent size.")
view["reconstructions"] = (images.get("reconstructions") or {}).get("labels", [])
view["samples"] = (images.get("samples") or {}).get("labels", [])

# -- the adaptive loss's α and c -------------------------------------------------------------------
adaptive_runs = [info for info in study.usable if info.loss == "adaptive" and info.state == "finished"
                 and info.latent_dim == latent]
view["adaptive"] = []
if adaptive_runs:
    st.subheader("What the adaptive loss learned")
    st.caption("Per pixel: the shape α and scale c of the general distribution whose negative log-likelihood "
               "the adaptive run minimised (averaged over colour channels; each map coloured over its own range). "
               "Low α: heavy tails, outliers cost little; α = 2: a Gaussian.")
    for info in adaptive_runs:
        maps = _adaptive(str(info.path), compare.fingerprint([str(info.path)]))
        if maps is None:
            continue
        view["adaptive"].append({"run_id": info.run_id, "alpha_mean": maps["alpha_mean"],
                                 "scale_mean": maps["scale_mean"]})
        lo, hi = maps["alpha_bounds"]
        st.markdown(f"`{info.run_id}`: α learned within [{lo:g}, {hi:g}]")
        a_col, c_col = st.columns(2)
        for col, key, title, zmin, zmax in ((a_col, "alpha", f"learned α (mean {maps['alpha_mean']:.3f})",
                                             *maps["alpha_range"]),
                                            (c_col, "scale", f"learned c (mean {maps['scale_mean']:.4f})",
                                             *maps["scale_range"])):
            fig = go.Figure(go.Heatmap(z=maps[key].mean(axis=0), zmin=zmin, zmax=zmax, colorscale="Viridis"))
            fig.update_layout(title=title, height=CHART_HEIGHT,
                              margin={"l": 10, "r": 10, "t": 40, "b": 10},
                              yaxis={"autorange": "reversed", "scaleanchor": "x"})
            col.plotly_chart(fig, key=f"compare_adaptive_{key}_{info.run_id}")
        st.download_button("Download α and c maps (PNG)", maps["png"], file_name=f"{info.run_id}-alpha-scale.png",
                           mime="image/png", key=f"compare_download_adaptive_{info.run_id}",
                           icon=":material/download:")

# -- the study's own report ------------------------------------------------------------------------
if study.report_dirs:
    report = Path(study.report_dirs[0]) / "report.md"
    if report.is_file():
        with st.expander("The study's report (report.md)"):
            st.markdown(report.read_text(encoding="utf-8").split("![")[0])
            st.caption(f"With its figures in `{report.parent / 'figures'}`.")

st.session_state[VIEW_KEY] = view
