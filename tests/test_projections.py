"""Projections (core.projections, core.mds, core.tsne) and their quality measures (core.neighbourhood):
shapes, determinism, display options, the cache with a real trained run, cluster preservation, and
agreement with scikit-learn's definitions. Timings live in benchmarks/projections.py, not here."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
from sklearn.datasets import load_digits
from sklearn.manifold import trustworthiness as sk_trustworthiness

from core import projections as pj
from core.families import family_of, load_objective
from core.latent_view import find_rows, point_detail, to_display
from core.mds import classical_mds, classical_mds_points, landmark_mds, mds, normalized_stress, smacof
from core.neighbourhood import knn, knn_label_agreement, nearest_to, trustworthiness
from core.runs import open_run
from core.tsne import perplexity_affinities, tsne

FAST_TSNE = {"n_iter": 300, "negatives": 128}


def mixture(n: int = 600, d: int = 32, classes: int = 6, spread: float = 3.0, seed: int = 0):
    """Well-separated Gaussian clusters: centres N(0, spread²) per coordinate, unit noise."""
    g = np.random.default_rng(seed)
    centres = g.normal(0.0, spread, (classes, d))
    labels = np.arange(n) % classes
    return (centres[labels] + g.normal(0.0, 1.0, (n, d))).astype(np.float32), labels


@pytest.fixture(scope="module")
def digits():
    """Real data: scikit-learn's 8×8 digits (1,797 × 64), scaled to [0, 1]."""
    x, y = load_digits(return_X_y=True)
    return (x / 16.0).astype(np.float32), y


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """A real two-epoch training run on digits, made by the trainer itself."""
    from core.train import main

    root = tmp_path_factory.mktemp("runs")
    code = main(["--dataset", "digits", "--loss", "cauchy", "--latent-dim", "8", "--epochs", "2",
                 "--runs-root", str(root), "--threads", "1", "--quiet"])
    assert code == 0
    (path,) = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    return open_run(path)


# ---------------------------------------------------------------------------------------------------
# Quality measures against their definitions


def test_trustworthiness_matches_scikit_learn(digits):
    rng = np.random.default_rng(1)
    # digits' pixels are multiples of 1/16, so many distances tie exactly and rank ties are broken
    # differently (scikit-learn by sort order, here by the lowest rank): jitter them apart
    x = digits[0][:400] + rng.normal(0, 1e-3, (400, 64)).astype(np.float32)
    for low in (x[:, :3], x @ rng.normal(size=(64, 3)), rng.normal(size=(400, 2))):
        ours = trustworthiness(x, low, k=7)
        assert ours == pytest.approx(sk_trustworthiness(x, low, n_neighbors=7), abs=1e-4)
    # a random layout is far less trustworthy than a projection
    assert trustworthiness(x, rng.normal(size=(400, 3))) < trustworthiness(x, classical_mds_points(
        torch.from_numpy(x), 3)) - 0.2


def test_trustworthiness_estimate_over_rows_is_close(digits):
    x = digits[0][:800]
    low = classical_mds_points(torch.from_numpy(x), 2).numpy()
    exact = trustworthiness(x, low, k=10)
    assert trustworthiness(x, low, k=10, rows=400, seed=3) == pytest.approx(exact, abs=0.02)
    assert trustworthiness(x, low, k=10, rows=None) == exact


def test_knn_and_label_agreement_against_brute_force():
    g = np.random.default_rng(0)
    x = g.normal(size=(150, 5)).astype(np.float32)
    labels = g.integers(0, 3, 150)
    d2, idx = knn(torch.from_numpy(x), 6)
    full = ((x[:, None] - x[None]) ** 2).sum(-1)
    np.fill_diagonal(full, np.inf)
    brute = np.argsort(full, axis=1)[:, :6]
    assert (idx.numpy() == brute).all()
    assert np.allclose(d2.numpy(), np.take_along_axis(full, brute, 1), rtol=1e-4, atol=1e-4)
    expected = (labels[brute] == labels[:, None]).mean()
    assert knn_label_agreement(x, labels, 6) == pytest.approx(expected, abs=1e-6)
    rows, dist = nearest_to(x, 7, 4)
    assert list(rows) == list(brute[7, :4]) and np.allclose(dist, np.sqrt(full[7, brute[7, :4]]), rtol=1e-4)


def test_hidden_rows_are_left_out_of_the_measures(digits):
    x, y = digits[0][:300], digits[1][:300]
    low = classical_mds_points(torch.from_numpy(x), 3).numpy()
    hidden = low.copy()
    hidden[:30] = np.nan
    assert knn_label_agreement(hidden, y) == pytest.approx(knn_label_agreement(low[30:], y[30:]))
    assert trustworthiness(x, hidden) == pytest.approx(trustworthiness(x[30:], low[30:]))


# ---------------------------------------------------------------------------------------------------
# MDS


def test_classical_mds_from_distances_equals_the_svd_identity(digits):
    x = torch.from_numpy(digits[0][:300])
    d = torch.cdist(x.double(), x.double())
    a, b = classical_mds(d, 3), classical_mds_points(x, 3)
    # the same layout up to each axis's sign (pinned by _sign_fix): compare pairwise distances and axes
    assert torch.allclose(torch.cdist(a, a), torch.cdist(b, b), atol=2e-3)
    assert torch.allclose(a.abs(), b.abs(), atol=2e-3)


def test_landmark_mds_recovers_low_rank_data_exactly():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 3, generator=g) @ torch.randn(3, 40, generator=g)  # rank 3 in 40-d
    z = landmark_mds(x, 3, landmarks=50, seed=0)
    assert torch.allclose(torch.pdist(z[:300]), torch.pdist(x[:300]), rtol=1e-3, atol=1e-3)


def test_smacof_lowers_the_stress_and_exact_mode_is_monotone(digits):
    x = torch.from_numpy(digits[0][:500])
    start = classical_mds_points(x, 3)
    z, history, iterations = smacof(x, start, landmarks=10_000, max_iter=40, tol=0.0, check_every=1)
    assert iterations == 40 and all(b <= a + 1e-6 for a, b in itertools.pairwise(history))
    assert normalized_stress(x, z) < normalized_stress(x, start) - 0.1
    # the landmark stress is the exact stress when every point is a landmark
    assert history[-1] == pytest.approx(normalized_stress(x, z), rel=1e-3)


def test_landmark_smacof_is_close_to_exact(digits):
    x = torch.from_numpy(digits[0][:1200])
    exact, _ = mds(x, 3, landmarks=10_000, max_iter=30)
    sampled, info = mds(x, 3, landmarks=300, max_iter=30)
    assert info["landmarks"] == 300
    assert normalized_stress(x, sampled) < normalized_stress(x, exact) * 1.05


def test_classical_start_beats_a_random_one():
    x, labels = mixture(600, spread=0.6)
    classical, _ = mds(x, 3, start="classical", max_iter=30)
    random, _ = mds(x, 3, start="random", max_iter=30)
    assert knn_label_agreement(classical, labels) > knn_label_agreement(random, labels)
    assert normalized_stress(x, classical) <= normalized_stress(x, random) + 1e-3


# ---------------------------------------------------------------------------------------------------
# t-SNE


def test_perplexity_calibration_hits_its_entropy(digits):
    x = torch.from_numpy(digits[0][:500])
    for perplexity in (5.0, 30.0):
        nbr, a = perplexity_affinities(x, perplexity)
        p = (a * 2 * 500).double()  # the conditional p_{j|i}
        assert nbr.shape == (500, round(3 * perplexity)) and torch.allclose(p.sum(1), torch.ones(500, dtype=p.dtype))
        entropy = -(p * p.clamp_min(1e-300).log()).sum(1)
        assert torch.allclose(entropy.exp(), torch.full((500,), perplexity, dtype=p.dtype), rtol=1e-3)


def test_tsne_sampled_repulsion_keeps_digit_classes(digits):
    x, y = digits
    coords, info = tsne(x, 3, seed=0, **FAST_TSNE)
    assert coords.shape == (len(x), 3) and not info["exact_repulsion"] and info["negatives"] == 128
    assert knn_label_agreement(coords, y) > 0.9
    assert trustworthiness(x, coords, rows=500) > 0.9


def test_tsne_exact_and_sampled_repulsion_agree_in_quality():
    x, labels = mixture(450, spread=0.8)
    exact, info = tsne(x, 3, **FAST_TSNE)
    sampled, info_s = tsne(x, 3, exact_below=0, **FAST_TSNE)
    assert info["exact_repulsion"] and not info_s["exact_repulsion"]
    assert abs(trustworthiness(x, exact) - trustworthiness(x, sampled)) < 0.03
    assert knn_label_agreement(sampled, labels) > 0.95


# ---------------------------------------------------------------------------------------------------
# project(): shapes, determinism, options, errors


@pytest.mark.parametrize("method", pj.METHODS)
def test_project_shapes_determinism_and_clusters(method):
    x, labels = mixture(600)
    opts = FAST_TSNE if method == "tsne" else {}
    a = pj.project(x, method, 3, seed=0, **opts)
    b = pj.project(x, method, 3, seed=0, **opts)
    assert a.shape == (600, 3) and a.dtype == np.float32 and np.isfinite(a).all()
    assert np.array_equal(a, b)  # same seed, same layout (CPU)
    assert pj.project(x, method, 2, seed=0, **opts).shape == (600, 2)
    assert knn_label_agreement(a, labels) > 0.95  # well-separated clusters stay separate


def test_seeds_change_tsne_and_sampled_sources(trained_run):
    x, _ = mixture(400)
    a = pj.project(x, "tsne", seed=0, init="random", **FAST_TSNE)
    b = pj.project(x, "tsne", seed=1, init="random", **FAST_TSNE)
    assert not np.allclose(a, b)
    emb = trained_run.embeddings()
    mu = pj.embedding_points(emb, "z")
    z0, z0_again, z1 = (pj.embedding_points(emb, "sample", s) for s in (0, 0, 1))
    assert np.array_equal(mu, emb["z"].numpy()) and np.array_equal(z0, z0_again) and not np.allclose(z0, z1)
    sigma = np.exp(0.5 * emb["logvar"].numpy())
    assert ((z0 - mu) / sigma).std() == pytest.approx(1.0, abs=0.1)  # ε ~ N(0, 1)
    # the sample's cache key hashes the stored μ and log σ² (its draw differs between CPUs' kernels)
    stored = np.hstack([emb["z"].numpy(), emb["logvar"].numpy()])
    assert np.array_equal(pj.key_points(emb, "sample", 0), stored)
    assert np.array_equal(pj.key_points(emb, "z", 0), mu)


def test_unit_sphere_ball_and_hidden_outliers():
    x, _ = mixture(500)
    raw = pj.project(x, "pca")
    sphere = pj.project(x, "pca", scale="sphere")
    assert np.allclose(np.linalg.norm(sphere, axis=1), 1.0, atol=1e-5)
    ball = pj.display_coords(raw, "ball")
    assert np.linalg.norm(ball, axis=1).max() == pytest.approx(1.0, abs=1e-6)
    assert np.allclose(ball.mean(0), 0.0, atol=1e-5)
    hidden = pj.display_coords(raw, "ball", hide_outliers=0.1)
    gone = ~np.isfinite(hidden).all(1)
    assert gone.sum() == 50
    radius = np.linalg.norm(raw - np.median(raw, 0), axis=1)
    assert radius[gone].min() >= radius[~gone].max()  # the farthest points go
    assert np.linalg.norm(hidden[~gone], axis=1).max() == pytest.approx(1.0, abs=1e-6)


def test_bad_input_names_the_fix():
    x, _ = mixture(50)
    with pytest.raises(ValueError, match="use one of pca, mds, tsne"):
        pj.project(x, "umap")
    with pytest.raises(ValueError, match="its options are: perplexity"):
        pj.project(x, "tsne", perplexty=30)
    with pytest.raises(ValueError, match="perplexity, 1 to 500"):
        pj.project(x, "tsne", perplexity=0)
    with pytest.raises(ValueError, match="dims must be 2 or 3"):
        pj.project(x, "pca", dims=4)
    with pytest.raises(ValueError, match="NaN or infinite"):
        pj.project(np.full((10, 3), np.nan), "pca")
    with pytest.raises(ValueError, match="2-D array"):
        pj.project(np.zeros(10), "pca")
    with pytest.raises(ValueError, match="unknown scale"):
        pj.project(x, "pca", scale="cube")
    with pytest.raises(ValueError, match=r"0 to 0\.5"):
        pj.display_coords(pj.project(x, "pca"), hide_outliers=0.7)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_layouts_match_the_cpu_in_quality():
    x, labels = mixture(2000)
    for method, opts in (("mds", {}), ("tsne", FAST_TSNE)):
        coords, info = pj.compute(x, method, device="cuda", **opts)
        assert info["device"].startswith("cuda") and knn_label_agreement(coords, labels) > 0.95


# ---------------------------------------------------------------------------------------------------
# The cache with a real run, and the point details the page shows


def test_cache_hit_key_and_invalidation(trained_run, tmp_path, monkeypatch):
    calls = []
    first = pj.run_projection(trained_run, "mds", seed=0, measure=True, progress=lambda f, m: calls.append(f))
    assert not first.from_cache and calls and calls[-1] == 1.0
    file = trained_run.path / "projections" / f"mds-{first.key}.safetensors"
    assert file.is_file()
    second = pj.run_projection(trained_run, "mds", seed=0, measure=True)
    assert second.from_cache and np.array_equal(first.coords, second.coords) and second.quality == first.quality
    assert set(first.quality) == {"trustworthiness", "knn_agreement", "latent_knn_agreement"}
    assert 0.5 < first.quality["trustworthiness"] <= 1.0
    # other options, another source, or other embeddings: another key
    assert pj.run_projection(trained_run, "mds", max_iter=5, compute_missing=False) is None
    emb = trained_run.embeddings()
    mu = emb["z"].numpy()
    key = pj.projection_key("mds", 3, 0, {}, "z", mu)
    assert pj.projection_key("mds", 3, 0, {}, "mu", mu) == key  # z is hashed under run format 1's name
    assert key == first.key
    assert pj.projection_key("mds", 3, 0, {}, "sample", mu) != key
    assert pj.projection_key("mds", 3, 0, {}, "mu", mu + 1e-3) != key
    assert pj.projection_key("mds", 3, 0, {"max_iter": 60}, "mu", mu) == key  # defaults are part of the key


def test_point_detail_reconstruction_and_neighbours(trained_run):
    emb = trained_run.embeddings()
    objective = load_objective(trained_run)
    model = objective.model
    index, labels = emb["index"].numpy(), emb["labels"].numpy()
    row = int(find_rows(index, labels, label=int(labels[5]))[0])
    assert int(find_rows(index, labels, index_value=int(index[row]))[0]) == row
    detail = point_detail(trained_run, row, 8, embeddings=emb, objective=objective)
    assert detail.index == int(index[row]) and detail.label == int(labels[row])
    assert detail.image is not None and np.array_equal(detail.image, emb["images"][row].numpy())
    assert detail.reconstruction.shape == (1, 8, 8) and detail.reconstruction.dtype == np.uint8
    with torch.no_grad():
        expected = (model.decode(emb["z"][row:row + 1]).clamp(0, 1) * 255).round().to(torch.uint8)
    assert np.array_equal(detail.reconstruction, expected[0].numpy())
    rows, dist = nearest_to(emb["z"], row, 8)
    assert list(detail.neighbour_rows) == list(rows) and row not in rows
    assert np.all(np.diff(dist) >= 0) and dist[0] > 0
    assert to_display(family_of(trained_run.config).decode(objective, emb["z"][:3]).numpy()).shape == (3, 8, 8)


def test_the_seed_keys_only_layouts_it_changes():
    points = mixture(50, 8)[0]
    pca = {pj.projection_key("pca", 3, seed, {}, "mu", points) for seed in (0, 1, 7)}
    tsne_keys = {pj.projection_key("tsne", 3, seed, {}, "mu", points) for seed in (0, 1, 7)}
    sampled = {pj.projection_key("pca", 3, seed, {}, "sample", points) for seed in (0, 1)}
    assert len(pca) == 1 and len(tsne_keys) == 3 and len(sampled) == 2
