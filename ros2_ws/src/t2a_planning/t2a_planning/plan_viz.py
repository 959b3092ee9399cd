"""Planning's message side: rviz views of a plan (nav_msgs/Path, PoseArray, markers)."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point, PoseArray, PoseStamped
from nav_msgs.msg import Path
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from t2a_common import ros_conv
from t2a_common.core.geometry import transform_points
from t2a_planning.core.ee_plan import Plan


def plan_path(plan: Plan, stamp: Time, frame_id: str) -> Path:
    """Every timed waypoint (start, pre-grasp, grasp, steps) as a nav_msgs/Path."""
    _, poses = plan.waypoints()
    msg = Path()
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    for T in poses:
        p = PoseStamped(pose=ros_conv.matrix_to_pose_msg(T))
        p.header = msg.header
        msg.poses.append(p)
    return msg


def plan_poses(plan: Plan, stamp: Time, frame_id: str) -> PoseArray:
    """The per-step hand poses a_t as a geometry_msgs/PoseArray."""
    msg = PoseArray(poses=[ros_conv.matrix_to_pose_msg(T) for T in plan.ee_poses])
    msg.header.stamp, msg.header.frame_id = stamp, frame_id
    return msg


def plan_markers(
    plan: Plan,
    points_cam: np.ndarray | None,
    T_body_cam: np.ndarray,
    stamp: Time,
    frame_id: str,
    axis_m: float = 0.05,
) -> MarkerArray:
    """Moving points in 3D (green), the object frame at every step (RGB axes) and the chosen
    grasp (ns "grasp": an arrow from the pre-grasp to the grasp pose, the jaws' closing line
    across the part in orange, the feature's name), in body."""
    clear = Marker(action=Marker.DELETEALL, ns="plan")
    markers = [clear]
    moving = plan.moving_point_indices
    if points_cam is not None and len(moving):
        pts = transform_points(T_body_cam, np.asarray(points_cam)[moving])
        sphere = Marker(ns="plan", id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
        sphere.scale.x = sphere.scale.y = sphere.scale.z = 0.01
        sphere.color = ColorRGBA(r=0.1, g=0.9, b=0.2, a=1.0)
        sphere.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in pts]
        centre = pts.mean(axis=0)
        markers.append(sphere)
        axes = Marker(ns="plan", id=1, type=Marker.LINE_LIST, action=Marker.ADD)
        axes.scale.x = 0.004
        T_cam_body = np.linalg.inv(T_body_cam)
        for T_cam_obj in plan.object_transforms:
            T_body_obj = T_body_cam @ T_cam_obj @ T_cam_body
            origin = T_body_obj[:3, :3] @ centre + T_body_obj[:3, 3]
            for k, color in enumerate(((1, 0, 0), (0, 1, 0), (0, 0, 1))):
                tip = origin + axis_m * T_body_obj[:3, k]
                for p in (origin, tip):
                    axes.points.append(Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
                    axes.colors.append(ColorRGBA(r=float(color[0]), g=float(color[1]),
                                                 b=float(color[2]), a=1.0))  # fmt: skip
        markers.append(axes)
    markers += _grasp_markers(plan)
    for m in markers[1:]:
        m.header.stamp, m.header.frame_id = stamp, frame_id
        m.pose.orientation.w = 1.0
    return MarkerArray(markers=markers)


def _point(p: np.ndarray) -> Point:
    return Point(x=float(p[0]), y=float(p[1]), z=float(p[2]))


def _grasp_markers(plan: Plan, jaw_span_m: float = 0.06) -> list[Marker]:
    """The grasp: approach arrow, the line the jaws close along (tool z), the feature's name."""
    if len(plan.ee_poses) == 0:
        return []
    T = plan.ee_poses[plan.grasp_step]
    arrow = Marker(ns="grasp", id=0, type=Marker.ARROW, action=Marker.ADD)
    arrow.scale.x, arrow.scale.y, arrow.scale.z = 0.006, 0.012, 0.02
    arrow.color = ColorRGBA(r=0.2, g=0.5, b=1.0, a=1.0)
    arrow.points = [_point(plan.pregrasp_pose[:3, 3]), _point(T[:3, 3])]
    jaws = Marker(ns="grasp", id=1, type=Marker.LINE_LIST, action=Marker.ADD)
    jaws.scale.x = 0.005
    jaws.color = ColorRGBA(r=1.0, g=0.55, b=0.0, a=1.0)
    # From the fixed jaw's face (just below the tool axis) to where the open finger lies.
    jaws.points = [_point(T[:3, 3] - 0.012 * T[:3, 2]), _point(T[:3, 3] + jaw_span_m * T[:3, 2])]
    text = Marker(ns="grasp", id=2, type=Marker.TEXT_VIEW_FACING, action=Marker.ADD)
    text.scale.z = 0.03
    text.color = ColorRGBA(r=1.0, g=1.0, b=1.0, a=1.0)
    text.text = plan.grasp_kind or "centre"
    text.pose.position = _point(T[:3, 3] + 0.05 * np.array([0.0, 0.0, 1.0]))
    return [arrow, jaws, text]
