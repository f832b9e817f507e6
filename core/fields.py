"""Configuration fields, declared once: each is checked here, and becomes a command-line flag
(`core.train`), a widget of the Train page's form and a key of config.json.

    Field("lr", "float", 1e-3, "Learning rate", lo=0, strict_lo=True, hi=10)
    field.check(value) -> value | ConfigError naming the field

`ConfigError.field` names the field at fault, so the command line can name its flag and the app its
label (`ConfigError.naming`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

__all__ = ["ConfigError", "Field"]


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


@dataclass(frozen=True)
class Field:
    """One configuration field: its name in config.json, its type and bounds, and how people see it.

    kind: "int" | "float" | "bool" | "choice" | "str". `optional`: None is allowed (and means what
    `help` says). `applies(config)`: whether the field means anything for that config (else it must be
    None or its default); the Train page hides a field that does not apply. `titles`: how some choices
    read for people, as (value, title) pairs (the others read as themselves)."""

    name: str
    kind: str
    default: Any
    label: str
    help: str = ""
    lo: float | None = None
    hi: float | None = None
    strict_lo: bool = False
    optional: bool = False
    choices: tuple[Any, ...] = ()
    applies: Callable[[dict], bool] | None = None
    advanced: bool = False
    flag_name: str | None = None
    titles: tuple[tuple[Any, str], ...] = ()

    def title_of(self, value: Any) -> str:
        return dict(self.titles).get(value, str(value))

    @property
    def flag(self) -> str:
        return self.flag_name or "--" + self.name.replace("_", "-")

    def applies_to(self, config: dict) -> bool:
        return self.applies is None or bool(self.applies(config))

    def check(self, value: Any) -> Any:
        """The value, normalised (ints as int, floats as float), or ConfigError naming the field."""
        if value is None:
            if self.optional:
                return None
            raise ConfigError(f"{self.name} needs a value", self.name)
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ConfigError(f"{self.name} must be true or false, got {value!r}", self.name)
            return value
        if self.kind == "choice":
            if value not in self.choices:
                raise ConfigError(f"unknown {self.name} {value!r}; choose one of {', '.join(map(str, self.choices))}",
                                  self.name)
            return value
        if self.kind == "str":
            if not isinstance(value, str):
                raise ConfigError(f"{self.name} must be text, got {value!r}", self.name)
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{self.name} must be a number, got {value!r}", self.name)
        if self.kind == "int":
            if isinstance(value, float) and not value.is_integer():
                raise ConfigError(f"{self.name} must be a whole number, got {value!r}", self.name)
            value = int(value)
        else:
            value = float(value)
            if not math.isfinite(value):
                raise ConfigError(f"{self.name} must be a finite number, got {value}", self.name)
        below = self.lo is not None and (value <= self.lo if self.strict_lo else value < self.lo)
        above = self.hi is not None and value > self.hi
        if (below or above) and self.kind == "int" and self.lo is not None and self.hi is not None:
            raise ConfigError(f"{self.name} must be between {self.lo:g} and {self.hi:g}, got {value}", self.name)
        if below:
            raise ConfigError(f"{self.name} must be {'>' if self.strict_lo else '≥'} {self.lo:g}, got {value:g}",
                              self.name)
        if above:
            raise ConfigError(f"{self.name} must be at most {self.hi:g}, got {value:g}", self.name)
        return value


