"""Camera frames, camera info and joint states of a rosbag2 bag as numpy, without ROS.

What the training converters (``training/bag_to_tracks.py``, ``training/bag_to_demos.py``) read
from a bag that ``t2a-record`` (or ``ros2 bag record``) wrote on the robot or next to t2a_sim:
colour and aligned depth images, the colour ``camera_info`` and spot_ros2's ``joint_states``.
Messages are deserialized with the rosbags type store (the ``sensor_msgs`` definitions are the
same in every ROS 2 distribution) and read by ``t2a_common.core.sensor_readers``, the readers
``t2a_common.ros_conv`` re-exports for the nodes (ros_conv itself cannot be used here because it
imports the message packages): rgb8/bgr8/rgba8/bgra8 colour, 16UC1 (``depth_scale`` m per unit,
0 = no data) or 32FC1 (m) depth, rows padded to ``step``.
The ``encode_*`` functions go the other way (tests, and bags written from t2a_sim in process).

Two clocks are in a bag: each message's header stamp (when the sensor took it) and its receive
time (when the recorder got it). Time windows given by users are seconds from the bag's first
message on the receive clock, as ``t2a-play --start-offset`` counts them. Frames and joint states
are aligned with each other on one clock: ``"header"`` (default; right when the camera and the
arm driver share a synchronised clock, as on the robot and in t2a_sim) or ``"receive"`` (when
they do not, at the cost of the transport latency).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from t2a_bringup.core.bag import BagError, BagReader, MessageTypes
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.sensor_readers import (
    camera_info_to_intrinsics,
    depth_to_meters,
    image_fields,
    image_to_rgb,
    joint_positions,
    stamp_to_sec,
)

IMAGE = "sensor_msgs/msg/Image"
CAMERA_INFO = "sensor_msgs/msg/CameraInfo"
JOINT_STATE = "sensor_msgs/msg/JointState"
CLOCKS = ("header", "receive")


@dataclasses.dataclass(frozen=True)
class BagTopics:
    """Topic names of a recording (realsense2_camera and spot_ros2 defaults)."""

    color: str = "/camera/camera/color/image_raw"
    depth: str = "/camera/camera/aligned_depth_to_color/image_raw"
    info: str = "/camera/camera/color/camera_info"
    joints: str = "/spot/joint_states"


@dataclasses.dataclass(frozen=True)
class Frame:
    """One colour image of a bag."""

    time_s: float  # on the reader's clock (s since the epoch, or since sim start in t2a_sim)
    offset_s: float  # receive time since the bag's first message (s)
    rgb: np.ndarray  # (H, W, 3) uint8


@dataclasses.dataclass(frozen=True)
class JointTrajectory:
    """Joint positions over time, sorted by time."""

    names: tuple[str, ...]
    times_s: np.ndarray  # (T,) on the reader's clock
    positions: np.ndarray  # (T, J) rad (m for prismatic joints)

    def at(self, times_s: float | Sequence[float] | np.ndarray) -> np.ndarray:
        """Positions at ``times_s`` (scalar -> ``(J,)``, ``(K,)`` -> ``(K, J)``), linearly
        interpolated and held constant before the first and after the last sample."""
        t = np.asarray(times_s, dtype=np.float64)
        columns = [np.interp(t, self.times_s, self.positions[:, j]) for j in range(len(self.names))]
        return np.stack(columns, axis=-1)


# --------------------------------------------------------------------------------------------
# Message <-> numpy
# --------------------------------------------------------------------------------------------


def _header(types: MessageTypes, t_s: float, frame_id: str) -> Any:
    store = types.typestore.types
    sec = math.floor(t_s)
    nanosec = min(round((t_s - sec) * 1e9), 999_999_999)
    stamp = store["builtin_interfaces/msg/Time"](sec=int(sec), nanosec=int(nanosec))
    return store["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)


def encode_image(
    types: MessageTypes, array: np.ndarray, encoding: str, t_s: float, frame_id: str = ""
) -> bytes:
    """``array`` as a serialized (CDR) ``sensor_msgs/Image`` stamped ``t_s`` (tight rows)."""
    fields = image_fields(array, encoding)
    fields["data"] = np.frombuffer(fields["data"], np.uint8)
    msg = types.typestore.types[IMAGE](header=_header(types, t_s, frame_id), **fields)
    return bytes(types.typestore.serialize_cdr(msg, IMAGE))


def encode_camera_info(
    types: MessageTypes, intr: Intrinsics, t_s: float, frame_id: str = ""
) -> bytes:
    """Intrinsics as a serialized ``sensor_msgs/CameraInfo`` (K, P, R = identity)."""
    store = types.typestore.types
    roi = store["sensor_msgs/msg/RegionOfInterest"](
        x_offset=0, y_offset=0, height=0, width=0, do_rectify=False
    )
    msg = store[CAMERA_INFO](
        header=_header(types, t_s, frame_id),
        height=intr.height,
        width=intr.width,
        distortion_model=intr.distortion_model,
        d=np.asarray(intr.distortion, np.float64),
        k=np.array([intr.fx, 0, intr.cx, 0, intr.fy, intr.cy, 0, 0, 1], np.float64),
        r=np.eye(3).reshape(-1),
        p=np.array([intr.fx, 0, intr.cx, 0, 0, intr.fy, intr.cy, 0, 0, 0, 1, 0], np.float64),
        binning_x=0,
        binning_y=0,
        roi=roi,
    )
    return bytes(types.typestore.serialize_cdr(msg, CAMERA_INFO))


def encode_joint_state(
    types: MessageTypes, names: Sequence[str], positions: Sequence[float], t_s: float
) -> bytes:
    """Joint positions as a serialized ``sensor_msgs/JointState`` (no velocities, efforts)."""
    if len(names) != len(positions):
        raise ValueError(f"{len(names)} joint names but {len(positions)} positions")
    msg = types.typestore.types[JOINT_STATE](
        header=_header(types, t_s, ""),
        name=list(names),
        position=np.asarray(positions, np.float64),
        velocity=np.zeros(0),
        effort=np.zeros(0),
    )
    return bytes(types.typestore.serialize_cdr(msg, JOINT_STATE))


# --------------------------------------------------------------------------------------------
# Reading a bag
# --------------------------------------------------------------------------------------------


class BagFrames:
    """Decoded camera frames and joint states of one bag (a context manager).

    Args:
        path: the rosbag2 folder.
        topics: where the camera and the joints are.
        clock: ``"header"`` or ``"receive"``, the time base of :attr:`Frame.time_s` and of
            joint trajectories (see the module docstring).
        depth_scale: metres per unit of a 16UC1 depth image.
        types: the type store to decode with (default: rosbags' store of ``ROS_DISTRO``).
    """

    def __init__(
        self,
        path: str | Path,
        topics: BagTopics | None = None,
        clock: str = "header",
        depth_scale: float = 0.001,
        types: MessageTypes | None = None,
    ) -> None:
        if clock not in CLOCKS:
            raise ValueError(f"clock {clock!r} is not one of {CLOCKS}")
        if not depth_scale > 0:
            raise ValueError(f"depth_scale must be > 0 m per unit, got {depth_scale}")
        self.topics = topics or BagTopics()
        self.clock = clock
        self.depth_scale = float(depth_scale)
        self.types = types or MessageTypes(share_dirs=[])
        self.reader = BagReader(path)
        self.path = self.reader.path
        self._infos = self.reader.topics()

    def close(self) -> None:
        """Close the bag."""
        self.reader.close()

    def __enter__(self) -> BagFrames:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def duration_s(self) -> float:
        """Seconds from the first to the last message (receive clock)."""
        return self.reader.duration_s

    def has(self, topic: str) -> bool:
        """Whether the bag holds at least one message on ``topic``."""
        info = self._infos.get(topic)
        return info is not None and info.message_count > 0

    def require(self, topic: str, msgtype: str, what: str) -> None:
        """Raise BagError unless ``topic`` is in the bag with messages of ``msgtype``."""
        info = self._infos.get(topic)
        if info is None or info.message_count == 0:
            have = ", ".join(f"{t.name} ({t.msgtype})" for t in self._infos.values())
            raise BagError(
                f"{self.path} has no {what} on {topic}; its topics: {have or 'none'} "
                "(pick the topic with the converter's topic flags)"
            )
        if info.msgtype != msgtype:
            raise BagError(f"{topic} in {self.path} is {info.msgtype}, expected {msgtype}")

    def window_ns(self, start_s: float = 0.0, end_s: float | None = None) -> tuple[int, int]:
        """``[start, stop)`` receive times (ns) of the window ``start_s <= t <= end_s`` given in
        seconds from the bag's first message (``end_s`` None = to the end). Raises BagError for
        an empty window or one that starts after the bag's end."""
        end = self.duration_s if end_s is None else float(end_s)
        if not (math.isfinite(start_s) and 0 <= start_s < end):
            raise BagError(
                f"time window {start_s}:{end_s} s is empty or negative; expected "
                f"0 <= start < end (s from the bag's first message)"
            )
        if start_s > self.duration_s:
            raise BagError(
                f"time window {start_s}:{end_s} s starts after the end of {self.path} "
                f"({self.duration_s:.2f} s long)"
            )
        start = self.reader.start_ns + round(start_s * 1e9)
        return start, self.reader.start_ns + round(end * 1e9) + 1

    def _decode(self, msg: Any, msgtype: str) -> Any:
        return self.types.typestore.deserialize_cdr(msg.data, msgtype)

    def _time(self, header: Any, receive_ns: int) -> float:
        return receive_ns * 1e-9 if self.clock == "receive" else stamp_to_sec(header.stamp)

    def color_frames(self, start_s: float = 0.0, end_s: float | None = None) -> Iterator[Frame]:
        """Colour frames in a window (s from the bag's first message), read lazily."""
        self.require(self.topics.color, IMAGE, "colour images")
        start, stop = self.window_ns(start_s, end_s)
        for m in self.reader.messages([self.topics.color], start, stop):
            msg = self._decode(m, IMAGE)
            try:
                rgb = image_to_rgb(msg, f"{self.topics.color} image")
            except ValueError as exc:
                raise BagError(f"{self.path}: {exc}") from exc
            yield Frame(
                self._time(msg.header, m.stamp_ns),
                (m.stamp_ns - self.reader.start_ns) * 1e-9,
                rgb,
            )

    def depth_near(
        self, frame: Frame, max_offset_s: float = 0.05, search_s: float = 1.0
    ) -> np.ndarray | None:
        """Aligned depth ``(H, W)`` float32 m (NaN = none) closest in time to ``frame``, or None
        if no depth image is within ``max_offset_s`` of it. Only depth received within
        ``search_s`` of the frame is looked at."""
        if not self.has(self.topics.depth):
            return None
        self.require(self.topics.depth, IMAGE, "depth images")
        t0 = self.reader.start_ns + round(frame.offset_s * 1e9)
        span = round(search_s * 1e9)
        best: tuple[float, Any] | None = None
        for m in self.reader.messages([self.topics.depth], max(t0 - span, 0), t0 + span):
            msg = self._decode(m, IMAGE)
            gap = abs(self._time(msg.header, m.stamp_ns) - frame.time_s)
            if best is None or gap < best[0]:
                best = (gap, msg)
        if best is None or best[0] > max_offset_s:
            return None
        try:
            return depth_to_meters(best[1], self.depth_scale)
        except ValueError as exc:
            raise BagError(f"{self.path}: {exc}") from exc

    def intrinsics(self) -> Intrinsics:
        """The colour camera's intrinsics (first ``camera_info`` of the bag)."""
        self.require(self.topics.info, CAMERA_INFO, "camera_info")
        for m in self.reader.messages([self.topics.info]):
            try:
                return camera_info_to_intrinsics(self._decode(m, CAMERA_INFO))
            except ValueError as exc:
                raise BagError(f"{self.path}: {exc}") from exc
        raise BagError(f"{self.path} has no camera_info on {self.topics.info}")

    def joint_states(
        self,
        names: Sequence[str],
        start_s: float = 0.0,
        end_s: float | None = None,
        margin_s: float = 0.5,
    ) -> JointTrajectory:
        """Positions of ``names`` in a window (widened by ``margin_s`` each side, so the window's
        edges can be interpolated). Messages lacking one of the joints are skipped (spot_ros2
        may publish other joint sets on the same topic); raises BagError if none has them all."""
        self.require(self.topics.joints, JOINT_STATE, "joint states")
        start, stop = self.window_ns(max(start_s - margin_s, 0.0), None)
        if end_s is not None:
            stop = min(stop, self.reader.start_ns + round((end_s + margin_s) * 1e9) + 1)
        times, rows, skipped = [], [], 0
        for m in self.reader.messages([self.topics.joints], start, stop):
            msg = self._decode(m, JOINT_STATE)
            try:
                rows.append(joint_positions(msg, names))
            except ValueError:
                skipped += 1
                continue
            times.append(self._time(msg.header, m.stamp_ns))
        if not rows:
            raise BagError(
                f"no message on {self.topics.joints} in {self.path} between {start_s} and "
                f"{end_s} s has all of {list(names)} ({skipped} without them)"
            )
        order = np.argsort(np.asarray(times), kind="stable")
        return JointTrajectory(
            tuple(names), np.asarray(times, np.float64)[order], np.asarray(rows)[order]
        )


def sample_and_hold(
    frames: Iterable[Frame], times_s: Iterable[float]
) -> Iterator[tuple[float, Frame]]:
    """``(t, frame)`` for each of the increasing ``times_s``: the latest frame taken at or before t.

    Resamples a camera stream to a constant rate (or to control ticks) the way a camera topic is
    read: a dropped frame repeats the previous one. Times before the first frame are skipped;
    once the stream has ended, output stops a full period (the spacing of ``times_s``) after its
    last frame, so ``times_s`` may be endless. Both are consumed lazily: a long bag is never held
    in memory.
    """
    it = iter(frames)
    held: Frame | None = None
    upcoming = next(it, None)
    previous: float | None = None
    period = 0.0
    for t in times_s:
        t = float(t)
        if previous is not None:
            if t < previous:
                raise ValueError(f"times_s must increase, got {t} after {previous}")
            period = t - previous
        previous = t
        while upcoming is not None and upcoming.time_s <= t:
            held, upcoming = upcoming, next(it, None)
        if upcoming is None and (held is None or t - held.time_s >= period > 0):
            return
        if held is not None:
            yield t, held
