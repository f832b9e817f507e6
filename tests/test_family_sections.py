"""The Compare sections the later families bring (core.family_sections), on the studies shipped in
checkpoints/: each applies exactly where its runs can show it, and draws what is cached with the runs."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core import compare
from core import compare_view as cv
from core.class_penalty import choose_lambda
from core.runs import checkpoints_root

STUDIES = {"barron-fashion_mnist-e5-n10000": "elbo", "fmnist": "representation",
           "fashion-mnist-class-penalty": "class_penalty"}
FAMILY_SECTIONS = set(STUDIES.values())


@pytest.fixture(scope="module")
def shipped() -> dict[str, cv.Comparison]:
    studies = {s.name: s for s in compare.list_studies([checkpoints_root()])}
    missing = set(STUDIES) - set(studies)
    assert not missing, f"studies {sorted(missing)} are not shipped in {checkpoints_root()}"
    return {name: cv.open_comparison([i.path for i in studies[name].usable], title=name) for name in STUDIES}


@pytest.mark.parametrize("study", sorted(STUDIES))
def test_each_shipped_study_shows_its_own_family_section_and_no_other(shipped, study: str) -> None:
    keys = {s.key for s in cv.sections_for(shipped[study])}
    assert keys & FAMILY_SECTIONS == {STUDIES[study]}, keys


def test_the_reference_study_of_vaes_and_vq_vaes_shows_none_of_them() -> None:
    studies = {s.name: s for s in compare.list_studies([checkpoints_root()])}
    c = cv.open_comparison([i.path for i in studies["fashion-mnist-reference"].usable], title="reference")
    assert {r["family"] for r in c.rows} == {"vae", "vqvae"}
    assert not {s.key for s in cv.sections_for(c)} & FAMILY_SECTIONS


def _section(c: cv.Comparison, key: str) -> cv.SectionView:
    [section] = [s for s in cv.sections_for(c) if s.key == key]
    return section.view(c)


def test_the_elbo_section_tabulates_every_cell_of_the_grid(shipped) -> None:
    view = _section(shipped["barron-fashion_mnist-e5-n10000"], "elbo")
    kinds = [type(b).__name__ for b in view.blocks]
    assert kinds[:2] == ["Chart", "Table"] and "Picture" in kinds, kinds
    table = view.blocks[1]
    cells = {(row["representation"], row["distribution"]): row for row in table.rows}
    assert len(cells) == 12, sorted(cells)  # 3 representations × 4 distributions
    assert all(np.isfinite(row["elbo"]) and np.isfinite(row["bits_per_dim"]) for row in table.rows)
    assert all(row["barron_elbo"] is not None for row in table.rows)  # Barron's figure beside each cell


def test_the_representation_section_draws_the_cached_anomaly_curves(shipped) -> None:
    c = shipped["fmnist"]
    view = _section(c, "representation")
    chart = next(b for b in view.blocks if type(b).__name__ == "Chart")
    spec = json.loads(chart.figure.to_json())
    curves = [t for t in spec["data"] if t.get("mode") != "lines" or t.get("name")]
    assert len(curves) >= len(c.finished()), [t.get("name") for t in spec["data"]]
    table = next(b for b in view.blocks if type(b).__name__ == "Table")
    assert all(0.5 <= row["AUC"] <= 1.0 for row in table.rows), table.rows
    assert sum(type(b).__name__ == "Picture" for b in view.blocks) == 2  # anomalous images, neighbour grid


def test_the_class_penalty_section_plots_the_cached_scores_and_marks_the_chosen_lambda(shipped) -> None:
    from core.family_sections import class_penalty_scores

    c = shipped["fashion-mnist-class-penalty"]
    scores = class_penalty_scores(c)
    assert len(scores) == len(c.finished()) == 7
    view = _section(c, "class_penalty")
    accuracy = json.loads(next(b for b in view.blocks if type(b).__name__ == "Chart").figure.to_json())
    lines = {t["name"]: t for t in accuracy["data"]}
    assert set(lines) == {"bottleneck 10", "bottleneck 145"}
    ten = sorted((s for s in scores if s["bottleneck"] == 10), key=lambda s: s["lambda"])
    np.testing.assert_allclose(lines["bottleneck 10"]["y"], [s["test_accuracy"] for s in ten])
    chosen = choose_lambda(scores)[10]
    stars = [s["lambda"] for s, m in zip(ten, lines["bottleneck 10"]["marker"]["symbol"], strict=True) if m == "star"]
    assert stars == [chosen["lambda"]]
    assert chosen["val_accuracy"] == max(s["val_accuracy"] for s in ten)
    # The penalty separates the classes: the supervised end beats the unsupervised autoencoder.
    assert ten[-1]["test_accuracy"] > ten[0]["test_accuracy"] + 0.05


def test_bar_labels_keep_only_what_tells_the_models_apart():
    short = cv.distinct_model_labels([
        "Class-penalty AE (b=10, λ=10, one-hot targets, uses labels)",
        "Class-penalty AE (b=10, λ=0.25, one-hot targets, uses labels)",
        "Autoencoder (b=10, λ=0: unsupervised)"])
    assert list(short.values()) == ["Class-penalty AE (λ=10)", "Class-penalty AE (λ=0.25)", "Autoencoder"]
    vicreg = cv.distinct_model_labels(["VICReg (small conv, D=64, μ=0)", "VICReg (small conv, D=64)"])
    assert list(vicreg.values()) == ["μ=0", "VICReg"]
    from core.charts import _tick_text  # a long name wraps at a space instead of losing its λ
    assert _tick_text("Class-penalty AE (λ=0.001)<br>MSE") == "Class-penalty AE<br>(λ=0.001)<br>MSE"
    assert _tick_text("Cauchy (learned c) on CDF 9/7 wavelet") == "Cauchy (learned c) on<br>CDF 9/7 wavelet"


def test_many_bars_lie_down_with_level_labels_and_few_stand():
    from core import charts

    def bars(n):
        return [{"family": "vae", "loss": "cauchy", "loss_label": f"Cauchy (learned c) on CDF 9/7 wavelet {i}",
                 "mean": 0.5 + i / 100, "error": 0.01, "error_over": "3 probe seeds", "model": "VAE"}
                for i in range(n)]
    lying = charts.probe_bars(bars(12), "MLP probe accuracy", accuracy=True)
    assert lying.data[0].orientation == "h" and len(lying.data[0].y) == 12 and lying.data[0].x[0] == 0.5
    assert lying.layout.height > charts.CHART_HEIGHT and lying.layout.yaxis.autorange == "reversed"
    assert all(len(line) <= charts.LYING_TICK_CHARACTERS
               for tick in lying.layout.yaxis.ticktext for line in tick.split("<br>"))
    standing = charts.probe_bars(bars(3), "MLP probe accuracy", accuracy=True)
    assert standing.data[0].orientation is None and list(standing.data[0].y) == [0.5, 0.51, 0.52]


def test_a_setting_run_at_two_latent_sizes_is_one_line_of_the_sweep(shipped) -> None:
    rows = shipped["fashion-mnist-class-penalty"].rows
    lines = compare.sweep(rows)
    joined = {label: s["dims"] for label, s in lines.items() if len(s["dims"]) > 1}
    assert joined == {"MSE · Class-penalty AE (λ=0.25, one-hot targets, uses labels)": [10, 145],
                      "MSE · Autoencoder (λ=0: unsupervised)": [10, 145]}
    chart = cv.sweep_chart(rows, "mlp_acc")  # a line per setting, named by what differs, a colour each
    assert [t.name for t in chart.data] == [*(f"Class-penalty AE (λ={lam}) · MSE" for lam in ("10", "0.25", "0.01",
                                                                                            "0.001")),
                                            "Autoencoder · MSE"]
    assert len({t.line.color for t in chart.data}) == len(chart.data) == 5
    from core.families import get_family  # the labels without what the latent size decides
    vq = {"family": "vqvae", "grid": 4, "codebook_size": 512, "latent_dim": 64}
    assert get_family("vqvae").describe(vq, latent=False) == "VQ-VAE (K=512, 4×4 grid)"
    assert "4×4×4" in get_family("vqvae").describe(vq)
    assert get_family("vicreg").describe({"encoder": "small", "latent_dim": 64}, latent=False) == "VICReg (small conv)"
