"""Episode artifacts: track overlays, episode video, planned vs executed hand path, summary.

What a demo run or an offline evaluation leaves in its output folder, written from plain arrays
(no ROS): :func:`draw_tracks` overlays point tracks on an RGB frame, :func:`write_video` writes
frames as a GIF (always, with imageio) and an MP4 (with OpenCV, when its encoder works),
:func:`plot_ee_paths` draws the planned and executed hand positions from above and from the side,
:func:`write_summary` writes ``summary.json`` and a readable ``summary.md`` from one dict, and
:class:`SensorBagWriter` writes camera frames and joint states as a rosbag2 bag with the topics of
realsense2_camera and spot_ros2 (a bag of an in-process sim run).

Conventions: images are ``(H, W, 3)`` uint8 RGB; tracks are ``(H+1, N, 2)`` pixel ``(u, v)`` with
step 0 = the query points P0; positions are in the ``body`` frame, metres.
"""

from __future__ import annotations

import dataclasses
import enum
import itertools
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from t2a_bringup.core.bag import BagWriter, MessageTypes, QosProfile
from t2a_common.core.geometry import Intrinsics

# A track whose point leaves P0 by more than this counts as moving (the planner's default
# motion_threshold_px, so the overlay agrees with what the planner treats as moving).
MOVING_THRESHOLD_PX = 3.0
STATIC_COLOR = (150, 150, 150)  # RGB of points that do not move
GIF_MAX_WIDTH = 640  # px; wider frames are shrunk for the GIF (the MP4 keeps full size)
GIF_MAX_FRAMES = 300  # longer videos are subsampled for the GIF


# --------------------------------------------------------------------------------------------
# Track overlays
# --------------------------------------------------------------------------------------------


def _check_rgb(name: str, image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3 or 0 in image.shape:
        raise ValueError(f"{name} is {image.dtype} {image.shape}, expected uint8 RGB (H, W, 3)")
    return image


def _check_tracks(tracks_px: np.ndarray) -> np.ndarray:
    tracks = np.asarray(tracks_px, dtype=np.float64)
    if tracks.ndim != 3 or tracks.shape[2] != 2 or tracks.shape[0] < 1:
        raise ValueError(f"tracks have shape {tracks.shape}, expected (H+1, N, 2) pixels")
    return tracks


def moving_points(tracks_px: np.ndarray, threshold_px: float = MOVING_THRESHOLD_PX) -> np.ndarray:
    """``(N,)`` bool: the points whose track leaves P0 by more than ``threshold_px`` pixels."""
    tracks = _check_tracks(tracks_px)
    with np.errstate(invalid="ignore"):
        dist = np.linalg.norm(tracks - tracks[:1], axis=-1)  # (H+1, N)
    return np.nan_to_num(dist, nan=0.0).max(axis=0) > threshold_px


def point_colors(points_px: np.ndarray, width: int, height: int) -> np.ndarray:
    """``(N, 3)`` uint8 RGB, one colour per point from where it starts in the image.

    Hue follows ``u`` and brightness ``v``, so neighbouring points get similar colours and a
    track can be followed by eye from frame to frame.
    """
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    u = np.clip(np.nan_to_num(pts[:, 0]) / max(width - 1, 1), 0.0, 1.0)
    v = np.clip(np.nan_to_num(pts[:, 1]) / max(height - 1, 1), 0.0, 1.0)
    hsv = np.stack(
        [np.round(u * 170), np.full_like(u, 230), np.round(255 - 90 * v)], axis=-1
    ).astype(np.uint8)  # OpenCV hue is 0..179; stop short of red wrapping back onto red
    return cv2.cvtColor(hsv[None], cv2.COLOR_HSV2RGB)[0]


def draw_tracks(
    rgb: np.ndarray,
    tracks_px: np.ndarray,
    *,
    step: int | None = None,
    moving: np.ndarray | None = None,
    colors: np.ndarray | None = None,
    confidence: np.ndarray | None = None,
    stride: int = 1,
    thickness: int = 2,
) -> np.ndarray:
    """Point tracks drawn on a copy of ``rgb``.

    Args:
        rgb: ``(H, W, 3)`` uint8 frame.
        tracks_px: ``(H+1, N, 2)`` pixel tracks; non-finite points are skipped.
        step: draw each trail from step 0 up to this step and the point's head there
            (default: the last step, the whole track).
        moving: ``(N,)`` bool; default :func:`moving_points`. Moving points get a coloured
            trail and a filled dot with a dark rim; static points only a small grey ring at their
            position, so the two are told apart at a glance.
        colors: ``(N, 3)`` uint8 RGB per point; default :func:`point_colors` of P0.
        confidence: ``(N,)`` in ``[0, 1]``; trails of points below 0.5 are drawn thin.
        stride: draw every ``stride``-th point only.
        thickness: trail width (px).

    Returns:
        The ``(H, W, 3)`` uint8 overlay.
    """
    out = np.ascontiguousarray(_check_rgb("frame", rgb).copy())
    tracks = _check_tracks(tracks_px)
    horizon = tracks.shape[0] - 1
    n = tracks.shape[1]
    step = horizon if step is None else int(step)
    if not 0 <= step <= horizon:
        raise ValueError(f"step is {step}, expected 0..{horizon} (the track horizon)")
    if stride < 1:
        raise ValueError(f"stride is {stride}, expected >= 1")
    moving = moving_points(tracks) if moving is None else np.asarray(moving, dtype=bool)
    if moving.shape != (n,):
        raise ValueError(f"moving has shape {moving.shape}, expected ({n},) like the tracks")
    if colors is None:
        colors = point_colors(tracks[0], out.shape[1], out.shape[0])
    colors = np.asarray(colors)
    if colors.shape != (n, 3):
        raise ValueError(f"colors have shape {colors.shape}, expected ({n}, 3) RGB")
    if confidence is not None and np.shape(confidence) != (n,):
        raise ValueError(f"confidence has shape {np.shape(confidence)}, expected ({n},)")
    radius = max(2, thickness + 1)
    order = range(0, n, stride)
    # Static points first, so that a moving point's dot is never hidden under a static ring.
    for i in (i for i in order if not moving[i]):
        head = tracks[step, i]
        if np.all(np.isfinite(head)):
            centre = tuple(int(c) for c in np.round(head))
            cv2.circle(out, centre, radius, STATIC_COLOR, 1, cv2.LINE_AA)
    for i in (i for i in order if moving[i]):
        color = tuple(int(c) for c in colors[i])
        thick = 1 if confidence is not None and confidence[i] < 0.5 else thickness
        pts = tracks[: step + 1, i]
        for a, b in itertools.pairwise(pts):
            if np.all(np.isfinite(a)) and np.all(np.isfinite(b)):
                a_pt = tuple(int(c) for c in np.round(a))
                b_pt = tuple(int(c) for c in np.round(b))
                cv2.line(out, a_pt, b_pt, color, thick, cv2.LINE_AA)
        head = pts[-1]
        if np.all(np.isfinite(head)):
            centre = tuple(int(c) for c in np.round(head))
            cv2.circle(out, centre, radius + 1, (20, 20, 20), -1, cv2.LINE_AA)
            cv2.circle(out, centre, radius, color, -1, cv2.LINE_AA)
    return out


def put_label(rgb: np.ndarray, text: str, corner: str = "top") -> np.ndarray:
    """A copy of ``rgb`` with ``text`` on a dark band at its top (or ``"bottom"``) left."""
    out = np.ascontiguousarray(_check_rgb("frame", rgb).copy())
    scale = max(0.35, out.shape[1] / 900)
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
    y0 = 0 if corner == "top" else out.shape[0] - th - base - 6
    band = out[y0 : y0 + th + base + 6, : tw + 8]
    band[:] = (band * 0.35).astype(np.uint8)
    y_text = y0 + th + 3
    cv2.putText(out, text, (4, y_text), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                cv2.LINE_AA)  # fmt: skip
    return out


def side_by_side(left: np.ndarray, right: np.ndarray, gap_px: int = 4) -> np.ndarray:
    """``left | right`` in one image; ``right`` is scaled to the height of ``left``."""
    left = _check_rgb("left image", left)
    right = _check_rgb("right image", right)
    h = left.shape[0]
    if right.shape[0] != h:
        w = max(1, round(right.shape[1] * h / right.shape[0]))
        right = cv2.resize(right, (w, h), interpolation=cv2.INTER_AREA)
    gap = np.zeros((h, gap_px, 3), np.uint8)
    return np.concatenate([left, gap, right], axis=1)


# --------------------------------------------------------------------------------------------
# Video
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class VideoFiles:
    """What :func:`write_video` wrote: the GIF always, the MP4 if OpenCV could encode it."""

    gif: Path
    mp4: Path | None
    frames: int  # frames in the MP4 (all given); the GIF may hold fewer, see GIF_MAX_FRAMES
    mp4_error: str = ""  # why there is no MP4


def _even(x: int) -> int:
    return x - (x % 2)


def write_video(
    frames: Sequence[np.ndarray],
    path: str | Path,
    fps: float = 10.0,
    *,
    mp4: bool = True,
    gif_max_width: int = GIF_MAX_WIDTH,
    gif_max_frames: int = GIF_MAX_FRAMES,
) -> VideoFiles:
    """Write ``frames`` (each ``(H, W, 3)`` uint8 RGB, all the same size) as a video.

    ``path`` names the files without or with a suffix: ``out/episode`` gives ``out/episode.gif``
    and ``out/episode.mp4``. The GIF is written with imageio (looping; frames wider than
    ``gif_max_width`` are shrunk and more than ``gif_max_frames`` are subsampled, keeping its
    duration). The MP4 (``mp4v``, full size) is written with ``cv2.VideoWriter`` when ``mp4``
    is set; if OpenCV has no working encoder, ``mp4`` is None and ``mp4_error`` says why.
    """
    import imageio.v3 as iio

    if len(frames) == 0:
        raise ValueError("no frames to write; a video needs at least one frame")
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"fps is {fps}, expected a number > 0")
    first = _check_rgb("frame 0", frames[0])
    for i, f in enumerate(frames):
        if _check_rgb(f"frame {i}", f).shape != first.shape:
            raise ValueError(
                f"frame {i} is {f.shape[1]}x{f.shape[0]}, expected {first.shape[1]}x"
                f"{first.shape[0]} like frame 0 (all frames of a video have one size)"
            )
    base = Path(path)
    base = base.with_suffix("") if base.suffix.lower() in (".gif", ".mp4") else base
    base.parent.mkdir(parents=True, exist_ok=True)

    every = max(1, math.ceil(len(frames) / gif_max_frames))
    picked = list(frames[::every])
    h, w = first.shape[:2]
    if w > gif_max_width:
        size = (gif_max_width, max(1, round(h * gif_max_width / w)))
        picked = [cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in picked]
    gif = base.with_suffix(".gif")
    iio.imwrite(gif, np.stack(picked), extension=".gif", duration=1000.0 * every / fps, loop=0)

    mp4_path, error = None, "not requested"
    if mp4:
        mp4_path, error = _write_mp4(frames, base.with_suffix(".mp4"), fps)
    return VideoFiles(gif=gif, mp4=mp4_path, frames=len(frames), mp4_error=error)


def _write_mp4(frames: Sequence[np.ndarray], path: Path, fps: float) -> tuple[Path | None, str]:
    h, w = frames[0].shape[:2]
    # Many encoders need even sizes; crop the odd last row/column rather than fail.
    size = (_even(w), _even(h))
    if min(size) == 0:
        return None, f"frames of {w}x{h} are too small for an MP4"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), float(fps), size)
    if not writer.isOpened():
        path.unlink(missing_ok=True)
        return None, "cv2.VideoWriter could not open an mp4v encoder (OpenCV built without one)"
    try:
        for f in frames:
            writer.write(cv2.cvtColor(np.ascontiguousarray(f[: size[1], : size[0]]),
                                      cv2.COLOR_RGB2BGR))  # fmt: skip
    finally:
        writer.release()
    if not path.is_file() or path.stat().st_size == 0:
        path.unlink(missing_ok=True)
        return None, "cv2.VideoWriter wrote an empty file"
    return path, ""


# --------------------------------------------------------------------------------------------
# Hand paths
# --------------------------------------------------------------------------------------------


def _points(name: str, value: np.ndarray | None) -> np.ndarray:
    if value is None:
        return np.zeros((0, 3))
    arr = np.asarray(value, dtype=float)
    if arr.size == 0:
        return np.zeros((0, 3))
    if arr.ndim != 2 or arr.shape[1] != 3:
        raise ValueError(f"{name} has shape {arr.shape}, expected (K, 3) positions in metres")
    return arr


def _point(name: str, value: np.ndarray | None) -> np.ndarray | None:
    if value is None:
        return None
    arr = np.asarray(value, dtype=float).reshape(-1)
    if arr.shape != (3,):
        raise ValueError(f"{name} has shape {np.shape(value)}, expected a (3,) position (m)")
    return arr


def plot_ee_paths(
    path: str | Path,
    planned: np.ndarray | None,
    executed: np.ndarray | None = None,
    *,
    grasp: np.ndarray | None = None,
    pregrasp: np.ndarray | None = None,
    start: np.ndarray | None = None,
    title: str = "",
) -> Path:
    """PNG of the planned vs executed hand positions, from above (x-y) and from the side (x-z).

    Args:
        path: the PNG to write (folders are created).
        planned: ``(K, 3)`` planned hand positions in ``body`` (m), in order; may be empty
            (a failed plan).
        executed: ``(T, 3)`` hand positions actually reached (m); may be None or empty (no arm).
        grasp, pregrasp, start: ``(3,)`` positions marked on both views when given.
        title: figure title (e.g. the plan status).

    Returns:
        ``path`` as a Path.
    """
    import matplotlib

    matplotlib.use("Agg")  # no display needed; harmless if a backend is already chosen
    import matplotlib.pyplot as plt

    planned_xyz = _points("planned", planned)
    executed_xyz = _points("executed", executed)
    marks = [
        ("start", _point("start", start), "s", "tab:gray"),
        ("pre-grasp", _point("pregrasp", pregrasp), "D", "tab:orange"),
        ("grasp", _point("grasp", grasp), "*", "tab:red"),
    ]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.6))
    views = (("top view", 0, 1, "x forward (m)", "y left (m)"),
             ("side view", 0, 2, "x forward (m)", "z up (m)"))  # fmt: skip
    for ax, (name, a, b, xlabel, ylabel) in zip(axes, views):
        if len(planned_xyz):
            ax.plot(planned_xyz[:, a], planned_xyz[:, b], "o--", color="tab:blue", ms=4,
                    label="planned")  # fmt: skip
        if len(executed_xyz):
            ax.plot(executed_xyz[:, a], executed_xyz[:, b], "-", color="tab:green", lw=2,
                    label="executed")  # fmt: skip
            ax.plot(executed_xyz[-1, a], executed_xyz[-1, b], "o", color="tab:green", ms=6)
        for label, p, marker, color in marks:
            if p is not None:
                ax.plot(p[a], p[b], marker, color=color, ms=11, mec="black", label=label)
        if not len(planned_xyz) and not len(executed_xyz):
            ax.text(0.5, 0.5, "no path", ha="center", va="center", transform=ax.transAxes)
        ax.set_title(name)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        ax.set_aspect("equal", adjustable="datalim")
        ax.grid(True, alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="lower center", ncol=len(handles), frameon=False)
    if title:
        fig.suptitle(title)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


# --------------------------------------------------------------------------------------------
# Summary
# --------------------------------------------------------------------------------------------


def to_jsonable(value: Any) -> Any:
    """``value`` with numpy scalars/arrays, paths, enums and dataclasses turned into JSON types;
    NaN and infinities become None (JSON has no NaN)."""
    if isinstance(value, enum.Enum):
        return value.name
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return to_jsonable(dataclasses.asdict(value))
    if isinstance(value, Mapping):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return to_jsonable(value.tolist())
    if isinstance(value, np.generic):
        return to_jsonable(value.item())
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, (Path, os.PathLike)):
        return os.fspath(value)
    if value is None or isinstance(value, (bool, int, str)):
        return value
    return str(value)


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        if len(value) > 12:
            return f"{len(value)} values"
        return ", ".join(_cell(v) for v in value) or "-"
    if isinstance(value, dict):
        return ", ".join(f"{k}={_cell(v)}" for k, v in value.items()) or "-"
    return str(value).replace("|", "\\|").replace("\n", " ")


def _table(rows: Mapping[str, Any]) -> list[str]:
    lines = ["| | |", "|---|---|"]
    lines += [f"| {key} | {_cell(value)} |" for key, value in rows.items()]
    return lines


def summary_markdown(summary: Mapping[str, Any], title: str = "Episode summary") -> str:
    """The summary as markdown: top-level scalars in one table, each nested dict as a section
    with its own table (lists of dicts become a table with one row per item)."""
    data = to_jsonable(summary)
    lines = [f"# {title}", ""]
    scalars = {k: v for k, v in data.items() if not isinstance(v, dict) and not _records(v)}
    if scalars:
        lines += [*_table(scalars), ""]
    for key, value in data.items():
        if isinstance(value, dict):
            lines += [f"## {key}", "", *(_table(value) if value else ["(none)"]), ""]
        elif _records(value):
            columns = list(dict.fromkeys(c for row in value for c in row))
            lines += [f"## {key}", "", "| " + " | ".join(columns) + " |",
                      "|" + "---|" * len(columns)]  # fmt: skip
            lines += ["| " + " | ".join(_cell(row.get(c)) for c in columns) + " |" for row in value]
            lines.append("")
    return "\n".join(lines)


def _records(value: Any) -> bool:
    return isinstance(value, list) and bool(value) and all(isinstance(v, dict) for v in value)


def write_summary(
    out_dir: str | Path, summary: Mapping[str, Any], title: str = "Episode summary"
) -> tuple[Path, Path]:
    """Write ``summary.json`` (exactly the dict, made JSON-safe by :func:`to_jsonable`) and
    ``summary.md`` (:func:`summary_markdown`) into ``out_dir``; returns both paths.

    Any keys work; the demo and ``t2a-eval-bag`` use e.g. ``success``, ``plan`` (status,
    message, ...), ``timings_s`` (seconds per stage) and ``artifacts`` (file names).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out / "summary.json", out / "summary.md"
    json_path.write_text(json.dumps(to_jsonable(summary), indent=2) + "\n")
    md_path.write_text(summary_markdown(summary, title) + "\n")
    return json_path, md_path


# --------------------------------------------------------------------------------------------
# A bag of an in-process run
# --------------------------------------------------------------------------------------------

COLOR_TOPIC = "/camera/camera/color/image_raw"
DEPTH_TOPIC = "/camera/camera/aligned_depth_to_color/image_raw"
INFO_TOPIC = "/camera/camera/color/camera_info"
JOINTS_TOPIC = "/spot/joint_states"
GOAL_TOPIC = "/t2a/goal_image"
OPTICAL_FRAME = "camera_color_optical_frame"
_SENSOR_QOS = QosProfile(depth=5)  # what t2a_sim and realsense2_camera offer: reliable, volatile
_LATCHED_QOS = QosProfile(durability="transient_local", depth=1)  # track_predictor's goal_image


class SensorBagWriter:
    """A rosbag2 bag of camera frames and joint states written from arrays, without ROS.

    The topics, types, encodings and frames are those of the stack's inputs (realsense2_camera
    colour + aligned 16UC1 depth in mm + camera_info, spot_ros2 ``joint_states``) and the
    track predictor's latched ``/t2a/goal_image``, so ``t2a-play`` replays the bag into the
    nodes and ``t2a-eval-bag`` evaluates it. Stamps are seconds (sim time or epoch); they are
    both the header stamp and the bag's receive time. Use as a context manager.
    """

    def __init__(self, path: str | Path, depth_scale: float = 0.001):
        if not depth_scale > 0:
            raise ValueError(f"depth_scale is {depth_scale}, expected metres per unit > 0")
        self.types = MessageTypes()
        self.writer = BagWriter(path, self.types, custom_data={"recorded_by": "SensorBagWriter"})
        self.depth_scale = float(depth_scale)
        self._store = self.types.typestore
        self._added: set[str] = set()

    def _msg(self, msgtype: str, /, **fields: Any) -> Any:
        return self._store.types[msgtype](**fields)

    def _header(self, stamp_s: float, frame_id: str) -> Any:
        ns = round(stamp_s * 1e9)
        time = self._msg("builtin_interfaces/msg/Time", sec=ns // 10**9, nanosec=ns % 10**9)
        return self._msg("std_msgs/msg/Header", stamp=time, frame_id=frame_id)

    def _image(self, stamp_s: float, array: np.ndarray, encoding: str, frame_id: str) -> Any:
        a = np.ascontiguousarray(array)
        if a.ndim not in (2, 3) or 0 in a.shape:
            raise ValueError(f"image has shape {a.shape}, expected (H, W) or (H, W, C)")
        channels = a.shape[2] if a.ndim == 3 else 1
        return self._msg(
            "sensor_msgs/msg/Image", header=self._header(stamp_s, frame_id),
            height=a.shape[0], width=a.shape[1], encoding=encoding,
            is_bigendian=int(a.dtype.byteorder == ">"), step=a.shape[1] * channels * a.itemsize,
            data=np.frombuffer(a.tobytes(), np.uint8),
        )  # fmt: skip

    def _write(self, topic: str, msgtype: str, stamp_s: float, msg: Any, qos: QosProfile) -> None:
        if topic not in self._added:
            self.writer.add_topic(topic, msgtype, [qos])
            self._added.add(topic)
        data = self._store.serialize_cdr(msg, msgtype)
        self.writer.write(topic, round(stamp_s * 1e9), bytes(data))

    def write_frame(
        self, stamp_s: float, rgb: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics
    ) -> None:
        """One colour frame (``(H, W, 3)`` uint8 RGB), its aligned depth (``(H, W)`` metres,
        NaN or <= 0 = no data) and camera_info, all stamped ``stamp_s``."""
        rgb = _check_rgb("colour frame", rgb)
        depth_m = np.asarray(depth_m, dtype=np.float64)
        if depth_m.shape != rgb.shape[:2]:
            raise ValueError(f"depth is {depth_m.shape}, expected {rgb.shape[:2]} like the colour")
        if (intrinsics.height, intrinsics.width) != rgb.shape[:2]:
            raise ValueError(
                f"intrinsics are for {intrinsics.width}x{intrinsics.height}, the frame is "
                f"{rgb.shape[1]}x{rgb.shape[0]}"
            )
        with np.errstate(invalid="ignore", divide="ignore"):
            units = depth_m / self.depth_scale
        valid = np.isfinite(units) & (units > 0)
        depth16 = np.zeros(depth_m.shape, np.uint16)
        depth16[valid] = np.clip(np.rint(units[valid]), 1, np.iinfo(np.uint16).max)
        self.write_image(COLOR_TOPIC, stamp_s, rgb, "rgb8")
        self.write_image(DEPTH_TOPIC, stamp_s, depth16, "16UC1")
        self.write_camera_info(stamp_s, intrinsics)

    def write_camera_info(
        self, stamp_s: float, intrinsics: Intrinsics, topic: str = INFO_TOPIC
    ) -> None:
        """The ``sensor_msgs/CameraInfo`` of ``intrinsics`` (K, P without baseline, R = I)."""
        K = intrinsics
        info = self._msg(
            "sensor_msgs/msg/CameraInfo", header=self._header(stamp_s, OPTICAL_FRAME),
            height=K.height, width=K.width, distortion_model=K.distortion_model,
            d=np.asarray(K.distortion, np.float64),
            k=np.array([K.fx, 0, K.cx, 0, K.fy, K.cy, 0, 0, 1], np.float64),
            r=np.eye(3).reshape(-1),
            p=np.array([K.fx, 0, K.cx, 0, 0, K.fy, K.cy, 0, 0, 0, 1, 0], np.float64),
            binning_x=0, binning_y=0,
            roi=self._msg("sensor_msgs/msg/RegionOfInterest", x_offset=0, y_offset=0, height=0,
                          width=0, do_rectify=False),
        )  # fmt: skip
        self._write(topic, "sensor_msgs/msg/CameraInfo", stamp_s, info, _SENSOR_QOS)

    def write_image(
        self,
        topic: str,
        stamp_s: float,
        array: np.ndarray,
        encoding: str,
        frame_id: str = OPTICAL_FRAME,
    ) -> None:
        """Any ``sensor_msgs/Image`` as it is: ``array`` must already be in ``encoding``'s layout
        (e.g. ``(H, W)`` uint16 for ``16UC1``); nothing is converted or checked beyond the shape."""
        msg = self._image(stamp_s, array, encoding, frame_id)
        self._write(topic, "sensor_msgs/msg/Image", stamp_s, msg, _SENSOR_QOS)

    def write_joints(
        self, stamp_s: float, names: Sequence[str], position: np.ndarray, topic: str = JOINTS_TOPIC
    ) -> None:
        """One ``sensor_msgs/JointState`` with ``names`` and their positions (rad or m)."""
        position = np.asarray(position, dtype=np.float64).reshape(-1)
        if len(names) != len(position):
            raise ValueError(f"{len(names)} joint names but {len(position)} positions")
        msg = self._msg(
            "sensor_msgs/msg/JointState", header=self._header(stamp_s, ""), name=list(names),
            position=position, velocity=np.zeros(0), effort=np.zeros(0),
        )  # fmt: skip
        self._write(topic, "sensor_msgs/msg/JointState", stamp_s, msg, _SENSOR_QOS)

    def write_goal(self, stamp_s: float, rgb: np.ndarray) -> None:
        """The goal image on ``/t2a/goal_image`` (latched, as the track predictor publishes it)."""
        msg = self._image(stamp_s, _check_rgb("goal image", rgb), "rgb8", "")
        self._write(GOAL_TOPIC, "sensor_msgs/msg/Image", stamp_s, msg, _LATCHED_QOS)

    def close(self) -> None:
        """Finish the bag (it is unreadable until closed)."""
        self.writer.close()

    def __enter__(self) -> SensorBagWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
