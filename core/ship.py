"""Shipping a study: copy its finished runs, slimmed, and its report into the app's checkpoints/.

    ship(runs, study_folder, dest, embeddings=2000) -> the shipped run folders
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file

from core.runs import FORMAT, SHARED_IMAGES, Run, write_safetensors_atomic

__all__ = ["ship"]


def _share_images(dest: Path, dataset: str, images: torch.Tensor, index: torch.Tensor) -> None:
    """Add validation images to dest/images/<dataset>-val.safetensors (the union of what the shipped runs
    of that dataset show), which core.runs.shared_images reads for every shipped run."""
    file = dest / SHARED_IMAGES / f"{dataset}-val.safetensors"
    file.parent.mkdir(parents=True, exist_ok=True)
    have = load_file(str(file)) if file.is_file() else {"images": images[:0], "index": index[:0]}
    known = set(have["index"].tolist())
    new = [i for i, v in enumerate(index.tolist()) if v not in known]
    if not new:
        return
    rows = torch.tensor(new, dtype=torch.int64)
    merged = {"images": torch.cat([have["images"], images[rows]]), "index": torch.cat([have["index"], index[rows]])}
    write_safetensors_atomic(file, merged, {"format": FORMAT, "dataset": dataset})


_SHIPPED_FILES = (Run.CONFIG, Run.STATUS, Run.HISTORY, Run.MODEL, Run.PROBES)


SHIPPED_PROJECTIONS = ("pca", "mds", "tsne")  # drawn at once on a fresh clone's Embeddings page


def ship(runs: list, study_folder: Path | None, dest: Path, *, embeddings: int = 2000,
         projections: tuple[str, ...] = SHIPPED_PROJECTIONS) -> list[Path]:
    """Copy finished runs into `dest` (the app's checkpoints/) for shipping, and the study folder to
    `dest/studies/<name>`: weights, config, status, history, probes, the first `embeddings` validation
    embeddings (their images go once per dataset into dest/images/), and the 3-D `projections` of those
    embeddings (default options, seed 0), cached in the run's own projections/; not the checkpoint (a
    shipped run is read-only, never resumed). Each run is assembled in a hidden folder and renamed into place."""
    from core.projections import run_projection
    from core.runs import open_run

    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    shipped = []
    for run in runs:
        if run.status().get("state") != "finished" or not run.has_embeddings:
            continue
        tmp = dest / f".shipping-{run.run_id}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        for name in _SHIPPED_FILES:
            if (run.path / name).is_file():
                shutil.copy2(run.path / name, tmp / name)
        if (run.path / Run.EVALUATIONS).is_dir():  # what the pages show of it: neighbour grids, ROC, ...
            shutil.copytree(run.path / Run.EVALUATIONS, tmp / Run.EVALUATIONS)
        emb = run.embeddings()
        keep = {k: v[:embeddings] for k, v in emb.items()}
        subset = f"first {len(keep['z'])} of {len(emb['z'])}"
        if "images" in keep:  # shipped once per dataset, not with every run (core.runs.shared_images)
            _share_images(dest, run.config["dataset"], keep.pop("images"), keep["index"])
        if run.format_version == 1:  # the file keeps its format's name for z
            keep["mu"] = keep.pop("z")
        write_safetensors_atomic(tmp / Run.EMBEDDINGS, keep, {"format": FORMAT, "subset": subset})
        staged = open_run(tmp)
        for method in projections:
            run_projection(staged, method, 3, 0, measure=True, into=tmp / "projections")
        final = dest / run.run_id
        if final.exists():
            old = dest / f".replaced-{run.run_id}"
            shutil.rmtree(old, ignore_errors=True)
            os.replace(final, old)
            shutil.rmtree(old)
        os.replace(tmp, final)
        shipped.append(final)
    if study_folder is not None and study_folder.is_dir():
        target = dest / "studies" / study_folder.name
        tmp = dest / "studies" / f".shipping-{study_folder.name}"
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(study_folder, tmp)
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    return shipped
