"""Home: what the lab does, links to every page, where it runs, and which datasets and runs it found."""

from __future__ import annotations

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


def _not_available(what: str, module: str, error: Exception) -> None:
    st.info(
        f"{what} not available yet: `{module}` could not be used ({type(error).__name__}: {error}). "
        "The rest of the lab works without it.",
        icon=":material/hourglass_empty:",
    )


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
    from core.runs import list_runs

    rows = []
    for run in list_runs():
        config: dict[str, Any] = dict(getattr(run, "config", None) or {})
        status: dict[str, Any] = dict(getattr(run, "status", None) or {})
        epoch, epochs = status.get("epoch"), status.get("epochs") or config.get("epochs")
        rows.append(
            {
                "run": getattr(run, "run_id", "?"),
                "dataset": config.get("dataset", ""),
                "loss": config.get("loss", ""),
                "state": status.get("state", ""),
                "epoch": f"{epoch}/{epochs}" if epoch is not None and epochs else "",
                "shipped": "yes" if getattr(run, "shipped", False) else "",
            }
        )
    return rows


data_col, runs_col = st.columns(2)
with data_col:
    st.subheader("Datasets")
    # The home page must never raise, whatever state the data and run modules are in.
    try:
        dataset_rows = _dataset_rows()
    except Exception as error:
        _not_available("The dataset list is", "core.datasets", error)
    else:
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
    try:
        run_rows = _run_rows()
    except Exception as error:
        _not_available("The run list is", "core.runs", error)
    else:
        if run_rows:
            st.dataframe(run_rows, hide_index=True)
        else:
            st.caption("No runs yet: start one on the Train page, or ship some in `checkpoints/`.")
