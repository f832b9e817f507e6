"""core.embeddings_view without Streamlit: the camera and the view it gives, the picked point's state machine,
which layouts depend on their seed, the caption's point count, and the run cache reading each file once."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from core import compare
from core import embeddings_view as ev
from core import projections as pj
from core.runs import Run

REPO = Path(__file__).resolve().parents[1]
SHIPPED_RUN = REPO / "checkpoints" / "fashion-mnist-reference-cauchy-z16-s0"


def test_camera_puts_the_eye_at_the_angles_and_distance() -> None:
    eye = ev.camera(30, 20, 2.0)["eye"]
    az, el = math.radians(30), math.radians(20)
    assert (eye["x"], eye["y"], eye["z"]) == pytest.approx(
        (2 * math.cos(el) * math.cos(az), 2 * math.cos(el) * math.sin(az), 2 * math.sin(el)))
    assert math.dist((0, 0, 0), (eye["x"], eye["y"], eye["z"])) == pytest.approx(2.0)


def test_camera_view_is_an_orthographic_picture_from_the_eye() -> None:
    rng = np.random.default_rng(0)
    coords = rng.normal(size=(200, 3))
    flat, depth = ev.camera_view(coords, 45, 25)
    centred = coords - coords.mean(0)
    # Distances within the screen plane plus depth² give back the 3-D distances: an orthonormal basis.
    full = np.concatenate([flat, depth[:, None]], axis=1)
    np.testing.assert_allclose(np.linalg.norm(full, axis=1), np.linalg.norm(centred, axis=1), rtol=1e-10)
    # A point towards the eye is nearer (smaller depth) and, seen from straight above, x and y are the
    # screen's axes up to a turn; from the front (azimuth 0, elevation 0) the screen shows y to the right, z up.
    eye = ev.camera(45, 25, 1.0)["eye"]
    towards = np.array([[eye["x"], eye["y"], eye["z"]], [0.0, 0.0, 0.0], [-eye["x"], -eye["y"], -eye["z"]]])
    _, d = ev.camera_view(towards, 45, 25)
    assert d[0] < d[1] < d[2]
    flat, _ = ev.camera_view(np.array([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0], [1.0, 0.0, 0.0]]), 0, 0)
    flat -= flat[2]
    np.testing.assert_allclose(flat[:2], [[1.0, 0.0], [0.0, 1.0]], atol=1e-12)
    hidden = coords.copy()
    hidden[3] = np.nan
    flat, depth = ev.camera_view(hidden, 10, 10)
    assert np.isnan(flat[3]).all() and np.isnan(depth[3]) and np.isfinite(flat[np.arange(200) != 3]).all()


def test_point_picker_counts_a_click_once_and_searches_and_steps_through_a_label() -> None:
    index = np.array([5, 3, 9, 12, 7])
    labels = np.array([0, 1, 0, 1, 0])
    picker = ev.PointPicker()
    assert picker.click(9, index) and picker.selected == 9
    assert not picker.click(9, index)  # the chart still holds the click: it counts once
    assert picker.show_index(3, index) is None and picker.selected == 3
    assert not picker.click(9, index) and picker.selected == 3  # the old click does not come back
    assert picker.click(None, index) is False and picker.last_click is None  # the chart's selection emptied
    assert picker.click(9, index) and picker.selected == 9  # the same point, clicked again, is new
    assert picker.show_index(4, index) == "index 4 is not among this run's 5 validation points"
    assert picker.selected == 9
    assert not picker.click(4, index) and picker.selected == 9  # not a point of this run
    picker.next_with_label(0, index, labels)  # label 0 holds 5, 7, 9: after 9, wrap to 5
    assert picker.selected == 5
    picker.next_with_label(0, index, labels)
    assert picker.selected == 7
    assert picker.row_in(index) == 4 and picker.row_in(np.array([1, 2])) is None
    picker.clear()
    assert picker.selected is None and picker.row_in(index) is None
    picker.next_with_label(1, index, labels)
    assert picker.selected == 3
    event = {"selection": {"points": [{"curve_number": 0, "customdata": 12.0}]}}
    assert ev.picked_index(event) == 12 and ev.picked_index({"selection": {"points": []}}) is None
    assert ev.picked_index(None) is None and ev.picked_index({"selection": {"points": [{"customdata": [7]}]}}) == 7


def test_only_layouts_that_draw_at_random_take_a_seed() -> None:
    assert not ev.uses_seed("pca", "z") and not ev.uses_seed("pca", "z_q")
    assert ev.uses_seed("pca", pj.SAMPLE) and ev.uses_seed("mds", "z") and ev.uses_seed("tsne", "z")
    # A PCA spec ignores the seed it is given, as its cache key does.
    assert ev.LayoutSpec.of("pca", seed=7) == ev.LayoutSpec.of("pca", seed=0)
    assert ev.LayoutSpec.of("tsne", seed=7) != ev.LayoutSpec.of("tsne", seed=0)
    assert ev.LayoutSpec.of("mds", {"max_iter": 10}).options == pj.method_options("mds", {"max_iter": 10})


def test_caption_counts_the_points_shown(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    coords = np.random.default_rng(1).normal(size=(100, 3)).astype(np.float32)
    proj = pj.Projection(coords, np.zeros(100, dtype=np.int64), np.arange(100), "pca", {}, 3, 0, "z", "k", 0.25,
                         True, {"trustworthiness": 0.9, "knn_agreement": 0.5, "latent_knn_agreement": 0.6})
    shown = ev.visible_count(pj.display_coords(coords, "ball", 0.2))
    assert shown == 80
    assert ev.layout_caption(proj, shown, "pca").startswith("80 of 100 points (20 hidden) · PCA took 0.2 s")
    assert ev.layout_caption(proj, 100, "pca").startswith("100 points · PCA")
    assert ev.layout_caption(proj, shown, "pca", short=True) == (
        "80 of 100 points (20 hidden) · trustworthiness 0.900 · 10-NN agreement 0.500")


def test_run_cache_reads_each_file_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUST_LOSS_LAB_RUNS", str(tmp_path / "runs"))
    run = tmp_path / "run"
    shutil.copytree(SHIPPED_RUN, run)
    shutil.rmtree(run / "projections", ignore_errors=True)
    reads: list[str] = []
    load = Run._load_tensors
    monkeypatch.setattr(Run, "_load_tensors", staticmethod(lambda file: reads.append(Path(file).name) or load(file)))
    computed = []
    compute = pj.compute
    monkeypatch.setattr(pj, "compute", lambda *a, **k: computed.append(a[1]) or compute(*a, **k))
    cache, stamp = ev.RunCache(), compare.fingerprint([run])
    spec = ev.LayoutSpec.of("pca", measure=False)
    first = cache.layout(run, stamp, spec, compute=True)
    assert first is not None and computed == ["pca"] and reads == ["embeddings.safetensors"]
    for _ in range(3):
        assert cache.layout(run, stamp, spec) is first and cache.embeddings(run, stamp) is cache.embeddings(run, stamp)
    assert computed == ["pca"] and reads == ["embeddings.safetensors"]
    # t-SNE is not in the cache: a look without compute=True computes nothing and remembers nothing.
    tsne = ev.LayoutSpec.of("tsne", measure=False)
    assert cache.layout(run, stamp, tsne) is None and computed == ["pca"]
    # Another process's cache file (a fresh RunCache) is read, not recomputed.
    assert ev.RunCache().layout(run, stamp, spec).from_cache and computed == ["pca"]
