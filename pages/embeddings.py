"""Embeddings: a run's validation latents in 3-D (PCA, metric MDS or t-SNE), one run, two side by side or a
whole study in a grid; pick a point to see its image, its reconstruction and its latent neighbours.

The layouts, their cache, the quality measures, neighbours and reconstructions come from core
(core.projections, core.latent_view); this page lays out controls and draws. plotly's scatter3d has no
point selection in Streamlit (shared/notes/facts.md), so points are picked in a linked 2-D view of the
same layout, or searched by validation index or label.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import streamlit as st

from core import compare
from core import latent_view as lv
from core import projections as pj
from core.jobs import loss_label
from core.runs import RunFormatError, RunInfo, checkpoints_root, open_run, runs_root
from pages.chrome import fast_figure, page_header

# Session-state keys, prefixed so they cannot collide with other pages' widgets.
MODE_KEY = "emb_mode"
RUN_KEYS = ("emb_run_a", "emb_run_b")
STUDY_KEY = "emb_study"
METHOD_KEY = "emb_method"
SOURCE_KEY = "emb_source"
SEED_KEY = "emb_seed"
SCALE_KEY = "emb_scale"
OUTLIER_KEY = "emb_hide_outliers"
MEASURE_KEY = "emb_measure"
SHARE_KEY = "emb_share_camera"
AZIMUTH_KEY, ELEVATION_KEY, DISTANCE_KEY = "emb_azimuth", "emb_elevation", "emb_distance"
MARKER_KEY = "emb_marker"
PLANE_KEY = "emb_plane"
PICK_KEY = "emb_pick"  # the linked 2-D chart's selection
INDEX_KEY = "emb_index"  # search by validation index
LABEL_KEY = "emb_label"
SELECTED_KEY = "emb_selected"  # the picked point's validation index
DETAIL_RUN_KEY = "emb_detail_run"
OPTION_KEYS = {  # method option -> widget key
    ("mds", "start"): "emb_mds_start", ("mds", "max_iter"): "emb_mds_iter", ("mds", "landmarks"): "emb_mds_landmarks",
    ("tsne", "perplexity"): "emb_tsne_perplexity", ("tsne", "n_iter"): "emb_tsne_iter",
    ("tsne", "negatives"): "emb_tsne_negatives",
}
# What the page drew on its last run (runs, keys, cache hits, selection): read by tests.
VIEW_KEY = "emb_view"

MODES = {"one": "One run", "two": "Two side by side", "grid": "A study (grid)"}
METHOD_TITLES = {"pca": "PCA", "mds": "Metric MDS", "tsne": "t-SNE"}
SOURCE_TITLES = {"mu": "μ (posterior means)", "sample": "z = μ + σε (one sample)"}
SCALE_TITLES = {"none": "as computed", "ball": "fit the unit ball", "sphere": "onto the unit sphere"}
PLANES = {"x–y": (0, 1), "x–z": (0, 2), "y–z": (1, 2)}
MAX_GRID = 12  # browsers cap WebGL contexts per page: a dozen 3-D charts is the practical limit
NEIGHBOURS = 8
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf")
AUTO_METHODS = ("pca", "mds")  # computed on sight; t-SNE waits for a click unless cached

page_header(
    "Embeddings",
    ":material/scatter_plot:",
    "Where the validation images land in each run's latent space, projected to 3-D by PCA, metric MDS or "
    "t-SNE. Compare losses side by side or a whole study at once; pick a point to see its image, its "
    "reconstruction and its nearest neighbours in the latent space.",
)


# ---------------------------------------------------------------------------------------------------
# Cached loads, keyed by path and compare.fingerprint (its files' change times), so a retrained run is
# reread. The stamp must not start with "_": Streamlit leaves such arguments out of the cache key.


@st.cache_resource(max_entries=16, show_spinner=False)
def _embeddings(path: str, stamp: tuple) -> dict:
    return open_run(path).embeddings()


@st.cache_resource(max_entries=4, show_spinner="Loading the model…")
def _model(path: str, stamp: tuple) -> Any:
    return open_run(path).load_model()


def _run_label(info: RunInfo) -> str:
    where = " · shipped" if info.shipped else ""
    return f"{loss_label(info.config or {})} · {info.dataset} · z{info.latent_dim} · {info.run_id}{where}"


def _title(info: RunInfo) -> str:
    """A chart's or a detail's heading: the loss and the run."""
    return f"{loss_label(info.config or {})} · {info.run_id}"


# ---------------------------------------------------------------------------------------------------
# Controls

# Newest first, a run dated in the future last (never the default); damaged runs are named and left out.
runs, damaged = compare.embedding_runs()
if damaged:
    st.warning(f"{len(damaged)} damaged run(s) left out:\n\n" + "\n".join(
        f"- `{info.run_id}`: {problem}" for info, problem in damaged), icon=":material/report:")
damaged_view = {info.run_id: problem for info, problem in damaged}
if not runs:
    st.info(
        f"No run with embeddings yet. Runs are looked for in `{runs_root()}` and `{checkpoints_root()}`; "
        "embeddings are written when training finishes. Train one on the **Train** page, or from a shell: "
        "`python -m core.train --dataset digits --loss cauchy --latent-dim 8 --epochs 2`."
    )
    st.session_state[VIEW_KEY] = {"runs": [], "mode": None, **({"damaged": damaged_view} if damaged else {})}
    st.stop()

by_path = {str(r.path): r for r in runs}
# Each study's runs that have embeddings, in the study's loss order (as on the Compare page).
studies: dict[str, list[RunInfo]] = {}
for found in compare.list_studies():
    usable = [by_path[str(r.path)] for r in found.runs if str(r.path) in by_path]
    if usable:
        studies[found.name] = usable

controls = st.columns([1.2, 2.2, 1.2])
with controls[0]:
    mode_options = [m for m in MODES if m != "grid" or studies]
    if st.session_state.get(MODE_KEY) not in mode_options:
        st.session_state[MODE_KEY] = "one"
    mode = st.radio("Show", mode_options, format_func=MODES.get, key=MODE_KEY)
with controls[1]:
    paths = list(by_path)
    if mode == "grid":
        study = st.selectbox("Study", list(studies), key=STUDY_KEY,
                             format_func=lambda s: f"{s} ({len(studies[s])} runs)")
        chosen = [str(r.path) for r in studies[study]]
        if len(chosen) > MAX_GRID:
            st.warning(f"{study} has {len(chosen)} runs; showing the first {MAX_GRID} (browsers cap 3-D charts "
                       "per page).")
            chosen = chosen[:MAX_GRID]
    else:
        slots = 1 if mode == "one" else 2
        chosen = []
        for slot in range(slots):
            key = RUN_KEYS[slot]
            if st.session_state.get(key) not in paths:
                st.session_state[key] = paths[min(slot, len(paths) - 1)]
            chosen.append(st.selectbox(f"Run {'AB'[slot]}" if slots > 1 else "Run", paths, key=key,
                                       format_func=lambda p: _run_label(by_path[p])))
with controls[2]:
    method = st.radio("Projection", pj.METHODS, format_func=METHOD_TITLES.get, key=METHOD_KEY, horizontal=True)
    source = st.selectbox("Points", pj.SOURCES, format_func=SOURCE_TITLES.get, key=SOURCE_KEY)

with st.expander("Projection and display settings", expanded=False):
    cols = st.columns(4)
    options: dict[str, Any] = {}
    with cols[0]:
        seed = int(st.number_input("Seed", 0, 2**31 - 1, 0, key=SEED_KEY))
        if method == "mds":
            options["start"] = st.selectbox("Start", ("classical", "landmark", "random"),
                                            key=OPTION_KEYS["mds", "start"])
        elif method == "tsne":
            options["perplexity"] = float(st.slider("Perplexity", 5, 100, 30, key=OPTION_KEYS["tsne", "perplexity"]))
    with cols[1]:
        if method == "mds":
            options["max_iter"] = int(st.slider("SMACOF iterations", 0, 300, 60, 10,
                                                key=OPTION_KEYS["mds", "max_iter"]))
            options["landmarks"] = int(st.select_slider("Landmarks", (250, 500, 1000, 2000, 4000), 1000,
                                                        key=OPTION_KEYS["mds", "landmarks"]))
        elif method == "tsne":
            options["n_iter"] = int(st.slider("Iterations", 250, 2000, 750, 50, key=OPTION_KEYS["tsne", "n_iter"]))
            options["negatives"] = int(st.select_slider("Far-field sample", (16, 32, 64, 128, 256, 512, 1024),
                                                        pj.METHOD_OPTIONS["tsne"]["negatives"][0],
                                                        key=OPTION_KEYS["tsne", "negatives"]))
    with cols[2]:
        scale = st.selectbox("Scale", pj.SCALES, index=1, format_func=SCALE_TITLES.get, key=SCALE_KEY)
        hide = st.slider("Hide outliers (%)", 0.0, 20.0, 0.0, 0.5, key=OUTLIER_KEY) / 100.0
        marker = st.slider("Marker size", 1, 8, 2, key=MARKER_KEY)
    with cols[3]:
        share = st.toggle("Share one camera", value=True, key=SHARE_KEY,
                          help="Every 3-D chart gets the camera set here; moving these sliders turns them all. "
                               "Dragging turns one chart (plotly.js has no linked 3-D cameras).")
        azimuth = st.slider("Azimuth (°)", -180, 180, 45, 5, key=AZIMUTH_KEY, disabled=not share)
        elevation = st.slider("Elevation (°)", -85, 85, 25, 5, key=ELEVATION_KEY, disabled=not share)
        distance = st.slider("Distance", 0.8, 4.0, 2.0, 0.1, key=DISTANCE_KEY, disabled=not share)
    measure = st.checkbox("Measure quality (trustworthiness and 10-NN label agreement, on up to 2,000 points)",
                          value=True, key=MEASURE_KEY)


# ---------------------------------------------------------------------------------------------------
# Layouts: from the cache, computed on sight (PCA, MDS), or on a click (t-SNE)


def _layout(path: str, compute_missing: bool, bar: Any = None) -> pj.Projection | None:
    run = open_run(path)

    def report(fraction: float, message: str) -> None:
        if bar is not None:
            bar.progress(min(max(fraction, 0.0), 1.0), text=f"{run.run_id}: {message}")

    return pj.run_projection(run, method, 3, seed, source=source, measure=measure, progress=report,
                             compute_missing=compute_missing, **options)


layouts: dict[str, pj.Projection | None] = {}
errors: dict[str, str] = {}
for path in chosen:
    try:
        layouts[path] = _layout(path, compute_missing=False)
    except (RunFormatError, ValueError, OSError) as exc:
        errors[path] = str(exc)
missing = [p for p in chosen if p not in errors and layouts.get(p) is None]
if missing and (method in AUTO_METHODS or st.button(
        f"Compute {METHOD_TITLES[method]} for {len(missing)} run{'s' * (len(missing) > 1)}",
        type="primary", key="emb_compute",
        help="t-SNE of 10,000 points takes tens of seconds on a CPU (seconds on a GPU); it is kept with the run.")):
    for path in missing:
        bar = st.progress(0.0, text=f"{by_path[path].run_id}: starting")
        try:
            layouts[path] = _layout(path, compute_missing=True, bar=bar)
        except (RunFormatError, ValueError, OSError) as exc:
            errors[path] = str(exc)
        bar.empty()
for path, message in errors.items():
    st.error(f"{by_path[path].run_id}: {message}")


# ---------------------------------------------------------------------------------------------------
# Figures


def _camera() -> dict[str, Any]:
    az, el = math.radians(azimuth), math.radians(elevation)
    return {"eye": {"x": distance * math.cos(el) * math.cos(az), "y": distance * math.cos(el) * math.sin(az),
                    "z": distance * math.sin(el)}, "up": {"x": 0, "y": 0, "z": 1}}


def _traces(coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: list[str], dims: tuple[int, ...],
            kind: str) -> list[dict[str, Any]]:
    """One trace per class, so the legend toggles classes; hidden (NaN) points left out. customdata is each
    point's validation index: the hover shows it and a 2-D selection hands it back."""
    traces = []
    visible = np.isfinite(coords).all(1)
    for cls in np.unique(labels):
        rows = np.flatnonzero((labels == cls) & visible)
        name = names[cls]
        trace: dict[str, Any] = {
            "type": kind, "mode": "markers", "name": name, "legendgroup": name,
            "marker": {"size": marker if kind == "scatter3d" else marker + 3, "color": PALETTE[cls % len(PALETTE)],
                       "opacity": 0.8},
            "customdata": index[rows].astype(np.float32),
            "hovertemplate": f"index %{{customdata}}<br>label {name}<extra></extra>",
        }
        for axis, d in zip(("x", "y", "z"), dims, strict=False):
            trace[axis] = coords[rows, d]
        traces.append(trace)
    return traces


def _highlight(coords: np.ndarray, rows: np.ndarray, name: str, symbol: str, size: int, dims: tuple[int, ...],
               kind: str) -> dict[str, Any]:
    rows = rows[np.isfinite(coords[rows]).all(1)]
    trace: dict[str, Any] = {"type": kind, "mode": "markers", "name": name, "showlegend": True,
                             "marker": {"size": size, "color": "#111827", "symbol": symbol,
                                        "line": {"width": 1, "color": "#111827"}},
                             "hoverinfo": "skip"}
    for axis, d in zip(("x", "y", "z"), dims, strict=False):
        trace[axis] = coords[rows, d]
    return trace


def figure_3d(title: str, coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: list[str],
              selected: int | None, neighbours: np.ndarray | None, revision: str, narrow: bool = False) -> Any:
    data = _traces(coords, labels, index, names, (0, 1, 2), "scatter3d")
    if selected is not None:
        if neighbours is not None and len(neighbours):
            data.append(_highlight(coords, neighbours, "latent neighbours", "circle-open", marker + 5, (0, 1, 2),
                                   "scatter3d"))
        data.append(_highlight(coords, np.array([selected]), "selected", "diamond", marker + 7, (0, 1, 2),
                               "scatter3d"))
    axis = {"showticklabels": False, "title": {"text": ""}}
    scene: dict[str, Any] = {"xaxis": axis, "yaxis": axis, "zaxis": axis, "aspectmode": "data",
                             "dragmode": "turntable"}
    if share:
        scene["camera"] = _camera()
    # in side-by-side columns a legend on the right takes a third of the chart: put it underneath
    legend = {"itemsizing": "constant", **({"orientation": "h", "y": 0, "yanchor": "top"} if narrow else {})}
    layout = {"title": {"text": title, "font": {"size": 13}}, "scene": scene, "height": 520 if narrow else 460,
              "margin": {"l": 0, "r": 0, "t": 30, "b": 0}, "legend": legend,
              # the camera survives reruns until the shared camera's sliders move
              "uirevision": revision}
    return fast_figure(data, layout)


def figure_2d(coords: np.ndarray, labels: np.ndarray, index: np.ndarray, names: list[str], plane: tuple[int, int],
              selected: int | None, neighbours: np.ndarray | None) -> Any:
    data = _traces(coords, labels, index, names, plane, "scattergl")
    if selected is not None:
        if neighbours is not None and len(neighbours):
            data.append(_highlight(coords, neighbours, "latent neighbours", "circle-open", marker + 8, plane,
                                   "scattergl"))
        data.append(_highlight(coords, np.array([selected]), "selected", "diamond", marker + 10, plane, "scattergl"))
    axis = {"showticklabels": False, "zeroline": False}
    layout = {"height": 380, "margin": {"l": 0, "r": 0, "t": 10, "b": 0}, "xaxis": axis,
              "yaxis": {**axis, "scaleanchor": "x"}, "legend": {"itemsizing": "constant"}, "clickmode": "event+select"}
    return fast_figure(data, layout)


# ---------------------------------------------------------------------------------------------------
# The selected point: its validation index, shared by every run shown (they embed the same split)


def _selected_row(emb: dict) -> int | None:
    value = st.session_state.get(SELECTED_KEY)
    if value is None:
        return None
    rows = lv.find_rows(emb["index"].numpy(), emb["labels"].numpy(), index_value=int(value))
    return int(rows[0]) if len(rows) else None


def _picked_index(event: Any) -> int | None:
    """The validation index a 2-D selection event names: its first point's customdata."""
    try:
        points = event["selection"]["points"]
    except (KeyError, TypeError):
        return None
    for point in points or []:
        data = point.get("customdata")
        if isinstance(data, list):
            data = data[0] if data else None
        if data is not None:
            return round(float(data))
    return None


shown = [p for p in chosen if layouts.get(p) is not None]
view: dict[str, Any] = {"mode": mode, "method": method, "options": pj.method_options(method, options),
                        "damaged": damaged_view,
                        "source": source, "seed": seed, "runs": [by_path[p].run_id for p in chosen],
                        "shown": [by_path[p].run_id for p in shown], "missing": [by_path[p].run_id for p in missing
                                                                                 if layouts.get(p) is None],
                        "keys": {}, "from_cache": {}, "points": {}, "quality": {}, "selected": None, "detail": {}}
revision = f"cam-{azimuth}-{elevation}-{distance}" if share else "own"

if not shown:
    if missing and method not in AUTO_METHODS:
        st.info(f"{METHOD_TITLES[method]} has not been computed for these settings yet: press the button above. "
                "It is kept with the run, so the next visit is instant.")
    st.session_state[VIEW_KEY] = view
    st.stop()

grid_cols = 1 if len(shown) == 1 else 2 if len(shown) <= 4 else 3
columns = st.columns(grid_cols)
for i, path in enumerate(shown):
    proj = layouts[path]
    assert proj is not None
    info = by_path[path]
    emb = _embeddings(path, compare.fingerprint([path]))
    names = lv.class_names(info.config or {}, proj.labels)
    coords = pj.display_coords(proj.coords, scale, hide)
    row = _selected_row(emb)
    neighbours = lv.latent_neighbours(emb["mu"], row, NEIGHBOURS)[0] if row is not None else None
    title = _title(info)
    with columns[i % grid_cols]:
        st.plotly_chart(figure_3d(title, coords, proj.labels, proj.index, names, row, neighbours,
                                  f"{revision}-{info.run_id}", narrow=grid_cols > 1),
                        key=f"emb_3d_{i}", config={"displaylogo": False})
        where = "from the cache" if proj.from_cache else "computed now"
        caption = f"{len(proj.coords):,} points · {METHOD_TITLES[method]} took {proj.seconds:.1f} s ({where})"
        if proj.quality:
            q = proj.quality
            caption += (f" · trustworthiness {q['trustworthiness']:.3f} · 10-NN label agreement "
                        f"{q['knn_agreement']:.3f} (latent {q['latent_knn_agreement']:.3f})")
        st.caption(caption + (f" · {proj.cache_note}" if proj.cache_note else ""))
    view["keys"][info.run_id] = proj.key
    view["from_cache"][info.run_id] = proj.from_cache
    view["points"][info.run_id] = int(np.isfinite(coords).all(1).sum())
    view["quality"][info.run_id] = proj.quality


# ---------------------------------------------------------------------------------------------------
# Picking a point: a linked 2-D view of one layout, or a search by index / label

st.subheader("Pick a point")
pick_cols = st.columns([2.2, 1])
detail_paths = shown if mode != "grid" else []
with pick_cols[1]:
    pick_path = st.selectbox("Pick in", shown, key=DETAIL_RUN_KEY, format_func=lambda p: _run_label(by_path[p]))
    if mode == "grid":
        detail_paths = [pick_path]
    plane = PLANES[st.radio("Plane", list(PLANES), horizontal=True, key=PLANE_KEY)]
    pick_info = by_path[pick_path]
    pick_emb = _embeddings(pick_path, compare.fingerprint([pick_path]))
    pick_labels = pick_emb["labels"].numpy()
    pick_index = pick_emb["index"].numpy()
    pick_names = lv.class_names(pick_info.config or {}, pick_labels)
    typed = st.number_input("Validation index", min_value=0, value=None, step=1, key=INDEX_KEY,
                            placeholder="type an index")
    if typed is not None and st.button("Show this index", key="emb_show_index"):
        if len(lv.find_rows(pick_index, pick_labels, index_value=int(typed))):
            st.session_state[SELECTED_KEY] = int(typed)
        else:
            st.warning(f"index {int(typed)} is not among this run's {len(pick_index):,} validation points")
    present = [int(c) for c in np.unique(pick_labels)]
    label = st.selectbox("Or a label", present, key=LABEL_KEY,
                         format_func=lambda c: pick_names[c])
    if st.button("Next point with this label", key="emb_next_label"):
        rows = lv.find_rows(pick_index, pick_labels, label=label)
        current = st.session_state.get(SELECTED_KEY)
        after = [int(pick_index[r]) for r in rows if current is None or int(pick_index[r]) > int(current)]
        st.session_state[SELECTED_KEY] = after[0] if after else int(pick_index[rows[0]])
    if st.session_state.get(SELECTED_KEY) is not None and st.button("Clear the selection", key="emb_clear"):
        st.session_state[SELECTED_KEY] = None

with pick_cols[0]:
    pick_proj = layouts[pick_path]
    assert pick_proj is not None
    pick_coords = pj.display_coords(pick_proj.coords, scale, hide)
    row = _selected_row(pick_emb)
    neighbours = lv.latent_neighbours(pick_emb["mu"], row, NEIGHBOURS)[0] if row is not None else None
    event = st.plotly_chart(
        figure_2d(pick_coords, pick_proj.labels, pick_proj.index, pick_names, plane, row, neighbours),
        key=PICK_KEY, on_select="rerun", selection_mode="points", config={"displaylogo": False})
    st.caption("Click a point (or box-select) in this 2-D view of the same layout; the 3-D charts mark it.")
value = _picked_index(event if event is not None else st.session_state.get(PICK_KEY))
if value is None:  # the chart's selection was emptied: a click on the same point later is a new click
    st.session_state.pop("emb_last_pick", None)
elif (len(lv.find_rows(pick_index, pick_labels, index_value=value))
        and st.session_state.get("emb_last_pick") != value):
    # a new click: it becomes the selection (a search or "clear" later can replace it)
    st.session_state["emb_last_pick"] = value
    st.session_state[SELECTED_KEY] = value
    st.rerun()


# ---------------------------------------------------------------------------------------------------
# The selected point in each run: image, reconstruction, latent neighbours

selected = st.session_state.get(SELECTED_KEY)
view["selected"] = selected
if selected is None:
    st.caption("No point picked yet.")
else:
    detail_cols = st.columns(len(detail_paths)) if detail_paths else []
    for col, path in zip(detail_cols, detail_paths, strict=False):
        info = by_path[path]
        emb = _embeddings(path, compare.fingerprint([path]))
        row = _selected_row(emb)
        with col:
            st.markdown(f"**{loss_label(info.config or {})}** · {info.run_id}")
            if row is None:
                st.warning(f"index {selected} is not in this run's validation embeddings")
                continue
            try:
                model = _model(path, compare.fingerprint([path]))
                detail = lv.point_detail(open_run(path), row, NEIGHBOURS, embeddings=emb, model=model)
            except (RunFormatError, OSError, RuntimeError) as exc:
                st.error(f"could not decode this point: {exc}")
                continue
            names = lv.class_names(info.config or {}, emb["labels"].numpy())
            pair = st.columns(2)
            if detail.image is not None:
                pair[0].image(lv.to_display(detail.image[None])[0], caption=f"image · index {detail.index}",
                              width=112, clamp=True)
            else:
                pair[0].caption("the run does not carry its images and the dataset is not installed")
            pair[1].image(lv.to_display(detail.reconstruction[None])[0], caption="reconstruction, decoder(μ)",
                          width=112, clamp=True)
            st.caption(f"label {names[detail.label]} · {NEIGHBOURS} nearest in latent space "
                       f"({sum(int(v) == detail.label for v in detail.neighbour_labels)} share its label):")
            if detail.neighbour_images is not None:
                st.image(list(lv.to_display(detail.neighbour_images)), width=56, clamp=True,
                         caption=[f"{names[int(c)]} · {d:.2f}"
                                  for c, d in zip(detail.neighbour_labels, detail.neighbour_distances, strict=True)])
            else:
                st.caption(", ".join(f"index {int(i)} ({names[int(c)]}, {d:.2f})"
                                     for i, c, d in zip(detail.neighbour_index, detail.neighbour_labels,
                                                        detail.neighbour_distances, strict=True)))
            view["detail"][info.run_id] = {
                "row": detail.row, "index": detail.index, "label": detail.label,
                "neighbour_index": [int(v) for v in detail.neighbour_index],
                "reconstruction_shape": list(detail.reconstruction.shape),
                "has_image": detail.image is not None}

st.session_state[VIEW_KEY] = view
