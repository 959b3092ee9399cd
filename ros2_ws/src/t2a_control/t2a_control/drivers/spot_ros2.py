"""ArmDriver over the spot_ros2 driver's topics and Trigger services (t2a_sim serves the same).

Joint goals are streamed on ``arm_joint_commands`` (not through the ``robot_command`` action,
which stops the arm on every preemption); gripper, power, lease and estop calls are Trigger
services. spot_ros2 turns each ``arm_joint_commands`` message into one single-point joint move
at the robot's default speed limits, so a target is not reached within a tick; the gripper
services power on and stand first and block the driver's one callback group meanwhile (joint
commands queue behind them). ``joint_states`` come from spot_ros2's ``state_publisher_node``
with the frame prefix (``spot/arm_sh0``); this driver accepts prefixed and bare names and sends
prefixed ones. The interface facts are listed in ``docs/spot_ros2_contract.md``.

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
from t2a_common.core import sensor_codec
from t2a_common.core.spot_arm import ARM_JOINT_NAMES, GRIPPER_JOINT, gripper_opening

TRIGGERS = ("claim", "release", "power_on", "stand", "arm_unstow", "arm_stow", "open_gripper",
            "close_gripper", "stop", "estop/gentle", "estop/hard", "estop/release")  # fmt: skip
STARTUP = ("claim", "power_on", "stand", "arm_unstow")
"""The start-up sequence, in order (each a spot_ros2 Trigger service)."""
SHUTDOWN = ("arm_stow", "release")
"""The shutdown sequence, in order."""


class SpotRos2Driver:
    """The :class:`t2a_control.core.driver.LiveArmDriver` protocol on ``/<spot_name>/...``.

    ``received_s`` is the node's clock (ROS time; sim time under ``use_sim_time``) when the
    last ``joint_states`` arrived. ``frame_prefix`` is spot_ros2's (``None``: its default,
    ``<spot_name>/``; ``""`` without one); bare names are accepted either way. Start-up and
    gripper calls may take ``call_timeout_s`` (stand and unstow block on the robot, ~10 s).
    """

    def __init__(
        self,
        node: Node,
        spot_name: str = "spot",
        call_timeout_s: float = 20.0,
        frame_prefix: str | None = None,
    ) -> None:
        self.node = node
        self.call_timeout_s = call_timeout_s
        self.prefix = f"{spot_name}/" if frame_prefix is None else frame_prefix
        self._names = [self.prefix + n for n in ARM_JOINT_NAMES]
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
            q = ros_conv.joint_positions(msg, ARM_JOINT_NAMES, self.prefix)
        except ValueError as exc:
            self.node.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        (i,) = sensor_codec.joint_name_index(msg.name, [GRIPPER_JOINT.name], self.prefix)
        f1x = msg.position[i] if i is not None and i < len(msg.position) else GRIPPER_JOINT.lower
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
        self._pub.publish(ros_conv.joint_state_msg(self._names, q))

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

    def release(self) -> tuple[bool, str]:
        return self._call("release")

    def estop(self) -> tuple[bool, str]:
        """spot_ros2's gentle estop (``estop/gentle``: the robot settles, then cuts power)."""
        return self._call("estop/gentle")
