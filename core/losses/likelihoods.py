"""Normalised per-coefficient likelihoods with learned parameters: Barron's four VAE distributions (§VAE).

Each module maps a residual r of shape (N, D) to the per-element negative log-likelihood −log p(r_d)
(float32, same shape), with one learned scale per coefficient d (and a learned ν or α where the
distribution has one). All are normalised densities of r — their log c, log Z(α) and log-gamma terms are
in — so the summed NLL of a model's residual is a distortion in nats, and an ELBO built on it is a bound
on the log-density of the image (on a volume-preserving representation, core.representations).

    normal      −log N(r; 0, c²)                       = ½(r/c)² + log c + ½ log 2π
    cauchy      the general distribution at α = 0      = log1p(r²/(2c²)) + log c + log(π√2)
                (a Cauchy of scale √2·c, as Barron fixes α = 0 in his adaptive loss)
    students_t  −log t_ν(r / s)/s, ν and s learned     (core.losses.students_t_nll)
    general     ρ(r, α, c) + log c + log Z(α),          α ∈ [0, 3] learned (core.losses.nll)

Parameterisation (Barron's, `robust_loss_pytorch/adaptive.py` and `util.py`, re-derived): from latents ℓ
initialised at 0,

    c = (c_init − c_lo)·softplus(k·ℓ_c + softplus⁻¹(1)) + c_lo        c_init = 0.01, c_lo = 1e-8
    α = α_lo + (α_hi − α_lo)·sigmoid(k·ℓ_α + logit((α_init − α_lo)/(α_hi − α_lo)))   α ∈ [0, 3], α_init = 1
    ν = exp(k·ℓ_ν)                                                     ν_init = 1 (a Cauchy)

k = `rate` is 1 in Barron's code. Under Adam a latent moves by about the learning rate per step whatever
its gradient, so k multiplies how fast these parameters learn; Barron trained 50,000 steps, and a short
run on this machine a few hundred, in which c could move by a factor of about 2 at k = 1.

The lab's `AdaptiveLoss` (core.losses.adaptive) differs in its scale: c = softplus(ℓ) + c_lo, started at
ℓ = softplus⁻¹(c_init − c_lo). Both give c_init at the start, but they learn differently: there log c
moves by about one per unit of ℓ for every c ≪ 1, while in Barron's it does so only for c ≪ c_init, and
above c_init c grows only linearly in ℓ (c ≈ c_init·ℓ): a scale that must grow from 0.01 to 0.1 needs
9.5 units of ℓ in Barron's parameterisation and 2.35 in AdaptiveLoss's. Its α_init defaults to the
midpoint 1.5 (Barron's VAE: 1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn
from torch.nn import functional as F

from core.losses.distribution import nll as general_nll
from core.losses.students_t import cauchy_nll, normal_nll, students_t_nll

__all__ = ["ALPHA_HI", "ALPHA_INIT", "ALPHA_LO", "LIKELIHOODS", "SCALE_INIT", "SCALE_LO", "CauchyLikelihood",
           "GeneralLikelihood", "Likelihood", "LikelihoodInfo", "NormalLikelihood", "StudentsTLikelihood",
           "make_likelihood"]

SCALE_INIT, SCALE_LO = 0.01, 1e-8  # Barron's VAE: scale_init 1e-2, scale_lo 1e-8
ALPHA_LO, ALPHA_HI, ALPHA_INIT = 0.0, 3.0, 1.0  # Barron's VAE: ADAPTIVE alpha_lo 0, alpha_hi 3, alpha_init 1
_SOFTPLUS_INV_ONE = math.log(math.e - 1)  # softplus⁻¹(1)
_SQRT2 = math.sqrt(2.0)


@dataclass(frozen=True)
class LikelihoodInfo:
    """A distribution as the app names it: its key, title, what it learns per coefficient, a sentence."""

    name: str
    title: str
    learns: tuple[str, ...]
    description: str


LIKELIHOODS: dict[str, LikelihoodInfo] = {
    i.name: i for i in (
        LikelihoodInfo("normal", "Normal", ("scale",), "N(0, c²) per coefficient, c learned (α = 2)."),
        LikelihoodInfo("cauchy", "Cauchy", ("scale",),
                       "the general distribution at α = 0 (a Cauchy of scale √2·c), c learned per coefficient."),
        LikelihoodInfo("students_t", "Student's t", ("nu", "scale"),
                       "Student's t with ν and scale learned per coefficient (ν starts at 1, a Cauchy)."),
        LikelihoodInfo("general", "General", ("alpha", "scale"),
                       "Barron's general distribution with α ∈ [0, 3] and c learned per coefficient."),
    )
}


class Likelihood(nn.Module):
    """A per-coefficient likelihood with a learned scale (Barron's parameterisation; see the module doc).

    forward(residual (..., num_dims)) -> −log p per element, float32. `maps()` gives the learned
    parameters per coefficient: {"scale": (num_dims,), and "alpha" or "nu" where learned}."""

    name: ClassVar[str] = ""

    def __init__(self, num_dims: int, *, scale_init: float = SCALE_INIT, scale_lo: float = SCALE_LO,
                 rate: float = 1.0) -> None:
        super().__init__()
        if not 0 < scale_lo < scale_init:
            raise ValueError(f"need 0 < scale_lo < scale_init (got {scale_lo}, {scale_init})")
        if not (rate > 0 and math.isfinite(rate)):
            raise ValueError(f"rate must be a positive number (got {rate})")
        self.num_dims = int(num_dims)
        self.scale_init, self.scale_lo, self.rate = float(scale_init), float(scale_lo), float(rate)
        self.scale_latent = nn.Parameter(torch.zeros(self.num_dims))

    def scale(self) -> torch.Tensor:
        """c per coefficient, (num_dims,): c_init at initialisation, never below c_lo."""
        return (self.scale_init - self.scale_lo) * F.softplus(self.rate * self.scale_latent + _SOFTPLUS_INV_ONE) \
            + self.scale_lo

    def maps(self) -> dict[str, torch.Tensor]:
        return {"scale": self.scale()}

    def _check(self, residual: torch.Tensor) -> torch.Tensor:
        if residual.shape[-1] != self.num_dims:
            raise ValueError(f"residual's last dimension is {residual.shape[-1]}, expected {self.num_dims}")
        return residual.float()

    def extra_repr(self) -> str:
        return (f"num_dims={self.num_dims}, scale_init={self.scale_init:g}, scale_lo={self.scale_lo:g}, "
                f"rate={self.rate:g}")


class NormalLikelihood(Likelihood):
    """−log N(r; 0, c²) per coefficient."""

    name = "normal"

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return normal_nll(self._check(residual), self.scale())


class CauchyLikelihood(Likelihood):
    """The general distribution at α = 0 with scale c: a Cauchy of scale √2·c."""

    name = "cauchy"

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return cauchy_nll(self._check(residual), _SQRT2 * self.scale())


class StudentsTLikelihood(Likelihood):
    """Student's t with ν = exp(k·ℓ_ν) (ν = 1 at initialisation) and scale s, per coefficient."""

    name = "students_t"

    def __init__(self, num_dims: int, **kwargs: float) -> None:
        super().__init__(num_dims, **kwargs)
        self.log_df_latent = nn.Parameter(torch.zeros(self.num_dims))

    def nu(self) -> torch.Tensor:
        """ν per coefficient, (num_dims,)."""
        return torch.exp(self.rate * self.log_df_latent)

    def maps(self) -> dict[str, torch.Tensor]:
        return {"nu": self.nu(), "scale": self.scale()}

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return students_t_nll(self._check(residual), self.nu(), self.scale())


class GeneralLikelihood(Likelihood):
    """Barron's general distribution with α ∈ [alpha_lo, alpha_hi] and c learned per coefficient."""

    name = "general"

    def __init__(self, num_dims: int, *, alpha_lo: float = ALPHA_LO, alpha_hi: float = ALPHA_HI,
                 alpha_init: float = ALPHA_INIT, **kwargs: float) -> None:
        super().__init__(num_dims, **kwargs)
        if not 0 <= alpha_lo < alpha_init < alpha_hi < math.inf:
            raise ValueError(f"need 0 ≤ alpha_lo < alpha_init < alpha_hi < ∞ (got {alpha_lo}, {alpha_init}, "
                             f"{alpha_hi}): the distribution exists only for α ≥ 0")
        self.alpha_lo, self.alpha_hi, self.alpha_init = float(alpha_lo), float(alpha_hi), float(alpha_init)
        fraction = (alpha_init - alpha_lo) / (alpha_hi - alpha_lo)
        self._alpha_offset = math.log(fraction / (1 - fraction))
        self.alpha_latent = nn.Parameter(torch.zeros(self.num_dims))

    def alpha(self) -> torch.Tensor:
        """α per coefficient, (num_dims,)."""
        return self.alpha_lo + (self.alpha_hi - self.alpha_lo) * torch.sigmoid(
            self.rate * self.alpha_latent + self._alpha_offset)

    def maps(self) -> dict[str, torch.Tensor]:
        return {"alpha": self.alpha(), "scale": self.scale()}

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return general_nll(self._check(residual), self.alpha(), self.scale())

    def extra_repr(self) -> str:
        return super().extra_repr() + f", alpha in [{self.alpha_lo:g}, {self.alpha_hi:g}] from {self.alpha_init:g}"


_CLASSES: dict[str, type[Likelihood]] = {c.name: c for c in (NormalLikelihood, CauchyLikelihood, StudentsTLikelihood,
                                                             GeneralLikelihood)}


def make_likelihood(name: str, num_dims: int, *, scale_init: float = SCALE_INIT, scale_lo: float = SCALE_LO,
                    rate: float = 1.0) -> Likelihood:
    """The likelihood `name` (one of LIKELIHOODS) over `num_dims` coefficients."""
    if name not in _CLASSES:
        raise ValueError(f"unknown distribution {name!r}; choose one of {', '.join(LIKELIHOODS)}")
    return _CLASSES[name](num_dims, scale_init=scale_init, scale_lo=scale_lo, rate=rate)
