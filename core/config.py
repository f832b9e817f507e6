"""The training configuration of a run: its fields, their defaults and checks, and what config.json records.

A run's fields are the common ones below (`COMMON_FIELDS`), the reconstruction loss's
(`core.families.recon.LOSS_FIELDS`) for a family that takes one, and its family's own
(`core.families.<name>`). `make_config(**fields)` (or `normalize_config(dict)`) returns a complete,
checked dict with every field, plus

    model: what rebuilds the network (the family's `model_spec`)
    split: {"train", "val", "test", "seed", "val_from"}

`core.runs.create_run` adds format, version, run_id and created. Bad values raise `ConfigError` naming
the field and the fix (`ConfigError.naming` turns the field into a flag or a form label).
"""

from __future__ import annotations

from typing import Any

from core import datasets
from core.families import FAMILIES, Family, family_of, get_family
from core.families.recon import LOSS_FIELDS, check_loss
from core.fields import ConfigError, Field
from core.runs import VERSION

__all__ = ["COMMON_FIELDS", "OPTIMIZERS", "RUN_KEYS", "ConfigError", "all_fields", "defaults", "fields_for",
           "make_config", "normalize_config"]

OPTIMIZERS = ("adam", "adamw", "radam")  # torch.optim's Adam, AdamW and RAdam

COMMON_FIELDS: tuple[Field, ...] = (
    Field("family", "str", "vae", "Model family", help="what is trained (core/families)"),
    Field("dataset", "choice", "digits", "Dataset", choices=datasets.DATASET_NAMES),
    Field("epochs", "int", 20, "Epochs", lo=1, hi=1_000_000),
    Field("batch_size", "int", 128, "Batch size", lo=1, hi=1_000_000),
    Field("lr", "float", 1e-3, "Learning rate", lo=0.0, strict_lo=True, hi=10.0),
    Field("optimizer", "choice", None, "Optimiser", choices=OPTIMIZERS, optional=True, advanced=True,
          titles=(("adam", "Adam"), ("adamw", "AdamW"), ("radam", "RAdam")),
          help="empty: the family's own (Adam for most)"),
    Field("weight_decay", "float", 0.0, "Weight decay", lo=0.0, hi=10.0, advanced=True,
          help="L2 (Adam, RAdam) or decoupled (AdamW) weight decay"),
    Field("seed", "int", 0, "Seed", lo=0, hi=2**31 - 1, help="initialisation, batch order and noise"),
    Field("limit_train", "int", None, "Training images", optional=True, lo=1,
          help="train on the first N images of the training split (a fixed random subset) and validate on at "
               "most N; empty: all"),
    Field("device", "str", "auto", "Device", advanced=True, help="auto (a GPU when there is one), cpu or cuda"),
    Field("compile", "bool", False, "torch.compile", advanced=True, help="compile the model (GPU)"),
    Field("study", "str", None, "Study", optional=True, advanced=True, help="tag the run as part of a study"),
)
RUN_KEYS = frozenset({"format", "version", "run_id", "created", "model", "split"})


def fields_for(family: Family) -> tuple[Field, ...]:
    """Every field a run of `family` has, in form order: common, reconstruction loss, the family's."""
    loss = LOSS_FIELDS if family.takes_reconstruction_loss else ()
    own = tuple(f for f in family.fields if f.name not in {c.name for c in COMMON_FIELDS + loss})
    return COMMON_FIELDS + loss + own


def all_fields() -> dict[str, Field]:
    """Every field of every family, by name (the first declaration of a shared name): the CLI's flags."""
    out: dict[str, Field] = {}
    for family in FAMILIES.values():
        for f in fields_for(family):
            out.setdefault(f.name, f)
    return out


def defaults(family: str = "vae") -> dict[str, Any]:
    """The default value of every field of a family."""
    return {f.name: f.default for f in fields_for(get_family(family))}


def _check_device(value: Any) -> None:
    if value not in ("auto", "cpu", "cuda") and not str(value).startswith("cuda:"):
        raise ConfigError(f"device must be auto, cpu or cuda, got {value!r}", "device")


def _unknown(names: set[str], family: Family) -> ConfigError:
    others = {n: [f.name for f in FAMILIES.values() if n in {x.name for x in fields_for(f)}] for n in names}
    owned = {n: fams for n, fams in others.items() if fams}
    if owned:
        name, fams = sorted(owned.items())[0]
        return ConfigError(f"{name} is a field of the {', '.join(fams)} family, not of {family.name}; drop it or "
                           f"choose that family", name)
    known = ", ".join(f.name for f in fields_for(family))
    return ConfigError(f"unknown configuration field(s): {', '.join(sorted(names))}; known: {known}")


def normalize_config(config: dict, *, split: dict | None = None) -> dict:
    """A complete, validated copy of `config` (missing fields take their defaults).

    split: the split sizes actually loaded ({"train", "val", "test"}); default: the registry's sizes.
    Keys of a run's config.json (format, version, run_id, created) pass through; model and split are
    recomputed. Unknown keys are refused (a typo would otherwise train with a default silently), and so
    is a value for a field that does not apply to the rest (α for the Cauchy loss, say).
    """
    try:
        family = family_of(config)
    except ValueError as exc:
        raise ConfigError(str(exc), "family") from None
    fields = fields_for(family)
    unknown = set(config) - {f.name for f in fields} - RUN_KEYS
    if unknown:
        raise _unknown(unknown, family)
    cfg: dict[str, Any] = {f.name: f.default for f in fields}
    cfg.update({k: v for k, v in config.items() if k not in RUN_KEYS})
    cfg["family"] = family.name
    for f in fields:
        cfg[f.name] = f.check(cfg[f.name])
    _check_device(cfg["device"])
    info = datasets.dataset_info(cfg["dataset"])
    if cfg["optimizer"] is None:
        cfg["optimizer"] = family.default_optimizer
    family.complete(cfg, info.image_shape)
    if family.takes_reconstruction_loss:
        check_loss(cfg, info.num_pixels)
    for f in fields:
        if not f.applies_to(cfg) and cfg[f.name] not in (None, f.default):
            raise ConfigError(f"{f.name} does not apply here (it is for another setting of the loss or model); "
                              f"leave it empty", f.name)
    family.validate(cfg, info.image_shape)
    cfg["model"] = family.model_spec(cfg, info.image_shape)
    sizes = dict(split) if split is not None else datasets.split_sizes(cfg["dataset"], cfg["limit_train"])
    if cfg["limit_train"] is not None:
        sizes["train"] = min(sizes["train"], cfg["limit_train"])
        if config.get("version", VERSION) != 1:  # run format 1 validated on the whole split whatever the limit
            sizes["val"] = min(sizes["val"], cfg["limit_train"])
    cfg["split"] = {"train": int(sizes["train"]), "val": int(sizes["val"]), "test": int(sizes["test"]),
                    "seed": datasets.SPLIT_SEED, "val_from": "train"}
    for key in ("format", "version", "run_id", "created"):
        if key in config:
            cfg[key] = config[key]
    return cfg


def make_config(**fields: Any) -> dict:
    """`normalize_config(fields)`: e.g. make_config(dataset="cifar10", loss="cauchy", latent_dim=128)."""
    return normalize_config(fields)
