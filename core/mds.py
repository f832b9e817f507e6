"""Multidimensional scaling that scales to 10,000+ points: classical, landmark, and metric (SMACOF).

    classical_mds(distances, dims)              from an (n, n) distance matrix (double centring): the textbook
                                                form, kept as the reference the tests hold the next one to
    classical_mds_points(points, dims)          the same for Euclidean points, in O(n d²)
    landmark_mds(points, dims, landmarks, seed) de Silva & Tenenbaum's landmark MDS, O(n m d)
    smacof(points, start, landmarks, ...)       metric MDS: stress majorisation from a start layout
    mds(points, dims, seed, start, ...)         classical (or landmark) start, then SMACOF
    normalized_stress(points, coords)           Kruskal's stress-1, exactly, in row chunks

Metric MDS minimises the raw stress σ(Z) = Σ_{i<j} (d_ij − ‖z_i − z_j‖)², d the distances between the
original points. SMACOF (de Leeuw) majorises σ by a quadratic and jumps to its minimum, the Guttman
transform Z ← (1/n) B(Z) Z with B_ij = −d_ij / ‖z_i − z_j‖ (i ≠ j), B_ii = −Σ_{j≠i} B_ij; each step
never increases σ. It needs all n² pairs, which is what makes scikit-learn's MDS take minutes at
5,000 points (BENCHMARKS.md). Here the pairs are restricted to (every point, m landmarks):

- the landmarks run the exact Guttman transform among themselves;
- every other point i takes the minimiser of its own majoriser against the landmarks,
  z_i ← (1/m) Σ_l [z_l + d_il (z_i − z_l) / ‖z_i − z_l‖],

and with the landmarks centred both updates are the same line of code: Z ← (R 1 ⊙ Z − R Z_L) / m with
R_il = d_il / ‖z_i − z_l‖ (0 for i = l). With m ≥ n it is exact SMACOF. Cost O(n m) per iteration
instead of O(n²), and m = 1,000 landmarks pin a 3-D position down far more than needed. The start
matters more than anything (facts: a random start keeps 0.49 of the 10-NN label agreement, the
classical start 0.94), so the default start is classical MDS, rescaled to fit the distances best.
"""

from __future__ import annotations

import numpy as np
import torch

from core.callbacks import OnProgress
from core.neighbourhood import as_tensor, chunk_rows, distances, squared_distances

__all__ = [
    "MDS_STARTS",
    "classical_mds",
    "classical_mds_points",
    "landmark_mds",
    "mds",
    "normalized_stress",
    "smacof",
]

MDS_STARTS = ("classical", "landmark", "random")


def _top_eigen(b: torch.Tensor, dims: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The `dims` largest eigenvalues (descending) and eigenvectors of a symmetric matrix, in float64."""
    values, vectors = torch.linalg.eigh(b.double())
    order = torch.argsort(values, descending=True)[:dims]
    return values[order], vectors[:, order]


def _sign_fix(coords: torch.Tensor) -> torch.Tensor:
    """Flip each axis so its largest-magnitude coordinate is positive: eigenvectors' signs are arbitrary,
    and a fixed convention makes the layout reproducible across machines and methods."""
    idx = coords.abs().argmax(0)
    signs = torch.sign(coords[idx, torch.arange(coords.shape[1], device=coords.device)])
    signs[signs == 0] = 1
    return coords * signs


def classical_mds(distances: np.ndarray | torch.Tensor, dims: int = 3) -> torch.Tensor:
    """Classical (Torgerson) MDS of an (n, n) distance matrix.

        B = −½ J D⁽²⁾ J,   J = I − 11ᵀ/n,   Z = V_k Λ_k^{1/2}   (k largest eigenpairs of B)

    Negative eigenvalues (non-Euclidean distances) are clipped to 0. O(n³): for a few thousand points.
    """
    d = torch.as_tensor(np.asarray(distances) if not isinstance(distances, torch.Tensor) else distances)
    if d.ndim != 2 or d.shape[0] != d.shape[1]:
        raise ValueError(f"distances must be a square (n, n) matrix; got shape {tuple(d.shape)}")
    d2 = d.double() ** 2
    b = d2 - d2.mean(0, keepdim=True) - d2.mean(1, keepdim=True) + d2.mean()
    values, vectors = _top_eigen(-0.5 * b, dims)
    return _sign_fix((vectors * values.clamp_min(0).sqrt()).float())


def classical_mds_points(points: torch.Tensor, dims: int = 3) -> torch.Tensor:
    """Classical MDS of Euclidean points without the n × n matrix.

    For Euclidean distances B = X_c X_cᵀ (X_c the centred points), so its top eigenvectors scaled by
    √λ are U_k S_k from the thin SVD X_c = U S Vᵀ: the principal-component scores. O(n d²).
    """
    xc = points - points.mean(0, keepdim=True)
    if xc.shape[0] > 4 * xc.shape[1]:
        # Eigen-decompose the small d × d covariance instead of the n × d SVD (faster, same axes).
        _values, vectors = _top_eigen(xc.T @ xc, dims)
        coords = xc.double() @ vectors
    else:
        u, s, _ = torch.linalg.svd(xc.double(), full_matrices=False)
        coords = u[:, :dims] * s[:dims]
    return _sign_fix(_pad(coords.float(), dims))


def _pad(coords: torch.Tensor, dims: int) -> torch.Tensor:
    """Zero columns when the data has fewer dimensions than asked for (e.g. 2-D points, 3-D view)."""
    if coords.shape[1] >= dims:
        return coords[:, :dims].contiguous()
    return torch.cat([coords, coords.new_zeros(coords.shape[0], dims - coords.shape[1])], 1)


def _landmarks(n: int, m: int, seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:m].sort().values.to(device)


def landmark_mds(points: torch.Tensor, dims: int = 3, landmarks: int = 1000, seed: int = 0) -> torch.Tensor:
    """Landmark MDS (de Silva & Tenenbaum 2004): classical MDS on m landmarks, the rest triangulated.

        Δ = squared distances among landmarks,  B = −½ J Δ J = V Λ Vᵀ,
        z_x = −½ Λ^{-1/2} Vᵀ (δ_x − δ̄)    δ_x: x's squared distances to the landmarks, δ̄: Δ's column mean

    O(n m d + m³). With m ≥ n it is classical MDS.
    """
    n = points.shape[0]
    m = min(n, max(dims + 1, landmarks))
    idx = _landmarks(n, m, seed, points.device)
    lm = points[idx]
    delta = squared_distances(lm, lm, (lm * lm).sum(1)).double()
    delta.fill_diagonal_(0.0)
    mean_col = delta.mean(0)
    b = -0.5 * (delta - mean_col[None, :] - delta.mean(1, keepdim=True) + delta.mean())
    values, vectors = _top_eigen(b, dims)
    keep = values > values[0] * 1e-9
    pinv = torch.zeros_like(vectors)
    pinv[:, keep] = vectors[:, keep] / values[keep].sqrt()
    out = torch.empty(n, dims, dtype=torch.float64, device=points.device)
    lm_sq = (lm * lm).sum(1)
    chunk = chunk_rows(m)
    for start in range(0, n, chunk):
        stop = min(n, start + chunk)
        dx = squared_distances(points[start:stop], lm, lm_sq).double()
        out[start:stop] = -0.5 * (dx - mean_col[None, :]) @ pinv
    return _sign_fix(out.float())


def _optimal_scale(dl: torch.Tensor, coords: torch.Tensor, lm_idx: torch.Tensor) -> float:
    """The factor a minimising Σ (d − a δ)² over the landmark pairs: a = Σ d δ / Σ δ². Classical MDS
    projects, so it shrinks every distance; this undoes most of it before SMACOF starts."""
    zl = coords[lm_idx]
    num = den = 0.0
    chunk = chunk_rows(lm_idx.numel())
    for start in range(0, coords.shape[0], chunk):
        delta = distances(coords[start:start + chunk], zl)
        num += float((dl[start:start + chunk] * delta).sum())
        den += float((delta * delta).sum())
    return num / den if den > 0 else 1.0


def smacof(points: torch.Tensor, start: torch.Tensor, *, landmarks: int = 1000, max_iter: int = 60,
           tol: float = 1e-4, seed: int = 0, progress: OnProgress | None = None,
           check_every: int = 5, block_bytes: int = 8 * 2**20) -> tuple[torch.Tensor, list[float], int]:
    """Metric MDS by stress majorisation from `start` (n, dims), with pairs restricted to m landmarks.

    Returns the layout, the normalised landmark stress √(Σ(d − δ)² / Σ d²) every `check_every`
    iterations, and the number of iterations run; stops early when the stress falls by less than
    `tol` (relative) between checks. `block_bytes`: the (rows, m) blocks are sized to stay in cache.
    """
    n = start.shape[0]
    device = points.device
    m = min(n, landmarks)
    lm = _landmarks(n, m, seed, device)
    lm_rows = torch.arange(m, device=device)
    x_lm = points[lm]
    x_lm_sq = (x_lm * x_lm).sum(1)
    dl = torch.empty(n, m, device=device)
    chunk = chunk_rows(m, block_bytes)
    for s in range(0, n, chunk):
        dl[s:s + chunk] = distances(points[s:s + chunk], x_lm, x_lm_sq)
    dl[lm, lm_rows] = 0.0
    dl_norm = float((dl * dl).sum())

    z = start.to(device=device, dtype=torch.float32).clone()
    z *= _optimal_scale(dl, z, lm)
    history: list[float] = []
    eps = 1e-12
    iterations = 0
    for it in range(max_iter):
        iterations = it + 1
        z -= z[lm].mean(0, keepdim=True)  # the Guttman transform's 1/n form needs centred landmarks
        zl = z[lm]
        zl_sq = (zl * zl).sum(1)
        new = torch.empty_like(z)
        measure = (it + 1) % check_every == 0 or it == max_iter - 1
        raw = 0.0
        for s in range(0, n, chunk):
            e = min(n, s + chunk)
            delta = distances(z[s:e], zl, zl_sq)
            d = dl[s:e]
            if measure:
                raw += float(((d - delta) ** 2).sum())
            ratio = torch.where(delta > eps, d / delta.clamp_min(eps), 0.0)
            new[s:e] = (ratio.sum(1, keepdim=True) * z[s:e] - ratio @ zl) / m
        z = new
        if measure:
            history.append((raw / dl_norm) ** 0.5 if dl_norm > 0 else 0.0)
            if progress is not None:
                progress((it + 1) / max_iter, f"SMACOF iteration {it + 1}/{max_iter}, stress {history[-1]:.4f}")
            if len(history) >= 2 and history[-2] - history[-1] < tol * history[-2]:
                break
    return z, history, iterations


def normalized_stress(points: np.ndarray | torch.Tensor, coords: np.ndarray | torch.Tensor,
                      chunk: int | None = None) -> float:
    """Kruskal's stress-1 over all pairs, √(Σ_{i<j} (d_ij − δ_ij)² / Σ_{i<j} d_ij²), in row chunks.
    0 is a perfect fit. NaN rows of `coords` (hidden points) are dropped."""
    z = torch.as_tensor(np.asarray(coords) if not isinstance(coords, torch.Tensor) else coords, dtype=torch.float32)
    keep = torch.isfinite(z).all(1)
    x = as_tensor(points)[keep.to(as_tensor(points).device)]
    z = z[keep].to(x.device)
    n = x.shape[0]
    chunk = chunk or chunk_rows(n, 32 * 2**20)
    x_sq, z_sq = (x * x).sum(1), (z * z).sum(1)
    num = den = 0.0
    for s in range(0, n, chunk):
        d = distances(x[s:s + chunk], x, x_sq)
        delta = distances(z[s:s + chunk], z, z_sq)
        num += float(((d - delta) ** 2).sum(dtype=torch.float64))
        den += float((d * d).sum(dtype=torch.float64))
    return (num / den) ** 0.5 if den > 0 else 0.0


def mds(points: np.ndarray | torch.Tensor, dims: int = 3, seed: int = 0, *, start: str = "classical",
        max_iter: int = 60, landmarks: int = 1000, tol: float = 1e-4, device: torch.device | str | None = None,
        progress: OnProgress | None = None) -> tuple[torch.Tensor, dict]:
    """Metric MDS of `points` into `dims` dimensions: a start layout, then `max_iter` SMACOF steps.

    start: "classical" (exact, via the SVD identity), "landmark" (landmark MDS on `landmarks` points)
    or "random" (what scikit-learn does by default; much worse, kept for comparison). max_iter = 0
    returns the start itself (classical MDS, unscaled). Returns (coords (n, dims), info).
    """
    if start not in MDS_STARTS:
        raise ValueError(f"unknown MDS start {start!r}; use one of {', '.join(MDS_STARTS)}")
    if max_iter < 0 or landmarks < dims + 1:
        raise ValueError(f"max_iter must be ≥ 0 and landmarks > dims; got {max_iter}, {landmarks}")
    x = as_tensor(points, device)
    x = x - x.mean(0, keepdim=True)  # distances do not change; the product expansion loses less
    n = x.shape[0]
    if n < 2:
        raise ValueError(f"MDS needs at least 2 points; got {n}")
    if progress is not None:
        progress(0.0, f"MDS: {start} start")
    if start == "classical":
        z0 = classical_mds_points(x, dims)
    elif start == "landmark":
        z0 = landmark_mds(x, dims, landmarks, seed)
    else:
        g = torch.Generator().manual_seed(seed)
        z0 = torch.randn(n, dims, generator=g).to(x.device)
    if max_iter == 0:
        return z0, {"stress_history": [], "iterations": 0, "landmarks": min(n, landmarks)}
    z, history, iterations = smacof(x, z0, landmarks=landmarks, max_iter=max_iter, tol=tol, seed=seed,
                                    progress=progress)
    return z, {"stress_history": history, "iterations": iterations, "landmarks": min(n, landmarks),
               "landmark_stress": history[-1] if history else None}
