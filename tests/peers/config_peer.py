"""A node whose parameters come from a config dataclass (tests/test_ros_params.py)."""

from __future__ import annotations

import dataclasses

from rclpy.node import Node

from t2a_common.core.config import check, param
from t2a_common.node_main import run_node
from t2a_common.ros_params import declare_config


@dataclasses.dataclass(frozen=True)
class PeerConfig:
    rate_hz: float = param(5.0, "tick rate (Hz)")
    names: tuple[str, ...] = param(("a", "b"), "joint names")

    def __post_init__(self):
        check(0 < self.rate_hz <= 100, f"rate_hz must be in (0, 100] Hz, got {self.rate_hz}")


class ConfigPeer(Node):
    def __init__(self) -> None:
        super().__init__("config_peer")
        self.cfg = declare_config(self, PeerConfig)
        self.get_logger().info(f"config: {self.cfg}")


if __name__ == "__main__":
    raise SystemExit(run_node(ConfigPeer))
