"""Parameters of the sim node and of the spot_ros2 state publisher stand-in, ROS-free so the stack
description can check them without starting rclpy (the nodes declare their ROS parameters from
these dataclasses)."""

from __future__ import annotations

import dataclasses

from t2a_common.core.config import check, nested, param
from t2a_sim.core import tasks
from t2a_sim.core.config import SimConfig


@dataclasses.dataclass(frozen=True)
class SimNodeConfig:
    """Parameters of the sim node (the physics and camera ones are under ``sim.``)."""

    spot_name: str = param("spot", "namespace of the spot_ros2 interfaces: /<spot_name>/...")
    camera_namespace: str = param("camera", "realsense2_camera camera_namespace")
    camera_name: str = param("camera", "realsense2_camera camera_name")
    camera_rate_hz: float = param(30.0, "colour + aligned depth publish rate (Hz, sim time)")
    joint_state_rate_hz: float = param(50.0, "joint_states publish rate (Hz, sim time)")
    arm_marker_rate_hz: float = param(
        10.0, "/t2a_sim/arm_markers (the arm for rviz/Foxglove) rate (Hz, sim time); 0 = off"
    )
    physics_sync_hz: float = param(200.0, "how often physics is caught up to the clock (Hz)")
    real_time_factor: float = param(1.0, "sim seconds per wall second (2.0 = twice as fast)")
    depth_scale: float = param(0.001, "metres per unit of the 16UC1 depth image (RealSense: mm)")
    task: str = param("drawer_open", "task of the first episode (t2a_sim.core.tasks.TASKS)")
    split: str = param("MG", "split of the first episode: MG, G, CG or TG")
    seed: int = param(0, "seed of the first episode")
    strict: bool = param(
        True,
        "mirror spot_ros2 strictly (lease, power, stand; single-point moves at the speed limits; "
        "blocking gripper/stow services); false: targets apply at once (debugging only)",
    )
    joint_move_max_velocity: float = param(
        1.0,
        "rad/s, the speed cap of a single-point arm_joint_commands move (the robot's default is "
        "not published; measure it: docs/robot.md)",
    )
    joint_move_max_acceleration: float = param(
        5.0, "rad/s^2, the acceleration cap of a single-point move (robot default, assumed)"
    )
    stand_duration_s: float = param(1.5, "how long stand blocks when the robot sits (s, sim time)")
    gripper_duration_s: float = param(
        1.0, "how long open_gripper/close_gripper block after power and stand (s, sim time)"
    )
    sim: SimConfig = nested(SimConfig, "physics, camera and grasping")

    def __post_init__(self) -> None:
        for name in ("camera_rate_hz", "joint_state_rate_hz", "physics_sync_hz",
                     "joint_move_max_velocity", "joint_move_max_acceleration"):  # fmt: skip
            check(getattr(self, name) > 0, f"{name} must be > 0 Hz, got {getattr(self, name)}")
        check(
            self.arm_marker_rate_hz >= 0,
            f"arm_marker_rate_hz must be >= 0 Hz (0 = off), got {self.arm_marker_rate_hz}",
        )
        check(
            self.real_time_factor > 0, f"real_time_factor must be > 0, got {self.real_time_factor}"
        )
        check(self.depth_scale > 0, f"depth_scale must be > 0 m, got {self.depth_scale}")
        for name in ("stand_duration_s", "gripper_duration_s"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0 s, got {getattr(self, name)}")
        check(
            self.task in tasks.TASKS,
            f"task {self.task!r} unknown, expected one of {list(tasks.TASKS)}",
        )
        check(
            self.split in tasks.SPLITS,
            f"split {self.split!r} unknown, expected one of {list(tasks.SPLITS)}",
        )


@dataclasses.dataclass(frozen=True)
class StatePublisherConfig:
    """Parameters of the state publisher stand-in (spot_ros2's names)."""

    spot_name: str = param("spot", "robot name: publishes /<spot_name>/joint_states")
    frame_prefix: str = param(
        "", "joint name prefix; '' = spot_ros2's default '<spot_name>/' (use '/' for none)"
    )

    @property
    def prefix(self) -> str:
        """The prefix joints are named with (spot_ros2: ``frame_prefix`` or ``spot_name/``)."""
        if self.frame_prefix == "/":
            return ""
        return self.frame_prefix or (f"{self.spot_name}/" if self.spot_name else "")
