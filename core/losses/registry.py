"""Named per-element reconstruction losses, built by name for training: `make_loss(name, num_dims)`.

Every loss maps a residual r of shape (N, D) to a per-element cost of the same shape (float32).

| name | per-element cost | in the general family | normalised likelihood |
| --- | --- | --- | --- |
| mse | r² | yes: ρ(r, 2, 1/√2) | yes (normal) |
| l1 | \\|r\\| | no (Charbonnier's c → 0 limit) | yes (Laplace) |
| smooth_l1 | Huber: r²/(2c) if \\|r\\| < c else \\|r\\| − c/2 | no: piecewise, not a member | yes |
| charbonnier | ρ(r, 1, c) = √((r/c)² + 1) − 1 | yes, α = 1 | yes |
| cauchy | ρ(r, 0, c) = log(½(r/c)² + 1) | yes, α = 0 | yes |
| geman_mcclure | ρ(r, −2, c) = 2(r/c)²/((r/c)² + 4) | yes, α = −2 | no (bounded: exp(−ρ) does not integrate) |
| welsch | ρ(r, −∞, c) = 1 − exp(−½(r/c)²) | yes, α = −∞ | no (bounded) |
| students_t | ((ν+1)/2)·log(1 + (r/c)²/ν) | only at ν = 1 (Cauchy) | yes |
| general | ρ(r, α, c) at a chosen α | yes | for α ≥ 0 |
| adaptive | −log p(r \\| α, c), α and c learned per dimension | yes | yes |
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from core.losses.adaptive import AdaptiveLoss
from core.losses.general import rho


@dataclass(frozen=True)
class LossInfo:
    """What a named loss is: its title, α (None when not a fixed member), likelihood and family facts."""

    name: str
    title: str
    alpha: float | None
    has_likelihood: bool
    in_family: bool
    learnable: bool
    default_scale: float
    description: str


# Pixels are scaled to [0, 1]; c = 0.1 puts the bend of the robust losses inside that range.
_SCALE = 0.1

LOSSES: dict[str, LossInfo] = {
    info.name: info
    for info in [
        LossInfo("mse", "MSE", 2.0, True, True, False, 1 / math.sqrt(2), "Squared error r²: the normal NLL."),
        LossInfo("l1", "L1", None, True, False, False, 1.0, "Absolute error |r|: the Laplace NLL."),
        LossInfo(
            "smooth_l1", "Smooth L1", None, True, False, False, _SCALE,
            "Huber: quadratic within c, linear outside; not a member of the family (Charbonnier is its "
            "smooth cousin).",
        ),
        LossInfo("charbonnier", "Charbonnier", 1.0, True, True, False, _SCALE, "α = 1, pseudo-Huber."),
        LossInfo("cauchy", "Cauchy", 0.0, True, True, False, _SCALE, "α = 0, Cauchy/Lorentzian."),
        LossInfo(
            "geman_mcclure", "Geman-McClure", -2.0, False, True, False, _SCALE,
            "α = −2: bounded, so it has no normalised likelihood.",
        ),
        LossInfo(
            "welsch", "Welsch", -math.inf, False, True, False, _SCALE,
            "α = −∞, Welsch/Leclerc: bounded, so it has no normalised likelihood.",
        ),
        LossInfo(
            "students_t", "Student's t", None, True, False, False, _SCALE,
            "Student's t NLL with ν degrees of freedom (nu=, default 2); equals Cauchy only at ν = 1.",
        ),
        LossInfo("general", "General (α)", None, True, True, False, _SCALE, "ρ(r, α, c) at a chosen α."),
        LossInfo(
            "adaptive", "Adaptive", None, True, True, True, 1.0,
            "NLL of the general distribution with α and c learned per dimension.",
        ),
    ]
}


class GeneralRho(nn.Module):
    """ρ(r, α, c) at a fixed α and c (buffers, saved with the model but not trained)."""

    def __init__(self, alpha: float, scale: float) -> None:
        super().__init__()
        self.register_buffer("alpha", torch.tensor(float(alpha)))
        self.register_buffer("scale", torch.tensor(float(scale)))
        # The same values as Python numbers, which rho() uses without reading a (GPU) tensor each step;
        # taken from the arguments (so that building on the meta device, to count shapes, works too), rounded
        # to float32 as the buffers hold them and a resumed run reads them back: bit for bit the same values.
        self._numbers = tuple(torch.tensor(float(v), device="cpu").item() for v in (alpha, scale))
        self.register_load_state_dict_post_hook(GeneralRho._reread)

    @staticmethod
    def _reread(module: GeneralRho, _incompatible: object) -> None:
        module._numbers = (float(module.alpha), float(module.scale))

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return rho(residual.float(), *self._numbers)


class SquaredError(nn.Module):
    """r²."""

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        r = residual.float()
        return r * r


class AbsoluteError(nn.Module):
    """|r|."""

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return residual.float().abs()


class Huber(nn.Module):
    """r²/(2c) for |r| < c, |r| − c/2 beyond (PyTorch's smooth_l1 with beta = c)."""

    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = float(scale)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        r = residual.float()
        return nn.functional.smooth_l1_loss(r, torch.zeros_like(r), reduction="none", beta=self.scale)


class StudentT(nn.Module):
    """((ν+1)/2)·log1p((r/c)²/ν): the Student's t NLL up to its constant."""

    def __init__(self, nu: float, scale: float) -> None:
        super().__init__()
        if not nu > 0:
            raise ValueError(f"Student's t needs ν > 0 degrees of freedom (got {nu})")
        self.nu, self.scale = float(nu), float(scale)

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        r = residual.float() / self.scale
        return (self.nu + 1) / 2 * torch.log1p(r * r / self.nu)


def make_loss(
    name: str,
    num_dims: int,
    *,
    alpha: float | None = None,
    nu: float | None = None,
    scale: float | None = None,
    alpha_lo: float = 0.0,
    alpha_hi: float = 3.0,
) -> nn.Module:
    """The per-element loss `name` as a module: module(r) has r's shape. Only 'adaptive' has parameters.

    `alpha` is α for 'general' (required there), `nu` the degrees of freedom ν for 'students_t' (default 2);
    `scale` is c (None: the loss's default, LOSSES[name].default_scale); alpha_lo/alpha_hi bound the
    adaptive α.
    """
    if name not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; choose one of: {', '.join(LOSSES)}")
    info = LOSSES[name]
    c = info.default_scale if scale is None else float(scale)
    if not c > 0:
        raise ValueError(f"scale c must be > 0 (got {c})")
    if name == "mse":
        return SquaredError()
    if name == "l1":
        return AbsoluteError()
    if name == "smooth_l1":
        return Huber(c)
    if name == "students_t":
        return StudentT(2.0 if nu is None else nu, c)
    if name == "adaptive":
        return AdaptiveLoss(num_dims, alpha_lo=alpha_lo, alpha_hi=alpha_hi, scale_init=c)
    if name == "general":
        if alpha is None:
            raise ValueError("the 'general' loss needs alpha (e.g. --loss-alpha 1.0)")
        return GeneralRho(alpha, c)
    return GeneralRho(info.alpha, c)
