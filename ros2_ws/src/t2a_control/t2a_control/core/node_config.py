"""Parameters of the residual_controller node, ROS-free so the stack description can check them
without starting rclpy (the node declares its ROS parameters from these dataclasses)."""

from __future__ import annotations

import dataclasses

import numpy as np

from t2a_common.core.config import check, nested, param
from t2a_common.core.geometry import SIM_CAMERA_QUAT, SIM_CAMERA_XYZ, pose_to_matrix
from t2a_control.core.controller import ControllerConfig

DEFAULT_POLICY = "models/residual_default"  # under the package share directory

DRIVERS = ("spot_ros2", "bosdyn")
ESTOP_MODES = ("external", "register")  # as bosdyn_driver.ESTOP_MODES, without importing bosdyn


@dataclasses.dataclass(frozen=True)
class BosdynConnectionConfig:
    """How ``driver: bosdyn`` reaches the robot. Empty values fall back to spot_ros2's
    environment variables (SPOT_IP, SPOT_PORT, SPOT_CERTIFICATE, BOSDYN_CLIENT_USERNAME)."""

    hostname: str = param("", "robot address; empty = $SPOT_IP")
    port: int = param(0, "robot's secure gRPC port; 0 = $SPOT_PORT, else 443")
    cert_path: str = param(
        "", "robot CA certificate file (glob); empty = $SPOT_CERTIFICATE or the SDK's"
    )
    username: str = param("", "robot user; empty = $BOSDYN_CLIENT_USERNAME")
    password_env: str = param(
        "BOSDYN_CLIENT_PASSWORD",
        "NAME of the environment variable that holds the robot password (never the password)",
    )
    estop: str = param(
        "external", "external: another client (tablet) holds the estop | register: hold one here"
    )
    take_lease: bool = param(False, "take the lease when another client (tablet) holds it")

    def __post_init__(self) -> None:
        check(0 <= self.port < 65536, f"bosdyn.port = {self.port}, expected 1..65535 (0 = default)")
        check(
            self.estop in ESTOP_MODES,
            f"bosdyn.estop = {self.estop!r}, expected one of {', '.join(ESTOP_MODES)}",
        )
        check(
            bool(self.password_env) and not any(c.isspace() for c in self.password_env),
            f"bosdyn.password_env = {self.password_env!r}, expected the name of an environment "
            "variable (e.g. BOSDYN_CLIENT_PASSWORD), not a password",
        )


@dataclasses.dataclass(frozen=True)
class ResidualControllerNodeConfig:
    """Parameters of the control node (the loop's own are under ``control.``)."""

    driver: str = param("spot_ros2", "arm backend: spot_ros2 (also t2a_sim) | bosdyn")
    spot_name: str = param("spot", "driver spot_ros2: namespace of its topics, /<spot_name>/...")
    bosdyn: BosdynConnectionConfig = nested(BosdynConnectionConfig, "driver bosdyn: connection")
    color_topic: str = param("/camera/camera/color/image_raw", "live colour image I_t")
    depth_topic: str = param(
        "/camera/camera/aligned_depth_to_color/image_raw",
        "aligned depth (watched: stale depth holds the arm; watchdog input depth)",
    )
    info_topic: str = param(
        "/camera/camera/color/camera_info", "camera_info (watched: watchdog input camera_info)"
    )
    body_frame_id: str = param("body", "frame of ee_goal")
    camera_xyz: tuple[float, ...] = param(
        SIM_CAMERA_XYZ, "T_body_cam translation (m), as the planner's: lifts P0 for the policy"
    )
    camera_quat_xyzw: tuple[float, ...] = param(
        SIM_CAMERA_QUAT, "T_body_cam rotation, quaternion x y z w (optical frame in body)"
    )
    policy_checkpoint: str = param(
        "",
        "policy directory (config.json + model.safetensors) for modes residual / absolute; '' = "
        f"the shipped residual policy (<share>/{DEFAULT_POLICY}; mode residual only)",
    )
    auto_start: bool = param(
        True, "run the start-up sequence (claim, power_on, stand, arm_unstow) when the node starts"
    )
    stow_on_exit: bool = param(False, "run the shutdown sequence (arm_stow, release) on exit")
    preview: bool = param(
        False, "show plans (tracks, plan, rviz) but move only after /t2a/execute (robot default)"
    )
    require_calibration: bool = param(
        False, "refuse to execute while camera_xyz/camera_quat_xyzw are t2a_sim's (robot: true)"
    )
    control: ControllerConfig = nested(ControllerConfig, "the control loop")

    def __post_init__(self) -> None:
        check(len(self.camera_xyz) == 3, f"camera_xyz needs 3 values (m), got {self.camera_xyz}")
        check(
            len(self.camera_quat_xyzw) == 4,
            f"camera_quat_xyzw needs 4 values, got {self.camera_quat_xyzw}",
        )
        check(
            self.driver in DRIVERS,
            f"driver = {self.driver!r}, expected one of {', '.join(DRIVERS)}",
        )
        check(
            self.control.mode != "absolute" or bool(self.policy_checkpoint),
            "mode 'absolute' needs policy_checkpoint (a policy trained with --action-mode "
            "absolute; only a residual policy is shipped)",
        )

    @property
    def T_body_cam(self) -> np.ndarray:
        return pose_to_matrix(self.camera_xyz, self.camera_quat_xyzw)

    @property
    def uncalibrated(self) -> str:
        """Why execution is refused for want of a calibration ('' = it is not)."""
        sim = pose_to_matrix(SIM_CAMERA_XYZ, SIM_CAMERA_QUAT)
        if self.require_calibration and np.allclose(self.T_body_cam, sim, atol=1e-6):
            return (
                "T_body_cam (camera_xyz, camera_quat_xyzw) is still t2a_sim's camera pose: "
                "calibrate the RealSense on the robot and pass its pose (docs/robot.md)"
            )
        return ""
