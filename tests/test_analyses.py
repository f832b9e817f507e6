"""The VICReg course study's evaluations (core.analyses) and their views (core.representation_views): the measures
against brute force, then on real runs (a VICReg and a VAE on digits, a VICReg on Fashion-MNIST): the
10-epoch linear probe, both k-NN probes, the anomaly AUC and ROC against the paired dataset and per class,
the neighbour grid, the eigenmaps beside PCA and t-SNE, cached with the run and carried by its zip."""

from __future__ import annotations

import io
import itertools
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from core import representation_views as views
from core.analyses import (
    EVALUATIONS,
    AnalysisSettings,
    analyse_run,
    anomaly_scores,
    class_holdout_auc,
    course_report,
    knn_accuracy,
    linear_probe_epochs,
    neighbour_grid_data,
    report_rows,
    resize_to,
    roc,
)
from core.probes import ProbeSettings, probe_run, summary
from core.run_archive import ArchiveError, export_run, import_run
from core.runs import open_run
from core.train import main

# digits: 1,257 training images; batches of 32 give the 10-epoch probe 400 steps
SMALL = AnalysisSettings(bank=600, test=300, eigen_n=150, knn_ks=(1, 5, 20), linear_batch=32)
COMMON = ["--dataset", "digits", "--epochs", "2", "--limit-train", "384", "--batch-size", "96", "--device", "cpu",
          "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("analyses")
    assert main(["--family", "vicreg", "--latent-dim", "16", "--width", "8", "--projector", "32-32", "--lr", "2e-3",
                 "--augment", "crop_flip", *COMMON, "--runs-root", str(root), "--run-id", "vicreg"]) == 0
    assert main(["--family", "vae", "--latent-dim", "8", *COMMON, "--runs-root", str(root), "--run-id", "vae"]) == 0
    return {"vicreg": root / "vicreg", "vae": root / "vae"}


# ---------------------------------------------------------------------------------------------------
# The measures


def test_the_anomaly_score_is_the_mean_distance_to_the_k_nearest_bank_points():
    gen = torch.Generator().manual_seed(0)
    bank, query = torch.randn(50, 4, generator=gen), torch.randn(9, 4, generator=gen) + 3
    d = torch.cdist(query.double(), bank.double())
    assert torch.allclose(anomaly_scores(bank, query, 2).double(), d.topk(2, largest=False).values.mean(1), atol=1e-5)
    inside = anomaly_scores(bank, bank[:5], 2, exclude_self=True)
    d_self = torch.cdist(bank[:5].double(), bank.double())
    d_self[torch.arange(5), torch.arange(5)] = float("inf")
    assert torch.allclose(inside.double(), d_self.topk(2, largest=False).values.mean(1), atol=1e-5)
    curve = roc(anomaly_scores(bank, bank[:20], 2), anomaly_scores(bank, query, 2))
    assert curve["auc"] > 0.99 and curve["fpr"][0] == 0 and curve["tpr"][-1] == 1


def test_holding_a_class_out_of_the_bank_makes_it_the_anomaly():
    gen = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [6.0, 0.0], [0.0, 6.0]])
    labels = torch.arange(3).repeat_interleave(40)
    points = centres[labels] + torch.randn(120, 2, generator=gen)
    aucs = class_holdout_auc(points[::2], labels[::2], points[1::2], labels[1::2], 3)
    assert all(a > 0.95 for a in aucs)
    mixed = class_holdout_auc(torch.randn(60, 2, generator=gen), labels[::2], torch.randn(60, 2, generator=gen),
                              labels[1::2], 3)
    assert all(0.25 < a < 0.75 for a in mixed)  # classes that overlap: near chance


def test_euclidean_and_cosine_knn_differ_where_the_norm_carries_no_class():
    # two classes along two directions; each point's length is random over a wide range
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(2).repeat(200)
    direction = torch.tensor([[1.0, 0.9], [0.9, 1.0]])[labels] * (1 + 0.02 * torch.randn(400, 2, generator=gen))
    points = direction * torch.exp(2 * torch.randn(400, 1, generator=gen))
    euclid = knn_accuracy(points[:300], labels[:300], points[300:], labels[300:], 2, (5,), "euclidean")
    cosine = knn_accuracy(points[:300], labels[:300], points[300:], labels[300:], 2, (5,), "cosine")
    assert cosine["5"] == 1.0 and euclid["5"] < 0.92


def test_the_seeds_linear_probe_learns_separable_classes_in_ten_epochs():
    gen = torch.Generator().manual_seed(3)
    labels = torch.arange(3).repeat(300)
    z = torch.eye(3)[labels] * 3 + 0.3 * torch.randn(900, 3, generator=gen)
    out = linear_probe_epochs(z[:600], labels[:600], z[600:], labels[600:], 3, epochs=10, lr=1e-2, batch=32)
    assert out["accuracy"] > 0.95 and len(out["accuracy_by_epoch"]) == 10
    assert out["accuracy_by_epoch"][-1] == out["accuracy"]


def test_the_grid_takes_the_nearest_and_farthest_bank_points_of_one_query_per_class():
    gen = torch.Generator().manual_seed(4)
    bank, query = torch.randn(40, 3, generator=gen), torch.randn(12, 3, generator=gen)
    query_y = torch.tensor([0, 1, 2] * 4)
    data = neighbour_grid_data(bank, torch.zeros(40, dtype=torch.int64), query, query_y, 3, 5, 4)
    assert sorted(query_y[data["query"]].tolist()) == [0, 1, 2]
    d = torch.cdist(query[data["query"]].double(), bank.double())
    assert torch.equal(data["near"], d.topk(5, largest=False).indices)
    assert torch.equal(data["far"], d.topk(4).indices)


def test_out_of_distribution_images_take_the_runs_image_shape():
    digits = torch.randint(0, 256, (4, 1, 8, 8), dtype=torch.uint8)
    up = resize_to(digits, (1, 28, 28))
    assert up.shape == (4, 1, 28, 28) and up.dtype == torch.uint8
    colour = resize_to(digits, (3, 32, 32))
    assert colour.shape == (4, 3, 32, 32) and torch.equal(colour[:, 0], colour[:, 2])
    gray = resize_to(torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8), (1, 8, 8))
    assert gray.shape == (2, 1, 8, 8)
    flat = torch.full((1, 1, 8, 8), 200, dtype=torch.uint8)
    assert (resize_to(flat, (1, 28, 28)) == 200).all()  # resizing keeps a flat image's value


# ---------------------------------------------------------------------------------------------------
# Real runs


def test_every_evaluation_of_a_vicreg_run_is_computed_cached_and_reused(runs):
    run = open_run(runs["vicreg"])
    results = analyse_run(run, SMALL)
    assert list(results) == list(EVALUATIONS)
    linear = results["course-linear"]
    assert linear["epochs"] == 10 and 0.2 < linear["accuracy"] <= 1 and linear["n_train"] == 600
    assert linear["n_test"] == 300 and linear["n_linear_train"] == 1257  # the whole split, as the course's
    knn = results["knn"]
    for metric in ("euclidean", "cosine"):
        assert 0.1 < knn[metric]["accuracy"] <= 1 and set(knn[metric]["by_k"]) == {"1", "5", "20"}
    anomaly = results["anomaly"]
    assert anomaly["out"] == "fashion_mnist" and "resized to 1×8×8" in anomaly["pairing"]
    assert 0.5 < anomaly["auc"] <= 1 and len(anomaly["class_auc"]) == 10
    assert 0 < anomaly["class_auc_mean"] < 1
    grid = results["neighbour-grid"]
    assert len(grid["query_labels"]) == 10 and all(len(r) == 5 for r in grid["near_labels"])
    assert all(a <= b for row in grid["near_distances"] for a, b in itertools.pairwise(row))
    eig = results["eigenmaps"]
    assert eig["n"] == 150 and set(eig["knn_label_agreement"]) == {"eigenmaps_of_pixels", "pca_of_pixels",
                                                                   "representation"}
    again = analyse_run(run, SMALL)
    assert all(again[n]["created"] == results[n]["created"] for n in EVALUATIONS)  # reused, not recomputed
    other = analyse_run(run, AnalysisSettings(bank=600, test=300, linear_bank=600, anomaly_k=3), only=["anomaly"])
    assert other["anomaly"]["k"] == 3  # other settings: recomputed


def test_the_views_draw_a_vicreg_and_a_vae_alike(runs):
    vicreg, vae = open_run(runs["vicreg"]), open_run(runs["vae"])
    for run in (vicreg, vae):
        assert views.offered(run)["neighbour_grid"] and views.offered(run)["anomaly"]
        grid = views.neighbour_grid(run, compute=True, settings=SMALL)
        mosaic = views.grid_mosaic(grid)
        assert mosaic.shape == (10 * (8 + 2) + 2, 11 * (8 + 2) + 2 + 2 * 6, 3) and mosaic.dtype == np.uint8
        assert 0 <= grid.near_same_class <= 1
        assert views.neighbour_grid_figure(grid).data[0].type == "image"
    a, b = (views.anomaly_view(r, compute=True, settings=SMALL) for r in (vicreg, vae))
    fig = views.roc_figure({"VICReg": a, "VAE": b})
    assert [t.name.split(" (")[0] for t in fig.data] == ["chance", "VICReg", "VAE"]
    assert f"AUC {a.auc:.3f}" in fig.data[1].name and a.fpr[0] == 0 and a.tpr[-1] == 1
    gallery = views.gallery_mosaic(a)
    assert gallery is not None and gallery.shape[2] == 3 and len(a.gallery) == 16
    assert np.all(np.diff(a.gallery_scores) <= 0)  # most anomalous first
    assert views.score_histogram_figure(a).data[0].type == "bar"
    lay = views.layouts_view(vicreg, compute=True, settings=SMALL)
    assert list(lay.layouts) == ["Laplacian eigenmaps (pixels)", "PCA (representation)", "t-SNE (representation)"]
    assert all(c.shape == (150, 3) for c in lay.layouts.values()) and len(lay.labels) == 150
    assert len(views.layouts_figure(lay).data) == 3 and len(views.layouts_figure(lay, 2).data) == 3
    collapse = views.collapse_view(vicreg)
    assert collapse.epochs == [1, 2] and collapse.width == 32 and collapse.warnings == []
    assert len(views.collapse_figure(collapse).data) == 6
    assert views.collapse_view(vae) is None and not views.offered(vae)["collapse"]


def test_a_zipped_run_carries_its_evaluations_and_a_bad_one_is_refused(runs, tmp_path):
    run = open_run(runs["vicreg"])
    analyse_run(run, SMALL, only=["anomaly", "neighbour-grid"])
    data = export_run(run)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert "vicreg/evaluations/anomaly.json" in names and "vicreg/evaluations/anomaly.safetensors" in names
    copy = import_run(data, tmp_path / "in")
    assert copy.evaluation("anomaly")[0]["auc"] == run.evaluation("anomaly")[0]["auc"]
    assert torch.equal(copy.evaluation("neighbour-grid")[1]["near_images"],
                       run.evaluation("neighbour-grid")[1]["near_images"])

    def rezip(change) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(io.BytesIO(data)) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                body = change(info.filename, src.read(info))
                if body is not None:
                    dst.writestr(info.filename, body)
        return out.getvalue()

    alone = rezip(lambda n, b: None if n.endswith("evaluations/anomaly.json") else b)
    with pytest.raises(ArchiveError, match=r"anomaly\.json beside it"):
        import_run(alone, tmp_path / "a")
    cut = rezip(lambda n, b: b[:-8] if n.endswith("anomaly.safetensors") else b)
    with pytest.raises(ArchiveError, match=r"anomaly\.safetensors is"):
        import_run(cut, tmp_path / "b")
    nested = "[" * 40 + "1" + "]" * 40
    deep = rezip(lambda n, b: f'{{"x": {nested}}}'.encode() if n.endswith("anomaly.json") else b)
    with pytest.raises(ArchiveError, match="levels deep"):
        import_run(deep, tmp_path / "c")
    extra = io.BytesIO(data)
    with zipfile.ZipFile(extra, "a") as z:
        z.writestr("vicreg/evaluations/notes.txt", b"hello")
    with pytest.raises(ArchiveError, match="not a file of the run format"):
        import_run(extra.getvalue(), tmp_path / "d")
    assert not any((tmp_path / d).exists() and any((tmp_path / d).iterdir()) for d in "abcd")


def test_the_report_sets_each_run_against_the_seeds_figures(runs):
    rows = report_rows([open_run(runs["vicreg"]), open_run(runs["vae"])], SMALL)
    text = course_report(rows, "test machine")
    assert "72.4 %" in text and "| vicreg | full | MSE |" in text and "| vae | vae |" in text
    linear = rows[0]["evaluations"]["course-linear"]["accuracy"]
    assert f"{100 * linear:.1f} %" in text
    better = {k: (v + 0.05 if isinstance(v, float) else v) for k, v in rows[0]["probes"].items()}
    ev = rows[0]["evaluations"]
    fake = [{**rows[0], "run_id": "c", "config": {**rows[0]["config"], "loss": "cauchy"}, "probes": better,
             "evaluations": {**ev, "course-linear": {"accuracy": linear + 0.05},
                             "knn": {**ev["knn"], "cosine": {"accuracy": ev["knn"]["cosine"]["accuracy"] + 0.05}},
                             "anomaly": {**ev["anomaly"], "class_auc_mean": ev["anomaly"]["class_auc_mean"] + 0.05}}},
            rows[0]]
    section = course_report(fake)
    assert "| full | Cauchy |" in section and "(+5.0)" in section
    assert "Cauchy beat MSE on at least three of the four measures" in section


@pytest.mark.slow
def test_a_short_fashion_mnist_vicreg_its_probes_grid_and_auc_against_digits(tmp_path):
    assert main(["--family", "vicreg", "--dataset", "fashion_mnist", "--latent-dim", "16", "--width", "8",
                 "--projector", "32-32", "--epochs", "3", "--limit-train", "1024", "--batch-size", "128",
                 "--lr", "2e-3", "--device", "cpu", "--threads", "1", "--quiet", "--runs-root", str(tmp_path),
                 "--run-id", "fm"]) == 0
    run = open_run(tmp_path / "fm")
    assert run.embeddings()["z"].shape == (1024, 16)
    probes = summary(probe_run(run, ProbeSettings(probe_train=1000, probe_test=1000, seeds=(0,), mlp_epochs=3)))
    assert 0.3 < probes["linear_acc"] <= 1 and 0.3 < probes["knn_acc"] <= 1
    results = analyse_run(run, AnalysisSettings(bank=1000, test=1000, linear_bank=4000, linear_batch=64, eigen_n=300,
                                                ood_limit=1000))
    anomaly = results["anomaly"]
    assert anomaly["in"] == "fashion_mnist" and anomaly["out"] == "digits" and anomaly["n_out"] == 1000
    assert "digits resized to 1×28×28" in anomaly["pairing"] and 0.5 < anomaly["auc"] <= 1
    grid = views.neighbour_grid(run)
    assert grid.query.shape == (10, 1, 28, 28) and grid.near.shape == (10, 5, 1, 28, 28)
    # 24 steps: above chance (0.1), far from trained (after only a few steps the batch norms' running
    # statistics still lag, and the raw eval-mode features the course's probe takes are squeezed together)
    assert results["course-linear"]["accuracy"] > 0.2 and results["knn"]["cosine"]["accuracy"] > 0.3
