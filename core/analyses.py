"""Evaluations of a finished run's representation, computed from its directory and cached with it
(`Run.save_evaluation`, evaluations/<name>.json + .safetensors): the VICReg course study's study, for any family whose
`embed` gives a representation z (a VICReg encoder's y, a VAE's μ, a VQ-VAE's z_e).

    results = analyse_run(run)          # computes what is missing or stale, reuses the rest
    python -m core.analyses RUN_DIR ... [--report vicreg.md]

Every probe is fitted on the TRAIN split (its first `bank` images, a fixed random class-balanced prefix)
and scored on the TEST split, as core.probes does. The evaluations (`EVALUATIONS`):

- "course-linear": the VICReg course's protocol beside the lab's probes (core.probes): a linear layer on the frozen,
  raw (unstandardised) representation, trained 10 epochs by Adam (lr 1e-3, batch 256, cross-entropy) on
  the whole training split (`linear_bank`; the course's CIFAR-10 probe took 1,960 steps: on a small split
  ten epochs are few steps and the probe underfits, which the lab's converged L-BFGS probe shows), its test
  accuracy after each epoch.
- "knn": k-NN classifiers two ways, so the difference the VICReg course discusses is measured: Euclidean distance on
  raw features with a majority vote (the course's set-up), and cosine similarity on L2-normalised features
  with exp(s/τ)-weighted votes (solo-learn's offline k-NN: k = 20, τ = 0.07), for several k.
- "anomaly": score(x) = mean Euclidean distance from z(x) to its k = 2 nearest training representations
  (an inverse density; the course's definition). In-distribution: the test split; out-of-distribution: the
  paired dataset (`OOD_PAIRINGS`: MNIST for CIFAR-10, resized to 32×32 in three channels; digits for
  Fashion-MNIST, resized to 28×28; Fashion-MNIST for digits, resized to 8×8), resized bilinearly
  (antialiased when shrinking), channels repeated or turned to gray. ROC AUC (scikit-learn) and the ROC
  curve; the most anomalous images (a gallery); score histograms. Because a cross-dataset pairing
  saturates near AUC 1.0, the harder pairing is reported beside it: per class c, one-vs-rest with c held
  out of the bank (the training representations of the other classes), test images of c as the
  anomalies, AUC per class and their mean.
- "neighbour-grid": one test image per class (seeded choice), its 5 nearest and 5 farthest training
  images in representation space (Euclidean), with distances; the images are stored with it.
- "eigenmaps": Laplacian eigenmaps (scikit-learn's SpectralEmbedding, a k-NN graph with its default
  n_neighbors = n/10) of the raw pixels of the run's first `eigen_n` validation images, the baseline
  drawn beside PCA and t-SNE of the representation of the same rows (core.representation_views). It has
  no out-of-sample transform, so it embeds exactly those images; with the 10-NN label agreement of the
  layout, of PCA of the pixels and of the representation itself.

A cached evaluation is reused while its settings and the run's weights (status step) are unchanged.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.nn import functional as F

from core.callbacks import OnMessage

__all__ = [
    "ANALYSIS_VERSION",
    "COURSE_FIGURES",
    "EVALUATIONS",
    "OOD_PAIRINGS",
    "AnalysisSettings",
    "analyse_run",
    "anomaly_scores",
    "class_holdout_auc",
    "course_report",
    "eigenmap",
    "fresh_evaluation",
    "knn_accuracy",
    "linear_probe_epochs",
    "machine_text",
    "main",
    "neighbour_grid_data",
    "ood_images",
    "report_rows",
    "resize_to",
    "roc",
    "variant_of",
]

ANALYSIS_VERSION = 1
EVALUATIONS = ("course-linear", "knn", "anomaly", "neighbour-grid", "eigenmaps")
# The out-of-distribution dataset each in-distribution dataset is tested against.
OOD_PAIRINGS = {"cifar10": "mnist", "fashion_mnist": "digits", "digits": "fashion_mnist", "mnist": "fashion_mnist",
                "kmnist": "fashion_mnist", "photos": "digits"}
# The VICReg course study's figures (CIFAR-10, ResNet-18, 30 epochs, 10-epoch linear probe; AUC CIFAR-10 vs MNIST).
COURSE_FIGURES = {"full": 0.7242, "no variance": 0.1758, "neighbours": 0.3491, "auc": 1.0}
GALLERY_STREAM = 0
ROC_POINTS = 256  # the stored ROC curve is thinned to about this many points
HISTOGRAM_BINS = 40



@dataclass(frozen=True)
class AnalysisSettings:
    """How the evaluations are made; stored with each, which is reused only for equal settings."""

    bank: int | None = 10000  # training images: the k-NN probes' and the anomaly score's bank, the grid's pool
    test: int | None = None  # test images (None: the whole test split)
    linear_bank: int | None = None  # the course's linear probe's training images (None: the whole split, as the course)
    linear_epochs: int = 10
    linear_lr: float = 1e-3
    linear_batch: int = 256
    linear_seed: int = 0
    knn_ks: tuple[int, ...] = (1, 5, 20, 200)
    knn_k: int = 20  # the k reported
    knn_tau: float = 0.07
    anomaly_k: int = 2
    ood_limit: int = 10000
    gallery: int = 16
    grid_near: int = 5
    grid_far: int = 5
    grid_seed: int = 0
    eigen_n: int = 2000
    eigen_dims: int = 3
    eigen_seed: int = 0
    version: int = ANALYSIS_VERSION

    def __post_init__(self) -> None:
        for name in ("bank", "test", "linear_bank"):
            value = getattr(self, name)
            if value is not None and value < 10:
                raise ValueError(f"{name} must be at least 10 images (or None for the whole split), got {value}")
        if self.linear_epochs < 1 or self.linear_batch < 1 or not self.linear_lr > 0:
            raise ValueError("linear_epochs and linear_batch must be at least 1 and linear_lr positive")
        if not self.knn_ks or min(self.knn_ks) < 1 or self.knn_k < 1 or not self.knn_tau > 0:
            raise ValueError(f"k-NN needs k ≥ 1 and τ > 0, got ks={self.knn_ks}, k={self.knn_k}, τ={self.knn_tau}")
        if self.anomaly_k < 1 or self.gallery < 0 or self.grid_near < 1 or self.grid_far < 0:
            raise ValueError("anomaly_k and grid_near must be at least 1; gallery and grid_far at least 0")
        if self.eigen_n < 10 or self.eigen_dims not in (2, 3):
            raise ValueError(f"eigen_n must be at least 10 and eigen_dims 2 or 3, got {self.eigen_n}, "
                             f"{self.eigen_dims}")

    def to_json(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(self).items()}


# ---------------------------------------------------------------------------------------------------
# The measures (tensors in, numbers out)


def linear_probe_epochs(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor,
                        classes: int, *, epochs: int = 10, lr: float = 1e-3, batch: int = 256, seed: int = 0) -> dict:
    """The VICReg course study's linear probe: nn.Linear on the raw representation, Adam, cross-entropy, `epochs` passes
    in seeded random order. Test accuracy (and cross-entropy) after each epoch; the last is reported."""
    torch.manual_seed(seed)
    head = torch.nn.Linear(train_z.shape[1], classes)
    opt = torch.optim.Adam(head.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    by_epoch = []
    x, y = train_z.float(), train_y.long()
    for _ in range(epochs):
        order = torch.randperm(len(x), generator=gen)
        for start in range(0, len(x), batch):
            idx = order[start : start + batch]
            loss = F.cross_entropy(head(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        with torch.no_grad():
            logits = head(test_z.float())
            by_epoch.append({"accuracy": float((logits.argmax(1) == test_y).float().mean()),
                             "cross_entropy": float(F.cross_entropy(logits, test_y.long()))})
    return {"features": "raw representation", "optimizer": "adam", "lr": lr, "batch": batch, "epochs": epochs,
            "seed": seed, "accuracy_by_epoch": [e["accuracy"] for e in by_epoch], **by_epoch[-1]}


def _chunks(n: int, width: int, budget: int = 32 * 2**20) -> int:
    return max(1, min(n, budget // max(1, 4 * width)))


def knn_accuracy(train_z: torch.Tensor, train_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor,
                 classes: int, ks: Sequence[int], metric: str = "euclidean", tau: float = 0.07) -> dict[str, float]:
    """Test accuracy of k-NN classifiers for each k. "euclidean": raw features, majority vote (ties go to
    the class of the nearer neighbours); "cosine": L2-normalised features, votes weighted exp(s/τ)."""
    if metric not in ("euclidean", "cosine"):
        raise ValueError(f"metric must be euclidean or cosine, got {metric!r}")
    from core.neighbourhood import squared_distances

    ks = sorted({min(int(k), len(train_z)) for k in ks})
    bank, query = train_z.float(), test_z.float()
    if metric == "cosine":
        bank, query = F.normalize(bank, dim=1), F.normalize(query, dim=1)
    else:
        centre = bank.mean(0, keepdim=True)  # smaller norms, less cancellation in the expansion
        bank, query = bank - centre, query - centre
    one_hot = F.one_hot(train_y.long(), classes).float()
    correct = dict.fromkeys(ks, 0)
    bank_sq = (bank * bank).sum(1)
    step = _chunks(len(query), len(bank))
    for start in range(0, len(query), step):
        q, y = query[start : start + step], test_y[start : start + step]
        if metric == "cosine":
            score, idx = (q @ bank.T).topk(ks[-1], dim=1)
            weights = torch.exp((score - 1.0) / tau)
        else:
            _, idx = squared_distances(q, bank, bank_sq).topk(ks[-1], dim=1, largest=False)
            # a vote each, and a tie broken towards the class of the nearer neighbours
            weights = 1.0 + 1e-6 * torch.linspace(1.0, 0.0, ks[-1]).expand(len(q), -1)
        for k in ks:
            votes = torch.einsum("qk,qkc->qc", weights[:, :k], one_hot[idx[:, :k]])
            correct[k] += int((votes.argmax(1) == y).sum())
    n = max(1, len(query))
    return {str(k): correct[k] / n for k in ks}


def anomaly_scores(bank: torch.Tensor, query: torch.Tensor, k: int = 2, *, exclude_self: bool = False) -> torch.Tensor:
    """Mean Euclidean distance from each query row to its k nearest bank rows (query ⊂ bank: exclude_self)."""
    from core.neighbourhood import squared_distances

    bank, query = bank.float(), query.float()
    centre = bank.mean(0, keepdim=True)
    bank, query = bank - centre, query - centre
    bank_sq = (bank * bank).sum(1)
    out = torch.empty(len(query))
    step = _chunks(len(query), len(bank))
    for start in range(0, len(query), step):
        d2 = squared_distances(query[start : start + step], bank, bank_sq)
        if exclude_self:
            rows = torch.arange(d2.shape[0])
            d2[rows, rows + start] = float("inf")
        out[start : start + step] = d2.topk(k, dim=1, largest=False).values.sqrt().mean(1)
    return out


def roc(scores_in: torch.Tensor, scores_out: torch.Tensor) -> dict[str, Any]:
    """ROC AUC with the out-of-distribution images as positives (a higher score: more anomalous), and the
    curve (false and true positive rates)."""
    from sklearn.metrics import roc_auc_score, roc_curve

    truth = np.concatenate([np.zeros(len(scores_in)), np.ones(len(scores_out))])
    scores = np.concatenate([scores_in.numpy(), scores_out.numpy()]).astype(np.float64)
    fpr, tpr, _ = roc_curve(truth, scores)
    return {"auc": float(roc_auc_score(truth, scores)), "fpr": fpr, "tpr": tpr}


def _thin(fpr: np.ndarray, tpr: np.ndarray, points: int = ROC_POINTS) -> tuple[np.ndarray, np.ndarray]:
    """The ROC curve at about `points` points (its ends kept) for storing and drawing."""
    if len(fpr) <= points:
        return fpr, tpr
    keep = np.unique(np.round(np.linspace(0, len(fpr) - 1, points)).astype(int))
    return fpr[keep], tpr[keep]


def class_holdout_auc(bank_z: torch.Tensor, bank_y: torch.Tensor, test_z: torch.Tensor, test_y: torch.Tensor,
                      classes: int, k: int = 2) -> list[float | None]:
    """Per class c: AUC of the k-NN anomaly score against a bank without class c, test images of c as the
    anomalies and the other test images as normal (one-vs-rest with c held out). None when a side is empty."""
    from sklearn.metrics import roc_auc_score

    out: list[float | None] = []
    for c in range(classes):
        keep = bank_y != c
        positives = test_y == c
        if keep.sum() < k or positives.all() or not positives.any():
            out.append(None)
            continue
        scores = anomaly_scores(bank_z[keep], test_z, k)
        out.append(float(roc_auc_score(positives.numpy(), scores.numpy())))
    return out


def resize_to(images: torch.Tensor, shape: Sequence[int]) -> torch.Tensor:
    """uint8 (n, c, h, w) images as uint8 (n, C, H, W): bilinear resizing (antialiased when shrinking),
    one channel repeated to three, or three turned to gray (core.augment.grayscale) for one."""
    from core.augment import grayscale

    c, h, w = (int(v) for v in shape)
    x = images.float() / 255.0
    if tuple(x.shape[2:]) != (h, w):
        x = F.interpolate(x, size=(h, w), mode="bilinear", align_corners=False,
                          antialias=h < x.shape[2] or w < x.shape[3])
    if x.shape[1] != c:
        x = x.expand(-1, c, -1, -1) if x.shape[1] == 1 else grayscale(x)
    return (x.clamp(0, 1) * 255).round().to(torch.uint8)


def neighbour_grid_data(bank_z: torch.Tensor, bank_y: torch.Tensor, query_z: torch.Tensor, query_y: torch.Tensor,
                        classes: int, near: int = 5, far: int = 5, seed: int = 0) -> dict[str, torch.Tensor]:
    """One query per class (the first of that class in a seeded order of the queries): the rows of its
    `near` nearest and `far` farthest bank points (Euclidean), nearest first / farthest first, and their
    distances. Returns query (C,), near (C, near), far (C, far), near_d, far_d; classes absent are skipped."""
    order = torch.randperm(len(query_z), generator=torch.Generator().manual_seed(seed))
    rows = []
    for c in range(classes):
        hits = order[query_y[order] == c]
        if len(hits):
            rows.append(int(hits[0]))
    query = torch.tensor(rows, dtype=torch.int64)
    d = torch.cdist(query_z[query].double(), bank_z.double())
    near_d, near_i = d.topk(min(near, d.shape[1]), dim=1, largest=False)
    far_d, far_i = d.topk(min(far, d.shape[1]), dim=1, largest=True)
    return {"query": query, "near": near_i, "far": far_i, "near_d": near_d.float(), "far_d": far_d.float()}


def eigenmap(images: torch.Tensor, dims: int = 3, seed: int = 0) -> tuple[np.ndarray, dict]:
    """Laplacian eigenmaps of raw pixels (uint8 (n, ...) scaled to [0, 1]): scikit-learn's SpectralEmbedding
    with its nearest-neighbour graph (n_neighbors = max(n/10, 1)). Returns coords (n, dims) and info."""
    from sklearn.manifold import SpectralEmbedding

    x = images.reshape(len(images), -1).float().numpy() / 255.0
    started = time.perf_counter()
    model = SpectralEmbedding(n_components=dims, affinity="nearest_neighbors", random_state=seed, n_jobs=1)
    coords = model.fit_transform(x).astype(np.float32)
    return coords, {"seconds": time.perf_counter() - started, "n_neighbors": int(model.n_neighbors_),
                    "affinity": "nearest_neighbors", "n": len(x)}


# ---------------------------------------------------------------------------------------------------
# A run


def _step(run: Any) -> int | None:
    step = run.status().get("step")
    return int(step) if isinstance(step, int) else None


def fresh_evaluation(run: Any, name: str, settings: AnalysisSettings) -> tuple[dict, dict[str, torch.Tensor]] | None:
    """The run's cached evaluation `name` if made with `settings` on its current weights, else None."""
    hit = run.evaluation(name)
    if hit is None:
        return None
    results, tensors = hit
    if results.get("settings") != settings.to_json() or results.get("model_step") != _step(run):
        return None
    return results, tensors


def ood_images(dataset: str, shape: Sequence[int], limit: int) -> tuple[str, torch.Tensor] | None:
    """The out-of-distribution images paired with `dataset` (its test split first, then its others), resized
    to `shape`; None when there is no pairing or its files are absent."""
    from core import datasets

    other = OOD_PAIRINGS.get(dataset)
    if other is None:
        return None
    parts = []
    try:
        for split in ("test", "val", "train"):
            if sum(len(p) for p in parts) >= limit:
                break
            parts.append(datasets.load_split(other, split).images)
    except (datasets.DatasetMissing, datasets.DatasetFormatError):
        return None
    images = torch.cat(parts)[:limit]
    return other, resize_to(images, shape)


@dataclass
class _Encoded:
    """What the evaluations share: the splits' images and labels, and their representations (`train_*`
    the bank, the first `bank` training images; `linear_*` the course probe's, the first `linear_bank`)."""

    train_images: torch.Tensor
    train_z: torch.Tensor
    train_y: torch.Tensor
    test_images: torch.Tensor
    test_z: torch.Tensor
    test_y: torch.Tensor
    classes: list[str]
    linear_z: torch.Tensor
    linear_y: torch.Tensor


def _encode(run: Any, settings: AnalysisSettings, say: OnMessage) -> tuple[_Encoded, Any, Any]:
    from core.datasets import load_split
    from core.families import family_of, load_objective

    family, objective = family_of(run.config), load_objective(run)
    dataset = run.config["dataset"]
    bank, linear = settings.bank, settings.linear_bank
    # The training split is a fixed order, so the first N of the larger set are the smaller one: embed once.
    most = None if bank is None or linear is None else max(bank, linear)
    say("embedding the train and test splits")
    train = load_split(dataset, "train", limit=most)
    test = load_split(dataset, "test", limit=settings.test)
    z = family.embed(objective, train.images)["z"]
    b, lin = len(z) if bank is None else bank, len(z) if linear is None else linear
    enc = _Encoded(train.images[:b], z[:b], train.labels[:b], test.images, family.embed(objective, test.images)["z"],
                   test.labels, train.classes, z[:lin], train.labels[:lin])
    return enc, family, objective


def _anomaly(run: Any, enc: _Encoded, family: Any, objective: Any, s: AnalysisSettings
             ) -> tuple[dict, dict[str, torch.Tensor]]:
    dataset = run.config["dataset"]
    classes = len(enc.classes)
    per_class = class_holdout_auc(enc.train_z, enc.train_y, enc.test_z, enc.test_y, classes, s.anomaly_k)
    valid = [a for a in per_class if a is not None]
    results: dict[str, Any] = {"k": s.anomaly_k, "score": f"mean Euclidean distance to the {s.anomaly_k} nearest "
                               "training representations", "in": dataset, "n_in": len(enc.test_z),
                               "class_auc": per_class, "class_auc_mean": float(np.mean(valid)) if valid else None,
                               "class_pairing": f"{dataset}: per class, held out of the bank, against the other "
                                                f"classes' test images"}
    tensors: dict[str, torch.Tensor] = {}
    ood = ood_images(dataset, tuple(enc.test_images.shape[1:]), s.ood_limit)
    if ood is None:
        other = OOD_PAIRINGS.get(dataset)
        results.update(out=other, auc=None, why=(f"no out-of-distribution dataset is paired with {dataset}" if other
                                                 is None else f"{other} is not found here (python -m core.datasets "
                                                                f"download {other})"))
        return results, tensors
    other, images = ood
    scores_in = anomaly_scores(enc.train_z, enc.test_z, s.anomaly_k)
    scores_out = anomaly_scores(enc.train_z, family.embed(objective, images)["z"], s.anomaly_k)
    curve = roc(scores_in, scores_out)
    fpr, tpr = _thin(curve["fpr"], curve["tpr"])
    c, h, w = enc.test_images.shape[1:]
    src_shape = "x".join(map(str, images.shape[1:]))
    results.update(out=other, auc=curve["auc"], n_out=len(images),
                   pairing=f"{dataset} test split (normal) against {other} resized to {c}×{h}×{w} (anomalies)",
                   resized_shape=src_shape)
    everything = torch.cat([scores_in, scores_out])
    top = everything.argsort(descending=True)[: s.gallery]
    pool = torch.cat([enc.test_images, images])
    edges = torch.linspace(float(everything.min()), float(everything.max()), HISTOGRAM_BINS + 1)
    tensors.update({"fpr": torch.from_numpy(fpr).float(), "tpr": torch.from_numpy(tpr).float(),
                    "gallery": pool[top], "gallery_scores": everything[top],
                    "gallery_is_out": (top >= len(scores_in)).to(torch.uint8),
                    "gallery_labels": torch.cat([enc.test_y, torch.full((len(images),), -1)])[top],
                    "histogram_edges": edges,
                    "histogram_in": torch.histc(scores_in, HISTOGRAM_BINS, float(edges[0]), float(edges[-1])),
                    "histogram_out": torch.histc(scores_out, HISTOGRAM_BINS, float(edges[0]), float(edges[-1]))})
    results["scores_in_mean"], results["scores_out_mean"] = float(scores_in.mean()), float(scores_out.mean())
    return results, tensors


def _grid(enc: _Encoded, s: AnalysisSettings) -> tuple[dict, dict[str, torch.Tensor]]:
    data = neighbour_grid_data(enc.train_z, enc.train_y, enc.test_z, enc.test_y, len(enc.classes), s.grid_near,
                               s.grid_far, s.grid_seed)
    q, near, far = data["query"], data["near"], data["far"]
    results = {"metric": "euclidean", "classes": enc.classes, "query_labels": enc.test_y[q].tolist(),
               "near_labels": enc.train_y[near].tolist(), "far_labels": enc.train_y[far].tolist(),
               "near_distances": data["near_d"].tolist(), "far_distances": data["far_d"].tolist(),
               "near_same_class": float((enc.train_y[near] == enc.test_y[q][:, None]).float().mean()),
               "far_same_class": float((enc.train_y[far] == enc.test_y[q][:, None]).float().mean())
               if far.numel() else None}
    tensors = {"query_images": enc.test_images[q], "near_images": enc.train_images[near],
               "far_images": enc.train_images[far], "query_index": q}
    return results, tensors


def _eigenmaps(run: Any, s: AnalysisSettings) -> tuple[dict, dict[str, torch.Tensor]]:
    from core.datasets import load_split
    from core.neighbourhood import knn_label_agreement
    from core.projections import compute

    emb = run.embeddings()
    n = min(s.eigen_n, len(emb["z"]))
    index = emb["index"][:n]
    images = emb.get("images")
    if images is None:
        images = load_split(run.config["dataset"], "val").images[index]
    images = images[:n]
    coords, info = eigenmap(images, s.eigen_dims, s.eigen_seed)
    labels = emb["labels"][:n]
    pixels = images.reshape(n, -1).float() / 255.0
    pca_pixels, _ = compute(pixels, "pca", s.eigen_dims, device="cpu")
    agreement = {"eigenmaps_of_pixels": knn_label_agreement(coords, labels.numpy(), 10, rows=None),
                 "pca_of_pixels": knn_label_agreement(pca_pixels, labels.numpy(), 10, rows=None),
                 "representation": knn_label_agreement(emb["z"][:n].float(), labels.numpy(), 10, rows=None)}
    results = {**info, "dims": s.eigen_dims, "knn_label_agreement": agreement,
               "rows": f"the first {n} validation embeddings (their images' raw pixels)"}
    return results, {"coords": torch.from_numpy(coords), "index": index, "labels": labels}


def analyse_run(run: Any, settings: AnalysisSettings | None = None, *, force: bool = False,
                only: Sequence[str] | None = None, progress: OnMessage | None = None, save: bool = True
                ) -> dict[str, dict]:
    """Every evaluation of a finished run (`only` a subset of EVALUATIONS): reused from its cache when
    fresh, else computed (the splits embedded once for all) and saved with the run."""
    s = settings or AnalysisSettings()
    names = list(only or EVALUATIONS)
    unknown = sorted(set(names) - set(EVALUATIONS))
    if unknown:
        raise ValueError(f"unknown evaluation(s) {', '.join(unknown)}; choose from {', '.join(EVALUATIONS)}")
    say = progress or (lambda _m: None)
    out: dict[str, dict] = {}
    missing = []
    for name in names:
        hit = None if force else fresh_evaluation(run, name, s)
        if hit is None:
            missing.append(name)
        else:
            out[name] = hit[0]
    if not missing:
        return out
    state = run.status().get("state")
    if state != "finished" or not run.has_embeddings:
        raise ValueError(f"run {run.run_id} is {state!r}; its evaluations need a finished run")
    from core.runs import now_iso

    meta = {"format": "robust-loss-lab/evaluation", "settings": s.to_json(), "model_step": _step(run),
            "run_id": run.run_id}
    enc = family = objective = None
    if set(missing) - {"eigenmaps"}:
        enc, family, objective = _encode(run, s, say)
    for name in missing:
        started = time.perf_counter()
        say(f"{name}")
        tensors: dict[str, torch.Tensor] = {}
        if name == "course-linear":
            results = linear_probe_epochs(enc.linear_z, enc.linear_y, enc.test_z, enc.test_y, len(enc.classes),
                                          epochs=s.linear_epochs, lr=s.linear_lr, batch=s.linear_batch,
                                          seed=s.linear_seed)
            results["n_linear_train"] = len(enc.linear_z)
        elif name == "knn":
            results = {"k": s.knn_k, "tau": s.knn_tau}
            for metric in ("euclidean", "cosine"):
                by_k = knn_accuracy(enc.train_z, enc.train_y, enc.test_z, enc.test_y, len(enc.classes),
                                    sorted({*s.knn_ks, s.knn_k}), metric, s.knn_tau)
                results[metric] = {"by_k": by_k, "accuracy": by_k[str(min(s.knn_k, len(enc.train_z)))],
                                   "features": "raw" if metric == "euclidean" else "L2-normalised",
                                   "vote": "majority" if metric == "euclidean" else f"exp(s/{s.knn_tau:g})"}
        elif name == "anomaly":
            results, tensors = _anomaly(run, enc, family, objective, s)
        elif name == "neighbour-grid":
            results, tensors = _grid(enc, s)
        else:
            results, tensors = _eigenmaps(run, s)
        results = {**meta, "name": name, "created": now_iso(), "seconds": round(time.perf_counter() - started, 3),
                   **({"n_train": len(enc.train_z), "n_test": len(enc.test_z)} if enc is not None else {}), **results}
        if save:
            try:
                run.save_evaluation(name, results, tensors or None)
            except OSError as exc:  # a read-only place: the numbers are still returned
                say(f"{name} not cached ({exc})")
        out[name] = results
    return {name: out[name] for name in names}


# ---------------------------------------------------------------------------------------------------
# The course's study: which variant a run is, and the report against the course's figures


def variant_of(config: dict) -> str:
    """"full", "no variance", "neighbours", "neighbours, no variance" for a VICReg run; else its family."""
    if config.get("family") != "vicreg":
        return str(config.get("family", "vae"))
    parts = []
    if config.get("views") == "neighbours":
        parts.append("neighbours")
    if float(config.get("var_weight", 25.0)) == 0:
        parts.append("no variance")
    return ", ".join(parts) or "full"


def _pct(value: Any) -> str:
    return f"{100 * value:.1f} %" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def _num(value: Any, digits: int = 3) -> str:
    return f"{value:.{digits}f}" if isinstance(value, (int, float)) and math.isfinite(value) else "–"


def course_report(rows: list[dict], machine: str = "", level: int = 1) -> str:
    """Markdown: one row per run (its evaluations and lab probes) against the VICReg course's figures, and the lab's
    question (does a robust invariance loss help?) answered from the numbers. `rows`: {"run_id", "config",
    "evaluations", "probes" (core.probes.summary), "history" (epoch records)}. `level`: the heading level."""
    from core.families.recon import loss_label

    head = "#" * level
    lines = [f"{head} VICReg against the VICReg course study", ""]
    if machine:
        lines += [f"Machine: {machine}", ""]
    lines += ["The VICReg course study (CIFAR-10, ResNet-18, 30 epochs, 10-epoch linear probe): full VICReg "
              f"{_pct(COURSE_FIGURES['full'])}, no variance term {_pct(COURSE_FIGURES['no variance'])}, "
              "neighbours as views "
              f"{_pct(COURSE_FIGURES['neighbours'])}; AUC CIFAR-10 vs MNIST ≈ 1.0 for both models.", "",
              "| run | variant | invariance loss | course linear (10 ep) | course figure | lab linear | lab k-NN "
              "| k-NN "
              "Euclidean raw | k-NN cosine | AUC (pairing) | AUC per class held out | embedding std | rank | "
              "warning |", "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    measures: dict[str, dict[str, dict[str, float | None]]] = {}  # variant -> loss -> measure -> value
    for row in rows:
        ev, cfg, probes = row.get("evaluations") or {}, row["config"], row.get("probes") or {}
        variant = variant_of(cfg)
        linear = (ev.get("course-linear") or {}).get("accuracy")
        knn = ev.get("knn") or {}
        anomaly = ev.get("anomaly") or {}
        last = (row.get("history") or [{}])[-1]
        course_figure = COURSE_FIGURES.get(variant)
        auc = anomaly.get("auc")
        pairing = f"{_num(auc)} ({anomaly.get('in')} vs {anomaly.get('out')})" if auc is not None else \
            f"– ({anomaly.get('why', 'not computed')})"
        warning = row.get("warning") or ""
        lines.append(f"| {row['run_id']} | {variant} | {loss_label(cfg)} | {_pct(linear)} | {_pct(course_figure)} | "
                     f"{_pct(probes.get('linear_acc'))} | {_pct(probes.get('knn_acc'))} | "
                     f"{_pct((knn.get('euclidean') or {}).get('accuracy'))} | "
                     f"{_pct((knn.get('cosine') or {}).get('accuracy'))} | {pairing} | "
                     f"{_num(anomaly.get('class_auc_mean'))} | {_num(last.get('embedding_std'))} | "
                     f"{_num(last.get('embedding_rank'), 1)} | {warning} |")
        measures.setdefault(variant, {})[loss_label(cfg)] = {
            "course linear": linear, "lab linear": probes.get("linear_acc"),
            "k-NN cosine": (knn.get("cosine") or {}).get("accuracy"), "AUC per class": anomaly.get("class_auc_mean")}
    lines += ["", f"{head}# Does a robust invariance loss help?", "",
              "Each variant's runs against its MSE run (differences in points; AUC in hundredths):", "",
              "| variant | invariance loss | course linear | lab linear | k-NN cosine | AUC per class held out |",
              "| --- | --- | --- | --- | --- | --- |"]
    verdicts = []
    for variant, by_loss in measures.items():
        base = by_loss.get("MSE")
        if base is None or len(by_loss) < 2:
            continue
        for name, values in by_loss.items():
            cells = []
            for key, value in values.items():
                ref = base.get(key)
                if name == "MSE" or not isinstance(value, (int, float)) or not isinstance(ref, (int, float)):
                    cells.append(_pct(value) if key != "AUC per class" else _num(value))
                else:
                    cells.append(f"{_pct(value) if key != 'AUC per class' else _num(value)} "
                                 f"({100 * (value - ref):+.1f})")
            lines.append(f"| {variant} | {name} | " + " | ".join(cells) + " |")
        better = [name for name, values in by_loss.items() if name != "MSE" and
                  sum(isinstance(v, (int, float)) and isinstance(base.get(k), (int, float)) and v > base[k]
                      for k, v in values.items()) >= 3]
        verdicts.append(f"- {variant}: " + (f"{', '.join(better)} beat MSE on at least three of the four measures."
                                            if better else "no robust loss beats MSE on three of the four measures."))
    lines += ["", *verdicts, "", "One seed per run: differences of a point or two are within what a second seed "
              "would move (re-run with --seeds 0,1,2 for error bars)."]
    return "\n".join(lines) + "\n"


def report_rows(runs: Sequence[Any], settings: AnalysisSettings | None = None, *, compute: bool = True,
                progress: OnMessage | None = None) -> list[dict]:
    """The rows `course_report` takes, for finished runs (their evaluations computed when `compute`)."""
    from core.probes import summary

    rows = []
    for run in runs:
        if run.status().get("state") != "finished":
            continue
        if compute:
            evaluations = analyse_run(run, settings, progress=progress)
        else:
            evaluations = {n: hit[0] for n in EVALUATIONS if (hit := run.evaluation(n)) is not None}
        rows.append({"run_id": run.run_id, "config": run.config, "evaluations": evaluations,
                     "probes": summary(run.probes()), "history": run.history("epoch"),
                     "warning": run.status().get("warning")})
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m core.analyses RUN_DIR ...`: compute (or reuse) every evaluation, print the numbers and
    optionally write the report against the VICReg course study."""
    from core.cli import threads

    p = argparse.ArgumentParser(prog="python -m core.analyses",
                                description="The VICReg course's evaluations of finished runs (linear probe, "
                                "k-NN, anomaly AUC, neighbour grids, eigenmaps); cached with each run.")
    p.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR")
    p.add_argument("--bank", type=int, default=AnalysisSettings.bank, metavar="N",
                   help="training images for the probes and banks (0: all)")
    p.add_argument("--test", type=int, default=0, metavar="N", help="test images (0: all)")
    p.add_argument("--report", type=Path, default=None, metavar="FILE", help="write the markdown report here")
    p.add_argument("--force", action="store_true", help="recompute even what is cached")
    p.add_argument("--threads", type=threads, default=None, help="CPU threads for torch")
    args = p.parse_args(argv)
    from core.runs import RunFormatError, open_run

    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        settings = AnalysisSettings(bank=args.bank or None, test=args.test or None)
    except ValueError as exc:
        print(f"core.analyses: {exc}", file=sys.stderr)
        return 2
    status, runs = 0, []
    for path in args.runs:
        try:
            run = open_run(path)
            results = analyse_run(run, settings, force=args.force,
                                  progress=lambda m, r=path.name: print(f"{r}: {m}", file=sys.stderr, flush=True))
        except (RunFormatError, ValueError, OSError) as exc:
            print(f"core.analyses: {path}: {exc}", file=sys.stderr)
            status = 2
            continue
        runs.append(run)
        anomaly = results["anomaly"]
        print(f"{run.run_id}  course-linear {_pct(results['course-linear']['accuracy'])}  k-NN euclidean "
              f"{_pct(results['knn']['euclidean']['accuracy'])} cosine {_pct(results['knn']['cosine']['accuracy'])}  "
              f"AUC {_num(anomaly.get('auc'))} ({anomaly.get('in')} vs {anomaly.get('out')})  per class "
              f"{_num(anomaly.get('class_auc_mean'))}", flush=True)
    if args.report is not None and runs:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(course_report(report_rows(runs, settings), machine_text()), encoding="utf-8")
        print(f"wrote {args.report}", file=sys.stderr)
    return status


def machine_text() -> str:
    """The machine in a line: CPU model and cores, torch and its threads, the GPU if any."""
    import os
    import platform

    cpu = platform.processor() or "CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    gpu = f", GPU {torch.cuda.get_device_name(0)}" if torch.cuda.is_available() else ", no GPU"
    return (f"{cpu}, {os.cpu_count()} cores{gpu}, torch {torch.__version__} with {torch.get_num_threads()} "
            f"thread(s), load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
