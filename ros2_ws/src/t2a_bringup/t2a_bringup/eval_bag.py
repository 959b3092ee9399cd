"""``t2a-eval-bag``: offline evaluation of a recorded run: perception + planning on a bag, no arm.

    t2a-eval-bag BAG [--goal goal.png] [--start S] --out DIR [--checkpoint DIR]

Reads the colour frames, aligned depth, camera_info and joint_states of a rosbag2 bag (as
``t2a-record`` writes it from the sim or the robot), takes I0 at ``--start`` seconds (the first
colour frame from there that has an aligned depth image), and runs the cores the nodes run: the
track predictor (``track_predictor``'s parameters and default checkpoint) on I0 and the goal
image, then the planner (``planner``'s parameters: camera extrinsics, IK reachability from the
recorded joints). Nothing is published and no arm is needed. ``DIR`` gets the same artifacts as
the demo: the episode video with the predicted tracks over the recorded frames (GIF, and MP4
where OpenCV can encode it), ``tracks.png``, the planned vs executed hand path ``ee_paths.png``
(executed = forward kinematics of the recorded joint_states), ``tracks.npz`` and
``summary.json`` / ``summary.md``.

Exit status: 0 when the artifacts are written and the plan is OK, 1 when they are written but
planning failed (the summary says why), 2 when the input is unusable (nothing is evaluated).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import textwrap
import time
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch

from t2a_bringup.core import artifacts
from t2a_bringup.core.bag import BagError, BagReader, MessageTypes, offset_to_bag_time
from t2a_common import ros_conv
from t2a_common.core import kinematics, spot_arm
from t2a_common.core.config import load_yaml
from t2a_common.core.geometry import Intrinsics
from t2a_perception.core.frames import depth_at_points
from t2a_perception.core.goal_tracks import predict_goal_tracks
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_perception.core.predictor import TrackPrediction, TrackPredictor
from t2a_perception.nodes.track_predictor import resolve_checkpoint
from t2a_planning.core.ee_plan import Plan
from t2a_planning.core.node_config import PlannerNodeConfig
from t2a_planning.core.planner import plan_for_arm
from t2a_planning.core.status import Status

PROG = "t2a-eval-bag"
IMAGE_TYPE = "sensor_msgs/msg/Image"
INFO_TYPE = "sensor_msgs/msg/CameraInfo"
JOINTS_TYPE = "sensor_msgs/msg/JointState"
INTRO_FRAMES_PER_STEP = 2  # video frames per track step in the opening animation on I0


class EvalError(Exception):
    """The bag or an argument cannot be evaluated; the message says what and what was expected."""


# --------------------------------------------------------------------------------------------
# Reading the bag
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Topics:
    color: str
    depth: str
    info: str
    joints: str
    goal: str


@dataclasses.dataclass
class BagInputs:
    """What the evaluation needs from a bag, decoded."""

    rgb0: np.ndarray  # (H, W, 3) uint8, I0
    depth0_m: np.ndarray  # (H, W) float32 m, NaN = no data, aligned to I0
    stamp0_s: float  # header stamp of I0
    offset0_s: float  # I0's receive time after the bag's first message (s)
    intrinsics: Intrinsics
    frames: list[tuple[float, np.ndarray]]  # (stamp s, rgb) from I0 on, decimated for the video
    joint_stamps: np.ndarray  # (T,) s
    joint_q: np.ndarray  # (T, 6) rad, arm joints
    goal_rgb: np.ndarray | None  # the recorded goal image, if any
    goal_offset_s: float | None  # its receive time after the bag's first message (s)
    counts: dict[str, int]  # messages per topic used
    frames_dropped: int  # colour frames from I0 on that the video skipped (cap)


def _stamp_s(msg, log_ns: int) -> float:
    """Header stamp in seconds; the bag's receive time where the header is unstamped."""
    stamp = msg.header.stamp
    return stamp.sec + stamp.nanosec * 1e-9 if (stamp.sec or stamp.nanosec) else log_ns * 1e-9


def _check_topic(reader: BagReader, topic: str, msgtype: str, what: str, flag: str) -> int:
    """Message count of a required topic; EvalError naming the topics the bag has otherwise."""
    infos = reader.topics()
    info = infos.get(topic)
    if info is None or info.message_count == 0:
        have = ", ".join(f"{t} ({i.message_count})" for t, i in infos.items()) or "no topics"
        state = "no messages on" if info is not None else "no topic"
        raise EvalError(
            f"the bag {reader.path} has {state} {topic}, so there are no {what}; it has: {have}. "
            f"Record {topic} or pass {flag} with the topic that holds them"
        )
    if info.msgtype != msgtype:
        raise EvalError(f"{topic} in the bag is {info.msgtype}, expected {msgtype} ({what})")
    return info.message_count


def _rgb(msg, what: str) -> np.ndarray:
    try:
        return ros_conv.image_to_rgb(msg, what)
    except ValueError as exc:
        raise EvalError(str(exc)) from exc


def read_bag(
    reader: BagReader,
    topics: Topics,
    start_ns: int,
    sync_slop_s: float,
    depth_scale: float,
    video_fps: float,
    max_video_frames: int,
) -> BagInputs:
    """Decode what the evaluation needs. Images are read lazily and only the frames the video
    keeps stay in memory, so long bags of 640x480 frames are fine.

    Raises EvalError for a bag without colour frames, depth or camera_info, with an encoding the
    stack does not take, or where no colour frame from ``start_ns`` has an aligned depth image.
    """
    store = MessageTypes().typestore
    counts = {
        topics.color: _check_topic(reader, topics.color, IMAGE_TYPE, "colour frames",
                                   "--color-topic"),
        topics.depth: _check_topic(reader, topics.depth, IMAGE_TYPE, "aligned depth images",
                                   "--depth-topic"),
        topics.info: _check_topic(reader, topics.info, INFO_TYPE, "camera intrinsics",
                                  "--info-topic"),
    }  # fmt: skip
    present = reader.topics()
    optional = [t for t in (topics.joints, topics.goal) if t in present]
    for topic in optional:
        counts[topic] = present[topic].message_count
    if topics.joints in present and present[topics.joints].msgtype != JOINTS_TYPE:
        raise EvalError(f"{topics.joints} in the bag is {present[topics.joints].msgtype}, "
                        f"expected {JOINTS_TYPE}")  # fmt: skip
    if topics.goal in present and present[topics.goal].msgtype != IMAGE_TYPE:
        raise EvalError(f"{topics.goal} in the bag is {present[topics.goal].msgtype}, "
                        f"expected {IMAGE_TYPE}")  # fmt: skip

    # Pass 1: everything but the colour frames (depth only as stamps, to pair later).
    info = None
    depth_index: list[tuple[float, int]] = []  # (header stamp s, receive ns)
    joint_stamps, joint_q, bad_joints = [], [], ""
    goals: list[tuple[int, object]] = []  # (receive ns, message)
    for m in reader.messages([topics.info, topics.depth, *optional]):
        msg = store.deserialize_cdr(m.data, m.msgtype)
        if m.topic == topics.info:
            info = info or msg
        elif m.topic == topics.depth:
            if msg.encoding not in ros_conv.DEPTH_ENCODINGS:
                raise EvalError(
                    f"depth image on {topics.depth} is {ros_conv.describe(msg)}, expected "
                    f"{' or '.join(ros_conv.DEPTH_ENCODINGS)} (aligned depth, 16UC1 in mm)"
                )
            depth_index.append((_stamp_s(msg, m.stamp_ns), m.stamp_ns))
        elif m.topic == topics.joints:
            try:
                q = ros_conv.joint_positions(msg, spot_arm.ARM_JOINT_NAMES)
            except ValueError as exc:
                bad_joints = str(exc)
                continue
            joint_stamps.append(_stamp_s(msg, m.stamp_ns))
            joint_q.append(q)
        else:
            goals.append((m.stamp_ns, msg))
    if topics.joints in present and not joint_q:
        raise EvalError(f"no usable message on {topics.joints}: {bad_joints}")
    try:
        intr = ros_conv.camera_info_to_intrinsics(info)
    except ValueError as exc:
        raise EvalError(f"{topics.info}: {exc}") from exc
    depth_index.sort()
    depth_stamps = np.array([s for s, _ in depth_index])

    def paired_depth(stamp: float) -> int | None:
        i = int(np.searchsorted(depth_stamps, stamp))
        near = [j for j in (i - 1, i) if 0 <= j < len(depth_stamps)]
        best = min(near, key=lambda j: abs(depth_stamps[j] - stamp), default=None)
        return best if best is not None and abs(depth_stamps[best] - stamp) <= sync_slop_s else None

    # Pass 2: colour frames from the start; the first one with depth is I0.
    rgb0 = depth0 = None
    stamp0 = offset0 = 0.0
    frames: list[tuple[float, np.ndarray]] = []
    dropped, seen = 0, 0
    next_keep = -math.inf
    for m in reader.messages([topics.color], start_ns=start_ns):
        msg = store.deserialize_cdr(m.data, m.msgtype)
        stamp = _stamp_s(msg, m.stamp_ns)
        seen += 1
        if rgb0 is None:
            j = paired_depth(stamp)
            if j is None:
                continue
            rgb0 = _rgb(msg, f"colour frame on {topics.color}")
            if (intr.width, intr.height) != (rgb0.shape[1], rgb0.shape[0]):
                raise EvalError(
                    f"camera_info on {topics.info} is for {intr.width}x{intr.height}, the colour "
                    f"frames are {rgb0.shape[1]}x{rgb0.shape[0]}; expected the colour camera's info"
                )
            depth0 = _read_depth(reader, store, topics.depth, depth_index[j], depth_scale)
            if depth0.shape != rgb0.shape[:2]:
                raise EvalError(
                    f"depth on {topics.depth} is {depth0.shape[1]}x{depth0.shape[0]}, the colour "
                    f"frames {rgb0.shape[1]}x{rgb0.shape[0]}; expected depth aligned to colour"
                )
            stamp0, offset0 = stamp, (m.stamp_ns - reader.start_ns) / 1e9
        if stamp + 1e-9 < next_keep:
            continue
        if len(frames) >= max_video_frames:
            dropped += 1
            continue
        frames.append((stamp, _rgb(msg, f"colour frame on {topics.color}")))
        next_keep = stamp + 1.0 / video_fps
    if rgb0 is None:
        where = f" from +{(start_ns - reader.start_ns) / 1e9:.2f} s on" if seen else ""
        raise EvalError(
            f"no colour frame{where} has an aligned depth image within {sync_slop_s} s of its "
            f"stamp ({seen} colour frames from the start, {len(depth_index)} depth images in the "
            f"bag); expected colour and depth recorded together"
        )

    goal_rgb = goal_offset = None
    if goals:
        # The goal sent for I0 was published after it; a goal from before only if none was.
        start0 = reader.start_ns + round(offset0 * 1e9)
        after = [g for g in goals if g[0] >= start0]
        log_ns, msg = after[0] if after else goals[-1]
        goal_rgb = _rgb(msg, f"goal image on {topics.goal}")
        goal_offset = (log_ns - reader.start_ns) / 1e9
    stamps = np.array(joint_stamps, dtype=float)
    order = np.argsort(stamps, kind="stable")
    return BagInputs(
        rgb0=rgb0, depth0_m=depth0, stamp0_s=stamp0, offset0_s=offset0, intrinsics=intr,
        frames=frames, joint_stamps=stamps[order],
        joint_q=np.array(joint_q, dtype=float).reshape(-1, 6)[order],
        goal_rgb=goal_rgb, goal_offset_s=goal_offset, counts=counts, frames_dropped=dropped,
    )  # fmt: skip


def _read_depth(reader, store, topic: str, entry: tuple[float, int], scale: float) -> np.ndarray:
    stamp, log_ns = entry
    for m in reader.messages([topic], start_ns=log_ns, stop_ns=log_ns + 1):
        msg = store.deserialize_cdr(m.data, m.msgtype)
        if abs(_stamp_s(msg, m.stamp_ns) - stamp) < 1e-9:
            try:
                return ros_conv.depth_to_meters(msg, scale)
            except ValueError as exc:
                raise EvalError(f"depth image on {topic}: {exc}") from exc
    raise EvalError(f"depth image stamped {stamp:.3f} s vanished from {topic} on the second read")


def read_goal_file(path: Path) -> np.ndarray:
    """A goal image file as ``(H, W, 3)`` uint8 RGB (EvalError if it is not an image)."""
    if not path.is_file():
        raise EvalError(f"goal image {path} does not exist; expected a PNG/JPEG file")
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise EvalError(f"cannot read {path} as an image; expected a PNG/JPEG colour image")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------


def hand_joints_at(inputs: BagInputs, stamp_s: float) -> tuple[np.ndarray, float] | None:
    """Arm joints recorded last at or before ``stamp_s`` (else the first after), with the stamp
    gap in seconds; None without joint_states."""
    if len(inputs.joint_stamps) == 0:
        return None
    i = int(np.searchsorted(inputs.joint_stamps, stamp_s, side="right")) - 1
    i = max(i, 0)
    return inputs.joint_q[i], float(abs(inputs.joint_stamps[i] - stamp_s))


def run_planner(
    tracks_px: np.ndarray,
    inputs: BagInputs,
    cfg: PlannerNodeConfig,
    q0: np.ndarray | None,
) -> Plan:
    """The planner node's computation: hand pose from FK of the joints, depth of I0, IK check."""
    if q0 is None:
        return Plan.failure(
            Status.BAD_INPUT, f"no /{cfg.spot_name}/joint_states in the bag: hand pose unknown"
        )
    return plan_for_arm(
        tracks_px, inputs.intrinsics, cfg.T_body_cam, q0, cfg.planner, depth=inputs.depth0_m,
        check_reachability=cfg.check_reachability,
    )  # fmt: skip


def episode_video_frames(
    inputs: BagInputs,
    goal_rgb: np.ndarray,
    tracks_px: np.ndarray,
    moving: np.ndarray,
    confidence: np.ndarray | None,
) -> list[np.ndarray]:
    """The video: the tracks growing step by step on I0, then the recorded frames with the
    whole predicted tracks; the goal image beside every frame."""
    horizon = tracks_px.shape[0] - 1
    goal = artifacts.put_label(goal_rgb, "goal")
    out = []
    for step in range(horizon + 1):
        frame = artifacts.draw_tracks(inputs.rgb0, tracks_px, step=step, moving=moving,
                                      confidence=confidence)  # fmt: skip
        frame = artifacts.put_label(frame, f"I0: predicted tracks, step {step}/{horizon}")
        out += [artifacts.side_by_side(frame, goal)] * INTRO_FRAMES_PER_STEP
    for stamp, rgb in inputs.frames:
        frame = artifacts.draw_tracks(rgb, tracks_px, moving=moving, confidence=confidence)
        frame = artifacts.put_label(frame, f"recorded +{stamp - inputs.stamp0_s:.1f} s")
        out.append(artifacts.side_by_side(frame, goal))
    return out


@dataclasses.dataclass
class Evaluation:
    """Everything computed from the bag, before any file is written."""

    inputs: BagInputs
    goal_rgb: np.ndarray  # (H', W', 3) uint8
    goal_source: str  # the file, or the bag topic and time
    checkpoint: Path
    pred: TrackPrediction
    point_depth_m: np.ndarray  # (N,) depth of P0 (m), NaN = none
    moving: np.ndarray  # (N,) bool, points that move more than the planner's threshold
    plan: Plan
    q0: np.ndarray | None  # (6,) arm joints at I0 (rad), None without joint_states
    joints_gap_s: float | None  # stamp distance between I0 and those joints (s)
    executed: np.ndarray  # (T, 3) hand positions from I0 on (body, m)
    bag_duration_s: float
    timings: dict[str, float]  # seconds per stage


def run_evaluation(
    args: argparse.Namespace,
    pred_cfg: TrackPredictorConfig,
    plan_cfg: PlannerNodeConfig,
    topics: Topics,
) -> Evaluation:
    """Read the bag, predict the tracks of I0 towards the goal, plan; EvalError on bad input."""
    timings: dict[str, float] = {}
    goal_file = read_goal_file(args.goal) if args.goal is not None else None

    t0 = time.perf_counter()
    try:
        reader = BagReader(args.bag)
    except BagError as exc:
        raise EvalError(str(exc)) from exc
    with reader:
        try:
            start_ns = offset_to_bag_time(reader, args.start)
        except BagError as exc:
            raise EvalError(str(exc)) from exc
        inputs = read_bag(reader, topics, start_ns, pred_cfg.sync_slop_s, plan_cfg.depth_scale,
                          args.video_fps, args.max_video_frames)  # fmt: skip
        bag_duration = reader.duration_s
    timings["read_bag"] = time.perf_counter() - t0

    if goal_file is not None:
        goal_rgb, goal_source = goal_file, str(args.goal)
    elif inputs.goal_rgb is not None:
        goal_rgb, goal_source = inputs.goal_rgb, f"{topics.goal} at +{inputs.goal_offset_s:.2f} s"
    else:
        raise EvalError(
            f"no goal image: pass --goal FILE (e.g. from t2a-sim-goal) or record {topics.goal} "
            "in the bag (track_predictor publishes the accepted goal there)"
        )

    t0 = time.perf_counter()
    if pred_cfg.torch_threads:
        torch.set_num_threads(pred_cfg.torch_threads)
    ckpt = resolve_checkpoint(
        args.checkpoint if args.checkpoint is not None else pred_cfg.checkpoint
    )
    try:
        predictor = TrackPredictor(ckpt, device=pred_cfg.device)
    except (FileNotFoundError, ValueError, RuntimeError) as exc:
        raise EvalError(f"track model not loaded from {ckpt}: {exc}") from exc
    timings["load_model"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    try:
        goal_tracks = predict_goal_tracks(predictor, inputs.rgb0, goal_rgb, inputs.depth0_m,
                                          inputs.intrinsics, pred_cfg, seed=args.seed)  # fmt: skip
    except ValueError as exc:
        raise EvalError(f"track prediction refused the input: {exc}") from exc
    timings["predict"] = time.perf_counter() - t0
    pred = goal_tracks.prediction

    t0 = time.perf_counter()
    joints = hand_joints_at(inputs, inputs.stamp0_s)
    q0, gap = joints if joints is not None else (None, None)
    plan = run_planner(pred.tracks_px, inputs, plan_cfg, q0)
    timings["plan"] = time.perf_counter() - t0

    after = inputs.joint_stamps >= inputs.stamp0_s - 1e-9
    executed = (
        kinematics.fk_batch(inputs.joint_q[after])[:, :3, 3] if after.any() else np.zeros((0, 3))
    )
    return Evaluation(
        inputs=inputs, goal_rgb=goal_rgb, goal_source=goal_source, checkpoint=ckpt, pred=pred,
        point_depth_m=depth_at_points(inputs.depth0_m, goal_tracks.query_points),
        moving=artifacts.moving_points(pred.tracks_px, plan_cfg.planner.motion_threshold_px),
        plan=plan, q0=q0, joints_gap_s=gap, executed=executed, bag_duration_s=bag_duration,
        timings=timings,
    )  # fmt: skip


def write_artifacts(out: Path, ev: Evaluation, args: argparse.Namespace) -> artifacts.VideoFiles:
    """tracks.png, the episode video, ee_paths.png and tracks.npz in ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    pred, plan, inputs = ev.pred, ev.plan, ev.inputs
    overlay = artifacts.draw_tracks(inputs.rgb0, pred.tracks_px, moving=ev.moving,
                                    confidence=pred.confidence)  # fmt: skip
    panel = artifacts.side_by_side(artifacts.put_label(overlay, "I0 + predicted tracks"),
                                   artifacts.put_label(ev.goal_rgb, "goal"))  # fmt: skip
    cv2.imwrite(str(out / "tracks.png"), cv2.cvtColor(panel, cv2.COLOR_RGB2BGR))
    video = artifacts.write_video(
        episode_video_frames(inputs, ev.goal_rgb, pred.tracks_px, ev.moving, pred.confidence),
        out / "episode", fps=args.video_fps, mp4=not args.no_mp4,
    )  # fmt: skip
    has_poses = len(plan.ee_poses) > 0  # UNREACHABLE plans keep theirs: they show why
    planned = plan.waypoints()[1][:, :3, 3] if has_poses else np.zeros((0, 3))
    artifacts.plot_ee_paths(
        out / "ee_paths.png", planned, ev.executed,
        grasp=plan.ee_poses[plan.grasp_step][:3, 3] if has_poses else None,
        pregrasp=plan.pregrasp_pose[:3, 3] if has_poses else None,
        start=kinematics.fk(ev.q0)[:3, 3] if ev.q0 is not None else None,
        title="\n".join(textwrap.wrap(f"plan {Status(plan.status).name}: {plan.message}", 100)[:2]),
    )  # fmt: skip
    np.savez_compressed(
        out / "tracks.npz", tracks_px=pred.tracks_px, samples_px=pred.samples_px,
        confidence=pred.confidence, depth_m=ev.point_depth_m, moving=ev.moving,
        plan_ee_poses=plan.ee_poses, plan_waypoints=planned, executed_path=ev.executed,
        intrinsics_K=inputs.intrinsics.K, i0_rgb=inputs.rgb0, i0_depth_m=inputs.depth0_m,
        goal_rgb=ev.goal_rgb, hand_joints=ev.q0 if ev.q0 is not None else np.zeros(0),
    )  # fmt: skip
    return video


def summarize(
    ev: Evaluation,
    video: artifacts.VideoFiles,
    args: argparse.Namespace,
    pred_cfg: TrackPredictorConfig,
    plan_cfg: PlannerNodeConfig,
    topics: Topics,
) -> dict:
    """The summary dict (what summary.json holds)."""
    pred, plan, inputs, executed = ev.pred, ev.plan, ev.inputs, ev.executed
    grasp = plan.ee_poses[plan.grasp_step][:3, 3] if len(plan.ee_poses) else None
    warnings = []
    if ev.q0 is None:
        warnings.append(f"no {topics.joints} in the bag: no hand pose, no executed path")
    elif ev.joints_gap_s > plan_cfg.max_joint_state_age_s:
        warnings.append(
            f"the joint_states nearest I0 are {ev.joints_gap_s:.2f} s away from it "
            f"(the planner node refuses > {plan_cfg.max_joint_state_age_s} s)"
        )
    if inputs.frames_dropped:
        warnings.append(
            f"the video stops after {args.max_video_frames} frames "
            f"({inputs.frames_dropped} later ones left out)"
        )
    if video.mp4 is None and not args.no_mp4:
        warnings.append(f"no MP4: {video.mp4_error}")
    h, w = inputs.rgb0.shape[:2]
    return {
        "tool": PROG,
        "success": bool(plan.ok),
        "bag": str(args.bag),
        "bag_duration_s": ev.bag_duration_s,
        "goal": ev.goal_source,
        "i0": {"offset_s": inputs.offset0_s, "stamp_s": inputs.stamp0_s, "width": w, "height": h,
               "depth_valid_fraction": float(np.isfinite(inputs.depth0_m).mean())},
        "messages": {**inputs.counts, "video_frames": video.frames},
        "tracks": {
            "checkpoint": str(ev.checkpoint), "num_points": pred.num_points,
            "horizon": pred.horizon, "moving_points": int(ev.moving.sum()),
            "points_with_depth": int(np.isfinite(ev.point_depth_m).sum()),
            "mean_confidence": float(pred.confidence.mean()), "sampler": pred_cfg.sampler,
            "sampler_steps": pred_cfg.sampler_steps, "num_samples": pred_cfg.num_samples,
            "seed": args.seed,
        },
        "plan": {
            "status": Status(plan.status).name, "status_code": int(plan.status),
            "message": plan.message, "confidence": float(plan.confidence),
            "poses": len(plan.ee_poses),
            "grasp_step": int(plan.grasp_step) if grasp is not None else None,
            "all_reachable": bool(np.all(plan.reachable)) if len(plan.reachable) else None,
            "moving_points_used": len(plan.moving_point_indices),
            "hand_joints_gap_s": ev.joints_gap_s,
        },
        "executed": {
            "samples": len(executed),
            "path_length_m": float(np.linalg.norm(np.diff(executed, axis=0), axis=1).sum())
            if len(executed) > 1 else 0.0,
            "closest_to_grasp_m": float(np.linalg.norm(executed - grasp, axis=1).min())
            if grasp is not None and len(executed) else None,
        },
        "timings_s": ev.timings,
        "artifacts": {
            "video_gif": video.gif.name, "video_mp4": video.mp4.name if video.mp4 else None,
            "tracks_png": "tracks.png", "ee_paths_png": "ee_paths.png",
            "tracks_npz": "tracks.npz", "summary_json": "summary.json",
            "summary_md": "summary.md",
        },
        "warnings": warnings,
    }  # fmt: skip


def evaluate(args: argparse.Namespace) -> tuple[dict, bool]:
    """Run the evaluation and write the artifacts into ``args.out``; returns (summary, plan ok).
    Raises EvalError (before writing anything) when the input cannot be evaluated."""
    t_start = time.perf_counter()
    pred_cfg, plan_cfg = load_configs(args)
    topics = Topics(
        color=args.color_topic or pred_cfg.color_topic,
        depth=args.depth_topic or pred_cfg.depth_topic,
        info=args.info_topic or pred_cfg.info_topic,
        joints=args.joints_topic or f"/{plan_cfg.spot_name}/joint_states",
        goal=args.goal_topic,
    )
    ev = run_evaluation(args, pred_cfg, plan_cfg, topics)
    t0 = time.perf_counter()
    out = Path(args.out)
    video = write_artifacts(out, ev, args)
    ev.timings["artifacts"] = time.perf_counter() - t0
    ev.timings["total"] = time.perf_counter() - t_start
    summary = summarize(ev, video, args, pred_cfg, plan_cfg, topics)
    artifacts.write_summary(out, summary, title=f"Offline evaluation of {Path(args.bag).name}")
    return summary, bool(ev.plan.ok)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def load_configs(args: argparse.Namespace) -> tuple[TrackPredictorConfig, PlannerNodeConfig]:
    """The two nodes' configs: their defaults, a ROS 2 parameter file's ``track_predictor`` and
    ``planner`` sections, then the command line overrides."""
    try:
        if args.params is not None:
            if not args.params.is_file():
                raise EvalError(f"parameter file {args.params} does not exist")
            pred = load_yaml(TrackPredictorConfig, args.params, "track_predictor")
            plan = load_yaml(PlannerNodeConfig, args.params, "planner")
        else:
            pred, plan = TrackPredictorConfig(), PlannerNodeConfig()
        overrides = {
            "device": args.device, "num_points": args.num_points, "point_mode": args.point_mode,
            "num_samples": args.num_samples, "sampler": args.sampler,
            "sampler_steps": args.sampler_steps, "torch_threads": args.torch_threads,
        }  # fmt: skip
        pred = dataclasses.replace(pred, **{k: v for k, v in overrides.items() if v is not None})
    except ValueError as exc:
        raise EvalError(f"bad parameter: {exc}") from exc
    return pred, plan


def build_parser() -> argparse.ArgumentParser:
    defaults = TrackPredictorConfig()
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Offline evaluation of a bag: track prediction and planning on a recorded "
        "frame and a goal image (no ROS graph, no arm); writes the episode video, the tracks, "
        "the planned vs executed hand path and a summary into --out.",
    )
    parser.add_argument("bag", type=Path, metavar="BAG", help="rosbag2 folder (metadata.yaml)")
    parser.add_argument("--out", type=Path, required=True, metavar="DIR", help="output folder")
    parser.add_argument(
        "--goal",
        type=Path,
        default=None,
        metavar="IMAGE",
        help="goal image file (default: the bag's --goal-topic, if recorded)",
    )
    parser.add_argument(
        "--start",
        type=float,
        default=0.0,
        metavar="S",
        help="I0 is the first colour frame with aligned depth from S seconds after the bag's "
        "first message (default 0)",
    )
    parser.add_argument(
        "--checkpoint",
        default=None,
        metavar="DIR",
        help="track model directory (default: track_predictor's, the shipped model)",
    )
    parser.add_argument(
        "--params",
        type=Path,
        default=None,
        metavar="YAML",
        help="ROS 2 parameter file with track_predictor and/or planner sections, as the nodes "
        "take it (e.g. the robot's camera_xyz / camera_quat_xyzw calibration)",
    )
    parser.add_argument("--seed", type=int, default=0, help="point and sampling seed (default 0)")
    parser.add_argument("--device", default=None, help=f"torch device (default {defaults.device})")
    parser.add_argument(
        "--num-points",
        type=int,
        default=None,
        metavar="N",
        help=f"query points (default {defaults.num_points})",
    )
    parser.add_argument(
        "--point-mode",
        default=None,
        choices=("grid", "random"),
        help=f"query point layout (default {defaults.point_mode})",
    )
    parser.add_argument(
        "--num-samples",
        type=int,
        default=None,
        metavar="K",
        help=f"hypotheses per goal (default {defaults.num_samples})",
    )
    parser.add_argument(
        "--sampler",
        default=None,
        choices=("ddim", "ddpm"),
        help=f"diffusion sampler (default {defaults.sampler})",
    )
    parser.add_argument(
        "--sampler-steps",
        type=int,
        default=None,
        metavar="S",
        help=f"DDIM steps (default {defaults.sampler_steps})",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=None,
        metavar="N",
        help="CPU threads for inference (default: track_predictor's torch_threads, 0 = torch's)",
    )
    parser.add_argument("--color-topic", default=None, help=f"default {defaults.color_topic}")
    parser.add_argument("--depth-topic", default=None, help=f"default {defaults.depth_topic}")
    parser.add_argument("--info-topic", default=None, help=f"default {defaults.info_topic}")
    parser.add_argument(
        "--joints-topic", default=None, help="default /<planner spot_name>/joint_states"
    )
    parser.add_argument(
        "--goal-topic",
        default=artifacts.GOAL_TOPIC,
        help=f"recorded goal image topic (default {artifacts.GOAL_TOPIC})",
    )
    parser.add_argument(
        "--video-fps",
        type=float,
        default=10.0,
        metavar="HZ",
        help="recorded frames per second of bag time in the video (default 10)",
    )
    parser.add_argument(
        "--max-video-frames",
        type=int,
        default=600,
        metavar="N",
        help="at most N recorded frames in the video (default 600)",
    )
    parser.add_argument("--no-mp4", action="store_true", help="write the GIF only")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Evaluate; 0 = plan OK, 1 = artifacts written but no plan, 2 = unusable input."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if not (math.isfinite(args.video_fps) and args.video_fps > 0):
        parser.error(f"--video-fps is {args.video_fps}, expected a rate > 0")
    if args.max_video_frames < 1:
        parser.error(f"--max-video-frames is {args.max_video_frames}, expected >= 1")
    try:
        summary, ok = evaluate(args)
    except EvalError as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return 2
    plan = summary["plan"]
    print(f"{PROG}: I0 at +{summary['i0']['offset_s']:.2f} s, goal from {summary['goal']}")
    print(
        f"{PROG}: {summary['tracks']['moving_points']}/{summary['tracks']['num_points']} "
        f"points move; plan {plan['status']}: {plan['message']}"
    )
    for warning in summary["warnings"]:
        print(f"{PROG}: warning: {warning}")
    files = [v for v in summary["artifacts"].values() if v]
    print(f"{PROG}: wrote {args.out}/ {' '.join(files)} in {summary['timings_s']['total']:.1f} s")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
