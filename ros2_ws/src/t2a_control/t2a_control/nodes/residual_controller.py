"""``residual_controller``: the 5 Hz loop from plan (+ residual policy) to arm joint goals.

Every tick: latest joint states, colour image and plan -> ``Controller.tick`` (policy correction,
safety filter, IK, watchdog, state machine) -> joint goals streamed to the arm driver, gripper
calls when the wanted state changes, ``ee_goal`` and ``status`` published. ``/t2a/stop`` holds
the arm and drops the plan. The driver is spot_ros2's interface (t2a_sim serves the same one).
"""

from __future__ import annotations

import dataclasses

import numpy as np
from geometry_msgs.msg import PoseStamped
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core.config import check, nested, param
from t2a_common.node_main import run_node
from t2a_common.ros_params import declare_config
from t2a_control.core.controller import Command, Controller, ControllerConfig, Observation
from t2a_control.drivers.spot_ros2 import SpotRos2Driver
from t2a_msgs.msg import ControlStatus, Plan, PointTracks


@dataclasses.dataclass(frozen=True)
class ResidualControllerNodeConfig:
    """Parameters of the control node (the loop's own are under ``control.``)."""

    spot_name: str = param("spot", "namespace of the spot_ros2 driver: /<spot_name>/...")
    color_topic: str = param("/camera/camera/color/image_raw", "live colour image I_t")
    body_frame_id: str = param("body", "frame of ee_goal")
    policy_checkpoint: str = param("", "residual policy directory (modes residual / absolute)")
    auto_power_on: bool = param(
        True, "claim the lease and power on (if needed) when the first executable plan arrives"
    )
    control: ControllerConfig = nested(ControllerConfig, "the control loop")

    def __post_init__(self) -> None:
        check(
            self.control.mode == "open_loop" or bool(self.policy_checkpoint),
            f"mode {self.control.mode!r} needs policy_checkpoint (a trained residual policy)",
        )


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
            policy = PolicyRunner(cfg.policy_checkpoint)
        self.controller = Controller(cfg.control, policy)
        self.driver = SpotRos2Driver(self, cfg.spot_name)
        self._image: Image | None = None
        self._image_received = float("nan")
        self._goal_image: np.ndarray | None = None
        self._tracks = None
        self._plan_id: str | None = None
        self._gripper_open: bool | None = None
        self._powered = False
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        inputs = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, cfg.color_topic, self._on_image, 2, callback_group=inputs)
        self.create_subscription(Plan, "plan", self._on_plan, latched, callback_group=inputs)
        self.create_subscription(PointTracks, "tracks", self._on_tracks, latched,
                                 callback_group=inputs)  # fmt: skip
        self.create_subscription(Image, "goal_image", self._on_goal, latched, callback_group=inputs)
        self._pub_goal = self.create_publisher(PoseStamped, "ee_goal", 10)
        self._pub_status = self.create_publisher(ControlStatus, "status", 10)
        self.create_service(Trigger, "stop", self._on_stop, callback_group=inputs)
        self.create_timer(
            cfg.control.period_s, self._on_tick, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.ticks = 0
        self.get_logger().info(
            f"{cfg.control.mode} control at {cfg.control.rate_hz:g} Hz, arm /{cfg.spot_name}"
        )

    # ------------------------------------------------------------------ inputs
    def _now(self) -> float:
        """Node-clock seconds: wall time, or the simulator's /clock with use_sim_time:=true, so
        plan timing and staleness follow the sim even when it runs slower than real time."""
        return self.get_clock().now().nanoseconds * 1e-9

    def _on_image(self, msg: Image) -> None:
        self._image, self._image_received = msg, self._now()

    def _on_goal(self, msg: Image) -> None:
        try:
            self._goal_image = ros_conv.image_to_rgb(msg, "goal image")
        except ValueError as exc:
            self.get_logger().error(str(exc))

    def _on_tracks(self, msg: PointTracks) -> None:
        try:
            self._tracks = ros_conv.msg_to_point_tracks(msg)
        except ValueError as exc:
            self.get_logger().error(f"tracks ignored: {exc}")

    def _on_plan(self, msg: Plan) -> None:
        if msg.goal_id == self._plan_id:
            return  # the latched copy of a plan already running
        self._plan_id = msg.goal_id
        try:
            plan = ros_conv.msg_to_ee_plan(msg)
        except ValueError as exc:
            self.get_logger().error(f"plan {msg.goal_id} ignored: {exc}")
            return
        if plan.ok and self.cfg.auto_power_on and not self._powered:
            for step in (self.driver.claim, self.driver.power_on):
                ok, text = step()
                if not ok:
                    self.get_logger().error(f"cannot start: {text}")
                    return
            self._powered = True
        self.controller.set_plan(plan)
        self.get_logger().info(f"plan {plan.goal_id}: {'executing' if plan.ok else plan.message}")

    def _on_stop(self, _req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        self.controller.stop()
        ok, text = self.driver.stop()
        res.success, res.message = True, f"holding; plan dropped (driver: {text})"
        if not ok:
            self.get_logger().warn(f"driver stop: {text}")
        return res

    # ------------------------------------------------------------------ the loop
    def _on_tick(self) -> None:
        now = self._now()
        if not self.driver.has_state():
            self._publish_status(None, f"waiting for /{self.cfg.spot_name}/joint_states")
            return
        q, gripper, _ = self.driver.joint_positions()
        image = None
        if self._image is not None and self.cfg.control.mode != "open_loop":
            try:
                image = ros_conv.image_to_rgb(self._image, "camera image")
            except ValueError as exc:
                self.get_logger().error(str(exc), throttle_duration_sec=5.0)
        stamps = {"joint_states": self.driver.received_s}
        if self._image is not None:
            stamps["image"] = self._image_received
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
        )
        cmd = self.controller.tick(obs)
        if cmd.send_joints:
            self.driver.send_joint_targets(cmd.q_target)
            goal = PoseStamped(pose=ros_conv.matrix_to_pose_msg(cmd.ee_goal))
            goal.header.stamp = self.get_clock().now().to_msg()
            goal.header.frame_id = self.cfg.body_frame_id
            self._pub_goal.publish(goal)
        if cmd.state != "idle" and cmd.gripper_open != self._gripper_open:
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
    return run_node(ResidualControllerNode, args, threads=3)


if __name__ == "__main__":
    raise SystemExit(main())
