"""Per-service configuration: dataclass defaults < TOML file < command-line flags.

Every service starts with no file at all on loopback defaults; a TOML file
given with `--config` overrides the defaults, and flags override the file.
Unknown keys are an error so a typo never passes silently.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import tomllib
import typing
from pathlib import Path
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(Exception):
    """A config file or flag that cannot be used; the message says which and why."""


def data_dir(service: str) -> Path:
    """Default place for a service's durable state (XDG data dir, as root /var/lib)."""
    if os.geteuid() == 0 and "XDG_DATA_HOME" not in os.environ:
        return Path("/var/lib/tashi") / service
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "tashi" / service


def add_config_flags(parser: argparse.ArgumentParser, cls: type[Any]) -> None:
    """Add `--config` and one `--kebab-name` flag per dataclass field."""
    parser.add_argument("--config", metavar="FILE", help="TOML config file")
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        kind = hints[f.name]
        help_text = f.metadata.get("help", "")
        if kind is bool:
            parser.add_argument(flag, dest=f.name, default=None,
                                action=argparse.BooleanOptionalAction, help=help_text)
        elif typing.get_origin(kind) is list:
            parser.add_argument(flag, dest=f.name, default=None, metavar="A,B",
                                type=lambda s: [x for x in s.split(",") if x], help=help_text)
        else:
            base = kind if kind in (int, float) else str
            parser.add_argument(flag, dest=f.name, default=None, type=base, help=help_text)


def _coerce(cls: type[Any], name: str, value: Any) -> Any:
    kind = typing.get_type_hints(cls)[name]
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name}: expected true or false, got {value!r}")
        return value
    if kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name}: expected an integer, got {value!r}")
        return value
    if kind is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{name}: expected a number, got {value!r}")
        return float(value)
    if typing.get_origin(kind) is list:
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ConfigError(f"{name}: expected a list of strings, got {value!r}")
        return list(value)
    if not isinstance(value, str):
        raise ConfigError(f"{name}: expected a string, got {value!r}")
    return value


def load(cls: type[T], path: str | None = None, overrides: dict[str, Any] | None = None) -> T:
    """Build a config of dataclass `cls` from its defaults, a TOML file and overrides."""
    values: dict[str, Any] = {}
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    if path:
        try:
            with open(path, "rb") as fh:
                data = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"config file {path} does not exist") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        for key, value in data.items():
            name = key.replace("-", "_")
            if name not in names:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            values[name] = _coerce(cls, name, value)
    for key, value in (overrides or {}).items():
        if value is not None and key in names:
            values[key] = _coerce(cls, key, value)
    return cls(**values)


def from_args(cls: type[T], ns: argparse.Namespace) -> T:
    return load(cls, getattr(ns, "config", None), vars(ns))
