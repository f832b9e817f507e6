"""A crash never costs a run: real trainer processes killed or interrupted at exact instants (the fault
injector in tests/faults/sitecustomize.py hits the moment a checkpoint commits, the moment the embeddings
land), then resumed to the weights of an uninterrupted run; divergence; refused arguments; damaged files
that get a message naming the file and the fix instead of a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from core.probes import ProbeSettings, probe_run
from core.runs import FORMAT, RunFormatError, create_run, open_run
from core.train import main

REPO = Path(__file__).resolve().parents[1]
FAULTS = REPO / "tests" / "faults"
TINY = ["--dataset", "digits", "--loss", "cauchy", "--latent-dim", "8", "--epochs", "3", "--limit-train", "256",
        "--batch-size", "64", "--seed", "3", "--device", "cpu", "--threads", "1", "--quiet"]

pytestmark = pytest.mark.slow


def _trainer(args: list[str], tmp_path: Path, **faults: str) -> subprocess.CompletedProcess:
    """`python -m core.train ARGS` in a real process, with the fault injector armed by `faults`."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ROBUST_LOSS_LAB_RUNS": str(tmp_path / "runs"),
           "PYTHONPATH": os.pathsep.join([str(FAULTS), str(REPO)]),
           **{f"RLL_FAULT_{k.upper()}": v for k, v in faults.items()}}
    return subprocess.run([sys.executable, "-m", "core.train", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


def _same_weights(a: Path, b: Path) -> None:
    ta, tb = load_file(str(a / "model.safetensors")), load_file(str(b / "model.safetensors"))
    assert ta.keys() == tb.keys()
    for key in ta:
        assert torch.equal(ta[key], tb[key]), key


@pytest.fixture(scope="module")
def reference(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("reference")
    assert main([*TINY, "--runs-root", str(root), "--run-id", "ref"]) == 0
    return root / "ref"


# ---------------------------------------------------------------------------------------------------
# 1, 2, 3: kills and signals at the exact instants that used to tear a run


@pytest.mark.parametrize("fault", [
    "checkpoint.safetensors:before:2:kill",  # the new checkpoint is complete but not yet committed
    "checkpoint.safetensors:after:2:kill",  # committed; the weights file not yet refreshed
    "model.safetensors:before:2:kill",
    "model.safetensors:after:2:kill",  # (run format 1: optimizer and weights renamed, trainer state not)
])
def test_a_kill_at_any_moment_of_a_checkpoint_commit_leaves_the_run_resumable(tmp_path, reference, fault):
    done = _trainer([*TINY, "--runs-root", str(tmp_path), "--run-id", "cut"], tmp_path, replace=fault)
    assert done.returncode == -9, done.stderr  # the fault fired: killed at that instant
    run = open_run(tmp_path / "cut")
    assert run.status()["state"] == "interrupted"
    committed = run.load_checkpoint().trainer["epoch"]
    assert committed == (1 if fault.startswith("checkpoint.safetensors:before") else 2)
    assert main(["--resume", str(run.path), "--threads", "1", "--quiet"]) == 0
    assert run.status()["state"] == "finished"
    _same_weights(run.path, reference)
    assert [r["step"] for r in run.history("step")] == list(range(1, 13))
    assert not [p for p in run.path.iterdir() if ".tmp-" in p.name]  # the killed writer's temporary is gone


def test_a_second_ctrl_c_during_the_stop_checkpoint_waits_for_the_commit(tmp_path, reference):
    done = _trainer([*TINY, "--runs-root", str(tmp_path), "--run-id", "impatient"], tmp_path,
                    signal_at_step="SIGINT:6", replace="model.safetensors:before:2:sigint2")
    assert done.returncode == 130, done.stderr
    assert "continues from its last checkpoint with --resume" in done.stderr
    run = open_run(tmp_path / "impatient")
    assert run.load_checkpoint().trainer["global_step"] == 6  # the stop checkpoint is whole
    assert main(["--resume", str(run.path), "--threads", "1", "--quiet"]) == 0
    _same_weights(run.path, reference)


def test_a_kill_after_the_embeddings_is_finished_by_resume(tmp_path, reference):
    done = _trainer([*TINY, "--runs-root", str(tmp_path), "--run-id", "almost"], tmp_path,
                    replace="embeddings.safetensors:after:1:kill")
    assert done.returncode == -9, done.stderr
    run = open_run(tmp_path / "almost")
    assert run.status()["state"] == "interrupted" and run.has_embeddings
    assert main(["--resume", str(run.path), "--threads", "1", "--quiet"]) == 0
    assert run.status()["state"] == "finished" and "finished 3 epochs" in run.status()["message"]
    _same_weights(run.path, reference)
    results = probe_run(run, ProbeSettings(probe_train=200, seeds=(0,), mlp_epochs=2))
    assert 0 <= results["probes"]["linear"]["accuracy"] <= 1
    assert main(["--resume", str(run.path), "--quiet"]) == 2  # now truly finished


def test_a_study_holding_a_run_cut_off_while_finishing_completes_when_rerun(tmp_path):
    args = ["--dataset", "digits", "--losses", "mse", "--latent-dims", "4", "--epochs", "1", "--limit-train", "128",
            "--runs-root", str(tmp_path / "runs"), "--study", "cut", "--probe-train", "200", "--probe-seeds", "0",
            "--threads", "1", "--quiet", "--no-report"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join([str(FAULTS), str(REPO)])}
    first = subprocess.run([sys.executable, "-m", "core.study", *args], cwd=REPO, capture_output=True, text=True,
                           env={**env, "RLL_FAULT_REPLACE": "embeddings.safetensors:after:1:kill"}, timeout=240)
    assert first.returncode == 130, first.stderr  # the trainer was killed: interrupted, run again
    again = subprocess.run([sys.executable, "-m", "core.study", *args], cwd=REPO, capture_output=True, text=True,
                           env=env, timeout=240)
    assert again.returncode == 0, again.stderr
    run = open_run(tmp_path / "runs" / "cut-mse-z4-s0")
    assert run.status()["state"] == "finished" and run.probes() is not None


# ---------------------------------------------------------------------------------------------------
# 7: divergence to huge finite values


def test_a_diverging_run_fails_with_the_reason_and_keeps_no_bad_checkpoint(tmp_path):
    code = main(["--dataset", "digits", "--lr", "0.15", "--epochs", "3", "--runs-root", str(tmp_path),
                 "--run-id", "blowup", "--threads", "1", "--quiet"])
    assert code == 1
    status = open_run(tmp_path / "blowup").status()
    assert status["state"] == "failed" and "diverged" in status["message"]
    assert "learning rate" in status["message"]


# ---------------------------------------------------------------------------------------------------
# 8: refused up front, naming the flag, nothing on disk


@pytest.mark.parametrize(("flags", "named"), [
    (["--loss", "cauchy", "--loss-scale", "1e-300"], "--loss-scale"),
    (["--loss", "cauchy", "--loss-scale", "inf"], "--loss-scale"),
    (["--lr", "inf"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--beta", "inf"], "--beta"),
    (["--adaptive-alpha-lo", "-10", "--loss", "adaptive"], "--adaptive-alpha-lo"),
    (["--threads", "0"], "threads"),
])
def test_bad_values_are_refused_naming_the_flag(tmp_path, capsys, flags, named):
    root = tmp_path / "runs"
    assert main(["--dataset", "digits", *flags, "--runs-root", str(root)]) == 2
    assert named in capsys.readouterr().err
    assert not root.exists() or not any(root.iterdir())


def test_the_study_refuses_what_the_trainer_refuses(tmp_path):
    from core.study import main as study

    for flags in (["--threads", "0"], ["--lr", "inf"]):
        assert study(["--dataset", "digits", "--losses", "mse", "--latent-dims", "4", "--epochs", "1",
                      "--runs-root", str(tmp_path), "--quiet", *flags]) == 2
    assert not any(tmp_path.iterdir())


# ---------------------------------------------------------------------------------------------------
# 9: damaged files get a message naming the file and the fix (exit 2), never a traceback


@pytest.fixture()
def stopped(tmp_path) -> Path:
    """A run stopped by SIGTERM in its second epoch, with a checkpoint."""
    done = _trainer([*TINY, "--runs-root", str(tmp_path), "--run-id", "stopped"], tmp_path,
                    signal_at_step="SIGTERM:6")
    assert done.returncode == 130, done.stderr
    return tmp_path / "stopped"


def _rewrite_trainer_state(run_dir: Path, change) -> None:
    file = run_dir / "checkpoint.safetensors"
    from safetensors import safe_open

    with safe_open(str(file), framework="pt") as fh:
        meta = fh.metadata()
    tensors = load_file(str(file))
    state = json.loads(meta["trainer_state"])
    change(state)
    save_file(tensors, str(file), metadata={**meta, "trainer_state": json.dumps(state)})


def _resume(run_dir: Path, capsys) -> tuple[int, str]:
    code = main(["--resume", str(run_dir), "--threads", "1", "--quiet"])
    return code, capsys.readouterr().err


def test_a_trainer_state_missing_fields_is_named(stopped, capsys):
    _rewrite_trainer_state(stopped, lambda s: s.pop("epoch_acc"))
    code, err = _resume(stopped, capsys)
    assert code == 2 and "checkpoint.safetensors" in err and "epoch_acc" in err and "Traceback" not in err


def test_a_format_1_trainer_state_missing_fields_is_named(tmp_path, capsys):
    run = create_run({"run_id": "old", "dataset": "digits", "epochs": 1, "limit_train": 64}, root=tmp_path)
    (run.path / "trainer_state.json").write_text(json.dumps({"global_step": 3}))
    code, err = _resume(run.path, capsys)
    assert code == 2 and "trainer_state.json" in err and "epoch" in err


@pytest.mark.parametrize(("field", "value"), [("model", None), ("split", "x"), ("latent_dim", "16"),
                                              ("split", {"train": "many", "val": 1, "test": 1})])
def test_a_config_with_a_wrong_typed_field_is_named(tmp_path, capsys, field, value):
    run = create_run({"run_id": "cfg", "dataset": "digits", "epochs": 1, "limit_train": 64}, root=tmp_path)
    config = json.loads((run.path / "config.json").read_text())
    config[field] = value
    (run.path / "config.json").write_text(json.dumps(config))
    with pytest.raises(RunFormatError, match=field.split(".")[0]):
        open_run(run.path)
    code, err = _resume(run.path, capsys)
    assert code == 2 and "config.json" in err and field in err


def test_damaged_history_lines_do_not_block_a_resume(stopped, capsys, reference):
    history = stopped / "history.jsonl"
    lines = history.read_bytes().splitlines(keepends=True)
    lines.insert(1, b'{"kind": "step", "step": "six", "epoch": 1}\n')  # a wrong-typed record
    lines.insert(2, b'{"kind": "epoch", "epoch": 1, "loss": \xff\xfe}\n')  # not UTF-8
    lines.insert(3, b"[" * 100000 + b"\n")  # nested beyond the parser's depth
    history.write_bytes(b"".join(lines))
    code, err = _resume(stopped, capsys)
    assert code == 0, err
    run = open_run(stopped)
    assert [r["step"] for r in run.history("step")] == list(range(1, 13))
    _same_weights(stopped, reference)


def test_a_lock_that_is_a_directory_is_named(tmp_path, capsys):
    run = create_run({"run_id": "locked", "dataset": "digits", "epochs": 1, "limit_train": 64}, root=tmp_path)
    (run.path / ".lock").mkdir()
    code, err = _resume(run.path, capsys)
    assert code == 2 and ".lock" in err and "remove it" in err


def test_an_unwritable_runs_root_is_named(tmp_path, capsys):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    code = main(["--dataset", "digits", "--epochs", "1", "--runs-root", str(blocker / "runs"), "--quiet"])
    err = capsys.readouterr().err
    assert code == 2 and str(blocker / "runs") in err and "writable" in err


def test_probes_redo_a_damaged_probes_json(reference, tmp_path):
    import shutil

    copy = tmp_path / "probed"
    shutil.copytree(reference, copy)
    run = open_run(copy)
    settings = ProbeSettings(probe_train=200, seeds=(0,), mlp_epochs=2)
    first = probe_run(run, settings)
    (copy / "probes.json").write_text(json.dumps({**first, "probes": {"mlp": {"accuracy": "high"}}}))
    again = probe_run(run, settings)
    assert again["probes"]["linear"]["accuracy"] == first["probes"]["linear"]["accuracy"]
    from core.probes import main as probes_main

    (copy / "probes.json").write_text(json.dumps(["not", "an", "object"]))
    assert probes_main([str(copy), "--probe-train", "200", "--seeds", "0"]) == 0


# ---------------------------------------------------------------------------------------------------
# 10: the run store under concurrency, stale temporaries, an exact history across a stop


def test_two_creators_of_one_run_id_get_one_run_and_one_clear_refusal(tmp_path):
    def make(attempt: int, outcomes: list[object]) -> None:
        try:
            create_run({"run_id": f"same-{attempt}", "dataset": "digits", "epochs": 1}, root=tmp_path)
            outcomes.append("made")
        except Exception as exc:
            outcomes.append(exc)

    for attempt in range(60):
        outcomes: list[object] = []
        threads = [threading.Thread(target=make, args=(attempt, outcomes)) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert outcomes.count("made") == 1, outcomes
        refusal = next(o for o in outcomes if o != "made")
        assert isinstance(refusal, FileExistsError) and "already exists" in str(refusal)


def test_stale_temporaries_of_dead_writers_are_removed_and_live_ones_kept(tmp_path, capsys):
    run = create_run({"run_id": "tmp", "dataset": "digits", "epochs": 1, "limit_train": 64, "latent_dim": 4},
                     root=tmp_path)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run.path / f".model.safetensors.tmp-{dead.pid}-abc123"
    live = run.path / f".probes.json.tmp-{os.getpid()}-def456"
    stale.write_bytes(b"half a file")
    live.write_bytes(b"being written")
    assert main(["--resume", str(run.path), "--threads", "1", "--quiet"]) == 0
    assert not stale.exists() and live.exists()


def test_a_mid_epoch_stop_and_resume_give_the_uninterrupted_history_exactly(tmp_path):
    args = [*TINY, "--runs-root", str(tmp_path), "--log-every", "3"]
    assert main([*args, "--run-id", "whole"]) == 0
    done = _trainer([*args, "--run-id", "split"], tmp_path, signal_at_step="SIGTERM:5")  # mid log window
    assert done.returncode == 130, done.stderr
    assert main(["--resume", str(tmp_path / "split"), "--threads", "1", "--quiet"]) == 0

    def numbers(run_dir: Path) -> list[tuple]:
        keys = ("kind", "epoch", "epoch_step", "step", "loss", "recon", "kl", "val_loss")
        return [tuple(r.get(k) for k in keys) for r in open_run(run_dir).history()]

    assert numbers(tmp_path / "split") == numbers(tmp_path / "whole")  # every record, every digit


def test_a_damaged_checkpoint_file_is_named(stopped, capsys):
    (stopped / "checkpoint.safetensors").write_bytes(b"\x00" * 64)
    code, err = _resume(stopped, capsys)
    assert code == 2 and "checkpoint.safetensors" in err


def test_the_checkpoint_is_one_file_with_its_trainer_state(stopped):
    from safetensors import safe_open

    with safe_open(str(stopped / "checkpoint.safetensors"), framework="pt") as fh:
        meta = fh.metadata()
        keys = list(fh.keys())
    assert meta["format"] == FORMAT and json.loads(meta["trainer_state"])["global_step"] == 6
    assert any(k.startswith("model/") for k in keys) and any(k.startswith("optimizer/") for k in keys)
    assert not (stopped / "trainer_state.json").exists() and not (stopped / "optimizer.safetensors").exists()
