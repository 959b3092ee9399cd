"""End-effector plan: a_t = T_t e1 in the body frame, pre-grasp, timing, reachability, YAML."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from t2a_common.core import se3
from t2a_common.core.config import fields, load_yaml
from t2a_common.core.geometry import invert, transform_points
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.ee_plan import Plan, build_ee_plan, sample_trajectory
from t2a_planning.core.planner import plan_from_tracks
from t2a_planning.core.rigid import MotionFit
from t2a_planning.core.status import Status
from t2a_planning.core.synthetic import default_T_body_cam, make_scene, random_motion

CFG = PlannerConfig()
# The synthetic scene is one flat-faced box with nothing to grip: these tests are of the paper's
# grasp e1 (centre of the moving points); grasp synthesis has its own tests (test_grasp.py).
E1 = PlannerConfig(grasp_synthesis=False)
YAML = Path(__file__).resolve().parents[1] / "config" / "planner.yaml"


@pytest.fixture(scope="module")
def scene():
    return make_scene(11, noise_px=1.0, outlier_fraction=0.3)


@pytest.fixture(scope="module")
def plan(scene):
    return plan_from_tracks(
        scene.tracks_px, scene.intrinsics, scene.T_body_cam, scene.T_body_tool, E1,
        depth=scene.depth,
    )  # fmt: skip


def speeds(times: np.ndarray, poses: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Linear (m/s) and angular (rad/s) speeds between consecutive timed poses."""
    dt = np.diff(times)
    lin = np.linalg.norm(np.diff(poses[:, :3, 3], axis=0), axis=1)
    ang = se3.rotation_angle(np.swapaxes(poses[:-1, :3, :3], 1, 2) @ poses[1:, :3, :3])
    moving = dt > 0
    assert np.all(lin[~moving] < 1e-9) and np.all(ang[~moving] < 1e-9)
    return lin[moving] / dt[moving], ang[moving] / dt[moving]


def test_plan_follows_the_object(scene, plan):
    assert plan.ok, plan.message
    H = len(scene.tracks_px) - 1
    assert plan.ee_poses.shape == (H + 1, 4, 4) and plan.object_transforms.shape == (H + 1, 4, 4)
    assert np.all(np.isfinite(plan.ee_poses)) and np.all(np.isfinite(plan.pregrasp_pose))
    assert plan.grasp_step == 0
    # e1: centre of the moving points, current hand orientation.
    moving_cam = scene.points_cam[plan.moving_point_indices]
    centre_body = transform_points(scene.T_body_cam, moving_cam.mean(axis=0))
    np.testing.assert_allclose(plan.ee_poses[0, :3, 3], centre_body, atol=0.01)
    np.testing.assert_allclose(plan.ee_poses[0, :3, :3], scene.T_body_tool[:3, :3], atol=1e-12)
    # a_t = T_t e1: the hand stays fixed relative to the object.
    T_body_obj = scene.T_body_cam @ plan.object_transforms @ invert(scene.T_body_cam)
    in_object = invert(T_body_obj) @ plan.ee_poses  # (H+1, 4, 4): constant
    np.testing.assert_allclose(
        in_object, np.broadcast_to(plan.ee_poses[0], in_object.shape), atol=1e-9
    )
    # ... and close to where the true object motion takes the grasp point.
    T_true = scene.T_body_cam @ scene.T_cam_obj @ invert(scene.T_body_cam)
    true_path = T_true[:, :3, :3] @ plan.ee_poses[0, :3, 3] + T_true[:, :3, 3]  # (H+1, 3)
    assert np.max(np.linalg.norm(plan.ee_poses[:, :3, 3] - true_path, axis=1)) < 0.03
    assert plan.reachable.all() and plan.pregrasp_reachable
    assert 0.0 < plan.confidence <= 1.0
    assert plan.inlier_ratio.shape == plan.reprojection_error_px.shape == (H + 1,)


def test_pregrasp_backs_off_along_the_surface_normal(scene, plan):
    offset = plan.pregrasp_pose[:3, 3] - plan.ee_poses[0, :3, 3]
    assert np.isclose(np.linalg.norm(offset), CFG.standoff_m)
    np.testing.assert_allclose(offset, -CFG.standoff_m * plan.approach_direction, atol=1e-12)
    # The normal of the face seen around e1 points back towards the camera.
    camera = scene.T_body_cam[:3, 3]
    assert np.linalg.norm(plan.pregrasp_pose[:3, 3] - camera) < np.linalg.norm(
        plan.ee_poses[0, :3, 3] - camera
    )
    np.testing.assert_allclose(plan.pregrasp_pose[:3, :3], plan.ee_poses[0, :3, :3], atol=1e-12)
    # The approach is along one of the box's face normals (within a few degrees).
    face_normals_body = scene.T_body_cam[:3, :3] @ scene.box.T_cam_box[:3, :3]  # columns
    cos = np.abs(plan.approach_direction @ face_normals_body)
    assert cos.max() > np.cos(np.deg2rad(5.0))


def test_times_are_ordered_and_speeds_within_limits(plan):
    times, poses = plan.waypoints()
    assert np.all(np.diff(times) >= 0)
    assert np.all(np.diff(plan.times_from_start) >= CFG.min_step_duration_s - 1e-12)
    assert 0 < plan.pregrasp_time < plan.times_from_start[0]
    # The gripper gets its time at the grasp before the hand follows the object.
    assert plan.times_from_start[1] - plan.times_from_start[0] >= CFG.grasp_duration_s
    lin, ang = speeds(times, poses)
    assert lin.max() <= CFG.max_linear_speed_mps * (1 + 1e-9)
    assert ang.max() <= CFG.max_angular_speed_rps * (1 + 1e-9)
    dense_t, dense = sample_trajectory(plan, 0.03)
    assert np.all(np.diff(dense_t) > 0) and dense_t[-1] == times[-1]
    np.testing.assert_allclose(dense[0], plan.start_pose, atol=1e-12)
    np.testing.assert_allclose(dense[-1], plan.ee_poses[-1], atol=1e-9)
    lin, ang = speeds(dense_t, dense)
    assert lin.max() <= CFG.max_linear_speed_mps * (1 + 1e-6)
    assert ang.max() <= CFG.max_angular_speed_rps * (1 + 1e-6)


def test_unreachable_steps_are_flagged(scene, plan):
    far = plan.ee_poses[3, :3, 3]

    def reachable(T_body_tool):  # e.g. IK fails beyond some reach
        return bool(np.linalg.norm(T_body_tool[:3, 3] - far) > 1e-6)

    bad = plan_from_tracks(
        scene.tracks_px,
        scene.intrinsics,
        scene.T_body_cam,
        scene.T_body_tool,
        E1,
        depth=scene.depth,
        reachable=reachable,
    )
    assert bad.status == Status.UNREACHABLE
    assert bad.reachable.tolist() == [i != 3 for i in range(len(bad.ee_poses))]
    assert "[3]" in bad.message
    assert bad.pregrasp_reachable

    nothing = plan_from_tracks(
        scene.tracks_px,
        scene.intrinsics,
        scene.T_body_cam,
        scene.T_body_tool,
        E1,
        depth=scene.depth,
        reachable=lambda T: False,
    )
    assert nothing.status == Status.UNREACHABLE
    assert not nothing.reachable.any() and not nothing.pregrasp_reachable
    assert "pre-grasp" in nothing.message


def test_point_depths_instead_of_a_depth_image(scene):
    plan = plan_from_tracks(
        scene.tracks_px,
        scene.intrinsics,
        scene.T_body_cam,
        scene.T_body_tool,
        point_depth_m=scene.points_cam[:, 2],
    )
    assert plan.ok, plan.message
    face_normals_body = scene.T_body_cam[:3, :3] @ scene.box.T_cam_box[:3, :3]
    # Without the image, the normal comes from the moving points: still roughly a face normal.
    assert np.abs(plan.approach_direction @ face_normals_body).max() > np.cos(np.deg2rad(30.0))


def test_holes_in_the_depth_image_are_reported(scene):
    holey = make_scene(11, noise_px=1.0, outlier_fraction=0.3, hole_fraction=0.2)
    plan = plan_from_tracks(
        holey.tracks_px, holey.intrinsics, holey.T_body_cam, holey.T_body_tool, E1,
        depth=holey.depth,
    )  # fmt: skip
    assert plan.ok, plan.message
    assert re.search(r"points dropped: .*hole: \d+", plan.message)


def test_nan_depth_everywhere_is_bad_input(scene):
    depth = np.full_like(scene.depth, np.nan)
    plan = plan_from_tracks(
        scene.tracks_px, scene.intrinsics, scene.T_body_cam, scene.T_body_tool, depth=depth
    )
    assert plan.status == Status.BAD_INPUT and "depth" in plan.message
    assert len(plan.ee_poses) == 0 and len(plan.reachable) == 0


@pytest.mark.parametrize(
    "change, match",
    [
        (dict(depth=np.zeros((10, 10))), "depth image is \\(10, 10\\)"),
        (dict(depth=None), "no depth"),
        (dict(T_body_cam=np.eye(4) * 2.0), "T_body_cam is not a rigid"),
        (dict(T_body_tool=np.full((4, 4), np.nan)), "T_body_tool is not a rigid"),
        (dict(tracks_px=np.zeros((9, 400))), "tracks have shape"),
        (dict(point_depth_m=np.ones(3), depth=None), "point_depth_m has shape"),
    ],
)
def test_bad_input_says_what_is_wrong(scene, change, match):
    args = dict(
        tracks_px=scene.tracks_px,
        intrinsics=scene.intrinsics,
        T_body_cam=scene.T_body_cam,
        T_body_tool=scene.T_body_tool,
        depth=scene.depth,
    )
    args.update(change)
    plan = plan_from_tracks(**args)
    assert plan.status == Status.BAD_INPUT
    assert re.search(match, plan.message), plan.message


def test_failed_fit_gives_an_empty_plan(scene):
    still = np.repeat(scene.tracks_px[:1], 9, axis=0)
    plan = plan_from_tracks(
        still, scene.intrinsics, scene.T_body_cam, scene.T_body_tool, depth=scene.depth
    )
    assert plan.status == Status.NO_MOTION
    assert plan.ee_poses.shape == (0, 4, 4) and plan.horizon == 0
    assert sample_trajectory(plan, 0.1)[0].size == 0


def test_plan_arrays_are_read_only(plan):
    with pytest.raises(ValueError):
        plan.ee_poses[0, 0, 0] = 1.0


@settings(max_examples=25, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    horizon=st.integers(1, 10),
    v_max=st.floats(0.05, 1.0),
    w_max=st.floats(0.1, 2.0),
)
def test_timing_respects_any_speed_limits(seed, horizon, v_max, w_max):
    """Whatever the motion and limits, every segment keeps both speed limits."""
    rng = np.random.default_rng(seed)
    centre = np.array([0.0, 0.0, 1.0])
    points = centre + rng.uniform(-0.1, 0.1, size=(20, 3))
    fit = MotionFit(
        status=Status.OK,
        message="",
        T_cam_obj=random_motion(rng, horizon, centre, 1.0, 0.3),
        inlier_ratio=np.ones(horizon + 1),
        reprojection_error_px=np.zeros(horizon + 1),
        candidates=np.ones(20, bool),
        moving=np.ones(20, bool),
        confidence=1.0,
    )
    cfg = PlannerConfig(max_linear_speed_mps=v_max, max_angular_speed_rps=w_max)
    T_body_tool = np.eye(4)
    T_body_tool[:3, :3] = se3.so3_exp(rng.normal(size=3))
    plan = build_ee_plan(fit, points, default_T_body_cam(), T_body_tool, cfg)
    assert plan.ok
    times, poses = plan.waypoints()
    assert np.all(np.diff(times) >= 0) and np.all(np.isfinite(poses))
    lin, ang = speeds(times, poses)
    assert lin.max() <= v_max * (1 + 1e-9) and ang.max() <= w_max * (1 + 1e-9)


def test_yaml_matches_the_config_and_states_units():
    assert load_yaml(PlannerConfig, YAML, "planner") == PlannerConfig()
    params = yaml.safe_load(YAML.read_text())["planner"]["ros__parameters"]
    assert sorted(params) == sorted(f.name for f in fields(PlannerConfig))
    for line in YAML.read_text().splitlines():
        if re.match(r"^\s{4}[a-z_]+:\s*\S", line):
            assert "#" in line, f"no unit comment: {line.strip()}"


def test_plan_failure_constructor():
    plan = Plan.failure(Status.FIT_FAILED, "nope")
    assert not plan.ok and plan.message == "nope" and plan.confidence == 0.0


def test_points_beyond_the_arms_reach_are_dropped(scene):
    """Spurious motion far away (a predicted track on the back wall) is not the object."""
    with_far = plan_from_tracks(
        scene.tracks_px,
        scene.intrinsics,
        scene.T_body_cam,
        scene.T_body_tool,
        PlannerConfig(
            reach_radius_m=0.05, grasp_synthesis=False
        ),  # nothing in the synthetic scene is this close
        depth=scene.depth,
    )
    assert not with_far.ok
    assert re.search(r"out of reach: \d+", with_far.message), with_far.message
    kept = plan_from_tracks(
        scene.tracks_px,
        scene.intrinsics,
        scene.T_body_cam,
        scene.T_body_tool,
        PlannerConfig(reach_radius_m=0.0, grasp_synthesis=False),  # off
        depth=scene.depth,
    )
    assert kept.ok and "out of reach" not in kept.message


def test_reach_settings_are_validated():
    with pytest.raises(ValueError, match="reach_radius_m"):
        PlannerConfig(reach_radius_m=-1.0)
    with pytest.raises(ValueError, match="reach_center_m"):
        PlannerConfig(reach_center_m=(0.0, 0.0))
