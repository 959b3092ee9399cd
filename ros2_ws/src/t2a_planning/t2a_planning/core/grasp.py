"""Grasp synthesis from the depth image: where and how the hand takes the moving part.

The paper's grasp (centre of the moving points, current hand orientation) cannot close vertical
jaws on an upright bottle or a vertical bar, and misses a door handle near the free edge by
centimetres. Here the moving part's own surface is read from the depth of I0, inside the image
region the moving tracks cover, and searched for features a parallel gripper can take:

- ``handle``: points standing out towards the camera from the dominant surface (a plane or an
  upright cylinder) by more than ``grasp_protrusion_m``, elongated; its axis by PCA;
- ``cylinder``: an upright cylinder (bottle) narrow enough for the jaws;
- ``box_top``: a box whose top edge is level and free: the hand comes down onto it;
- ``knob``: a small flat part whose thin side fits between the jaws (a lever's knob, a box's front);
- ``push``: the motion is a level slide away from the robot: the closed jaws push the face;
- ``push_face``: a face turning away from the robot is pushed where it moves most.

Every feature gives candidate tool poses: its approach, turned about the part's own axis by each
of ``grasp_turns_rad`` (the jaws stay across the part), and both rolls about the approach (the
jaws take a bar or a bottle either way up). The gripper model is the Spot hand's tool frame
(``t2a_common.core.spot_arm``): the hand moves along tool +x into the grasp and the finger joint
turns about tool y, so the jaws close along tool z; the fixed jaw's inner face lies
``jaw_offset_m`` below the tool axis, so a part of half-width ``w`` is held with its centre
``w - jaw_offset_m + jaw_clearance_m`` above the tool point along z. A candidate must keep the
fixed jaw and palm clear of the cloud and survive a rehearsal of the whole run: IK chained from
the current joints through the pre-grasp, the straight approach, every plan pose
``a_t = T_t @ grasp`` and the retreat, with no joint jump between neighbouring poses (what the
controller will do, as the scripted expert rehearses its grasps). The plan's message says which
feature and candidate won and why the others lost.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy as np
from scipy.spatial import ConvexHull, Delaunay, QhullError, cKDTree

from t2a_common.core import kinematics, se3, spot_arm
from t2a_common.core.geometry import Intrinsics
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.status import Status

Solve = Callable[[np.ndarray, np.ndarray], "np.ndarray | None"]  # (T_body_tool, q_seed) -> q

UP = np.array([0.0, 0.0, 1.0])
# Kinds in the order they are preferred when several can be executed: a handle is made to be
# held; a cylinder or box top is a firm grasp of the whole part; a knob grasp guesses the part's
# depth. A push is preferred when the motion is a level slide away (then it needs no grasp); a
# push on a face turning away (a door shut from the side without its handle) is the last resort.
PREFERENCE = ("push", "handle", "cylinder", "box_top", "knob", "push_face")
# Sizes of the hand parts that must not touch the cloud (tool frame). The jaws run from the finger
# joint (0.11745 m from the wrist; the tool point is at 0.19557 m) to jaw_reach_m past the tool.
_JAW_BACK = spot_arm.GRIPPER_JOINT.origin[0] - spot_arm.TOOL_OFFSET[0]  # -0.078 m
_FINGER_HALF_WIDTH = 0.015  # m, half the jaws' extent along tool y
_PALM_HALF = 0.035  # m, half the gripper body's cross-section


def arm_solver(joint_limit_margin_rad: float = 0.0) -> Solve:
    """IK of the Spot arm model nearest the seed, keeping ``joint_limit_margin_rad`` from every
    limit (the controller keeps its own margin; a plan rehearsed without it can fail there)."""
    ik_config = kinematics.IKConfig(joint_limit_margin=joint_limit_margin_rad)

    def solve(T_body_tool: np.ndarray, q_seed: np.ndarray) -> np.ndarray | None:
        result = kinematics.solve_ik(T_body_tool, q_seed, ik_config)
        return result.q if result.success else None

    return solve


@dataclasses.dataclass(frozen=True)
class Feature:
    """A part of the cloud the hand can take (all vectors in the body frame)."""

    kind: str  # one of PREFERENCE
    centre: np.ndarray  # (3,) m: centre of the gripped part (push: contact point on the face)
    approach: np.ndarray  # (3,) unit: direction the hand moves into the grasp
    axis: np.ndarray  # (3,) unit: the part's long axis; the jaws close across it
    half_width: float  # m, half the part's size across the jaws
    upright: bool  # the part's axis is vertical (a door bar, a bottle)
    note: str  # what was measured, for the plan message


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One tool pose for a feature and the outcome of its rehearsal."""

    feature: Feature
    roll: float  # rad about the approach (0 or pi)
    turn: float  # rad: the approach turned about the part's axis (the jaws stay across it)
    T_body_grasp: np.ndarray  # (4, 4)
    T_body_pregrasp: np.ndarray  # (4, 4)
    cost: float  # rehearsal cost (forearm roll); inf when it cannot be executed
    reason: str  # why it cannot be executed, "" if it can

    @property
    def feasible(self) -> bool:
        return not self.reason

    def label(self) -> str:
        roll, turn = np.degrees(self.roll), np.degrees(self.turn)
        return f"{self.feature.kind} roll {roll:.0f} turn {turn:+.0f} deg"


@dataclasses.dataclass(frozen=True)
class GraspResult:
    """Outcome of :func:`synthesize_grasp`: the chosen candidate, or why there is none."""

    status: Status
    message: str
    chosen: Candidate | None
    candidates: tuple[Candidate, ...]
    features: tuple[Feature, ...]
    cloud_body: np.ndarray  # (K, 3) the moving part's points, body frame

    @property
    def ok(self) -> bool:
        return self.status == Status.OK and self.chosen is not None


def _unit(v: np.ndarray) -> np.ndarray:
    n = float(np.linalg.norm(v))
    return v / n if n > 1e-9 else v * 0.0


def _transform(T: np.ndarray, P: np.ndarray) -> np.ndarray:
    return P @ T[:3, :3].T + T[:3, 3]


# ------------------------------------------------------------------------------- part cloud


def part_cloud(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    moving_px: np.ndarray,
    moving_cam: np.ndarray,
    config: PlannerConfig,
) -> tuple[np.ndarray | None, str]:
    """The moving part's points in the body frame, ``(K, 3)``, or None and the reason.

    The region is the convex hull of the moving points' P0 pixels, grown by
    ``grasp_region_dilate_px``. A pixel in it whose depth lies more than ``grasp_background_m``
    behind its nearest moving points is background (the wall or table seen past the part's edge);
    pixels in front are kept, since a handle stands out of the part towards the camera.
    moving_px: (M, 2) pixels; moving_cam: (M, 3) their lifted points (NaN where no depth).
    """
    px = np.asarray(moving_px, dtype=float)
    P_cam = np.asarray(moving_cam, dtype=float)
    good = np.all(np.isfinite(px), axis=1) & np.all(np.isfinite(P_cam), axis=1)
    px, P_cam = px[good], P_cam[good]
    if len(px) < 3:
        return None, f"{len(px)} moving points with depth, need 3 to outline the part"
    centre = px.mean(axis=0)
    try:
        hull = px[ConvexHull(px).vertices]
    except (QhullError, ValueError):  # collinear pixels: a thin strip around them
        hull = np.concatenate([px + 1.0, px - 1.0])
    grow = config.grasp_region_dilate_px
    out = hull - centre
    hull = hull + grow * out / np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-9)
    h, w = depth.shape
    u0, v0 = np.clip(np.floor(hull.min(axis=0)).astype(int), 0, [w - 1, h - 1])
    u1, v1 = np.clip(np.ceil(hull.max(axis=0)).astype(int), 0, [w - 1, h - 1])
    uu, vv = np.meshgrid(np.arange(u0, u1 + 1), np.arange(v0, v1 + 1))
    pix = np.stack([uu.ravel(), vv.ravel()], axis=1).astype(float)  # (R, 2)
    try:
        inside = Delaunay(hull).find_simplex(pix) >= 0
    except (QhullError, ValueError):
        inside = np.ones(len(pix), dtype=bool)
    pix = pix[inside]
    z = np.asarray(depth, dtype=float)[pix[:, 1].astype(int), pix[:, 0].astype(int)]
    valid = np.isfinite(z) & (z > config.min_depth_m) & (z < config.max_depth_m)
    n_region, n_valid = len(pix), int(valid.sum())
    if n_valid < config.grasp_min_cloud_points or n_valid < config.grasp_min_valid_fraction * max(
        n_region, 1
    ):
        return None, (
            f"depth of the moving part is missing: {n_valid} of {n_region} pixels in its region "
            f"hold valid depth (NaN, zero or out of range otherwise), need at least "
            f"{config.grasp_min_cloud_points} and {config.grasp_min_valid_fraction:.0%}"
        )
    pix, z = pix[valid], z[valid]
    k = min(5, len(px))
    _, idx = cKDTree(px).query(pix, k=k)
    idx = np.asarray(idx).reshape(len(pix), k)
    near_z = np.median(P_cam[idx, 2], axis=1)  # (K,)
    keep = z <= near_z + config.grasp_background_m
    pix, z = pix[keep], z[keep]
    if len(z) < config.grasp_min_cloud_points:
        return None, (
            f"only {len(z)} pixels of the moving part's region lie on it (the rest are background),"
            f" need {config.grasp_min_cloud_points}"
        )
    x = (pix[:, 0] - intrinsics.cx) / intrinsics.fx * z
    y = (pix[:, 1] - intrinsics.cy) / intrinsics.fy * z
    T_body_cam = np.asarray(T_body_cam, float)
    P_body = _transform(T_body_cam, np.stack([x, y, z], axis=1))
    # What lies below the lowest moving point is what the part stands on (the table).
    floor = float(_transform(T_body_cam, P_cam)[:, 2].min()) - 0.01
    P_body = P_body[P_body[:, 2] >= floor]
    if len(P_body) < config.grasp_min_cloud_points:
        return None, (
            f"only {len(P_body)} pixels of the moving part's region lie on it, need "
            f"{config.grasp_min_cloud_points}"
        )
    return P_body, ""


# ------------------------------------------------------------------------------- surface fits


def _ransac_plane(
    P: np.ndarray, tol: float, rng: np.random.Generator, iters: int = 150
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(unit normal, point on the plane, inlier mask) of the plane with most points within tol."""
    best = (UP, P.mean(axis=0), np.zeros(len(P), dtype=bool))
    for _ in range(iters):
        a, b, c = P[rng.choice(len(P), 3, replace=False)]
        n = np.cross(b - a, c - a)
        if np.linalg.norm(n) < 1e-9:
            continue
        n = n / np.linalg.norm(n)
        inl = np.abs((P - a) @ n) < tol
        if inl.sum() > best[2].sum():
            best = (n, a, inl)
    n, _, inl = best
    if inl.sum() >= 3:  # least-squares refit on the inliers
        c = P[inl].mean(axis=0)
        n = np.linalg.svd(P[inl] - c, full_matrices=False)[2][2]
        inl = np.abs((P - c) @ n) < tol
        return n, c, inl
    return best


def _circle(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, float] | None:
    """Centre and radius of the circle through three 2-D points (None if collinear)."""
    d = 2 * (a[0] * (b[1] - c[1]) + b[0] * (c[1] - a[1]) + c[0] * (a[1] - b[1]))
    if abs(d) < 1e-12:
        return None
    sa, sb, sc = a @ a, b @ b, c @ c
    ux = (sa * (b[1] - c[1]) + sb * (c[1] - a[1]) + sc * (a[1] - b[1])) / d
    uy = (sa * (c[0] - b[0]) + sb * (a[0] - c[0]) + sc * (b[0] - a[0])) / d
    centre = np.array([ux, uy])
    return centre, float(np.linalg.norm(a - centre))


def _ransac_upright_cylinder(
    P: np.ndarray, tol: float, r_range: tuple[float, float], rng: np.random.Generator, iters=200
) -> tuple[np.ndarray, float, np.ndarray]:
    """(axis point xy, radius, inlier mask) of the vertical cylinder with most points on it."""
    xy = P[:, :2]
    best = (xy.mean(axis=0), 0.0, np.zeros(len(P), dtype=bool))
    for _ in range(iters):
        fit = _circle(*xy[rng.choice(len(P), 3, replace=False)])
        if fit is None or not r_range[0] <= fit[1] <= r_range[1]:
            continue
        inl = np.abs(np.linalg.norm(xy - fit[0], axis=1) - fit[1]) < tol
        if inl.sum() > best[2].sum():
            best = (fit[0], fit[1], inl)
    centre, r, inl = best
    if inl.sum() >= 5:  # algebraic least-squares refit on the inliers (Kasa)
        Q = xy[inl]
        A = np.c_[2 * Q, np.ones(len(Q))]
        sol = np.linalg.lstsq(A, (Q**2).sum(axis=1), rcond=None)[0]
        r_ls = float(np.sqrt(max(sol[2] + sol[:2] @ sol[:2], 0.0)))
        if r_range[0] <= r_ls <= r_range[1]:
            centre, r = sol[:2], r_ls
            inl = np.abs(np.linalg.norm(xy - centre, axis=1) - r) < tol
    return centre, r, inl


def _clusters(P: np.ndarray, radius: float) -> list[np.ndarray]:
    """Index arrays of the connected groups of points (neighbours within radius), largest first."""
    parent = np.arange(len(P))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, j in cKDTree(P).query_pairs(radius):
        ri, rj = root(i), root(j)
        if ri != rj:
            parent[ri] = rj
    roots = np.array([root(i) for i in range(len(P))])
    groups = [np.flatnonzero(roots == r) for r in np.unique(roots)]
    return sorted(groups, key=len, reverse=True)


# ------------------------------------------------------------------------------- features


def _handle(
    P: np.ndarray,
    height: np.ndarray,
    normal_at: Callable[[np.ndarray], np.ndarray],
    config: PlannerConfig,
) -> tuple[Feature | None, str]:
    """A handle among the points standing out of the surface (``height`` towards the camera)."""
    out = height > config.grasp_protrusion_m
    if out.sum() < 8:
        return None, f"handle: {int(out.sum())} points stand out of the surface, need 8"
    reasons = []
    for group in _clusters(P[out], 0.015)[:4]:  # the largest first; a stray surface may be one
        feature, why = _bar(P[out][group], height[out][group], normal_at, config)
        if feature is not None:
            return feature, ""
        reasons.append(why)
    return None, "handle: " + "; ".join(reasons)


def _bar(
    Q: np.ndarray,
    hq: np.ndarray,
    normal_at: Callable[[np.ndarray], np.ndarray],
    config: PlannerConfig,
) -> tuple[Feature | None, str]:
    """A handle bar from one group of protruding points (Q (K, 3), hq (K,) their heights), or
    why the group is not one."""
    if len(Q) < 8:
        return None, f"a protrusion of {len(Q)} points (need 8)"
    if np.max(hq) > 0.12 or np.ptp(hq) > 0.07:
        # Handles stand 3-6 cm proud on posts; a surface reaching far out (the table in front
        # of a drawer, seen through the part's outline) is not one.
        return None, f"a protrusion reaching {100 * np.max(hq):.0f} cm out is a surface, not a bar"
    n = normal_at(Q.mean(axis=0))  # towards the camera
    flat = Q - np.outer((Q - Q.mean(axis=0)) @ n, n)  # projected onto the surface
    c = flat.mean(axis=0)
    _, _, vt = np.linalg.svd(flat - c, full_matrices=False)
    axis = vt[0] - (vt[0] @ n) * n
    axis = _unit(axis)
    across = _unit(np.cross(n, axis))
    s_axis, s_across = (flat - c) @ axis, (flat - c) @ across
    length = float(np.ptp(s_axis))
    thick = float(np.ptp(s_across))
    if (
        length < config.grasp_min_handle_length_m
        or length < 1.5 * thick
        or thick > config.max_grasp_width_m
    ):
        return None, (
            f"protrusion {100 * length:.1f} x {100 * thick:.1f} cm is not a bar "
            f"(need >= {100 * config.grasp_min_handle_length_m:.0f} cm long, 1.5x its width)"
        )
    half = float(np.clip(thick / 2, 0.006, 0.03))
    top = float(np.max(hq))  # the bar's front; its centre lies one radius behind it
    # ``flat`` lies at the points' mean height; move the centre to one radius behind the front.
    centre = c + axis * (s_axis.min() + s_axis.max()) / 2 + n * (top - half - float(hq.mean()))
    if abs(axis @ UP) > 0.7:
        axis = axis if axis @ UP > 0 else -axis
    note = (
        f"handle {100 * length:.0f} cm long, {100 * top:.1f} cm proud, axis "
        f"{'vertical' if abs(axis @ UP) > 0.7 else 'level'}"
    )
    return Feature("handle", centre, -n, axis, half, abs(axis @ UP) > 0.7, note), ""


def _face_push(
    F: np.ndarray,
    sh: np.ndarray,
    sv: np.ndarray,
    n: np.ndarray,
    motion_body: np.ndarray,
    vertical: bool,
) -> Feature | str:
    """A push on a face that turns away from the robot (a door swung shut from the side the
    camera sees), or why there is none. The contact is where the face moves most into itself,
    kept 3 cm (a quarter of a narrow face) inside its edges so the jaw tips cannot slip off.

    F: (K, 3) the face's points; sh, sv: their coordinates along the face (m); n: its normal
    towards the camera.
    """
    if not vertical:
        return "push_face: the face is not upright"
    into = -((_transform(motion_body[-1], F) - F) @ n)  # (K,) m each point moves into the face
    mh, mv = min(0.03, 0.25 * np.ptp(sh)), min(0.03, 0.25 * np.ptp(sv))  # a face seen edge-on
    inner = (
        (sh - sh.min() > mh) & (sh.max() - sh > mh) & (sv - sv.min() > mv) & (sv.max() - sv > mv)
    )
    if not inner.any() or into[inner].max() < 0.03:
        return "push_face: no part of the face moves 3 cm away from the robot"
    best = inner & (into >= 0.9 * into[inner].max())
    contact = np.median(F[best], axis=0)
    note = f"face turning away, {100 * into[inner].max():.0f} cm at the contact"
    # Turned about the vertical, not tilted: the push may come in at an angle to the face.
    return Feature("push_face", contact, -n, UP.copy(), 0.0, True, note)


def find_features(
    P: np.ndarray,
    camera_body: np.ndarray,
    motion_body: np.ndarray,
    config: PlannerConfig,
) -> tuple[list[Feature], list[str]]:
    """Graspable features of the part cloud ``P`` (K, 3, body) and why the other kinds are absent.

    camera_body: (3,) camera centre in the body frame (which side of a surface faces it).
    motion_body: (H+1, 4, 4) object motion in the body frame (decides whether to push).
    """
    rng = np.random.default_rng(config.ransac_seed)
    features: list[Feature] = []
    notes: list[str] = []
    n_plane, p_plane, in_plane = _ransac_plane(P, config.grasp_plane_tolerance_m, rng)
    if (camera_body - p_plane) @ n_plane < 0:
        n_plane = -n_plane
    cyl_xy, cyl_r, in_cyl = _ransac_upright_cylinder(
        P, config.grasp_plane_tolerance_m, (0.015, 0.10), rng
    )
    cam_xy = camera_body[:2]
    cyl_ok = (
        in_cyl.sum() >= 0.4 * len(P)
        and in_cyl.sum() > 1.1 * in_plane.sum()
        and np.linalg.norm(cyl_xy - cam_xy) > np.linalg.norm(P[in_cyl, :2].mean(0) - cam_xy)
        and np.ptp(P[in_cyl, 2]) > 0.05
    )
    z_lo, z_hi = float(P[:, 2].min()), float(P[:, 2].max())

    if cyl_ok:
        # Upright cylinder: a handle stands out of it towards the camera (a jug's), else the
        # body itself is taken if it fits between the jaws (a bottle).
        radial = P[:, :2] - cyl_xy
        dist = np.linalg.norm(radial, axis=1)
        facing = radial @ _unit(cam_xy - cyl_xy) > 0

        def normal_cyl(p: np.ndarray) -> np.ndarray:
            return np.r_[_unit(p[:2] - cyl_xy), 0.0]

        height = np.where(facing, dist - cyl_r, 0.0)
        handle, why = _handle(P, height, normal_cyl, config)
        if handle is not None:
            features.append(handle)
        else:
            notes.append(why)
        zi = P[in_cyl, 2]
        z_g = float(zi.min() + 0.45 * np.ptp(zi))  # the lower half of the body, below a neck
        if 2 * cyl_r <= config.max_grasp_width_m:
            approach = np.r_[_unit(cyl_xy - cam_xy), 0.0]
            features.append(
                Feature(
                    "cylinder",
                    np.r_[cyl_xy, z_g],
                    approach,
                    UP.copy(),
                    cyl_r,
                    True,
                    f"upright cylinder r {100 * cyl_r:.1f} cm, {100 * np.ptp(zi):.0f} cm tall",
                )
            )
        else:
            notes.append(
                f"cylinder: {100 * 2 * cyl_r:.1f} cm across, wider than the jaws' "
                f"{100 * config.max_grasp_width_m:.0f} cm"
            )
    elif in_plane.sum() >= 0.3 * len(P):
        height = (P - p_plane) @ n_plane
        handle, why = _handle(P, height, lambda p: n_plane, config)
        if handle is not None:
            features.append(handle)
        else:
            notes.append(why)
        F = P[in_plane]
        h_dir = _unit(np.cross(n_plane, UP))
        if np.linalg.norm(h_dir) < 0.5:  # a level surface facing up: its own axes
            h_dir = _unit(np.linalg.svd(F - F.mean(0), full_matrices=False)[2][0])
        v_dir = _unit(np.cross(h_dir, n_plane))
        sh, sv = (F - p_plane) @ h_dir, (F - p_plane) @ v_dir
        width, tall = float(np.ptp(sh)), float(np.ptp(sv))
        face_c = p_plane + h_dir * (sh.min() + sh.max()) / 2 + v_dir * (sv.min() + sv.max()) / 2
        vertical = abs(n_plane @ UP) < 0.35
        if handle is None and vertical and width <= config.max_grasp_width_m and tall > 0.04:
            # A box: the top edge must be level and free (the hand comes down onto it).
            top = P[P[:, 2] > z_hi - 0.012]
            top_span = float(np.ptp((top - p_plane) @ h_dir)) if len(top) else 0.0
            n_h = _unit(np.r_[n_plane[:2], 0.0])
            behind = -(top - p_plane) @ n_h if len(top) else np.zeros(1)
            seen = behind.max() > 0.02
            depth = float(behind.max()) if seen else width
            if tall > 2.0 * width or (seen and depth < 0.6 * width):
                # A panel seen at an angle (an open door) also shows a narrow upright face.
                notes.append(
                    f"box_top: {100 * width:.1f} cm wide, {100 * tall:.1f} cm tall"
                    f"{f', {100 * depth:.1f} cm deep' if seen else ''} is a panel, not a box"
                )
            elif top_span >= 0.6 * width:
                centre = face_c.copy()
                centre[:2] -= n_h[:2] * depth / 2
                centre[2] = z_hi - config.top_grasp_depth_m
                features.append(
                    Feature(
                        "box_top",
                        centre,
                        -UP,
                        -n_h,
                        width / 2,
                        False,
                        f"box {100 * width:.1f} cm wide, {100 * depth:.1f} cm deep"
                        f"{'' if behind.max() > 0.02 else ' (depth assumed = width: top unseen)'}",
                    )
                )
            else:
                notes.append(
                    f"box_top: the top edge spans {100 * top_span:.1f} of {100 * width:.1f} cm"
                )
        thin, long_dir, long_len = (width, v_dir, tall) if width <= tall else (tall, h_dir, width)
        if handle is None and thin <= config.max_grasp_width_m and long_len <= 0.12:
            features.append(
                Feature(
                    "knob",
                    face_c - n_plane * thin / 2,
                    -n_plane,
                    long_dir,
                    thin / 2,
                    False,
                    f"small part {100 * width:.1f} x {100 * tall:.1f} cm",
                )
            )
        elif handle is None:
            notes.append(
                f"knob: the part is {100 * width:.0f} x {100 * tall:.0f} cm, too large to grip"
            )
        # Push: the part slides level and away from the robot without turning.
        c0 = P.mean(axis=0)
        c_end = _transform(motion_body[-1], c0[None])[0]
        move = c_end - c0
        turn = float(se3.rotation_angle(motion_body[-1][:3, :3]))
        away = _unit(np.r_[c0[:2] - camera_body[:2], 0.0])
        level = np.r_[move[:2], 0.0]
        if (
            vertical
            and np.linalg.norm(level) > 0.03
            and abs(move[2]) < 0.02
            and turn < 0.2
            and level @ away > 0.7 * np.linalg.norm(level)
        ):
            d = _unit(level)
            z_push = min(z_lo + max(config.push_height_m, (z_hi - z_lo) / 2), z_hi - 0.01)
            contact = face_c + v_dir * 0.0
            contact[2] = z_push
            features.append(
                Feature(
                    "push",
                    contact,
                    d,
                    _unit(np.cross(UP, d)),
                    0.0,
                    False,
                    f"level slide {100 * np.linalg.norm(level):.0f} cm away from the robot",
                )
            )
        else:
            notes.append("push: the part does not slide level away from the robot")
            face = _face_push(F, sh, sv, n_plane, motion_body, vertical)
            if isinstance(face, Feature):
                features.append(face)
            else:
                notes.append(face)
    else:
        notes.append(
            f"no surface: the best plane holds {int(in_plane.sum())} and the best upright "
            f"cylinder {int(in_cyl.sum())} of {len(P)} points"
        )
    return features, notes


# ------------------------------------------------------------------------------- candidates


def _tool_pose(feature: Feature, roll: float, turn: float, config: PlannerConfig) -> np.ndarray:
    """Tool pose (4, 4) taking ``feature`` with the given roll (about the approach) and turn."""
    a = feature.approach
    if turn:  # about the part's own axis, so the jaws still close across it
        a = se3.so3_exp(turn * feature.axis) @ a
    if feature.kind.startswith("push"):
        z = _unit(UP - (UP @ a) * a)
    else:
        z = _unit(np.cross(a, feature.axis))  # across the part's long axis
    if np.linalg.norm(z) < 0.5:
        raise ValueError("approach along the part's axis")
    if roll:
        z = -z
    y = np.cross(z, a)
    T = np.eye(4)
    T[:3, :3] = np.stack([a, y, z], axis=1)
    if feature.kind.startswith("push"):  # the closed jaws' tips touch the face
        T[:3, 3] = feature.centre - config.jaw_reach_m * a
    else:  # the part rests jaw_clearance_m off the fixed jaw, grasp_depth_bias_m inside
        shift = feature.half_width - config.jaw_offset_m + config.jaw_clearance_m
        T[:3, 3] = feature.centre - shift * z + config.grasp_depth_bias_m * a
    return T


def _clearance(T_grasp: np.ndarray, P: np.ndarray, config: PlannerConfig, push: bool) -> str:
    """Why the fixed jaw (on its way in) or the palm would hit the cloud, "" if neither."""
    Q = _transform(np.linalg.inv(T_grasp), P)  # tool frame
    x, y, z = Q.T
    reach = config.jaw_reach_m - (0.008 if push else 0.0)
    jaw = (
        (x > _JAW_BACK - config.standoff_m)
        & (x < reach)
        & (np.abs(y) < _FINGER_HALF_WIDTH)
        & (z < -config.jaw_offset_m + 0.002)
        & (z > -config.jaw_offset_m - 0.015)
    )
    palm = (x < _JAW_BACK) & (np.abs(y) < _PALM_HALF) & (np.abs(z) < _PALM_HALF)
    if push:  # the closed jaws meet the face: only the palm must stay clear
        jaw = jaw & (x < reach - 0.01)
    if jaw.sum() >= 3:
        return f"the fixed jaw would hit {int(jaw.sum())} points of the part"
    if palm.sum() >= 3:
        return f"the palm would hit {int(palm.sum())} points of the part"
    return ""


def rehearse(
    T_grasp: np.ndarray,
    T_pregrasp: np.ndarray,
    motion_body: np.ndarray,
    q_start: np.ndarray,
    T_start: np.ndarray,
    solve: Solve,
    config: PlannerConfig,
) -> tuple[float, str]:
    """(cost, "") if the arm can run the whole plan with this grasp, else (inf, the reason).

    The same chain the controller runs: joint moves to above the pre-grasp (when the hand starts
    higher) and to the pre-grasp, a straight move in, every plan pose with intermediate poses,
    and the retreat against the approach; each IK seeded from the previous solution. The cost
    penalises forearm roll (arm_el1), which leaves the wrist little room to follow the part.
    """
    a = T_grasp[:3, 0] if config.standoff_m <= 0 else _unit(T_grasp[:3, 3] - T_pregrasp[:3, 3])
    joint_moves = []
    # 0.05 m and 0.10 m below: the controller's approach_from_above_m and retreat_distance_m
    # defaults (planning cannot import control; a differently configured controller still
    # re-checks the plan with its own IK before moving).
    if T_start[2, 3] - T_pregrasp[2, 3] > 0.05:
        above = T_pregrasp.copy()
        above[2, 3] = T_start[2, 3]
        joint_moves.append(("above the pre-grasp", above))
    joint_moves.append(("pre-grasp", T_pregrasp))
    ee = motion_body @ T_grasp  # (H+1, 4, 4)
    cartesian = [
        ("approach", T) for T in se3.interpolate(T_pregrasp, ee[0], np.linspace(0, 1, 5)[1:])
    ]
    for k in range(1, len(ee)):
        for T in se3.interpolate(ee[k - 1], ee[k], np.linspace(0, 1, 4)[1:]):
            cartesian.append((f"plan step {k}", T))
    # The controller steps off the fixed jaw (0.012 m along -z, its release_clearance_m) and
    # backs out along the approach as the object's motion turned it.
    off = ee[-1].copy()
    off[:3, 3] -= 0.012 * off[:3, 2]
    retreat = off.copy()
    retreat[:3, 3] -= 0.10 * (ee[-1][:3, :3] @ ee[0][:3, :3].T @ a)
    cartesian.append(("retreat", off))
    cartesian += [("retreat", T) for T in se3.interpolate(off, retreat, np.linspace(0, 1, 4)[1:])]
    q, cost = np.asarray(q_start, float), 0.0
    for i, (name, T) in enumerate(joint_moves + cartesian):
        if not np.all((T[:3, 3] >= config.workspace_min_m) & (T[:3, 3] <= config.workspace_max_m)):
            return np.inf, f"{name} at {np.round(T[:3, 3], 2).tolist()} m leaves the workspace"
        q1 = solve(T, q)
        if q1 is None and name == "above the pre-grasp":
            continue  # the controller then moves straight to the pre-grasp instead
        if q1 is None:
            return np.inf, f"IK fails at the {name}"
        jump = float(np.max(np.abs(q1 - q)))
        if i >= len(joint_moves) and jump > config.grasp_max_joint_jump_rad:
            return np.inf, f"joints jump {jump:.2f} rad at the {name}"
        el1 = abs(float(q1[3]))
        cost += 0.2 * el1 + 20.0 * max(0.0, el1 - 2.2)
        q = q1
    return cost / len(cartesian), ""


def synthesize_grasp(
    depth: np.ndarray,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    moving_px: np.ndarray,
    moving_cam: np.ndarray,
    motion_body: np.ndarray,
    T_body_tool: np.ndarray,
    config: PlannerConfig,
    *,
    q_start: np.ndarray | None = None,
    solve: Solve | None = None,
) -> GraspResult:
    """Choose the grasp: features of the moving part's cloud, candidates, rehearsal.

    depth: (h, w) aligned depth of I0 in m (NaN or 0 = none); moving_px (M, 2) and moving_cam
    (M, 3): P0 pixels of the moving points and their lifted positions (camera frame);
    motion_body: (H+1, 4, 4) object motion in the body frame; T_body_tool: current hand pose;
    q_start: current arm joints (default: IK of T_body_tool from the ready pose); solve:
    ``(T, q_seed) -> q | None`` (default: the Spot arm model's IK with
    ``config.grasp_joint_limit_margin_rad``).
    """
    solve = solve or arm_solver(config.grasp_joint_limit_margin_rad)
    T_body_cam = np.asarray(T_body_cam, float)
    empty = np.zeros((0, 3))
    cloud, why = part_cloud(depth, intrinsics, T_body_cam, moving_px, moving_cam, config)
    if cloud is None:
        return GraspResult(Status.BAD_INPUT, f"grasp: {why}", None, (), (), empty)
    if q_start is None:
        q_start = solve(T_body_tool, spot_arm.READY)
        if q_start is None:
            return GraspResult(
                Status.BAD_INPUT,
                "grasp: the current hand pose has no IK solution",
                None,
                (),
                (),
                cloud,
            )
    features, notes = find_features(cloud, T_body_cam[:3, 3], motion_body, config)
    if not features:
        return GraspResult(
            Status.DEGENERATE,
            "grasp: no graspable feature on the moving part (" + "; ".join(notes) + ")",
            None,
            (),
            (),
            cloud,
        )
    candidates = []
    for f in features:
        turns = config.grasp_turns_rad
        if f.kind == "push":  # tilted down only: the jaws' tips, not their underside, push
            turns = tuple(t for t in turns if t >= 0.0)
        for roll in (0.0, np.pi):
            for turn in turns:
                try:
                    T = _tool_pose(f, roll, turn, config)
                except ValueError as e:
                    candidates.append(
                        Candidate(f, roll, turn, np.eye(4), np.eye(4), np.inf, str(e))
                    )
                    continue
                T_pre = T.copy()
                T_pre[:3, 3] -= config.standoff_m * T[:3, 0]
                reason = _clearance(T, cloud, config, f.kind.startswith("push"))
                cost = np.inf
                if not reason:
                    cost, reason = rehearse(
                        T, T_pre, motion_body, q_start, T_body_tool, solve, config
                    )
                cost += 0.05 * abs(turn)  # face the part squarely when it costs nothing
                candidates.append(Candidate(f, roll, turn, T, T_pre, cost, reason))
    rank = {k: i for i, k in enumerate(PREFERENCE)}
    feasible = [c for c in candidates if c.feasible]
    if not feasible:
        lost = "; ".join(f"{c.label()}: {c.reason}" for c in candidates)
        return GraspResult(
            Status.UNREACHABLE,
            f"grasp: no candidate can be executed ({lost})",
            None,
            tuple(candidates),
            tuple(features),
            cloud,
        )
    chosen = min(feasible, key=lambda c: (rank[c.feature.kind], c.cost))
    others = sorted({c.feature.kind for c in feasible} - {chosen.feature.kind}, key=rank.get)
    failed = [c for c in candidates if not c.feasible]
    parts = [f"grasp: {chosen.label()} ({chosen.feature.note}, cost {chosen.cost:.2f})"]
    if others:
        parts.append("preferred over " + ", ".join(others))
    costlier = [c for c in feasible if c is not chosen and c.feature.kind == chosen.feature.kind]
    if costlier:
        runner = min(costlier, key=lambda c: c.cost)
        parts.append(
            f"{len(costlier)} other {chosen.feature.kind} poses cost more "
            f"(next: {runner.label()}, {runner.cost:.2f})"
        )
    if failed:
        parts.append("rejected " + "; ".join(f"{c.label()}: {c.reason}" for c in failed[:4]))
        if len(failed) > 4:
            parts[-1] += f"; and {len(failed) - 4} more"
    if notes:
        parts.append("; ".join(notes))
    return GraspResult(
        Status.OK, " | ".join(parts), chosen, tuple(candidates), tuple(features), cloud
    )
