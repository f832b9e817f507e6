"""Which device to train on, and how many CPU threads to use.

    resolve_device("auto") -> cuda (if available) else cpu;  "cuda" without a GPU -> DeviceError (with the fix)
    configure_threads(n)   -> torch intra-op threads (None: leave torch's default)
    tune_backend(device)   -> per-device speed settings (cuDNN autotuning, TF32 matmuls on CUDA)
"""

from __future__ import annotations

import torch

__all__ = ["DeviceError", "configure_threads", "resolve_device", "tune_backend"]


class DeviceError(RuntimeError):
    """The requested device cannot be used here."""


def resolve_device(name: str | torch.device = "auto", local_rank: int | None = None) -> torch.device:
    """The torch.device for "auto" | "cpu" | "cuda" | "cuda:N" (local_rank picks the GPU under torchrun)."""
    name = str(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise DeviceError("CUDA was asked for but no GPU is visible to PyTorch; use --device cpu (or auto), "
                              "or install a CUDA build of torch on a machine with a GPU")
        if name == "cuda":
            # An explicit index: DDP's device_ids and torch.cuda.set_device need one.
            name = f"cuda:{local_rank if local_rank is not None else torch.cuda.current_device()}"
        device = torch.device(name)
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise DeviceError(f"{name}: only {torch.cuda.device_count()} GPU(s) visible")
        return device
    if name != "cpu":
        raise DeviceError(f"unknown device {name!r}; use auto, cpu or cuda")
    return torch.device("cpu")


def configure_threads(threads: int | None) -> None:
    """Set torch's intra-op threads (on a shared machine, fewer threads than cores is often faster)."""
    if threads is not None:
        if threads < 1:
            raise ValueError(f"threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def tune_backend(device: torch.device) -> None:
    """Speed settings that do not change results on the CPU: cuDNN autotune and TF32 on CUDA."""
    if device.type == "cuda":
        torch.cuda.set_device(device)
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
