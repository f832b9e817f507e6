"""A study's report (core.report) rewritten from the shipped reference study: the same table as the shipped
report.md, the Compare page's own figures (charts as plotly HTML and JSON beside report.md and linked from
it, image grids as PNG), small files, and no plotly.js copied into the folder."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import plotly.io as pio
import pytest
from PIL import Image

from core import compare
from core.report import summary_text, write_study

REPO = Path(__file__).resolve().parents[1]
SHIPPED = REPO / "checkpoints"
STUDY = "fashion-mnist-reference"


def _table(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.startswith("|")]


@pytest.mark.slow
def test_the_shipped_study_rewritten_keeps_its_table_and_draws_the_pages_figures(tmp_path: Path) -> None:
    folder = SHIPPED / "studies" / STUDY
    meta = json.loads((folder / "study.json").read_text())
    meta.pop("invocations")
    study = {s.name: s for s in compare.list_studies([SHIPPED])}[STUDY]
    runs = [info.open() for info in study.runs]
    out = tmp_path / STUDY
    summary = write_study(STUDY, runs, out, meta)

    report = (out / "report.md").read_text()
    assert _table(report) == _table((folder / "report.md").read_text())  # the same table, to the digit
    assert summary["figures"] == ["accuracy.html", "cross_entropy.html", "reconstructions.png", "samples.png",
                                  "adaptive.html"]
    for name in ("accuracy", "cross_entropy", "adaptive"):
        html = (out / "figures" / f"{name}.html").read_text()
        assert len(html) < 100_000 and 'src="https://cdn.plot.ly/' in html  # plotly.js is not copied
        assert f"](figures/{name}.html)" in report and f"](figures/{name}.json)" in report
    assert not list(out.rglob("plotly*.js"))
    # The chart files hold the probe numbers: the same figure the Compare page draws.
    fig = pio.read_json(out / "figures" / "accuracy.json")
    rows = compare.results_table(runs)
    for trace, family in zip(fig.data, ("vae", "vqvae"), strict=True):  # a trace per family
        expected = {r["loss_label"]: r["mlp_acc"] for r in rows if r["family"] == family}
        assert dict(zip(trace.x, trace.y, strict=True)) == pytest.approx(expected)
    adaptive = pio.read_json(out / "figures" / "adaptive.json")
    assert (adaptive.data[0].zmin, adaptive.data[0].zmax) == (0.0, 3.0)
    # The image grids: the originals and a row per loss, embedded in report.md.
    grid = np.asarray(Image.open(io.BytesIO((out / "figures" / "reconstructions.png").read_bytes())))
    assert (grid.shape[0] - 2) // (28 * 3 + 2) == 15 and "![" in report and "(figures/reconstructions.png)" in report
    # What the Compare page shows of it: the text before the figures.
    text = summary_text(out)
    assert text.startswith(f"# Study `{STUDY}`") and _table(text) == _table(report) and "## Figures" not in text
