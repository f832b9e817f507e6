"""Home: what the lab does, links to every page, where it runs, and which datasets and runs it found."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from pages.chrome import APP_ICON, APP_NAME, available_pages, page_header, runtime_info

page_header(
    APP_NAME,
    APP_ICON,
    "See how the loss you train with shapes what a model learns.",
)

st.markdown(
    """
The lab is built on Barron's general robust loss ρ(x, α, c) (CVPR 2019), one formula whose shape α runs
from L2 (α = 2) through Charbonnier (1), Cauchy (0) and Geman-McClure (−2) to Welsch (−∞). Play with the
family and fit its α and c to data on the **Loss Explorer**; train models with any member, or let them
learn α and c as they go, and see what the choice does to what they learn.
"""
)

st.subheader("Pages")
pages = [page for page in available_pages() if not page.default]
columns = st.columns(max(len(pages), 1))
for column, page in zip(columns, pages, strict=False):
    with column, st.container(border=True):
        st.page_link(page.path, label=page.title, icon=page.icon)
        st.caption(page.summary)

st.subheader("Where it runs")
info = runtime_info()
st.metric("Device", info["device"])
st.markdown(
    f"torch **{info['torch']}** · Python **{info['python']}** · Streamlit **{info['streamlit']}** · "
    f"**{info['threads']}** CPU thread(s) for torch"
)

RUN_COLUMNS = ("run", "state", "dataset", "loss", "epoch", "where")  # of core.jobs.run_table()


def _rows_or_note(rows: Callable[[], list[dict[str, Any]]], what: str, module: str) -> list[dict[str, Any]] | None:
    """rows(), or None after a note saying `module` could not be used: the home page must never raise,
    whatever state the data and run modules are in (a partial checkout, a broken install)."""
    try:
        return rows()
    except Exception as error:
        st.info(
            f"{what} not available yet: `{module}` could not be used ({type(error).__name__}: {error}). "
            "The rest of the lab works without it.",
            icon=":material/hourglass_empty:",
        )
        return None


def _dataset_rows() -> list[dict[str, Any]]:
    from core.datasets import dataset_status

    return [
        {
            "dataset": status.get("title") or status.get("name"),
            "found": bool(status.get("found")),
            "where": status.get("where") or "",
            "fix": status.get("fix") or "",
        }
        for status in dataset_status()
    ]


def _run_rows() -> list[dict[str, Any]]:
    # core.runs by name, not only through core.jobs: a core.jobs imported earlier would hide its absence
    from core.jobs import run_table
    from core.runs import list_runs

    return [{key: row[key] for key in RUN_COLUMNS} for row in run_table(list_runs())]


data_col, runs_col = st.columns(2)
with data_col:
    st.subheader("Datasets")
    dataset_rows = _rows_or_note(_dataset_rows, "The dataset list is", "core.datasets")
    if dataset_rows is not None:
        if dataset_rows:
            st.dataframe(
                [{key: row[key] for key in ("dataset", "found", "where")} for row in dataset_rows],
                hide_index=True,
                column_config={"found": st.column_config.CheckboxColumn("found")},
            )
            missing = [row for row in dataset_rows if not row["found"]]
            if missing:
                with st.expander(f"How to get the {len(missing)} missing dataset(s)"):
                    for row in missing:
                        st.markdown(f"**{row['dataset']}**")
                        st.code(row["fix"], language="bash")
        else:
            st.caption("No datasets are registered.")

with runs_col:
    st.subheader("Runs")
    run_rows = _rows_or_note(_run_rows, "The run list is", "core.runs")
    if run_rows is not None:
        if run_rows:
            st.dataframe(run_rows, hide_index=True)
        else:
            st.caption("No runs yet: start one on the Train page, or ship some in `checkpoints/`.")
