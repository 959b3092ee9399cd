"""Parameters of the track_predictor node, ROS-free so the stack description can check them without
starting rclpy (the node declares its ROS parameters from this dataclass)."""

from __future__ import annotations

import dataclasses

from t2a_common.core.config import check, nested, param
from t2a_perception.core.goal_check import GoalCheckConfig
from t2a_perception.core.predictor import POINT_MODES

DEFAULT_MODEL = "models/track_default"  # under the package share directory


@dataclasses.dataclass(frozen=True)
class TrackPredictorConfig:
    """Parameters of the track_predictor node."""

    checkpoint: str = param(
        "", f"track model directory; '' = the shipped default (<share>/{DEFAULT_MODEL})"
    )
    device: str = param("cpu", "torch device (cpu, cuda, cuda:1, ...)")
    torch_threads: int = param(0, "CPU threads for inference; 0 = torch's default")
    color_topic: str = param("/camera/camera/color/image_raw", "colour image (rgb8/bgr8)")
    depth_topic: str = param(
        "/camera/camera/aligned_depth_to_color/image_raw", "depth aligned to colour (16UC1 mm)"
    )
    info_topic: str = param("/camera/camera/color/camera_info", "colour camera_info")
    num_points: int = param(400, "query points P0 per goal (grid mode: a square number)")
    point_mode: str = param(
        "change", "how P0 is placed: change (most where I0 and the goal differ) | grid | random"
    )
    roi_px: tuple[int, ...] = param(
        (), "optional mask for P0: u_min v_min u_max v_max (px, inclusive); () = whole image"
    )
    sampler: str = param("ddim", "ddim (fast, deterministic) | ddpm (all diffusion steps)")
    sampler_steps: int = param(10, "DDIM steps")
    num_samples: int = param(4, "hypotheses K drawn per goal; their spread gives confidence")
    sync_slop_s: float = param(0.02, "max colour/depth stamp difference to pair them (s)")
    max_frame_age_s: float = param(1.0, "a goal needs a camera frame received this recently (s)")
    min_goal_size_px: int = param(32, "smallest accepted goal image side (px)")
    overlay_stride: int = param(2, "draw every n-th track in tracks/overlay")
    goal_check: GoalCheckConfig = nested(
        GoalCheckConfig, "which goals set_goal refuses before predicting (core/goal_check.py)"
    )
    preempt_states: tuple[str, ...] = param(
        ("approach", "grasp", "execute", "release", "hold"),
        "controller states (on status_topic) in which a new goal is refused unless the request "
        "sets preempt; hold only while a goal is active",
    )
    status_topic: str = param("/t2a/status", "the controller's status (which goal is active)")
    status_timeout_s: float = param(
        2.0, "a status older than this (s) says nothing: the controller is gone or not started"
    )

    def __post_init__(self) -> None:
        check(self.num_points >= 1, f"num_points must be >= 1, got {self.num_points}")
        check(
            self.point_mode in POINT_MODES,
            f"point_mode must be one of {POINT_MODES}, got {self.point_mode!r}",
        )
        check(
            self.sampler in ("ddim", "ddpm"), f"sampler must be ddim or ddpm, got {self.sampler!r}"
        )
        check(self.sampler_steps >= 1, f"sampler_steps must be >= 1, got {self.sampler_steps}")
        check(self.num_samples >= 1, f"num_samples must be >= 1, got {self.num_samples}")
        check(self.sync_slop_s >= 0, f"sync_slop_s must be >= 0 s, got {self.sync_slop_s}")
        check(
            self.max_frame_age_s > 0, f"max_frame_age_s must be > 0 s, got {self.max_frame_age_s}"
        )
        check(self.torch_threads >= 0, f"torch_threads must be >= 0, got {self.torch_threads}")
        check(
            len(self.roi_px) in (0, 4)
            and (
                not self.roi_px
                or (self.roi_px[0] <= self.roi_px[2] and self.roi_px[1] <= self.roi_px[3])
            ),
            f"roi_px must be () or u_min v_min u_max v_max with min <= max, got {self.roi_px}",
        )
        check(self.overlay_stride >= 1, f"overlay_stride must be >= 1, got {self.overlay_stride}")
