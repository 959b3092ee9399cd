"""The operator's workflow over DDS against the strict spot_ros2 stand-in (t2a_sim + its state
publisher, prefixed joint names): the controller runs the start-up sequence, a plan in preview
mode does not move the arm before ``/t2a/execute``, ``/t2a/stop`` and ``/t2a/estop`` leave the arm
still, and no plan executes after an estop."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core import spot_arm
from t2a_common.core.geometry import SIM_CAMERA_QUAT, SIM_CAMERA_XYZ
from t2a_common.core.kinematics import fk
from t2a_common.core.types import PLAN_OK, EEPlan
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_control.core.node_config import ResidualControllerNodeConfig
from t2a_msgs.msg import ControlStatus, Plan

pytestmark = pytest.mark.sim
LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def _node(module: str, *params: str) -> list[str]:
    return ["-m", module, "--ros-args", *[a for p in params for a in ("-p", p)]]


SIM = _node("t2a_sim.nodes.sim_node", "task:=cabinet_close", "sim.width:=160",
            "sim.height:=120", "camera_rate_hz:=5.0")  # fmt: skip
STATE = _node("t2a_sim.nodes.state_publisher")
CONTROLLER = _node("t2a_control.nodes.residual_controller", "use_sim_time:=true", "preview:=true",
                   "stow_on_exit:=true", "control.watchdog.stale_ticks:=10.0")  # fmt: skip


def pull_plan(T_start: np.ndarray, goal_id: str) -> EEPlan:
    """Grasp where the hand is (no approach), then pull 15 cm back in 6 s."""
    poses = np.repeat(T_start[None], 31, axis=0)  # (T, 4, 4)
    poses[:, 0, 3] -= np.linspace(0.0, 0.15, 31)
    return EEPlan(PLAN_OK, "", poses, np.linspace(0.0, 6.0, 31), T_start.copy(), 0,
                  goal_id=goal_id)  # fmt: skip


def test_calibration_check_refuses_the_sim_camera_pose_on_the_robot() -> None:
    sim_pose = ResidualControllerNodeConfig(require_calibration=True)
    assert "calibrate" in sim_pose.uncalibrated
    assert ResidualControllerNodeConfig().uncalibrated == ""  # the sim profile does not check
    moved = (SIM_CAMERA_XYZ[0] + 0.01, *SIM_CAMERA_XYZ[1:])
    calibrated = ResidualControllerNodeConfig(require_calibration=True, camera_xyz=moved,
                                              camera_quat_xyzw=SIM_CAMERA_QUAT)  # fmt: skip
    assert calibrated.uncalibrated == ""


def test_preview_waits_for_execute_and_stop_and_estop_leave_the_arm_still() -> None:
    with (
        ChildProcess(SIM) as sim,
        ChildProcess(STATE),
        ChildProcess(CONTROLLER) as ctl,
        ros_context() as ctx,
    ):
        node = rclpy.create_node("operator_probe", context=ctx)
        got: dict = {}
        node.create_subscription(JointState, "/spot/joint_states",
                                 lambda m: got.__setitem__("joints", m), LATCHED)  # fmt: skip
        node.create_subscription(ControlStatus, "/t2a/status",
                                 lambda m: got.__setitem__("status", m), 10)  # fmt: skip
        plans = node.create_publisher(Plan, "/t2a/plan", LATCHED)
        srv = {n: node.create_client(Trigger, f"/t2a/{n}") for n in ("execute", "stop", "estop")}

        def logs() -> str:
            status = got.get("status")
            seen = f"{status.state_name}: {status.message}" if status else "no status"
            return f"status {seen}\n{ctl.stop()[-3000:]}\n{sim.stop()[-2000:]}"

        def q() -> np.ndarray:  # prefixed names, as spot_ros2 publishes them
            return ros_conv.joint_positions(got["joints"], spot_arm.ARM_JOINT_NAMES, "spot/")

        def call(name: str) -> Trigger.Response:
            assert srv[name].wait_for_service(timeout_sec=10.0), name
            future = srv[name].call_async(Trigger.Request())
            assert spin_until(node, future.done, 20.0), f"/t2a/{name} did not answer\n{logs()}"
            return future.result()

        def still(seconds: float = 1.5) -> float:
            """How far (rad) the arm moved over ``seconds`` of waiting."""
            q0 = q()
            spin_until(node, lambda: False, seconds)
            return float(np.abs(q() - q0).max())

        # The start-up sequence ran (claim, power_on, stand, arm_unstow): idle, ready for a plan.
        assert spin_until(node, lambda: "joints" in got and "status" in got
                          and got["status"].state_name == "idle"
                          and "start-up" not in got["status"].message
                          and "waiting" not in got["status"].message, 90.0), logs()  # fmt: skip
        assert not call("execute").success  # nothing to execute yet

        plans.publish(ros_conv.ee_plan_to_msg(pull_plan(fk(q()), "preview-1")))
        assert spin_until(node, lambda: "preview" in got["status"].message, 20.0), logs()
        assert still(2.0) < 0.01, "the arm moved before /t2a/execute"
        assert got["status"].state_name == "idle"

        answer = call("execute")
        assert answer.success, answer.message
        q_start = q()
        assert spin_until(node, lambda: np.abs(q() - q_start).max() > 0.05, 30.0), logs()
        assert call("stop").success
        spin_until(node, lambda: False, 1.0)  # the last single-point move settles
        assert still() < 0.01, "the arm kept moving after /t2a/stop"
        assert spin_until(node, lambda: got["status"].state_name == "idle", 5.0), logs()

        # A new plan, executed, then the e-stop: the arm holds and further plans cannot run.
        plans.publish(ros_conv.ee_plan_to_msg(pull_plan(fk(q()), "preview-2")))
        assert spin_until(node, lambda: "preview-2" in got["status"].message, 20.0), logs()
        assert call("execute").success
        q_start = q()
        assert spin_until(node, lambda: np.abs(q() - q_start).max() > 0.05, 30.0), logs()
        answer = call("estop")
        assert answer.success, answer.message
        assert still() < 0.01, "the arm kept moving after /t2a/estop"
        plans.publish(ros_conv.ee_plan_to_msg(pull_plan(fk(q()), "preview-3")))
        spin_until(node, lambda: False, 2.0)
        refused = call("execute")
        assert not refused.success and "estop" in refused.message, refused.message
        node.destroy_node()
        out = ctl.stop(timeout=30.0)
    assert "robot ready (claim, power_on, stand, unstow)" in out, out[-3000:]


def test_the_controller_stows_and_releases_the_lease_when_it_stops() -> None:
    with ChildProcess(SIM) as sim, ChildProcess(STATE), ros_context() as ctx:
        node = rclpy.create_node("shutdown_probe", context=ctx)
        got: dict = {}
        node.create_subscription(JointState, "/spot/joint_states",
                                 lambda m: got.__setitem__("joints", m), LATCHED)  # fmt: skip
        with ChildProcess(CONTROLLER) as ctl:
            assert spin_until(node, lambda: "joints" in got, 60.0), sim.stop()[-2000:]
            spin_until(node, lambda: False, 8.0)  # start-up: claim, power_on, stand, unstow
            out = ctl.stop(timeout=30.0)
        assert "robot ready" in out, out[-3000:]
        assert "shutdown sequence: stow, release" in out, out[-3000:]

        def q() -> np.ndarray:
            return ros_conv.joint_positions(got["joints"], spot_arm.ARM_JOINT_NAMES, "spot/")

        # arm_stow blocked until the arm got there: the sim's arm is stowed
        spin_until(node, lambda: np.abs(q() - spot_arm.STOW).max() < 0.05, 5.0)
        np.testing.assert_allclose(q(), spot_arm.STOW, atol=0.05)
        node.destroy_node()
        log = sim.stop()
    assert "arm_stow: stowed" in log and "release: lease released" in log, log[-3000:]
