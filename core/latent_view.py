"""One point of a run's latent space, in detail: its image, its reconstruction, its latent neighbours.

    find_rows(index, labels, index_value=None, label=None) -> rows       search by split index / label
    rows_at(index, values) -> rows or None                                the rows holding these split indices
    class_names(config, labels) -> names                                  a name for every label present
    latent_neighbours(mu, row, k) -> (rows, distances)                    exact, Euclidean on μ
    reconstruct(model, mu) -> (m, C, H, W) uint8                           x̂ = decoder(μ), in [0, 1] → bytes
    validation_images(run, rows, embeddings=None) -> (m, C, H, W) uint8 or None
    point_detail(run, row, k=8, embeddings=None, model=None) -> PointDetail
    to_display(images) -> (m, H, W) or (m, H, W, 3) uint8                 what st.image takes

The image comes from the run's embeddings file when it carries one (shipped runs do), else from the
dataset's validation split when it is installed, else it is None (the reconstruction is still there).
Neighbours are exact, Euclidean, among the validation μ (core.neighbourhood.nearest_to).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.neighbourhood import nearest_to

__all__ = ["PointDetail", "class_names", "find_rows", "latent_neighbours", "point_detail", "reconstruct",
           "rows_at", "to_display", "validation_images"]


def find_rows(index: np.ndarray, labels: np.ndarray, index_value: int | None = None,
              label: int | None = None) -> np.ndarray:
    """Rows whose split index equals `index_value` and/or whose label equals `label` (ascending)."""
    keep = np.ones(len(index), dtype=bool)
    if index_value is not None:
        keep &= np.asarray(index) == int(index_value)
    if label is not None:
        keep &= np.asarray(labels) == int(label)
    return np.flatnonzero(keep)


def rows_at(index: np.ndarray | torch.Tensor, values: np.ndarray) -> np.ndarray | None:
    """The rows whose split index is each of `values`, in their order; None when one is not there."""
    row_of = {int(v): r for r, v in enumerate(np.asarray(index).tolist())}
    rows = [row_of.get(int(v)) for v in np.asarray(values).tolist()]
    return None if None in rows else np.array(rows, dtype=np.int64)


def class_names(config: dict, labels: np.ndarray) -> list[str]:
    """The dataset's class names, padded with the label number for any label past them, so that
    `names[label]` holds for every label in `labels`."""
    try:
        from core.datasets import dataset_info

        names = list(dataset_info(config["dataset"]).classes)
    except (KeyError, ValueError):  # no dataset in the config, or one this code does not know
        names = []
    top = int(np.max(labels)) + 1 if np.size(labels) else 0
    return names + [str(i) for i in range(len(names), top)]


def latent_neighbours(mu: np.ndarray | torch.Tensor, row: int, k: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """The k rows nearest to row `row` in latent space (Euclidean on μ, itself excluded) and their distances."""
    return nearest_to(mu, row, k)


@torch.no_grad()
def reconstruct(model: torch.nn.Module, mu: np.ndarray | torch.Tensor) -> np.ndarray:
    """x̂ = decoder(μ) for rows of μ (m, d): (m, C, H, W) uint8, round(255 · clamp(x̂, 0, 1))."""
    z = torch.as_tensor(np.asarray(mu) if not isinstance(mu, torch.Tensor) else mu, dtype=torch.float32)
    if z.ndim == 1:
        z = z[None]
    device = next(model.parameters()).device
    x = model.decode(z.to(device)).float().cpu()
    return (x.clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def to_display(images: np.ndarray) -> np.ndarray:
    """(m, C, H, W) uint8 → (m, H, W) for one channel, (m, H, W, 3) for three (what st.image shows)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.shape[1] not in (1, 3):
        raise ValueError(f"images must be (m, 1 or 3, H, W); got shape {images.shape}")
    return images[:, 0] if images.shape[1] == 1 else images.transpose(0, 2, 3, 1)


def validation_images(run: Any, rows: np.ndarray, embeddings: dict[str, torch.Tensor] | None = None
                      ) -> np.ndarray | None:
    """The validation images at `rows` of the run's embeddings, (m, C, H, W) uint8, or None when neither
    the run nor an installed dataset has them."""
    emb = embeddings if embeddings is not None else run.embeddings()
    rows = np.asarray(rows, dtype=np.int64)
    if "images" in emb:
        return emb["images"][torch.as_tensor(rows)].numpy()
    from core.datasets import DatasetFormatError, DatasetMissing, load_split

    try:
        split = load_split(run.config["dataset"], "val")
    except (DatasetMissing, DatasetFormatError):
        # Not installed, or damaged: the reconstruction needs only the run, so it is still worth showing;
        # the Home and Train pages name the dataset's fix.
        return None
    index = emb["index"][torch.as_tensor(rows)]
    if index.numel() and int(index.max()) >= len(split):
        return None
    return split.images[index].numpy()


@dataclass
class PointDetail:
    """A point and its latent neighbours: rows into the embeddings, split indices, labels, images."""

    row: int
    index: int
    label: int
    image: np.ndarray | None  # (C, H, W) uint8
    reconstruction: np.ndarray  # (C, H, W) uint8
    neighbour_rows: np.ndarray  # (k,)
    neighbour_index: np.ndarray  # (k,)
    neighbour_labels: np.ndarray  # (k,)
    neighbour_distances: np.ndarray  # (k,) Euclidean in latent space
    neighbour_images: np.ndarray | None  # (k, C, H, W) uint8


def point_detail(run: Any, row: int, k: int = 8, embeddings: dict[str, torch.Tensor] | None = None,
                 model: torch.nn.Module | None = None) -> PointDetail:
    """Everything the page shows for one selected point of `run` (a core.runs.Run)."""
    emb = embeddings if embeddings is not None else run.embeddings()
    mu = emb["mu"].float()
    n = mu.shape[0]
    if not 0 <= row < n:
        raise IndexError(f"row {row} is outside the run's {n} validation points")
    rows, dist = latent_neighbours(mu, row, k)
    model = model if model is not None else run.load_model()
    images = validation_images(run, np.concatenate([[row], rows]), emb)
    labels = emb["labels"].numpy()
    index = emb["index"].numpy() if "index" in emb else np.arange(n)
    return PointDetail(
        row=int(row), index=int(index[row]), label=int(labels[row]),
        image=None if images is None else images[0],
        reconstruction=reconstruct(model, mu[row])[0],
        neighbour_rows=rows, neighbour_index=index[rows], neighbour_labels=labels[rows],
        neighbour_distances=dist, neighbour_images=None if images is None else images[1:],
    )
