"""The Embeddings page through AppTest, read through its elements: on empty roots; on the shipped Fashion-MNIST
study (a VAE study in run format 1) and a VQ-VAE digits run trained here. One run in 3-D (PCA computed on
sight, its coordinates checked against an SVD here), the display options read nothing again, t-SNE on a
click (the button goes when it is done), outliers hidden and counted, a seed only where a layout draws at
random, two runs side by side only within one dataset, a study as views through the shared camera, the
VQ-VAE's representations by name, picking a point, and the shipped study drawn without reading a dataset
file and without writing into checkpoints/.

A 2-D chart selection is simulated by writing the selection dict into `session_state["emb_pick"]`."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
import streamlit as st
from apptest_helpers import run_page
from streamlit.testing.v1 import AppTest

from core import datasets
from core import embeddings_view as ev
from core import projections as pj
from core.neighbourhood import nearest_to
from core.runs import Run, open_run

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "embeddings.py")
SHIPPED = REPO / "checkpoints"
SHIPPED_STUDY = "fashion-mnist-reference"
CAUCHY = SHIPPED / f"{SHIPPED_STUDY}-cauchy-z16-s0"
FASHION = list(datasets.dataset_info("fashion_mnist").classes)
NEIGHBOURS = 8


@pytest.fixture(scope="module")
def vq_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A runs root holding one VQ-VAE trained here on digits (the shipped runs are all VAEs)."""
    from core.train import main as train_main

    root = tmp_path_factory.mktemp("emb-vq")
    status = train_main(["--family", "vqvae", "--dataset", "digits", "--latent-dim", "16", "--epochs", "1",
                         "--width", "8", "--runs-root", str(root), "--threads", "1", "--quiet"])
    assert status == 0
    return root


@pytest.fixture()
def lab(vq_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The shipped checkpoints, the VQ-VAE run, and an empty data folder (digits is bundled)."""
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(vq_root))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(SHIPPED))
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "data"))
    [vq] = [p for p in vq_root.iterdir() if (p / "config.json").is_file()]
    return {"root": vq_root, "vq": vq}


def _rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def _charts(at: AppTest) -> dict[str, dict]:
    """Figure JSON of every plotly chart by key (emb_chart_0, ..., emb_pick); each must be valid plotly."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        go.Figure(spec)  # full validation: raises on any property plotly does not know
        out[chart.proto.id.rsplit("-", 1)[-1]] = spec
    return out


def _views(at: AppTest) -> list[dict]:
    charts = _charts(at)
    return [charts[k] for k in sorted(charts, key=lambda k: int(k.rsplit("_", 1)[-1]) if k[-1].isdigit() else -1)
            if k.startswith("emb_chart_")]


def _array(value: Any) -> np.ndarray:
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=np.float64)


def _points(spec: dict, axes: str = "xyz") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(coords, validation index, class name) of every point of the class traces (those with a legendgroup)."""
    coords, index, names = [], [], []
    for trace in (t for t in spec["data"] if "legendgroup" in t):
        cols = np.stack([_array(trace[a]) for a in axes], axis=1)
        coords.append(cols)
        index.append(_array(trace["customdata"]))
        names += [trace["name"]] * len(cols)
    return np.concatenate(coords), np.rint(np.concatenate(index)).astype(np.int64), names


def _in_index_order(coords: np.ndarray, index: np.ndarray, order: np.ndarray) -> np.ndarray:
    at = {int(v): i for i, v in enumerate(index)}
    return coords[[at[int(v)] for v in order]]


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


def _buttons(at: AppTest) -> set[str]:
    return {b.key for b in at.button}


def _select(at: AppTest, value: int) -> AppTest:
    """Click point `value` (a validation index) in the 2-D picker: the event Streamlit would send."""
    spec = _charts(at)["emb_pick"]
    for curve, trace in enumerate(spec["data"]):
        hits = np.flatnonzero(np.rint(_array(trace.get("customdata", []))).astype(np.int64) == value)
        if "legendgroup" in trace and len(hits):
            i = int(hits[0])
            point = {"curve_number": curve, "point_number": i, "point_index": i, "customdata": float(value),
                     "x": float(_array(trace["x"])[i]), "y": float(_array(trace["y"])[i])}
            at.session_state["emb_pick"] = {"selection": {"points": [point], "point_indices": [i], "box": [],
                                                          "lasso": []}}
            return _rerun(at)
    raise AssertionError(f"validation index {value} is not in the 2-D chart")


def _pca(z: np.ndarray) -> np.ndarray:
    x = z.astype(np.float64) - z.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:3].T


def _same_up_to_axis_signs(a: np.ndarray, b: np.ndarray, tol: float) -> None:
    signs = np.sign((a * b).sum(0))
    np.testing.assert_allclose(a * signs, b, atol=tol * np.abs(b).max())


def test_no_runs_says_how_to_train_and_draws_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))  # absent altogether
    at = run_page(PAGE)
    [info] = at.info
    assert "No run with embeddings yet" in info.value and "Train" in info.value and str(tmp_path / "runs") in info.value
    [code] = at.code
    assert "-m core.train --dataset digits" in code.value and code.value.startswith("cd ")
    assert not at.get("plotly_chart") and not at.button


@pytest.mark.slow
def test_one_run_in_3d_and_display_changes_read_and_compute_nothing(lab: dict[str, Path],
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    st.cache_resource.clear()
    emb = open_run(CAUCHY).embeddings()
    z, n = emb["z"].numpy(), len(emb["z"])
    at = run_page(PAGE, emb_run_a=str(CAUCHY))
    [spec] = _views(at)
    assert spec["data"][0]["type"] == "scatter3d" and spec["layout"]["scene"]["dragmode"] == "turntable"
    assert spec["layout"]["title"]["text"] == f"VAE · Cauchy · {CAUCHY.name}"
    coords, index, names = _points(spec)
    assert sorted(index) == sorted(emb["index"].tolist()) and sorted(set(names)) == sorted(FASHION)
    expected = _pca(z)
    expected /= np.linalg.norm(expected, axis=1).max()  # the default scale fits the unit ball
    _same_up_to_axis_signs(_in_index_order(coords, index, emb["index"].numpy()), expected, 1e-4)
    assert any(c.startswith(f"{n:,} points · PCA took") for c in _captions(at))
    assert at.selectbox(key="emb_source_vae").options == ["μ", "z = μ + σε (one sample)"]
    assert "emb_seed" not in {w.key for w in at.number_input}  # PCA of μ draws nothing at random
    assert spec["layout"]["scene"]["camera"]["eye"] == pytest.approx(ev.camera(45, 25, 2.0)["eye"])

    # Display-only changes: no file is read, no layout computed, no model loaded.
    reads, computed = [], []
    load = Run._load_tensors
    monkeypatch.setattr(Run, "_load_tensors", staticmethod(lambda file: reads.append(file) or load(file)))
    compute = pj.compute
    monkeypatch.setattr(pj, "compute", lambda *a, **k: computed.append(a[1]) or compute(*a, **k))
    for key, value in (("emb_marker", 5), ("emb_azimuth", 90), ("emb_elevation", -20), ("emb_distance", 3.0),
                       ("emb_hide_outliers", 10.0)):
        at.slider(key=key).set_value(value)
        _rerun(at)
    at.selectbox(key="emb_scale").set_value("sphere")
    _rerun(at)
    assert reads == [] and computed == []
    [spec] = _views(at)
    assert spec["layout"]["scene"]["camera"]["eye"] == pytest.approx(ev.camera(90, -20, 3.0)["eye"])
    coords, _, _ = _points(spec)
    shown = n - round(0.1 * n)
    assert len(coords) == shown and spec["data"][0]["marker"]["size"] == 5
    np.testing.assert_allclose(np.linalg.norm(coords, axis=1), 1.0, atol=1e-4)
    # The caption counts the points shown, not all of them.
    assert any(c.startswith(f"{shown:,} of {n:,} points ({n - shown:,} hidden) · PCA took") for c in _captions(at))
    flat, _, _ = _points(_charts(at)["emb_pick"], "xy")
    assert len(flat) == shown

    # MDS draws its landmarks at random: it has a seed. The shipped run carries its layout: none computed.
    at.radio(key="emb_method").set_value("mds")
    _rerun(at)
    assert "emb_seed" in {w.key for w in at.number_input} and computed == []
    assert any("MDS" in c and "from the cache" in c for c in _captions(at)), _captions(at)


@pytest.mark.slow
def test_tsne_waits_for_its_button_which_goes_once_it_is_done(lab: dict[str, Path]) -> None:
    at = run_page(PAGE, emb_run_a=str(lab["vq"]), emb_method="tsne", emb_tsne_n_iter=250)
    assert "emb_compute" in _buttons(at) and not _views(at)
    assert any("t-SNE has not been computed" in i.value for i in at.info)
    [button] = [b for b in at.button if b.key == "emb_compute"]
    assert button.label == "Compute t-SNE for 1 run"
    button.click()
    _rerun(at)
    assert "emb_compute" not in _buttons(at)  # gone in the same run that computed the layout
    [spec] = _views(at)
    coords, index, _ = _points(spec)
    assert np.isfinite(coords).all() and len(index) == len(open_run(lab["vq"]).embeddings()["z"])
    assert any("t-SNE took" in c and "(computed now)" in c for c in _captions(at))
    _rerun(at)
    assert "emb_compute" not in _buttons(at) and any("(from the cache)" in c or "computed now" in c
                                                     for c in _captions(at))


@pytest.mark.slow
def test_a_vqvae_run_shows_its_own_representations_and_pairs_only_with_its_dataset(lab: dict[str, Path]) -> None:
    vq = lab["vq"]
    emb = open_run(vq).embeddings()
    at = run_page(PAGE, emb_run_a=str(vq))
    source = at.selectbox(key="emb_source_vqvae")
    assert source.options == ["z_e (before quantisation)", "z_q (quantised)"]
    source.set_value("z_q")
    _rerun(at)
    [spec] = _views(at)
    coords, index, _ = _points(spec)
    expected = _pca(emb["z_q"].numpy())
    norm = np.linalg.norm(expected, axis=1).max()
    _same_up_to_axis_signs(_in_index_order(coords, index, emb["index"].numpy()), expected / norm, 1e-3)
    # Picking a point: its neighbours are found among z_q, the representation the layout shows.
    value = int(emb["index"][7])
    _select(at, value)
    row = int(np.flatnonzero(emb["index"].numpy() == value)[0])
    rows, dist = nearest_to(emb["z_q"].numpy(), row, NEIGHBOURS)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert f"image · index {value}" in captions and "reconstruction (decoded from its representation)" in captions
    labels = emb["labels"].numpy()
    assert captions[-NEIGHBOURS:] == [f"{int(labels[r])} · {d:.2f}" for r, d in zip(rows, dist, strict=True)]

    # Two side by side: run B is offered among runs of the same dataset only (digits: this run alone).
    at.radio(key="emb_mode").set_value("two")
    _rerun(at)
    [only] = at.selectbox(key="emb_run_b").options
    assert vq.name in only and at.selectbox(key="emb_run_b").value == str(vq)
    at.selectbox(key="emb_run_a").set_value(str(CAUCHY))
    _rerun(at)
    options = at.selectbox(key="emb_run_b").options
    fashion = [p for p in SHIPPED.iterdir() if (p / "config.json").is_file()
               and json.loads((p / "config.json").read_text())["dataset"] == "fashion_mnist"]
    assert len(options) == len(fashion) and all("digits" not in o and vq.name not in o for o in options)


@pytest.mark.slow
def test_picking_searching_and_stepping_through_a_label(lab: dict[str, Path]) -> None:
    emb = open_run(CAUCHY).embeddings()
    index, labels, z = emb["index"].numpy(), emb["labels"].numpy(), emb["z"].numpy()
    at = run_page(PAGE, emb_run_a=str(CAUCHY))
    assert "No point picked yet." in _captions(at)
    value = int(index[len(index) // 3])
    _select(at, value)
    row = int(np.flatnonzero(index == value)[0])
    rows, _ = nearest_to(z, row, NEIGHBOURS)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert captions[:2] == [f"image · index {value}", "reconstruction (decoded from its representation)"]
    assert len(captions) == 2 + NEIGHBOURS
    shares = sum(int(labels[r]) == int(labels[row]) for r in rows)
    assert f"label {FASHION[labels[row]]} · its {NEIGHBOURS} nearest neighbours in the representation ({shares} " \
           f"share its label), with their distances:" in _captions(at)
    [spec] = _views(at)
    marks = {t["name"]: t for t in spec["data"] if "legendgroup" not in t}
    coords, pidx, _ = _points(spec)
    mine = int(np.flatnonzero(pidx == value)[0])
    np.testing.assert_allclose([_array(marks["selected"][a])[0] for a in "xyz"], coords[mine], rtol=1e-6)
    near = {tuple(np.round(p, 5)) for p in np.stack([_array(marks["latent neighbours"][a]) for a in "xyz"], 1)}
    assert near == {tuple(np.round(coords[int(np.flatnonzero(pidx == index[r])[0])], 5)) for r in rows}

    target = int(index[7])
    at.number_input(key="emb_index").set_value(target)
    _rerun(at)
    at.button(key="emb_show_index").click()
    _rerun(at)
    assert f"image · index {target}" in [img.caption for el in at.get("image") for img in el.proto.imgs]
    at.number_input(key="emb_index").set_value(10**6)
    _rerun(at)
    at.button(key="emb_show_index").click()
    _rerun(at)
    assert any(f"index {10**6} is not among this run's {len(index):,} validation points" in w.value for w in at.warning)

    label = int(labels[0])
    with_label = sorted(int(i) for i in index[labels == label])
    at.selectbox(key="emb_label").set_value(label)
    _rerun(at)
    at.button(key="emb_next_label").click()
    _rerun(at)
    first = next((i for i in with_label if i > target), with_label[0])
    assert f"image · index {first}" in [img.caption for el in at.get("image") for img in el.proto.imgs]
    at.button(key="emb_clear").click()
    _rerun(at)
    assert "No point picked yet." in _captions(at) and not at.get("image")
    _rerun(at)  # the old chart selection does not come back
    assert "No point picked yet." in _captions(at)


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    def state(f: Path) -> tuple[int, int, str]:
        if not f.is_file():
            return (0, 0, "folder")
        return (f.stat().st_size, f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())

    return {str(f.relative_to(root)): state(f) for f in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_shipped_study_as_views_through_the_shared_camera_without_the_dataset(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runs = tmp_path / "runs"
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(runs))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(SHIPPED))
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "data"))
    study = sorted(p for p in SHIPPED.iterdir() if (p / "config.json").is_file()
                   and json.loads((p / "config.json").read_text())["study"] == SHIPPED_STUDY)
    before = _snapshot(SHIPPED)
    reads_before = datasets._official.cache_info()  # every dataset file is read through this cache
    st.cache_resource.clear()  # layouts held in memory by earlier tests would hide where they are cached

    at = run_page(PAGE, emb_mode="grid", emb_study=SHIPPED_STUDY, emb_azimuth=120, emb_elevation=10)
    views = _views(at)
    assert len(views) == len(study) == 14  # a VAE and a VQ-VAE per loss
    assert not any(t["type"] == "scatter3d" for spec in _charts(at).values() for t in spec["data"])  # no WebGL
    titles = [v["layout"]["title"]["text"] for v in views]
    assert titles[0] == "VAE · MSE" and "VAE · Cauchy" in titles
    # Each view is its run's 3-D layout seen from the camera: the PCA layout, fitted to the unit ball, projected.
    path = CAUCHY
    spec = views[titles.index("VAE · Cauchy")]
    flat, index, names = _points(spec, "xy")
    emb = open_run(path).embeddings()
    coords = pj.display_coords(pj.compute(emb["z"].numpy(), "pca")[0], "ball")
    expected, _ = ev.camera_view(coords, 120, 10)
    np.testing.assert_allclose(_in_index_order(flat, index, emb["index"].numpy()), expected, atol=1e-5)
    assert sorted(set(names)) == sorted(FASHION)

    value = int(emb["index"][11])
    at.selectbox(key="emb_detail_run").set_value(str(path))
    _rerun(at)
    _select(at, value)
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert f"image · index {value}" in captions and len(captions) == 2 + NEIGHBOURS  # the picked-in run only
    assert datasets._official.cache_info() == reads_before
    assert _snapshot(SHIPPED) == before  # layouts are cached under the runs root, never in checkpoints/
    cached = list(runs.glob(".shipped-cache/*/projections/pca-*.safetensors"))
    assert len(cached) == 7 or all((p / "projections").is_dir() for p in study)  # unless shipped with them
