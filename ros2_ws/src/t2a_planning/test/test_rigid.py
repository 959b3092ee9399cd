"""Object motion from tracks: exact recovery, robustness, moving points, degenerate input."""

from __future__ import annotations

import ast
import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2a_common.core.se3 import rotation_angle
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.rigid import estimate_object_motion
from t2a_planning.core.status import Status
from t2a_planning.core.synthetic import (
    corrupt_tracks,
    make_scene,
    project_tracks,
    random_motion,
    realsense_intrinsics,
)

INTR = realsense_intrinsics()
K = INTR.K
EXACT = PlannerConfig(smoothness_weight=0.0)


def errors(T_est: np.ndarray, T_true: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-step rotation (deg) and translation (m) errors."""
    dR = np.swapaxes(T_est[:, :3, :3], 1, 2) @ T_true[:, :3, :3]
    return np.degrees(rotation_angle(dR)), np.linalg.norm(
        T_est[:, :3, 3] - T_true[:, :3, 3], axis=1
    )


def random_cloud(rng: np.random.Generator, n: int, horizon: int, rotation: float = 0.4):
    """Random 3D points in a 20 cm cube at 1 m, independent random motions per step."""
    centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.1, 0.1), rng.uniform(0.9, 1.1)])
    points = centre + rng.uniform(-0.1, 0.1, size=(n, 3))
    T = random_motion(rng, horizon, centre, rotation, 0.1)
    tracks = project_tracks(INTR, T, points, np.ones(n, dtype=bool))
    return points, T, tracks


def test_core_imports_no_ros():
    """The core must stay importable without ROS: no rclpy, no message packages."""
    core = Path(__file__).resolve().parents[1] / "t2a_planning" / "core"
    for path in core.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                root = name.split(".")[0]
                assert root != "rclpy" and not root.endswith("_msgs"), f"{path.name}: {name}"


@pytest.mark.parametrize("seed", range(6))
def test_exact_tracks_recover_the_motion(seed):
    rng = np.random.default_rng(seed)
    points, T_true, tracks = random_cloud(rng, int(rng.integers(20, 400)), int(rng.integers(1, 12)))
    fit = estimate_object_motion(points, np.ones(len(points), bool), tracks, K, EXACT)
    assert fit.ok, fit.message
    np.testing.assert_allclose(fit.T_cam_obj, T_true, atol=1e-6)
    assert fit.moving.all()
    np.testing.assert_allclose(fit.inlier_ratio, 1.0)
    assert np.all(fit.reprojection_error_px < 1e-6)
    assert fit.confidence > 0.9


@settings(max_examples=20, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), n=st.integers(8, 200), horizon=st.integers(1, 10))
def test_exact_recovery_property(seed, n, horizon):
    """Any non-degenerate cloud under any moderate rigid motions is recovered exactly."""
    rng = np.random.default_rng(seed)
    points, T_true, tracks = random_cloud(rng, n, horizon, rotation=0.6)
    moves = np.max(np.linalg.norm(tracks[1:] - tracks[0], axis=-1), axis=0) > 3.0
    fit = estimate_object_motion(points, np.ones(n, bool), tracks, K, EXACT)
    if moves.sum() < EXACT.min_moving_points:  # a tiny random motion may move too few points
        assert fit.status in (Status.NO_MOTION, Status.TOO_FEW_POINTS)
        return
    assert fit.ok, fit.message
    rot, trans = errors(fit.T_cam_obj, T_true)
    assert rot.max() < 1e-5 and trans.max() < 1e-6


def test_noise_and_outliers_stay_accurate():
    """1 px noise, 30% outlier tracks, box at 1 m: median error < 1 degree and < 1 cm."""
    rot, trans = [], []
    for seed in range(30):
        scene = make_scene(
            seed, noise_px=1.0, outlier_fraction=0.3, object_fraction=1.0, with_depth=False
        )
        valid = np.ones(len(scene.points_cam), bool)
        fit = estimate_object_motion(scene.points_cam, valid, scene.tracks_px, K)
        assert fit.ok, fit.message
        r, t = errors(fit.T_cam_obj[1:], scene.T_cam_obj[1:])
        rot.append(r)
        trans.append(t)
    assert np.median(rot) < 1.0
    assert np.median(trans) < 0.01
    assert np.percentile(rot, 95) < 3.0  # and no wrong basins


def test_background_and_outliers_are_not_selected():
    for seed in range(5):
        scene = make_scene(seed, noise_px=1.0, outlier_fraction=0.3, with_depth=False)
        valid = np.ones(len(scene.points_cam), bool)
        fit = estimate_object_motion(scene.points_cam, valid, scene.tracks_px, K)
        assert fit.ok, fit.message
        moving = fit.moving
        assert not np.any(moving & ~scene.on_object), "background selected"
        assert not np.any(moving & scene.outlier), "outlier track selected"
        good = scene.on_object & ~scene.outlier
        assert moving[good].mean() > 0.8
        np.testing.assert_array_equal(fit.moving_indices, np.flatnonzero(moving))


def test_huber_loss_works_too():
    scene = make_scene(1, noise_px=1.0, outlier_fraction=0.3, with_depth=False)
    cfg = PlannerConfig(robust_loss="huber")
    fit = estimate_object_motion(scene.points_cam, np.ones(400, bool), scene.tracks_px, K, cfg)
    assert fit.ok
    rot, trans = errors(fit.T_cam_obj, scene.T_cam_obj)
    assert np.median(rot) < 1.5 and np.median(trans) < 0.02


def test_smoothness_evens_out_the_motion():
    """On a smooth true motion, the smoothness term lowers the step-to-step jitter."""
    jerk = {}
    for weight in (0.0, 1e-4):
        cfg = PlannerConfig(smoothness_weight=weight)
        total = 0.0
        for seed in range(4):
            scene = make_scene(seed, noise_px=1.5, shape="plane", with_depth=False)
            fit = estimate_object_motion(
                scene.points_cam, np.ones(400, bool), scene.tracks_px, K, cfg
            )
            assert fit.ok
            err = fit.T_cam_obj[:, :3, 3] - scene.T_cam_obj[:, :3, 3]  # (H+1, 3)
            total += np.sum(np.diff(err, n=2, axis=0) ** 2)
        jerk[weight] = total
    assert jerk[1e-4] < 0.5 * jerk[0.0]


def test_repeatable():
    scene = make_scene(3, noise_px=1.0, outlier_fraction=0.3, with_depth=False)
    a = estimate_object_motion(scene.points_cam, np.ones(400, bool), scene.tracks_px, K)
    b = estimate_object_motion(scene.points_cam, np.ones(400, bool), scene.tracks_px, K)
    np.testing.assert_array_equal(a.T_cam_obj, b.T_cam_obj)


# ----------------------------------------------------------------------------------------------
# Degenerate and bad input
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def cloud():
    return random_cloud(np.random.default_rng(7), 100, 6)


def test_too_few_points(cloud):
    points, _, tracks = cloud
    valid = np.zeros(len(points), bool)
    valid[:4] = True  # plenty of moving tracks, but only four have depth
    fit = estimate_object_motion(points, valid, tracks, K)
    assert fit.status == Status.TOO_FEW_POINTS
    assert "depth" in fit.message
    assert len(fit.T_cam_obj) == 0 and len(fit.inlier_ratio) == 0


def test_no_motion(cloud):
    points, _, tracks = cloud
    still = np.repeat(tracks[:1], len(tracks), axis=0)
    noisy, _ = corrupt_tracks(np.random.default_rng(0), still, noise_px=0.5, outlier_fraction=0.0)
    for t in (still, noisy):
        fit = estimate_object_motion(points, np.ones(len(points), bool), t, K)
        assert fit.status == Status.NO_MOTION, fit.message


def test_collinear_points_are_degenerate():
    rng = np.random.default_rng(1)
    s = rng.uniform(-0.1, 0.1, size=50)
    points = np.array([0.0, 0.0, 1.0]) + s[:, None] * np.array([1.0, 0.5, 0.2])
    T = random_motion(rng, 4, points.mean(axis=0), 0.3, 0.05)
    tracks = project_tracks(INTR, T, points, np.ones(50, bool))
    fit = estimate_object_motion(points, np.ones(50, bool), tracks, K)
    assert fit.status == Status.DEGENERATE
    assert "collinear" in fit.message


def test_tiny_flat_patch_is_ambiguous():
    rng = np.random.default_rng(2)
    points = np.c_[rng.uniform(-0.002, 0.002, size=(50, 2)), np.zeros(50)] + [0.0, 0.0, 1.5]
    T = random_motion(rng, 2, points.mean(axis=0), 0.3, 0.05)
    tracks = project_tracks(INTR, T, points, np.ones(50, bool))
    fit = estimate_object_motion(points, np.ones(50, bool), tracks, K)
    assert fit.status == Status.DEGENERATE
    assert "ambiguous" in fit.message


def test_nan_depth_everywhere_is_bad_input(cloud):
    points, _, tracks = cloud
    nan_points = np.full_like(points, np.nan)
    fit = estimate_object_motion(nan_points, np.ones(len(points), bool), tracks, K)
    assert fit.status == Status.BAD_INPUT
    assert "depth" in fit.message


@pytest.mark.parametrize(
    "tracks_shape, points_shape, match",
    [
        ((7, 100), (100, 3), "expected \\(H\\+1, N, 2\\)"),
        ((1, 100, 2), (100, 3), "H >= 1"),
        ((7, 100, 3), (100, 3), "expected"),
        ((7, 100, 2), (99, 3), "must be"),
    ],
)
def test_wrong_shapes_are_bad_input(tracks_shape, points_shape, match):
    fit = estimate_object_motion(
        np.ones(points_shape), np.ones(points_shape[0], bool), np.zeros(tracks_shape), K
    )
    assert fit.status == Status.BAD_INPUT
    assert re.search(match, fit.message), fit.message


def test_nan_tracks_are_bad_input(cloud):
    points, _, tracks = cloud
    bad = tracks.copy()
    bad[3, 5] = np.nan
    fit = estimate_object_motion(points, np.ones(len(points), bool), bad, K)
    assert fit.status == Status.BAD_INPUT
    assert "non-finite" in fit.message


def test_unrelated_tracks_fail_the_fit(cloud):
    points, _, tracks = cloud
    scrambled, _ = corrupt_tracks(np.random.default_rng(3), tracks, 0.0, outlier_fraction=1.0)
    fit = estimate_object_motion(points, np.ones(len(points), bool), scrambled, K)
    assert fit.status in (Status.FIT_FAILED, Status.TOO_FEW_POINTS), fit.message


def test_config_validation_names_the_bad_value():
    with pytest.raises(ValueError, match="robust_loss must be one of"):
        PlannerConfig(robust_loss="l2")
    with pytest.raises(ValueError, match="inlier_threshold_px must be > 0, got -1"):
        PlannerConfig(inlier_threshold_px=-1.0)
    with pytest.raises(ValueError, match="min_depth_m < max_depth_m"):
        PlannerConfig(min_depth_m=2.0, max_depth_m=1.0)
    assert dataclasses.replace(PlannerConfig(), max_iterations=3).max_iterations == 3


def test_status_codes_mirror_the_plan_message():
    assert [(s.name, int(s)) for s in Status] == [
        ("OK", 0),
        ("TOO_FEW_POINTS", 1),
        ("NO_MOTION", 2),
        ("DEGENERATE", 3),
        ("FIT_FAILED", 4),
        ("UNREACHABLE", 5),
        ("BAD_INPUT", 6),
    ]
