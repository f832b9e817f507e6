"""The model families the lab trains, by name: `FAMILIES["vae"]`, `family_of(config)`.

Each is one module here (see core/families/base.py for the protocol and docs/FAMILIES.md for how to add
one); this registry is the only list of them.
"""

from __future__ import annotations

from typing import Any

import torch

from core.families.base import Batch, Family, Objective, Representation, Term, load_weights, weights_of
from core.families.class_ae import ClassPenaltyAE
from core.families.vae import VAE
from core.families.vicreg import VICReg
from core.families.vqvae import VQVAE

__all__ = ["FAMILIES", "Batch", "Family", "Objective", "Representation", "Term", "family_of", "get_family",
           "load_objective", "load_weights", "register", "weights_of"]

FAMILIES: dict[str, Family] = {}


def register(family: Family) -> Family:
    """Add a family to the registry (the lab's own are registered below; a test may add a throwaway one)."""
    FAMILIES[family.name] = family
    return family


for _family in (VAE(), VQVAE(), ClassPenaltyAE(), VICReg()):
    register(_family)


def get_family(name: str) -> Family:
    """The family called `name`; ValueError naming the known ones otherwise."""
    try:
        return FAMILIES[name]
    except KeyError:
        raise ValueError(f"unknown model family {name!r}; choose one of {', '.join(FAMILIES)}") from None


def family_of(config: dict) -> Family:
    """The family a run's config names (run format 1 configs, which name none, are VAEs)."""
    return get_family(str(config.get("family", "vae")))


def load_objective(run: Any, device: str | torch.device = "cpu") -> Objective:
    """A finished (or checkpointed) run's trained objective, rebuilt from its config and model.safetensors,
    in eval mode. RunFormatError (core.runs) when the weights do not fit the model config.json describes."""
    from core.runs import RunFormatError

    family = family_of(run.config)
    try:
        objective = family.build(run.config)
    except (ValueError, KeyError, TypeError) as exc:
        raise RunFormatError(f"{run.path}/config.json describes a model that cannot be built ({exc}); the run is "
                             f"damaged") from None
    try:
        load_weights(objective, run.model_tensors())
    except RuntimeError as exc:
        raise RunFormatError(f"{run.path}/model.safetensors does not fit the model in config.json: {exc}") from None
    return objective.to(device).eval()
