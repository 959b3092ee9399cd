"""Data passed between packages, as plain validated arrays (the numpy side of t2a_msgs).

perception produces a :class:`PointTrackSet`; planning turns it into an :class:`EEPlan`; control
executes the plan. ``t2a_common.ros_conv`` converts these to and from t2a_msgs, so cores never
see messages and every consumer agrees on shapes and frames.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from t2a_common.core.geometry import Intrinsics

# Mirrors t2a_msgs/Plan STATUS_* (kept equal by a test).
PLAN_OK = 0
PLAN_TOO_FEW_POINTS = 1
PLAN_NO_MOTION = 2
PLAN_DEGENERATE = 3
PLAN_FIT_FAILED = 4
PLAN_UNREACHABLE = 5
PLAN_BAD_INPUT = 6


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a, copy=True)
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True, eq=False)
class PointTrackSet:
    """Predicted pixel tracks of N query points over H future steps, for one goal."""

    tracks_px: np.ndarray  # (H+1, N, 2) float32 pixels (u, v); t = 0 is P0
    depth_m: np.ndarray  # (N,) float32 metric depth of P0 along z; NaN = none
    intrinsics: Intrinsics  # camera the pixels live in
    confidence: np.ndarray | None = None  # (N,) in [0, 1], None = not provided
    goal_id: str = ""
    stamp_s: float = 0.0  # time of I0 (s)
    frame_id: str = "camera_color_optical_frame"

    def __post_init__(self) -> None:
        t = np.asarray(self.tracks_px, dtype=np.float32)
        if t.ndim != 3 or t.shape[2] != 2 or t.shape[0] < 2 or t.shape[1] < 1:
            raise ValueError(f"tracks_px must be (H+1 >= 2, N >= 1, 2), got {t.shape}")
        if not np.isfinite(t).all():
            raise ValueError("tracks_px contains NaN or inf")
        d = np.asarray(self.depth_m, dtype=np.float32).reshape(-1)
        if d.shape != (t.shape[1],):
            raise ValueError(
                f"depth_m must have {t.shape[1]} entries (one per point), got {d.shape}"
            )
        object.__setattr__(self, "tracks_px", _readonly(t))
        object.__setattr__(self, "depth_m", _readonly(d))
        if self.confidence is not None:
            c = np.asarray(self.confidence, dtype=np.float32).reshape(-1)
            if c.size == 0:
                c = None
            elif c.shape != d.shape:
                raise ValueError(f"confidence must have {d.size} entries, got {c.shape}")
            object.__setattr__(self, "confidence", None if c is None else _readonly(c))

    @property
    def horizon(self) -> int:
        """H, the number of predicted future steps."""
        return self.tracks_px.shape[0] - 1

    @property
    def num_points(self) -> int:
        return self.tracks_px.shape[1]


@dataclasses.dataclass(frozen=True, eq=False)
class EEPlan:
    """An end-effector plan in the body frame, or a failure status with its reason."""

    status: int  # PLAN_* code; anything but PLAN_OK carries no poses
    message: str
    ee_poses: np.ndarray  # (T, 4, 4) T_body_tool per step; (0, 4, 4) when not OK
    times_s: np.ndarray  # (T,) time from start of execution (s), non-decreasing
    pregrasp: np.ndarray  # (4, 4) T_body_tool of the standoff before grasping
    grasp_step: int = 0  # index into ee_poses where the gripper closes
    object_transforms: np.ndarray | None = None  # (T, 4, 4) T_cam_obj_t, identity at t = 0
    inlier_ratio: np.ndarray | None = None  # (T,) in [0, 1]
    reprojection_error_px: np.ndarray | None = None  # (T,) px
    reachable: np.ndarray | None = None  # (T,) bool
    confidence: float = 0.0  # [0, 1]
    moving_point_indices: np.ndarray | None = None  # (M,) int indices into the tracks
    goal_id: str = ""
    stamp_s: float = 0.0
    frame_id: str = "body"
    camera_frame_id: str = "camera_color_optical_frame"

    def __post_init__(self) -> None:
        poses = np.asarray(self.ee_poses, dtype=float).reshape(-1, 4, 4)
        times = np.asarray(self.times_s, dtype=float).reshape(-1)
        if self.status == PLAN_OK:
            if poses.shape[0] == 0:
                raise ValueError("an OK plan needs at least one end-effector pose")
            if times.shape != (poses.shape[0],):
                raise ValueError(f"times_s must have {poses.shape[0]} entries, got {times.shape}")
            if not (np.isfinite(poses).all() and np.isfinite(times).all()):
                raise ValueError("an OK plan has NaN or inf poses or times")
            if np.any(np.diff(times) < 0):
                raise ValueError("times_s must be non-decreasing")
            if not 0 <= self.grasp_step < poses.shape[0]:
                raise ValueError(f"grasp_step {self.grasp_step} outside 0..{poses.shape[0] - 1}")
        object.__setattr__(self, "ee_poses", _readonly(poses))
        object.__setattr__(self, "times_s", _readonly(times))
        object.__setattr__(self, "pregrasp", _readonly(np.asarray(self.pregrasp, dtype=float)))
        for name in ("object_transforms", "inlier_ratio", "reprojection_error_px", "reachable",
                     "moving_point_indices"):  # fmt: skip
            value = getattr(self, name)
            if value is not None:
                object.__setattr__(self, name, _readonly(np.asarray(value)))

    @property
    def ok(self) -> bool:
        return self.status == PLAN_OK

    @property
    def num_steps(self) -> int:
        return self.ee_poses.shape[0]

    @classmethod
    def failed(cls, status: int, message: str, goal_id: str = "", stamp_s: float = 0.0) -> EEPlan:
        """A plan that carries only its failure status and reason."""
        if status == PLAN_OK:
            raise ValueError("a failed plan needs a non-OK status")
        return cls(status, message, np.zeros((0, 4, 4)), np.zeros(0), np.eye(4), 0,
                   goal_id=goal_id, stamp_s=stamp_s)  # fmt: skip
