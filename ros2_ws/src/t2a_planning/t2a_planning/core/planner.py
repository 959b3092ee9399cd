"""One call from predicted tracks to an end-effector plan: what the planning node runs.

:func:`plan_for_arm` is the pipeline step (the arm's joints in, a plan the arm can follow out)
that the planner node, the episode runner, the bag evaluation and the training scripts call;
:func:`plan_from_tracks` is the geometry under it, for callers that supply their own hand pose
and reachability test.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from t2a_common.core import kinematics, se3
from t2a_common.core.geometry import Intrinsics, invert
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.ee_plan import Plan, Reachable, build_ee_plan
from t2a_planning.core.grasp import Solve, synthesize_grasp
from t2a_planning.core.lifting import (
    DepthFlag,
    LiftedPoints,
    lift_points,
    lift_with_point_depths,
)
from t2a_planning.core.rigid import estimate_object_motion
from t2a_planning.core.status import Status


def drop_out_of_reach(
    lifted: LiftedPoints, T_body_cam: np.ndarray, config: PlannerConfig
) -> LiftedPoints:
    """``lifted`` with points beyond ``config.reach_radius_m`` of the arm marked OUT_OF_REACH."""
    if config.reach_radius_m <= 0:
        return lifted
    T = np.asarray(T_body_cam, dtype=float)
    p_body = lifted.points_cam @ T[:3, :3].T + T[:3, 3]  # (N, 3), NaN where not lifted
    dist = np.linalg.norm(p_body - np.asarray(config.reach_center_m), axis=1)  # (N,)
    far = lifted.valid & (dist > config.reach_radius_m)
    if not np.any(far):
        return lifted
    flags = np.where(far, DepthFlag.OUT_OF_REACH, lifted.flags).astype(lifted.flags.dtype)
    points = np.where(far[:, None], np.nan, lifted.points_cam)
    depth = np.where(far, np.nan, lifted.depth_m)
    return LiftedPoints(points, depth, lifted.valid & ~far, flags)


def plan_from_tracks(
    tracks_px: np.ndarray,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    T_body_tool: np.ndarray,
    config: PlannerConfig | None = None,
    *,
    depth: np.ndarray | None = None,
    point_depth_m: np.ndarray | None = None,
    reachable: Reachable | None = None,
    q_start: np.ndarray | None = None,
    solve: Solve | None = None,
) -> Plan:
    """Lift P0, fit the object motion, and build the hand plan (Algorithm 1 + section 2.3).

    tracks_px: (H+1, N, 2) pixel tracks in the image of ``intrinsics``, step 0 = P0.
    depth: (height, width) aligned depth of I0 in metres (NaN or 0 = no data); preferred, since it
    also gives the surface normal for the approach. point_depth_m: (N,) depths of P0 (e.g.
    ``PointTracks.depth_m``), used when there is no depth image.
    T_body_cam: camera extrinsics (4, 4); T_body_tool: current hand pose in the body frame (4, 4).
    reachable: ``T_body_tool (4, 4) -> bool`` checked on every plan pose (default: all reachable).
    With a depth image and ``config.grasp_synthesis`` the grasp comes from the moving part's
    depth (:mod:`t2a_planning.core.grasp`), rehearsed with ``solve(T, q_seed) -> q | None``
    (default: the Spot arm model's IK) from the joints ``q_start`` (default: IK of
    ``T_body_tool``); without a depth image it is the paper's centre of the moving points.
    Never raises on bad data: the plan's status and message say what was wrong.
    """
    config = config or PlannerConfig()
    tracks = np.asarray(tracks_px, dtype=float)
    if tracks.ndim != 3 or tracks.shape[0] < 2 or tracks.shape[2] != 2:
        return Plan.failure(
            Status.BAD_INPUT, f"tracks have shape {tracks.shape}, expected (H+1, N, 2) with H >= 1"
        )
    n = tracks.shape[1]
    for name, T in (("T_body_cam", T_body_cam), ("T_body_tool", T_body_tool)):
        if not se3.is_rigid(T):  # before the reach test, which needs T_body_cam
            return Plan.failure(Status.BAD_INPUT, f"{name} is not a rigid 4x4 transform: {T}")
    if depth is not None:
        depth = np.asarray(depth)
        expected = (intrinsics.height, intrinsics.width)
        if depth.shape != expected:
            return Plan.failure(
                Status.BAD_INPUT,
                f"depth image is {depth.shape[::-1]} (w, h), expected {expected[::-1]} to match "
                "the camera info",
            )
        lifted = lift_points(tracks[0], depth, intrinsics, config)
    elif point_depth_m is not None:
        point_depth_m = np.asarray(point_depth_m, dtype=float)
        if point_depth_m.shape != (n,):
            return Plan.failure(
                Status.BAD_INPUT,
                f"point_depth_m has shape {point_depth_m.shape}, expected ({n},) like the tracks",
            )
        lifted = lift_with_point_depths(tracks[0], point_depth_m, intrinsics, config)
    else:
        return Plan.failure(Status.BAD_INPUT, "no depth: pass a depth image or point depths")

    lifted = drop_out_of_reach(lifted, T_body_cam, config)
    fit = estimate_object_motion(lifted.points_cam, lifted.valid, tracks, intrinsics.K, config)
    grasp, kind, note = None, "", ""
    if fit.ok and depth is not None and config.grasp_synthesis:
        T_bc = np.asarray(T_body_cam, dtype=float)
        motion_body = T_bc @ fit.T_cam_obj @ invert(T_bc)  # (H+1, 4, 4)
        m = fit.moving
        chosen = synthesize_grasp(
            depth, intrinsics, T_bc, tracks[0][m], lifted.points_cam[m], motion_body,
            np.asarray(T_body_tool, dtype=float), config, q_start=q_start, solve=solve,
        )  # fmt: skip
        if not chosen.ok:
            return Plan.failure(chosen.status, chosen.message, fit)
        grasp = (chosen.chosen.T_body_grasp, chosen.chosen.T_body_pregrasp)
        kind, note = chosen.chosen.feature.kind, chosen.message
    elif fit.ok:
        note = "grasp: centre of the moving points (no depth image)" if depth is None else ""
    plan = build_ee_plan(
        fit,
        lifted.points_cam,
        T_body_cam,
        T_body_tool,
        config,
        depth=depth,
        intrinsics=intrinsics,
        reachable=reachable,
        grasp=grasp,
        grasp_kind=kind,
        grasp_message=note,
    )
    rejected = {
        flag.name.lower().replace("_", " "): int(np.sum(lifted.flags == flag))
        for flag in DepthFlag
        if flag != DepthFlag.OK and np.any(lifted.flags == flag)
    }
    if rejected:
        detail = ", ".join(f"{k}: {v}" for k, v in rejected.items())
        plan = dataclasses.replace(plan, message=f"{plan.message} (points dropped: {detail})")
    return plan


def plan_for_arm(
    tracks_px: np.ndarray,
    intrinsics: Intrinsics,
    T_body_cam: np.ndarray,
    q: np.ndarray,
    config: PlannerConfig | None = None,
    *,
    depth: np.ndarray | None = None,
    point_depth_m: np.ndarray | None = None,
    check_reachability: bool = True,
    T_body_tool: np.ndarray | None = None,
) -> Plan:
    """The plan for the Spot arm at joints ``q`` (6,) rad: :func:`plan_from_tracks` from the hand
    pose, with every plan pose checked by the arm's IK from ``q`` (unless ``check_reachability``
    is False) and grasps rehearsed from ``q``.

    T_body_tool: the hand pose (4, 4) when the caller measures it (the simulator's tool site);
    default forward kinematics of ``q``. The other arguments are :func:`plan_from_tracks`'s.
    """
    if T_body_tool is None:
        T_body_tool = kinematics.fk(q)
    reachable = None
    if check_reachability:

        def reachable(T: np.ndarray) -> bool:
            return kinematics.solve_ik(T, q).success

    return plan_from_tracks(
        tracks_px, intrinsics, T_body_cam, T_body_tool, config, depth=depth,
        point_depth_m=point_depth_m, reachable=reachable, q_start=q,
    )  # fmt: skip
