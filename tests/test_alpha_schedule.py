"""The annealed α (Barron 2019's "annealing α = 2 → 0"): the general loss with α on a linear or cosine schedule
over the fraction of training done, for every family that takes a reconstruction loss; logged per step as the
term `alpha` (the Train page's live curves draw every term), saved with the weights."""

from __future__ import annotations

import math

import pytest
import torch

from core.config import ConfigError, make_config
from core.engine import load_training_data, run_training
from core.families import get_family, load_objective
from core.families.recon import ScheduledRho, loss_label, scheduled_alpha
from core.runs import create_run


def test_the_schedules():
    assert [scheduled_alpha("linear", 2.0, 0.0, f) for f in (0.0, 0.25, 1.0)] == [2.0, 1.5, 0.0]
    assert scheduled_alpha("cosine", 2.0, 0.0, 0.0) == 2.0 and scheduled_alpha("cosine", 2.0, 0.0, 1.0) == 0.0
    assert scheduled_alpha("cosine", 2.0, 0.0, 0.5) == pytest.approx(1.0)
    assert scheduled_alpha("cosine", 2.0, 0.0, 0.25) == pytest.approx(1 + math.cos(math.pi / 4))  # slow at first
    assert scheduled_alpha("linear", -2.0, 1.0, 2.0) == 1.0  # clamped to the schedule's ends
    with pytest.raises(ValueError, match="unknown α schedule"):
        scheduled_alpha("step", 2.0, 0.0, 0.5)
    loss = ScheduledRho("linear", 2.0, 0.0, 0.5)
    r = torch.linspace(-2, 2, 9)
    loss.set_fraction(0.0)
    assert torch.allclose(loss(r), 0.5 * (r / 0.5) ** 2)  # α = 2: L2
    loss.set_fraction(1.0)
    assert torch.allclose(loss(r), torch.log1p(0.5 * (r / 0.5) ** 2))  # α = 0: Cauchy
    assert float(loss.fraction) == 1.0 and loss.current_alpha == 0.0


def test_the_fields_refuse_what_does_not_fit():
    config = make_config(dataset="digits", loss="general", loss_alpha_schedule="cosine")
    assert (config["loss_alpha_start"], config["loss_alpha_end"], config["loss_alpha"]) == (2.0, 0.0, None)
    assert loss_label(config) == "General (α 2→0, cosine)"
    assert [t.name for t in get_family("vae").active_terms(config)] == ["recon", "kl", "alpha"]
    assert [t.name for t in get_family("vae").active_terms(make_config(dataset="digits"))] == ["recon", "kl"]
    with pytest.raises(ConfigError, match="give one of them") as err:
        make_config(dataset="digits", loss="general", loss_alpha=1.0, loss_alpha_schedule="linear")
    assert err.value.field == "loss_alpha"
    with pytest.raises(ConfigError, match="applies only to general") as err:
        make_config(dataset="digits", loss="cauchy", loss_alpha_schedule="linear")
    assert err.value.field == "loss_alpha_schedule"
    with pytest.raises(ConfigError, match="loss_alpha_start does not apply"):
        make_config(dataset="digits", loss="general", loss_alpha=1.0, loss_alpha_start=1.0)
    with pytest.raises(ConfigError, match="anneal it with --loss-alpha-schedule"):
        make_config(dataset="digits", loss="general")


def _train(tmp_path, **fields):
    config = make_config(dataset="digits", epochs=2, limit_train=256, batch_size=64, device="cpu", seed=2,
                         loss="general", **fields)
    data = load_training_data(config)
    run = create_run({**config, "split": data.split}, root=tmp_path)
    assert run_training(run, data=data, log_every=1).state == "finished"
    return run


def test_a_vae_anneals_and_logs_alpha_each_step(tmp_path):
    run = _train(tmp_path, loss_alpha_schedule="cosine", latent_dim=4, width=8)
    steps = run.history("step")
    total = len(steps)  # 2 epochs of 4 steps, logged at every step
    assert total == 8
    want = [scheduled_alpha("cosine", 2.0, 0.0, s / total) for s in range(total)]
    assert [r["alpha"] for r in steps] == pytest.approx(want, abs=1e-6)
    epochs = run.history("epoch")
    assert epochs[0]["alpha"] == pytest.approx(sum(want[:4]) / 4, abs=1e-6) and epochs[1]["alpha"] < epochs[0]["alpha"]
    objective = load_objective(run)  # the weights carry where the schedule stood
    assert objective.loss.current_alpha == pytest.approx(want[-1], abs=1e-6)
    assert float(run.model_tensors()["loss.fraction"]) == pytest.approx((total - 1) / total)


def test_any_family_with_a_reconstruction_loss_follows_the_schedule(tmp_path):
    """The VQ-VAE builds its loss with build_loss and never calls the schedule itself: the engine hands it the
    training fraction (core.engine.build_objective)."""
    run = _train(tmp_path, family="vqvae", loss_alpha_schedule="linear", loss_alpha_start=1.0, loss_alpha_end=-2.0,
                 latent_dim=16, codebook_size=16)
    objective = load_objective(run)
    assert isinstance(objective.loss, ScheduledRho)
    assert float(run.model_tensors()["loss.fraction"]) == pytest.approx(7 / 8)
    assert objective.loss.current_alpha == pytest.approx(1.0 - 3.0 * 7 / 8)
