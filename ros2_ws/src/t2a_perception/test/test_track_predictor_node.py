"""track_predictor over real DDS in its own process: goals accepted, tracks published, bad goals
refused with a reason. The model is a small untrained one saved with the real checkpoint code:
these tests are about the node, the model's accuracy is tested elsewhere."""

from __future__ import annotations

import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
import rclpy
import torch
from sensor_msgs.msg import Image
from visualization_msgs.msg import MarkerArray

from t2a_common import ros_conv
from t2a_common.core.geometry import Intrinsics
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_msgs.msg import ControlStatus, PointTracks
from t2a_msgs.srv import SetGoal
from t2a_perception.core.checkpoint import save_checkpoint
from t2a_perception.core.model import TrackDiT, TrackModelConfig, TrackStats
from t2a_perception.core.predictor import sample_query_points

pytestmark = pytest.mark.ros
W, H = 640, 480
# Generous: on CI's 2 loaded cores the node has been seen 0.7 s behind a camera published at 10 Hz.
MAX_FRAME_AGE_S = 2.0
TINY = TrackModelConfig(image_size=32, model_size="T2A-Ti", hidden_size=32, depth=2, num_heads=2,
                        encoder_width=8, point_frequencies=4, num_train_timesteps=20)  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return str(save_checkpoint(TrackDiT(TINY, TrackStats(0.1)), tmp_path_factory.mktemp("ckpt")))


def _node_args(checkpoint: str, *extra: str) -> list[str]:
    return ["-m", "t2a_perception.nodes.track_predictor", "--ros-args",
            "-p", f"checkpoint:={checkpoint}", "-p", "num_points:=64", "-p", "num_samples:=2",
            "-p", f"max_frame_age_s:={MAX_FRAME_AGE_S}",
            *[a for e in extra for a in ("-p", e)]]  # fmt: skip


class FakeCamera:
    """Publishes realsense2_camera-style colour, aligned depth and camera_info messages."""

    def __init__(self, node):
        self.node = node
        self.pubs = {
            "color": node.create_publisher(Image, "/camera/camera/color/image_raw", 5),
            "depth": node.create_publisher(
                Image, "/camera/camera/aligned_depth_to_color/image_raw", 5
            ),
            "info": node.create_publisher(
                ros_conv.CameraInfo, "/camera/camera/color/camera_info", 5
            ),
        }
        rng = np.random.default_rng(0)
        # A flat-coloured scene (random pixels would be refused as noise): the goal has the box
        # moved right, which set_goal's goal check accepts.
        self.rgb = _scene(box_u=300)
        self.goal_rgb = _scene(box_u=360)
        self.depth_mm = rng.integers(500, 1500, (H, W), dtype=np.uint16)
        self.depth_mm[:40] = 0  # a band with no depth
        self.intr = Intrinsics.from_fov(W, H, 42.0)

    def publish(self):
        stamp = self.node.get_clock().now().to_msg()
        frame = "camera_color_optical_frame"
        self.pubs["color"].publish(ros_conv.numpy_to_image(self.rgb, "rgb8", stamp, frame))
        self.pubs["depth"].publish(ros_conv.numpy_to_image(self.depth_mm, "16UC1", stamp, frame))
        self.pubs["info"].publish(ros_conv.intrinsics_to_camera_info(self.intr, stamp, frame))


def _scene(box_u: int) -> np.ndarray:
    img = np.zeros((H, W, 3), np.uint8)
    img[:200] = (150, 140, 170)  # wall
    img[200:] = (60, 90, 70)  # floor
    cv2.line(img, (0, 200), (W, 192), (90, 80, 60), 4)
    cv2.circle(img, (80, 300), 18, (200, 40, 40), -1)
    cv2.rectangle(img, (520, 260), (560, 320), (40, 40, 200), -1)
    cv2.rectangle(img, (box_u - 50, 180), (box_u + 50, 300), (180, 160, 40), -1)
    cv2.rectangle(img, (box_u - 20, 230), (box_u + 20, 250), (90, 90, 90), -1)
    return img


def _call(node, client, request, camera=None, timeout=30.0):
    if camera is not None:
        camera.publish()  # a fresh frame ahead of the request, not only while it is pending
    future = client.call_async(request)
    deadline = time.monotonic() + timeout
    while not future.done() and time.monotonic() < deadline:
        if camera is not None:
            camera.publish()
        spin_until(node, future.done, timeout=0.1)
    assert future.done(), "set_goal did not answer"
    return future.result()


def test_goals_over_dds(checkpoint, tmp_path):
    # P0 only in the left half of the image (the optional mask), 64-point grid -> 32 points.
    args = _node_args(checkpoint, "roi_px:=[0, 0, 319, 479]")
    with ChildProcess(args) as proc, ros_context() as ctx:
        node = rclpy.create_node("perception_probe", context=ctx)
        cam = FakeCamera(node)
        got: dict = {}
        node.create_subscription(PointTracks, "/t2a/tracks", lambda m: got.__setitem__("t", m),
                                 rclpy.qos.QoSProfile(depth=1, durability=1))  # fmt: skip
        node.create_subscription(Image, "/t2a/tracks/overlay", lambda m: got.__setitem__("o", m),
                                 rclpy.qos.QoSProfile(depth=1, durability=1))  # fmt: skip
        node.create_subscription(Image, "/t2a/goal_image", lambda m: got.__setitem__("g", m),
                                 rclpy.qos.QoSProfile(depth=1, durability=1))  # fmt: skip
        node.create_subscription(MarkerArray, "/t2a/tracks/markers",
                                 lambda m: got.__setitem__("m", m),
                                 rclpy.qos.QoSProfile(depth=1, durability=1))  # fmt: skip
        client = node.create_client(SetGoal, "/t2a/set_goal")
        assert client.wait_for_service(timeout_sec=30.0), proc.stop()
        goal = ros_conv.numpy_to_image(cam.goal_rgb[::2, ::2].copy(), "rgb8")

        res = _call(node, client, SetGoal.Request(goal_image=goal, seed=1))
        assert not res.success and "no camera frame yet" in res.message, res.message

        for bad, reason in [
            (ros_conv.numpy_to_image(np.zeros((240, 320), np.uint8), "mono8"),
             "goal image is 320x240 mono8, expected rgb8"),
            (Image(), "goal image is empty"),
            (ros_conv.numpy_to_image(np.zeros((8, 8, 3), np.uint8), "rgb8"), "smaller than 32"),
            (ros_conv.numpy_to_image(np.random.default_rng(1).integers(
                0, 256, (240, 320, 3), dtype=np.uint8), "rgb8"), "goal image is mostly noise"),
            (ros_conv.numpy_to_image(cam.rgb, "rgb8"), "goal image shows no change"),
            (ros_conv.numpy_to_image(np.roll(cam.rgb, 40, axis=1), "rgb8"), "seen from elsewhere"),
        ]:  # fmt: skip
            res = _call(node, client, SetGoal.Request(goal_image=bad), camera=cam)
            assert not res.success and reason in res.message, res.message
            assert res.goal_id == ""

        # Stream the camera until the node surely has a frame pair, then send a good goal.
        assert spin_until(node, lambda: all(p.get_subscription_count() for p in cam.pubs.values()),
                          10.0)  # fmt: skip
        for _ in range(10):
            cam.publish()
            spin_until(node, lambda: False, timeout=0.1)
        res = _call(node, client, SetGoal.Request(goal_image=goal, seed=3), camera=cam)
        assert res.success, res.message
        assert spin_until(node, lambda: len(got) == 4 and got["t"].goal_id == res.goal_id, 10.0)
        # The goal image goes out stamped with its tracks' I0, which ties the two together.
        assert got["g"].header.stamp == got["t"].header.stamp
        assert bytes(got["g"].data) == bytes(goal.data)
        tracks = ros_conv.msg_to_point_tracks(got["t"])
        assert (tracks.num_points, tracks.horizon) == (32, TINY.horizon)
        left_half = np.zeros((H, W), bool)
        left_half[:, :320] = True
        p0 = sample_query_points(H, W, 64, "grid", left_half)
        np.testing.assert_array_equal(tracks.tracks_px[0], p0)  # P0 is exactly the query points
        rows, cols = np.round(p0[:, 1]).astype(int), np.round(p0[:, 0]).astype(int)
        expected = cam.depth_mm[rows, cols] / 1000.0
        no_depth = rows < 38
        assert np.isnan(tracks.depth_m[no_depth]).all()
        assert np.abs(tracks.depth_m[~no_depth] - expected[~no_depth]).max() < 0.6
        assert (got["o"].width, got["o"].height, got["o"].encoding) == (W, H, "rgb8")
        assert tracks.intrinsics == cam.intr and tracks.confidence is not None

        # t2a-send-goal: the CLI a user types, against the same node.
        path = tmp_path / "goal.png"
        cv2.imwrite(str(path), cv2.cvtColor(cam.goal_rgb, cv2.COLOR_RGB2BGR))
        cli = subprocess.Popen([sys.executable, "-m", "t2a_perception.send_goal", str(path),
                                "--seed", "0"], stdout=subprocess.PIPE, text=True)  # fmt: skip
        while cli.poll() is None:
            cam.publish()
            spin_until(node, lambda: False, timeout=0.1)
        out = cli.communicate()[0]
        assert cli.returncode == 0 and "accepted" in out and "goal_id:" in out, out

        # While the controller executes a goal, a new one is refused unless it preempts. The
        # status goes out at the controller's 5 Hz, as the node would see it.
        status_pub = node.create_publisher(ControlStatus, "/t2a/status", 5)
        status = [ControlStatus(state=ControlStatus.STATE_EXECUTE, state_name="execute",
                                goal_id="abc123", step=4)]  # fmt: skip
        node.create_timer(0.2, lambda: status_pub.publish(status[0]))
        assert spin_until(node, lambda: status_pub.get_subscription_count() > 0, 10.0)
        spin_until(node, lambda: False, timeout=1.0)
        res = _call(node, client, SetGoal.Request(goal_image=goal), camera=cam)
        assert not res.success and "goal abc123 is active" in res.message, res.message
        assert "/t2a/stop" in res.message
        res = _call(node, client, SetGoal.Request(goal_image=goal, preempt=True), camera=cam)
        assert res.success, res.message
        status[0] = ControlStatus(state=ControlStatus.STATE_IDLE, state_name="idle")
        spin_until(node, lambda: False, timeout=1.0)
        res = _call(node, client, SetGoal.Request(goal_image=goal), camera=cam)
        assert res.success, res.message

        # Stale camera: no frame for longer than max_frame_age_s -> refused. Wait well past it:
        # on a loaded machine the node may still be draining queued frames for a while.
        spin_until(node, lambda: False, timeout=MAX_FRAME_AGE_S + 3.0)
        res = _call(node, client, SetGoal.Request(goal_image=goal))
        assert not res.success and "stale camera" in res.message, res.message
        node.destroy_node()


def test_missing_model_refuses_goals(tmp_path):
    with ChildProcess(_node_args(str(tmp_path / "nothing"))) as proc, ros_context() as ctx:
        node = rclpy.create_node("perception_probe2", context=ctx)
        cam = FakeCamera(node)
        client = node.create_client(SetGoal, "/t2a/set_goal")
        assert client.wait_for_service(timeout_sec=30.0), proc.stop()
        goal = ros_conv.numpy_to_image(cam.rgb, "rgb8")
        res = _call(node, client, SetGoal.Request(goal_image=goal), camera=cam)
        assert not res.success and "track model not loaded" in res.message, res.message
        node.destroy_node()
