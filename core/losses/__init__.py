"""Barron's general robust loss family (arXiv 1701.03077): ρ, ψ, ψ/x, log Z, the NLL of the distribution,
sampling, the adaptive loss and the registry of named losses; plus the Student's t, Cauchy and normal
NLLs for likelihood comparisons. Tensors in, tensors out; α and c broadcast."""

from core.losses.adaptive import AdaptiveLoss
from core.losses.distribution import nll, sample
from core.losses.general import psi, rho, weight
from core.losses.partition import log_partition
from core.losses.registry import LOSSES, LossInfo, make_loss
from core.losses.students_t import cauchy_nll, normal_nll, students_t_nll

__all__ = [
    "LOSSES",
    "AdaptiveLoss",
    "LossInfo",
    "cauchy_nll",
    "log_partition",
    "make_loss",
    "nll",
    "normal_nll",
    "psi",
    "rho",
    "sample",
    "students_t_nll",
    "weight",
]
