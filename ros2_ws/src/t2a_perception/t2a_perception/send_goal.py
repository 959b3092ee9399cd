"""``t2a-send-goal``: send a goal image file to the stack's set_goal service and print the answer.

t2a-send-goal goal.png [--initial first.png] [--num-points 400] [--seed 0]
"""

from __future__ import annotations

import argparse
import sys

import cv2
import rclpy

from t2a_common import ros_conv
from t2a_msgs.srv import SetGoal


def load_rgb(path: str):
    """An image file as (H, W, 3) uint8 RGB; exits with a message if it cannot be read."""
    bgr = cv2.imread(path, cv2.IMREAD_COLOR)
    if bgr is None:
        raise SystemExit(f"t2a-send-goal: cannot read an image from {path!r}")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("goal", help="goal image file (png, jpg, ...)")
    parser.add_argument("--initial", help="use this image as I0 instead of the live camera frame")
    parser.add_argument("--num-points", type=int, default=0, help="query points (0 = node default)")
    parser.add_argument("--seed", type=int, default=-1, help="sampler seed (negative = random)")
    parser.add_argument("--service", default="/t2a/set_goal", help="service name")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait (s)")
    args = parser.parse_args(argv)

    request = SetGoal.Request(num_points=args.num_points, seed=args.seed)
    request.goal_image = ros_conv.numpy_to_image(load_rgb(args.goal), "rgb8")
    if args.initial:
        request.initial_image = ros_conv.numpy_to_image(load_rgb(args.initial), "rgb8")

    rclpy.init()
    node = rclpy.create_node("t2a_send_goal")
    try:
        client = node.create_client(SetGoal, args.service)
        if not client.wait_for_service(timeout_sec=min(args.timeout, 10.0)):
            print(
                f"t2a-send-goal: no {args.service} service (is the stack running?)", file=sys.stderr
            )
            return 2
        future = client.call_async(request)
        rclpy.spin_until_future_complete(node, future, timeout_sec=args.timeout)
        if not future.done():
            print(f"t2a-send-goal: no answer within {args.timeout} s", file=sys.stderr)
            return 2
        res = future.result()
        print(f"{'accepted' if res.success else 'refused'}: {res.message}")
        if res.success:
            print(f"goal_id: {res.goal_id}")
        return 0 if res.success else 1
    finally:
        node.destroy_node()
        rclpy.shutdown()


if __name__ == "__main__":
    raise SystemExit(main())
