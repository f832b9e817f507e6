"""Barron's general robust loss family (arXiv 1701.03077): ρ, ψ, ψ/x, log Z, the NLL, sampling,
the adaptive loss and the registry of named losses. Tensors in, tensors out; α and c broadcast."""

from core.losses.adaptive import AdaptiveLoss
from core.losses.distribution import density, nll, sample
from core.losses.general import psi, rho, weight
from core.losses.partition import log_partition
from core.losses.registry import LOSSES, LossInfo, make_loss

__all__ = [
    "LOSSES",
    "AdaptiveLoss",
    "LossInfo",
    "density",
    "log_partition",
    "make_loss",
    "nll",
    "psi",
    "rho",
    "sample",
    "weight",
]
