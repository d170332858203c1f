"""Typed configuration: frozen dataclasses read from TOML / JSON, overridden from the command line.

Every config in plait is a ``@dataclass(frozen=True)`` that inherits :class:`Config`. A recipe is a
TOML file whose sections (``[model]``, ``[data]``, ``[train]``) map to such dataclasses; the command
line then overrides single keys with dotted names (``--train.lr 3e-4 --model.n_layer 4``). Unknown
keys are errors that name the key, and values are coerced to the field's declared type, so a
typo never passes silently.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from typing import Any, Literal, TypeVar, get_args, get_origin

from plait import io

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib

C = TypeVar("C", bound="Config")


class ConfigError(ValueError):
    """A user-facing configuration problem (unknown key, bad value, unreadable file)."""


class Config:
    """Mixin for frozen config dataclasses: dict/JSON round trip with strict keys."""

    @classmethod
    def from_dict(cls: type[C], d: dict[str, Any], where: str = "") -> C:
        """Build from a plain dict; unknown keys raise ConfigError naming the dotted key."""
        if not isinstance(d, dict):
            raise ConfigError(f"{where or cls.__name__}: expected a table of keys, got {d!r}")
        fields = {f.name: f for f in dataclasses.fields(cls) if f.init}  # type: ignore[arg-type]
        hints = typing.get_type_hints(cls)
        kwargs = {}
        for key, value in d.items():
            name = f"{where}.{key}" if where else key
            if key not in fields:
                allowed = ", ".join(sorted(fields))
                raise ConfigError(f"unknown config key '{name}' (allowed: {allowed})")
            kwargs[key] = _coerce(value, hints[key], name)
        try:
            return cls(**kwargs)
        except TypeError as e:  # a missing required field
            raise ConfigError(f"{where or cls.__name__}: {e}") from None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)  # type: ignore[call-overload]

    def replace(self: C, **changes: Any) -> C:
        return dataclasses.replace(self, **changes)  # type: ignore[type-var]

    def save_json(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def from_json(cls: type[C], path: str | Path) -> C:
        return cls.from_dict(read_json(path))


def read_json(path: str | Path) -> dict[str, Any]:
    """Read a JSON object, turning every failure into a one-line ConfigError."""
    try:
        return io.read_json(path)
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except ValueError as e:
        raise ConfigError(str(e)) from None


def read_toml(path: str | Path) -> dict[str, Any]:
    """Read a TOML recipe, turning every failure into a one-line ConfigError."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        return tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"malformed TOML in {path}: {e}") from None


def parse_overrides(args: list[str]) -> dict[str, str]:
    """``['--train.lr', '3e-4', '--model.n_layer=4']`` -> ``{'train.lr': '3e-4', ...}``."""
    out: dict[str, str] = {}
    i = 0
    while i < len(args):
        arg = args[i]
        if not arg.startswith("--") or len(arg) < 3:
            raise ConfigError(f"expected an override like --section.key VALUE, got '{arg}'")
        key = arg[2:]
        if "=" in key:
            key, value = key.split("=", 1)
        elif i + 1 < len(args):
            i += 1
            value = args[i]
        else:
            raise ConfigError(f"override --{key} needs a value")
        if "." not in key:
            raise ConfigError(f"override --{key} must name a section, e.g. --train.{key}")
        out[key] = value
        i += 1
    return out


def apply_overrides(tree: dict[str, Any], overrides: dict[str, str]) -> dict[str, Any]:
    """Set dotted keys in a nested dict (values stay strings; from_dict coerces them)."""
    tree = json.loads(json.dumps(tree))  # deep copy of plain data
    for dotted, value in overrides.items():
        node = tree
        *parents, leaf = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override --{dotted}: '{p}' is not a section")
        node[leaf] = value
    return tree


def _coerce(value: Any, tp: Any, name: str) -> Any:
    """Coerce a TOML/JSON/CLI value to a field's annotated type, or raise naming the key."""
    origin, args = get_origin(tp), get_args(tp)
    if origin in (typing.Union, types.UnionType):
        is_none = value is None or (isinstance(value, str) and value.lower() in ("none", "null"))
        if is_none and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _coerce(value, a, name)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"'{name}': bad value {value!r}")
    if origin is Literal:
        if value not in args:
            allowed = ", ".join(repr(a) for a in args)
            raise ConfigError(f"'{name}' must be one of {allowed}, got {value!r}")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"'{name}' must be a table of keys, got {value!r}")
        key_tp, value_tp = args or (Any, Any)
        return {_coerce(k, key_tp, name): v if value_tp is Any else
                _coerce(v, value_tp, f"{name}.{k}") for k, v in value.items()}
    if dataclasses.is_dataclass(tp) and isinstance(tp, type) and issubclass(tp, Config):
        if isinstance(value, tp):
            return value
        return tp.from_dict(value, where=name)
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.split(",") if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"'{name}' must be a list, got {value!r}")
        inner = args[0] if args else Any
        items = [v if inner is Any else _coerce(v, inner, name) for v in value]
        return tuple(items) if origin is tuple else items
    return _coerce_scalar(value, tp, name)


def _coerce_scalar(value: Any, tp: Any, name: str) -> Any:
    """bool, int, float or str from a TOML/JSON/CLI value (strings parsed), or ConfigError."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "1", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"'{name}' must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        if isinstance(value, int):
            return value
        try:
            f = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{name}' must be an integer, got {value!r}") from None
        if not f.is_integer():
            raise ConfigError(f"'{name}' must be an integer, got {value!r}")
        return int(f)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"'{name}' must be a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"'{name}' must be a number, got {value!r}") from None
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"'{name}' must be a string, got {value!r}")
        return value
    return value


# -- validation helpers for __post_init__: one message shape for every config ------------------
def require_positive(config: Any, names: Iterable[str], zero_ok: bool = False) -> None:
    """Each named field > 0 (>= 0 with ``zero_ok``), else ValueError naming it."""
    for name in names:
        value = getattr(config, name)
        if value < 0 or (value == 0 and not zero_ok):
            bound = ">= 0" if zero_ok else "positive"
            raise ValueError(f"{type(config).__name__}.{name} must be {bound}, got {value}")


def require_divisible(config: Any, name: str, by: str) -> None:
    """Field ``name`` divisible by field ``by``."""
    a, b = getattr(config, name), getattr(config, by)
    if a % b:
        cls = type(config).__name__
        raise ValueError(f"{cls}.{name} ({a}) must be divisible by {by} ({b})")


def require_choice(config: Any, name: str, choices: Iterable[str]) -> None:
    """Field ``name`` one of ``choices``."""
    choices = list(choices)
    if getattr(config, name) not in choices:
        raise ValueError(f"{type(config).__name__}.{name} must be one of {', '.join(choices)},"
                         f" got {getattr(config, name)!r}")


def require_fraction(config: Any, name: str) -> None:
    """Field ``name`` in [0, 1) (dropout rates)."""
    if not 0.0 <= getattr(config, name) < 1.0:
        raise ValueError(f"{type(config).__name__}.{name} must be in [0, 1), got"
                         f" {getattr(config, name)}")
