"""Forward + backward of the general loss on a 256×3072 batch, against MSE and the paper's formula.

    python benchmarks/losses.py [--threads 1] [--repeats 30] [--device cpu|cuda]

Three implementations run in one process, interleaved, so machine noise hits them alike:
  mse     (r²).mean(): the floor, it moves the same bytes;
  direct  the paper's formula written directly, |α−2|/α·(((r/c)²/|α−2| + 1)^{α/2} − 1), left to autograd;
  ours    core.losses.rho: closed-form gradients, only the inputs saved for backward.
Each is timed with α and c fixed (gradient for r only) and adaptive (gradients for r, α and c per pixel).
Memory kept for backward is counted with saved-tensor hooks (bytes of distinct saved storages); on
CUDA the peak allocation is printed too.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.losses import rho

SHAPE = (256, 3072)


def direct_formula(r: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    b = (alpha - 2).abs()
    return b / alpha * (((r / scale) ** 2 / b + 1) ** (alpha / 2) - 1)


def mse(r: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return r * r


def saved_bytes(fn, r, alpha, scale) -> int:
    """Bytes of the distinct storages autograd keeps for backward."""
    storages: dict[int, int] = {}

    def pack(t: torch.Tensor) -> torch.Tensor:
        storages[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn(r, alpha, scale).mean()
    out.backward()
    return sum(storages.values())


def step(fn, r, alpha, scale) -> None:
    for t in (r, alpha, scale):
        t.grad = None
    fn(r, alpha, scale).mean().backward()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=1.2, help="the α timed (1.2: a generic α)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    gen = torch.Generator().manual_seed(0)
    r = (torch.randn(SHAPE, generator=gen) * 0.2).to(device).requires_grad_(True)
    cases = {}
    for mode in ("fixed", "adaptive"):
        grad = mode == "adaptive"
        shape = (SHAPE[1],) if grad else ()
        alpha = torch.full(shape, args.alpha, device=device, requires_grad=grad)
        scale = torch.full(shape, 0.1, device=device, requires_grad=grad)
        for name, fn in (("mse", mse), ("direct", direct_formula), ("ours", rho)):
            if name == "mse" and mode == "adaptive":
                continue
            cases[f"{name}/{mode}"] = (fn, alpha, scale)

    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(3):  # warm-up
        for fn, alpha, scale in cases.values():
            step(fn, r, alpha, scale)
    for _ in range(args.repeats):
        for key, (fn, alpha, scale) in cases.items():
            sync()
            start = time.perf_counter()
            step(fn, r, alpha, scale)
            sync()
            times[key].append(time.perf_counter() - start)

    input_bytes = r.numel() * r.element_size()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"batch {SHAPE[0]}x{SHAPE[1]}, {args.repeats} repeats, median ms")
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for key, (fn, alpha, scale) in cases.items():
        kept = saved_bytes(fn, r, alpha, scale) / input_bytes
        peak = ""
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
            base = torch.cuda.memory_allocated(device)
            step(fn, r, alpha, scale)
            peak = f"  peak +{(torch.cuda.max_memory_allocated(device) - base) / input_bytes:.1f} inputs"
        print(f"  {key:16s} {median[key]:8.2f} ms   saved for backward {kept:4.1f}x input{peak}")
    for mode in ("fixed", "adaptive"):
        ours, direct = median[f"ours/{mode}"], median[f"direct/{mode}"]
        print(f"{mode:8s}: ours is {direct / ours:.2f}x faster than the direct formula, "
              f"{ours / median['mse/fixed']:.2f}x the time of MSE")


if __name__ == "__main__":
    main()
