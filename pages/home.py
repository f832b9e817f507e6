"""Home: what the lab does and what its shipped study found, links to every page, the runs and datasets
it sees, and where it runs. Draws what core.home_view computes; never raises, whatever the checkout."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from pages.chrome import APP_ICON, APP_NAME, available_pages, page_header, runtime_info

page_header(APP_NAME, APP_ICON, "See how the loss you train with shapes what a model learns.")


def _or_note(compute: Callable[[], Any], what: str, module: str) -> Any:
    """compute(), or None after a note saying `module` could not be used: the home page must never raise,
    whatever state the data and run modules are in (a partial checkout, a broken install)."""
    try:
        return compute()
    except Exception as error:
        st.info(f"{what} not available yet: `{module}` could not be used ({type(error).__name__}: {error}). "
                "The rest of the lab works without it.", icon=":material/hourglass_empty:")
        return None


def _headline():
    from core.home_view import headline

    return headline()


def _rows(name: str) -> Callable[[], list[dict[str, Any]]]:
    def compute() -> list[dict[str, Any]]:
        from core import home_view

        return getattr(home_view, name)()

    return compute


st.markdown("The lab is built on Barron's general robust loss ρ(x, α, c) (CVPR 2019), one formula whose shape α "
            "runs from L2 (α = 2) through Charbonnier (1), Cauchy (0) and Geman-McClure (−2) to Welsch (−∞). "
            "Train models with any member, or let them learn α and c as they go, and see what the choice does to "
            "what they learn.")

found = _or_note(_headline, "The shipped study's result is", "core.home_view")
if found is not None:
    st.subheader("What the shipped study found")
    words, chart = st.columns([2, 3], vertical_alignment="center")
    words.markdown(found.sentence)
    words.caption(found.caption)
    if any(p.url_path == "compare" for p in available_pages()):
        words.page_link("pages/compare.py", label="All its figures, and your runs, on Compare",
                        icon=":material/compare_arrows:")
    from core.charts import chart_config, probe_bars

    figure = probe_bars(found.bars, found.metric, accuracy=True,
                        subtitle=f"latent size {found.latent}" if found.latent else "")
    chart.plotly_chart(figure.update_layout(height=340, margin={"t": 60, "b": 10}),
                       config=chart_config("study-accuracy"), key="home_headline")
    from core.home_view import other_studies

    if more := _or_note(lambda: other_studies(found.study), "The other shipped studies are", "core.home_view"):
        st.markdown("**Also shipped**, each with its figures on Compare:\n" + "\n".join(f"- {line}" for line in more))

st.subheader("Pages")
pages = [page for page in available_pages() if not page.default]
for column, page in zip(st.columns(max(len(pages), 1)), pages, strict=False):
    with column, st.container(border=True):
        st.page_link(page.path, label=page.title, icon=page.icon)
        st.caption(page.summary)

st.subheader("Runs")
run_rows = _or_note(_rows("run_rows"), "The run list is", "core.runs")
if run_rows:
    st.dataframe(run_rows, hide_index=True, key="home_runs",
                 column_config={"Run": st.column_config.TextColumn(width="medium")})
elif run_rows is not None:
    st.caption("No runs yet: start one on the Train page, or ship some in `checkpoints/`.")

st.subheader("Datasets")
dataset_rows = _or_note(_rows("dataset_rows"), "The dataset list is", "core.datasets")
if dataset_rows:
    st.dataframe([{k: v for k, v in row.items() if k != "fix"} for row in dataset_rows], hide_index=True,
                 column_config={"On disk": st.column_config.CheckboxColumn("On disk")}, key="home_datasets")
    missing = [row for row in dataset_rows if not row["On disk"]]
    if missing:
        with st.expander(f"How to get the {len(missing)} missing dataset(s)"):
            for row in missing:
                st.markdown(f"**{row['Dataset']}**, any one of:")
                for step in row["fix"]:
                    lead_in = step.text.endswith(":")  # "on Debian/Ubuntu:" goes before its command
                    if step.text and (lead_in or not step.command):
                        st.caption(step.text)
                    if step.command:
                        st.code(step.command, language="bash", wrap_lines=True)
                    if step.text and step.command and not lead_in:
                        st.caption(step.text)
elif dataset_rows is not None:
    st.caption("No datasets are registered.")

st.subheader("Where it runs")
info = runtime_info()
st.metric("Device", info["device"])
st.markdown(f"torch **{info['torch']}** · Python **{info['python']}** · Streamlit **{info['streamlit']}** · "
            f"**{info['threads']}** CPU thread(s) for torch")
