"""The lab's comparison charts, drawn once by plotly for the screen, the downloaded file and the study report.

    probe_bars(bars, metric, latent)  -> Figure     a probe's accuracy or cross-entropy per loss, grouped by family
    sweep_lines(series, metric)       -> Figure     the metric against latent size, per loss and family
    alpha_scale_maps(maps)            -> Figure     the adaptive loss's learned α and c per pixel
    standalone_html(fig) / report_html(fig) / figure_json(fig)                     the figure as a file
    chart_config(filename)            -> dict       plotly's toolbar: PNG export at twice the size, no logo
    loss_colour(loss), family_colour(family), class_colours(n)                      colours, from plotly.colors

One renderer: a page draws the Figure with `st.plotly_chart(fig, config=chart_config(name))` (plotly's own
toolbar button saves it as PNG) and offers `standalone_html(fig)`, an interactive file that works offline
(plotly.js inlined, about 4.6 MB, so pages build it only when the button is pressed); a study report
(core.report) writes `report_html(fig)` (plotly.js from its CDN, a few KB: a report folder stays small and
no copy of plotly.js is kept in the repository or in any study folder) and `figure_json(fig)` (the figure
itself, which `plotly.io.read_json` opens offline) next to report.md, which links to both.

plotly is imported inside the functions: core imports without it.

`WEBGL_RELEASE_JS` is for pages with WebGL charts (3-D scenes): Streamlit replaces a chart's element
whenever its figure changes, and plotly.js leaves the replaced chart's WebGL context to the garbage
collector, so a few reruns of a page with several 3-D charts pass the browser's limit of about 16 live
contexts, and the browser kills the oldest, which may be a chart still on screen (it goes blank). The
script releases (WEBGL_lose_context) the context of every canvas that has left the page for good.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Collection, Sequence
from typing import Any

__all__ = [
    "CHART_HEIGHT",
    "WEBGL_RELEASE_JS",
    "alpha_scale_maps",
    "chart_config",
    "class_colours",
    "family_colour",
    "figure_json",
    "lambda_lines",
    "loss_colour",
    "probe_bars",
    "report_html",
    "standalone_html",
    "sweep_lines",
]

CHART_HEIGHT = 380
# Each loss keeps one colour in every chart: its shade of plotly's Tableau 10 (T10).
_LOSS_SHADE = {"mse": 0, "smooth_l1": 1, "geman_mcclure": 2, "adaptive": 3, "cauchy": 4, "general": 5, "welsch": 6,
               "charbonnier": 7, "l1": 8, "students_t": 9}
_FAMILY_DASH = ("solid", "dash", "dot", "dashdot", "longdash")
_FAMILY_SYMBOL = ("circle", "square", "diamond", "triangle-up", "x")
_MARGIN = {"l": 60, "r": 20, "t": 70, "b": 60}


def loss_colour(loss: str | None) -> str:
    from plotly.colors import qualitative

    shade = _LOSS_SHADE.get(str(loss))
    return qualitative.T10[shade] if shade is not None else "#79706E"


def _family_rank(family: str | None) -> int:
    from core.families import FAMILIES

    names = list(FAMILIES)
    return names.index(family) if family in names else len(names)


def family_colour(family: str | None) -> str:
    from plotly.colors import qualitative

    return qualitative.Dark2[_family_rank(family) % len(qualitative.Dark2)]


def class_colours(n: int) -> list[str]:
    """n colours for classes (plotly's D3 palette, repeated past ten)."""
    from plotly.colors import qualitative

    return [qualitative.D3[i % len(qualitative.D3)] for i in range(n)]


def chart_config(filename: str) -> dict[str, Any]:
    """st.plotly_chart's config: the toolbar's camera button saves `filename`.png at twice the size."""
    return {"displaylogo": False, "toImageButtonOptions": {"format": "png", "filename": filename, "scale": 2}}


def _figure(data: list, layout: dict) -> Any:
    import plotly.graph_objects as go

    return go.Figure(data=data, layout={"template": "plotly_white", **layout})


def _title(text: str, subtitle: str = "") -> dict:
    return {"text": text, "subtitle": {"text": subtitle}, "x": 0, "xanchor": "left", "y": 0.97, "yanchor": "top",
            "font": {"size": 15}}


def _legend_on_top() -> dict:
    # above the plot area and right-aligned: clear of the ticks and of the title
    return {"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"}


def probe_bars(bars: Sequence[dict], title: str, *, accuracy: bool, subtitle: str = "") -> Any:
    """Bars of `compare.aggregate` items (one per family and loss): the loss on the category axis, one bar
    per family beside each other (coloured by family; a single family's bars are coloured by loss), the
    value on each bar and ± the error as an error bar. Past MAX_UPRIGHT_BARS categories the bars lie
    down, their labels on the left, read level, and the chart grows with them."""
    families = sorted({b["family"] for b in bars}, key=_family_rank)
    losses = list(dict.fromkeys(b["loss_label"] for b in bars))
    lying = len(losses) > MAX_UPRIGHT_BARS
    data = []
    for family in families:
        mine = {b["loss_label"]: b for b in bars if b["family"] == family}
        xs = [label for label in losses if label in mine]
        items = [mine[label] for label in xs]
        values = [b["mean"] for b in items]
        error = {"type": "data", "array": [b["error"] for b in items], "visible": True, "thickness": 1.2}
        data.append({
            "type": "bar", "name": items[0].get("family_title", family),
            **({"orientation": "h", "y": xs, "x": values, "error_x": error} if lying
               else {"x": xs, "y": values, "error_y": error}),
            "marker": {"color": family_colour(family) if len(families) > 1
                       else [loss_colour(b["loss"]) for b in items]},
            "text": [f"{b['mean']:.3f}" for b in items], "textposition": "outside", "cliponaxis": False,
            "customdata": [[b.get("model", ""), b["error"], b["error_over"]] for b in items],
            "hovertemplate": ("%{y} · %{customdata[0]}<br>%{x:.4f}" if lying
                              else "%{x} · %{customdata[0]}<br>%{y:.4f}")
                             + " ± %{customdata[1]:.3f} (%{customdata[2]})<extra></extra>",
        })
    top = max([b["mean"] + b["error"] for b in bars] + [0.0])
    value_axis = {"range": [0, 1.08] if accuracy else [0, top * 1.18 or 1.0],
                  "title": {"text": title.split(" (")[0]}, "tickformat": ".2f"}
    layout = {"title": _title(title, subtitle), "height": CHART_HEIGHT, "margin": _MARGIN, "barmode": "group",
              "bargap": 0.25, "showlegend": len(families) > 1, "legend": _legend_on_top(),
              "uniformtext": {"minsize": 9, "mode": "hide"}}
    if lying:
        ticks = [_tick_text(label, max_lines=2, width=LYING_TICK_CHARACTERS) for label in losses]
        rows = len(losses) * max(1, len(families))
        row_px = 34 if any("<br>" in tick for tick in ticks) else 24  # room for a label's two lines
        layout.update(height=max(CHART_HEIGHT, 130 + rows * row_px), xaxis=value_axis,
                      yaxis={"automargin": True, "autorange": "reversed", "tickvals": losses, "ticktext": ticks})
    else:
        ticks = [_tick_text(label) for label in losses]
        layout.update(yaxis=value_axis, xaxis={"tickangle": _tick_angle(ticks), "automargin": True,
                                               "tickvals": losses, "ticktext": ticks})
    return _figure(data, layout)


TICK_CHARACTERS = 22  # a category label's lines are cut to this (the whole label is in the hover text)
LYING_TICK_CHARACTERS = 30  # the same, for the labels of lying bars, read level on the left
MAX_UPRIGHT_BARS = 8  # more categories than this and probe_bars lays its bars down


def _tick_angle(labels: Sequence[str]) -> int:
    """Level ticks for a few bars; slanted for many; upright for many two-line labels, whose slanted lines
    run into the next bar's."""
    if len(labels) <= 4:
        return 0
    return -90 if any("<br>" in str(label) for label in labels) else -25


def _tick_text(label: str, max_lines: int = 3, width: int = TICK_CHARACTERS) -> str:
    """A tick label wrapped at spaces into lines of at most `width` characters, each "<br>" part in at
    most `max_lines` lines, the last cut with an ellipsis when more was left."""
    lines = []
    for part in str(label).split("<br>"):
        wrapped = textwrap.wrap(part, width, break_long_words=True) or [""]
        if len(wrapped) > max_lines:
            wrapped = [*wrapped[: max_lines - 1], wrapped[max_lines - 1][: width - 1] + "…"]
        lines += wrapped
    return "<br>".join(lines)


def sweep_lines(series: dict[str, dict], title: str, *, ylabel: str = "accuracy", subtitle: str = "") -> Any:
    """Lines of `compare.sweep` (the metric against latent size): one per loss and family, coloured by loss,
    dashed and marked by family; a log₂ latent-size axis with a tick at each size. Series that share a
    loss and family (a swept setting) take a colour each instead, or they could not be told apart."""
    kinds = [(s.get("loss"), s.get("family")) for s in series.values()]
    by_series = len(kinds) > len(set(kinds))
    palette = class_colours(len(series))
    data = []
    for i, (label, s) in enumerate(series.items()):
        rank = _family_rank(s.get("family"))
        colour = palette[i] if by_series else loss_colour(s.get("loss"))
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": label, "x": s["dims"], "y": s["mean"],
            "error_y": {"type": "data", "array": s["error"], "visible": True, "thickness": 1},
            "line": {"color": colour, "dash": _FAMILY_DASH[rank % len(_FAMILY_DASH)]},
            "marker": {"symbol": _FAMILY_SYMBOL[rank % len(_FAMILY_SYMBOL)], "size": 8},
            "hovertemplate": f"{label}<br>latent %{{x}}: %{{y:.4f}}<extra></extra>",
        })
    dims = sorted({d for s in series.values() for d in s["dims"]})
    layout = {"title": _title(title, subtitle), "height": CHART_HEIGHT + 40, "margin": {**_MARGIN, "r": 10},
              "legend": {"x": 1.02, "xanchor": "left", "y": 1, "yanchor": "top"},
              "xaxis": {"type": "log", "title": {"text": "latent size (floats in z)"}, "tickvals": dims,
                        "ticktext": [f"{d:,}" for d in dims]},
              "yaxis": {"title": {"text": ylabel}, "tickformat": ".2f"}}
    return _figure(data, layout)


LAMBDA_ZERO_AT = 1e-4  # where λ = 0 (the unsupervised autoencoder) sits on a log λ axis


def lambda_lines(series: dict[str, list[dict]], key: str, title: str, *, ylabel: str, subtitle: str = "",
                 chosen: Collection[str] = (), reference: tuple[float, str] | None = None) -> Any:
    """`key` against the class penalty's λ, a line per label (e.g. per bottleneck) of score rows
    {"run_id", "lambda", key}, λ ascending on a log axis with λ = 0 drawn at LAMBDA_ZERO_AT and labelled 0;
    the rows in `chosen` drawn as stars; `reference` (value, text) a dotted line."""
    data = []
    for label, rows in series.items():
        rows = sorted(rows, key=lambda r: r["lambda"])
        data.append({
            "type": "scatter", "mode": "lines+markers", "name": label,
            "x": [max(r["lambda"], LAMBDA_ZERO_AT) for r in rows], "y": [r[key] for r in rows],
            "customdata": [r["lambda"] for r in rows],
            "marker": {"symbol": ["star" if r["run_id"] in chosen else "circle" for r in rows],
                       "size": [14 if r["run_id"] in chosen else 8 for r in rows]},
            "hovertemplate": f"{label}<br>λ = %{{customdata:g}}: %{{y:.4f}}<extra></extra>",
        })
    lambdas = sorted({max(r["lambda"], LAMBDA_ZERO_AT) for rows in series.values() for r in rows})
    # the legend inside, bottom right: both curves rise with λ, and a half-width chart has no room above
    layout = {"title": _title(title, subtitle), "height": CHART_HEIGHT, "margin": _MARGIN,
              "legend": {"x": 1, "xanchor": "right", "y": 0.02, "yanchor": "bottom",
                         "bgcolor": "rgba(255,255,255,0.8)"},
              "xaxis": {"type": "log", "title": {"text": "λ (log scale; 0 drawn at the left)"}, "tickvals": lambdas,
                        "ticktext": ["0" if v == LAMBDA_ZERO_AT else f"{v:g}" for v in lambdas]},
              "yaxis": {"title": {"text": ylabel}}}
    if reference is not None:
        value, text = reference
        layout["shapes"] = [{"type": "line", "xref": "paper", "x0": 0, "x1": 1, "y0": value, "y1": value,
                             "line": {"dash": "dot", "color": "#555", "width": 1}}]
        layout["annotations"] = [{"xref": "paper", "x": 0, "xanchor": "left", "y": value, "yanchor": "bottom",
                                  "text": text, "showarrow": False, "font": {"size": 11, "color": "#555"}}]
    return _figure(data, layout)


def _range_text(lo: float, hi: float) -> str:
    digits = max(3, 2 - math.floor(math.log10(abs(hi - lo)))) if hi > lo else 3
    return f"{lo:.{digits}g} to {hi:.{digits}g}"


def alpha_scale_maps(maps: dict, *, channel_mean: bool = True) -> Any:
    """The learned α and c per pixel (`compare.adaptive_maps`, averaged over colour channels) side by side.
    α is coloured on a fixed scale, the bounds it was learned within, so a map that barely moved looks
    flat; c, which has no bounds, over its own range. Both ranges are written in the titles."""
    from plotly.subplots import make_subplots

    alpha = maps["alpha"].mean(axis=0) if channel_mean else maps["alpha"]
    scale = maps["scale"].mean(axis=0) if channel_mean else maps["scale"]
    lo, hi = maps["alpha_bounds"]
    a_lo, a_hi = float(alpha.min()), float(alpha.max())
    c_lo, c_hi = float(scale.min()), float(scale.max())
    fig = make_subplots(rows=1, cols=2, horizontal_spacing=0.16, subplot_titles=(
        f"α: {_range_text(a_lo, a_hi)} (colours span the bounds {lo:g} to {hi:g})",
        f"c: {_range_text(c_lo, c_hi)} (colours span that range)"))
    fig.add_heatmap(z=alpha, zmin=lo, zmax=hi, colorscale="Viridis", row=1, col=1,
                    colorbar={"x": 0.42, "len": 0.85, "tickformat": ".1f", "title": {"text": "α"}},
                    hovertemplate="row %{y}, column %{x}: α = %{z:.4f}<extra></extra>")
    fig.add_heatmap(z=scale, zmin=c_lo, zmax=c_hi if c_hi > c_lo else c_lo + 1e-6, colorscale="Viridis", row=1,
                    col=2, colorbar={"x": 1.0, "len": 0.85, "tickformat": ".3g", "title": {"text": "c"}},
                    hovertemplate="row %{y}, column %{x}: c = %{z:.4g}<extra></extra>")
    fig.update_yaxes(autorange="reversed", showticklabels=False)
    fig.update_xaxes(showticklabels=False)
    fig.update_yaxes(scaleanchor="x", row=1, col=1)
    fig.update_yaxes(scaleanchor="x2", row=1, col=2)
    fig.update_annotations(font={"size": 12})
    fig.update_layout(template="plotly_white", height=CHART_HEIGHT, margin={"l": 10, "r": 10, "t": 60, "b": 10},
                      title=_title(f"What the adaptive loss learned · {maps['run_id']}"))
    return fig


def standalone_html(fig: Any) -> str:
    """The figure as one interactive HTML file that works offline (plotly.js inlined)."""
    return fig.to_html(include_plotlyjs=True, full_html=True, config={"displaylogo": False})


def report_html(fig: Any) -> str:
    """The figure as a small HTML file for a report folder (plotly.js from its CDN)."""
    return fig.to_html(include_plotlyjs="cdn", full_html=True, config={"displaylogo": False})


def figure_json(fig: Any) -> str:
    """The figure as plotly JSON (`plotly.io.read_json` reads it back, offline)."""
    return fig.to_json()


# Run once per page (a window flag guards it): remember each canvas's WebGL context without keeping the
# canvas alive (WeakMap), and release the context of a canvas that has left the document and not come
# back within half a second (plotly moves no canvas that long).
WEBGL_RELEASE_JS = """
(() => {
  if (window.__robustLossLabWebgl) return;
  window.__robustLossLabWebgl = true;
  const contexts = new WeakMap();
  const getContext = HTMLCanvasElement.prototype.getContext;
  HTMLCanvasElement.prototype.getContext = function (type, attributes) {
    const context = getContext.call(this, type, attributes);
    if (context && /webgl/i.test(String(type))) contexts.set(this, context);
    return context;
  };
  const release = (canvas) => {
    const context = contexts.get(canvas);
    if (!context || canvas.isConnected || context.isContextLost()) return;
    const lose = context.getExtension('WEBGL_lose_context');
    if (lose) lose.loseContext();
    contexts.delete(canvas);
  };
  new MutationObserver((records) => {
    for (const record of records) {
      for (const node of record.removedNodes) {
        if (!(node instanceof Element)) continue;
        const canvases = node.tagName === 'CANVAS' ? [node] : Array.from(node.querySelectorAll('canvas'));
        if (canvases.length) setTimeout(() => canvases.forEach(release), 500);
      }
    }
  }).observe(document.documentElement, {childList: true, subtree: true});
})();
"""
