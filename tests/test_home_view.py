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
    results = sorted(SHIPPED.glob("*/results.csv"))[0]
    rows = _rows(results)
    best = max(rows, key=lambda r: float(r["mlp_acc"]))
    mse = next(r for r in rows if r["loss"] == "mse")
    found = home_view.headline()
    assert found is not None and found.study == results.parent.name
    assert [b["loss_label"] for b in found.bars] == [r["loss_label"] for r in rows]
    assert [b["mean"] for b in found.bars] == [float(r["mlp_acc"]) for r in rows]
    assert all(b["error"] == float(r["mlp_acc_std"]) and b["error_over"] == "3 probe seeds"
               for b, r in zip(found.bars, rows, strict=True))
    assert f"**{best['loss_label']}**" in found.sentence
    assert f"{100 * float(best['mlp_acc']):.1f} %" in found.sentence
    assert f"against {100 * float(mse['mlp_acc']):.1f} % with MSE" in found.sentence
    assert found.dataset == "Fashion-MNIST" and found.latent == 16 and "None" not in found.caption


def test_a_study_of_two_families_says_what_each_found_and_none_without_studies(tmp_path: Path) -> None:
    assert home_view.headline(tmp_path) is None
    source = sorted(SHIPPED.glob("*/results.csv"))[0]
    rows = _rows(source)
    vq = [{**r, "family": "vqvae", "mlp_acc": str(1 - float(r["mlp_acc"]))} for r in rows]
    folder = tmp_path / "studies" / "both"
    folder.mkdir(parents=True)
    shutil.copy(source.parent / "study.json", folder / "study.json")
    names = [*rows[0].keys(), "family"]
    with open(folder / "results.csv", "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, names)
        writer.writeheader()
        writer.writerows([{**r, "family": "vae"} for r in rows] + vq)
    found = home_view.headline(tmp_path)
    assert {b["family_title"] for b in found.bars} == {"VAE", "VQ-VAE"} and len(found.bars) == 2 * len(rows)
    worst_vae = min(rows, key=lambda r: float(r["mlp_acc"]))  # the best VQ-VAE here, by construction
    assert "VAE's latents" in found.sentence and "VQ-VAE's latents" in found.sentence
    assert f"**{worst_vae['loss_label']}** loss: MLP probe accuracy {100 * (1 - float(worst_vae['mlp_acc'])):.1f} %" \
        in found.sentence
    assert "VAEs and VQ-VAEs on Fashion-MNIST" in found.caption


def test_the_run_and_dataset_lists_read_for_people() -> None:
    rows = home_view.run_rows()
    assert rows and list(rows[0]) == list(home_view.HOME_RUN_COLUMNS)
    assert all("None" not in row.values() for row in rows)
    datasets = home_view.dataset_rows()
    missing = [d for d in datasets if not d["On disk"]]
    for d in missing:
        assert any(step.command and " -m core.datasets download " in step.command for step in d["fix"])
