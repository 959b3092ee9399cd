"""SO(3)/SE(3) helpers and the P3P minimal solver against scipy and random ground truth."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from t2a_common.core import se3
from t2a_planning.core.p3p import p3p, quartic_roots


def test_exp_and_log_match_scipy_over_random_rotations():
    rng = np.random.default_rng(0)
    rotvec = Rotation.random(2000, random_state=1).as_rotvec()  # angles up to pi
    rotvec = np.concatenate([rotvec, rng.normal(size=(200, 3)) * 1e-9])  # and tiny ones
    R = se3.so3_exp(rotvec)
    np.testing.assert_allclose(R, Rotation.from_rotvec(rotvec).as_matrix(), atol=1e-12)
    back = se3.so3_log(R)
    np.testing.assert_allclose(se3.so3_exp(back), R, atol=1e-9)
    np.testing.assert_allclose(
        np.linalg.norm(back, axis=1), Rotation.from_matrix(R).magnitude(), atol=1e-9
    )


def test_log_near_pi_keeps_the_axis():
    axis = np.array([1.0, 2.0, -0.5]) / np.linalg.norm([1.0, 2.0, -0.5])
    for angle in (np.pi, np.pi - 1e-6, np.pi - 1e-3):
        w = se3.so3_log(se3.so3_exp(axis * angle))
        assert np.isclose(np.linalg.norm(w), angle, atol=1e-6)
        assert np.isclose(abs(w @ axis), angle, atol=1e-6)


def test_left_jacobian_inverse_matches_finite_differences():
    rng = np.random.default_rng(2)
    for w in rng.normal(size=(5, 3)) * 0.6:  # angles below pi, where log is the inverse
        J = se3.so3_left_jacobian_inv(w)
        eps = 1e-6
        num = np.stack(
            [(se3.so3_log(se3.so3_exp(eps * e) @ se3.so3_exp(w)) - w) / eps for e in np.eye(3)],
            axis=1,
        )
        np.testing.assert_allclose(J, num, atol=1e-4)


def test_interpolate_moves_at_constant_rates():
    T_a = np.eye(4)
    T_b = np.eye(4)
    T_b[:3, :3] = se3.so3_exp([0.0, 0.0, 1.2])
    T_b[:3, 3] = [0.3, -0.1, 0.2]
    poses = se3.interpolate(T_a, T_b, np.linspace(0, 1, 11))
    np.testing.assert_allclose(poses[0], T_a, atol=1e-12)
    np.testing.assert_allclose(poses[-1], T_b, atol=1e-12)
    steps = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    angles = se3.rotation_angle(np.swapaxes(poses[:-1, :3, :3], 1, 2) @ poses[1:, :3, :3])
    np.testing.assert_allclose(steps, steps[0], rtol=1e-9)
    np.testing.assert_allclose(angles, 0.12, rtol=1e-6)


def test_quartic_roots_match_numpy():
    rng = np.random.default_rng(3)
    coeffs = rng.normal(size=(200, 5))
    roots = quartic_roots(*coeffs.T)
    for c, r in zip(coeffs, roots):
        # Each numpy root has a match, and the match is one-to-one.
        dist = np.abs(np.roots(c)[:, None] - r[None, :])  # (4, 4)
        assert np.all(dist.min(axis=1) < 1e-6 * (1 + np.abs(np.roots(c))))
        assert len(set(dist.argmin(axis=1))) == 4


def test_p3p_recovers_the_pose_among_its_solutions():
    rng = np.random.default_rng(4)
    B = 500
    X = rng.normal(size=(B, 3, 3)) * 0.1
    R = Rotation.random(B, random_state=5).as_matrix()
    t = rng.normal(size=(B, 3)) * 0.1 + [0.0, 0.0, 1.0]
    Y = np.einsum("bij,bkj->bki", R, X) + t[:, None]
    rays = Y / np.linalg.norm(Y, axis=-1, keepdims=True)
    Rs, ts, ok = p3p(rays, X)
    err = np.linalg.norm(Rs - R[:, None], axis=(-2, -1)) + np.linalg.norm(ts - t[:, None], axis=-1)
    best = np.where(ok, err, np.inf).min(axis=1)
    assert np.percentile(best, 99) < 1e-6
    # Every solution marked ok is a real pose that reprojects the three points.
    Rv, tv = Rs[ok], ts[ok]
    Xv = np.broadcast_to(X[:, None], (*ok.shape, 3, 3))[ok]
    rays_v = np.broadcast_to(rays[:, None], (*ok.shape, 3, 3))[ok]
    Yv = np.einsum("vij,vkj->vki", Rv, Xv) + tv[:, None]
    cos = np.sum(Yv / np.linalg.norm(Yv, axis=-1, keepdims=True) * rays_v, axis=-1)
    assert np.median(1.0 - cos) < 1e-12


@pytest.mark.parametrize("T_ok", [True, False])
def test_is_rigid(T_ok):
    T = np.eye(4)
    T[:3, :3] = se3.so3_exp([0.1, 0.2, 0.3])
    if not T_ok:
        T[0, 0] += 0.1
    assert se3.is_rigid(T) is T_ok
