"""Perception-only message conversions: rviz markers for tracks."""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Time
from geometry_msgs.msg import Point
from std_msgs.msg import ColorRGBA
from visualization_msgs.msg import Marker, MarkerArray

from t2a_common.core.types import PointTrackSet


def track_markers(tracks: PointTrackSet, stamp: Time, namespace: str = "tracks") -> MarkerArray:
    """P0 lifted to 3D (spheres coloured by confidence) and each track drawn at the depth of its
    P0 (tracks are 2D, so the depth of later steps is unknown here; the planner recovers it).
    Points without depth are left out."""
    intr = tracks.intrinsics
    valid = np.isfinite(tracks.depth_m)
    depth = tracks.depth_m[valid]
    tr = tracks.tracks_px[:, valid]  # (H+1, M, 2)
    xyz = intr.backproject(tr, np.broadcast_to(depth, tr.shape[:2]))  # (H+1, M, 3)
    conf = tracks.confidence[valid] if tracks.confidence is not None else np.ones(len(depth))

    clear = Marker(action=Marker.DELETEALL, ns=namespace)
    spheres = Marker(ns=namespace, id=0, type=Marker.SPHERE_LIST, action=Marker.ADD)
    lines = Marker(ns=namespace, id=1, type=Marker.LINE_LIST, action=Marker.ADD)
    for m in (spheres, lines):
        m.header.stamp, m.header.frame_id = stamp, tracks.frame_id
        m.pose.orientation.w = 1.0
    spheres.scale.x = spheres.scale.y = spheres.scale.z = 0.008
    lines.scale.x = 0.002
    for n in range(xyz.shape[1]):
        spheres.points.append(
            Point(x=float(xyz[0, n, 0]), y=float(xyz[0, n, 1]), z=float(xyz[0, n, 2]))
        )
        c = float(conf[n])
        spheres.colors.append(ColorRGBA(r=1.0 - c, g=c, b=0.2, a=1.0))
        for t in range(1, xyz.shape[0]):
            a = t / (xyz.shape[0] - 1)
            color = ColorRGBA(r=a, g=0.25, b=1.0 - a, a=0.9)
            for p in (xyz[t - 1, n], xyz[t, n]):
                lines.points.append(Point(x=float(p[0]), y=float(p[1]), z=float(p[2])))
                lines.colors.append(color)
    return MarkerArray(markers=[clear, spheres, lines])
