"""What the lab's command lines share: exit codes, the config fields as flags, and the value parsers.

    EXIT_OK 0 · EXIT_FAILED 1 (NaN/Inf or diverged) · EXIT_USAGE 2 (bad arguments, missing data, a damaged
    run) · EXIT_LOCKED 3 (trained by another process) · EXIT_STOPPED 130 (stopped by a signal)
"""

from __future__ import annotations

import argparse
from collections.abc import Iterable

from core.fields import Field

__all__ = ["EXIT_FAILED", "EXIT_LOCKED", "EXIT_OK", "EXIT_STOPPED", "EXIT_USAGE", "add_field_flags", "comma_list",
           "config_from_args", "field_args", "threads"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED, EXIT_STOPPED = 0, 1, 2, 3, 130


def threads(text: str) -> int:
    """`--threads N`: CPU threads for torch, at least 1."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number of threads, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"threads must be at least 1, got {value}")
    return value


def comma_list(kind: type) -> callable:
    """An argparse type for "a,b,c" lists of `kind` (at least one value)."""

    def parse(text: str) -> list:
        try:
            values = [kind(v.strip()) for v in text.split(",") if v.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__} values, got {text!r}") from None
        if not values:
            raise argparse.ArgumentTypeError("expected at least one value")
        return values

    return parse


def _bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got {text!r}")


def add_field_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup, fields: Iterable[Field],
                    skip: Iterable[str] = ()) -> None:
    """One flag per field (`--latent-dim`), default None so that only what was given is passed on."""
    skipped = set(skip)
    for f in fields:
        if f.name in skipped:
            continue
        default = "" if f.default is None else f" (default {f.default})"
        text = f"{f.label}: {f.help}{default}" if f.help else f"{f.label}{default}"
        if f.kind == "bool":
            parser.add_argument(f.flag, dest=f.name, nargs="?", const=True, default=None, type=_bool,
                                help=text.replace("%", "%%"))
            continue
        kind = {"int": int, "float": float}.get(f.kind, str)
        parser.add_argument(f.flag, dest=f.name, type=kind, default=None,
                            choices=list(f.choices) if f.kind == "choice" else None,
                            metavar=f.name.upper() if f.kind != "choice" else None, help=text.replace("%", "%%"))


def config_from_args(args: argparse.Namespace, fields: Iterable[Field]) -> dict:
    """The fields given on the command line (those left at None were not)."""
    return {f.name: getattr(args, f.name) for f in fields if getattr(args, f.name, None) is not None}


def field_args(config: dict, fields: Iterable[Field]) -> list[str]:
    """Flags that give `config`'s values: {"loss": "cauchy", "latent_dim": 8} -> ["--loss", "cauchy", ...]."""
    out: list[str] = []
    for f in fields:
        value = config.get(f.name)
        if value is None:
            continue
        out += [f.flag, str(value).lower() if f.kind == "bool" else str(value)]
    return out
