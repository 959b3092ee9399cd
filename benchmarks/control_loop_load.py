"""The residual_controller node's 5 Hz loop and stale-hold latency, idle and with every core busy.

Over real DDS: the node (open_loop, defaults) runs as a child process; this process plays the
spot_ros2 arm (joint_states at 25 Hz echoing arm_joint_commands, Trigger services) and the camera
(colour rgb8, aligned depth 16UC1 at ``--width`` x ``--height``, camera_info, at 15 Hz: the node
deserialises every depth frame it watches), and sends a slow 20 s plan. Per condition:

- loop: the tick period the node reports in its status (``period_ms``, its own clock) over
  ``--ticks`` ticks of a running plan; jitter = |period - 200 ms|;
- stale hold: ``--trials`` times, the camera (all three streams) stops while the arm executes;
  the latency is the node's first hold status stamp minus the time this process sent the last frame
  (the same wall clock). The watchdog's bound is one period + its margin (0.3 s) after the last
  frame the node *received*, plus up to one period until the next tick: <= 0.5 s plus delivery.

"loaded" runs ``--busy`` (default: one per core) pure-python busy loops next to the node for the
measurement, each bounded in time and killed at the end; "idle" is the baseline of the same run
(idle of this benchmark's load: whatever else the machine runs is in both).

    python benchmarks/control_loop_load.py [--ticks 50] [--trials 5] [--busy N]
        [--width 640 --height 480] [--json]

With --json the last line of stdout is one JSON object with all the numbers.
"""

from __future__ import annotations

import multiprocessing
import os
import time

# An isolated DDS domain (other stacks may run on this machine); set before rclpy starts.
os.environ.setdefault("ROS_DOMAIN_ID", str(150 + os.getpid() % 80))
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")

import numpy as np
import rclpy
from common import emit_json, parser, print_table, stats_ms
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image, JointState
from std_srvs.srv import Trigger

from t2a_common import ros_conv
from t2a_common.core import spot_arm
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.kinematics import fk
from t2a_common.core.types import PLAN_OK, EEPlan
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_control.core.controller import ControllerConfig
from t2a_msgs.msg import ControlStatus, Plan

LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
CONFIG = ControllerConfig()
PERIOD_S = CONFIG.period_s
BOUND_S = CONFIG.watchdog.max_age_s(PERIOD_S) + PERIOD_S  # stale + up to one tick to notice
CAMERA_HZ, JOINTS_HZ = 15.0, 25.0
NODE = ["-m", "t2a_control.nodes.residual_controller", "--ros-args",
        "-p", "color_topic:=/load_bench/image", "-p", "depth_topic:=/load_bench/depth",
        "-p", "info_topic:=/load_bench/camera_info"]  # fmt: skip


def busy_loop(until: float) -> None:
    """Burn one core until wall time ``until`` (a bound, in case the parent dies)."""
    x = 0
    while time.time() < until:
        x += 1


class Robot:
    """Arm, camera and a record of the node's statuses, in this process."""

    def __init__(self, ctx, width: int, height: int) -> None:
        self.node = rclpy.create_node("load_bench_probe", context=ctx)
        self.q = spot_arm.READY.copy()  # (6,) rad
        self.camera_on = True
        self.last_frame_s = float("nan")  # wall time of the last colour frame sent
        self.statuses: list[ControlStatus] = []
        n = self.node
        self._joints = n.create_publisher(JointState, "/spot/joint_states", 10)
        n.create_subscription(JointState, "/spot/arm_joint_commands", self._on_command, 10)
        for name in ("claim", "power_on", "stand", "arm_unstow", "arm_stow", "release", "stop",
                     "open_gripper", "close_gripper"):  # fmt: skip
            n.create_service(Trigger, f"/spot/{name}", self._ok)
        n.create_subscription(ControlStatus, "/t2a/status", self.statuses.append, 50)
        self.plan = n.create_publisher(Plan, "/t2a/plan", LATCHED)
        self._image = n.create_publisher(Image, "/load_bench/image", 5)
        self._depth = n.create_publisher(Image, "/load_bench/depth", 5)
        self._info = n.create_publisher(CameraInfo, "/load_bench/camera_info", 5)
        self.frame = ros_conv.numpy_to_image(np.zeros((height, width, 3), np.uint8), "rgb8")
        self.depth = ros_conv.numpy_to_image(np.full((height, width), 800, np.uint16), "16UC1")
        self.info = ros_conv.intrinsics_to_camera_info(Intrinsics.from_fov(width, height, 42.0))
        n.create_timer(1.0 / CAMERA_HZ, self._camera_tick)
        n.create_timer(1.0 / JOINTS_HZ, self._joints_tick)

    def _on_command(self, msg: JointState) -> None:
        self.q = ros_conv.joint_positions(msg, spot_arm.ARM_JOINT_NAMES)

    @staticmethod
    def _ok(_req: Trigger.Request, res: Trigger.Response) -> Trigger.Response:
        res.success = True
        return res

    def _camera_tick(self) -> None:
        if self.camera_on:  # a camera that stops stops all three streams
            self._image.publish(self.frame)
            self._depth.publish(self.depth)
            self._info.publish(self.info)
            self.last_frame_s = time.time()

    def _joints_tick(self) -> None:
        names = (*spot_arm.ARM_JOINT_NAMES, spot_arm.GRIPPER_JOINT.name)
        self._joints.publish(
            ros_conv.joint_state_msg(names, [*self.q, spot_arm.GRIPPER_JOINT.lower])
        )

    def spin_until(self, predicate, timeout_s: float) -> bool:
        return spin_until(self.node, predicate, timeout_s)

    def state(self) -> str:
        return self.statuses[-1].state_name if self.statuses else ""

    def send_plan(self, goal_id: str) -> None:
        """Pull the hand 10 cm in 20 s (a step per tick) from where it is."""
        T_start = fk(self.q)
        poses = np.repeat(T_start[None], 101, axis=0)  # (T, 4, 4)
        poses[:, 0, 3] -= np.linspace(0.0, 0.1, 101)
        plan = EEPlan(PLAN_OK, "", poses, np.linspace(0.0, 20.0, 101), T_start.copy(), 0,
                      goal_id=goal_id)  # fmt: skip
        self.plan.publish(ros_conv.ee_plan_to_msg(plan))


def measure(robot: Robot, label: str, ticks: int, trials: int) -> dict:
    """Loop periods over ``ticks`` executing ticks, then ``trials`` stale-hold latencies."""
    robot.camera_on = True
    robot.send_plan(f"load-{label}")
    if not robot.spin_until(lambda: robot.state() == "execute", 30.0):
        raise RuntimeError(f"{label}: the node never executed the plan ({robot.state()})")
    first = len(robot.statuses)
    robot.spin_until(lambda: len(robot.statuses) >= first + ticks, ticks * PERIOD_S * 5)
    window = robot.statuses[first : first + ticks]
    periods = np.array([s.period_ms for s in window if s.period_ms > 0]) * 1e-3
    states = {}
    for s in window:
        states[s.state_name] = states.get(s.state_name, 0) + 1

    latencies, reasons = [], []
    for _ in range(trials):
        robot.camera_on = True
        if not robot.spin_until(
            lambda: [s.state_name for s in robot.statuses[-3:]] == ["execute"] * 3, 15.0
        ):
            robot.send_plan(f"load-{label}-{len(latencies)}")  # the plan ended: a new one
            robot.spin_until(lambda: robot.state() == "execute", 15.0)
        since = len(robot.statuses)
        robot.camera_on = False
        held = robot.spin_until(
            lambda since=since: any(s.state_name == "hold" for s in robot.statuses[since:]), 5.0
        )
        if not held:
            latencies.append(float("inf"))
            continue
        hold = next(s for s in robot.statuses[since:] if s.state_name == "hold")
        latencies.append(ros_conv.stamp_to_sec(hold.header.stamp) - robot.last_frame_s)
        reasons.append(hold.message)
    robot.camera_on = True
    jitter = np.abs(periods - PERIOD_S)
    lat = np.array(latencies)
    return {
        "ticks": len(window),
        "states": states,
        "loop_hold_reasons": [s.message for s in window if s.state_name == "hold"],
        "period_ms": {**stats_ms(periods), "std": float(periods.std() * 1e3)},
        "jitter_ms": stats_ms(jitter),
        "late_ticks": int((periods > 1.5 * PERIOD_S).sum()),  # a tick missed
        "stale_hold_ms": {**stats_ms(lat[np.isfinite(lat)]), "min": float(lat.min() * 1e3)},
        "stale_hold_each_ms": [round(v * 1e3, 1) for v in latencies],  # inf: no hold in 5 s
        "stale_hold_within_bound": int((lat <= BOUND_S).sum()),
        "trials": trials,
        "hold_reasons": reasons,
    }


def main() -> None:
    args_parser = parser(__doc__.split("\n")[0])
    args_parser.add_argument("--ticks", type=int, default=50, help="ticks measured per condition")
    args_parser.add_argument("--trials", type=int, default=5, help="stale holds per condition")
    args_parser.add_argument(
        "--busy", type=int, default=os.cpu_count() or 2, help="busy-loop processes when loaded"
    )
    args_parser.add_argument("--width", type=int, default=640, help="camera width (px)")
    args_parser.add_argument("--height", type=int, default=480, help="camera height (px)")
    args = args_parser.parse_args()

    results = {}
    with ChildProcess(NODE) as controller, ros_context() as ctx:
        robot = Robot(ctx, args.width, args.height)
        if not robot.spin_until(
            lambda: robot.state() == "idle" and "waiting" not in robot.statuses[-1].message, 60.0
        ):
            raise RuntimeError(f"the node did not come up:\n{controller.stop()[-3000:]}")
        results["idle"] = measure(robot, "idle", args.ticks, args.trials)
        budget_s = args.ticks * PERIOD_S * 5 + args.trials * 25.0 + 60.0  # bounded in time
        until = time.time() + budget_s
        ctx_mp = multiprocessing.get_context("spawn")
        busy = [ctx_mp.Process(target=busy_loop, args=(until,), daemon=True)
                for _ in range(args.busy)]  # fmt: skip
        for p in busy:
            p.start()
        try:
            results["loaded"] = measure(robot, "loaded", args.ticks, args.trials)
        finally:
            for p in busy:
                p.terminate()
            for p in busy:
                p.join(5.0)
        robot.node.destroy_node()

    print_table(
        f"residual_controller node over DDS at {1 / PERIOD_S:g} Hz ({args.ticks} ticks of a "
        f"running plan; jitter = |period - {PERIOD_S * 1e3:g} ms|; loaded = {args.busy} busy "
        f"loops on {os.cpu_count()} cores)",
        ("condition", "period mean ms", "std ms", "max ms", "jitter p95 ms", "late ticks"),
        [
            (
                k,
                r["period_ms"]["mean"],
                r["period_ms"]["std"],
                r["period_ms"]["max"],
                r["jitter_ms"]["p95"],
                r["late_ticks"],
            )
            for k, r in results.items()
        ],
    )
    print_table(
        f"Stale hold: last camera frame sent -> first hold status ({args.trials} trials; "
        f"bound {BOUND_S * 1e3:.0f} ms = one period + margin + one tick)",
        ("condition", "min ms", "mean ms", "p50 ms", "max ms", "within bound"),
        [
            (
                k,
                r["stale_hold_ms"]["min"],
                r["stale_hold_ms"]["mean"],
                r["stale_hold_ms"]["p50"],
                r["stale_hold_ms"]["max"],
                f"{r['stale_hold_within_bound']}/{r['trials']}",
            )
            for k, r in results.items()
        ],
    )
    emit_json(
        args.json,
        {
            "benchmark": "control_loop_load",
            "rate_hz": 1 / PERIOD_S,
            "busy_processes": args.busy,
            "camera": f"{args.width}x{args.height}",
            "bound_ms": BOUND_S * 1e3,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
