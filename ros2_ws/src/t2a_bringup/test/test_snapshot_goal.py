"""``t2a-snapshot-goal`` over DDS: the camera's next frame is saved as the goal image (its own
size, no stretching) and, with ``--send --no-wait``, sent to set_goal as the goal."""

from __future__ import annotations

import threading

import cv2
import numpy as np
import pytest
import rclpy
from rclpy.executors import SingleThreadedExecutor
from sensor_msgs.msg import Image

from t2a_common import ros_conv
from t2a_common.testing import ChildProcess, ros_context
from t2a_msgs.srv import SetGoal

pytestmark = pytest.mark.ros
TOPIC = "/snapshot_test/color"


def test_snapshot_saves_the_camera_frame_and_sends_it_as_the_goal(tmp_path) -> None:
    frame = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    received: list[np.ndarray] = []

    def set_goal(req: SetGoal.Request, res: SetGoal.Response) -> SetGoal.Response:
        received.append(ros_conv.image_to_rgb(req.goal_image))
        res.success, res.message, res.goal_id = True, "tracks published", "g1"
        return res

    out = tmp_path / "goal.png"
    args = ["-m", "t2a_bringup.snapshot_goal", "-o", str(out), "--topic", TOPIC, "--send",
            "--no-wait", "--service", "/snapshot_test/set_goal", "--timeout", "30"]  # fmt: skip
    with ros_context() as ctx:
        node = rclpy.create_node("snapshot_probe", context=ctx)
        node.create_service(SetGoal, "/snapshot_test/set_goal", set_goal)
        pub = node.create_publisher(Image, TOPIC, 2)
        node.create_timer(0.1, lambda: pub.publish(ros_conv.numpy_to_image(frame, "bgr8")))
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        spinner = threading.Thread(target=executor.spin, daemon=True)
        spinner.start()
        with ChildProcess(args) as child:
            child.proc.wait(timeout=60)
            log = child.stop()
        executor.shutdown()
    assert child.proc.returncode == 0, log
    assert "saved" in log and "set_goal: ok" in log, log
    saved = cv2.cvtColor(cv2.imread(str(out)), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(saved, frame[:, :, ::-1])  # bgr8 on the wire -> RGB
    assert len(received) == 1
    np.testing.assert_array_equal(received[0], saved)
