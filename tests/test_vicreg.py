"""VICReg: its loss against hand computations (invariance, variance hinge, covariance, float32 under
autocast), the all-gather whose backward all-reduces (two gloo processes give the one-process gradient),
the encoders, the fields the Train page's form is built from, the collapse warning, neighbours as views
(the table, the pairing, the alignment check) and the family end to end: train on digits, log, embed the
encoder's output, stop and resume bit for bit, train under torchrun."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import fault_env
from safetensors import safe_open
from torch import nn
from torch.nn import functional as F

from core.config import fields_for, make_config
from core.families import Batch, family_of, get_family, load_objective
from core.families.vicreg import (
    INVARIANCE_SCALE,
    _local_copy,
    covariance_term,
    effective_rank,
    neighbour_table,
    variance_term,
)
from core.fields import ConfigError
from core.run_check import run_problem
from core.runs import RunInfo, open_run
from core.train import main
from models.vicreg import VICRegNet

REPO = Path(__file__).resolve().parents[1]
TINY = ["--family", "vicreg", "--dataset", "digits", "--latent-dim", "16", "--width", "8", "--projector", "32-32",
        "--epochs", "2", "--limit-train", "384", "--batch-size", "96", "--lr", "2e-3", "--augment", "crop_flip",
        "--seed", "3", "--device", "cpu", "--threads", "1", "--quiet"]


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vicreg")
    assert main([*TINY, "--runs-root", str(root), "--run-id", "ref"]) == 0
    return root / "ref"


def _objective(loss: str = "mse", **fields):
    config = make_config(family="vicreg", dataset="digits", latent_dim=8, width=4, projector="16-6", loss=loss,
                         **fields)
    return get_family("vicreg").build(config), config


# ---------------------------------------------------------------------------------------------------
# The loss


def test_the_three_terms_match_a_hand_computation():
    gen = torch.Generator().manual_seed(0)
    z_a, z_b = torch.randn(7, 6, generator=gen) * 0.7, torch.randn(7, 6, generator=gen)
    objective, config = _objective()
    terms = objective.terms(z_a, z_b)

    def hinge(z: np.ndarray) -> float:
        return float(np.mean([max(0.0, 1.0 - math.sqrt(np.var(z[:, d], ddof=1) + 1e-4)) for d in range(z.shape[1])]))

    def cov(z: np.ndarray) -> float:
        n, d = z.shape
        c = (z - z.mean(0)).T @ (z - z.mean(0)) / (n - 1)
        return sum(c[i, j] ** 2 for i in range(d) for j in range(d) if i != j) / d

    a, b = z_a.double().numpy(), z_b.double().numpy()
    assert torch.allclose(terms["invariance"].double(), torch.from_numpy(((a - b) ** 2).mean(1)), atol=1e-6)
    assert float(terms["variance"]) == pytest.approx((hinge(a) + hinge(b)) / 2, rel=1e-5)
    assert float(terms["covariance"]) == pytest.approx(cov(a) + cov(b), rel=1e-5)
    # the training loss, as the engine forms it, is the official one: 25·MSE + 25·(v_a + v_b)/2 + (c_a + c_b)
    weights = get_family("vicreg").loss_weights(config)
    ours = sum(w * terms[k].mean() for k, w in weights.items())
    official = 25 * F.mse_loss(z_a, z_b) + 25 * terms["variance"] + terms["covariance"]
    assert float(ours) == pytest.approx(float(official), rel=1e-6)
    assert float(variance_term(torch.ones(5, 3) * 2)) == pytest.approx(1 - math.sqrt(1e-4))  # no spread: γ − √ε


def test_a_robust_invariance_matches_mse_for_small_residuals_and_tempers_large_ones():
    small, large = torch.full((2, 6), 1e-3), torch.full((2, 6), 10.0)
    zero = torch.zeros(2, 6)
    for loss in ("cauchy", "charbonnier", "adaptive"):
        objective, _ = _objective(loss)
        ratio = objective.terms(small, zero)["invariance"] / 1e-6
        assert torch.allclose(ratio, torch.ones(2), rtol=1e-2) or loss == "adaptive", loss
        assert float(objective.terms(large, zero)["invariance"][0].detach()) < 100 * 0.5, loss  # MSE: 100
    objective, _ = _objective("cauchy")
    assert float(objective.loss.scale) == pytest.approx(INVARIANCE_SCALE)  # the default c: 1/√2


def test_variance_and_covariance_stay_float32_under_autocast():
    gen = torch.Generator().manual_seed(1)
    z_a, z_b = ((torch.randn(64, 32, generator=gen) * 30).bfloat16() for _ in range(2))
    objective, _ = _objective()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        terms = objective.terms(z_a, z_b)
    assert all(t.dtype == torch.float32 for t in terms.values())
    exact = covariance_term(z_a.double()) + covariance_term(z_b.double())
    assert float(terms["covariance"]) == pytest.approx(float(exact), rel=1e-5)
    # the same in bfloat16 arithmetic is off by far more: why the statistics leave autocast
    low = z_a - z_a.mean(0)
    cov16 = (low.T @ low) / 63
    bf16 = float((cov16 - torch.diag(torch.diagonal(cov16))).float().square().sum() / 32)
    assert abs(bf16 - float(covariance_term(z_a.double()))) > 1e-4 * float(exact)


def test_effective_rank_counts_the_spread_directions():
    gen = torch.Generator().manual_seed(2)
    assert effective_rank(torch.randn(2000, 8, generator=gen)) == pytest.approx(8, rel=0.05)
    line = torch.randn(100, 1, generator=gen) * torch.tensor([[1.0, 2.0, -1.0]])
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    assert effective_rank(torch.ones(10, 4)) == 0.0


# ---------------------------------------------------------------------------------------------------
# The networks and the fields


def test_the_encoders_the_representation_and_the_projector():
    resnet = VICRegNet((3, 32, 32), 128, "resnet18", projector=(512, 512, 512))
    conv1 = resnet.backbone.conv1
    assert (conv1.kernel_size, conv1.stride) == ((3, 3), (1, 1)) and isinstance(resnet.backbone.maxpool, nn.Identity)
    assert [m.bias is None for m in resnet.projector if isinstance(m, nn.Linear)] == [False, False, True]
    small = VICRegNet((1, 28, 28), 64, "small", width=8, projector=(32, 24)).eval()
    x = torch.rand(5, 1, 28, 28)
    y, z = small(x)
    assert y.shape == (5, 64) and z.shape == (5, 24) and torch.equal(y, small.represent(x))
    state = small.state_dict()
    assert all(v.is_floating_point() for v in state.values()) and not any("num_batches" in k for k in state)
    fresh = VICRegNet((1, 28, 28), 64, "small", width=8, projector=(32, 24))
    fresh.load_state_dict(dict(state))  # a plain dict, as model.safetensors gives: the counter is not asked for
    assert torch.equal(fresh.eval()(x)[0], y)
    assert VICRegNet((1, 8, 8), 4, "small", width=2, projector=(8,))(torch.rand(3, 1, 8, 8))[1].shape == (3, 8)


def test_the_fields_make_the_train_form_and_refuse_what_does_not_apply():
    family = get_family("vicreg")
    labels = {f.name: f.label for f in fields_for(family)}
    assert labels["loss"] == "Invariance loss" and labels["var_weight"] == "Variance weight μ"
    assert "beta" not in labels and "adaptive_alpha_lo" in labels
    assert make_config(family="vicreg", dataset="cifar10")["model"]["encoder"] == "resnet18"
    assert make_config(family="vicreg", dataset="digits")["model"]["encoder"] == "small"
    width = family.field("width")
    assert not width.applies_to({"dataset": "cifar10"}) and width.applies_to({"dataset": "fashion_mnist"})
    with pytest.raises(ConfigError, match="width does not apply"):
        make_config(family="vicreg", dataset="cifar10", width=8)
    with pytest.raises(ConfigError, match="neighbour_run does not apply"):
        make_config(family="vicreg", neighbour_run="x")
    with pytest.raises(ConfigError, match="neighbour_run is needed") as caught:
        make_config(family="vicreg", views="neighbours")
    assert caught.value.field == "neighbour_run"
    with pytest.raises(ConfigError, match="projector") as caught:
        make_config(family="vicreg", projector="512-x")
    assert caught.value.field == "projector"
    with pytest.raises(ConfigError, match="loss_alpha is needed"):
        make_config(family="vicreg", loss="general")
    config = make_config(family="vicreg", dataset="digits", var_weight=0, views="neighbours", neighbour_run="r")
    assert family.describe(config) == "VICReg (small conv, D=128, μ=0, neighbours as views)"
    assert family.loss_weights(config) == {"invariance": 25.0, "variance": 0.0, "covariance": 1.0}


def test_a_validation_copy_has_plain_batch_norms_with_the_same_numbers():
    net = VICRegNet((1, 8, 8), 4, "small", width=2, projector=(8, 8)).train()
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(VICRegNet((1, 8, 8), 4, "small", width=2, projector=(8, 8)))
    synced.load_state_dict(net.state_dict())
    copy = _local_copy(synced)
    assert any(isinstance(m, nn.SyncBatchNorm) for m in synced.modules())
    assert not any(isinstance(m, nn.SyncBatchNorm) for m in copy.modules())
    x = torch.rand(6, 1, 8, 8)
    assert torch.allclose(copy.train()(x)[1], net(x)[1], atol=1e-6)


# ---------------------------------------------------------------------------------------------------
# The family end to end


def test_a_vicreg_trains_logs_its_terms_and_embeds_the_encoders_output(reference):
    run = open_run(reference)
    assert run.config["family"] == "vicreg" and run.status()["state"] == "finished"
    assert run.status()["warning"] is None
    epochs = run.history("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2]
    for key in ("invariance", "variance", "covariance", "std", "val_invariance", "val_variance", "val_covariance",
                "val_loss", "embedding_std", "embedding_std_min", "embedding_rank", "representation_rank",
                "noise_floor_covariance"):
        assert all(isinstance(e[key], (int, float)) and math.isfinite(e[key]) for e in epochs), key
    assert epochs[0]["embedding_std_before"] is None
    assert epochs[1]["embedding_std_before"] == pytest.approx(epochs[0]["embedding_std"])
    assert epochs[0]["loss"] == pytest.approx(25 * epochs[0]["invariance"] + 25 * epochs[0]["variance"]
                                              + epochs[0]["covariance"], rel=1e-5)
    assert 0 < epochs[-1]["embedding_rank"] <= 32 and 0 < epochs[-1]["representation_rank"] <= 16
    emb = run.embeddings()
    assert emb["z"].shape == (180, 16)  # y, the encoder's output (D = 16), not the projector's 32
    objective = load_objective(run)
    with torch.no_grad():
        y = objective.model.represent(emb["images"].float() / 255)
    assert torch.allclose(emb["z"], y, atol=1e-5)
    with safe_open(str(run.path / "model.safetensors"), framework="pt") as fh:
        assert all(fh.get_slice(k).get_dtype() == "F32" for k in fh.keys())  # noqa: SIM118
    assert run_problem(RunInfo(run.path, run.run_id, False, run.config, run.status())) is None
    assert family_of(run.config).reconstruct(objective, emb["images"][:2]) is None


def test_the_collapse_warning_needs_a_vanishing_covariance_and_a_falling_std(reference):
    family = get_family("vicreg")
    config = open_run(reference).config
    last = open_run(reference).history("epoch")[-1]
    assert family.health(last, config) is None
    floor = last["noise_floor_covariance"]
    collapsing = {**last, "val_covariance": 0.001 * floor, "embedding_std_before": 0.4, "embedding_std": 0.2}
    assert "collapsing" in family.health(collapsing, config) and "0.4 → 0.2" in family.health(collapsing, config)
    assert family.health({**collapsing, "embedding_std": 0.5}, config) is None  # the std rises: no collapse
    assert "collapsed" in family.health({**last, "embedding_std": 1e-3}, config)


def test_neighbours_pair_each_image_with_one_of_its_nearest_in_the_source_runs_representation(reference, tmp_path):
    source = open_run(shutil.copytree(reference, tmp_path / "source"))
    table = neighbour_table(source, "digits", 384, 3)
    from core.datasets import load_split

    train = load_split("digits", "train", limit=384)
    z = family_of(source.config).embed(load_objective(source), train.images)["z"]
    d = torch.cdist(z.double(), z.double())
    d.fill_diagonal_(float("inf"))
    assert table.shape == (384, 3) and torch.equal(table, d.topk(3, largest=False).indices)
    assert (table != torch.arange(384)[:, None]).all()
    assert any(p.name.startswith("neighbours-train-n384-k3") for p in (source.path / "evaluations").iterdir())
    assert torch.equal(neighbour_table(source, "digits", 384, 3), table)  # from the cache
    with pytest.raises(ConfigError, match="same dataset"):
        neighbour_table(source, "fashion_mnist", 384, 3)

    objective, _ = _objective(views="neighbours", neighbour_run=str(source.path), limit_train=384)
    index = torch.tensor([5, 17, 200, 3])
    batch = Batch(train.images[index], train.labels[index], index, 1, 0, 4)
    first, second = objective.views_of(batch)
    assert torch.equal(first, train.images[index].float() / 255)
    pick = torch.randint(3, (4,), generator=batch.generator(6))
    assert torch.equal(second, train.images[table[index, pick]].float() / 255)
    objective._neighbours.checked = False
    shifted = Batch(train.images[index + 1], train.labels[index], index, 1, 0, 4)
    with pytest.raises(RuntimeError, match="not the training split"):
        objective.views_of(shifted)


def test_a_neighbours_run_trains_from_a_finished_run(reference, tmp_path):
    args = [a if a != "2" else "1" for a in TINY]  # one epoch
    i = args.index("--augment")
    del args[i : i + 2]  # augmentations do not apply to neighbours as views
    assert main([*args, "--views", "neighbours", "--neighbour-run", str(reference), "--runs-root", str(tmp_path),
                 "--run-id", "nb"]) == 0
    run = open_run(tmp_path / "nb")
    assert run.config["views"] == "neighbours" and run.status()["state"] == "finished"
    assert run.history("epoch")[0]["invariance"] > 0


@pytest.mark.slow
def test_a_vicreg_stopped_mid_epoch_resumes_bit_for_bit(tmp_path, reference):
    env = {**os.environ, "OMP_NUM_THREADS": "1", **fault_env(signal_at_step="SIGTERM:3")}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    done = subprocess.run([sys.executable, "-m", "core.train", *TINY, "--runs-root", str(tmp_path), "--run-id", "cut"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 130, done.stderr
    run = open_run(tmp_path / "cut")
    assert run.status()["state"] == "stopped" and run.status()["step"] == 3
    assert main(["--resume", str(run.path), "--threads", "1", "--quiet"]) == 0
    ours, theirs = run.model_tensors(), open_run(reference).model_tensors()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)  # BN statistics too
    keys = ("epoch", "loss", "invariance", "variance", "covariance", "val_loss", "embedding_std", "embedding_rank")
    assert [[e[k] for k in keys] for e in run.history("epoch")] == \
        [[e[k] for k in keys] for e in open_run(reference).history("epoch")]


# ---------------------------------------------------------------------------------------------------
# Two processes


def _gather_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist
    from safetensors.torch import save_file

    from core.families.vicreg import gather_rows

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0))[rank::world].clone().requires_grad_(True)
    batch = Batch(torch.zeros(z.shape[0], 1, 2, 2, dtype=torch.uint8), torch.zeros(z.shape[0], dtype=torch.int64),
                  torch.zeros(z.shape[0], dtype=torch.int64), 1, 0, 7, rank, world)
    g = gather_rows(z, batch)
    value = variance_term(g) + covariance_term(g)
    value.backward()
    save_file({"grad": z.grad, "value": value.detach().reshape(1)}, f"{out}/rank{rank}.safetensors")
    dist.destroy_process_group()


@pytest.mark.slow
def test_the_gathered_statistics_give_two_processes_the_one_process_gradient(tmp_path):
    from safetensors.torch import load_file

    torch.multiprocessing.spawn(_gather_worker, args=(2, f"file://{tmp_path}/init", str(tmp_path)), nprocs=2)
    z = torch.randn(7, 5, generator=torch.Generator().manual_seed(0)).requires_grad_(True)
    value = variance_term(z) + covariance_term(z)
    value.backward()
    value = value.detach()
    for rank in (0, 1):
        got = load_file(str(tmp_path / f"rank{rank}.safetensors"))
        assert float(got["value"]) == pytest.approx(float(value), rel=1e-6)  # the global batch's statistics
        # each rank's loss is the global one, so its rows get world × ∂loss/∂z; DDP's average divides it back
        assert torch.allclose(got["grad"], 2 * z.grad[rank::2], atol=1e-6), rank


@pytest.mark.slow
def test_two_gloo_processes_train_a_vicreg(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", "-m", "core.train", *TINY,
                             "--runs-root", str(tmp_path), "--run-id", "ddp"], cwd=REPO, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        _, err = proc.communicate(timeout=240)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    run = open_run(tmp_path / "ddp")
    assert run.status()["world_size"] == 2 and run.status()["state"] == "finished"
    assert all(math.isfinite(e["val_loss"]) for e in run.history("epoch"))
    assert run.embeddings()["z"].shape == (180, 16)


def test_the_study_runs_every_variant_in_one_command():
    from core.study import _normalized, build_parser, plan_runs

    args = build_parser().parse_args(["--dataset", "fashion_mnist", "--families", "vicreg", "--losses", "mse,cauchy",
                                      "--latent-dims", "64", "--epochs", "2", "--with", "var_weight=25,0",
                                      "--with", "views=augment,neighbours",
                                      "--with", "neighbour_run=s-vicreg-mse-z64-varweight25-viewsaugment-s0"])
    specs = plan_runs(args, "s")
    assert len(specs) == 8 and specs[0].run_id == "s-vicreg-mse-z64-varweight25-viewsaugment-s0"
    configs = [_normalized(spec) for spec in specs]  # the neighbour run is set only where it applies
    assert [c["neighbour_run"] for c in configs[:2]] == [None, specs[0].run_id]
    assert {(c["var_weight"], c["views"], c["loss"]) for c in configs} == \
        {(v, w, loss) for v in (25.0, 0.0) for w in ("augment", "neighbours") for loss in ("mse", "cauchy")}
