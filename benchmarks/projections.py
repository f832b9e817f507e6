"""Time and quality of the 3-D projections against scikit-learn's MDS and TSNE, in one process.

    python benchmarks/projections.py [--sizes 2000 5000 10000] [--threads 2] [--device cpu|cuda]
                                     [--sklearn-mds-max 5000] [--sklearn-tsne-max 10000] [--data fashion|mixture]

The points are 128-dimensional embeddings of real images: Fashion-MNIST's 10,000 test images
(Debian's `dataset-fashion-mnist`, or wherever core.datasets finds it) reduced to their first 128
principal components, labelled by class. Without Fashion-MNIST (or with --data mixture) a mixture of
ten Gaussian clusters in 128 dimensions stands in, and the report says so.

For each size n (the first n points) every method runs once, interleaved with scikit-learn's
(machine noise hits both alike), and prints:
  seconds       wall time of the layout alone;
  trust         trustworthiness at k = 10 (Venna & Kaski; scikit-learn's definition), over 2,000 rows;
  10-NN agree   the fraction of each point's 10 nearest neighbours in the layout sharing its label;
  stress        Kruskal's stress-1 over all pairs (MDS only: what metric MDS minimises);
  ratio         scikit-learn's seconds / ours.
scikit-learn's MDS needs n² memory and minutes (about 160 s at 5,000 here, 15 min at 10,000), so it
runs up to --sklearn-mds-max points only; it is started from the classical solution, its best case.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core import projections as pj
from core.mds import normalized_stress

EMBEDDING_DIMS = 128
QUALITY_ROWS = 2000


def fashion_embeddings(n: int) -> tuple[np.ndarray, np.ndarray, str] | None:
    """Fashion-MNIST test images as their first 128 principal-component scores, or None if not installed."""
    from core.datasets import DatasetMissing, load_split

    try:
        images = load_split("fashion_mnist", "test")
    except DatasetMissing:
        return None
    x = images.images[:n].reshape(min(n, len(images)), -1).float() / 255.0
    x = x - x.mean(0, keepdim=True)
    _, _, vt = torch.linalg.svd(x, full_matrices=False)
    points = (x @ vt[:EMBEDDING_DIMS].T).numpy().astype(np.float32)
    return points, images.labels[:n].numpy(), "Fashion-MNIST test images, first 128 principal components"


def mixture(n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, str]:
    """Ten Gaussian clusters in 128 dimensions, centres N(0, 1) per coordinate, unit noise."""
    g = np.random.default_rng(seed)
    centres = g.normal(0.0, 1.0, (10, EMBEDDING_DIMS))
    labels = np.arange(n) % 10
    return ((centres[labels] + g.normal(0.0, 1.0, (n, EMBEDDING_DIMS))).astype(np.float32), labels,
            "a mixture of 10 Gaussian clusters in 128 dimensions (synthetic)")


def timed(fn, *args):
    """(fn(*args), wall seconds), the GPU synchronised before the clock stops."""
    start = time.perf_counter()
    out = fn(*args)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return out, time.perf_counter() - start


def quality(points: np.ndarray, coords: np.ndarray, labels: np.ndarray, stress: bool) -> dict[str, float]:
    q = pj.projection_quality(points, coords, labels, rows=QUALITY_ROWS)
    if stress:
        q["stress"] = normalized_stress(points, coords)
    return q


def ours(points: np.ndarray, method: str, device: str) -> np.ndarray:
    coords, _ = pj.compute(points, method, 3, 0, device=device)
    return coords


def sklearn_mds(points: np.ndarray) -> np.ndarray:
    """MDS (SMACOF, classical start)"""
    from sklearn.manifold import MDS

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return MDS(n_components=3, metric_mds=True, n_init=1, init="classical_mds", random_state=0
                   ).fit_transform(points.astype(np.float64))


def sklearn_tsne(points: np.ndarray) -> np.ndarray:
    """TSNE (Barnes-Hut, 3-D)"""
    from sklearn.manifold import TSNE

    return TSNE(n_components=3, init="pca", random_state=0).fit_transform(points)


def row(name: str, n: int, seconds: float, q: dict[str, float], ratio: str = "") -> str:
    stress = f"{q['stress']:.3f}" if "stress" in q else "–"
    return (f"| {name} | {n:,} | {seconds:.2f} | {q['trustworthiness']:.3f} | {q['knn_agreement']:.3f} | "
            f"{stress} | {ratio} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 10000])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--sklearn-mds-max", type=int, default=5000)
    parser.add_argument("--sklearn-tsne-max", type=int, default=10000)
    parser.add_argument("--data", default="fashion", choices=("fashion", "mixture"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    top = max(args.sizes)
    data = fashion_embeddings(top) if args.data == "fashion" else None
    points_all, labels_all, what = data if data is not None else mixture(top)
    device = args.device
    gpu = torch.cuda.get_device_name() if device == "cuda" else "no GPU used"
    print(f"# {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads, {gpu}; "
          f"torch {torch.__version__}")
    print(f"# points: {what}")
    if device == "cuda":  # the first CUDA call pays for context creation; keep it out of the timings
        pj.compute(points_all[:500], "tsne", 3, 0, device=device, n_iter=30)
    print("| method | n | seconds | trust | 10-NN agree | stress | scikit-learn's time / ours |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for n in args.sizes:
        points, labels = points_all[:n], labels_all[:n]
        latent = pj.projection_quality(points, points, labels, rows=QUALITY_ROWS)["knn_agreement"]
        print(f"| (the 128-d points themselves) | {n:,} | – | 1.000 | {latent:.3f} | 0 | |")
        # (name, our method, scikit-learn's counterpart or None, its size limit, measure the stress)
        for name, method, baseline, limit, stress in (
            ("PCA (= classical MDS)", "pca", None, 0, True),
            ("metric MDS (classical start, landmark SMACOF)", "mds", sklearn_mds, args.sklearn_mds_max, True),
            ("t-SNE (k-NN attraction, sampled repulsion)", "tsne", sklearn_tsne, args.sklearn_tsne_max, False),
        ):
            coords, ours_seconds = timed(ours, points, method, device)
            print(row(f"ours: {name}", n, ours_seconds, quality(points, coords, labels, stress)), flush=True)
            if baseline is None:
                continue
            title = f"scikit-learn {baseline.__doc__}"
            if n > limit:
                print(f"| {title} | {n:,} | not run (n² memory, minutes) | | | | |")
                continue
            coords, seconds = timed(baseline, points)
            print(row(title, n, seconds, quality(points, coords, labels, stress), f"{seconds / ours_seconds:.1f}×"),
                  flush=True)

if __name__ == "__main__":
    main()
