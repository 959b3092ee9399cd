"""``t2a_sim``: the MuJoCo test bed as a drop-in for realsense2_camera and the spot_ros2 arm.

Publishes what realsense2_camera publishes (``align_depth.enable=true``) and serves the spot_ros2
subset the stack uses, with the same names, types, encodings and frames, so the control node cannot
tell the sim from the robot. Episode services (``/t2a_sim/reset``, ``/t2a_sim/episode_status``)
are the sim's own. Sim time follows the wall clock scaled by ``real_time_factor``; ``/clock`` is
published so nodes started with ``use_sim_time:=true`` follow it when it runs faster or slower.
"""

from __future__ import annotations

import dataclasses
import threading
import time

import numpy as np
from geometry_msgs.msg import Point, PoseStamped
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import ColorRGBA
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from t2a_common import ros_conv
from t2a_common.core import kinematics, spot_arm
from t2a_common.core.config import check, nested, param
from t2a_common.node_main import run_node
from t2a_common.ros_params import declare_config
from t2a_msgs.srv import SimEpisodeStatus, SimReset
from t2a_sim.core import tasks
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import RealtimeClock, SimEnv

OPTICAL_FRAME = "camera_color_optical_frame"


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
    require_power: bool = param(
        True, "arm commands need claim + power_on first, like the spot_ros2 driver"
    )
    sim: SimConfig = nested(SimConfig, "physics, camera and grasping")

    def __post_init__(self) -> None:
        for name in ("camera_rate_hz", "joint_state_rate_hz", "physics_sync_hz"):
            check(getattr(self, name) > 0, f"{name} must be > 0 Hz, got {getattr(self, name)}")
        check(
            self.arm_marker_rate_hz >= 0,
            f"arm_marker_rate_hz must be >= 0 Hz (0 = off), got {self.arm_marker_rate_hz}",
        )
        check(
            self.real_time_factor > 0, f"real_time_factor must be > 0, got {self.real_time_factor}"
        )
        check(self.depth_scale > 0, f"depth_scale must be > 0 m, got {self.depth_scale}")
        check(
            self.task in tasks.TASKS,
            f"task {self.task!r} unknown, expected one of {list(tasks.TASKS)}",
        )
        check(
            self.split in tasks.SPLITS,
            f"split {self.split!r} unknown, expected one of {list(tasks.SPLITS)}",
        )


class SimNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("t2a_sim", **kwargs)
        cfg = self.cfg = declare_config(self, SimNodeConfig)
        self.env = SimEnv(cfg.sim)
        self._env_lock = threading.Lock()  # the env is touched only under it
        self.env.reset(cfg.task, cfg.split, cfg.seed)
        self._rt = RealtimeClock(self.env, rate=cfg.real_time_factor)
        self._next_camera = 0.0
        self._next_joints = 0.0
        self._next_arm_markers = 0.0
        self._claimed = self._powered = False
        self.frames_published = 0

        cam = f"/{cfg.camera_namespace}/{cfg.camera_name}"
        spot = f"/{cfg.spot_name}"
        self._pub_rgb = self.create_publisher(Image, f"{cam}/color/image_raw", 5)
        self._pub_info = self.create_publisher(CameraInfo, f"{cam}/color/camera_info", 5)
        self._pub_depth = self.create_publisher(Image, f"{cam}/aligned_depth_to_color/image_raw", 5)
        self._pub_depth_info = self.create_publisher(
            CameraInfo, f"{cam}/aligned_depth_to_color/camera_info", 5
        )
        self._pub_joints = self.create_publisher(JointState, f"{spot}/joint_states", 10)
        self._pub_clock = self.create_publisher(Clock, "/clock", 10)
        self._pub_arm = self.create_publisher(MarkerArray, "/t2a_sim/arm_markers", 2)
        self.create_subscription(JointState, f"{spot}/arm_joint_commands", self._on_joints, 10)
        self.create_subscription(PoseStamped, f"{spot}/arm_pose_commands", self._on_pose, 10)
        for name, handler in {
            "claim": self._claim,
            "power_on": self._power_on,
            "stand": lambda: (True, "standing (the sim body is static)"),
            "arm_unstow": lambda: self._move_arm(spot_arm.READY, "unstowed to the ready pose"),
            "arm_stow": lambda: self._move_arm(spot_arm.STOW, "stowed"),
            "open_gripper": lambda: self._gripper(True),
            "close_gripper": lambda: self._gripper(False),
            "stop": self._stop,
        }.items():
            self.create_service(Trigger, f"{spot}/{name}", self._trigger(name, handler))
        self.create_service(SimReset, "/t2a_sim/reset", self._on_reset)
        self.create_service(SimEpisodeStatus, "/t2a_sim/episode_status", self._on_status)
        self.create_timer(1.0 / cfg.physics_sync_hz, self._on_tick)
        self.get_logger().info(
            f"sim ready: {self._episode_text()}, camera {cfg.sim.width}x{cfg.sim.height} at "
            f"{cfg.camera_rate_hz:g} Hz on {cam}, arm under {spot}, "
            f"real_time_factor {cfg.real_time_factor:g}"
        )

    # ------------------------------------------------------------------ time and sensors
    def _on_tick(self) -> None:
        frame = arm_q = None
        with self._env_lock:
            self._rt.sync(time.monotonic())
            t = self.env.time
            stamp = ros_conv.sec_to_stamp(t)
            self._pub_clock.publish(Clock(clock=stamp))
            if t >= self._next_joints:
                self._next_joints = t + 1.0 / self.cfg.joint_state_rate_hz
                self._publish_joints(stamp)
            if self.cfg.arm_marker_rate_hz > 0 and t >= self._next_arm_markers:
                self._next_arm_markers = t + 1.0 / self.cfg.arm_marker_rate_hz
                arm_q = self.env.joint_positions()[:6]
            if t >= self._next_camera:
                self._next_camera = t + 1.0 / self.cfg.camera_rate_hz
                frame = (*self.env.render(), self.env.intrinsics)
        if arm_q is not None:
            self._pub_arm.publish(arm_markers(arm_q, stamp))
        if frame is not None:  # convert and publish outside the lock: commands keep flowing
            self._publish_camera(*frame, stamp)

    def _publish_joints(self, stamp) -> None:
        self._pub_joints.publish(
            ros_conv.joint_state_msg(
                spot_arm.ALL_JOINT_NAMES,
                self.env.joint_positions(),
                self.env.joint_velocities(),
                self.env.joint_efforts(),
                stamp,
            )
        )

    def _publish_camera(self, rgb, depth_m, intr, stamp) -> None:
        depth = ros_conv.meters_to_depth16(
            np.where(depth_m > 0, depth_m, np.nan), self.cfg.depth_scale
        )
        info = ros_conv.intrinsics_to_camera_info(intr, stamp, OPTICAL_FRAME)
        self._pub_rgb.publish(ros_conv.numpy_to_image(rgb, "rgb8", stamp, OPTICAL_FRAME))
        self._pub_depth.publish(ros_conv.numpy_to_image(depth, "16UC1", stamp, OPTICAL_FRAME))
        self._pub_info.publish(info)
        self._pub_depth_info.publish(info)
        self.frames_published += 1

    # ------------------------------------------------------------------ arm commands
    def _armed(self, what: str) -> bool:
        if self.cfg.require_power and not (self._claimed and self._powered):
            self.get_logger().warn(
                f"ignoring {what}: call claim and power_on first",
                throttle_duration_sec=2.0,
            )
            return False
        return True

    def _on_joints(self, msg: JointState) -> None:
        if not self._armed("arm_joint_commands"):
            return
        names = set(msg.name)
        if len(msg.name) != 6 or names != set(spot_arm.ARM_JOINT_NAMES):
            self.get_logger().error(
                f"arm_joint_commands must name exactly the 6 arm joints "
                f"{list(spot_arm.ARM_JOINT_NAMES)}, got {list(msg.name)}; ignored"
            )
            return
        try:
            q = ros_conv.joint_positions(msg, spot_arm.ARM_JOINT_NAMES)
        except ValueError as exc:
            self.get_logger().error(f"arm_joint_commands ignored: {exc}")
            return
        if not np.isfinite(q).all():
            self.get_logger().error(f"arm_joint_commands with non-finite positions {q}; ignored")
            return
        with self._env_lock:
            self.env.set_arm_targets(q)

    def _on_pose(self, msg: PoseStamped) -> None:
        if not self._armed("arm_pose_commands"):
            return
        if msg.header.frame_id not in ("body", "odom", ""):
            self.get_logger().error(
                f"arm_pose_commands in frame {msg.header.frame_id!r}; expected body or odom"
            )
            return
        try:
            T = ros_conv.pose_to_matrix_msg(msg.pose)
        except ValueError as exc:
            self.get_logger().error(f"arm_pose_commands ignored: {exc}")
            return
        with self._env_lock:  # the body does not move in the sim, so odom == body
            reachable = self.env.set_hand_target(T)
        if not reachable:
            self.get_logger().warn("arm_pose_commands target is out of reach; holding")

    # ------------------------------------------------------------------ Trigger services
    def _trigger(self, name: str, handler):
        def callback(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
            res.success, res.message = handler()
            self.get_logger().info(f"{name}: {res.message}")
            return res

        return callback

    def _claim(self) -> tuple[bool, str]:
        self._claimed = True
        return True, "lease claimed"

    def _power_on(self) -> tuple[bool, str]:
        if not self._claimed:
            return False, "claim the lease before power_on"
        self._powered = True
        return True, "motors on"

    def _move_arm(self, q: np.ndarray, text: str) -> tuple[bool, str]:
        if not self._armed("arm command"):
            return False, "not claimed and powered"
        with self._env_lock:
            self.env.set_arm_targets(q)
        return True, text

    def _gripper(self, open_: bool) -> tuple[bool, str]:
        if not self._armed("gripper command"):
            return False, "not claimed and powered"
        with self._env_lock:
            self.env.open_gripper() if open_ else self.env.close_gripper()
        return True, "gripper opening" if open_ else "gripper closing"

    def _stop(self) -> tuple[bool, str]:
        with self._env_lock:
            self.env.set_arm_targets(self.env.joint_positions()[:6])
        return True, "holding the current joint positions"

    # ------------------------------------------------------------------ episodes
    def _episode_text(self) -> str:
        s = self.env.spec
        return f"task {s.task}, split {s.split}, seed {s.seed}"

    def _on_reset(self, req: SimReset.Request, res: SimReset.Response) -> SimReset.Response:
        split = req.split or self.env.spec.split
        task = req.task
        if split not in tasks.SPLITS:
            res.success, res.message = (
                False,
                f"unknown split {split!r}, expected {list(tasks.SPLITS)}",
            )
            return res
        allowed = tasks.tasks_of(split)
        if not task:
            task = allowed[int(req.seed) % len(allowed)]
        if task not in allowed:
            res.success = False
            res.message = f"task {task!r} is not in split {split}: {list(allowed)}"
            return res
        with self._env_lock:
            self.env.reset(task, split, int(req.seed))
            self._rt = RealtimeClock(self.env, rate=self.cfg.real_time_factor)
            self._next_camera = self._next_joints = self._next_arm_markers = 0.0
        res.success, res.task, res.split, res.seed = True, task, split, int(req.seed)
        res.message = f"reset to {self._episode_text()}"
        self.get_logger().info(res.message)
        return res

    def _on_status(
        self, _req: SimEpisodeStatus.Request, res: SimEpisodeStatus.Response
    ) -> SimEpisodeStatus.Response:
        with self._env_lock:
            ok, errors = self.env.task_success()
            res.sim_time_s = self.env.time
            res.grasped = bool(self.env.grasped())
            s = self.env.spec
        res.success = ok
        res.task, res.split, res.seed = s.task, s.split, int(s.seed)
        res.error_names = list(errors)
        res.error_values = [float(v) for v in errors.values()]
        detail = ", ".join(f"{k} {v:.4f}" for k, v in errors.items())
        res.message = f"{'success' if ok else 'not yet'}: {detail}"
        return res


def arm_markers(q: np.ndarray, stamp, frame_id: str = "body") -> MarkerArray:
    """The arm as rviz/Foxglove markers (there is no TF or robot_description in the sim): a line
    through the joint origins to the tool frame, a sphere at each. ``q``: (6,) arm joints, rad."""
    p = kinematics.link_frames(q)[:, :3, 3]  # (7, 3) link_sh0 .. link_wr1 then tool, m, body
    links = Marker(ns="arm", id=0, type=Marker.LINE_STRIP, action=Marker.ADD)
    joints = Marker(ns="arm", id=1, type=Marker.SPHERE_LIST, action=Marker.ADD)
    for m, size, color in ((links, 0.03, (1.0, 0.8, 0.1)), (joints, 0.05, (0.2, 0.2, 0.2))):
        m.header.stamp, m.header.frame_id = stamp, frame_id
        m.pose.orientation.w = 1.0
        m.scale.x = m.scale.y = m.scale.z = size
        m.color = ColorRGBA(r=color[0], g=color[1], b=color[2], a=1.0)
        m.points = [Point(x=float(x), y=float(y), z=float(z)) for x, y, z in p]
    return MarkerArray(markers=[links, joints])


def main(args: list[str] | None = None) -> int:
    return run_node(SimNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
