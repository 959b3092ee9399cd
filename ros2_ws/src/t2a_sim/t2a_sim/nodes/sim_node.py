"""``t2a_sim``: the MuJoCo test bed as a drop-in for realsense2_camera and the spot_ros2 driver.

Publishes what realsense2_camera publishes (``align_depth.enable=true``) and serves the spot_ros2
subset the stack uses, with the same names, types, QoS, encodings and frames, so the control node
cannot tell the sim from the robot. It mirrors the driver strictly (the facts and their upstream
sources: ``docs/spot_ros2_contract.md``):

- like the ``spot_ros2`` executable it publishes no ``joint_states``: it publishes the raw robot
  state on ``/t2a_sim/robot_state`` and ``t2a_sim_state_publisher`` (spot_ros2's
  ``state_publisher_node``) turns it into ``/<spot_name>/joint_states`` with prefixed names;
- each ``arm_joint_commands`` message (6 joints matched by name, prefixed or not) becomes one
  single-point joint move from where the arm is, at the default speed limits
  (``joint_move_max_velocity`` / ``_acceleration``): a target is not reached within a tick;
- arm motion needs the lease, motor power and standing; ``open_gripper``, ``close_gripper``,
  ``arm_stow`` and ``arm_unstow`` first power on and stand (blocking, like spot_wrapper's
  ``ensure_arm_power_and_stand``) and then wait for the motion, and every driver callback shares
  one mutually exclusive callback group, so joint commands queue behind a blocking service;
- ``stop``, ``release``, ``estop/gentle``, ``estop/hard``, ``estop/release`` as Trigger services.

Episode services (``/t2a_sim/reset``, ``/t2a_sim/episode_status``) are the sim's own. Sim time
follows the wall clock scaled by ``real_time_factor``; ``/clock`` is published so nodes started
with ``use_sim_time:=true`` follow it when it runs faster or slower.
"""

from __future__ import annotations

import dataclasses
import sys
import threading
import time

import numpy as np
import rclpy
from geometry_msgs.msg import Point, PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rosgraph_msgs.msg import Clock
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_msgs.msg import ColorRGBA
from std_srvs.srv import Trigger
from visualization_msgs.msg import Marker, MarkerArray

from t2a_common import ros_conv
from t2a_common.core import kinematics, spot_arm
from t2a_common.ros_params import declare_config
from t2a_msgs.srv import SimEpisodeStatus, SimReset
from t2a_sim.core import tasks
from t2a_sim.core.env import RealtimeClock, SimEnv
from t2a_sim.core.node_config import SimNodeConfig
from t2a_sim.nodes.state_publisher import RAW_STATE_TOPIC

OPTICAL_FRAME = "camera_color_optical_frame"

# The robot API's joint names, in t2a's joint order (spot_arm.ALL_JOINT_NAMES), and the legs
# (standing, fixed: the sim body does not move).
ROBOT_ARM_JOINTS = tuple(f"arm0.{n.removeprefix('arm_')}" for n in spot_arm.ALL_JOINT_NAMES)
ROBOT_LEG_JOINTS = tuple(
    f"{leg}.{j}" for leg in ("fl", "fr", "hl", "hr") for j in ("hx", "hy", "kn")
)
LEG_STANDING = np.tile([0.0, 0.8, -1.6], 4)  # (12,) rad
# spot_ros2 matches arm_joint_commands names by substring (spot_ros2.py arm_joint_cmd_callback).
COMMAND_KEYS = tuple(n.removeprefix("arm_") for n in spot_arm.ARM_JOINT_NAMES)


def single_point_move_duration(dq: np.ndarray, v_max: float, a_max: float) -> float:
    """Duration (s) of a minimum-time single-point joint move by ``dq`` (6,) rad: the joint
    furthest from its goal accelerates at ``a_max``, coasts at ``v_max`` and decelerates; the
    others are slowed so that all arrive together at rest (bosdyn ArmJointTrajectory docs)."""
    d = float(np.max(np.abs(dq)))
    if d <= v_max**2 / a_max:  # triangular: never reaches v_max
        return 2.0 * np.sqrt(d / a_max)
    return d / v_max + v_max / a_max


def single_point_move_fraction(t: float, duration: float, v_max: float, a_max: float) -> float:
    """Fraction in [0, 1] of the leading joint's path covered ``t`` s into the move."""
    if duration <= 0.0 or t >= duration:
        return 1.0
    if t <= 0.0:
        return 0.0
    t_acc = min(duration / 2.0, v_max / a_max)
    v_peak = a_max * t_acc
    d_total = v_peak * (duration - t_acc)  # area of the trapezoid (or triangle)
    if t < t_acc:
        d = 0.5 * a_max * t * t
    elif t <= duration - t_acc:
        d = 0.5 * a_max * t_acc**2 + v_peak * (t - t_acc)
    else:
        left = duration - t
        d = d_total - 0.5 * a_max * left * left
    return float(np.clip(d / d_total, 0.0, 1.0))


@dataclasses.dataclass(frozen=True)
class _Move:
    """A single-point joint move in progress (sim time)."""

    t0: float  # s
    q0: np.ndarray  # (6,) rad where it started
    q1: np.ndarray  # (6,) rad goal
    duration: float  # s


class SimNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("t2a_sim", **kwargs)
        cfg = self.cfg = declare_config(self, SimNodeConfig)
        self.env = SimEnv(cfg.sim)
        self._env_lock = threading.Lock()  # the env and the robot flags are touched only under it
        self.env.reset(cfg.task, cfg.split, cfg.seed)
        self._rt = RealtimeClock(self.env, rate=cfg.real_time_factor)
        self._next_camera = 0.0
        self._next_joints = 0.0
        self._next_arm_markers = 0.0
        self._claimed = self._powered = self._standing = self._estopped = False
        self._move: _Move | None = None
        self.frames_published = 0

        cam = f"/{cfg.camera_namespace}/{cfg.camera_name}"
        spot = f"/{cfg.spot_name}"
        self._pub_rgb = self.create_publisher(Image, f"{cam}/color/image_raw", 5)
        self._pub_info = self.create_publisher(CameraInfo, f"{cam}/color/camera_info", 5)
        self._pub_depth = self.create_publisher(Image, f"{cam}/aligned_depth_to_color/image_raw", 5)
        self._pub_depth_info = self.create_publisher(
            CameraInfo, f"{cam}/aligned_depth_to_color/camera_info", 5
        )
        self._pub_state = self.create_publisher(JointState, RAW_STATE_TOPIC, 10)
        self._pub_clock = self.create_publisher(Clock, "/clock", 10)
        self._pub_arm = self.create_publisher(MarkerArray, "/t2a_sim/arm_markers", 2)
        # The driver stand-in is a node of its own (named as spot_ros2's) spun by one thread
        # (main()): like spot_ros2's one MutuallyExclusiveCallbackGroup, a blocking service
        # holds the joint commands back, while physics and rendering (EGL is bound to one
        # thread) keep running on the main thread.
        # Not renamed by the process's __node/__ns remaps (those name the sim node).
        self.driver_node = Node(
            "spot_ros2", namespace=spot, context=self.context, use_global_arguments=False
        )
        driver = MutuallyExclusiveCallbackGroup()
        dn = self.driver_node
        dn.create_subscription(JointState, f"{spot}/arm_joint_commands", self._on_joints, 100,
                               callback_group=driver)  # fmt: skip
        dn.create_subscription(PoseStamped, f"{spot}/arm_pose_commands", self._on_pose, 100,
                               callback_group=driver)  # fmt: skip
        for name, handler in {
            "claim": self._claim,
            "release": self._release,
            "power_on": self._power_on,
            "stand": self._stand,
            # The sim's ready pose is the episode's start pose (sim.start_q): unstowing after a
            # reset leaves the scene as the episode (and its goal image) expects it.
            "arm_unstow": lambda: self._named_pose(np.asarray(cfg.sim.start_q), "unstowed"),
            "arm_stow": lambda: self._named_pose(spot_arm.STOW, "stowed"),
            "open_gripper": lambda: self._gripper(True),
            "close_gripper": lambda: self._gripper(False),
            "stop": self._stop,
            "estop/gentle": lambda: self._estop("gentle"),
            "estop/hard": lambda: self._estop("hard"),
            "estop/release": self._estop_release,
        }.items():
            dn.create_service(Trigger, f"{spot}/{name}", self._trigger(name, handler),
                              callback_group=driver)  # fmt: skip
        self.create_service(SimReset, "/t2a_sim/reset", self._on_reset)
        self.create_service(SimEpisodeStatus, "/t2a_sim/episode_status", self._on_status)
        self.create_timer(1.0 / cfg.physics_sync_hz, self._on_tick)
        self.get_logger().info(
            f"sim ready: {self._episode_text()}, camera {cfg.sim.width}x{cfg.sim.height} at "
            f"{cfg.camera_rate_hz:g} Hz on {cam}, arm under {spot} "
            f"({'strict' if cfg.strict else 'lenient'} spot_ros2 stand-in; joint_states come "
            f"from t2a_sim_state_publisher), real_time_factor {cfg.real_time_factor:g}"
        )

    # ------------------------------------------------------------------ time and sensors
    def _on_tick(self) -> None:
        frame = arm_q = None
        with self._env_lock:
            self._rt.sync(time.monotonic())
            t = self.env.time
            self._advance_move(t)
            stamp = ros_conv.sec_to_stamp(t)
            self._pub_clock.publish(Clock(clock=stamp))
            if t >= self._next_joints:
                self._next_joints = t + 1.0 / self.cfg.joint_state_rate_hz
                self._publish_robot_state(stamp)
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

    def _publish_robot_state(self, stamp) -> None:
        """The robot's kinematic state with the API's joint names (the state publisher renames)."""
        self._pub_state.publish(
            ros_conv.joint_state_msg(
                (*ROBOT_LEG_JOINTS, *ROBOT_ARM_JOINTS),
                np.concatenate([LEG_STANDING, self.env.joint_positions()]),
                np.concatenate([np.zeros(12), self.env.joint_velocities()]),
                np.concatenate([np.zeros(12), self.env.joint_efforts()]),
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

    # ------------------------------------------------------------------ arm motion
    def _start_move(self, q1: np.ndarray) -> float:
        """Begin a single-point joint move to ``q1`` (6,) rad from where the arm is (under the
        env lock); returns its duration (s)."""
        q1 = np.clip(np.asarray(q1, float), spot_arm.LOWER, spot_arm.UPPER)
        if not self.cfg.strict:
            self._move = None
            self.env.set_arm_targets(q1)
            return 0.0
        q0 = self.env.joint_positions()[:6]
        cfg = self.cfg
        duration = single_point_move_duration(
            q1 - q0, cfg.joint_move_max_velocity, cfg.joint_move_max_acceleration
        )
        self._move = _Move(self.env.time, q0, q1, duration)
        self._advance_move(self.env.time)
        return duration

    def _advance_move(self, t: float) -> None:
        move = self._move
        if move is None:
            return
        cfg = self.cfg
        s = single_point_move_fraction(
            t - move.t0, move.duration, cfg.joint_move_max_velocity, cfg.joint_move_max_acceleration
        )
        self.env.set_arm_targets(move.q0 + s * (move.q1 - move.q0))
        if s >= 1.0:
            self._move = None

    def _hold(self) -> None:
        """Stop any move and hold the measured joints (under the env lock)."""
        self._move = None
        self.env.set_arm_targets(self.env.joint_positions()[:6])

    def _wait_sim(self, seconds: float) -> None:
        """Block this (driver group) thread for ``seconds`` of sim time; physics keeps running."""
        with self._env_lock:
            until = self.env.time + seconds
        while True:
            with self._env_lock:
                if self.env.time >= until:
                    return
            time.sleep(0.005)

    # ------------------------------------------------------------------ arm commands
    def _refusal(self, what: str) -> str:
        """Why the robot would refuse an arm command now ('' = it accepts)."""
        if not self.cfg.strict:
            return ""
        if self._estopped:
            return f"{what}: the robot is estopped (estop/release, then power_on)"
        if not self._claimed:
            return f"{what}: no lease (call claim)"
        if not self._powered:
            return f"{what}: motors are off (call power_on)"
        if not self._standing:
            return f"{what}: the robot is not standing (call stand)"
        return ""

    def _on_joints(self, msg: JointState) -> None:
        # As spot_ros2: exactly 6 names, each arm joint found by substring (spot/arm_sh0, arm_sh0
        # and sh0 all match), a warning and nothing sent otherwise.
        if len(msg.name) != len(COMMAND_KEYS):
            self.get_logger().warning(
                f"arm_joint_commands: expected {len(COMMAND_KEYS)} joints, got {list(msg.name)}"
            )
            return
        q = {}
        for name, position in zip(msg.name, msg.position):
            for key in COMMAND_KEYS:
                if key in name:
                    q[key] = position
        missing = [k for k in COMMAND_KEYS if k not in q]
        if missing:
            self.get_logger().warning(f"arm_joint_commands: no value for joints {missing}")
            return
        target = np.array([q[k] for k in COMMAND_KEYS], float)
        if not np.isfinite(target).all():
            self.get_logger().error(f"arm_joint_commands with non-finite positions {target}")
            return
        with self._env_lock:
            why = self._refusal("arm_joint_commands")
            if not why:
                self._start_move(target)
        if why:
            self.get_logger().warning(f"ignored {why}")

    def _on_pose(self, msg: PoseStamped) -> None:
        if msg.header.frame_id not in ("body", "odom", "", f"{self.cfg.spot_name}/body"):
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
            why = self._refusal("arm_pose_commands")
            if not why:
                self._move = None
                reachable = self.env.set_hand_target(T)
        if why:
            self.get_logger().warning(f"ignored {why}")
        elif not reachable:
            self.get_logger().warning("arm_pose_commands target is out of reach; holding")

    # ------------------------------------------------------------------ Trigger services
    def _trigger(self, name: str, handler):
        def callback(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
            res.success, res.message = handler()
            self.get_logger().info(f"{name}: {res.message}")
            return res

        return callback

    def _claim(self) -> tuple[bool, str]:
        with self._env_lock:
            self._claimed = True
        return True, "lease claimed"

    def _release(self) -> tuple[bool, str]:
        with self._env_lock:
            self._claimed = False
        return True, "lease released"

    def _power_on(self) -> tuple[bool, str]:
        with self._env_lock:
            if self.cfg.strict and not self._claimed:
                return False, "claim the lease before power_on"
            if self._estopped:
                return False, "the robot is estopped: call estop/release first"
            self._powered = True
        return True, "motors on"

    def _stand(self) -> tuple[bool, str]:
        with self._env_lock:
            if self.cfg.strict and not (self._claimed and self._powered):
                return False, "stand needs the lease and motor power"
            standing = self._standing
        if not standing and self.cfg.strict:
            self._wait_sim(self.cfg.stand_duration_s)  # blocking_stand
        with self._env_lock:
            self._standing = True
        return True, "standing" if standing else "stood up"

    def _ensure_power_and_stand(self) -> tuple[bool, str]:
        """spot_wrapper's ensure_arm_power_and_stand: power on (needs the lease), stand."""
        ok, text = self._power_on()
        if not ok:
            return False, text
        return self._stand()

    def _named_pose(self, q: np.ndarray, text: str) -> tuple[bool, str]:
        ok, why = self._ensure_power_and_stand()
        if not ok:
            return False, why
        with self._env_lock:
            duration = self._start_move(q)
        if self.cfg.strict:
            self._wait_sim(duration + 0.2)  # wait_for_arm_command_to_complete
        return True, text

    def _gripper(self, open_: bool) -> tuple[bool, str]:
        ok, why = self._ensure_power_and_stand()
        if not ok:
            return False, why
        with self._env_lock:
            self.env.open_gripper() if open_ else self.env.close_gripper()
        if self.cfg.strict:
            self._wait_sim(self.cfg.gripper_duration_s)  # block_until_gripper_command_completes
        return True, "gripper open" if open_ else "gripper closed"

    def _stop(self) -> tuple[bool, str]:
        with self._env_lock:
            self._hold()
        return True, "holding the current joint positions"

    def _estop(self, kind: str) -> tuple[bool, str]:
        # The sim body cannot sit or fall: the arm holds where it is, and nothing moves until
        # estop/release, power_on and stand.
        with self._env_lock:
            self._hold()
            self._estopped, self._powered, self._standing = True, False, False
        return True, f"estop {kind}: motors off, holding"

    def _estop_release(self) -> tuple[bool, str]:
        with self._env_lock:
            self._estopped = False
        return True, "estop released (power_on to move again)"

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
            self._move = None
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
    """Spin the sim (physics, camera, episodes) on this thread and its spot_ros2 stand-in, whose
    services block for seconds of sim time, on a second one."""
    rclpy.init(args=sys.argv if args is None else args)
    sim = driver = driver_thread = None
    try:
        try:
            sim = SimNode()
        except ValueError as exc:
            rclpy.logging.get_logger("t2a_sim").fatal(str(exc))
            return 1
        driver = SingleThreadedExecutor()
        driver.add_node(sim.driver_node)

        def spin_driver() -> None:
            try:
                driver.spin()
            except ExternalShutdownException:
                pass

        driver_thread = threading.Thread(target=spin_driver, name="spot_ros2", daemon=True)
        driver_thread.start()
        executor = SingleThreadedExecutor()
        executor.add_node(sim)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Stop the spot_ros2 thread first: left spinning at interpreter exit it aborts the
        # process ("terminate called without an active exception") on Ctrl-C.
        if driver is not None:
            driver.shutdown(timeout_sec=5.0)
        if driver_thread is not None:
            driver_thread.join(timeout=5.0)
        if sim is not None:
            sim.driver_node.destroy_node()
            sim.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
