"""Grasp synthesis on synthetic depth images: the jaws close across the part, bad input fails.

Scenes are rendered by z-buffering densely sampled primitive surfaces through the sim's nominal
camera, so the planner sees what it sees in t2a_sim: a depth image and the moving points' pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from t2a_common.core import se3
from t2a_common.core.geometry import SIM_CAMERA_QUAT, SIM_CAMERA_XYZ, Intrinsics, pose_to_matrix
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.grasp import synthesize_grasp
from t2a_planning.core.planner import plan_from_tracks
from t2a_planning.core.status import Status

T_BODY_CAM = pose_to_matrix(SIM_CAMERA_XYZ, SIM_CAMERA_QUAT)
INTR = Intrinsics(320, 240, 233.0, 233.0, 159.5, 119.5)
Q_START = np.array([0.0, -1.57, 1.87, 0.0, 0.1, 0.0])  # t2a_sim's start pose
TABLE_Z = -0.12  # m, table top in the body frame
UP = np.array([0.0, 0.0, 1.0])


def _grid(a: np.ndarray, b: np.ndarray, step: float = 0.0015) -> np.ndarray:
    """Points covering the parallelogram spanned by edge vectors a and b from the origin."""
    na, nb = int(np.linalg.norm(a) / step) + 2, int(np.linalg.norm(b) / step) + 2
    s, t = np.meshgrid(np.linspace(0, 1, na), np.linspace(0, 1, nb))
    return s.reshape(-1, 1) * a + t.reshape(-1, 1) * b


def rect(centre, u, v) -> np.ndarray:
    """A rectangle with half-edge vectors u, v around centre (m, body)."""
    u, v = np.asarray(u, float), np.asarray(v, float)
    return np.asarray(centre, float) - u - v + _grid(2 * u, 2 * v)


def cylinder(base, r: float, z0: float, z1: float, axis=UP) -> np.ndarray:
    """Side of a cylinder of radius r from z0 to z1 along ``axis`` through ``base`` (m)."""
    axis = np.asarray(axis, float)
    e1 = np.cross(axis, [1.0, 0.0, 0.0] if abs(axis[0]) < 0.9 else [0.0, 1.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    th, h = np.meshgrid(
        np.linspace(0, 2 * np.pi, int(2 * np.pi * r / 0.0015)), np.arange(z0, z1, 0.0015)
    )
    th, h = th.ravel()[:, None], h.ravel()[:, None]
    return np.asarray(base, float) + r * (np.cos(th) * e1 + np.sin(th) * e2) + h * axis


def box(centre, half) -> np.ndarray:
    """All six faces of an axis-aligned box."""
    c, (hx, hy, hz) = np.asarray(centre, float), half
    faces = []
    for s in (-1, 1):
        faces.append(rect(c + np.array([s * hx, 0, 0]), [0, hy, 0], [0, 0, hz]))
        faces.append(rect(c + np.array([0, s * hy, 0]), [hx, 0, 0], [0, 0, hz]))
        faces.append(rect(c + np.array([0, 0, s * hz]), [hx, 0, 0], [0, hy, 0]))
    return np.concatenate(faces)


def render(parts: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(depth (h, w) m with NaN = none, label (h, w) int: index of the part seen, -1 = none)."""
    T_cam_body = np.linalg.inv(T_BODY_CAM)
    depth = np.full((INTR.height, INTR.width), np.inf)
    label = np.full((INTR.height, INTR.width), -1)
    for k, P in enumerate(parts):
        Pc = P @ T_cam_body[:3, :3].T + T_cam_body[:3, 3]
        Pc = Pc[Pc[:, 2] > 0.05]
        u = np.round(INTR.fx * Pc[:, 0] / Pc[:, 2] + INTR.cx).astype(int)
        v = np.round(INTR.fy * Pc[:, 1] / Pc[:, 2] + INTR.cy).astype(int)
        ok = (u >= 0) & (u < INTR.width) & (v >= 0) & (v < INTR.height)
        u, v, z = u[ok], v[ok], Pc[ok, 2]
        order = np.argsort(-z)  # nearest last, so it wins the assignment
        u, v, z = u[order], v[order], z[order]
        closer = z < depth[v, u]
        depth[v[closer], u[closer]] = z[closer]
        label[v[closer], u[closer]] = k
    depth[~np.isfinite(depth)] = np.nan
    return depth, label


def scene(parts, moving_parts, motion_body, n_points: int = 150, seed: int = 0):
    """Depth, the moving points' pixels and camera points, and pixel tracks of them."""
    depth, label = render(parts)
    rng = np.random.default_rng(seed)
    rows, cols = np.nonzero(np.isin(label, moving_parts))
    pick = rng.choice(len(rows), size=min(n_points, len(rows)), replace=False)
    px = np.stack([cols[pick], rows[pick]], axis=1).astype(float)
    z = depth[rows[pick], cols[pick]]
    P_cam = np.stack([(px[:, 0] - INTR.cx) / INTR.fx * z, (px[:, 1] - INTR.cy) / INTR.fy * z, z], 1)
    T_cam_body = np.linalg.inv(T_BODY_CAM)
    tracks = []
    for T in motion_body:
        M = T_cam_body @ T @ T_BODY_CAM  # the motion in the camera frame
        Q = P_cam @ M[:3, :3].T + M[:3, 3]
        tracks.append(np.stack([INTR.fx * Q[:, 0] / Q[:, 2] + INTR.cx,
                                INTR.fy * Q[:, 1] / Q[:, 2] + INTR.cy], 1))  # fmt: skip
    return depth, px, P_cam, np.array(tracks)


def lift(h: int = 8, dz: float = 0.12) -> np.ndarray:
    out = np.tile(np.eye(4), (h + 1, 1, 1))
    out[:, 2, 3] = np.linspace(0.0, dz, h + 1)
    return out


def hinge(pivot, angle: float, h: int = 8) -> np.ndarray:
    """Rotation about a vertical axis through ``pivot`` (a door opening towards the robot)."""
    out = []
    for a in np.linspace(0.0, angle, h + 1):
        T = np.eye(4)
        T[:3, :3] = se3.so3_exp(a * UP)
        T[:3, 3] = pivot - T[:3, :3] @ pivot
        out.append(T)
    return np.array(out)


def start_pose() -> np.ndarray:
    from t2a_common.core.kinematics import fk

    return fk(Q_START)


def grasp(parts, moving, motion, **kw):
    depth, px, P_cam, _ = scene(parts, moving, motion)
    return synthesize_grasp(
        depth, INTR, T_BODY_CAM, px, P_cam, motion, start_pose(), PlannerConfig(),
        q_start=Q_START, **kw,
    )  # fmt: skip


def in_tool(T: np.ndarray, p: np.ndarray) -> np.ndarray:
    return T[:3, :3].T @ (np.asarray(p) - T[:3, 3])


def test_upright_cylinder_jaws_close_across_its_axis():
    centre = np.array([0.95, 0.0, TABLE_Z])
    bottle = cylinder(centre, 0.033, 0.0, 0.20)
    table = rect([0.95, 0.0, TABLE_Z], [0.4, 0, 0], [0, 0.5, 0])
    result = grasp([bottle, table], [0], lift())
    assert result.ok, result.message
    T = result.chosen.T_body_grasp
    assert result.chosen.feature.kind == "cylinder"
    assert abs(T[:3, 2] @ UP) < 0.2  # jaws close level, across the upright axis
    assert abs(T[:3, 0] @ UP) < 0.2  # approach from the side
    assert abs(result.chosen.feature.half_width - 0.033) < 0.006
    axis_point = in_tool(T, [0.95, 0.0, T[2, 3]])
    assert abs(axis_point[0]) < 0.02  # the axis between the jaws along the approach
    assert -0.012 < axis_point[2] - 0.033  # the near side above the fixed jaw
    assert "cylinder" in result.message


def test_vertical_bar_on_a_door_jaws_close_across_the_bar():
    face_x = 0.95
    door = rect([face_x, 0.0, 0.02], [0, 0.15, 0], [0, 0, 0.14])
    bar_y, bar_x = 0.1, face_x - 0.045
    bar = cylinder([bar_x, bar_y, -0.04], 0.012, 0.0, 0.13)
    posts = np.concatenate(
        [cylinder([bar_x, bar_y, z], 0.006, 0.0, 0.045, axis=[1, 0, 0]) for z in (-0.02, 0.07)]
    )
    motion = hinge(np.array([face_x, -0.15, 0.0]), 0.9)  # free edge at +y comes towards us
    result = grasp([door, bar, posts], [0, 1, 2], motion)
    assert result.ok, result.message
    T = result.chosen.T_body_grasp
    assert result.chosen.feature.kind == "handle", result.message
    assert abs(result.chosen.feature.axis @ UP) > 0.95  # found the bar's axis
    assert abs(T[:3, 2] @ UP) < 0.2  # jaws close across the vertical bar
    bar_centre = in_tool(T, [bar_x, bar_y, T[2, 3]])
    assert abs(bar_centre[0]) < 0.025  # between root and tips
    assert -0.012 < bar_centre[2] - 0.012 < 0.03  # above the fixed jaw, under the finger
    assert "handle" in result.message


def test_level_bar_on_a_drawer_jaws_close_vertically():
    face_x = 0.9
    front = rect([face_x, 0.0, -0.03], [0, 0.16, 0], [0, 0, 0.08])
    bar = cylinder([face_x - 0.045, -0.06, -0.02], 0.012, 0.0, 0.12, axis=[0, 1, 0])
    motion = np.tile(np.eye(4), (9, 1, 1))
    motion[:, 0, 3] = np.linspace(0.0, -0.12, 9)  # pulled out towards the robot
    result = grasp([front, bar], [0, 1], motion)
    assert result.ok, result.message
    assert result.chosen.feature.kind == "handle"
    assert abs(result.chosen.T_body_grasp[:3, 2] @ UP) > 0.8  # vertical jaws on a level bar


def test_box_is_taken_from_the_top_when_the_top_is_visible():
    half = (0.035, 0.035, 0.045)
    b = box([0.95, 0.0, TABLE_Z + half[2]], half)
    table = rect([0.95, 0.0, TABLE_Z], [0.4, 0, 0], [0, 0.5, 0])
    result = grasp([b, table], [0], lift())
    assert result.ok, result.message
    T = result.chosen.T_body_grasp
    assert result.chosen.feature.kind == "box_top", result.message
    assert T[:3, 0] @ UP < -0.8  # the hand comes down
    assert abs(T[:3, 2] @ UP) < 0.2  # jaws close level, across the box


def test_box_sliding_away_is_pushed():
    half = (0.035, 0.035, 0.045)
    b = box([0.95, 0.0, TABLE_Z + half[2]], half)
    motion = np.tile(np.eye(4), (9, 1, 1))
    d = np.array([0.95, 0.0 - SIM_CAMERA_XYZ[1]])
    motion[:, :2, 3] = np.linspace(0.0, 0.1, 9)[:, None] * d / np.linalg.norm(d)
    result = grasp([b], [0], motion)
    assert result.ok, result.message
    assert result.chosen.feature.kind == "push"
    assert "preferred over" in result.message  # the grasps it could also have used


def test_nan_depth_fails_naming_the_depth():
    bottle = cylinder([0.95, 0.0, TABLE_Z], 0.033, 0.0, 0.2)
    depth, px, P_cam, _ = scene([bottle], [0], lift())
    depth[:] = np.nan
    result = synthesize_grasp(
        depth, INTR, T_BODY_CAM, px, P_cam, lift(), start_pose(), PlannerConfig(), q_start=Q_START
    )
    assert not result.ok and result.status == Status.BAD_INPUT
    assert "depth" in result.message and "NaN" in result.message


def test_zero_depth_fails_through_the_planner():
    bottle = cylinder([0.95, 0.0, TABLE_Z], 0.033, 0.0, 0.2)
    depth, _, _, tracks = scene([bottle], [0], lift())
    depth_mm = np.nan_to_num(depth, nan=0.0)
    holes = depth_mm.copy()
    rows, cols = np.nonzero(depth_mm > 0)
    holes[rows[::3], cols[::3]] = 0.0  # a third of the part has no depth: still fine
    plan = plan_from_tracks(tracks, INTR, T_BODY_CAM, start_pose(), depth=holes, q_start=Q_START)
    assert plan.ok and plan.grasp_kind == "cylinder", plan.message
    empty = np.where(depth_mm > 0, 0.0, depth_mm)  # the part itself reads 0 (no data)
    empty[rows[::7], cols[::7]] = depth_mm[rows[::7], cols[::7]]  # except the tracked pixels
    plan = plan_from_tracks(tracks, INTR, T_BODY_CAM, start_pose(), depth=empty, q_start=Q_START)
    assert not plan.ok and plan.horizon == 0
    assert "depth" in plan.message, plan.message


def test_large_plain_surface_has_no_graspable_feature():
    wall = rect([1.0, 0.0, 0.0], [0, 0.3, 0], [0, 0, 0.15])
    result = grasp([wall], [0], lift(dz=0.05))
    assert not result.ok and result.status == Status.DEGENERATE
    assert "no graspable feature" in result.message


def test_unreachable_grasp_fails_naming_ik():
    bottle = cylinder([0.95, 0.0, TABLE_Z], 0.033, 0.0, 0.2)
    result = grasp([bottle], [0], lift(), solve=lambda T, q: None)
    assert not result.ok and result.status == Status.UNREACHABLE
    assert "IK fails" in result.message


@pytest.mark.parametrize("turns", [(0.0,), (0.0, 0.3, -0.3)])
def test_every_candidate_is_rehearsed_and_reported(turns):
    import dataclasses

    bottle = cylinder([0.95, 0.0, TABLE_Z], 0.033, 0.0, 0.2)
    depth, px, P_cam, _ = scene([bottle], [0], lift())
    cfg = dataclasses.replace(PlannerConfig(), grasp_turns_rad=turns)
    result = synthesize_grasp(
        depth, INTR, T_BODY_CAM, px, P_cam, lift(), start_pose(), cfg, q_start=Q_START
    )
    assert result.ok
    assert len([c for c in result.candidates if c.feature.kind == "cylinder"]) == 2 * len(turns)


def test_door_closing_without_a_visible_handle_is_pushed_near_its_free_edge():
    door = rect([0.95, 0.0, 0.0], [0, 0.15, 0], [0, 0, 0.12])
    motion = hinge(np.array([0.95, 0.15, 0.0]), 0.5)  # free edge (-y) swings away
    result = grasp([door], [0], motion)
    assert result.ok, result.message
    assert result.chosen.feature.kind == "push_face", result.message
    T = result.chosen.T_body_grasp
    assert T[1, 3] < -0.05  # towards the free edge, where the face moves most
    assert T[:3, 0] @ np.array([1.0, 0.0, 0.0]) > 0.7  # into the face


def test_plan_carries_the_grasp_and_its_markers_show_it():
    from builtin_interfaces.msg import Time

    from t2a_planning.plan_viz import plan_markers

    bottle = cylinder([0.95, 0.0, TABLE_Z], 0.033, 0.0, 0.2)
    depth, _, _, tracks = scene([bottle], [0], lift())
    plan = plan_from_tracks(tracks, INTR, T_BODY_CAM, start_pose(), depth=depth, q_start=Q_START)
    assert plan.ok and plan.grasp_kind == "cylinder" and "grasp: cylinder" in plan.message
    T = plan.ee_poses[plan.grasp_step]
    np.testing.assert_allclose(T[:3, 3] - plan.pregrasp_pose[:3, 3], 0.1 * T[:3, 0], atol=1e-9)
    grasp = {m.id: m for m in plan_markers(plan, None, T_BODY_CAM, Time(), "body").markers
             if m.ns == "grasp"}  # fmt: skip
    arrow, jaws, text = grasp[0], grasp[1], grasp[2]
    assert np.allclose([arrow.points[1].x, arrow.points[1].y, arrow.points[1].z], T[:3, 3])
    jaw_dir = np.array([jaws.points[1].x - jaws.points[0].x, jaws.points[1].y - jaws.points[0].y,
                        jaws.points[1].z - jaws.points[0].z])  # fmt: skip
    assert abs(jaw_dir @ T[:3, 2]) / np.linalg.norm(jaw_dir) > 0.99  # the closing direction
    assert text.text == "cylinder" and text.header.frame_id == "body"


def test_a_narrow_tall_panel_is_not_taken_for_a_box():
    panel = rect([0.9, 0.0, -0.01], [0, 0.04, 0], [0, 0, 0.11])  # an open door seen edge-on
    result = grasp([panel], [0], lift(dz=0.05))
    assert all(f.kind != "box_top" for f in result.features)
    assert "is a panel, not a box" in result.message
