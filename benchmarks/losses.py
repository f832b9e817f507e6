"""Forward + backward of the general loss on a 256×3072 batch, against MSE and the paper's formula.

    python benchmarks/losses.py [--alpha 1.3] [--threads 1] [--repeats 30] [--device cpu|cuda] [--clock wall|cpu]

Implementations run in one process, interleaved, so machine noise hits them alike:
  mse     (r²).mean(): the floor, it moves the same bytes;
  direct  the paper's formula written directly, |α−2|/α·(((r/c)²/|α−2| + 1)^{α/2} − 1), left to autograd;
  ours    core.losses.rho: closed-form gradients, one input's size saved for backward. On CUDA it runs
          the fused (torch.compile) kernels; `ours-eager` times the same calls with them switched off
          (ROBUST_LOSS_FUSED=0), so the fused kernels' gain is measured in the same process.
Each is timed with α and c fixed (gradient for r only; α, c passed as numbers, as training does) and
adaptive (gradients for r, α and c per pixel). Times are medians; ratios are printed at the end.
Memory kept for backward is counted with saved-tensor hooks (bytes of distinct saved storages); on
CUDA the peak allocation above the inputs is printed too. The first call on CUDA compiles the kernels
(tens of seconds); the warm-up absorbs it.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from core.losses import rho

SHAPE = (256, 3072)


def direct_formula(r: torch.Tensor, alpha, scale) -> torch.Tensor:
    alpha = torch.as_tensor(alpha, device=r.device)
    scale = torch.as_tensor(scale, device=r.device)
    b = (alpha - 2).abs()
    return b / alpha * (((r / scale) ** 2 / b + 1) ** (alpha / 2) - 1)


def mse(r: torch.Tensor, alpha, scale) -> torch.Tensor:
    return r * r


@contextlib.contextmanager
def fused_switched(on: bool):
    old = os.environ.get("ROBUST_LOSS_FUSED")
    os.environ["ROBUST_LOSS_FUSED"] = "1" if on else "0"
    try:
        yield
    finally:
        if old is None:
            del os.environ["ROBUST_LOSS_FUSED"]
        else:
            os.environ["ROBUST_LOSS_FUSED"] = old


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
        if isinstance(t, torch.Tensor):
            t.grad = None
    fn(r, alpha, scale).mean().backward()


def cpu_name() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "cpu"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--alpha", type=float, default=1.3, help="the α timed (1.3: a generic α)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: this thread's CPU time (CPU device only), less disturbed by other jobs "
                             "sharing the cores than the wall clock")
    args = parser.parse_args()
    if args.clock == "cpu" and args.device != "cpu":
        parser.error("--clock cpu measures the CPU only; use the wall clock on CUDA")
    clock = time.thread_time if args.clock == "cpu" else time.perf_counter
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    gen = torch.Generator().manual_seed(0)
    r = (torch.randn(SHAPE, generator=gen) * 0.2).to(device).requires_grad_(True)
    fused_modes = [True, False] if device.type == "cuda" else [True]
    cases = {}
    for mode in ("fixed", "adaptive"):
        if mode == "fixed":
            alpha, scale = args.alpha, 0.1
        else:
            alpha = torch.full((SHAPE[1],), args.alpha, device=device, requires_grad=True)
            scale = torch.full((SHAPE[1],), 0.1, device=device, requires_grad=True)
        if mode == "fixed":
            cases["mse/fixed"] = (mse, alpha, scale, True)
        cases[f"direct/{mode}"] = (direct_formula, alpha, scale, True)
        for on in fused_modes:
            cases[f"{'ours' if on else 'ours-eager'}/{mode}"] = (rho, alpha, scale, on)

    times: dict[str, list[float]] = {k: [] for k in cases}
    for _ in range(3):  # warm-up (compiles the fused kernels on CUDA)
        for fn, alpha, scale, on in cases.values():
            with fused_switched(on):
                step(fn, r, alpha, scale)
    for _ in range(args.repeats):
        for key, (fn, alpha, scale, on) in cases.items():
            with fused_switched(on):
                sync()
                start = clock()
                step(fn, r, alpha, scale)
                sync()
            times[key].append(clock() - start)

    input_bytes = r.numel() * r.element_size()
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name()
    print(f"device {device} ({name}), torch {torch.__version__}, threads {torch.get_num_threads()}, "
          f"α = {args.alpha:g}, batch {SHAPE[0]}x{SHAPE[1]}, {args.repeats} repeats, median ms ({args.clock} "
          f"clock), load average {os.getloadavg()[0]:.1f}, {datetime.date.today().isoformat()}")
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    for key, (fn, alpha, scale, on) in cases.items():
        with fused_switched(on):
            kept = saved_bytes(fn, r, alpha, scale) / input_bytes
            peak = ""
            if device.type == "cuda":
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                step(fn, r, alpha, scale)
                peak = f"  peak +{(torch.cuda.max_memory_allocated(device) - base) / input_bytes:.1f} inputs"
        print(f"  {key:20s} {median[key]:8.2f} ms   saved for backward {kept:4.1f}x input{peak}")
    for mode in ("fixed", "adaptive"):
        for label in (["ours", "ours-eager"] if device.type == "cuda" else ["ours"]):
            ours, direct = median[f"{label}/{mode}"], median[f"direct/{mode}"]
            print(f"{mode:8s} {label:10s}: {direct / ours:.2f}x faster than the direct formula, "
                  f"{ours / median['mse/fixed']:.2f}x the time of MSE")


if __name__ == "__main__":
    main()
