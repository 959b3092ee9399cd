"""``t2a-snapshot-goal``: the robot camera's current frame as the goal image.

As in the paper, the goal is a photo of the scene in its final state: move the object by hand to
where it should end up (arm and hands out of view), take the snapshot, put the object back, then
send the goal (``--send`` does it after you press Enter; or ``t2a-send-goal goal.png`` later)::

    t2a-snapshot-goal -o goal.png            # save the frame
    t2a-snapshot-goal -o goal.png --send     # save, wait for Enter (scene restored), send it

The goal then has the camera's own size and aspect ratio, so nothing is stretched.
"""

from __future__ import annotations

import argparse
import sys
import time

import cv2
import numpy as np
import rclpy
from sensor_msgs.msg import Image

from t2a_common import ros_conv
from t2a_msgs.srv import SetGoal

COLOR_TOPIC = "/camera/camera/color/image_raw"


def grab_frame(node, topic: str, timeout_s: float) -> tuple[np.ndarray, Image]:
    """The first colour frame published on ``topic`` after now, as (H, W, 3) uint8 RGB."""
    got: list[Image] = []
    sub = node.create_subscription(Image, topic, got.append, 2)
    deadline = time.monotonic() + timeout_s
    while not got and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.1)
    node.destroy_subscription(sub)
    if not got:
        raise SystemExit(f"t2a-snapshot-goal: no image on {topic} within {timeout_s:g} s")
    return ros_conv.image_to_rgb(got[-1], f"image on {topic}"), got[-1]


def send_goal(node, service: str, rgb: np.ndarray, timeout_s: float) -> SetGoal.Response:
    """Call ``set_goal`` with ``rgb`` as the goal image (I0 = the live frame at that moment)."""
    client = node.create_client(SetGoal, service)
    if not client.wait_for_service(timeout_sec=timeout_s):
        raise SystemExit(f"t2a-snapshot-goal: {service} is not available (is the stack running?)")
    future = client.call_async(SetGoal.Request(goal_image=ros_conv.numpy_to_image(rgb, "rgb8")))
    rclpy.spin_until_future_complete(node, future, timeout_sec=timeout_s)
    if not future.done():
        raise SystemExit(f"t2a-snapshot-goal: {service} did not answer within {timeout_s:g} s")
    return future.result()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-o", "--out", default="goal.png", help="where to save the goal image")
    parser.add_argument("--topic", default=COLOR_TOPIC, help="colour image topic")
    parser.add_argument("--send", action="store_true", help="then send it to set_goal")
    parser.add_argument("--no-wait", action="store_true",
                        help="with --send: send at once instead of waiting for Enter")  # fmt: skip
    parser.add_argument("--service", default="/t2a/set_goal", help="set_goal service")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds to wait (s)")
    args = parser.parse_args(argv)

    rclpy.init()
    node = rclpy.create_node("t2a_snapshot_goal")
    try:
        rgb, msg = grab_frame(node, args.topic, args.timeout)
        if not cv2.imwrite(args.out, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
            raise SystemExit(f"t2a-snapshot-goal: cannot write {args.out}")
        h, w = rgb.shape[:2]
        print(f"saved {args.out} ({w}x{h}, {msg.header.frame_id or 'no frame'}, "
              f"stamp {ros_conv.stamp_to_sec(msg.header.stamp):.3f} s)")  # fmt: skip
        if not args.send:
            print(f"put the object back, then: t2a-send-goal {args.out}")
            return 0
        if not args.no_wait:
            input("put the object back where it started, then press Enter to send the goal ")
        res = send_goal(node, args.service, rgb, args.timeout)
        print(f"set_goal: {'ok' if res.success else 'REFUSED'}: {res.message}")
        if res.success:
            print("preview: check the tracks and plan in rviz, then ros2 service call "
                  "/t2a/execute std_srvs/srv/Trigger")  # fmt: skip
        return 0 if res.success else 1
    finally:
        node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()


if __name__ == "__main__":
    sys.exit(main())
