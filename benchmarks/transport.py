"""Camera-sized images between two processes over DDS: t2a_common conversion vs raw rclpy bytes.

A child process publishes 640x480 rgb8 + 16UC1 frame pairs at 30 Hz (the RealSense colour +
aligned depth streams); this process subscribes and measures how many pairs arrive and their
latency (receive time minus header stamp, same clock). Two pipelines run back to back:

- ``t2a``: numpy -> ``numpy_to_image`` on the publisher, ``image_to_rgb`` / ``depth_to_meters``
  on the subscriber (what the stack's nodes do);
- ``raw``: pre-built messages published as they are, and only the bytes touched on receipt
  (the floor that rclpy + Fast DDS set on this machine).

Each pipeline runs with reliable and with best-effort QoS, and the t2a pipeline once more with
Fast DDS's LARGE_DATA builtin transports (``FASTDDS_BUILTIN_TRANSPORTS=LARGE_DATA``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time

import numpy as np
import rclpy
from common import emit_json, parser, print_table, stats_ms  # benchmarks/ is sys.path[0]
from rclpy.node import Node
from rclpy.qos import QoSProfile, QoSReliabilityPolicy
from sensor_msgs.msg import Image
from std_msgs.msg import UInt32

from t2a_common import ros_conv

W, H = 640, 480


def _qos(reliable: bool) -> QoSProfile:
    return QoSProfile(
        depth=5,
        reliability=QoSReliabilityPolicy.RELIABLE if reliable else QoSReliabilityPolicy.BEST_EFFORT,
    )


def run_publisher(mode: str, reliable: bool, frames: int, rate: float) -> None:
    """Child process: publish ``frames`` colour+depth pairs, then how many were sent."""
    rclpy.init()
    node = rclpy.create_node("transport_pub")
    pub_rgb = node.create_publisher(Image, "bench/color", _qos(reliable))
    pub_depth = node.create_publisher(Image, "bench/depth", _qos(reliable))
    done = node.create_publisher(UInt32, "bench/done", 10)
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth_m = rng.uniform(0.3, 3.0, (H, W)).astype(np.float32)
    raw_rgb = ros_conv.numpy_to_image(rgb, "rgb8", frame_id="camera_color_optical_frame")
    raw_depth = ros_conv.numpy_to_image(
        ros_conv.meters_to_depth16(depth_m), "16UC1", frame_id="camera_color_optical_frame"
    )
    deadline = time.monotonic() + 20
    while (pub_rgb.get_subscription_count() == 0 or done.get_subscription_count() == 0) and (
        time.monotonic() < deadline
    ):
        time.sleep(0.05)
    time.sleep(0.5)  # let discovery settle on both sides
    period = 1.0 / rate
    t_next = time.monotonic()
    for _ in range(frames):
        stamp = ros_conv.sec_to_stamp(time.time())
        if mode == "t2a":
            msg_rgb = ros_conv.numpy_to_image(rgb, "rgb8", stamp, "camera_color_optical_frame")
            msg_depth = ros_conv.numpy_to_image(
                ros_conv.meters_to_depth16(depth_m), "16UC1", stamp, "camera_color_optical_frame"
            )
        else:
            msg_rgb, msg_depth = raw_rgb, raw_depth
            msg_rgb.header.stamp = msg_depth.header.stamp = stamp
        pub_rgb.publish(msg_rgb)
        pub_depth.publish(msg_depth)
        t_next += period
        time.sleep(max(0.0, t_next - time.monotonic()))
    time.sleep(0.5)
    for _ in range(5):
        done.publish(UInt32(data=frames))
        time.sleep(0.05)
    node.destroy_node()
    rclpy.shutdown()


class Receiver(Node):
    def __init__(self, mode: str, reliable: bool):
        super().__init__("transport_sub")
        self.mode = mode
        self.latency: list[float] = []
        self.convert: list[float] = []
        self.pending: dict[tuple[int, int], float] = {}
        self.sent: int | None = None
        self.create_subscription(Image, "bench/color", self._on_image, _qos(reliable))
        self.create_subscription(Image, "bench/depth", self._on_image, _qos(reliable))
        self.create_subscription(UInt32, "bench/done", self._on_done, 10)

    def _on_image(self, msg: Image) -> None:
        t0 = time.perf_counter()
        if self.mode == "t2a":
            if msg.encoding == "rgb8":
                ros_conv.image_to_rgb(msg)
            else:
                ros_conv.depth_to_meters(msg)
        else:
            memoryview(msg.data)  # touch the buffer, nothing else
        self.convert.append(time.perf_counter() - t0)
        key = (msg.header.stamp.sec, msg.header.stamp.nanosec)
        if key in self.pending:  # the pair is complete when its second image is in
            self.latency.append(time.time() - ros_conv.stamp_to_sec(msg.header.stamp))
            del self.pending[key]
        else:
            self.pending[key] = time.time()

    def _on_done(self, msg: UInt32) -> None:
        self.sent = msg.data


def measure(mode: str, reliable: bool, frames: int, rate: float, large_data: bool = False) -> dict:
    # Fast DDS reads its builtin-transport choice when a participant is created, so setting it
    # here (before init) applies to this process and, inherited, to the child.
    if large_data:
        os.environ["FASTDDS_BUILTIN_TRANSPORTS"] = "LARGE_DATA"
    else:
        os.environ.pop("FASTDDS_BUILTIN_TRANSPORTS", None)
    rclpy.init()
    node = Receiver(mode, reliable)
    child = subprocess.Popen(
        [sys.executable, __file__, "--role", "pub", "--mode", mode, "--frames", str(frames)]
        + ["--rate", str(rate)]
        + ([] if reliable else ["--best-effort"]),
    )
    deadline = time.monotonic() + frames / rate + 30
    while node.sent is None and time.monotonic() < deadline:
        rclpy.spin_once(node, timeout_sec=0.05)
    child.wait(timeout=30)
    sent = node.sent or frames
    result = {
        "mode": mode,
        "qos": "reliable" if reliable else "best_effort",
        "transport": "LARGE_DATA" if large_data else "default",
        "sent": sent,
        "delivered": len(node.latency),
        "latency_ms": stats_ms(node.latency),
        "convert_ms": stats_ms(node.convert),
    }
    node.destroy_node()
    rclpy.shutdown()
    return result


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=150, help="frame pairs per run (default 150)")
    p.add_argument("--rate", type=float, default=30.0, help="publish rate (Hz)")
    p.add_argument("--role", choices=["sub", "pub"], default="sub", help=argparse_hidden())
    p.add_argument("--mode", choices=["t2a", "raw"], default="t2a", help=argparse_hidden())
    p.add_argument("--best-effort", action="store_true", help=argparse_hidden())
    args = p.parse_args()
    if args.role == "pub":
        run_publisher(args.mode, not args.best_effort, args.frames, args.rate)
        return 0
    results = [
        measure(mode, reliable, args.frames, args.rate)
        for reliable in (True, False)
        for mode in ("raw", "t2a")
    ]
    results.append(measure("t2a", True, args.frames, args.rate, large_data=True))
    print_table(
        f"640x480 rgb8 + 16UC1 pairs at {args.rate:g} Hz between two processes "
        f"({os.environ.get('RMW_IMPLEMENTATION', 'default rmw')})",
        [
            "pipeline",
            "qos",
            "transport",
            "delivered",
            "lat mean ms",
            "lat p50 ms",
            "lat p95 ms",
            "conv ms/img",
        ],
        [
            [
                r["mode"],
                r["qos"],
                r["transport"],
                f"{r['delivered']}/{r['sent']}",
                r["latency_ms"]["mean"],
                r["latency_ms"]["p50"],
                r["latency_ms"]["p95"],
                r["convert_ms"]["mean"],
            ]
            for r in results
        ],
    )
    emit_json(args.json, {"benchmark": "transport", "results": results})
    return 0


def argparse_hidden() -> str:
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    raise SystemExit(main())
