"""End-effector plan from the object motion: approach, grasp, then follow ``a_t = T_t e1``.

Section 2.3 of the paper: the hand first moves to ``e1``, the centre of the moving 3D points with
the current hand orientation, grasps, and then every plan pose is the object motion applied to
the grasp pose. Here the object motion, fitted in the camera frame, is conjugated into the body
frame with the camera extrinsics; a pre-grasp pose backs off from ``e1`` along the local surface
normal so that the final approach is a straight move into the surface.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np

from t2a_common.core import se3
from t2a_common.core.geometry import Intrinsics, invert
from t2a_common.core.types import EEPlan
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.lifting import surface_normal
from t2a_planning.core.rigid import MotionFit
from t2a_planning.core.status import Status

Reachable = Callable[[np.ndarray], bool]  # T_body_tool (4, 4) -> can the arm get there?


def always_reachable(T_body_tool: np.ndarray) -> bool:
    """Default reachability check: accepts every pose (the control package plugs in its IK)."""
    return True


def _readonly(a: np.ndarray) -> np.ndarray:
    a = np.array(a)  # own copy, so freezing it cannot touch the caller's array
    a.flags.writeable = False
    return a


@dataclasses.dataclass(frozen=True)
class Plan:
    """Open-loop plan for one goal: everything ``t2a_msgs/Plan`` carries, as arrays.

    Poses are ``T_body_tool`` (4x4, body frame); ``object_transforms`` are ``T_cam_obj_t`` in the
    camera optical frame. Per-step arrays have H+1 entries (step 0 = grasp, object at rest). When
    ``status`` is UNREACHABLE the poses are kept for display but must not be executed; for other
    failures the per-step arrays are empty.
    """

    status: Status
    message: str
    object_transforms: np.ndarray  # (H+1, 4, 4) T_cam_obj_t
    ee_poses: np.ndarray  # (H+1, 4, 4) T_body_tool_t
    times_from_start: np.ndarray  # (H+1,) s, when ee_poses[t] should be reached
    start_pose: np.ndarray  # (4, 4) T_body_tool when planning (time 0)
    pregrasp_pose: np.ndarray  # (4, 4) T_body_tool
    pregrasp_time: float  # s from start
    grasp_step: int  # index into ee_poses where the gripper closes
    grasp_duration_s: float  # s the hand waits at the grasp pose while the gripper closes
    approach_direction: np.ndarray  # (3,) unit, body frame: pre-grasp -> grasp
    inlier_ratio: np.ndarray  # (H+1,)
    reprojection_error_px: np.ndarray  # (H+1,) px
    reachable: np.ndarray  # (H+1,) bool
    pregrasp_reachable: bool
    confidence: float  # [0, 1]
    moving_point_indices: np.ndarray  # (M,) int, indices into the tracked points
    grasp_kind: str = ""  # feature the grasp takes (t2a_planning.core.grasp), "" = the centroid

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if isinstance(value, np.ndarray):
                object.__setattr__(self, f.name, _readonly(value))

    @property
    def ok(self) -> bool:
        return self.status == Status.OK

    @property
    def horizon(self) -> int:
        """H, the number of steps after the grasp (0 for a failed plan)."""
        return max(len(self.ee_poses) - 1, 0)

    @classmethod
    def failure(cls, status: Status, message: str, fit: MotionFit | None = None) -> Plan:
        """A plan with no poses, only the reason (and the moving points, if known)."""
        moving = fit.moving_indices if fit is not None else np.zeros(0, dtype=int)
        return cls(
            status=status,
            message=message,
            object_transforms=np.zeros((0, 4, 4)),
            ee_poses=np.zeros((0, 4, 4)),
            times_from_start=np.zeros(0),
            start_pose=np.eye(4),
            pregrasp_pose=np.eye(4),
            pregrasp_time=0.0,
            grasp_step=0,
            grasp_duration_s=0.0,
            approach_direction=np.zeros(3),
            inlier_ratio=np.zeros(0),
            reprojection_error_px=np.zeros(0),
            reachable=np.zeros(0, dtype=bool),
            pregrasp_reachable=False,
            confidence=0.0,
            moving_point_indices=moving,
        )

    def to_ee_plan(
        self,
        goal_id: str,
        stamp_s: float = 0.0,
        camera_frame_id: str = "camera_color_optical_frame",
    ) -> EEPlan:
        """The wire type (what ``t2a_msgs/Plan`` carries). An UNREACHABLE plan keeps its per-step
        flags and object motion for display, but no executable poses: control never sees them."""
        common = {
            "object_transforms": self.object_transforms if len(self.object_transforms) else None,
            "inlier_ratio": self.inlier_ratio if len(self.inlier_ratio) else None,
            "reprojection_error_px": self.reprojection_error_px
            if len(self.reprojection_error_px)
            else None,
            "reachable": self.reachable if len(self.reachable) else None,
            "confidence": float(self.confidence),
            "moving_point_indices": self.moving_point_indices,
            "goal_id": goal_id,
            "stamp_s": stamp_s,
            "camera_frame_id": camera_frame_id,
        }
        if not self.ok:
            return EEPlan(int(self.status), self.message, np.zeros((0, 4, 4)), np.zeros(0),
                          np.eye(4), **common)  # fmt: skip
        return EEPlan(
            status=int(self.status),
            message=self.message,
            ee_poses=self.ee_poses,
            times_s=self.times_from_start,
            pregrasp=self.pregrasp_pose,
            grasp_step=self.grasp_step,
            **common,
        )

    def waypoints(self) -> tuple[np.ndarray, np.ndarray]:
        """Every timed pose from the start: (K,) times in s and (K, 4, 4) poses.

        start, pre-grasp, grasp, the grasp again after the gripper closed, then steps 1..H.
        """
        if len(self.ee_poses) == 0:
            return np.zeros(0), np.zeros((0, 4, 4))
        g = self.grasp_step
        t_closed = self.times_from_start[g] + self.grasp_duration_s
        times = np.r_[
            0.0,
            self.pregrasp_time,
            self.times_from_start[: g + 1],
            t_closed,
            self.times_from_start[g + 1 :],
        ]
        poses = np.concatenate(
            [
                self.start_pose[None],
                self.pregrasp_pose[None],
                self.ee_poses[: g + 1],
                self.ee_poses[g : g + 1],
                self.ee_poses[g + 1 :],
            ]
        )
        return times, poses


def _segment_time(T_a: np.ndarray, T_b: np.ndarray, config: PlannerConfig) -> float:
    """Shortest time for a straight SE(3) move that keeps both speed limits, s."""
    linear = float(np.linalg.norm(T_b[:3, 3] - T_a[:3, 3]))
    angular = float(se3.rotation_angle(T_a[:3, :3].T @ T_b[:3, :3]))
    return max(
        config.min_step_duration_s,
        linear / config.max_linear_speed_mps,
        angular / config.max_angular_speed_rps,
    )


def _approach_normal(
    points_cam: np.ndarray,
    centre_cam: np.ndarray,
    config: PlannerConfig,
    depth: np.ndarray | None,
    intrinsics: Intrinsics | None,
) -> np.ndarray:
    """Unit surface normal at the grasp point in the camera frame, pointing towards the camera.

    From the depth image when there is one; else from the moving points themselves (the normal
    of their best plane); else the viewing ray.
    """
    if depth is not None and intrinsics is not None:
        n = surface_normal(depth, intrinsics, centre_cam, config)
        if n is not None:
            return n
    towards_camera = -centre_cam / np.linalg.norm(centre_cam)
    if len(points_cam) >= 3:
        _, s, vt = np.linalg.svd(points_cam - centre_cam, full_matrices=False)
        if s[1] > 0 and s[2] < 0.3 * s[1]:  # flat enough for the plane normal to mean something
            n = vt[2]
            return n if n @ towards_camera >= 0 else -n
    return towards_camera


def build_ee_plan(
    fit: MotionFit,
    points_cam: np.ndarray,
    T_body_cam: np.ndarray,
    T_body_tool: np.ndarray,
    config: PlannerConfig | None = None,
    *,
    depth: np.ndarray | None = None,
    intrinsics: Intrinsics | None = None,
    reachable: Reachable | None = None,
    grasp: tuple[np.ndarray, np.ndarray] | None = None,
    grasp_kind: str = "",
    grasp_message: str = "",
) -> Plan:
    """Hand poses, timing and reachability for a fitted object motion.

    fit: from :func:`t2a_planning.core.rigid.estimate_object_motion`; points_cam: (N, 3) P0 in
    the camera frame (the same array the fit used). T_body_cam: camera extrinsics (4, 4);
    T_body_tool: current hand pose (4, 4). depth / intrinsics: the aligned depth image (m) used
    for the surface normal at the grasp point. reachable: ``T_body_tool -> bool`` for every pose.
    grasp: (T_body_grasp, T_body_pregrasp) chosen by :mod:`t2a_planning.core.grasp`; without it
    the grasp is the paper's e1 (centre of the moving points, current hand orientation).
    grasp_kind / grasp_message: the chosen feature and why, carried into the plan.
    """
    config = config or PlannerConfig()
    reachable = reachable or always_reachable
    if not fit.ok:
        return Plan.failure(fit.status, fit.message, fit)
    for name, T in (("T_body_cam", T_body_cam), ("T_body_tool", T_body_tool)):
        if not se3.is_rigid(T):
            return Plan.failure(Status.BAD_INPUT, f"{name} is not a rigid 4x4 transform: {T}", fit)
    T_body_cam = np.asarray(T_body_cam, dtype=float)
    T_body_tool = np.asarray(T_body_tool, dtype=float)

    if grasp is not None:
        T_body_grasp, T_body_pregrasp = (np.asarray(T, dtype=float) for T in grasp)
        normal_body = -T_body_grasp[:3, 0]  # the tool's x axis is the approach
    else:
        P_m = np.asarray(points_cam, dtype=float)[fit.moving]  # (M, 3)
        centre_cam = P_m.mean(axis=0)
        normal_cam = _approach_normal(P_m, centre_cam, config, depth, intrinsics)
        # e1: centre of the moving points with the current hand orientation (paper, 2.3).
        T_body_grasp = T_body_tool.copy()
        T_body_grasp[:3, 3] = T_body_cam[:3, :3] @ centre_cam + T_body_cam[:3, 3]
        normal_body = T_body_cam[:3, :3] @ normal_cam
        T_body_pregrasp = T_body_grasp.copy()
        T_body_pregrasp[:3, 3] += config.standoff_m * normal_body

    # a_t = T_t e1 with the object motion moved from the camera frame into the body frame.
    T_body_obj = T_body_cam @ fit.T_cam_obj @ invert(T_body_cam)  # (H+1, 4, 4)
    ee = T_body_obj @ T_body_grasp  # (H+1, 4, 4)
    if not np.all(np.isfinite(ee)):
        return Plan.failure(Status.FIT_FAILED, "end-effector poses are not finite", fit)

    grasp_step = 0  # grasp first, then follow the object (the paper's open-loop plan)
    pregrasp_time = _segment_time(T_body_tool, T_body_pregrasp, config)
    times = np.zeros(len(ee))
    times[0] = pregrasp_time + _segment_time(T_body_pregrasp, ee[0], config)
    for k in range(1, len(ee)):
        dwell = config.grasp_duration_s if k - 1 == grasp_step else 0.0
        times[k] = times[k - 1] + dwell + _segment_time(ee[k - 1], ee[k], config)

    flags = np.array([bool(reachable(T)) for T in ee])
    pre_ok = bool(reachable(T_body_pregrasp))
    status = Status.OK
    message = f"{fit.message}; {grasp_message}" if grasp_message else fit.message
    if not (np.all(flags) and pre_ok):
        bad = np.flatnonzero(~flags).tolist()
        status = Status.UNREACHABLE
        message = (
            f"unreachable: plan steps {bad}" + ("" if pre_ok else " and the pre-grasp pose")
            if bad
            else "unreachable: the pre-grasp pose"
        )
    return Plan(
        status=status,
        message=message,
        object_transforms=fit.T_cam_obj,
        ee_poses=ee,
        times_from_start=times,
        start_pose=T_body_tool,
        pregrasp_pose=T_body_pregrasp,
        pregrasp_time=pregrasp_time,
        grasp_step=grasp_step,
        grasp_duration_s=config.grasp_duration_s,
        approach_direction=-normal_body,
        inlier_ratio=fit.inlier_ratio,
        reprojection_error_px=fit.reprojection_error_px,
        reachable=flags,
        pregrasp_reachable=pre_ok,
        confidence=fit.confidence,
        moving_point_indices=fit.moving_indices,
        grasp_kind=grasp_kind,
    )


def sample_trajectory(plan: Plan, dt: float) -> tuple[np.ndarray, np.ndarray]:
    """Dense poses along the plan every ``dt`` s: (K,) times and (K, 4, 4) ``T_body_tool``.

    Between waypoints the position moves linearly and the orientation by slerp, so each segment
    keeps the constant speeds the timing was built from.
    """
    if dt <= 0:
        raise ValueError(f"dt must be > 0 s, got {dt}")
    times, poses = plan.waypoints()
    if len(times) == 0:
        return np.zeros(0), np.zeros((0, 4, 4))
    grid = np.append(np.arange(0.0, times[-1] - 1e-9, dt), times[-1])  # always ends at the end
    out = np.zeros((len(grid), 4, 4))
    seg = np.clip(np.searchsorted(times, grid, side="right") - 1, 0, len(times) - 2)
    for k in np.unique(seg):
        sel = seg == k
        span = times[k + 1] - times[k]
        s = np.clip((grid[sel] - times[k]) / span, 0.0, 1.0) if span > 0 else np.ones(sel.sum())
        out[sel] = se3.interpolate(poses[k], poses[k + 1], s)
    return grid, out
