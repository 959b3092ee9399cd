"""The P3P minimal solver against random ground truth (the SO(3)/SE(3) helpers are tested once,
in t2a_common/test/test_se3.py)."""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from t2a_planning.core.p3p import p3p, quartic_roots


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
