"""Fused GPU kernels: the elementwise formulas of `formulas`, compiled by torch.compile, used only on CUDA.

On a GPU an elementwise loss is bound by memory traffic, and eager PyTorch runs each of the formulas'
dozens of operations as its own kernel, reading and writing the whole batch each time. Compiled, the
forward pass is one kernel that reads x and writes ρ and ψ, and backward one kernel per gradient
(plus the float64 reduction over broadcast α and c). The kernels compute in float64 internally (the
branch-free `static=True` formulas: every member and branch evaluated, the right one selected), so
they are exact wherever the eager CPU path is, without its data-dependent recomputation; data-centre
GPUs run float64 at half the float32 rate, which an elementwise kernel does not notice.

Set ROBUST_LOSS_FUSED=0 to use the eager path on CUDA too. The same functions run on the CPU in the
tests (eagerly, and compiled where a C++ compiler is present) to check them against the eager path.
"""

from __future__ import annotations

import functools
import os

import torch

from core.losses import formulas
from core.losses.numerics import saturate_, saturating_cast, sum_to_shape


def fixed_kernel(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(ρ, ψ) in x's dtype for 0-dim α and c: branch-free, float64 inside."""
    xd, ad, cd = x.double(), alpha.double(), scale.double()
    rho = formulas.rho_values(xd, ad, cd, static=True)
    xs, w = formulas.psi_factor(xd, ad, cd, static=True)
    psi = saturate_(xs * w) / cd
    return saturating_cast(rho, x.dtype), saturating_cast(psi, x.dtype)


def general_rho_kernel(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ρ in x's dtype for broadcasting tensors α and c: branch-free, float64 inside."""
    return saturating_cast(formulas.rho_values(x.double(), alpha.double(), scale.double(), static=True), x.dtype)


def general_grads_kernel(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, g: torch.Tensor,
                         classes: tuple[str, ...] = ("mid", "high", "low")
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(g·∂ρ/∂x, g·∂ρ/∂α, g·∂ρ/∂c) elementwise in float64 (broadcast shape), branch-free; `classes`
    (see `formulas.alpha_classes`) limits the far forms of ∂ρ/∂α compiled in (the adaptive loss's
    α ∈ [0, 3] needs one)."""
    xd, ad, cd, gd = x.double(), alpha.double(), scale.double(), g.double()
    xs, w = formulas.psi_factor(xd, ad, cd, static=True)
    grad_x = saturate_(saturate_(xs * w) / cd * gd)
    grad_c = saturate_(grad_x * xs).neg()
    grad_a = saturate_(formulas.drho_dalpha(xd, ad, cd, static=True, classes=classes) * gd)
    return grad_x, grad_a, grad_c


def _enabled() -> bool:
    return os.environ.get("ROBUST_LOSS_FUSED", "1") != "0" and torch.cuda.is_available()


@functools.cache
def compiled(name: str, classes: tuple[str, ...] = ()):
    """The kernel `name` compiled once per process (dynamic shapes, one graph; per class set for grads)."""
    if name == "grads":
        fn = functools.partial(general_grads_kernel, classes=classes)
    else:
        fn = {"fixed": fixed_kernel, "rho": general_rho_kernel}[name]
    return torch.compile(fn, dynamic=True, fullgraph=True)


def available(*tensors: torch.Tensor) -> bool:
    """True when the fused kernels apply: every tensor on a CUDA device, and not switched off."""
    return all(t.device.type == "cuda" for t in tensors) and _enabled()


class FusedFixedLoss(torch.autograd.Function):
    """ρ(x, α, c) for numbers α and c on CUDA: one kernel computes ρ and ψ; ψ (1× x) is saved."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, a: float, c: float) -> torch.Tensor:
        alpha = torch.tensor(a, dtype=torch.float64, device=x.device)
        scale = torch.tensor(c, dtype=torch.float64, device=x.device)
        xc = x if x.dtype in (torch.float32, torch.float64) else x.float()
        rho, psi = compiled("fixed")(xc, alpha, scale)
        ctx.save_for_backward(psi)
        ctx.x_dtype = x.dtype
        return rho.to(x.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_out: torch.Tensor):
        (psi,) = ctx.saved_tensors
        return saturate_(psi * grad_out.to(psi.dtype)).to(ctx.x_dtype), None, None


def fixed_rho(x: torch.Tensor, a: float, c: float) -> torch.Tensor:
    """The fixed-α loss through the fused kernel (x on CUDA)."""
    return FusedFixedLoss.apply(x, a, c)


def general_rho(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """ρ for tensor α and c through the fused kernel."""
    return compiled("rho")(x, alpha, scale)


def general_grads(x: torch.Tensor, alpha: torch.Tensor, scale: torch.Tensor, grad_out: torch.Tensor,
                  need: tuple[bool, bool, bool]) -> list[torch.Tensor | None]:
    """The three gradients reduced to the inputs' shapes (float64 accumulation, saturated)."""
    # (one small read of α per step, to pick the kernel for the α present)
    grads = compiled("grads", formulas.alpha_classes(alpha))(x, alpha, scale, grad_out)
    shapes = (x.shape, alpha.shape, scale.shape)
    dtypes = (x.dtype, alpha.dtype, scale.dtype)
    return [sum_to_shape(g, s, d) if n else None for g, s, d, n in zip(grads, shapes, dtypes, need, strict=True)]
