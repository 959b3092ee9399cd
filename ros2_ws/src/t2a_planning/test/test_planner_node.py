"""planner over real DDS in its own process: tracks in, plan (or a failure status) out."""

from __future__ import annotations

import numpy as np
import pytest
import rclpy
from geometry_msgs.msg import PoseArray
from nav_msgs.msg import Path
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from sensor_msgs.msg import JointState

from t2a_common import ros_conv
from t2a_common.core import kinematics, spot_arm
from t2a_common.core.geometry import Intrinsics, transform_points
from t2a_common.core.types import PointTrackSet
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_msgs.msg import Plan, PointTracks
from t2a_planning.nodes.planner import PlannerNodeConfig

pytestmark = pytest.mark.ros
LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
INTR = Intrinsics.from_fov(640, 480, 42.0)
ARGS = ["-m", "t2a_planning.nodes.planner", "--ros-args", "-p", "depth_topic:=''"]


def _tracks(goal_id: str, motion_m: float) -> PointTrackSet:
    """A 12 cm square patch 0.6 m in front of the camera sliding along the camera x axis."""
    rng = np.random.default_rng(0)
    obj = np.c_[rng.uniform(-0.06, 0.06, (60, 2)), np.full(60, 0.6)]  # (60, 3) on a plane
    bg = np.c_[rng.uniform(-0.4, 0.4, (60, 2)), np.full(60, 1.5)]  # static wall behind
    P0 = np.r_[obj, bg]
    steps = []
    for t in range(9):
        moved = P0.copy()
        moved[:60, 0] += motion_m * t / 8
        steps.append(INTR.project(moved))
    return PointTrackSet(np.array(steps, np.float32), P0[:, 2], INTR, goal_id=goal_id)


def test_plan_from_tracks_and_failures_over_dds():
    with ChildProcess(ARGS) as proc, ros_context() as ctx:
        node = rclpy.create_node("planner_probe", context=ctx)
        plans: dict = {}
        views: dict = {}
        node.create_subscription(Plan, "/t2a/plan", lambda m: plans.__setitem__(m.goal_id, m),
                                 LATCHED)  # fmt: skip
        node.create_subscription(Path, "/t2a/plan/path", lambda m: views.__setitem__("path", m),
                                 LATCHED)  # fmt: skip
        node.create_subscription(PoseArray, "/t2a/plan/poses",
                                 lambda m: views.__setitem__("poses", m), LATCHED)  # fmt: skip
        pub_tracks = node.create_publisher(PointTracks, "/t2a/tracks", LATCHED)
        pub_joints = node.create_publisher(JointState, "/spot/joint_states", 10)
        assert spin_until(node, lambda: pub_tracks.get_subscription_count() > 0, 30.0), proc.stop()

        # No joint_states within joint_state_wait_s: the hand pose is unknown, no plan, the reason.
        pub_tracks.publish(ros_conv.point_tracks_to_msg(_tracks("early", 0.08)))
        assert spin_until(node, lambda: "early" in plans, 15.0), proc.stop()
        assert plans["early"].status == Plan.STATUS_BAD_INPUT
        assert "joint_states" in plans["early"].message and len(plans["early"].ee_poses) == 0

        def joints():
            pub_joints.publish(ros_conv.joint_state_msg(spot_arm.ALL_JOINT_NAMES,
                                                        [*spot_arm.READY, 0.0]))  # fmt: skip
            return False

        spin_until(node, joints, 0.5)
        pub_tracks.publish(ros_conv.point_tracks_to_msg(_tracks("slide", 0.08)))
        assert spin_until(node, lambda: joints() or "slide" in plans, 15.0), proc.stop()
        plan = ros_conv.msg_to_ee_plan(plans["slide"])
        assert plan.ok, plan.message
        assert plan.num_steps == 9 and np.all(np.diff(plan.times_s) > 0)
        assert set(plan.moving_point_indices.tolist()) <= set(range(60))  # no background point
        # the hand follows the object: 8 cm along the camera x axis, seen in the body frame
        T_body_cam = PlannerNodeConfig().T_body_cam
        expected = T_body_cam[:3, :3] @ np.array([0.08, 0.0, 0.0])
        np.testing.assert_allclose(plan.ee_poses[-1, :3, 3] - plan.ee_poses[0, :3, 3], expected,
                                   atol=2e-3)  # fmt: skip
        # grasp pose = centre of the moving points, with the current hand orientation
        centre = transform_points(T_body_cam, np.array([[0.0, 0.0, 0.6]]))[0]
        assert np.linalg.norm(plan.ee_poses[0, :3, 3] - centre) < 0.02
        np.testing.assert_allclose(plan.ee_poses[0, :3, :3],
                                   kinematics.fk(spot_arm.READY)[:3, :3], atol=1e-9)  # fmt: skip
        assert spin_until(node, lambda: len(views) == 2, 5.0)
        assert len(views["poses"].poses) == 9 and views["path"].header.frame_id == "body"

        # Tracks that do not move: a clear status, no poses.
        pub_tracks.publish(ros_conv.point_tracks_to_msg(_tracks("still", 0.0)))
        assert spin_until(node, lambda: joints() or "still" in plans, 15.0)
        assert plans["still"].status == Plan.STATUS_NO_MOTION, plans["still"].message
        assert len(plans["still"].ee_poses) == 0
        node.destroy_node()
