"""The Compare page through AppTest, read through its elements: on the shipped reference study (checkpoints/),
on a VAE-and-VQ-VAE digits study trained and probed here, on runs picked by hand, and on empty roots; and the
shipped study itself (complete, probed without leakage, small)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import numpy as np
import pytest
from apptest_helpers import run_page
from PIL import Image
from streamlit.testing.v1 import AppTest

from core import compare
from core import compare_view as cv
from core.families import FAMILIES
from core.families.recon import loss_label
from core.probes import ProbeSettings, probe_run, summary
from core.runs import checkpoints_root, open_run

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "compare.py")
SHIPPED = "fashion-mnist-reference"
LOSSES = {"mse", "cauchy", "geman_mcclure", "welsch", "smooth_l1", "general", "adaptive"}
MAX_SHIPPED_BYTES = 40 * 1024 * 1024  # the budget for all of checkpoints/
STUDY = "cmp-families"


def _shipped() -> compare.StudyInfo:
    studies = {s.name: s for s in compare.list_studies([checkpoints_root()])}
    assert SHIPPED in studies, f"the reference study is not in {checkpoints_root()} (found {list(studies)})"
    return studies[SHIPPED]


def _charts(at: AppTest) -> dict[str, dict]:
    return {chart.proto.id.rsplit("-", 1)[-1]: json.loads(chart.proto.spec) for chart in at.get("plotly_chart")}


def _chart(at: AppTest, section: str) -> list[dict]:
    """The figures of a section (compare_<section>_<i>), in order."""
    charts = _charts(at)
    return [charts[k] for k in sorted(charts) if k.startswith(f"compare_{section}_")]


def _array(value) -> np.ndarray:
    """A plotly array: a list, or plotly's typed-array dict {"dtype", "bdata" (base64), "shape"}."""
    if isinstance(value, dict):
        flat = np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
        return flat.reshape([int(v) for v in str(value.get("shape", len(flat))).split(",")])
    return np.asarray(value)


def _grid(png: bytes) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))


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
        n = emb["z"].shape[0]
        assert emb["images"].shape == (n, 1, 28, 28) and emb["labels"].unique().numel() == 10
        probes = run.probes()
        assert probes["split"]["train"]["split"] == "train" and probes["split"]["test"]["split"] == "test"
        assert probes["split"]["test"]["source"] == "test" and probes["split"]["overlap"] == 0
        assert probes["split"]["test"]["n"] == 10000
        assert 0.1 < summary(probes)["linear_acc"] <= 1.0  # above chance on 10 classes
    assert any((d / "report.md").is_file() for d in study.report_dirs)


@pytest.mark.slow
def test_page_shows_the_shipped_table_charts_images_and_downloads() -> None:
    study = _shipped()
    at = run_page(PAGE, compare_study=SHIPPED)
    table = at.dataframe[0].value
    assert len(table) == len(study.runs) == 14  # a VAE and a VQ-VAE per loss
    expected, family_of_model = {}, {}
    for info in study.runs:
        run = open_run(info.path)
        model = FAMILIES[run.config.get("family") or "vae"].describe(run.config)
        expected[model, loss_label(run.config)] = run.probes()["probes"]
        family_of_model[model] = FAMILIES[run.config.get("family") or "vae"].title
    for _, row in table.iterrows():
        probes = expected[row["model"], row["loss"]]
        assert row["MLP acc"] == pytest.approx(probes["mlp"]["accuracy"])
        assert row["linear CE"] == pytest.approx(probes["linear"]["cross_entropy"])
        vae = row["model"] == "VAE"
        assert row["probed"] == ("μ" if vae else "z_e (before quantisation)")
        assert row["MLP input"] == ("z = μ + σε (a sample)" if vae else "z_e (before quantisation)")
    assert list(table["MLP acc"]) == sorted(table["MLP acc"], reverse=True)  # the default order: best first
    # The bar charts draw the same numbers, a trace per family, with the error over the probe seeds.
    accuracy, cross_entropy = _chart(at, "probe_bars")
    assert [t["name"] for t in accuracy["data"]] == ["VAE", "VQ-VAE"]
    for bars, ce in zip(accuracy["data"], cross_entropy["data"], strict=True):
        mine = {loss: p for (model, loss), p in expected.items() if family_of_model[model] == bars["name"]}
        assert dict(zip(bars["x"], _array(bars["y"]), strict=True)) == pytest.approx(
            {label: p["mlp"]["accuracy"] for label, p in mine.items()})
        assert _array(bars["error_y"]["array"]) == pytest.approx([mine[x]["mlp"]["accuracy_std"] for x in bars["x"]])
        assert bars["text"] == [f"{mine[x]['mlp']['accuracy']:.3f}" for x in bars["x"]]
        assert _array(ce["y"]) == pytest.approx([mine[x]["mlp"]["cross_entropy"] for x in bars["x"]])
    n_seeds = len(next(iter(expected.values()))["mlp"]["per_seed"])
    assert accuracy["layout"]["title"]["subtitle"]["text"] == f"latent size 16 · error bars: {n_seeds} probe seeds"
    # The reconstruction grid: the originals and a row per run, tiles 3× the 28-pixel images (and a header).
    assert len(at.get("image")) == 2
    comparison = cv.open_comparison([i.path for i in study.usable], title=SHIPPED)
    png, rec = cv.reconstruction_grid(comparison, 16)
    assert (_grid(png).shape[0] - 2) // (28 * 3 + 2) == 15 and len(rec["runs"]) == 14
    assert rec["originals"] is not None and sorted(rec["labels"].tolist()) == list(range(10))  # one per class
    # The adaptive loss's α on a fixed colour scale (its bounds), its range written in the title: per family.
    adaptive = _chart(at, "adaptive")
    assert len(adaptive) == 2
    for figure in adaptive:
        alpha = figure["data"][0]
        assert (alpha["zmin"], alpha["zmax"]) == (0.0, 3.0) and _array(alpha["z"]).shape == (28, 28)
        assert figure["layout"]["annotations"][0]["text"].endswith("(colours span the bounds 0 to 3)")
    downloads = {b.key for b in at.get("download_button")}
    assert {"compare_table_0_csv", "compare_probe_bars_0_html", "compare_probe_bars_1_html",
            "compare_reconstructions_0_png", "compare_samples_0_png", "compare_adaptive_0_html",
            "compare_adaptive_1_html"} <= downloads
    assert [s.value for s in at.subheader] == ["Results per run", "VAE against VQ-VAE per loss",
                                               "Reconstructions", "Samples from the prior",
                                               "What the adaptive loss learned", "The study's report"]


@pytest.mark.slow
def test_probe_and_sort_controls_and_a_registered_section() -> None:
    section = cv.register_section(cv.Section("extra", "A new family's view", lambda c: bool(c.rows),
                                             lambda c, choices: [cv.Note("info", f"{len(c.rows)} runs, probe "
                                                                                 f"{choices['probe']}")],
                                             uses=("probe",)), before="reconstructions")
    try:
        at = run_page(PAGE, compare_study=SHIPPED, compare_probe="linear", compare_sort="")
        rows = compare.results_table(open_run(i.path) for i in _shipped().usable)
        for bars, family in zip(_chart(at, "probe_bars")[0]["data"], ("vae", "vqvae"), strict=True):
            mine = [r for r in rows if r["family"] == family]  # one run per loss and family
            assert _array(bars["y"]) == pytest.approx([r["linear_acc"] for r in mine])
        table = at.dataframe[0].value
        assert list(zip(table["model"], table["loss"], strict=True)) == [(r["model"], r["loss_label"]) for r in rows]
        assert table["loss"].iloc[0] == "MSE"  # the study's order
        titles = [s.value for s in at.subheader]
        assert titles.index("A new family's view") == titles.index("Reconstructions") - 1
        assert "14 runs, probe linear" in [i.value for i in at.info]
    finally:
        cv.SECTIONS.remove(section)


def test_page_on_empty_roots_says_what_it_needs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    at = run_page(PAGE)
    assert any("Nothing to compare yet" in i.value and "finished runs of one dataset" in i.value for i in at.info)
    [code] = at.code
    assert "-m core.study --dataset digits --families vae,vqvae" in code.value and code.value.startswith("cd ")
    assert not at.dataframe and not at.get("plotly_chart")


@pytest.fixture(scope="module")
def families(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root with a digits VAE and VQ-VAE per loss (MSE, Cauchy), trained and probed (small probes)."""
    from core.train import main as train_main

    root = tmp_path_factory.mktemp("cmp-families")
    for family in ("vae", "vqvae"):
        for loss in ("mse", "cauchy"):
            status = train_main(["--family", family, "--dataset", "digits", "--loss", loss, "--latent-dim", "16",
                                 "--epochs", "1", "--width", "8", "--study", STUDY, "--runs-root", str(root),
                                 "--threads", "1", "--quiet"])
            assert status == 0
    settings = ProbeSettings(probe_train=400, probe_test=300, seeds=(0, 1), mlp_epochs=3, ks=(1, 5))
    for path in root.iterdir():
        if (path / "config.json").is_file():
            probe_run(open_run(path), settings)
    return root


@pytest.mark.slow
def test_vae_against_vqvae_per_loss_and_runs_picked_by_hand(families: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(families))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(tmp_path / "none"))
    at = run_page(PAGE, compare_study=STUDY)
    rows = compare.results_table(open_run(p) for p in families.iterdir() if (p / "config.json").is_file())
    assert "VAE against VQ-VAE per loss" in [s.value for s in at.subheader]
    accuracy, _ = _chart(at, "probe_bars")
    assert [t["name"] for t in accuracy["data"]] == ["VAE", "VQ-VAE"]
    for trace, family in zip(accuracy["data"], ("vae", "vqvae"), strict=True):
        mine = {r["loss_label"]: r["mlp_acc"] for r in rows if r["family"] == family}
        assert dict(zip(trace["x"], _array(trace["y"]), strict=True)) == pytest.approx(mine)
    table = at.dataframe[0].value
    assert set(table["probed"]) == {"μ", "z_e (before quantisation)"}
    assert set(table["model"]) == {"VAE", "VQ-VAE (K=512, 2×2×4, 36 bits)"}  # G²·log2 K bits, in the label
    assert {"codes used", "val KL"} <= set(table.columns)
    # Reconstructions of every run, samples only where the family has a prior (the VQ-VAE has none).
    assert len(at.get("image")) == 2
    comparison = cv.open_comparison([p for p in families.iterdir() if (p / "config.json").is_file()], title=STUDY)
    tile = 8 * 10 + 2  # 8-pixel digits drawn 10×
    assert _grid(cv.reconstruction_grid(comparison, 16)[0]).shape[0] // tile == 5
    png, samples, without = cv.sample_grid(comparison, 16)
    assert _grid(png).shape[0] // tile == 2 and {s["family"] for s in samples} == {"vae"} and without == ["VQ-VAE"]
    assert any("Not drawn for VQ-VAE runs: the family has no prior to sample from." in c.value for c in at.caption)
    assert "Accuracy against latent size" not in [s.value for s in at.subheader]  # one latent size

    # Runs picked by hand, of one dataset: the page compares exactly those.
    at.radio(key="compare_source").set_value("pick").run()
    assert at.selectbox(key="compare_dataset").value == "digits"
    picked = [str(p) for p in sorted(families.iterdir()) if "vqvae" in p.name]
    at.multiselect(key="compare_runs").set_value(picked).run()
    assert not at.exception, at.exception
    assert sorted(at.dataframe[0].value["run"]) == sorted(Path(p).name for p in picked)
    assert "Probe accuracy and cross-entropy per loss" in [s.value for s in at.subheader]
