"""Exact ground-truth point tracks: points on visible surfaces, glued to their bodies, projected.

In the first frame, pixels are picked on the moved part of the object and on everything else
(background, other objects, the robot), lifted to 3D with the rendered depth and attached to
the body each one lies on. At any later state the points are moved with their bodies and
projected through the camera; a point is visible where the rendered depth agrees with its own
depth (nothing in front of it). These are the "tracks" Track2Act learns to predict.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from t2a_common.core.geometry import Intrinsics, invert, transform_points


@dataclasses.dataclass(frozen=True)
class TrackPoints:
    """N points attached to bodies of a model."""

    body: np.ndarray  # (N,) int body id each point is glued to
    local: np.ndarray  # (N, 3) point in its body's frame (m)
    on_object: np.ndarray  # (N,) bool: on the part the task moves
    uv0: np.ndarray  # (N, 2) pixel the point was sampled at (first frame)


def sample_points(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    geom_ids: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    part_body: int,
    n: int,
    object_fraction: float,
    rng: np.random.Generator,
) -> TrackPoints:
    """Pick ``n`` visible pixels (``object_fraction`` of them on body ``part_body``) and glue them.

    ``geom_ids`` and ``depth`` are the segmentation and depth renders of the current state.
    Pixels at depth discontinuities (a 3x3 neighbourhood spanning more than 2 cm) are skipped:
    their depth belongs to neither surface exactly.
    """
    H, W = depth.shape
    valid = (depth > 0) & (geom_ids >= 0)
    pad = np.pad(depth, 1, mode="edge")
    windows = np.stack([pad[i : i + H, j : j + W] for i in range(3) for j in range(3)])
    valid &= (windows.max(0) - windows.min(0)) < 0.02
    body_of_pixel = np.where(geom_ids >= 0, model.geom_bodyid[np.maximum(geom_ids, 0)], -1)
    on_part = valid & (body_of_pixel == part_body)
    rest = valid & ~on_part

    n_obj = min(round(n * object_fraction), int(on_part.sum()))
    picks = []
    for mask, k in ((on_part, n_obj), (rest, n - n_obj)):
        idx = np.flatnonzero(mask)
        k = min(k, idx.size)
        picks.append(rng.choice(idx, size=k, replace=False) if k else np.zeros(0, int))
    flat = np.concatenate(picks)
    v, u = np.divmod(flat, W)
    uv = np.stack([u, v], axis=-1).astype(np.float64)
    p_cam = intrinsics.backproject(uv, depth[v, u].astype(np.float64))  # (N, 3)
    p_body = transform_points(T_body_cam, p_cam)
    bodies = body_of_pixel[v, u]
    local = np.empty_like(p_body)
    for b in np.unique(bodies):
        sel = bodies == b
        T_body_b = _body_pose(data, b)
        local[sel] = transform_points(invert(T_body_b), p_body[sel])
    return TrackPoints(bodies.astype(np.int32), local, bodies == part_body, uv)


def glue_pixels(
    model: mujoco.MjModel,
    data: mujoco.MjData,
    geom_ids: np.ndarray,
    depth: np.ndarray,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    part_body: int,
    uv: np.ndarray,
) -> TrackPoints:
    """Glue given pixels ``uv`` (N, 2) (say the stack's own query grid) to what they show.

    Unlike :func:`sample_points`, every pixel is kept: one with no depth or no geom (nothing
    rendered there) is glued to the world body at 1 m along its ray, so its track stays put.
    ``geom_ids`` and ``depth`` are the segmentation and depth renders of the state ``data``
    (an MjData, or any object with its ``xpos`` and ``xmat``: body poses recorded then).
    """
    uv = np.asarray(uv, dtype=np.float64).reshape(-1, 2)
    H, W = depth.shape
    u = np.clip(np.rint(uv[:, 0]).astype(int), 0, W - 1)
    v = np.clip(np.rint(uv[:, 1]).astype(int), 0, H - 1)
    g = geom_ids[v, u]
    z = depth[v, u].astype(np.float64)
    seen = (g >= 0) & (z > 0)
    bodies = np.where(seen, model.geom_bodyid[np.maximum(g, 0)], 0)
    p_cam = intrinsics.backproject(uv, np.where(seen, z, 1.0))  # (N, 3)
    p_body = transform_points(T_body_cam, p_cam)
    local = np.empty_like(p_body)
    for b in np.unique(bodies):
        sel = bodies == b
        local[sel] = transform_points(invert(_body_pose(data, b)), p_body[sel])
    return TrackPoints(bodies.astype(np.int32), local, bodies == part_body, uv)


def _body_pose(data: mujoco.MjData, body: int) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = data.xmat[body].reshape(3, 3)
    T[:3, 3] = data.xpos[body]
    return T


def points_in_body(data: mujoco.MjData, pts: TrackPoints) -> np.ndarray:
    """(N, 3) current positions of the points in the body (= world) frame."""
    R = data.xmat[pts.body].reshape(-1, 3, 3)
    return np.einsum("nij,nj->ni", R, pts.local) + data.xpos[pts.body]


def project(
    data: mujoco.MjData,
    pts: TrackPoints,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    depth: np.ndarray | None = None,
    tol: float = 0.01,
    rel_tol: float = 0.02,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(uv (N, 2) px, z (N,) m along the optical axis, visible (N,) bool) in the current state.

    Without ``depth`` only the frustum decides visibility; with the rendered depth, a point is
    also hidden where the surface seen at its pixel is nearer than ``tol + rel_tol * z``.
    """
    p_cam = transform_points(invert(T_body_cam), points_in_body(data, pts))
    z = p_cam[:, 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        uv = intrinsics.project(p_cam)
    H, W = intrinsics.height, intrinsics.width
    u, v = np.rint(uv[:, 0]), np.rint(uv[:, 1])
    visible = (z > 0) & (u >= 0) & (u <= W - 1) & (v >= 0) & (v <= H - 1)
    if depth is not None:
        ui = np.clip(u, 0, W - 1).astype(int)
        vi = np.clip(v, 0, H - 1).astype(int)
        seen = depth[vi, ui]
        visible &= (seen > 0) & (seen > z - (tol + rel_tol * z))
    return uv, z, visible
