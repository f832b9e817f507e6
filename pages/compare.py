"""Compare: the runs of a study, or any finished runs of one dataset, side by side: the table of probe
results, each probe per loss (a bar per family), accuracy against latent size, reconstructions, prior
samples, the adaptive loss's learned α and c. What is shown, and how, is core.compare_view's: its sections
choose themselves by what the runs can show, and this page draws their blocks."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core import charts, compare
from core import compare_view as cv
from core.commands import pasteable
from pages.chrome import page_header

page_header("Compare", ":material/compare_arrows:",
            "How the reconstruction loss, and the kind of model, shape what is learned: probes fitted on each run's "
            "representation (on the train split, scored on the test split), reconstructions, samples and the "
            "adaptive loss's α and c, side by side.")


@st.cache_resource(max_entries=4, show_spinner=False)
def _listing(stamp: tuple) -> tuple:  # re-listed only when a run folder changes
    unreadable = [(info.run_id, info.error or "") for info in compare.unreadable_runs()]
    return compare.list_studies(checks=compare.RUN_CHECKS), unreadable, *cv.pickable_runs()


@st.cache_resource(max_entries=8, show_spinner="Reading the runs…")
def _comparison(paths: tuple[str, ...], stamp: tuple, title: str, reports: tuple[str, ...]) -> cv.Comparison:
    return cv.open_comparison(paths, title=title, report_dirs=reports)


@st.cache_resource(max_entries=64, show_spinner="Drawing…")
def _section(key: str, paths: tuple[str, ...], stamp: tuple, title: str, reports: tuple[str, ...],
             choices: tuple) -> cv.SectionView:  # each section is redrawn only when a choice it uses changes
    section = next(s for s in cv.SECTIONS if s.key == key)
    return section.view(_comparison(paths, stamp, title, reports), dict(choices))


def _warn_damaged(items: list[tuple[str, str]], what: str) -> None:
    st.warning(f"{what}:\n\n" + "\n".join(f"- `{run_id}`: {problem}" for run_id, problem in items),
               icon=":material/report:")


def _draw(block: cv.Block, key: str) -> None:
    if isinstance(block, cv.Chart):
        st.plotly_chart(block.figure, key=key, config=charts.chart_config(block.filename))
        _caption(block)
        st.download_button("Download the chart (HTML)", lambda fig=block.figure: charts.standalone_html(fig),
                           file_name=f"{block.filename}.html", mime="text/html", key=f"{key}_html",
                           on_click="ignore", icon=":material/download:",
                           help="An interactive file that opens offline; the chart's camera button saves a PNG.")
    elif isinstance(block, cv.Picture):
        st.image(block.png, output_format="PNG")
        _caption(block)
        st.download_button("Download (PNG)", block.png, file_name=f"{block.filename}.png", mime="image/png",
                           key=f"{key}_png", on_click="ignore", icon=":material/download:")
    elif isinstance(block, cv.Table):
        frame = pd.DataFrame(block.rows, columns=block.columns).rename(columns=block.titles)
        formats = {block.titles[c]: st.column_config.NumberColumn(block.titles[c], format=f)
                   for c, f in block.formats.items()}
        st.dataframe(frame, hide_index=True, width="stretch", column_config=formats, key=key, placeholder="–")
        _caption(block)
        st.download_button("Download the table (CSV)", block.csv, file_name=f"{block.filename}.csv", mime="text/csv",
                           key=f"{key}_csv", on_click="ignore", icon=":material/download:")
    elif isinstance(block, cv.Note):
        (st.warning if block.kind == "warning" else st.info)(block.text, icon=":material/info:")
        if block.command:
            st.code(block.command, language="bash", wrap_lines=True)
    elif isinstance(block, cv.Markdown):
        with st.expander("The study's report (report.md)"):
            st.markdown(block.text)
        _caption(block)


def _caption(block: cv.Block) -> None:
    if getattr(block, "caption", ""):
        st.caption(block.caption)


studies, unreadable, pickable, damaged_picks = _listing(compare.listing_stamp())
if unreadable:
    _warn_damaged(unreadable, f"{len(unreadable)} run folder(s) could not be read and are left out")
if not studies and not pickable:
    st.info("Nothing to compare yet. This page compares finished runs of one dataset: their probe results, "
            "reconstructions and samples. A study trains a model per family and loss and probes each:",
            icon=":material/info:")
    st.code(pasteable("python -m core.study --dataset digits --families vae,vqvae --losses mse,cauchy,welsch "
                      "--latent-dims 16 --epochs 5"), language="bash", wrap_lines=True)
    st.caption("Or train runs on the **Train** page; they appear here when they finish (probe them with "
               "`core.probes` to fill the charts). The shipped reference study lives in `checkpoints/`.")
    st.stop()

what = st.radio("Compare", ["study", "pick"] if studies else ["pick"], horizontal=True, key="compare_source",
                format_func={"study": "a study", "pick": "runs I pick"}.get)
if what == "study":
    by_name = {s.name: s for s in studies}
    name = st.selectbox("Study", list(by_name), key="compare_study", format_func=lambda n: (
        f"{n} ({len(by_name[n].finished)}/{len(by_name[n].runs)} runs finished"
        f"{f', {len(by_name[n].problems)} damaged' if by_name[n].problems else ''}, "
        f"{'shipped' if by_name[n].shipped else 'your runs'})"))
    study = by_name[name]
    if study.problems:
        _warn_damaged([(i.run_id, study.problems[i.path]) for i in study.runs if i.path in study.problems],
                      f"{len(study.problems)} damaged run(s) of {name} skipped")
    paths, title, reports = tuple(str(i.path) for i in study.usable), name, tuple(map(str, study.report_dirs))
else:
    if damaged_picks:
        _warn_damaged([(i.run_id, why) for i, why in damaged_picks], f"{len(damaged_picks)} damaged run(s) left out")
    left, right = st.columns([1, 3])
    dataset = left.selectbox("Dataset", list(pickable), key="compare_dataset",
                             help="Runs are compared on one dataset: the same test images and classes.")
    options = {str(i.path): i for i in pickable.get(dataset, [])}
    picked = right.multiselect("Runs", list(options), key="compare_runs", placeholder=f"finished runs of {dataset}",
                               format_func=lambda p: cv.run_label(options[p]))
    paths, title, reports = tuple(picked), f"{len(picked)} runs of {dataset}", ()
if not paths:
    st.info("Pick one or more finished runs to compare." if what == "pick" else f"No run of {title} can be shown.",
            icon=":material/info:")
    st.stop()

stamp = compare.fingerprint(paths)
comparison = _comparison(paths, stamp, title, reports)
families = ", ".join(dict.fromkeys(r["family_title"] for r in comparison.rows))
st.caption(f"Dataset **{comparison.dataset}** · {len(comparison.rows)} runs · {families} · latent size(s) "
           f"{', '.join(f'{d:,}' for d in comparison.latent_sizes)}"
           + (f" · report in `{reports[0]}`" if reports else ""))
choices = {}
for column, control in zip(st.columns(3), cv.controls(comparison), strict=True):
    choices[control.key] = column.selectbox(control.label, control.options, format_func=control.title,
                                            key=f"compare_{control.key}", help=control.help or None)

for section in cv.sections_for(comparison):
    view = _section(section.key, paths, stamp, title, reports, tuple((k, choices[k]) for k in section.uses))
    if not view.blocks:
        continue
    if view.title:
        st.subheader(view.title)
    blocks = [b for b in view.blocks if not isinstance(b, cv.Caption)]
    places = st.columns(len(blocks)) if view.side_by_side else [st.container() for _ in blocks]
    for i, (place, block) in enumerate(zip(places, blocks, strict=True)):
        with place:
            _draw(block, f"compare_{view.key}_{i}")
    for block in view.blocks:
        if isinstance(block, cv.Caption):
            st.caption(block.text)
