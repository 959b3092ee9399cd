"""Frozen config dataclasses: one per node or model, validated in ``__post_init__``.

A config field is declared with :func:`param`, which records a one-line doc (with units) that
becomes the ROS parameter description and the ``--help`` text. Nested config dataclasses are
flattened with dots (``safety.max_speed``), which is also how ROS parameters and YAML files name
them. Only scalars (bool, int, float, str) and tuples of scalars are allowed as leaves, because
those are what ROS parameters can carry.
"""

from __future__ import annotations

import dataclasses
import typing
from pathlib import Path
from typing import Any, TypeVar

import yaml

C = TypeVar("C")

SCALARS = (bool, int, float, str)


def param(default: Any, doc: str) -> Any:
    """A config field with a default and a one-line description (say the unit)."""
    return dataclasses.field(default=default, metadata={"doc": doc})


def nested(cls: type, doc: str = "") -> Any:
    """A config field holding another config dataclass, defaulting to ``cls()``."""
    return dataclasses.field(default_factory=cls, metadata={"doc": doc})


@dataclasses.dataclass(frozen=True)
class FieldSpec:
    """One leaf of a (possibly nested) config: its dotted name, type, default and doc."""

    name: str
    type: type  # bool, int, float, str, or tuple (see elem_type)
    default: Any
    doc: str
    elem_type: type | None = None  # element type of a tuple field


def _resolve(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


def _leaf_type(name: str, hint: Any) -> tuple[type, type | None]:
    origin = typing.get_origin(hint)
    if hint in SCALARS:
        return hint, None
    if origin is tuple:
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if not args or any(a != args[0] for a in args) or args[0] not in SCALARS:
            raise TypeError(f"config field {name!r}: tuples must hold one scalar type, got {hint}")
        return tuple, args[0]
    raise TypeError(
        f"config field {name!r} has type {hint}; expected bool, int, float, str, a tuple of one "
        "of those, or a nested config dataclass"
    )


def fields(cls: type, prefix: str = "") -> list[FieldSpec]:
    """All leaves of config class ``cls`` with dotted names, in declaration order."""
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = _resolve(cls)
    out: list[FieldSpec] = []
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        hint = hints[f.name]
        if dataclasses.is_dataclass(hint):
            out.extend(fields(hint, name + "."))
            continue
        typ, elem = _leaf_type(name, hint)
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"config field {name!r} needs a default")
        out.append(FieldSpec(name, typ, default, f.metadata.get("doc", ""), elem))
    return out


def to_dict(cfg: Any) -> dict[str, Any]:
    """Flatten a config instance to ``{dotted.name: value}`` (tuples become lists)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            out.update({f"{f.name}.{k}": v for k, v in to_dict(value).items()})
        else:
            out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


def _coerce(spec: FieldSpec, value: Any) -> Any:
    def scalar(t: type, v: Any) -> Any:
        if t is bool:
            if isinstance(v, bool):
                return v
            raise ValueError(f"config field {spec.name!r}: expected true/false, got {v!r}")
        if t is float and isinstance(v, (int, float)) and not isinstance(v, bool):
            return float(v)
        if t is int and isinstance(v, int) and not isinstance(v, bool):
            return v
        if t is str and isinstance(v, str):
            return v
        raise ValueError(f"config field {spec.name!r}: expected {t.__name__}, got {v!r}")

    if spec.type is tuple:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"config field {spec.name!r}: expected a list, got {value!r}")
        return tuple(scalar(spec.elem_type, v) for v in value)
    return scalar(spec.type, value)


def from_dict(cls: type[C], values: dict[str, Any] | None = None, *, strict: bool = True) -> C:
    """Build config ``cls`` from a flat ``{dotted.name: value}`` or nested dict.

    Unknown keys raise ``ValueError`` (naming them and the known ones) when ``strict``; types are
    checked and ints are widened to floats; the dataclass' own ``__post_init__`` validates ranges.
    """
    flat = _flatten(values or {})
    specs = {s.name: s for s in fields(cls)}
    unknown = sorted(set(flat) - set(specs))
    if unknown and strict:
        raise ValueError(f"unknown {cls.__name__} parameter(s) {unknown}; known: {sorted(specs)}")
    merged = {name: _coerce(specs[name], v) for name, v in flat.items() if name in specs}
    return _build(cls, merged, "")


def _build(cls: type[C], flat: dict[str, Any], prefix: str) -> C:
    hints = _resolve(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        name = prefix + f.name
        if dataclasses.is_dataclass(hints[f.name]):
            kwargs[f.name] = _build(hints[f.name], flat, name + ".")
        elif name in flat:
            kwargs[f.name] = flat[name]
    return cls(**kwargs)


def _flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[prefix + k] = v
    return out


def load_yaml(cls: type[C], path: str | Path, node_name: str | None = None, **overrides: Any) -> C:
    """Load config ``cls`` from a YAML file, then apply ``overrides`` (dotted names use ``__``).

    The file may be a plain mapping of parameters or a ROS 2 parameter file
    (``node_name: {ros__parameters: {...}}``); in the latter case ``node_name`` picks the node
    (``/**`` wildcards are merged first).
    """
    data = yaml.safe_load(Path(path).read_text()) or {}
    params = ros_params_section(data, node_name) if _is_ros_param_file(data) else data
    params = _flatten(params)
    params.update({k.replace("__", "."): v for k, v in overrides.items()})
    return from_dict(cls, params)


def _is_ros_param_file(data: dict[str, Any]) -> bool:
    return any(isinstance(v, dict) and "ros__parameters" in v for v in data.values())


def ros_params_section(data: dict[str, Any], node_name: str | None) -> dict[str, Any]:
    """The merged ``ros__parameters`` for ``node_name`` from a parsed ROS 2 parameter file."""
    out: dict[str, Any] = {}
    for key in ("/**", "**"):
        out.update(_flatten(data.get(key, {}).get("ros__parameters", {})))
    if node_name is not None:
        for key in (node_name, "/" + node_name.lstrip("/")):
            out.update(_flatten(data.get(key, {}).get("ros__parameters", {})))
    return out


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``: for ``__post_init__`` validation."""
    if not condition:
        raise ValueError(message)
