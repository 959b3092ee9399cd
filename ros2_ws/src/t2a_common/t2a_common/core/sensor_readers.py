"""``sensor_msgs`` Image / CameraInfo / JointState readers for any object with the message's fields.

rclpy messages (``t2a_common.ros_conv`` re-exports these for the nodes) and rosbags' deserialized
messages (``t2a_bringup.core.bag_frames``, no ROS needed) have the same field names, so one
implementation reads both; the arrays themselves are decoded by ``t2a_common.core.sensor_codec``.
No message package is imported here. :func:`image_fields` is the way back: the fields of an Image
holding an array, for whichever message class the caller builds.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from t2a_common.core import sensor_codec
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.sensor_codec import (
    COLOR_ENCODINGS,
    DEPTH_ENCODINGS,
    ENCODINGS,
    ImageConversionError,
)

_HOST_BIG_ENDIAN = sys.byteorder == "big"


def describe(msg: Any) -> str:
    """Short human description of an Image, e.g. ``320x240 mono8`` (for error messages)."""
    return sensor_codec.describe(msg.width, msg.height, msg.encoding)


def image_to_numpy(msg: Any) -> np.ndarray:
    """Image -> (H, W) or (H, W, C) array in native byte order (a copy, never a view).

    Raises ImageConversionError for an unsupported encoding or a data/step/size mismatch.
    """
    return sensor_codec.decode_image(
        msg.encoding, msg.height, msg.width, msg.step, bool(msg.is_bigendian), msg.data
    )


def image_to_rgb(msg: Any, what: str = "image") -> np.ndarray:
    """Colour Image -> (H, W, 3) uint8 RGB; alpha is dropped, BGR is swapped.

    ``what`` names the image in the error (``goal image is 320x240 mono8, expected rgb8 or bgr8``).
    """
    if msg.encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(
            f"{what} is {describe(msg)}, expected {', '.join(COLOR_ENCODINGS[:-1])} or "
            f"{COLOR_ENCODINGS[-1]}"
        )
    return sensor_codec.color_to_rgb(image_to_numpy(msg), msg.encoding)


def depth_to_meters(msg: Any, depth_scale: float = 0.001) -> np.ndarray:
    """Depth Image -> (H, W) float32 metres with NaN where there is no data.

    16UC1 is scaled by ``depth_scale`` (RealSense: millimetres, 0 = no data); 32FC1 is already in
    metres (REP 118), with 0, inf and NaN treated as no data.
    """
    if msg.encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(
            f"depth image is {describe(msg)}, expected 16UC1 (mm) or 32FC1 (m)"
        )
    return sensor_codec.depth_to_meters(image_to_numpy(msg), msg.encoding, depth_scale)


def camera_info_to_intrinsics(msg: Any) -> Intrinsics:
    """CameraInfo -> Intrinsics (uses K; raises if K is all zeros, i.e. uncalibrated)."""
    return sensor_codec.intrinsics_from_camera_info(
        msg.width, msg.height, msg.k, msg.distortion_model, msg.d
    )


def joint_positions(msg: Any, names: Sequence[str], prefix: str | None = None) -> np.ndarray:
    """Positions of ``names`` (in that order) from a JointState that may hold more joints, in
    any order, with or without spot_ros2's frame prefix (``prefix``: see
    :func:`t2a_common.core.sensor_codec.joint_name_index`). Raises ValueError naming the joints
    that are missing or have no position."""
    return sensor_codec.select_joint_positions(msg.name, msg.position, names, prefix)


def stamp_to_sec(stamp: Any) -> float:
    """builtin_interfaces/Time (``sec``, ``nanosec``) -> seconds (float)."""
    return stamp.sec + stamp.nanosec * 1e-9


def image_fields(array: np.ndarray, encoding: str) -> dict[str, Any]:
    """The Image fields (``height width encoding is_bigendian step data``) that hold ``array``:
    native byte order, tightly packed rows, ``data`` as bytes.

    The array's dtype and channel count must match ``encoding`` (no silent conversion); an
    ``(H, W, 1)`` array is accepted for a one-channel encoding.
    """
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"unsupported encoding {encoding!r}, expected one of {', '.join(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[encoding]
    a = np.asarray(array)
    expected_ndim = 3 if channels > 1 else 2
    if a.ndim == 3 and channels == 1 and a.shape[2] == 1:
        a = a[:, :, 0]
    if a.ndim != expected_ndim or (channels > 1 and a.shape[2] != channels):
        want = "(H, W)" if channels == 1 else f"(H, W, {channels})"
        raise ImageConversionError(f"{encoding} needs an array of shape {want}, got {a.shape}")
    if a.dtype != dtype:
        raise ImageConversionError(f"{encoding} needs dtype {dtype}, got {a.dtype}")
    return {
        "height": int(a.shape[0]),
        "width": int(a.shape[1]),
        "encoding": encoding,
        "is_bigendian": int(_HOST_BIG_ENDIAN),
        "step": int(a.shape[1] * channels * dtype.itemsize),
        "data": np.ascontiguousarray(a).tobytes(),
    }
