"""Planner parameters: one frozen config for lifting, the rigid fit and the end-effector plan."""

from __future__ import annotations

import dataclasses
import math

from t2a_common.core.config import check, param

ROBUST_LOSSES = ("cauchy", "huber")


@dataclasses.dataclass(frozen=True)
class PlannerConfig:
    """All parameters of ``t2a_planning``; the ROS node declares its parameters from these."""

    # Depth lookup for P0.
    depth_window_px: int = param(2, "half-size of the depth median window (px); 2 gives 5x5")
    min_depth_m: float = param(0.15, "depths below this are treated as no data (m)")
    max_depth_m: float = param(4.0, "depths above this are treated as no data (m)")
    min_valid_depth_fraction: float = param(
        0.5, "fraction of the depth window that must hold valid depth, else the point is a hole (1)"
    )
    depth_edge_ratio: float = param(
        0.03,
        "10-90 percentile depth spread in the window, as a fraction of its median depth, above "
        "which the point sits on a depth edge and is rejected (1)",
    )

    # Moving-point selection and robust initialisation.
    motion_threshold_px: float = param(
        3.0, "a point moves when its track leaves P0 by more than this at some step (px)"
    )
    min_moving_points: int = param(6, "fewest moving points with depth the fit accepts (points)")
    reach_center_m: tuple[float, ...] = param(
        (0.292, 0.0, 0.188), "body-frame centre of the arm's reach: Spot's arm_sh0 origin (m)"
    )
    reach_radius_m: float = param(
        1.3,
        "points lifted farther than this from reach_center_m cannot lie on a part the arm moves "
        "(arm reach 0.94 m plus the part's extent) and are dropped before the fit, so spurious "
        "background motion in predicted tracks cannot become the object (m; 0 = keep all)",
    )
    ransac_samples: int = param(24, "3-point pose hypotheses drawn per step (count)")
    ransac_score_points: int = param(
        48, "moving points used to score hypotheses before the full refinement (points)"
    )
    ransac_seed: int = param(0, "seed of the hypothesis sampler, for repeatable plans (1)")
    inlier_threshold_px: float = param(
        3.0, "reprojection error below which a point is an inlier at a step (px)"
    )
    min_inlier_step_fraction: float = param(
        0.75, "a moving point must be an inlier at this fraction of the steps to be kept (1)"
    )
    min_support: float = param(
        0.25,
        "fraction of the moving candidates that one rigid motion must explain, and of the moving "
        "points that must fit it at every step, else the fit fails (1)",
    )
    min_spread_ratio: float = param(
        0.02,
        "second over first principal extent of the moving 3D points below which they count as "
        "collinear (1)",
    )
    max_condition: float = param(
        1e7,
        "condition number of the pose information (rotation in rad, translation in units of "
        "depth) above which the pose counts as ambiguous (1)",
    )

    # Nonlinear refinement.
    robust_loss: str = param("cauchy", "robust loss on the reprojection error: cauchy | huber")
    robust_scale_px: float = param(2.0, "scale of the robust loss (px)")
    max_iterations: int = param(6, "Gauss-Newton iterations per refinement (count)")
    tolerance: float = param(1e-7, "stop when every pose update is below this (rad or m)")
    smoothness_weight: float = param(
        0.0,
        "weight of the second difference of the object motion over the horizon, relative to "
        "the reprojection term (1, 0 = off)",
    )

    # End-effector plan.
    standoff_m: float = param(0.10, "pre-grasp distance from the grasp pose along the normal (m)")
    normal_window_px: int = param(
        8, "half-size of the depth window for the surface normal at the grasp point (px)"
    )
    max_linear_speed_mps: float = param(0.25, "hand linear speed limit along the plan (m/s)")
    max_angular_speed_rps: float = param(0.8, "hand angular speed limit along the plan (rad/s)")
    min_step_duration_s: float = param(
        0.2, "shortest time between consecutive plan poses, the control period (s)"
    )
    grasp_duration_s: float = param(1.0, "time at the grasp pose to close the gripper (s)")

    # Grasp synthesis (t2a_planning.core.grasp); gripper sizes are the Spot hand's.
    grasp_synthesis: bool = param(
        True,
        "choose the grasp from the depth of the moving part (False: the paper's grasp, centre of "
        "the moving points with the current hand orientation)",
    )
    grasp_region_dilate_px: float = param(
        3.0, "growth of the moving points' convex hull that outlines the part in I0 (px)"
    )
    grasp_background_m: float = param(
        0.03, "region pixels deeper than their nearest moving points by more are background (m)"
    )
    grasp_min_cloud_points: int = param(30, "fewest depth pixels on the moving part (points)")
    grasp_min_valid_fraction: float = param(
        0.3, "fraction of the part's region that must hold valid depth (1)"
    )
    grasp_plane_tolerance_m: float = param(
        0.006, "distance from a fitted plane or cylinder that counts as on it (m)"
    )
    grasp_protrusion_m: float = param(
        0.012, "points standing out of the part's surface by more are handle candidates (m)"
    )
    grasp_min_handle_length_m: float = param(0.04, "shortest bar taken as a handle (m)")
    max_grasp_width_m: float = param(0.09, "widest part the open jaws take (m)")
    top_grasp_depth_m: float = param(0.03, "how far the fingers reach down a box's sides (m)")
    push_height_m: float = param(0.045, "lowest push contact above the part's base (m)")
    jaw_offset_m: float = param(0.012, "fixed jaw's inner face below the tool axis (m)")
    jaw_clearance_m: float = param(
        0.02,
        "gap planned between the fixed jaw and the part: the camera calibration error (about "
        "1-2 cm at the part) must not put the part under the fixed jaw, while the open finger "
        "has room above (m)",
    )
    grasp_depth_bias_m: float = param(
        0.01,
        "the tool point goes this far past the part's estimated centre along the approach, "
        "since the jaw tips reach only ~22 mm past it and a part further than estimated would "
        "slip out (m)",
    )
    grasp_turns_rad: tuple[float, ...] = param(
        (0.0, 0.15, -0.15, 0.3, -0.3, 0.45, -0.45, 0.6, -0.6),
        "turns of the approach about the part's axis tried per feature (the jaws stay across "
        "the part; the arm may reach one where another breaks a joint limit) (rad)",
    )
    jaw_reach_m: float = param(0.025, "jaw tips beyond the tool point along the approach (m)")
    grasp_max_joint_jump_rad: float = param(
        0.5, "largest joint change between neighbouring rehearsed poses (rad)"
    )
    grasp_joint_limit_margin_rad: float = param(
        0.06,
        "distance from every joint limit the rehearsal keeps (rad): a little more than the "
        "controller's safety margin (0.05), which its own IK keeps",
    )
    workspace_min_m: tuple[float, ...] = param(
        (0.35, -0.8, -0.45), "lower corner of the hand workspace box, body frame (m)"
    )
    workspace_max_m: tuple[float, ...] = param(
        (1.25, 0.8, 1.0), "upper corner of the hand workspace box, body frame (m)"
    )

    def __post_init__(self) -> None:
        for name in ("workspace_min_m", "workspace_max_m"):
            value = getattr(self, name)
            check(
                len(value) == 3 and all(math.isfinite(v) for v in value),
                f"{name} must be 3 finite numbers (m), got {value}",
            )
        check(
            all(lo < hi for lo, hi in zip(self.workspace_min_m, self.workspace_max_m)),
            f"workspace box is empty: min {self.workspace_min_m} m is not below "
            f"max {self.workspace_max_m} m on every axis",
        )
        for name in (
            "grasp_background_m",
            "grasp_plane_tolerance_m",
            "grasp_protrusion_m",
            "grasp_min_handle_length_m",
            "max_grasp_width_m",
            "jaw_reach_m",
            "grasp_max_joint_jump_rad",
        ):
            value = getattr(self, name)
            check(value > 0.0, f"{name} must be > 0, got {value}")
        for name in ("grasp_region_dilate_px", "top_grasp_depth_m", "push_height_m",
                     "grasp_joint_limit_margin_rad",
                     "jaw_offset_m", "jaw_clearance_m"):  # fmt: skip
            value = getattr(self, name)
            check(value >= 0.0, f"{name} must be >= 0, got {value}")
        check(
            self.grasp_min_cloud_points >= 10,
            f"grasp_min_cloud_points must be >= 10, got {self.grasp_min_cloud_points}",
        )
        check(
            0.0 < self.grasp_min_valid_fraction <= 1.0,
            f"grasp_min_valid_fraction must be in (0, 1], got {self.grasp_min_valid_fraction}",
        )
        check(
            len(self.reach_center_m) == 3 and all(math.isfinite(v) for v in self.reach_center_m),
            f"reach_center_m must be 3 finite numbers (m), got {self.reach_center_m}",
        )
        check(self.reach_radius_m >= 0, f"reach_radius_m must be >= 0 m, got {self.reach_radius_m}")
        check(
            self.depth_window_px >= 0, f"depth_window_px must be >= 0, got {self.depth_window_px}"
        )
        check(
            0.0 <= self.min_depth_m < self.max_depth_m,
            f"need 0 <= min_depth_m < max_depth_m, got {self.min_depth_m} and {self.max_depth_m}",
        )
        for name in ("min_valid_depth_fraction", "min_inlier_step_fraction", "min_support"):
            value = getattr(self, name)
            check(0.0 < value <= 1.0, f"{name} must be in (0, 1], got {value}")
        for name in (
            "depth_edge_ratio",
            "motion_threshold_px",
            "inlier_threshold_px",
            "robust_scale_px",
            "max_condition",
            "max_linear_speed_mps",
            "max_angular_speed_rps",
            "min_step_duration_s",
        ):
            value = getattr(self, name)
            check(value > 0.0, f"{name} must be > 0, got {value}")
        check(
            self.min_moving_points >= 4,
            f"min_moving_points must be >= 4 (P3P needs a 4th point "
            f"to pick its solution), got {self.min_moving_points}",
        )
        check(self.ransac_samples >= 1, f"ransac_samples must be >= 1, got {self.ransac_samples}")
        check(
            self.ransac_score_points >= 4,
            f"ransac_score_points must be >= 4, got {self.ransac_score_points}",
        )
        check(
            0.0 <= self.min_spread_ratio < 1.0,
            f"min_spread_ratio must be in [0, 1), got {self.min_spread_ratio}",
        )
        check(
            self.robust_loss in ROBUST_LOSSES,
            f"robust_loss must be one of {ROBUST_LOSSES}, got {self.robust_loss!r}",
        )
        check(self.max_iterations >= 1, f"max_iterations must be >= 1, got {self.max_iterations}")
        check(self.tolerance >= 0.0, f"tolerance must be >= 0, got {self.tolerance}")
        check(
            self.smoothness_weight >= 0.0,
            f"smoothness_weight must be >= 0, got {self.smoothness_weight}",
        )
        check(self.standoff_m >= 0.0, f"standoff_m must be >= 0 m, got {self.standoff_m}")
        check(
            self.normal_window_px >= 1,
            f"normal_window_px must be >= 1, got {self.normal_window_px}",
        )
        check(
            self.grasp_duration_s >= 0.0,
            f"grasp_duration_s must be >= 0 s, got {self.grasp_duration_s}",
        )
