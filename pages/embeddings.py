"""Embeddings: where the validation images land in each run's representation, projected to 3-D (PCA, metric
MDS or t-SNE): one run, two side by side, or a study's runs as views through one camera; pick a point to
see its image, its reconstruction and its nearest neighbours. The layouts, their caches, the camera, the
picked point and the figures are core.embeddings_view's; this page lays out the widgets and draws."""

from __future__ import annotations

import streamlit as st

from core import charts, compare
from core import compare_view as cv
from core import embeddings_view as ev
from core import latent_view as lv
from core import projections as pj
from core.commands import pasteable
from core.runs import RunFormatError, checkpoints_root, open_run, runs_root
from pages.chrome import page_header

MODES = {"one": "One run", "two": "Two side by side", "grid": "A study (grid)"}
PLANES = {"x–y": (0, 1), "x–z": (0, 2), "y–z": (1, 2)}

page_header("Embeddings", ":material/scatter_plot:",
            "Where the validation images land in each run's representation, projected to 3-D. Compare losses side "
            "by side or a whole study at once; pick a point to see its image, its reconstruction and its nearest "
            "neighbours.")
st.html(f"<script>{charts.WEBGL_RELEASE_JS}</script>", unsafe_allow_javascript=True)


@st.cache_resource(show_spinner=False)
def _cache() -> ev.RunCache:  # embeddings, layouts and models, read once for every session
    return ev.RunCache()


@st.cache_resource(max_entries=4, show_spinner=False)
def _listing(stamp: tuple) -> tuple:  # the runs, re-listed only when a run folder changes
    runs, damaged = compare.embedding_runs()
    paths = {str(r.path) for r in runs}
    studies = {s.name: [str(r.path) for r in s.runs if str(r.path) in paths] for s in compare.list_studies()}
    return runs, damaged, {name: p for name, p in studies.items() if p}


cache, picker = _cache(), st.session_state.setdefault("emb_picker", ev.PointPicker())
runs, damaged, studies = _listing(compare.listing_stamp())
if damaged:
    st.warning(f"{len(damaged)} damaged run(s) left out:\n\n"
               + "\n".join(f"- `{i.run_id}`: {why}" for i, why in damaged), icon=":material/report:")
if not runs:
    st.info(f"No run with embeddings yet. Runs are looked for in `{runs_root()}` and `{checkpoints_root()}`; "
            "embeddings are written when training finishes. Train one on the **Train** page, or in a terminal:",
            icon=":material/info:")
    st.code(pasteable("python -m core.train --dataset digits --loss cauchy --latent-dim 8 --epochs 2"), "bash",
            wrap_lines=True)
    st.stop()
by_path = {str(r.path): r for r in runs}


def label(path: str) -> str:
    return cv.run_label(by_path[path]) + (" · shipped" if by_path[path].shipped else "")


top = st.columns([1.1, 2.4, 1.3])
mode = top[0].radio("Show", [m for m in MODES if m != "grid" or studies], format_func=MODES.get, key="emb_mode")
with top[1]:
    if mode == "grid":
        study = st.selectbox("Study", list(studies), key="emb_study",
                             format_func=lambda s: f"{s} ({len(studies[s])} runs)")
        chosen = studies[study]
    else:
        chosen = [st.selectbox("Run A" if mode == "two" else "Run", list(by_path), format_func=label, key="emb_run_a")]
        if mode == "two":
            partners = ev.same_dataset(runs, chosen[0])
            chosen.append(st.selectbox("Run B", partners, index=min(1, len(partners) - 1), format_func=label,
                                       key="emb_run_b", help="Runs of the same dataset as run A, so that a picked "
                                                             "point is the same image in both."))
stamps = {p: compare.fingerprint([p]) for p in chosen}
embeddings = {p: cache.embeddings(p, stamps[p]) for p in chosen}
configs = [by_path[p].config or {} for p in chosen]
with top[2]:
    method = st.radio("Projection", pj.METHODS, format_func=ev.METHOD_TITLES.get, key="emb_method", horizontal=True)
    # keyed by the families shown: the same option is titled by them ("μ", "z_e"), and a kept widget keeps its title
    source = st.selectbox("Points", ev.sources_of(list(embeddings.values())), format_func=lambda s: ev.source_title(
        configs, s), key="emb_source_" + "-".join(sorted({str(c.get("family", "vae")) for c in configs})))

with st.expander("Projection and display settings"):
    layout_col, display_col, camera_col = st.columns(3)
    options, seed = {}, 0
    if ev.uses_seed(method, source):
        seed = int(layout_col.number_input("Seed", 0, 2**31 - 1, 0, key="emb_seed"))
    for name, (text, kind, spec) in ev.option_widgets(method):
        key, default = f"emb_{method}_{name}", pj.METHOD_OPTIONS[method][name][0]
        if kind == "select":
            options[name] = layout_col.selectbox(text, spec, key=key)
        elif kind == "slider":
            options[name] = layout_col.slider(text, *spec[:2], type(spec[0])(default), spec[2], key=key)
        else:
            options[name] = layout_col.select_slider(text, spec, default, key=key)
    if not options and not ev.uses_seed(method, source):
        layout_col.caption(f"{ev.METHOD_TITLES[method]} of stored points has no settings: one layout, no seed.")
    measure = layout_col.checkbox("Measure quality", value=True, key="emb_measure",
                                  help="Trustworthiness and 10-NN label agreement, on up to 2,000 points")
    scale = display_col.selectbox("Scale", pj.SCALES, index=1, format_func=ev.SCALE_TITLES.get, key="emb_scale")
    hide = display_col.slider("Hide outliers (%)", 0.0, 20.0, 0.0, 0.5, key="emb_hide_outliers") / 100.0
    marker = display_col.slider("Marker size", 1, 8, 2, key="emb_marker")
    share = camera_col.toggle("Share one camera", True, key="emb_share_camera",
                              help="The camera set here turns every chart; dragging turns one 3-D chart.")
    azimuth = camera_col.slider("Azimuth (°)", -180, 180, 45, 5, key="emb_azimuth", disabled=not share)
    elevation = camera_col.slider("Elevation (°)", -85, 85, 25, 5, key="emb_elevation", disabled=not share)
    distance = camera_col.slider("Distance", 0.8, 4.0, 2.0, 0.1, key="emb_distance", disabled=not share)

spec = ev.LayoutSpec.of(method, options, seed, source, measure)
layouts, errors = {}, {}
for path in chosen:
    try:
        layouts[path] = cache.layout(path, stamps[path], spec)
    except (RunFormatError, ValueError, OSError) as exc:
        errors[path] = str(exc)
missing = [p for p in chosen if p not in errors and layouts[p] is None]
slot = st.empty()
if missing and (method in ev.AUTO_METHODS or slot.button(
        f"Compute {ev.METHOD_TITLES[method]} for {len(missing)} run{'s' * (len(missing) > 1)}", type="primary",
        key="emb_compute", help="t-SNE of 10,000 points takes tens of seconds on a CPU; it is kept with the run.")):
    for path in missing:
        bar = slot.progress(0.0, text=f"{by_path[path].run_id}: starting")
        try:
            layouts[path] = cache.layout(path, stamps[path], spec, compute=True, progress=lambda f, m, b=bar, p=path:
                                         b.progress(min(max(f, 0.0), 1.0), text=f"{by_path[p].run_id}: {m}"))
        except (RunFormatError, ValueError, OSError) as exc:
            errors[path] = str(exc)
    slot.empty()  # the button and the bars go once the layouts are there
for path, message in errors.items():
    st.error(f"{by_path[path].run_id}: {message}")
shown = [p for p in chosen if layouts.get(p) is not None]
if not shown:
    st.info(f"{ev.METHOD_TITLES[method]} has not been computed for these settings yet: press the button above. It is "
            "kept with the run, so the next visit is instant.", icon=":material/info:")
    st.stop()

view = ev.camera(azimuth, elevation, distance) if share else None
points = {p: pj.embedding_points(embeddings[p], source, seed) for p in shown}
names = {p: lv.class_names(by_path[p].config or {}, layouts[p].labels) for p in shown}
if mode == "grid":
    st.caption("Each run's 3-D layout seen through the shared camera (set under Projection and display settings), "
               "near points dark, far ones faint; the colours are the classes, named in the picker's legend below.")
columns = st.columns(1 if len(shown) == 1 else 2 if mode == "two" else 3)
for i, path in enumerate(shown):
    proj, info = layouts[path], by_path[path]
    coords = pj.display_coords(proj.coords, scale, hide)
    row = picker.row_in(proj.index)
    near = lv.nearest_to(points[path], row, ev.NEIGHBOURS)[0] if row is not None else None
    with columns[i % len(columns)]:
        if mode == "grid":  # 2-D views through the shared camera: no WebGL context per run
            fig = ev.view_figure(ev.run_title(info.config), coords, proj.labels, proj.index, names[path],
                                 azimuth=azimuth, elevation=elevation, selected=row, neighbours=near, marker=marker)
        else:
            targets = ev.reference_traces(info.config, points[path], coords, names[path]) if method == "pca" else []
            fig = ev.scene_figure(f"{ev.run_title(info.config)} · {info.run_id}", coords, proj.labels, proj.index,
                                  names[path], selected=row, neighbours=near, marker=marker, view=view,
                                  legend_below=mode == "two", extra=targets)
        st.plotly_chart(fig, key=f"emb_chart_{i}", config=charts.chart_config(f"{info.run_id}-{method}"))
        st.caption(ev.layout_caption(proj, ev.visible_count(coords), method, short=mode == "grid"))

st.subheader("Pick a point")
chart_col, pick_col = st.columns([2.2, 1])
with pick_col:
    pick = st.selectbox("Pick in", shown, format_func=label, key="emb_detail_run")
    plane = st.radio("Plane", list(PLANES), horizontal=True, key="emb_plane")
    index, labels = layouts[pick].index, layouts[pick].labels
    typed = st.number_input("Validation index", min_value=0, value=None, step=1, key="emb_index",
                            placeholder="type an index")
    if typed is not None and st.button("Show this index", key="emb_show_index") and (
            problem := picker.show_index(int(typed), index)):
        st.warning(problem)
    wanted = st.selectbox("Or a label", [int(c) for c in sorted(set(labels.tolist()))], key="emb_label",
                          format_func=lambda c: names[pick][c])
    if st.button("Next point with this label", key="emb_next_label"):
        picker.next_with_label(wanted, index, labels)
    if picker.selected is not None and st.button("Clear the selection", key="emb_clear"):
        picker.clear()
with chart_col:
    coords = pj.display_coords(layouts[pick].coords, scale, hide)[:, PLANES[plane]]
    row = picker.row_in(index)
    near = lv.nearest_to(points[pick], row, ev.NEIGHBOURS)[0] if row is not None else None
    event = st.plotly_chart(ev.plane_figure(coords, labels, index, names[pick], selected=row, neighbours=near,
                                            marker=marker + 3), key="emb_pick", on_select="rerun",
                            selection_mode="points", config=charts.chart_config(f"{by_path[pick].run_id}-{plane}"))
    st.caption("Click a point (or box-select) in this 2-D view of the same layout; every chart marks it.")
if picker.click(ev.picked_index(event), index):
    st.rerun()

details = [pick] if mode == "grid" else [p for p in shown]
if picker.selected is None:
    st.caption("No point picked yet.")
for col, path in zip(st.columns(len(details)) if picker.selected is not None else [], details, strict=False):
    info, row = by_path[path], picker.row_in(layouts[path].index)
    with col:
        st.markdown(f"**{ev.run_title(info.config)}** · {info.run_id}")
        if row is None:
            st.warning(f"index {picker.selected} is not in this run's validation embeddings")
            continue
        try:
            point = ev.point_view(open_run(path), row, embeddings[path], cache.objective(path, stamps[path]),
                                  points[path], names[path])
        except (RunFormatError, OSError, RuntimeError) as exc:
            st.error(f"could not decode this point: {exc}")
            continue
        st.image([p for p, _ in point.pictures], caption=[c for _, c in point.pictures], width=112, clamp=True)
        if point.missing:
            st.caption(point.missing)
        st.caption(point.neighbours_caption)
        if point.neighbour_images is not None:
            st.image(point.neighbour_images, width=72, clamp=True, caption=point.neighbour_captions)
        else:
            st.caption(", ".join(point.neighbour_captions))
