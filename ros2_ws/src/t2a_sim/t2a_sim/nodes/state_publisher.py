"""``t2a_sim_state_publisher``: stand-in for spot_ros2's ``state_publisher_node``.

On the robot the ``spot_ros2`` executable publishes no joint states: spot_ros2's
``state_publisher_node`` (started by ``spot_driver.launch.py``) polls the robot state and
publishes ``/<spot_name>/joint_states`` with every joint named ``<frame_prefix><friendly name>``
(``spot/arm_sh0``; upstream ``conversions/robot_state.cpp``), reliable + transient local, depth 1.
This node does the same from the simulator's raw robot state (``/t2a_sim/robot_state``, joint
names as the robot's API gives them: ``arm0.sh0``, ``fl.hx``), so a stack that forgets to start
the state publisher, or matches bare names only, fails here as it would on the robot.
"""

from __future__ import annotations

from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import JointState

from t2a_common.node_main import run_node
from t2a_common.ros_params import declare_config
from t2a_sim.core.node_config import StatePublisherConfig

RAW_STATE_TOPIC = "/t2a_sim/robot_state"

# Robot API joint name -> spot_ros2 friendly name (upstream kFriendlyJointNames).
FRIENDLY_JOINT_NAMES: dict[str, str] = {
    **{f"{leg}.{j}": f"{side}_{part}" for leg, side in (("fl", "front_left"),
       ("fr", "front_right"), ("hl", "rear_left"), ("hr", "rear_right"))
       for j, part in (("hx", "hip_x"), ("hy", "hip_y"), ("kn", "knee"))},
    **{f"arm0.{j}": f"arm_{j}" for j in ("sh0", "sh1", "hr0", "el0", "el1", "wr0", "wr1", "f1x")},
}  # fmt: skip

JOINT_STATES_QOS = QoSProfile(
    depth=1,
    reliability=QoSReliabilityPolicy.RELIABLE,
    durability=QoSDurabilityPolicy.TRANSIENT_LOCAL,
)
"""spot_ros2's publisher QoS (``makePublisherQoS(1)``: reliable, transient local, depth 1)."""


def friendly_joint_state(raw: JointState, prefix: str) -> JointState:
    """The robot's joint state as spot_ros2 publishes it: ``prefix + friendly name``."""
    msg = JointState(header=raw.header)
    msg.name = [prefix + FRIENDLY_JOINT_NAMES[n] for n in raw.name]
    msg.position, msg.velocity, msg.effort = raw.position, raw.velocity, raw.effort
    return msg


class StatePublisherNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("spot_state_publisher", **kwargs)
        cfg = self.cfg = declare_config(self, StatePublisherConfig)
        topic = f"/{cfg.spot_name}/joint_states" if cfg.spot_name else "/joint_states"
        self._pub = self.create_publisher(JointState, topic, JOINT_STATES_QOS)
        self.create_subscription(JointState, RAW_STATE_TOPIC, self._on_state, 5)
        self.get_logger().info(f"publishing {topic} with joint prefix {cfg.prefix!r}")

    def _on_state(self, raw: JointState) -> None:
        try:
            self._pub.publish(friendly_joint_state(raw, self.cfg.prefix))
        except KeyError as exc:
            self.get_logger().error(f"unknown robot joint {exc}", throttle_duration_sec=5.0)


def main(args: list[str] | None = None) -> int:
    return run_node(StatePublisherNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
