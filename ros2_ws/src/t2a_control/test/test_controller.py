"""Control loop core closed around the kinematic FakeArmDriver (unit tier: numpy only, fast).

The synthetic task: from the ready pose, approach a grasp pose from 8 cm above, grasp, pull the
object 20 cm towards the body in 2 s, release and retreat upwards.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from t2a_common.core.config import fields, from_dict, ros_params_section
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.kinematics import fk
from t2a_common.core.se3 import so3_exp, so3_log
from t2a_common.core.spot_arm import LOWER, MAX_JOINT_SPEED, READY, STOW, UPPER, gripper_opening
from t2a_common.core.types import PLAN_NO_MOTION, PLAN_OK, EEPlan, PointTrackSet
from t2a_control.core.controller import (
    ACTIVE_STATES,
    RESIDUAL_CLIPPED,
    STATES,
    Command,
    Controller,
    ControllerConfig,
    Observation,
    PolicyInputMissing,
)
from t2a_control.core.driver import ArmDriver, FakeArmDriver
from t2a_control.core.safety import SafetyConfig
from t2a_control.core.watchdog import WatchdogConfig

PACKAGE = Path(__file__).resolve().parents[1]
CONTROL_STATUS_MSG = PACKAGE.parent / "t2a_msgs" / "msg" / "ControlStatus.msg"
PERIOD = 0.2  # s
WATCHED = WatchdogConfig().inputs  # every input the node watches
IMAGE = np.zeros((8, 8, 3), dtype=np.uint8)


def pull_plan(steps: int = 11, pull_m: float = 0.2, **changes) -> EEPlan:
    """Grasp at (0.95, 0.05, 0.05) m with the ready orientation, pull -x by ``pull_m``."""
    T_grasp = fk(READY)
    T_grasp[:3, 3] = [0.95, 0.05, 0.05]
    T_pregrasp = T_grasp.copy()
    T_pregrasp[2, 3] += 0.08  # approach straight down
    poses = np.repeat(T_grasp[None], steps, axis=0)  # (T, 4, 4)
    poses[:, 0, 3] -= np.linspace(0.0, pull_m, steps)
    # Plan times count from the start of the whole run (the planner includes the approach).
    times = 3.0 + PERIOD * np.arange(steps)
    kwargs = dict(
        status=PLAN_OK,
        message="",
        ee_poses=poses,
        times_s=times,
        pregrasp=T_pregrasp,
        grasp_step=0,
        goal_id="pull",
    )
    kwargs.update(changes)
    return EEPlan(**kwargs)


@dataclasses.dataclass
class Loop:
    """The node's job in miniature: observe, tick, send, advance the fake arm by one period."""

    controller: Controller
    driver: FakeArmDriver
    commands: list[Command] = dataclasses.field(default_factory=list)
    hand: list[np.ndarray] = dataclasses.field(default_factory=list)  # measured T_body_tool
    joints: list[np.ndarray] = dataclasses.field(default_factory=list)  # measured q
    fresh: dict[str, bool] = dataclasses.field(default_factory=lambda: dict.fromkeys(WATCHED, True))
    extra: dict = dataclasses.field(default_factory=dict)  # more Observation fields
    _stamps: dict[str, float] = dataclasses.field(default_factory=dict)
    _gripper_open: bool = True

    def tick(self) -> Command:
        q, gripper, now = self.driver.joint_positions()
        for name in WATCHED:
            if self.fresh[name]:
                self._stamps[name] = now
        obs = Observation(
            now, q, gripper, image=IMAGE, image_stamp_s=now, stamps=dict(self._stamps),
            **self.extra,
        )  # fmt: skip
        cmd = self.controller.tick(obs)
        if cmd.send_joints:
            self.driver.send_joint_targets(cmd.q_target)  # raises on anything unsafe
        if cmd.gripper_open != self._gripper_open:
            ok, _ = self.driver.open_gripper() if cmd.gripper_open else self.driver.close_gripper()
            assert ok
            self._gripper_open = cmd.gripper_open
        self.commands.append(cmd)
        self.hand.append(fk(q))
        self.joints.append(q)
        self.driver.step(PERIOD)
        return cmd

    def run_until(self, predicate, max_ticks: int = 200) -> Command:
        for _ in range(max_ticks):
            cmd = self.tick()
            if predicate(cmd):
                return cmd
        raise AssertionError(f"condition not met in {max_ticks} ticks; last: {self.commands[-1]}")

    def states(self) -> list[str]:
        """State sequence without repeats."""
        out: list[str] = []
        for cmd in self.commands:
            if not out or out[-1] != cmd.state:
                out.append(cmd.state)
        return out


def make_loop(config: ControllerConfig | None = None, policy=None, plan: EEPlan | None = None):
    controller = Controller(config or ControllerConfig(), policy)
    if plan is not None:
        controller.set_plan(plan)
    return Loop(controller, FakeArmDriver())


def finished(cmd: Command) -> bool:
    return cmd.state in ("done", "failed")


class ConstantPolicy:
    """A residual policy that always predicts the same correction (and records its inputs)."""

    def __init__(self, delta, gripper: float = 0.0) -> None:
        self.delta = np.asarray(delta, dtype=float)
        self.gripper = gripper
        self.inputs: list[dict] = []
        self.resets = 0

    def predict(self, obs: dict) -> dict:
        self.inputs.append(obs)
        return {"delta": self.delta, "gripper": self.gripper}

    def reset(self) -> None:
        self.resets += 1


# ---------------------------------------------------------------------------------------------
# Open loop, end to end
# ---------------------------------------------------------------------------------------------


def test_open_loop_goes_through_every_state_and_ends_near_the_final_pose():
    plan = pull_plan()
    loop = make_loop(plan=plan)
    loop.run_until(finished)

    assert loop.states() == ["approach", "grasp", "execute", "release", "done"]
    release = next(i for i, c in enumerate(loop.commands) if c.state == "release")
    # At the start of the release the hand is at the plan's last pose...
    p_err = np.linalg.norm(loop.hand[release][:3, 3] - plan.ee_poses[-1][:3, 3])
    r_err = np.linalg.norm(so3_log(loop.hand[release][:3, :3] @ plan.ee_poses[-1][:3, :3].T))
    assert p_err < 0.005 and r_err < 0.03
    # ... and at the end it has retreated 10 cm against the (downward) approach.
    T_final = fk(loop.driver.joint_positions()[0])
    np.testing.assert_allclose(T_final[:3, 3], plan.ee_poses[-1][:3, 3] + [0, 0, 0.1], atol=0.005)

    # The gripper closed during grasp, stayed closed through execute, opened for the release.
    by_state = {s: {c.gripper_open for c in loop.commands if c.state == s} for s in STATES}
    assert by_state["execute"] == {False} and by_state["done"] == {True}
    assert by_state["grasp"] == {True, False}
    # Steps advance monotonically through the plan.
    steps = [c.step for c in loop.commands if c.state == "execute"]
    assert steps[0] == 0 and steps[-1] >= plan.num_steps - 2 and steps == sorted(steps)
    assert loop.commands[-1].step == plan.num_steps - 1
    # Every streamed command obeyed the joint speed limits (the fake also checked joint limits).
    dq = np.diff(np.array(loop.joints), axis=0)
    assert np.all(np.abs(dq) <= MAX_JOINT_SPEED * 0.5 * PERIOD + 1e-9)
    assert all(c.violations == () for c in loop.commands), "nominal run hit a safety limit"
    assert all(c.hold_reason == "" for c in loop.commands)
    assert set(loop.commands[1].timings_ms) >= {"safety", "ik", "total"}


def test_done_stops_streaming_and_stays_done():
    loop = make_loop(plan=pull_plan())
    loop.run_until(finished)
    sent = len(loop.driver.sent)
    for _ in range(3):
        cmd = loop.tick()
        assert cmd.state == "done" and not cmd.send_joints
    assert len(loop.driver.sent) == sent


def test_idle_without_a_plan_sends_nothing():
    loop = make_loop()
    for _ in range(3):
        cmd = loop.tick()
        assert cmd.state == "idle" and cmd.step == -1 and not cmd.send_joints
    assert loop.driver.sent == []


# ---------------------------------------------------------------------------------------------
# stop, watchdog, failures
# ---------------------------------------------------------------------------------------------


def test_stop_holds_then_goes_idle_without_the_plan():
    loop = make_loop(plan=pull_plan())
    loop.run_until(lambda c: c.state == "execute" and c.step >= 3)
    loop.controller.stop()
    q_stop = loop.driver.joint_positions()[0]
    cmd = loop.tick()
    assert cmd.state == "hold" and cmd.hold_reason == "stop requested" and cmd.send_joints
    np.testing.assert_array_equal(cmd.q_target, q_stop)
    for _ in range(5):
        cmd = loop.tick()
        assert cmd.state == "idle" and cmd.step == -1 and cmd.goal_id == "" and not cmd.send_joints
    # The arm came to rest at the hold target (it was at most one tick's step from it).
    q_end = loop.driver.joint_positions()[0]
    np.testing.assert_allclose(q_end, q_stop, atol=1e-12)


def test_stale_input_holds_on_the_second_tick_and_resumes_where_it_was():
    plan = pull_plan()
    loop = make_loop(plan=plan)
    cmd = loop.run_until(lambda c: c.state == "execute" and c.step >= 3)
    step_before = cmd.step
    loop.fresh["image"] = False  # the camera stops: its last stamp is this tick's
    last_image_tick = len(loop.commands) - 1
    held_at = None
    for _ in range(6):
        cmd = loop.tick()
        if cmd.state == "hold" and held_at is None:
            held_at = len(loop.commands) - 1
            q_held = cmd.q_target.copy()
    # One period (+ the watchdog's margin) old is still fresh; two periods old holds.
    assert held_at == last_image_tick + 2
    hold_cmds = loop.commands[held_at:]
    assert all(c.state == "hold" and "image" in c.hold_reason for c in hold_cmds)
    assert all(np.array_equal(c.q_target, q_held) for c in hold_cmds)
    # The arm does not creep while holding (one tick to finish the last step, then still).
    np.testing.assert_allclose(loop.joints[-1], loop.joints[held_at + 1], atol=1e-12)

    loop.fresh["image"] = True
    cmd = loop.tick()
    assert cmd.state == "execute" and cmd.step >= step_before
    assert cmd.step <= [c.step for c in loop.commands if c.state == "execute"][-2] + 1
    loop.run_until(finished)
    assert loop.states()[-3:] == ["execute", "release", "done"]


def test_a_plan_pose_ik_cannot_reach_fails_before_any_motion():
    plan = pull_plan()
    poses = np.array(plan.ee_poses)
    poses[5, :3, 3] = [1.2, 0.7, 0.3]  # inside the box, 1.1 m from the shoulder (reach 0.94)
    loop = make_loop(plan=pull_plan(ee_poses=poses))
    for _ in range(3):
        cmd = loop.tick()
        assert cmd.state == "failed"
        assert cmd.hold_reason.startswith("plan pose 5 is not reachable (unreachable)")
        np.testing.assert_array_equal(cmd.q_target, READY)
    assert all(np.array_equal(q, READY) for q in loop.driver.sent)
    np.testing.assert_array_equal(loop.driver.joint_positions()[0], READY)


def test_a_plan_pose_outside_the_workspace_fails_before_any_motion():
    poses = np.array(pull_plan().ee_poses)
    poses[3, 2, 3] = -0.6  # below the box's -0.45 m (the ground is about -0.5 m)
    loop = make_loop(plan=pull_plan(ee_poses=poses))
    cmd = loop.tick()
    assert cmd.state == "failed"
    assert cmd.hold_reason.startswith(
        "plan pose 3 at [0.89, 0.05, -0.6] m is outside the workspace"
    )
    np.testing.assert_array_equal(loop.driver.joint_positions()[0], READY)


def test_a_non_ok_plan_fails_without_touching_the_arm():
    loop = make_loop(plan=EEPlan.failed(PLAN_NO_MOTION, "no point moves", goal_id="g1"))
    for _ in range(3):
        cmd = loop.tick()
        assert cmd.state == "failed" and not cmd.send_joints
        assert "not OK" in cmd.hold_reason and "no point moves" in cmd.hold_reason
    assert loop.driver.sent == []


def absolute_pose(obs: dict) -> np.ndarray:
    """What a perfect absolute policy answers: the plan's hand pose for the goal of this tick
    (in approach, the grasp step's pose: the controller carries it over to the pre-grasp)."""
    if obs["state"] == "approach":
        np.testing.assert_array_equal(obs["plan_pose"], obs["plan_poses"][obs["step"]])
    return obs["plan_pose"]


class UnreachableInExecute:
    """Absolute-mode policy: follows the plan until execute, then asks for an unreachable pose."""

    def __init__(self) -> None:
        self.T_far = fk(READY)
        self.T_far[:3, 3] = [1.2, 0.7, 0.3]  # in the box, out of reach

    def predict(self, obs: dict) -> dict:
        return {"pose": self.T_far if obs["state"] == "execute" else absolute_pose(obs)}


def test_ik_failure_at_run_time_holds_in_place_then_fails():
    # Wide safety limits so the far goal reaches IK unshortened: the failure is IK's, at once.
    safety = SafetyConfig(max_linear_speed_mps=100.0, max_angular_speed_rps=100.0)
    config = ControllerConfig(mode="absolute", safety=safety, ik_fail_ticks=3)
    loop = make_loop(config, UnreachableInExecute(), plan=pull_plan())
    loop.run_until(lambda c: c.state not in ("approach", "grasp") and len(loop.commands) > 3)
    q_grasp = loop.joints[-1]
    cmds = [loop.commands[-1]] + [loop.tick() for _ in range(3)]
    assert [c.state for c in cmds] == ["hold", "hold", "failed", "failed"]
    assert all(c.hold_reason.startswith("IK unreachable") for c in cmds)
    assert "3 ticks in a row" in cmds[2].hold_reason
    for c in cmds:
        np.testing.assert_allclose(c.q_target, q_grasp, atol=1e-12)
    np.testing.assert_allclose(loop.driver.joint_positions()[0], q_grasp, atol=1e-12)


def test_approach_that_cannot_finish_times_out():
    config = ControllerConfig(approach_timeout_s=0.5, approach_joint_speed_fraction=0.01)
    loop = make_loop(config, plan=pull_plan())
    cmd = loop.run_until(finished, max_ticks=10)
    assert cmd.state == "failed" and cmd.hold_reason.startswith("approach: pre-grasp pose")


class WalledArm(FakeArmDriver):
    """A fake arm that cannot enter a region: a step that would take the hand pose where
    ``wall(T_body_tool)`` is true does not happen (the hand stops at the obstacle)."""

    def __init__(self, wall, **kwargs) -> None:
        super().__init__(**kwargs)
        self.wall = wall

    def step(self, dt: float) -> None:
        for _ in range(20):  # in small steps, so the hand stops within a millimetre of the wall
            q = self.q.copy()
            super().step(dt / 20)
            if self.wall is not None and self.wall(fk(self.q)):
                self.q = q


def walled_loop(wall, config: ControllerConfig | None = None, plan: EEPlan | None = None):
    controller = Controller(config or ControllerConfig())
    controller.set_plan(plan or pull_plan())
    return Loop(controller, WalledArm(wall))


def _released_at(loop: Loop) -> np.ndarray:
    return loop.hand[next(i for i, c in enumerate(loop.commands) if c.state == "release")]


@pytest.mark.parametrize("reanchor", [True, False])
def test_execution_follows_the_realised_grasp(reanchor):
    """The hand meets the object 2.5 cm above the planned grasp (contact) and closes there.
    Re-anchored, the pull keeps that offset: the object makes its planned motion. Without it the
    hand drops the 2.5 cm onto the plan while pulling (the object would be dragged off)."""
    plan = pull_plan()
    G = plan.ee_poses[0]
    floor = G[2, 3] + 0.025
    loop = walled_loop(lambda T: T[2, 3] < floor, ControllerConfig(reanchor_after_grasp=reanchor))
    loop.run_until(lambda c: c.state == "execute")
    H = loop.hand[-1]
    assert 0.0 <= H[2, 3] - floor < 0.01 and loop.commands[-2].state == "grasp"
    loop.driver.wall = None  # the object moves with the hand from here
    cmd = loop.run_until(finished)
    assert cmd.state == "done", cmd.hold_reason
    expected = plan.ee_poses[-1] @ np.linalg.inv(G) @ H if reanchor else plan.ee_poses[-1]
    np.testing.assert_allclose(_released_at(loop)[:3, 3], expected[:3, 3], atol=0.006)
    anchor = np.linalg.inv(G) @ H if reanchor else np.eye(4)
    np.testing.assert_allclose(loop.controller.executed_poses(), plan.ee_poses @ anchor, atol=1e-9)


def test_a_residual_policy_is_given_the_re_anchored_plan():
    plan = pull_plan()
    floor = plan.ee_poses[0][2, 3] + 0.02
    policy = ConstantPolicy(np.zeros(6))
    controller = Controller(ControllerConfig(mode="residual"), policy)
    controller.set_plan(plan)
    loop = Loop(controller, WalledArm(lambda T: T[2, 3] < floor))
    loop.run_until(lambda c: c.state == "execute")
    loop.driver.wall = None
    loop.run_until(finished)
    executes = [o for o in policy.inputs if o["state"] == "execute"]
    H = np.linalg.inv(plan.ee_poses[0]) @ executes[0]["plan_poses"][0]
    assert abs(H[2, 3] - 0.02) < 0.005  # the plan moved up with the realised grasp
    for obs in executes:
        assert abs(obs["plan_pose"][2, 3] - floor) < 0.005


def test_a_hand_blocked_near_the_plan_end_finishes_the_plan():
    """The object reaches its end stop 7 cm before the plan's end (a door closes before the
    plan says): the hand stalls there, further from its goal than the plan clock allows (so the
    clock waits), and the run releases and ends done, not failed."""
    plan = pull_plan()
    stop_x = plan.ee_poses[-1][0, 3] + 0.07
    loop = walled_loop(lambda T: T[0, 3] < stop_x, plan=plan)
    loop.run_until(lambda c: c.state == "release")
    loop.driver.wall = None  # the stop holds the object, not the hand backing away
    cmd = loop.run_until(finished)
    assert cmd.state == "done", cmd.hold_reason
    assert loop.states() == ["approach", "grasp", "execute", "release", "done"]
    note = next(c.message for c in loop.commands if c.state == "release")
    assert "blocked" in note and "end stop" in note and "releasing" in note
    assert abs(_released_at(loop)[0, 3] - stop_x) < 0.005


def test_the_retreat_backs_out_along_the_approach_turned_with_the_object():
    """A door-like plan: the hand comes in along +x, then the handle swings 0.6 rad about a
    vertical hinge. The retreat leaves along the turned approach line, not the body's -x."""
    T_grasp = fk(READY)
    T_grasp[:3, 3] = [0.95, 0.05, 0.05]
    hinge = T_grasp[:3, 3] + [0.0, -0.25, 0.0]
    poses = []
    for a in np.linspace(0.0, 0.6, 11):
        R = so3_exp(np.array([0.0, 0.0, a]))
        T = T_grasp.copy()
        T[:3, :3] = R @ T_grasp[:3, :3]
        T[:3, 3] = hinge + R @ (T_grasp[:3, 3] - hinge)
        poses.append(T)
    T_pre = T_grasp.copy()
    T_pre[0, 3] -= 0.08  # approach along +x
    plan = pull_plan(ee_poses=np.array(poses), pregrasp=T_pre)
    loop = make_loop(plan=plan)
    cmd = loop.run_until(finished)
    assert cmd.state == "done", cmd.hold_reason
    released = _released_at(loop)[:3, 3]
    moved = fk(loop.driver.joint_positions()[0])[:3, 3] - released
    expected = -0.1 * (so3_exp(np.array([0.0, 0.0, 0.6])) @ np.array([1.0, 0.0, 0.0]))
    np.testing.assert_allclose(moved, expected, atol=0.006)


def test_a_hand_holding_a_part_steps_off_the_fixed_jaw_before_backing_out():
    """The fingers stopped on a part (opening 0.3): after opening, the hand first moves 12 mm
    along its -z (off the jaw the part rests on), then 10 cm back along the approach. A hand
    that closed on nothing (a push) backs straight out."""
    plan = pull_plan()
    controller = Controller(ControllerConfig())
    controller.set_plan(plan)
    loop = Loop(controller, FakeArmDriver(object_opening=0.3))
    assert loop.run_until(finished).state == "done"
    T_end = plan.ee_poses[-1]
    start = next(i for i, c in enumerate(loop.commands) if c.state == "release")
    path = np.array([T[:3, 3] for T in loop.hand[start:]])
    off = T_end[:3, 3] - 0.012 * T_end[:3, 2]
    assert np.linalg.norm(path - off, axis=1).min() < 0.003  # went through the step-off pose
    np.testing.assert_allclose(path[-1], off + np.array([0.0, 0.0, 0.1]), atol=0.006)


def test_a_retreat_that_cannot_finish_ends_done_with_a_note():
    """The object is released where the plan left it; only the controller's own move away
    fails (an obstacle above the hand): done, not failed, and the message says why."""
    plan = pull_plan()
    ceiling = plan.ee_poses[-1][2, 3] + 0.03
    loop = walled_loop(None, ControllerConfig(retreat_timeout_s=2.0), plan)
    loop.run_until(lambda c: c.state == "release")
    loop.driver.wall = lambda T: T[2, 3] > ceiling
    cmd = loop.run_until(finished)
    assert cmd.state == "done", cmd.hold_reason
    assert cmd.message.startswith("released; the retreat pose was not reached in time")
    assert cmd.gripper_open


@pytest.mark.parametrize(("left_m", "end"), [(0.07, "done"), (0.15, "failed")])
def test_a_hand_still_lagging_at_the_execute_timeout_ends_by_the_same_rule(left_m, end):
    """Without the stall rule (a hand that creeps, say), the execute timeout decides the same
    way: near the plan's end the plan is finished, further back the run fails."""
    plan = pull_plan()
    stop_x = plan.ee_poses[-1][0, 3] + left_m
    config = ControllerConfig(stall_timeout_s=100.0, execute_timeout_s=1.0)
    loop = walled_loop(lambda T: T[0, 3] < stop_x, config, plan)
    cmd = loop.run_until(lambda c: c.state in ("release", "failed"))
    if end == "done":
        loop.driver.wall = None
        cmd = loop.run_until(finished)
        assert "keeps lagging" in next(c.message for c in loop.commands if c.state == "release")
    assert cmd.state == end, cmd.hold_reason
    if end == "failed":
        assert "keeps lagging" in cmd.hold_reason and "cannot follow" in cmd.hold_reason


def test_a_hand_blocked_early_in_the_plan_fails_without_waiting_for_the_timeout():
    plan = pull_plan()
    stop_x = plan.ee_poses[0][0, 3] - 0.05  # a quarter of the 20 cm pull
    config = ControllerConfig(stall_timeout_s=1.0)
    loop = walled_loop(lambda T: T[0, 3] < stop_x, config, plan)
    loop.run_until(lambda c: c.state == "execute")
    start = len(loop.commands)
    cmd = loop.run_until(finished)
    assert cmd.state == "failed"
    assert "blocked" in cmd.hold_reason and "cannot follow the plan" in cmd.hold_reason
    duration = plan.times_s[-1] - plan.times_s[0]
    assert (len(loop.commands) - start) * PERIOD < duration + 2.0  # not execute_timeout_s


# ---------------------------------------------------------------------------------------------
# Residual policy
# ---------------------------------------------------------------------------------------------

DELTA = np.array([0.01, -0.02, 0.015, 0.0, 0.05, 0.1])  # m, rad (body frame)


def test_residual_mode_offsets_the_executed_poses_by_the_policy_delta():
    plan = pull_plan()
    policy = ConstantPolicy(DELTA)
    loop = make_loop(ControllerConfig(mode="residual"), policy, plan)
    assert policy.resets == 1
    loop.run_until(finished)
    assert loop.states() == ["approach", "grasp", "execute", "release", "done"]

    release = next(i for i, c in enumerate(loop.commands) if c.state == "release")
    T_hand, T_plan = loop.hand[release], plan.ee_poses[-1]
    # Translation added, rotation composed on the left in the body frame: exp(w) @ R.
    np.testing.assert_allclose(T_hand[:3, 3], T_plan[:3, 3] + DELTA[:3], atol=0.005)
    w = so3_log(T_hand[:3, :3] @ T_plan[:3, :3].T)
    np.testing.assert_allclose(w, DELTA[3:], atol=0.03)
    # The commanded goal itself is exactly the composition.
    last_execute = [c for c in loop.commands if c.state == "execute"][-1]
    expected = np.eye(4)
    expected[:3, :3] = so3_exp(DELTA[3:]) @ T_plan[:3, :3]
    expected[:3, 3] = T_plan[:3, 3] + DELTA[:3]
    np.testing.assert_allclose(last_execute.ee_goal, expected, atol=1e-9)

    inputs = policy.inputs[0]
    assert {"image", "goal_image", "tracks", "plan_poses", "plan_pose", "ee_pose", "q"} <= set(
        inputs
    )
    assert {i["state"] for i in policy.inputs} == {"approach", "grasp", "execute"}  # the default


def test_residual_delta_is_cut_to_its_limits():
    policy = ConstantPolicy([0.5, 0.0, 0.0, 0.0, 0.0, 0.0])  # 50 cm: far beyond a correction
    config = ControllerConfig(mode="residual", max_residual_translation_m=0.02)
    plan = pull_plan()
    loop = make_loop(config, policy, plan)
    cmd = loop.run_until(lambda c: c.state == "grasp")
    assert RESIDUAL_CLIPPED in cmd.violations
    grasp_goal = plan.ee_poses[0][:3, 3] + [0.02, 0.0, 0.0]
    loop.run_until(lambda c: c.state == "execute")
    np.testing.assert_allclose(loop.hand[-1][:3, 3], grasp_goal, atol=0.005)


def test_action_chunks_use_their_first_row():
    chunk = np.zeros((4, 6))
    chunk[0] = DELTA
    chunk[1:] = 1.0  # would be clipped, and be visible, if used
    loop = make_loop(ControllerConfig(mode="residual"), ConstantPolicy(chunk), pull_plan())
    loop.run_until(lambda c: c.state == "execute")
    assert all(RESIDUAL_CLIPPED not in c.violations for c in loop.commands)


class Broken:
    def predict(self, obs: dict) -> dict:
        raise RuntimeError("CUDA out of memory")


def test_a_broken_policy_fails_the_run_with_its_error():
    loop = make_loop(ControllerConfig(mode="residual"), Broken(), pull_plan())
    cmd = loop.run_until(finished)
    assert cmd.hold_reason == "policy raised RuntimeError: CUDA out of memory"
    # The policy corrects from the first approach tick, so the run fails before any motion.
    assert loop.states() == ["failed"]
    for c in loop.commands:
        np.testing.assert_allclose(c.q_target, loop.joints[0], atol=1e-12)


class LateGoal(ConstantPolicy):
    """A policy whose goal image arrives on its fourth call (PolicyRunner raises this way)."""

    def predict(self, obs: dict) -> dict:
        if len(self.inputs) < 3:
            self.inputs.append(obs)
            raise PolicyInputMissing("observation 'goal_image' has not arrived yet (None)")
        return super().predict(obs)


def test_a_policy_input_that_has_not_arrived_holds_then_the_run_resumes():
    # The approach takes 4-5 ticks (0.8-1 s): with the 3 waiting ticks counted it would time out.
    config = ControllerConfig(mode="residual", approach_timeout_s=1.2)
    loop = make_loop(config, LateGoal(np.zeros(6)), pull_plan())
    first = [loop.tick()]
    loop.driver.q = loop.driver.q + 0.01  # the arm sags while it waits
    first += [loop.tick() for _ in range(2)]
    assert [c.state for c in first] == ["hold"] * 3
    assert all("waiting for the policy's input" in c.hold_reason for c in first)
    for c in first:  # the joints measured when the wait began, not the sagged ones
        np.testing.assert_allclose(c.q_target, loop.joints[0], atol=1e-12)
    cmd = loop.run_until(finished)
    assert cmd.state == "done", cmd.hold_reason  # the wait did not count against the timeout
    assert loop.states() == ["hold", "approach", "grasp", "execute", "release", "done"]


class GapInExecute(ConstantPolicy):
    """A policy whose input goes missing for ``gap`` calls from its third execute call on."""

    def __init__(self, gap: int) -> None:
        super().__init__(np.zeros(6))
        self.gap, self.execute_calls = gap, 0

    def predict(self, obs: dict) -> dict:
        if obs["state"] == "execute":
            self.execute_calls += 1
            if 3 <= self.execute_calls < 3 + self.gap:
                raise PolicyInputMissing("observation 'image' has not arrived yet (None)")
        return super().predict(obs)


def test_a_wait_in_execute_stops_the_plan_clock():
    loop = make_loop(ControllerConfig(mode="residual"), GapInExecute(gap=5), pull_plan())
    cmd = loop.run_until(finished)
    assert cmd.state == "done", cmd.hold_reason
    waiting = [i for i, c in enumerate(loop.commands) if "waiting for" in c.hold_reason]
    assert len(waiting) == 5
    before, after = loop.commands[waiting[0] - 1], loop.commands[waiting[-1] + 1]
    assert before.state == after.state == "execute"
    # The plan resumes where it stopped (a clock that ran on would be a second further).
    assert after.step - before.step <= 1, (before.step, after.step)


def test_a_policy_input_that_never_arrives_fails_the_run_without_motion():
    class NoGoal:
        def predict(self, obs: dict) -> dict:
            raise PolicyInputMissing("observation 'goal_image' has not arrived yet (None)")

    config = ControllerConfig(mode="residual", policy_input_timeout_s=1.0)
    loop = make_loop(config, NoGoal(), pull_plan())
    cmd = loop.run_until(finished)
    assert cmd.state == "failed"
    assert "policy_input_timeout_s" in cmd.hold_reason and "goal_image" in cmd.hold_reason
    assert loop.states() == ["hold", "failed"]
    for c in loop.commands:
        np.testing.assert_allclose(c.q_target, loop.joints[0], atol=1e-12)


def test_an_unusable_input_holds_with_its_reason_without_asking_the_policy():
    policy = ConstantPolicy(np.zeros(6))
    loop = make_loop(ControllerConfig(mode="residual"), policy, pull_plan())
    loop.extra["input_errors"] = {"image": "camera image is 8x8 mono8, expected rgb8"}
    cmds = [loop.tick() for _ in range(3)]
    assert [c.state for c in cmds] == ["hold"] * 3 and policy.inputs == []
    assert "image: camera image is 8x8 mono8" in cmds[-1].hold_reason
    loop.extra.clear()  # a usable frame came
    assert loop.run_until(finished).state == "done"


def test_tracks_of_another_goal_are_waited_for():
    plan = pull_plan()
    px = np.zeros((3, 2, 2), np.float32)
    old = PointTrackSet(px, np.ones(2), Intrinsics.from_fov(8, 8, 60.0), goal_id="previous")
    policy = ConstantPolicy(np.zeros(6))
    loop = make_loop(ControllerConfig(mode="residual"), policy, plan)
    loop.extra["tracks"] = old
    cmd = loop.tick()
    assert cmd.state == "hold" and policy.inputs == []
    assert "tracks of goal 'pull' (the latest are for goal 'previous')" in cmd.hold_reason
    loop.extra["tracks"] = dataclasses.replace(old, goal_id=plan.goal_id)
    assert loop.run_until(finished).state == "done"
    assert policy.inputs[0]["tracks"].goal_id == "pull"


def test_a_non_finite_policy_output_holds_and_then_fails():
    config = ControllerConfig(mode="residual", ik_fail_ticks=2)
    loop = make_loop(config, ConstantPolicy([np.nan] * 6), pull_plan())
    cmd = loop.run_until(finished)
    assert cmd.state == "failed" and "non_finite_goal" in cmd.hold_reason
    assert loop.states() == ["hold", "failed"]  # from the first approach tick: no motion


class AbsoluteVector:
    """Absolute-mode policy that answers with the plan pose as a 6-vector [position, rotvec]."""

    def predict(self, obs: dict) -> dict:
        T = absolute_pose(obs)
        return {"delta": np.concatenate([T[:3, 3], so3_log(T[:3, :3])]), "gripper": 1.0}


def test_absolute_mode_reads_a_6_vector_as_a_pose_and_policy_gripper_drives_the_gripper():
    plan = pull_plan()
    config = ControllerConfig(mode="absolute", policy_gripper=True)
    loop = make_loop(config, AbsoluteVector(), plan)
    loop.run_until(finished)
    assert loop.states() == ["approach", "grasp", "execute", "release", "done"]
    release = next(i for i, c in enumerate(loop.commands) if c.state == "release")
    np.testing.assert_allclose(loop.hand[release], plan.ee_poses[-1], atol=0.005)
    # The policy said "open" (1.0) throughout execute; the state machine still closed for grasp.
    assert {c.gripper_open for c in loop.commands if c.state == "execute"} == {True}
    assert False in {c.gripper_open for c in loop.commands if c.state == "grasp"}


@pytest.mark.parametrize("mode", ["residual", "absolute"])
def test_the_approach_goes_to_the_corrected_pre_grasp(mode):
    """In approach the policy's grasp correction moves the pre-grasp with it, so a misplaced plan
    does not drive the hand into the object before the grasp state could correct it."""
    plan = pull_plan()
    T_grasp = plan.ee_poses[plan.grasp_step]
    corrected = np.eye(4)
    corrected[:3, :3] = so3_exp(DELTA[3:]) @ T_grasp[:3, :3]
    corrected[:3, 3] = T_grasp[:3, 3] + DELTA[:3]
    if mode == "residual":
        policy = ConstantPolicy(DELTA)
    else:
        vector = np.concatenate([corrected[:3, 3], so3_log(corrected[:3, :3])])
        policy = ConstantPolicy(vector)
    loop = make_loop(ControllerConfig(mode=mode), policy, plan)
    loop.run_until(lambda c: c.state == "grasp")
    approach = [c for c in loop.commands if c.state == "approach"]
    # In approach the policy is asked for the grasp step, with the grasp pose to correct.
    first = policy.inputs[0]
    assert first["state"] == "approach" and first["step"] == plan.grasp_step
    np.testing.assert_array_equal(first["plan_pose"], T_grasp)
    # The same rule in both modes: the pre-grasp keeps its body-frame offset from the grasp (the
    # plan's approach line) and turns as the grasp pose turned.
    expected = np.eye(4)
    expected[:3, :3] = so3_exp(DELTA[3:]) @ plan.pregrasp[:3, :3]
    expected[:3, 3] = corrected[:3, 3] + (plan.pregrasp[:3, 3] - T_grasp[:3, 3])
    np.testing.assert_allclose(approach[-1].ee_goal, expected, atol=1e-6)
    first_grasp = next(i for i, c in enumerate(loop.commands) if c.state == "grasp")
    np.testing.assert_allclose(loop.hand[first_grasp][:3, 3], expected[:3, 3], atol=0.006)
    # Not in approach when the states say so: the plain pre-grasp.
    loop = make_loop(ControllerConfig(mode=mode, policy_states=("grasp", "execute")), policy, plan)
    loop.run_until(lambda c: c.state == "grasp")
    first_grasp = next(i for i, c in enumerate(loop.commands) if c.state == "grasp")
    np.testing.assert_allclose(loop.hand[first_grasp][:3, 3], plan.pregrasp[:3, 3], atol=0.006)


def test_policy_modes_need_a_policy():
    with pytest.raises(ValueError, match="needs a policy"):
        Controller(ControllerConfig(mode="residual"))


# ---------------------------------------------------------------------------------------------
# Contracts: message constants, YAML, config validation, the fake driver
# ---------------------------------------------------------------------------------------------


def test_state_names_and_codes_match_control_status_msg():
    text = CONTROL_STATUS_MSG.read_text()
    codes = {m[0].lower(): int(m[1]) for m in re.findall(r"uint8 STATE_(\w+) = (\d+)", text)}
    assert codes == {name: i for i, name in enumerate(STATES)}
    assert (
        Command(np.zeros(6), True, False, "failed", -1, 0, np.eye(4)).state_code == codes["failed"]
    )


def test_controller_yaml_lists_every_loop_parameter_with_its_default():
    # The node's own parameters in the same file are checked in test_controller_node.py (rclpy).
    import yaml

    path = PACKAGE / "config" / "controller.yaml"
    section = ros_params_section(yaml.safe_load(path.read_text()), "/t2a/residual_controller")
    loop = {k.removeprefix("control."): v for k, v in section.items() if k.startswith("control.")}
    assert sorted(loop) == sorted(f.name for f in fields(ControllerConfig))
    assert from_dict(ControllerConfig, loop) == ControllerConfig()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"rate_hz": 0.0}, "rate_hz"),
        ({"mode": "closed_loop"}, "open_loop, residual, absolute"),
        ({"move_speed_mps": 1.0}, "must not exceed the safety limits"),
        ({"gripper_closed_opening": 0.99}, "closed < open"),
        ({"ik_fail_ticks": 0}, "ik_fail_ticks"),
        ({"blocked_finish_fraction": 1.5}, "blocked_finish_fraction"),
        ({"stall_timeout_s": 0.0}, "stall_timeout_s"),
        ({"policy_states": ("release",)}, "policy_states"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        ControllerConfig(**changes)


def test_observation_rejects_non_finite_joints():
    with pytest.raises(ValueError, match="6 finite angles"):
        Observation(0.0, np.full(6, np.nan), 1.0)


def test_fake_driver_is_an_arm_driver_that_moves_at_the_speed_limits():
    driver = FakeArmDriver()
    assert isinstance(driver, ArmDriver)
    target = READY + np.array([1.0, 0.0, 0.0, 0.0, 0.0, -1.0])
    driver.send_joint_targets(target)
    driver.step(0.1)
    q, gripper, stamp = driver.joint_positions()
    np.testing.assert_allclose(q - READY, [0.2, 0.0, 0.0, 0.0, 0.0, -0.3])
    assert stamp == pytest.approx(0.1) and gripper == 1.0
    for _ in range(10):
        driver.step(0.1)
    np.testing.assert_allclose(driver.joint_positions()[0], target)

    driver.object_opening = 0.3  # something between the fingers
    assert driver.close_gripper()[0]
    for _ in range(10):
        driver.step(0.1)
    assert driver.joint_positions()[1] == pytest.approx(0.3)


@pytest.mark.parametrize(
    "q", [np.full(6, np.nan), np.zeros(5), np.where(np.arange(6) == 1, UPPER + 0.1, 0.0)]
)
def test_fake_driver_refuses_what_a_robot_refuses(q):
    with pytest.raises(ValueError):
        FakeArmDriver().send_joint_targets(q)


def test_fake_driver_start_up_order():
    driver = FakeArmDriver(ready=False)
    np.testing.assert_array_equal(driver.joint_positions()[0], STOW)
    assert not driver.power_on()[0]  # no lease yet
    assert driver.claim()[0] and driver.power_on()[0]
    assert not driver.unstow()[0]  # not standing
    with pytest.raises(ValueError, match="not powered, standing and unstowed"):
        driver.send_joint_targets(READY)
    assert driver.stand()[0] and driver.unstow()[0]
    for _ in range(20):
        driver.step(0.1)
    np.testing.assert_allclose(driver.joint_positions()[0], READY)
    assert np.all(driver.joint_positions()[0] >= LOWER)


def test_gripper_opening_from_finger_angle():
    assert gripper_opening(0.0) == 0.0
    assert gripper_opening(-1.57) == 1.0
    assert gripper_opening(-0.785) == pytest.approx(0.5)


def test_active_states_are_the_moving_ones():
    assert ACTIVE_STATES == ("approach", "grasp", "execute", "release")
