"""Lift query pixels P0 to 3D with the aligned depth image, and local surface normals."""

from __future__ import annotations

import dataclasses
import enum

import numpy as np

from t2a_common.core.geometry import Intrinsics
from t2a_planning.core.config import PlannerConfig


class DepthFlag(enum.IntEnum):
    """Why a point did or did not get a depth."""

    OK = 0
    OUTSIDE_IMAGE = 1  # pixel not finite or outside the depth image
    HOLE = 2  # too few valid depth pixels in the window (NaN, zero, out of range)
    EDGE = 3  # the window straddles a depth discontinuity
    OUT_OF_REACH = 4  # lifted farther from the arm than anything it can move (planner reach)


@dataclasses.dataclass(frozen=True)
class LiftedPoints:
    """P0 in 3D, in the camera optical frame; invalid points hold NaN."""

    points_cam: np.ndarray  # (N, 3) m
    depth_m: np.ndarray  # (N,) m, z along the optical axis
    valid: np.ndarray  # (N,) bool
    flags: np.ndarray  # (N,) DepthFlag values


def _window(depth: np.ndarray, rows: np.ndarray, cols: np.ndarray, r: int, stride: int = 1):
    """Depth values in the (2r+1)^2 window (subsampled by ``stride``) around each pixel."""
    offsets = np.arange(-r, r + 1, stride)
    padded = np.pad(depth, r, constant_values=np.nan)
    rr = rows[:, None, None] + r + offsets[None, :, None]  # (N, k, 1)
    cc = cols[:, None, None] + r + offsets[None, None, :]  # (N, 1, k)
    return padded[rr, cc].reshape(len(rows), -1)  # (N, k*k)


MM_PER_M = 1000.0  # integer depth images are RealSense 16UC1: millimetres, 0 = no data


def clean_depth(depth: np.ndarray, config: PlannerConfig) -> np.ndarray:
    """Float depth in m with NaN for holes, zeros and out-of-range values.

    Float images are taken as metres, integer images (16UC1) as millimetres.
    """
    d = np.asarray(depth)
    d = d / MM_PER_M if np.issubdtype(d.dtype, np.integer) else d.astype(float)
    with np.errstate(invalid="ignore"):
        bad = ~np.isfinite(d) | (d < config.min_depth_m) | (d > config.max_depth_m) | (d <= 0.0)
    return np.where(bad, np.nan, d)


def lift_points(
    points_px: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics,
    config: PlannerConfig,
) -> LiftedPoints:
    """Back-project (N, 2) pixels with the median depth of a small window around each.

    ``depth`` is (height, width) aligned to the colour image of ``intrinsics``: float metres, or
    integer millimetres as the RealSense publishes it (NaN or 0 = no data). A point is rejected
    when the window is mostly holes or straddles a depth edge (the median would then mix two
    surfaces, or belong to the wrong one).
    """
    uv = np.asarray(points_px, dtype=float)
    d = clean_depth(depth, config)
    h, w = d.shape
    n = len(uv)
    flags = np.full(n, DepthFlag.OK, dtype=np.int8)

    finite = np.all(np.isfinite(uv), axis=1)
    cols = np.rint(np.where(finite, uv[:, 0], -1.0)).astype(int)
    rows = np.rint(np.where(finite, uv[:, 1], -1.0)).astype(int)
    inside = finite & (cols >= 0) & (cols < w) & (rows >= 0) & (rows < h)
    flags[~inside] = DepthFlag.OUTSIDE_IMAGE
    cols = np.where(inside, cols, 0)
    rows = np.where(inside, rows, 0)

    r = config.depth_window_px
    win = np.sort(_window(d, rows, cols, r), axis=1)  # (N, k*k), NaN sorted last
    count = np.sum(np.isfinite(win), axis=1)  # (N,)
    last = np.maximum(count - 1, 0)

    def at(index: np.ndarray) -> np.ndarray:
        return np.take_along_axis(win, index[:, None], axis=1)[:, 0]

    median = 0.5 * (at(last // 2) + at((last + 1) // 2))
    spread = at(np.ceil(0.9 * last).astype(int)) - at(np.floor(0.1 * last).astype(int))

    hole = inside & (count < config.min_valid_depth_fraction * win.shape[1])
    flags[hole] = DepthFlag.HOLE
    with np.errstate(invalid="ignore"):
        edge = inside & ~hole & ~(spread <= config.depth_edge_ratio * median)
    flags[edge] = DepthFlag.EDGE

    valid = flags == DepthFlag.OK
    depth_m = np.where(valid, median, np.nan)
    points = intrinsics.backproject(np.where(valid[:, None], uv, 0.0), depth_m)  # (N, 3)
    return LiftedPoints(points_cam=points, depth_m=depth_m, valid=valid, flags=flags)


def lift_with_point_depths(
    points_px: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, config: PlannerConfig
) -> LiftedPoints:
    """Back-project (N, 2) pixels with given (N,) depths (e.g. ``PointTracks.depth_m``)."""
    uv = np.asarray(points_px, dtype=float)
    z = np.asarray(depth_m, dtype=float)
    with np.errstate(invalid="ignore"):
        ok = (z >= config.min_depth_m) & (z <= config.max_depth_m) & (z > 0)
    finite = np.all(np.isfinite(uv), axis=1)
    valid = finite & ok
    flags = np.where(valid, DepthFlag.OK, DepthFlag.HOLE).astype(np.int8)
    flags[~finite] = DepthFlag.OUTSIDE_IMAGE
    z = np.where(valid, z, np.nan)
    points = intrinsics.backproject(np.where(valid[:, None], uv, 0.0), z)
    return LiftedPoints(points_cam=points, depth_m=z, valid=valid, flags=flags)


def surface_normal(
    depth: np.ndarray, intrinsics: Intrinsics, point_cam: np.ndarray, config: PlannerConfig
) -> np.ndarray | None:
    """Unit normal (3,) of the surface seen around ``point_cam``, pointing towards the camera.

    Fits a plane to the depth pixels in a window around the point's projection, keeping only
    pixels near the point's depth so that a background behind the object does not tilt the fit.
    Returns None when the window has too little valid depth.
    """
    p = np.asarray(point_cam, dtype=float)
    if not (np.all(np.isfinite(p)) and p[2] > 0):
        return None
    d = clean_depth(depth, config)
    uv = intrinsics.project(p)
    col, row = int(np.rint(uv[0])), int(np.rint(uv[1]))
    h, w = d.shape
    if not (0 <= col < w and 0 <= row < h):
        return None
    r = config.normal_window_px
    stride = max(1, r // 6)  # about 13x13 samples whatever the window
    offsets = np.arange(-r, r + 1, stride)
    grid_r, grid_c = np.meshgrid(row + offsets, col + offsets, indexing="ij")
    z = _window(d, np.array([row]), np.array([col]), r, stride)[0]  # (k*k,)
    near = np.isfinite(z) & (np.abs(z - p[2]) < max(0.05 * p[2], 0.02))
    if np.sum(near) < 6:
        return None
    uv_s = np.stack([grid_c.ravel(), grid_r.ravel()], axis=1)[near].astype(float)
    pts = intrinsics.backproject(uv_s, z[near])  # (K, 3)
    centred = pts - pts.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    if s[1] < 1e-9:  # a line of pixels: no plane
        return None
    n = vt[2]
    if n @ (-pts.mean(axis=0)) < 0:
        n = -n
    return n / np.linalg.norm(n)
