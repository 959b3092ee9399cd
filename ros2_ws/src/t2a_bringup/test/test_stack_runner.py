"""``t2a-stack`` over real DDS: the sim profile's nodes come up with every topic the rviz config
shows, Ctrl-C stops them all (no orphans), and a node that dies stops the stack with its name."""

from __future__ import annotations

import os
import re
import signal
import subprocess
from pathlib import Path

import numpy as np
import pytest
import rclpy
import yaml
from sensor_msgs.msg import JointState
from visualization_msgs.msg import MarkerArray

from t2a_common import ros_conv
from t2a_common.core import kinematics, spot_arm
from t2a_common.testing import ChildProcess, ros_context, spin_until

RVIZ = Path(__file__).resolve().parents[1] / "rviz" / "t2a.rviz"
RVIZ_TYPES = {  # rviz display class -> the message type it subscribes to
    "Image": "sensor_msgs/msg/Image",
    "MarkerArray": "visualization_msgs/msg/MarkerArray",
    "Path": "nav_msgs/msg/Path",
    "PoseArray": "geometry_msgs/msg/PoseArray",
    "Pose": "geometry_msgs/msg/PoseStamped",
}
NODES = {("/", "t2a_sim"), ("/spot", "spot_ros2"), ("/", "sim_state_publisher"),
         ("/t2a", "track_predictor"), ("/t2a", "planner"),
         ("/t2a", "residual_controller")}  # fmt: skip
RUNNER = ["-m", "t2a_bringup.stack_runner"]


def _rviz_topics() -> dict[str, str]:
    """Topic -> message type of every display in the rviz config, robot_description aside."""
    cfg = yaml.safe_load(RVIZ.read_text())
    assert cfg["Visualization Manager"]["Global Options"]["Fixed Frame"] == "body"
    topics = {}
    for display in cfg["Visualization Manager"]["Displays"]:
        kind = display["Class"].split("/")[-1]
        if kind == "RobotModel":  # spot_ros2's robot_state_publisher, robot only
            assert display["Description Topic"]["Value"] == "/spot/robot_description"
        elif "Topic" in display:
            topics[display["Topic"]["Value"]] = RVIZ_TYPES[kind]
    return topics


def _groups_alive(pids: list[int]) -> list[int]:
    alive = []
    for pid in pids:  # each node runs in its own process group (pgid = its pid)
        try:
            os.killpg(pid, 0)
            alive.append(pid)
        except ProcessLookupError:
            pass
    return alive


@pytest.mark.sim
def test_t2a_stack_sim_brings_up_what_rviz_shows_and_stops_on_ctrl_c(tmp_path):
    wanted = _rviz_topics()
    assert {"/t2a/tracks/overlay", "/t2a/plan/path", "/t2a/ee_goal", "/t2a_sim/arm_markers",
            "/camera/camera/color/image_raw"} <= set(wanted)  # fmt: skip
    args = [*RUNNER, "sim", "--arg", "control_mode:=open_loop", "--arg", "task:=cabinet_close",
            "--set", "t2a_sim.sim.width=160", "--set", "t2a_sim.sim.height=120",
            "--set", "t2a_sim.camera_rate_hz=5.0", "--log-dir", str(tmp_path)]  # fmt: skip
    with ChildProcess(args) as runner, ros_context() as ctx:
        node = rclpy.create_node("stack_probe", context=ctx)
        got: dict = {}
        node.create_subscription(MarkerArray, "/t2a_sim/arm_markers",
                                 lambda m: got.__setitem__("arm", m), 2)  # fmt: skip
        node.create_subscription(JointState, "/spot/joint_states",
                                 lambda m: got.__setitem__("joints", m), 10)  # fmt: skip
        state: dict = {}

        def up() -> bool:
            state["nodes"] = {(ns, n) for n, ns in node.get_node_names_and_namespaces()}
            state["topics"] = dict(node.get_topic_names_and_types())
            advertised = all(
                t in state["topics"] and typ in state["topics"][t] for t, typ in wanted.items()
            )
            return NODES <= state["nodes"] and advertised and {"arm", "joints"} <= set(got)

        if not spin_until(node, up, timeout=60.0):
            missing = sorted(t for t in wanted if t not in state.get("topics", {}))
            pytest.fail(
                f"nodes {sorted(NODES - state.get('nodes', set()))} / topics {missing} missing, "
                f"got {sorted(got)}\n{runner.stop()[-4000:]}"
            )

        # The sim's stand-in for the robot model: the arm's joint origins and tool, in body.
        arm = got["arm"].markers[0]
        assert arm.header.frame_id == "body" and len(arm.points) == len(kinematics.LINK_NAMES)
        assert got["joints"].name[0].startswith("spot/")  # spot_ros2's prefixed names
        q = ros_conv.joint_positions(got["joints"], spot_arm.ARM_JOINT_NAMES, "spot/")
        tool = [arm.points[-1].x, arm.points[-1].y, arm.points[-1].z]
        np.testing.assert_allclose(tool, kinematics.fk(q)[:3, 3], atol=0.01)
        node.destroy_node()

        runner.proc.send_signal(signal.SIGINT)
        out, _ = runner.proc.communicate(timeout=40)
    assert runner.proc.returncode == 0, out[-4000:]
    started = dict(re.findall(r"started (\w+) \(pid (\d+)\)", out))
    assert set(started) == {n for _, n in NODES} - {"spot_ros2"}, out[-4000:]
    assert not _groups_alive([int(p) for p in started.values()]), "orphaned nodes"
    assert "all nodes stopped" in out and "[t2a_sim" in out
    assert "sim ready" in (tmp_path / "t2a_sim.log").read_text()
    params = yaml.safe_load((tmp_path / "params" / "t2a_sim.params.yaml").read_text())
    assert params["/t2a_sim"]["ros__parameters"]["task"] == "cabinet_close"


@pytest.mark.ros
def test_t2a_stack_stops_and_names_a_node_that_dies():
    # --no-check lets a bad value through to the node itself, which refuses it and exits 1.
    args = [*RUNNER, "sim", "--only", "planner", "residual_controller", "--no-check",
            "--set", "planner.camera_xyz=[1.0]"]  # fmt: skip
    with ChildProcess(args) as runner:
        try:
            out, _ = runner.proc.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            pytest.fail(f"t2a-stack kept running after planner died:\n{runner.stop()}")
    assert runner.proc.returncode == 1, out
    assert "node 'planner' (t2a_planning/planner) exited with code 1" in out
    assert re.search(r"\[planner\s*\] .*camera_xyz needs 3 values", out), out
    pid = int(re.search(r"started residual_controller \(pid (\d+)\)", out).group(1))
    assert not _groups_alive([pid]), "residual_controller left running"
