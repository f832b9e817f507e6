"""The VQ-VAE's numerics against hand computations (the EMA codebook update, the straight-through gradient,
the codebook term, the dead-code restart, the data initialisation), its latent-size rule, and the family
end to end: train, stop and resume bit for bit, probe, project; two gloo processes give the codebook of
one process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import fault_env

from core.config import make_config
from core.families import family_of, get_family, load_objective
from core.families.vqvae import auto_grid
from core.fields import ConfigError
from core.probes import ProbeSettings, probe_run
from core.projections import run_projection
from core.runs import open_run
from core.train import main
from models.vqvae import ConvVQVAE, VectorQuantizer, grid_plan

REPO = Path(__file__).resolve().parents[1]
TINY = ["--family", "vqvae", "--dataset", "digits", "--loss", "cauchy", "--latent-dim", "16", "--codebook-size",
        "32", "--epochs", "3", "--limit-train", "256", "--batch-size", "64", "--seed", "5", "--device", "cpu",
        "--threads", "1", "--quiet"]


def _quantizer(codebook: torch.Tensor, count: torch.Tensor, *, decay: float = 0.5, ema: bool = True,
               dead: float = 0.0) -> VectorQuantizer:
    q = VectorQuantizer(codebook.shape[0], codebook.shape[1], ema=ema, decay=decay, dead_threshold=dead)
    with torch.no_grad():
        q.codebook.copy_(codebook)
        q.ema_count.copy_(count)
        q.ema_sum.copy_(codebook * count[:, None])
        q.initialized.fill_(1)
    return q.train()


def _as_grid(rows: torch.Tensor) -> torch.Tensor:
    """(N, D) vectors as N images of a 1×1 grid: (N, D, 1, 1)."""
    return rows[:, :, None, None].clone()


def test_the_ema_update_matches_a_hand_computation():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [4.0, 0.0]])
    count = torch.tensor([2.0, 1.0, 1.0])
    q = _quantizer(codebook, count, decay=0.5)
    z = torch.tensor([[0.1, -0.1], [0.9, 1.2], [1.1, 0.8], [0.2, 0.1]])
    out = q(_as_grid(z))
    # Nearest codes: 0, 1, 1, 0 (code 2 unused). z_q and the commitment use the codebook before the update.
    assert out["codes"].flatten().tolist() == [0, 1, 1, 0]
    assert torch.equal(out["z_q"][:, :, 0, 0], torch.stack([codebook[0], codebook[1], codebook[1], codebook[0]]))
    assert torch.allclose(out["commit"], (z - codebook[[0, 1, 1, 0]]).square().sum(1))
    n = torch.tensor([2.0, 2.0, 0.0])
    sums = torch.stack([z[0] + z[3], z[1] + z[2], torch.zeros(2)])
    N = 0.5 * count + 0.5 * n
    M = 0.5 * codebook * count[:, None] + 0.5 * sums
    eps, total = 1e-5, N.sum()
    smoothed = (N + eps) / (total + 3 * eps) * total
    assert torch.allclose(q.ema_count, N) and torch.allclose(q.ema_sum, M)
    assert torch.allclose(q.codebook, M / smoothed[:, None], atol=1e-6)
    probs = n / n.sum()
    assert out["perplexity"].item() == pytest.approx(torch.exp(-(probs[:2] * probs[:2].log()).sum()).item())


def test_gradients_pass_straight_through_and_the_codebook_term_trains_the_codes():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0]])
    z = torch.tensor([[0.2, 0.1], [0.7, 0.9]], requires_grad=True)
    q = _quantizer(codebook, torch.ones(2), ema=False)
    out = q(_as_grid(z))
    weight = torch.tensor([[3.0, -1.0], [0.5, 2.0]])
    (out["z_q"][:, :, 0, 0] * weight).sum().backward()
    assert torch.equal(z.grad, weight)  # d z_q / d z_e is the identity
    assert q.codebook.grad is None  # the decoder's gradient does not reach the codes
    z.grad = None
    out = q(_as_grid(z))
    out["codebook"].sum().backward()
    assert torch.allclose(q.codebook.grad, 2 * (codebook - z.detach()))  # ∂‖sg[z_e] − e‖²/∂e
    assert z.grad is None or torch.count_nonzero(z.grad) == 0
    z.grad = None
    out = q(_as_grid(z))
    out["commit"].sum().backward()
    assert torch.allclose(z.grad, 2 * (z.detach() - codebook))  # ∂‖z_e − sg[e]‖²/∂z_e


def test_a_dead_code_is_restarted_at_an_encoder_output_with_the_fair_share():
    codebook = torch.tensor([[0.0, 0.0], [1.0, 1.0], [50.0, 50.0]])
    count = torch.tensor([4.0, 4.0, 0.01])  # code 2: far below half its fair share
    q = _quantizer(codebook, count, decay=0.9, dead=0.5)
    z = torch.tensor([[0.1, 0.0], [0.9, 1.1], [0.2, 0.3], [1.2, 0.8]])
    q(_as_grid(z), torch.Generator().manual_seed(0))
    n = torch.tensor([2.0, 2.0, 0.0])  # codes 0, 1, 0, 1
    after = 0.9 * count + 0.1 * n
    fair = float(after.sum()) / 3
    assert any(torch.equal(q.codebook[2], row) for row in z)  # restarted on one of the batch's vectors
    assert q.ema_count[2].item() == pytest.approx(fair)  # with the fair share as its count
    assert torch.allclose(q.ema_sum[2], q.codebook[2] * fair)
    assert torch.allclose(q.ema_count[:2], after[:2])  # the live codes are left alone


def test_the_first_training_batch_sets_the_codes_to_encoder_outputs():
    q = VectorQuantizer(8, 3).train()
    z = torch.randn(16, 3)
    q(_as_grid(z), torch.Generator().manual_seed(1))
    assert bool(q.initialized)
    assert q.ema_count.sum().item() == pytest.approx(16.0)  # the fair share each, then one EMA step
    assert (q(_as_grid(z))["counts"] > 0).sum() >= 4  # several codes in use from the start


def test_the_latent_size_is_grid_squared_times_the_code_size():
    assert auto_grid(16, 8) == 2 and auto_grid(64, 28) == 4 and auto_grid(512, 32) == 8 and auto_grid(128, 32) == 4
    cfg = make_config(family="vqvae", dataset="fashion_mnist", latent_dim=128)
    assert cfg["grid"] == 4 and cfg["model"]["code_dim"] == 8
    family = family_of(cfg)
    assert family.latent_size(cfg) == 128 and "K=512, 4×4×8, 144 bits" in family.describe(cfg)
    model = family.build(cfg).model
    z_e = model.encode(torch.rand(2, 1, 28, 28))
    assert z_e.shape == (2, 8, 4, 4) and model.latent_dim == 128
    assert model.decode(model.quantize(z_e)).shape == (2, 1, 28, 28)
    assert grid_plan(28, 4) == (2, 4) and grid_plan(32, 8) == (2, 1) and grid_plan(8, 2) == (2, 1)
    with pytest.raises(ConfigError, match="multiple of grid²"):
        make_config(family="vqvae", dataset="fashion_mnist", latent_dim=100, grid=4)
    with pytest.raises(ConfigError, match="grid must be at most 14"):
        make_config(family="vqvae", dataset="fashion_mnist", latent_dim=64 * 16, grid=16)
    with pytest.raises(ConfigError, match="vqvae family"):
        make_config(dataset="digits", codebook_size=64)  # a VQ-VAE field on a VAE
    for shape in ((1, 8, 8), (1, 28, 28), (3, 32, 32)):
        side = shape[1]
        for grid in range(1, side // 2 + 1):
            net = ConvVQVAE(shape, grid, 2, 16, 4)
            assert net.encode(torch.rand(1, *shape)).shape == (1, 2, grid, grid), (shape, grid)


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vq")
    assert main([*TINY, "--runs-root", str(root), "--run-id", "ref"]) == 0
    return root / "ref"


def test_a_vqvae_trains_logs_its_codes_and_embeds(reference):
    run = open_run(reference)
    assert run.config["family"] == "vqvae" and run.status()["state"] == "finished"
    epochs = run.history("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    for key in ("recon", "commit", "perplexity", "codes_used", "perplexity_epoch", "val_recon", "val_commit",
                "val_codes_used", "val_perplexity"):
        assert all(isinstance(e[key], (int, float)) for e in epochs), key
    assert epochs[-1]["val_recon"] < epochs[0]["val_recon"]  # it learns
    assert 1 <= epochs[-1]["codes_used"] <= 32
    emb = run.embeddings()
    assert emb["z"].shape == (180, 16) and emb["z_q"].shape == (180, 16) and emb["codes"].shape == (180, 4)
    objective = load_objective(run)
    codebook = objective.model.quantizer.codebook
    assert torch.allclose(emb["z_q"].view(180, 4, 2, 2).permute(0, 2, 3, 1).reshape(-1, 4),
                          codebook[emb["codes"].flatten()])
    images = family_of(run.config).decode(objective, emb["z"][:3])
    assert images.shape == (3, 1, 8, 8) and images.dtype == torch.uint8
    assert family_of(run.config).sample(objective, 2) is None  # no learned prior: not offered


def test_a_vqvae_stopped_mid_epoch_resumes_bit_for_bit(tmp_path, reference):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **fault_env(signal_at_step="SIGTERM:6")}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    done = subprocess.run([sys.executable, "-m", "core.train", *TINY, "--runs-root", str(tmp_path), "--run-id", "cut"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 130, done.stderr
    run = open_run(tmp_path / "cut")
    assert run.load_checkpoint().counts["codes"].shape == (32,)  # the epoch's code counts are checkpointed
    assert main(["--resume", str(run.path), "--threads", "1", "--quiet"]) == 0
    ours, theirs = run.model_tensors(), open_run(reference).model_tensors()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # EMA buffers too
    keys = ("epoch", "loss", "recon", "commit", "codes_used", "val_recon")
    assert [[e[k] for k in keys] for e in run.history("epoch")] == \
        [[e[k] for k in keys] for e in open_run(reference).history("epoch")]


def test_probes_and_projections_take_z_e_or_z_q(reference, tmp_path):
    copy = tmp_path / "copy"
    shutil.copytree(reference, copy)
    run = open_run(copy)
    fast = {"probe_train": 300, "seeds": (0,), "mlp_epochs": 3}
    z_e = probe_run(run, ProbeSettings(**fast), save=False)
    z_q = probe_run(run, ProbeSettings(**fast, features="z_q"), save=False)
    assert z_e["probes"]["mlp"]["features"] == "z" and z_e["probes"]["linear"]["features"].startswith("z_e")
    assert z_q["probes"]["linear"]["features"].startswith("z_q")
    assert z_e["probes"]["linear"]["accuracy"] != z_q["probes"]["linear"]["accuracy"]
    for source in ("z", "z_q"):
        layout = run_projection(run, "pca", source=source)
        assert layout.coords.shape == (180, 3) and layout.source == source


def test_the_vqvae_has_no_fields_it_does_not_use():
    family = get_family("vqvae")
    assert {f.name for f in family.fields} >= {"latent_dim", "grid", "codebook_size", "commitment", "ema_decay"}
    assert "beta" not in {f.name for f in family.fields}
    cfg = make_config(family="vqvae", codebook_update="loss")
    assert [t.name for t in family.active_terms(cfg)] == ["recon", "commit", "codebook", "perplexity"]
    assert family.loss_weights(cfg) == {"recon": 1.0, "commit": 0.25, "codebook": 1.0}
    ema = make_config(family="vqvae")
    assert [t.name for t in family.active_terms(ema)] == ["recon", "commit", "perplexity"]


@pytest.mark.slow
def test_two_gloo_processes_hold_the_codebook_of_one(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    args = ["--family", "vqvae", "--limit-train", "192", "--batch-size", "64", "--epochs", "2", "--latent-dim", "16",
            "--codebook-size", "16", "--device", "cpu", "--threads", "1", "--quiet", "--runs-root", str(tmp_path)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", "-m", "core.train", *args,
                             "--run-id", "ddp"], cwd=REPO, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    assert main([*args, "--run-id", "single"]) == 0
    ddp, single = open_run(tmp_path / "ddp"), open_run(tmp_path / "single")
    assert ddp.status()["world_size"] == 2
    a, b = ddp.model_tensors(), single.model_tensors()
    for key in ("quantizer.codebook", "quantizer.ema_count", "quantizer.ema_sum"):
        assert torch.allclose(a[key], b[key], atol=1e-4), key
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-4), key
