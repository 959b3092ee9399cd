"""Batched SO(3)/SE(3) helpers for the solver and the trajectory (numpy, any leading shape).

Rotation vectors are axis * angle (rad). Transforms are 4x4 and follow ``t2a_common.core.geometry``
(``T_a_b`` maps points in frame b to frame a).
"""

from __future__ import annotations

import numpy as np

_SMALL = 1e-8  # rad: below this, use Taylor series instead of the closed forms


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


def so3_exp(w: np.ndarray) -> np.ndarray:
    """(..., 3) rotation vectors -> (..., 3, 3) rotation matrices (Rodrigues)."""
    w = np.asarray(w, dtype=float)
    theta = np.linalg.norm(w, axis=-1)[..., None, None]  # (..., 1, 1)
    small = theta < _SMALL
    safe = np.where(small, 1.0, theta)
    a = np.where(small, 1.0 - theta**2 / 6.0, np.sin(safe) / safe)
    b = np.where(small, 0.5 - theta**2 / 24.0, (1.0 - np.cos(safe)) / safe**2)
    W = hat(w)
    return np.eye(3) + a * W + b * (W @ W)


def so3_log(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) rotation matrices -> (..., 3) rotation vectors with angle in [0, pi]."""
    R = np.asarray(R, dtype=float)
    cos = np.clip((np.trace(R, axis1=-2, axis2=-1) - 1.0) / 2.0, -1.0, 1.0)
    theta = np.arccos(cos)  # (...)
    v = np.stack(
        [R[..., 2, 1] - R[..., 1, 2], R[..., 0, 2] - R[..., 2, 0], R[..., 1, 0] - R[..., 0, 1]],
        axis=-1,
    )  # (..., 3) = 2 sin(theta) axis
    sin = np.sin(theta)
    small = theta < 1e-6
    scale = np.where(small, 0.5 + theta**2 / 12.0, theta / (2.0 * np.where(small, 1.0, sin)))
    w = v * scale[..., None]
    # Near pi, sin(theta) -> 0 loses the axis; read it from the symmetric part instead.
    near_pi = theta > np.pi - 1e-4
    if np.any(near_pi):
        S = (R[near_pi] + np.swapaxes(R[near_pi], -1, -2)) / 2.0 - cos[near_pi][..., None, None] * (
            np.eye(3)
        )  # (K, 3, 3) = (1 - cos) axis axis^T
        col = np.argmax(np.diagonal(S, axis1=-2, axis2=-1), axis=-1)
        axis = S[np.arange(len(col)), :, col]
        axis /= np.linalg.norm(axis, axis=-1, keepdims=True)
        # Pick the sign that agrees with the antisymmetric part (matters only just below pi).
        sign = np.where(np.sum(axis * v[near_pi], axis=-1) < 0, -1.0, 1.0)
        w[near_pi] = axis * (sign * theta[near_pi])[..., None]
    return w


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
    return np.eye(3) - 0.5 * W + c * (W @ W)


def rotation_angle(R: np.ndarray) -> np.ndarray:
    """(..., 3, 3) -> (...) rotation angle in rad, accurate for small angles too."""
    return np.linalg.norm(so3_log(R), axis=-1)


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
        np.allclose(R.T @ R, np.eye(3), atol=tol)
        and np.linalg.det(R) > 0
        and np.allclose(T[3], [0.0, 0.0, 0.0, 1.0], atol=tol)
    )
