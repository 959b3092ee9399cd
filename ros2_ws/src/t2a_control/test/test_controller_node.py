"""residual_controller over real DDS against t2a_sim's spot_ros2 interfaces: it executes a plan,
holds within two ticks when the camera goes stale, and resumes when frames come back."""

from __future__ import annotations

import time

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, JointState

from t2a_common import ros_conv
from t2a_common.core.types import EEPlan
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_control.core import kinematics, spot_arm
from t2a_msgs.msg import ControlStatus, Plan

pytestmark = pytest.mark.sim
LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def _plan_near(T_hand: np.ndarray) -> EEPlan:
    """A slow 15 cm move in front of the current hand pose (every pose reachable)."""
    poses = np.stack([T_hand.copy() for _ in range(9)])
    poses[:, 0, 3] -= 0.05
    poses[:, 2, 3] -= np.linspace(0.0, 0.15, 9)
    pre = poses[0].copy()
    pre[2, 3] += 0.05
    return EEPlan(0, "test plan", poses, np.linspace(2.0, 10.0, 9), pre, 0, goal_id="wd")


def test_watchdog_holds_within_two_ticks_of_a_stale_camera_and_resumes():
    sim = ["-m", "t2a_sim.nodes.sim_node", "--ros-args", "-p", "sim.width:=160",
           "-p", "sim.height:=120", "-p", "camera_rate_hz:=5.0"]  # fmt: skip
    ctl = ["-m", "t2a_control.nodes.residual_controller", "--ros-args",
           "-p", "color_topic:=/test/image"]  # fmt: skip
    with ChildProcess(sim) as p_sim, ChildProcess(ctl) as p_ctl, ros_context() as ctx:
        node = rclpy.create_node("watchdog_probe", context=ctx)
        got: dict = {}
        node.create_subscription(ControlStatus, "/t2a/status",
                                 lambda m: got.__setitem__("status", m), 10)  # fmt: skip
        node.create_subscription(JointState, "/spot/joint_states",
                                 lambda m: got.__setitem__("joints", m), 10)  # fmt: skip
        image_pub = node.create_publisher(Image, "/test/image", 5)
        plan_pub = node.create_publisher(Plan, "/t2a/plan", LATCHED)
        frame = ros_conv.numpy_to_image(np.zeros((120, 160, 3), np.uint8), "rgb8")
        camera_on = [True]

        def pump() -> bool:  # a 20 Hz camera while camera_on
            if camera_on[0]:
                image_pub.publish(frame)
            return False

        def logs() -> str:
            return p_sim.stop()[-2000:] + p_ctl.stop()[-2000:]

        assert spin_until(node, lambda: pump() or {"status", "joints"} <= set(got), 60.0), logs()
        q = ros_conv.joint_positions(got["joints"], spot_arm.ARM_JOINT_NAMES)
        plan_pub.publish(ros_conv.ee_plan_to_msg(_plan_near(kinematics.fk(q))))
        assert spin_until(
            node, lambda: pump() or got["status"].state_name in ("grasp", "execute"), 30.0
        ), f"{got['status'].state_name}: {got['status'].message}\n{logs()}"

        camera_on[0] = False
        stopped = time.time()  # the node's clock is the system clock (no use_sim_time)
        assert spin_until(node, lambda: got["status"].state_name == "hold", 5.0), logs()
        held_after = ros_conv.stamp_to_sec(got["status"].header.stamp) - stopped
        # Stale = older than 2 ticks (0.4 s), so the hold is due on the next tick (<= 0.6 s); the
        # exact tick is unit-tested (test_watchdog.py). Here 0.4 s more is allowed for the last
        # frame's own delivery when parallel tests load both cores.
        assert held_after < 0.4 + 0.2 + 0.4, f"hold came {held_after:.2f} s after the last frame"
        assert "image" in got["status"].message
        q_hold = ros_conv.joint_positions(got["joints"], spot_arm.ARM_JOINT_NAMES)
        spin_until(node, lambda: False, 1.0)
        q_later = ros_conv.joint_positions(got["joints"], spot_arm.ARM_JOINT_NAMES)
        assert np.abs(q_later - q_hold).max() < 0.01, "the arm kept moving while holding"

        camera_on[0] = True
        assert spin_until(node, lambda: pump() or got["status"].state_name != "hold", 5.0)
        assert got["status"].state_name in ("grasp", "execute", "release", "done")
        node.destroy_node()
