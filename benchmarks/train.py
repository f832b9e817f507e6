"""Training throughput: core.engine's loop against a plain torchvision + DataLoader loop, same model.

    .venv/bin/python benchmarks/train.py                      # digits (1,257 images), VAE and VQ-VAE, CPU
    .venv/bin/python benchmarks/train.py --dataset fashion_mnist --images 1024 --repeats 1
    .venv/bin/python benchmarks/train.py --device cuda --dataset cifar10 --images 50000 --batch-size 512 --compile

Ours: `core.engine.run_training` on a temporary run (uint8 data on the device, batches by index, statistics
read every few steps, status/history/checkpoint files written as usual). Throughput is taken from the
last epoch's training time as the engine logs it (`epoch_s`, validation excluded; the run's validation
split is cut to --val images so the benchmark stays short).

Baseline: the usual recipe — a torchvision `VisionDataset` that hands out PIL images through
`transforms.ToTensor()` (how torchvision's MNIST/CIFAR classes serve items), a shuffling `DataLoader`,
and a loop that moves each batch to the device and calls `loss.item()` each step. Same model, loss,
optimiser, autocast and batch size; timed over its last epoch.

The loops alternate --repeats times and each keeps its best epoch (a shared machine only ever slows a
measurement). Prints images/s of both and the ratio (ours / baseline). With CUDA and --cifar-epoch, also times one
CIFAR-10-sized epoch (50,000 random 3×32×32 images) of the default VAE against the goal of < 2 s.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core import datasets
from core.config import normalize_config
from core.device import configure_threads, resolve_device, tune_backend
from core.engine import TrainingData, build_objective, run_training
from core.families import Batch, family_of
from core.runs import create_run


def _baseline(config: dict, images: torch.Tensor, labels: torch.Tensor, device: torch.device, epochs: int,
              workers: int) -> float:
    """Images/s of the plain DataLoader loop over its last epoch."""
    from PIL import Image
    from torch.utils.data import DataLoader
    from torchvision import transforms
    from torchvision.datasets import VisionDataset

    class ArrayImages(VisionDataset):
        """uint8 (N, C, H, W) served the torchvision way: PIL image -> transform."""

        def __init__(self, array: np.ndarray, targets: np.ndarray) -> None:
            super().__init__(root=None, transform=transforms.ToTensor())
            self.array, self.targets = array, targets

        def __len__(self) -> int:
            return len(self.array)

        def __getitem__(self, i: int):
            img = self.array[i]
            pil = Image.fromarray(img[0] if img.shape[0] == 1 else img.transpose(1, 2, 0))
            return self.transform(pil), int(self.targets[i])

    ds = ArrayImages(images.cpu().numpy(), labels.cpu().numpy())
    loader = DataLoader(ds, batch_size=config["batch_size"], shuffle=True, num_workers=workers,
                        pin_memory=device.type == "cuda", persistent_workers=workers > 0)
    objective = build_objective(config, device)
    opt = torch.optim.Adam(objective.parameters(), lr=config["lr"], fused=device.type == "cuda")
    step_fn = torch.compile(objective, dynamic=False) if config["compile"] else objective
    weights = family_of(config).loss_weights(config)
    seconds, step = 0.0, 0
    for _ in range(epochs):
        total, start = 0.0, time.perf_counter()
        for x, y in loader:
            x = x.to(device, non_blocking=True)
            step += 1
            # The family's objective takes a Batch of uint8 images; ToTensor gave floats in [0, 1] (to_unit
            # leaves floats as they are), so the model sees the same inputs in both loops.
            batch = Batch(x, y.to(device), torch.arange(x.shape[0], device=device), step, 0, x.shape[0])
            terms = step_fn(batch)["terms"]
            loss = sum(w * (terms[k].sum() if terms[k].ndim else terms[k] * x.shape[0])
                       for k, w in weights.items()) / x.shape[0]
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += loss.item()
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
    return len(ds) / seconds


def _ours(config: dict, data: TrainingData, device: torch.device, root: Path) -> float:
    run = create_run({**config, "split": data.split}, root=root)
    result = run_training(run, data=data, device=device)
    assert result.state == "finished", result.message
    last = run.history("epoch")[-1]
    return len(data.train) / last["epoch_s"]


def _cifar_epoch(device: torch.device, compile_: bool, batch: int) -> float:
    """Seconds for one training epoch over 50,000 random 3×32×32 images with the default VAE (latent 128)."""
    config = normalize_config({"dataset": "cifar10", "loss": "cauchy", "latent_dim": 128, "batch_size": batch,
                               "epochs": 2, "compile": compile_})
    n = 50_000
    gen = torch.Generator().manual_seed(0)
    train_set = datasets.ImageSet(torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=gen).to(device),
                                  torch.zeros(n, dtype=torch.int64, device=device), [], "cifar10", "train")
    val_set = datasets.ImageSet(train_set.images[:512], train_set.labels[:512], [], "cifar10", "val")
    data = TrainingData(train_set, val_set, {"train": n, "val": 512, "test": 0})
    with tempfile.TemporaryDirectory() as tmp:
        run = create_run({**config, "split": data.split}, root=tmp)
        run_training(run, data=data, device=device)
        return run.history("epoch")[-1]["epoch_s"]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dataset", default="digits", choices=datasets.DATASET_NAMES)
    p.add_argument("--images", type=int, default=1257, help="training images per epoch (at most)")
    p.add_argument("--val", type=int, default=256, help="validation images (ours evaluates each epoch)")
    p.add_argument("--epochs", type=int, default=2, help="epochs per loop; the last one is timed")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--latent-dim", type=int, default=16)
    p.add_argument("--loss", default="cauchy")
    p.add_argument("--device", default="auto")
    p.add_argument("--compile", action="store_true")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="DataLoader workers to try")
    p.add_argument("--repeats", type=int, default=2, help="alternating measurements; the best is kept")
    p.add_argument("--width", type=int, default=32, help="network channels")
    p.add_argument("--families", default="vae,vqvae", help="model families to measure, each against its baseline")
    p.add_argument("--cifar-epoch", action="store_true", help="(CUDA) time a CIFAR-10-sized epoch, goal < 2 s")
    args = p.parse_args(argv)
    configure_threads(args.threads)
    device = resolve_device(args.device)
    tune_backend(device)
    configs = [normalize_config({"family": family, "dataset": args.dataset, "loss": args.loss,
                                 "latent_dim": args.latent_dim, "batch_size": args.batch_size, "epochs": args.epochs,
                                 "limit_train": args.images, "compile": args.compile, "width": args.width})
               for family in args.families.split(",")]
    try:
        train_set = datasets.load_split(args.dataset, "train", device, limit=args.images)
        val_full = datasets.load_split(args.dataset, "val", device)
    except datasets.DatasetMissing as exc:
        print(f"comparison skipped: {exc}")
        if args.cifar_epoch and device.type == "cuda":
            print(f"CIFAR-10-sized epoch: {_cifar_epoch(device, args.compile, args.batch_size):.2f} s (goal < 2 s)")
        return 1
    val_set = datasets.ImageSet(val_full.images[: args.val], val_full.labels[: args.val], val_full.classes,
                                val_full.name, "val", val_full.index[: args.val])
    data = TrainingData(train_set, val_set, {"train": len(train_set), "val": len(val_set), "test": 0})
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"device: {name}; torch {torch.__version__}; {args.dataset}, {len(train_set)} images "
          f"{tuple(train_set.images.shape[1:])}, batch {args.batch_size}, latent {args.latent_dim}, "
          f"width {args.width}, loss {args.loss}, compile {args.compile}; last of {args.epochs} epochs timed, "
          f"best of {args.repeats}")
    for config in configs:
        # Alternate the loops and keep each one's best epoch: the machine may be shared, and load from
        # other processes only ever slows a measurement down.
        ours, base = 0.0, dict.fromkeys(args.workers, 0.0)
        for _ in range(args.repeats):
            with tempfile.TemporaryDirectory() as tmp:
                ours = max(ours, _ours(config, data, device, Path(tmp)))
            for workers in args.workers:
                base[workers] = max(base[workers], _baseline(config, train_set.images, train_set.labels, device,
                                                             args.epochs, workers))
        label = family_of(config).describe(config)
        print(f"{label}: ours (core.engine, index batches on the device): {ours:10,.0f} images/s")
        for workers, value in base.items():
            print(f"{label}: baseline (torchvision dataset + DataLoader, {workers} workers): {value:10,.0f} images/s"
                  f"   ratio ours/baseline = {ours / value:.2f}x")
    if args.cifar_epoch:
        if device.type != "cuda":
            print("CIFAR-10-sized epoch: not measured (needs CUDA); goal on a GPU: < 2 s")
        else:
            seconds = _cifar_epoch(device, args.compile, args.batch_size)
            print(f"CIFAR-10-sized epoch (50,000 × 3×32×32, latent 128): {seconds:.2f} s (goal < 2 s)")
    elif device.type != "cuda":
        print("GPU goal (CIFAR-10-sized epoch < 2 s): not measured here (no GPU)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
