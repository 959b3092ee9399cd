"""Safety filter between the controller and the arm: nothing outside its limits leaves it.

Two stages, both stateless and applied every control tick:

- :meth:`SafetyFilter.filter_ee_goal`: the hand goal ``T_body_tool`` is clamped into a workspace
  box in the body frame, then moved from the current hand pose towards it by at most one tick's
  worth of linear and angular speed (a straight line in position, a geodesic in rotation, both at
  the same fraction so they arrive together). A goal with NaN/inf or a non-rotation holds the
  current pose.
- :meth:`SafetyFilter.filter_joints`: joint targets are clamped to the joint limits less a margin
  and scaled so that no joint moves faster than its share of ``spot_arm.MAX_JOINT_SPEED``.
  Non-finite targets hold the current joints.

Each call returns what was changed as a list of violation codes (``VIOLATIONS``), so the caller
can report them without parsing messages.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from t2a_common.core.config import check, param
from t2a_common.core.se3 import pose_error, so3_exp, so3_log
from t2a_common.core.spot_arm import LOWER, MAX_JOINT_SPEED, UPPER

# Violation codes, in the order the filters test them.
NON_FINITE_GOAL = "non_finite_goal"  # the EE goal had NaN/inf or the wrong shape: held
NON_RIGID_GOAL = "non_rigid_goal"  # the EE goal's rotation was not a rotation: held
BAD_DT = "bad_dt"  # the tick period was not a finite number > 0: held
LONG_DT = "long_dt"  # the tick period exceeded max_tick_s: limits computed for max_tick_s
WORKSPACE = "workspace"  # the EE goal position was clamped into the workspace box
LINEAR_SPEED = "linear_speed"  # the hand step was shortened to the linear speed limit
ANGULAR_SPEED = "angular_speed"  # the hand step was shortened to the angular speed limit
NON_FINITE_JOINTS = "non_finite_joints"  # the joint target had NaN/inf or the wrong shape: held
JOINT_LIMITS = "joint_limits"  # a joint target was clamped to the limits less the margin
JOINT_SPEED = "joint_speed"  # the joint step was scaled down to the joint speed limits
VIOLATIONS = (
    NON_FINITE_GOAL,
    NON_RIGID_GOAL,
    BAD_DT,
    LONG_DT,
    WORKSPACE,
    LINEAR_SPEED,
    ANGULAR_SPEED,
    NON_FINITE_JOINTS,
    JOINT_LIMITS,
    JOINT_SPEED,
)

# Rotations this far from orthonormal (max |R^T R - I| entry) are float noise and get projected
# back onto SO(3); beyond it the goal is not a pose at all and is refused.
_ORTHONORMAL_TOLERANCE = 1e-3
_EYE3 = np.eye(3)


@dataclasses.dataclass(frozen=True)
class SafetyConfig:
    """Limits of :class:`SafetyFilter`; body frame, SI units."""

    workspace_min_m: tuple[float, ...] = param(
        (0.35, -0.8, -0.45), "lower corner (x, y, z) of the hand workspace box, body frame (m)"
    )
    workspace_max_m: tuple[float, ...] = param(
        (1.25, 0.8, 1.0), "upper corner (x, y, z) of the hand workspace box, body frame (m)"
    )
    max_linear_speed_mps: float = param(0.5, "hand (tool origin) speed limit (m/s)")
    max_angular_speed_rps: float = param(1.5, "hand angular speed limit (rad/s)")
    joint_limit_margin_rad: float = param(0.05, "distance kept from every arm joint limit (rad)")
    joint_speed_fraction: float = param(
        0.5, "fraction of spot_arm.MAX_JOINT_SPEED a joint may move at (1)"
    )
    max_tick_s: float = param(
        0.5, "longest tick period the per-tick steps are computed for; longer ones are cut (s)"
    )

    def __post_init__(self) -> None:
        for name in ("workspace_min_m", "workspace_max_m"):
            value = getattr(self, name)
            check(
                len(value) == 3 and all(_finite(v) for v in value),
                f"SafetyConfig.{name} = {value!r}, expected 3 finite numbers (x, y, z) in m",
            )
        check(
            all(lo < hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m)),
            f"SafetyConfig workspace box is empty: min {self.workspace_min_m} m is not below "
            f"max {self.workspace_max_m} m on every axis",
        )
        for name in ("max_linear_speed_mps", "max_angular_speed_rps", "max_tick_s"):
            value = getattr(self, name)
            check(
                _finite(value) and value > 0.0,
                f"SafetyConfig.{name} = {value!r}, expected a finite number > 0",
            )
        half_range = float(np.min(UPPER - LOWER)) / 2.0
        check(
            _finite(self.joint_limit_margin_rad)
            and 0.0 <= self.joint_limit_margin_rad < half_range,
            f"SafetyConfig.joint_limit_margin_rad = {self.joint_limit_margin_rad!r}, expected "
            f"0 <= margin < {half_range:.4f} rad (half the narrowest joint range)",
        )
        check(
            _finite(self.joint_speed_fraction) and 0.0 < self.joint_speed_fraction <= 1.0,
            f"SafetyConfig.joint_speed_fraction = {self.joint_speed_fraction!r}, "
            "expected 0 < fraction <= 1",
        )


def _finite(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# ---------------------------------------------------------------------------------------------
# SE(3) helpers (also used by the controller)
# ---------------------------------------------------------------------------------------------


def step_towards(
    T_from: np.ndarray, T_to: np.ndarray, max_step_m: float, max_step_rad: float
) -> tuple[np.ndarray, float]:
    """Pose (4, 4) at most ``max_step_m`` / ``max_step_rad`` from ``T_from`` towards ``T_to``.

    Position moves along the straight line, orientation along the geodesic ``exp(s w) R_from``
    with ``w = log(R_to R_from^T)`` (body frame), both by the same fraction ``s`` so the hand
    arrives in position and orientation together. Returns the pose and ``s`` in [0, 1]
    (1 = ``T_to`` reached).
    """
    dp = T_to[:3, 3] - T_from[:3, 3]  # (3,) m
    w = so3_log(T_to[:3, :3] @ T_from[:3, :3].T)  # (3,) rad
    distance = math.sqrt(float(dp @ dp))
    angle = math.sqrt(float(w @ w))
    s = 1.0
    if distance > max_step_m:
        s = min(s, max_step_m / distance)
    if angle > max_step_rad:
        s = min(s, max_step_rad / angle)
    if s >= 1.0:
        return T_to.copy(), 1.0
    T = np.eye(4)
    T[:3, :3] = so3_exp(s * w) @ T_from[:3, :3]
    T[:3, 3] = T_from[:3, 3] + s * dp
    return T, s


def _nearest_rotation(R: np.ndarray) -> np.ndarray | None:
    """``R`` (3, 3) projected onto SO(3), or None if it is not close to a rotation."""
    with np.errstate(over="ignore", invalid="ignore"):
        off = np.abs(R.T @ R - _EYE3).max()
    if not off <= _ORTHONORMAL_TOLERANCE or np.linalg.det(R) <= 0.0:
        return None
    U, _, Vt = np.linalg.svd(R)
    return U @ Vt  # det stays +1: R is within the tolerance of a proper rotation


# ---------------------------------------------------------------------------------------------
# The filter
# ---------------------------------------------------------------------------------------------


class SafetyFilter:
    """Clamps hand goals and joint targets to the limits in a :class:`SafetyConfig`.

    Guarantees, for any input (NaN, inf, huge, malformed) and any ``dt``:
    ``filter_ee_goal`` returns a finite rigid transform whose position is in the workspace box
    when the current one is (otherwise it is no further out than the current one), and whose
    step from the current pose is within the speed limits times ``min(dt, max_tick_s)``;
    ``filter_joints`` returns finite joints within the limits less the margin when the current
    ones are (otherwise no further out), each step within its speed limit. Only the *current*
    pose/joints must be valid: they are measurements, and without them nothing safe exists.
    """

    def __init__(self, config: SafetyConfig | None = None) -> None:
        self.config = config or SafetyConfig()
        c = self.config
        self.box_min = np.array(c.workspace_min_m, dtype=float)  # (3,) m
        self.box_max = np.array(c.workspace_max_m, dtype=float)  # (3,) m
        self.joint_lower = LOWER + c.joint_limit_margin_rad  # (6,) rad
        self.joint_upper = UPPER - c.joint_limit_margin_rad  # (6,) rad
        self.joint_speed = MAX_JOINT_SPEED * c.joint_speed_fraction  # (6,) rad/s

    def _tick(self, dt: float, violations: list[str]) -> float:
        """The period the limits are computed for: 0 (hold) when ``dt`` is unusable."""
        try:
            dt = float(dt)
        except (TypeError, ValueError):
            dt = math.nan
        if not (math.isfinite(dt) and dt > 0.0):
            violations.append(BAD_DT)
            return 0.0
        if dt > self.config.max_tick_s:
            violations.append(LONG_DT)
            return self.config.max_tick_s
        return dt

    def filter_ee_goal(
        self, T_goal: np.ndarray, T_current: np.ndarray, dt: float
    ) -> tuple[np.ndarray, list[str]]:
        """Safe hand goal ``T_body_tool`` (4, 4) for one tick of ``dt`` s, and the violations.

        T_goal: (4, 4) desired hand pose, body frame; T_current: (4, 4) measured hand pose (from
        forward kinematics); raises ``ValueError`` if it is not a finite rigid transform.
        """
        T_current = np.asarray(T_current, dtype=float)
        R_current = None
        if T_current.shape == (4, 4) and np.isfinite(T_current).all():
            R_current = _nearest_rotation(T_current[:3, :3])
        if R_current is None:
            raise ValueError(
                f"current hand pose must be a finite rigid 4x4 transform, got {T_current!r}"
            )
        T_hold = np.eye(4)
        T_hold[:3, :3] = R_current
        T_hold[:3, 3] = T_current[:3, 3]

        violations: list[str] = []
        try:
            T_goal = np.asarray(T_goal, dtype=float)
        except (TypeError, ValueError):
            T_goal = np.full((4, 4), np.nan)
        if T_goal.shape != (4, 4) or not np.isfinite(T_goal).all():
            return T_hold, [NON_FINITE_GOAL]
        R_goal = _nearest_rotation(T_goal[:3, :3])
        if R_goal is None:
            return T_hold, [NON_RIGID_GOAL]
        dt = self._tick(dt, violations)
        if dt == 0.0:
            return T_hold, violations

        p_goal = np.clip(T_goal[:3, 3], self.box_min, self.box_max)
        if not np.array_equal(p_goal, T_goal[:3, 3]):
            violations.append(WORKSPACE)
        T_target = np.eye(4)
        T_target[:3, :3] = R_goal
        T_target[:3, 3] = p_goal

        max_m = self.config.max_linear_speed_mps * dt
        max_rad = self.config.max_angular_speed_rps * dt
        distance, angle = pose_error(T_hold, T_target)
        T_safe, _ = step_towards(T_hold, T_target, max_m, max_rad)
        # Interpolation may round a few ulps out of the box; never further out than the start.
        p_now = T_hold[:3, 3]
        T_safe[:3, 3] = np.clip(
            T_safe[:3, 3], np.minimum(self.box_min, p_now), np.maximum(self.box_max, p_now)
        )
        if distance > max_m:
            violations.append(LINEAR_SPEED)
        if angle > max_rad:
            violations.append(ANGULAR_SPEED)
        return T_safe, violations

    def filter_joints(
        self, q_target: np.ndarray, q_current: np.ndarray, dt: float
    ) -> tuple[np.ndarray, list[str]]:
        """Safe arm joint targets (6,) rad for one tick of ``dt`` s, and the violations.

        q_target: (6,) desired joints; q_current: (6,) measured joints, which must be finite
        (raises ``ValueError`` otherwise).
        """
        try:
            q_current = np.asarray(q_current, dtype=float)
        except (TypeError, ValueError):
            q_current = np.zeros(0)
        if q_current.shape != (6,) or not np.isfinite(q_current).all():
            raise ValueError(f"current joints must be 6 finite angles (rad), got {q_current!r}")

        violations: list[str] = []
        try:
            q_target = np.asarray(q_target, dtype=float)
        except (TypeError, ValueError):
            q_target = np.zeros(0)
        if q_target.shape != (6,) or not np.isfinite(q_target).all():
            return q_current.copy(), [NON_FINITE_JOINTS]
        dt = self._tick(dt, violations)
        if dt == 0.0:
            return q_current.copy(), violations

        q_clamped = np.clip(q_target, self.joint_lower, self.joint_upper)
        if not np.array_equal(q_clamped, q_target):
            violations.append(JOINT_LIMITS)
        # One common scale keeps the joint-space direction, so the hand stays on the path IK
        # chose instead of bending it joint by joint.
        step = q_clamped - q_current  # (6,) rad
        max_step = self.joint_speed * dt  # (6,) rad
        with np.errstate(over="ignore", divide="ignore", invalid="ignore"):
            ratio = float(np.max(np.abs(step) / max_step))
        if not ratio <= 1.0:  # NaN or inf too: a tick so short that a limit underflowed to 0
            violations.append(JOINT_SPEED)
            step = step / ratio if math.isfinite(ratio) else np.zeros(6)
            # Rounding may leave a step a few ulps over the limit; the limit is the contract.
            step = np.clip(step, -max_step, max_step)
        q_safe = np.clip(
            q_current + step,
            np.minimum(self.joint_lower, q_current),
            np.maximum(self.joint_upper, q_current),
        )
        return q_safe, violations
