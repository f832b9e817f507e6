"""The Home page's logic without Streamlit: the shipped study's headline, computed from its results.csv."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from core import home_view
from core.runs import checkpoints_root

SHIPPED = checkpoints_root() / "studies"


def _rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def test_the_headline_is_the_shipped_studys_best_loss_against_mse() -> None:
    results = SHIPPED / "fashion-mnist-reference" / "results.csv"  # of the shipped studies, the most losses
    rows = _rows(results)
    found = home_view.headline()
    assert found is not None and found.study == results.parent.name
    assert [(b["family"], b["loss_label"]) for b in found.bars] == [(r["family"], r["loss_label"]) for r in rows]
    assert [b["mean"] for b in found.bars] == [float(r["mlp_acc"]) for r in rows]
    assert all(b["error"] == float(r["mlp_acc_std"]) and b["error_over"] == "3 probe seeds"
               for b, r in zip(found.bars, rows, strict=True))
    for family, title in (("vae", "VAE"), ("vqvae", "VQ-VAE")):
        mine = [r for r in rows if r["family"] == family]
        best = max(mine, key=lambda r: float(r["mlp_acc"]))
        mse = next(r for r in mine if r["loss"] == "mse")
        said = next(part for part in found.sentence.split("; ") if f"a {title}'s latents" in part)
        assert f"**{best['loss_label']}**" in said and f"{100 * float(best['mlp_acc']):.1f} %" in said
        assert f"against {100 * float(mse['mlp_acc']):.1f} % with MSE" in said
    assert found.dataset == "Fashion-MNIST" and found.latent == 16 and "None" not in found.caption
    assert "VAEs and VQ-VAEs on Fashion-MNIST" in found.caption


def test_a_study_of_one_family_and_none_without_studies(tmp_path: Path) -> None:
    assert home_view.headline(tmp_path) is None
    source = SHIPPED / "fashion-mnist-reference" / "results.csv"
    rows = [r for r in _rows(source) if r["family"] == "vae"]
    folder = tmp_path / "studies" / "vaes"
    folder.mkdir(parents=True)
    shutil.copy(source.parent / "study.json", folder / "study.json")
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    found = home_view.headline(tmp_path)
    assert {b["family_title"] for b in found.bars} == {"VAE"} and len(found.bars) == len(rows)
    best = max(rows, key=lambda r: float(r["mlp_acc"]))
    assert found.sentence.startswith("On Fashion-MNIST, a probe classifies a VAE's latents best")
    assert f"**{best['loss_label']}** loss: MLP probe accuracy {100 * float(best['mlp_acc']):.1f} %" in found.sentence
    assert "VQ-VAE" not in found.sentence and "VAEs on Fashion-MNIST" in found.caption


def test_the_run_and_dataset_lists_read_for_people() -> None:
    rows = home_view.run_rows()
    assert rows and list(rows[0]) == list(home_view.HOME_RUN_COLUMNS)
    assert all("None" not in row.values() for row in rows)
    datasets = home_view.dataset_rows()
    missing = [d for d in datasets if not d["On disk"]]
    for d in missing:
        assert any(step.command and " -m core.datasets download " in step.command for step in d["fix"])


def test_the_other_shipped_studies_say_what_they_swept_and_how_many_runs_ship(tmp_path: Path) -> None:
    lines = home_view.other_studies("fashion-mnist-reference")
    assert len(lines) == len(list(SHIPPED.glob("*/results.csv"))) - 1
    barron, penalty, vicreg = sorted(lines)
    assert barron.startswith("`barron-") and "Distribution (Normal, Cauchy, Student's t, General)" in barron
    assert "Class penalty λ (0, 0.001, 0.01, 0.25, 10)" in penalty and penalty.endswith("10 runs, 7 of them shipped")
    assert "4 losses" in vicreg and "students_t" not in " ".join(lines) and "_" not in vicreg.split("`")[2]
    assert home_view.other_studies(None, tmp_path) == []
