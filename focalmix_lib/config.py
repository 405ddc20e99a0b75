"""Frozen-dataclass configuration with named presets, YAML round trip and overrides.

A config class is a ``@dataclass(frozen=True)`` whose field defaults form the
``standard`` preset and whose ``PRESETS`` class attribute maps the other preset names
(``quick``, ``paper``) to the fields they change. Every run saves its config as YAML;
CLI flags (``--set field=value``) and papermill parameters override fields by name.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from focalmix_lib import atomic

C = TypeVar("C")

def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
    """Build ``cls`` from the named preset, then apply ``overrides`` (field -> value)."""
    presets: Mapping[str, Mapping[str, Any]] = getattr(cls, "PRESETS", {})
    if name != "standard" and name not in presets:
        known = sorted({"standard", *presets})
        raise ValueError(f"unknown preset {name!r} for {cls.__name__}; choose one of {known}")
    cfg = cls()
    return replace_fields(cfg, {**presets.get(name, {}), **overrides})


def replace_fields(cfg: C, values: Mapping[str, Any]) -> C:
    """Return ``cfg`` with ``values`` applied, each coerced to its field's declared type."""
    hints = typing.get_type_hints(type(cfg))
    names = {f.name for f in dataclasses.fields(cfg)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{type(cfg).__name__} has no field(s) {unknown}; fields are {sorted(names)}")
    coerced = {key: _coerce(key, value, hints[key]) for key, value in values.items()}
    return dataclasses.replace(cfg, **coerced)  # type: ignore[type-var]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``["field=value", ...]`` (values in YAML syntax) into a dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ValueError(f"override {pair!r} is not of the form field=value")
        out[key.strip()] = yaml.safe_load(text) if text.strip() else ""
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists, as YAML writes them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Atomically write ``cfg`` as YAML, with its class name as a comment."""
    body = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic.write_text(path, f"# {type(cfg).__name__}\n{body}")


def load_yaml(cls: type[C], path: str | Path) -> C:
    """Read a config written by :func:`save_yaml`."""
    values = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    return replace_fields(cls(), values)


def _coerce(name: str, value: Any, hint: Any) -> Any:
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"field {name!r} takes a list, got {value!r}")
        item = args[0] if args else Any
        return tuple(_coerce(name, v, item) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ValueError(f"field {name!r} takes true or false, got {value!r}")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"field {name!r} takes a number, got {value!r}")
        if hint is int and float(value) != int(value):
            raise ValueError(f"field {name!r} takes an integer, got {value!r}")
        return hint(value)
    if hint is str:
        return str(value)
    return value
