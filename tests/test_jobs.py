"""Training jobs: the trainer launched as its own process, watched through its run directory, stopped
with a clean checkpoint, resumed to the end; refusals that name the fix; the run list and summaries."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from core import jobs
from core.config import ConfigError
from core.engine import run_training
from core.families.recon import loss_label
from core.runs import Run, create_run, list_runs, open_run

TINY = {"dataset": "digits", "loss": "cauchy", "epochs": 4, "latent_dim": 2, "width": 8, "limit_train": 256,
        "batch_size": 32}




def _finished_run(root: Path, **fields) -> Run:
    run = create_run({**TINY, "epochs": 2, "limit_train": 32, **fields}, root=root)
    assert run_training(run).state == "finished"
    return run


@pytest.mark.slow
def test_start_watch_stop_and_resume_to_the_end(roots: tuple[Path, Path], pace_trainers) -> None:
    user, _ = roots
    # A trainer that dies before training, launched alongside (both load torch at once): config.json
    # says the split has 5 training images, the trainer finds 256 and refuses (exit status 2).
    doomed = create_run({**TINY, "split": {"train": 5, "val": 180, "test": 360}, "run_id": "doomed"})
    assert jobs.job_state(doomed) == "created"
    jobs.resume(doomed, threads=1)
    pace_trainers(0.03)  # keeps the tiny run going long enough to stop it
    run = jobs.start(TINY, threads=1)
    assert run.path.parent == user.resolve()
    assert jobs.job_state(run) == "starting"
    first_pid = jobs.launch_info(run)["pid"]
    assert jobs._is_trainer(first_pid, run.path)
    assert sorted(r.run_id for r in jobs.active_runs()) == sorted([run.run_id, "doomed"])

    jobs.wait_for(run, ["running"], timeout_s=60)
    deadline = time.monotonic() + 30
    while (p := jobs.progress(run)).step < 10:  # a few logged steps, so ETA and losses exist
        assert time.monotonic() < deadline, p
        time.sleep(0.1)
    raw = run.status()
    assert 0 < p.fraction < 1 and p.total_steps == 4 * 8 and raw["eta_s"] > 0
    later = jobs.progress(run, raw, now=time.time() + 0.5)  # the ETA counts down between status writes
    assert later.eta_s is not None and 0 <= later.eta_s <= raw["eta_s"]
    assert p.loss is not None and p.terms["kl"] is not None and p.epoch_label.startswith("epoch ")
    rows = {row["run"]: row for row in jobs.run_table()}
    row = rows[run.run_id]
    assert row["state"] == "running" and row["dataset"] == "digits" and row["loss"] == "Cauchy"
    with pytest.raises(jobs.JobError, match="running"):
        jobs.resume(run)
    with pytest.raises(jobs.JobError, match="stop it first"):
        jobs.delete(run)
    assert jobs.stop(run, wait_s=30)  # while it runs, whatever the machine's load (the doomed one may be slow)

    assert jobs.wait_for(doomed, ["launch failed"], timeout_s=60) == "launch failed"
    failed = jobs.progress(doomed)
    assert "train a new run" in failed.message and failed.fraction == 0.0
    assert rows["doomed"]["state"] in ("starting", "launch failed")
    jobs.delete(doomed)
    assert not doomed.path.exists()
    assert jobs.job_state(run) == "stopped"
    stopped = open_run(run.path).status()
    assert stopped["state"] == "stopped" and "--resume" in stopped["message"]
    assert 0 < stopped["step"] < 32
    trainer = open_run(run.path).load_checkpoint().trainer
    assert trainer["global_step"] == stopped["step"]  # the checkpoint is the stop point
    assert not jobs._is_trainer(first_pid) and not jobs.active_runs()
    assert jobs.run_table()[0]["state"] == "stopped"
    assert "stopped by SIGTERM" in jobs.log_tail(run)

    second_pid = jobs.resume(run, threads=1)
    assert second_pid != first_pid and jobs.job_state(run) == "starting"
    # train.log says what each launch did, in the trainer's words (not a bare "--resume" for a new run)
    launches = [line for line in jobs.log_tail(run, 200).splitlines() if line.startswith("--- ")]
    step, spe = stopped["epoch_step"], stopped["steps_per_epoch"]
    resumed = (f"resume in epoch {stopped['epoch'] + 1} after step {step} of {spe}: " if 0 < step < spe
               else f"resume after epoch {stopped['epoch']}: ")
    assert len(launches) == 2 and "new run, from epoch 1: " in launches[0] and resumed in launches[1], launches
    assert jobs.wait_for(run, ["finished"], timeout_s=90) == "finished"
    p = jobs.progress(run)
    assert p.fraction == 1.0 and p.epoch == 4 and p.val_loss is not None and p.eta_s == 0.0
    steps = [r["step"] for r in run.history("step")]
    assert steps == sorted(set(steps)) and steps[-1] == 32  # one history, no step twice, none lost
    assert [r["epoch"] for r in run.history("epoch")] == [1, 2, 3, 4]
    assert run.has_embeddings
    deadline = time.monotonic() + 15
    while jobs._is_trainer(second_pid):  # it exits right after writing "finished"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    with pytest.raises(jobs.JobError, match="finished all its epochs"):
        jobs.resume(run)


def test_start_refuses_bad_configs_missing_data_and_devices_without_writing(roots, tmp_path, monkeypatch) -> None:
    user, _ = roots
    with pytest.raises(ConfigError, match="--loss-alpha"):
        jobs.start({"loss": "general"})
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "no-data"))
    with pytest.raises(jobs.JobError, match=r"not on disk(.|\n)*python -m core.datasets download mnist"):
        jobs.start({"dataset": "mnist"})
    if not jobs.cuda_available():
        with pytest.raises(jobs.JobError, match="no GPU"):
            jobs.start({"device": "cuda"})
    assert list(user.iterdir()) == [] and not jobs._CHILDREN


def test_states_refusals_and_the_run_list(roots: tuple[Path, Path]) -> None:
    user, shipped = roots
    done = _finished_run(user, run_id="done")
    shipped_run = create_run({**TINY, "run_id": "shipped-one"}, root=user)
    os.replace(shipped_run.path, shipped / "shipped-one")
    shipped_run = open_run(shipped / "shipped-one")
    assert shipped_run.shipped
    (user / "broken").mkdir()
    (user / "broken" / "config.json").write_text("{oops")
    died = create_run(TINY, root=user)
    died.write_status({**died.status(), "state": "running", "pid": 999_999_999})  # its process is gone

    rows = {row["run"]: row for row in jobs.run_table()}
    assert rows["done"]["state"] == "finished" and rows["done"]["epoch"] == "2/2" and rows["done"]["val loss"] > 0
    assert rows["shipped-one"]["shipped"] and rows["shipped-one"]["where"].startswith("checkpoints/")
    assert rows["broken"]["state"] == "broken" and "JSON" in rows["broken"]["error"]
    assert rows[died.run_id]["state"] == "interrupted" and rows[died.run_id]["age"] == "just now"
    assert jobs.job_state(died) in jobs.RESUMABLE_STATES

    with pytest.raises(jobs.JobError, match="shipped"):
        jobs.resume(shipped_run)
    with pytest.raises(jobs.JobError, match="shipped"):
        jobs.delete(shipped_run)
    assert not jobs.stop(done)  # nothing to stop
    with done.lock():  # "running" and locked, but not by a core.train process: not ours to signal
        done.write_status({**done.status(), "state": "running", "pid": os.getpid()})
        with pytest.raises(jobs.JobError, match="stop it there"):
            jobs.stop(done)
        assert jobs.job_state(done) == "running"
    done.write_status({**done.status(), "state": "finished"})

    p = jobs.progress(done)
    assert p.state == "finished" and p.fraction == 1.0 and p.epoch_label == "epoch 2/2"
    curves = jobs.curves(done)
    assert curves["epochs"]["x"] == [1, 2] and len(curves["epochs"]["val_loss"]) == 2
    steps = curves["steps"]
    assert len(steps["x"]) == len(steps["loss"]) == len(steps["kl"]) >= 2 and steps["x"][-1] == 2.0
    jobs.delete(died)
    assert not died.path.exists()
    assert {info.run_id for info in list_runs()} == {"done", "shipped-one", "broken"}


def test_summaries_are_formatted_for_people() -> None:
    assert jobs.format_eta(None) == "—" and jobs.format_eta(65.4) == "1:05" and jobs.format_eta(3723) == "1:02:03"
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime(now - 7200))
    assert jobs.format_age(stamp, now) == "2 h" and jobs.format_age(None) == "?"
    # One label for a loss everywhere (tables, charts, the run list): the registry's title, α where chosen,
    # the adaptive loss's bounds where they are not the usual [0, 3].
    assert loss_label({"loss": "general", "loss_alpha": -2.0}) == "General (α=-2)"
    assert loss_label({"loss": "adaptive", "adaptive_alpha_lo": 0.0, "adaptive_alpha_hi": 3.0}) == "Adaptive"
    assert loss_label({"loss": "adaptive", "adaptive_alpha_lo": 0.5, "adaptive_alpha_hi": 2.0}) == \
        "Adaptive (α∈[0.5, 2])"
