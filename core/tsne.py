"""t-SNE in torch, fast in 3-D: exact attraction on a k-NN graph, sampled far-field repulsion.

    perplexity_affinities(points, perplexity) -> (neighbours (n, k), edge weights (n, k))
    tsne(points, dims=3, perplexity=30, ...) -> (coords (n, dims), info)

t-SNE (van der Maaten & Hinton 2008) minimises KL(P ‖ Q) with q_ij = w_ij / Z, w_ij = 1 / (1 + ‖y_i − y_j‖²),
Z = Σ_{k≠l} w_kl. Its gradient splits into attraction and repulsion:

    ∂C/∂y_i = 4 [ Σ_j p_ij w_ij (y_i − y_j)  −  (1/Z) Σ_j w_ij² (y_i − y_j) ]

P: each point's Gaussian over its k = 3·perplexity nearest neighbours, bandwidth found by bisection so
the entropy is log(perplexity), symmetrised p_ij = (p_{j|i} + p_{i|j}) / 2n. The attraction is sparse
and computed exactly over the k-NN edges (each directed edge pulls both ends, which sums to the
symmetric P without building it).

The repulsion touches all n² pairs. scikit-learn and openTSNE use Barnes-Hut trees (slow in 3-D: BENCHMARKS.md
measures scikit-learn's) or FFT interpolation (2-D only in practice). Here it is split in two:

- near field, exact: the same k-NN edges, where w_ij is largest and a sample would be noisiest;
- far field, sampled: m points drawn uniformly each iteration and shared by every point (one dense
  (n, m) block), the k-NN and the point itself excluded, each weighted n/m. The estimates of
  Σ_{j ∉ kNN(i)} w_ij² (y_i − y_j) and of Z are unbiased; what remains is noise, which gradient descent
  with momentum averages out.

Every step is a handful of dense tensor operations on (dims, n, k + m) arrays: O(n (k + m)) per
iteration instead of O(n log n) tree walks, the same code on a GPU. Below `exact_below` points the
repulsion is computed exactly over all pairs. The optimiser is the standard one (momentum 0.5 → 0.8,
per-coordinate gains, early exaggeration 12, learning rate max(n / 12 / 4, 50) as in Belkina et al. 2019),
initialised from PCA scaled to standard deviation 1e-4 (Kobak & Berens 2019).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from core.callbacks import OnProgress
from core.mds import classical_mds_points
from core.neighbourhood import as_tensor, knn

__all__ = ["TSNE_INITS", "perplexity_affinities", "tsne"]

TSNE_INITS = ("pca", "random")


def perplexity_affinities(points: torch.Tensor, perplexity: float = 30.0, k: int | None = None
                          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Each point's k nearest neighbours and p_{j|i} / 2n, so that P = A + Aᵀ sums to 1.

    p_{j|i} = exp(−β_i d_ij²) / Σ_l exp(−β_i d_il²) over i's k neighbours, β_i by bisection on log β
    until the entropy H_i = log Σ e^{−β d²} + β Σ p d² equals log(perplexity).
    """
    n = points.shape[0]
    if not 1.0 <= perplexity <= n - 1:
        raise ValueError(f"perplexity must be between 1 and n − 1 = {n - 1} (it is the effective number of "
                         f"neighbours); got {perplexity}")
    k = min(n - 1, k or max(round(3 * perplexity), 1))
    d2, index = knn(points, k)
    d2 = (d2 - d2[:, :1]).double()  # shifting by the nearest distance leaves p_{j|i} unchanged
    target = math.log(perplexity)
    # Bracket log β around the scale of the distances, then bisect: 60 halvings of a width-60 bracket.
    scale = d2.mean(1, keepdim=True).clamp_min(1e-12)
    lo = -torch.log(scale) - 30.0
    hi = -torch.log(scale) + 30.0
    for _ in range(60):
        mid = (lo + hi) / 2
        beta = mid.exp()
        p = torch.exp(-d2 * beta)
        s = p.sum(1, keepdim=True)
        entropy = torch.log(s) + beta * (d2 * p).sum(1, keepdim=True) / s
        too_wide = entropy > target  # too many effective neighbours: sharpen (raise β)
        lo = torch.where(too_wide, mid, lo)
        hi = torch.where(too_wide, hi, mid)
    p = torch.exp(-d2 * ((lo + hi) / 2).exp())
    p /= p.sum(1, keepdim=True)
    return index, (p / (2 * n)).float()


def _init(points: torch.Tensor, dims: int, init: str, seed: int) -> torch.Tensor:
    if init == "pca":
        y = classical_mds_points(points, dims)
        std = y[:, 0].std()
        return y / (std if std > 0 else 1.0) * 1e-4
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(points.shape[0], dims, generator=g) * 1e-4).to(points.device)


def tsne(points: np.ndarray | torch.Tensor, dims: int = 3, seed: int = 0, *, perplexity: float = 30.0,
         n_iter: int = 750, early_exaggeration: float = 12.0, early_iter: int = 250,
         learning_rate: float | str = "auto", negatives: int = 64, exact_below: int = 500, init: str = "pca",
         device: torch.device | str | None = None, progress: OnProgress | None = None,
         progress_every: int = 25) -> tuple[torch.Tensor, dict]:
    """t-SNE of `points` (n, d) into `dims` dimensions; returns (coords (n, dims), info).

    negatives: far-field samples per iteration (m), shared by every point;
    exact_below: below this many points the repulsion is exact. Deterministic for a seed on the CPU
    (a GPU's atomic adds may change the last bits).
    """
    if init not in TSNE_INITS:
        raise ValueError(f"unknown t-SNE init {init!r}; use one of {', '.join(TSNE_INITS)}")
    if min(n_iter, negatives) < 1:
        raise ValueError(f"n_iter and negatives must be ≥ 1; got {n_iter}, {negatives}")
    x = as_tensor(points, device)
    n = x.shape[0]
    if n < 4:
        raise ValueError(f"t-SNE needs at least 4 points; got {n}")
    dev = x.device
    if progress is not None:
        progress(0.0, "t-SNE: nearest neighbours and affinities")
    nbr, a = perplexity_affinities(x, perplexity)
    k = nbr.shape[1]
    flat_nbr = nbr.reshape(-1)
    y = _init(x, dims, init, seed).to(dev).T.contiguous()  # (dims, n): one contiguous row per axis
    lr = max(n / early_exaggeration / 4.0, 50.0) if learning_rate == "auto" else float(learning_rate)
    early_iter = min(early_iter, n_iter // 3)
    exact = n < exact_below
    update = torch.zeros_like(y)
    gains = torch.ones_like(y)
    g = torch.Generator(device=dev).manual_seed(seed)
    m = min(negatives, n)
    weight = n / m  # each point is in the sample with probability m / n
    in_sample = torch.zeros(n, device=dev)
    for it in range(n_iter):
        exaggeration = early_exaggeration if it < early_iter else 1.0
        momentum = 0.5 if it < early_iter else 0.8
        diff = y[:, :, None] - y.index_select(1, flat_nbr).view(dims, n, k)  # (dims, n, k)
        w = diff.square().sum(0).add_(1.0).reciprocal_()  # (n, k)
        aw = a * w
        if exact:
            full = y[:, :, None] - y[:, None, :]  # (dims, n, n)
            wf = full.square().sum(0).add_(1.0).reciprocal_()
            wf.fill_diagonal_(0.0)
            z = wf.sum()
            force = (diff * (aw * exaggeration)).sum(2) - (full * wf.square_()).sum(2) / z
        else:
            # One sample S of m points shared by every point this iteration: a dense (n, m) block.
            sample = torch.randperm(n, device=dev, generator=g)[:m]
            ys = y[:, sample]  # (dims, m)
            sq = y.square().sum(0)
            ws = torch.addmm(sq[:, None] + sq[sample][None, :], y.T, ys, alpha=-2.0)
            ws = ws.clamp_min_(0.0).add_(1.0).reciprocal_()  # (n, m)
            in_sample.zero_()[sample] = 1.0
            hit = in_sample[nbr]  # (n, k): which k-NN edges the sample also drew (counted exactly already)
            w_hit = w * hit
            w2 = ws.square()
            # Σ_{s ∈ S \ (kNN ∪ self)} w², w²(y_i − y_s), w: the block minus the k-NN and self entries.
            far_z = ws.sum() - in_sample.sum() - w_hit.sum()
            far = y * w2.sum(1) - (w2 @ ys.T).T - (diff * w_hit.square()).sum(2)
            z = w.sum() + weight * far_z
            force = (diff * (aw * exaggeration - w.square() / z)).sum(2) - far * (weight / z)
        # Each directed edge i→j pulls j towards i as well: P = A + Aᵀ without building Aᵀ.
        force.index_add_(1, flat_nbr, (diff * aw.mul_(-exaggeration)).view(dims, -1))
        grad = force.mul_(4.0)
        same_sign = (update * grad) >= 0
        gains = torch.where(same_sign, gains * 0.8, gains + 0.2).clamp_min_(0.01)
        update = update.mul_(momentum).sub_(lr * gains * grad)
        y += update
        if progress is not None and ((it + 1) % progress_every == 0 or it == n_iter - 1):
            progress((it + 1) / n_iter, f"t-SNE iteration {it + 1}/{n_iter}")
    y = y.T.contiguous()
    return y - y.mean(0, keepdim=True), {"iterations": n_iter, "neighbours": k, "exact_repulsion": exact,
                                         "negatives": 0 if exact else m, "learning_rate": lr}
