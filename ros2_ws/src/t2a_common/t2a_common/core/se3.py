"""SO(3)/SE(3) maths shared by every package: exp/log, angles, interpolation, rigidity, pose errors.

Rotation vectors are axis * angle (rad). Transforms are 4x4 and follow ``t2a_common.core.geometry``
(``T_a_b`` maps points in frame b to frame a; construction, inversion and point transforms live
there). ``so3_exp`` and ``so3_log`` take any leading shape; a single rotation takes a scalar path
with the same formulas, because numpy's per-call overhead dominates for one 3x3 and the IK and the
safety filter call them in their inner loops.
"""

from __future__ import annotations

import math

import numpy as np

_EYE3 = np.eye(3)
_EXP_TAYLOR_THETA2 = 1e-12  # rad^2: below, sin(x)/x and (1 - cos x)/x^2 lose all precision
_LOG_TAYLOR_ANGLE = 1e-8  # rad: below, angle / (2 sin(angle)) is taken from its Taylor series
_LOG_NEAR_PI = math.pi - 1e-4  # rad: above, the skew part is too small to carry the axis


def hat(w: np.ndarray) -> np.ndarray:
    """(..., 3) vectors -> (..., 3, 3) skew matrices with ``hat(w) @ x == cross(w, x)``."""
    w = np.asarray(w, dtype=float)
    out = np.zeros((*w.shape[:-1], 3, 3))
    out[..., 0, 1] = -w[..., 2]
    out[..., 0, 2] = w[..., 1]
    out[..., 1, 0] = w[..., 2]
    out[..., 1, 2] = -w[..., 0]
    out[..., 2, 0] = -w[..., 1]
    out[..., 2, 1] = w[..., 0]
    return out


def so3_exp(rotvec: np.ndarray) -> np.ndarray:
    """Rotation vectors ``(..., 3)`` rad -> rotation matrices ``(..., 3, 3)`` (Rodrigues)."""
    w = np.asarray(rotvec, dtype=np.float64)
    if w.shape == (3,):
        theta2 = float(w @ w)
        if theta2 < _EXP_TAYLOR_THETA2:
            a, b = 1.0 - theta2 / 6.0, 0.5 - theta2 / 24.0
        else:
            theta = math.sqrt(theta2)
            a, b = math.sin(theta) / theta, (1.0 - math.cos(theta)) / (theta * theta)
        K = np.array([[0.0, -w[2], w[1]], [w[2], 0.0, -w[0]], [-w[1], w[0], 0.0]])
        return _EYE3 + a * K + b * (K @ K)
    theta2 = (w * w).sum(-1)[..., None, None]  # (..., 1, 1)
    theta = np.sqrt(theta2)
    small = theta2 < _EXP_TAYLOR_THETA2
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta2 / 24.0, (1.0 - np.cos(safe)) / (safe * safe))
    K = hat(w)  # (..., 3, 3)
    return _EYE3 + a * K + b * (K @ K)


def so3_log(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> rotation vectors ``(..., 3)`` with angle in [0, pi].

    Accurate at both ends: the angle comes from atan2 (no arccos near 1), small angles scale the
    skew part by a Taylor series, and angles near pi take the axis from the symmetric part, where
    the skew part vanishes.
    """
    R = np.asarray(R, dtype=np.float64)
    if R.shape == (3, 3):
        return _so3_log_one(R)
    w = np.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]],
        axis=-1,
    )  # (..., 3) = 2 sin(angle) axis
    sin2 = np.linalg.norm(w, axis=-1)  # 2 sin(angle)
    cos2 = np.trace(R, axis1=-2, axis2=-1) - 1.0  # 2 cos(angle)
    angle = np.arctan2(sin2, cos2)
    factor = np.where(
        angle < _LOG_TAYLOR_ANGLE, 0.5 + angle**2 / 12.0, angle / np.maximum(sin2, 1e-300)
    )
    out = factor[..., None] * w
    near_pi = angle > _LOG_NEAR_PI
    if np.any(near_pi):
        Rp, wp, ap = R[near_pi], w[near_pi], angle[near_pi]  # (M, 3, 3), (M, 3), (M,)
        # sym(R) - cos(a) I = (1 - cos(a)) axis axis^T; its largest diagonal entry picks the
        # best-conditioned column.
        S = 0.5 * (Rp + np.swapaxes(Rp, -1, -2)) - np.cos(ap)[:, None, None] * _EYE3
        k = np.argmax(np.diagonal(S, axis1=-2, axis2=-1), axis=-1)  # (M,)
        axis = S[np.arange(len(k)), :, k]  # (M, 3)
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        flip = (axis * wp).sum(-1) < 0  # the sign the skew part still carries just below pi
        axis[flip] *= -1.0
        out[near_pi] = ap[:, None] * axis
    return out


def _so3_log_one(R: np.ndarray) -> np.ndarray:
    """:func:`so3_log` of one (3, 3) rotation, the same steps in scalar arithmetic."""
    w = np.array([R[2, 1] - R[1, 2], R[0, 2] - R[2, 0], R[1, 0] - R[0, 1]])  # 2 sin(a) axis
    sin2 = math.sqrt(float(w @ w))
    cos2 = float(R[0, 0] + R[1, 1] + R[2, 2]) - 1.0
    angle = math.atan2(sin2, cos2)
    if angle > _LOG_NEAR_PI:
        S = 0.5 * (R + R.T) - math.cos(angle) * _EYE3
        axis = S[:, int(np.argmax(np.diag(S)))]
        axis = axis / math.sqrt(float(axis @ axis))
        return (-angle if axis @ w < 0 else angle) * axis
    if angle < _LOG_TAYLOR_ANGLE:
        return (0.5 + angle**2 / 12.0) * w
    return (angle / sin2) * w


def so3_left_jacobian_inv(w: np.ndarray) -> np.ndarray:
    """(..., 3) -> (..., 3, 3): d log(exp(dw) exp(w)) / d dw at dw = 0."""
    w = np.asarray(w, dtype=float)
    theta = np.linalg.norm(w, axis=-1)[..., None, None]
    small = theta < 1e-5
    safe = np.where(small, 1.0, theta)
    c = np.where(
        small,
        1.0 / 12.0 + theta**2 / 720.0,
        1.0 / safe**2 - (1.0 + np.cos(safe)) / (2.0 * safe * np.sin(np.where(small, 1.0, safe))),
    )
    W = hat(w)
    return _EYE3 - 0.5 * W + c * (W @ W)


def rotation_angle(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (...) rotation angle in rad, accurate for small angles too."""
    return np.linalg.norm(so3_log(R), axis=-1)


def pose_error(T_a: np.ndarray, T_b: np.ndarray) -> tuple[float, float]:
    """Distance between two poses (4, 4): (position error m, rotation angle rad)."""
    dp = T_b[:3, 3] - T_a[:3, 3]
    w = so3_log(T_b[:3, :3] @ T_a[:3, :3].T)
    return math.sqrt(float(dp @ dp)), math.sqrt(float(w @ w))


def twist_error(T: np.ndarray, T_target: np.ndarray) -> np.ndarray:
    """(6,) ``[dp (m), rotation vector (rad)]`` taking ``T`` onto ``T_target`` (4x4, same frame).

    The rotation part is ``log(R_target R^T)``, in the common frame (not ``T``'s own).
    """
    return np.concatenate([T_target[:3, 3] - T[:3, 3], so3_log(T_target[:3, :3] @ T[:3, :3].T)])


def interpolate(T_a: np.ndarray, T_b: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Poses between 4x4 ``T_a`` (s=0) and ``T_b`` (s=1): position linear, orientation slerp.

    ``s`` is (K,) in [0, 1]; returns (K, 4, 4). Orientation and position move at constant rates,
    which is what the speed limits of the time parameterisation assume.
    """
    s = np.asarray(s, dtype=float).reshape(-1)
    w = so3_log(T_a[:3, :3].T @ T_b[:3, :3])  # (3,) relative rotation in T_a's frame
    out = np.zeros((len(s), 4, 4))
    out[:, :3, :3] = T_a[:3, :3] @ so3_exp(s[:, None] * w)
    out[:, :3, 3] = (1.0 - s)[:, None] * T_a[:3, 3] + s[:, None] * T_b[:3, 3]
    out[:, 3, 3] = 1.0
    return out


def is_rigid(T: np.ndarray, tol: float = 1e-6) -> bool:
    """True when ``T`` is a finite 4x4 with an orthonormal, right-handed rotation block."""
    T = np.asarray(T)
    if T.shape != (4, 4) or not np.all(np.isfinite(T)):
        return False
    R = T[:3, :3]
    return bool(
        np.allclose(R.T @ R, _EYE3, atol=tol)
        and np.linalg.det(R) > 0
        and np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol)
    )
