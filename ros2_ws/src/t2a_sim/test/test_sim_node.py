"""The sim node (+ its state publisher) as a drop-in for realsense2_camera + spot_ros2, over
DDS, in child processes: strict like the real driver (prefixed joint names from a separate node,
nothing moves before claim/power_on/stand, single-point moves at the speed limits, blocking
gripper services that stand first, estop)."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core import spot_arm
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_msgs.srv import SimEpisodeStatus, SimReset

pytestmark = pytest.mark.sim

ARGS = ["-m", "t2a_sim.nodes.sim_node", "--ros-args", "-p", "sim.width:=320",
        "-p", "sim.height:=240", "-p", "camera_rate_hz:=15.0"]  # fmt: skip
STATE = ["-m", "t2a_sim.nodes.state_publisher"]


def _call(node, client, request, timeout=15.0):
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout), f"{client.srv_name} did not answer"
    return future.result()


def test_sim_node_publishes_camera_and_obeys_spot_ros2_commands():
    with ChildProcess(ARGS) as sim, ChildProcess(STATE), ros_context() as ctx:
        node = rclpy.create_node("sim_probe", context=ctx)
        latest: dict = {}
        for topic, typ in [
            ("/camera/camera/color/image_raw", Image),
            ("/camera/camera/aligned_depth_to_color/image_raw", Image),
            ("/camera/camera/color/camera_info", CameraInfo),
            ("/spot/joint_states", JointState),
        ]:
            node.create_subscription(typ, topic, lambda m, t=topic: latest.__setitem__(t, m), 5)
        commands = node.create_publisher(JointState, "/spot/arm_joint_commands", 10)
        names = ("claim", "power_on", "stand", "close_gripper", "estop/gentle")
        trig = {n: node.create_client(Trigger, f"/spot/{n}") for n in names}
        reset = node.create_client(SimReset, "/t2a_sim/reset")
        status = node.create_client(SimEpisodeStatus, "/t2a_sim/episode_status")
        assert spin_until(node, lambda: len(latest) == 4, timeout=60.0), (
            f"only got {sorted(latest)}\n{sim.stop()}"
        )

        rgb, depth = (
            latest["/camera/camera/color/image_raw"],
            latest["/camera/camera/aligned_depth_to_color/image_raw"],
        )
        assert (rgb.encoding, depth.encoding) == ("rgb8", "16UC1")
        assert rgb.header.frame_id == depth.header.frame_id == "camera_color_optical_frame"
        assert (rgb.width, rgb.height) == (320, 240)
        intr = ros_conv.camera_info_to_intrinsics(latest["/camera/camera/color/camera_info"])
        assert intr.width == 320 and 60 < np.degrees(2 * np.arctan(160 / intr.fx)) < 75
        d = ros_conv.depth_to_meters(depth)
        assert np.isfinite(d).mean() > 0.5 and 0.2 < np.nanmedian(d) < 3.0

        # spot_ros2's names: <spot_name>/ + friendly name, legs included; bare names are absent.
        names = list(latest["/spot/joint_states"].name)
        assert {f"spot/{n}" for n in spot_arm.ALL_JOINT_NAMES} <= set(names), names
        assert "spot/front_left_hip_x" in names and "arm_sh0" not in names
        with pytest.raises(ValueError):
            ros_conv.joint_positions(latest["/spot/joint_states"], spot_arm.ARM_JOINT_NAMES, "")

        def q_now():
            return ros_conv.joint_positions(
                latest["/spot/joint_states"], spot_arm.ARM_JOINT_NAMES, "spot/"
            )

        q0 = q_now()
        target = q0 + np.array([0.3, 0.0, 0.0, 0.0, 0.0, 0.0])
        cmd = ros_conv.joint_state_msg([f"spot/{n}" for n in spot_arm.ARM_JOINT_NAMES], target)
        # Like the real driver, nothing moves before the lease, motor power and standing.
        assert trig["stand"].wait_for_service(timeout_sec=10.0)
        assert not _call(node, trig["stand"], Trigger.Request()).success  # no lease, no power
        for name in ("claim", "power_on"):
            assert trig[name].wait_for_service(timeout_sec=10.0)
            assert _call(node, trig[name], Trigger.Request()).success
        commands.publish(cmd)
        spin_until(node, lambda: False, timeout=1.0)
        assert np.abs(q_now() - q0).max() < 0.02
        assert _call(node, trig["stand"], Trigger.Request()).success
        # A command naming the wrong joints is rejected, not half-applied.
        commands.publish(ros_conv.joint_state_msg(spot_arm.ARM_JOINT_NAMES[:5], target[:5]))
        spin_until(node, lambda: False, timeout=0.5)
        assert np.abs(q_now() - q0).max() < 0.02

        def sim_time():
            return ros_conv.stamp_to_sec(latest["/spot/joint_states"].header.stamp)

        commands.publish(cmd)
        t0 = sim_time()
        assert spin_until(node, lambda: np.abs(q_now() - target).max() < 0.02, timeout=10.0), (
            f"arm at {q_now()}, commanded {target}"
        )
        # A single-point move at the default limits (1 rad/s, 5 rad/s^2): 0.3 rad takes ~0.5 s.
        assert sim_time() - t0 > 0.4

        # The gripper service stands first and blocks the driver's callback group: a joint
        # command sent meanwhile waits for it.
        q1 = q_now()
        close = trig["close_gripper"].call_async(Trigger.Request())
        spin_until(node, lambda: False, timeout=0.1)
        commands.publish(
            ros_conv.joint_state_msg(spot_arm.ARM_JOINT_NAMES, q1 - [0.3, 0, 0, 0, 0, 0])
        )
        assert spin_until(node, close.done, 15.0) and close.result().success
        t_closed = sim_time()
        assert spin_until(node, lambda: np.abs(q_now() - q1).max() > 0.05, timeout=10.0)
        assert sim_time() >= t_closed - 0.05  # the bare-named command ran after the gripper

        # estop: the arm holds still and commands are ignored until estop/release + power_on.
        assert _call(node, trig["estop/gentle"], Trigger.Request()).success
        q_stop = q_now()
        commands.publish(cmd)
        spin_until(node, lambda: False, timeout=1.0)
        assert np.abs(q_now() - q_stop).max() < 0.02

        assert reset.wait_for_service(timeout_sec=10.0)
        bad = _call(node, reset, SimReset.Request(task="drawer_open", split="XX", seed=1))
        assert not bad.success and "unknown split" in bad.message
        ok = _call(node, reset, SimReset.Request(task="drawer_open", split="G", seed=4))
        assert ok.success and (ok.task, ok.split, ok.seed) == ("drawer_open", "G", 4), ok.message
        st = _call(node, status, SimEpisodeStatus.Request())
        assert (st.task, st.split, st.seed) == ("drawer_open", "G", 4)
        assert not st.success and st.error_names == ["joint"] and st.error_values[0] > 0
        node.destroy_node()


def test_single_point_move_profile_is_minimum_time_at_the_limits() -> None:
    from t2a_sim.nodes.sim_node import single_point_move_duration, single_point_move_fraction

    v, a = 1.0, 5.0
    # short move: accelerate, decelerate (triangle); long move: coast at v in between
    assert single_point_move_duration(np.array([0.05, 0, 0, 0, 0, 0]), v, a) == pytest.approx(
        2 * np.sqrt(0.05 / a)
    )
    assert single_point_move_duration(np.array([0, -1.0, 0.5, 0, 0, 0]), v, a) == pytest.approx(
        1.0 / v + v / a
    )
    for d in (0.05, 1.0):
        T = single_point_move_duration(np.array([d, 0, 0, 0, 0, 0]), v, a)
        t = np.linspace(0.0, T, 201)
        s = np.array([single_point_move_fraction(x, T, v, a) for x in t])
        assert s[0] == 0.0 and s[-1] == 1.0 and np.all(np.diff(s) >= -1e-12)
        speed = np.diff(s * d) / np.diff(t)  # rad/s of the leading joint
        assert speed.max() <= v + 1e-6
