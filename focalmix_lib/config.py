"""Frozen-dataclass configuration with named presets, YAML round trip, overrides and checks.

A config class is a ``@dataclass(frozen=True)`` whose field defaults form the
``standard`` preset and whose ``PRESETS`` class attribute maps the other preset names
(``quick``, ``paper``) to the fields they change. Every run saves its config as YAML;
CLI flags (``--set field=value``) and papermill parameters override fields by name.

A class may also declare ``CHECKS``, a table field -> :data:`Check` (``at_least(1)``,
``between(0, 1)``, ``one_of(...)``), and call :func:`check_fields` in its
``__post_init__``: every field's type (integers, finite numbers, booleans, lists) and
range is then checked whenever a config is built, and a bad value raises
:class:`~focalmix_lib.errors.ConfigError` naming the field. A class method
``check_machine()``, if the class has one, is called by :func:`from_preset`: a config
built for a new run must fit the machine it runs on (a config.yaml read back need not).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import re
import typing
from collections.abc import Callable, Collection, Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from focalmix_lib import atomic
from focalmix_lib.errors import ConfigError

C = TypeVar("C")

# A range or membership test of one field's value: the problem in words, or None if fine.
Check = Callable[[Any], "str | None"]


def from_preset(cls: type[C], name: str, **overrides: Any) -> C:
    """Build ``cls`` from the named preset, then apply ``overrides`` (field -> value)."""
    presets: Mapping[str, Mapping[str, Any]] = getattr(cls, "PRESETS", {})
    if name != "standard" and name not in presets:
        known = ", ".join(sorted({"standard", *presets}))
        raise ConfigError("preset", name, f"unknown preset of {cls.__name__}; choose one of {known}")
    cfg = replace_fields(cls(), {**presets.get(name, {}), **overrides})
    check_machine = getattr(cfg, "check_machine", None)
    if check_machine is not None:
        check_machine()
    return cfg


def replace_fields(cfg: C, values: Mapping[str, Any]) -> C:
    """Return ``cfg`` with ``values`` applied, each coerced to its field's declared type."""
    hints = _type_hints(type(cfg))
    for key in values:
        if key not in hints:
            close = difflib.get_close_matches(key, hints, n=3)
            hint = f"did you mean {', '.join(close)}?" if close else f"fields are {', '.join(hints)}"
            raise ConfigError(key, values[key], f"{type(cfg).__name__} has no such field; {hint}")
    coerced = {key: _coerce(key, value, hints[key]) for key, value in values.items()}
    return dataclasses.replace(cfg, **coerced)  # type: ignore[type-var]


def parse_overrides(pairs: Iterable[str]) -> dict[str, Any]:
    """Parse ``["field=value", ...]`` (values in YAML 1.2 syntax: ``1e-4`` is a number) into a dict."""
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key.strip():
            raise ConfigError("--set", pair, "an override takes the form field=value")
        try:
            out[key.strip()] = yaml.load(text, Loader=_Yaml12Loader) if text.strip() else ""
        except yaml.YAMLError as error:
            raise ConfigError(key.strip(), text, f"not a YAML value ({_first_line(error)})") from None
    return out


def check_fields(cfg: Any) -> None:
    """Check every field of ``cfg``: its declared type, then its class's ``CHECKS`` entry.

    Raises :class:`ConfigError` naming the first bad field. Called from ``__post_init__``.
    """
    checks: Mapping[str, Check] = getattr(type(cfg), "CHECKS", {})
    for name, hint in _type_hints(type(cfg)).items():
        value = getattr(cfg, name)
        _coerce(name, value, hint)
        problem = checks[name](value) if name in checks and value is not None else None
        if problem:
            raise ConfigError(name, value, problem)


# --- checks for CHECKS tables -----------------------------------------------------
def at_least(low: float) -> Check:
    """``value >= low``."""
    return lambda value: None if value >= low else f"must be at least {low}"


def above(low: float) -> Check:
    """``value > low``."""
    return lambda value: None if value > low else f"must be greater than {low}"


def between(low: float, high: float, high_open: bool = False) -> Check:
    """``low <= value <= high`` (``< high`` with ``high_open``)."""
    def check(value: float) -> str | None:
        inside = low <= value < high if high_open else low <= value <= high
        return None if inside else f"must lie in [{low}, {high}{')' if high_open else ']'}"
    return check


def one_of(choices: Collection[Any]) -> Check:
    """``value in choices``."""
    return lambda value: None if value in choices else f"must be one of {', '.join(map(str, choices))}"


def matches(pattern: str, described: str) -> Check:
    """The whole string matches ``pattern``; ``described`` says what that means to a user."""
    compiled = re.compile(pattern)
    return lambda value: None if compiled.fullmatch(value) else f"must be {described}"


def each(check: Check, at_least_one: bool = True) -> Check:
    """``check`` on every item of a list (that must not be empty with ``at_least_one``)."""
    def check_items(values: tuple[Any, ...]) -> str | None:
        if at_least_one and not values:
            return "must list at least one value"
        return next((f"item {v}: {problem}" for v in values if (problem := check(v))), None)
    return check_items


# --- YAML ---------------------------------------------------------------------------
def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain dict of a config (tuples become lists, as YAML writes them)."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(cfg).items()}


def save_yaml(cfg: Any, path: str | Path) -> None:
    """Atomically write ``cfg`` as YAML, with its class name as a comment."""
    body = yaml.safe_dump(to_dict(cfg), sort_keys=False)
    atomic.write_text(path, f"# {type(cfg).__name__}\n{body}")


def load_yaml(cls: type[C], path: str | Path) -> C:
    """Read a config written by :func:`save_yaml`; a bad value is a ConfigError naming ``path``."""
    try:
        values = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_Yaml12Loader) or {}
    except yaml.YAMLError as error:
        raise ConfigError("(file)", None, f"not valid YAML ({_first_line(error)})", path) from None
    if not isinstance(values, dict):
        raise ConfigError("(file)", values, "must hold field: value lines", path)
    try:
        return replace_fields(cls(), values)
    except ConfigError as error:
        raise error.at(path) from None


class _Yaml12Loader(yaml.SafeLoader):
    """PyYAML's safe loader with YAML 1.2 numbers: ``1e-4`` is a float (YAML 1.1 wants ``1.0e-4``)."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:float"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
               r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"),
    list("-+0123456789."),
)


def _first_line(error: Exception) -> str:
    return " ".join(str(error).split())


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    """Declared type of every dataclass field of ``cls``, in field order."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _coerce(name: str, value: Any, hint: Any) -> Any:
    """``value`` as the field's declared type; ConfigError if it is not one."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if origin is typing.Union or type(hint).__name__ == "UnionType":
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(name, value, inner[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(name, value, "takes a list, e.g. [1, 2]")
        item = args[0] if args else Any
        return tuple(_coerce(name, v, item) for v in value)
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(name, value, "takes true or false")
        return value
    if hint in (int, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(name, value, "takes an integer" if hint is int else "takes a number")
        if not math.isfinite(value):
            raise ConfigError(name, value, "takes a finite number")
        if hint is int and float(value) != int(value):
            raise ConfigError(name, value, "takes an integer")
        return hint(value)
    if hint is str:
        if isinstance(value, (list, dict)) or value is None:
            raise ConfigError(name, value, "takes a text value")
        return str(value)
    return value
