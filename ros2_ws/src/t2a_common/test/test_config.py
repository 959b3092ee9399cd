"""Config dataclasses: flattening, YAML (plain and ROS parameter files), validation errors."""

from __future__ import annotations

import dataclasses

import pytest

from t2a_common.core import config as cfgmod
from t2a_common.core.config import check, nested, param


@dataclasses.dataclass(frozen=True)
class Limits:
    max_speed: float = param(0.25, "hand speed limit (m/s)")
    box: tuple[float, ...] = param((0.2, 1.2), "workspace x range (m)")

    def __post_init__(self):
        check(self.max_speed > 0, f"max_speed must be > 0 m/s, got {self.max_speed}")


@dataclasses.dataclass(frozen=True)
class NodeConfig:
    rate_hz: float = param(5.0, "control rate (Hz)")
    steps: int = param(8, "plan horizon (steps)")
    mode: str = param("residual", "open_loop | residual | absolute")
    verbose: bool = param(False, "log every tick")
    limits: Limits = nested(Limits, "safety limits")


def test_fields_are_flattened_with_docs():
    specs = {s.name: s for s in cfgmod.fields(NodeConfig)}
    assert list(specs) == ["rate_hz", "steps", "mode", "verbose", "limits.max_speed", "limits.box"]
    assert specs["limits.max_speed"].doc == "hand speed limit (m/s)"
    assert specs["limits.box"].type is tuple and specs["limits.box"].elem_type is float


def test_round_trip_and_widening():
    cfg = cfgmod.from_dict(NodeConfig, {"rate_hz": 10, "limits": {"box": [0, 1]}})
    assert cfg.rate_hz == 10.0 and isinstance(cfg.rate_hz, float)
    assert cfg.limits.box == (0.0, 1.0)
    assert cfgmod.from_dict(NodeConfig, cfgmod.to_dict(cfg)) == cfg


@pytest.mark.parametrize(
    "values,match",
    [
        ({"rate": 5.0}, r"unknown NodeConfig parameter\(s\) \['rate'\]; known: .*rate_hz"),
        ({"steps": 2.5}, "'steps': expected int, got 2.5"),
        ({"verbose": 1}, "'verbose': expected true/false"),
        ({"limits.max_speed": -1.0}, "max_speed must be > 0 m/s, got -1.0"),
        ({"limits.box": 3.0}, "'limits.box': expected a list"),
    ],
)
def test_bad_values_say_what_is_wrong(values, match):
    with pytest.raises(ValueError, match=match):
        cfgmod.from_dict(NodeConfig, values)


def test_load_yaml_plain_and_ros_parameter_file(tmp_path):
    plain = tmp_path / "plain.yaml"
    plain.write_text("rate_hz: 2.0\nlimits:\n  max_speed: 0.1\n")
    cfg = cfgmod.load_yaml(NodeConfig, plain, steps=4, limits__box=[1.0, 2.0])
    assert (cfg.rate_hz, cfg.steps, cfg.limits.max_speed, cfg.limits.box) == (2.0, 4, 0.1, (1, 2))

    ros = tmp_path / "ros.yaml"
    ros.write_text(
        "/**:\n  ros__parameters:\n    rate_hz: 3.0\n"
        "controller:\n  ros__parameters:\n    mode: open_loop\n    limits.max_speed: 0.2\n"
        "other:\n  ros__parameters:\n    mode: absolute\n"
    )
    cfg = cfgmod.load_yaml(NodeConfig, ros, node_name="controller")
    assert (cfg.rate_hz, cfg.mode, cfg.limits.max_speed) == (3.0, "open_loop", 0.2)


def test_unsupported_field_types_are_refused():
    @dataclasses.dataclass(frozen=True)
    class Bad:
        table: dict = param(None, "no dicts")

    with pytest.raises(TypeError, match="'table' has type"):
        cfgmod.fields(Bad)
