"""The residual_controller node's arm backends: its parameters, the refusals when the backend
cannot start, and ``driver:=bosdyn`` against the fake Spot gRPC server (in this process): a plan
becomes streamed arm joint commands on the robot, ``/t2a/stop`` stops them, and the node gives the
lease back when it exits. The default backend (spot_ros2) is exercised over DDS by
test_watchdog_node.py and t2a_bringup's closed-loop stack test.
"""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core.config import fields, from_dict, ros_params_section
from t2a_common.core.kinematics import fk
from t2a_common.core.spot_arm import READY
from t2a_common.core.types import PLAN_OK, EEPlan
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_control.core.node_config import ESTOP_MODES, ResidualControllerNodeConfig
from t2a_msgs.msg import ControlStatus, Plan

pytestmark = pytest.mark.ros

CONFIG_YAML = Path(__file__).resolve().parents[1] / "config" / "controller.yaml"
LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
NODE = ["-m", "t2a_control.nodes.residual_controller", "--ros-args"]
PASSWORD_ENV = "T2A_TEST_SPOT_PASSWORD"  # the name goes in a parameter, the password stays here
SECRET = "s3cret-pw"  # must never show in the node's output
# The spot_ros2 variables the bosdyn backend falls back to: unset, so only parameters count.
NO_SPOT_ENV = {k: "" for k in ("SPOT_IP", "SPOT_PORT", "SPOT_CERTIFICATE",
                               "BOSDYN_CLIENT_USERNAME", "BOSDYN_CLIENT_PASSWORD")}  # fmt: skip


def params(*assignments: str) -> list[str]:
    return [a for p in assignments for a in ("-p", p)]


def test_parameter_file_lists_every_node_parameter_with_its_default() -> None:
    data = yaml.safe_load(CONFIG_YAML.read_text())
    section = ros_params_section(data, "/t2a/residual_controller")  # {dotted.name: value}
    assert sorted(section) == sorted(f.name for f in fields(ResidualControllerNodeConfig))
    assert from_dict(ResidualControllerNodeConfig, section) == ResidualControllerNodeConfig()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"driver": "spot"}, "driver = 'spot', expected one of spot_ros2, bosdyn"),
        ({"bosdyn.estop": "none"}, "expected one of external, register"),
        ({"bosdyn.password_env": "hunter2 !"}, "not a password"),
        ({"bosdyn.port": 70000}, "bosdyn.port"),
    ],
)
def test_config_rejects_bad_values(changes: dict, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        from_dict(ResidualControllerNodeConfig, changes)


def test_estop_modes_match_the_driver() -> None:
    bosdyn_driver = pytest.importorskip("t2a_control.drivers.bosdyn_driver")
    assert ESTOP_MODES == bosdyn_driver.ESTOP_MODES


def _exit_output(args: list[str], env: dict[str, str], timeout_s: float = 30.0) -> str:
    """Run the node; it must exit on its own with status 1. Returns what it printed."""
    with ChildProcess(NODE + args, env={**NO_SPOT_ENV, **env}) as node:
        try:
            code = node.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            pytest.fail(f"the node is still running after {timeout_s} s:\n{node.stop()[-2000:]}")
        out = node.stop()
    assert code == 1, f"exit status {code}, expected 1:\n{out[-2000:]}"
    return out


@pytest.mark.parametrize(
    ("args", "env", "match"),
    [
        (params("driver:=bosdyn_sdk"), {}, "expected one of spot_ros2, bosdyn"),
        (params("driver:=bosdyn", "bosdyn.hostname:=127.0.0.1", "bosdyn.username:=user",
                f"bosdyn.password_env:={PASSWORD_ENV}"), {},
         f"needs the robot password in the environment variable '{PASSWORD_ENV}'"),
        (params("driver:=bosdyn", "bosdyn.username:=user", f"bosdyn.password_env:={PASSWORD_ENV}"),
         {PASSWORD_ENV: SECRET}, "hostname is empty"),
        (params("driver:=bosdyn", "bosdyn.hostname:=127.0.0.1"), {"BOSDYN_CLIENT_PASSWORD": SECRET},
         "username is empty"),
    ],
    ids=["bad-driver", "no-password", "no-hostname", "no-username"],
)  # fmt: skip
def test_the_node_refuses_to_start_without_a_usable_backend(args, env, match) -> None:
    out = _exit_output(args, env)
    assert match in out, out[-2000:]
    assert SECRET not in out


# --------------------------------------------------------------------- driver:=bosdyn


@pytest.fixture
def robot() -> Iterator:
    pytest.importorskip("bosdyn.client", reason="bosdyn-client is not installed")
    if shutil.which("openssl") is None:
        pytest.skip("the fake Spot server needs the openssl CLI")
    from t2a_control.drivers.fake_spot_server import FakeSpotServer

    # Robot clock 1000 s ahead: commands only land if the node's driver time-syncs.
    with FakeSpotServer(clock_skew_s=1000.0, powered=True, standing=True, q0=READY) as server:
        yield server


def pull_plan(T_start: np.ndarray) -> EEPlan:
    """Grasp where the hand is (no approach), then pull 10 cm back in 10 s."""
    poses = np.repeat(T_start[None], 51, axis=0)  # (T, 4, 4)
    poses[:, 0, 3] -= np.linspace(0.0, 0.1, 51)
    return EEPlan(PLAN_OK, "", poses, np.linspace(0.0, 10.0, 51), T_start.copy(), 0,
                  goal_id="bosdyn-pull")  # fmt: skip


def test_bosdyn_driver_streams_the_plan_to_the_robot_and_stop_holds_it(robot) -> None:
    spot = robot.robot
    args = params("driver:=bosdyn", f"bosdyn.hostname:={robot.hostname}",
                  f"bosdyn.port:={robot.port}", f"bosdyn.cert_path:={robot.ca_path}",
                  "bosdyn.username:=user", f"bosdyn.password_env:={PASSWORD_ENV}",
                  "color_topic:=/bosdyn_test/image",
                  # this test feeds the colour image only; depth and camera_info: test_watchdog_node
                  "control.watchdog.inputs:=[joint_states, image]")  # fmt: skip
    env = {**NO_SPOT_ENV, PASSWORD_ENV: "password"}
    with ChildProcess(NODE + args, env=env) as controller, ros_context() as ctx:
        node = rclpy.create_node("bosdyn_probe", context=ctx)
        statuses: list[ControlStatus] = []
        node.create_subscription(ControlStatus, "/t2a/status", statuses.append, 50)
        camera = node.create_publisher(Image, "/bosdyn_test/image", 5)
        frame = ros_conv.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8")
        node.create_timer(1.0 / 15.0, lambda: camera.publish(frame))
        plan = node.create_publisher(Plan, "/t2a/plan", LATCHED)
        stop = node.create_client(Trigger, "/t2a/stop")

        def state() -> str:
            return statuses[-1].state_name if statuses else ""

        def logs() -> str:
            seen = [f"{s.state_name}: {s.message}" for s in statuses[-8:]]
            return f"statuses {seen}\nnode:\n{controller.stop()[-3000:]}"

        # Idle and no longer "waiting for joint_states": the driver polls the robot's state.
        assert spin_until(node, lambda: state() == "idle" and "waiting" not in
                          statuses[-1].message, 60.0), logs()  # fmt: skip
        plan.publish(ros_conv.ee_plan_to_msg(pull_plan(fk(READY))))
        assert spin_until(node, lambda: state() == "execute", 20.0), logs()
        assert spot.lease_owner.startswith("t2a_bosdyn_driver")  # auto_start claimed it
        # The plan reaches the robot as streamed joint trajectories and the hand pulls back.
        assert spin_until(node, lambda: fk(READY)[0, 3] - fk(spot.q)[0, 3] > 0.01, 10.0), logs()
        assert len(spot.accepted("arm_joint_move")) >= 5

        future = stop.call_async(Trigger.Request())
        first = len(statuses)
        assert spin_until(node, future.done, 10.0), logs()
        assert future.result().success, future.result().message
        assert spot.accepted("stop"), "the robot never got a stop command"
        assert spin_until(node, lambda: state() == "idle", 5.0), logs()
        after_stop = [s.state_name for s in statuses[first:]]
        assert after_stop[0] in ("execute", "hold") and "hold" in after_stop, after_stop

        spin_until(node, lambda: False, 0.5)  # the hold tick's segment (one period) runs out
        moves, q_stopped = len(spot.accepted("arm_joint_move")), spot.q
        spin_until(node, lambda: False, 1.0)  # five idle ticks
        assert len(spot.accepted("arm_joint_move")) == moves, "arm commands after the stop"
        np.testing.assert_allclose(spot.q, q_stopped, atol=1e-9)
        assert fk(READY)[0, 3] - fk(q_stopped)[0, 3] < 0.1  # stopped before the plan's end
        node.destroy_node()
        out = controller.stop()
    assert spot.lease_owner is None, f"the node kept the lease:\n{out[-2000:]}"
