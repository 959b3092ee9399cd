"""Goal grounding on a synthetic RGB-D scene: a flat-coloured, shaded box in front of a
shaded wall, moved by a known rigid motion (ray-cast, like the sim's flat-colour renders)."""

from __future__ import annotations

import numpy as np
import pytest

from t2a_common.core import se3
from t2a_common.core.geometry import Intrinsics
from t2a_perception.core.grounding import (
    GroundingConfig,
    estimate_goal_motion,
    grounded_tracks,
    screw_interpolate,
)

W, H = 320, 240  # the sim camera's size
INTR = Intrinsics.from_fov(W, H, 60.0)
WALL_Z = 1.2  # m
BOX_CENTRE = np.array([0.0, 0.12, 0.6])  # m, camera frame (y down)
BOX_HALF = np.array([0.08, 0.06, 0.05])  # m, half extents along the box's x, y, z
BOX_RGB = np.array([200.0, 40.0, 40.0])
LIGHT = np.array([0.3, -0.6, -0.75]) / np.linalg.norm([0.3, -0.6, -0.75])  # towards the light


def _render(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(rgb uint8, depth m) of the scene with the box moved by ``T`` (camera frame); each face
    of the box is flat coloured, shaded by its normal against a fixed light."""
    u, v = np.meshgrid(np.arange(W), np.arange(H))
    rays = np.stack([(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, np.ones_like(u, float)], -1)
    depth = np.full((H, W), WALL_Z)
    # The wall: a smooth two-tone shading, so "background" is not one colour.
    wall = np.stack([90 + 40 * np.sin(u / 17.0), 110 + 30 * np.cos(v / 13.0), 140 + 0 * u], -1)
    rgb = wall.astype(float)
    centre = T[:3, :3] @ BOX_CENTRE + T[:3, 3]
    for axis in range(3):
        for sign in (-1.0, 1.0):
            n = sign * T[:3, axis]  # outward normal
            c = centre + BOX_HALF[axis] * n
            with np.errstate(divide="ignore", invalid="ignore"):
                t = (c @ n) / (rays @ n)  # (H, W) ray parameter on the face's plane
            p = rays * t[..., None]
            inside = (t > 0) & (rays @ n < 0) & (p[..., 2] < depth)
            for k in range(3):
                if k != axis:
                    inside &= np.abs((p - c) @ T[:3, k]) <= BOX_HALF[k]
            rgb[inside] = BOX_RGB * (0.55 + 0.45 * max(0.0, float(n @ LIGHT)))
            depth[inside] = p[inside][:, 2]
    return np.clip(rgb, 0, 255).astype(np.uint8), depth.astype(np.float32)


def _motion(rotvec=(0.0, 0.0, 0.0), pivot=BOX_CENTRE, translation=(0.0, 0.0, 0.0)) -> np.ndarray:
    T = np.eye(4)
    R = se3.so3_exp(np.asarray(rotvec, float))
    T[:3, :3] = R
    T[:3, 3] = np.asarray(pivot) - R @ np.asarray(pivot) + np.asarray(translation)
    return T


def _corners(T: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The box's 8 corners moved by ``T``: (8, 3) camera frame (m) and (8, 2) pixels."""
    P = np.array([BOX_CENTRE + BOX_HALF * np.array([sx, sy, sz])
                  for sx in (-1, 1) for sy in (-1, 1) for sz in (-1, 1)])  # fmt: skip
    Y = P @ T[:3, :3].T + T[:3, 3]
    uv = np.stack(
        [INTR.fx * Y[:, 0] / Y[:, 2] + INTR.cx, INTR.fy * Y[:, 1] / Y[:, 2] + INTR.cy], -1
    )
    return Y, uv


# Tolerances: the moved box's corners within 10 px in the goal image (median; the box is ~80 px
# wide) and 7 cm in 3-D. With one flat-coloured RGB goal, moving along the viewing ray (the box
# looks a little smaller or bigger) is only weakly observed, hence the loose 3-D bound.
@pytest.mark.parametrize(
    "T_true",
    [
        _motion(translation=(0.0, -0.10, 0.0)),  # lifted 10 cm
        _motion(translation=(0.09, 0.0, 0.04)),  # pushed sideways and away
        _motion(rotvec=(0.0, 0.0, 1.0), translation=(0.0, -0.08, 0.0)),  # lifted and tilted
        pytest.param(
            _motion(
                rotvec=(0.0, 0.6, 0.0),
                pivot=BOX_CENTRE + np.array([BOX_HALF[0], 0.0, -BOX_HALF[2]]),
            ),
            marks=pytest.mark.xfail(
                reason="known limitation: a flat-coloured box turned about a vertical hinge is "
                "found at a wrong angle (its turned faces are foreshortened and re-shaded)",
                strict=False,
            ),
        ),
    ],
    ids=["lift", "push", "tilt", "hinge"],
)
def test_recovers_known_motion(T_true: np.ndarray) -> None:
    rgb0, depth0 = _render(np.eye(4))
    goal, _ = _render(T_true)
    motion = estimate_goal_motion(rgb0, depth0, goal, INTR)
    assert motion.ok, motion.message
    assert motion.cost < motion.identity_cost
    (Y_est, uv_est), (Y_true, uv_true) = _corners(motion.T_cam_obj), _corners(T_true)
    px = np.linalg.norm(uv_est - uv_true, axis=1)
    assert np.median(px) < 10.0, (motion.message, px)
    assert np.linalg.norm(Y_est - Y_true, axis=1).max() < 0.07, motion.message


def test_grounded_tracks_move_only_the_object() -> None:
    T_true = _motion(translation=(0.0, -0.10, 0.0))
    rgb0, depth0 = _render(np.eye(4))
    goal, _ = _render(T_true)
    gu, gv = np.meshgrid(np.linspace(10, W - 11, 20), np.linspace(10, H - 11, 20))
    p0 = np.stack([gu.ravel(), gv.ravel()], -1)  # (400, 2)
    tracks, info = grounded_tracks(rgb0, depth0, goal, INTR, p0, horizon=8)
    assert tracks.shape == (9, 400, 2)
    np.testing.assert_allclose(tracks[0], p0, atol=1e-4)
    moving = info["moving"]
    on_box = depth0[np.round(p0[:, 1]).astype(int), np.round(p0[:, 0]).astype(int)] < 1.0
    assert moving.sum() >= 0.8 * on_box.sum() and not (moving & ~on_box).any()
    np.testing.assert_allclose(tracks[:, ~moving], np.repeat(p0[None, ~moving], 9, 0), atol=1e-4)
    # The box goes up 10 cm: about 0.1 * fy / z px, steadily along the steps.
    dv = tracks[-1, moving, 1] - p0[moving, 1]
    assert np.median(dv) == pytest.approx(-0.10 * INTR.fy / BOX_CENTRE[2], rel=0.15)
    steps = np.diff(tracks[:, moving, 1], axis=0).mean(1)  # (8,)
    assert np.all(steps < 0)


def test_goal_identical_to_i0_is_no_motion() -> None:
    rgb0, depth0 = _render(np.eye(4))
    motion = estimate_goal_motion(rgb0, depth0, rgb0.copy(), INTR)
    assert not motion.ok and "no motion" in motion.message
    np.testing.assert_array_equal(motion.T_cam_obj, np.eye(4))
    p0 = np.array([[80.0, 60.0], [10.0, 10.0]])
    tracks, info = grounded_tracks(rgb0, depth0, rgb0.copy(), INTR, p0, horizon=4)
    np.testing.assert_array_equal(tracks, np.repeat(p0[None].astype(np.float32), 5, 0))
    assert not info["moving"].any()


def test_screw_interpolation_ends_and_follows_the_hinge() -> None:
    pivot = np.array([0.1, 0.0, 1.0])
    T = _motion(rotvec=(0.0, 1.2, 0.0), pivot=pivot)
    poses = screw_interpolate(T, np.array([0.0, 0.5, 1.0]))
    np.testing.assert_allclose(poses[0], np.eye(4), atol=1e-12)
    np.testing.assert_allclose(poses[2], T, atol=1e-9)
    # Halfway along the screw the hinge line stays put and the angle is half.
    np.testing.assert_allclose(poses[1][:3, :3] @ pivot + poses[1][:3, 3], pivot, atol=1e-9)
    assert se3.rotation_angle(poses[1][:3, :3]) == pytest.approx(0.6)


def test_config_and_input_errors() -> None:
    with pytest.raises(ValueError, match="max_points"):
        GroundingConfig(max_points=3)
    with pytest.raises(ValueError, match="occluded_cost"):
        GroundingConfig(occluded_cost=1.5)
    rgb0, depth0 = _render(np.eye(4))
    with pytest.raises(ValueError, match="depth0_m has shape"):
        estimate_goal_motion(rgb0, depth0[:10], rgb0, INTR)
    with pytest.raises(ValueError, match="p0 has shape"):
        grounded_tracks(rgb0, depth0, rgb0, INTR, np.zeros((3, 3)), horizon=2)
