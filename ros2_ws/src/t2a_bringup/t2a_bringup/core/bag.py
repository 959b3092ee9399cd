"""rosbag2 bags in the MCAP layout without rosbag2 (not installable from PyPI), on top of rosbags.

A bag is a folder holding ``metadata.yaml`` and one ``.mcap`` file, as ``ros2 bag record -s mcap``
writes it, so ``ros2 bag play``/``info`` (Humble and later) and Foxglove read what is written here.
Messages stay serialized CDR bytes end to end: the recorder writes what it received, the player
publishes what it read, nothing is deserialized.

What a bag needs besides the bytes is each type's message definition (the MCAP schema, which tools
like Foxglove and ``mcap_ros2`` decode with) and its RIHS01 hash. :class:`MessageTypes` takes
standard types from the rosbags type store of the running ROS distribution and everything else
(``t2a_msgs``) from the ``.msg`` files installed under ``share/`` of ``AMENT_PREFIX_PATH``.

Each topic's QoS as offered by its publishers is stored too, so that playback can offer the same
(a transient-local ``/t2a/tracks`` stays transient local, and a late subscriber still gets it).
"""

from __future__ import annotations

import dataclasses
import math
import os
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from rosbags.interfaces import (
    Connection,
    Qos,
    QosDurability,
    QosHistory,
    QosLiveliness,
    QosReliability,
    QosTime,
)
from rosbags.rosbag2 import Reader, StoragePlugin, Writer
from rosbags.rosbag2.errors import ReaderError
from rosbags.typesys import Stores, TypesysError, get_types_from_msg, get_typestore
from rosbags.typesys.base import Nodetype
from rosbags.typesys.store import Typestore

# rosbag2 metadata version 8 keeps the QoS profiles as an embedded YAML string with integer
# policies, which is what Humble's rosbag2 parses; version 9 (Jazzy+) changed that layout.
BAG_VERSION = 8
METADATA_FILE = "metadata.yaml"

RELIABILITIES = ("system_default", "reliable", "best_effort", "unknown", "best_available")
DURABILITIES = ("system_default", "transient_local", "volatile", "unknown", "best_available")
HISTORIES = ("system_default", "keep_last", "keep_all", "unknown")
LIVELINESSES = (
    "system_default",
    "automatic",
    "manual_by_node",
    "manual_by_topic",
    "unknown",
    "best_available",
)

# Subscription depth of the recorder: enough to absorb a burst (e.g. 30 Hz images while the bag
# flushes a chunk) without letting the queue of large images grow without bound.
RECORD_DEPTH = 100
# QoS that ROS 2 uses when nothing else is known (rclcpp/rclpy default profile).
DEFAULT_DEPTH = 10


class BagError(ValueError):
    """A bag cannot be written or read as asked (the message says what and what was expected)."""


class UnknownMessageType(BagError):
    """No message definition was found for a type, so it cannot be written to a bag."""


# --------------------------------------------------------------------------------------------
# QoS
# --------------------------------------------------------------------------------------------


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"QoS {field} {value!r} is not one of {', '.join(choices)}")


@dataclasses.dataclass(frozen=True)
class QosProfile:
    """A publisher's QoS, ROS-free. Policy names are rmw's, lower case (``transient_local``).

    Durations are in nanoseconds; 0 means "not set" (rmw default), as in rclpy.
    """

    reliability: str = "reliable"
    durability: str = "volatile"
    history: str = "keep_last"
    depth: int = DEFAULT_DEPTH  # messages kept (keep_last)
    deadline_ns: int = 0
    lifespan_ns: int = 0
    liveliness: str = "system_default"
    liveliness_lease_duration_ns: int = 0
    avoid_ros_namespace_conventions: bool = False

    def __post_init__(self) -> None:
        _check_choice("reliability", self.reliability, RELIABILITIES)
        _check_choice("durability", self.durability, DURABILITIES)
        _check_choice("history", self.history, HISTORIES)
        _check_choice("liveliness", self.liveliness, LIVELINESSES)
        if self.depth < 0:
            raise ValueError(f"QoS depth is {self.depth}, expected >= 0")
        for name in ("deadline_ns", "lifespan_ns", "liveliness_lease_duration_ns"):
            if getattr(self, name) < 0:
                raise ValueError(f"QoS {name} is {getattr(self, name)}, expected >= 0")

    def to_rosbags(self) -> Qos:
        """The rosbags form (what goes into metadata.yaml and the MCAP channel metadata)."""
        return Qos(
            QosHistory[self.history.upper()],
            self.depth,
            QosReliability[self.reliability.upper()],
            QosDurability[self.durability.upper()],
            _ns_to_qostime(self.deadline_ns),
            _ns_to_qostime(self.lifespan_ns),
            QosLiveliness[self.liveliness.upper()],
            _ns_to_qostime(self.liveliness_lease_duration_ns),
            self.avoid_ros_namespace_conventions,
        )

    @classmethod
    def from_rosbags(cls, qos: Qos) -> QosProfile:
        """From the rosbags form (as read back from a bag)."""
        return cls(
            reliability=qos.reliability.name.lower(),
            durability=qos.durability.name.lower(),
            history=qos.history.name.lower(),
            depth=int(qos.depth),
            deadline_ns=_qostime_to_ns(qos.deadline),
            lifespan_ns=_qostime_to_ns(qos.lifespan),
            liveliness=qos.liveliness.name.lower(),
            liveliness_lease_duration_ns=_qostime_to_ns(qos.liveliness_lease_duration),
            avoid_ros_namespace_conventions=bool(qos.avoid_ros_namespace_conventions),
        )

    def describe(self) -> str:
        """Short form for logs, e.g. ``reliable, transient_local, keep_last 1``."""
        history = f"keep_last {self.depth}" if self.history == "keep_last" else self.history
        return f"{self.reliability}, {self.durability}, {history}"


def _ns_to_qostime(ns: int) -> QosTime:
    # rmw's "infinite" duration is INT64_MAX ns, which splits into exactly the sec/nsec pair that
    # rosbag2 writes for it (9223372036 s, 854775807 ns).
    sec, nsec = divmod(int(ns), 1_000_000_000)
    return QosTime(sec, nsec)


def _qostime_to_ns(t: QosTime) -> int:
    return int(t.sec) * 1_000_000_000 + int(t.nsec)


def recording_qos(offers: Sequence[QosProfile], depth: int = RECORD_DEPTH) -> QosProfile:
    """The QoS a recorder requests so that it matches every offering publisher.

    Reliable only if all publishers are reliable (a reliable request does not match a
    best-effort offer), transient local only if all are (then the recorder also gets what was
    published before it started). The depth is at least the largest offered one, so that a
    transient-local history arrives complete.
    """
    reliable = bool(offers) and all(o.reliability == "reliable" for o in offers)
    latched = bool(offers) and all(o.durability == "transient_local" for o in offers)
    return QosProfile(
        reliability="reliable" if reliable else "best_effort",
        durability="transient_local" if latched else "volatile",
        history="keep_last",
        depth=max([depth, *(o.depth for o in offers if o.history == "keep_last")]),
    )


def playback_qos(offers: Sequence[QosProfile]) -> QosProfile:
    """The QoS a player offers for a topic recorded with these publisher offers.

    The strongest of the recorded offers: any subscriber that matched one of the recorded
    publishers matches the player too (reliable and transient local offers satisfy weaker
    requests). A bag without QoS information gets the ROS default (reliable, volatile, 10).
    """
    if not offers:
        return QosProfile()
    keep_all = any(o.history == "keep_all" for o in offers)
    depths = [o.depth for o in offers if o.history == "keep_last" and o.depth > 0]
    return QosProfile(
        reliability="reliable"
        if any(o.reliability in ("reliable", "system_default") for o in offers)
        else "best_effort",
        durability="transient_local"
        if any(o.durability == "transient_local" for o in offers)
        else "volatile",
        history="keep_all" if keep_all else "keep_last",
        depth=max(depths) if depths else DEFAULT_DEPTH,
    )


# --------------------------------------------------------------------------------------------
# Message types
# --------------------------------------------------------------------------------------------


def normalize_msgtype(msgtype: str) -> str:
    """``pkg/Type`` or ``pkg/msg/Type`` -> ``pkg/msg/Type`` (the form rosbag2 stores)."""
    parts = msgtype.split("/")
    if len(parts) == 2 and all(parts):
        return f"{parts[0]}/msg/{parts[1]}"
    if len(parts) == 3 and all(parts):
        return msgtype
    raise BagError(f"message type {msgtype!r} is malformed, expected pkg/msg/Type or pkg/Type")


def store_for_distro(distro: str | None) -> Stores:
    """The rosbags type store for a ROS 2 distribution name (``humble``); the newest if unknown."""
    if distro:
        member = f"ROS2_{distro.strip().upper()}"
        if member in Stores.__members__:
            return Stores[member]
    return Stores.LATEST


def ament_share_dirs(prefix_path: str | None = None) -> list[Path]:
    """The ``share/`` folders of ``AMENT_PREFIX_PATH`` (or of ``prefix_path``), in order."""
    value = os.environ.get("AMENT_PREFIX_PATH", "") if prefix_path is None else prefix_path
    return [Path(p) / "share" for p in value.split(os.pathsep) if p]


def _referenced_types(fields: list) -> Iterator[str]:
    """Message type names a rosbags field list refers to (nested, array and sequence fields)."""
    for _, (nodetype, args) in fields:
        if nodetype == Nodetype.NAME:
            yield args
        elif nodetype in (Nodetype.ARRAY, Nodetype.SEQUENCE):
            (subtype, subargs), _ = args
            if subtype == Nodetype.NAME:
                yield subargs


class MessageTypes:
    """Message definitions for bag schemas: a rosbags type store plus installed ``.msg`` files.

    Standard types come from the store of ``store`` (default: the ``ROS_DISTRO`` of the
    environment, else the newest rosbags knows). A type the store lacks (``t2a_msgs/msg/...``) is
    parsed from ``<share>/<pkg>/msg/<Type>.msg`` in ``share_dirs`` (default: from
    ``AMENT_PREFIX_PATH``), together with the types it refers to.
    """

    def __init__(self, store: Stores | None = None, share_dirs: Sequence[Path] | None = None):
        self.store = store if store is not None else store_for_distro(os.environ.get("ROS_DISTRO"))
        self.typestore: Typestore = get_typestore(self.store)
        self.share_dirs = list(share_dirs) if share_dirs is not None else ament_share_dirs()

    def __contains__(self, msgtype: str) -> bool:
        return normalize_msgtype(msgtype) in self.typestore.fielddefs

    def _find_msg_file(self, msgtype: str) -> Path | None:
        pkg, _, name = msgtype.split("/")
        for share in self.share_dirs:
            path = share / pkg / "msg" / f"{name}.msg"
            if path.is_file():
                return path
        return None

    def ensure(self, msgtype: str) -> str:
        """Make ``msgtype`` (and every type it contains) known; returns its normalized name.

        Raises UnknownMessageType naming where it looked if a definition is missing.
        """
        msgtype = normalize_msgtype(msgtype)
        pending, parsed = [msgtype], {}
        while pending:
            name = pending.pop()
            if name in self.typestore.fielddefs or name in parsed:
                continue
            path = self._find_msg_file(name)
            if path is None:
                where = ", ".join(str(d) for d in self.share_dirs) or "<AMENT_PREFIX_PATH is empty>"
                raise UnknownMessageType(
                    f"no definition for {name}: not in rosbags' {self.store.name} type store and "
                    f"no {name.split('/')[0]}/msg/{name.split('/')[2]}.msg under {where}; "
                    "source the workspace that provides it (AMENT_PREFIX_PATH)"
                )
            try:
                types = get_types_from_msg(path.read_text(), name)
            except Exception as exc:  # the parser raises several error types on bad text
                raise UnknownMessageType(f"cannot parse {path} as a .msg file: {exc}") from exc
            parsed.update(types)
            for _, fields in types.values():
                pending.extend(_referenced_types(fields))
        if parsed:
            try:
                self.typestore.register(parsed)
            except TypesysError as exc:
                raise UnknownMessageType(f"cannot register {msgtype}: {exc}") from exc
        return msgtype

    def definition(self, msgtype: str) -> tuple[str, str]:
        """``(message definition text, RIHS01 hash)`` of ``msgtype`` as rosbag2 stores them.

        The text is the ``ros2msg`` schema: the type's fields, then each nested type after a
        line of ``=`` and ``MSG: pkg/Type``.
        """
        msgtype = self.ensure(msgtype)
        text, _ = self.typestore.generate_msgdef(msgtype, ros_version=2)
        return text, self.typestore.hash_rihs01(msgtype)


# --------------------------------------------------------------------------------------------
# Writing
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class TopicInfo:
    """One topic of a bag: name, type, message count and the QoS its publishers offered."""

    name: str
    msgtype: str
    message_count: int
    offered_qos: tuple[QosProfile, ...] = ()


class BagWriter:
    """Writes serialized messages into a new rosbag2 MCAP folder.

    The folder is created when the first topic is added (a recording that never saw a topic
    leaves nothing behind). :meth:`close` writes the MCAP summary and ``metadata.yaml``; until
    then the bag is not readable, so always close (the class is a context manager that closes
    even when an exception ends the recording, because a partial recording is still useful).
    """

    def __init__(
        self,
        path: str | Path,
        types: MessageTypes | None = None,
        custom_data: dict[str, str] | None = None,
    ):
        self.path = Path(path)
        if self.path.exists():
            raise BagError(
                f"{self.path} exists already; a bag is written into a new folder, "
                "choose another output path or remove the old one"
            )
        self.types = types if types is not None else MessageTypes()
        self._custom_data = dict(custom_data or {})
        self._writer: Writer | None = None
        self._connections: dict[str, Connection] = {}
        self._topics: dict[str, TopicInfo] = {}
        self.counts: dict[str, int] = {}
        self.closed = False

    @property
    def opened(self) -> bool:
        """Whether the bag folder exists (a topic has been added)."""
        return self._writer is not None

    def _open(self) -> Writer:
        if self._writer is None:
            writer = Writer(self.path, version=BAG_VERSION, storage_plugin=StoragePlugin.MCAP)
            for key, value in self._custom_data.items():
                writer.set_custom_data(key, value)
            writer.open()
            self._writer = writer
        return self._writer

    def add_topic(
        self, topic: str, msgtype: str, offered_qos: Sequence[QosProfile] = ()
    ) -> TopicInfo:
        """Register a topic before writing to it. Raises UnknownMessageType (nothing is created)
        if ``msgtype`` has no definition, BagError if the topic is there already."""
        if self.closed:
            raise BagError(f"cannot add {topic}: the bag {self.path} is closed")
        if topic in self._connections:
            raise BagError(f"topic {topic} is in the bag {self.path} already")
        msgtype = normalize_msgtype(msgtype)
        msgdef, rihs01 = self.types.definition(msgtype)
        self._connections[topic] = self._open().add_connection(
            topic,
            msgtype,
            msgdef=msgdef,
            rihs01=rihs01,
            offered_qos_profiles=[q.to_rosbags() for q in offered_qos],
        )
        self._topics[topic] = TopicInfo(topic, msgtype, 0, tuple(offered_qos))
        self.counts[topic] = 0
        return self._topics[topic]

    def write(self, topic: str, stamp_ns: int, data: bytes | memoryview) -> None:
        """Append one serialized (CDR) message received at ``stamp_ns`` (ns since the epoch)."""
        connection = self._connections.get(topic)
        if connection is None:
            raise BagError(f"cannot write to {topic}: add_topic() it first")
        assert self._writer is not None
        self._writer.write(connection, int(stamp_ns), data)
        self.counts[topic] += 1

    def topics(self) -> dict[str, TopicInfo]:
        """Topics added so far with their current message counts."""
        return {
            name: dataclasses.replace(info, message_count=self.counts[name])
            for name, info in self._topics.items()
        }

    def close(self) -> None:
        """Finish the bag (MCAP summary and metadata.yaml). Safe to call more than once."""
        if self.closed:
            return
        self.closed = True
        if self._writer is not None:
            self._writer.close()

    def __enter__(self) -> BagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------------------------
# Reading
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class BagMessage:
    """One serialized message of a bag."""

    topic: str
    msgtype: str
    stamp_ns: int  # receive time, ns since the epoch
    data: bytes  # CDR, exactly as received


class BagReader:
    """Reads a rosbag2 folder (MCAP or sqlite3, any rosbag2 version rosbags supports).

    Use as a context manager or call :meth:`close`.
    """

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not (self.path / METADATA_FILE).is_file():
            what = "does not exist" if not self.path.exists() else f"has no {METADATA_FILE}"
            raise BagError(
                f"{self.path} {what}; expected a rosbag2 folder (metadata.yaml and a .mcap file) "
                "as written by t2a-record or ros2 bag record"
            )
        try:
            self._reader = Reader(self.path)
            self._reader.open()
        except ReaderError as exc:
            raise BagError(f"cannot read the bag {self.path}: {exc}") from exc
        self._by_topic: dict[str, list[Connection]] = {}
        for conn in self._reader.connections:
            self._by_topic.setdefault(conn.topic, []).append(conn)

    @property
    def message_count(self) -> int:
        """Messages in the bag, all topics."""
        return int(self._reader.message_count)

    @property
    def start_ns(self) -> int:
        """Time stamp of the first message (ns); 0 for an empty bag."""
        return int(self._reader.start_time) if self.message_count else 0

    @property
    def end_ns(self) -> int:
        """Time stamp of the last message (ns); 0 for an empty bag."""
        # rosbags reports the end as exclusive (last stamp + 1).
        return int(self._reader.end_time) - 1 if self.message_count else 0

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last message."""
        return (self.end_ns - self.start_ns) / 1e9

    def topics(self) -> dict[str, TopicInfo]:
        """Every topic in the bag, sorted by name."""
        out = {}
        for name in sorted(self._by_topic):
            conns = self._by_topic[name]
            offers: list[QosProfile] = []
            for conn in conns:
                for qos in getattr(conn.ext, "offered_qos_profiles", []):
                    offers.append(QosProfile.from_rosbags(qos))
            out[name] = TopicInfo(
                name, conns[0].msgtype, sum(c.msgcount for c in conns), tuple(offers)
            )
        return out

    def select(self, topics: Sequence[str] | None) -> list[str]:
        """Validate a topic selection (None or empty = all topics). Raises BagError naming the
        topics that are not in the bag and the ones that are."""
        have = sorted(self._by_topic)
        if not topics:
            return have
        missing = [t for t in topics if t not in self._by_topic]
        if missing:
            raise BagError(
                f"topic(s) {', '.join(missing)} not in the bag {self.path}; it has: "
                + (", ".join(have) or "no topics")
            )
        return list(dict.fromkeys(topics))

    def messages(
        self,
        topics: Sequence[str] | None = None,
        start_ns: int | None = None,
        stop_ns: int | None = None,
    ) -> Iterator[BagMessage]:
        """Messages in time order, optionally of some topics only and in ``[start_ns, stop_ns)``.

        Messages are read lazily, so a long bag of images is never held in memory at once.
        """
        names = self.select(topics)
        conns = [c for name in names for c in self._by_topic[name]]
        if not conns:  # rosbags reads every connection when given none
            return
        for conn, stamp, data in self._reader.messages(conns, start=start_ns, stop=stop_ns):
            yield BagMessage(conn.topic, conn.msgtype, int(stamp), bytes(data))

    def close(self) -> None:
        """Close the underlying files."""
        self._reader.close()

    def __enter__(self) -> BagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def summary_lines(topics: dict[str, TopicInfo]) -> list[str]:
    """One aligned line per topic: name, type, message count (for record/play summaries)."""
    if not topics:
        return []
    width_name = max(len(t.name) for t in topics.values())
    width_type = max(len(t.msgtype) for t in topics.values())
    return [
        f"  {t.name:<{width_name}}  {t.msgtype:<{width_type}}  {t.message_count:>7d} msgs"
        for t in topics.values()
    ]


# --------------------------------------------------------------------------------------------
# Playback timing
# --------------------------------------------------------------------------------------------


class PlaybackClock:
    """Maps bag time to wall time for playback at ``rate`` times the recorded speed.

    After ``start(bag_ns)``, a message stamped ``t`` is due ``(t - bag_ns) / rate`` seconds after
    the call; :meth:`bag_time_ns` runs the other way (for ``/clock``). Timing is anchored once
    per pass rather than chained message to message, so sleep overshoot does not accumulate over
    a long bag. ``now`` is injectable for tests (seconds, monotonic).
    """

    def __init__(self, rate: float = 1.0, now: Callable[[], float] = time.monotonic):
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError(f"playback rate is {rate}, expected a finite number > 0")
        self.rate = float(rate)
        self._now = now
        self._wall0 = 0.0
        self._bag0 = 0
        self.started = False

    def start(self, bag_start_ns: int) -> None:
        """Anchor: bag time ``bag_start_ns`` is now."""
        self._wall0 = self._now()
        self._bag0 = int(bag_start_ns)
        self.started = True

    def due_in(self, stamp_ns: int) -> float:
        """Seconds until the message stamped ``stamp_ns`` is due (<= 0: due now or late)."""
        if not self.started:
            raise RuntimeError("PlaybackClock.start() must be called before due_in()")
        target = self._wall0 + (int(stamp_ns) - self._bag0) / 1e9 / self.rate
        return target - self._now()

    def bag_time_ns(self) -> int:
        """The bag time that corresponds to now."""
        if not self.started:
            raise RuntimeError("PlaybackClock.start() must be called before bag_time_ns()")
        return self._bag0 + int((self._now() - self._wall0) * self.rate * 1e9)


def offset_to_bag_time(reader: BagReader, start_offset_s: float) -> int:
    """Bag time (ns) ``start_offset_s`` after the first message. Raises BagError if the offset
    is negative or past the last message."""
    if not (math.isfinite(start_offset_s) and start_offset_s >= 0):
        raise BagError(f"start offset is {start_offset_s} s, expected a number >= 0")
    if start_offset_s > reader.duration_s:
        raise BagError(
            f"start offset {start_offset_s:.3f} s is past the end of the bag "
            f"({reader.duration_s:.3f} s from first to last message)"
        )
    return reader.start_ns + round(start_offset_s * 1e9)
