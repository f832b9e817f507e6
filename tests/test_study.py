"""The one-command study end to end on digits: a real `python -m core.study` process (training runs as
`core.train` subprocesses) killed mid-run, then the same command continuing it: the interrupted run
resumes, the other trains, both are probed, and the table, report and figures are written. A third call
trains nothing and reuses the probes; --ship-to copies slim runs; changed settings under the same study
name are refused."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import fault_env

from core.families import load_objective
from core.projections import run_projection
from core.runs import open_run
from core.study import main

REPO = Path(__file__).resolve().parents[1]
STUDY = "tiny"


def _args(root: Path, *extra: str) -> list[str]:
    return ["--dataset", "digits", "--losses", "mse,cauchy", "--latent-dims", "4", "--epochs", "2",
            "--limit-train", "256", "--batch-size", "64", "--threads", "1", "--device", "cpu", "--probe-seeds", "0",
            "--probe-train", "600", "--runs-root", str(root), "--study", STUDY, *extra]


def _steps(run_dir: Path) -> list[int]:
    return [r["step"] for r in open_run(run_dir).history("step")] if (run_dir / "config.json").exists() else []


@pytest.mark.slow
def test_study_survives_a_kill_and_writes_the_table(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "runs"
    first = root / f"{STUDY}-mse-z4-s0"
    second = root / f"{STUDY}-cauchy-z4-s0"
    env = {**os.environ, "OMP_NUM_THREADS": "1", **fault_env(step_delay="0.25")}  # trainers paced to be caught
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    # Its own session, so the kill below takes the study and its training child at once (a crash).
    proc = subprocess.Popen([sys.executable, "-m", "core.study", *_args(root)], cwd=REPO,
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 120
        while max(_steps(first), default=0) < 6:  # mid epoch 2 of the first run (4 steps an epoch)
            assert proc.poll() is None, proc.communicate()[1]
            assert time.monotonic() < deadline, "the study never reached epoch 2"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 30
    while open_run(first).is_locked():  # the training child (our grandchild) is reaped by init, not by us
        assert time.monotonic() < deadline, "the killed training process still holds the run's lock"
        time.sleep(0.05)
    assert open_run(first).status()["state"] == "interrupted"
    assert not second.exists()

    assert main(_args(root)) == 0
    log = capsys.readouterr().err
    assert f"{STUDY}-mse-z4-s0: interrupted, resuming" in log and f"{STUDY}-cauchy-z4-s0: training" in log
    for run_dir in (first, second):
        run = open_run(run_dir)
        assert run.status()["state"] == "finished" and run.config["study"] == STUDY
        assert [e["epoch"] for e in run.history("epoch")] == [1, 2]  # the resumed run reads as one run
        assert _steps(run_dir) == list(range(1, 9))
        probes = run.probes()
        assert probes["split"]["train"]["split"] == "train" and probes["split"]["test"]["split"] == "test"
        assert probes["split"]["overlap"] == 0

    folder = root / "studies" / STUDY
    with open(folder / "results.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["loss"] for r in rows] == ["mse", "cauchy"]
    for row, run_dir in zip(rows, (first, second), strict=True):
        probes = open_run(run_dir).probes()["probes"]
        assert float(row["mlp_acc"]) == pytest.approx(probes["mlp"]["accuracy"], rel=1e-5)
        assert float(row["linear_ce"]) == pytest.approx(probes["linear"]["cross_entropy"], rel=1e-5)
        assert float(row["knn_acc"]) == pytest.approx(probes["knn"]["accuracy"], rel=1e-5)
        assert row["state"] == "finished" and int(row["latent_dim"]) == 4
    report = (folder / "report.md").read_text()
    assert "| MSE | 4 | 0 |" in report and "| Cauchy | 4 | 0 |" in report
    assert "Machine:" in report and "wall clock" in report
    figures = {p.name for p in (folder / "figures").iterdir()}
    # One renderer per chart: the report's charts are the Compare page's plotly figures (HTML + JSON).
    assert {"accuracy.html", "accuracy.json", "cross_entropy.html", "reconstructions.png", "samples.png"} <= figures
    assert json.loads((folder / "figures" / "accuracy.json").read_text())["data"]
    assert (folder / "figures" / "reconstructions.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    study = json.loads((folder / "study.json").read_text())
    assert study["runs"] == [first.name, second.name] and study["machine"]["cores"] == os.cpu_count()

    # Again: nothing to train, probes reused (files untouched), the report rewritten with both invocations.
    stamps = [(d / "probes.json").stat().st_mtime_ns for d in (first, second)]
    assert main(_args(root)) == 0
    assert "finished already, skipped" in capsys.readouterr().err
    assert [(d / "probes.json").stat().st_mtime_ns for d in (first, second)] == stamps
    assert len(json.loads((folder / "study.json").read_text())["invocations"]) == 2

    # --ship-to copies slim runs (weights, probes, the first N embeddings and their 3-D layouts; no
    # checkpoint) and the study.
    ship = tmp_path / "ship"
    assert main(_args(root, "--ship-to", str(ship), "--ship-embeddings", "50", "--quiet")) == 0
    shipped = ship / first.name
    assert {p.name for p in shipped.iterdir()} == {"config.json", "status.json", "history.jsonl", "projections",
                                                   "model.safetensors", "probes.json", "embeddings.safetensors"}
    for method in ("pca", "mds", "tsne"):  # drawn from the shipped cache, not computed
        layout = run_projection(open_run(shipped), method, compute_missing=False)
        assert layout is not None and layout.from_cache and layout.coords.shape == (50, 3), method
    emb, full = open_run(shipped).embeddings(), open_run(first).embeddings()
    assert emb["z"].shape[0] == 50 and emb["images"].shape[0] == 50
    assert (emb["z"] == full["z"][:50]).all() and (emb["index"] == full["index"][:50]).all()
    assert open_run(shipped).probes() == open_run(first).probes()
    assert (ship / "studies" / STUDY / "report.md").is_file() and (ship / second.name).is_dir()
    load_objective(open_run(shipped))  # the weights load without the optimiser state

    # Other settings under the same name are refused with the fix; so is a loss that does not exist.
    assert main([*_args(root, "--seeds", "0"), "--epochs", "3"]) == 2
    assert "use another --study name" in capsys.readouterr().err
    assert main([*_args(root), "--losses", "mse,nonsense"]) == 2
    assert "unknown loss 'nonsense'" in capsys.readouterr().err
