"""Synthetic RGB-D scenes with a known rigid object motion, for tests and benchmarks.

A box (or a thin board) at about 1 m in front of a RealSense-like camera, a static background
plane behind it, a ray-cast depth image of the first frame, query points P0 on both, and their
tracks under a rigid motion of the object, with optional pixel noise and outlier tracks. No
simulator involved: everything is closed-form ray casting, so ground truth is exact.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from t2a_common.core.geometry import Intrinsics, make_transform, transform_points
from t2a_common.core.se3 import so3_exp


def realsense_intrinsics() -> Intrinsics:
    """Colour intrinsics of a RealSense D435 at 640x480 (typical factory values)."""
    return Intrinsics(width=640, height=480, fx=615.0, fy=615.0, cx=319.5, cy=239.5)


def default_T_body_cam() -> np.ndarray:
    """Camera on the front of the body, looking forward and pitched 20 degrees down."""
    # Optical frame (x right, y down, z forward) expressed in the body frame (x fwd, y left, z up).
    R_level = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    pitch = np.deg2rad(20.0)
    R_pitch = np.array(
        [[np.cos(pitch), 0.0, np.sin(pitch)], [0.0, 1.0, 0.0], [-np.sin(pitch), 0.0, np.cos(pitch)]]
    )
    return make_transform(R_pitch @ R_level, [0.35, 0.0, 0.45])


def default_T_body_tool() -> np.ndarray:
    """Hand in front of the body, gripper pointing forward (near Spot's ready pose)."""
    return make_transform(np.eye(3), [0.55, 0.0, 0.35])


@dataclasses.dataclass(frozen=True)
class Box:
    """An oriented box: ``T_cam_box`` places its centre, ``size`` holds full side lengths (m)."""

    T_cam_box: np.ndarray  # (4, 4)
    size: tuple[float, float, float]


@dataclasses.dataclass(frozen=True)
class Plane:
    """The plane through ``point`` with unit ``normal`` (camera frame)."""

    point: np.ndarray  # (3,) m
    normal: np.ndarray  # (3,)


def pixel_rays(intrinsics: Intrinsics, uv: np.ndarray) -> np.ndarray:
    """(K, 2) pixels -> (K, 3) rays with z = 1, so a hit at ray parameter s has depth s."""
    return np.stack(
        [
            (uv[:, 0] - intrinsics.cx) / intrinsics.fx,
            (uv[:, 1] - intrinsics.cy) / intrinsics.fy,
            np.ones(len(uv)),
        ],
        axis=1,
    )


def ray_cast(rays: np.ndarray, box: Box, plane: Plane | None) -> tuple[np.ndarray, np.ndarray]:
    """Depth (K,) of the first hit along each (K, 3) ray (NaN = none) and whether it is the box."""
    R, c = box.T_cam_box[:3, :3], box.T_cam_box[:3, 3]
    half = 0.5 * np.asarray(box.size)
    origin = -R.T @ c  # camera centre in the box frame
    d = rays @ R  # (K, 3) directions in the box frame
    t_near = np.full(len(rays), -np.inf)
    t_far = np.full(len(rays), np.inf)
    with np.errstate(divide="ignore", invalid="ignore"):
        for a in range(3):  # slab test, one box axis at a time
            inv = 1.0 / d[:, a]
            t1 = (-half[a] - origin[a]) * inv
            t2 = (half[a] - origin[a]) * inv
            t_near = np.maximum(t_near, np.minimum(t1, t2))
            t_far = np.minimum(t_far, np.maximum(t1, t2))
    hit_box = (t_far >= t_near) & (t_near > 0)
    depth = np.where(hit_box, t_near, np.inf)
    if plane is not None:
        with np.errstate(divide="ignore", invalid="ignore"):
            s = (plane.normal @ plane.point) / (rays @ plane.normal)
        s = np.where(s > 0, s, np.inf)
        hit_box &= depth <= s
        depth = np.minimum(depth, s)
    return np.where(np.isfinite(depth), depth, np.nan), hit_box


def render_depth(
    intrinsics: Intrinsics, box: Box, plane: Plane | None
) -> tuple[np.ndarray, np.ndarray]:
    """Depth image (height, width) in m (NaN = nothing) and the box mask, by ray casting."""
    v, u = np.mgrid[0 : intrinsics.height, 0 : intrinsics.width]
    uv = np.stack([u.ravel(), v.ravel()], axis=1).astype(float)
    depth, on_box = ray_cast(pixel_rays(intrinsics, uv), box, plane)
    shape = (intrinsics.height, intrinsics.width)
    return depth.reshape(shape), on_box.reshape(shape)


def _about(pivot: np.ndarray, rotvec: np.ndarray, translation: np.ndarray) -> np.ndarray:
    """Rotation by ``rotvec`` about ``pivot``, then a translation (4, 4)."""
    R = so3_exp(rotvec)
    return make_transform(R, pivot - R @ pivot + translation)


def smooth_motion(
    rng: np.random.Generator,
    horizon: int,
    pivot: np.ndarray,
    max_rotation_rad: float,
    max_translation_m: float,
) -> np.ndarray:
    """(H+1, 4, 4) T_cam_obj_t easing from rest to one random rigid motion about ``pivot``."""
    axis = rng.normal(size=3)
    rotvec = axis / np.linalg.norm(axis) * rng.uniform(0.3, 1.0) * max_rotation_rad
    direction = rng.normal(size=3)
    shift = direction / np.linalg.norm(direction) * rng.uniform(0.3, 1.0) * max_translation_m
    s = np.linspace(0.0, 1.0, horizon + 1)
    s = s * s * (3.0 - 2.0 * s)  # smoothstep: starts and stops at rest
    return np.stack([_about(pivot, si * rotvec, si * shift) for si in s])


def random_motion(
    rng: np.random.Generator,
    horizon: int,
    pivot: np.ndarray,
    max_rotation_rad: float,
    max_translation_m: float,
) -> np.ndarray:
    """(H+1, 4, 4) independent random rigid motions per step (identity at step 0)."""
    out = [np.eye(4)]
    for _ in range(horizon):
        axis = rng.normal(size=3)
        rotvec = axis / np.linalg.norm(axis) * rng.uniform(0.0, max_rotation_rad)
        shift = rng.uniform(-1.0, 1.0, size=3) * max_translation_m
        out.append(_about(pivot, rotvec, shift))
    return np.stack(out)


def project_tracks(
    intrinsics: Intrinsics, T_cam_obj: np.ndarray, points_cam: np.ndarray, on_object: np.ndarray
) -> np.ndarray:
    """(H+1, N, 2) exact tracks: object points follow ``T_cam_obj``, the others stay put."""
    moved = np.stack([transform_points(T, points_cam) for T in T_cam_obj])  # (H+1, N, 3)
    moved[:, ~on_object] = points_cam[~on_object]
    return intrinsics.project(moved)


def corrupt_tracks(
    rng: np.random.Generator, tracks: np.ndarray, noise_px: float, outlier_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Add Gaussian noise to steps 1..H and replace some tracks by random wandering ones.

    Returns the (H+1, N, 2) tracks and the (N,) outlier mask. Step 0 (P0, the query points)
    stays exact, as it does for the track model.
    """
    out = tracks.copy()
    H, N = tracks.shape[0] - 1, tracks.shape[1]
    out[1:] += rng.normal(scale=noise_px, size=(H, N, 2))
    outlier = np.zeros(N, dtype=bool)
    outlier[rng.choice(N, round(outlier_fraction * N), replace=False)] = True
    k = int(outlier.sum())
    # A random drift plus a random walk: wrong but plausible-looking motion, tens of pixels.
    drift = rng.uniform(-12.0, 12.0, size=(1, k, 2))
    walk = np.cumsum(drift + rng.normal(scale=6.0, size=(H, k, 2)), axis=0)
    out[1:, outlier] = tracks[0, outlier] + walk
    return out, outlier


@dataclasses.dataclass(frozen=True)
class SyntheticScene:
    """One synthetic planning problem with its ground truth."""

    intrinsics: Intrinsics
    depth: np.ndarray | None  # (height, width) m, NaN = no data; None unless rendered
    box: Box
    points_px: np.ndarray  # (N, 2) P0
    points_cam: np.ndarray  # (N, 3) exact 3D of P0, camera frame
    on_object: np.ndarray  # (N,) bool
    outlier: np.ndarray  # (N,) bool, tracks replaced by random ones
    T_cam_obj: np.ndarray  # (H+1, 4, 4) true object motion
    tracks_px: np.ndarray  # (H+1, N, 2) observed tracks
    T_body_cam: np.ndarray  # (4, 4)
    T_body_tool: np.ndarray  # (4, 4)


def make_scene(
    seed: int = 0,
    *,
    num_points: int = 400,
    horizon: int = 8,
    object_fraction: float = 0.6,
    noise_px: float = 0.0,
    outlier_fraction: float = 0.0,
    shape: str = "box",
    smooth: bool = True,
    max_rotation_rad: float = 0.6,
    max_translation_m: float = 0.15,
    depth_noise_m: float = 0.0,
    hole_fraction: float = 0.0,
    with_depth: bool = True,
) -> SyntheticScene:
    """A random scene: a box (``shape="box"``) or thin board (``"plane"``) at about 1 m.

    ``object_fraction`` of the points lie on the object, the rest on the background plane; the
    object moves by a smooth (or, with ``smooth=False``, per-step random) rigid motion about its
    centre. ``hole_fraction`` blanks that fraction of the depth image in small patches (half NaN,
    half zero, like a RealSense); ``depth_noise_m`` adds Gaussian depth noise.
    """
    if shape not in ("box", "plane"):
        raise ValueError(f"shape must be 'box' or 'plane', got {shape!r}")
    rng = np.random.default_rng(seed)
    intr = realsense_intrinsics()
    centre = np.array([rng.uniform(-0.1, 0.1), rng.uniform(-0.05, 0.08), rng.uniform(0.9, 1.1)])
    if shape == "box":
        size = (rng.uniform(0.12, 0.25), rng.uniform(0.08, 0.2), rng.uniform(0.08, 0.2))
        tilt = rng.normal(size=3) * 0.5
    else:
        size = (rng.uniform(0.18, 0.3), rng.uniform(0.12, 0.2), 0.005)
        tilt = rng.normal(size=3) * 0.25
    box = Box(make_transform(so3_exp(tilt), centre), size)
    normal = so3_exp(rng.normal(size=3) * 0.2) @ np.array([0.0, 0.0, -1.0])
    plane = Plane(point=np.array([0.0, 0.0, rng.uniform(1.45, 1.6)]), normal=normal)
    if with_depth:
        depth, on_box = render_depth(intr, box, plane)
        pixels = np.argwhere(np.isfinite(depth))[:, ::-1].astype(float)  # (K, 2) as (u, v)
        on_box = on_box[np.isfinite(depth)]
    else:  # only the query points matter: cast a coarser grid of candidate pixels
        depth = None
        v, u = np.mgrid[0 : intr.height : 2, 0 : intr.width : 2]
        pixels = np.stack([u.ravel(), v.ravel()], axis=1).astype(float)
        z, on_box = ray_cast(pixel_rays(intr, pixels), box, plane)
        pixels, on_box = pixels[np.isfinite(z)], on_box[np.isfinite(z)]

    n_obj = round(object_fraction * num_points)
    obj_px, bg_px = pixels[on_box], pixels[~on_box]
    pick_obj = rng.choice(len(obj_px), n_obj, replace=n_obj > len(obj_px))
    pick_bg = rng.choice(len(bg_px), num_points - n_obj, replace=num_points - n_obj > len(bg_px))
    points_px = np.concatenate([obj_px[pick_obj], bg_px[pick_bg]])
    on_object = np.r_[np.ones(n_obj, dtype=bool), np.zeros(num_points - n_obj, dtype=bool)]
    z, _ = ray_cast(pixel_rays(intr, points_px), box, plane)
    points_cam = intr.backproject(points_px, z)

    motion = smooth_motion if smooth else random_motion
    T_cam_obj = motion(rng, horizon, centre, max_rotation_rad, max_translation_m)
    exact = project_tracks(intr, T_cam_obj, points_cam, on_object)
    tracks, outlier = corrupt_tracks(rng, exact, noise_px, outlier_fraction)

    if depth is not None and depth_noise_m > 0:
        depth = depth + rng.normal(scale=depth_noise_m, size=depth.shape)
    if depth is not None and hole_fraction > 0:
        depth = punch_holes(rng, depth, hole_fraction)
    return SyntheticScene(
        intrinsics=intr,
        depth=depth,
        box=box,
        points_px=points_px,
        points_cam=points_cam,
        on_object=on_object,
        outlier=outlier,
        T_cam_obj=T_cam_obj,
        tracks_px=tracks,
        T_body_cam=default_T_body_cam(),
        T_body_tool=default_T_body_tool(),
    )


def punch_holes(rng: np.random.Generator, depth: np.ndarray, fraction: float) -> np.ndarray:
    """Blank about ``fraction`` of the image in 9x9 patches, half as NaN and half as 0."""
    out = depth.copy()
    h, w = out.shape
    patch = 9
    count = int(fraction * h * w / patch**2)
    rows = rng.integers(0, h - patch, size=count)
    cols = rng.integers(0, w - patch, size=count)
    for k, (r, c) in enumerate(zip(rows, cols)):
        out[r : r + patch, c : c + patch] = np.nan if k % 2 else 0.0
    return out
