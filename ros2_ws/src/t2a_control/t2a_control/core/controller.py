"""The control loop core: plan + observation -> one safe joint command per tick (section 2.4).

ROS-free and deterministic: everything it knows arrives in :class:`Observation` (time included),
so the node, the simulator and tests drive it the same way. Each tick:

1. watchdog: any watched input stale -> hold position (resume when fresh);
2. state machine picks the hand goal ``a_bar_t``: the pre-grasp pose (approach), the grasp pose
   ``ee_poses[grasp_step]`` (grasp, then close the gripper), the plan sampled by time (execute),
   or a retreat along the approach direction, turned as the object turned, after opening the
   gripper (release). Once the gripper has closed, the rest of the plan is re-anchored to the
   realised grasp: with plan poses ``ee[k] = M_k G`` (object motion ``M_k``, planned grasp
   ``G``) and the measured hand pose ``H`` at the close, execute tracks ``ee[k] inv(G) H``, so
   the object makes its planned motion even when the hand closed short of ``G`` (contact). With
   a policy, ``G`` is the corrected grasp goal: the policy keeps making its own correction;
3. the policy corrects it (mode "residual": ``a_t = Delta a_t (+) a_bar_t``, translation added and
   rotation composed as ``exp(Delta rot) @ R`` in the body frame; "absolute": the policy's pose
   replaces it; "open_loop": no policy). In approach the policy is asked for the grasp step and
   its answer moves the pre-grasp pose with the grasp pose: the pre-grasp keeps its body-frame
   offset from the grasp (the plan's approach line) and turns as the grasp pose does;
4. safety filter on the hand goal -> IK seeded from the current joints (nearest solution) ->
   safety filter on the joints -> :class:`Command`.

States (names and order match ``t2a_msgs/ControlStatus`` STATE_*): idle -> approach -> grasp ->
execute -> release -> done; hold (stale input, a rejected goal, an IK failure, stop, or waiting
for a policy input that has not arrived or is unusable) and failed (bad plan, a pose IK cannot
reach for ``ik_fail_ticks`` ticks, a timeout, a broken policy, a policy input still missing after
``policy_input_timeout_s``, a hand blocked with much of the plan still ahead). A plan followed to
its end is done, also when the hand ends blocked in its last ``blocked_finish_fraction`` (the
object at its end stop: a closed door, a drawer pushed home), and when, the object released, the
controller's own retreat cannot finish (the message says so).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from typing import Any, Protocol

import numpy as np

from t2a_common.core.config import check, nested, param
from t2a_common.core.kinematics import IKConfig, fk, solve_ik
from t2a_common.core.se3 import pose_error, so3_exp, so3_log
from t2a_common.core.spot_arm import MAX_JOINT_SPEED
from t2a_common.core.types import EEPlan, PointTrackSet
from t2a_control.core.safety import (
    NON_FINITE_GOAL,
    NON_RIGID_GOAL,
    SafetyConfig,
    SafetyFilter,
    step_towards,
)
from t2a_control.core.watchdog import Watchdog, WatchdogConfig

STATES = ("idle", "approach", "grasp", "execute", "release", "done", "hold", "failed")
"""State names; the index of each is its ``t2a_msgs/ControlStatus`` STATE_* code."""
IDLE, APPROACH, GRASP, EXECUTE, RELEASE, DONE, HOLD, FAILED = STATES
STATE_CODES = {name: code for code, name in enumerate(STATES)}
ACTIVE_STATES = (APPROACH, GRASP, EXECUTE, RELEASE)  # the states in which the arm is ours
# The release retreats from wherever the corrected plan left the hand, so it takes no correction.
POLICY_STATES = (APPROACH, GRASP, EXECUTE)
MODES = ("open_loop", "residual", "absolute")

RESIDUAL_CLIPPED = "residual_clipped"  # controller-level violation: the policy's delta was cut


@dataclasses.dataclass(frozen=True)
class ControllerConfig:
    """Parameters of the residual controller (node ``residual_controller``)."""

    rate_hz: float = param(5.0, "control loop rate (Hz)")
    mode: str = param("open_loop", "policy use: open_loop | residual | absolute")
    move_speed_mps: float = param(
        0.15, "hand speed of the controller's own moves: approach, grasp, retreat (m/s)"
    )
    move_angular_speed_rps: float = param(
        0.5, "hand angular speed of the controller's own moves (rad/s)"
    )
    position_tolerance_m: float = param(0.005, "a hand pose counts as reached within this (m)")
    rotation_tolerance_rad: float = param(0.03, "a hand orientation counts as reached within (rad)")
    approach_timeout_s: float = param(15.0, "time to reach the pre-grasp pose before failing (s)")
    approach_from_above_m: float = param(
        0.05,
        "a hand starting more than this above the pre-grasp pose first goes to above it, then "
        "down, instead of cutting diagonally through the object (m; 0 = no waypoint)",
    )
    approach_joint_speed_fraction: float = param(
        0.3, "joint-space approach speed, as a fraction of spot_arm.MAX_JOINT_SPEED (1)"
    )
    grasp_timeout_s: float = param(10.0, "time to reach the grasp pose before failing (s)")
    contact_distance_m: float = param(
        0.04,
        "moving in to grasp, a hand that stops (contact) within this of the grasp pose closes "
        "there; 0 = only close at the grasp pose (m)",
    )
    contact_stall_m: float = param(
        0.002, "the hand counts as stopped when it moved less than this in one tick (m)"
    )
    gripper_timeout_s: float = param(
        1.5, "longest wait for the gripper to close or open; an object stops it early (s)"
    )
    gripper_closed_opening: float = param(
        0.05, "gripper opening at or below which it counts as closed (0 closed .. 1 open)"
    )
    gripper_open_opening: float = param(
        0.85, "gripper opening at or above which it counts as open (0 closed .. 1 open)"
    )
    max_tracking_error_m: float = param(
        0.05, "the plan clock pauses while the hand is further than this from its last goal (m)"
    )
    max_tracking_error_rad: float = param(
        0.3, "the plan clock pauses while the hand is turned further than this from it (rad)"
    )
    execute_timeout_s: float = param(
        10.0, "time beyond the plan's duration to get through the plan before failing (s)"
    )
    reanchor_after_grasp: bool = param(
        True,
        "once the gripper has closed, re-express the rest of the plan from the measured hand "
        "pose (the realised grasp, often short of the planned one): ee'[k] = ee[k] inv(G) H",
    )
    stall_timeout_s: float = param(
        2.0,
        "in execute, a hand that has not moved (contact_stall_m per tick) for this long while "
        "the plan clock waits for it is blocked (s)",
    )
    blocked_finish_fraction: float = param(
        0.3,
        "a hand that is blocked (or still lagging at execute_timeout_s) with at most this share "
        "of the plan's duration ahead finishes the plan (the object is at its end stop) and "
        "releases; with more the run fails (0..1)",
    )
    settle_timeout_s: float = param(
        2.0, "time after the plan's end to reach its final pose before releasing anyway (s)"
    )
    hold_if_lifted_m: float = param(
        0.05,
        "a plan that ends with the hand this much higher than at the grasp keeps holding the "
        "object instead of releasing it into the air (m; 0 = always release)",
    )
    retreat_distance_m: float = param(0.10, "retreat after release, against the approach (m)")
    release_clearance_m: float = param(
        0.012,
        "when the fingers had stopped on a part, the opened hand first steps this far along its "
        "-z, off the fixed jaw the part rests on, before backing out (friction would drag the "
        "part along, e.g. pull a closed drawer open again) (m; 0 = straight back)",
    )
    retreat_timeout_s: float = param(
        10.0, "time to reach the retreat pose; then the run ends done, saying so (s)"
    )
    ik_fail_ticks: int = param(
        5, "consecutive ticks with an IK failure or a rejected goal before failing (ticks)"
    )
    max_residual_translation_m: float = param(
        0.10, "the policy's translation correction is cut to this length (m)"
    )
    max_residual_rotation_rad: float = param(
        0.5, "the policy's rotation correction is cut to this angle (rad)"
    )
    policy_states: tuple[str, ...] = param(
        ("approach", "grasp", "execute"),
        "states in which the policy corrects the plan (state names); in approach it corrects "
        "the pre-grasp pose with the grasp step's correction",
    )
    policy_input_timeout_s: float = param(
        10.0,
        "longest hold waiting for a policy input (goal image, tracks of this plan's goal, a "
        "usable camera frame) before the run fails (s)",
    )
    policy_gripper: bool = param(
        False, "let the policy's gripper output (>= 0.5 = open) drive the gripper in execute"
    )
    safety: SafetyConfig = nested(SafetyConfig, "limits of the safety filter")
    watchdog: WatchdogConfig = nested(WatchdogConfig, "input freshness")

    def __post_init__(self) -> None:
        check(
            _number(self.rate_hz) and 0.0 < self.rate_hz <= 100.0,
            f"ControllerConfig.rate_hz = {self.rate_hz!r}, expected 0 < rate <= 100 Hz",
        )
        check(
            self.mode in MODES,
            f"ControllerConfig.mode = {self.mode!r}, expected one of {', '.join(MODES)}",
        )
        positive = (
            "move_speed_mps move_angular_speed_rps position_tolerance_m rotation_tolerance_rad "
            "approach_timeout_s grasp_timeout_s gripper_timeout_s max_tracking_error_m "
            "max_tracking_error_rad execute_timeout_s settle_timeout_s retreat_timeout_s "
            "policy_input_timeout_s stall_timeout_s"
        ).split()
        for name in positive:
            value = getattr(self, name)
            check(
                _number(value) and value > 0.0,
                f"ControllerConfig.{name} = {value!r}, expected a finite number > 0",
            )
        for name in (
            "retreat_distance_m",
            "release_clearance_m",
            "max_residual_translation_m",
            "max_residual_rotation_rad",
        ):
            value = getattr(self, name)
            check(
                _number(value) and value >= 0.0,
                f"ControllerConfig.{name} = {value!r}, expected a finite number >= 0",
            )
        check(
            self.move_speed_mps <= self.safety.max_linear_speed_mps
            and self.move_angular_speed_rps <= self.safety.max_angular_speed_rps,
            f"move speeds ({self.move_speed_mps} m/s, {self.move_angular_speed_rps} rad/s) must "
            f"not exceed the safety limits ({self.safety.max_linear_speed_mps} m/s, "
            f"{self.safety.max_angular_speed_rps} rad/s)",
        )
        check(
            _number(self.gripper_closed_opening)
            and _number(self.gripper_open_opening)
            and 0.0 <= self.gripper_closed_opening < self.gripper_open_opening <= 1.0,
            f"gripper thresholds closed={self.gripper_closed_opening!r} "
            f"open={self.gripper_open_opening!r}, expected 0 <= closed < open <= 1",
        )
        check(
            _number(self.blocked_finish_fraction) and 0.0 <= self.blocked_finish_fraction <= 1.0,
            f"ControllerConfig.blocked_finish_fraction = {self.blocked_finish_fraction!r}, "
            "expected a share in [0, 1]",
        )
        check(
            isinstance(self.ik_fail_ticks, int)
            and not isinstance(self.ik_fail_ticks, bool)
            and self.ik_fail_ticks >= 1,
            f"ControllerConfig.ik_fail_ticks = {self.ik_fail_ticks!r}, expected an integer >= 1",
        )
        bad = [s for s in self.policy_states if s not in POLICY_STATES]
        check(
            not bad,
            f"ControllerConfig.policy_states has {bad}, expected some of {list(POLICY_STATES)}",
        )

    @property
    def period_s(self) -> float:
        """Control period (s)."""
        return 1.0 / self.rate_hz


def _number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


class Policy(Protocol):
    """A residual policy: a dict of observations in, a dict with at least "delta" out.

    ``delta``: (6,) or an action chunk (h, 6) of which the first row is used: [translation (m),
    rotation vector (rad)], both in the body frame. ``gripper``: in [0, 1], 1 = open. For mode
    "absolute", ``pose`` (4, 4) ``T_body_tool``, or else ``delta`` read as an absolute
    [position (m), rotation vector (rad)]. The input keys are listed in :meth:`Controller.tick`.
    In approach the policy is asked for the grasp step (``"step"``, and ``"plan_pose"`` is the
    grasp pose); the controller carries its answer over to the pre-grasp pose. Raise
    :class:`PolicyInputMissing` for an input that has not arrived yet. An optional ``reset()``
    is called whenever a new plan starts.
    """

    def predict(self, obs: dict[str, Any]) -> dict[str, Any]: ...


@dataclasses.dataclass(frozen=True, eq=False)
class Observation:
    """Everything the controller sees at one tick; times on one clock (s)."""

    now_s: float  # time of this tick
    q: np.ndarray  # (6,) rad, measured arm joints
    gripper: float  # opening, 0 closed .. 1 open
    image: np.ndarray | None = None  # (H, W, 3) uint8, latest colour image I_t
    image_stamp_s: float = math.nan  # capture time of ``image``
    goal_image: np.ndarray | None = None  # (H, W, 3) uint8, the goal G
    tracks: PointTrackSet | None = None  # predicted tracks tau for the current goal
    stamps: Mapping[str, float] = dataclasses.field(default_factory=dict)  # name -> last receipt
    # name -> why the latest message of a policy input could not be used (a camera frame in an
    # encoding the policy cannot take, a goal image of another goal); the policy waits on it
    input_errors: Mapping[str, str] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        q = np.array(self.q, dtype=float)
        if q.shape != (6,) or not np.isfinite(q).all():
            raise ValueError(f"observation joints must be 6 finite angles (rad), got {self.q!r}")
        if not math.isfinite(self.now_s):
            raise ValueError(f"observation time must be finite, got {self.now_s!r}")
        object.__setattr__(self, "q", q)


@dataclasses.dataclass(frozen=True, eq=False)
class Command:
    """What one tick asks of the arm, and the status to publish.

    ``q_target`` is always finite and safe to send; the node streams it only when
    ``send_joints`` (the active states, hold, and failed after motion). ``gripper_open`` is the
    gripper state the controller wants; send open/close only when it changes.
    """

    q_target: np.ndarray  # (6,) rad
    gripper_open: bool
    send_joints: bool
    state: str  # one of STATES
    step: int  # index into the plan's ee_poses; -1 without a plan
    num_steps: int
    ee_goal: np.ndarray  # (4, 4) T_body_tool, the safe hand goal IK solved for
    hold_reason: str = ""  # why hold or failed
    message: str = ""  # progress note
    violations: tuple[str, ...] = ()  # safety.VIOLATIONS codes and RESIDUAL_CLIPPED
    goal_id: str = ""
    mode: str = "open_loop"
    timings_ms: Mapping[str, float] = dataclasses.field(default_factory=dict)  # stage -> ms
    period_ms: float = math.nan  # time since the previous tick

    @property
    def state_code(self) -> int:
        """``t2a_msgs/ControlStatus`` STATE_* value of ``state``."""
        return STATE_CODES[self.state]


class PolicyInputMissing(ValueError):
    """A policy's input has not arrived yet (the goal image, the tracks, a camera frame).

    Raised by a policy (``PolicyRunner`` does): the controller holds, with the message as the
    reason, and resumes once the input arrives, instead of failing the run. Waiting does not
    count against the state's timeouts."""


class _PolicyFailure(Exception):
    """The policy raised or returned something unusable: the run fails with this reason."""


class Controller:
    """Closed-loop executor of one :class:`EEPlan` at a time (see the module docstring)."""

    def __init__(
        self,
        config: ControllerConfig | None = None,
        policy: Policy | None = None,
        *,
        timer: Callable[[], float] = time.perf_counter,
    ) -> None:
        self.config = config or ControllerConfig()
        if self.config.mode != "open_loop" and policy is None:
            raise ValueError(f"mode {self.config.mode!r} needs a policy, got None")
        self.policy = policy
        self.safety = SafetyFilter(self.config.safety)
        self.period_s = self.config.period_s
        self.watchdog = Watchdog.from_config(self.config.watchdog, self.period_s)
        self._ik_config = IKConfig(joint_limit_margin=self.config.safety.joint_limit_margin_rad)
        self._timer = timer  # only for the reported timings, never for control decisions
        self._plan: EEPlan | None = None
        self._phase = IDLE
        self._note = "no plan"
        self._gripper_open = True
        self._last_now: float | None = None
        self._stop_pending = False
        self._start_run()

    # --- public API -----------------------------------------------------------------------

    @property
    def state(self) -> str:
        """Current state machine phase (hold is reported per tick, not stored here)."""
        return self._phase

    def set_plan(self, plan: EEPlan) -> None:
        """Start executing ``plan`` from its approach; a non-OK plan fails without motion."""
        self._plan = plan
        self._stop_pending = False
        self._start_run()
        if not plan.ok:
            self._phase = FAILED
            self._note = f"plan {plan.goal_id!r} is not OK (status {plan.status}): {plan.message}"
            return
        self._phase = APPROACH
        self._note = ""
        d = plan.ee_poses[plan.grasp_step][:3, 3] - plan.pregrasp[:3, 3]
        n = float(np.linalg.norm(d))
        # Without a standoff there is no approach line; back out along the hand's own x axis.
        self._approach_dir = d / n if n > 1e-6 else plan.ee_poses[plan.grasp_step][:3, 0].copy()
        reset = getattr(self.policy, "reset", None)
        if callable(reset):
            reset()

    def executed_poses(self) -> np.ndarray:
        """The plan's hand poses (T, 4, 4) as they are being executed: from the grasp step on
        re-anchored to the realised grasp once the gripper has closed (``reanchor_after_grasp``).
        """
        plan = self._plan
        if plan is None:
            return np.zeros((0, 4, 4))
        poses = np.array(plan.ee_poses, dtype=float)
        if self._anchor is not None:
            poses[plan.grasp_step :] = poses[plan.grasp_step :] @ self._anchor
        return poses

    def stop(self) -> None:
        """Hold position and drop the plan; the controller goes idle once inputs are fresh."""
        self._plan = None
        self._phase = IDLE
        self._note = "stopped"
        self._stop_pending = True
        self._start_run()

    def tick(self, obs: Observation) -> Command:
        """One control step: the safe command for ``obs``.

        The policy (modes residual/absolute, in ``policy_states``) gets a dict with: "image"
        (H, W, 3) uint8 or None, "image_stamp_s", "goal_image", "tracks" (PointTrackSet or
        None), "plan_poses" (T, 4, 4) (re-anchored after the grasp, see
        :meth:`executed_poses`), "plan_times_s" (T,) and "grasp_step" of the open-loop
        plan, "step" (int), "plan_pose" (4, 4) the open-loop pose of "step" being corrected
        (in approach: the grasp pose, whose correction the pre-grasp gets), "ee_pose" (4, 4)
        the measured hand pose, "q" (6,), "gripper", "state" and "time_s". It is not asked
        while ``obs.input_errors`` names a problem, nor with tracks of another goal than the
        plan's: the controller holds, waiting, and fails after ``policy_input_timeout_s``.
        """
        t_start = self._timer()
        period = obs.now_s - self._last_now if self._last_now is not None else math.nan
        self._last_now = obs.now_s
        elapsed = self.period_s if math.isnan(period) else period
        # Limits use at most one period: a late tick must not license a bigger step. Timers use
        # up to two, so a stalled loop does not skip through the plan.
        dt = min(max(elapsed, 0.0), self.period_s)
        dt_clock = min(max(elapsed, 0.0), 2.0 * self.period_s)
        self._tick_info = {"period_ms": period * 1e3, "timings": {}, "t_start": t_start}
        self._policy_cache = None

        for name, stamp in obs.stamps.items():
            self.watchdog.feed(name, stamp)
        fresh, _ = self.watchdog.check(obs.now_s)

        if self._stop_pending:
            if fresh:
                self._stop_pending = False  # one hold tick, then idle
            return self._hold(obs, "stop requested")
        if self._phase not in ACTIVE_STATES:
            return self._passive(obs)
        if not fresh:
            return self._hold(obs, f"stale input: {self.watchdog.describe(obs.now_s)}")

        T_current = fk(obs.q)  # (4, 4) T_body_tool
        if not self._checked:
            problem = self._check_plan(obs.q)
            if problem:
                return self._fail(obs, problem)
            self._checked = True
        self._phase_time += dt_clock
        clock_step = dt_clock if self._phase == EXECUTE and self._tracking(T_current) else 0.0
        self._clock += clock_step

        try:
            goal = self._goal(obs, T_current, dt)
        except PolicyInputMissing as e:  # waiting for an input is neither progress nor failure
            self._phase_time -= dt_clock
            self._clock -= clock_step
            if self._wait_started is None:
                self._wait_started = obs.now_s
            waited = obs.now_s - self._wait_started
            if waited > self.config.policy_input_timeout_s:
                return self._fail(
                    obs, f"waited {waited:.1f} s (> policy_input_timeout_s) for the policy's "
                    f"input: {e}"
                )  # fmt: skip
            return self._hold(obs, f"waiting for the policy's input: {e}")
        except _PolicyFailure as e:
            return self._fail(obs, str(e))
        self._held_q = None  # a hold (stale input, waiting) ends with the first real goal
        self._wait_started = None
        if self._phase == FAILED:
            return self._fail(obs, self._note)
        if goal is None:  # finished this tick (done)
            return self._passive(obs)
        return self._command(obs, T_current, goal, dt)

    # --- state machine --------------------------------------------------------------------

    def _start_run(self) -> None:
        """Forget everything about the previous run."""
        self._checked = False
        self._phase_time = 0.0
        self._sub_started: float | None = None  # phase time when closing/retreating began
        self._clock = 0.0  # execute: plan time since the grasp step (s)
        # execute: inv(G) @ H, the grasp pose the hand was sent to -> the hand pose measured once
        # the gripper closed (the realised grasp); plan poses from the grasp on are ee[k] @ it
        self._anchor: np.ndarray | None = None
        self._grasp_hand: np.ndarray | None = None  # (4, 4) measured hand pose at the close
        self._holding = False  # the fingers stopped on something when they closed
        self._retreat_path: list[np.ndarray] = []  # release: poses still to reach, in order
        self._stalled_s = 0.0  # execute: how long the hand has not moved with the clock waiting
        self._settle_started: float | None = None
        self._step = -1
        self._bad_ticks = 0
        self._held_q: np.ndarray | None = None
        self._wait_started: float | None = None  # when the current wait for a policy input began
        self._fail_q: np.ndarray | None = None
        self._last_target: np.ndarray | None = None
        self._release_pose: np.ndarray | None = None
        self._retreat_goal: np.ndarray | None = None
        self._approach_dir = np.array([1.0, 0.0, 0.0])
        self._via: list[np.ndarray] = []  # approach joint waypoints still to reach
        self._violations: list[str] = []

    def _enter(self, phase: str, note: str = "") -> None:
        self._phase = phase
        self._phase_time = 0.0
        self._sub_started = None
        self._last_hand: np.ndarray | None = None  # hand position (3,) at the previous tick
        self._note = note

    def _goal(self, obs: Observation, T_current: np.ndarray, dt: float) -> np.ndarray | None:
        """This tick's hand goal (4, 4), running as many transitions as the state allows."""
        for _ in range(len(ACTIVE_STATES) + 1):
            phase = self._phase
            if phase == APPROACH:
                goal = self._approach(obs, T_current, dt)
            elif phase == GRASP:
                goal = self._grasp(obs, T_current, dt)
            elif phase == EXECUTE:
                goal = self._execute(obs, T_current, dt)
            elif phase == RELEASE:
                goal = self._release(obs, T_current, dt)
            else:
                return None
            if goal is not None:
                return goal
        return None

    def _approach(self, obs: Observation, T_current: np.ndarray, dt: float) -> np.ndarray | None:
        plan = self._plan
        self._step = plan.grasp_step
        self._gripper_open = True
        target = plan.pregrasp
        if self._policy_active():  # the grasp pose's correction moves the pre-grasp along
            T_grasp = plan.ee_poses[plan.grasp_step]
            target = _carry_over(target, T_grasp, self._corrected(obs, T_grasp, T_current))
        if self._sub_started is None:  # first tick of the approach: plan the path in joints
            self._sub_started = self._phase_time
            self._via = self._approach_joints(obs.q, T_current, target)
        if self._via and self._phase_time > self.config.approach_timeout_s:
            return self._timeout("approach: pre-grasp pose", T_current, target)
        if self._via:
            # Joint-space moves to the waypoints (above the pre-grasp, the pre-grasp): a straight
            # Cartesian line from a raised hand can cut through the object or cross a
            # singularity; interpolated joints do neither near the start pose.
            q_goal = self._via[0]
            step = MAX_JOINT_SPEED * self.config.approach_joint_speed_fraction * dt
            delta = q_goal - obs.q
            if np.abs(delta).max() <= 0.01:
                self._via.pop(0)
            if self._via:
                scale = min(1.0, float(np.min(step / np.maximum(np.abs(delta), 1e-9))))
                return fk(obs.q + scale * delta)
        if self._reached(T_current, target) and (
            obs.gripper >= self.config.gripper_open_opening
            or self._phase_time >= self.config.gripper_timeout_s
        ):
            self._enter(GRASP)
            return None
        if self._phase_time > self.config.approach_timeout_s:
            return self._timeout("approach: pre-grasp pose", T_current, target)
        return self._move(T_current, target, dt)

    def _grasp(self, obs: Observation, T_current: np.ndarray, dt: float) -> np.ndarray | None:
        plan = self._plan
        self._step = plan.grasp_step
        target = self._corrected(obs, plan.ee_poses[plan.grasp_step], T_current)
        if self._sub_started is None:  # still moving in, gripper open
            self._gripper_open = True
            if self._reached(T_current, target) or self._in_contact(T_current, target):
                self._sub_started = self._phase_time
            elif self._phase_time > self.config.grasp_timeout_s:
                return self._timeout("grasp: grasp pose", T_current, target)
        if self._sub_started is not None:  # closing at the grasp pose
            self._gripper_open = False
            waited = self._phase_time - self._sub_started
            if obs.gripper <= self.config.gripper_closed_opening or (
                waited >= self.config.gripper_timeout_s
            ):
                self._enter(EXECUTE)
                self._clock = 0.0
                self._stalled_s = 0.0
                self._grasp_hand = T_current.copy()
                self._holding = obs.gripper > self.config.gripper_closed_opening
                if self.config.reanchor_after_grasp:
                    # The hand closed where it is, not where it was sent (contact stopped it
                    # short): move the rest of the plan with it, so the object makes its planned
                    # motion. Only the unintended part: a policy's correction of the grasp
                    # (target != plan) is its own to keep making in execute.
                    self._anchor = np.linalg.inv(target) @ T_current
                return None
        return self._move(T_current, target, dt)

    def _execute(self, obs: Observation, T_current: np.ndarray, dt: float) -> np.ndarray | None:
        plan = self._plan
        g = plan.grasp_step
        t0 = float(plan.times_s[g])
        duration = float(plan.times_s[-1]) - t0
        clock = min(self._clock, duration)
        self._step = g + int(np.searchsorted(plan.times_s[g:], t0 + clock, side="right")) - 1
        # Position targets are reached one period after they are sent: aim where the plan will be.
        T_plan = self._plan_pose_at(t0 + min(clock + self.period_s, duration))
        if self._anchor is not None:
            T_plan = T_plan @ self._anchor
        target = self._corrected(obs, T_plan, T_current)
        self._gripper_open = False
        if self.config.policy_gripper and self._policy_cache is not None:
            gripper = self._policy_cache[1].get("gripper")
            if gripper is not None:
                self._gripper_open = float(np.asarray(gripper).reshape(-1)[0]) >= 0.5

        if self._clock >= duration:
            if self._settle_started is None:
                self._settle_started = self._phase_time
            if self._reached(T_current, target):
                self._finish_plan(T_current, "")
                return None
            if self._phase_time - self._settle_started > self.config.settle_timeout_s:
                p_err, r_err = pose_error(T_current, target)
                self._finish_plan(
                    T_current,
                    f"final pose not reached in {self.config.settle_timeout_s:g} s "
                    f"({p_err:.3f} m, {r_err:.3f} rad off)",
                )
                return None
        else:
            blocked = self._blocked(T_current, dt)
            late = self._phase_time > duration + self.config.execute_timeout_s
            if blocked or late:
                # The hand cannot get on with the plan. Near its end that is the object at its
                # end stop (a closed door, a drawer pushed home): the plan is done. Else: failed.
                ahead = (duration - clock) / duration if duration > 0 else 0.0
                p_err, _ = pose_error(T_current, target)
                where = (
                    f"the hand is blocked {p_err:.3f} m from its goal"
                    if blocked
                    else f"the hand keeps lagging its goal after {self._phase_time:.1f} s"
                ) + f" at plan time {clock:.2f} of {duration:.2f} s"
                if ahead <= self.config.blocked_finish_fraction:
                    self._finish_plan(T_current, f"{where} (the object's end stop)")
                else:
                    self._enter(FAILED, f"execute: {where}; the hand cannot follow the plan")
                return None
        return target

    def _blocked(self, T_current: np.ndarray, dt: float) -> bool:
        """Whether the hand has stood still for ``stall_timeout_s`` while the plan clock waited
        for it (further than the tracking tolerance from its goal)."""
        p = T_current[:3, 3].copy()
        last, self._last_hand = self._last_hand, p
        moved = last is None or np.linalg.norm(p - last) >= self.config.contact_stall_m
        if moved or self._tracking(T_current):
            self._stalled_s = 0.0
        else:
            self._stalled_s += dt
        return self._stalled_s >= self.config.stall_timeout_s

    def _finish_plan(self, T_current: np.ndarray, note: str) -> None:
        """End of the plan: release, unless the plan lifted the object (it would fall)."""
        plan = self._plan
        lift = float(plan.ee_poses[-1][2, 3] - plan.ee_poses[plan.grasp_step][2, 3])
        keep = self.config.hold_if_lifted_m > 0 and lift > self.config.hold_if_lifted_m
        if keep:
            self._enter(DONE, (f"{note}; " if note else "") + f"holding the object {lift:.2f} m up")
            return
        self._enter(RELEASE, f"{note}; releasing" if note else "")
        self._release_pose = T_current.copy()

    def _release(self, obs: Observation, T_current: np.ndarray, dt: float) -> np.ndarray | None:
        plan = self._plan
        self._step = plan.num_steps - 1
        self._gripper_open = True
        if self._release_pose is None:
            self._release_pose = T_current.copy()
        if self._sub_started is None:
            if not (
                obs.gripper >= self.config.gripper_open_opening
                or self._phase_time >= self.config.gripper_timeout_s
            ):
                return self._release_pose  # stay still while the fingers open
            self._sub_started = self._phase_time
            # Step off the fixed jaw the part rests on, then back out the way the hand came in.
            off = self._release_pose.copy()
            if self._holding:
                off[:3, 3] -= self.config.release_clearance_m * off[:3, 2]
            self._retreat_goal = off.copy()
            self._retreat_goal[:3, 3] -= self.config.retreat_distance_m * self._retreat_dir(
                self._release_pose
            )
            self._retreat_path = [off, self._retreat_goal]
        while self._retreat_path and self._reached(T_current, self._retreat_path[0]):
            self._retreat_path.pop(0)
        if not self._retreat_path:
            self._enter(DONE, self._note)
            return None
        if self._phase_time - self._sub_started > self.config.retreat_timeout_s:
            # The object is released where the plan left it; only the controller's own move
            # away from it failed: the run is done, and says so.
            p_err, r_err = pose_error(T_current, self._retreat_goal)
            self._enter(
                DONE,
                f"released; the retreat pose was not reached in time ({p_err:.3f} m, "
                f"{r_err:.3f} rad off)",
            )
            return None
        return self._move(T_current, self._retreat_path[0], dt)

    def _approach_joints(
        self, q: np.ndarray, T_current: np.ndarray, T_pre: np.ndarray
    ) -> list[np.ndarray]:
        """Joint waypoints of the approach: above the pre-grasp (if the hand starts high), then
        the pre-grasp itself; each IK seeded from the previous so the arm keeps its branch. An
        empty list (no IK) falls back to the straight Cartesian move."""
        poses = []
        if (
            self.config.approach_from_above_m > 0
            and T_current[2, 3] - T_pre[2, 3] > self.config.approach_from_above_m
        ):
            above = T_pre.copy()
            above[2, 3] = T_current[2, 3]
            poses.append(above)
        poses.append(T_pre)
        out, seed = [], q
        for T in poses:
            res = solve_ik(T, seed, self._ik_config)
            if not res.success:
                return []
            out.append(res.q)
            seed = res.q
        return out

    def _retreat_dir(self, T_release: np.ndarray | None = None) -> np.ndarray:
        """The approach direction (3,) as the object's motion has turned it: backing out of an
        opened door's handle or a pressed lever along the way the hand went in, not along the
        body-frame line it came in on (that would drag the part along). Turned by the hand's
        measured rotation from the close to ``T_release`` when known, else by the plan's."""
        if T_release is not None and self._grasp_hand is not None:
            R = T_release[:3, :3] @ self._grasp_hand[:3, :3].T
        else:
            plan = self._plan
            R = plan.ee_poses[-1][:3, :3] @ plan.ee_poses[plan.grasp_step][:3, :3].T
        return R @ self._approach_dir

    def _timeout(self, what: str, T_current: np.ndarray, T_goal: np.ndarray) -> None:
        p_err, r_err = pose_error(T_current, T_goal)
        self._enter(FAILED, f"{what} not reached in time ({p_err:.3f} m, {r_err:.3f} rad off)")

    def _move(self, T_current: np.ndarray, T_goal: np.ndarray, dt: float) -> np.ndarray:
        """One tick of the controller's own straight move towards ``T_goal`` at move speed."""
        c = self.config
        T, _ = step_towards(T_current, T_goal, c.move_speed_mps * dt, c.move_angular_speed_rps * dt)
        return T

    def _in_contact(self, T_current: np.ndarray, T_goal: np.ndarray) -> bool:
        """The hand stopped short of the grasp pose: it touches the object (the grasp point is
        the centre of the moving points, often just behind a handle or a curved surface)."""
        p = T_current[:3, 3].copy()
        last, self._last_hand = self._last_hand, p
        if last is None or self.config.contact_distance_m <= 0:
            return False
        stalled = np.linalg.norm(p - last) < self.config.contact_stall_m
        return stalled and pose_error(T_current, T_goal)[0] <= self.config.contact_distance_m

    def _reached(self, T_current: np.ndarray, T_goal: np.ndarray) -> bool:
        p_err, r_err = pose_error(T_current, T_goal)
        return p_err <= self.config.position_tolerance_m and (
            r_err <= self.config.rotation_tolerance_rad
        )

    def _tracking(self, T_current: np.ndarray) -> bool:
        """Whether the hand is close enough to last tick's goal for the plan clock to run."""
        if self._last_target is None:
            return True
        p_err, r_err = pose_error(T_current, self._last_target)
        return p_err <= self.config.max_tracking_error_m and (
            r_err <= self.config.max_tracking_error_rad
        )

    def _plan_pose_at(self, t: float) -> np.ndarray:
        """Plan pose (4, 4) at plan time ``t`` (s): linear in position, geodesic in rotation."""
        plan = self._plan
        times = plan.times_s
        k = int(np.searchsorted(times, t, side="right"))
        if k <= 0:
            return plan.ee_poses[0].copy()
        if k >= len(times):
            return plan.ee_poses[-1].copy()
        T_a, T_b = plan.ee_poses[k - 1], plan.ee_poses[k]
        span = float(times[k] - times[k - 1])
        s = (t - float(times[k - 1])) / span if span > 0.0 else 1.0
        T = np.eye(4)
        T[:3, :3] = so3_exp(s * so3_log(T_b[:3, :3] @ T_a[:3, :3].T)) @ T_a[:3, :3]
        T[:3, 3] = (1.0 - s) * T_a[:3, 3] + s * T_b[:3, 3]
        return T

    def _check_plan(self, q: np.ndarray) -> str:
        """Why the plan cannot be executed from joints ``q`` (6,), or "" if it can.

        Every pose the run will command (pre-grasp, grasp..end, retreat) must lie in the
        workspace box and have an IK solution, chained from ``q`` so the branch stays
        consistent; otherwise the arm would set off and stop partway.
        """
        plan = self._plan
        T_retreat = plan.ee_poses[-1].copy()
        T_retreat[:3, 3] -= self.config.retreat_distance_m * self._retreat_dir()
        poses = [("pre-grasp pose", plan.pregrasp)]
        poses += [
            (f"plan pose {k}", plan.ee_poses[k]) for k in range(plan.grasp_step, len(plan.ee_poses))
        ]
        poses += [("retreat pose", T_retreat)]
        lo, hi = self.safety.box_min, self.safety.box_max
        for name, T in poses:  # the box first: it is the clearer reason when both apply
            p = T[:3, 3]
            if np.any(p < lo - 1e-9) or np.any(p > hi + 1e-9):
                return (
                    f"{name} at {np.round(p, 3).tolist()} m is outside the workspace box "
                    f"{lo.tolist()}..{hi.tolist()} m"
                )
        q_seed = q
        for name, T in poses:
            result = solve_ik(T, q_seed, self._ik_config)
            if not result.success:
                return f"{name} is not reachable ({result.status}): {result.message}"
            q_seed = result.q
        return ""

    # --- policy ---------------------------------------------------------------------------

    def _policy_active(self) -> bool:
        """Whether the policy corrects the plan in the current state."""
        return self.config.mode != "open_loop" and self._phase in self.config.policy_states

    def _corrected(self, obs: Observation, T_plan: np.ndarray, T_current: np.ndarray) -> np.ndarray:
        """The open-loop goal ``T_plan`` (4, 4) with the policy's correction for this mode."""
        mode = self.config.mode
        if not self._policy_active():
            return T_plan
        out = self._policy_output(obs, T_plan, T_current)
        if mode == "absolute":
            if "pose" in out:
                T = np.asarray(out["pose"], dtype=float)
                if T.shape != (4, 4):
                    raise _PolicyFailure(f"policy 'pose' has shape {T.shape}, expected (4, 4)")
                return T
            a = self._delta(out)
            T = np.eye(4)
            T[:3, :3] = so3_exp(a[3:]) if np.isfinite(a).all() else np.nan
            T[:3, 3] = a[:3]
            return T
        delta = self._delta(out)
        t, w = delta[:3], delta[3:]
        t, cut_t = _clip_norm(t, self.config.max_residual_translation_m)
        w, cut_w = _clip_norm(w, self.config.max_residual_rotation_rad)
        if (cut_t or cut_w) and RESIDUAL_CLIPPED not in self._violations:
            self._violations.append(RESIDUAL_CLIPPED)
        T = np.eye(4)
        if np.isfinite(w).all():
            T[:3, :3] = so3_exp(w) @ T_plan[:3, :3]  # compose on SO(3), body frame
        else:
            T[:3, :3] = np.nan  # the safety filter turns this into a hold
        T[:3, 3] = T_plan[:3, 3] + t
        return T

    def _delta(self, out: Mapping[str, Any]) -> np.ndarray:
        if "delta" not in out:
            raise _PolicyFailure(f"policy output has no 'delta' (keys: {sorted(out)})")
        try:
            delta = np.asarray(out["delta"], dtype=float)
        except (TypeError, ValueError) as e:
            raise _PolicyFailure(f"policy 'delta' is not numeric: {e}") from e
        if delta.ndim == 2 and delta.shape[1] == 6 and delta.shape[0] >= 1:
            delta = delta[0]  # an action chunk: execute the first
        if delta.shape != (6,):
            raise _PolicyFailure(f"policy 'delta' has shape {delta.shape}, expected (6,) or (h, 6)")
        return delta

    def _policy_output(
        self, obs: Observation, T_plan: np.ndarray, T_current: np.ndarray
    ) -> Mapping[str, Any]:
        """The policy's prediction for this tick and state.

        Once per tick, except on a tick that changes state (say grasp -> execute), where the
        new state's goal needs its own correction.
        """
        if self._policy_cache is not None and self._policy_cache[0] == self._phase:
            return self._policy_cache[1]
        plan = self._plan
        if obs.input_errors:
            raise PolicyInputMissing(
                "; ".join(f"{name}: {why}" for name, why in sorted(obs.input_errors.items()))
            )
        tracks_id = obs.tracks.goal_id if obs.tracks is not None else ""
        if tracks_id and plan.goal_id and tracks_id != plan.goal_id:
            raise PolicyInputMissing(
                f"tracks of goal {plan.goal_id!r} (the latest are for goal {tracks_id!r})"
            )
        inputs = {
            "image": obs.image,
            "image_stamp_s": obs.image_stamp_s,
            "goal_image": obs.goal_image,
            "tracks": obs.tracks,
            "plan_poses": self.executed_poses(),
            "plan_times_s": plan.times_s,
            "grasp_step": plan.grasp_step,
            "step": self._step,
            "plan_pose": T_plan,
            "ee_pose": T_current,
            "q": obs.q,
            "gripper": obs.gripper,
            "state": self._phase,
            "time_s": obs.now_s,
        }
        t = self._timer()
        try:
            out = self.policy.predict(inputs)
        except PolicyInputMissing:
            raise
        except Exception as e:  # a broken policy must stop the run, not the control loop
            raise _PolicyFailure(f"policy raised {type(e).__name__}: {e}") from e
        self._tick_info["timings"]["policy"] = (self._timer() - t) * 1e3
        if not isinstance(out, Mapping):
            raise _PolicyFailure(f"policy returned {type(out).__name__}, expected a dict")
        self._policy_cache = (self._phase, out)
        return out

    # --- commands -------------------------------------------------------------------------

    def _command(
        self, obs: Observation, T_current: np.ndarray, goal: np.ndarray, dt: float
    ) -> Command:
        """Safety filter -> IK -> joint filter for ``goal``; holds on a failure."""
        timings = self._tick_info["timings"]
        t = self._timer()
        T_safe, violations = self.safety.filter_ee_goal(goal, T_current, dt)
        timings["safety"] = (self._timer() - t) * 1e3
        violations = self._violations + violations
        if NON_FINITE_GOAL in violations or NON_RIGID_GOAL in violations:
            return self._bad_tick(obs, f"goal rejected by the safety filter ({violations[-1]})")
        t = self._timer()
        ik = solve_ik(T_safe, obs.q, self._ik_config)
        timings["ik"] = (self._timer() - t) * 1e3
        if not ik.success:
            return self._bad_tick(obs, f"IK {ik.status}: {ik.message}")
        self._bad_ticks = 0
        t = self._timer()
        q_safe, joint_violations = self.safety.filter_joints(ik.q, obs.q, dt)
        timings["safety"] += (self._timer() - t) * 1e3
        self._last_target = goal
        return self._emit(
            obs,
            q_safe,
            state=self._phase,
            send=True,
            ee_goal=T_safe,
            message=self._note,
            violations=(*violations, *joint_violations),
        )

    def _bad_tick(self, obs: Observation, reason: str) -> Command:
        """Hold in place this tick; fail once it has happened ``ik_fail_ticks`` times in a row."""
        self._bad_ticks += 1
        if self._bad_ticks >= self.config.ik_fail_ticks:
            why = f"{reason} ({self._bad_ticks} ticks in a row)"
            if self._phase == RELEASE and self._sub_started is not None:
                # Released, backing away: the plan is through and the object let go.
                self._enter(DONE, f"released; the retreat stopped: {why}")
                return self._passive(obs)
            return self._fail(obs, why)
        return self._emit(obs, obs.q, state=HOLD, send=True, ee_goal=fk(obs.q), reason=reason)

    def _hold(self, obs: Observation, reason: str) -> Command:
        """Hold the joints measured when the hold began (no drift while inputs are stale)."""
        if self._held_q is None:
            self._held_q = obs.q.copy()
        self._last_hand = None  # a hand stopped by a hold has not touched anything
        q = self._held_q
        return self._emit(obs, q, state=HOLD, send=True, ee_goal=fk(q), reason=reason)

    def _fail(self, obs: Observation, reason: str) -> Command:
        was_active = self._phase in ACTIVE_STATES or self._phase == FAILED
        self._phase = FAILED
        self._note = reason
        if was_active and self._fail_q is None:
            self._fail_q = obs.q.copy()
        return self._passive(obs)

    def _passive(self, obs: Observation) -> Command:
        """idle, done and failed: the arm holds still (failed after motion keeps streaming it)."""
        plan = self._plan
        if self._phase == FAILED and self._fail_q is not None:
            q, send = self._fail_q, True
        else:
            q, send = obs.q, False
        reason = self._note if self._phase == FAILED else ""
        message = "" if self._phase == FAILED else self._note
        if self._phase == DONE and plan is not None:
            self._step = plan.num_steps - 1
        if self._phase == IDLE:
            self._step = -1
        return self._emit(
            obs, q, state=self._phase, send=send, ee_goal=fk(q), reason=reason, message=message
        )

    def _emit(
        self,
        obs: Observation,
        q: np.ndarray,
        *,
        state: str,
        send: bool,
        ee_goal: np.ndarray,
        reason: str = "",
        message: str = "",
        violations: tuple[str, ...] = (),
    ) -> Command:
        plan = self._plan
        timings = self._tick_info["timings"]
        timings["total"] = (self._timer() - self._tick_info["t_start"]) * 1e3
        self._violations = []
        return Command(
            q_target=np.array(q, dtype=float),
            gripper_open=self._gripper_open,
            send_joints=send,
            state=state,
            step=self._step if plan is not None else -1,
            num_steps=plan.num_steps if plan is not None else 0,
            ee_goal=ee_goal,
            hold_reason=reason,
            message=message,
            violations=tuple(violations),
            goal_id=plan.goal_id if plan is not None else "",
            mode=self.config.mode,
            timings_ms=dict(timings),
            period_ms=self._tick_info["period_ms"],
        )


def _carry_over(T_pre: np.ndarray, T_grasp: np.ndarray, T_new: np.ndarray) -> np.ndarray:
    """The pre-grasp pose for the corrected grasp pose ``T_new`` (all (4, 4) ``T_body_tool``).

    It keeps the plan's body-frame offset from the grasp pose (so the hand still comes in along
    the plan's approach line) and turns in place as the grasp pose turned: the same rule for a
    residual (``exp(w) @ R``, ``p + t``) and an absolute pose. NaN stays NaN (a hold).
    """
    T = np.eye(4)
    T[:3, :3] = T_new[:3, :3] @ T_grasp[:3, :3].T @ T_pre[:3, :3]
    T[:3, 3] = T_new[:3, 3] + (T_pre[:3, 3] - T_grasp[:3, 3])
    return T


def _clip_norm(v: np.ndarray, limit: float) -> tuple[np.ndarray, bool]:
    """``v`` scaled down to length ``limit`` if longer; NaN stays NaN (and is not 'clipped')."""
    n = math.sqrt(float(v @ v))
    if n > limit:
        return v * (limit / n), True
    return v, False
