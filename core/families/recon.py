"""The reconstruction loss: the lab's subject, a component every family with a decoder takes.

    recon_i = Σ_pixels ρ(x_i − x̂_i)        ρ = core.losses.make_loss(config["loss"], C·H·W, ...)

Its fields (`LOSS_FIELDS`) are declared here once, with the rules of which apply to which loss: α only
for "general", ν only for Student's t, no scale for MSE and L1, the α bounds only for the adaptive loss.
The adaptive loss's α and c are parameters of the loss module, so they are trained and saved with the
model (under `loss.` in model.safetensors).
"""

from __future__ import annotations

import torch
from torch import nn

from core.fields import ConfigError, Field
from core.losses import LOSSES, make_loss

__all__ = ["ALPHA_LOSSES", "LOSS_FIELDS", "UNSCALED_LOSSES", "build_loss", "check_loss", "loss_label",
           "reconstruction_cost"]

ALPHA_LOSSES = ("general",)  # the losses whose α loss_alpha sets
NU_LOSSES = ("students_t",)  # the losses whose ν loss_nu sets
UNSCALED_LOSSES = ("mse", "l1")  # the losses without a scale c (loss_scale is refused)
MAX_ALPHA = 1e6  # |α|; α = −∞ is the named loss "welsch"
MIN_SCALE, MAX_SCALE = 1e-20, 1e20  # c enters as x/c and log c in float32: 1e-300 would round to 0

LOSS_FIELDS: tuple[Field, ...] = (
    Field("loss", "choice", "mse", "Reconstruction loss", choices=tuple(LOSSES),
          help="ρ summed over pixels; the adaptive loss learns α and c per pixel"),
    Field("loss_alpha", "float", None, "α (shape)", optional=True, lo=-MAX_ALPHA, hi=MAX_ALPHA,
          applies=lambda c: c.get("loss") in ALPHA_LOSSES,
          help="the general loss's α: 2 = L2, 1 = Charbonnier, 0 = Cauchy, −2 = Geman-McClure"),
    Field("loss_nu", "float", None, "ν (degrees of freedom)", optional=True, lo=0.0, strict_lo=True, hi=1e6,
          applies=lambda c: c.get("loss") in NU_LOSSES, help="Student's t degrees of freedom (default 2)"),
    Field("loss_scale", "float", None, "Scale c", optional=True, lo=MIN_SCALE, hi=MAX_SCALE,
          applies=lambda c: c.get("loss") not in UNSCALED_LOSSES,
          help="where the loss bends (pixels lie in [0, 1]); empty: the loss's default"),
    Field("adaptive_alpha_lo", "float", 0.0, "Lowest α", lo=0.0, hi=MAX_ALPHA,
          applies=lambda c: c.get("loss") == "adaptive", advanced=True,
          help="the adaptive loss learns α in [lowest, highest]; its NLL exists for α ≥ 0"),
    Field("adaptive_alpha_hi", "float", 3.0, "Highest α", lo=0.0, hi=MAX_ALPHA,
          applies=lambda c: c.get("loss") == "adaptive", advanced=True),
)


def check_loss(cfg: dict, num_dims: int) -> None:
    """The loss rules across fields (ConfigError naming the field), then that the loss can be built."""
    name = cfg["loss"]
    if cfg.get("loss_alpha") is not None and name not in ALPHA_LOSSES:
        hint = " (the adaptive loss learns α: bound it with the lowest/highest α)" if name == "adaptive" else ""
        raise ConfigError(f"loss_alpha applies only to general, the general loss, not {name!r}{hint}; leave it "
                          f"empty or choose the general loss", "loss_alpha")
    if cfg.get("loss_nu") is not None and name not in NU_LOSSES:
        raise ConfigError(f"loss_nu applies only to Student's t, not {name!r}; leave it empty", "loss_nu")
    if cfg.get("loss_scale") is not None and name in UNSCALED_LOSSES:
        raise ConfigError(f"loss_scale has no effect on {name!r}; leave it empty", "loss_scale")
    if name == "general" and cfg.get("loss_alpha") is None:
        raise ConfigError("loss_alpha is needed by the general loss: give its α (--loss-alpha; e.g. 1.0, 2 = MSE, "
                          "0 = Cauchy)", "loss_alpha")
    if not cfg["adaptive_alpha_lo"] < cfg["adaptive_alpha_hi"]:
        raise ConfigError(f"adaptive_alpha_lo must be below adaptive_alpha_hi (the adaptive loss's lowest and "
                          f"highest α; got {cfg['adaptive_alpha_lo']:g} and {cfg['adaptive_alpha_hi']:g})",
                          "adaptive_alpha_lo")
    try:
        build_loss(cfg, num_dims)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss {name!r}: {exc}", "loss") from exc


def build_loss(config: dict, num_dims: int) -> nn.Module:
    """The per-element reconstruction loss a config names, for `num_dims` elements per example."""
    name = config["loss"]
    shape = config.get("loss_nu") if name in NU_LOSSES else config.get("loss_alpha")
    return make_loss(name, num_dims, alpha=shape, scale=config.get("loss_scale"),
                     alpha_lo=config.get("adaptive_alpha_lo", 0.0), alpha_hi=config.get("adaptive_alpha_hi", 3.0))


def reconstruction_cost(loss: nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Σ over each example's pixels of ρ(x − x̂), float32, shape (B,)."""
    return loss((x - x_hat.float()).flatten(1)).sum(dim=1)


def loss_label(config: dict) -> str:
    """The loss as tables name it: "Cauchy", "General (α=1)", "Student's t (ν=2)", "Adaptive (α∈[0, 3])"."""
    name = str(config.get("loss", "?"))
    info = LOSSES.get(name)
    title = info.title if info else name
    if name in ALPHA_LOSSES and config.get("loss_alpha") is not None:
        return f"General (α={config['loss_alpha']:g})"
    if name in NU_LOSSES and config.get("loss_nu") is not None:
        return f"Student's t (ν={config['loss_nu']:g})"
    if name == "adaptive":
        lo, hi = config.get("adaptive_alpha_lo", 0.0), config.get("adaptive_alpha_hi", 3.0)
        if (lo, hi) != (0.0, 3.0):
            return f"Adaptive (α∈[{lo:g}, {hi:g}])"
    return title
