"""Parameters of the planner node, ROS-free so the stack description can check them without
starting rclpy (the node declares its ROS parameters from this dataclass)."""

from __future__ import annotations

import dataclasses

import numpy as np

from t2a_common.core.config import check, nested, param
from t2a_common.core.geometry import SIM_CAMERA_QUAT, SIM_CAMERA_XYZ, pose_to_matrix
from t2a_planning.core.config import PlannerConfig


@dataclasses.dataclass(frozen=True)
class PlannerNodeConfig:
    """Parameters of the planner node (the solver's own are under ``planner.``)."""

    spot_name: str = param("spot", "namespace of spot_ros2's joint_states: /<spot_name>/...")
    camera_frame_id: str = param("camera_color_optical_frame", "frame of the tracks' camera")
    body_frame_id: str = param("body", "frame of the published hand poses")
    camera_xyz: tuple[float, ...] = param(SIM_CAMERA_XYZ, "T_body_cam translation (m)")
    camera_quat_xyzw: tuple[float, ...] = param(
        SIM_CAMERA_QUAT, "T_body_cam rotation, quaternion x y z w (optical frame in body)"
    )
    depth_topic: str = param(
        "/camera/camera/aligned_depth_to_color/image_raw",
        "aligned depth (16UC1 mm / 32FC1 m); '' = use only the tracks' per-point depths",
    )
    depth_match_s: float = param(0.05, "max stamp difference between I0 and its depth image (s)")
    depth_scale: float = param(0.001, "metres per unit of a 16UC1 depth image")
    joint_state_wait_s: float = param(
        2.0, "tracks that arrive before any joint_states wait this long for them, then fail (s)"
    )
    max_joint_state_age_s: float = param(
        1.0, "hand pose from joint_states older than this: refuse (s)"
    )
    check_reachability: bool = param(True, "check every plan pose with the arm's IK")
    planner: PlannerConfig = nested(PlannerConfig, "solver and plan parameters")

    def __post_init__(self) -> None:
        check(len(self.camera_xyz) == 3, f"camera_xyz needs 3 values (m), got {self.camera_xyz}")
        check(
            len(self.camera_quat_xyzw) == 4,
            f"camera_quat_xyzw needs 4 values, got {self.camera_quat_xyzw}",
        )
        check(self.depth_match_s >= 0, f"depth_match_s must be >= 0 s, got {self.depth_match_s}")
        check(self.depth_scale > 0, f"depth_scale must be > 0, got {self.depth_scale}")
        check(
            self.max_joint_state_age_s > 0,
            f"max_joint_state_age_s must be > 0 s, got {self.max_joint_state_age_s}",
        )

    @property
    def T_body_cam(self) -> np.ndarray:
        return pose_to_matrix(self.camera_xyz, self.camera_quat_xyzw)
