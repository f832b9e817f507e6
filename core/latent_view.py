"""One point of a run's latent space, in detail: its image, its reconstruction, its latent neighbours.

    find_rows(index, labels, index_value=None, label=None) -> rows       search by split index / label
    rows_at(index, values) -> rows or None                                the rows holding these split indices
    class_names(config, labels) -> names                                  a name for every label present
    validation_images(run, rows, embeddings=None) -> (m, C, H, W) uint8 or None
    point_detail(run, row, k=8, embeddings=None, objective=None, points=None) -> PointDetail
    to_display(images) -> (m, H, W) or (m, H, W, 3) uint8                 what st.image takes

The image comes from the run's embeddings file when it carries one (shipped runs do), else from the
dataset's validation split when it is installed, else it is None (the reconstruction is still there).
Neighbours are exact, Euclidean, among the validation representations (z, or the points a layout was made
from: z_q, a sample; core.neighbourhood.nearest_to); the reconstruction is what the run's family decodes
from z (a VAE's decoder(μ), a VQ-VAE's decoder(z_q)).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from core.neighbourhood import nearest_to

__all__ = ["PointDetail", "class_names", "find_rows", "point_detail", "rows_at", "to_display", "validation_images"]


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
    reconstruction: np.ndarray | None  # (C, H, W) uint8; None when the run's family has no decoder
    neighbour_rows: np.ndarray  # (k,)
    neighbour_index: np.ndarray  # (k,)
    neighbour_labels: np.ndarray  # (k,)
    neighbour_distances: np.ndarray  # (k,) Euclidean in latent space
    neighbour_images: np.ndarray | None  # (k, C, H, W) uint8


def point_detail(run: Any, row: int, k: int = 8, embeddings: dict[str, torch.Tensor] | None = None,
                 objective: torch.nn.Module | None = None, points: np.ndarray | None = None) -> PointDetail:
    """Everything the page shows for one selected point of `run` (a core.runs.Run): its image, what the
    run's family decodes from its stored representation (None for a family without a decoder), and
    its k nearest neighbours among `points` (the representation the layout was made from; default z)."""
    from core.families import family_of, load_objective

    emb = embeddings if embeddings is not None else run.embeddings()
    z = emb["z"].float()
    n = z.shape[0]
    if not 0 <= row < n:
        raise IndexError(f"row {row} is outside the run's {n} validation points")
    rows, dist = nearest_to(z if points is None else points, row, k)
    objective = objective if objective is not None else load_objective(run)
    decoded = family_of(run.config).decode(objective, z[row])
    images = validation_images(run, np.concatenate([[row], rows]), emb)
    labels = emb["labels"].numpy()
    index = emb["index"].numpy() if "index" in emb else np.arange(n)
    return PointDetail(
        row=int(row), index=int(index[row]), label=int(labels[row]),
        image=None if images is None else images[0],
        reconstruction=None if decoded is None else decoded.numpy()[0],
        neighbour_rows=rows, neighbour_index=index[rows], neighbour_labels=labels[rows],
        neighbour_distances=dist, neighbour_images=None if images is None else images[1:],
    )
