"""Depth lookup for P0: holes, zeros, depth edges, surface normals."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.lifting import (
    DepthFlag,
    lift_points,
    lift_with_point_depths,
    surface_normal,
)
from t2a_planning.core.synthetic import Box, Plane, realsense_intrinsics, render_depth

INTR = realsense_intrinsics()
CFG = PlannerConfig()


def plane_depth(normal, distance: float) -> np.ndarray:
    """Depth image of the plane n . x = distance (camera frame)."""
    v, u = np.mgrid[0 : INTR.height, 0 : INTR.width]
    rays = np.stack(
        [(u - INTR.cx) / INTR.fx, (v - INTR.cy) / INTR.fy, np.ones(u.shape)], axis=-1
    )  # (h, w, 3) with z = 1
    return distance / (rays @ np.asarray(normal, dtype=float))


def test_flat_wall_lifts_to_exact_points():
    depth = np.full((INTR.height, INTR.width), 1.2)
    uv = np.array([[100.0, 50.0], [320.0, 240.0], [600.0, 400.0]])
    lifted = lift_points(uv, depth, INTR, CFG)
    assert lifted.valid.all()
    np.testing.assert_allclose(lifted.points_cam, INTR.backproject(uv, np.full(3, 1.2)))


def test_holes_zeros_and_outside_points_are_rejected():
    depth = np.full((INTR.height, INTR.width), 1.0)
    depth[100:120, 100:120] = np.nan  # a hole
    depth[300:320, 300:320] = 0.0  # RealSense writes 0 for no data
    depth[200, 200] = np.nan  # a single missing pixel is not a hole: the median covers it
    uv = np.array([[110.0, 110.0], [310.0, 310.0], [200.0, 200.0], [-5.0, 10.0], [np.nan, 1.0]])
    lifted = lift_points(uv, depth, INTR, CFG)
    assert lifted.flags.tolist() == [
        DepthFlag.HOLE,
        DepthFlag.HOLE,
        DepthFlag.OK,
        DepthFlag.OUTSIDE_IMAGE,
        DepthFlag.OUTSIDE_IMAGE,
    ]
    assert np.isclose(lifted.depth_m[2], 1.0)
    assert np.all(np.isnan(lifted.points_cam[~lifted.valid]))


def test_millimetre_depth_images_are_understood():
    depth_mm = np.full((INTR.height, INTR.width), 1234, dtype=np.uint16)
    depth_mm[:, :100] = 0
    lifted = lift_points(np.array([[320.0, 240.0], [50.0, 240.0]]), depth_mm, INTR, CFG)
    assert lifted.valid.tolist() == [True, False]
    assert lifted.depth_m[0] == 1.234


def test_out_of_range_depth_counts_as_a_hole():
    depth = np.full((INTR.height, INTR.width), 9.0)  # beyond max_depth_m
    lifted = lift_points(np.array([[320.0, 240.0]]), depth, INTR, CFG)
    assert lifted.flags[0] == DepthFlag.HOLE


def test_depth_edges_are_rejected_but_surfaces_next_to_them_are_not():
    # A box in front of a wall: pixels on its silhouette see two depths 0.5 m apart.
    box = Box(np.diag([1.0, 1.0, 1.0, 1.0]), (0.2, 0.2, 0.2))
    box.T_cam_box[:3, 3] = [0.0, 0.0, 1.0]
    depth, on_box = render_depth(INTR, box, Plane(np.array([0, 0, 1.5]), np.array([0, 0, -1.0])))
    cols = np.flatnonzero(on_box[240])
    left = cols[0]  # first box pixel on the middle row
    uv = np.array([[left, 240], [left - 1, 240], [left + 6, 240], [left - 6, 240]], dtype=float)
    lifted = lift_points(uv, depth, INTR, CFG)
    assert lifted.flags.tolist()[:2] == [DepthFlag.EDGE, DepthFlag.EDGE]
    assert lifted.valid[2] and np.isclose(lifted.depth_m[2], 0.9, atol=1e-3)  # box front face
    assert lifted.valid[3] and np.isclose(lifted.depth_m[3], 1.5, atol=1e-3)  # wall


def test_slanted_surface_is_not_an_edge():
    normal = np.array([0.0, np.sin(1.0), -np.cos(1.0)])  # 57 degrees off the optical axis
    depth = plane_depth(-normal, 1.0)
    lifted = lift_points(np.array([[320.0, 240.0], [320.0, 300.0]]), depth, INTR, CFG)
    assert lifted.valid.all()
    # Points lie on the plane to well below a millimetre.
    assert np.all(np.abs(lifted.points_cam @ -normal - 1.0) < 5e-4)


def test_point_depths_path():
    uv = np.array([[10.0, 10.0], [20.0, 20.0], [30.0, 30.0]])
    lifted = lift_with_point_depths(uv, np.array([1.0, np.nan, 0.0]), INTR, CFG)
    assert lifted.valid.tolist() == [True, False, False]
    np.testing.assert_allclose(lifted.points_cam[0], INTR.backproject(uv[0], 1.0))


@settings(max_examples=25, deadline=None)
@given(
    tilt=st.floats(-0.8, 0.8),
    yaw=st.floats(-0.8, 0.8),
    distance=st.floats(0.4, 3.0),
    u=st.floats(20, 620),
    v=st.floats(20, 460),
)
def test_lifted_points_lie_on_the_plane_and_normals_match(tilt, yaw, distance, u, v):
    n = np.array([np.sin(yaw) * np.cos(tilt), np.sin(tilt), -np.cos(yaw) * np.cos(tilt)])
    depth = plane_depth(-n, distance)  # plane -n . x = distance, facing the camera
    lifted = lift_points(np.array([[u, v]]), depth, INTR, CFG)
    if not lifted.valid[0]:  # only a grazing plane is an edge, only a far one out of range
        z = depth[round(v), round(u)]
        assert lifted.flags[0] == DepthFlag.EDGE or z > CFG.max_depth_m
        return
    p = lifted.points_cam[0]
    # The depth comes from the nearest pixel centre, at most half a pixel away on each axis: that
    # moves the point off the plane by up to z |n_xy| / f * sqrt(2) / 2.
    bound = p[2] * np.linalg.norm(n[:2]) / INTR.fx * 0.75
    assert abs(p @ -n - distance) < bound + 1e-9
    normal = surface_normal(depth, INTR, p, CFG)
    assert normal is not None
    assert normal @ n > np.cos(np.deg2rad(1.0))
