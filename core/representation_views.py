"""View models of a run's representation, for the pages (no Streamlit here; plotly is imported inside the
figure builders): the nearest/farthest-neighbour grid, the anomaly ROC curve and gallery, Laplacian
eigenmaps of the pixels beside PCA and t-SNE of the representation, and the collapse panel.

Each reads the evaluations `core.analyses` caches with a run (computing them on request), so it works for
any run whose family embeds a representation z: a VICReg encoder's y, a VAE's μ, a VQ-VAE's z_e; the same
view compares a VAE with a VICReg.

    offered(run) -> {"neighbour_grid": bool, "anomaly": bool, "layouts": bool, "collapse": bool}
    grid = neighbour_grid(run, compute=True)        grid_mosaic(grid) -> (H, W, 3) uint8; neighbour_grid_figure(grid)
    view = anomaly_view(run, compute=True)          roc_figure({"VICReg": view, "VAE": other}); gallery_mosaic(view)
    lay = layouts_view(run, compute=True)           layouts_figure(lay, dims=3)
    col = collapse_view(run)                        collapse_figure(col)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

__all__ = ["AnomalyView", "CollapseView", "LayoutsView", "NeighbourGrid", "anomaly_view", "collapse_figure",
           "collapse_view", "gallery_mosaic", "grid_mosaic", "layouts_figure", "layouts_view", "neighbour_grid",
           "neighbour_grid_figure", "offered", "roc_figure", "score_histogram_figure"]


def _evaluation(run: Any, name: str, compute: bool, settings: Any = None) -> tuple[dict, dict] | None:
    """A cached evaluation (fresh for `settings`), computed when asked and missing; None otherwise."""
    from core.analyses import AnalysisSettings, analyse_run, fresh_evaluation

    s = settings or AnalysisSettings()
    hit = fresh_evaluation(run, name, s)
    if hit is None and compute:
        analyse_run(run, s, only=[name])
        hit = fresh_evaluation(run, name, s)
    if hit is None and not compute:
        hit = run.evaluation(name)  # stale but present (e.g. other settings): still worth showing
    return hit


def offered(run: Any) -> dict[str, bool]:
    """Which of these views a run can offer: every finished run with a representation has the grid, the
    anomaly view and the layouts; the collapse panel needs the embedding statistics VICReg logs."""
    finished = run.status().get("state") == "finished" and run.has_embeddings
    epochs = run.history("epoch")
    return {"neighbour_grid": finished, "anomaly": finished, "layouts": finished,
            "collapse": any("embedding_std" in e for e in epochs)}


def _rgb(images: np.ndarray) -> np.ndarray:
    """(..., C, H, W) uint8 -> (..., H, W, 3)."""
    x = np.moveaxis(images, -3, -1)
    return np.repeat(x, 3, axis=-1) if x.shape[-1] == 1 else x


def _tile(rows: list[list[np.ndarray | None]], cell: tuple[int, int], pad: int, gaps: Sequence[int] = ()
          ) -> np.ndarray:
    """Images (H, W, 3) laid out row by row on a white canvas; `gaps` are column indices followed by a wider gap."""
    h, w = cell
    columns = max(len(r) for r in rows)
    extra = [3 * pad if c in gaps else 0 for c in range(columns)]
    width = columns * (w + pad) + pad + sum(extra)
    canvas = np.full((len(rows) * (h + pad) + pad, width, 3), 255, dtype=np.uint8)
    for r, images in enumerate(rows):
        x = pad
        for c, image in enumerate(images):
            if image is not None:
                canvas[pad + r * (h + pad) : pad + r * (h + pad) + h, x : x + w] = image
            x += w + pad + extra[c]
    return canvas


# ---------------------------------------------------------------------------------------------------
# Nearest and farthest neighbours


@dataclass
class NeighbourGrid:
    """One test image per class, its nearest and farthest training images in representation space."""

    classes: list[str]
    query: np.ndarray  # (Q, C, H, W) uint8
    near: np.ndarray  # (Q, k, C, H, W)
    far: np.ndarray  # (Q, m, C, H, W)
    query_labels: list[int]
    near_labels: list[list[int]]
    far_labels: list[list[int]]
    near_distances: list[list[float]]
    far_distances: list[list[float]]
    near_same_class: float  # the fraction of nearest neighbours of the query's class


def neighbour_grid(run: Any, *, compute: bool = False, settings: Any = None) -> NeighbourGrid | None:
    hit = _evaluation(run, "neighbour-grid", compute, settings)
    if hit is None or "query_images" not in hit[1]:
        return None
    r, t = hit
    return NeighbourGrid(list(r["classes"]), t["query_images"].numpy(), t["near_images"].numpy(),
                         t["far_images"].numpy(), r["query_labels"], r["near_labels"], r["far_labels"],
                         r["near_distances"], r["far_distances"], float(r["near_same_class"]))


def grid_mosaic(grid: NeighbourGrid, pad: int = 2) -> np.ndarray:
    """A row per query: the query, its nearest (nearest first), a gap, its farthest (farthest first)."""
    k = grid.near.shape[1]
    rows = [[_rgb(grid.query[i]), *(_rgb(im) for im in grid.near[i]), *(_rgb(im) for im in grid.far[i])]
            for i in range(len(grid.query))]
    return _tile(rows, grid.query.shape[2:], pad, gaps=(0, k))


def neighbour_grid_figure(grid: NeighbourGrid, title: str = "") -> Any:
    """The mosaic as a plotly image, rows labelled by class; hover gives each image's class and distance."""
    import plotly.graph_objects as go

    mosaic = grid_mosaic(grid)
    k, m = grid.near.shape[1], grid.far.shape[1]
    fig = go.Figure(go.Image(z=mosaic, hoverinfo="skip"))
    h = grid.query.shape[2]
    pad = 2
    for i, label in enumerate(grid.query_labels):
        fig.add_annotation(x=0, y=pad + i * (h + pad) + h / 2, xref="x", yref="y", text=grid.classes[label],
                           xanchor="right", showarrow=False)
    fig.update_layout(title=title or f"query | {k} nearest | {m} farthest (same class among the nearest: "
                                     f"{100 * grid.near_same_class:.0f} %)",
                      xaxis={"visible": False}, yaxis={"visible": False}, margin={"l": 90, "r": 10, "t": 40, "b": 10})
    return fig


# ---------------------------------------------------------------------------------------------------
# Anomaly detection


@dataclass
class AnomalyView:
    auc: float | None
    pairing: str
    k: int
    fpr: np.ndarray
    tpr: np.ndarray
    gallery: np.ndarray  # (g, C, H, W) uint8, most anomalous first
    gallery_scores: np.ndarray
    gallery_is_out: np.ndarray  # (g,) bool: from the out-of-distribution set
    class_auc: list[float | None]
    class_auc_mean: float | None
    classes: list[str] = field(default_factory=list)
    histogram_edges: np.ndarray | None = None
    histogram_in: np.ndarray | None = None
    histogram_out: np.ndarray | None = None
    why: str = ""  # why there is no cross-dataset AUC, when there is none


def anomaly_view(run: Any, *, compute: bool = False, settings: Any = None) -> AnomalyView | None:
    hit = _evaluation(run, "anomaly", compute, settings)
    if hit is None:
        return None
    r, t = hit

    def arr(key: str) -> np.ndarray:
        return t[key].numpy() if key in t else np.zeros(0)

    from core.datasets import DATASETS

    info = DATASETS.get(run.config.get("dataset") or "")
    return AnomalyView(r.get("auc"), r.get("pairing") or r.get("why", ""), int(r.get("k", 2)), arr("fpr"), arr("tpr"),
                       arr("gallery"), arr("gallery_scores"), arr("gallery_is_out").astype(bool),
                       list(r.get("class_auc") or []), r.get("class_auc_mean"), list(info.classes) if info else [],
                       t["histogram_edges"].numpy() if "histogram_edges" in t else None,
                       t["histogram_in"].numpy() if "histogram_in" in t else None,
                       t["histogram_out"].numpy() if "histogram_out" in t else None, r.get("why", ""))


def roc_figure(views: Mapping[str, AnomalyView]) -> Any:
    """ROC curves of several runs on one chart (the chance diagonal dashed), AUC in each legend entry."""
    import plotly.graph_objects as go

    fig = go.Figure()
    fig.add_trace(go.Scatter(x=[0, 1], y=[0, 1], mode="lines", line={"dash": "dash", "color": "grey"},
                             name="chance", hoverinfo="skip"))
    for label, view in views.items():
        if view.auc is None or not len(view.fpr):
            continue
        fig.add_trace(go.Scatter(x=view.fpr, y=view.tpr, mode="lines", name=f"{label} (AUC {view.auc:.3f})"))
    pairing = next((v.pairing for v in views.values() if v.auc is not None), "")
    fig.update_layout(title=f"ROC: {pairing}" if pairing else "ROC", xaxis_title="false positive rate",
                      yaxis_title="true positive rate", xaxis_range=[0, 1], yaxis_range=[0, 1.02])
    return fig


def gallery_mosaic(view: AnomalyView, columns: int = 8, pad: int = 2) -> np.ndarray | None:
    """The most anomalous images, row-major, most anomalous first; None when there are none."""
    if not len(view.gallery):
        return None
    images = [_rgb(im) for im in view.gallery]
    rows = [images[i : i + columns] for i in range(0, len(images), columns)]
    return _tile(rows, view.gallery.shape[2:], pad)


def score_histogram_figure(view: AnomalyView) -> Any | None:
    """Histograms of the anomaly score, in-distribution against out-of-distribution test images."""
    if view.histogram_edges is None:
        return None
    import plotly.graph_objects as go

    centres = (view.histogram_edges[:-1] + view.histogram_edges[1:]) / 2
    fig = go.Figure([go.Bar(x=centres, y=view.histogram_in, name="in distribution", opacity=0.7),
                     go.Bar(x=centres, y=view.histogram_out, name="out of distribution", opacity=0.7)])
    fig.update_layout(barmode="overlay", title=f"score: mean distance to the {view.k} nearest training "
                      "representations", xaxis_title="score", yaxis_title="images")
    return fig


# ---------------------------------------------------------------------------------------------------
# Eigenmaps of the pixels beside PCA and t-SNE of the representation


@dataclass
class LayoutsView:
    """Layouts of the same validation rows: Laplacian eigenmaps of their pixels, PCA and t-SNE of their
    representation (`layouts` maps a title to (n, dims) coords; t-SNE is absent until computed)."""

    labels: np.ndarray
    classes: list[str]
    layouts: dict[str, np.ndarray]
    agreement: dict[str, float]


def layouts_view(run: Any, *, compute: bool = False, settings: Any = None) -> LayoutsView | None:
    from core.datasets import DATASETS
    from core.projections import run_projection

    hit = _evaluation(run, "eigenmaps", compute, settings)
    if hit is None:
        return None
    r, t = hit
    coords = t["coords"].numpy()
    # The rows are the first n validation embeddings; a shipped run may keep fewer: the common prefix is drawn.
    n, dims = min(len(coords), len(run.embeddings()["z"])), coords.shape[1]
    layouts = {"Laplacian eigenmaps (pixels)": coords[:n]}
    for method, title in (("pca", "PCA (representation)"), ("tsne", "t-SNE (representation)")):
        lay = run_projection(run, method, dims, 0, compute_missing=compute or method == "pca")
        if lay is not None:
            layouts[title] = lay.coords[:n]
    info = DATASETS.get(run.config.get("dataset") or "")
    return LayoutsView(t["labels"].numpy()[:n], list(info.classes) if info else [], layouts,
                       dict(r.get("knn_label_agreement") or {}))


def layouts_figure(view: LayoutsView, dims: int = 3) -> Any:
    """The layouts side by side, coloured by class (3-D scatter, or the first two axes when dims is 2)."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    titles = list(view.layouts)
    spec = {"type": "scene"} if dims == 3 else {"type": "xy"}
    fig = make_subplots(rows=1, cols=len(titles), specs=[[spec] * len(titles)], subplot_titles=titles)
    names = [view.classes[int(v)] if 0 <= int(v) < len(view.classes) else str(int(v)) for v in view.labels]
    for col, title in enumerate(titles, start=1):
        xyz = view.layouts[title]
        common = {"mode": "markers", "text": names, "hoverinfo": "text", "showlegend": False,
                  "marker": {"size": 2 if dims == 3 else 4, "color": view.labels, "colorscale": "Turbo"}}
        if dims == 3:
            fig.add_trace(go.Scatter3d(x=xyz[:, 0], y=xyz[:, 1], z=xyz[:, 2], **common), row=1, col=col)
        else:
            fig.add_trace(go.Scattergl(x=xyz[:, 0], y=xyz[:, 1], **common), row=1, col=col)
    if dims == 3:
        fig.update_scenes(dragmode="turntable")
    return fig


# ---------------------------------------------------------------------------------------------------
# Collapse


@dataclass
class CollapseView:
    """Per epoch: the embeddings' std (mean, smallest), effective ranks, the three validation terms, the
    covariance's noise floor, and the family's warnings (epoch, text)."""

    epochs: list[int]
    series: dict[str, list[float | None]]
    warnings: list[tuple[int, str]]
    width: int | None


COLLAPSE_SERIES = ("embedding_std", "embedding_std_min", "embedding_rank", "representation_rank", "val_invariance",
                   "val_variance", "val_covariance", "noise_floor_covariance", "std", "covariance")


def collapse_view(run: Any) -> CollapseView | None:
    """The collapse panel's data from history.jsonl (None for a run that logs no embedding statistics),
    with `Family.health` re-read at every epoch so the warnings show when they began."""
    from core.families import family_of

    epochs = [e for e in run.history("epoch") if "embedding_std" in e]
    if not epochs:
        return None
    family = family_of(run.config)
    series = {key: [_finite_or_none(e.get(key)) for e in epochs] for key in COLLAPSE_SERIES}
    warnings = [(int(e["epoch"]), w) for e in epochs if (w := family.health(e, run.config))]
    width = None
    projector = run.config.get("projector")
    if isinstance(projector, str):
        from core.families.vicreg import parse_widths

        width = parse_widths(projector)[-1]
    return CollapseView([int(e["epoch"]) for e in epochs], series, warnings, width)


def _finite_or_none(value: Any) -> float | None:
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


def collapse_figure(view: CollapseView) -> Any:
    """Two panels: the std (mean and smallest) and effective ranks; the covariance term against its noise
    floor (log scale). Epochs with a warning are marked."""
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    fig = make_subplots(rows=1, cols=2, subplot_titles=("embedding std and effective rank",
                                                        "covariance term (validation) and its noise floor"),
                        specs=[[{"secondary_y": True}, {}]])
    s = view.series
    fig.add_trace(go.Scatter(x=view.epochs, y=s["embedding_std"], name="std (mean over dims)"), row=1, col=1)
    fig.add_trace(go.Scatter(x=view.epochs, y=s["embedding_std_min"], name="std (smallest)"), row=1, col=1)
    fig.add_trace(go.Scatter(x=view.epochs, y=s["embedding_rank"], name="effective rank z", line={"dash": "dot"}),
                  row=1, col=1, secondary_y=True)
    fig.add_trace(go.Scatter(x=view.epochs, y=s["representation_rank"], name="effective rank y",
                             line={"dash": "dot"}), row=1, col=1, secondary_y=True)
    fig.add_trace(go.Scatter(x=view.epochs, y=s["val_covariance"], name="covariance"), row=1, col=2)
    fig.add_trace(go.Scatter(x=view.epochs, y=s["noise_floor_covariance"], name="noise floor 2D/(N−1)",
                             line={"dash": "dash"}), row=1, col=2)
    for epoch, _ in view.warnings:
        fig.add_vline(x=epoch, line={"color": "red", "width": 1, "dash": "dot"})
    fig.update_yaxes(type="log", row=1, col=2)
    fig.update_xaxes(title_text="epoch")
    return fig
