"""``t2a-play``: replay a rosbag2 bag onto ROS topics, in place of ``ros2 bag play``.

The stored bytes are published as they are (rclpy publishers accept serialized messages), at
the recorded pace scaled by ``--rate``, with publishers offering the QoS the bag recorded (a
transient-local topic is replayed transient local, so a node started after its message was
replayed still gets it). ``--clock`` also publishes the bag time on ``/clock`` for nodes run with
``use_sim_time``.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path

import rclpy
from builtin_interfaces.msg import Time
from rclpy.duration import Duration
from rclpy.node import Node
from rclpy.publisher import Publisher
from rclpy.qos import QoSProfile
from rclpy.utilities import remove_ros_args
from rosgraph_msgs.msg import Clock

from t2a_bringup.bag_record import StopFlag, message_class, qos_to_rclpy
from t2a_bringup.core.bag import (
    BagError,
    BagReader,
    PlaybackClock,
    offset_to_bag_time,
    playback_qos,
    summary_lines,
)

PROG = "t2a-play"
PROGRESS_PERIOD_S = 1.0  # wall seconds between progress lines
MAX_SLEEP_S = 0.05  # longest single sleep, so Ctrl-C and /clock ticks are served promptly
ACK_TIMEOUT_S = 2.0  # at the end, how long to wait for reliable subscribers to acknowledge


class Player:
    """Publishes a bag's messages on time; owns the publishers and the stop/progress logic."""

    def __init__(
        self,
        node: Node,
        reader: BagReader,
        topics: list[str],
        rate: float,
        clock_hz: float | None,
        stop: StopFlag,
    ):
        self.node = node
        self.reader = reader
        self.topics = topics
        self.stop = stop
        self.clock = PlaybackClock(rate)
        infos = reader.topics()
        self.pubs: dict[str, Publisher] = {}
        for topic in topics:
            qos = playback_qos(infos[topic].offered_qos)
            cls = message_class(infos[topic].msgtype)
            self.pubs[topic] = node.create_publisher(cls, topic, qos_to_rclpy(qos))
            print(f"{PROG}: {topic} [{infos[topic].msgtype}] ({qos.describe()})", flush=True)
        # rclpy's time source subscribes best effort, depth 1; a reliable offer matches it too.
        self.clock_pub = (
            node.create_publisher(Clock, "/clock", QoSProfile(depth=1)) if clock_hz else None
        )
        self.clock_period = 1.0 / clock_hz if clock_hz else math.inf
        self._next_tick = 0.0
        self._next_progress = 0.0
        self.published = 0
        self.counts = dict.fromkeys(topics, 0)  # published per topic, all passes

    def wait_for_subscribers(self, timeout_s: float) -> None:
        """Wait until every topic has a subscriber, at most ``timeout_s`` (discovery takes a
        moment, and whatever is published before a subscriber matched is lost to it)."""
        deadline = time.monotonic() + timeout_s
        lonely = [t for t, p in self.pubs.items() if p.get_subscription_count() == 0]
        if lonely and timeout_s > 0:
            print(f"{PROG}: waiting up to {timeout_s:g} s for subscribers", flush=True)
        while lonely and time.monotonic() < deadline and not self.stop.set:
            time.sleep(MAX_SLEEP_S)
            lonely = [t for t in lonely if self.pubs[t].get_subscription_count() == 0]
        if lonely:
            print(f"{PROG}: no subscriber yet on {', '.join(lonely)}; playing anyway", flush=True)

    def _tick(self, now: float, pass_index: int) -> None:
        if self.clock_pub is not None and now >= self._next_tick:
            sec, nsec = divmod(self.clock.bag_time_ns(), 1_000_000_000)
            self.clock_pub.publish(Clock(clock=Time(sec=sec, nanosec=nsec)))
            self._next_tick = now + self.clock_period
        if now >= self._next_progress:
            bag_s = (self.clock.bag_time_ns() - self.reader.start_ns) / 1e9
            loop = f" (pass {pass_index})" if pass_index > 1 else ""
            print(
                f"{PROG}: {bag_s:6.1f} / {self.reader.duration_s:.1f} s bag time, "
                f"{self.published} messages{loop}",
                flush=True,
            )
            self._next_progress = now + PROGRESS_PERIOD_S

    def _wait_until_due(self, stamp_ns: int, pass_index: int) -> bool:
        """Sleep until the message stamped ``stamp_ns`` is due; False if asked to stop."""
        while True:
            now = time.monotonic()
            self._tick(now, pass_index)
            if self.stop.set:
                return False
            remaining = self.clock.due_in(stamp_ns)
            if remaining <= 0:
                return True
            wait = min(remaining, MAX_SLEEP_S)
            if self.clock_pub is not None:
                wait = min(wait, max(0.0, self._next_tick - now))
            time.sleep(wait)

    def play_once(self, start_ns: int, pass_index: int = 1) -> bool:
        """One pass over the bag from ``start_ns``; False if it was stopped before the end."""
        self.clock.start(start_ns)
        for msg in self.reader.messages(self.topics, start_ns=start_ns):
            if not self._wait_until_due(msg.stamp_ns, pass_index):
                return False
            self.pubs[msg.topic].publish(msg.data)
            self.published += 1
            self.counts[msg.topic] += 1
        return not self.stop.set

    def finish(self, linger_s: float) -> None:
        """Let reliable subscribers acknowledge everything, then stay ``linger_s`` s for late
        subscribers of transient-local topics."""
        ack_deadline = time.monotonic() + ACK_TIMEOUT_S
        for pub in self.pubs.values():
            left = ack_deadline - time.monotonic()
            # Best-effort publishers return at once; a subscriber that died is why there is
            # a deadline at all.
            if left > 0 and hasattr(pub, "wait_for_all_acked"):
                pub.wait_for_all_acked(Duration(nanoseconds=int(left * 1e9)))
        deadline = time.monotonic() + linger_s
        if linger_s > 0:
            print(f"{PROG}: lingering {linger_s:g} s for late subscribers", flush=True)
        while time.monotonic() < deadline and not self.stop.set:
            time.sleep(MAX_SLEEP_S)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Replay a rosbag2 bag (a folder with metadata.yaml, as written by t2a-record or "
            "ros2 bag record) onto its topics: the stored serialized messages are published "
            "unchanged, with the recorded timing scaled by --rate and with the recorded QoS "
            "(transient-local topics stay transient local)."
        ),
    )
    parser.add_argument("bag", type=Path, metavar="BAG_DIR", help="bag folder to play")
    parser.add_argument(
        "--topics", nargs="+", default=None, metavar="T",
        help="play only these topics (default: all topics in the bag)",
    )  # fmt: skip
    parser.add_argument(
        "--rate", type=float, default=1.0, metavar="R",
        help="speed factor: 2 plays twice as fast, 0.5 half as fast (default 1)",
    )  # fmt: skip
    parser.add_argument("--loop", action="store_true", help="start over at the end, until Ctrl-C")
    parser.add_argument(
        "--start-offset", type=float, default=0.0, metavar="S",
        help="skip the first S seconds of the bag (from its first message; default 0)",
    )  # fmt: skip
    parser.add_argument(
        "--clock", type=float, nargs="?", const=40.0, default=None, metavar="HZ",
        help="publish the bag time on /clock (rosgraph_msgs/Clock) at HZ per wall second "
        "(default 40 when given without a value)",
    )  # fmt: skip
    parser.add_argument(
        "--wait-for-subscribers", type=float, default=1.0, metavar="S",
        help="before playing, wait up to S seconds until every topic has a subscriber "
        "(default 1; 0 = do not wait)",
    )  # fmt: skip
    parser.add_argument(
        "--linger", type=float, default=0.0, metavar="S",
        help="after the last message keep the publishers S seconds longer, so nodes that start "
        "late still get the transient-local topics (default 0)",
    )  # fmt: skip
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (ROS arguments after ``--ros-args`` are ignored here)."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(remove_ros_args(["prog", *raw])[1:])
    if not (math.isfinite(args.rate) and args.rate > 0):
        parser.error(f"--rate is {args.rate}, expected a number > 0")
    if args.clock is not None and not (math.isfinite(args.clock) and args.clock > 0):
        parser.error(f"--clock is {args.clock} Hz, expected a rate > 0")
    for name in ("wait_for_subscribers", "linger"):
        value = getattr(args, name)
        if not (math.isfinite(value) and value >= 0):
            parser.error(f"--{name.replace('_', '-')} is {value}, expected seconds >= 0")
    args.ros_args = raw
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Play the bag; 0 when played (or stopped with Ctrl-C), 2 if the bag or a topic is wrong."""
    args = parse_args(argv)
    try:
        reader = BagReader(args.bag)
    except BagError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    with reader:
        try:
            topics = reader.select(args.topics)
            start_ns = offset_to_bag_time(reader, args.start_offset)
            for topic in topics:
                message_class(reader.topics()[topic].msgtype)
        except (BagError, ImportError) as exc:
            print(f"{PROG}: {exc}", file=sys.stderr)
            return 2
        if reader.message_count == 0:
            print(f"{PROG}: {args.bag} holds no messages, nothing to play", file=sys.stderr)
            return 2

        rclpy.init(args=["prog", *args.ros_args])
        stop = StopFlag()
        node = rclpy.create_node("t2a_play")
        player = None
        played_s = 0.0
        try:
            player = Player(node, reader, topics, args.rate, args.clock, stop)
            player.wait_for_subscribers(args.wait_for_subscribers)
            print(
                f"{PROG}: playing {args.bag} ({reader.duration_s:.1f} s, {len(topics)} topics) "
                f"at rate {args.rate:g}" + (", looping" if args.loop else ""),
                flush=True,
            )
            started = time.monotonic()
            passes = 1
            while player.play_once(start_ns, passes) and args.loop:
                passes += 1
            played_s = time.monotonic() - started
            if not stop.set:
                player.finish(args.linger)
        except KeyboardInterrupt:
            pass
        finally:
            node.destroy_node()
            if rclpy.ok():
                rclpy.shutdown()
        if player is not None:
            state = "stopped" if stop.set else "done"
            print(f"{PROG}: {state}: published {player.published} messages in {played_s:.2f} s")
            infos = reader.topics()
            played = {t: replace(infos[t], message_count=player.counts[t]) for t in topics}
            print("\n".join(summary_lines(played)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
