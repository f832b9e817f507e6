"""The Train and Home pages' logic without Streamlit: the form from the fields' declarations, read exactly as
typed and checked with the fields' labels; what a run shows (state, phase, message, numbers, curves, row);
commands that work pasted into a new shell."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from core import train_view as view
from core.commands import REPO, fix_steps, pasteable, split_message
from core.config import COMMON_FIELDS, fields_for
from core.datasets import dataset_status
from core.engine import run_training
from core.families import FAMILIES, get_family
from core.families.recon import LOSS_FIELDS
from core.losses import LOSSES
from core.progress import progress, run_table
from core.runs import create_run

TINY = {"dataset": "digits", "epochs": 2, "limit_train": 64, "batch_size": 32, "width": 8}


def _values(family: str = "vae", **typed: str) -> dict:
    """The form's widget values with some fields typed (by field name)."""
    values = view.default_values(family)
    fam = get_family(family)
    for name, text in typed.items():
        field = next(f for f in fields_for(fam) if f.name == name)
        values[view.widget_key(fam, field)] = text
    return values


def _shown(family: str, values: dict) -> dict[str, view.FormWidget]:
    return {w.field.name: w for g in view.form_groups(family, values) for w in g.widgets}


def _advanced(family: str, values: dict) -> set[str]:
    return {w.field.name for g in view.form_groups(family, values) if g.advanced for w in g.widgets}


# ---------------------------------------------------------------------------------------------------
# The form


@pytest.mark.parametrize("loss", list(LOSSES))
def test_the_loss_fields_shown_are_those_that_apply(loss: str) -> None:
    values = _values(loss=loss)
    values[view.widget_key("vae", LOSS_FIELDS[0])] = loss  # the select holds the loss's name
    shown = _shown("vae", values)
    assert ("loss_alpha" in shown) == (loss == "general")
    assert ("loss_nu" in shown) == (loss == "students_t")
    assert ("loss_scale" in shown) == (loss not in ("mse", "l1"))
    assert ("adaptive_alpha_lo" in shown) == ("adaptive_alpha_hi" in shown) == (loss == "adaptive")
    if loss == "adaptive":
        assert {"adaptive_alpha_lo", "adaptive_alpha_hi"} <= _advanced("vae", values)
    assert shown["loss"].title_of(loss) == LOSSES[loss].title


def test_every_family_gets_its_own_fields_with_labels_not_names() -> None:
    for name, family in FAMILIES.items():
        values = view.default_values(name)
        shown = _shown(name, values)
        own = {f.name for f in family.fields if f.applies_to({"family": name, **{f.name: f.default
                                                                                  for f in fields_for(family)}})}
        assert own <= set(shown), (name, own - set(shown))
        assert {f.name for f in COMMON_FIELDS} - {"family"} <= set(shown)
        for w in shown.values():
            assert w.label == w.field.label and "_" not in w.label and "--" not in w.label
            assert (w.field.name in _advanced(name, values)) == w.field.advanced
        assert view.read_form(name, values).ok, (name, view.read_form(name, values).errors)
    assert set(view.family_choices()) == set(FAMILIES)
    # choices read as words, not as the values config.json keeps
    vae = _shown("vae", view.default_values("vae"))
    assert [vae["distribution"].title_of(v) for v in ("loss", "students_t")] == ["the reconstruction loss",
                                                                               "Student's t"]
    assert vae["representation"].title_of("wavelet") == "CDF 9/7 wavelet"
    for name, family in FAMILIES.items():
        for f in family.fields:
            if f.kind == "choice" and f.name not in ("loss", "loss_alpha_schedule"):
                assert all(f.title_of(v) != v or "_" not in str(v) for v in f.choices), (name, f.name)


def test_the_vq_vae_form_explains_its_latent_size_and_its_summary_names_the_grid() -> None:
    shown = _shown("vqvae", _values("vqvae"))
    assert {"latent_dim", "grid", "codebook_size", "commitment"} <= set(shown)
    assert {"ema_decay", "dead_code_threshold", "codebook_update"} <= _advanced("vqvae", _values("vqvae"))
    latent = shown["latent_dim"]
    assert "grid² × code size" in latent.label and "G×G grid" in latent.help
    form = view.read_form("vqvae", _values("vqvae", latent_dim="64"))
    # 8×8 digits: the largest grid leaving codes of ≥ 4 numbers is 4×4 (64 = 4²·4)
    assert form.ok and "4×4×4" in form.summary and "latent size 64" in form.summary
    assert form.normalized["grid"] == 4 and form.config["latent_dim"] == 64


def test_the_config_is_exactly_what_is_typed() -> None:
    form = view.read_form("vae", _values(epochs="7", lr="0.0003", batch_size="48", limit_train="", loss_scale="0.25",
                                         seed="12"))
    assert form.ok
    config = form.config
    assert (config["epochs"], config["lr"], config["batch_size"], config["seed"]) == (7, 0.0003, 48, 12)
    assert config["limit_train"] is None and "loss_scale" not in config  # c does not apply to MSE: not sent
    values = _values(loss_scale="0.25", loss_alpha="-2")
    values[view.widget_key("vae", LOSS_FIELDS[0])] = "general"
    config = view.read_form("vae", values).config
    assert (config["loss"], config["loss_alpha"], config["loss_scale"]) == ("general", -2.0, 0.25)


@pytest.mark.parametrize(("name", "typed", "label", "why"), [
    ("epochs", "abc", "Epochs", "whole number"),
    ("epochs", "0", "Epochs", "between 1 and"),
    ("epochs", "2.5", "Epochs", "whole number"),
    ("epochs", "", "Epochs", "needs a value"),
    ("lr", "1e9", "Learning rate", "at most 10"),
    ("lr", "0", "Learning rate", "> 0"),
    ("lr", "nan", "Learning rate", "finite"),
    ("batch_size", "-3", "Batch size", "between 1 and"),
])
def test_a_wrong_value_is_named_by_its_label_and_nothing_is_started(name: str, typed: str, label: str,
                                                                    why: str) -> None:
    form = view.read_form("vae", _values(**{name: typed}))
    assert form.config is None and not form.ok
    [error] = form.errors
    assert error.field == name and error.label == label and error.message.startswith(label) and why in error.message
    assert not re.search(r"\b(lr|batch_size|limit_train)\b|--", error.message), error.message
    assert "e+" not in error.message  # 1e6, not 1e+06


def test_problems_across_fields_are_named_in_the_forms_words() -> None:
    values = _values(adaptive_alpha_lo="2", adaptive_alpha_hi="1")
    values[view.widget_key("vae", LOSS_FIELDS[0])] = "adaptive"
    [error] = view.read_form("vae", values).errors
    assert error.message.startswith("Lowest α must be below highest α") and "adaptive_alpha" not in error.message
    values = _values()
    values[view.widget_key("vae", LOSS_FIELDS[0])] = "general"  # α empty: the general loss needs one
    [error] = view.read_form("vae", values).errors
    assert error.label == "α (shape)" and "needed by the general loss" in error.message and "--" not in error.message


def test_a_missing_dataset_or_gpu_turns_start_off_with_the_fix() -> None:
    fixes = {e["name"]: tuple(s.command for s in fix_steps(e["fix"]) if s.command) for e in dataset_status()}
    values = _values()
    values[view.widget_key("vae", COMMON_FIELDS[1])] = "cifar10"
    form = view.read_form("vae", values, datasets_found={"cifar10": False}, dataset_fixes=fixes)
    [error] = form.errors
    assert error.label == "Dataset" and "CIFAR-10" in error.message and "not on disk" in error.message
    assert any(c.endswith("-m core.datasets download cifar10") for c in error.commands)
    values = _values()
    values[view.widget_key("vae", next(f for f in COMMON_FIELDS if f.name == "device"))] = "cuda"
    assert [e.label for e in view.read_form("vae", values, cuda=False).errors] == ["Device"]
    assert view.read_form("vae", values, cuda=True).ok


# ---------------------------------------------------------------------------------------------------
# Commands and words


@pytest.mark.slow
def test_commands_shown_work_when_pasted_into_a_new_shell(tmp_path: Path) -> None:
    prose, command = split_message("stopped by SIGTERM after step 6 of 10 of epoch 5; continue with "
                                   f"python -m core.train --resume {REPO}/runs/abc")
    assert prose == "stopped by SIGTERM after step 6 of 10 of epoch 5"
    assert command == f"cd {REPO} && {os.path.relpath(sys.executable, REPO)} -m core.train --resume runs/abc" \
        or command.startswith(f"cd {REPO} && /")
    assert split_message("epoch 3/20 done") == ("epoch 3/20 done", None)
    steps = fix_steps("python -m core.datasets download mnist   (needs internet)\nor copy the files into data/")
    assert [s.command is None for s in steps] == [False, True] and steps[0].text == "needs internet"
    # Pasted into a shell that starts elsewhere, with no PYTHONPATH: it runs.
    shown = pasteable("python -m core.datasets status")
    result = subprocess.run(["bash", "-c", shown], cwd=tmp_path, env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "digits" in result.stdout.lower()


def test_messages_read_in_the_forms_words() -> None:
    labels = {"lr": "Learning rate", "loss_alpha": "α (shape)"}
    assert view.humanise("Lower the learning rate (--lr) or change the loss", labels) == \
        "Lower the learning rate or change the loss"
    assert view.humanise("finished 3 epochs; val loss 541.4", labels) == "finished 3 epochs; validation loss 541.4"
    assert "alpha=" not in view.humanise(LOSSES["students_t"].description)
    assert view.format_number(None) == "—" and view.format_number(541.387) == "541.4"
    assert view.format_number(1234567.0) == "1.23e6" and view.format_number(12) == "12"


# ---------------------------------------------------------------------------------------------------
# A run as it shows


def _status(run, **fields) -> None:
    run.write_status({**run.status(), "epochs": 20, "steps_per_epoch": 10, "total_steps": 200, **fields})


def test_the_header_counts_epochs_as_the_trainers_messages_do(roots) -> None:
    user, _ = roots
    run = create_run({**TINY, "epochs": 20, "run_id": "cut"}, root=user)
    _status(run, state="stopped", epoch=4, epoch_step=6, step=46,
            message=f"stopped by SIGTERM after step 6 of 10 of epoch 5; continue with .venv/bin/python -m core.train "
                    f"--resume {run.path}")
    p = progress(run)
    line = view.status_line(p)
    assert "stopped · epoch 5/20 · step 6 of 10" in line and "ETA" not in line
    prose, command = view.message_parts(p)
    assert prose.startswith("stopped after step 6 of 10 of epoch 5") and "SIGTERM" not in prose
    assert command.startswith(f"cd {REPO} && ") and command.endswith(f"-m core.train --resume {run.path}")
    [row] = [r for r in run_table() if r["run"] == "cut"]
    assert row["epoch"] == "5/20, step 6 of 10" and row["progress"].state == "stopped"
    _status(run, state="stopped", epoch=5, epoch_step=0, step=50, message="stopped before epoch 6")
    assert "epoch 5/20" in view.status_line(progress(run)) and "step" not in view.status_line(progress(run))
    [row] = [r for r in run_table() if r["run"] == "cut"]
    assert row["epoch"] == "5/20"


def test_validating_and_writing_embeddings_are_states_with_their_own_progress(roots) -> None:
    user, _ = roots
    run = create_run({**TINY, "epochs": 20, "run_id": "live"}, root=user)
    with run.lock():  # held by this process: the run reads as running
        _status(run, state="running", phase="validating", phase_done=90, phase_total=180, epoch=2, epoch_step=10,
                step=30, pid=os.getpid(), eta_s=40.0, images_per_s=1234.5, warning="code usage collapsed: only 2 "
                "of 512 codes were used in epoch 2")
        p = progress(run)
        assert p.state == "running" and p.phase == "validating" and p.phase_fraction == 0.5
        assert view.status_line(p).startswith(":material/play_circle: running: validating · epoch 3/20 · ETA")
        assert "1,234 images/s" in view.status_line(p) or "1,235 images/s" in view.status_line(p)
        text, fraction = view.phase_bar(p)
        assert fraction == 0.5 and text == "Validating (epoch 3): 90 of 180 validation images"
        assert p.warning.startswith("code usage collapsed")
        [row] = view.table_rows([r for r in run_table() if r["run"] == "live"])
        assert row["State"] == "running (validating)" and row["Epoch"] == "3/20" and row["Validation loss"] == "—"
        assert None not in row.values() and "None" not in row.values()
        _status(run, state="running", phase="writing embeddings", phase_done=0, phase_total=180, epoch=20,
                epoch_step=0, step=200, pid=os.getpid())
        text, _ = view.phase_bar(progress(run))
        assert text.startswith("Writing embeddings (the finished model)")


@pytest.fixture(scope="module")
def vq_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    run = create_run({**TINY, "family": "vqvae", "codebook_size": 16, "run_id": "vq"}, root=root)
    assert run_training(run).state == "finished"
    return run


@pytest.mark.slow
def test_live_curves_plot_every_term_the_family_logs_with_its_titles(vq_run) -> None:
    family = get_family("vqvae")
    charts = dict(view.curve_figures(vq_run))
    terms = family.active_terms(vq_run.config)
    assert {t.name for t in terms} <= set(charts) and "loss" in charts
    for term in terms:
        layout, data = charts[term.name]["layout"], charts[term.name]["data"]
        assert layout["title"]["text"].lower().startswith(term.title.lower())
        steps = [r[term.name] for r in vq_run.history("step")]
        assert data[0]["name"] == ("training" if term.per_example else "batch") and data[0]["y"] == steps
    assert charts["loss"]["layout"]["title"]["text"] == "Loss per image = reconstruction + 0.25·commitment"
    assert [t["name"] for t in charts["loss"]["data"]] == ["training", "validation"]
    assert charts["recon"]["data"][1]["y"] == [r["val_recon"] for r in vq_run.history("epoch")]
    assert "codes_used" in charts  # the family's epoch metrics: codes used, training and validation
    assert {t["name"] for t in charts["codes_used"]["data"]} == {"training", "validation"}
    numbers = dict(view.metrics(vq_run, progress(vq_run)))
    assert numbers["Commitment"] != "—" and numbers["Codes used (validation)"] != "—"
    assert view.run_caption(vq_run).startswith("Digits · VQ-VAE (K=16, 2×2×4, 16 bits) · MSE · latent size 16")
