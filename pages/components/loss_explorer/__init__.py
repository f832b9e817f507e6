"""The Loss Explorer's interactive core: a Streamlit custom component that draws ρ, ψ, ψ/x, −log p, p and
the NLL trade-off in the browser while α, c or the x range are dragged, and reports the settled state.

The frontend (`frontend/`) is static, hand-written and served by Streamlit from this folder: no
build step, no CDN, no plotly.js. It computes the curves with the same forms as core.losses; what it
cannot compute (log Z(α), the Student's t normalisers) comes from core.explorer.browser_tables.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import streamlit.components.v1 as components

FRONTEND = Path(__file__).with_name("frontend")


def loss_explorer(*, view: dict[str, Any], push: int, tables: dict[str, Any], key: str) -> dict[str, Any] | None:
    """Draw the explorer and return its last report (None before the first one).

    `view` is the server's state (core.explorer.ExplorerState.to_browser); the browser adopts it when it
    first draws and whenever `push` changes, i.e. when the server changed the state itself. A report is
    the state plus an `event` id that is new for every report (see core.explorer.apply_browser_value).
    """
    # Declared at each call, not at import: Streamlit registers a component only inside a script run.
    component = components.declare_component("loss_explorer", path=str(FRONTEND))
    return component(view=view, push=push, tables=tables, key=key, default=None)
