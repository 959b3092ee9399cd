"""The shared SO(3)/SE(3) module against scipy over thousands of random rotations (unit tier)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from t2a_common.core import se3


def _rotvecs(n: int, seed: int) -> np.ndarray:
    """Random rotation vectors: uniform rotations, tiny angles, and angles at and just below pi."""
    rng = np.random.default_rng(seed)
    uniform = Rotation.random(n, random_state=seed).as_rotvec()  # angles up to pi
    axes = rng.normal(size=(n, 3))
    axes /= np.linalg.norm(axes, axis=1, keepdims=True)
    tiny = axes * 10.0 ** rng.uniform(-14, -4, size=(n, 1))
    near_pi = axes * (math.pi - 10.0 ** rng.uniform(-12, -2, size=(n, 1)))
    return np.concatenate([uniform, tiny, near_pi, axes * math.pi, np.zeros((1, 3))])


def test_exp_matches_scipy_batched_and_one_at_a_time():
    w = _rotvecs(2000, 0)
    expected = Rotation.from_rotvec(w).as_matrix()
    R = se3.so3_exp(w)
    np.testing.assert_allclose(R, expected, atol=1e-14)
    np.testing.assert_allclose(np.stack([se3.so3_exp(v) for v in w]), R, atol=1e-15)
    # any leading shape
    assert se3.so3_exp(w[:12].reshape(3, 4, 3)).shape == (3, 4, 3, 3)


def test_log_matches_scipy_batched_and_one_at_a_time():
    w = _rotvecs(2000, 1)
    R = Rotation.from_rotvec(w).as_matrix()
    logs = se3.so3_log(R)
    one = np.stack([se3.so3_log(r) for r in R])
    np.testing.assert_allclose(one, logs, atol=1e-15)
    angles = np.linalg.norm(logs, axis=1)
    assert np.all(angles <= math.pi + 1e-15)
    np.testing.assert_allclose(angles, Rotation.from_matrix(R).magnitude(), atol=1e-12)
    # exp(log(R)) == R everywhere, including at pi where the sign of the axis is free
    np.testing.assert_allclose(se3.so3_exp(logs), R, atol=1e-12)
    # away from pi the vector itself is unique: compare with scipy's rotation vector, which is
    # also relative-accurate for tiny angles
    away = angles < math.pi - 1e-3
    expected = Rotation.from_matrix(R[away]).as_rotvec()
    np.testing.assert_allclose(logs[away], expected, rtol=1e-9, atol=1e-15)
    assert se3.so3_log(R[:12].reshape(3, 4, 3, 3)).shape == (3, 4, 3)


def test_log_near_pi_keeps_the_axis():
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    for angle in (math.pi, math.pi - 1e-6, math.pi - 1e-3):
        R = se3.so3_exp(axis * angle)
        for w in (se3.so3_log(R), se3.so3_log(R[None])[0]):
            assert np.isclose(np.linalg.norm(w), angle, atol=1e-9)
            assert np.isclose(abs(w @ axis), angle, atol=1e-9)
            if angle < math.pi:
                assert w @ axis > 0  # the sign is still determined just below pi


def test_hat_is_the_cross_product():
    rng = np.random.default_rng(2)
    w, x = rng.normal(size=(2, 500, 3))
    np.testing.assert_allclose(np.einsum("nij,nj->ni", se3.hat(w), x), np.cross(w, x), atol=1e-14)


def test_left_jacobian_inverse_matches_finite_differences():
    rng = np.random.default_rng(3)
    for w in np.concatenate([rng.normal(size=(20, 3)) * 0.6, [[1e-7, 0.0, 0.0]]]):
        J = se3.so3_left_jacobian_inv(w)
        eps = 1e-6
        num = np.stack(
            [(se3.so3_log(se3.so3_exp(eps * e) @ se3.so3_exp(w)) - w) / eps for e in np.eye(3)],
            axis=1,
        )
        np.testing.assert_allclose(J, num, atol=1e-4)


def test_rotation_angle_and_pose_errors_match_scipy():
    rng = np.random.default_rng(4)
    Ra, Rb = Rotation.random(1000, random_state=5), Rotation.random(1000, random_state=6)
    dR = (Rb * Ra.inv()).as_matrix()
    np.testing.assert_allclose(se3.rotation_angle(dR), (Rb * Ra.inv()).magnitude(), atol=1e-12)
    for k in range(200):
        T_a, T_b = np.eye(4), np.eye(4)
        T_a[:3, :3], T_b[:3, :3] = Ra[k].as_matrix(), Rb[k].as_matrix()
        T_a[:3, 3], T_b[:3, 3] = rng.normal(size=(2, 3))
        distance, angle = se3.pose_error(T_a, T_b)
        assert distance == pytest.approx(np.linalg.norm(T_b[:3, 3] - T_a[:3, 3]), abs=1e-14)
        assert angle == pytest.approx((Rb[k] * Ra[k].inv()).magnitude(), abs=1e-12)
        twist = se3.twist_error(T_a, T_b)
        np.testing.assert_allclose(twist[:3], T_b[:3, 3] - T_a[:3, 3], atol=1e-15)
        np.testing.assert_allclose(se3.so3_exp(twist[3:]) @ T_a[:3, :3], T_b[:3, :3], atol=1e-12)


def test_interpolate_is_scipy_slerp_and_linear_position():
    rng = np.random.default_rng(7)
    s = np.linspace(0.0, 1.0, 11)
    for k in range(100):
        R = Rotation.random(2, random_state=100 + k)
        T_a, T_b = np.eye(4), np.eye(4)
        T_a[:3, :3], T_b[:3, :3] = R.as_matrix()
        T_a[:3, 3], T_b[:3, 3] = rng.normal(size=(2, 3))
        poses = se3.interpolate(T_a, T_b, s)
        slerp = Rotation.from_matrix(T_a[:3, :3]) * Rotation.from_rotvec(
            s[:, None] * (R[0].inv() * R[1]).as_rotvec()
        )
        np.testing.assert_allclose(poses[:, :3, :3], slerp.as_matrix(), atol=1e-12)
        np.testing.assert_allclose(
            poses[:, :3, 3], (1 - s)[:, None] * T_a[:3, 3] + s[:, None] * T_b[:3, 3], atol=1e-14
        )
        np.testing.assert_allclose(poses[:, 3], np.tile([0.0, 0.0, 0.0, 1.0], (11, 1)))


@pytest.mark.parametrize(
    "change, rigid",
    [(None, True), ((0, 0, 0.1), False), ((3, 0, 0.1), False), ((1, 3, np.nan), False)],
)
def test_is_rigid(change, rigid):
    T = np.eye(4)
    T[:3, :3] = se3.so3_exp([0.1, 0.2, 0.3])
    if change is not None:
        T[change[0], change[1]] += change[2]
    assert se3.is_rigid(T) is rigid
    mirror = np.diag([1.0, 1.0, -1.0, 1.0])
    assert se3.is_rigid(mirror) is False
