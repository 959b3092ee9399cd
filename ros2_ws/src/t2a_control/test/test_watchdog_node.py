"""The residual_controller's watchdog over real DDS: when the colour image, the aligned depth, the
camera_info or the joint states stop (each alone), the node holds on the first tick after the input
is older than one tick plus the watchdog's margin, keeps the arm still, and resumes the plan when
the input comes back.

The test process plays the robot: a spot_ros2 arm (joint_states that echo the node's
arm_joint_commands, Trigger services) and a camera. Timing is judged on the node's own timeline,
from its ControlStatus (state, step, stamp, period_ms and the hold reason's input age), never by
this process's clock: on a loaded CI machine DDS may deliver the last frame late, and this
process may itself publish late, but neither changes when the node must hold relative to what it
received. The exact tick arithmetic is unit-tested in test_watchdog.py.
"""

from __future__ import annotations

import re
import time

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core import spot_arm
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.kinematics import fk
from t2a_common.core.types import PLAN_OK, EEPlan
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_control.core.controller import ControllerConfig
from t2a_msgs.msg import ControlStatus, Plan

pytestmark = pytest.mark.ros

LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
CONFIG = ControllerConfig()
PERIOD_S = CONFIG.period_s  # 0.2 s: the node runs with its defaults
MAX_AGE_S = CONFIG.watchdog.max_age_s(PERIOD_S)  # 0.3 s: older is stale
CAMERA = ("image", "depth", "camera_info")  # published together, each can be switched off
NODE = ["-m", "t2a_control.nodes.residual_controller", "--ros-args",
        "-p", "color_topic:=/watchdog_test/image",
        "-p", "depth_topic:=/watchdog_test/depth",
        "-p", "info_topic:=/watchdog_test/camera_info"]  # fmt: skip
AGE_ROUNDING_S = 0.005 + 1e-4  # the hold reason prints ages with 2 decimals (float32 period_ms)
CAMERA_HZ, JOINTS_HZ = 15.0, 25.0
HOLD_TICKS = 8  # keep the input off this many ticks after the hold began
ATTEMPTS = 3  # clean "execute -> hold" transitions tried before giving up (see _stale_hold)


class FakeSpotRos2Arm:
    """spot_ros2's arm interface in this process: joints jump to each commanded target (a
    perfect follower), the gripper opens and closes at once, every Trigger succeeds."""

    def __init__(self, node, spot: str = "/spot") -> None:
        self.q = spot_arm.READY.copy()  # (6,) rad
        self.f1x = spot_arm.GRIPPER_JOINT.lower  # open
        self._pub = node.create_publisher(JointState, f"{spot}/joint_states", 10)
        node.create_subscription(JointState, f"{spot}/arm_joint_commands", self._on_command, 10)
        # the controller's start-up (claim, power_on, stand, arm_unstow) and shutdown calls too
        for name in ("claim", "power_on", "stand", "arm_unstow", "arm_stow", "release", "stop",
                     "open_gripper", "close_gripper"):  # fmt: skip
            node.create_service(Trigger, f"{spot}/{name}", self._trigger(name))

    def _on_command(self, msg: JointState) -> None:
        self.q = ros_conv.joint_positions(msg, spot_arm.ARM_JOINT_NAMES)

    def _trigger(self, name: str):
        def handle(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
            if name in ("open_gripper", "close_gripper"):
                self.f1x = spot_arm.GRIPPER_JOINT.lower if name == "open_gripper" else 0.0
            res.success, res.message = True, name
            return res

        return handle

    def publish(self) -> None:
        names = (*spot_arm.ARM_JOINT_NAMES, spot_arm.GRIPPER_JOINT.name)
        self._pub.publish(ros_conv.joint_state_msg(names, [*self.q, self.f1x]))


def slow_plan(T_start: np.ndarray, steps: int = 101) -> EEPlan:
    """Grasp where the hand is (no approach), then pull 10 cm in 20 s: with 101 steps a step
    every tick, so a plan clock that kept running during a hold would show in ``step``."""
    poses = np.repeat(T_start[None], steps, axis=0)  # (T, 4, 4)
    poses[:, 0, 3] -= np.linspace(0.0, 0.1, steps)
    times = np.linspace(0.0, 20.0, steps)
    return EEPlan(PLAN_OK, "", poses, times, T_start.copy(), 0, goal_id="watchdog")


def input_age_s(status: ControlStatus, name: str) -> float:
    """The age of input ``name`` in a hold reason ("stale input: image 0.58 s old, ...")."""
    match = re.search(rf"\b{name} (\d+\.\d+) s old", status.message)
    assert match, f"hold reason {status.message!r} does not give the age of {name}"
    return float(match.group(1))


def stamp(status: ControlStatus | PoseStamped) -> float:
    return ros_conv.stamp_to_sec(status.header.stamp)


class Probe:
    """This process's half of the test: robot, camera, and a record of what the node says."""

    def __init__(self, ctx) -> None:
        self.node = rclpy.create_node("watchdog_probe", context=ctx)
        self.arm = FakeSpotRos2Arm(self.node)
        self.statuses: list[ControlStatus] = []
        self.goals: list[PoseStamped] = []
        self.feeds = dict.fromkeys((*CAMERA, "joint_states"), True)
        self.last_sent = dict.fromkeys(self.feeds, float("nan"))
        self.node.create_subscription(ControlStatus, "/t2a/status", self.statuses.append, 50)
        self.node.create_subscription(PoseStamped, "/t2a/ee_goal", self.goals.append, 50)
        self.camera = {
            "image": self.node.create_publisher(Image, "/watchdog_test/image", 5),
            "depth": self.node.create_publisher(Image, "/watchdog_test/depth", 5),
            "camera_info": self.node.create_publisher(CameraInfo, "/watchdog_test/camera_info", 5),
        }
        self.plan = self.node.create_publisher(Plan, "/t2a/plan", LATCHED)
        self.frame = ros_conv.numpy_to_image(np.zeros((48, 64, 3), np.uint8), "rgb8")
        depth = ros_conv.numpy_to_image(np.full((48, 64), 800, np.uint16), "16UC1")
        info = ros_conv.intrinsics_to_camera_info(Intrinsics.from_fov(64, 48, 60.0))
        self.messages = {"depth": depth, "camera_info": info}
        self.node.create_timer(1.0 / CAMERA_HZ, self._camera_tick)
        self.node.create_timer(1.0 / JOINTS_HZ, self._joints_tick)

    def _camera_tick(self) -> None:
        for name in CAMERA:
            if self.feeds[name]:
                self.camera[name].publish(self.frame if name == "image" else self.messages[name])
                self.last_sent[name] = time.time()

    def _joints_tick(self) -> None:
        if self.feeds["joint_states"]:
            self.arm.publish()
            self.last_sent["joint_states"] = time.time()

    def state(self) -> str:
        return self.statuses[-1].state_name if self.statuses else ""

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s)

    def first_hold(self, since: int, timeout_s: float) -> int | None:
        """Index of the first hold status from index ``since`` on, waiting up to ``timeout_s``."""

        def found() -> int | None:
            states = [s.state_name for s in self.statuses[since:]]
            return since + states.index("hold") if "hold" in states else None

        self.spin_until(lambda: found() is not None, timeout_s)
        return found()

    def history(self, first: int = 0) -> str:
        return "\n".join(
            f"  {stamp(s):.3f} {s.state_name:8s} step {s.step:3d} period {s.period_ms:5.0f} ms "
            f"{s.message}"
            for s in self.statuses[first:]
        )


def _stale_hold(probe: Probe, name: str) -> tuple[int, int]:
    """Stop input ``name`` while executing until the node holds; returns the indices of the
    last executing status and of the first hold. Retried when the node was not executing on
    the tick before the hold, or held for another input only (this loaded process fed an input
    late): the rule is checked on a clean transition only."""
    notes = []
    for _ in range(ATTEMPTS):
        probe.feeds[name] = True
        # Three executing ticks in a row: every input is arriving on time again.
        assert probe.spin_until(
            lambda: [s.state_name for s in probe.statuses[-3:]] == ["execute"] * 3, 10.0
        ), f"not executing:\n{probe.history(-10)}"
        probe.feeds[name] = False
        hold = probe.first_hold(since=len(probe.statuses), timeout_s=5.0)
        assert hold is not None, f"no hold after {name} stopped:\n{probe.history(-10)}"
        before, after = probe.statuses[hold - 1], probe.statuses[hold]
        # Consecutive ticks (no status lost): stamps and the reported period agree.
        consecutive = abs(stamp(after) - stamp(before) - after.period_ms * 1e-3) < 0.5 * PERIOD_S
        if before.state_name == "execute" and consecutive and f"{name} " in after.message:
            return hold - 1, hold
        notes.append(f"{before.state_name} -> {after.state_name} ({after.message})")
    pytest.fail(f"no clean execute -> hold transition in {ATTEMPTS} tries: {notes}")


@pytest.mark.parametrize("name", ["image", "depth", "camera_info", "joint_states"])
def test_holds_within_two_ticks_of_a_stale_input_and_resumes(name: str) -> None:
    with ChildProcess(NODE) as controller, ros_context() as ctx:
        probe = Probe(ctx)

        def logs() -> str:
            return f"statuses:\n{probe.history(-15)}\nnode:\n{controller.stop()[-3000:]}"

        assert probe.spin_until(lambda: probe.state() == "idle" and "waiting" not in
                                probe.statuses[-1].message, 30.0), logs()  # fmt: skip
        probe.plan.publish(ros_conv.ee_plan_to_msg(slow_plan(fk(probe.arm.q))))
        assert probe.spin_until(lambda: probe.state() == "execute", 15.0), logs()

        last_fresh, hold = _stale_hold(probe, name)
        last_sent = probe.last_sent[name]
        H = probe.statuses[hold]
        age = input_age_s(H, name)
        # The node's rule on its own timeline: stale once older than MAX_AGE_S, held on the
        # first tick after that. The tick before the hold executed, so it saw the input at
        # most MAX_AGE_S old; the hold tick saw it older than that, one period later.
        assert age > MAX_AGE_S - AGE_ROUNDING_S, f"held too early ({H.message})"
        assert age - H.period_ms * 1e-3 <= MAX_AGE_S + AGE_ROUNDING_S, (
            f"not held on the first tick after {name} went stale: {H.message} on a tick "
            f"{H.period_ms:.0f} ms after the last executing one\n{probe.history(last_fresh - 3)}"
        )

        # Hold for a while: the plan clock stops (step) and every tick sends the same goal.
        end = hold + HOLD_TICKS
        assert probe.spin_until(lambda: len(probe.statuses) > end, 5.0), logs()
        window = probe.statuses[hold:end]
        assert [s.state_name for s in window] == ["hold"] * HOLD_TICKS, probe.history(hold)
        assert {s.step for s in window} == {probe.statuses[last_fresh].step}, probe.history(hold)
        t0, t1 = stamp(probe.statuses[last_fresh]), stamp(window[-1])
        held = [g for g in probe.goals if t0 < stamp(g) <= t1]  # the goals of the hold ticks
        assert len(held) == HOLD_TICKS, f"{len(held)} ee_goals during {HOLD_TICKS} hold ticks"
        p = np.array([[g.pose.position.x, g.pose.position.y, g.pose.position.z] for g in held])
        assert np.ptp(p, axis=0).max() < 1e-6, f"the held goal moved: {p}"

        # Fresh input again: the plan resumes where it paused and its clock runs on.
        probe.feeds[name] = True
        resumed = len(probe.statuses)
        assert probe.spin_until(lambda: probe.state() != "hold", 5.0), logs()
        R = probe.statuses[-1]
        assert R.state_name == "execute", f"{R.state_name}: {R.message}"
        # The resuming tick adds its own plan time, at most two periods (two steps, three
        # across a boundary); a clock that ran on through the hold would be 8 steps ahead.
        assert 0 <= R.step - window[-1].step <= 3, f"step {window[-1].step} -> {R.step}"
        assert probe.spin_until(lambda: probe.statuses[-1].step > R.step, 3.0), logs()
        # For the record (pytest -rP): how late DDS delivered the last message on this machine.
        print(f"{name}: {H.message!r} on a {H.period_ms:.0f} ms tick; the node got the last "
              f"message {stamp(H) - age - last_sent:+.3f} s after it was sent; resumed "
              f"{len(probe.statuses) - resumed} tick(s) after it was sent again")  # fmt: skip
        probe.node.destroy_node()


# ---------------------------------------------------------------------------------------------
# Policy inputs: the residual node holds, saying why, until it has inputs it can use
# ---------------------------------------------------------------------------------------------


def test_the_residual_node_holds_on_unusable_policy_inputs_and_says_why() -> None:
    """Residual mode with the shipped policy: a mono8 camera and the goal image of an earlier
    goal hold the arm where it is, each named in the hold reason; usable ones start the run."""
    from t2a_common.core.types import PointTrackSet
    from t2a_msgs.msg import PointTracks

    with ChildProcess([*NODE, "-p", "control.mode:=residual"]) as controller, ros_context() as ctx:
        probe = Probe(ctx)
        rgb = probe.frame
        probe.frame = ros_conv.numpy_to_image(np.zeros((48, 64), np.uint8), "mono8")
        tracks_pub = probe.node.create_publisher(PointTracks, "/t2a/tracks", LATCHED)
        goal_pub = probe.node.create_publisher(Image, "/t2a/goal_image", LATCHED)

        def logs() -> str:
            return f"statuses:\n{probe.history(-15)}\nnode:\n{controller.stop()[-3000:]}"

        assert probe.spin_until(lambda: probe.state() == "idle" and "waiting" not in
                                probe.statuses[-1].message, 60.0), logs()  # fmt: skip
        plan = slow_plan(fk(probe.arm.q), steps=9)  # the policy's horizon + 1
        rng = np.random.default_rng(0)
        p0 = rng.uniform([0, 0], [63, 47], (20, 2))
        px = np.repeat(p0[None], 9, axis=0).astype(np.float32)
        i0 = 100.0  # I0 stamp (s) of these tracks
        tracks = PointTrackSet(px, np.full(20, 0.8), Intrinsics.from_fov(64, 48, 60.0),
                               goal_id=plan.goal_id, stamp_s=i0)  # fmt: skip
        tracks_pub.publish(ros_conv.point_tracks_to_msg(tracks))
        goal = ros_conv.numpy_to_image(np.full((48, 64, 3), 90, np.uint8), "rgb8")
        goal.header.stamp = ros_conv.sec_to_stamp(i0 - 5.0)  # an earlier goal's image
        goal_pub.publish(goal)
        q0 = probe.arm.q.copy()
        probe.plan.publish(ros_conv.ee_plan_to_msg(plan))

        def holding_for(*names: str) -> bool:
            s = probe.statuses[-1] if probe.statuses else None
            return (s is not None and s.state_name == "hold" and s.goal_id == plan.goal_id
                    and all(f"{n}: " in s.message for n in names))  # fmt: skip

        assert probe.spin_until(lambda: holding_for("goal_image", "image"), 15.0), logs()
        reason = probe.statuses[-1].message
        assert "camera image is 64x48 mono8" in reason, reason
        assert "not the goal of the tracks of goal 'watchdog'" in reason, reason
        n = len(probe.statuses)
        assert probe.spin_until(lambda: len(probe.statuses) >= n + 5, 5.0), logs()
        assert all(s.state_name == "hold" for s in probe.statuses[n:]), probe.history(n)
        np.testing.assert_allclose(probe.arm.q, q0, atol=1e-9)  # no motion while it waits

        probe.frame = rgb  # a usable camera: only the goal image is still wrong
        assert probe.spin_until(
            lambda: holding_for("goal_image") and "image: camera" not in probe.statuses[-1].message,
            5.0,
        ), logs()
        np.testing.assert_allclose(probe.arm.q, q0, atol=1e-9)

        goal.header.stamp = ros_conv.sec_to_stamp(i0)  # the goal image of these tracks
        goal_pub.publish(goal)
        assert probe.spin_until(lambda: probe.state() == "execute", 15.0), logs()
        assert "Traceback" not in controller.stop()
        probe.node.destroy_node()
