"""The training configuration of a run: defaults, validation, and the fields `config.json` records.

`make_config(**fields)` (or `normalize_config(dict)`) returns a complete, checked dict:

    dataset, loss, loss_alpha, loss_scale, adaptive_alpha_lo, adaptive_alpha_hi, latent_dim, epochs,
    batch_size, lr, beta, seed, device, compile, study, limit_train,
    model: {"kind": "conv_vae", "image_shape": [C, H, W], "latent_dim", "width"},
    split: {"train", "val", "test", "seed", "val_from"}

`core.runs.create_run` adds format, version, run_id and created. Bad values raise `ConfigError` with the
fix in the message (the Train page can show it as is). The objective trained is

    loss = mean over the batch of [ Σ_pixels ρ(x − x̂) + β · KL(q(z|x) ‖ N(0, I)) ],  x in [0, 1].
"""

from __future__ import annotations

import math
from typing import Any

from core import datasets

__all__ = ["ALPHA_LOSSES", "DEFAULTS", "UNSCALED_LOSSES", "ConfigError", "make_config", "normalize_config"]


class ConfigError(ValueError):
    """A training configuration that cannot be trained; the message says what to change.

    `field` names the configuration field at fault (None when it is the combination), so that the
    command line can name its flag and the app its form field."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field

    def naming(self, names: dict[str, str]) -> str:
        """The message with the field called what the reader knows it as (a flag, a form label)."""
        text = str(self)
        name = names.get(self.field or "")
        if name and text.startswith(f"{self.field} "):
            return name + text[len(self.field or ""):]
        return text


DEFAULTS: dict[str, Any] = {
    "dataset": "digits",
    "loss": "mse",
    "loss_alpha": None,  # α for "general", ν for "students_t"
    "loss_scale": None,  # c; None = the loss's default
    "adaptive_alpha_lo": 0.0,
    "adaptive_alpha_hi": 3.0,
    "latent_dim": 16,
    "epochs": 20,
    "batch_size": 128,
    "lr": 1e-3,
    "beta": 1.0,
    "seed": 0,
    "device": "auto",  # what was asked; status.json records the device used
    "compile": False,
    "study": None,  # a study name (issue 7) or None
    "limit_train": None,  # keep the first N training images
    "width": 32,  # the VAE's first channel count
}
_RUN_KEYS = {"format", "version", "run_id", "created", "model", "split"}
MAX_LR = 10.0
MAX_BETA = 1e6
MAX_ALPHA = 1e6  # |α|; ±∞ are the named losses welsch (−∞), or the general loss at a large α
MIN_SCALE, MAX_SCALE = 1e-20, 1e20
ALPHA_LOSSES = ("general", "students_t")  # the losses whose α (ν for Student's t) loss_alpha sets
UNSCALED_LOSSES = ("mse", "l1")  # the losses without a scale c (loss_scale is refused)


def _int(cfg: dict, key: str, lo: int, hi: int | None = None) -> None:
    value = cfg[key]
    if isinstance(value, bool) or not isinstance(value, int):
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        else:
            raise ConfigError(f"{key} must be a whole number, got {value!r}", key)
    if value < lo or (hi is not None and value > hi):
        bound = f"between {lo} and {hi}" if hi is not None else f"at least {lo}"
        raise ConfigError(f"{key} must be {bound}, got {value}", key)
    cfg[key] = value


def _float(cfg: dict, key: str, *, lo: float | None = None, hi: float | None = None, strict_lo: bool = False,
           optional: bool = False) -> None:
    """A finite number within [lo, hi] (lo excluded when strict_lo). Infinity is refused here, not by the
    JSON writer later: config.json, like JSON, has no infinities."""
    value = cfg[key]
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{key} must be a number, got {value!r}", key)
    value = float(value)
    if not math.isfinite(value):
        raise ConfigError(f"{key} must be a finite number, got {value}", key)
    if lo is not None and (value <= lo if strict_lo else value < lo):
        raise ConfigError(f"{key} must be {'>' if strict_lo else '≥'} {lo:g}, got {value:g}", key)
    if hi is not None and value > hi:
        raise ConfigError(f"{key} must be at most {hi:g}, got {value:g}", key)
    cfg[key] = value


def _check_loss(cfg: dict, num_dims: int) -> None:
    from core.losses import LOSSES, make_loss

    name = cfg["loss"]
    if name not in LOSSES:
        raise ConfigError(f"unknown loss {name!r}; choose one of {', '.join(LOSSES)}", "loss")
    if cfg["loss_alpha"] is not None and name not in ALPHA_LOSSES:
        hint = " (the adaptive loss learns α: bound it with adaptive_alpha_lo/hi)" if name == "adaptive" else ""
        raise ConfigError(f"loss_alpha (--loss-alpha) applies only to {' and '.join(ALPHA_LOSSES)}, "
                          f"not {name!r}{hint}; drop it or use --loss general", "loss_alpha")
    if cfg["loss_scale"] is not None and name in UNSCALED_LOSSES:
        raise ConfigError(f"loss_scale (--loss-scale) has no effect on {name!r}; drop it", "loss_scale")
    if name == "general" and cfg["loss_alpha"] is None:
        raise ConfigError("the general loss needs its α: pass --loss-alpha (e.g. 1.0; 2 = MSE, 0 = Cauchy)",
                          "loss_alpha")
    try:
        make_loss(name, num_dims, alpha=cfg["loss_alpha"], scale=cfg["loss_scale"],
                  alpha_lo=cfg["adaptive_alpha_lo"], alpha_hi=cfg["adaptive_alpha_hi"])
    except (ValueError, TypeError) as exc:
        raise ConfigError(f"loss {name!r}: {exc}", "loss") from exc


def normalize_config(config: dict, *, split: dict | None = None) -> dict:
    """A complete, validated copy of `config` (missing training fields take `DEFAULTS`).

    split: the split sizes actually loaded ({"train", "val", "test"}); default: the registry's sizes.
    Keys of a run's config.json (format, version, run_id, created) pass through; model and split are
    recomputed. Unknown keys are refused (a typo would otherwise train with a default silently).
    """
    unknown = set(config) - set(DEFAULTS) - _RUN_KEYS
    if unknown:
        raise ConfigError(f"unknown configuration field(s): {', '.join(sorted(unknown))}; "
                          f"known: {', '.join(DEFAULTS)}")
    cfg = {**DEFAULTS, **{k: v for k, v in config.items() if k in DEFAULTS}}
    if cfg["dataset"] not in datasets.DATASET_NAMES:
        raise ConfigError(f"unknown dataset {cfg['dataset']!r}; choose one of {', '.join(datasets.DATASET_NAMES)}",
                          "dataset")
    _int(cfg, "latent_dim", 1, 4096)
    _int(cfg, "epochs", 1)
    _int(cfg, "batch_size", 1)
    _int(cfg, "seed", 0, 2**31 - 1)
    _int(cfg, "width", 1, 1024)
    if cfg["limit_train"] is not None:
        _int(cfg, "limit_train", 1)
    _float(cfg, "lr", lo=0.0, strict_lo=True, hi=MAX_LR)
    _float(cfg, "beta", lo=0.0, hi=MAX_BETA)
    _float(cfg, "loss_alpha", optional=True, lo=-MAX_ALPHA, hi=MAX_ALPHA)
    # c enters as x/c and log c in float32: keep it where both are exact (1e-300 would round to 0).
    _float(cfg, "loss_scale", optional=True, lo=MIN_SCALE, hi=MAX_SCALE)
    _float(cfg, "adaptive_alpha_lo", lo=0.0, hi=MAX_ALPHA)
    _float(cfg, "adaptive_alpha_hi", lo=0.0, hi=MAX_ALPHA)
    if not cfg["adaptive_alpha_lo"] < cfg["adaptive_alpha_hi"]:
        raise ConfigError(f"adaptive_alpha_lo must be below adaptive_alpha_hi (the adaptive loss's lowest and "
                          f"highest α; got {cfg['adaptive_alpha_lo']:g} and {cfg['adaptive_alpha_hi']:g})",
                          "adaptive_alpha_lo")
    if cfg["device"] not in ("auto", "cpu", "cuda") and not str(cfg["device"]).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {cfg['device']!r}", "device")
    if not isinstance(cfg["compile"], bool):
        raise ConfigError(f"compile must be true or false, got {cfg['compile']!r}", "compile")
    if cfg["study"] is not None and not isinstance(cfg["study"], str):
        raise ConfigError(f"study must be a name or null, got {cfg['study']!r}", "study")

    info = datasets.dataset_info(cfg["dataset"])
    _check_loss(cfg, info.num_pixels)
    cfg["model"] = {"kind": "conv_vae", "image_shape": list(info.image_shape), "latent_dim": cfg["latent_dim"],
                    "width": cfg["width"]}
    sizes = dict(split) if split is not None else datasets.split_sizes(cfg["dataset"], cfg["limit_train"])
    if cfg["limit_train"] is not None:
        sizes["train"] = min(sizes["train"], cfg["limit_train"])
    cfg["split"] = {"train": int(sizes["train"]), "val": int(sizes["val"]), "test": int(sizes["test"]),
                    "seed": datasets.SPLIT_SEED, "val_from": "train"}
    for key in ("format", "version", "run_id", "created"):
        if key in config:
            cfg[key] = config[key]
    return cfg


def make_config(**fields: Any) -> dict:
    """`normalize_config(fields)`: e.g. make_config(dataset="cifar10", loss="cauchy", latent_dim=128)."""
    return normalize_config(fields)
