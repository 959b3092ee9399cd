"""t2a-record and t2a-play over real DDS, each in its own process.

A publisher process (this file run as a script) sends rgb8 images, strings, and one PointTracks
on the transient-local /t2a/tracks before anything records. t2a-record records them; the bag is
read back with rosbags and with the mcap library (decoding like Foxglove), and t2a-play replays
it into subscribers here: same bytes, same order, about the same timing, --rate, topic
selection, and the transient-local /t2a/tracks reaching a subscriber that comes late.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import rclpy
from rclpy.qos import DurabilityPolicy, QoSProfile
from sensor_msgs.msg import Image
from std_msgs.msg import String

from t2a_bringup.bag_record import StopFlag
from t2a_bringup.core.bag import BagReader
from t2a_common.ros_conv import numpy_to_image
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_msgs.msg import PointTracks

pytestmark = pytest.mark.ros

IMAGE = "/camera/camera/color/image_raw"
TRACKS = "/t2a/tracks"
CHATTER = "/t2a_test/chatter"
W, H = 320, 240
PERIOD_S = 0.1  # publisher period (images and strings)
RECORD_S = 3.0  # how long the shared recording runs at least
GOAL_ID = "goal-42"


def _command(script: str, module: str) -> list[str]:
    """The installed console script if there is one (what users run), else the module."""
    path = shutil.which(script)
    return [path] if path else ["-m", module]


RECORD = _command("t2a-record", "t2a_bringup.bag_record")
PLAY = _command("t2a-play", "t2a_bringup.bag_play")


def frame(i: int) -> np.ndarray:
    """The i-th published image (regenerated here to check what the bag holds)."""
    return np.random.default_rng(i).integers(0, 256, (H, W, 3), dtype=np.uint8)


def publish_until_interrupted() -> None:
    """Child process: latched tracks once, then an image and a string every PERIOD_S."""
    rclpy.init()
    stop = StopFlag()
    node = rclpy.create_node("bag_test_publisher")
    images = node.create_publisher(Image, IMAGE, 10)
    strings = node.create_publisher(String, CHATTER, 10)
    latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
    tracks = node.create_publisher(PointTracks, TRACKS, latched)
    msg = PointTracks(goal_id=GOAL_ID, num_points=2, horizon=1)
    msg.tracks_px = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    tracks.publish(msg)
    i = 0
    while not stop.set:
        images.publish(numpy_to_image(frame(i), "rgb8", frame_id=f"frame {i}"))
        strings.publish(String(data=f"message {i}"))
        i += 1
        time.sleep(PERIOD_S)
    node.destroy_node()
    rclpy.shutdown()


# ------------------------------------------------------------------------------------------
# fixtures


def _finish(child: ChildProcess, timeout: float = 15.0) -> tuple[str, int]:
    """Wait for a child that ends by itself; its output and exit code."""
    with contextlib.suppress(subprocess.TimeoutExpired):
        child.proc.wait(timeout)
    output = child.stop()
    return output, child.proc.returncode


@dataclasses.dataclass
class Recording:
    """A bag written by a t2a-record child, with what it printed and its exit code."""

    path: Path
    output: str
    rc: int


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> dict[str, Recording]:
    """Recordings of the publisher child, made at the same time: ``main`` by t2a-record stopped
    with SIGINT (Ctrl-C), ``max5`` by one that stops itself after 5 messages. The publisher is
    gone afterwards, so playback tests only see what t2a-play sends."""
    root = tmp_path_factory.mktemp("record")
    with ChildProcess([__file__, "publish"]) as publisher, ros_context() as ctx:
        probe = rclpy.create_node("bag_test_probe", context=ctx)
        got = []
        probe.create_subscription(String, CHATTER, got.append, 10)
        # Wait for the first string: by then the latched tracks were published, before any
        # recorder exists, so recording them proves the recorder subscribed transient local.
        ok = spin_until(probe, lambda: bool(got), timeout=20.0)
        assert ok, "publisher child sent nothing:\n" + publisher.stop()
        main = ChildProcess([*RECORD, "-o", str(root / "main"), "--topics", IMAGE, TRACKS, CHATTER,
                             "--ros-args", "-r", "__node:=bag_test_main"])  # fmt: skip
        max5 = ChildProcess([*RECORD, "-o", str(root / "max5"), "--topics", CHATTER,
                             "--max-messages", "5", "--duration", "20"])  # fmt: skip

        def main_subscribed() -> bool:
            readers = [probe.get_subscriptions_info_by_topic(t) for t in (IMAGE, TRACKS, CHATTER)]
            return all(any(i.node_name == "bag_test_main" for i in r) for r in readers)

        # Start-up takes seconds on a loaded machine: wait for the recorder's subscriptions,
        # then let RECORD_S worth of messages go out (counted, as a starved publisher may run
        # slower than its nominal rate).
        subscribed = spin_until(probe, main_subscribed, timeout=30.0)
        got.clear()
        spin_until(probe, lambda: len(got) >= RECORD_S / PERIOD_S, timeout=4 * RECORD_S)
        main_out = main.stop()
        max5_out, max5_rc = _finish(max5, 30.0)
        probe.destroy_node()
        assert subscribed, "t2a-record never subscribed:\n" + main_out
    return {
        "main": Recording(root / "main", main_out, main.proc.returncode),
        "max5": Recording(root / "max5", max5_out, max5_rc),
    }


def _bag_messages(path: Path) -> dict[str, list[tuple[int, bytes]]]:
    out: dict[str, list[tuple[int, bytes]]] = {}
    with BagReader(path) as reader:
        for m in reader.messages():
            out.setdefault(m.topic, []).append((m.stamp_ns, m.data))
    return out


class RawSink:
    """Raw subscriptions in the test process: arrival time and bytes per topic."""

    def __init__(self, node, topics: dict[str, type]):
        self.rx: dict[str, list[tuple[float, bytes]]] = {t: [] for t in topics}
        qos = QoSProfile(depth=200)
        for topic, cls in topics.items():
            node.create_subscription(cls, topic, self._cb(topic), qos, raw=True)

    def _cb(self, topic):
        return lambda data: self.rx[topic].append((time.monotonic(), data))


# ------------------------------------------------------------------------------------------
# recording


def test_recorded_bag_opens_with_rosbags_and_mcap(recorded):
    from mcap.reader import make_reader
    from mcap_ros2.decoder import DecoderFactory
    from rosbags.interfaces import QosDurability
    from rosbags.rosbag2 import Reader

    path, output, rc = recorded["main"].path, recorded["main"].output, recorded["main"].rc
    assert rc == 0, output
    assert "SIGINT received" in output and "wrote" in output, output
    assert (path / "metadata.yaml").is_file()
    mcaps = list(path.glob("*.mcap"))
    assert len(mcaps) == 1, list(path.iterdir())

    with Reader(path) as reader:
        conns = {c.topic: c for c in reader.connections}
        assert {t: c.msgtype for t, c in conns.items()} == {
            IMAGE: "sensor_msgs/msg/Image",
            TRACKS: "t2a_msgs/msg/PointTracks",
            CHATTER: "std_msgs/msg/String",
        }
        assert conns[TRACKS].msgcount == 1, output  # published before recording: latched
        assert conns[IMAGE].msgcount >= 0.5 * RECORD_S / PERIOD_S, output  # some may miss
        qos = conns[TRACKS].ext.offered_qos_profiles
        assert [q.durability for q in qos] == [QosDurability.TRANSIENT_LOCAL]
        assert conns[CHATTER].ext.offered_qos_profiles[0].durability == QosDurability.VOLATILE

    with mcaps[0].open("rb") as f:
        reader = make_reader(f, decoder_factories=[DecoderFactory()])
        decoded = [(c.topic, m) for _, c, _, m in reader.iter_decoded_messages()]
    images = [m for t, m in decoded if t == IMAGE]
    first = images[0]
    i = int(first.header.frame_id.split()[1])
    assert (first.width, first.height, first.encoding) == (W, H, "rgb8")
    assert bytes(first.data) == frame(i).tobytes()
    strings = [m.data for t, m in decoded if t == CHATTER]
    n0 = int(strings[0].split()[1])
    assert strings == [f"message {n0 + k}" for k in range(len(strings))]  # none lost
    (tracks,) = [m for t, m in decoded if t == TRACKS]
    assert tracks.goal_id == GOAL_ID and list(tracks.tracks_px) == [1, 2, 3, 4, 5, 6, 7, 8]


def test_record_max_messages_stops_by_itself(recorded):
    rec = recorded["max5"]
    assert rec.rc == 0 and "--max-messages 5 reached" in rec.output, rec.output
    with BagReader(rec.path) as reader:
        assert reader.topics()[CHATTER].message_count == 5


def test_record_topic_that_never_appears(tmp_path):
    rec = ChildProcess([*RECORD, "-o", str(tmp_path / "bag"), "--topics", "/t2a_test/never",
                        "--duration", "1.5"])  # fmt: skip
    output, rc = _finish(rec, 20.0)
    assert rc == 1, output
    assert "/t2a_test/never was not recorded: no publisher appeared within" in output, output
    assert "no bag written" in output and not (tmp_path / "bag").exists()


# ------------------------------------------------------------------------------------------
# playback


def _assert_timing(arrivals: list[float], stamps_ns: list[int], rate: float) -> None:
    """Arrival times follow the bag stamps / rate (tolerance for scheduling and DDS jitter)."""
    rx = np.array(arrivals) - arrivals[0]
    want = (np.array(stamps_ns) - stamps_ns[0]) / 1e9 / rate
    assert np.max(np.abs(rx - want)) < 0.2 + 0.05 * want[-1], np.c_[rx, want]


def test_play_replays_the_same_bytes_in_order_and_on_time(recorded):
    path = recorded["main"].path
    bag = _bag_messages(path)
    with ros_context() as ctx:
        node = rclpy.create_node("bag_test_sink", context=ctx)
        sink = RawSink(node, {IMAGE: Image, CHATTER: String})
        player = ChildProcess([*PLAY, str(path), "--topics", IMAGE, CHATTER,
                               "--wait-for-subscribers", "10"])  # fmt: skip
        want = {t: len(bag[t]) for t in sink.rx}
        done = spin_until(node, lambda: all(len(sink.rx[t]) >= want[t] for t in want), timeout=30.0)
        output, rc = _finish(player)
        node.destroy_node()
    assert done, f"received { {t: len(v) for t, v in sink.rx.items()} }, want {want}\n{output}"
    assert rc == 0 and "done: published" in output, output
    for topic in want:
        assert [d for _, d in sink.rx[topic]] == [d for _, d in bag[topic]], topic
    _assert_timing([t for t, _ in sink.rx[CHATTER]], [s for s, _ in bag[CHATTER]], 1.0)


def test_play_rate_two_and_topic_selection(recorded):
    path = recorded["main"].path
    bag = _bag_messages(path)
    with ros_context() as ctx:
        node = rclpy.create_node("bag_test_sink", context=ctx)
        sink = RawSink(node, {IMAGE: Image, CHATTER: String})
        player = ChildProcess([*PLAY, str(path), "--topics", CHATTER, "--rate", "2",
                               "--wait-for-subscribers", "10"])  # fmt: skip
        n = len(bag[CHATTER])
        done = spin_until(node, lambda: len(sink.rx[CHATTER]) >= n, timeout=30.0)
        spin_until(node, lambda: False, timeout=0.3)  # would an image still come?
        output, rc = _finish(player)
        node.destroy_node()
    assert done and rc == 0, output
    assert sink.rx[IMAGE] == [], "an unselected topic was played"
    arrivals = [t for t, _ in sink.rx[CHATTER]]
    stamps = [s for s, _ in bag[CHATTER]]
    _assert_timing(arrivals, stamps, 2.0)
    bag_span = (stamps[-1] - stamps[0]) / 1e9
    assert arrivals[-1] - arrivals[0] == pytest.approx(bag_span / 2, abs=0.2)


def test_play_keeps_tracks_transient_local_for_a_late_subscriber(recorded):
    path = recorded["main"].path
    bag = _bag_messages(path)
    with ros_context() as ctx:
        node = rclpy.create_node("bag_test_sink", context=ctx)
        # A volatile reader of TRACKS too, only so that the player finds every topic subscribed
        # and starts; the late reader below is a new one that durability alone can serve.
        sink = RawSink(node, {CHATTER: String, TRACKS: PointTracks})
        player = ChildProcess([*PLAY, str(path), "--topics", TRACKS, CHATTER, "--linger", "10",
                               "--wait-for-subscribers", "10"])  # fmt: skip
        n = len(bag[CHATTER])
        played = spin_until(node, lambda: len(sink.rx[CHATTER]) >= n, timeout=30.0)
        # Playback is over (tracks went out near its start); only durability can deliver now.
        late = []
        latched = QoSProfile(depth=1, durability=DurabilityPolicy.TRANSIENT_LOCAL)
        node.create_subscription(PointTracks, TRACKS, late.append, latched)
        got = spin_until(node, lambda: bool(late), timeout=5.0)
        output = player.stop()  # SIGINT while lingering
        node.destroy_node()
    assert played, output
    assert got, "late subscriber got no /t2a/tracks\n" + output
    assert late[0].goal_id == GOAL_ID
    assert "transient_local" in output and player.proc.returncode == 0, output


def test_play_explains_bad_input(recorded, tmp_path):
    output, rc = _finish(ChildProcess([*PLAY, str(recorded["main"].path), "--topics", "/nope"]))
    assert rc == 2 and "/nope not in the bag" in output and CHATTER in output, output
    output, rc = _finish(ChildProcess([*PLAY, str(tmp_path)]))
    assert rc == 2 and "has no metadata.yaml" in output, output


if __name__ == "__main__" and sys.argv[1:] == ["publish"]:
    publish_until_interrupted()
