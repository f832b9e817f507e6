"""What the Embeddings page shows, built without Streamlit: cached layouts, the shared camera, the picked
point, the figures and their captions.

    cache = RunCache()                                   embeddings, layouts and models, read once
    cache.layout(path, stamp, spec, compute=False)       a Projection from memory, the run's cache or (on
                                                         request) computed; misses are not remembered
    spec = LayoutSpec(method, options, seed, source)     what a layout is; `uses_seed(method, source)`
    camera(azimuth, elevation, distance)                 plotly's scene camera for those angles
    camera_view(coords, azimuth, elevation)              the same view as a 2-D picture: (x, y) and depth
    picker = PointPicker()                               the picked point and how clicks, searches and
                                                         "next with this label" change it
    scene_figure(...), plane_figure(...), view_figure(...)   the 3-D scene, the 2-D picker, a grid view

Display options (scale, hidden outliers, marker size, camera) are applied to a layout held in memory, so
changing them reads no file and computes no layout (tests count the reads). WebGL: a browser keeps about 16
live WebGL contexts a page and each 3-D chart takes one, renewed whenever its figure changes; so the page
draws at most two 3-D scenes (a study's grid is drawn as 2-D views through the shared camera, in SVG, as is
the point picker) and lets the browser release the contexts of charts it has replaced (`core.charts.
WEBGL_RELEASE_JS`).
"""

from __future__ import annotations

import json
import math
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from core import projections as pj

__all__ = [
    "AUTO_METHODS",
    "METHOD_TITLES",
    "NEIGHBOURS",
    "OPTION_WIDGETS",
    "SCALE_TITLES",
    "LayoutSpec",
    "PointPicker",
    "PointView",
    "RunCache",
    "camera",
    "camera_view",
    "layout_caption",
    "option_widgets",
    "picked_index",
    "plane_figure",
    "point_view",
    "reference_traces",
    "run_title",
    "same_dataset",
    "scene_figure",
    "source_title",
    "sources_of",
    "uses_seed",
    "view_figure",
    "visible_count",
]

METHOD_TITLES = {"pca": "PCA", "mds": "Metric MDS", "tsne": "t-SNE"}
SCALE_TITLES = {"none": "as computed", "ball": "fit the unit ball", "sphere": "onto the unit sphere"}
AUTO_METHODS = ("pca", "mds")  # computed on sight; t-SNE waits for a click unless cached
# The widgets for each method's options: (method, option) -> (label, widget, its choices or (lo, hi, step)).
# Defaults are core.projections.METHOD_OPTIONS'.
OPTION_WIDGETS: dict[tuple[str, str], tuple[str, str, tuple]] = {
    ("mds", "start"): ("Start", "select", ("classical", "landmark", "random")),
    ("mds", "max_iter"): ("SMACOF iterations", "slider", (0, 300, 10)),
    ("mds", "landmarks"): ("Landmarks", "select_slider", (250, 500, 1000, 2000, 4000)),
    ("tsne", "perplexity"): ("Perplexity", "slider", (5.0, 100.0, 1.0)),
    ("tsne", "n_iter"): ("Iterations", "slider", (250, 2000, 50)),
    ("tsne", "negatives"): ("Far-field sample", "select_slider", (16, 32, 64, 128, 256, 512, 1024)),
}
NEIGHBOURS = 8


def option_widgets(method: str) -> list[tuple[str, tuple[str, str, tuple]]]:
    """The option widgets of `method`, in order: (option, (label, widget, choices or (lo, hi, step)))."""
    return [(name, widget) for (m, name), widget in OPTION_WIDGETS.items() if m == method]


# ---------------------------------------------------------------------------------------------------
# What a layout is, and the runs' layouts held in memory


@dataclass(frozen=True)
class LayoutSpec:
    """A layout: the method, its options (as sorted JSON, so the spec is hashable), seed and source."""

    method: str
    options_json: str = "{}"
    seed: int = 0
    source: str = "z"
    measure: bool = True

    @classmethod
    def of(cls, method: str, options: dict | None = None, seed: int = 0, source: str = "z",
           measure: bool = True) -> LayoutSpec:
        opts = pj.method_options(method, options)
        return cls(method, json.dumps(opts, sort_keys=True), int(seed) if uses_seed(method, source) else 0, source,
                   measure)

    @property
    def options(self) -> dict[str, Any]:
        return json.loads(self.options_json)


def uses_seed(method: str, source: str) -> bool:
    """Whether a layout depends on its seed: PCA of a stored representation does not (only a sampled
    z = μ + σε does); metric MDS (its landmarks) and t-SNE do."""
    return method != "pca" or source == pj.SAMPLE


class _Loaded:
    """A run whose embeddings are already in memory (what core.projections.run_projection reads)."""

    def __init__(self, run: Any, embeddings: dict) -> None:
        self._run, self._embeddings = run, embeddings

    def embeddings(self) -> dict:
        return self._embeddings

    def __getattr__(self, name: str) -> Any:
        return getattr(self._run, name)


class RunCache:
    """Embeddings, layouts and trained models of runs, each read once and kept (least recently used
    first out). Keys hold a run's path and `stamp` (core.compare.fingerprint of it), so a run that moves
    on is read again. A layout that is neither in memory nor in the run's cache is only computed when
    asked (`compute=True`), and a miss is not remembered."""

    def __init__(self, embeddings: int = 16, layouts: int = 64, models: int = 4) -> None:
        self._limits = {"embeddings": embeddings, "layouts": layouts, "models": models}
        self._store: dict[str, OrderedDict] = {k: OrderedDict() for k in self._limits}

    def _get(self, kind: str, key: tuple) -> Any:
        store = self._store[kind]
        if key in store:
            store.move_to_end(key)
            return store[key]
        return None

    def _put(self, kind: str, key: tuple, value: Any) -> Any:
        store = self._store[kind]
        store[key] = value
        while len(store) > self._limits[kind]:
            store.popitem(last=False)
        return value

    def embeddings(self, path: str | Path, stamp: tuple) -> dict:
        from core.runs import open_run

        key = (str(path), stamp)
        hit = self._get("embeddings", key)
        return hit if hit is not None else self._put("embeddings", key, open_run(path).embeddings())

    def layout(self, path: str | Path, stamp: tuple, spec: LayoutSpec, *, compute: bool = False,
               progress: Callable[[float, str], None] | None = None) -> pj.Projection | None:
        from core.runs import open_run

        key = (str(path), stamp, spec)
        hit = self._get("layouts", key)
        if hit is not None:
            return hit
        run = _Loaded(open_run(path), self.embeddings(path, stamp))
        proj = pj.run_projection(run, spec.method, 3, spec.seed, source=spec.source, measure=spec.measure,
                                 progress=progress, compute_missing=compute, **spec.options)
        return self._put("layouts", key, proj) if proj is not None else None

    def objective(self, path: str | Path, stamp: tuple) -> Any:
        from core.families import load_objective
        from core.runs import open_run

        key = (str(path), stamp)
        hit = self._get("models", key)
        return hit if hit is not None else self._put("models", key, load_objective(open_run(path)))


def sources_of(embeddings: Sequence[dict]) -> list[str]:
    """The sources every one of these runs can be projected from (core.projections.sources), in order."""
    lists = [pj.sources(emb) for emb in embeddings]
    return [s for s in lists[0] if all(s in other for other in lists[1:])] if lists else ["z"]


def source_title(configs: Sequence[dict], source: str) -> str:
    """A source as the page names it, from the runs' families: "μ", "z_e (before quantisation)", a sample."""
    from core.compare import representation_title

    if source == pj.SAMPLE:
        return "z = μ + σε (one sample)"
    titles = list(dict.fromkeys(representation_title(c, source) for c in configs)) or [source]
    if len(titles) == 1:
        return titles[0]
    return "the representation z (" + ", ".join(titles) + ")"


# ---------------------------------------------------------------------------------------------------
# The camera


def camera(azimuth: float, elevation: float, distance: float) -> dict[str, Any]:
    """plotly's scene camera looking at the centre from (azimuth, elevation) in degrees, `distance` away:
    eye = d·(cos el cos az, cos el sin az, sin el), z up."""
    az, el = math.radians(azimuth), math.radians(elevation)
    return {"eye": {"x": distance * math.cos(el) * math.cos(az), "y": distance * math.cos(el) * math.sin(az),
                    "z": distance * math.sin(el)}, "up": {"x": 0, "y": 0, "z": 1}}


def camera_view(coords: np.ndarray, azimuth: float, elevation: float) -> tuple[np.ndarray, np.ndarray]:
    """What that camera sees, orthographically: (n, 2) screen coordinates and (n,) depth (larger: farther).

    forward f = −eye/‖eye‖, right r = f × ẑ / ‖f × ẑ‖, up u = r × f; a point p (centred) is at (p·r, p·u),
    at depth p·f. NaN rows (hidden points) stay NaN."""
    eye = camera(azimuth, elevation, 1.0)["eye"]
    forward = -np.array([eye["x"], eye["y"], eye["z"]])
    right = np.cross(forward, [0.0, 0.0, 1.0])
    norm = np.linalg.norm(right)
    right = right / norm if norm > 1e-9 else np.array([0.0, 1.0, 0.0])  # looking straight down or up
    up = np.cross(right, forward)
    visible = np.isfinite(coords).all(1)
    centred = coords - (coords[visible].mean(0) if visible.any() else 0.0)
    return np.stack([centred @ right, centred @ up], axis=1), centred @ forward


# ---------------------------------------------------------------------------------------------------
# The picked point


def picked_index(event: Any) -> int | None:
    """The validation index a 2-D chart's selection names: its first point's customdata (None if none)."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or []:
        data = point.get("customdata") if isinstance(point, dict) else None
        if isinstance(data, list):
            data = data[0] if data else None
        if isinstance(data, (int, float)) and math.isfinite(data):
            return round(float(data))
    return None


@dataclass
class PointPicker:
    """The picked point (a validation index: every run of a dataset embeds the same split) and how it
    changes. A chart's selection stays in the chart after it was used, so a click counts once: it
    selects its point when it differs from the last click, and an emptied selection forgets the last
    click (a later click on the same point is new)."""

    selected: int | None = None
    last_click: int | None = None

    def click(self, value: int | None, index: np.ndarray) -> bool:
        """A selection event's point (`picked_index`); True when it changed the selection."""
        if value is None:
            self.last_click = None
            return False
        if value == self.last_click or not np.isin(value, index):
            return False
        self.last_click = self.selected = int(value)
        return True

    def show_index(self, value: int, index: np.ndarray) -> str | None:
        """Select a typed validation index; the reason when it cannot be (the selection stays)."""
        if not np.isin(int(value), index):
            return f"index {int(value)} is not among this run's {len(index):,} validation points"
        self.selected = int(value)
        return None

    def next_with_label(self, label: int, index: np.ndarray, labels: np.ndarray) -> None:
        """The next point with `label` after the selected one in index order, wrapping to the first."""
        mine = np.sort(np.asarray(index)[np.asarray(labels) == int(label)])
        if not len(mine):
            return
        after = mine[mine > self.selected] if self.selected is not None else mine
        self.selected = int(after[0] if len(after) else mine[0])

    def clear(self) -> None:
        self.selected = None

    def row_in(self, index: np.ndarray) -> int | None:
        """The selected point's row in a run's embeddings (None when nothing is picked or it lacks it)."""
        if self.selected is None:
            return None
        rows = np.flatnonzero(np.asarray(index) == self.selected)
        return int(rows[0]) if len(rows) else None


# ---------------------------------------------------------------------------------------------------
# Figures (plain dicts into plotly, without its per-property validation: the tests validate them)


def _class_traces(coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: Sequence[str], axes: str,
                  kind: str, marker: float, opacity: np.ndarray | None = None) -> list[dict]:
    """One trace per class (the legend toggles a class); hidden (NaN) points left out. customdata is each
    point's validation index: the hover shows it and a 2-D selection hands it back."""
    from core.charts import class_colours

    colours = class_colours(len(names))
    visible = np.isfinite(coords).all(1)
    traces = []
    for cls in np.unique(labels):
        rows = np.flatnonzero((labels == cls) & visible)
        if opacity is not None:  # far (faint) points first, so near ones are drawn over them
            rows = rows[np.argsort(opacity[rows], kind="stable")]
        name = names[int(cls)]
        trace = {"type": kind, "mode": "markers", "name": name, "legendgroup": name,
                 "marker": {"size": marker, "color": colours[int(cls)],
                            "opacity": opacity[rows] if opacity is not None else 0.8},
                 "customdata": index[rows].astype(np.int32),
                 "hovertemplate": f"index %{{customdata}}<br>label {name}<extra></extra>"}
        for axis, column in zip(axes, range(coords.shape[1]), strict=False):
            trace[axis] = coords[rows, column].astype(np.float32)
        traces.append(trace)
    return traces


def _marks(coords: np.ndarray, selected: int | None, neighbours: np.ndarray | None, axes: str, kind: str,
           marker: float) -> list[dict]:
    """The picked point (a diamond) and its latent neighbours (open circles), drawn over the classes."""
    out = []
    for name, rows, symbol, size in (("latent neighbours", neighbours, "circle-open", marker + 6),
                                     ("selected", None if selected is None else np.array([selected]), "diamond",
                                      marker + 8)):
        if rows is None or not len(rows):
            continue
        rows = rows[np.isfinite(coords[rows]).all(1)]
        trace = {"type": kind, "mode": "markers", "name": name, "showlegend": True, "hoverinfo": "skip",
                 "marker": {"size": size, "color": "#111827", "symbol": symbol,
                            "line": {"width": 1.5, "color": "#111827"}}}
        for axis, column in zip(axes, range(coords.shape[1]), strict=False):
            trace[axis] = coords[rows, column].astype(np.float32)
        out.append(trace)
    return out


def _figure(data: list[dict], layout: dict) -> Any:
    import plotly.graph_objects as go

    # no template: the page's theme styles the chart, and plotly's default adds 7 KB to every figure
    return go.Figure(data=data, layout={"template": {}, **layout}, _validate=False)


def reference_traces(config: dict, points: np.ndarray, coords: np.ndarray, names: Sequence[str]) -> list[dict]:
    """The family's reference points (the class-penalised autoencoder's class targets) placed in a linear
    layout: the least-squares linear map from the points (n, d) to their layout (n, 3), exact for PCA,
    applied to the targets; [] for a family without reference points."""
    from core.families import family_of

    family = family_of(config)
    if not hasattr(family, "reference_points"):
        return []
    targets = family.reference_points(config).numpy().astype(np.float64)
    ok = np.isfinite(coords).all(axis=1)
    if ok.sum() < points.shape[1] + 2 or targets.shape[1] != points.shape[1]:
        return []
    x = np.c_[points[ok].astype(np.float64), np.ones(ok.sum())]
    mapping, *_ = np.linalg.lstsq(x, coords[ok].astype(np.float64), rcond=None)
    placed = np.c_[targets, np.ones(len(targets))] @ mapping
    text = [names[i] if i < len(names) else str(i) for i in range(len(targets))]
    return [{"type": "scatter3d", "mode": "markers+text", "name": "class targets", "x": placed[:, 0],
             "y": placed[:, 1], "z": placed[:, 2], "text": text, "textfont": {"size": 10},
             "marker": {"symbol": "diamond", "size": 7, "color": "black"}, "hoverinfo": "text"}]


def scene_figure(title: str, coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: Sequence[str], *,
                 selected: int | None = None, neighbours: np.ndarray | None = None, marker: float = 2,
                 view: dict | None = None, legend_below: bool = False, height: int = 520,
                 extra: Sequence[dict] = ()) -> Any:
    """The 3-D scene of a layout: a trace per class, the picked point and its neighbours marked, `extra`
    traces (reference points) on top; `view` (from `camera`) sets the camera, else the person's own drags
    keep it."""
    data = _class_traces(coords, labels, index, names, "xyz", "scatter3d", marker)
    data += _marks(coords, selected, neighbours, "xyz", "scatter3d", marker)
    data += list(extra)
    axis = {"showticklabels": False, "title": {"text": ""}}
    scene: dict[str, Any] = {"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "data",
                             "dragmode": "turntable"}
    if view is not None:
        scene["camera"] = view
    legend = {"itemsizing": "constant", "font": {"size": 11}}
    if legend_below:  # in a narrow column a legend on the right takes a third of the chart
        legend |= {"orientation": "h", "y": 0, "yanchor": "top", "x": 0}
    return _figure(data, {"title": {"text": title, "font": {"size": 13}, "x": 0, "xanchor": "left"}, "scene": scene,
                          "height": height, "margin": {"l": 0, "r": 0, "t": 36, "b": 0}, "legend": legend,
                          "uirevision": "keep"})


def plane_figure(coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: Sequence[str], *,
                 selected: int | None = None, neighbours: np.ndarray | None = None, marker: float = 5,
                 height: int = 420, opacity: np.ndarray | None = None, title: str = "",
                 legend: bool = True) -> Any:
    """A 2-D picture of a layout (two of its axes, or a camera view), drawn in SVG (no WebGL context):
    the point picker and the grid's views. Equal axis scales; no tick labels (the axes of a projection
    mean nothing on their own)."""
    data = _class_traces(coords, labels, index, names, "xy", "scatter", marker, opacity)
    data += _marks(coords, selected, neighbours, "xy", "scatter", marker)
    axis = {"showticklabels": False, "zeroline": False, "showgrid": False, "title": {"text": ""}}
    layout: dict[str, Any] = {
        "height": height, "xaxis": axis, "yaxis": {**axis, "scaleanchor": "x"}, "showlegend": legend,
        # the toolbar sits above the plot, clear of the legend beside it
        "margin": {"l": 4, "r": 4, "t": 40 if title else 28, "b": 4}, "hovermode": "closest",
        "legend": {"itemsizing": "constant", "x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top",
                   "font": {"size": 11}},
    }
    if title:
        layout["title"] = {"text": title, "font": {"size": 12}, "x": 0, "xanchor": "left", "y": 0.98,
                           "yanchor": "top"}
    return _figure(data, layout)


def view_figure(title: str, coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: Sequence[str], *,
                azimuth: float, elevation: float, selected: int | None = None,
                neighbours: np.ndarray | None = None, marker: float = 2, legend: bool = False,
                height: int = 300) -> Any:
    """A grid's view of a 3-D layout through the shared camera (orthographic, `camera_view`), as a 2-D SVG
    chart: near points opaque and drawn last, far ones faint."""
    flat, depth = camera_view(coords, azimuth, elevation)
    visible = np.isfinite(depth)
    lo, hi = (float(depth[visible].min()), float(depth[visible].max())) if visible.any() else (0.0, 1.0)
    near = 1 - (np.nan_to_num(depth, nan=hi) - lo) / ((hi - lo) or 1.0)
    return plane_figure(flat, labels, index, names, selected=selected, neighbours=neighbours, marker=marker + 2,
                        height=height, opacity=0.25 + 0.7 * near, title=title, legend=legend)


def layout_caption(proj: pj.Projection, shown: int, method: str, *, short: bool = False) -> str:
    """What a chart shows: points shown of all (and how many are hidden), how the layout was had, and
    its quality (`short`: the points and the quality only, for a grid's narrow columns)."""
    total = len(proj.coords)
    points = f"{total:,} points" if shown == total else f"{shown:,} of {total:,} points ({total - shown:,} hidden)"
    q = proj.quality
    if short:
        return points + (f" · trustworthiness {q['trustworthiness']:.3f} · 10-NN agreement {q['knn_agreement']:.3f}"
                         if q else "")
    where = "from the cache" if proj.from_cache else "computed now"
    text = f"{points} · {METHOD_TITLES.get(method, method)} took {proj.seconds:.1f} s ({where})"
    if q:
        text += (f" · trustworthiness {q['trustworthiness']:.3f} · 10-NN label agreement {q['knn_agreement']:.3f} "
                 f"(in the latent space {q['latent_knn_agreement']:.3f})")
    return text + (f" · {proj.cache_note}" if proj.cache_note else "")


def run_title(config: dict) -> str:
    """A chart's title for a run: its family and loss ("VAE · Cauchy")."""
    from core.families import family_of
    from core.families.recon import loss_label

    return f"{family_of(config).title} · {loss_label(config)}"


def visible_count(coords: np.ndarray) -> int:
    """How many points a display layout shows (hidden ones are NaN rows)."""
    return int(np.isfinite(coords).all(1).sum())


def same_dataset(infos: Sequence[Any], path: str) -> list[str]:
    """The paths of the runs of the same dataset as the run at `path` (itself included): the runs a picked
    point means the same image in."""
    dataset = next((i.dataset for i in infos if str(i.path) == path), None)
    return [str(i.path) for i in infos if i.dataset == dataset]


@dataclass
class PointView:
    """A picked point in one run, ready to draw: its pictures ((H, W) or (H, W, 3) uint8 with a caption
    each: the image, the reconstruction), what is missing, and its neighbours' images and captions."""

    pictures: list[tuple[np.ndarray, str]]
    missing: str
    neighbours_caption: str
    neighbour_images: list[np.ndarray] | None
    neighbour_captions: list[str]


def point_view(run: Any, row: int, embeddings: dict, objective: Any, points: np.ndarray, names: Sequence[str],
               k: int = NEIGHBOURS) -> PointView:
    """The picked point of `run` (row `row` of its embeddings): its image, what its family decodes from its
    stored representation (left out when the family has no decoder), and its k nearest neighbours among
    `points` (the representation the layout shows), named by label and distance."""
    from core import latent_view as lv

    d = lv.point_detail(run, row, k, embeddings=embeddings, objective=objective, points=points)
    pictures = []
    if d.image is not None:
        pictures.append((lv.to_display(d.image[None])[0], f"image · index {d.index}"))
    if d.reconstruction is not None:
        pictures.append((lv.to_display(d.reconstruction[None])[0], "reconstruction (decoded from its representation)"))
    same = sum(int(v) == d.label for v in d.neighbour_labels)
    named = [f"{names[int(c)]} · {dist:.2f}" for c, dist in zip(d.neighbour_labels, d.neighbour_distances,
                                                                 strict=True)]
    return PointView(
        pictures=pictures,
        missing="" if d.image is not None else (f"index {d.index}: the run does not carry its images and the "
                                                 f"dataset is not installed"),
        neighbours_caption=f"label {names[d.label]} · its {k} nearest neighbours in the representation "
                           f"({same} share its label), with their distances:",
        neighbour_images=None if d.neighbour_images is None else list(lv.to_display(d.neighbour_images)),
        neighbour_captions=named if d.neighbour_images is not None else [
            f"index {int(i)} ({n})" for i, n in zip(d.neighbour_index, named, strict=True)],
    )
