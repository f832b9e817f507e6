"""The Embeddings page through AppTest: on empty roots; on two real digits runs trained here (one run,
PCA / MDS on sight, t-SNE on a click, the disk cache, the display options, picking a point, two runs
side by side, a study in a grid, the shared camera); and on the shipped Fashion-MNIST study, which must
render without reading any dataset file and must cache its layouts under the runs root, never in
checkpoints/.

The plotly figures come back as JSON (`.proto.spec`); their coordinates are checked against layouts
computed here from the run's own embeddings. A 2-D chart selection is simulated by writing the
selection dict into `session_state["emb_pick"]` (shared/notes/facts.md)."""

from __future__ import annotations

import base64
import hashlib
import json
import math
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import plotly.graph_objects as go
import pytest
from apptest_helpers import run_page
from streamlit.testing.v1 import AppTest

from core import datasets
from core import projections as pj
from core.neighbourhood import nearest_to
from core.runs import open_run
from core.train import main as train_main

REPO = Path(__file__).resolve().parents[1]
PAGE = str(REPO / "pages" / "embeddings.py")
STUDY = "emb-page-test"
SHIPPED_STUDY = "fashion-mnist-reference"
FASHION_CLASSES = list(datasets.dataset_info("fashion_mnist").classes)
NEIGHBOURS = 8  # what the page shows


# ---------------------------------------------------------------------------------------------------
# Fixtures: two real digits runs (Cauchy and MSE, one study), trained once for the module


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """{"root": runs root, "cauchy": run dir, "mse": run dir}, trained by the real trainer."""
    root = tmp_path_factory.mktemp("emb-runs")
    out: dict[str, Path] = {"root": root}
    for loss in ("cauchy", "mse"):
        before = set(root.iterdir())
        status = train_main(["--dataset", "digits", "--loss", loss, "--latent-dim", "8", "--epochs", "2",
                             "--study", STUDY, "--runs-root", str(root), "--threads", "1", "--quiet"])
        assert status == 0, f"training the {loss} run failed with exit status {status}"
        [path] = set(root.iterdir()) - before
        assert (path / "embeddings.safetensors").is_file()
        out[loss] = path
    return out


@pytest.fixture()
def lab(trained: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """The page's roots: the trained runs, no shipped runs, an empty data folder (digits is bundled)."""
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(trained["root"]))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "data"))
    return trained


# ---------------------------------------------------------------------------------------------------
# Helpers


def _page(**state: Any) -> AppTest:
    return run_page(PAGE, **state)


def _rerun(at: AppTest) -> AppTest:
    at.run()
    assert not at.exception, at.exception
    return at


def _charts(at: AppTest) -> dict[str, dict]:
    """Figure JSON of every plotly chart, by widget key (emb_3d_0, ..., emb_pick); each must be valid plotly."""
    out = {}
    for chart in at.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        go.Figure(spec)  # full validation: raises on any property plotly does not know
        out[chart.proto.id.rsplit("-", 1)[-1]] = spec
    return out


def _charts_3d(at: AppTest) -> list[dict]:
    charts = _charts(at)
    return [charts[f"emb_3d_{i}"] for i in range(sum(k.startswith("emb_3d_") for k in charts))]


def _array(value: Any) -> np.ndarray:
    """A plotly array: a list, or plotly's typed-array dict {"dtype", "bdata" (base64)}."""
    if isinstance(value, dict):
        return np.frombuffer(base64.b64decode(value["bdata"]), dtype=np.dtype(value["dtype"]))
    return np.asarray(value, dtype=np.float64)


def _class_traces(spec: dict) -> list[dict]:
    """The per-class traces (the highlight traces, "selected" and "latent neighbours", have no legendgroup)."""
    return [t for t in spec["data"] if "legendgroup" in t]


def _points(spec: dict, axes: str = "xyz") -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(coords (n, len(axes)), validation index (n,), class name of each point) over the class traces."""
    coords, index, names = [], [], []
    for trace in _class_traces(spec):
        cols = np.stack([_array(trace[a]) for a in axes], axis=1)
        data = _array(trace["customdata"])
        assert len(data) == len(cols)
        coords.append(cols)
        index.append(data)
        names += [trace["name"]] * len(cols)
    return np.concatenate(coords), np.rint(np.concatenate(index)).astype(np.int64), names


def _in_index_order(coords: np.ndarray, index: np.ndarray, n: int) -> np.ndarray:
    """Chart points back in validation-index order (NaN rows for points the chart leaves out)."""
    out = np.full((n, coords.shape[1]), np.nan)
    out[index] = coords
    return out


def _embeddings(path: Path) -> dict[str, np.ndarray]:
    return {name: t.numpy() for name, t in open_run(path).embeddings().items()}


def _pca(mu: np.ndarray, dims: int = 3) -> np.ndarray:
    """Principal components of μ, by numpy's SVD (independent of core)."""
    x = mu.astype(np.float64) - mu.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:dims].T


def _same_up_to_axis_signs(a: np.ndarray, b: np.ndarray, tol: float) -> None:
    signs = np.sign((a * b).sum(0))
    np.testing.assert_allclose(a * signs, b, atol=tol * np.abs(b).max())


def _raw_stress(points: np.ndarray, coords: np.ndarray) -> float:
    """σ = Σ_{i<j} (‖x_i − x_j‖ − ‖y_i − y_j‖)²."""
    def dists(z: np.ndarray) -> np.ndarray:
        z = z.astype(np.float64)
        d = np.sqrt(((z[:, None, :] - z[None, :, :]) ** 2).sum(-1))
        return d[np.triu_indices(len(z), 1)]
    return float(((dists(points) - dists(coords)) ** 2).sum())


def _select(at: AppTest, value: int) -> AppTest:
    """Click point `value` (a validation index) in the linked 2-D chart: write the selection event Streamlit
    would send (the chart's own point, with its trace, position and customdata) and rerun."""
    spec = _charts(at)["emb_pick"]
    for curve, trace in enumerate(spec["data"]):
        if "legendgroup" not in trace:
            continue
        data = np.rint(_array(trace["customdata"])).astype(np.int64)
        hits = np.flatnonzero(data == value)
        if len(hits):
            i = int(hits[0])
            point = {"curve_number": curve, "point_number": i, "point_index": i,
                     "x": float(_array(trace["x"])[i]), "y": float(_array(trace["y"])[i]), "customdata": float(value)}
            at.session_state["emb_pick"] = {"selection": {"points": [point], "point_indices": [i], "box": [],
                                                          "lasso": []}}
            return _rerun(at)
    raise AssertionError(f"validation index {value} is not in the 2-D chart")


def _deselect(at: AppTest) -> AppTest:
    """Clear the 2-D chart's selection (what a click on the selected point, or a double click, sends)."""
    at.session_state["emb_pick"] = {"selection": {"points": [], "point_indices": [], "box": [], "lasso": []}}
    return _rerun(at)


def _expected_detail(path: Path, value: int) -> dict[str, Any]:
    emb = _embeddings(path)
    [row] = np.flatnonzero(emb["index"] == value)
    rows, _ = nearest_to(emb["mu"], int(row), NEIGHBOURS)
    return {"row": int(row), "index": value, "label": int(emb["labels"][row]),
            "neighbour_index": [int(v) for v in emb["index"][rows]]}


def _captions(at: AppTest) -> list[str]:
    return [c.value for c in at.caption]


# ---------------------------------------------------------------------------------------------------
# No runs


def test_no_runs_says_how_to_train_and_draws_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(tmp_path / "checkpoints"))  # absent altogether
    at = _page()
    [info] = at.info
    assert "No run with embeddings yet" in info.value and "Train" in info.value
    assert "python -m core.train --dataset digits" in info.value and str(tmp_path / "runs") in info.value
    assert not at.get("plotly_chart") and not at.button
    assert at.session_state["emb_view"] == {"runs": [], "mode": None}


# ---------------------------------------------------------------------------------------------------
# One run: PCA and MDS on sight, the cache, t-SNE on a click, display options


@pytest.mark.slow
def test_one_run_draws_pca_in_3d_and_the_second_visit_is_served_from_the_cache(lab: dict[str, Path]) -> None:
    path = lab["cauchy"]
    shutil.rmtree(path / "projections", ignore_errors=True)  # a fresh run: nothing cached
    emb = _embeddings(path)
    n, run_id = len(emb["mu"]), path.name
    at = _page(emb_run_a=str(path))
    view = at.session_state["emb_view"]
    assert (view["mode"], view["method"], view["source"], view["seed"]) == ("one", "pca", "mu", 0)
    assert view["shown"] == [run_id] and view["from_cache"] == {run_id: False} and view["points"] == {run_id: n}
    key = pj.projection_key("pca", 3, 0, {}, "mu", emb["mu"])
    assert view["keys"] == {run_id: key} and (path / "projections" / f"pca-{key}.safetensors").is_file()
    quality = view["quality"][run_id]
    assert 0.5 < quality["trustworthiness"] <= 1.0 and 0.0 <= quality["knn_agreement"] <= 1.0

    [spec] = _charts_3d(at)
    traces = _class_traces(spec)
    classes = np.unique(emb["labels"])
    assert [t["type"] for t in traces] == ["scatter3d"] * len(classes)
    assert [t["name"] for t in traces] == [str(c) for c in classes]  # digits' class names
    # The legend toggles a class (one trace per class); the hover shows each point's index and label.
    assert all(t["legendgroup"] == t["name"] for t in traces)
    assert all(t["hovertemplate"] == f"index %{{customdata}}<br>label {t['name']}<extra></extra>" for t in traces)
    assert spec["layout"]["scene"]["dragmode"] == "turntable"  # not pan, which selection would impose
    coords, index, names = _points(spec)
    assert len(coords) == n and sorted(index) == sorted(emb["index"])  # every validation point, once
    labels_by_index = dict(zip(emb["index"], emb["labels"], strict=True))
    assert all(str(labels_by_index[i]) == name for i, name in zip(index, names, strict=True))
    # The default scale fits the unit ball: the PCA of μ, centred, divided by its largest radius.
    expected = _pca(emb["mu"])
    expected /= np.linalg.norm(expected, axis=1).max()
    got = _in_index_order(coords, index, n)[emb["index"]]
    _same_up_to_axis_signs(got, expected, 1e-4)
    assert np.linalg.norm(got, axis=1).max() == pytest.approx(1.0, abs=1e-5)
    assert any(f"{n:,} points · PCA took" in c and "(computed now)" in c for c in _captions(at))
    # The linked 2-D view shows the same layout's first two axes, with the same points.
    pick = _charts(at)["emb_pick"]
    assert {t["type"] for t in _class_traces(pick)} == {"scattergl"}
    flat, flat_index, _ = _points(pick, "xy")
    np.testing.assert_allclose(_in_index_order(flat, flat_index, n), _in_index_order(coords, index, n)[:, :2])

    # The second visit (a new session) reads the layout from the run's cache: same key, same points.
    again = _page(emb_run_a=str(path))
    view = again.session_state["emb_view"]
    assert view["from_cache"] == {run_id: True} and view["keys"] == {run_id: key}
    assert view["quality"][run_id] == pytest.approx(quality)
    coords2, index2, _ = _points(_charts_3d(again)[0])
    np.testing.assert_array_equal(_in_index_order(coords2, index2, n), _in_index_order(coords, index, n))
    assert any("(from the cache)" in c for c in _captions(again))


@pytest.mark.slow
def test_mds_is_computed_on_sight_and_fits_distances_better_than_pca(lab: dict[str, Path]) -> None:
    path = lab["cauchy"]
    shutil.rmtree(path / "projections", ignore_errors=True)
    emb = _embeddings(path)
    n, run_id = len(emb["mu"]), path.name
    at = _page(emb_run_a=str(path), emb_scale="none")
    pca, pca_index, _ = _points(_charts_3d(at)[0])
    at.radio(key="emb_method").set_value("mds")
    _rerun(at)
    view = at.session_state["emb_view"]
    assert view["method"] == "mds" and view["options"] == pj.method_options("mds")
    assert view["shown"] == [run_id] and view["from_cache"] == {run_id: False}
    assert not [b for b in at.button if b.key == "emb_compute"]  # no button: computed on sight
    assert (path / "projections" / f"mds-{view['keys'][run_id]}.safetensors").is_file()
    mds, mds_index, _ = _points(_charts_3d(at)[0])
    pca, mds = _in_index_order(pca, pca_index, n), _in_index_order(mds, mds_index, n)
    # Metric MDS (SMACOF from the classical start) lowers the raw stress against μ's distances.
    mu = emb["mu"][np.argsort(emb["index"])]
    assert _raw_stress(mu, mds) < 0.9 * _raw_stress(mu, pca)


@pytest.mark.slow
def test_tsne_waits_for_the_button_then_draws_and_is_cached(lab: dict[str, Path]) -> None:
    path = lab["cauchy"]
    shutil.rmtree(path / "projections", ignore_errors=True)
    emb = _embeddings(path)
    n, run_id = len(emb["mu"]), path.name
    at = _page(emb_run_a=str(path), emb_method="tsne")
    view = at.session_state["emb_view"]
    assert view["shown"] == [] and view["missing"] == [run_id] and not at.get("plotly_chart")
    assert any("t-SNE has not been computed" in i.value for i in at.info)
    assert not list((path / "projections").glob("tsne-*"))  # nothing computed yet
    [button] = [b for b in at.button if b.key == "emb_compute"]
    assert button.label == "Compute t-SNE for 1 run"

    button.click()
    _rerun(at)
    view = at.session_state["emb_view"]
    key = pj.projection_key("tsne", 3, 0, view["options"], "mu", emb["mu"])
    assert view["shown"] == [run_id] and view["from_cache"] == {run_id: False} and view["keys"] == {run_id: key}
    assert (path / "projections" / f"tsne-{key}.safetensors").is_file()
    coords, index, _ = _points(_charts_3d(at)[0])
    assert len(coords) == n and np.isfinite(coords).all() and sorted(index) == sorted(emb["index"])
    # t-SNE keeps classes together: its 10-NN label agreement is far above chance (0.1 for ten digits).
    assert view["quality"][run_id]["knn_agreement"] > 0.5

    _rerun(at)
    view = at.session_state["emb_view"]
    assert view["from_cache"] == {run_id: True} and not [b for b in at.button if b.key == "emb_compute"]


@pytest.mark.slow
def test_sphere_scale_and_hidden_outliers(lab: dict[str, Path]) -> None:
    path = lab["cauchy"]
    emb = _embeddings(path)
    n, run_id = len(emb["mu"]), path.name
    at = _page(emb_run_a=str(path))
    key = at.session_state["emb_view"]["keys"][run_id]
    raw = open_run(path).load_projection("pca", key)["coords"].numpy()

    at.selectbox(key="emb_scale").set_value("sphere")
    _rerun(at)
    coords, index, _ = _points(_charts_3d(at)[0])
    assert len(coords) == n
    np.testing.assert_allclose(np.linalg.norm(coords, axis=1), 1.0, atol=1e-4)

    at.slider(key="emb_hide_outliers").set_value(5.0)
    _rerun(at)
    hidden = round(0.05 * n)
    assert hidden > 0 and at.session_state["emb_view"]["points"] == {run_id: n - hidden}
    coords, index, _ = _points(_charts_3d(at)[0])
    assert len(coords) == n - hidden and np.isfinite(coords).all()
    np.testing.assert_allclose(np.linalg.norm(coords, axis=1), 1.0, atol=1e-4)
    # The hidden points are those farthest from the layout's coordinate-wise median.
    radius = np.linalg.norm(raw - np.median(raw, axis=0), axis=1)
    farthest = set(emb["index"][np.argsort(radius)[n - hidden:]].tolist())
    assert set(emb["index"].tolist()) - set(index.tolist()) == farthest
    flat, _, _ = _points(_charts(at)["emb_pick"], "xy")
    assert len(flat) == n - hidden  # the 2-D view hides the same points


# ---------------------------------------------------------------------------------------------------
# Picking a point


@pytest.mark.slow
def test_picking_searching_and_stepping_through_a_label(lab: dict[str, Path]) -> None:
    path = lab["cauchy"]
    emb = _embeddings(path)
    run_id = path.name
    at = _page(emb_run_a=str(path))
    assert at.session_state["emb_view"]["selected"] is None and "No point picked yet." in _captions(at)

    # A click in the 2-D chart selects the point; the detail is its reconstruction and latent neighbours.
    value = int(emb["index"][len(emb["index"]) // 3])
    _select(at, value)
    view = at.session_state["emb_view"]
    assert view["selected"] == value
    detail = view["detail"][run_id]
    assert {k: detail[k] for k in ("row", "index", "label", "neighbour_index")} == _expected_detail(path, value)
    assert detail["reconstruction_shape"] == [1, 8, 8] and detail["has_image"] is True
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert f"image · index {value}" in captions and "reconstruction, decoder(μ)" in captions
    assert len(captions) == 2 + NEIGHBOURS
    # Every chart marks the point and its neighbours.
    spec = _charts_3d(at)[0]
    marks = {t["name"]: t for t in spec["data"] if "legendgroup" not in t}
    coords, index, _ = _points(spec)
    [mine] = np.flatnonzero(index == value)
    np.testing.assert_allclose([_array(marks["selected"][a])[0] for a in "xyz"], coords[mine], rtol=1e-6)
    assert len(_array(marks["latent neighbours"]["x"])) == NEIGHBOURS

    # Search by validation index.
    target = int(emb["index"][7])
    at.number_input(key="emb_index").set_value(target)
    _rerun(at)
    at.button(key="emb_show_index").click()
    _rerun(at)
    assert at.session_state["emb_view"]["selected"] == target
    assert at.session_state["emb_view"]["detail"][run_id]["index"] == target
    # An index the run does not hold is refused with the count; the selection stays.
    at.number_input(key="emb_index").set_value(10**6)
    _rerun(at)
    at.button(key="emb_show_index").click()
    _rerun(at)
    assert any(f"index {10**6} is not among this run's {len(emb['index']):,} validation points" in w.value
               for w in at.warning)
    assert at.session_state["emb_view"]["selected"] == target

    # "Next point with this label" steps through that label's points in index order.
    label = int(emb["labels"][0])
    with_label = sorted(int(i) for i in emb["index"][emb["labels"] == label])
    at.selectbox(key="emb_label").set_value(label)
    _rerun(at)
    at.button(key="emb_next_label").click()
    _rerun(at)
    first = next((i for i in with_label if i > target), with_label[0])  # after the current one, else wraps
    assert at.session_state["emb_view"]["selected"] == first
    at.button(key="emb_next_label").click()
    _rerun(at)
    assert at.session_state["emb_view"]["selected"] == next((i for i in with_label if i > first), with_label[0])
    assert at.session_state["emb_view"]["detail"][run_id]["label"] == label

    at.button(key="emb_clear").click()
    _rerun(at)
    assert at.session_state["emb_view"]["selected"] is None and at.session_state["emb_view"]["detail"] == {}
    _rerun(at)  # the old 2-D selection does not come back
    assert at.session_state["emb_view"]["selected"] is None

    # The point first clicked can be picked again in the chart (deselected, then clicked) after a search.
    _deselect(at)
    assert at.session_state["emb_view"]["selected"] is None
    _select(at, value)
    assert at.session_state["emb_view"]["selected"] == value


# ---------------------------------------------------------------------------------------------------
# Two runs side by side; a study in a grid; the shared camera


def _eye(azimuth: float, elevation: float, distance: float) -> dict[str, float]:
    az, el = math.radians(azimuth), math.radians(elevation)
    return {"x": distance * math.cos(el) * math.cos(az), "y": distance * math.cos(el) * math.sin(az),
            "z": distance * math.sin(el)}


@pytest.mark.slow
def test_two_runs_side_by_side_share_the_camera_and_the_selection(lab: dict[str, Path]) -> None:
    a, b = lab["cauchy"], lab["mse"]
    at = _page(emb_mode="two", emb_run_a=str(a), emb_run_b=str(b))
    view = at.session_state["emb_view"]
    assert view["mode"] == "two" and view["shown"] == [a.name, b.name]
    charts = _charts_3d(at)
    assert len(charts) == 2
    assert [s["layout"]["title"]["text"] for s in charts] == [f"cauchy · {a.name}", f"mse · {b.name}"]
    for spec, path in zip(charts, (a, b), strict=True):
        coords, _, _ = _points(spec)
        assert len(coords) == len(_embeddings(path)["mu"])
    # The two runs' layouts differ (different models), but one camera turns both.
    assert not np.allclose(_points(charts[0])[0], _points(charts[1])[0])
    eyes = [s["layout"]["scene"]["camera"]["eye"] for s in charts]
    assert eyes[0] == eyes[1] and eyes[0] == pytest.approx(_eye(45, 25, 2.0))
    at.slider(key="emb_azimuth").set_value(90)
    _rerun(at)
    eyes = [s["layout"]["scene"]["camera"]["eye"] for s in _charts_3d(at)]
    assert eyes[0] == eyes[1] and eyes[0] == pytest.approx(_eye(90, 25, 2.0), abs=1e-12)
    at.toggle(key="emb_share_camera").set_value(False)
    _rerun(at)
    assert all("camera" not in s["layout"]["scene"] for s in _charts_3d(at))
    assert at.slider(key="emb_azimuth").disabled

    # One selection, shown for both runs (they embed the same validation split).
    value = int(_embeddings(a)["index"][5])
    _select(at, value)
    detail = at.session_state["emb_view"]["detail"]
    assert set(detail) == {a.name, b.name}
    for path in (a, b):
        got = detail[path.name]
        assert {k: got[k] for k in ("row", "index", "label", "neighbour_index")} == _expected_detail(path, value)
    assert detail[a.name]["neighbour_index"] != detail[b.name]["neighbour_index"]  # each run's own latents


@pytest.mark.slow
def test_a_study_in_a_grid(lab: dict[str, Path]) -> None:
    at = _page(emb_mode="grid")
    assert at.selectbox(key="emb_study").value == STUDY
    view = at.session_state["emb_view"]
    assert view["mode"] == "grid" and sorted(view["shown"]) == sorted([lab["cauchy"].name, lab["mse"].name])
    charts = _charts_3d(at)
    assert len(charts) == 2 and all(len(_points(s)[0]) == len(_embeddings(lab["cauchy"])["mu"]) for s in charts)
    eyes = [s["layout"]["scene"]["camera"]["eye"] for s in charts]
    assert eyes[0] == eyes[1] == pytest.approx(_eye(45, 25, 2.0))
    # In a grid the detail is shown for the run picked in, only.
    at.selectbox(key="emb_detail_run").set_value(str(lab["mse"]))
    _rerun(at)
    _select(at, 3)
    assert set(at.session_state["emb_view"]["detail"]) == {lab["mse"].name}


# ---------------------------------------------------------------------------------------------------
# The shipped study


def _snapshot(root: Path) -> dict[str, tuple[int, int, str]]:
    """Every path under root (folders too), with each file's size, modification time and digest."""
    def state(f: Path) -> tuple[int, int, str]:
        if not f.is_file():
            return (0, 0, "folder")
        return (f.stat().st_size, f.stat().st_mtime_ns, hashlib.sha256(f.read_bytes()).hexdigest())

    return {str(f.relative_to(root)): state(f) for f in sorted(root.rglob("*"))}


@pytest.mark.slow
def test_shipped_study_renders_in_a_grid_without_the_dataset_and_caches_outside_checkpoints(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    shipped = REPO / "checkpoints"
    runs = tmp_path / "runs"
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(runs))
    monkeypatch.setenv("ROBUST_LOSS_LAB_CHECKPOINTS", str(shipped))
    monkeypatch.setenv("ROBUST_LOSS_LAB_DATA", str(tmp_path / "data"))
    study_runs = sorted(p for p in shipped.iterdir() if (p / "config.json").is_file()
                        and json.loads((p / "config.json").read_text())["study"] == SHIPPED_STUDY)
    assert len(study_runs) == 7, f"the shipped study should hold 7 runs; found {[p.name for p in study_runs]}"
    before = _snapshot(shipped)
    # core.datasets reads every dataset file through this cache: if its counts do not move, the page read
    # no dataset at all (Debian's Fashion-MNIST folder is searched whatever ROBUST_LOSS_LAB_DATA says).
    reads_before = datasets._official.cache_info()

    at = _page(emb_mode="grid", emb_study=SHIPPED_STUDY)
    view = at.session_state["emb_view"]
    assert sorted(view["shown"]) == [p.name for p in study_runs]
    charts = _charts_3d(at)
    assert len(charts) == 7
    for spec, run_id in zip(charts, view["shown"], strict=True):
        emb = _embeddings(shipped / run_id)
        coords, index, _ = _points(spec)
        assert len(coords) == len(emb["mu"]) == view["points"][run_id] and sorted(index) == sorted(emb["index"])
        assert [t["name"] for t in _class_traces(spec)] == FASHION_CLASSES
        assert np.linalg.norm(coords, axis=1).max() == pytest.approx(1.0, abs=1e-5)

    pick = view["shown"][0]
    value = int(_embeddings(shipped / pick)["index"][11])
    _select(at, value)
    detail = at.session_state["emb_view"]["detail"]
    assert set(detail) == {pick}
    assert {k: detail[pick][k] for k in ("row", "index", "label", "neighbour_index")} == _expected_detail(
        shipped / pick, value)
    assert detail[pick]["has_image"] is True and detail[pick]["reconstruction_shape"] == [1, 28, 28]
    captions = [img.caption for el in at.get("image") for img in el.proto.imgs]
    assert f"image · index {value}" in captions and len(captions) == 2 + NEIGHBOURS
    assert datasets._official.cache_info() == reads_before

    # The layouts are cached under the runs root, never in checkpoints/.
    assert _snapshot(shipped) == before
    cached = sorted(p.relative_to(runs).parts[:2] for p in runs.glob(".shipped-cache/*/projections/pca-*.safetensors"))
    assert cached == [(".shipped-cache", p.name) for p in study_runs]
    again = _page(emb_mode="grid", emb_study=SHIPPED_STUDY)
    assert all(again.session_state["emb_view"]["from_cache"].values())
    assert _snapshot(shipped) == before
