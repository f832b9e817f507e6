"""The Train page through AppTest: the new-run form from the fields' declarations (any family), a form that
starts only what is on screen, the run list and manager, uploads with their feedback beside the control, and
(with real trainer processes) a VQ-VAE started from the form, the live panel and Stop. `run_every` does not
tick in AppTest, so the live fragment is checked by rerunning the page (the browser tests watch it tick)."""

from __future__ import annotations

import io
import json
import os
import time
import zipfile
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest
from streamlit.testing.v1.element_tree import Block

from core import jobs
from core.config import fields_for
from core.engine import run_training
from core.families import FAMILIES, get_family
from core.progress import progress
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
    monkeypatch.setenv(jobs.TRAIN_ARGS_ENV, "--threads 1")  # one thread per trainer (shared machine)
    pace_trainers(0.02)  # a short pause per step keeps tiny runs long enough to watch
    return user, shipped


def _page() -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=90)
    at.run()
    assert not at.exception, at.exception
    return at


def _key(family: str, name: str) -> str:
    from core.train_view import widget_key

    fam = get_family(family)
    return widget_key(fam, next(f for f in fields_for(fam) if f.name == name))


def _type(at: AppTest, name: str, text: str, family: str = "vae") -> None:
    at.text_input(key=_key(family, name)).input(text).run()
    assert not at.exception, at.exception


def _pick(at: AppTest, name: str, value, family: str = "vae") -> None:
    at.selectbox(key=_key(family, name)).set_value(value).run()
    assert not at.exception, at.exception


def _labels(at: AppTest) -> set[str]:
    return {w.label for w in [*at.text_input, *at.selectbox, *at.checkbox]}


def _table(at: AppTest) -> dict[str, dict]:
    frame = at.dataframe[0].value
    return {row["Run"]: row for row in frame.to_dict("records")}


def _progress(at: AppTest) -> list[tuple[int, str]]:
    return [(p.proto.value, p.proto.text) for p in at.get("progress")]


def _buttons(at: AppTest) -> set[str]:
    return {b.label for b in at.button}


def _after(at: AppTest, key: str) -> list:
    """The elements drawn after the widget `key`, in page order (what a user sees next to it)."""
    nodes = [n for n in at.main if not isinstance(n, Block)]
    index = next(i for i, n in enumerate(nodes) if getattr(n, "key", None) == key)
    return nodes[index + 1:]


def test_the_form_comes_from_the_fields_declarations(roots) -> None:
    at = _page()
    assert at.selectbox(key="train_family").options == [f.title for f in FAMILIES.values()]
    shown = _labels(at)
    assert {"Dataset", "Epochs", "Batch size", "Learning rate", "Seed", "Training images", "Reconstruction loss",
            "Latent size", "KL weight β"} <= shown
    assert not {"α (shape)", "ν (degrees of freedom)", "Scale c", "Lowest α"} & shown  # MSE takes none
    assert not any("_" in label or label.startswith("--") for label in shown)
    assert at.text_input(key=_key("vae", "epochs")).value == "20" and at.text_input(key=_key("vae", "lr")).value == \
        "0.001"
    assert not at.button(key="train_start").disabled
    assert any(c.value.startswith("Will train a VAE, latent size 16, MSE loss, on Digits") for c in at.caption)
    assert any("Nothing is training" in c.value for c in at.caption)
    assert any("No runs yet" in c.value for c in at.caption)

    _pick(at, "loss", "general")
    assert {"α (shape)", "Scale c"} <= _labels(at) and at.button(key="train_start").disabled  # α: no default
    _type(at, "loss_alpha", "0.5")
    assert not at.button(key="train_start").disabled
    _pick(at, "loss", "students_t")
    assert "ν (degrees of freedom)" in _labels(at) and "α (shape)" not in _labels(at)
    _pick(at, "loss", "adaptive")
    assert {"Lowest α", "Highest α"} <= {w.label for w in at.expander[0].text_input}  # advanced
    _pick(at, "loss", "l1")
    assert "Scale c" not in _labels(at)

    at.selectbox(key="train_family").set_value("vqvae").run()
    assert {"Latent size (grid² × code size)", "Codebook size K", "Commitment weight β", "Code grid side G"} <= \
        _labels(at) and "KL weight β" not in _labels(at)
    assert "G×G grid" in at.text_input(key=_key("vqvae", "latent_dim")).help
    assert any("VQ-VAE (K=512, 2×2×4" in c.value for c in at.caption)
    assert at.selectbox(key=_key("vqvae", "loss")).value == "l1"  # the loss is shared across families

    # CIFAR-10 is offered, and when its files are not on disk Start is off with the fix beside it.
    _pick(at, "dataset", "cifar10")
    assert at.button(key="train_start").disabled
    assert any("CIFAR-10" in e.value and "not on disk" in e.value for e in at.error)
    assert any(c.value.endswith("-m core.datasets download cifar10") and c.value.startswith("cd ") for c in at.code)


@pytest.mark.parametrize(("name", "typed", "said"), [
    ("epochs", "abc", "Epochs must be a whole number, got “abc”"),
    ("epochs", "0", "Epochs must be between 1 and 1e6, got 0"),
    ("lr", "1e9", "Learning rate must be at most 10, got 1e9"),
])
def test_a_wrong_value_turns_start_off_says_why_beside_it_and_starts_nothing(roots, name, typed, said) -> None:
    user, _ = roots
    at = _page()
    _type(at, name, typed)
    assert at.text_input(key=_key("vae", name)).value == typed  # the field keeps what was typed
    assert at.button(key="train_start").disabled
    beside = _after(at, "train_start")
    assert said in beside[0].value and beside[0].value.startswith("Start is off until this is fixed")
    assert any(c.value == f":red[{said}]" for c in at.caption)  # under the field too
    # Typed and Start clicked before the page redrew (no Enter, no pause): the click carries the typed
    # value, and nothing starts.
    at = _page()
    at.text_input(key=_key("vae", name)).input(typed)
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    assert _after(at, "train_start")[0].value == f"Not started: {said}"
    assert list(user.iterdir()) == [] and not jobs._CHILDREN


@pytest.mark.slow
def test_run_list_manager_delete_with_confirmation_and_shipped_runs(roots) -> None:
    user, shipped = roots
    done = create_run({**TINY, "run_id": "done"}, root=user)
    assert run_training(done).state == "finished"
    died = create_run({**TINY, "run_id": "died"}, root=user)
    died.write_status({**died.status(), "state": "running", "pid": 999_999_999})  # its process is gone
    shipped_run = create_run({**TINY, "run_id": "shipped"}, root=user)
    os.replace(shipped_run.path, shipped / "shipped")
    (user / "broken").mkdir()
    (user / "broken" / "config.json").write_text(json.dumps({"format": "robust-loss-lab/run", "version": 1}))

    at = _page()
    table = _table(at)
    assert set(table) == {"done", "died", "shipped", "broken"}
    assert list(table["done"]) == ["Run", "State", "Dataset", "Model", "Loss", "Latent size", "Epoch",
                                   "Validation loss", "Where"]
    val = progress(done).val_loss
    assert table["done"]["State"] == "finished" and table["done"]["Epoch"] == "2/2"
    assert table["done"]["Validation loss"] == f"{val:.4g}" and table["done"]["Loss"] == "Charbonnier"
    assert table["died"]["State"] == "interrupted" and table["died"]["Validation loss"] == "—"
    assert table["shipped"]["Where"] == "shipped" and table["broken"]["State"] == "broken"
    assert not any(v in ("None", "", "nan") for row in table.values() for v in row.values())

    at.selectbox(key="train_selected").set_value(str(done.path)).run()
    value, text = _progress(at)[-1]
    assert value == 100 and "finished" in text and "epoch 2/2" in text
    titles = [json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")]
    assert titles[:3] == ["Loss per image = reconstruction + KL", "Reconstruction per image", "KL per image"]
    assert {m.label for m in at.metric} >= {"Training loss", "Validation loss", "Reconstruction", "KL", "Active units"}
    assert "Resume" not in _buttons(at) and "Delete…" in _buttons(at)
    assert at.get("download_button")[0].label == "Download zip"

    # Delete asks first; Cancel keeps the run, Yes removes it and says so beside the buttons.
    at.button(key="train_delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    at.button(key="train_delete_no").click().run()
    assert done.path.exists() and not any("cannot be undone" in w.value for w in at.warning)
    at.button(key="train_delete").click().run()
    at.button(key="train_delete_yes").click().run()
    assert not done.path.exists() and "done" not in _table(at)
    assert any("Deleted done" in s.value for s in at.success) and any("Deleted done" in t.value for t in at.toast)

    at.selectbox(key="train_selected").set_value(str((shipped / "shipped").resolve())).run()
    assert "Delete…" not in _buttons(at) and "Resume" not in _buttons(at) and "Start" not in _buttons(at)
    assert any("read-only" in c.value for c in at.caption)

    at.selectbox(key="train_selected").set_value(str((user / "broken").resolve())).run()
    assert any("cannot be read" in e.value for e in at.error)

    # The interrupted run says how to continue (a command that works pasted), and Resume launches a trainer.
    at.selectbox(key="train_selected").set_value(str(died.path)).run()
    assert any(c.value.startswith("cd ") and f"-m core.train --resume {died.path}" in c.value for c in at.code)
    at.button(key="train_resume").click().run()
    assert not at.exception, at.exception
    launch = jobs.launch_info(open_run(died.path))
    assert jobs._is_trainer(launch["pid"], died.path)
    assert _table(at)["died"]["State"] == "starting"
    assert any("Resuming died" in s.value for s in at.success)
    assert any("starting · epoch 1/2" in text for _, text in _progress(at))  # in the live panel


def test_upload_feedback_is_beside_the_import_button_and_a_pickle_writes_nothing(roots, tmp_path: Path) -> None:
    user, _ = roots
    source = create_run({**TINY, "run_id": "from-elsewhere"}, root=tmp_path / "elsewhere")
    assert run_training(source).state == "finished"
    at = _page()

    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("run/config.json", (source.path / "config.json").read_bytes())
        archive.writestr("run/model.pt", b"\x80\x04anything")
    at.file_uploader[0].set_value(("bad.zip", buffer.getvalue(), "application/zip")).run()
    at.button(key="train_import").click().run()
    [beside] = _after(at, "train_import")[:1]
    assert beside.value.startswith("Upload refused") and "pickle" in beside.value
    assert any(t.value.startswith("Upload refused") for t in at.toast)
    assert list(user.iterdir()) == []

    at.file_uploader[0].set_value(("run.zip", export_run(source), "application/zip")).run()
    at.button(key="train_import").click().run()
    [beside] = _after(at, "train_import")[:1]
    assert beside.value.startswith("Imported from-elsewhere"), beside.value
    assert [p.name for p in user.iterdir()] == ["from-elsewhere"]
    assert _table(at)["from-elsewhere"]["State"] == "finished"
    assert at.selectbox(key="train_selected").value == str((user / "from-elsewhere").resolve())


@pytest.mark.slow
def test_a_vq_vae_starts_from_the_form_with_exactly_its_values_and_shows_its_terms(roots) -> None:
    user, _ = roots
    at = _page()
    at.selectbox(key="train_family").set_value("vqvae").run()
    for name, text in (("epochs", "2"), ("limit_train", "64"), ("batch_size", "32"), ("latent_dim", "16"),
                       ("codebook_size", "16"), ("width", "8"), ("lr", "0.002")):
        _type(at, name, text, "vqvae")
    at.button(key="train_start").click().run()
    assert not at.exception, at.exception
    [run_dir] = list(user.iterdir())
    config = json.loads((run_dir / "config.json").read_text())
    assert (config["family"], config["epochs"], config["limit_train"], config["batch_size"]) == ("vqvae", 2, 64, 32)
    assert (config["latent_dim"], config["grid"], config["codebook_size"], config["width"], config["lr"]) == \
        (16, 2, 16, 8, 0.002)
    assert any(s.value.startswith(f"Started {run_dir.name}") for s in _after(at, "train_start")[:1])
    run = open_run(run_dir)
    assert jobs.wait_for(run, ["finished"], timeout_s=120) == "finished"
    at.run()
    at.selectbox(key="train_selected").set_value(str(run_dir)).run()
    assert _table(at)[run.run_id]["Model"].startswith("VQ-VAE (K=16, 2×2×4")
    titles = {json.loads(c.proto.spec)["layout"]["title"]["text"] for c in at.get("plotly_chart")}
    assert {"Reconstruction per image", "Commitment per image", "Code perplexity (batch)", "Codes used"} <= titles
    assert {m.label for m in at.metric} >= {"Commitment", "Code perplexity (batch)", "Codes used (validation)"}


@pytest.mark.slow
def test_start_from_the_form_watch_the_live_panel_and_stop(roots, monkeypatch: pytest.MonkeyPatch) -> None:
    user, _ = roots
    monkeypatch.setattr("pages.chrome.FEEDBACK_S", 120.0)  # however slow the stop, its message is still due
    at = _page()
    # 100 epochs: stopped long before its end, however slow the machine.
    for name, text in (("latent_dim", "3"), ("epochs", "100"), ("limit_train", "512"), ("batch_size", "64")):
        _type(at, name, text)
    at.button(key="train_start").click().run()
    [run_dir] = list(user.iterdir())
    run = open_run(run_dir)
    jobs.wait_for(run, ["running"], timeout_s=60)
    deadline = time.monotonic() + 30
    while progress(run).epoch < 1:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    at.run()  # what the live fragment shows on its next tick
    live = [(v, t) for v, t in _progress(at) if "running" in t]
    assert live and 0 < live[0][0] < 100 and "ETA" in live[0][1] and "images/s" in live[0][1]
    assert any(m.label == "Validation loss" and m.value != "—" for m in at.metric)
    row = _table(at)[run.run_id]
    assert row["State"].startswith("running") and f"epoch {row['Epoch']}" in live[0][1]  # one reading for all
    first = live[0][0]
    deadline = time.monotonic() + 30
    while True:
        time.sleep(0.5)
        at.run()
        if max(v for v, t in _progress(at) if "running" in t) > first:
            break  # it moves
        assert time.monotonic() < deadline, "the live progress bar did not move"

    at.button(key=f"train_live_stop_{run.run_id}").click().run()
    said = [(type(e).__name__, e.value) for e in (*at.success, *at.error, *at.warning, *at.info)]
    assert any(s.value.startswith(f"Stopping {run.run_id}") for s in at.success), said
    assert jobs.wait_for(run, ["stopped"], timeout_s=30) == "stopped"
    at.run()
    assert _table(at)[run.run_id]["State"] == "stopped" and run.has_checkpoint
    # the run has left the live panel; what its Stop said is still there, under "Training now"
    assert any(s.value.startswith(f"Stopping {run.run_id}") for s in at.success)
    assert "Resume" in _buttons(at) and any("Nothing is training" in c.value for c in at.caption)
    p = progress(run)
    stopped_line = next(t for _, t in _progress(at) if "stopped" in t)
    assert p.epoch_label in stopped_line
