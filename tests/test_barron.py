"""Barron's VAE experiment through the family seam: every representation and distribution trains, evaluates
(the ELBO on the held-out split, in nats per image and bits/dim) and resumes bit for bit; the colour (YUV)
paths on real photographs; the default VAE is what it was; the grid, its ELBO table beside Barron's, the
orderings, the report, the learned maps in the representation's layout and the gallery (core/barron.py);
and the one command, shipped."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import barron
from core.config import ConfigError, fields_for, make_config
from core.engine import load_training_data, run_training
from core.families import get_family, load_objective
from core.families.recon import loss_label
from core.families.vae import has_elbo
from core.runs import create_run, open_run
from core.train import main
from tests.conftest import fault_env

REPO = Path(__file__).resolve().parents[1]
# Every distribution once, every representation at least once (4 tiny digits runs, 8×8 grey).
CELLS = [("pixels", "normal"), ("dct", "cauchy"), ("wavelet", "students_t"), ("wavelet", "general")]
TINY = dict(dataset="digits", epochs=2, limit_train=192, batch_size=64, latent_dim=4, width=8, seed=1, device="cpu",
            likelihood_rate=20.0)


@pytest.fixture(scope="module")
def grid_runs(tmp_path_factory) -> list:
    root = tmp_path_factory.mktemp("barron")
    runs = []
    for rep, dist in CELLS:
        config = make_config(**TINY, representation=rep, distribution=dist)
        data = load_training_data(config)
        run = create_run({**config, "split": data.split, "run_id": f"tiny-{rep}-{dist}"}, root=root)
        assert run_training(run, data=data).state == "finished"
        runs.append(run)
    return runs


def test_each_representation_and_distribution_trains_and_reports_the_elbo(grid_runs):
    for run in grid_runs:
        epochs = run.history("epoch")
        last = epochs[-1]
        assert math.isfinite(last["val_elbo"]) and last["val_elbo"] > epochs[0]["val_elbo"]  # it learns
        assert last["val_bpd"] == pytest.approx(-last["val_elbo"] / (64 * math.log(2)))
        # ELBO = −(distortion + KL) on one sample (the validation recon is at z = μ, so it differs)
        assert last["val_elbo"] == pytest.approx(-(last["val_distortion"] + last["val_kl"]), rel=1e-6)
        assert last["val_distortion"] != last["val_recon"]
        objective = load_objective(run)
        weights = run.model_tensors()
        assert not any(k.startswith("representation") for k in weights)  # T adds no weights
        learns = {"normal": {"scale"}, "cauchy": {"scale"}, "students_t": {"nu", "scale"},
                  "general": {"alpha", "scale"}}[run.config["distribution"]]
        assert set(objective.loss.maps()) == learns
        assert weights["loss.scale_latent"].shape == (64,)  # one scale per coefficient
    labels = {loss_label(r.config) for r in grid_runs}
    assert labels == {"Normal (learned c)", "Cauchy (learned c) on DCT",  # one loss on two representations: two labels
                      "Student's t (learned ν, c) on CDF 9/7 wavelet", "General (learned α, c) on CDF 9/7 wavelet"}
    vae = get_family("vae")
    assert vae.describe(grid_runs[3].config) == "VAE (CDF 9/7 wavelet)"  # grey: no colour in the label
    assert vae.describe(grid_runs[0].config) == "VAE"


def test_the_distortion_is_measured_on_the_representation():
    """T(x) − T(x̂) = T(x − x̂): an orthonormal DCT leaves a squared error as it is, the wavelet does not."""
    vae = get_family("vae")
    x = torch.rand(4, 1, 8, 8)
    x_hat = torch.rand(4, 1, 8, 8)
    costs = {}
    for rep in ("pixels", "dct", "wavelet"):
        objective = vae.build(make_config(dataset="digits", loss="mse", representation=rep))
        costs[rep] = objective.distortion(x, x_hat)
    assert torch.allclose(costs["dct"], costs["pixels"], rtol=1e-5)
    assert not torch.allclose(costs["wavelet"], costs["pixels"], rtol=1e-3)
    assert vae.build(make_config(dataset="digits")).representation is None  # the default: the old code path


def test_the_yuv_paths_on_real_photographs(tmp_path):
    config = make_config(dataset="photos", epochs=1, limit_train=64, batch_size=32, latent_dim=4, width=8,
                         device="cpu", representation="dct", colour="yuv", distribution="general")
    data = load_training_data(config)
    run = create_run({**config, "split": data.split}, root=tmp_path)
    assert run_training(run, data=data).state == "finished"
    last = run.history("epoch")[-1]
    assert math.isfinite(last["val_elbo"]) and last["val_bpd"] == pytest.approx(
        -last["val_elbo"] / (3 * 32 * 32 * math.log(2)))
    objective = load_objective(run)
    assert objective.representation.colour == "yuv" and objective.representation.spatial == "dct"
    assert get_family("vae").describe(run.config) == "VAE (DCT + YUV)"
    view = barron.coefficient_maps(run, objective)
    assert [p["name"] for p in view["panels"]] == ["alpha", "scale"]
    assert view["panels"][0]["values"].shape == (3, 32, 32)


def test_the_fields_say_what_applies():
    vae = get_family("vae")
    names = [f.name for f in fields_for(vae)]
    assert {"representation", "colour", "distribution", "likelihood_rate"} <= set(names)
    colour = vae.field("colour")
    assert not colour.applies_to({"dataset": "fashion_mnist"}) and colour.applies_to({"dataset": "photos"})
    loss = next(f for f in fields_for(vae) if f.name == "loss")
    assert not loss.applies_to({"distribution": "normal"}) and loss.applies_to({"distribution": "loss"})
    with pytest.raises(ConfigError, match="colour yuv needs colour images") as err:
        make_config(dataset="digits", colour="yuv")
    assert err.value.field == "colour"
    with pytest.raises(ConfigError, match="replaced by the distribution") as err:
        make_config(dataset="digits", distribution="normal", loss="cauchy")
    assert err.value.field == "loss"
    with pytest.raises(ConfigError, match="likelihood_rate does not apply"):
        make_config(dataset="digits", likelihood_rate=5.0)
    assert has_elbo(make_config(dataset="digits", loss="adaptive")) and not has_elbo(make_config(dataset="digits"))


@pytest.mark.slow
def test_a_wavelet_run_with_the_general_distribution_resumes_bit_for_bit(tmp_path):
    args = ["--dataset", "digits", "--representation", "wavelet", "--distribution", "general", "--likelihood-rate",
            "20", "--latent-dim", "4", "--width", "8", "--epochs", "3", "--limit-train", "256", "--batch-size", "64",
            "--seed", "3", "--device", "cpu", "--threads", "1", "--quiet"]
    assert main([*args, "--runs-root", str(tmp_path), "--run-id", "whole"]) == 0
    env = {**os.environ, "OMP_NUM_THREADS": "1", **fault_env(signal_at_step="SIGTERM:6")}
    env["PYTHONPATH"] = os.pathsep.join([env["PYTHONPATH"], str(REPO)])
    done = subprocess.run([sys.executable, "-m", "core.train", *args, "--runs-root", str(tmp_path), "--run-id", "cut"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 130, done.stderr
    assert main(["--resume", str(tmp_path / "cut"), "--threads", "1", "--quiet"]) == 0
    ours, theirs = open_run(tmp_path / "cut").model_tensors(), open_run(tmp_path / "whole").model_tensors()
    assert ours.keys() == theirs.keys() and all(torch.equal(ours[k], theirs[k]) for k in ours)
    assert {"loss.alpha_latent", "loss.scale_latent"} <= set(ours)
    keys = ("epoch", "loss", "recon", "kl", "val_elbo", "val_bpd", "alpha_mean", "scale_mean")
    assert [[e[k] for k in keys] for e in open_run(tmp_path / "cut").history("epoch")] == \
        [[e[k] for k in keys] for e in open_run(tmp_path / "whole").history("epoch")]


# ---------------------------------------------------------------------------------------------------
# core/barron.py: the grid, the table, the report, the views


def test_the_grid_pairs_colours_as_barron_did():
    grey = barron.grid(1)
    assert len(grey) == 12 and all("colour" not in cell for cell in grey)
    colour = barron.grid(3)
    assert {(c["representation"], c["colour"]) for c in colour} == {("pixels", "rgb"), ("dct", "yuv"),
                                                                    ("wavelet", "yuv")}
    assert barron.auto_rate(780) == 64.0 and barron.auto_rate(1700) == 29.0
    assert barron.auto_rate(100_000) == 1.0 and barron.auto_rate(3) == 100.0
    args = barron._parser().parse_args(["--dataset", "photos", "--epochs", "2", "--width", "8"])
    argvs = barron.study_argvs(args, "s", Path("/r"), Path("/r/studies/s"), 3, 64.0)
    assert len(argvs) == 2  # pixels in RGB; DCT and wavelets in YUV
    assert "representation=pixels" in argvs[0] and "colour=rgb" in argvs[0]
    assert "representation=dct,wavelet" in argvs[1] and "colour=yuv" in argvs[1]
    assert "likelihood_rate=64" in argvs[1] and "--no-report" in argvs[1]
    grey_argvs = barron.study_argvs(args, "s", Path("/r"), Path("/r/studies/s"), 1, 64.0)
    assert len(grey_argvs) == 1 and not any(a.startswith("colour=") for a in grey_argvs[0])


def test_kendall_tau_and_the_orderings():
    assert barron.kendall_tau([1, 2, 3], [10, 20, 30]) == 1.0
    assert barron.kendall_tau([1, 2, 3], [3, 2, 1]) == -1.0
    assert barron.kendall_tau([1, 2, 3, 4], [1, 2, 4, 3]) == pytest.approx(4 / 6)
    assert barron.kendall_tau([1], [1]) is None
    cells = {rep: {d: {"elbo": float(v)} for d, v in row.items()} for rep, row in barron.BARRON_ELBO.items()}
    table = {"cells": cells, "representations": list(barron.REPRESENTATIONS),
             "distributions": list(barron.DISTRIBUTIONS)}
    same = barron.orderings(table)
    assert same["overall_tau"] == 1.0 and all(o["same_best"] for o in same["by_representation"])
    assert same["by_representation"][0]["barron"] == ["general", "students_t", "cauchy", "normal"]
    cells["pixels"]["normal"]["elbo"] = 1e9  # our normal wins on pixels
    moved = barron.orderings(table)
    assert moved["by_representation"][0]["ours"][0] == "normal" and not moved["by_representation"][0]["same_best"]
    assert moved["by_representation"][0]["tau"] == 0.0 and moved["overall_tau"] < 1.0


def test_the_table_and_the_report(grid_runs):
    table = barron.elbo_table(grid_runs)
    assert table["dims"] == 64 and table["dataset"] == "digits" and table["image_shape"] == (1, 8, 8)
    assert table["representations"] == ["pixels", "dct", "wavelet"]
    cell = table["cells"]["wavelet"]["general"]
    assert cell["elbo"] == grid_runs[3].history("epoch")[-1]["val_elbo"] and cell["barron"] == 36316
    assert cell["nats_per_dim"] == pytest.approx(cell["elbo"] / 64)
    assert cell["barron_per_dim"] == pytest.approx(36316 / 12288)
    rows = barron.elbo_rows(table)
    assert len(rows) == 4 and {r["distribution"] for r in rows} == set(barron.DISTRIBUTIONS)
    text = barron.report_markdown(table, grid_runs)
    for needle in ("continuous densities of pixels in [0, 1]", "36,316", "8,662", "## Orderings",
                   "## Why the numbers differ", "Dataset and size", "Colour: the images are grey",
                   "Prior: here N(0, I)", "Architecture", "Training:", "k = 20"):
        assert needle in text, needle
    assert "Kendall" in text


def test_the_learned_maps_in_the_representations_layout(grid_runs):
    view = barron.coefficient_maps(grid_runs[3])  # wavelet, general
    assert view["representation"] == "wavelet" and view["image_shape"] == (1, 8, 8)
    alpha, scale = view["panels"]
    assert alpha["name"] == "alpha" and 0 <= alpha["range"][0] <= alpha["range"][1] <= 3 and alpha["bounds"] == (0, 3)
    objective = load_objective(grid_runs[3])
    with torch.no_grad():
        assert np.allclose(10 ** scale["values"].reshape(-1), objective.loss.scale().numpy(), rtol=1e-5)
    assert scale["log10"] and scale["range"][0] > 0
    assert len(view["regions"]) == 3 * 3 + 1  # three levels of three subbands and the residual
    png = Image.open(io.BytesIO(barron.coefficient_maps_png(view)))
    assert png.size[0] > 2 * 8 * 4 and png.mode == "RGB"
    fig = barron.coefficient_map_figure(view)
    assert [t.type for t in fig.data] == ["heatmap", "heatmap"] and len(fig.layout.shapes) == 2 * 10
    assert barron.coefficient_maps(grid_runs[1])["panels"][0]["name"] == "scale"  # Cauchy: a scale only
    nu = barron.coefficient_maps(grid_runs[2])["panels"][0]
    assert nu["name"] == "nu" and nu["log10"]


def test_the_elbo_figure_and_the_gallery(grid_runs):
    table = barron.elbo_table(grid_runs)
    fig = barron.elbo_figure(table)
    bars = [t for t in fig.data if t.type == "bar"]
    assert len(bars) == 4 and len([t for t in fig.data if t.type == "scatter"]) == 4
    general = next(t for t in bars if t.name.startswith("general"))
    assert list(general.y)[2] == pytest.approx(table["cells"]["wavelet"]["general"]["nats_per_dim"])
    view = barron.gallery(grid_runs, n=5)
    assert view["originals"].shape == (5, 1, 8, 8)
    assert all(r["reconstructions"].shape == (5, 1, 8, 8) and r["samples"].shape == (5, 1, 8, 8) for r in view["runs"])
    png = Image.open(io.BytesIO(barron.gallery_png(view)))
    assert png.size == (170 + 2 * 5 * (8 * 3 + 2) + 16, 16 + (1 + 4) * (8 * 3 + 2) + 2)


@pytest.mark.slow
def test_the_one_command_trains_reports_and_ships(tmp_path):
    ship = tmp_path / "ship"
    code = barron.main(["--dataset", "digits", "--epochs", "1", "--limit-train", "128", "--width", "4",
                        "--latent-dim", "2", "--representations", "pixels,wavelet", "--distributions",
                        "general", "--runs-root", str(tmp_path / "runs"), "--threads", "1",
                        "--probe-train", "200", "--probe-seeds", "0", "--ship-to", str(ship), "--ship-embeddings",
                        "50", "--quiet"])
    assert code == 0
    folder = tmp_path / "runs" / "studies" / "barron-digits-e1-n128"
    for name in ("elbo.md", "elbo.csv", "elbo.json", "report.md", "results.csv", "figures/elbo-gallery.png"):
        assert (folder / name).is_file(), name
    text = (folder / "elbo.md").read_text()
    assert "| CDF 9/7 wavelets |" in text and "36,316" in text and "likelihood" not in text.split("\n")[0]
    assert len((folder / "elbo.csv").read_text().strip().splitlines()) == 1 + 2
    assert len(list((folder / "figures").glob("elbo-maps-*.png"))) == 2
    shipped = sorted(p.name for p in ship.iterdir() if p.is_dir() and p.name.startswith("barron"))
    assert len(shipped) == 2 and (ship / "studies" / "barron-digits-e1-n128" / "elbo.md").is_file()
    assert barron.main(["--dataset", "digits", "--epochs", "1", "--limit-train", "128", "--width", "4",
                        "--latent-dim", "2", "--representations", "pixels,wavelet", "--distributions",
                        "general", "--runs-root", str(tmp_path / "runs"), "--threads", "1",
                        "--probe-train", "200", "--probe-seeds", "0", "--quiet"]) == 0  # again: all reused


def test_a_study_of_the_grid_gets_the_elbo_section_in_its_report(grid_runs):
    """core.study appends each family's section (Family.study_section) to report.md: `python -m core.study
    --with representation=pixels,dct,wavelet --with distribution=normal,cauchy,students_t,general` is the grid."""
    vae = get_family("vae")
    section = vae.study_section(grid_runs, lambda _m: None)
    assert section.startswith("## Barron's VAE experiment") and "### Orderings" in section
    assert "36,316" in section and "### Why the numbers differ" in section
    assert vae.study_section([], lambda _m: None) is None


def test_a_run_from_before_these_fields_is_still_the_run_a_study_asks_for(tmp_path):
    """A study rerun must find a user's finished run made before the representation fields existed (its
    config.json lacks them): a missing field reads as its default."""
    import json

    from core import study

    config = make_config(dataset="digits", loss="cauchy", latent_dim=4, epochs=1)
    run = create_run(config, root=tmp_path)
    stored = json.loads((run.path / "config.json").read_text())
    for key in ("representation", "colour", "distribution", "likelihood_rate", "loss_alpha_schedule",
                "loss_alpha_start", "loss_alpha_end"):
        stored.pop(key)
    (run.path / "config.json").write_text(json.dumps(stored))
    spec = study.RunSpec(run.run_id, {"dataset": "digits", "loss": "cauchy", "latent_dim": 4, "epochs": 1})
    assert study._mismatch(open_run(run.path), spec) == []
    assert study._mismatch(open_run(run.path), study.RunSpec(run.run_id, {**spec.config, "representation": "dct"}))


def test_the_diagnostics_measure_reconstructions_and_collapsed_scales(grid_runs):
    run = grid_runs[0]  # pixels, normal
    info = barron.diagnostics(run, n=50)
    objective = load_objective(run)
    x = run.embeddings()["images"][:50].float() / 255
    with torch.no_grad():
        x_hat = objective.model.decode(objective.model.encode(x)[0])
        scale = objective.loss.scale()
        nll = objective.loss((x - x_hat).flatten(1)).mean(0)
    assert info["mse"] == pytest.approx(float((x - x_hat).square().mean()), rel=1e-5)
    assert info["offset"] == pytest.approx(float(x_hat.mean() - x.mean()), abs=1e-6)
    assert info["count"] == int((scale < 1e-4).sum()) and info["dims"] == 64
    assert info["total"] == pytest.approx(float(-nll.sum()), rel=1e-5)
    with torch.no_grad():  # a scale pushed to its floor counts as collapsed, with what it adds
        objective.loss.scale_latent[:5] = -1e4
    forced = barron.diagnostics(run, objective, n=50)
    assert forced["count"] >= 5 and forced["nats"] != 0
    table = barron.elbo_table(grid_runs)
    degenerate = {r.run_id: barron.diagnostics(r, n=50) for r in grid_runs}
    text = barron.report_markdown(table, grid_runs, degenerate=degenerate)
    assert "## Reconstructions at z = μ" in text and "Constant pixels" in text
