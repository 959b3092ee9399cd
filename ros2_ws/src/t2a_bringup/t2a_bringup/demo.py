"""``t2a-demo`` (``make demo``): the whole stack on t2a_sim for one episode, with artifacts.

    t2a-demo                                   # the default episode, artifacts in artifacts/demo
    t2a-demo --task cabinet_close --split G --seed 1003 --out artifacts/cabinet

Real ROS 2 nodes in their own processes (``t2a-stack sim``: t2a_sim, track_predictor, planner,
residual_controller with the shipped default checkpoints, all on the simulator's /clock), driven
the way a user drives the robot: the goal image (the scripted expert's last frame of a private
copy of the same episode) goes through the ``/t2a/set_goal`` service -> tracks -> plan -> 5 Hz
control -> sim arm -> the task's success test (``/t2a_sim/episode_status``). Progress is
printed per stage with its wall time; everything the stack published is recorded to a bag.

The output folder holds ``goal.png`` and ``initial.png``, ``episode.gif`` (and ``episode.mp4``)
of the camera with the predicted tracks overlaid, ``ee_path.png`` (planned vs executed hand
positions), ``bag/`` (rosbag2 MCAP: ``ros2 bag play``, Foxglove, ``t2a-play``,
``t2a-eval-bag``), ``summary.json`` / ``summary.md`` and ``logs/`` (each node's output).
Exit status: 0 when the task succeeded, 1 when it did not, 2 when the stack could not run.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import rclpy
from geometry_msgs.msg import PoseStamped
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, JointState

from t2a_bringup.bag_record import Recorder
from t2a_bringup.core import artifacts
from t2a_bringup.core.bag import BagReader, BagWriter
from t2a_bringup.core.episode import EpisodeConfig, expert_reference
from t2a_bringup.core.stack import load_description
from t2a_common import ros_conv
from t2a_common.core import kinematics
from t2a_common.core.spot_arm import ARM_JOINT_NAMES
from t2a_msgs.msg import ControlStatus, Plan, PointTracks
from t2a_msgs.srv import SetGoal, SimEpisodeStatus
from t2a_sim.core import tasks

PROG = "t2a-demo"
# An unseen box (split G) on a seed outside every training set and the evaluation's 1000+ range,
# which the stack solves with its own predicted tracks; docs/evaluation.md has the success rates
# over many episodes (most episodes with predicted tracks still fail).
DEFAULT_TASK = ("box_push", "G", 2001)
CAMERA = "/camera/camera"
RECORDED = (
    "/clock",
    f"{CAMERA}/color/image_raw",
    f"{CAMERA}/color/camera_info",
    f"{CAMERA}/aligned_depth_to_color/image_raw",
    "/spot/joint_states",
    "/t2a/goal_image",
    "/t2a/tracks",
    "/t2a/tracks/markers",
    "/t2a/tracks/overlay",
    "/t2a/plan",
    "/t2a/plan/path",
    "/t2a/plan/poses",
    "/t2a/plan/markers",
    "/t2a/ee_goal",
    "/t2a/status",
)
FINAL_STATES = ("done", "failed")
VIDEO_PERIOD_S = 0.2  # sim seconds between video frames (the control rate)


class StackError(RuntimeError):
    """The stack did not come up or stopped answering: exit status 2."""


def stamp_s(msg: Any) -> float:
    return msg.header.stamp.sec + msg.header.stamp.nanosec * 1e-9


class DemoNode(Node):
    """The user's side: sends the goal, watches tracks/plan/status, keeps frames for the video."""

    def __init__(self) -> None:
        super().__init__("t2a_demo", parameter_overrides=[
            rclpy.parameter.Parameter("use_sim_time", value=True)])  # fmt: skip
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self.frames: list[tuple[float, np.ndarray]] = []  # (sim s, RGB) every VIDEO_PERIOD_S
        self.hand: list[tuple[float, np.ndarray]] = []  # (sim s, (3,)) measured hand position
        self.goals: list[np.ndarray] = []  # (3,) corrected EE goals (ee_goal)
        self.statuses: list[ControlStatus] = []
        self.tracks: PointTracks | None = None
        self.plan: Plan | None = None
        self.frame_error = ""
        self.create_subscription(Image, f"{CAMERA}/color/image_raw", self._on_image, 5)
        self.create_subscription(JointState, "/spot/joint_states", self._on_joints, 10)
        self.create_subscription(PointTracks, "/t2a/tracks", self._on_tracks, latched)
        self.create_subscription(Plan, "/t2a/plan", self._on_plan, latched)
        self.create_subscription(ControlStatus, "/t2a/status", self.statuses.append, 50)
        self.create_subscription(PoseStamped, "/t2a/ee_goal", self._on_goal, 50)
        self.set_goal = self.create_client(SetGoal, "/t2a/set_goal")
        self.episode_status = self.create_client(SimEpisodeStatus, "/t2a_sim/episode_status")

    def _on_image(self, msg: Image) -> None:
        t = stamp_s(msg)
        if self.frames and t - self.frames[-1][0] < VIDEO_PERIOD_S - 1e-3:
            return
        try:
            self.frames.append((t, ros_conv.image_to_rgb(msg, "camera image")))
        except ValueError as exc:
            self.frame_error = str(exc)

    def _on_joints(self, msg: JointState) -> None:
        t = stamp_s(msg)
        if self.hand and t - self.hand[-1][0] < VIDEO_PERIOD_S - 1e-3:
            return
        try:
            q = ros_conv.joint_positions(msg, ARM_JOINT_NAMES)
        except ValueError:
            return
        self.hand.append((t, kinematics.fk(q)[:3, 3]))

    def _on_tracks(self, msg: PointTracks) -> None:
        self.tracks = msg

    def _on_plan(self, msg: Plan) -> None:
        self.plan = msg

    def _on_goal(self, msg: PoseStamped) -> None:
        self.goals.append(ros_conv.pose_to_matrix_msg(msg.pose)[:3, 3])

    @property
    def state(self) -> str:
        return self.statuses[-1].state_name if self.statuses else ""


class Demo:
    """One run: the stack's processes, the demo node and recorder, the stage clock."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.out: Path = args.out
        self.timings: dict[str, float] = {}
        self.events: list[str] = []
        self.stack: subprocess.Popen | None = None
        self.executor: SingleThreadedExecutor | None = None
        self.node: DemoNode | None = None
        self.recorder: Recorder | None = None
        self.writer: BagWriter | None = None
        self.t0 = time.perf_counter()

    # ------------------------------------------------------------------ helpers
    def say(self, text: str) -> None:
        line = f"[{PROG} {time.perf_counter() - self.t0:6.1f} s] {text}"
        self.events.append(line)
        print(line, flush=True)

    def stage(self, name: str, t_start: float) -> float:
        self.timings[name] = round(time.perf_counter() - t_start, 3)
        return self.timings[name]

    def spin_until(self, done: Callable[[], bool], timeout_s: float, what: str) -> None:
        """Spin the demo node and recorder until ``done()``; StackError naming ``what`` if not."""
        deadline = time.perf_counter() + timeout_s
        while not done():
            if self.stack is not None and self.stack.poll() is not None:
                raise StackError(f"the stack exited (code {self.stack.returncode}) while "
                                 f"waiting for {what}; see {self.out / 'logs'}")  # fmt: skip
            if time.perf_counter() > deadline:
                raise StackError(f"no {what} within {timeout_s:.0f} s")
            self.executor.spin_once(timeout_sec=0.05)

    def call(self, client, request, timeout_s: float, what: str):
        if not client.wait_for_service(timeout_sec=0.01):
            self.spin_until(lambda: client.service_is_ready(), timeout_s, f"{what} service")
        future = client.call_async(request)
        self.spin_until(future.done, timeout_s, f"{what} response")
        return future.result()

    # ------------------------------------------------------------------ stages
    def goal_image(self) -> tuple[np.ndarray, np.ndarray]:
        a = self.args
        t = time.perf_counter()
        cfg = EpisodeConfig(task=a.task, split=a.split, seed=a.seed, width=a.width,
                            height=a.height)  # fmt: skip
        ref = expert_reference(cfg)
        for name, rgb in (("goal.png", ref.goal_rgb), ("initial.png", ref.rgb0)):
            cv2.imwrite(str(self.out / name), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
        solved = "solved" if ref.expert_success else "did NOT solve"
        self.say(f"goal image: the scripted expert {solved} a private copy of the episode "
                 f"({self.stage('goal_image', t):.1f} s)")  # fmt: skip
        return ref.goal_rgb, ref.rgb0

    def start_stack(self) -> None:
        a = self.args
        t = time.perf_counter()
        cmd = [
            shutil.which("t2a-stack") or "t2a-stack", "sim",
            "--arg", f"task:={a.task}", "--arg", f"split:={a.split}", "--arg", f"seed:={a.seed}",
            "--arg", f"real_time_factor:={a.real_time_factor}",
            "--arg", f"control_mode:={a.mode}",
            "--arg", f"policy_checkpoint:={a.policy_checkpoint}",
            "--arg", f"track_checkpoint:={a.track_checkpoint}",
            "--set", f"t2a_sim.sim.width={a.width}", "--set", f"t2a_sim.sim.height={a.height}",
            "--set", f"t2a_sim.camera_rate_hz={a.camera_rate}",
            "--log-dir", str(self.out / "logs"),
        ]  # fmt: skip
        self.say("starting the stack: " + " ".join(cmd[1:]))
        log = (self.out / "logs").joinpath("t2a-stack.txt")
        log.parent.mkdir(parents=True, exist_ok=True)
        self.stack = subprocess.Popen(cmd, stdout=log.open("w"), stderr=subprocess.STDOUT,
                                      start_new_session=True)  # fmt: skip
        node = self.node
        self.spin_until(lambda: bool(node.frames), a.startup_timeout, "camera frame from t2a_sim")
        self.spin_until(lambda: bool(node.statuses), a.startup_timeout, "status of the controller")
        self.spin_until(node.set_goal.service_is_ready, a.startup_timeout, "/t2a/set_goal")
        self.say(f"stack up: camera, /t2a/set_goal and controller status "
                 f"({self.stage('stack_startup', t):.1f} s)")  # fmt: skip

    def start_recorder(self) -> None:
        t = time.perf_counter()
        self.writer = BagWriter(self.out / "bag", custom_data={"recorded_by": PROG})
        self.recorder = Recorder(self.writer, RECORDED, False, log=lambda _s: None)
        self.executor.add_node(self.recorder)
        rec = self.recorder
        try:
            self.spin_until(lambda: not rec.missing(), 10.0, "publishers of every recorded topic")
        except StackError:
            self.say(f"recording without {rec.missing()} (no publisher yet)")
        self.say(f"recording {len(rec.recording)} topics to {self.out / 'bag'} "
                 f"({self.stage('recorder_startup', t):.1f} s)")  # fmt: skip

    def send_goal(self, goal_rgb: np.ndarray) -> str:
        t = time.perf_counter()
        req = SetGoal.Request()
        req.goal_image = ros_conv.numpy_to_image(goal_rgb, "rgb8")
        req.seed = 0
        res = self.call(self.node.set_goal, req, self.args.stage_timeout, "/t2a/set_goal")
        # The predictor's camera subscription may match a moment after its service is up: a
        # refusal for want of a frame is retried (the stack is still starting), nothing else is.
        deadline = time.perf_counter() + self.args.stage_timeout
        while not res.success and "no camera frame" in res.message:
            if time.perf_counter() > deadline:
                break
            wait_until = time.perf_counter() + 0.5
            self.spin_until(lambda t=wait_until: time.perf_counter() > t, 5.0, "a retry")
            res = self.call(self.node.set_goal, req, self.args.stage_timeout, "/t2a/set_goal")
        if not res.success:
            raise StackError(f"/t2a/set_goal refused the goal: {res.message}")
        node = self.node
        self.spin_until(lambda: node.tracks is not None and node.tracks.goal_id == res.goal_id,
                        self.args.stage_timeout, "tracks")  # fmt: skip
        n, h = node.tracks.num_points, node.tracks.horizon
        self.say(f"tracks for goal {res.goal_id}: {n} points x {h} steps, model "
                 f"{node.tracks.inference_time_s:.2f} s ("
                 f"{self.stage('tracks', t):.1f} s)")  # fmt: skip
        return res.goal_id

    def wait_plan(self, goal_id: str) -> Plan:
        t = time.perf_counter()
        node = self.node
        self.spin_until(lambda: node.plan is not None and node.plan.goal_id == goal_id,
                        self.args.stage_timeout, "plan")  # fmt: skip
        plan = node.plan
        ok = "ok" if plan.status == Plan.STATUS_OK else f"FAILED (status {plan.status})"
        self.say(f"plan {ok}: {len(plan.ee_poses)} hand poses, {plan.message} "
                 f"({self.stage('plan', t):.1f} s)")  # fmt: skip
        return plan

    def control(self, plan: Plan) -> None:
        t = time.perf_counter()
        node = self.node
        if plan.status != Plan.STATUS_OK:
            self.say("control: nothing to execute (the plan failed)")
            self.stage("control", t)
            return
        last = ""
        deadline_sim = None

        def progressed() -> bool:
            nonlocal last, deadline_sim
            if not node.statuses:
                return False
            s = node.statuses[-1]
            if deadline_sim is None:
                deadline_sim = stamp_s(s) + self.args.max_sim_time
            if s.state_name != last:
                last = s.state_name
                self.say(f"control: {s.state_name} (step {s.step}/{s.num_steps}, sim "
                         f"{stamp_s(s):.1f} s) {s.message}")  # fmt: skip
            return (s.goal_id == plan.goal_id and s.state_name in FINAL_STATES) or (
                stamp_s(s) > deadline_sim
            )

        self.spin_until(progressed, self.args.control_timeout, "end of the episode")
        self.say(f"control ended in state {node.state} ({self.stage('control', t):.1f} s)")

    def result(self) -> SimEpisodeStatus.Response:
        t = time.perf_counter()
        res = self.call(self.node.episode_status, SimEpisodeStatus.Request(),
                        self.args.stage_timeout, "/t2a_sim/episode_status")  # fmt: skip
        verdict = "SUCCESS" if res.success else "not solved"
        self.say(f"task {res.task} ({res.split}, seed {res.seed}): {verdict}: {res.message} "
                 f"({self.stage('success_check', t):.2f} s)")  # fmt: skip
        return res

    # ------------------------------------------------------------------ shutdown, artifacts
    def stop(self) -> None:
        if self.recorder is not None:
            self.recorder.destroy_node()
            self.recorder = None
        if self.writer is not None:
            self.writer.close()
        if self.stack is not None and self.stack.poll() is None:
            os.killpg(self.stack.pid, signal.SIGINT)
            try:
                self.stack.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.stack.pid, signal.SIGKILL)
                self.stack.wait()

    def write_artifacts(self, res, plan: Plan | None) -> dict[str, Any]:
        t = time.perf_counter()
        node = self.node
        tracks = ros_conv.msg_to_point_tracks(node.tracks) if node.tracks is not None else None
        frames = []
        for _, rgb in node.frames:
            if tracks is not None:
                rgb = artifacts.draw_tracks(rgb, tracks.tracks_px, stride=2)
            frames.append(rgb)
        files = {"goal": "goal.png", "initial": "initial.png", "bag": "bag"}
        video_frames = 0
        if frames:  # none when the stack never came up
            video = artifacts.write_video(frames, self.out / "episode", fps=1.0 / VIDEO_PERIOD_S)
            files["video_gif"], video_frames = video.gif.name, video.frames
            if video.mp4 is not None:
                files["video_mp4"] = video.mp4.name
        planned = np.zeros((0, 3))
        grasp = pregrasp = None
        if plan is not None and plan.status == Plan.STATUS_OK:
            ee = ros_conv.msg_to_ee_plan(plan)
            planned = np.asarray(ee.ee_poses)[:, :3, 3]
            pregrasp = np.asarray(ee.pregrasp)[:3, 3]
            grasp = planned[min(max(ee.grasp_step, 0), len(planned) - 1)]
        executed = np.array([p for _, p in node.hand]) if node.hand else np.zeros((0, 3))
        plot = artifacts.plot_ee_paths(
            self.out / "ee_path.png", planned, executed, grasp=grasp, pregrasp=pregrasp,
            start=executed[0] if len(executed) else None,
            title=f"{self.args.task} {self.args.split} {self.args.seed}: "
            + ("success" if res is not None and res.success else "not solved"),
        )  # fmt: skip
        self.stage("artifacts", t)
        files["ee_path"] = plot.name
        return {"files": files, "video_frames": video_frames, "planned_path_m": planned,
                "executed_path_m": executed, "tracks": tracks}  # fmt: skip


def bag_counts(path: Path) -> dict[str, int]:
    """Messages per topic in the bag at ``path``."""
    with BagReader(path) as reader:
        return {name: info.message_count for name, info in reader.topics().items()}


def build_summary(demo: Demo, res, plan: Plan | None, art: dict[str, Any]) -> dict[str, Any]:
    node, a = demo.node, demo.args
    last = node.statuses[-1] if node.statuses else None
    tracks = art["tracks"]
    return {
        "success": bool(res.success) if res is not None else False,
        "episode": {"task": a.task, "split": a.split, "seed": a.seed,
                    "message": res.message if res is not None else "no result",
                    "sim_time_s": float(res.sim_time_s) if res is not None else None,
                    "grasped": bool(res.grasped) if res is not None else None,
                    "errors": dict(zip(res.error_names, res.error_values)) if res else {}},
        "settings": {"mode": a.mode, "policy_checkpoint": a.policy_checkpoint or "(default)",
                     "track_checkpoint": a.track_checkpoint or "(default)",
                     "image": f"{a.width}x{a.height}", "camera_rate_hz": a.camera_rate,
                     "real_time_factor": a.real_time_factor},
        "tracks": None if tracks is None else {
            "goal_id": node.tracks.goal_id, "steps": int(tracks.tracks_px.shape[0]),
            "points": int(tracks.tracks_px.shape[1])},
        "plan": None if plan is None else {
            "goal_id": plan.goal_id, "status": int(plan.status), "ok": plan.status == 0,
            "message": plan.message, "poses": len(plan.ee_poses), "grasp_step": plan.grasp_step},
        "control": None if last is None else {
            "final_state": last.state_name, "goal_id": last.goal_id, "step": last.step,
            "num_steps": last.num_steps, "message": last.message,
            "status_messages": len(node.statuses), "ee_goals": len(node.goals),
            "mean_tick_ms": float(np.mean([s.tick_ms for s in node.statuses]))},
        "timings_s": demo.timings,
        "artifacts": art["files"],
        "video_frames": art["video_frames"],
        "bag_messages": bag_counts(demo.out / "bag") if (demo.out / "bag").exists() else {},
        "log": demo.events,
    }  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    task, split, seed = DEFAULT_TASK
    p = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter,
                                epilog="\n\n".join(__doc__.split("\n\n")[1:]))  # fmt: skip
    p.add_argument("--task", default=task, choices=sorted(tasks.TASKS))
    p.add_argument("--split", default=split, choices=sorted(tasks.SPLITS))
    p.add_argument(
        "--seed", type=int, default=seed, help="episode seed (1000+ are never trained on)"
    )
    p.add_argument("--out", type=Path, default=Path("artifacts/demo"),
                   help="artifacts folder (replaced if it exists)")  # fmt: skip
    default_mode = {a.name: a.default for a in load_description().arguments("sim")}["control_mode"]
    p.add_argument("--mode", default=default_mode, choices=["open_loop", "residual", "absolute"],
                   help="controller mode (default: stack.yaml's control_mode)")  # fmt: skip
    p.add_argument("--policy-checkpoint", default="", help="'' = the shipped residual policy")
    p.add_argument("--track-checkpoint", default="", help="'' = the shipped track model")
    p.add_argument("--width", type=int, default=320, help="sim camera width (px)")
    p.add_argument("--height", type=int, default=240, help="sim camera height (px)")
    p.add_argument("--camera-rate", type=float, default=10.0, help="sim camera rate (Hz)")
    p.add_argument("--real-time-factor", type=float, default=1.0,
                   help="sim seconds per wall second (lower it on a slow machine)")  # fmt: skip
    p.add_argument("--max-sim-time", type=float, default=60.0,
                   help="stop the episode after this much sim time under control (s)")  # fmt: skip
    p.add_argument("--startup-timeout", type=float, default=120.0, help="wall s for the stack")
    p.add_argument("--stage-timeout", type=float, default=120.0, help="wall s per stage")
    p.add_argument("--control-timeout", type=float, default=300.0, help="wall s for control")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.task not in tasks.tasks_of(args.split):
        print(f"{PROG}: task {args.task} is not in split {args.split} "
              f"(its tasks: {', '.join(tasks.tasks_of(args.split))})", file=sys.stderr)  # fmt: skip
        return 2
    if args.out.exists():
        shutil.rmtree(args.out)
    args.out.mkdir(parents=True)
    demo = Demo(args)
    res = plan = None
    code = 2
    rclpy.init()
    try:
        demo.node = DemoNode()
        demo.executor = SingleThreadedExecutor()
        demo.executor.add_node(demo.node)
        goal_rgb, _ = demo.goal_image()
        demo.start_stack()
        demo.start_recorder()
        goal_id = demo.send_goal(goal_rgb)
        plan = demo.wait_plan(goal_id)
        demo.control(plan)
        res = demo.result()
        code = 0 if res.success else 1
    except StackError as exc:
        demo.say(f"ERROR: {exc}")
    except KeyboardInterrupt:
        demo.say("interrupted")
    finally:
        demo.stop()
    try:
        art = demo.write_artifacts(res, plan)
        summary = build_summary(demo, res, plan, art)
        summary["timings_s"]["total"] = round(time.perf_counter() - demo.t0, 3)
        artifacts.write_summary(args.out, summary, f"t2a-demo: {args.task} {args.split} "
                                f"{args.seed}")  # fmt: skip
    finally:
        if demo.node is not None:
            demo.node.destroy_node()
        rclpy.try_shutdown()
    verdict = {0: "SUCCESS", 1: "task not solved", 2: "the stack did not run"}[code]
    print(f"{PROG}: {verdict}; artifacts in {args.out} "
          f"(summary.md, episode.gif, ee_path.png, bag/) after "
          f"{time.perf_counter() - demo.t0:.0f} s", flush=True)  # fmt: skip
    return code


if __name__ == "__main__":
    sys.exit(main())
