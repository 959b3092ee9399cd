"""``track_predictor``: the goal service and the track model behind it.

Keeps the latest colour + aligned depth pair (own stamp pairing) and camera_info; ``set_goal``
samples query points P0 on the current frame, predicts their tracks towards the goal image, and
publishes ``tracks`` (transient local, so a late planner still gets them), ``tracks/markers``,
``tracks/overlay`` and the accepted ``goal_image`` (for the residual policy; its header stamp is
the tracks' I0 stamp, which ties the two together). Prediction runs in
the service callback on its own callback group of a multi-threaded executor, so camera callbacks
keep arriving while the model runs.
"""

from __future__ import annotations

import threading
import time
import uuid
from pathlib import Path

import numpy as np
import torch
from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import CameraInfo, Image
from visualization_msgs.msg import MarkerArray

from t2a_common import ros_conv
from t2a_common.core.images import crop_to_aspect
from t2a_common.core.types import PointTrackSet
from t2a_common.node_main import run_node
from t2a_common.ros_params import declare_config
from t2a_msgs.msg import ControlStatus, PointTracks
from t2a_msgs.srv import SetGoal
from t2a_perception.core.frames import StampPairer, draw_tracks
from t2a_perception.core.goal_check import check_goal
from t2a_perception.core.goal_tracks import check_frame, predict_goal_tracks
from t2a_perception.core.node_config import DEFAULT_MODEL, TrackPredictorConfig
from t2a_perception.core.predictor import TrackPredictor
from t2a_perception.track_viz import track_markers


def resolve_checkpoint(path: str) -> Path:
    """The checkpoint directory a ``checkpoint`` parameter names ('' = the shipped default)."""
    if path:
        return Path(path).expanduser()
    try:
        return Path(get_package_share_directory("t2a_perception")) / DEFAULT_MODEL
    except PackageNotFoundError:
        return Path(__file__).resolve().parents[2] / DEFAULT_MODEL


class TrackPredictorNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("track_predictor", namespace="t2a", **kwargs)
        cfg = self.cfg = declare_config(self, TrackPredictorConfig)
        if cfg.torch_threads:
            torch.set_num_threads(cfg.torch_threads)
        self.predictor: TrackPredictor | None = None
        self.model_error = ""
        ckpt = resolve_checkpoint(cfg.checkpoint)
        try:
            self.predictor = TrackPredictor(ckpt, device=cfg.device)
            self.get_logger().info(f"track model loaded from {ckpt}")
        except (FileNotFoundError, ValueError, RuntimeError) as exc:
            self.model_error = f"track model not loaded from {ckpt}: {exc}"
            self.get_logger().error(self.model_error + " (set_goal will refuse goals)")

        self._frames: StampPairer[Image] = StampPairer(cfg.sync_slop_s)
        self._info: CameraInfo | None = None
        self._frames_lock = threading.Lock()
        sensors = MutuallyExclusiveCallbackGroup()
        self.create_subscription(Image, cfg.color_topic, self._on_color, 5, callback_group=sensors)
        self.create_subscription(Image, cfg.depth_topic, self._on_depth, 5, callback_group=sensors)
        self.create_subscription(
            CameraInfo, cfg.info_topic, self._on_info, 5, callback_group=sensors
        )
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_tracks = self.create_publisher(PointTracks, "tracks", latched)
        self._pub_markers = self.create_publisher(MarkerArray, "tracks/markers", latched)
        self._pub_overlay = self.create_publisher(Image, "tracks/overlay", latched)
        self._pub_goal = self.create_publisher(Image, "goal_image", latched)
        self._status: ControlStatus | None = None  # the controller's, to refuse a second goal
        self._status_received = -float("inf")
        self.create_subscription(
            ControlStatus, cfg.status_topic, self._on_status, 5, callback_group=sensors
        )
        self.create_service(
            SetGoal, "set_goal", self._on_set_goal, callback_group=MutuallyExclusiveCallbackGroup()
        )
        self.goals_served = 0

    # ------------------------------------------------------------------ sensors
    def _on_color(self, msg: Image) -> None:
        with self._frames_lock:
            self._frames.add_color(ros_conv.stamp_to_sec(msg.header.stamp), time.monotonic(), msg)

    def _on_depth(self, msg: Image) -> None:
        with self._frames_lock:
            self._frames.add_depth(ros_conv.stamp_to_sec(msg.header.stamp), time.monotonic(), msg)

    def _on_info(self, msg: CameraInfo) -> None:
        self._info = msg

    def _on_status(self, msg: ControlStatus) -> None:
        self._status, self._status_received = msg, time.monotonic()

    def _active_goal(self) -> str:
        """'' or a description of the goal the controller is executing now."""
        st, cfg = self._status, self.cfg
        if st is None or time.monotonic() - self._status_received > cfg.status_timeout_s:
            return ""
        if st.state_name not in cfg.preempt_states or not st.goal_id:
            return ""
        return f"goal {st.goal_id} is active (controller {st.state_name}, step {st.step})"

    # ------------------------------------------------------------------ goals
    def _on_set_goal(self, req: SetGoal.Request, res: SetGoal.Response) -> SetGoal.Response:
        t0 = time.perf_counter()
        try:
            tracks, extra, image0 = self._predict(req)
        except GoalRejected as exc:
            res.success, res.message, res.goal_id = False, str(exc), ""
            self.get_logger().warn(f"set_goal refused: {exc}")
            return res
        msg = ros_conv.point_tracks_to_msg(tracks, extra)
        # The residual policy looks at the goal too. Stamped with its tracks' I0 stamp, so the
        # controller can tell the goal image of these tracks from an earlier goal's.
        req.goal_image.header.stamp = msg.header.stamp
        self._pub_goal.publish(req.goal_image)
        self._pub_tracks.publish(msg)
        self._pub_markers.publish(track_markers(tracks, msg.header.stamp))
        overlay = draw_tracks(image0, tracks.tracks_px, tracks.confidence, self.cfg.overlay_stride)
        self._pub_overlay.publish(
            ros_conv.numpy_to_image(overlay, "rgb8", msg.header.stamp, tracks.frame_id)
        )
        self.goals_served += 1
        res.success, res.goal_id = True, tracks.goal_id
        res.message = (
            f"{tracks.num_points} points, {tracks.horizon} steps, "
            f"{extra['num_samples']} samples x {extra['sampler_steps']} steps in "
            f"{extra['inference_time_s']:.2f} s (total {time.perf_counter() - t0:.2f} s)"
        )
        self.get_logger().info(f"goal {tracks.goal_id}: {res.message}")
        return res

    def _predict(self, req: SetGoal.Request) -> tuple[PointTrackSet, dict, np.ndarray]:
        cfg = self.cfg
        if self.predictor is None:
            raise GoalRejected(self.model_error)
        active = self._active_goal()
        if active and not getattr(req, "preempt", False):
            raise GoalRejected(
                f"{active}: call /t2a/stop first, or set preempt to replace it (its I0 would be "
                "a frame with the arm moving)"
            )
        if active:
            self.get_logger().warn(f"set_goal preempts: {active}")
        goal = _rgb_or_reject(req.goal_image, "goal image")
        if min(goal.shape[:2]) < cfg.min_goal_size_px:
            raise GoalRejected(
                f"goal image is {goal.shape[1]}x{goal.shape[0]}, smaller than "
                f"{cfg.min_goal_size_px} px on a side"
            )
        with self._frames_lock:
            pair = self._frames.latest()
            counts = self._frames.counts()
        if pair is None or self._info is None:
            raise GoalRejected(
                f"no camera frame yet (colour {counts[0]}, depth {counts[1]} buffered within "
                f"{cfg.sync_slop_s} s of each other, camera_info "
                f"{'received' if self._info else 'missing'}) on {cfg.color_topic}"
            )
        color_msg, depth_msg, stamp_s, received = pair
        age = time.monotonic() - received
        if age > cfg.max_frame_age_s:
            raise GoalRejected(
                f"stale camera: latest frame is {age:.1f} s old (> {cfg.max_frame_age_s} s)"
            )
        try:
            intr = ros_conv.camera_info_to_intrinsics(self._info)
            depth_m = ros_conv.depth_to_meters(depth_msg)
            image0 = (
                _rgb_or_reject(req.initial_image, "initial image")
                if req.initial_image.width
                else ros_conv.image_to_rgb(color_msg, "camera image")
            )
            check_frame(image0, depth_m, intr)
        except ValueError as exc:
            raise GoalRejected(str(exc)) from exc
        h, w = image0.shape[:2]
        try:  # a goal of another aspect ratio is cropped to I0's or refused, never stretched
            goal = crop_to_aspect(goal, w, h)
        except ValueError as exc:
            raise GoalRejected(str(exc)) from exc
        t_check = time.perf_counter()
        verdict = check_goal(image0, depth_m, goal, cfg.goal_check)
        self.get_logger().info(
            f"goal check ({(time.perf_counter() - t_check) * 1e3:.0f} ms): {verdict.summary()}"
        )
        if not verdict.ok and cfg.goal_check.enabled:
            raise GoalRejected(verdict.reason)
        try:
            out = predict_goal_tracks(
                self.predictor, image0, goal, depth_m, intr, cfg,
                num_points=int(req.num_points) or None,
                seed=int(req.seed) if req.seed >= 0 else None,
                goal_check=verdict,
                goal_id=uuid.uuid4().hex[:12],
                stamp_s=stamp_s,
                frame_id=color_msg.header.frame_id or "camera_color_optical_frame",
            )  # fmt: skip
        except ValueError as exc:
            raise GoalRejected(str(exc)) from exc
        steps = (
            cfg.sampler_steps
            if cfg.sampler == "ddim"
            else self.predictor.config.num_train_timesteps
        )
        extra = {
            "sampler_steps": steps,
            "num_samples": cfg.num_samples,
            "inference_time_s": out.inference_s,
        }
        return out.tracks, extra, image0


class GoalRejected(Exception):
    """A goal the node answers with success=false and this reason."""


def _rgb_or_reject(msg: Image, what: str) -> np.ndarray:
    if msg.width == 0 or msg.height == 0:
        raise GoalRejected(f"{what} is empty (0x0)")
    try:
        return ros_conv.image_to_rgb(msg, what)
    except ValueError as exc:
        raise GoalRejected(str(exc)) from exc


def main(args: list[str] | None = None) -> int:
    return run_node(TrackPredictorNode, args, threads=3)


if __name__ == "__main__":
    raise SystemExit(main())
