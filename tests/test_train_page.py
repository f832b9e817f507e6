"""The Train page through AppTest: the new-run form, the run list and manager, uploads, and (with a real
trainer process) the live panel, Stop and Resume. `run_every` does not tick in AppTest, so the live
fragment is checked by rerunning the page."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core import jobs
from core.config import DEFAULTS
from core.engine import train
from core.run_archive import export_run
from core.runs import create_run, open_run

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "train.py")
TINY = {"dataset": "digits", "loss": "charbonnier", "epochs": 2, "latent_dim": 2, "width": 8, "limit_train": 32,
        "batch_size": 32}


@pytest.fixture()
def roots(roots: tuple[Path, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, pace_trainers
          ) -> tuple[Path, Path]:
    """The shared empty roots, with only digits (bundled) on disk and slow tiny trainers."""
    user, shipped = roots
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "data"))  # only digits (bundled) is on disk
    # One thread per trainer (shared machine); a short pause per step keeps tiny runs long enough to watch.
    monkeypatch.setenv(jobs.TRAIN_ARGS_ENV, "--threads 1")
    pace_trainers(0.02)
    return user, shipped



def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def _table(at: AppTest) -> dict[str, dict]:
    frame = at.dataframe[0].value
    return {row["run"]: row for row in frame.to_dict("records")}


def _progress(at: AppTest) -> list[tuple[int, str]]:
    return [(p.proto.value, p.proto.text) for p in at.get("progress")]


def _buttons(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def test_form_defaults_follow_the_config_and_fields_follow_the_loss(roots) -> None:
    at = _page()
    values = {w.label: w.value for w in at.number_input}
    assert values["Latent size"] == DEFAULTS["latent_dim"] and values["Epochs"] == DEFAULTS["epochs"]
    assert values["Batch size"] == DEFAULTS["batch_size"] and values["Learning rate"] == DEFAULTS["lr"]
    assert values["β (KL weight)"] == DEFAULTS["beta"] and values["Seed"] == DEFAULTS["seed"]
    assert at.selectbox(key="train_dataset").value == "digits" and at.selectbox(key="train_loss").value == "mse"
    assert at.selectbox(key="train_device").value == "auto"
    assert "scale c" not in values and "α (shape)" not in values  # MSE has neither
    assert not at.button(key="train_start").disabled
    assert any("Nothing is training" in c.value for c in at.caption)
    assert any("No runs yet" in c.value for c in at.caption)

    at.selectbox(key="train_loss").set_value("general").run()
    labels = {w.label for w in at.number_input}
    assert {"α (shape)", "scale c"} <= labels
    at.selectbox(key="train_loss").set_value("adaptive").run()
    labels = {w.label for w in at.number_input}
    assert {"lowest α", "highest α"} <= labels and "α (shape)" not in labels and "scale c" not in labels
    at.selectbox(key="train_loss").set_value("cauchy").run()
    assert at.number_input(key="train_scale_cauchy").value == pytest.approx(0.1)

    # CIFAR-10 is offered, with the note and the fix when its files are not on disk.
    at.selectbox(key="train_dataset").set_value("cifar10").run()
    assert "not on disk" in at.warning[0].value and "CIFAR-10" in at.warning[0].value
    assert any("python -m core.datasets download cifar10" in c.value for c in at.code)
    assert at.button(key="train_start").disabled


def test_a_bad_configuration_is_refused_on_the_page_and_nothing_is_written(roots) -> None:
    user, _ = roots
    at = _page()
    at.selectbox(key="train_loss").set_value("adaptive").run()
    at.number_input(key="train_alpha_lo").set_value(2.0).run()
    at.number_input(key="train_alpha_hi").set_value(1.0).run()
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    assert at.error and "Not started" in at.error[0].value and "alpha_lo" in at.error[0].value
    assert list(user.iterdir()) == [] and not jobs._CHILDREN


def test_run_list_manager_delete_with_confirmation_and_shipped_runs(roots) -> None:
    user, shipped = roots
    done = create_run({**TINY, "run_id": "done"}, root=user)
    assert train(done).state == "finished"
    died = create_run({**TINY, "run_id": "died"}, root=user)
    died.write_status({**died.status(), "state": "running", "pid": 999_999_999})  # its process is gone
    shipped_run = create_run({**TINY, "run_id": "shipped"}, root=user)
    os.replace(shipped_run.path, shipped / "shipped")
    (user / "broken").mkdir()
    (user / "broken" / "config.json").write_text(json.dumps({"format": "robust-loss-lab/run", "version": 1}))

    at = _page()
    table = _table(at)
    assert set(table) == {"done", "died", "shipped", "broken"}
    assert table["done"]["state"] == "finished" and table["done"]["epoch"] == "2/2" and table["done"]["val loss"] > 0
    assert table["died"]["state"] == "interrupted" and table["shipped"]["where"].startswith("checkpoints/")
    assert table["broken"]["state"] == "broken" and table["done"]["loss"] == "charbonnier"

    select = at.selectbox(key="train_selected")
    select.set_value(str(done.path)).run()
    value, text = _progress(at)[-1]
    assert value == 100 and "finished" in text and "epoch 2/2" in text
    assert len(at.get("plotly_chart")) == 2  # loss and KL curves
    figure = json.loads(at.get("plotly_chart")[0].proto.spec)
    assert [trace["name"] for trace in figure["data"]] == ["train", "validation"]
    assert "Resume" not in _buttons(at) and "Delete…" in _buttons(at)
    assert at.get("download_button")[0].label == "Download zip"

    # Delete asks first; Cancel keeps the run, Yes removes it.
    at.button(key="train_delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="train_delete_no").click().run()
    assert done.path.exists() and not any("cannot be undone" in w.value for w in at.warning)
    at.button(key="train_delete").click().run()
    at.button(key="train_delete_yes").click().run()
    assert not done.path.exists() and "done" not in _table(at)
    assert any("Deleted done" in s.value for s in at.success)

    at.selectbox(key="train_selected").set_value(str((shipped / "shipped").resolve())).run()
    assert "Delete…" not in _buttons(at) and "Resume" not in _buttons(at) and "Start" not in _buttons(at)
    assert any("read-only" in c.value for c in at.caption)

    at.selectbox(key="train_selected").set_value(str((user / "broken").resolve())).run()
    assert any("cannot be read" in e.value for e in at.error)

    # The interrupted run can be resumed: Resume launches a real trainer process.
    at.selectbox(key="train_selected").set_value(str(died.path)).run()
    assert "Resume" in _buttons(at)
    at.button(key="train_resume").click().run()
    assert not at.exception, at.exception
    launch = jobs.launch_info(open_run(died.path))
    assert jobs._is_trainer(launch["pid"], died.path)
    assert _table(at)["died"]["state"] == "starting"
    assert any("Resuming died" in s.value for s in at.success)
    assert any(text.startswith("⏳ starting") for _, text in _progress(at))  # in the live panel


def test_upload_imports_a_run_and_refuses_a_pickle_without_writing(roots, tmp_path: Path) -> None:
    user, _ = roots
    source = create_run({**TINY, "run_id": "from-elsewhere"}, root=tmp_path / "elsewhere")
    assert train(source).state == "finished"
    at = _page()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("run/config.json", (source.path / "config.json").read_bytes())
        archive.writestr("run/model.pt", b"\x80\x04anything")
    at.file_uploader[0].set_value(("bad.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="train_import").click().run()
    assert at.error and "Upload refused" in at.error[0].value and "pickle" in at.error[0].value
    assert list(user.iterdir()) == []

    at.file_uploader[0].set_value(("run.zip", export_run(source), "application/zip")).run()
    at.button(key="train_import").click().run()
    assert not at.error, [e.value for e in at.error]
    assert any("Imported from-elsewhere" in s.value for s in at.success)
    assert [p.name for p in user.iterdir()] == ["from-elsewhere"]
    assert _table(at)["from-elsewhere"]["state"] == "finished"
    assert at.selectbox(key="train_selected").value == str((user / "from-elsewhere").resolve())


@pytest.mark.slow
def test_start_from_the_form_watch_the_live_panel_and_stop(roots) -> None:
    user, _ = roots
    at = _page()
    at.selectbox(key="train_loss").set_value("general").run()
    at.number_input(key="train_alpha").set_value(0.5).run()
    at.number_input(key="train_latent").set_value(3).run()
    at.number_input(key="train_epochs").set_value(40).run()
    at.number_input(key="train_limit").set_value(512).run()
    at.number_input(key="train_batch").set_value(64).run()
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    [run_dir] = list(user.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["loss"], config["loss_alpha"], config["latent_dim"], config["epochs"]) == ("general", 0.5, 3, 40)
    assert config["limit_train"] == 512 and config["batch_size"] == 64 and config["device"] == "auto"
    run = open_run(run_dir)
    assert any(s.value.startswith("Started") for s in at.success)
    assert any(text.startswith("⏳ starting") for _, text in _progress(at))

    jobs.wait_for(run, ["running"], timeout_s=60)
    deadline = time.monotonic() + 30
    while jobs.progress(run).epoch < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    at.run()  # what the live fragment shows on its next tick
    live = [(v, t) for v, t in _progress(at) if "running" in t]
    assert live and 0 < live[0][0] < 100 and "ETA" in live[0][1] and "epoch " in live[0][1]
    assert any(m.label == "Val loss" and m.value != "—" for m in at.metric)
    charts = [json.loads(c.proto.spec) for c in at.get("plotly_chart")]
    assert any("Loss per image" in c["layout"]["title"]["text"] for c in charts)
    first = live[0][0]
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)
        at.run()
        now = max(v for v, t in _progress(at) if "running" in t)
        if now > first:
            break  # it moves
        assert time.monotonic() < deadline, "the live progress bar did not move"

    at.button(key=f"train_live_stop_{run.run_id}").click().run()
    assert any("Stopping" in i.value for i in at.info)
    assert jobs.wait_for(run, ["stopped"], timeout_s=30) == "stopped"
    at.run()
    assert _table(at)[run.run_id]["state"] == "stopped" and run.has_checkpoint
    assert "Resume" in _buttons(at) and any("Nothing is training" in c.value for c in at.caption)
