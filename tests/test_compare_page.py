"""The Compare page through AppTest on the shipped reference study (checkpoints/), and on empty roots;
the shipped study itself (complete, probed without leakage, small); and the comparison's arithmetic."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import run_page
from streamlit.testing.v1 import AppTest

from core import compare
from core.probes import summary
from core.runs import checkpoints_root, open_run

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "compare.py")
SHIPPED = "fashion-mnist-reference"
LOSSES = {"mse", "cauchy", "geman_mcclure", "welsch", "smooth_l1", "general", "adaptive"}
MAX_SHIPPED_BYTES = 20 * 1024 * 1024


def _shipped() -> compare.StudyInfo:
    studies = {s.name: s for s in compare.list_studies([checkpoints_root()])}
    assert SHIPPED in studies, f"the reference study is not in {checkpoints_root()} (found {list(studies)})"
    return studies[SHIPPED]


def _page(**state) -> AppTest:
    return run_page(PAGE, **state)


def _chart(at: AppTest, key: str) -> dict:
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        if chart.proto.id.endswith(key):
            return spec
    raise AssertionError(f"no chart {key}")


def _array(value) -> np.ndarray:
    """A plotly array: a list, or plotly's typed-array dict {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return flat.reshape([int(v) for v in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def test_shipped_study_is_complete_probed_without_leakage_and_small() -> None:
    study = _shipped()
    assert study.shipped and {r.loss for r in study.runs} == LOSSES
    total = sum(f.stat().st_size for f in checkpoints_root().rglob("*") if f.is_file())
    assert total <= MAX_SHIPPED_BYTES, f"checkpoints/ holds {total / 2**20:.1f} MB"
    for info in study.runs:
        run = info.open()
        assert run.status()["state"] == "finished" and run.config["dataset"] == "fashion_mnist"
        assert not (run.path / "optimizer.safetensors").exists()
        emb = run.embeddings()
        n = emb["mu"].shape[0]
        assert emb["images"].shape == (n, 1, 28, 28) and emb["labels"].unique().numel() == 10
        probes = run.probes()
        assert probes["split"]["train"]["split"] == "train" and probes["split"]["test"]["split"] == "test"
        assert probes["split"]["test"]["source"] == "test" and probes["split"]["overlap"] == 0
        assert probes["split"]["test"]["n"] == 10000
        assert 0.1 < summary(probes)["linear_acc"] <= 1.0  # above chance on 10 classes
    assert any((d / "report.md").is_file() for d in study.report_dirs)


def test_page_shows_the_shipped_table_charts_and_images() -> None:
    study = _shipped()
    at = _page(compare_study=SHIPPED)
    view = at.session_state["compare_view"]
    assert view["study"] == SHIPPED
    table = at.dataframe[0].value
    assert len(table) == len(study.runs)
    # The table's numbers are the saved probe results.
    expected = {}
    for info in study.runs:
        run = open_run(info.path)
        label = compare.loss_label(run.config["loss"], run.config.get("loss_alpha"))
        expected[label, run.config["latent_dim"]] = run.probes()["probes"]
    for _, row in table.iterrows():
        assert row["MLP acc"] == pytest.approx(expected[row["loss"], row["latent"]]["mlp"]["accuracy"])
        assert row["linear CE"] == pytest.approx(expected[row["loss"], row["latent"]]["linear"]["cross_entropy"])
    # Sorted by MLP accuracy, best first (the default).
    assert list(table["MLP acc"]) == sorted(table["MLP acc"], reverse=True)
    # The bar chart draws the same numbers (at the largest latent size), with the error over the probe seeds.
    latent = max(table["latent"])
    assert view["latent_dim"] == latent
    at_latent = {label: p for (label, dim), p in expected.items() if dim == latent}
    bars = _chart(at, "compare_bar_mlp_acc")["data"][0]
    assert dict(zip(bars["x"], bars["y"], strict=True)) == pytest.approx(
        {label: p["mlp"]["accuracy"] for label, p in at_latent.items()})
    assert bars["error_y"]["array"] == pytest.approx([at_latent[label]["mlp"]["accuracy_std"] for label in bars["x"]])
    n_seeds = len(next(iter(at_latent.values()))["mlp"]["per_seed"])
    assert f"Error bars: {n_seeds} probe seeds." in [c.value for c in at.caption]
    # Reconstructions and samples for every loss, the adaptive maps, and the downloads.
    assert set(view["reconstructions"]) == set(at_latent) == set(view["samples"])
    assert len(at.get("image")) == 2
    assert len(view["adaptive"]) == 1 and 0.0 <= view["adaptive"][0]["alpha_mean"] <= 3.0
    adaptive = next(r for r in study.runs if r.loss == "adaptive" and r.latent_dim == latent)
    heat = _chart(at, f"compare_adaptive_alpha_{adaptive.run_id}")["data"][0]
    alpha = _array(heat["z"])
    assert alpha.shape == (28, 28) and 0.0 <= heat["zmin"] <= alpha.min() and alpha.max() <= heat["zmax"] <= 3.0
    assert alpha.mean() == pytest.approx(view["adaptive"][0]["alpha_mean"], rel=1e-5)
    keys = {b.key for b in at.get("download_button")}
    assert {"compare_download_csv", "compare_download_mlp_acc", "compare_download_mlp_ce", "compare_download_recon",
            "compare_download_samples"} <= keys


def test_page_switches_probe_and_sort() -> None:
    at = _page(compare_study=SHIPPED)
    at.radio(key="compare_probe").set_value("linear (μ)").run()
    at.selectbox(key="compare_sort").set_value("loss (study order)").run()
    assert not at.exception, at.exception
    view = at.session_state["compare_view"]
    rows = [r for r in view["rows"] if r["latent_dim"] == view["latent_dim"]]
    bars = _chart(at, "compare_bar_linear_acc")["data"][0]
    assert bars["y"] == pytest.approx([r["linear_acc"] for r in rows])  # one run per loss: means are the runs
    assert list(at.dataframe[0].value["loss"]) == [r["loss_label"] for r in view["rows"]]
    assert at.dataframe[0].value["loss"].iloc[0] == "MSE"


def test_page_on_empty_roots_says_how_to_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    at = _page()
    assert any("No studies found" in i.value and "python -m core.study" in i.value for i in at.info)
    assert not at.dataframe and at.session_state["compare_view"] == {"study": None, "rows": []}


def test_aggregate_takes_the_error_over_vae_seeds_else_probe_seeds() -> None:
    rows = [{"loss_label": "Cauchy", "loss": "cauchy", "latent_dim": 16, "mlp_acc": a, "mlp_acc_std": 0.5,
             "probe_seeds": 3} for a in (0.6, 0.7, 0.8)]
    rows.append({"loss_label": "MSE", "loss": "mse", "latent_dim": 16, "mlp_acc": 0.5, "mlp_acc_std": 0.02,
                 "probe_seeds": 3})
    rows.append({"loss_label": "MSE", "loss": "mse", "latent_dim": 32, "mlp_acc": None})
    out = {(r["loss_label"], r["latent_dim"]): r for r in compare.aggregate(rows, "mlp_acc")}
    assert set(out) == {("Cauchy", 16), ("MSE", 16)}
    assert out["Cauchy", 16]["mean"] == pytest.approx(0.7)
    assert out["Cauchy", 16]["error"] == pytest.approx(0.1) and out["Cauchy", 16]["error_over"] == "3 VAE seeds"
    assert out["MSE", 16]["error"] == 0.02 and out["MSE", 16]["error_over"] == "3 probe seeds"
    series = compare.sweep([*rows[:3], {**rows[0], "latent_dim": 8, "mlp_acc": 0.4}], "mlp_acc")
    assert series["Cauchy"]["dims"] == [8, 16] and series["Cauchy"]["mean"] == pytest.approx([0.4, 0.7])
    csv_text = compare.table_csv(rows[:1], ("loss_label", "mlp_acc", "knn_acc"))
    assert csv_text == "loss_label,mlp_acc,knn_acc\nCauchy,0.6,\n"
