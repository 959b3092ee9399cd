"""Forward and inverse kinematics of the Spot arm (pure numpy, built from ``spot_arm``'s table).

Poses are 4x4 homogeneous transforms named by their frames: ``T_body_tool`` maps tool coordinates
into body coordinates. ``tool`` is the hand frame (link_wr1 + TOOL_OFFSET, same orientation).

IK. The arm is a yaw-pitch-pitch shoulder/elbow in one vertical plane followed by a spherical wrist
(el1 x, wr0 y and wr1 x all pass through the wrist centre), so the target pose fixes the wrist
centre and the problem splits into position (3 joints) and orientation (3 joints), each solved in
closed form: up to 2 (shoulder) x 2 (elbow) x 2 (wrist) = 8 exact solutions. The in-limit one
nearest the seed wins. Levenberg-Marquardt (LM) with projection onto the joint limits polishes
near-singular cases and is the whole solver when ``IKConfig.analytic`` is off (or if the table
ever loses that structure), with deterministic random restarts when the seed attempt fails.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

from t2a_common.core.config import check, param
from t2a_common.core.se3 import hat, so3_log
from t2a_common.core.spot_arm import ARM_JOINTS, LOWER, READY, TOOL_OFFSET, UPPER

LINK_NAMES: tuple[str, ...] = (*(j.child for j in ARM_JOINTS), "tool")
"""Frames returned by :func:`link_frames`, in order: the six arm links, then the tool."""

_ORIGINS = np.array([j.origin for j in ARM_JOINTS], dtype=float)  # (6, 3) m, in the parent link
_AXES = np.array([j.axis for j in ARM_JOINTS], dtype=float)  # (6, 3) unit, in the link itself
_TOOL = np.array(TOOL_OFFSET, dtype=float)  # (3,) m, in link_wr1


# Rodrigues' formula R = I + sin(q) K + (1 - cos(q)) K^2 per joint, with K = hat(axis).
_K = hat(_AXES)  # (6, 3, 3)
_K2 = _K @ _K  # (6, 3, 3)
_EYE3 = np.eye(3)
_EYE6 = np.eye(6)

SHOULDER_IN_BODY = _ORIGINS[0].copy()
"""arm_sh0's origin in the body frame (m): every tool position lies within MAX_REACH_M of it."""

MAX_REACH_M = float(np.linalg.norm(_ORIGINS[1:], axis=1).sum() + np.linalg.norm(_TOOL))
"""Upper bound of |tool position - SHOULDER_IN_BODY| over all q (m), by the triangle inequality."""


# ---------------------------------------------------------------------------------------------
# Forward kinematics
# ---------------------------------------------------------------------------------------------


def _chain(q: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rotations and positions in the body frame of the six links and the tool.

    q: (B, 6) rad. Returns R (B, 7, 3, 3) and p (B, 7, 3) m; index 6 is the tool.
    """
    s = np.sin(q)[..., None, None]  # (B, 6, 1, 1)
    c = np.cos(q)[..., None, None]
    R_joint = _EYE3 + s * _K + (1.0 - c) * _K2  # (B, 6, 3, 3)
    R = np.empty((q.shape[0], 7, 3, 3))
    p = np.empty((q.shape[0], 7, 3))
    R[:, 0] = R_joint[:, 0]
    p[:, 0] = _ORIGINS[0]
    for i in range(1, 6):
        p[:, i] = p[:, i - 1] + R[:, i - 1] @ _ORIGINS[i]  # the origin is given in the parent
        np.matmul(R[:, i - 1], R_joint[:, i], out=R[:, i])
    R[:, 6] = R[:, 5]
    p[:, 6] = p[:, 5] + R[:, 5] @ _TOOL
    return R, p


def _as_transforms(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    T = np.zeros((*R.shape[:-2], 4, 4))
    T[..., :3, :3] = R
    T[..., :3, 3] = p
    T[..., 3, 3] = 1.0
    return T


def _check_q(q: np.ndarray, batch: bool) -> np.ndarray:
    q = np.asarray(q, dtype=float)
    if batch and (q.ndim != 2 or q.shape[1] != 6):
        raise ValueError(f"joint angles have shape {q.shape}, expected (B, 6)")
    if not batch and q.shape != (6,):
        raise ValueError(f"joint angles have shape {q.shape}, expected (6,)")
    return q


def fk(q: np.ndarray) -> np.ndarray:
    """Tool pose in the body frame, ``T_body_tool`` (4, 4), for arm joint angles ``q`` (6,) rad."""
    R, p = _chain(_check_q(q, batch=False)[None])
    return _as_transforms(R[0, 6], p[0, 6])


def fk_batch(q: np.ndarray) -> np.ndarray:
    """Vectorised :func:`fk`: joint angles (B, 6) rad -> ``T_body_tool`` (B, 4, 4)."""
    R, p = _chain(_check_q(q, batch=True))
    return _as_transforms(R[:, 6], p[:, 6])


def link_frames(q: np.ndarray) -> np.ndarray:
    """Body-frame poses of every link frame and the tool, (7, 4, 4), named by ``LINK_NAMES``.

    q: (6,) rad. Link i's frame is also joint i's frame (all joint rpy are zero).
    """
    R, p = _chain(_check_q(q, batch=False)[None])
    return _as_transforms(R[0], p[0])


def _jacobian_from_chain(R: np.ndarray, p: np.ndarray) -> np.ndarray:
    z = (R[:, :6] @ _AXES[:, :, None])[..., 0]  # (B, 6, 3) joint axes in the body frame
    r = p[:, 6:7] - p[:, :6]  # (B, 6, 3) joint origin -> tool
    J = np.empty((R.shape[0], 6, 6))  # (B, 6 twist rows, 6 joints)
    # z x r written out: np.cross costs more than the rest of the Jacobian for one pose.
    J[:, 0] = z[..., 1] * r[..., 2] - z[..., 2] * r[..., 1]
    J[:, 1] = z[..., 2] * r[..., 0] - z[..., 0] * r[..., 2]
    J[:, 2] = z[..., 0] * r[..., 1] - z[..., 1] * r[..., 0]
    J[:, 3:] = z.transpose(0, 2, 1)
    return J


def jacobian(q: np.ndarray) -> np.ndarray:
    """Geometric Jacobian of the tool frame in the body frame, (6, 6).

    Rows are the tool's linear velocity (m/s, of the tool origin) then angular velocity (rad/s),
    both expressed in the body frame; columns are the joints' rates (rad/s) in chain order.
    """
    R, p = _chain(_check_q(q, batch=False)[None])
    return _jacobian_from_chain(R, p)[0]


# ---------------------------------------------------------------------------------------------
# Pose errors
# ---------------------------------------------------------------------------------------------


def _norm(v: np.ndarray) -> float:
    return math.sqrt(float(v @ v))  # np.linalg.norm's overhead dominates for 3-vectors


def _pose_error(R: np.ndarray, p: np.ndarray, R_t: np.ndarray, p_t: np.ndarray) -> np.ndarray:
    """Twist (6,) that moves the tool onto the target, body frame: [dp (m), rotation vector]."""
    return np.concatenate([p_t - p, so3_log(R_t @ R.T)])


# ---------------------------------------------------------------------------------------------
# IK configuration and result
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class IKConfig:
    """Settings of :func:`solve_ik`."""

    position_tolerance: float = param(1e-4, "tool position error counted as solved (m)")  # m
    rotation_tolerance: float = param(1e-3, "tool rotation error counted as solved (rad)")  # rad
    max_iterations: int = param(100, "Levenberg-Marquardt iterations per attempt")  # count
    damping: float = param(1e-3, "initial Levenberg-Marquardt damping on J^T J (m^2)")  # m^2
    joint_limit_margin: float = param(0.0, "distance kept from every joint limit (rad)")  # rad
    # Restarts serve the LM-only path: the closed form already enumerates every solution.
    restarts: int = param(16, "LM-only: tries from random joint angles after the seed's fails")
    random_seed: int = param(0, "seed of the restart joint angles (results are reproducible)")
    analytic: bool = param(True, "closed-form candidates before LM (False: LM + restarts only)")

    def __post_init__(self) -> None:
        for name in ("position_tolerance", "rotation_tolerance", "damping"):
            value = getattr(self, name)
            check(
                _is_real(value) and math.isfinite(value) and value > 0.0,
                f"IKConfig.{name} = {value!r}, expected a finite number > 0",
            )
        half_range = float(np.min(UPPER - LOWER)) / 2.0
        check(
            _is_real(self.joint_limit_margin) and 0.0 <= self.joint_limit_margin < half_range,
            f"IKConfig.joint_limit_margin = {self.joint_limit_margin!r} rad, expected "
            f"0 <= margin < {half_range:.4f} (half the narrowest joint range)",
        )
        for name, minimum in (("max_iterations", 1), ("restarts", 0), ("random_seed", 0)):
            value = getattr(self, name)
            check(
                isinstance(value, int) and not isinstance(value, bool) and value >= minimum,
                f"IKConfig.{name} = {value!r}, expected an integer >= {minimum}",
            )
        check(
            isinstance(self.analytic, bool),
            f"IKConfig.analytic = {self.analytic!r}, expected True or False",
        )


def _is_real(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


IK_STATUSES = ("ok", "unreachable", "joint_limits", "max_iterations", "bad_input")
"""Every ``IKResult.status``; only "ok" comes with ``success=True``."""


@dataclasses.dataclass(frozen=True)
class IKResult:
    """Outcome of :func:`solve_ik`.

    ``q`` is always finite and within the joint limits: the solution when ``success``, otherwise
    the best attempt (or the clamped seed when the solver did not try), which must not be executed
    as if it reached the target.
    """

    q: np.ndarray  # (6,) rad
    success: bool
    status: str  # one of IK_STATUSES
    position_error_m: float  # |tool position - target| at q; NaN for bad input
    rotation_error_rad: float  # angle of the tool-to-target rotation at q; NaN for bad input
    iterations: int  # LM iterations over all attempts (0 when the closed form was exact)
    message: str = ""  # why it failed, for logs


# ---------------------------------------------------------------------------------------------
# Closed form
# ---------------------------------------------------------------------------------------------


def _closed_form_applies() -> bool:
    """Whether the table still has the structure the closed form relies on."""
    axes = ((0, 0, 1), (0, 1, 0), (0, 1, 0), (1, 0, 0), (0, 1, 0), (1, 0, 0))
    return (
        all(np.allclose(_AXES[i], a) for i, a in enumerate(axes))
        and np.allclose(_ORIGINS[[1, 4, 5]], 0.0)  # sh0/sh1 and the wrist axes intersect
        and np.allclose(_ORIGINS[[2, 3], 1], 0.0)  # the upper arm and forearm stay in one plane
    )


_CLOSED_FORM = _closed_form_applies()
# Upper arm a (shoulder -> elbow) and forearm b (elbow -> wrist centre) in link_sh1's x-z plane.
_AX, _AZ = float(_ORIGINS[2, 0]), float(_ORIGINS[2, 2])
_BX, _BZ = float(_ORIGINS[3, 0]), float(_ORIGINS[3, 2])
_A2B2 = _AX**2 + _AZ**2 + _BX**2 + _BZ**2  # m^2
_AB = math.hypot(_AX, _AZ) * math.hypot(_BX, _BZ)  # m^2
# a . Ry(q2) b = _AB cos(q2 - _PHI)
_PHI = math.atan2(_AX * _BZ - _AZ * _BX, _AX * _BX + _AZ * _BZ)


def _wrist_distance_range() -> tuple[float, float]:
    """Min and max shoulder-to-wrist-centre distance (m) that el0's limits allow."""
    lo, hi = float(LOWER[2]), float(UPPER[2])
    angles = [lo, hi] + [
        a for a in (_PHI, _PHI + math.pi, _PHI - math.pi, _PHI + 2 * math.pi) if lo <= a <= hi
    ]
    d = [math.sqrt(max(_A2B2 + 2.0 * _AB * math.cos(a - _PHI), 0.0)) for a in angles]
    return min(d), max(d)


WRIST_DISTANCE_RANGE_M = _wrist_distance_range()
"""(min, max) distance from SHOULDER_IN_BODY to the wrist centre over el0's range (m)."""

_TWO_PI = 2.0 * math.pi
_ANGLE_SLACK = 1e-9  # rad: a closed-form angle this far past a limit still counts as inside
# Below this |sin(wr0)| (or wrist-centre distance from sh0's axis, m) the split between the two
# coupled joints is set from the seed: atan2 of values this small amplifies rounding to ~1e-9 rad,
# while treating them as exactly singular costs at most this much pose error.
_SINGULAR = 1e-7


def _wrap_into_limits(q: np.ndarray) -> np.ndarray:
    """Shift each angle by multiples of 2 pi to its representative at or above the lower limit.

    No joint range is wider than 2 pi, so that representative is the only one that can be inside.
    """
    lo = LOWER - _ANGLE_SLACK
    return lo + np.mod(q - lo, _TWO_PI)


def _wrist_solutions(
    M: np.ndarray, seed: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> list[tuple[float, float, float]]:
    """(el1, wr0, wr1) with Rx(el1) Ry(wr0) Rx(wr1) = M, both wrist flips."""
    s4 = math.hypot(M[1, 0], M[2, 0])  # |sin(wr0)|
    q4 = math.atan2(s4, M[0, 0])
    if s4 > _SINGULAR:
        q3 = math.atan2(M[1, 0], -M[2, 0])
        q5 = math.atan2(M[0, 1], M[0, 2])
        return [(q3, q4, q5), (q3 + math.pi, -q4, q5 + math.pi)]
    if q4 > 0.5 * math.pi:
        return []  # wr0 = pi is far outside its +-1.83 rad range
    # wr0 = 0: only el1 + wr1 is fixed; split it so el1 stays nearest the seed within limits.
    total = math.atan2(M[2, 1], M[1, 1])
    out = []
    for t in (total - _TWO_PI, total, total + _TWO_PI):
        first, last = max(lo[3], t - hi[5]), min(hi[3], t - lo[5])
        if first <= last:
            q3 = min(max(float(seed[3]), first), last)
            out.append((q3, 0.0, t - q3))
    return out or [(0.0, 0.0, total)]


def _closed_form(
    R_t: np.ndarray, p_t: np.ndarray, seed: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """All exact IK solutions (K, 6) rad, each wrapped to its in-range representative.

    Solutions may still be outside the limits; the caller filters. Targets beyond the elbow's
    reach are clamped to the nearest stretched/folded pose (the caller rejects those earlier).
    """
    d = p_t - R_t @ _TOOL - SHOULDER_IN_BODY  # (3,) shoulder -> wrist centre, body frame
    rxy = math.hypot(d[0], d[1])
    if rxy > _SINGULAR:
        yaw = math.atan2(d[1], d[0])
        shoulders = ((yaw, rxy), (yaw + math.pi, -rxy))
    else:  # wrist centre on sh0's axis: any yaw works, keep the seed's
        shoulders = ((float(seed[0]), 0.0), (float(seed[0]) + math.pi, 0.0))
    dz = float(d[2])
    kappa = (rxy * rxy + dz * dz - _A2B2) / (2.0 * _AB)
    bend = math.acos(min(max(kappa, -1.0), 1.0))
    elbows = (_PHI + bend, _PHI - bend) if bend > 1e-12 else (_PHI,)
    rows = []
    for q0, r in shoulders:
        c0, s0 = math.cos(q0), math.sin(q0)
        # Ry(q) turns the x-z vector (x, z) by +q in the angle atan2(-z, x).
        target_angle = math.atan2(-dz, r)
        for q2 in elbows:
            ux = _AX + _BX * math.cos(q2) + _BZ * math.sin(q2)
            uz = _AZ - _BX * math.sin(q2) + _BZ * math.cos(q2)
            q1 = target_angle - math.atan2(-uz, ux)
            c12, s12 = math.cos(q1 + q2), math.sin(q1 + q2)
            R_03 = np.array(
                [[c0 * c12, -s0, c0 * s12], [s0 * c12, c0, s0 * s12], [-s12, 0.0, c12]]
            )  # Rz(q0) Ry(q1 + q2): link_el0's orientation
            for q3, q4, q5 in _wrist_solutions(R_03.T @ R_t, seed, lo, hi):
                rows.append((q0, q1, q2, q3, q4, q5))
    return _wrap_into_limits(np.array(rows, dtype=float).reshape(-1, 6))


# ---------------------------------------------------------------------------------------------
# Levenberg-Marquardt
# ---------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Attempt:
    q: np.ndarray  # (6,) rad
    position_error: float  # m
    rotation_error: float  # rad
    iterations: int

    def solved(self, config: IKConfig) -> bool:
        return (
            self.position_error <= config.position_tolerance
            and self.rotation_error <= config.rotation_tolerance
        )


def _evaluate(q: np.ndarray, R_t: np.ndarray, p_t: np.ndarray) -> _Attempt:
    R, p = _chain(q[None])
    e = _pose_error(R[0, 6], p[0, 6], R_t, p_t)
    return _Attempt(q, _norm(e[:3]), _norm(e[3:]), 0)


def _levenberg_marquardt(
    q: np.ndarray,
    R_t: np.ndarray,
    p_t: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    config: IKConfig,
) -> _Attempt:
    """Projected LM from ``q`` (6,): steps are clamped to [lo, hi], damping adapts to progress."""
    q = np.clip(q, lo, hi)
    R, p = _chain(q[None])
    J = _jacobian_from_chain(R, p)[0]
    e = _pose_error(R[0, 6], p[0, 6], R_t, p_t)
    cost = float(e @ e)
    damping = config.damping
    pos_tol, rot_tol = config.position_tolerance, config.rotation_tolerance
    iterations = 0
    checkpoint = cost
    while iterations < config.max_iterations:
        if _norm(e[:3]) <= pos_tol and _norm(e[3:]) <= rot_tol:
            break
        if iterations % _STALL_WINDOW == 0 and iterations > 0:
            # Converging attempts shrink the error fast; one that has not halved its cost over a
            # window is creeping into a local minimum, and a restart is the better use of time.
            if cost > _STALL_RATIO * checkpoint:
                break
            checkpoint = cost
        iterations += 1
        H = J.T @ J
        g = J.T @ e
        dq = np.linalg.solve(H + damping * _EYE6, g)
        # A joint pinned at a limit whose step points outward would only be clamped back and
        # stall the others: freeze it for this step and solve for the rest.
        pinned = ((q <= lo) & (dq < 0.0)) | ((q >= hi) & (dq > 0.0))
        if pinned.any():
            free = ~pinned
            dq = np.zeros(6)
            Hf = H[np.ix_(free, free)] + damping * np.eye(int(free.sum()))
            dq[free] = np.linalg.solve(Hf, g[free])
        q_new = np.clip(q + dq, lo, hi)
        R, p = _chain(q_new[None])
        e_new = _pose_error(R[0, 6], p[0, 6], R_t, p_t)
        cost_new = float(e_new @ e_new)
        if cost_new < cost:
            q, e, cost = q_new, e_new, cost_new
            J = _jacobian_from_chain(R, p)[0]
            damping = max(damping * 0.3, 1e-9)
        else:
            damping *= 10.0
            if damping > 1e6:  # no descent direction left: a local minimum or a limit
                break
    return _Attempt(q, _norm(e[:3]), _norm(e[3:]), iterations)


_STALL_WINDOW = 10  # iterations between progress checks
_STALL_RATIO = 0.5  # an attempt must at least halve its squared error per window


def _restart_seeds(
    config: IKConfig, seed: np.ndarray, lo: np.ndarray, hi: np.ndarray
) -> np.ndarray:
    """Deterministic random joint angles (restarts, 6), nearest the seed first."""
    rng = np.random.default_rng(config.random_seed)
    qs = rng.uniform(lo, hi, size=(config.restarts, 6))
    return qs[np.argsort(np.sum((qs - seed) ** 2, axis=1))]


# ---------------------------------------------------------------------------------------------
# solve_ik
# ---------------------------------------------------------------------------------------------

_DEFAULT_CONFIG = IKConfig()


def _result(status: str, attempt: _Attempt, iterations: int, message: str = "") -> IKResult:
    return IKResult(
        q=attempt.q.copy(),
        success=status == "ok",
        status=status,
        position_error_m=attempt.position_error,
        rotation_error_rad=attempt.rotation_error,
        iterations=iterations,
        message=message,
    )


def _bad_input(q: np.ndarray, message: str) -> IKResult:
    nan = float("nan")
    return _result("bad_input", _Attempt(q, nan, nan, 0), 0, message)


def _float_array(x: object) -> np.ndarray:
    """``x`` as a float array, or an empty one if it is not numeric (ragged, strings, None)."""
    try:
        return np.asarray(x, dtype=float)
    except (TypeError, ValueError):
        return np.zeros(0)


_LAST_ROW = np.array([0.0, 0.0, 0.0, 1.0])
_ROTATION_ATOL = 1e-6  # |R^T R - I| entries a target rotation may have (float32 poses pass)


def _check_target(T: np.ndarray) -> str:
    """Empty string if ``T`` is a finite rigid transform, else what is wrong with it."""
    if T.shape != (4, 4):
        return f"target has shape {T.shape}, expected (4, 4)"
    if not np.isfinite(T).all():
        return "target contains NaN or inf"
    if np.abs(T[3] - _LAST_ROW).max() > 1e-9:
        return f"target's last row is {T[3].tolist()}, expected [0, 0, 0, 1]"
    R = T[:3, :3]
    # For orthonormal rows, det = +1 exactly when the third row is the first cross the second.
    (a, b, c), (d, e, f), (g, h, i) = R.tolist()
    right_handed = g * (b * f - c * e) + h * (c * d - a * f) + i * (a * e - b * d) > 0.0
    if np.abs(R.T @ R - _EYE3).max() > _ROTATION_ATOL or not right_handed:
        return f"target rotation is not orthonormal with det +1 (tolerance {_ROTATION_ATOL:g})"
    return ""


def solve_ik(
    T_body_tool_target: np.ndarray,
    q_seed: np.ndarray,
    config: IKConfig = _DEFAULT_CONFIG,
) -> IKResult:
    """Joint angles that put the tool at ``T_body_tool_target`` (4, 4), nearest ``q_seed`` (6,).

    Never raises for bad numbers: NaN/inf or non-rigid targets and malformed seeds give status
    "bad_input"; targets out of the arm's reach give "unreachable" without iterating; a reachable
    target whose every solution breaks a joint limit (less ``config.joint_limit_margin``) gives
    "joint_limits"; LM that runs out of iterations gives "max_iterations". The returned ``q`` is
    always within the (margin-shrunk) limits. A seed outside the limits is clamped first.
    """
    lo = LOWER + config.joint_limit_margin
    hi = UPPER - config.joint_limit_margin
    seed = _float_array(q_seed)
    if seed.shape != (6,) or not np.isfinite(seed).all():
        return _bad_input(np.clip(READY, lo, hi), f"seed {q_seed!r} is not 6 finite angles")
    seed = np.clip(seed, lo, hi)
    T = _float_array(T_body_tool_target)
    problem = _check_target(T)
    if problem:
        return _bad_input(seed, problem)
    R_t, p_t = T[:3, :3], T[:3, 3]

    # Reach first: no amount of iterating brings these in, so they must cost microseconds.
    pos_tol = config.position_tolerance
    reach = _norm(p_t - SHOULDER_IN_BODY)
    if reach > MAX_REACH_M + pos_tol:
        message = f"target is {reach:.3f} m from the shoulder, max reach {MAX_REACH_M:.3f} m"
        return _result("unreachable", _evaluate(seed, R_t, p_t), 0, message)
    if _CLOSED_FORM:
        # The orientation fixes the wrist centre, which the shoulder and elbow must reach.
        wrist = _norm(p_t - R_t @ _TOOL - SHOULDER_IN_BODY)
        near, far = WRIST_DISTANCE_RANGE_M
        if not near - pos_tol <= wrist <= far + pos_tol:
            message = (
                f"wrist centre for this orientation is {wrist:.3f} m from the shoulder, "
                f"reachable {near:.3f}..{far:.3f} m"
            )
            return _result("unreachable", _evaluate(seed, R_t, p_t), 0, message)

    if config.analytic and _CLOSED_FORM:
        return _solve_closed_form(R_t, p_t, seed, lo, hi, config)
    return _solve_numeric(R_t, p_t, seed, lo, hi, config)


def _solve_closed_form(
    R_t: np.ndarray,
    p_t: np.ndarray,
    seed: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    config: IKConfig,
) -> IKResult:
    candidates = _closed_form(R_t, p_t, seed, lo, hi)  # (K, 6)
    inside = np.all((candidates >= lo - _ANGLE_SLACK) & (candidates <= hi + _ANGLE_SLACK), axis=1)
    distance = np.sum((candidates - seed) ** 2, axis=1)
    iterations = 0
    for k in np.argsort(np.where(inside, distance, np.inf)):
        if not inside[k]:
            break
        attempt = _evaluate(np.clip(candidates[k], lo, hi), R_t, p_t)
        if not attempt.solved(config):  # only at a clamped reach boundary or a singularity
            attempt = _levenberg_marquardt(attempt.q, R_t, p_t, lo, hi, config)
            iterations += attempt.iterations
        if attempt.solved(config):
            return _result("ok", attempt, iterations)
    # Every exact solution breaks a limit. The best of them, clamped, may still be within
    # tolerance (a limit grazed by rounding) or LM may slide it along the limits to the target.
    clamped = [_evaluate(np.clip(c, lo, hi), R_t, p_t) for c in candidates]
    clamped.sort(key=lambda a: a.position_error + a.rotation_error * 0.1)
    best = clamped[0] if clamped else _evaluate(seed, R_t, p_t)
    for start in clamped[:2]:
        attempt = _levenberg_marquardt(start.q, R_t, p_t, lo, hi, config)
        iterations += attempt.iterations
        if attempt.solved(config):
            return _result("ok", attempt, iterations)
        if _worse(best, attempt):
            best = attempt
    return _result(
        "joint_limits", best, iterations, "every exact solution is outside the joint limits"
    )


def _solve_numeric(
    R_t: np.ndarray,
    p_t: np.ndarray,
    seed: np.ndarray,
    lo: np.ndarray,
    hi: np.ndarray,
    config: IKConfig,
) -> IKResult:
    best = None
    iterations = 0
    for start in (seed, *_restart_seeds(config, seed, lo, hi)):
        attempt = _levenberg_marquardt(start, R_t, p_t, lo, hi, config)
        iterations += attempt.iterations
        if attempt.solved(config):
            return _result("ok", attempt, iterations)
        if best is None or _worse(best, attempt):
            best = attempt
    at_limit = bool(np.any((best.q <= lo + 1e-9) | (best.q >= hi - 1e-9)))
    status = "joint_limits" if at_limit else "max_iterations"
    message = f"no attempt converged ({1 + config.restarts} attempts, {iterations} iterations)"
    return _result(status, best, iterations, message)


def _worse(a: _Attempt, b: _Attempt) -> bool:
    """Whether attempt ``a`` is further from the target than ``b`` (0.1 m per rad)."""
    return a.position_error + 0.1 * a.rotation_error > b.position_error + 0.1 * b.rotation_error
