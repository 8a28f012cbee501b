"""Configs as data: dataclass <-> nested dict, YAML files, ``--set key=value`` overrides, dotted keys.

Generic over any config dataclass (:mod:`ghost_lens.config` holds the stages' classes; ``SAETrainingConfig`` uses
the same functions):

1. :func:`from_dict` builds a dataclass from a nested dict, coercing YAML / command-line values to the annotated
   types (``int | None``, ``Literal[...]``, lists from ``"1,2 3"``); ``strict=True`` (user input) names an unknown
   key, ``strict=False`` (saved artifacts) ignores it.
2. :func:`to_dict` / :func:`flatten`: the other way, nested or with dotted keys.
3. :func:`apply_overrides`: dotted ``key=value`` strings (values parsed as YAML) onto a config, strictly.
4. :func:`read_yaml` / :func:`load_yaml_dict`: a user's YAML file, with one-line errors.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml

from ghost_lens.errors import ConfigError

T = TypeVar("T")




def _resolve_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _is_dataclass_type(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Coerce a YAML / command-line value to the annotated type, naming ``key`` on failure."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return _coerce_union(value, args, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin is list:
        (item_tp,) = args or (Any,)
        if isinstance(value, str):
            value = [v for v in value.replace(",", " ").split() if v]
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return [_coerce(v, item_tp, key) for v in value]
    if tp is Any:
        return value
    return _coerce_scalar(value, tp, key)


def _coerce_union(value: Any, args: tuple[Any, ...], key: str) -> Any:
    """``X | None`` (``none`` / ``null`` / ``~`` typed on the command line is ``None``), else the first member
    the value coerces to."""
    if value is None and type(None) in args:
        return None
    if isinstance(value, str) and value.lower() in ("none", "null", "~") and type(None) in args:
        return None
    errors = []
    for arg in args:
        if arg is type(None):
            continue
        try:
            return _coerce(value, arg, key)
        except ConfigError as exc:
            errors.append(str(exc))
    raise ConfigError(errors[0] if errors else f"{key}: bad value {value!r}")


def _coerce_scalar(value: Any, tp: Any, key: str) -> Any:
    """``bool`` / ``int`` / ``float`` / ``str`` from YAML or command-line text (anything else as it is)."""
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "yes", "1", "false", "no", "0"):
            return value.lower() in ("true", "yes", "1")
        raise ConfigError(f"{key}: expected true/false, got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        try:
            as_float = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected an integer, got {value!r}") from None
        if not as_float.is_integer():
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return int(as_float)
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key}: expected a number, got {value!r}") from None
    if tp is str:
        if value is None:  # `--set model=` or `model:` with nothing after it: not the text "None"
            raise ConfigError(f"{key}: needs a value, got an empty one")
        if isinstance(value, dict | list):
            raise ConfigError(f"{key}: expected a string, got {value!r}")
        return str(value)
    return value


def from_dict(cls: type[T], data: dict[str, Any] | None, *, strict: bool = True, prefix: str = "") -> T:
    """Build dataclass ``cls`` from a (possibly nested) dict.

    ``strict=True`` (user input): an unknown key raises :class:`ConfigError` naming it.
    ``strict=False`` (re-reading saved artifacts): unknown keys are ignored.
    """
    data = dict(data or {})
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'}: expected a mapping, got {type(data).__name__}")
    hints = _resolve_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = [k for k in data if k not in names]
    if unknown and strict:
        key = f"{prefix}{unknown[0]}"
        raise ConfigError(f"unknown config key {key!r} (valid keys here: {', '.join(sorted(names))})")
    kwargs: dict[str, Any] = {}
    for name in names:
        if name not in data:
            continue
        key = f"{prefix}{name}"
        tp = hints[name]
        value = data[name]
        if _is_dataclass_type(tp):
            if value is None:
                value = {}
            if not isinstance(value, dict):
                raise ConfigError(f"{key}: expected a mapping of {tp.__name__} fields, got {value!r}")
            kwargs[name] = from_dict(tp, value, strict=strict, prefix=f"{key}.")
        else:
            kwargs[name] = _coerce(value, tp, key)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # pragma: no cover - defensive
        raise ConfigError(f"{prefix or 'config'}: {exc}") from None


def to_dict(cfg: Any) -> dict[str, Any]:
    """A config dataclass as a nested dict of plain values (what the YAML files hold)."""
    return dataclasses.asdict(cfg)


def flatten(d: dict[str, Any], prefix: str = "", *, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Dotted keys of a nested dict: ``{"tracker": {"top_k": 5}} -> {"tracker.top_k": 5}``.

    ``sections``: only these top-level keys are opened (one level: a dict-valued field inside stays a value).
    """
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        opened = isinstance(v, dict) and (sections is None or (not prefix and str(k) in sections))
        if opened:
            out |= flatten(v, f"{key}.", sections=() if sections is not None else None)
        else:
            out[key] = v
    return out


def apply_overrides(cfg: T, overrides: list[str] | None) -> T:
    """Apply ``key=value`` overrides (dotted keys, e.g. ``tracker.top_k_features=100``); YAML-parsed values."""
    if not overrides:
        return cfg
    data = to_dict(cfg)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value, got {item!r}")
        key, raw = item.split("=", 1)
        key = key.strip()
        try:
            value = yaml.safe_load(raw) if raw.strip() else None
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            if not isinstance(node, dict) or part not in node or not isinstance(node[part], dict):
                raise ConfigError(f"unknown config key {'.'.join(parts[: i + 1])!r} in --set {item!r}")
            node = node[part]
        if parts[-1] not in node:
            raise ConfigError(f"unknown config key {key!r} in --set {item!r}")
        node[parts[-1]] = value
    return from_dict(type(cfg), data, strict=True)


def read_yaml(path: str | Path, what: str = "config") -> Any:
    """A user's YAML file, with one-line errors for a missing file or malformed YAML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} file not found: {path}")
    try:
        return yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None


def load_yaml_dict(path: str | Path) -> dict[str, Any]:
    data = read_yaml(path)
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of config keys")
    return data
