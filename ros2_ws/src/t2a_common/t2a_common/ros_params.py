"""Declare a node's ROS parameters from its config dataclass and read the validated config back.

One frozen config dataclass per node (t2a_common.core.config) is the single source of truth:
names, defaults, types and descriptions come from it; ``__post_init__`` validates the values the
user passed (YAML or ``--ros-args -p``). Parameters are read-only after start-up, because the
cores are built from a frozen config once.
"""

from __future__ import annotations

from typing import TypeVar

from rcl_interfaces.msg import ParameterDescriptor, ParameterType
from rclpy.node import Node

from t2a_common.core.config import FieldSpec, fields, from_dict

C = TypeVar("C")

_SCALAR_TYPES = {
    bool: ParameterType.PARAMETER_BOOL,
    int: ParameterType.PARAMETER_INTEGER,
    float: ParameterType.PARAMETER_DOUBLE,
    str: ParameterType.PARAMETER_STRING,
}
_ARRAY_TYPES = {
    bool: ParameterType.PARAMETER_BOOL_ARRAY,
    int: ParameterType.PARAMETER_INTEGER_ARRAY,
    float: ParameterType.PARAMETER_DOUBLE_ARRAY,
    str: ParameterType.PARAMETER_STRING_ARRAY,
}


def _descriptor(spec: FieldSpec) -> ParameterDescriptor:
    if spec.type is tuple:
        ptype = _ARRAY_TYPES[spec.elem_type]
    else:
        ptype = _SCALAR_TYPES[spec.type]
    # An empty list has no element type for rclpy to infer: such a parameter is dynamically typed.
    dynamic = spec.type is tuple and len(spec.default) == 0
    return ParameterDescriptor(
        name=spec.name,
        type=ParameterType.PARAMETER_NOT_SET if dynamic else ptype,
        description=spec.doc,
        read_only=True,
        dynamic_typing=dynamic,
    )


def declare_config(node: Node, cls: type[C], prefix: str = "") -> C:
    """Declare every field of config ``cls`` as a parameter of ``node`` and return the config.

    ``prefix`` (e.g. ``"planner."``) namespaces the parameters. Invalid values raise ValueError
    naming the node and the parameter, before the node does anything.
    """
    specs = fields(cls)
    values = {}
    for spec in specs:
        default = list(spec.default) if spec.type is tuple else spec.default
        param = node.declare_parameter(prefix + spec.name, default, _descriptor(spec))
        values[spec.name] = param.value
    try:
        return from_dict(cls, values)
    except ValueError as exc:
        raise ValueError(
            f"node {node.get_fully_qualified_name()}: invalid parameters: {exc}"
        ) from exc
