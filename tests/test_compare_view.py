"""The comparison without Streamlit: folding seeds per family (core.compare), the sections these runs can show
(core.compare_view), the charts (core.charts: one plotly figure for the screen, the download and the report)
and the labelled image grids (core.image_grid)."""

from __future__ import annotations

import io
import json
import shlex

import numpy as np
import plotly.graph_objects as go
import plotly.io as pio
import pytest
from PIL import Image

from core import charts, compare
from core import compare_view as cv
from core.commands import REPO

VAE, VQ = ("vae", "VAE"), ("vqvae", "VQ-VAE")


def _row(family: tuple[str, str], loss: str, latent: int, acc: float | None, seed: int = 0, **extra) -> dict:
    return {"run_id": f"{family[0]}-{loss}-{latent}-{seed}", "family": family[0], "family_title": family[1],
            "model": family[1], "loss": loss, "loss_label": loss.title(), "latent_dim": latent, "seed": seed,
            "mlp_acc": acc, "mlp_acc_std": 0.01 if acc is not None else None, "probe_seeds": 3, "state": "finished",
            "dataset": "digits", **extra}


def test_aggregate_folds_training_seeds_within_a_family_and_sweep_keeps_families_apart() -> None:
    rows = [_row(VAE, "cauchy", 16, a, seed=s) for s, a in enumerate((0.6, 0.7, 0.8))]
    rows += [_row(VQ, "cauchy", 16, 0.9), _row(VQ, "cauchy", 64, 0.95), _row(VAE, "cauchy", 64, None)]
    out = {(b["family"], b["latent_dim"]): b for b in compare.aggregate(rows, "mlp_acc")}
    assert set(out) == {("vae", 16), ("vqvae", 16), ("vqvae", 64)}  # the VQ-VAE is not folded into the VAE
    assert out["vae", 16]["mean"] == pytest.approx(0.7) and out["vae", 16]["error"] == pytest.approx(0.1)
    assert out["vae", 16]["error_over"] == "3 training seeds" and out["vae", 16]["n"] == 3
    assert out["vqvae", 16]["error"] == 0.01 and out["vqvae", 16]["error_over"] == "3 probe seeds"
    series = compare.sweep(rows, "mlp_acc")
    assert list(series) == ["Cauchy · VAE", "Cauchy · VQ-VAE"]
    assert series["Cauchy · VQ-VAE"]["dims"] == [16, 64] and series["Cauchy · VQ-VAE"]["mean"] == [0.9, 0.95]
    assert series["Cauchy · VAE"]["dims"] == [16]
    assert list(compare.sweep(rows[:3], "mlp_acc")) == ["Cauchy"]  # one family: the loss alone names a line


def _comparison(rows: list[dict]) -> cv.Comparison:
    return cv.Comparison("test", "test", [], rows)


def test_sections_are_chosen_by_what_the_runs_can_show() -> None:
    one = _comparison([_row(VAE, "mse", 16, 0.7), _row(VAE, "cauchy", 16, 0.8)])
    keys = [s.key for s in cv.sections_for(one)]
    assert "table" in keys and "probe_bars" in keys and "sweep" not in keys and "adaptive" not in keys
    assert cv.SECTIONS[[s.key for s in cv.SECTIONS].index("probe_bars")].view(one).title == (
        "Probe accuracy and cross-entropy per loss")
    both = _comparison([_row(VAE, "mse", 16, 0.7), _row(VQ, "mse", 16, 0.8), _row(VQ, "mse", 64, 0.9),
                        _row(VAE, "adaptive", 64, 0.6)])
    keys = [s.key for s in cv.sections_for(both)]
    assert {"sweep", "adaptive"} <= set(keys)
    bars = next(s for s in cv.SECTIONS if s.key == "probe_bars")
    assert bars.title(both) == "VAE against VQ-VAE per loss"
    unprobed = _comparison([_row(VAE, "mse", 16, None)])
    assert "probe_bars" not in [s.key for s in cv.sections_for(unprobed)]
    [note] = next(s for s in cv.SECTIONS if s.key == "status").view(unprobed).blocks
    assert "no probe results yet" in note.text and "-m core.probes" in note.command

    # A new family's view is one registered section; the page draws whatever blocks it makes.
    section = cv.register_section(cv.Section("elbo", "ELBO per loss", lambda c: any(r["family"] == "barron"
                                                                                    for r in c.rows),
                                             lambda c, _: [cv.Note("info", "the ELBO table")]), before="sweep")
    try:
        assert "elbo" not in [s.key for s in cv.sections_for(both)]
        keys = [s.key for s in cv.sections_for(_comparison([_row(("barron", "Barron"), "mse", 16, 0.5)]))]
        assert keys.index("elbo") < len(keys) and cv.SECTIONS.index(section) < [s.key for s in cv.SECTIONS].index(
            "sweep")
    finally:
        cv.SECTIONS.remove(section)


def test_table_hides_empty_columns_titles_the_rest_and_sorts() -> None:
    rows = [_row(VAE, "mse", 16, 0.7, val_kl=3.0), _row(VAE, "cauchy", 16, 0.8, val_kl=4.0),
            _row(VQ, "mse", 16, None, val_commit=0.2)]
    comparison = _comparison(rows)
    [table] = cv.SECTIONS[[s.key for s in cv.SECTIONS].index("table")].view(comparison, {"sort": "mlp_acc"}).blocks
    assert [r["run_id"] for r in table.rows] == ["vae-cauchy-16-0", "vae-mse-16-0", "vqvae-mse-16-0"]
    assert "linear_acc" not in table.columns and "dataset" not in table.columns  # empty, or the same for all
    assert {"model", "val_kl", "val_commit"} <= set(table.columns) and table.columns[-1] == "run_id"
    assert table.titles["mlp_acc"] == "MLP acc" and table.formats["mlp_acc"] == "%.3f"
    assert table.csv.splitlines()[0].startswith("model,loss_label,latent_dim")


def test_probe_command_is_pasteable_with_each_run_quoted() -> None:
    command = cv.probe_command(["/tmp/my runs/a", f"{REPO}/runs/b"])
    assert command.startswith(f"cd {shlex.quote(str(REPO))} && ")
    words = shlex.split(command.split(" && ", 1)[1])
    assert words[1:4] == ["-m", "core.probes", "/tmp/my runs/a"] and words[4] == "runs/b"


def test_bars_group_families_per_loss_with_values_and_errors() -> None:
    rows = [_row(VAE, "mse", 16, 0.7), _row(VAE, "cauchy", 16, 0.8), _row(VQ, "mse", 16, 0.75),
            _row(VQ, "cauchy", 16, 0.85)]
    fig = cv.probe_bars(rows, "mlp_acc", 16)
    go.Figure(fig.to_dict())  # valid plotly
    assert [t.name for t in fig.data] == ["VAE", "VQ-VAE"] and fig.layout.barmode == "group"
    assert list(fig.data[0].x) == ["Mse", "Cauchy"] and list(fig.data[1].y) == [0.75, 0.85]
    assert list(fig.data[0].error_y.array) == [0.01, 0.01] and list(fig.data[0].text) == ["0.700", "0.800"]
    assert fig.data[0].marker.color == charts.family_colour("vae") != charts.family_colour("vqvae")
    single = cv.probe_bars(rows[:2], "mlp_acc", 16)
    assert list(single.data[0].marker.color) == [charts.loss_colour("mse"), charts.loss_colour("cauchy")]
    assert not single.layout.showlegend and cv.probe_bars(rows, "mlp_acc", 64) is None
    assert cv.sweep_chart(rows, "mlp_acc") is None  # one latent size: no sweep


def test_alpha_map_keeps_a_fixed_scale_and_states_both_ranges() -> None:
    alpha = np.full((1, 4, 4), 1.8760, dtype=np.float32)
    alpha[0, 0, 0] = 1.8775
    scale = np.linspace(0.71, 0.72, 16, dtype=np.float32).reshape(1, 4, 4)
    fig = charts.alpha_scale_maps({"run_id": "r", "alpha": alpha, "scale": scale, "alpha_bounds": (0.0, 3.0)})
    a, c = fig.data
    assert (a.zmin, a.zmax) == (0.0, 3.0)  # a 0.0015 spread is not stretched over the colours
    assert (c.zmin, c.zmax) == pytest.approx((0.71, 0.72))
    titles = [t.text for t in fig.layout.annotations]
    assert titles[0] == "α: 1.876 to 1.8775 (colours span the bounds 0 to 3)"
    assert titles[1].startswith("c: 0.71 to 0.72")


def test_one_figure_makes_the_offline_download_the_report_file_and_its_json() -> None:
    fig = cv.probe_bars([_row(VAE, "mse", 16, 0.7)], "mlp_acc", 16)
    offline, report = charts.standalone_html(fig), charts.report_html(fig)
    assert len(offline) > 3_000_000 and "<script src=" not in offline  # plotly.js inlined: opens offline
    assert len(report) < 30_000 and 'src="https://cdn.plot.ly/' in report
    back = pio.from_json(charts.figure_json(fig))
    assert back.data[0].y == fig.data[0].y and json.loads(charts.figure_json(fig))["layout"]["title"]["text"] == (
        "MLP probe accuracy")
    assert charts.chart_config("x")["toImageButtonOptions"] == {"format": "png", "filename": "x", "scale": 2}


def test_image_grid_places_each_row_at_its_zoom_with_readable_labels() -> None:
    from core.image_grid import grid_png

    rng = np.random.default_rng(0)
    originals = rng.integers(0, 256, size=(3, 1, 8, 8), dtype=np.uint8)
    decoded = rng.integers(0, 256, size=(2, 1, 8, 8), dtype=np.uint8)  # a short row: padded white
    png = grid_png([("original", originals), ("VQ-VAE · Cauchy (α=1)", decoded), ("none", None)],
                   columns=["zero", "one", "two"])
    image = np.asarray(Image.open(io.BytesIO(png)).convert("L"))
    zoom, pad = 10, 2  # 8-pixel images are drawn 10× (about 84 pixels a tile)
    tile = 8 * zoom + pad
    width = image.shape[1]
    label_w = width - (3 * tile + pad)
    head = image.shape[0] - (2 * tile + pad)
    assert head >= 15 and label_w > 100  # room for a header line and the longest label
    for r, images in enumerate((originals, decoded)):
        for c in range(len(images)):
            y, x = head + pad + r * tile, label_w + pad + c * tile
            np.testing.assert_array_equal(image[y:y + 8 * zoom, x:x + 8 * zoom],
                                          np.kron(images[c, 0], np.ones((zoom, zoom), dtype=np.uint8)))
    y, x = head + pad + tile, label_w + pad + 2 * tile
    assert (image[y:y + 8 * zoom, x:x + 8 * zoom] == 255).all()  # the missing third image: a white tile
    for r in range(2):  # each row's label is drawn in its strip, at least 10 pixels tall
        strip = image[head + r * tile:head + (r + 1) * tile, :label_w] < 128
        rows_inked = np.flatnonzero(strip.any(1))
        assert strip.sum() > 50 and rows_inked.max() - rows_inked.min() >= 10
    assert (image[:head, label_w:] < 128).sum() > 30  # the column names
