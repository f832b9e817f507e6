"""VICReg's training throughput: core.engine with the batched on-device augmentations (core/augment.py)
against the usual recipe, a DataLoader whose dataset makes the two views with torchvision transforms.

    .venv/bin/python benchmarks/vicreg.py                                  # Fashion-MNIST, 2,048 images, CPU
    .venv/bin/python benchmarks/vicreg.py --dataset digits --images 1257 --width 16
    .venv/bin/python benchmarks/vicreg.py --device cuda --synthetic 50000 --batch-size 512 --workers 8 16
        # a GPU: CIFAR-shaped random images (3×32×32), the ResNet-18 encoder, projector 2048-2048-2048

Ours: `core.engine.run_training` on a temporary VICReg run (uint8 images on the device, batches by index, both
views drawn per image on the device from the step's generators, the run's files written as usual);
throughput from the last epoch's training time (`epoch_s`, validation excluded).

Baseline: what VICReg code usually does (the official repository, solo-learn, the course solutions): a
torchvision dataset serving PIL images, whose transform returns two views made by torchvision's
per-image transforms with the same recipe (solo-learn's CIFAR one: RandomResizedCrop(scale 0.2–1),
horizontal flip, ColorJitter(0.4, 0.4, 0.2, 0.1) p 0.8, RandomGrayscale 0.2, RandomSolarize p 0.1,
ToTensor), a shuffling DataLoader with N workers, batches moved to the device, the same network, the
same three terms (VICRegObjective.terms), Adam, autocast settings, and `loss.item()` each step.

Both loops run in one process, alternating --repeats times, each keeping its best last epoch (a shared
machine only slows a measurement). Also printed: the augmentations alone, two views of a batch by
core.augment against torchvision's transforms image by image in the main process (what the loops differ
in). Prints images/s and the ratios ours / baseline.
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import datasets
from core.augment import RECIPES, augment
from core.config import normalize_config
from core.device import configure_threads, resolve_device, tune_backend
from core.engine import TrainingData, build_objective, run_training
from core.runs import create_run


def _torchvision_views(size: int):
    """solo-learn's CIFAR recipe as torchvision transforms on PIL images; returns two views."""
    from torchvision import transforms as T

    recipe = RECIPES["cifar"][0]
    one = T.Compose([
        T.RandomResizedCrop(size, scale=recipe.crop_scale, ratio=recipe.crop_ratio),
        T.RandomHorizontalFlip(recipe.flip),
        T.RandomApply([T.ColorJitter(*recipe.jitter)], p=recipe.jitter_p),
        T.RandomGrayscale(recipe.gray_p),
        T.RandomSolarize(128, p=recipe.solarize_p),
        T.ToTensor(),
    ])
    return lambda pil: (one(pil), one(pil))


def _dataset(images: np.ndarray):
    from PIL import Image
    from torchvision.datasets import VisionDataset

    class TwoViews(VisionDataset):
        """uint8 (N, C, H, W) served the torchvision way: PIL image -> (view a, view b)."""

        def __init__(self, array: np.ndarray) -> None:
            super().__init__(root=None, transform=_torchvision_views(array.shape[2]))
            self.array = array

        def __len__(self) -> int:
            return len(self.array)

        def __getitem__(self, i: int):
            img = self.array[i]
            pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
            return self.transform(pil)

    return TwoViews(images)


def _baseline(config: dict, images: torch.Tensor, device: torch.device, epochs: int, workers: int) -> float:
    """Images/s of the DataLoader loop over its last epoch."""
    from torch.utils.data import DataLoader

    loader = DataLoader(_dataset(images.cpu().numpy()), batch_size=config["batch_size"], shuffle=True,
                        num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                        drop_last=True)
    objective = build_objective(config, device)
    model = torch.compile(objective.model, dynamic=False) if config["compile"] else objective.model
    opt = torch.optim.Adam(objective.parameters(), lr=config["lr"], fused=device.type == "cuda")
    seconds, seen = 0.0, 0
    for _ in range(epochs):
        seen, start = 0, time.perf_counter()
        for a, b in loader:
            layout = torch.channels_last if objective.channels_last else torch.contiguous_format
            a = a.to(device, non_blocking=True).contiguous(memory_format=layout)
            b = b.to(device, non_blocking=True).contiguous(memory_format=layout)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=objective.amp):
                _, z_a = model(a)
                _, z_b = model(b)
            terms = objective.terms(z_a, z_b)
            loss = 25 * terms["invariance"].mean() + 25 * terms["variance"] + terms["covariance"]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss.item()
            seen += a.shape[0]
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return seen / seconds


def _ours(config: dict, data: TrainingData, device: torch.device, root: Path) -> float:
    run = create_run({**config, "split": data.split}, root=root)
    result = run_training(run, data=data, device=device)
    assert result.state == "finished", result.message
    return len(data.train) / run.history("epoch")[-1]["epoch_s"]


def _augmentations_alone(images: torch.Tensor, device: torch.device, batch: int, repeats: int) -> tuple[float, float]:
    """Images/s (two views each) of core.augment on the device and of torchvision's transforms per image."""
    x = images[:batch].to(device)
    recipe = RECIPES["cifar"][0]
    best_ours = 0.0
    for step in range(repeats + 1):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        gen = torch.Generator(device=device).manual_seed(step)
        unit = x.float() / 255
        augment(unit, recipe, gen), augment(unit, recipe, gen)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if step:  # the first call warms up
            best_ours = max(best_ours, len(x) / (time.perf_counter() - start))
    dataset = _dataset(images[:batch].cpu().numpy())
    best_theirs = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for i in range(len(dataset)):
            dataset[i]
        best_theirs = max(best_theirs, len(dataset) / (time.perf_counter() - start))
    return best_ours, best_theirs


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="fashion_mnist", choices=datasets.DATASET_NAMES)
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="N random 3×32×32 images instead of a dataset (CIFAR-shaped; for a GPU)")
    p.add_argument("--images", type=int, default=2048, help="training images per epoch (at most)")
    p.add_argument("--val", type=int, default=256, help="validation images (ours evaluates each epoch)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per loop; the last one is timed")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--latent-dim", type=int, default=None, help="representation size (default 64; 128 synthetic)")
    p.add_argument("--width", type=int, default=16, help="the small encoder's width")
    p.add_argument("--projector", default=None, help="default 192-192-192; 2048-2048-2048 synthetic")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    p.add_argument("--repeats", type=int, default=2, help="alternating measurements; the best is kept")
    args = p.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    tune_backend(device)
    if args.synthetic:
        name, n = "cifar10", args.synthetic
        gen = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (n + args.val, 3, 32, 32), dtype=torch.uint8, generator=gen)
        train_set = datasets.ImageSet(images[:n].to(device), torch.zeros(n, dtype=torch.int64, device=device), [],
                                      name, "train", torch.arange(n, device=device))
        val_set = datasets.ImageSet(images[n:].to(device), torch.zeros(args.val, dtype=torch.int64, device=device),
                                    [], name, "val", torch.arange(args.val, device=device))
    else:
        name = args.dataset
        try:
            train_set = datasets.load_split(name, "train", device, limit=args.images)
            val_full = datasets.load_split(name, "val", device)
        except datasets.DatasetMissing as exc:
            print(f"skipped: {exc}")
            return 1
        val_set = datasets.ImageSet(val_full.images[: args.val], val_full.labels[: args.val], val_full.classes, name,
                                    "val", val_full.index[: args.val])
    latent = args.latent_dim or (128 if args.synthetic else 64)
    projector = args.projector or ("2048-2048-2048" if args.synthetic else "192-192-192")
    fields = {"family": "vicreg", "dataset": name, "latent_dim": latent, "projector": projector,
              "batch_size": args.batch_size, "epochs": args.epochs, "lr": 1e-3, "compile": args.compile}
    if not args.synthetic and datasets.dataset_info(name).image_shape != (3, 32, 32):
        fields["width"] = args.width
    config = normalize_config(fields, split={"train": len(train_set), "val": len(val_set), "test": 0})
    data = TrainingData(train_set, val_set, {"train": len(train_set), "val": len(val_set), "test": 0})
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {where}; torch {torch.__version__}; {name}{' (synthetic)' if args.synthetic else ''}, "
          f"{len(train_set)} images {tuple(train_set.images.shape[1:])}, batch {args.batch_size}, "
          f"{config['model']['encoder']} encoder, D {latent}, projector {projector}, compile {args.compile}; last of "
          f"{args.epochs} epochs timed, best of {args.repeats}")
    ours_aug, theirs_aug = _augmentations_alone(train_set.images, device, args.batch_size, args.repeats)
    print(f"augmentations alone (two views): core.augment {ours_aug:10,.0f} images/s; torchvision per image "
          f"{theirs_aug:10,.0f} images/s; ratio {ours_aug / theirs_aug:.1f}x")
    ours, base = 0.0, dict.fromkeys(args.workers, 0.0)
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as tmp:
            ours = max(ours, _ours(config, data, device, Path(tmp)))
        for workers in args.workers:
            base[workers] = max(base[workers], _baseline(config, train_set.images, device, args.epochs, workers))
    print(f"training, ours (core.engine, views drawn on the device): {ours:10,.0f} images/s")
    for workers, value in base.items():
        ratio = ours / value if value and math.isfinite(value) else float("nan")
        print(f"training, baseline (torchvision transforms + DataLoader, {workers} workers): {value:10,.0f} images/s"
              f"   ratio ours/baseline = {ratio:.2f}x")
    if device.type != "cuda":
        print("GPU: not measured here (no GPU); on one: benchmarks/vicreg.py --device cuda --synthetic 50000 "
              "--batch-size 512 --workers 8 16")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
