"""``planner``: point tracks -> rigid object motion -> end-effector plan (paper section 2.3).

On every ``/t2a/tracks`` message: lift P0 with the aligned depth image of I0 (matched by stamp;
the tracks' own per-point depths when no image matches), fit the object's rigid motion, build the
hand plan from the current hand pose (forward kinematics of ``joint_states``), check every pose
with the arm's IK, and publish ``/t2a/plan`` (transient local) plus rviz views. A failed plan is
published as a status with its reason and never carries poses.
"""

from __future__ import annotations

import collections
import time

import numpy as np
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Path
from rclpy.node import Node
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image, JointState
from visualization_msgs.msg import MarkerArray

from t2a_common import ros_conv
from t2a_common.core import spot_arm
from t2a_common.core.types import PLAN_BAD_INPUT, EEPlan
from t2a_common.node_main import run_node
from t2a_common.ros_params import declare_config
from t2a_msgs.msg import Plan as PlanMsg
from t2a_msgs.msg import PointTracks
from t2a_planning import plan_viz as plan_conv
from t2a_planning.core.node_config import PlannerNodeConfig
from t2a_planning.core.planner import plan_for_arm


class PlannerNode(Node):
    def __init__(self, **kwargs) -> None:
        super().__init__("planner", namespace="t2a", **kwargs)
        cfg = self.cfg = declare_config(self, PlannerNodeConfig)
        self.T_body_cam = cfg.T_body_cam
        self._depth: collections.deque[tuple[float, Image]] = collections.deque(maxlen=60)
        self._joints: tuple[np.ndarray, float] | None = None  # (q (6,), receive time)
        latched = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        self._pub_plan = self.create_publisher(PlanMsg, "plan", latched)
        self._pub_path = self.create_publisher(Path, "plan/path", latched)
        self._pub_poses = self.create_publisher(PoseArray, "plan/poses", latched)
        self._pub_markers = self.create_publisher(MarkerArray, "plan/markers", latched)
        self.create_subscription(PointTracks, "tracks", self._on_tracks, latched)
        self.create_subscription(JointState, f"/{cfg.spot_name}/joint_states", self._on_joints, 10)
        if cfg.depth_topic:
            self.create_subscription(Image, cfg.depth_topic, self._on_depth, 5)
        self.plans_published = 0
        self._pending: tuple[PointTracks, float] | None = None  # tracks waiting for joint_states
        self.create_timer(0.25, self._expire_pending)

    def _on_depth(self, msg: Image) -> None:
        self._depth.append((ros_conv.stamp_to_sec(msg.header.stamp), msg))

    def _on_joints(self, msg: JointState) -> None:
        try:
            self._joints = (
                ros_conv.joint_positions(msg, spot_arm.ARM_JOINT_NAMES),
                time.monotonic(),
            )
        except ValueError as exc:
            self.get_logger().error(str(exc), throttle_duration_sec=5.0)
            return
        if self._pending is not None:
            pending, self._pending = self._pending[0], None
            self._on_tracks(pending)

    def _expire_pending(self) -> None:
        if self._pending is not None and (
            time.monotonic() - self._pending[1] > self.cfg.joint_state_wait_s
        ):
            msg, self._pending = self._pending[0], None
            self._publish_failure(
                msg,
                f"no /{self.cfg.spot_name}/joint_states within {self.cfg.joint_state_wait_s} s: "
                "hand pose unknown",
            )

    def _depth_for(self, stamp_s: float) -> np.ndarray | None:
        best = min(self._depth, key=lambda d: abs(d[0] - stamp_s), default=None)
        if best is None or abs(best[0] - stamp_s) > self.cfg.depth_match_s:
            return None
        return ros_conv.depth_to_meters(best[1], self.cfg.depth_scale)

    def _on_tracks(self, msg: PointTracks) -> None:
        t0 = time.perf_counter()
        stamp = msg.header.stamp
        try:
            tracks = ros_conv.msg_to_point_tracks(msg)
        except ValueError as exc:
            self._publish_failure(msg, f"malformed PointTracks: {exc}")
            return
        if self._joints is None:  # plan once they arrive, or fail after joint_state_wait_s
            self.get_logger().info(
                f"tracks arrived before /{self.cfg.spot_name}/joint_states: waiting up to "
                f"{self.cfg.joint_state_wait_s} s for the hand pose"
            )
            self._pending = (msg, time.monotonic())
            return
        q, received = self._joints
        if time.monotonic() - received > self.cfg.max_joint_state_age_s:
            self._publish_failure(msg, f"joint_states are {time.monotonic() - received:.1f} s old")
            return
        depth = None
        try:
            depth = self._depth_for(tracks.stamp_s)
        except ValueError as exc:
            self.get_logger().warn(f"depth image unusable ({exc}); using per-point depths")
        if depth is not None and depth.shape != (tracks.intrinsics.height, tracks.intrinsics.width):
            depth = None
        plan = plan_for_arm(
            tracks.tracks_px,
            tracks.intrinsics,
            self.T_body_cam,
            q,
            self.cfg.planner,
            depth=depth,
            point_depth_m=None if depth is not None else tracks.depth_m,
            check_reachability=self.cfg.check_reachability,
        )
        ee = plan.to_ee_plan(tracks.goal_id, tracks.stamp_s, tracks.frame_id)
        plan_msg = ros_conv.ee_plan_to_msg(ee)
        plan_msg.header.frame_id = self.cfg.body_frame_id
        self._pub_plan.publish(plan_msg)
        frame = self.cfg.body_frame_id
        if len(plan.ee_poses):  # also UNREACHABLE plans: seeing them in rviz says why
            self._pub_path.publish(plan_conv.plan_path(plan, stamp, frame))
            self._pub_poses.publish(plan_conv.plan_poses(plan, stamp, frame))
        points_cam = tracks.intrinsics.backproject(tracks.tracks_px[0], tracks.depth_m)
        self._pub_markers.publish(
            plan_conv.plan_markers(plan, points_cam, self.T_body_cam, stamp, frame)
        )
        self.plans_published += 1
        ms = (time.perf_counter() - t0) * 1e3
        log = self.get_logger().info if plan.ok else self.get_logger().warn
        log(
            f"goal {tracks.goal_id}: {plan.status.name} ({plan.message}); "
            f"{len(plan.moving_point_indices)} moving points, "
            f"depth from {'image' if depth is not None else 'tracks'}, {ms:.1f} ms"
        )

    def _publish_failure(self, msg: PointTracks, reason: str) -> None:
        ee = EEPlan.failed(
            PLAN_BAD_INPUT, reason, msg.goal_id, ros_conv.stamp_to_sec(msg.header.stamp)
        )
        out = ros_conv.ee_plan_to_msg(ee)
        out.header.frame_id = self.cfg.body_frame_id
        self._pub_plan.publish(out)
        self.plans_published += 1
        self.get_logger().error(f"goal {msg.goal_id}: no plan: {reason}")


def main(args: list[str] | None = None) -> int:
    return run_node(PlannerNode, args)


if __name__ == "__main__":
    raise SystemExit(main())
