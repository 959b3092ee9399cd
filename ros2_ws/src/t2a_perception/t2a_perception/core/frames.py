"""Camera-frame bookkeeping for the perception node: colour/depth pairing, depth at points, overlay.

message_filters is not installable from PyPI, so colour and aligned depth are paired here by
stamp: the newest colour image that has a depth image within ``slop_s`` of it.
"""

from __future__ import annotations

import collections
from typing import Generic, TypeVar

import cv2
import numpy as np

T = TypeVar("T")


class StampPairer(Generic[T]):
    """Keeps the last few colour and depth items and pairs them by stamp (seconds)."""

    def __init__(self, slop_s: float = 0.02, history: int = 10) -> None:
        if slop_s < 0 or history < 1:
            raise ValueError(f"need slop_s >= 0 and history >= 1, got {slop_s}, {history}")
        self.slop_s = slop_s
        self._color: collections.deque[tuple[float, float, T]] = collections.deque(maxlen=history)
        self._depth: collections.deque[tuple[float, float, T]] = collections.deque(maxlen=history)

    def add_color(self, stamp_s: float, received_s: float, item: T) -> None:
        self._color.append((stamp_s, received_s, item))

    def add_depth(self, stamp_s: float, received_s: float, item: T) -> None:
        self._depth.append((stamp_s, received_s, item))

    def latest(self) -> tuple[T, T, float, float] | None:
        """(colour, depth, stamp of the colour, when the later of the two arrived) or None."""
        for c_stamp, c_recv, color in reversed(self._color):
            best = min(self._depth, key=lambda d: abs(d[0] - c_stamp), default=None)
            if best is not None and abs(best[0] - c_stamp) <= self.slop_s:
                return color, best[2], c_stamp, max(c_recv, best[1])
        return None

    def counts(self) -> tuple[int, int]:
        """How many colour and depth items are buffered (for error messages)."""
        return len(self._color), len(self._depth)


def depth_at_points(depth_m: np.ndarray, points_px: np.ndarray, radius: int = 1) -> np.ndarray:
    """(N,) median depth (m) in a (2r+1)^2 window around each pixel; NaN where none is valid.

    ``depth_m`` is (H, W) with NaN for holes. Points outside the image get NaN.
    """
    h, w = depth_m.shape
    cols = np.round(points_px[:, 0]).astype(int)
    rows = np.round(points_px[:, 1]).astype(int)
    inside = (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    offsets = np.arange(-radius, radius + 1)
    rr = np.clip(rows[:, None, None] + offsets[None, :, None], 0, h - 1)  # (N, k, 1)
    cc = np.clip(cols[:, None, None] + offsets[None, None, :], 0, w - 1)  # (N, 1, k)
    window = depth_m[rr, cc].reshape(len(points_px), -1)  # (N, k*k)
    out = np.full(len(points_px), np.nan, np.float32)
    has = inside & np.isfinite(window).any(axis=1)
    if has.any():
        out[has] = np.nanmedian(window[has], axis=1)
    return out


def draw_tracks(
    rgb: np.ndarray, tracks_px: np.ndarray, confidence: np.ndarray | None = None, stride: int = 1
) -> np.ndarray:
    """Tracks (H+1, N, 2) drawn on a copy of ``rgb``: a line per point coloured from blue (t=0)
    to red (t=H), a dot at P0; points with confidence < 0.5 are drawn thin."""
    out = np.ascontiguousarray(rgb.copy())
    H1 = tracks_px.shape[0]
    for n in range(0, tracks_px.shape[1], stride):
        thick = 1 if confidence is not None and confidence[n] < 0.5 else 2
        pts = np.round(tracks_px[:, n]).astype(np.int32)
        for t in range(1, H1):
            a = t / max(H1 - 1, 1)
            color = (int(255 * a), 64, int(255 * (1 - a)))
            a_pt, b_pt = tuple(pts[t - 1].tolist()), tuple(pts[t].tolist())
            cv2.line(out, a_pt, b_pt, color, thick, cv2.LINE_AA)
        cv2.circle(out, tuple(pts[0].tolist()), 2, (255, 255, 255), -1, cv2.LINE_AA)
    return out
