"""``t2a-record``: record topics into a rosbag2 MCAP bag, in place of ``ros2 bag record``.

``ros2 bag`` (rosbag2) is not installable from PyPI; this records the same bag layout with
rosbags (see ``t2a_bringup.core.bag``). Messages are taken as serialized bytes (``raw=True``) and
written as they are, so recording costs no deserialization, even for images.

Each topic is subscribed once it has a publisher, with a QoS that matches all of its publishers
(transient local where they all offer it, so latched messages such as ``/t2a/tracks`` published
before the recording started are recorded too); their offered QoS goes into the bag for playback.
Ctrl-C (SIGINT), SIGTERM, ``--duration`` or ``--max-messages`` end the recording, and the bag is
always closed (an unclosed MCAP has no index and readers refuse it).
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.node import Node
from rclpy.qos import (
    DurabilityPolicy,
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
)
from rclpy.subscription import Subscription
from rclpy.utilities import remove_ros_args

from t2a_bringup.core.bag import (
    DURABILITIES,
    HISTORIES,
    LIVELINESSES,
    RELIABILITIES,
    BagError,
    BagWriter,
    QosProfile,
    UnknownMessageType,
    recording_qos,
    summary_lines,
)

PROG = "t2a-record"
DISCOVERY_PERIOD_S = 0.2  # how often the graph is checked for requested / new topics
# Infrastructure topics every rclpy/rclcpp node publishes; --all would otherwise fill the bag
# with them (including the recorder's own). They are recorded when named with --topics.
NOISE_TOPICS = frozenset({"/rosout", "/parameter_events"})


# ------------------------------------------------------------------------------------------
# QoS and type helpers shared with t2a-play
# ------------------------------------------------------------------------------------------


def qos_from_rclpy(profile: QoSProfile) -> QosProfile:
    """rclpy QoSProfile (e.g. from ``get_publishers_info_by_topic``) -> the bag's QosProfile."""

    def choice(policy: Any, allowed: tuple[str, ...]) -> str:
        name = getattr(policy, "name", str(policy)).lower()
        return name if name in allowed else "unknown"

    return QosProfile(
        reliability=choice(profile.reliability, RELIABILITIES),
        durability=choice(profile.durability, DURABILITIES),
        history=choice(profile.history, HISTORIES),
        depth=max(0, int(profile.depth)),
        deadline_ns=max(0, int(profile.deadline.nanoseconds)),
        lifespan_ns=max(0, int(profile.lifespan.nanoseconds)),
        liveliness=choice(profile.liveliness, LIVELINESSES),
        liveliness_lease_duration_ns=max(0, int(profile.liveliness_lease_duration.nanoseconds)),
        avoid_ros_namespace_conventions=bool(profile.avoid_ros_namespace_conventions),
    )


def qos_to_rclpy(qos: QosProfile) -> QoSProfile:
    """The bag's QosProfile -> rclpy QoSProfile with its reliability, durability and history.

    Deadline, lifespan and liveliness are left at their defaults: a replay cannot keep the
    promises a live publisher made about them.
    """

    def member(enum: Any, name: str, fallback: str) -> Any:
        # "unknown" is what rmw reports for policies it cannot see; no endpoint can use it.
        known = name != "unknown" and name.upper() in enum.__members__
        return enum[name.upper()] if known else enum[fallback]

    return QoSProfile(
        reliability=member(ReliabilityPolicy, qos.reliability, "RELIABLE"),
        durability=member(DurabilityPolicy, qos.durability, "VOLATILE"),
        history=member(HistoryPolicy, qos.history, "KEEP_LAST"),
        depth=max(1, qos.depth),
    )


def message_class(msgtype: str) -> type:
    """``pkg/msg/Type`` -> the generated Python class (needed for its type support, even raw).

    Raises ImportError naming the type if its package is not installed or sourced.
    """
    parts = msgtype.split("/")
    if len(parts) != 3:
        raise ImportError(f"message type {msgtype!r} is malformed, expected pkg/msg/Type")
    pkg, kind, name = parts
    try:
        return getattr(importlib.import_module(f"{pkg}.{kind}"), name)
    except (ImportError, AttributeError) as exc:
        raise ImportError(
            f"cannot import {pkg}.{kind}.{name} for {msgtype} ({exc}); "
            "is its package installed and sourced?"
        ) from exc


def absolute_topic(name: str) -> str:
    """Topic names on the command line may omit the leading slash (relative to ``/``)."""
    return name if name.startswith("/") else "/" + name


class StopFlag:
    """Turns SIGINT/SIGTERM into a flag checked between callbacks.

    rclpy's own handler would raise KeyboardInterrupt wherever the main thread happens to be,
    possibly in the middle of appending a record to the bag; a flag lets the current callback
    finish. A second signal interrupts at once, for a user who insists.
    """

    def __init__(self) -> None:
        self.set = False
        self.signal_name = ""
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._handle)

    def _handle(self, signum: int, frame: object) -> None:
        if self.set:
            raise KeyboardInterrupt
        self.set = True
        self.signal_name = signal.Signals(signum).name


# ------------------------------------------------------------------------------------------
# Node
# ------------------------------------------------------------------------------------------


class Recorder(Node):
    """Subscribes (raw) to the requested topics as they appear and writes what arrives."""

    def __init__(
        self,
        writer: BagWriter,
        topics: Sequence[str],
        record_all: bool,
        max_messages: int | None = None,
        log: Callable[[str], None] = print,
    ):
        super().__init__("t2a_record")
        self.writer = writer
        self.requested = [absolute_topic(t) for t in topics]
        self.record_all = record_all
        self.max_messages = max_messages
        self.total = 0
        self.limit_reached = False
        self.skipped: dict[str, str] = {}  # topic -> why it cannot be recorded
        self._subs: dict[str, Subscription] = {}
        self._log = log
        self.discover()
        self._timer = self.create_timer(DISCOVERY_PERIOD_S, self.discover)

    @property
    def recording(self) -> list[str]:
        """Topics subscribed so far."""
        return list(self._subs)

    def missing(self) -> list[str]:
        """Requested topics that never got a publisher (or could not be recorded)."""
        return [t for t in self.requested if t not in self._subs]

    def _wanted(self, graph: dict[str, list[str]]) -> list[str]:
        wanted = list(self.requested)
        if self.record_all:
            for name in sorted(graph):
                hidden = any(part.startswith("_") for part in name.split("/"))
                if not hidden and name not in NOISE_TOPICS and name not in wanted:
                    wanted.append(name)
        return wanted

    def discover(self) -> None:
        """Subscribe to every wanted topic that has a publisher and is not subscribed yet."""
        graph = dict(self.get_topic_names_and_types())
        for topic in self._wanted(graph):
            if topic in self._subs or topic in self.skipped or not graph.get(topic):
                continue
            # Only publishers tell the QoS to match; a topic that so far has only subscribers
            # (it is listed in the graph too) waits for its first publisher.
            infos = self.get_publishers_info_by_topic(topic)
            if not infos:
                continue
            msgtype = infos[0].topic_type
            offers = [qos_from_rclpy(i.qos_profile) for i in infos if i.topic_type == msgtype]
            if len({i.topic_type for i in infos}) > 1:
                self._log(
                    f"{PROG}: {topic} is published with several types "
                    f"({', '.join(sorted({i.topic_type for i in infos}))}); recording {msgtype}"
                )
            self._subscribe(topic, msgtype, offers)

    def _subscribe(self, topic: str, msgtype: str, offers: list[QosProfile]) -> None:
        try:
            cls = message_class(msgtype)
            self.writer.add_topic(topic, msgtype, offers)
        except (ImportError, UnknownMessageType) as exc:
            self.skipped[topic] = str(exc)
            self._log(f"{PROG}: cannot record {topic}: {exc}")
            return
        qos = recording_qos(offers)
        self._subs[topic] = self.create_subscription(
            cls, topic, self._callback(topic), qos_to_rclpy(qos), raw=True
        )
        self._log(f"{PROG}: recording {topic} [{msgtype}] ({qos.describe()})")

    def _callback(self, topic: str) -> Callable[[bytes], None]:
        def on_message(data: bytes) -> None:
            if self.limit_reached:
                return
            self.writer.write(topic, self.get_clock().now().nanoseconds, data)
            self.total += 1
            if self.max_messages is not None and self.total >= self.max_messages:
                self.limit_reached = True

        return on_message


# ------------------------------------------------------------------------------------------
# CLI
# ------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description=(
            "Record ROS 2 topics into a rosbag2 bag (a folder with metadata.yaml and an .mcap "
            "file) that ros2 bag, Foxglove, t2a-play and the rosbags/mcap libraries read. "
            "Messages are stored as received (serialized CDR) with their receive time. Each "
            "topic is recorded from when it first has a publisher, with QoS matching its "
            "publishers (transient local where all of them offer it). Stops on Ctrl-C, SIGTERM, "
            "--duration or --max-messages, and always closes the bag."
        ),
    )
    parser.add_argument(
        "-o", "--output", required=True, type=Path, metavar="OUT_DIR",
        help="bag folder to create (must not exist yet)",
    )  # fmt: skip
    parser.add_argument(
        "--topics", nargs="+", default=[], metavar="T",
        help="topics to record; waits for each until it has a publisher",
    )  # fmt: skip
    parser.add_argument(
        "--all", action="store_true",
        help="also record every other topic seen while recording (checked every "
        f"{DISCOVERY_PERIOD_S} s), except hidden ones and {', '.join(sorted(NOISE_TOPICS))}",
    )  # fmt: skip
    parser.add_argument(
        "--duration", type=float, default=None, metavar="S",
        help="stop after S seconds (wall time from start); default: until Ctrl-C",
    )  # fmt: skip
    parser.add_argument(
        "--max-messages", type=int, default=None, metavar="N",
        help="stop after N messages in total (all topics)",
    )  # fmt: skip
    return parser


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Parse the command line (ROS arguments after ``--ros-args`` are ignored here)."""
    parser = build_parser()
    raw = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(remove_ros_args(["prog", *raw])[1:])
    if not args.topics and not args.all:
        parser.error("nothing to record: name topics with --topics T [T ...] or pass --all")
    if args.duration is not None and not args.duration > 0:
        parser.error(f"--duration is {args.duration}, expected seconds > 0")
    if args.max_messages is not None and args.max_messages < 1:
        parser.error(f"--max-messages is {args.max_messages}, expected >= 1")
    args.ros_args = raw
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Record until stopped; 0 on success, 1 if a requested topic was not recorded, 2 on a
    usage error."""
    args = parse_args(argv)
    try:
        writer = BagWriter(args.output, custom_data={"recorded_by": PROG})
    except BagError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2

    rclpy.init(args=["prog", *args.ros_args])
    stop = StopFlag()
    node = None
    started = time.monotonic()
    reason = "stopped"
    try:
        node = Recorder(writer, args.topics, args.all, args.max_messages)
        if node.requested:
            waiting = [t for t in node.requested if t not in node.recording]
            if waiting:
                print(f"{PROG}: waiting for publishers on {', '.join(waiting)}", flush=True)
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        while True:
            if stop.set:
                reason = f"{stop.signal_name} received"
                break
            if node.limit_reached:
                reason = f"--max-messages {args.max_messages} reached"
                break
            if args.duration is not None and time.monotonic() - started >= args.duration:
                reason = f"--duration {args.duration:g} s reached"
                break
            executor.spin_once(timeout_sec=0.05)
    except (KeyboardInterrupt, ExternalShutdownException):
        reason = "interrupted"
    finally:
        missing = node.missing() if node is not None else []
        skipped = dict(node.skipped) if node is not None else {}
        if node is not None:
            node.destroy_node()  # no callback may write once the bag is closing
        writer.close()
        if rclpy.ok():
            rclpy.shutdown()

    elapsed = time.monotonic() - started
    topics = writer.topics()
    if writer.opened:
        total = sum(t.message_count for t in topics.values())
        print(
            f"{PROG}: {reason}; wrote {args.output}: {total} messages on {len(topics)} topics "
            f"in {elapsed:.1f} s"
        )
        print("\n".join(summary_lines(topics)), flush=True)
    else:
        print(f"{PROG}: {reason} after {elapsed:.1f} s; no topic appeared, no bag written")
    for topic in missing:
        why = skipped.get(topic) or (
            f"no publisher appeared within {elapsed:.1f} s (check the name and ROS_DOMAIN_ID)"
        )
        print(f"{PROG}: {topic} was not recorded: {why}", file=sys.stderr, flush=True)
    return 1 if missing or not writer.opened else 0


if __name__ == "__main__":
    sys.exit(main())
