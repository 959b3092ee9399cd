"""The ROS-free bag core: type registration, writing/reading MCAP bags, QoS choices, playback
timing (unit tier: no DDS; messages are serialized with rosbags' own CDR code)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
from mcap.reader import make_reader
from mcap_ros2.decoder import DecoderFactory
from rosbags.typesys import Stores
from rosbags.typesys.base import Nodetype

from t2a_bringup.core.bag import (
    BagError,
    BagReader,
    BagWriter,
    MessageTypes,
    PlaybackClock,
    QosProfile,
    UnknownMessageType,
    normalize_msgtype,
    offset_to_bag_time,
    playback_qos,
    recording_qos,
    store_for_distro,
)

LATCHED = QosProfile(durability="transient_local", depth=1)
T0 = 1_700_000_000_000_000_000  # an epoch time in ns


def _share_of(pkg: str) -> Path:
    for share in (Path(p) / "share" for p in os.environ["AMENT_PREFIX_PATH"].split(os.pathsep)):
        if (share / pkg).is_dir():
            return share
    pytest.skip(f"{pkg} is not installed under AMENT_PREFIX_PATH")


@pytest.fixture(scope="module")
def types() -> MessageTypes:
    return MessageTypes()


def _string(types: MessageTypes, text: str) -> bytes:
    cls = types.typestore.types["std_msgs/msg/String"]
    return bytes(types.typestore.serialize_cdr(cls(data=text), "std_msgs/msg/String"))


_NUMPY_NAMES = {"bool": "bool", "byte": "uint8", "char": "uint8", "octet": "uint8"}


def _build(types: MessageTypes, name: str, **values: object) -> object:
    """A rosbags message of type ``name``: ``values`` where given, zeros/empties elsewhere
    (rosbags' generated classes take every field as a required argument)."""
    store = types.typestore
    kwargs = {}
    for field, (nodetype, args) in store.fielddefs[name][1]:
        if field in values:
            kwargs[field] = values[field]
        elif nodetype == Nodetype.BASE:
            kwargs[field] = "" if args[0] == "string" else False if args[0] == "bool" else 0
        elif nodetype == Nodetype.NAME:
            kwargs[field] = _build(types, args)
        else:  # fixed array or sequence
            (subtype, subargs), count = args
            count = count if nodetype == Nodetype.ARRAY else 0
            if subtype == Nodetype.NAME:
                kwargs[field] = [_build(types, subargs) for _ in range(count)]
            elif subargs[0] == "string":
                kwargs[field] = [""] * count
            else:
                kwargs[field] = np.zeros(count, _NUMPY_NAMES.get(subargs[0], subargs[0]))
    return store.types[name](**kwargs)


def _tracks(types: MessageTypes, goal_id: str) -> bytes:
    name = types.ensure("t2a_msgs/msg/PointTracks")
    header = _build(types, "std_msgs/msg/Header", frame_id="cam")
    msg = _build(
        types, name, header=header, goal_id=goal_id, num_points=1, horizon=1,
        tracks_px=np.array([1, 2, 3, 4], np.float32), depth_m=np.array([0.5], np.float32),
    )  # fmt: skip
    return bytes(types.typestore.serialize_cdr(msg, name))


@pytest.fixture()
def bag(tmp_path, types) -> Path:
    """10 strings at 10 Hz on /chatter, one latched PointTracks on /t2a/tracks at 0.25 s."""
    path = tmp_path / "bag"
    with BagWriter(path, types) as writer:
        writer.add_topic("/chatter", "std_msgs/msg/String", [QosProfile()])
        writer.add_topic("/t2a/tracks", "t2a_msgs/msg/PointTracks", [LATCHED])
        for i in range(10):
            writer.write("/chatter", T0 + i * 100_000_000, _string(types, f"hello {i}"))
            if i == 2:
                writer.write("/t2a/tracks", T0 + 250_000_000, _tracks(types, "goal-7"))
    return path


# --------------------------------------------------------------------------------------------
# types


def test_store_follows_ros_distro():
    assert store_for_distro("humble") is Stores.ROS2_HUMBLE
    assert store_for_distro("Jazzy") is Stores.ROS2_JAZZY
    assert store_for_distro(None) is Stores.LATEST
    assert store_for_distro("no-such-distro") is Stores.LATEST


def test_normalize_msgtype():
    assert normalize_msgtype("std_msgs/String") == "std_msgs/msg/String"
    assert normalize_msgtype("std_msgs/msg/String") == "std_msgs/msg/String"
    with pytest.raises(BagError, match="expected pkg/msg/Type"):
        normalize_msgtype("String")


def test_custom_type_from_msg_file_hashes_like_rosidl(types):
    """t2a_msgs is not in any rosbags store: its .msg file is parsed, and the RIHS01 hash
    matches the one rosidl generated for the installed package (so the schema is the same)."""
    share = _share_of("t2a_msgs")
    text, rihs01 = types.definition("t2a_msgs/PointTracks")
    generated = json.loads((share / "t2a_msgs/msg/PointTracks.json").read_text())
    assert rihs01 == generated["type_hashes"][0]["hash_string"]
    assert text.startswith("std_msgs/Header header\n")
    assert "MSG: sensor_msgs/CameraInfo" in text  # nested types travel with the schema
    assert "float32[] tracks_px" in text


def test_constants_survive(types):
    _share_of("t2a_msgs")
    text, _ = types.definition("t2a_msgs/msg/Plan")
    assert "uint8 STATUS_NO_MOTION=2" in text


def test_unknown_type_says_where_it_looked(tmp_path):
    types = MessageTypes(share_dirs=[tmp_path])
    with pytest.raises(UnknownMessageType, match=r"no definition for nope_msgs/msg/X.*under"):
        types.definition("nope_msgs/msg/X")


def test_custom_type_from_a_private_share_dir(tmp_path):
    (tmp_path / "demo_msgs/msg").mkdir(parents=True)
    (tmp_path / "demo_msgs/msg/Inner.msg").write_text("float64 x\n")
    (tmp_path / "demo_msgs/msg/Outer.msg").write_text("# comment\nInner[] items\nstring name\n")
    types = MessageTypes(share_dirs=[tmp_path])
    text, rihs01 = types.definition("demo_msgs/msg/Outer")
    assert "demo_msgs/Inner[] items" in text and "MSG: demo_msgs/Inner" in text
    assert rihs01.startswith("RIHS01_")


# --------------------------------------------------------------------------------------------
# writing and reading


def test_round_trip(bag, types):
    assert (bag / "metadata.yaml").is_file() and len(list(bag.glob("*.mcap"))) == 1
    with BagReader(bag) as reader:
        topics = reader.topics()
        assert {t: (i.msgtype, i.message_count) for t, i in topics.items()} == {
            "/chatter": ("std_msgs/msg/String", 10),
            "/t2a/tracks": ("t2a_msgs/msg/PointTracks", 1),
        }
        assert topics["/t2a/tracks"].offered_qos == (LATCHED,)
        assert reader.start_ns == T0 and reader.duration_s == pytest.approx(0.9)
        msgs = list(reader.messages())
        assert [m.stamp_ns for m in msgs] == sorted(m.stamp_ns for m in msgs)
        assert [m.topic for m in msgs].index("/t2a/tracks") == 3  # between 0.2 s and 0.3 s
        assert msgs[0].data == _string(types, "hello 0")


def test_topic_and_time_selection(bag):
    with BagReader(bag) as reader:
        only = list(reader.messages(["/t2a/tracks"]))
        assert [m.topic for m in only] == ["/t2a/tracks"]
        window = list(reader.messages(["/chatter"], T0 + 500_000_000, T0 + 800_000_000))
        assert [m.stamp_ns - T0 for m in window] == [500_000_000, 600_000_000, 700_000_000]
        with pytest.raises(BagError, match=r"/nope not in the bag.*it has: /chatter, /t2a/tracks"):
            reader.select(["/nope"])


def test_mcap_reader_decodes_custom_type(bag):
    """What Foxglove does: decode with the schema stored in the .mcap, no ROS installed."""
    with (bag / f"{bag.name}.mcap").open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = {c.topic: m for _, c, _, m in reader.iter_decoded_messages()}
    tracks = decoded["/t2a/tracks"]
    assert tracks.goal_id == "goal-7" and tracks.header.frame_id == "cam"
    assert list(tracks.tracks_px) == [1.0, 2.0, 3.0, 4.0]
    assert decoded["/chatter"].data == "hello 9"


def test_writer_never_overwrites(bag, types):
    with pytest.raises(BagError, match="exists already"):
        BagWriter(bag, types)


def test_writer_without_topics_leaves_nothing(tmp_path, types):
    with BagWriter(tmp_path / "empty", types) as writer:
        pass
    assert not writer.opened and not (tmp_path / "empty").exists()


def test_unknown_type_creates_no_bag(tmp_path):
    writer = BagWriter(tmp_path / "b", MessageTypes(share_dirs=[]))
    with pytest.raises(UnknownMessageType):
        writer.add_topic("/x", "nope_msgs/msg/X")
    writer.close()
    assert not (tmp_path / "b").exists()


def test_reader_explains_a_wrong_folder(tmp_path):
    with pytest.raises(BagError, match=r"has no metadata\.yaml; expected a rosbag2 folder"):
        BagReader(tmp_path)
    with pytest.raises(BagError, match="does not exist"):
        BagReader(tmp_path / "missing")


def test_start_offset(bag):
    with BagReader(bag) as reader:
        assert offset_to_bag_time(reader, 0.5) == T0 + 500_000_000
        with pytest.raises(BagError, match="past the end of the bag"):
            offset_to_bag_time(reader, 2.0)
        with pytest.raises(BagError, match="expected a number >= 0"):
            offset_to_bag_time(reader, -1.0)


# --------------------------------------------------------------------------------------------
# QoS


def test_recording_qos_matches_every_publisher():
    best_effort = QosProfile(reliability="best_effort")
    assert recording_qos([QosProfile(), best_effort]).reliability == "best_effort"
    assert recording_qos([QosProfile()]).reliability == "reliable"
    latched = recording_qos([LATCHED, LATCHED])
    assert latched.durability == "transient_local" and latched.depth >= 1
    assert recording_qos([LATCHED, QosProfile()]).durability == "volatile"
    assert recording_qos([QosProfile(depth=500)]).depth == 500


def test_playback_qos_offers_the_strongest():
    assert playback_qos([]) == QosProfile()
    mixed = playback_qos([QosProfile(reliability="best_effort", depth=5), LATCHED])
    assert (mixed.reliability, mixed.durability, mixed.depth) == ("reliable", "transient_local", 5)
    # Remote publishers report no history (rmw cannot see it): fall back to the ROS default.
    unknown = playback_qos([QosProfile(history="unknown", depth=0, durability="transient_local")])
    assert (unknown.history, unknown.depth) == ("keep_last", 10)


def test_qos_profile_validates():
    with pytest.raises(ValueError, match="QoS durability 'latched' is not one of"):
        QosProfile(durability="latched")
    infinite = QosProfile(deadline_ns=2**63 - 1)
    assert infinite.to_rosbags().deadline == (9223372036, 854775807)  # what rosbag2 writes
    assert QosProfile.from_rosbags(infinite.to_rosbags()) == infinite


# --------------------------------------------------------------------------------------------
# playback timing


class FakeTime:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


@pytest.mark.parametrize("rate", [1.0, 2.0, 0.5])
def test_playback_clock_scales_bag_time(rate):
    now = FakeTime()
    clock = PlaybackClock(rate, now)
    clock.start(T0)
    assert clock.due_in(T0) == 0
    assert clock.due_in(T0 + 1_000_000_000) == pytest.approx(1.0 / rate)
    now.t += 0.25
    assert clock.due_in(T0 + 1_000_000_000) == pytest.approx(1.0 / rate - 0.25)
    assert clock.bag_time_ns() == T0 + round(0.25 * rate * 1e9)


def test_playback_clock_does_not_accumulate_lateness():
    """A late message does not shift the ones after it (anchored, not chained)."""
    now = FakeTime()
    clock = PlaybackClock(1.0, now)
    clock.start(T0)
    now.t += 0.3  # the 0.1 s message went out 0.2 s late
    assert clock.due_in(T0 + 400_000_000) == pytest.approx(0.1)


def test_playback_clock_rejects_bad_rates():
    for rate in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="expected a finite number > 0"):
            PlaybackClock(rate)
    with pytest.raises(RuntimeError, match="start"):
        PlaybackClock().due_in(0)
