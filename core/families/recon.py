"""The reconstruction loss: the lab's subject, a component every family with a decoder takes.

    recon_i = Σ_pixels ρ(x_i − x̂_i)        ρ = core.losses.make_loss(config["loss"], C·H·W, ...)

Its fields (`LOSS_FIELDS`) are declared here once, with the rules of which apply to which loss: α only
for "general", ν only for Student's t, no scale for MSE and L1, the α bounds only for the adaptive loss.
The adaptive loss's α and c are parameters of the loss module, so they are trained and saved with the
model (under `loss.` in model.safetensors).

The annealed α (Barron 2019's depth experiment, "annealing α = 2 → 0"): the general loss with
`loss_alpha_schedule` set follows, instead of a fixed α, a schedule over the fraction f ∈ [0, 1) of
training done before each step (`Batch.fraction`):

    linear   α(f) = α_start + (α_end − α_start)·f
    cosine   α(f) = α_end + (α_start − α_end)·½(1 + cos πf)

ρ keeps its fixed scale c (`loss_scale`); the loss is ρ itself, not an NLL. `track_training_fraction`
(called by the family's `build`) makes the objective hand each batch's fraction to the schedule before
its forward; the current α is kept in the loss module (a buffer, saved with the weights: a resumed or a
reloaded run knows where its schedule stood) and logged per step as the term `alpha` (`schedule_terms`).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from core.families.base import Term
from core.fields import ConfigError, Field
from core.losses import LOSSES, make_loss
from core.losses.general import rho

__all__ = [
    "ALPHA_LOSSES",
    "ALPHA_SCHEDULES",
    "ALPHA_TERM",
    "LOSS_FIELDS",
    "UNSCALED_LOSSES",
    "ScheduledRho",
    "build_loss",
    "check_loss",
    "loss_label",
    "reconstruction_cost",
    "schedule_terms",
    "scheduled",
    "scheduled_alpha",
    "track_training_fraction",
]

ALPHA_LOSSES = ("general",)  # the losses whose α loss_alpha sets
NU_LOSSES = ("students_t",)  # the losses whose ν loss_nu sets
UNSCALED_LOSSES = ("mse", "l1")  # the losses without a scale c (loss_scale is refused)
MAX_ALPHA = 1e6  # |α|; α = −∞ is the named loss "welsch"
MIN_SCALE, MAX_SCALE = 1e-20, 1e20  # c enters as x/c and log c in float32: 1e-300 would round to 0
ALPHA_SCHEDULES = ("linear", "cosine")
# The per-step record of a scheduled α (a batch statistic, logged only: the Train page draws it).
ALPHA_TERM = Term("alpha", "α (scheduled)", per_example=False)


def _uses_loss(c: dict) -> bool:
    """Whether the run's distortion is the reconstruction loss (a VAE with a `distribution` replaces it)."""
    return c.get("distribution") in (None, "loss")


def scheduled(c: dict) -> bool:
    """Whether the config's reconstruction loss follows an α schedule (its α is then logged as a term)."""
    return c.get("loss") in ALPHA_LOSSES and c.get("loss_alpha_schedule") is not None

LOSS_FIELDS: tuple[Field, ...] = (
    Field("loss", "choice", "mse", "Reconstruction loss", choices=tuple(LOSSES), applies=_uses_loss,
          help="ρ summed over pixels; the adaptive loss learns α and c per pixel"),
    Field("loss_alpha", "float", None, "α (shape)", optional=True, lo=-MAX_ALPHA, hi=MAX_ALPHA,
          applies=lambda c: c.get("loss") in ALPHA_LOSSES and c.get("loss_alpha_schedule") is None,
          help="the general loss's α: 2 = L2, 1 = Charbonnier, 0 = Cauchy, −2 = Geman-McClure"),
    Field("loss_alpha_schedule", "choice", None, "α schedule", optional=True, choices=ALPHA_SCHEDULES,
          applies=lambda c: c.get("loss") in ALPHA_LOSSES,
          help="anneal the general loss's α over training, from the start α to the end α (linear or cosine "
               "in the fraction of training done; Barron's depth experiment annealed 2 → 0); empty: a fixed α"),
    Field("loss_alpha_start", "float", 2.0, "α at the start", lo=-MAX_ALPHA, hi=MAX_ALPHA, applies=scheduled,
          help="the scheduled α before the first step (2 = L2)"),
    Field("loss_alpha_end", "float", 0.0, "α at the end", lo=-MAX_ALPHA, hi=MAX_ALPHA, applies=scheduled,
          help="the scheduled α the last step approaches (0 = Cauchy)"),
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
    if cfg.get("loss_alpha_schedule") is not None and name not in ALPHA_LOSSES:
        raise ConfigError(f"loss_alpha_schedule applies only to general, the general loss, not {name!r}; leave "
                          f"it empty or choose the general loss", "loss_alpha_schedule")
    if name == "general" and cfg.get("loss_alpha") is not None and cfg.get("loss_alpha_schedule") is not None:
        raise ConfigError("loss_alpha is a fixed α and loss_alpha_schedule anneals it: give one of them (with a "
                          "schedule, α runs from loss_alpha_start to loss_alpha_end)", "loss_alpha")
    if name == "general" and cfg.get("loss_alpha") is None and cfg.get("loss_alpha_schedule") is None:
        raise ConfigError("loss_alpha is needed by the general loss: give its α (--loss-alpha; e.g. 1.0, 2 = MSE, "
                          "0 = Cauchy), or anneal it with --loss-alpha-schedule", "loss_alpha")
    if not cfg["adaptive_alpha_lo"] < cfg["adaptive_alpha_hi"]:
        raise ConfigError(f"adaptive_alpha_lo must be below adaptive_alpha_hi (the adaptive loss's lowest and "
                          f"highest α; got {cfg['adaptive_alpha_lo']:g} and {cfg['adaptive_alpha_hi']:g})",
                          "adaptive_alpha_lo")
    try:
        build_loss(cfg, num_dims)
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss {name!r}: {exc}", "loss") from exc


def scheduled_alpha(schedule: str, start: float, end: float, fraction: float) -> float:
    """α after `fraction` ∈ [0, 1] of training: linear or cosine from `start` (f = 0) to `end` (f = 1)."""
    f = min(1.0, max(0.0, float(fraction)))
    if schedule == "linear":
        return start + (end - start) * f
    if schedule == "cosine":
        return end + (start - end) * 0.5 * (1.0 + math.cos(math.pi * f))
    raise ValueError(f"unknown α schedule {schedule!r}; choose one of {', '.join(ALPHA_SCHEDULES)}")


class ScheduledRho(nn.Module):
    """ρ(r, α(f), c) with α following a schedule over the training fraction f (`set_fraction`).

    `fraction` is a buffer (saved with the weights); the α in use is also kept as a Python number, so a
    step reads nothing back from the device."""

    def __init__(self, schedule: str, start: float, end: float, scale: float) -> None:
        super().__init__()
        scheduled_alpha(schedule, start, end, 0.0)  # an unknown schedule fails here
        if not scale > 0:
            raise ValueError(f"scale c must be > 0 (got {scale})")
        self.schedule, self.start, self.end, self.scale = schedule, float(start), float(end), float(scale)
        self.register_buffer("fraction", torch.zeros(()))
        self._alpha = self.start
        self.register_load_state_dict_post_hook(ScheduledRho._reread)

    @staticmethod
    def _reread(module: ScheduledRho, _incompatible: object) -> None:
        module.set_fraction(float(module.fraction), write=False)

    @property
    def current_alpha(self) -> float:
        return self._alpha

    def set_fraction(self, fraction: float, *, write: bool = True) -> None:
        self._alpha = scheduled_alpha(self.schedule, self.start, self.end, fraction)
        if write:
            self.fraction.fill_(float(fraction))

    def forward(self, residual: torch.Tensor) -> torch.Tensor:
        return _scheduled_rho(self, residual)

    def extra_repr(self) -> str:
        return f"{self.schedule} α {self.start:g} → {self.end:g}, c={self.scale:g}"


# Both run outside torch.compile's graphs: traced, the α (a Python number that changes every step) would be
# a constant of the graph and recompile it at each step.
@torch.compiler.disable
def _scheduled_rho(module: ScheduledRho, residual: torch.Tensor) -> torch.Tensor:
    return rho(residual.float(), module._alpha, module.scale)


@torch.compiler.disable
def _set_fractions(objective: nn.Module, args: tuple) -> None:
    fraction = getattr(args[0], "fraction", None) if args else None
    if fraction is None:
        return
    for module in objective.modules():
        if isinstance(module, ScheduledRho):
            module.set_fraction(fraction)


def track_training_fraction(objective: nn.Module) -> nn.Module:
    """Make `objective` pass each Batch's training fraction to its scheduled losses before its forward
    (a forward pre-hook; harmless for an objective without one). Returns the objective."""
    if not getattr(objective, "_tracks_fraction", False) and any(isinstance(m, ScheduledRho)
                                                                 for m in objective.modules()):
        objective.register_forward_pre_hook(_set_fractions)
        objective._tracks_fraction = True
    return objective


@torch.compiler.disable
def schedule_terms(loss: nn.Module, like: torch.Tensor) -> dict[str, torch.Tensor]:
    """{"alpha": the α in use} for a scheduled loss (a 0-dim tensor on like's device), else {}."""
    if isinstance(loss, ScheduledRho):
        return {ALPHA_TERM.name: torch.tensor(loss.current_alpha, dtype=torch.float32, device=like.device)}
    return {}


def build_loss(config: dict, num_dims: int) -> nn.Module:
    """The per-element reconstruction loss a config names, for `num_dims` elements per example."""
    name = config["loss"]
    if name in ALPHA_LOSSES and config.get("loss_alpha_schedule") is not None:
        scale = config.get("loss_scale")
        return ScheduledRho(config["loss_alpha_schedule"], float(config.get("loss_alpha_start", 2.0)),
                            float(config.get("loss_alpha_end", 0.0)),
                            LOSSES[name].default_scale if scale is None else float(scale))
    return make_loss(name, num_dims, alpha=config.get("loss_alpha"), nu=config.get("loss_nu"),
                     scale=config.get("loss_scale"),
                     alpha_lo=config.get("adaptive_alpha_lo", 0.0), alpha_hi=config.get("adaptive_alpha_hi", 3.0))


def reconstruction_cost(loss: nn.Module, x: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Σ over each example's pixels of ρ(x − x̂), float32, shape (B,)."""
    return loss((x - x_hat.float()).flatten(1)).sum(dim=1)


# What a VAE's `distribution` (core.families.vae) replaces the loss with, as tables name it.
DISTRIBUTION_LABELS = {"normal": "Normal (learned c)", "cauchy": "Cauchy (learned c)",
                       "students_t": "Student's t (learned ν, c)", "general": "General (learned α, c)"}


def loss_label(config: dict) -> str:
    """The loss as tables name it: "Cauchy", "General (α=1)", "Student's t (ν=2)", "Adaptive (α∈[0, 3])",
    "General (α 2→0, cosine)"; a VAE likelihood: "Normal (learned c)", "General (learned α, c)", ...; on a
    representation other than pixels (a VAE's): "... on DCT", "... on CDF 9/7 wavelet + YUV" (so that runs
    of one loss on different representations are told apart, and not averaged, in tables and charts)."""
    label = _loss_title(config)
    spatial, colour = config.get("representation") or "pixels", config.get("colour") or "rgb"
    if spatial == "pixels" and colour == "rgb":
        return label
    titles = {"pixels": "pixels", "dct": "DCT", "wavelet": "CDF 9/7 wavelet"}
    return f"{label} on {titles.get(spatial, spatial)}" + (" + YUV" if colour == "yuv" else "")


def _loss_title(config: dict) -> str:
    distribution = config.get("distribution")
    if distribution not in (None, "loss"):
        return DISTRIBUTION_LABELS.get(str(distribution), str(distribution))
    name = str(config.get("loss", "?"))
    info = LOSSES.get(name)
    title = info.title if info else name
    if name in ALPHA_LOSSES and config.get("loss_alpha_schedule") is not None:
        return (f"General (α {config.get('loss_alpha_start', 2.0):g}→{config.get('loss_alpha_end', 0.0):g}, "
                f"{config['loss_alpha_schedule']})")
    if name in ALPHA_LOSSES and config.get("loss_alpha") is not None:
        return f"General (α={config['loss_alpha']:g})"
    if name in NU_LOSSES and config.get("loss_nu") is not None:
        return f"Student's t (ν={config['loss_nu']:g})"
    if name == "adaptive":
        lo, hi = config.get("adaptive_alpha_lo", 0.0), config.get("adaptive_alpha_hi", 3.0)
        if (lo, hi) != (0.0, 3.0):
            return f"Adaptive (α∈[{lo:g}, {hi:g}])"
    return title
