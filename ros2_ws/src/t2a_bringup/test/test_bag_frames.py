"""Decoded frames and joint states of a bag (unit tier: bags written with rosbags' CDR code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from t2a_bringup.core import bag_frames as bf
from t2a_bringup.core.bag import BagError, BagWriter, MessageTypes
from t2a_bringup.core.bag_frames import BagFrames, BagTopics, Frame, sample_and_hold
from t2a_common.core import sensor_readers as sr
from t2a_common.core.geometry import Intrinsics

T0 = 1_700_000_000_000_000_000  # receive time of the first message (ns since the epoch)
W, H = 16, 12
INTR = Intrinsics(W, H, 20.0, 21.0, 7.5, 5.5)
JOINTS = ("arm_sh0", "arm_sh1", "arm_f1x")
CAMERA_T = np.round(np.arange(0.0, 2.0, 0.1), 3)
DROPPED = {5, 6}  # colour frames the "camera" lost


@pytest.fixture(scope="module")
def types() -> MessageTypes:
    return MessageTypes(share_dirs=[])


def colour(t: float) -> np.ndarray:
    """A frame whose pixels encode its time, so a decoded frame says which one it is."""
    img = np.zeros((H, W, 3), np.uint8)
    img[..., 0] = round(t * 100)
    img[:, :, 1] = np.arange(W)[None]
    img[:, :, 2] = np.arange(H)[:, None]
    return img


def write_bag(path: Path, types: MessageTypes, latency_s: float = 0.03) -> Path:
    """10 Hz camera with two dropped frames and depth in mm, 50 Hz joints (a ramp on arm_sh0);
    header stamps are sensor time from 100 s, receive times ``latency_s`` later from T0."""
    topics = BagTopics()
    with BagWriter(path, types) as bag:
        bag.add_topic(topics.color, bf.IMAGE)
        bag.add_topic(topics.depth, bf.IMAGE)
        bag.add_topic(topics.info, bf.CAMERA_INFO)
        bag.add_topic(topics.joints, bf.JOINT_STATE)
        events = []
        for t in np.round(np.arange(0.0, 2.0, 0.02), 3):
            events.append((t, topics.joints, bf.encode_joint_state(types, JOINTS, [t, 0, -1], t)))
        for i, t in enumerate(CAMERA_T):
            stamp = 100.0 + t
            if i not in DROPPED:
                events.append((t, topics.color, bf.encode_image(types, colour(t), "rgb8", stamp)))
            depth = np.full((H, W), 1000 + i, np.uint16)
            depth[0, 0] = 0  # no data
            events.append((t + 0.001, topics.depth, bf.encode_image(types, depth, "16UC1", stamp)))
            events.append((t + 0.002, topics.info, bf.encode_camera_info(types, INTR, stamp)))
        for t, topic, data in sorted(events, key=lambda e: e[0]):
            bag.write(topic, T0 + round((t + latency_s) * 1e9), data)
    return path


def test_images_round_trip_every_encoding(types):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (H, W, 3), dtype=np.uint8)
    cls = types.typestore.types[bf.IMAGE]
    for encoding, array in (
        ("rgb8", rgb),
        ("bgr8", rgb[..., ::-1].copy()),
        ("16UC1", rng.integers(0, 5000, (H, W), dtype=np.uint16)),
        ("32FC1", rng.uniform(0.2, 3.0, (H, W)).astype(np.float32)),
    ):
        msg = types.typestore.deserialize_cdr(
            bf.encode_image(types, array, encoding, 12.5, "cam"), bf.IMAGE
        )
        assert isinstance(msg, cls) and msg.header.frame_id == "cam"
        assert sr.stamp_to_sec(msg.header.stamp) == 12.5
        assert np.array_equal(sr.image_to_numpy(msg), array)
        if encoding in ("rgb8", "bgr8"):
            assert np.array_equal(sr.image_to_rgb(msg), rgb)
    with pytest.raises(ValueError, match=r"mono8, expected rgb8, bgr8, rgba8 or bgra8"):
        sr.image_to_rgb(
            types.typestore.deserialize_cdr(
                bf.encode_image(types, rgb[..., 0].copy(), "mono8", 0.0), bf.IMAGE
            )
        )


def test_padded_big_endian_rows_and_depth_units(types):
    depth = np.array([[0, 1500, 2500], [65535, 1, 3]], np.uint16)
    rows = np.zeros((2, 8), np.uint8)  # 3 pixels of 2 bytes, padded to 8 bytes per row
    rows[:, :6] = depth.astype(">u2").view(np.uint8).reshape(2, 6)
    msg = types.typestore.types[bf.IMAGE](
        header=bf._header(types, 0.0, ""), height=2, width=3, encoding="16UC1",
        is_bigendian=1, step=8, data=rows.reshape(-1),
    )  # fmt: skip
    assert np.array_equal(sr.image_to_numpy(msg), depth)
    meters = sr.depth_to_meters(msg, 0.001)
    assert np.isnan(meters[0, 0]) and meters[0, 1] == pytest.approx(1.5)
    short = types.typestore.types[bf.IMAGE](
        header=bf._header(types, 0.0, ""), height=2, width=3, encoding="16UC1",
        is_bigendian=0, step=8, data=np.zeros(9, np.uint8),
    )  # fmt: skip
    with pytest.raises(ValueError, match="step 8: data has 9 bytes, expected at least 14"):
        sr.image_to_numpy(short)


def test_camera_info_and_joint_states_round_trip(types):
    info = types.typestore.deserialize_cdr(bf.encode_camera_info(types, INTR, 1.0), bf.CAMERA_INFO)
    assert sr.camera_info_to_intrinsics(info) == INTR
    js = types.typestore.deserialize_cdr(
        bf.encode_joint_state(types, JOINTS, [0.1, 0.2, 0.3], 1.0), bf.JOINT_STATE
    )
    assert bf.joint_positions(js, ["arm_f1x", "arm_sh0"]).tolist() == [0.3, 0.1]
    with pytest.raises(ValueError, match=r"lacks positions for \['arm_el0'\]"):
        bf.joint_positions(js, ["arm_sh0", "arm_el0"])


def test_frames_windows_depth_and_intrinsics(tmp_path, types):
    with BagFrames(write_bag(tmp_path / "bag", types)) as bag:
        assert bag.intrinsics() == INTR
        frames = list(bag.color_frames())
        kept = [t for i, t in enumerate(CAMERA_T) if i not in DROPPED]
        assert [f.time_s for f in frames] == pytest.approx([100.0 + t for t in kept])
        assert [f.offset_s for f in frames[:2]] == pytest.approx([0.0, 0.1])
        assert all(f.rgb[0, 0, 0] == round(t * 100) for f, t in zip(frames, kept))
        # A window in s from the first message (receive clock), both ends included.
        window = list(bag.color_frames(1.0, 1.5))
        assert [f.time_s - 100.0 for f in window] == pytest.approx([1.0, 1.1, 1.2, 1.3, 1.4, 1.5])
        # Depth of the same stamp (mm -> m, 0 -> NaN); none when the slop is too tight.
        depth = bag.depth_near(frames[3])
        assert depth.shape == (H, W) and np.isnan(depth[0, 0])
        assert depth[1, 1] == pytest.approx(1.003)
        late = Frame(frames[3].time_s + 0.04, frames[3].offset_s, frames[3].rgb)
        assert bag.depth_near(late, max_offset_s=0.02) is None
        with pytest.raises(BagError, match="starts after the end"):
            list(bag.color_frames(5.0, 6.0))
        with pytest.raises(BagError, match="empty or negative"):
            list(bag.color_frames(1.0, 0.5))


def test_joint_states_interpolate_and_use_the_chosen_clock(tmp_path, types):
    path = write_bag(tmp_path / "bag", types, latency_s=0.25)
    with BagFrames(path) as bag:
        joints = bag.joint_states(["arm_sh0", "arm_f1x"], 0.5, 1.0)
        # Header clock: arm_sh0 is a ramp equal to its own stamp; the window is widened by 0.5 s.
        assert joints.times_s[0] == pytest.approx(0.0) and joints.times_s[-1] <= 1.5 + 1e-9
        assert joints.at(0.731) == pytest.approx([0.731, -1.0])
        assert joints.at([0.2, 10.0])[:, 0] == pytest.approx([0.2, joints.times_s[-1]])
        with pytest.raises(BagError, match=r"has all of \['arm_el0'\]"):
            bag.joint_states(["arm_el0"])
    with BagFrames(path, clock="receive") as bag:
        frame = next(bag.color_frames())
        assert frame.time_s == pytest.approx(T0 * 1e-9 + 0.25, abs=1e-6)
        joints = bag.joint_states(["arm_sh0"])
        assert joints.at(T0 * 1e-9 + 0.25 + 0.4)[0] == pytest.approx(0.4, abs=1e-6)
    with BagFrames(path, BagTopics(color="/nope")) as bag:
        with pytest.raises(BagError, match="no colour images on /nope; its topics: /camera"):
            next(bag.color_frames())


def test_sample_and_hold_repeats_dropped_frames_and_stops_after_the_stream(tmp_path, types):
    with BagFrames(write_bag(tmp_path / "bag", types)) as bag:
        grid = (100.0 + k * 0.05 for k in range(1000))  # 20 Hz, endless in effect
        held = list(sample_and_hold(bag.color_frames(), grid))
    times = np.array([t for t, _ in held])
    shown = np.array([f.time_s for _, f in held]) - 100.0
    assert np.all(shown <= times - 100.0 + 1e-9)  # never a frame from the future
    # Frames 0.5 and 0.6 were dropped: 0.4 is shown until 0.7 arrives.
    assert shown[(times >= 100.4) & (times < 100.7)] == pytest.approx(0.4)
    # The last frame (1.9) is held for one period and then the output stops.
    assert shown[-1] == pytest.approx(1.9) and times[-1] - 100.0 < 1.9 + 0.05
    assert list(sample_and_hold([], [0.0, 1.0])) == []
    with pytest.raises(ValueError, match="increase"):
        list(sample_and_hold(iter([Frame(0.0, 0.0, colour(0))]), [1.0, 0.5]))
