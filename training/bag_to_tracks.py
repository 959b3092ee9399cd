"""Bags -> folders of frames for the track model's user-video path (``training/track_data.py``).

Each bag, or each ``--segments START:END`` window of it (seconds from the bag's first message,
as ``t2a-play --start-offset`` counts them), becomes one folder of numbered frames that
``track_data.find_videos`` picks up as a video, next to a ``t2a_frames.json`` that says where the
frames came from::

    OUT/<bag>/000000.png ...            one whole bag
    OUT/<bag>_<i>/000000.png ...        segment i of a bag (several --segments)
    OUT/<...>/t2a_frames.json           format, source bag, topic, clock, window (s), fps,
                                        frame count, size, first frame's time, intrinsics

The colour stream is resampled to a constant ``--fps`` by sample-and-hold (a dropped frame
repeats the previous one), because a folder of frames has no time stamps: the dataset assumes
``frames_fps`` frames per second for it, so the default ``--fps`` is ``TrackDataConfig``'s
``frames_fps`` and another rate must be passed to the trainer as ``--frames-fps``. The labeller
(``--labeler lk``, or CoTracker) then gives the frames tracks when ``train_tracks.py --videos OUT``
first reads them (or ``--label-only``), and caches them; nothing is labelled here.

The dataset cuts every folder into clips of ``clip_seconds`` (4.5 s by default), the paper's
unit of one manipulation: choose segments that each hold one manipulation, from just before the
object moves to after the arm has left the view (the last frame is the clip's goal image), and
train with ``--clip-seconds`` at least the longest segment. A folder that exists already (with
its json) is left as it is, so adding bags to an output directory converts only the new ones.
Run as ``python training/bag_to_tracks.py BAG [BAG ...] --out DIR``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import shutil
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from t2a_bringup.core.bag import BagError
from t2a_bringup.core.bag_frames import CLOCKS, BagFrames, BagTopics, sample_and_hold
from training.track_data import TrackDataConfig

FORMAT = "t2a_bag_frames/1"
META_FILE = "t2a_frames.json"
IMAGE_FORMATS = ("png", "jpg")


@dataclasses.dataclass(frozen=True)
class Segment:
    """A time window of a bag: seconds from its first message; ``end_s`` None = to the end."""

    start_s: float = 0.0
    end_s: float | None = None

    def describe(self) -> str:
        return f"{self.start_s:g}:{'' if self.end_s is None else f'{self.end_s:g}'}"


def parse_segment(text: str) -> Segment:
    """``"START:END"`` (either may be empty: ``"5:"``, ``":12.5"``) -> :class:`Segment`."""
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = float(parts[0]) if parts[0].strip() else 0.0
        end = float(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise ValueError(
            f"segment {text!r} is not START:END in seconds from the bag's first message "
            "(e.g. 3.5:12, or 20: for the rest of the bag)"
        ) from None
    if start < 0 or (end is not None and end <= start):
        raise ValueError(f"segment {text!r} needs 0 <= START < END")
    return Segment(start, end)


def folder_name(bag: Path, index: int, count: int) -> str:
    """Output folder of segment ``index`` of ``count`` of ``bag``."""
    return bag.name if count == 1 else f"{bag.name}_{index}"


def write_frames(
    frames: BagFrames,
    segment: Segment,
    folder: Path,
    fps: float,
    image_format: str = "png",
    max_side: int = 0,
) -> dict[str, Any]:
    """Write one segment's colour frames, resampled to ``fps``, into a new ``folder``; returns
    its metadata (also written as ``t2a_frames.json``, last: its presence marks the folder done).

    The frames go to a hidden temporary folder first (``track_data`` skips dot-folders) that is
    renamed when complete, so an interrupted conversion never leaves a half video behind.
    """
    if image_format not in IMAGE_FORMATS:
        raise ValueError(f"image format {image_format!r} is not one of {IMAGE_FORMATS}")
    tmp = folder.parent / f".{folder.name}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    stream = frames.color_frames(segment.start_s, segment.end_s)
    first = next(stream, None)
    if first is None:
        tmp.rmdir()
        raise BagError(
            f"no colour frame on {frames.topics.color} in {frames.path} within "
            f"{segment.describe()} s"
        )
    grid = (first.time_s + k / fps for k in itertools.count())
    count, size, scale = 0, (0, 0), 1.0
    params = [cv2.IMWRITE_JPEG_QUALITY, 95] if image_format == "jpg" else []
    for _, frame in sample_and_hold(itertools.chain([first], stream), grid):
        rgb = frame.rgb
        h, w = rgb.shape[:2]
        scale = min(1.0, max_side / max(h, w)) if max_side > 0 else 1.0
        if scale < 1.0:
            rgb = cv2.resize(
                rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA
            )
        size = (rgb.shape[1], rgb.shape[0])
        path = tmp / f"{count:06d}.{image_format}"
        if not cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), params):
            raise OSError(f"could not write {path}")
        count += 1
    intrinsics = None
    if frames.has(frames.topics.info):
        intr = frames.intrinsics()
        if scale < 1.0:
            intr = intr.scaled(*size)
        intrinsics = {k: getattr(intr, k) for k in ("width", "height", "fx", "fy", "cx", "cy")}
    meta = {
        "format": FORMAT,
        "source_bag": str(frames.path.resolve()),
        "topic": frames.topics.color,
        "clock": frames.clock,
        "segment_s": [segment.start_s, segment.end_s],
        "fps": fps,
        "frames": count,
        "duration_s": (count - 1) / fps,
        "width": size[0],
        "height": size[1],
        "first_time_s": first.time_s,
        "intrinsics": intrinsics,
    }
    (tmp / META_FILE).write_text(json.dumps(meta, indent=1))
    tmp.rename(folder)
    return meta


def convert_bag(
    bag: str | Path,
    out: str | Path,
    segments: Sequence[Segment] = (),
    fps: float | None = None,
    topics: BagTopics | None = None,
    clock: str = "header",
    image_format: str = "png",
    max_side: int = 0,
) -> list[tuple[Path, dict[str, Any] | None]]:
    """Convert every segment of ``bag`` (whole bag if none) into folders under ``out``.

    Returns ``(folder, metadata)`` per segment; metadata is None for folders that existed
    already (left untouched).
    """
    fps = TrackDataConfig().frames_fps if fps is None else float(fps)
    if not fps > 0:
        raise ValueError(f"fps must be > 0 frames per second, got {fps}")
    bag, out = Path(bag), Path(out)
    segments = list(segments) or [Segment()]
    results: list[tuple[Path, dict[str, Any] | None]] = []
    with BagFrames(bag, topics, clock) as frames:
        for i, segment in enumerate(segments):
            folder = out / folder_name(bag, i, len(segments))
            if (folder / META_FILE).is_file():
                results.append((folder, None))
                continue
            if folder.exists():
                raise BagError(
                    f"{folder} exists without {META_FILE}: not a finished conversion; remove it"
                )
            results.append(
                (folder, write_frames(frames, segment, folder, fps, image_format, max_side))
            )
    return results


def main(argv: list[str] | None = None) -> int:
    """Convert bags to frame folders; returns the exit status."""
    data_cfg = TrackDataConfig()
    p = argparse.ArgumentParser(
        description="Turn the colour stream of rosbag2 bags (t2a-record) into folders of frames "
        "that train_tracks.py --videos reads as user videos (labelled with point tracks there).",
    )
    p.add_argument("bags", nargs="+", help="rosbag2 folders")
    p.add_argument("--out", required=True, help="output directory (one folder per segment)")
    p.add_argument(
        "--segments",
        nargs="+",
        default=[],
        metavar="START:END",
        help="time windows in s from the bag's first message, each its own video (applied to "
        "every bag given; e.g. 3:12.5 20:); default: the whole bag",
    )
    p.add_argument(
        "--fps",
        type=float,
        default=data_cfg.frames_fps,
        help=f"frame rate of the folders (default: {data_cfg.frames_fps:g}, the frame rate the "
        "track dataset assumes for a folder of frames; otherwise pass it as --frames-fps to "
        "train_tracks.py)",
    )
    p.add_argument("--image-format", choices=IMAGE_FORMATS, default="png", help="frame files")
    p.add_argument(
        "--max-side", type=int, default=0, help="shrink frames to this longest side (px); 0 = keep"
    )
    p.add_argument("--color-topic", default=BagTopics.color, help="colour image topic")
    p.add_argument("--info-topic", default=BagTopics.info, help="colour camera_info topic")
    p.add_argument(
        "--clock",
        choices=CLOCKS,
        default="header",
        help="time base of the resampling: header stamps or the recorder's receive times",
    )
    args = p.parse_args(argv)
    try:
        segments = [parse_segment(s) for s in args.segments]
    except ValueError as exc:
        p.error(str(exc))
    if args.fps <= 0 or args.max_side < 0:
        p.error("--fps must be > 0 and --max-side >= 0")
    topics = BagTopics(color=args.color_topic, info=args.info_topic)
    longest, written = 0.0, 0
    for bag in args.bags:
        try:
            results = convert_bag(
                bag, args.out, segments, args.fps, topics, args.clock, args.image_format,
                args.max_side,
            )  # fmt: skip
        except (BagError, ValueError, OSError) as exc:
            print(f"error: {bag}: {exc}", file=sys.stderr)
            return 1
        for folder, meta in results:
            if meta is None:
                print(f"{folder}: exists, kept")
                continue
            written += 1
            longest = max(longest, meta["duration_s"])
            note = ""
            if meta["duration_s"] < data_cfg.min_clip_seconds:
                note = (
                    f" (shorter than the dataset's min_clip_seconds {data_cfg.min_clip_seconds:g} "
                    "s: it would be skipped)"
                )
            print(
                f"{folder}: {meta['frames']} frames, {meta['duration_s']:.2f} s at "
                f"{meta['fps']:g} fps, {meta['width']}x{meta['height']}{note}"
            )
    fps_flag = "" if args.fps == data_cfg.frames_fps else f" --frames-fps {args.fps:g}"
    clip_flag = (
        f" --clip-seconds {np.ceil(longest * 10) / 10:g}" if longest > data_cfg.clip_seconds else ""
    )
    print(
        f"{written} folder(s) written. Train on them (labelled on first use, then cached): "
        f"python training/train_tracks.py --videos {args.out}{fps_flag}{clip_flag} --out RUN ..."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
