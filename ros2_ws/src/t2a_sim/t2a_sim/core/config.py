"""The one configuration of the simulated Spot-arm test bed (physics, camera, grasping, scene).

Every field is a ROS parameter of the sim node and a key of ``config/sim.yaml``. All positions and
orientations are in the Spot ``body`` frame, which is also the MuJoCo world frame here: Spot does
not move during manipulation, so the floor simply sits ``body_height`` below the body origin.
"""

from __future__ import annotations

import dataclasses
import math

from t2a_common.core.config import check, param

GRASP_MODES = ("weld", "friction")
GRASP_CHECKS = ("strict", "distance")


@dataclasses.dataclass(frozen=True)
class SimConfig:
    """Physics, camera, grasping and scene settings of :class:`t2a_sim.core.env.SimEnv`."""

    # physics
    timestep: float = param(0.002, "physics step (s)")
    arm_kp: tuple[float, ...] = param(
        (1500.0, 1500.0, 1000.0, 400.0, 400.0, 300.0),
        "position servo stiffness of arm_sh0..arm_wr1 (N m/rad)",
    )
    arm_max_torque: tuple[float, ...] = param(
        (150.0, 150.0, 100.0, 40.0, 40.0, 30.0), "servo torque limits of arm_sh0..arm_wr1 (N m)"
    )
    gripper_kp: float = param(25.0, "finger servo stiffness (N m/rad)")
    gripper_max_torque: float = param(8.0, "finger torque limit, sets the squeeze force (N m)")
    gripper_speed: float = param(4.0, "finger speed limit (rad/s)")
    speed_scale: float = param(1.0, "fraction of spot_arm.MAX_JOINT_SPEED the servos may use")
    start_q: tuple[float, ...] = param(
        (0.0, -1.57, 1.87, 0.0, 0.1, 0.0),
        "arm joints at reset (rad): hand raised above the table so no object starts in contact",
    )
    body_height: float = param(0.52, "body origin above the floor (m), Spot's stand height")
    table_height: float = param(0.40, "table top above the floor (m)")

    # camera: a RealSense D435 colour stream on the front of the body
    width: int = param(640, "image width (px)")
    height: int = param(480, "image height (px)")
    hfov_deg: float = param(69.0, "horizontal field of view (deg)")
    # On a bracket at the front right of the body, turned in: the arm comes down from above the
    # body's centre line, and seen from the side it hides far less of the object than from below.
    cam_pos: tuple[float, ...] = param((0.45, -0.14, 0.06), "camera centre in body (m)")
    cam_pitch_deg: float = param(14.0, "camera tilt below the horizon (deg)")
    cam_yaw_deg: float = param(14.0, "camera turned left of straight ahead (deg)")
    cam_jitter_m: float = param(0.01, "per-episode camera position jitter, uniform +- (m)")
    cam_jitter_deg: float = param(1.5, "per-episode camera orientation jitter, uniform +- (deg)")
    near: float = param(0.05, "near clip plane (m)")
    far: float = param(8.0, "far clip plane (m); depth beyond reads as 0 = no data")

    # grasping
    grasp_mode: str = param("weld", "weld (grasp locks on) | friction (fingers and contacts)")
    grasp_check: str = param(
        "strict",
        "when a close welds (weld mode): strict (the part lies between the open jaws, in front of "
        "the palm, and the jaws close across its thin side) | distance (the tool point is within "
        "grasp_radius of the part's surface, whatever the hand's orientation)",
    )
    grasp_tolerance: float = param(
        0.005, "strict check: slack of the jaw region (tips, sides, fixed jaw face) (m)"
    )
    grasp_max_angle_deg: float = param(
        30.0,
        "strict check: largest tilt of the closing direction from across the part (a bar's or "
        "bottle's axis normal, a box face's normal) (deg)",
    )
    grasp_radius: float = param(
        0.02, "distance check: a close grasps when the tool is this near the part's surface (m)"
    )
    gripper_closed_below: float = param(
        -0.15, "finger targets above this angle count as a close command (rad, 0 = shut)"
    )

    # scene randomisation
    max_distractors: int = param(3, "upper bound of static distractor objects on the table")

    def __post_init__(self) -> None:
        check(0 < self.timestep <= 0.01, f"timestep must be in (0, 0.01] s, got {self.timestep}")
        for name in ("arm_kp", "arm_max_torque", "start_q"):
            value = getattr(self, name)
            check(len(value) == 6, f"{name} needs 6 values (one per arm joint), got {len(value)}")
        check(min(self.arm_kp) > 0, f"arm_kp must be > 0, got {self.arm_kp}")
        check(self.speed_scale > 0, f"speed_scale must be > 0, got {self.speed_scale}")
        check(len(self.cam_pos) == 3, f"cam_pos needs 3 values (m), got {self.cam_pos}")
        check(
            self.width > 0 and self.height > 0,
            f"image size must be positive, got {self.width}x{self.height}",
        )
        check(0 < self.hfov_deg < 170, f"hfov_deg must be in (0, 170), got {self.hfov_deg}")
        check(0 < self.near < self.far, f"need 0 < near < far, got {self.near}, {self.far}")
        check(
            self.grasp_mode in GRASP_MODES,
            f"grasp_mode {self.grasp_mode!r} unknown, expected one of {GRASP_MODES}",
        )
        check(
            self.grasp_check in GRASP_CHECKS,
            f"grasp_check {self.grasp_check!r} unknown, expected one of {GRASP_CHECKS}",
        )
        check(self.grasp_tolerance >= 0, f"grasp_tolerance must be >= 0 m: {self.grasp_tolerance}")
        check(
            0 < self.grasp_max_angle_deg < 90,
            f"grasp_max_angle_deg must be in (0, 90) deg, got {self.grasp_max_angle_deg}",
        )
        check(
            self.table_height < self.body_height,
            f"table_height {self.table_height} m must be below body_height {self.body_height} m",
        )
        check(self.max_distractors >= 0, f"max_distractors must be >= 0: {self.max_distractors}")

    @property
    def fovy_deg(self) -> float:
        """Vertical field of view (deg) that gives ``hfov_deg`` with square pixels."""
        half = math.tan(math.radians(self.hfov_deg) / 2.0) * self.height / self.width
        return math.degrees(2.0 * math.atan(half))

    @property
    def table_z(self) -> float:
        """Table top in the body frame (m)."""
        return self.table_height - self.body_height
