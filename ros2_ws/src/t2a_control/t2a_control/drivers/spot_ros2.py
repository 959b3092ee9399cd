"""ArmDriver over the spot_ros2 driver's topics and Trigger services (t2a_sim serves the same).

Joint goals are streamed on ``arm_joint_commands`` (not through the ``robot_command`` action,
which stops the arm on every preemption); gripper and power calls are Trigger services.
Service calls wait on their own reentrant callback group, so the node must spin a
MultiThreadedExecutor for a call made from another callback to complete.
"""

from __future__ import annotations

import threading

import numpy as np
from rclpy.callback_groups import ReentrantCallbackGroup
from rclpy.node import Node
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core.spot_arm import ARM_JOINT_NAMES, GRIPPER_JOINT, gripper_opening

TRIGGERS = ("claim", "power_on", "stand", "arm_unstow", "arm_stow", "open_gripper",
            "close_gripper", "stop")  # fmt: skip


class SpotRos2Driver:
    """The :class:`t2a_control.core.driver.LiveArmDriver` protocol on ``/<spot_name>/...``.

    ``received_s`` is the node's clock (ROS time; sim time under ``use_sim_time``) when the
    last ``joint_states`` arrived.
    """

    def __init__(self, node: Node, spot_name: str = "spot", call_timeout_s: float = 5.0) -> None:
        self.node = node
        self.call_timeout_s = call_timeout_s
        self._group = ReentrantCallbackGroup()
        ns = f"/{spot_name}"
        self._pub = node.create_publisher(JointState, f"{ns}/arm_joint_commands", 10)
        self._clients = {
            name: node.create_client(Trigger, f"{ns}/{name}", callback_group=self._group)
            for name in TRIGGERS
        }
        self._state: tuple[np.ndarray, float, float] | None = None
        self.received_s = float("nan")  # node-clock time (s) of the last joint_states
        node.create_subscription(
            JointState, f"{ns}/joint_states", self._on_joints, 10, callback_group=self._group
        )

    def _on_joints(self, msg: JointState) -> None:
        try:
            q = ros_conv.joint_positions(msg, ARM_JOINT_NAMES)
        except ValueError as exc:
            self.node.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        names = list(msg.name)
        finger = GRIPPER_JOINT.name
        f1x = msg.position[names.index(finger)] if finger in names else GRIPPER_JOINT.lower
        self._state = (q, gripper_opening(f1x), ros_conv.stamp_to_sec(msg.header.stamp))
        self.received_s = self.node.get_clock().now().nanoseconds * 1e-9

    # ------------------------------------------------------------------ ArmDriver
    def joint_positions(self) -> tuple[np.ndarray, float, float]:
        if self._state is None:
            raise RuntimeError("no joint_states received yet")
        return self._state

    def has_state(self) -> bool:
        return self._state is not None

    def close(self) -> None:
        """Nothing to release: the publisher and clients go with the node."""

    def send_joint_targets(self, q: np.ndarray) -> None:
        self._pub.publish(ros_conv.joint_state_msg(ARM_JOINT_NAMES, q))

    def _call(self, name: str) -> tuple[bool, str]:
        client = self._clients[name]
        if not client.service_is_ready() and not client.wait_for_service(self.call_timeout_s):
            return False, f"{client.srv_name} is not available"
        done = threading.Event()
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda _f: done.set())
        if not done.wait(self.call_timeout_s):
            return False, f"{client.srv_name} did not answer within {self.call_timeout_s} s"
        res = future.result()
        return bool(res.success), res.message

    def call_async(self, name: str) -> None:
        """Fire a Trigger without waiting (the control tick must not block on the driver)."""
        client = self._clients[name]
        future = client.call_async(Trigger.Request())
        future.add_done_callback(lambda f: self._log_result(name, f))

    def _log_result(self, name: str, future) -> None:
        res = future.result()
        if res is not None and not res.success:
            self.node.get_logger().error(f"{name} failed: {res.message}")

    def open_gripper(self) -> tuple[bool, str]:
        return self._call("open_gripper")

    def close_gripper(self) -> tuple[bool, str]:
        return self._call("close_gripper")

    def stop(self) -> tuple[bool, str]:
        return self._call("stop")

    def power_on(self) -> tuple[bool, str]:
        return self._call("power_on")

    def claim(self) -> tuple[bool, str]:
        return self._call("claim")

    def stand(self) -> tuple[bool, str]:
        return self._call("stand")

    def unstow(self) -> tuple[bool, str]:
        return self._call("arm_unstow")

    def stow(self) -> tuple[bool, str]:
        return self._call("arm_stow")
