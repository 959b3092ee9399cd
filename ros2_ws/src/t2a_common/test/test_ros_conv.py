"""numpy <-> message conversions (no DDS involved: unit tier)."""

from __future__ import annotations

import numpy as np
import pytest
from geometry_msgs.msg import Pose, Quaternion
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation
from sensor_msgs.msg import Image

from t2a_common import ros_conv
from t2a_common.core.geometry import Intrinsics

RNG = np.random.default_rng(0)


def _random_image(encoding: str, h: int, w: int) -> np.ndarray:
    dtype, c = ros_conv.ENCODINGS[encoding]
    shape = (h, w, c) if c > 1 else (h, w)
    if dtype.kind == "f":
        return RNG.normal(size=shape).astype(dtype)
    return RNG.integers(0, np.iinfo(dtype).max, size=shape, endpoint=True).astype(dtype)


def _padded_message(arr: np.ndarray, encoding: str, pad: int, bigendian: bool) -> Image:
    """Build a message by hand, as another driver would: padded rows, chosen byte order."""
    order = ">" if bigendian else "<"
    raw = np.ascontiguousarray(arr.astype(arr.dtype.newbyteorder(order)))
    h = arr.shape[0]
    row = raw.reshape(h, -1).view(np.uint8)
    rows = np.concatenate([row, np.full((h, pad), 0xAB, np.uint8)], axis=1)
    msg = Image(height=h, width=arr.shape[1], encoding=encoding, is_bigendian=int(bigendian))
    msg.step = rows.shape[1]
    msg.data = rows.tobytes()
    return msg


@pytest.mark.parametrize("encoding", list(ros_conv.ENCODINGS))
@pytest.mark.parametrize("h,w", [(480, 640), (7, 13), (1, 1), (5, 1)])
def test_round_trip_every_encoding(encoding, h, w):
    arr = _random_image(encoding, h, w)
    msg = ros_conv.numpy_to_image(arr, encoding, frame_id="cam")
    assert msg.encoding == encoding and msg.header.frame_id == "cam"
    assert (msg.height, msg.width) == (h, w)
    back = ros_conv.image_to_numpy(msg)
    assert back.dtype == arr.dtype and back.shape == arr.shape
    np.testing.assert_array_equal(back, arr)


@pytest.mark.parametrize("encoding", list(ros_conv.ENCODINGS))
@pytest.mark.parametrize("bigendian", [False, True])
@pytest.mark.parametrize("pad", [0, 1, 3, 64])
def test_reads_padded_rows_and_either_byte_order(encoding, bigendian, pad):
    arr = _random_image(encoding, 9, 11)  # odd width: rows are not a multiple of 4 bytes
    msg = _padded_message(arr, encoding, pad, bigendian)
    back = ros_conv.image_to_numpy(msg)
    np.testing.assert_array_equal(back, arr)
    assert (back.dtype.isnative and back.flags.owndata) or back.base is not None


def test_last_row_without_padding_is_accepted():
    arr = _random_image("rgb8", 4, 5)
    msg = _padded_message(arr, "rgb8", pad=4, bigendian=False)
    msg.data = bytes(msg.data)[:-4]  # some drivers do not pad the final row
    np.testing.assert_array_equal(ros_conv.image_to_numpy(msg), arr)


def test_unsupported_encoding_is_rejected_clearly():
    msg = Image(height=2, width=2, encoding="yuv422", step=4, data=bytes(8))
    with pytest.raises(ros_conv.ImageConversionError, match=r"2x2 yuv422.*unsupported.*rgb8"):
        ros_conv.image_to_numpy(msg)
    with pytest.raises(ros_conv.ImageConversionError, match="unsupported encoding"):
        ros_conv.numpy_to_image(np.zeros((2, 2), np.uint8), "8UC2")


@pytest.mark.parametrize(
    "msg,match",
    [
        (Image(height=0, width=0, encoding="rgb8"), "empty"),
        (Image(height=2, width=4, encoding="rgb8", step=8, data=bytes(16)), "step 8 is smaller"),
        (Image(height=2, width=2, encoding="16UC1", step=4, data=bytes(5)), "data has 5 bytes"),
    ],
)
def test_inconsistent_messages_are_rejected(msg, match):
    with pytest.raises(ros_conv.ImageConversionError, match=match):
        ros_conv.image_to_numpy(msg)


def test_array_must_match_encoding():
    with pytest.raises(ros_conv.ImageConversionError, match=r"shape \(H, W, 3\)"):
        ros_conv.numpy_to_image(np.zeros((4, 4), np.uint8), "rgb8")
    with pytest.raises(ros_conv.ImageConversionError, match="dtype uint16"):
        ros_conv.numpy_to_image(np.zeros((4, 4), np.float32), "16UC1")


def test_image_to_rgb_swaps_bgr_and_names_the_image_in_errors():
    rgb = _random_image("rgb8", 3, 5)
    bgr_msg = ros_conv.numpy_to_image(np.ascontiguousarray(rgb[:, :, ::-1]), "bgr8")
    np.testing.assert_array_equal(ros_conv.image_to_rgb(bgr_msg), rgb)
    rgba = np.concatenate([rgb, np.full((3, 5, 1), 255, np.uint8)], axis=2)
    np.testing.assert_array_equal(
        ros_conv.image_to_rgb(ros_conv.numpy_to_image(rgba, "rgba8")), rgb
    )
    mono = ros_conv.numpy_to_image(np.zeros((240, 320), np.uint8), "mono8")
    with pytest.raises(ValueError, match="goal image is 320x240 mono8, expected rgb8, bgr8"):
        ros_conv.image_to_rgb(mono, "goal image")


def test_depth_conversions():
    mm = np.array([[0, 1000, 65535], [250, 1, 0]], np.uint16)
    d = ros_conv.depth_to_meters(ros_conv.numpy_to_image(mm, "16UC1"))
    assert d.dtype == np.float32
    np.testing.assert_allclose(d[0, 1:], [1.0, 65.535], rtol=1e-6)
    assert np.isnan(d[0, 0]) and np.isnan(d[1, 2])
    f = np.array([[1.5, 0.0], [np.inf, np.nan]], np.float32)
    d32 = ros_conv.depth_to_meters(ros_conv.numpy_to_image(f, "32FC1"))
    assert d32[0, 0] == 1.5 and np.isnan(d32[0, 1]) and np.isnan(d32[1]).all()
    np.testing.assert_array_equal(ros_conv.meters_to_depth16(d), mm)
    with pytest.raises(ValueError, match="depth image is 2x1 rgb8, expected 16UC1"):
        ros_conv.depth_to_meters(ros_conv.numpy_to_image(np.zeros((1, 2, 3), np.uint8), "rgb8"))


def test_camera_info_round_trip():
    intr = Intrinsics.from_fov(640, 480, 42.5)
    msg = ros_conv.intrinsics_to_camera_info(intr, frame_id="camera_color_optical_frame")
    assert msg.header.frame_id == "camera_color_optical_frame"
    assert ros_conv.camera_info_to_intrinsics(msg) == intr
    msg.k = [0.0] * 9
    with pytest.raises(ValueError, match="no valid K"):
        ros_conv.camera_info_to_intrinsics(msg)


@settings(max_examples=200, deadline=None)
@given(
    q=st.lists(st.floats(-1, 1), min_size=4, max_size=4).filter(lambda v: np.linalg.norm(v) > 1e-3),
    t=st.lists(st.floats(-10, 10), min_size=3, max_size=3),
)
def test_pose_and_transform_round_trip(q, t):
    R = Rotation.from_quat(np.array(q) / np.linalg.norm(q)).as_matrix()
    T = np.eye(4)
    T[:3, :3], T[:3, 3] = R, t
    np.testing.assert_allclose(
        ros_conv.pose_to_matrix_msg(ros_conv.matrix_to_pose_msg(T)), T, atol=1e-9
    )
    np.testing.assert_allclose(
        ros_conv.transform_to_matrix_msg(ros_conv.matrix_to_transform_msg(T)), T, atol=1e-9
    )


def test_zero_quaternion_is_rejected():
    with pytest.raises(ValueError, match="no orientation"):
        ros_conv.pose_to_matrix_msg(Pose(orientation=Quaternion(x=0.0, y=0.0, z=0.0, w=0.0)))


@pytest.mark.parametrize("t", [0.0, 1.5, 1732000000.123456789, 2.999999999])
def test_time_round_trip(t):
    assert abs(ros_conv.stamp_to_sec(ros_conv.sec_to_stamp(t)) - t) < 1e-6
    assert abs(ros_conv.duration_to_sec(ros_conv.sec_to_duration(t)) - t) < 1e-6


def test_plan_status_codes_mirror_the_message():
    from t2a_common.core import types
    from t2a_msgs.msg import Plan

    for name in ("OK", "TOO_FEW_POINTS", "NO_MOTION", "DEGENERATE", "FIT_FAILED", "UNREACHABLE",
                 "BAD_INPUT"):  # fmt: skip
        assert getattr(types, f"PLAN_{name}") == getattr(Plan, f"STATUS_{name}"), name


def test_point_tracks_round_trip_and_layout():
    from t2a_common.core.types import PointTrackSet

    tracks = RNG.uniform(0, 600, size=(9, 5, 2)).astype(np.float32)
    depth = np.array([1.0, np.nan, 0.5, 2.0, 1.5], np.float32)
    intr = Intrinsics.from_fov(640, 480, 42.5)
    ts = PointTrackSet(
        tracks, depth, intr, confidence=np.linspace(0, 1, 5), goal_id="g", stamp_s=3.5
    )
    msg = ros_conv.point_tracks_to_msg(ts, {"sampler_steps": 10})
    # documented layout: tracks_px[(t * N + n) * 2 + {0: u, 1: v}]
    assert msg.tracks_px[(4 * 5 + 2) * 2 + 1] == tracks[4, 2, 1]
    back = ros_conv.msg_to_point_tracks(msg)
    np.testing.assert_array_equal(back.tracks_px, tracks)
    np.testing.assert_array_equal(back.depth_m, depth)
    assert back.intrinsics == intr and back.goal_id == "g" and back.stamp_s == 3.5
    msg.num_points = 6
    with pytest.raises(ValueError, match=r"expected \(H\+1\)\*N\*2 = 108 for N=6, H=8"):
        ros_conv.msg_to_point_tracks(msg)


def test_ee_plan_round_trip_ok_and_failed():
    from t2a_common.core.types import PLAN_NO_MOTION, EEPlan

    poses = np.stack([np.eye(4)] * 3)
    poses[:, 0, 3] = [0.5, 0.6, 0.7]
    plan = EEPlan(0, "ok", poses, [0.0, 0.5, 1.0], poses[0], 0, object_transforms=poses,
                  inlier_ratio=[1, 0.9, 0.8], reachable=[True, True, False], confidence=0.5,
                  moving_point_indices=[3, 4], goal_id="g")  # fmt: skip
    back = ros_conv.msg_to_ee_plan(ros_conv.ee_plan_to_msg(plan))
    np.testing.assert_allclose(back.ee_poses, poses, atol=1e-12)
    np.testing.assert_allclose(back.times_s, [0.0, 0.5, 1.0])
    assert back.reachable.tolist() == [True, True, False] and back.goal_id == "g"
    failed = ros_conv.ee_plan_to_msg(EEPlan.failed(PLAN_NO_MOTION, "tracks do not move"))
    assert failed.status == PLAN_NO_MOTION and len(failed.ee_poses) == 0
    assert not ros_conv.msg_to_ee_plan(failed).ok


def test_joint_positions_by_name():
    msg = ros_conv.joint_state_msg(["b", "a", "c"], [2.0, 1.0, 3.0], velocity=[0, 0, 0])
    np.testing.assert_array_equal(ros_conv.joint_positions(msg, ("a", "b")), [1.0, 2.0])
    with pytest.raises(ValueError, match=r"lacks positions for \['z'\]"):
        ros_conv.joint_positions(msg, ("a", "z"))
