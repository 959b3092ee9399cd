"""Config dataclass -> ROS parameters: declaration, overrides, descriptions, clear failures."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import rclpy
from rclpy.parameter import Parameter

from t2a_common.core.config import check, nested, param
from t2a_common.ros_params import declare_config
from t2a_common.testing import ChildProcess, ros_context

pytestmark = pytest.mark.ros
PEER = str(Path(__file__).parent / "peers" / "config_peer.py")


@dataclasses.dataclass(frozen=True)
class Safety:
    max_speed: float = param(0.25, "hand speed limit (m/s)")
    box: tuple[float, ...] = param((0.2, 1.2), "workspace x range (m)")
    extra: tuple[int, ...] = param((), "optional ids")

    def __post_init__(self):
        check(self.max_speed > 0, f"max_speed must be > 0 m/s, got {self.max_speed}")


@dataclasses.dataclass(frozen=True)
class Cfg:
    rate_hz: float = param(5.0, "control rate (Hz)")
    mode: str = param("residual", "open_loop | residual | absolute")
    safety: Safety = nested(Safety)


def test_declare_config_reads_overrides_and_documents_parameters():
    with ros_context() as ctx:
        node = rclpy.create_node(
            "cfg_node",
            context=ctx,
            parameter_overrides=[
                Parameter("rate_hz", value=10.0),
                Parameter("safety.box", value=[0.1, 0.9]),
                Parameter("safety.extra", value=[3, 4]),
            ],
        )
        cfg = declare_config(node, Cfg)
        assert cfg == Cfg(rate_hz=10.0, safety=Safety(box=(0.1, 0.9), extra=(3, 4)))
        desc = node.describe_parameter("safety.max_speed")
        assert desc.description == "hand speed limit (m/s)" and desc.read_only
        node.destroy_node()


def test_invalid_override_names_node_and_value():
    with ros_context() as ctx:
        node = rclpy.create_node(
            "cfg_bad", context=ctx, parameter_overrides=[Parameter("safety.max_speed", value=-1.0)]
        )
        with pytest.raises(
            ValueError, match=r"/cfg_bad: invalid parameters: max_speed must be > 0"
        ):
            declare_config(node, Cfg)
        node.destroy_node()


def test_node_process_takes_ros_args_and_fails_cleanly_on_bad_ones():
    with ChildProcess([PEER, "--ros-args", "-p", "rate_hz:=20.0", "-p", "names:=[x]"]) as ok:
        out = ""
        while "config:" not in out and ok.alive():  # pytest-timeout bounds a silent hang
            out += ok.proc.stdout.readline()
        assert "PeerConfig(rate_hz=20.0, names=('x',))" in out, out + ok.stop()
    bad = ChildProcess([PEER, "--ros-args", "-p", "rate_hz:=500.0"])
    assert bad.proc.wait(timeout=20) == 1
    assert "rate_hz must be in (0, 100] Hz, got 500.0" in bad.stop()
