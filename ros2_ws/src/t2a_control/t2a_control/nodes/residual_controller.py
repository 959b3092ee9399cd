"""``residual_controller``: the 5 Hz loop from plan (+ residual policy) to arm joint goals.

Every tick: latest joint states, colour image and plan, and the receive times of the aligned depth
and camera_info (watched only) -> ``Controller.tick`` (policy correction, safety filter, IK,
watchdog over ``control.watchdog.inputs``, state machine) -> joint goals streamed to the arm driver,
gripper calls when the wanted state changes, ``ee_goal`` and ``status`` published. ``/t2a/stop``
holds the arm and drops the plan (an estop if the driver cannot stop); ``/t2a/estop`` drops the plan
and e-stops the robot (spot_ros2 ``estop/gentle``). With ``auto_start`` the start-up sequence
(claim, power_on, stand, arm_unstow) runs when the node starts, and with ``stow_on_exit`` the
shutdown sequence (arm_stow, release) when it stops. In ``preview`` mode (the robot profile's
default) a plan is only shown until the operator calls ``/t2a/execute``; ``require_calibration``
refuses to execute while T_body_cam is still the simulator's camera pose.

The arm backend is the ``driver`` parameter: ``spot_ros2`` (the default: the spot_ros2 driver's
topics and Trigger services, which t2a_sim serves too) or ``bosdyn`` (straight to the robot with
bosdyn-client; connection under ``bosdyn.*``, the password only ever from the environment
variable that ``bosdyn.password_env`` names).
"""

from __future__ import annotations

import os
import sys
import threading
from pathlib import Path

import numpy as np
import rclpy
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from rclpy.signals import SignalHandlerOptions
from sensor_msgs.msg import CameraInfo, Image
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.ros_params import declare_config
from t2a_control.core.controller import ACTIVE_STATES, Command, Controller, Observation
from t2a_control.core.driver import SHUTDOWN, STARTUP, LiveArmDriver, run_sequence
from t2a_control.core.node_config import (
    DEFAULT_POLICY,
    ResidualControllerNodeConfig,
)
from t2a_control.drivers.spot_ros2 import SpotRos2Driver
from t2a_msgs.msg import ControlStatus, Plan, PointTracks


def resolve_policy_checkpoint(path: str) -> Path:
    """The policy directory a ``policy_checkpoint`` parameter names ('' = the shipped default)."""
    if path:
        return Path(path).expanduser()
    try:
        return Path(get_package_share_directory("t2a_control")) / DEFAULT_POLICY
    except PackageNotFoundError:
        return Path(__file__).resolve().parents[2] / DEFAULT_POLICY


class ResidualControllerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("residual_controller", namespace="t2a", **kwargs)
        cfg = self.cfg = declare_config(self, ResidualControllerNodeConfig)
        policy = None
        if cfg.control.mode != "open_loop":
            import torch

            from t2a_control.core.policy_runtime import PolicyRunner  # torch only when needed

            # One thread: on a loaded 2-core CPU a second one made inference ~6x slower (OpenMP
            # barrier waits), and the 5 Hz loop shares the machine with the other nodes.
            torch.set_num_threads(1)
            path = resolve_policy_checkpoint(cfg.policy_checkpoint)
            policy = PolicyRunner(path, T_body_cam=cfg.T_body_cam)
            trained = policy.policy_config.action_mode
            if trained != cfg.control.mode:
                raise ValueError(
                    f"policy {path} predicts {trained} actions but control.mode is "
                    f"{cfg.control.mode!r}; use a policy trained with --action-mode "
                    f"{cfg.control.mode}"
                )
            self.get_logger().info(f"policy {path} ({trained})")
        self.controller = Controller(cfg.control, policy)
        self.driver = self._make_driver()
        self._image: Image | None = None
        self._image_received = float("nan")
        # receive times (node clock, s) of the other watched camera inputs
        self._received = {"depth": float("nan"), "camera_info": float("nan")}
        self._goal_image: np.ndarray | None = None
        self._goal_stamp_s = 0.0  # header stamp of the goal image: its tracks' I0 stamp
        self._goal_error = ""  # why the latest goal image is unusable
        # The tick, the plan and stop callbacks run in different groups (threads); the lock keeps
        # a stop or a new plan from landing in the middle of a tick (and a tick's command from
        # reaching the arm after a stop).
        self._lock = threading.Lock()
        self._tracks = None
        self._plan_id: str | None = None
        self._gripper_open: bool | None = None
        self._pending = None  # preview: the plan waiting for /t2a/execute
        self._closing = False  # shutting down: no more ticks (no command may follow the stow)
        self._started = threading.Event()  # the start-up sequence is done
        self._startup_note = "start-up sequence not run (auto_start false)"
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        # The camera has a group of its own: the plan (lease and power-on) and stop callbacks
        # wait on the driver for seconds, and the watchdog must keep seeing every frame.
        self.create_subscription(Image, cfg.color_topic, self._on_image, 2,
                                 callback_group=MutuallyExclusiveCallbackGroup())  # fmt: skip
        # Depth and camera_info are only watched (the planner used them for this plan): a dead
        # depth stream holds the arm like a dead colour stream. Same depth/QoS as the planner's.
        camera = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, cfg.depth_topic, self._receiver("depth"), 5,
                                 callback_group=camera)  # fmt: skip
        self.create_subscription(CameraInfo, cfg.info_topic, self._receiver("camera_info"), 5,
                                 callback_group=camera)  # fmt: skip
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Plan, "plan", self._on_plan, latched, callback_group=inputs)
        self.create_subscription(PointTracks, "tracks", self._on_tracks, latched,
                                 callback_group=inputs)  # fmt: skip
        self.create_subscription(Image, "goal_image", self._on_goal, latched, callback_group=inputs)
        self._pub_goal = self.create_publisher(PoseStamped, "ee_goal", 10)
        self._pub_status = self.create_publisher(ControlStatus, "status", 10)
        # The operator's services have a group of their own: a plan may wait for the start-up
        # sequence, and a stop must never wait behind it.
        operator = MutuallyExclusiveCallbackGroup()
        self.create_service(Trigger, "stop", self._on_stop, callback_group=operator)
        self.create_service(Trigger, "estop", self._on_estop, callback_group=operator)
        self.create_service(Trigger, "execute", self._on_execute, callback_group=operator)
        self.create_timer(
            cfg.control.period_s, self._on_tick, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.ticks = 0
        arm = f"/{cfg.spot_name}" if cfg.driver == "spot_ros2" else f"bosdyn {self._robot}"
        self.get_logger().info(
            f"{cfg.control.mode} control at {cfg.control.rate_hz:g} Hz, arm {arm}"
            + (", preview: plans wait for /t2a/execute" if cfg.preview else "")
        )
        if cfg.uncalibrated:
            self.get_logger().warning(f"execution refused until calibrated: {cfg.uncalibrated}")
        if cfg.auto_start:
            self._startup_note = "start-up sequence running (claim, power_on, stand, arm_unstow)"
            threading.Thread(target=self._start_up, name="t2a-startup", daemon=True).start()
        else:
            self._started.set()

    def _start_up(self) -> None:
        """The start-up sequence, off the executor threads (each call blocks for seconds)."""
        ok, text = run_sequence(self.driver, STARTUP)
        self._startup_note = f"start-up: {text}"
        if ok:
            self._started.set()
            self.get_logger().info(f"robot ready ({text})")
        else:
            self.get_logger().error(f"start-up sequence failed: {text}; plans are refused")

    def _make_driver(self) -> LiveArmDriver:
        """The ``driver`` backend; ValueError (the node does not start) saying what is wrong."""
        cfg, me = self.cfg, self.get_fully_qualified_name()
        if cfg.driver == "spot_ros2":
            return SpotRos2Driver(self, cfg.spot_name)
        # bosdyn-client is imported only for this backend (the robot image may not have it).
        from t2a_control.drivers.bosdyn_driver import (
            BosdynArmDriver,
            BosdynDriverConfig,
            BosdynDriverError,
        )

        b = cfg.bosdyn
        password = os.environ.get(b.password_env, "")
        if not password:
            raise ValueError(
                f"node {me}: driver bosdyn needs the robot password in the environment variable "
                f"{b.password_env!r} (named by parameter bosdyn.password_env), which is not set"
            )
        given = {"hostname": b.hostname, "port": b.port, "cert_path": b.cert_path,
                 "username": b.username}  # fmt: skip
        period = cfg.control.period_s
        try:
            driver_cfg = BosdynDriverConfig.from_env(
                **{k: v for k, v in given.items() if v},
                password=password,
                estop=b.estop,
                take_lease=b.take_lease,
                control_period_s=period,  # a streamed target is reached one tick later
                lead_s=min(BosdynDriverConfig.lead_s, 0.25 * period),
            )
        except ValueError as exc:
            raise ValueError(
                f"node {me}: driver bosdyn: {exc} (parameters bosdyn.hostname, bosdyn.port, "
                "bosdyn.cert_path and bosdyn.username take precedence over those variables)"
            ) from exc
        self._robot = f"{driver_cfg.hostname}:{driver_cfg.port}"
        try:
            return BosdynArmDriver(driver_cfg, clock=self._now)
        except BosdynDriverError as exc:
            raise ValueError(f"node {me}: driver bosdyn: {exc}") from exc

    def destroy_node(self) -> None:
        """Release the driver (the bosdyn backend returns the lease) before the node goes."""
        driver = getattr(self, "driver", None)
        if driver is not None:
            driver.close()
        super().destroy_node()

    def shut_down(self) -> None:
        """The shutdown sequence (arm_stow, release) with ``stow_on_exit`` once the start-up has
        run. The executor must still spin: the driver's answers arrive through it."""
        if not (self.cfg.stow_on_exit and self._started.is_set()):
            return
        with self._lock:
            # spot_ros2 queues joint commands behind a blocking arm_stow and runs them after it:
            # a hold command from one more tick would move the arm back out of the stow.
            self._closing = True
            self.controller.stop()
            self._pending = None
        ok, text = run_sequence(self.driver, SHUTDOWN)
        log = self.get_logger().info if ok else self.get_logger().error
        log(f"shutdown sequence: {text}")

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        """Node-clock seconds: wall time, or the simulator's /clock with use_sim_time:=true, so
        plan timing and staleness follow the sim even when it runs slower than real time. The
        drivers stamp ``received_s`` with this clock too."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Image) -> None:
        self._image, self._image_received = msg, self._now()

    def _receiver(self, name: str):
        def on_message(_msg) -> None:
            self._received[name] = self._now()

        return on_message

    def _on_goal(self, msg: Image) -> None:
        try:
            self._goal_image = ros_conv.image_to_rgb(msg, "goal image")
            self._goal_stamp_s, self._goal_error = ros_conv.stamp_to_sec(msg.header.stamp), ""
        except ValueError as exc:
            self._goal_image, self._goal_error = None, f"unusable: {exc}"
            self.get_logger().error(str(exc))

    def _on_tracks(self, msg: PointTracks) -> None:
        try:
            self._tracks = ros_conv.msg_to_point_tracks(msg)
        except ValueError as exc:
            self.get_logger().error(f"tracks ignored: {exc}")

    def _on_plan(self, msg: Plan) -> None:
        if msg.goal_id == self._plan_id:
            return  # the latched copy of a plan already running
        previous, self._plan_id = self._plan_id, msg.goal_id
        try:
            plan = ros_conv.msg_to_ee_plan(msg)
        except ValueError as exc:
            self.get_logger().error(f"plan {msg.goal_id} ignored: {exc}")
            return
        if plan.ok and self.cfg.preview:
            with self._lock:
                self._pending = plan
            self.get_logger().info(f"plan {plan.goal_id} ready: call /t2a/execute to run it")
            return
        if plan.ok:
            why = self._cannot_execute()
            if why:
                self.get_logger().error(f"plan {plan.goal_id} not executed: {why}")
                return
        with self._lock:
            replaced = self.controller.state in ACTIVE_STATES
            self.controller.set_plan(plan)
        if replaced:
            self.get_logger().warn(f"plan {plan.goal_id} replaces the active plan {previous}")
        self.get_logger().info(f"plan {plan.goal_id}: {'executing' if plan.ok else plan.message}")

    def _cannot_execute(self, wait_s: float = 30.0) -> str:
        """Why a plan cannot be executed now ('' = it can); waits for a running start-up."""
        if self.cfg.uncalibrated:
            return self.cfg.uncalibrated
        if not self._started.wait(wait_s):
            return self._startup_note
        return ""

    def _on_execute(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            plan = self._pending
        if plan is None:
            res.success, res.message = False, "no plan waiting (preview off, or none arrived yet)"
            return res
        why = self._cannot_execute(wait_s=0.0)
        if why:
            res.success, res.message = False, why
            return res
        with self._lock:
            if self._pending is not plan:  # a stop or a newer plan came meanwhile
                res.success, res.message = False, "the plan was dropped or replaced; try again"
                return res
            self._pending = None
            self.controller.set_plan(plan)
        res.success, res.message = True, f"executing plan {plan.goal_id}"
        self.get_logger().info(res.message)
        return res

    def _on_stop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:  # no tick's command can follow the driver's stop
            self.controller.stop()
            self._pending = None
            ok, text = self.driver.stop()
            if not ok:  # the e-stop path: the arm must not keep moving
                self.get_logger().error(f"driver stop failed ({text}): estop")
                ok, text = self.driver.estop()
                text = f"stop failed, estop: {text}"
        res.success, res.message = ok, f"holding; plan dropped (driver: {text})"
        return res

    def _on_estop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        with self._lock:
            self.controller.stop()
            self._pending = None
            ok, text = self.driver.estop()
        self._started.clear()  # power is cut: the start-up sequence is needed again
        self._startup_note = "estopped: restart the node (or run the start-up) to move again"
        res.success, res.message = ok, f"plan dropped; {text}"
        self.get_logger().warning(f"/t2a/estop: {text}")
        return res

    # ------------------------------------------------------------------ the loop
    def _on_tick(self) -> None:
        with self._lock:
            if not self._closing:
                self._tick()

    def _policy_input_errors(self) -> dict[str, str]:
        """Why the goal image cannot be used with the current tracks (Observation.input_errors)."""
        if self._goal_error:
            return {"goal_image": self._goal_error}
        tracks = self._tracks
        if self._goal_image is None or tracks is None or self._goal_stamp_s == 0.0:
            return {}  # an unstamped goal image (not from track_predictor) cannot be matched
        if abs(self._goal_stamp_s - tracks.stamp_s) > 1e-6:
            return {
                "goal_image": f"the latest goal image (stamped {self._goal_stamp_s:.3f} s) is "
                f"not the goal of the tracks of goal {tracks.goal_id!r} (I0 stamped "
                f"{tracks.stamp_s:.3f} s); waiting for the matching goal image and tracks"
            }
        return {}

    def _tick(self) -> None:
        now = self._now()
        if not self.driver.has_state():
            self._publish_status(
                None,
                f"waiting for /{self.cfg.spot_name}/joint_states (from spot_ros2's "
                "state_publisher_node, which the spot_ros2 executable does not start)",
            )
            return
        if not self._started.is_set():
            self._publish_status(None, self._startup_note)
            return
        q, gripper, _ = self.driver.joint_positions()
        image = None
        errors: dict[str, str] = {}
        if self.cfg.control.mode != "open_loop":
            errors = self._policy_input_errors()
            if self._image is not None:
                try:
                    image = ros_conv.image_to_rgb(self._image, "camera image")
                except ValueError as exc:
                    errors["image"] = str(exc)
                    self.get_logger().error(str(exc), throttle_duration_sec=5.0)
        stamps = {"joint_states": self.driver.received_s}
        if self._image is not None:
            stamps["image"] = self._image_received
        stamps.update(self._received)  # NaN (never received) is ignored: stale
        obs = Observation(
            now_s=now,
            q=q,
            gripper=gripper,
            image=image,
            image_stamp_s=ros_conv.stamp_to_sec(self._image.header.stamp)
            if self._image
            else np.nan,
            goal_image=self._goal_image,
            tracks=self._tracks,
            stamps=stamps,
            input_errors=errors,
        )
        cmd = self.controller.tick(obs)
        if cmd.send_joints:
            result = self.driver.send_joint_targets(cmd.q_target)
            if isinstance(result, tuple) and not result[0]:  # bosdyn says why it sent nothing
                self.get_logger().error(result[1], throttle_duration_sec=2.0)
            goal = PoseStamped(pose=ros_conv.matrix_to_pose_msg(cmd.ee_goal))
            goal.header.stamp = self.get_clock().now().to_msg()
            goal.header.frame_id = self.cfg.body_frame_id
            self._pub_goal.publish(goal)
        # Only a run that moves the arm moves the gripper: a failed or refused plan (and idle,
        # done, hold) never calls the driver (its gripper services also power on and stand).
        if cmd.state in ACTIVE_STATES and cmd.gripper_open != self._gripper_open:
            self.driver.call_async("open_gripper" if cmd.gripper_open else "close_gripper")
            self._gripper_open = cmd.gripper_open
        self.ticks += 1
        self._publish_status(cmd)

    def _publish_status(self, cmd: Command | None, note: str = "") -> None:
        msg = ControlStatus(mode=self.cfg.control.mode)
        msg.header.stamp = self.get_clock().now().to_msg()
        if cmd is None:
            msg.state, msg.state_name, msg.step, msg.message = (
                ControlStatus.STATE_IDLE,
                "idle",
                -1,
                note,
            )
        elif cmd.state == "idle" and self._pending is not None:
            msg.state, msg.state_name, msg.step = cmd.state_code, cmd.state, -1
            msg.goal_id = self._pending.goal_id
            msg.message = f"preview: plan {self._pending.goal_id} waits for /t2a/execute"
        else:
            msg.state, msg.state_name = cmd.state_code, cmd.state
            msg.goal_id, msg.step, msg.num_steps = cmd.goal_id, cmd.step, cmd.num_steps
            msg.message = cmd.hold_reason or cmd.message
            msg.stage_names = list(cmd.timings_ms)
            msg.stage_ms = [float(v) for v in cmd.timings_ms.values()]
            msg.tick_ms = float(cmd.timings_ms.get("total", 0.0))
            msg.period_ms = float(cmd.period_ms) if np.isfinite(cmd.period_ms) else 0.0
        self._pub_status.publish(msg)


def main(args: list[str] | None = None) -> int:
    """Spin until Ctrl-C or an external shutdown. rclpy's own SIGINT handler would shut the
    context down before the node could stow the arm; here Ctrl-C stops the spin, the shutdown
    sequence runs on a spinning executor, and only then does the context go."""
    rclpy.init(args=sys.argv if args is None else args,
               signal_handler_options=SignalHandlerOptions.NO)  # fmt: skip
    node = None
    try:
        try:
            node = ResidualControllerNode()
        except ValueError as exc:
            rclpy.logging.get_logger("t2a").fatal(str(exc))
            return 1
        # The tick, the camera, the plan group, the operator's services and the driver's
        # service answers: a thread each, so a stop waiting on the driver's answer never starves
        # the thread that delivers it.
        executor = MultiThreadedExecutor(5)
        executor.add_node(node)
        try:
            executor.spin()
        except KeyboardInterrupt:
            if rclpy.ok():
                threading.Thread(target=executor.spin, daemon=True).start()
                node.shut_down()
        executor.shutdown(timeout_sec=2.0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
