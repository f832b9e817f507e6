"""The probes against known answers: separable latents give (near) perfect accuracy, symmetric label noise
at rate p caps accuracy at 1 − p and cross-entropy at the noise's entropy, the MLP probe really sees
z = μ + σ·ε, k-NN's probabilities follow its formula; the split guard; and probing a real trained run
(train split in, test split out, saved and reused)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from core import datasets
from core.probes import (
    LatentSet,
    ProbeSettings,
    cached,
    knn_probe,
    linear_probe,
    mlp_probe,
    probe_latents,
    probe_run,
    split_check,
    summary,
)
from core.runs import open_run
from core.train import main as train_main

FAST = ProbeSettings(seeds=(0, 1), mlp_epochs=15, ks=(1, 5, 25))
CLASSES = 4


def _clusters(n: int, seed: int, *, noise: float = 0.0, spread: float = 0.3, sigma: float = 0.2,
              dim: int = 8) -> tuple[LatentSet, float]:
    """CLASSES Gaussian clusters at 4·e_c (well apart: separable); a fraction `noise` of labels flipped to
    another class uniformly. Returns the set and the realised flip rate."""
    gen = torch.Generator().manual_seed(seed)
    truth = torch.randint(0, CLASSES, (n,), generator=gen)
    mu = 4.0 * torch.eye(CLASSES, dim)[truth] + spread * torch.randn(n, dim, generator=gen)
    logvar = torch.full((n, dim), 2 * math.log(sigma))
    labels = truth.clone()
    if noise:
        flip = torch.rand(n, generator=gen) < noise
        labels = torch.where(flip, (truth + torch.randint(1, CLASSES, (n,), generator=gen)) % CLASSES, truth)
    return LatentSet(mu, logvar, labels, "train" if seed % 2 else "test"), float((labels != truth).float().mean())


def _noise_entropy(p: float) -> float:
    """H(y | x) under symmetric noise: the least cross-entropy any classifier can reach (nats)."""
    return -(1 - p) * math.log(1 - p) - p * math.log(p / (CLASSES - 1))


def test_separable_latents_give_near_perfect_probes() -> None:
    train, _ = _clusters(2000, 1)
    test, _ = _clusters(1000, 2)
    result = probe_latents(train, test, CLASSES, FAST)
    numbers = summary(result)
    for probe in ("mlp", "linear", "knn"):
        assert numbers[f"{probe}_acc"] >= 0.995, (probe, numbers)
        assert numbers[f"{probe}_ce"] < 0.05, (probe, numbers)
    mlp = result["probes"]["mlp"]
    assert [r["seed"] for r in mlp["per_seed"]] == [0, 1]
    assert set(result["probes"]["knn"]["by_k"]) == {"1", "5", "25"}
    assert result["split"]["train"] == {"split": "train", "source": "", "n": 2000}
    assert result["split"]["test"]["n"] == 1000 and result["split"]["overlap"] == 0


def test_label_noise_lowers_accuracy_to_one_minus_the_noise() -> None:
    train, _ = _clusters(3000, 3, noise=0.3)
    test, flipped = _clusters(2000, 4, noise=0.3)
    clean = summary(probe_latents(*(_clusters(3000, 3)[0], _clusters(2000, 4)[0]), CLASSES, FAST))
    noisy = summary(probe_latents(train, test, CLASSES, FAST))
    floor = _noise_entropy(flipped)
    for probe in ("mlp", "linear", "knn"):
        # The best classifier still predicts the true class; a noisy test label agrees with it 1 − p of the time.
        assert noisy[f"{probe}_acc"] == pytest.approx(1 - flipped, abs=0.02), (probe, noisy, flipped)
        assert noisy[f"{probe}_ce"] > clean[f"{probe}_ce"] + 0.5
        # Cross-entropy cannot beat the noise's own entropy (up to the test sample's luck).
        assert noisy[f"{probe}_ce"] >= floor - 0.05, (probe, noisy[f"{probe}_ce"], floor)
    # Probabilities stay calibrated: the MLP and linear probes land close to the floor.
    assert noisy["linear_ce"] == pytest.approx(floor, abs=0.1)


def test_mlp_probe_classifies_reparametrised_samples_not_means() -> None:
    # Class information only in μ, buried under σ = 20: z = μ + σ·ε is nearly noise, μ is separable.
    train, _ = _clusters(2000, 5, sigma=20.0)
    test, _ = _clusters(1000, 6, sigma=20.0)
    mlp = mlp_probe(train, test, CLASSES, FAST)
    linear = linear_probe(train, test, CLASSES, FAST)
    assert linear["accuracy"] >= 0.995
    assert mlp["accuracy"] < 0.45  # chance is 0.25
    assert mlp["cross_entropy"] > 1.0


def test_knn_probabilities_follow_the_formula() -> None:
    # Two classes on two axes; the test point lies nearest class 0 by cosine (the norms do not matter).
    mu = torch.tensor([[1.0, 0.0], [5.0, 0.5], [0.0, 1.0], [0.2, 3.0]])
    train = LatentSet(mu, torch.zeros_like(mu), torch.tensor([0, 0, 1, 1]))
    query = torch.tensor([[10.0, 1.0], [0.1, 1.0]])
    test = LatentSet(query, torch.zeros_like(query), torch.tensor([0, 0]))  # the second is labelled "wrongly"
    s = ProbeSettings(ks=(1, 4), knn_tau=0.5, knn_eta=0.01)
    result = knn_probe(train, test, 2, s)
    eta = 0.01
    # k = 1: unanimous votes; p(true) = 1 − η + η/2 for the first point, η/2 for the second.
    expected_ce_1 = -(math.log(1 - eta + eta / 2) + math.log(eta / 2)) / 2
    assert result["by_k"]["1"]["accuracy"] == 0.5
    assert result["by_k"]["1"]["cross_entropy"] == pytest.approx(expected_ce_1, rel=1e-5)
    # k = 4: weights exp(s/τ) over all four training points.
    q = torch.nn.functional.normalize(query, dim=1)
    sims = q @ torch.nn.functional.normalize(mu, dim=1).T
    w = torch.exp(sims / 0.5)
    p0 = (1 - eta) * w[:, :2].sum(1) / w.sum(1) + eta / 2
    assert result["by_k"]["4"]["cross_entropy"] == pytest.approx(float(-p0.log().mean()), rel=1e-5)


def test_knn_chooses_k_on_the_training_set_never_on_the_test_set() -> None:
    # Two classes split by the first coordinate, 20 % of training labels flipped: many voters help.
    g = torch.Generator().manual_seed(0)
    mu = torch.randn(200, 4, generator=g)
    labels = (mu[:, 0] > 0).long()
    labels = torch.where(torch.rand(200, generator=g) < 0.2, 1 - labels, labels)
    train = LatentSet(mu, torch.zeros_like(mu), labels)
    query = torch.randn(40, 4, generator=torch.Generator().manual_seed(104))
    test = LatentSet(query, torch.zeros_like(query), (query[:, 0] > 0).long())
    result = knn_probe(train, test, 2, ProbeSettings(ks=(1, 5, 25)))
    loo = result["train_loo_by_k"]
    assert loo["25"]["accuracy"] > loo["5"]["accuracy"] > loo["1"]["accuracy"]
    # this test set happens to favour k = 5; the reported k must still be the training set's choice
    assert result["by_k"]["5"]["accuracy"] > result["by_k"]["25"]["accuracy"]
    assert result["best_k"] == 25
    assert result["accuracy"] == result["by_k"]["25"]["accuracy"]


def test_probe_train_and_test_images_must_not_overlap() -> None:
    mu = torch.randn(6, 3)
    train = LatentSet(mu, mu, torch.tensor([0, 1, 0, 1, 0, 1]), "train", "train", torch.arange(6),
                      ["a", "b", "c", "d", "e", "f"])
    clash = LatentSet(mu[:2], mu[:2], torch.tensor([0, 1]), "test", "train", torch.tensor([5, 9]), ["x", "y"])
    with pytest.raises(ValueError, match="both the probe's train"):
        split_check(train, clash)
    elsewhere = LatentSet(mu[:2], mu[:2], torch.tensor([0, 1]), "test", "test", torch.tensor([5, 9]), ["x", "c"])
    check = split_check(train, elsewhere)  # another file: positions may coincide; one identical image counted
    assert check["overlap"] == 0 and check["test_images_identical_to_a_train_image"] == 1
    with pytest.raises(ValueError, match="at least one seed"):
        ProbeSettings(seeds=())


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("probe-runs")
    args = ["--dataset", "digits", "--loss", "mse", "--latent-dim", "8", "--epochs", "3", "--limit-train", "512",
            "--batch-size", "64", "--device", "cpu", "--threads", "1", "--quiet", "--runs-root", str(root),
            "--run-id", "probed"]
    assert train_main(args) == 0
    return root / "probed"


def test_probe_run_fits_on_train_scores_on_test_and_is_reused(digits_run: Path) -> None:
    run = open_run(digits_run)
    settings = ProbeSettings(seeds=(0,), mlp_epochs=10, probe_train=1000)
    results = probe_run(run, settings)
    split = results["split"]
    assert split["dataset"] == "digits"
    assert split["train"] == {"split": "train", "source": "train", "n": 1000}
    assert split["test"] == {"split": "test", "source": "train", "n": 360}  # digits' test split is carved
    assert split["overlap"] == 0
    train_idx = set(datasets.load_split("digits", "train", limit=1000).index.tolist())
    test_idx = set(datasets.load_split("digits", "test").index.tolist())
    assert not train_idx & test_idx
    numbers = summary(results)
    # A trained VAE's μ separates digits far above chance (0.1), and the numbers are probabilities.
    assert numbers["linear_acc"] > 0.5 and numbers["knn_acc"] > 0.5
    assert all(0 <= numbers[k] <= 1 for k in ("mlp_acc", "linear_acc", "knn_acc"))
    assert results["model_step"] == run.status()["step"]
    # Saved with the run, and reused while the settings hold; other settings recompute.
    assert run.probes() == results
    assert cached(run, settings) == results
    assert probe_run(run, settings)["created"] == results["created"]
    assert cached(run, ProbeSettings(seeds=(0,), mlp_epochs=10, probe_train=500)) is None


def test_probe_run_refuses_an_unfinished_run(digits_run: Path, tmp_path: Path) -> None:
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(digits_run, copy)
    (copy / "probes.json").unlink()
    run = open_run(copy)
    run.write_status({**run.status(), "state": "stopped"})
    with pytest.raises(ValueError, match="probes need a finished run"):
        probe_run(run, ProbeSettings(seeds=(0,)))
