"""The training engine end to end: the command line in a real subprocess, resume after a kill and after
SIGTERM (bit-identical to an uninterrupted run), the NaN guard, the lock, DDP on two gloo processes,
the adaptive loss's parameters, and the models."""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from core import datasets
from core.engine import StopSignal, load_training_data, run_training
from core.families import family_of, load_objective
from core.runs import create_run, open_run, read_jsonl
from core.train import main
from models.classifier import MLPClassifier
from models.vae import ConvVAE, kl_divergence

REPO = Path(__file__).resolve().parents[1]
TINY = ["--dataset", "digits", "--loss", "cauchy", "--latent-dim", "8", "--epochs", "3", "--limit-train", "256",
        "--batch-size", "64", "--seed", "3", "--device", "cpu", "--threads", "1", "--quiet"]


FAULTS = REPO / "tests" / "faults"  # the fault injector: paces, signals or poisons a real trainer process


def _env(tmp_path: Path, **faults: str) -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "ROBUST_LOSS_LAB_RUNS": str(tmp_path / "runs"),
            "PYTHONPATH": os.pathsep.join([str(FAULTS), str(REPO)]),
            **{f"RLL_FAULT_{k.upper()}": v for k, v in faults.items()}}


def _spawn(args: list[str], tmp_path: Path, **faults: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "core.train", *args], cwd=REPO, env=_env(tmp_path, **faults),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(predicate, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"training ended early: {proc.stderr.read()}")
        if time.monotonic() > deadline:
            proc.kill()
            raise AssertionError("timed out waiting for the training process")
        time.sleep(0.05)


def _last_step(run_dir: Path) -> int:
    steps = [r["step"] for r in read_jsonl(run_dir / "history.jsonl") if r.get("kind") == "step"]
    return max(steps, default=0)


def _tensors_equal(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a)), load_file(str(b))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    """The uninterrupted run the interrupted ones must reproduce."""
    root = tmp_path_factory.mktemp("reference")
    assert main([*TINY, "--runs-root", str(root), "--run-id", "ref"]) == 0
    return root / "ref"


def test_digits_run_end_to_end(reference):
    run = open_run(reference)
    status = run.status()
    assert status["state"] == "finished" and status["epoch"] == 3 and status["step"] == 12
    assert status["steps_per_epoch"] == 4 and status["images_per_s"] > 0
    epochs = run.history("epoch")
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["val_loss"] < epochs[0]["val_loss"]  # it learns
    assert all(0 <= e["active_units"] <= 8 and e["kl"] >= 0 for e in epochs)
    assert [r["step"] for r in run.history("step")] == list(range(1, 13))
    emb = run.embeddings()
    assert emb["z"].shape == (180, 8) and emb["logvar"].dtype == torch.float32
    val = datasets.load_split("digits", "val")
    assert torch.equal(emb["labels"], val.labels) and torch.equal(emb["images"], val.images)
    assert torch.equal(emb["index"], torch.arange(180)) and torch.equal(emb["source_index"], val.index)
    # The saved weights are the trained ones: they reproduce the last logged validation numbers.
    objective = load_objective(run)
    model = objective.model
    assert not model.training
    metrics = family_of(run.config).evaluate(objective, val.images, run.config)
    assert metrics["val_recon"] == pytest.approx(epochs[-1]["val_recon"], rel=1e-5)
    assert metrics["active_units"] == epochs[-1]["active_units"]
    mu, _ = model.encode(val.images.float() / 255)
    assert torch.allclose(mu, emb["z"], atol=1e-5)


@pytest.mark.slow
def test_resume_after_kill_gives_the_uninterrupted_weights(tmp_path, reference):
    loud = [a for a in TINY if a != "--quiet"]
    proc = _spawn([*loud, "--runs-root", str(tmp_path), "--run-id", "killed"], tmp_path, step_delay="0.3")
    run_dir = tmp_path / "killed"
    try:
        _wait_for(lambda: run_dir.is_dir() and _last_step(run_dir) >= 6, proc)  # mid epoch 2
    finally:
        proc.send_signal(signal.SIGKILL)
        out, err = proc.communicate(timeout=30)
    assert out.splitlines()[0] == str(run_dir.resolve())  # the run directory, printed first
    assert "epoch 1/3" in err and "img/s" in err  # progress on stderr
    run = open_run(run_dir)
    assert run.status()["state"] == "interrupted"
    assert open_run(run_dir).load_checkpoint().trainer["epoch"] == 1
    assert main(["--resume", str(run_dir), "--threads", "1", "--quiet"]) == 0
    assert run.status()["state"] == "finished"
    _tensors_equal(run_dir / "model.safetensors", reference / "model.safetensors")
    ours, theirs = open_run(run_dir).load_checkpoint(), open_run(reference).load_checkpoint()
    assert ours.optimizer.keys() == theirs.optimizer.keys()
    assert all(torch.equal(ours.optimizer[k], theirs.optimizer[k]) for k in ours.optimizer)
    assert [r["step"] for r in run.history("step")] == list(range(1, 13))  # no duplicates after resume
    ours, theirs = run.history("epoch"), open_run(reference).history("epoch")
    assert [e["val_loss"] for e in ours] == [e["val_loss"] for e in theirs]
    assert [e["loss"] for e in ours] == pytest.approx([e["loss"] for e in theirs], rel=1e-6)


@pytest.mark.slow
def test_sigterm_stops_mid_epoch_and_resume_is_exact(tmp_path, reference):
    proc = _spawn([*TINY, "--runs-root", str(tmp_path), "--run-id", "termed"], tmp_path, step_delay="0.3")
    run_dir = tmp_path / "termed"
    _wait_for(lambda: run_dir.is_dir() and _last_step(run_dir) >= 2, proc)  # inside epoch 1
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 130
    run = open_run(run_dir)
    status = run.status()
    assert status["state"] == "stopped" and "SIGTERM" in status["message"] and "--resume" in status["message"]
    saved = open_run(run_dir).load_checkpoint().trainer
    assert saved["epoch"] == 0 and 2 <= saved["epoch_step"] < 4  # a mid-epoch checkpoint
    assert not run.is_locked()
    assert main(["--resume", str(run_dir), "--threads", "1", "--quiet"]) == 0
    _tensors_equal(run_dir / "model.safetensors", reference / "model.safetensors")
    assert main(["--resume", str(run_dir), "--quiet"]) == 2  # finished: nothing to continue


def test_stop_signal_in_process_checkpoints_and_marks_stopped(tmp_path, reference):
    cfg = {**open_run(reference).config}
    cfg = {k: v for k, v in cfg.items() if k not in ("format", "version", "run_id", "created")}
    data = load_training_data(cfg)
    run = create_run({**cfg, "split": data.split, "run_id": "stopped"}, root=tmp_path)
    stop = StopSignal()
    # A stop asked for when the first epoch's end is reported takes effect before the second epoch.
    result = run_training(run, data=data, stop=stop, on_progress=lambda s: s.get("last_epoch") and stop.request("test"))
    assert result.state == "stopped" and result.global_step == 4
    assert run.status()["state"] == "stopped"
    result = run_training(run, data=data)
    assert result.state == "finished" and result.global_step == 12
    _tensors_equal(run.path / "model.safetensors", reference / "model.safetensors")


def test_nan_loss_fails_the_run_and_keeps_the_last_good_checkpoint(tmp_path):
    args = ["--dataset", "digits", "--loss", "mse", "--latent-dim", "4", "--epochs", "3", "--limit-train", "128",
            "--batch-size", "32", "--runs-root", str(tmp_path), "--run-id", "poisoned", "--log-every", "1",
            "--threads", "1", "--quiet"]
    proc = _spawn(args, tmp_path, poison_at_step="6")  # every weight Inf after the 2nd step of epoch 2
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 1, err
    run = open_run(tmp_path / "poisoned")
    status = run.status()
    assert status["state"] == "failed" and "NaN" in status["message"]
    assert "epoch 2" in status["message"] and "epoch 1" in status["message"]
    checkpoint = run.load_checkpoint()
    assert checkpoint.trainer["epoch"] == 1 and checkpoint.trainer["global_step"] == 4
    now = load_file(str(run.path / "model.safetensors"))
    assert all(torch.equal(now[k], checkpoint.model[k]) for k in now)  # the weights of the last good checkpoint
    assert all(torch.isfinite(v).all() for v in now.values())
    assert not run.has_embeddings


def test_divergent_learning_rate_fails_with_the_reason(tmp_path, capsys):
    code = main(["--dataset", "digits", "--lr", "1", "--epochs", "2", "--limit-train", "128", "--latent-dim", "4",
                 "--runs-root", str(tmp_path), "--run-id", "diverged", "--threads", "1"])
    assert code == 1
    run = open_run(tmp_path / "diverged")
    status = run.status()
    assert status["state"] == "failed" and "no checkpoint" in status["message"]
    assert any(word in status["message"] for word in ("NaN", "Inf", "diverged"))
    assert "Lower the learning rate (--lr)" in capsys.readouterr().err
    assert not (run.path / "model.safetensors").exists()


def test_a_locked_run_is_not_trained_twice(tmp_path, capsys):
    run = create_run({"run_id": "busy", "epochs": 1, "limit_train": 64}, root=tmp_path)
    with run.lock():
        assert main(["--resume", str(run.path), "--quiet"]) == 3
    assert "being trained by another process" in capsys.readouterr().err
    assert run.status()["state"] == "created"


def test_bad_arguments_and_directories_are_refused(tmp_path, capsys):
    assert main(["--loss", "general", "--runs-root", str(tmp_path)]) == 2
    assert "--loss-alpha" in capsys.readouterr().err
    assert main(["--resume", str(tmp_path)]) == 2
    assert "no config.json" in capsys.readouterr().err
    run = create_run({"run_id": "r"}, root=tmp_path)
    assert main(["--resume", str(run.path), "--epochs", "5"]) == 2
    assert "cannot be changed when resuming" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["--device", "cuda", "--runs-root", str(tmp_path)]) == 2
        assert "--device cpu" in capsys.readouterr().err
    empty = tmp_path / "nodata"
    empty.mkdir()
    os.environ["ROBUST_LOSS_LAB_DATA"] = str(empty)
    try:
        datasets._official.cache_clear()
        assert main(["--dataset", "mnist", "--runs-root", str(tmp_path / "x")]) == 2
    finally:
        del os.environ["ROBUST_LOSS_LAB_DATA"]
    err = capsys.readouterr().err
    assert "python -m core.datasets download mnist" in err
    assert not (tmp_path / "x").exists()  # no run directory for a run that cannot start
    assert main(["--help"]) == 0  # (argparse's exit, returned as the exit status)
    assert "--latent-dim" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.skipif(not (datasets.DEBIAN_FASHION_MNIST / "train-images-idx3-ubyte.gz").is_file(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_subset_end_to_end(tmp_path, monkeypatch):
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "empty"))  # found where Debian puts it
    datasets._official.cache_clear()
    assert main(["--dataset", "fashion_mnist", "--loss", "welsch", "--latent-dim", "6", "--epochs", "2",
                 "--limit-train", "384", "--batch-size", "128", "--width", "4", "--runs-root", str(tmp_path),
                 "--run-id", "fm", "--threads", "1", "--quiet"]) == 0
    run = open_run(tmp_path / "fm")
    # A training limit caps validation too: the first 384 validation images.
    assert run.config["split"] == {"train": 384, "val": 384, "test": 10000, "seed": 0, "val_from": "train"}
    emb = run.embeddings()
    assert emb["z"].shape == (384, 6) and emb["images"].shape == (384, 1, 28, 28)
    val = datasets.load_split("fashion_mnist", "val", limit=384)
    assert torch.equal(emb["labels"], val.labels) and torch.equal(emb["images"], val.images)
    epochs = run.history("epoch")
    assert len(epochs) == 2 and all(math.isfinite(e["val_loss"]) for e in epochs)
    assert epochs[1]["loss"] < epochs[0]["loss"]


def test_adaptive_loss_parameters_are_trained_and_saved(tmp_path):
    assert main(["--loss", "adaptive", "--epochs", "1", "--limit-train", "128", "--latent-dim", "4",
                 "--runs-root", str(tmp_path), "--run-id", "ad", "--threads", "1", "--quiet"]) == 0
    run = open_run(tmp_path / "ad")
    tensors = run.model_tensors()
    assert tensors["loss.alpha_latent"].shape == (64,) and tensors["loss.scale_latent"].shape == (64,)
    from core.losses import make_loss

    fresh = make_loss("adaptive", 64)
    loss = load_objective(run).loss
    assert not torch.allclose(loss.alpha(), fresh.alpha())  # learned, not the initial value
    assert not torch.allclose(loss.scale(), fresh.scale())
    last = run.history("epoch")[-1]
    assert last["alpha_mean"] == pytest.approx(loss.alpha().mean().item(), rel=1e-5)
    assert last["scale_mean"] == pytest.approx(loss.scale().mean().item(), rel=1e-5)
    optimizer = run.load_checkpoint().optimizer
    n_model = len(list(load_objective(run).model.parameters()))
    assert f"state.{n_model}.exp_avg" in optimizer  # the loss's parameters are in the optimiser


@pytest.mark.slow
def test_torchrun_ddp_on_two_cpu_processes_matches_one_process(tmp_path):
    torchrun = shutil.which("torchrun", path=str(Path(sys.executable).parent)) or "torchrun"
    args = ["--limit-train", "192", "--batch-size", "64", "--epochs", "2", "--latent-dim", "4", "--device", "cpu",
            "--threads", "1", "--quiet", "--runs-root", str(tmp_path)]
    proc = subprocess.Popen([torchrun, "--standalone", "--nproc_per_node=2", "-m", "core.train", *args,
                             "--run-id", "ddp"], cwd=REPO, env=_env(tmp_path), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=180)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and its two workers
        proc.communicate()
        raise
    assert proc.returncode == 0, err[-3000:]
    assert out.splitlines() == [str((tmp_path / "ddp").resolve())]  # printed once, by rank 0
    assert main([*args, "--run-id", "single"]) == 0
    ddp, single = open_run(tmp_path / "ddp"), open_run(tmp_path / "single")
    assert ddp.status()["world_size"] == 2 and ddp.status()["state"] == "finished"
    a, b = ddp.model_tensors(), single.model_tensors()
    for key in a:
        assert torch.allclose(a[key], b[key], atol=1e-5), key
    assert ddp.has_embeddings and [e["epoch"] for e in ddp.history("epoch")] == [1, 2]


# ---------------------------------------------------------------------------------------------------
# Models


@pytest.mark.parametrize(("shape", "latents"), [((1, 8, 8), (2, 16)), ((1, 28, 28), (64,)),
                                                ((3, 32, 32), (64, 128, 256, 512))])
def test_vae_shapes(shape, latents):
    for d in latents:
        model = ConvVAE(shape, d)
        x = torch.rand(3, *shape)
        x_hat, mu, logvar = model(x, torch.zeros(3, d))
        assert x_hat.shape == x.shape and mu.shape == logvar.shape == (3, d)
        assert x_hat.min() >= 0 and x_hat.max() <= 1
        assert torch.allclose(model.decode(mu), x_hat)  # ε = 0 decodes μ
        assert ConvVAE(**{k: v for k, v in model.spec().items() if k != "kind"}).latent_dim == d
    with pytest.raises(ValueError):
        ConvVAE((1, 2, 2), 4)


def test_kl_matches_torch_distributions():
    mu, logvar = torch.randn(5, 3), torch.randn(5, 3)
    q = torch.distributions.Normal(mu, (0.5 * logvar).exp())
    p = torch.distributions.Normal(torch.zeros(3), torch.ones(3))
    expected = torch.distributions.kl_divergence(q, p).sum(1)
    assert torch.allclose(kl_divergence(mu, logvar), expected, atol=1e-5)


def test_mlp_classifier_learns_a_separable_problem():
    torch.manual_seed(0)
    x = torch.randn(400, 6)
    y = (x[:, 0] + x[:, 1] > 0).long() + 2 * (x[:, 2] > 0).long()
    clf = MLPClassifier(6, 4, hidden=(32,))
    opt = torch.optim.Adam(clf.parameters(), lr=1e-2)
    for _ in range(200):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(clf(x), y).backward()
        opt.step()
    assert (clf(x).argmax(1) == y).float().mean() > 0.9
    assert MLPClassifier(6, 4, hidden=()).net[0].in_features == 6  # a linear probe
    with pytest.raises(ValueError):
        MLPClassifier(6, 1)
