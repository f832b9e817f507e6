"""The run store: creation, validation, listing, deletion, the lock, atomic files, malformed directories."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch

from core import runs
from core.config import ConfigError, make_config
from core.runs import (
    Checkpoint,
    RunFormatError,
    RunLocked,
    create_run,
    delete_run,
    list_runs,
    open_run,
    read_jsonl,
)

REPO = Path(__file__).resolve().parents[1]



def test_roots_follow_the_environment(roots):
    assert runs.runs_root() == roots[0] and runs.checkpoints_root() == roots[1]


def test_create_open_and_list(roots):
    run = create_run({"dataset": "digits", "loss": "cauchy", "latent_dim": 8, "epochs": 2})
    assert run.path.parent == roots[0].resolve() and run.path.name == run.run_id
    assert run.run_id.split("-")[2:6] == ["digits", "vae", "cauchy", "z8"]  # the family and its loss
    cfg = json.loads((run.path / "config.json").read_text())
    assert cfg["format"] == runs.FORMAT and cfg["version"] == runs.VERSION
    assert cfg["model"] == {"kind": "conv_vae", "image_shape": [1, 8, 8], "latent_dim": 8, "width": 32}
    assert cfg["split"] == {"train": 1257, "val": 180, "test": 360, "seed": 0, "val_from": "train"}
    assert cfg["lr"] == 1e-3 and cfg["beta"] == 1.0 and cfg["loss_alpha"] is None
    assert run.status()["state"] == "created" and run.history() == [] and not run.shipped
    again = open_run(run.path)
    assert again.config == run.config
    second = create_run({"dataset": "digits", "loss": "mse", "run_id": "my-run"}, root=roots[0])
    listed = list_runs()
    assert {r.run_id for r in listed} == {run.run_id, "my-run"}
    assert all(r.state == "created" and r.error is None for r in listed)
    with pytest.raises(FileExistsError, match="--resume"):
        create_run({"run_id": "my-run"})
    assert second.config["loss"] == "mse"


@pytest.mark.parametrize(("fields", "needle"), [
    ({"loss": "general"}, "--loss-alpha"),
    ({"loss": "cauchy", "loss_alpha": 1.0}, "applies only to general"),
    ({"loss": "mse", "loss_scale": 0.5}, "no effect"),
    ({"dataset": "imagenet"}, "choose one of"),
    ({"latent_dim": 0}, "latent_dim must be between 1"),
    ({"lr": -1.0}, "lr must be > 0"),
    ({"epochs": 2.5}, "whole number"),
    ({"loss": "nope"}, "unknown loss"),
    ({"learning_rate": 0.1}, "unknown configuration field"),
    ({"loss": "adaptive", "adaptive_alpha_lo": 2.0, "adaptive_alpha_hi": 1.0}, "alpha_lo"),
])
def test_bad_configs_are_refused_with_the_fix(fields, needle):
    with pytest.raises(ConfigError, match=needle):
        make_config(**fields)


def test_bad_run_id_is_refused(roots):
    with pytest.raises(ValueError, match="run id"):
        create_run({"run_id": "../escape"})
    assert list(roots[0].iterdir()) == []


def test_malformed_and_foreign_directories(roots, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(RunFormatError, match=r"no config\.json"):
        open_run(empty)
    foreign = roots[0] / "foreign"
    foreign.mkdir()
    (foreign / "config.json").write_text('{"model": "resnet"}')
    with pytest.raises(RunFormatError, match="belongs to something else"):
        open_run(foreign)
    garbled = roots[0] / "garbled"
    garbled.mkdir()
    (garbled / "config.json").write_text("{not json")
    with pytest.raises(RunFormatError, match="not valid JSON"):
        open_run(garbled)
    future = create_run({"run_id": "future"})
    cfg = json.loads((future.path / "config.json").read_text())
    (future.path / "config.json").write_text(json.dumps({**cfg, "version": 99}))
    with pytest.raises(RunFormatError, match="version 99"):
        open_run(future.path)
    (roots[0] / "not-a-run").mkdir()  # no config.json at all: not listed
    listed = {r.run_id: r for r in list_runs([roots[0]])}
    assert set(listed) == {"foreign", "garbled", "future"}
    assert all(r.error and r.state == "broken" for r in listed.values())
    with pytest.raises(RunFormatError):
        open_run(tmp_path / "does-not-exist")


def test_delete_refuses_non_runs_shipped_and_locked(roots):
    precious = roots[0] / "precious"
    precious.mkdir()
    (precious / "thesis.tex").write_text("x")
    with pytest.raises(RunFormatError):
        delete_run(precious)
    assert (precious / "thesis.tex").exists()
    run = create_run({"run_id": "doomed"})
    with run.lock(), pytest.raises(RunLocked):
        delete_run(run.path)
    delete_run(run.path)
    assert not run.path.exists() and not list(roots[0].glob(".deleting-*"))
    shipped_dir = roots[1] / "shipped"
    os.replace(create_run({"run_id": "shipped"}).path, shipped_dir)
    shipped = open_run(shipped_dir)
    assert shipped.shipped
    with pytest.raises(PermissionError, match="shipped"):
        delete_run(shipped_dir)
    with pytest.raises(RunFormatError, match="read-only"), shipped.lock():
        pass
    assert shipped.projections_dir == roots[0] / ".shipped-cache" / "shipped" / "projections"
    with pytest.raises(ValueError, match="checkpoints"):
        create_run({"run_id": "x"}, root=roots[1])


def test_lock_is_exclusive_and_freed_when_the_holder_dies(roots):
    run = create_run({"run_id": "locked"})
    with run.lock():
        assert run.is_locked()
        with pytest.raises(RunLocked, match="another process"), run.lock(wait_s=0.1):
            pass
    assert not run.is_locked()
    # A process that takes the lock, marks the run running, and is killed.
    code = ("import sys, time; sys.path.insert(0, sys.argv[2]);"
            "from core.runs import open_run; r = open_run(sys.argv[1]);"
            "held = r.lock(); held.__enter__(); r.write_status({'state': 'running', 'pid': 0});"
            "print('ready', flush=True);"
            "time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code, str(run.path), str(REPO)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "ready"
        assert run.is_locked() and run.status()["state"] == "running"
        with pytest.raises(RunLocked):
            run.lock(wait_s=0.1).__enter__()
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    assert not run.is_locked()
    status = run.status()
    assert status["state"] == "interrupted" and "--resume" in status["message"]
    with run.lock():  # nothing stuck
        pass


def test_atomic_writes_and_torn_history(roots):
    run = create_run({"run_id": "files"})
    run.append_history({"kind": "step", "step": 1, "loss": float("nan")})
    run.append_history([{"kind": "step", "step": 2, "loss": 1.5}, {"kind": "epoch", "epoch": 1, "step": 2}])
    with open(run.path / "history.jsonl", "a") as fh:
        fh.write('{"kind": "step", "st')  # a crash mid-line
    assert [r["step"] for r in run.history()] == [1, 2, 2]
    assert run.history()[0]["loss"] is None  # NaN is written as null: the file stays valid JSON
    assert [r["epoch"] for r in run.history("epoch")] == [1]
    run.truncate_history(lambda r: r["step"] < 2)
    assert read_jsonl(run.path / "history.jsonl") == [{"kind": "step", "step": 1, "loss": None}]
    run.write_status({"state": "running", "eta_s": float("inf")})
    assert run.status()["eta_s"] is None
    assert not [p for p in run.path.iterdir() if ".tmp-" in p.name]


def test_checkpoint_round_trip_and_torn_format_1_checkpoint(roots):
    run = create_run({"run_id": "ckpt"})
    assert run.load_checkpoint() is None and not run.has_checkpoint
    model = {"w": torch.arange(6.0).reshape(2, 3), "loss.alpha_latent": torch.zeros(4)}
    state = {"global_step": 7, "epoch": 1, "epoch_step": 0, "steps_per_epoch": 7, "epoch_acc": [0.0, 0.0, 0.0],
             "optimizer": {"param_groups": []}}
    ckpt = Checkpoint(model, {"state.0.exp_avg": torch.ones(3)}, state)
    run.save_checkpoint(ckpt)
    got = run.load_checkpoint()
    assert got.trainer == state and run.has_checkpoint
    assert torch.equal(got.model["w"], model["w"]) and torch.equal(got.optimizer["state.0.exp_avg"], torch.ones(3))
    assert torch.equal(run.model_tensors()["w"], model["w"])  # the weights file readers use
    assert oct((run.path / "model.safetensors").stat().st_mode & 0o777) == "0o644"
    assert sorted(p.name for p in run.path.iterdir() if "safetensors" in p.name) == [
        "checkpoint.safetensors", "model.safetensors"]
    # Run format 1 kept three files; a crash between them (model from step 9, trainer state from step 7)
    # tore the checkpoint, which its reader refuses.
    (run.path / "checkpoint.safetensors").unlink()
    runs.write_safetensors_atomic(run.path / "optimizer.safetensors", ckpt.optimizer, {"global_step": "7"})
    runs.write_safetensors_atomic(run.path / "model.safetensors", model, {"global_step": "7"})
    runs.write_json_atomic(run.path / "trainer_state.json", state)
    assert run.load_checkpoint().trainer == state
    runs.write_safetensors_atomic(run.path / "model.safetensors", model, {"global_step": "9"})
    with pytest.raises(RunFormatError, match="torn"):
        run.load_checkpoint()
    (run.path / "model.safetensors").write_bytes(b"garbage")
    with pytest.raises(RunFormatError, match="safetensors"):
        run.load_checkpoint()


def test_missing_results_say_why(roots):
    run = create_run({"run_id": "fresh"})
    with pytest.raises(RunFormatError, match="no embeddings yet"):
        run.embeddings()
    with pytest.raises(RunFormatError, match="no weights yet"):
        run.model_tensors()


def test_projection_and_probe_caches(roots):
    run = create_run({"run_id": "cache"})
    assert run.load_projection("pca", "3d") is None and run.probes() is None
    path = run.save_projection("pca", "3d", {"xyz": torch.ones(5, 3)}, {"n": "5"})
    assert path == run.path / "projections" / "pca-3d.safetensors"
    assert torch.equal(run.load_projection("pca", "3d")["xyz"], torch.ones(5, 3))
    with pytest.raises(ValueError):
        run.save_projection("../x", "y", {})
    run.save_probes({"accuracy": 0.5})
    assert run.probes() == {"accuracy": 0.5}


def test_status_written_while_running_is_never_half_a_file(roots):
    run = create_run({"run_id": "busy"})

    def writer():
        for i in range(300):
            run.write_status({"state": "running", "step": i, "pad": "x" * 20000})

    thread = threading.Thread(target=writer)
    thread.start()
    reads = 0
    while thread.is_alive():
        assert "state" in run.status()  # parses every time: the file is replaced, never rewritten in place
        reads += 1
    thread.join()
    assert reads > 0 and run.status()["step"] == 299
