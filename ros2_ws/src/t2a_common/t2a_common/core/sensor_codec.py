"""The contents of ``sensor_msgs`` Image, CameraInfo and JointState as numpy, without the
message classes.

One decoder for both kinds of message object the stack meets: rclpy messages
(t2a_common.ros_conv) and the ones rosbags deserializes from a bag
(t2a_bringup.core.bag_frames); they are given as their fields. Image encodings rgb8, bgr8, rgba8,
bgra8, mono8, mono16, 16UC1 and 32FC1; rows may be padded to ``step`` (the last one may lack its
padding) and either byte order.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from t2a_common.core.geometry import Intrinsics

# encoding -> (numpy dtype, channels)
ENCODINGS: dict[str, tuple[np.dtype, int]] = {
    "rgb8": (np.dtype(np.uint8), 3),
    "bgr8": (np.dtype(np.uint8), 3),
    "rgba8": (np.dtype(np.uint8), 4),
    "bgra8": (np.dtype(np.uint8), 4),
    "mono8": (np.dtype(np.uint8), 1),
    "mono16": (np.dtype(np.uint16), 1),
    "16UC1": (np.dtype(np.uint16), 1),
    "32FC1": (np.dtype(np.float32), 1),
}
COLOR_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8")
DEPTH_ENCODINGS = ("16UC1", "32FC1")


class ImageConversionError(ValueError):
    """An image cannot be converted: unsupported encoding or inconsistent layout."""


def describe(width: int, height: int, encoding: str) -> str:
    """Short human description, e.g. ``320x240 mono8`` (for error messages)."""
    return f"{width}x{height} {encoding or '<no encoding>'}"


def decode_image(
    encoding: str, height: int, width: int, step: int, is_bigendian: bool, data
) -> np.ndarray:
    """An Image's fields -> ``(H, W)`` or ``(H, W, C)`` array in native byte order (a copy).

    ``data`` is the pixel buffer (bytes, ``array.array`` or a uint8 array), ``step`` the bytes
    per row. Raises ImageConversionError for an unsupported encoding or a data/step/size mismatch.
    """
    what = describe(width, height, encoding)
    if encoding not in ENCODINGS:
        raise ImageConversionError(
            f"image is {what}: unsupported encoding {encoding!r}, "
            f"expected one of {', '.join(ENCODINGS)}"
        )
    dtype, channels = ENCODINGS[encoding]
    h, w, step = int(height), int(width), int(step)
    if h == 0 or w == 0:
        raise ImageConversionError(f"image is empty ({what})")
    row_bytes = w * channels * dtype.itemsize
    if step < row_bytes:
        raise ImageConversionError(
            f"image is {what}: step {step} is smaller than one row ({row_bytes} bytes)"
        )
    if isinstance(data, (bytes, bytearray, memoryview)):
        buf = np.frombuffer(data, dtype=np.uint8)
    else:
        buf = np.asarray(data, dtype=np.uint8).reshape(-1)
    if buf.size < step * (h - 1) + row_bytes:
        raise ImageConversionError(
            f"image is {what} with step {step}: data has {buf.size} bytes, "
            f"expected at least {step * (h - 1) + row_bytes}"
        )
    if buf.size < step * h:  # last row may legally lack its padding; pad so reshape works
        buf = np.concatenate([buf, np.zeros(step * h - buf.size, np.uint8)])
    rows = buf[: step * h].reshape(h, step)[:, :row_bytes]
    arr = np.ascontiguousarray(rows).view(dtype.newbyteorder(">" if is_bigendian else "<"))
    arr = arr.astype(dtype, copy=True)  # native order, owns its memory
    return arr.reshape(h, w, channels) if channels > 1 else arr.reshape(h, w)


def color_to_rgb(array: np.ndarray, encoding: str) -> np.ndarray:
    """A decoded colour image -> ``(H, W, 3)`` uint8 RGB; alpha is dropped, BGR is swapped."""
    if encoding not in COLOR_ENCODINGS:
        raise ImageConversionError(f"{encoding} is not a colour encoding {COLOR_ENCODINGS}")
    rgb = array[:, :, :3]
    return np.ascontiguousarray(rgb[:, :, ::-1] if encoding.startswith("bgr") else rgb)


def depth_to_meters(array: np.ndarray, encoding: str, depth_scale: float = 0.001) -> np.ndarray:
    """A decoded depth image -> ``(H, W)`` float32 metres with NaN where there is no data.

    16UC1 is scaled by ``depth_scale`` (m per unit; RealSense: millimetres, 0 = no data); 32FC1
    is already in metres (REP 118), with 0, inf and NaN treated as no data.
    """
    if encoding not in DEPTH_ENCODINGS:
        raise ImageConversionError(f"{encoding} is not a depth encoding {DEPTH_ENCODINGS}")
    depth = array.astype(np.float32)
    if encoding == "16UC1":
        depth *= np.float32(depth_scale)
    depth[~np.isfinite(depth) | (depth <= 0)] = np.nan
    return depth


def intrinsics_from_camera_info(
    width: int, height: int, k: Sequence[float], distortion_model: str, d: Sequence[float]
) -> Intrinsics:
    """A CameraInfo's fields -> Intrinsics (uses K; raises ValueError if K is all zeros, i.e.
    the camera is uncalibrated)."""
    k = np.asarray(k, dtype=float)
    if k.shape != (9,) or k[0] <= 0 or k[4] <= 0:
        raise ValueError(f"camera_info for a {width}x{height} image has no valid K ({k.tolist()})")
    return Intrinsics(
        width=int(width),
        height=int(height),
        fx=float(k[0]),
        fy=float(k[4]),
        cx=float(k[2]),
        cy=float(k[5]),
        distortion_model=distortion_model or "plumb_bob",
        distortion=tuple(float(x) for x in d),
    )


def joint_name_index(name: Sequence[str], wanted: Sequence[str], prefix: str | None = None) -> list:
    """Index into a JointState's ``name`` of each joint in ``wanted`` (None where absent).

    spot_ros2 publishes joint names with its frame prefix (``spot/arm_sh0`` for spot_name
    ``spot``; upstream ``robot_state.cpp`` builds ``prefix + friendly name``), URDF tools and
    t2a's own messages use bare names (``arm_sh0``). ``prefix`` (e.g. ``"spot/"``) accepts
    ``prefix + joint`` and the bare name; ``None`` accepts the bare name or any single
    ``<something>/`` prefix, and raises ValueError if two names in the message claim one joint.
    """
    exact = {n: i for i, n in enumerate(name)}
    by_tail: dict[str, list[int]] = {}
    if prefix is None:
        for i, n in enumerate(name):
            head, sep, tail = n.rpartition("/")
            if sep and head and "/" not in head.strip("/"):
                by_tail.setdefault(tail, []).append(i)
    found = []
    for w in wanted:
        if prefix and prefix + w in exact:
            found.append(exact[prefix + w])
        elif w in exact:
            found.append(exact[w])
        elif prefix is None and w in by_tail:
            hits = by_tail[w]
            if len(hits) > 1:
                raise ValueError(
                    f"joint_states names joint {w!r} more than once with different prefixes "
                    f"({[name[i] for i in hits]}); set the prefix (spot_name) to pick one"
                )
            found.append(hits[0])
        else:
            found.append(None)
    return found


def select_joint_positions(
    name: Sequence[str],
    position: Sequence[float],
    wanted: Sequence[str],
    prefix: str | None = None,
) -> np.ndarray:
    """Positions of the joints ``wanted`` (bare names, in that order) from a JointState's
    ``name`` and ``position``, which may hold more joints in any order and name them with a frame
    prefix (see :func:`joint_name_index` for ``prefix``). Raises ValueError naming the joints that
    are missing or have no position."""
    index = joint_name_index(name, wanted, prefix)
    missing = [w for w, i in zip(wanted, index) if i is None or i >= len(position)]
    if missing:
        want = f" (prefix {prefix!r} or none)" if prefix else ""
        raise ValueError(
            f"joint_states lacks positions for {missing}{want} (has {list(name)[:12]})"
        )
    return np.array([position[i] for i in index], dtype=float)
