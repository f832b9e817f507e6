"""Neighbourhoods: exact k nearest neighbours, and how well a projection keeps them.

    knn(points, k) -> (squared distances (n, k), indices (n, k))   exact, self excluded, chunked
    nearest_to(points, row, k) -> (indices (k,), distances (k,))   one query (the page's "neighbours")
    trustworthiness(high, low, k) -> float in [0, 1]
    knn_label_agreement(points, labels, k) -> float in [0, 1]

Shared with core/mds.py and core/tsne.py: `as_tensor`, `chunk_rows` (rows per chunk of an (n, n)
computation), `distances` and `squared_distances` (exact pairwise Euclidean distances).

Everything is exact and runs in torch, in row chunks, so memory stays O(chunk · n) and a GPU is used
when the tensors live on one. Rows holding NaN (points a projection hid) are left out of the
projection-side measures.
"""

from __future__ import annotations

import numpy as np
import torch

__all__ = ["as_tensor", "chunk_rows", "distances", "knn", "knn_label_agreement", "nearest_to", "squared_distances",
           "trustworthiness"]

# Rows per chunk for an (n, n) distance computation: about chunk · n · 4 bytes live at once.
CHUNK_BYTES = 64 * 2**20


def as_tensor(points: np.ndarray | torch.Tensor, device: torch.device | str | None = None,
              name: str = "points") -> torch.Tensor:
    """A float32 (n, d) tensor of `points`, checked: 2-D and finite."""
    x = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points)
    if x.ndim != 2:
        raise ValueError(f"{name} must be a 2-D array (n points, d dimensions); got shape {tuple(x.shape)}")
    x = x.to(device=device or x.device, dtype=torch.float32)
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} holds NaN or infinite values; drop or fix those rows first")
    return x


def chunk_rows(n: int, budget: int = CHUNK_BYTES) -> int:
    """Rows per chunk so that a (chunk, n) float32 block stays within `budget` bytes (at least 1)."""
    return max(1, min(n, budget // max(1, 4 * n)))


# Up to this many dimensions distances are summed from coordinate differences; above it, by the matrix
# product expansion, whose cancellation (‖a‖² + ‖b‖² − 2a·b) would blur the order of close points.
_DIRECT_DIMS = 8


def distances(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Euclidean distances (len(a), len(b))."""
    if a.shape[1] <= _DIRECT_DIMS:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist")
    return squared_distances(a, b, b_sq).sqrt_()


def squared_distances(a: torch.Tensor, b: torch.Tensor, b_sq: torch.Tensor | None = None) -> torch.Tensor:
    """Squared Euclidean distances (len(a), len(b)): from coordinate differences in few dimensions, else
    ‖a_i‖² + ‖b_j‖² − 2 a_i·b_j clamped at 0 (rounding can go below; centre the points first)."""
    if a.shape[1] <= _DIRECT_DIMS:
        return torch.cdist(a, b, compute_mode="donot_use_mm_for_euclid_dist").square_()
    b_sq = (b * b).sum(1) if b_sq is None else b_sq
    a_sq = (a * a).sum(1, keepdim=True)
    return torch.addmm(a_sq + b_sq[None, :], a, b.T, alpha=-2.0).clamp_min_(0.0)


def knn(points: torch.Tensor, k: int, chunk: int | None = None, rows: torch.Tensor | None = None
        ) -> tuple[torch.Tensor, torch.Tensor]:
    """The k nearest neighbours of every point (or of points[rows]), itself excluded, exactly.

    Returns squared distances (q, k) ascending and indices (q, k) int64 into `points`, on the points'
    device. Cost O(q n d) in matrix products of `chunk` query rows.
    """
    n = points.shape[0]
    if not 1 <= k < n:
        raise ValueError(f"k must be between 1 and n − 1 = {n - 1}; got {k}")
    query = torch.arange(n, device=points.device) if rows is None else rows.to(points.device)
    q = query.shape[0]
    chunk = chunk or chunk_rows(n)
    points = points - points.mean(0, keepdim=True)  # smaller norms, less cancellation
    sq = (points * points).sum(1)
    out_d = torch.empty(q, k, device=points.device)
    out_i = torch.empty(q, k, dtype=torch.long, device=points.device)
    for start in range(0, q, chunk):
        stop = min(q, start + chunk)
        d2 = squared_distances(points[query[start:stop]], points, sq)
        d2[torch.arange(stop - start, device=points.device), query[start:stop]] = float("inf")
        values, index = torch.topk(d2, k, dim=1, largest=False, sorted=True)
        out_d[start:stop] = values
        out_i[start:stop] = index
    return out_d, out_i


def _sample_rows(n: int, rows: int | None, seed: int, device: torch.device) -> torch.Tensor:
    """All rows, or `rows` of them drawn without replacement with `seed` (for an estimate)."""
    if rows is None or rows >= n:
        return torch.arange(n, device=device)
    if rows < 1:
        raise ValueError(f"rows must be at least 1 (or None for all); got {rows}")
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:rows].sort().values.to(device)


def nearest_to(points: np.ndarray | torch.Tensor, row: int, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k points nearest to points[row] (itself excluded): indices (k,) and Euclidean distances (k,)."""
    x = as_tensor(points)
    n = x.shape[0]
    if not 0 <= row < n:
        raise IndexError(f"row {row} is outside 0..{n - 1}")
    k = min(k, n - 1)
    d2 = ((x - x[row]) ** 2).sum(1)
    d2[row] = float("inf")
    values, index = torch.topk(d2, k, largest=False, sorted=True)
    return index.cpu().numpy(), values.sqrt().cpu().numpy()


def _finite_rows(low: np.ndarray | torch.Tensor) -> torch.Tensor:
    y = torch.as_tensor(np.asarray(low) if not isinstance(low, torch.Tensor) else low, dtype=torch.float32)
    if y.ndim != 2:
        raise ValueError(f"the projection must be 2-D (n, dims); got shape {tuple(y.shape)}")
    return torch.isfinite(y).all(1)


def trustworthiness(high: np.ndarray | torch.Tensor, low: np.ndarray | torch.Tensor, k: int = 10,
                    chunk: int | None = None, rows: int | None = None, seed: int = 0) -> float:
    """Venna & Kaski's trustworthiness of a projection: are its neighbours true neighbours?

        T(k) = 1 − 2 / (n k (2n − 3k − 1)) · Σ_i Σ_{j ∈ U_k(i)} (r(i, j) − k)

    U_k(i): the points among i's k nearest in the projection that are not among its k nearest in the
    original space; r(i, j): j's rank among i's neighbours in the original space (1 = nearest). 1 means
    every projected neighbourhood is a true one. The same value as scikit-learn's `trustworthiness`, in
    O(n² log n) time and O(chunk · n) memory (scikit-learn holds n² ranks). Rows of `low` with NaN
    (hidden points) are dropped from both sides first. rows: average over that many random points
    only (each still ranked against all n), an unbiased estimate in O(rows · n log n).
    """
    keep = _finite_rows(low)
    x = as_tensor(high, name="high")
    y = torch.as_tensor(np.asarray(low) if not isinstance(low, torch.Tensor) else low, dtype=torch.float32)
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"high has {x.shape[0]} rows but low has {y.shape[0]}; they must describe the same points")
    # ranks in the original space decide the score: float64 keeps close distances in order
    x, y = x[keep.to(x.device)].double(), y[keep].to(x.device)
    x = x - x.mean(0, keepdim=True)
    n = x.shape[0]
    if not 1 <= k < n / 2:
        raise ValueError(f"trustworthiness needs 1 ≤ k < n/2 = {n / 2:g}; got k = {k}")
    query = _sample_rows(n, rows, seed, x.device)
    q = query.shape[0]
    _, low_nn = knn(y, k, rows=query)
    chunk = chunk or chunk_rows(n)
    sq = (x * x).sum(1)
    penalty = 0.0
    for start in range(0, q, chunk):
        stop = min(q, start + chunk)
        d2 = squared_distances(x[query[start:stop]], x, sq)
        d2[torch.arange(stop - start, device=x.device), query[start:stop]] = -1.0  # self sorts first: rank 0
        target = d2.gather(1, low_nn[start:stop])
        ordered, _ = torch.sort(d2, dim=1)
        # r(i, j) = how many points (self included) are strictly closer to i than j is.
        rank = torch.searchsorted(ordered, target.contiguous(), right=False)
        penalty += (rank - k).clamp_min_(0).sum().item()
    return 1.0 - 2.0 / (q * k * (2.0 * n - 3.0 * k - 1.0)) * penalty


def knn_label_agreement(points: np.ndarray | torch.Tensor, labels: np.ndarray | torch.Tensor, k: int = 10,
                        rows: int | None = None, seed: int = 0) -> float:
    """Mean over points of the fraction of their k nearest neighbours that share their label.

        A(k) = 1/n · Σ_i 1/k · Σ_{j ∈ N_k(i)} [y_j = y_i]

    1 means classes form clean clusters; with c balanced classes mixed at random it is about 1/c.
    Rows with NaN (hidden points) are left out; rows: average over that many random points only.
    """
    keep = _finite_rows(points)
    y = torch.as_tensor(np.asarray(points) if not isinstance(points, torch.Tensor) else points, dtype=torch.float32)
    lab = torch.as_tensor(np.asarray(labels) if not isinstance(labels, torch.Tensor) else labels).reshape(-1)
    if lab.shape[0] != y.shape[0]:
        raise ValueError(f"{y.shape[0]} points but {lab.shape[0]} labels; give one label per point")
    y, lab = y[keep], lab[keep].to(y.device)
    if y.shape[0] <= k:
        raise ValueError(f"k = {k} needs more than {k} visible points; got {y.shape[0]}")
    query = _sample_rows(y.shape[0], rows, seed, y.device)
    _, index = knn(y, k, rows=query)
    return float((lab[index] == lab[query][:, None]).float().mean().item())
