"""Conversions between standard ROS messages and numpy, written once for every package.

cv_bridge is not installable from PyPI (and its PyPI namesake is a broken ROS 1 port), so images
are converted here: rgb8, bgr8, rgba8, bgra8, mono8, mono16, 16UC1 and 32FC1, honouring the row
``step`` (rows may be padded) and ``is_bigendian``. The readers and the pixel decoding are the
ROS-free t2a_common.core.sensor_readers and sensor_codec, which the bag reader shares.

t2a_msgs' PointTracks and Plan are converted here too (to t2a_common.core.types), because
perception, planning and control all read or write them; messages only one package uses are
converted in that package's own ``ros_conv.py``.
"""

from __future__ import annotations

import numpy as np
from builtin_interfaces.msg import Duration, Time
from geometry_msgs.msg import Point, Pose, Quaternion, Transform, Vector3
from sensor_msgs.msg import CameraInfo, Image, JointState

from t2a_common.core.geometry import Intrinsics, matrix_to_pose, pose_to_matrix
from t2a_common.core.sensor_codec import (  # noqa: F401  (re-exported for the nodes)
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ENCODINGS,
    ImageConversionError,
)

# The sensor_msgs readers are shared with the ROS-free bag reader; re-exported for the nodes.
from t2a_common.core.sensor_readers import (  # noqa: F401
    camera_info_to_intrinsics,
    depth_to_meters,
    describe,
    image_fields,
    image_to_numpy,
    image_to_rgb,
    joint_positions,
    stamp_to_sec,
)
from t2a_common.core.types import EEPlan, PointTrackSet
from t2a_msgs.msg import Plan, PointTracks


def numpy_to_image(
    array: np.ndarray, encoding: str, stamp: Time | None = None, frame_id: str = ""
) -> Image:
    """Array -> Image message (native byte order, tightly packed rows).

    The array's dtype and channel count must match ``encoding`` (no silent conversion).
    """
    msg = Image(**image_fields(array, encoding))
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    return msg


def meters_to_depth16(depth_m: np.ndarray, depth_scale: float = 0.001) -> np.ndarray:
    """(H, W) metres (NaN/inf/<=0 = no data) -> uint16 in units of ``depth_scale`` (0 = no data)."""
    d = np.asarray(depth_m, dtype=np.float64) / depth_scale
    valid = np.isfinite(d) & (d > 0)
    out = np.zeros(d.shape, np.uint16)
    out[valid] = np.clip(np.rint(d[valid]), 1, np.iinfo(np.uint16).max)
    return out


# --------------------------------------------------------------------------- camera info


def intrinsics_to_camera_info(
    intr: Intrinsics, stamp: Time | None = None, frame_id: str = ""
) -> CameraInfo:
    """Intrinsics -> CameraInfo with K, P (no stereo baseline), R = identity."""
    msg = CameraInfo()
    if stamp is not None:
        msg.header.stamp = stamp
    msg.header.frame_id = frame_id
    msg.width, msg.height = intr.width, intr.height
    msg.distortion_model = intr.distortion_model
    msg.d = [float(x) for x in intr.distortion]
    msg.k = [intr.fx, 0.0, intr.cx, 0.0, intr.fy, intr.cy, 0.0, 0.0, 1.0]
    msg.r = [1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0]
    msg.p = [intr.fx, 0.0, intr.cx, 0.0, 0.0, intr.fy, intr.cy, 0.0, 0.0, 0.0, 1.0, 0.0]
    return msg


# --------------------------------------------------------------------------- poses


def pose_to_matrix_msg(msg: Pose) -> np.ndarray:
    """geometry_msgs/Pose -> 4x4."""
    p, q = msg.position, msg.orientation
    return pose_to_matrix([p.x, p.y, p.z], [q.x, q.y, q.z, q.w])


def matrix_to_pose_msg(T: np.ndarray) -> Pose:
    """4x4 -> geometry_msgs/Pose."""
    t, q = matrix_to_pose(T)
    return Pose(
        position=Point(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        orientation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


def transform_to_matrix_msg(msg: Transform) -> np.ndarray:
    """geometry_msgs/Transform -> 4x4."""
    t, q = msg.translation, msg.rotation
    return pose_to_matrix([t.x, t.y, t.z], [q.x, q.y, q.z, q.w])


def matrix_to_transform_msg(T: np.ndarray) -> Transform:
    """4x4 -> geometry_msgs/Transform."""
    t, q = matrix_to_pose(T)
    return Transform(
        translation=Vector3(x=float(t[0]), y=float(t[1]), z=float(t[2])),
        rotation=Quaternion(x=float(q[0]), y=float(q[1]), z=float(q[2]), w=float(q[3])),
    )


# --------------------------------------------------------------------------- joints


def joint_state_msg(
    names: tuple[str, ...] | list[str],
    position,
    velocity=None,
    effort=None,
    stamp: Time | None = None,
) -> JointState:
    """JointState for ``names`` with positions (rad or m) and optional velocities and efforts."""
    msg = JointState(name=list(names), position=[float(v) for v in position])
    if velocity is not None:
        msg.velocity = [float(v) for v in velocity]
    if effort is not None:
        msg.effort = [float(v) for v in effort]
    if stamp is not None:
        msg.header.stamp = stamp
    return msg


# --------------------------------------------------------------------------- time


def sec_to_stamp(t: float) -> Time:
    """Seconds -> builtin_interfaces/Time."""
    ns = round(t * 1e9)
    return Time(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def sec_to_duration(t: float) -> Duration:
    """Seconds -> builtin_interfaces/Duration."""
    ns = round(t * 1e9)
    return Duration(sec=ns // 1_000_000_000, nanosec=ns % 1_000_000_000)


def duration_to_sec(d: Duration) -> float:
    """builtin_interfaces/Duration -> seconds (float)."""
    return d.sec + d.nanosec * 1e-9


# --------------------------------------------------------------------------- t2a_msgs


def point_tracks_to_msg(tracks: PointTrackSet, extra: dict | None = None) -> PointTracks:
    """PointTrackSet -> t2a_msgs/PointTracks. ``extra`` may set sampler_steps, num_samples,
    inference_time_s."""
    msg = PointTracks()
    msg.header.stamp = sec_to_stamp(tracks.stamp_s)
    msg.header.frame_id = tracks.frame_id
    msg.camera_info = intrinsics_to_camera_info(
        tracks.intrinsics, msg.header.stamp, tracks.frame_id
    )
    msg.goal_id = tracks.goal_id
    msg.num_points = tracks.num_points
    msg.horizon = tracks.horizon
    msg.tracks_px = tracks.tracks_px.reshape(-1).tolist()
    msg.depth_m = tracks.depth_m.tolist()
    msg.confidence = [] if tracks.confidence is None else tracks.confidence.tolist()
    for key, value in (extra or {}).items():
        setattr(msg, key, value)
    return msg


def msg_to_point_tracks(msg: PointTracks) -> PointTrackSet:
    """t2a_msgs/PointTracks -> PointTrackSet (checks that the flattened arrays fit N and H)."""
    n, h = int(msg.num_points), int(msg.horizon)
    flat = np.asarray(msg.tracks_px, dtype=np.float32)
    if flat.size != (h + 1) * n * 2:
        raise ValueError(
            f"PointTracks has {flat.size} track values, expected (H+1)*N*2 = {(h + 1) * n * 2} "
            f"for N={n}, H={h}"
        )
    return PointTrackSet(
        tracks_px=flat.reshape(h + 1, n, 2),
        depth_m=np.asarray(msg.depth_m, dtype=np.float32),
        intrinsics=camera_info_to_intrinsics(msg.camera_info),
        confidence=np.asarray(msg.confidence, dtype=np.float32) if len(msg.confidence) else None,
        goal_id=msg.goal_id,
        stamp_s=stamp_to_sec(msg.header.stamp),
        frame_id=msg.header.frame_id,
    )


def ee_plan_to_msg(plan: EEPlan) -> Plan:
    """EEPlan -> t2a_msgs/Plan (a failed plan carries status and message only)."""
    msg = Plan(goal_id=plan.goal_id, status=plan.status, message=plan.message)
    msg.header.stamp = sec_to_stamp(plan.stamp_s)
    msg.header.frame_id = plan.frame_id
    msg.camera_frame_id = plan.camera_frame_id
    msg.confidence = float(plan.confidence)
    if plan.object_transforms is not None:
        msg.object_transforms = [matrix_to_transform_msg(T) for T in plan.object_transforms]
    if plan.moving_point_indices is not None:
        msg.moving_point_indices = [int(i) for i in plan.moving_point_indices]
    for name in ("inlier_ratio", "reprojection_error_px"):
        value = getattr(plan, name)
        if value is not None:
            setattr(msg, name, [float(v) for v in value])
    if plan.reachable is not None:
        msg.reachable = [bool(v) for v in plan.reachable]
    if plan.ok:
        msg.ee_poses = [matrix_to_pose_msg(T) for T in plan.ee_poses]
        msg.times_from_start = [sec_to_duration(float(t)) for t in plan.times_s]
        msg.pregrasp_pose = matrix_to_pose_msg(plan.pregrasp)
        msg.grasp_step = int(plan.grasp_step)
    return msg


def msg_to_ee_plan(msg: Plan) -> EEPlan:
    """t2a_msgs/Plan -> EEPlan."""
    optional = {
        "object_transforms": np.array([transform_to_matrix_msg(t) for t in msg.object_transforms])
        if msg.object_transforms
        else None,
        "inlier_ratio": np.asarray(msg.inlier_ratio) if len(msg.inlier_ratio) else None,
        "reprojection_error_px": np.asarray(msg.reprojection_error_px)
        if len(msg.reprojection_error_px)
        else None,
        "reachable": np.asarray(msg.reachable, dtype=bool) if len(msg.reachable) else None,
        "moving_point_indices": np.asarray(msg.moving_point_indices, dtype=int)
        if len(msg.moving_point_indices)
        else None,
    }
    common = {
        "goal_id": msg.goal_id,
        "stamp_s": stamp_to_sec(msg.header.stamp),
        "frame_id": msg.header.frame_id or "body",
        "camera_frame_id": msg.camera_frame_id,
        "confidence": float(msg.confidence),
        **optional,
    }
    if msg.status != Plan.STATUS_OK:
        return EEPlan(
            msg.status, msg.message, np.zeros((0, 4, 4)), np.zeros(0), np.eye(4), **common
        )
    return EEPlan(
        status=msg.status,
        message=msg.message,
        ee_poses=np.array([pose_to_matrix_msg(p) for p in msg.ee_poses]).reshape(-1, 4, 4),
        times_s=np.array([duration_to_sec(d) for d in msg.times_from_start]),
        pregrasp=pose_to_matrix_msg(msg.pregrasp_pose),
        grasp_step=int(msg.grasp_step),
        **common,
    )
