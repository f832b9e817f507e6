"""What every page of the lab shares: the page registry, the header, the sidebar footer, feedback beside
the control that caused it, fast figures.

Not a page itself: `app.py` lists pages with `st.navigation`, which turns off Streamlit's automatic
discovery of `pages/`, so this file never shows up in the menu.
"""

from __future__ import annotations

import base64
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import streamlit as st

from core.paths import REPO

APP_NAME = "Robust Loss Lab"
APP_ICON = ":material/science:"


@dataclass(frozen=True)
class LabPage:
    """One page of the app: its script (relative to the repository root), menu entry and one-line pitch."""

    path: str
    title: str
    icon: str
    summary: str
    section: str
    default: bool = False

    @property
    def url_path(self) -> str:
        """The page's URL name: its file name, as Streamlit's legacy pages/ mode names it too, so that
        both modes give the page the same id (see `leave_legacy_pages_mode`)."""
        return Path(self.path).stem

    def exists(self, root: Path = REPO) -> bool:
        return (root / self.path).is_file()


# Every page the lab knows, in menu order. Pages still being written (their file absent) are skipped
# by `available_pages`, so the app runs on any checkout; a new page only needs its file to exist.
LAB_PAGES: tuple[LabPage, ...] = (
    LabPage("pages/home.py", "Home", ":material/home:",
            "What the lab does, where it runs, and what it found.", "Lab", default=True),
    LabPage("pages/loss_explorer.py", "Loss Explorer", ":material/ssid_chart:",
            "Play with ρ(x, α, c), its derivative, weight and density; fit α and c to data.", "Lab"),
    LabPage("pages/train.py", "Train", ":material/model_training:",
            "Train a VAE, a VQ-VAE or another model with the loss of your choice and watch it learn.",
            "Experiments"),
    LabPage("pages/embeddings.py", "Embeddings", ":material/scatter_plot:",
            "Explore what the latent space learned, in 2-D and 3-D projections.", "Experiments"),
    LabPage("pages/compare.py", "Compare", ":material/compare_arrows:",
            "Put runs side by side: losses, reconstructions, probes.", "Experiments"),
)


def available_pages(root: Path = REPO) -> list[LabPage]:
    """The registered pages whose script exists under `root`."""
    return [page for page in LAB_PAGES if page.exists(root)]


def leave_legacy_pages_mode() -> None:
    """Rerun through app.py if Streamlit ran this page bare, in its legacy `pages/` folder mode.

    Because the repository has a `pages/` folder, a fresh server starts in that legacy mode, and if its
    first visitor opens a page URL (say /loss_explorer) Streamlit runs the page file alone: no app.py,
    so no wide layout, no menu, and every file in pages/ listed in the sidebar. app.py's `st.navigation`
    ends the mode for good, so the page ends it the same way and reruns; the rerun goes through app.py
    and lands on the same page (a page's URL name is its file name, so the page id is the same). The
    flag is Streamlit's (PagesManager.uses_pages_directory): if it ever goes away, there is nothing to do.
    """
    try:
        from streamlit.runtime.pages_manager import PagesManager
    except ImportError:
        return
    if getattr(PagesManager, "uses_pages_directory", False):
        PagesManager.uses_pages_directory = False
        st.rerun()


def page_header(title: str, icon: str, blurb: str) -> None:
    """The page's title with its icon and a one-paragraph caption, the same on every page. Call it first:
    it also makes sure the page runs inside the app's frame (`leave_legacy_pages_mode`)."""
    leave_legacy_pages_mode()
    st.title(f"{icon} {title}")
    st.caption(blurb)


@st.cache_resource(show_spinner=False)
def runtime_info() -> dict[str, str]:
    """Where the lab runs: device (CUDA GPU name or CPU), torch/Python/Streamlit versions, CPU threads."""
    import torch

    if torch.cuda.is_available():
        index = torch.cuda.current_device()
        device = f"CUDA: {torch.cuda.get_device_name(index)} (cuda:{index})"
    else:
        device = "CPU (no CUDA device visible)"
    return {
        "device": device,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "streamlit": st.__version__,
        "threads": str(torch.get_num_threads()),
    }


def sidebar_footer() -> None:
    """The bottom of every page's sidebar: where the lab runs, in one caption."""
    info = runtime_info()
    st.sidebar.divider()
    st.sidebar.caption(f"{APP_NAME} · {info['device']} · torch {info['torch']}")


# -- feedback where the user is looking ---------------------------------------------------------------
FEEDBACK_KEY = "lab_feedback"  # the last action's {place, kind, text, shown, toasted}, drawn at its place
FEEDBACK_S = 10.0  # how long it stays beside its control (a live fragment redraws every few seconds)


def act(place: str, action: Callable[..., tuple], ok: str, fail: str, *args: Any,
        errors: tuple[type[BaseException], ...] = (ValueError, OSError)) -> None:
    """A button's callback: run `action(*args)` and keep how it went ("ok" formatted with what the action
    returned, or "fail: <the error>") for `feedback(place)`, which draws it beside the control."""
    try:
        kind, text = "success", ok.format(*action(*args))
    except errors as exc:
        kind, text = "error", f"{fail}: {exc}"
    st.session_state[FEEDBACK_KEY] = {"place": place, "kind": kind, "text": text, "shown": None,
                                      "toasted": False}


def feedback(place: str) -> None:
    """The last action's result, if it was done at `place`: drawn here, next to its control, for
    FEEDBACK_S seconds (so a page that redraws itself on a timer does not wipe it at once), and once as a
    toast (which shows wherever the page is scrolled). The time counts from its first drawing, so a slow
    rerun after the click cannot use it up before it was ever seen."""
    note = st.session_state.get(FEEDBACK_KEY)
    if not note or note["place"] != place:
        return
    if note["shown"] is None:
        note["shown"] = time.monotonic()
    elif time.monotonic() - note["shown"] > FEEDBACK_S:
        del st.session_state[FEEDBACK_KEY]
        return
    (st.success if note["kind"] == "success" else st.error)(note["text"])
    if not note["toasted"]:
        note["toasted"] = True
        st.toast(note["text"], icon=":material/check_circle:" if note["kind"] == "success" else ":material/error:")


def chart_grid(charts: list[tuple[str, dict]], key: str, columns: int = 3) -> None:
    """(name, {"data", "layout"}) figures drawn `columns` to a row."""
    for start in range(0, len(charts), columns):
        for col, (name, chart) in zip(st.columns(columns), charts[start:start + columns], strict=False):
            col.plotly_chart(fast_figure(chart["data"], chart["layout"]), key=f"{key}_{name}")


def typed_array(values: np.ndarray) -> dict[str, str]:
    """A NumPy array in plotly's own wire format for arrays, {"dtype", "bdata": base64 of the bytes}.

    plotly.py writes every NumPy array this way; doing it here skips its per-array checks. Float arrays
    go as little-endian float32 (what core.losses computes in); NaN stays NaN, a gap in a line.
    """
    array = np.ascontiguousarray(values, dtype="<f4")
    return {"dtype": "f4", "bdata": base64.b64encode(array.tobytes()).decode("ascii")}


def fast_figure(data: list[dict[str, Any]], layout: dict[str, Any]) -> Any:
    """A plotly Figure built from plain dicts without plotly's per-property validation.

    Validation, plotly's handling of NumPy arrays and its default template are most of the cost of a
    figure (about 9 ms of CPU for a 6-trace, 400-point line chart built the usual way against about 2 ms
    here, measured on this machine), and the Loss Explorer redraws seven per slider move. NumPy arrays
    at a trace's top level become typed arrays (`typed_array`); the dicts must be valid plotly, which the
    tests check by rebuilding every figure with validation on. The figure gets an empty template:
    plotly's default one adds about 7 KB of JSON to every figure, and Streamlit's theme
    (`theme="streamlit"`, the default) styles the chart anyway.
    """
    import plotly.graph_objects as go

    traces = [
        {key: typed_array(value) if isinstance(value, np.ndarray) else value for key, value in trace.items()}
        for trace in data
    ]
    return go.Figure(data=traces, layout={"template": {}, **layout}, _validate=False)
