"""A separate-process peer for tests/test_t2a_msgs_ros.py.

Echoes every t2a_msgs message it receives on ``in/<type>`` back on ``out/<type>`` and serves
``set_goal``: accepts a 640x480 rgb8 goal and answers with a checksum of its pixels, so the test
can tell the image crossed the process boundary intact.
"""

from __future__ import annotations

import hashlib

from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile

from t2a_common.node_main import run_node
from t2a_msgs.msg import ControlStatus, Plan, PointTracks
from t2a_msgs.srv import SetGoal

TYPES = {"point_tracks": PointTracks, "plan": Plan, "control_status": ControlStatus}


class EchoPeer(Node):
    def __init__(self) -> None:
        super().__init__("echo_peer")
        qos = QoSProfile(depth=10, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self._pubs = {
            name: self.create_publisher(t, f"out/{name}", qos) for name, t in TYPES.items()
        }
        for name, t in TYPES.items():
            self.create_subscription(
                t, f"in/{name}", lambda m, n=name: self._pubs[n].publish(m), qos
            )
        self.create_service(SetGoal, "set_goal", self._on_goal)
        self.get_logger().info("echo peer ready")

    def _on_goal(self, req: SetGoal.Request, res: SetGoal.Response) -> SetGoal.Response:
        img = req.goal_image
        ok = (img.width, img.height, img.encoding) == (640, 480, "rgb8")
        res.success = ok
        res.goal_id = hashlib.sha256(bytes(img.data)).hexdigest()[:16] if ok else ""
        res.message = f"got {img.width}x{img.height} {img.encoding}, {len(img.data)} bytes"
        return res


def main() -> int:
    return run_node(EchoPeer)


if __name__ == "__main__":
    raise SystemExit(main())
