"""The class-penalised autoencoder: the penalty's value and gradient against hand computations (finite at
zero), the targets' separation, λ = 0 training the plain autoencoder, the family through the seam (train,
stop and resume bit for bit, probe), the study's classifier, and the λ choice never touching the test
split; the sweep as one study command."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import fault_env

from core import class_penalty, datasets
from core.config import make_config
from core.families import family_of, load_objective
from core.fields import ConfigError
from core.probes import LatentSet, ProbeSettings, probe_run, seed_mlp_probe
from core.runs import open_run
from core.study import main as study
from core.train import main
from models.class_ae import class_targets, penalty

REPO = Path(__file__).resolve().parents[1]
TINY = ["--family", "class_ae", "--dataset", "digits", "--hidden-layers", "32x16", "--latent-dim", "10",
        "--epochs", "3", "--limit-train", "256", "--batch-size", "64", "--seed", "2", "--device", "cpu",
        "--threads", "1", "--quiet"]


def test_the_penalty_and_its_gradient_match_a_hand_computation():
    z = torch.tensor([[3.0, 4.0], [1.0, 1.0], [0.5, 0.0]], requires_grad=True)
    targets = torch.tensor([[0.0, 0.0], [1.0, 0.0]])
    labels = torch.tensor([0, 1, 0])
    r = penalty(z, targets, labels)
    assert torch.allclose(r, torch.tensor([5.0, 1.0, 0.5]), atol=1e-6)  # ‖(3,4)‖, ‖(0,1)‖, ‖(0.5,0)‖
    r.sum().backward()
    expected = torch.tensor([[0.6, 0.8], [0.0, 1.0], [1.0, 0.0]])  # (z − t)/‖z − t‖
    assert torch.allclose(z.grad, expected, atol=1e-5)
    at_target = torch.tensor([[1.0, 0.0]], requires_grad=True)
    penalty(at_target, targets, torch.tensor([1])).sum().backward()
    assert torch.isfinite(at_target.grad).all() and at_target.grad.abs().max() < 1e-3  # √(‖·‖² + ε): safe at 0


@pytest.mark.parametrize(("kind", "distance"), [("one_hot", 2 ** 0.5), ("simplex", (2 * 10 / 9) ** 0.5),
                                                ("orthogonal", 2 ** 0.5)])
def test_the_targets_are_equally_far_apart(kind, distance):
    radius = 1.5
    t = class_targets(kind, 10, 16, radius)
    assert t.shape == (10, 16) and torch.allclose(t.norm(dim=1), torch.full((10,), radius), atol=1e-5)
    gaps = [float((t[i] - t[j]).norm()) for i, j in itertools.combinations(range(10), 2)]
    assert max(gaps) - min(gaps) < 1e-4 and gaps[0] == pytest.approx(distance * radius, rel=1e-5)
    used = (t.abs() > 1e-6).any(dim=0).sum().item()
    assert used == (10 if kind == "one_hot" else 16)  # one-hot fills 10 of 16 dimensions; the others all of them
    assert torch.equal(t, class_targets(kind, 10, 16, radius))  # fixed: the same on every machine
    with pytest.raises(ValueError, match="at least 10"):
        class_targets(kind, 10, 8)


def test_the_config_knows_the_bottleneck_and_labels_the_supervision():
    cfg = make_config(family="class_ae", dataset="digits", class_lambda=0.25)
    family = family_of(cfg)
    assert cfg["optimizer"] == "radam" and cfg["model"]["hidden"] == [800, 200]
    assert "uses labels" in family.describe(cfg)
    assert "unsupervised" in family.describe(make_config(family="class_ae", class_lambda=0.0))
    assert family.loss_weights(make_config(family="class_ae", class_lambda=0.0)) == {"recon": 1.0}
    with pytest.raises(ConfigError, match="at least 10"):
        make_config(family="class_ae", latent_dim=4)
    with pytest.raises(ConfigError, match="hidden_layers"):
        make_config(family="class_ae", hidden_layers="800xq")


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cae")
    assert main([*TINY, "--class-lambda", "0.5", "--runs-root", str(root), "--run-id", "ref"]) == 0
    assert main([*TINY, "--class-lambda", "0", "--runs-root", str(root), "--run-id", "plain"]) == 0
    assert main([*TINY, "--class-lambda", "0", "--targets", "simplex", "--runs-root", str(root),
                 "--run-id", "plain-simplex"]) == 0
    return root


def test_lambda_zero_trains_the_plain_autoencoder(trained):
    plain, other = open_run(trained / "plain"), open_run(trained / "plain-simplex")
    a, b = plain.model_tensors(), other.model_tensors()
    # With λ = 0 the targets (one-hot or a rotated simplex) do not touch training: the weights are equal.
    assert all(torch.equal(a[k], b[k]) for k in a if k != "targets")
    first = plain.history("epoch")[0]
    assert first["loss"] == pytest.approx(first["recon"]) and first["penalty"] > 0  # logged, not trained on
    ref = open_run(trained / "ref").history("epoch")[0]
    assert ref["loss"] == pytest.approx(ref["recon"] + 0.5 * ref["penalty"])


def test_the_penalty_pulls_the_latents_to_their_targets(trained):
    ref, plain = open_run(trained / "ref"), open_run(trained / "plain")
    assert ref.history("epoch")[-1]["penalty"] < plain.history("epoch")[-1]["penalty"]


def test_a_class_ae_stopped_mid_epoch_resumes_bit_for_bit(tmp_path, trained):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **fault_env(signal_at_step="SIGTERM:6")}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    done = subprocess.run([sys.executable, "-m", "core.train", *TINY, "--class-lambda", "0.5", "--runs-root",
                           str(tmp_path), "--run-id", "cut"], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=240)
    assert done.returncode == 130, done.stderr
    assert main(["--resume", str(tmp_path / "cut"), "--threads", "1", "--quiet"]) == 0
    ours, theirs = open_run(tmp_path / "cut").model_tensors(), open_run(trained / "ref").model_tensors()
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_the_study_classifier_and_the_lab_probes_read_the_latents(trained):
    run = open_run(trained / "ref")
    results = probe_run(run, ProbeSettings(probe_train=300, seeds=(0,), mlp_epochs=2, seed_mlp=True), save=False)
    seed = results["probes"]["seed_mlp"]
    assert seed["hidden"] == [100, 200, 100] and seed["output"] == "linear" and 0 < seed["accuracy"] <= 1
    z = load_objective(run).model.encode(datasets.load_split("digits", "val").images.float() / 255)
    assert z.shape[1] == 10
    torch.manual_seed(0)
    x = torch.randn(400, 10)
    y = (x[:, 0] > 0).long()
    train, test = LatentSet(x[:300], None, y[:300]), LatentSet(x[300:], None, y[300:])
    for output in ("linear", "sigmoid"):
        fit = seed_mlp_probe(train, test, 2, ProbeSettings(seeds=(0,), mlp_epochs=20, seed_mlp_output=output))
        assert fit["accuracy"] > 0.85, output  # both learn a separable problem; the sigmoid only caps margins


def test_the_lambda_choice_never_touches_the_test_split(trained, monkeypatch):
    scores = [{"run_id": "a", "bottleneck": 10, "lambda": 0.1, "val_accuracy": 0.8, "test_accuracy": 0.1},
              {"run_id": "b", "bottleneck": 10, "lambda": 1.0, "val_accuracy": 0.7, "test_accuracy": 0.99},
              {"run_id": "c", "bottleneck": 10, "lambda": 2.0, "val_accuracy": 0.8, "test_accuracy": 0.5},
              {"run_id": "d", "bottleneck": 145, "lambda": 0.0, "val_accuracy": 0.6, "test_accuracy": 0.2}]
    chosen = class_penalty.choose_lambda(scores)
    assert chosen[10]["run_id"] == "a" and chosen[145]["run_id"] == "d"  # best validation; ties: smaller λ
    run = open_run(trained / "ref")
    first = class_penalty.evaluate_run(run, probe_train=200, force=True)
    assert first["validation_split"] == "val" and first["test_split"] == "test"
    real = datasets.load_split

    def shuffled_test(name, split, *args, **kwargs):  # the test labels scrambled: only test numbers may move
        data = real(name, split, *args, **kwargs)
        if split == "test":
            data.labels = data.labels[torch.randperm(len(data), generator=torch.Generator().manual_seed(9))]
        return data

    monkeypatch.setattr(datasets, "load_split", shuffled_test)
    second = class_penalty.evaluate_run(run, probe_train=200, force=True)
    assert second["val_accuracy"] == first["val_accuracy"] and second["test_accuracy"] != first["test_accuracy"]


@pytest.mark.slow
def test_the_lambda_sweep_is_one_study_command(tmp_path):
    args = ["--dataset", "digits", "--families", "class_ae", "--losses", "mse", "--latent-dims", "10",
            "--epochs", "2", "--limit-train", "256", "--with", "class_lambda=0,0.5", "--with", "hidden_layers=32x16",
            "--runs-root", str(tmp_path), "--study", "sweep", "--probe-train", "200", "--probe-seeds", "0",
            "--threads", "1", "--quiet"]
    assert study(args) == 0
    runs = sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("sweep-"))
    assert runs == ["sweep-cae-mse-z10-classlambda0-s0", "sweep-cae-mse-z10-classlambda0.5-s0"]
    report = (tmp_path / "studies" / "sweep" / "report.md").read_text()
    assert "λ against accuracy and reconstruction" in report and "**chosen**" in report and "4-NN" in report
