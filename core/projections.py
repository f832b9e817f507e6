"""Projections of a run's latent space to 2-D or 3-D: PCA, metric MDS and t-SNE, cached with the run.

    project(points, method, dims=3, seed=0, scale="none", hide_outliers=0.0, **options) -> (n, dims)
    compute(points, method, dims, seed, **options) -> (coords, info)      the raw layout, no display options
    display_coords(coords, scale, hide_outliers) -> (n, dims)             hidden points are NaN rows
    embedding_points(embeddings, source, seed) -> (n, d)                  z (μ), z_q, or a sample z = μ + σ ε
    key_points(embeddings, source, seed) -> (n, d')                       what the cache key hashes
    run_projection(run, method, ...) -> Projection                        cached as projections/<method>-<key>
    projection_quality(points, coords, labels) -> {trustworthiness, knn_agreement, ...}

Methods (their options, with defaults, in METHOD_OPTIONS):
- "pca": principal components (the same layout as classical MDS on Euclidean data). No options.
- "mds": metric MDS, SMACOF from the classical solution over 1,000 landmarks (core/mds.py).
- "tsne": t-SNE with exact k-NN attraction and sampled far-field repulsion (core/tsne.py).

Display options are applied after the (cached) layout, so changing them costs nothing: `scale`
"ball" fits the visible points into the unit ball, "sphere" puts each one on the unit sphere (its
direction from the centre), as the reference robust-loss VAE study showed its MDS plots;
`hide_outliers` hides that fraction of points farthest from the layout's median. Hidden rows become
NaN, so rows still line up with labels.

The cache key hashes the method, its options (defaults filled in), dims, seed, the embedding source and
the embedding values themselves, so a retrained run never serves a stale layout.
"""

from __future__ import annotations

import hashlib
import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from core.callbacks import OnProgress
from core.device import resolve_device
from core.mds import MDS_STARTS, classical_mds_points, mds
from core.neighbourhood import as_tensor, knn_label_agreement, trustworthiness
from core.tsne import TSNE_INITS, tsne

__all__ = [
    "METHODS",
    "METHOD_OPTIONS",
    "SAMPLE",
    "SCALES",
    "Projection",
    "compute",
    "display_coords",
    "embedding_points",
    "key_points",
    "method_options",
    "outlier_mask",
    "project",
    "projection_key",
    "projection_quality",
    "run_projection",
    "sources",
]

METHODS = ("pca", "mds", "tsne")
SCALES = ("none", "ball", "sphere")
# What can be projected: "z", the representation (a VAE's μ, a VQ-VAE's z_e), "sample", a VAE's
# z = μ + σε, and any other representation a family embeds (a VQ-VAE's "z_q").
SAMPLE = "sample"
# The name each source is hashed under in cache keys: run format 1 called z "mu", and a layout cached then
# is still found.
_KEY_NAMES = {"z": "mu"}
KEY_VERSION = 1  # bump when a method's output for the same options changes

# Each method's options: name -> (default, type, check, what it means). `method_options` fills and checks.
METHOD_OPTIONS: dict[str, dict[str, tuple[Any, type, Callable[[Any], bool], str]]] = {
    "pca": {},
    "mds": {
        "start": ("classical", str, lambda v: v in MDS_STARTS, f"one of {', '.join(MDS_STARTS)}"),
        "max_iter": (60, int, lambda v: 0 <= v <= 10_000, "SMACOF iterations, 0 to 10,000"),
        "landmarks": (1000, int, lambda v: 4 <= v <= 20_000, "landmarks for SMACOF, 4 to 20,000"),
    },
    "tsne": {
        "perplexity": (30.0, float, lambda v: 1.0 <= v <= 500.0, "perplexity, 1 to 500"),
        "n_iter": (750, int, lambda v: 10 <= v <= 10_000, "iterations, 10 to 10,000"),
        "negatives": (64, int, lambda v: 1 <= v <= 1024, "far-field samples per point, 1 to 1,024"),
        "early_exaggeration": (12.0, float, lambda v: 1.0 <= v <= 100.0, "early exaggeration, 1 to 100"),
        "init": ("pca", str, lambda v: v in TSNE_INITS, f"one of {', '.join(TSNE_INITS)}"),
    },
}


def method_options(method: str, options: dict[str, Any] | None = None) -> dict[str, Any]:
    """`options` for `method` with defaults filled in and values checked; ValueError names the fix."""
    if method not in METHODS:
        raise ValueError(f"unknown projection method {method!r}; use one of {', '.join(METHODS)}")
    spec = METHOD_OPTIONS[method]
    options = dict(options or {})
    unknown = sorted(set(options) - set(spec))
    if unknown:
        allowed = ", ".join(spec) or "none"
        raise ValueError(f"{method} takes no option {', '.join(map(repr, unknown))}; its options are: {allowed}")
    out = {}
    for name, (default, kind, check, meaning) in spec.items():
        value = options.get(name, default)
        try:
            value = kind(value)
        except (TypeError, ValueError):
            raise ValueError(f"{method} option {name}={value!r} must be {meaning}") from None
        if (isinstance(value, float) and not math.isfinite(value)) or not check(value):
            raise ValueError(f"{method} option {name}={value!r} must be {meaning}")
        out[name] = value
    return out


def _check_dims(dims: int) -> int:
    if dims not in (2, 3):
        raise ValueError(f"dims must be 2 or 3 (a plot); got {dims}")
    return int(dims)


def compute(points: np.ndarray | torch.Tensor, method: str, dims: int = 3, seed: int = 0, *,
            progress: OnProgress | None = None, device: torch.device | str | None = None,
            **options: Any) -> tuple[np.ndarray, dict]:
    """The raw layout of `points` (n, d) by `method`: (coords (n, dims) float32, info).

    info holds the options used (defaults filled), seconds taken, the device, and the method's own
    diagnostics (SMACOF's stress, t-SNE's neighbour count, ...).
    """
    opts = method_options(method, options)
    dims = _check_dims(dims)
    dev = resolve_device(device or "auto")
    x = as_tensor(points, dev)
    if x.shape[0] < 4:
        raise ValueError(f"a projection needs at least 4 points; got {x.shape[0]}")
    started = time.perf_counter()
    if method == "pca":
        coords, extra = classical_mds_points(x, dims), {}
    elif method == "mds":
        coords, extra = mds(x, dims, seed, progress=progress, **opts)
    else:
        coords, extra = tsne(x, dims, seed, progress=progress, **opts)
    out = coords.detach().float().cpu().numpy()
    info = {"method": method, "options": opts, "dims": dims, "seed": seed, "device": str(dev),
            "seconds": time.perf_counter() - started, **extra}
    if progress is not None:
        progress(1.0, f"{method} done in {info['seconds']:.1f} s")
    return out, info


def outlier_mask(coords: np.ndarray, fraction: float) -> np.ndarray:
    """True for the round(fraction · n) points farthest from the layout's coordinate-wise median."""
    if not 0.0 <= fraction < 0.5:
        raise ValueError(f"hide_outliers is a fraction of points, 0 to 0.5; got {fraction}")
    n = coords.shape[0]
    hide = round(fraction * n)
    mask = np.zeros(n, dtype=bool)
    if hide:
        radius = np.linalg.norm(coords - np.median(coords, axis=0), axis=1)
        mask[np.argsort(radius, kind="stable")[n - hide:]] = True
    return mask


def display_coords(coords: np.ndarray, scale: str = "none", hide_outliers: float = 0.0) -> np.ndarray:
    """Apply the display options to a raw layout; hidden points become NaN rows.

    scale "none": as computed; "ball": centred on the visible points' mean and divided by the largest
    radius, so everything visible fits the unit ball; "sphere": centred, then each point divided by its
    own radius, z / ‖z‖, so it lies on the unit sphere (a point exactly at the centre stays there).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    out = np.array(coords, dtype=np.float32, copy=True)
    hidden = outlier_mask(out, hide_outliers)
    out[hidden] = np.nan
    visible = ~hidden
    if scale != "none" and visible.any():
        out[visible] -= out[visible].mean(axis=0)
        radius = np.linalg.norm(out[visible], axis=1)
        if scale == "ball":
            top = radius.max()
            if top > 0:
                out[visible] /= top
        else:
            out[visible] /= np.where(radius > 0, radius, 1.0)[:, None]
    return out


def project(points: np.ndarray | torch.Tensor, method: str, dims: int = 3, seed: int = 0, *, scale: str = "none",
            hide_outliers: float = 0.0, progress: OnProgress | None = None,
            device: torch.device | str | None = None, **options: Any) -> np.ndarray:
    """Project `points` (n, d) to (n, dims) with `method` in pca | mds | tsne, then apply the display
    options (`scale`, `hide_outliers`; hidden rows are NaN). Deterministic for a seed on the CPU."""
    if scale not in SCALES:  # checked before the (possibly long) computation
        raise ValueError(f"unknown scale {scale!r}; use one of {', '.join(SCALES)}")
    coords, _ = compute(points, method, dims, seed, progress=progress, device=device, **options)
    return display_coords(coords, scale, hide_outliers)


def sources(embeddings: dict[str, torch.Tensor]) -> list[str]:
    """The sources these embeddings can be projected from: "z", every other (n, d) float representation
    (z_q, ...) and "sample" when there is a posterior variance (log σ²) to draw with."""
    out = ["z"]
    out += [k for k, v in embeddings.items() if k not in ("z", "logvar", "images") and v.ndim == 2
            and v.is_floating_point()]
    if "logvar" in embeddings:
        out.append(SAMPLE)
    return out


def embedding_points(embeddings: dict[str, torch.Tensor], source: str = "z", seed: int = 0) -> np.ndarray:
    """The points to project: the representation z (a VAE's posterior means μ), another stored
    representation, or one reparametrised sample z = μ + exp(½ log σ²) ε, ε ~ N(0, I) drawn with `seed`
    (what the reference robust-loss VAE study fed its classifier and plots)."""
    if source not in sources(embeddings):
        raise ValueError(f"unknown embedding source {source!r}; use one of {', '.join(sources(embeddings))}")
    if source != SAMPLE:
        return embeddings[source].float().numpy()
    mu = embeddings["z"].float()
    g = torch.Generator().manual_seed(seed)
    eps = torch.randn(mu.shape, generator=g)
    return (mu + torch.exp(0.5 * embeddings["logvar"].float()) * eps).numpy()


def key_points(embeddings: dict[str, torch.Tensor], source: str = "z", seed: int = 0) -> np.ndarray:
    """What a layout's cache key hashes for its points: the points themselves for a stored
    representation; for a sample, the stored [μ, log σ²] it is drawn from (the seed is in the key).

    torch.randn picks its kernel by CPU (AVX2, AVX-512, scalar), so the drawn ε, and a hash of it,
    differ between machines; the stored inputs do not, and a shipped cache stays a hit everywhere."""
    if source != SAMPLE:
        return embedding_points(embeddings, source, seed)
    return torch.cat([embeddings["z"].float(), embeddings["logvar"].float()], dim=1).numpy()


def _digest(points: np.ndarray) -> str:
    array = np.ascontiguousarray(points, dtype=np.float32)
    h = hashlib.sha256(str(array.shape).encode())
    h.update(array.tobytes())
    return h.hexdigest()[:16]


def projection_key(method: str, dims: int, seed: int, options: dict[str, Any], source: str, points: np.ndarray) -> str:
    """16 hex digits of sha256 over the method, its full options, dims, seed, source and the points."""
    # PCA of a stored representation draws nothing at random: every seed gives the same layout, so the
    # seed stays out of its key
    uses_seed = method != "pca" or source == SAMPLE
    payload = {"v": KEY_VERSION, "method": method, "options": method_options(method, options),
               "dims": _check_dims(dims), "seed": int(seed) if uses_seed else 0,
               "source": _KEY_NAMES.get(source, source),
               "data": _digest(points)}
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


def projection_quality(points: np.ndarray, coords: np.ndarray, labels: np.ndarray, k: int = 10,
                       rows: int | None = 2000, seed: int = 0) -> dict[str, float]:
    """How much of the latent neighbourhoods a layout keeps: trustworthiness(k), k-NN label agreement
    in the layout and in the latent space itself. `rows`: estimate over that many random points (each
    still ranked against all n); None for the exact value over every point."""
    return {
        "trustworthiness": trustworthiness(points, coords, k, rows=rows, seed=seed),
        "knn_agreement": knn_label_agreement(coords, labels, k, rows=rows, seed=seed),
        "latent_knn_agreement": knn_label_agreement(points, labels, k, rows=rows, seed=seed),
    }


@dataclass
class Projection:
    """A run's layout. `coords` is the raw layout; apply `display_coords` for the display options."""

    coords: np.ndarray  # (n, dims) float32
    labels: np.ndarray  # (n,) int64
    index: np.ndarray  # (n,) int64, each point's index in the validation split
    method: str
    options: dict[str, Any]
    dims: int
    seed: int
    source: str
    key: str
    seconds: float  # time the layout took to compute (when it was computed)
    from_cache: bool
    quality: dict[str, float] = field(default_factory=dict)
    cache_note: str = ""  # why the layout could not be cached, when it could not


def run_projection(run: Any, method: str, dims: int = 3, seed: int = 0, *, source: str = "z",
                   progress: OnProgress | None = None, device: torch.device | str | None = None,
                   use_cache: bool = True, measure: bool = False, compute_missing: bool = True,
                   into: Path | None = None, **options: Any) -> Projection | None:
    """The layout of `run`'s validation embeddings (a core.runs.Run), from its cache when there.

    A miss computes it (reporting to `progress(fraction, message)`) and saves
    projections/<method>-<key>.safetensors through the run store (shipped runs cache under the user's
    runs folder). measure=True also estimates `projection_quality` and caches it with the layout.
    compute_missing=False returns None instead of computing (to offer a button for slow methods).
    into: cache it in this folder instead (what `core.ship` does, so shipped runs carry their layouts).
    """
    opts = method_options(method, options)
    emb = run.embeddings()
    points = embedding_points(emb, source, seed)
    labels = emb["labels"].numpy().astype(np.int64)
    index = emb["index"].numpy().astype(np.int64) if "index" in emb else np.arange(len(labels))
    key = projection_key(method, dims, seed, opts, source, key_points(emb, source, seed))
    cached = run.load_projection(method, key) if use_cache else None
    whole = cached is not None and "seconds" in cached and all(t.numel() == 1 for k, t in cached.items()
                                                               if k == "seconds" or k.startswith("quality_"))
    if whole and tuple(cached.get("coords", torch.empty(0)).shape) == (len(points), dims):
        quality = {name[8:]: float(t) for name, t in cached.items() if name.startswith("quality_")}
        note = ""
        if measure and not quality:
            quality = projection_quality(points, cached["coords"].numpy(), labels)
            note = _save(run, method, key, cached["coords"].numpy(), float(cached["seconds"]), quality)
        if progress is not None:
            progress(1.0, f"{method} from the cache")
        return Projection(cached["coords"].numpy(), labels, index, method, opts, dims, seed, source, key,
                          float(cached["seconds"]), True, quality, note)
    if not compute_missing:
        return None
    coords, info = compute(points, method, dims, seed, progress=progress, device=device, **opts)
    quality = projection_quality(points, coords, labels) if measure else {}
    note = _save(run, method, key, coords, info["seconds"], quality, into) if use_cache or into else ""
    return Projection(coords, labels, index, method, opts, dims, seed, source, key, info["seconds"], False,
                      quality, note)


def _save(run: Any, method: str, key: str, coords: np.ndarray, seconds: float, quality: dict[str, float],
          into: Path | None = None) -> str:
    """Cache a layout with the run (or in `into`); returns "" or why it could not be kept."""
    tensors = {"coords": torch.from_numpy(np.ascontiguousarray(coords, dtype=np.float32)),
               "seconds": torch.tensor(float(seconds), dtype=torch.float64)}
    tensors.update({f"quality_{name}": torch.tensor(float(v), dtype=torch.float64) for name, v in quality.items()})
    try:
        if into is not None:
            from core.runs import write_safetensors_atomic

            Path(into).mkdir(parents=True, exist_ok=True)
            write_safetensors_atomic(Path(into) / f"{method}-{key}.safetensors", tensors,
                                     {"method": method, "key": key})
        else:
            run.save_projection(method, key, tensors, {"method": method, "key": key})
    except OSError as exc:  # a read-only place: the layout is still shown, just not kept
        return f"not cached ({exc}); it will be recomputed next time"
    return ""
