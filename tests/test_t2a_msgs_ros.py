"""t2a_msgs over real DDS between two OS processes: topics both ways and the SetGoal service."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
from rclpy.qos import QoSDurabilityPolicy, QoSProfile

from t2a_common import ros_conv
from t2a_common.core.geometry import Intrinsics, make_transform
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_msgs.msg import ControlStatus, Plan, PointTracks
from t2a_msgs.srv import SetGoal

pytestmark = pytest.mark.ros
PEER = str(Path(__file__).parent / "peers" / "echo_peer.py")


def _tracks() -> PointTracks:
    rng = np.random.default_rng(1)
    n, h = 400, 8
    msg = PointTracks(goal_id="g1", num_points=n, horizon=h, sampler_steps=10, num_samples=4)
    msg.header.frame_id = "camera_color_optical_frame"
    msg.camera_info = ros_conv.intrinsics_to_camera_info(Intrinsics.from_fov(640, 480, 42.5))
    msg.tracks_px = rng.uniform(0, 640, size=(h + 1) * n * 2).astype(np.float32).tolist()
    depth = rng.uniform(0.3, 2.0, size=n).astype(np.float32)
    depth[::7] = np.nan
    msg.depth_m = depth.tolist()
    msg.confidence = rng.uniform(0, 1, size=n).astype(np.float32).tolist()
    return msg


def _plan() -> Plan:
    msg = Plan(goal_id="g1", status=Plan.STATUS_OK, message="ok", grasp_step=0, confidence=0.875)
    msg.header.frame_id = "body"
    for t in range(9):
        T = make_transform(translation=[0.01 * t, 0.0, 0.0])
        msg.object_transforms.append(ros_conv.matrix_to_transform_msg(T))
        msg.ee_poses.append(ros_conv.matrix_to_pose_msg(T))
        msg.times_from_start.append(ros_conv.sec_to_duration(0.2 * t))
    msg.inlier_ratio = [0.9] * 9
    msg.reprojection_error_px = [0.5] * 9
    msg.reachable = [True] * 9
    msg.moving_point_indices = [1, 5, 9]
    return msg


def _status() -> ControlStatus:
    return ControlStatus(
        state=ControlStatus.STATE_EXECUTE,
        state_name="execute",
        mode="residual",
        goal_id="g1",
        step=3,
        num_steps=9,
        stage_names=["policy", "ik"],
        stage_ms=[12.5, 0.4],
        tick_ms=14.0,
        period_ms=200.0,
    )


def test_messages_and_service_cross_processes():
    with ChildProcess([PEER]) as peer, ros_context() as ctx:
        node = __import__("rclpy").create_node("msgs_test", context=ctx)
        qos = QoSProfile(depth=10, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)
        sent = {"point_tracks": _tracks(), "plan": _plan(), "control_status": _status()}
        types = {"point_tracks": PointTracks, "plan": Plan, "control_status": ControlStatus}
        got: dict = {}
        pubs = {k: node.create_publisher(types[k], f"in/{k}", qos) for k in sent}
        for k in sent:
            node.create_subscription(
                types[k], f"out/{k}", lambda m, k=k: got.__setitem__(k, m), qos
            )
        client = node.create_client(SetGoal, "set_goal")
        assert client.wait_for_service(timeout_sec=20.0), "peer never offered set_goal:\n" + (
            peer.stop()
        )
        assert spin_until(node, lambda: all(p.get_subscription_count() > 0 for p in pubs.values()))
        for k, msg in sent.items():
            pubs[k].publish(msg)
        assert spin_until(node, lambda: len(got) == len(sent), timeout=15.0), (
            f"echoed back only {sorted(got)}"
        )
        # NaN (= no depth) must survive; == would call NaN != NaN, so compare depth on its own.
        np.testing.assert_array_equal(
            np.asarray(got["point_tracks"].depth_m), np.asarray(sent["point_tracks"].depth_m)
        )
        got["point_tracks"].depth_m = sent["point_tracks"].depth_m = []
        for k, msg in sent.items():
            assert got[k] == msg, f"{k} changed on the round trip"

        rgb = np.random.default_rng(2).integers(0, 256, size=(480, 640, 3), dtype=np.uint8)
        req = SetGoal.Request(goal_image=ros_conv.numpy_to_image(rgb, "rgb8"), num_points=400)
        future = client.call_async(req)
        assert spin_until(node, future.done, timeout=15.0), "set_goal did not answer"
        res = future.result()
        assert res.success, res.message
        assert res.goal_id == hashlib.sha256(rgb.tobytes()).hexdigest()[:16]

        bad = SetGoal.Request(goal_image=ros_conv.numpy_to_image(rgb[:240, :320].copy(), "rgb8"))
        future = client.call_async(bad)
        assert spin_until(node, future.done, timeout=15.0)
        assert not future.result().success and "320x240" in future.result().message
        node.destroy_node()
