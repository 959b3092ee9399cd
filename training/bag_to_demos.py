"""Teleoperation bags -> residual-policy demonstrations in ``training/residual_format.py``

A person teleoperates the arm through one manipulation while ``t2a-record`` records the camera
(colour, aligned depth, camera_info) and ``/spot/joint_states`` (six arm joints and the finger
``arm_f1x``). Each bag, or each ``--segments START:END`` window of one (seconds from the bag's
first message), becomes one demo that ``ResidualDataset`` and ``train_residual.py`` read as they
read the simulator's, next to them or alone. A window should start before the hand reaches the
object (its first frame is I0) and end after the arm has left the view (its last frame is the
goal image, unless ``--goal`` gives one).

**From joints to labels.** The gripper opening (``arm_f1x``, 0 = closed .. 1 = open) says when
the hand holds the object: from the first close (opening below ``gripper_closed_below``, after
having been above it) until the fingers start to open again (the opening rises
``gripper_release_delta`` above its least since the close). Within that, the motion span runs
from the last moment the hand is still at its grasp pose to the first moment it is at its
release pose for good (``motion_threshold_m``/``_rad``), as ``track_data``'s ``"motion"`` time
span and ``episode.track_step_ticks`` spread the H track steps over the object's motion. Plan
step ``k`` is the moment ``t_k`` of ``linspace(onset, end, H + 1)``; the expert action
``a*_k = FK(q(t_k))`` is the recorded hand pose there (step 0: the grasp pose, object at rest),
and the gripper label is the recorded gripper state at ``t_k``.

**Ticks.** The recording is resampled at the controller's rate (5 Hz): tick ``i`` at
``t_I0 + i / rate`` sees the latest colour frame (``rgb``) and ``hand = FK(q(t))``; its plan step
is the one the controller would be at (0 until the motion starts, then the last ``t_k`` passed);
ticks run until one period after the motion span, as the controller queries its policy until it
has settled on the last step.

**The plan** is what the robot would have executed: tracks of I0 towards the goal (the track
model, as ``track_predictor`` runs it with its defaults, or ``--tracks lk``: Lucas-Kanade through
the recording, a "perfect predictor" of what happened), then ``plan_for_arm`` with the planner
node's defaults (aligned depth of I0, the hand pose at I0, IK reachability from the joints at I0,
``T_body_cam`` from ``--camera-xyz``/``--camera-quat-xyzw``, default t2a_sim's camera). The
training target is then ``a*_k`` relative to that plan, as for simulated demos. A demo whose plan
fails, or whose recording cannot be labelled, is skipped with the reason printed.

Layout and keys are ``residual_format``'s (``OUT/index.json``, ``OUT/<split>/<task>/<seed>_00.npz``
and ``.json``); the ``seed`` of a demo is a hash of its bag name and window (the unit the
train/validation split holds out); ``object_poses`` are NaN (unknown outside the simulator),
``track_on_object`` marks the points the planner found moving, and ``clean_plan_poses`` equal
``plan_poses`` (nothing is perturbed). Run as ``python training/bag_to_demos.py BAG ... --out
DIR``; then ``python training/train_residual.py --data DIR ...``.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import json
import sys
import zlib
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from t2a_bringup.core.bag import BagError
from t2a_bringup.core.bag_frames import (
    CLOCKS,
    BagFrames,
    BagTopics,
    Frame,
    JointTrajectory,
    sample_and_hold,
)
from t2a_common.core import kinematics, spot_arm
from t2a_common.core.config import check, fields, load_yaml, param, to_dict
from t2a_common.core.geometry import Intrinsics, pose_to_matrix
from t2a_common.core.se3 import so3_log
from t2a_control.core.controller import STATES, ControllerConfig
from t2a_perception.core.frames import depth_at_points
from t2a_perception.core.goal_tracks import predict_goal_tracks
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_perception.core.predictor import POINT_MODES, TrackPredictor, sample_query_points
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.planner import plan_for_arm
from training.bag_to_tracks import parse_segment
from training.engine import add_config_flags, config_from_flags
from training.labelers import LucasKanadeLabeler
from training.residual_format import (
    FORMAT,
    DemoConfig,
    demo_path,
    intrinsics_array,
    nominal_T_body_cam,
    save_demo,
    write_demo_index,
)

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_CHECKPOINT = ROOT / "ros2_ws/src/t2a_perception/models/track_default"
TRACK_SOURCES = ("model", "lk")
_CONTROLLER = ControllerConfig()


@dataclasses.dataclass(frozen=True)
class TeleopConfig:
    """How a teleoperation recording becomes a demo (stored in every demo's metadata)."""

    horizon: int = param(8, "track/plan steps H after P0 (must equal the policy's horizon)")
    rate_hz: float = param(_CONTROLLER.rate_hz, "tick rate: the controller's rate (Hz)")
    tracks: str = param("model", f"where the plan's tracks come from, one of {TRACK_SOURCES}")
    checkpoint: str = param("", "track model directory; '' = the shipped default model")
    device: str = param("cpu", "torch device of the track model")
    num_points: int = param(400, "query points P0 (track_predictor's default; grid: a square)")
    point_mode: str = param("grid", f"how P0 is placed, one of {POINT_MODES}")
    num_samples: int = param(4, "track model hypotheses per prediction (track_predictor's)")
    sampler_steps: int = param(10, "DDIM steps of the track model (track_predictor's)")
    seed: int = param(0, "seed of the query points and the track model's sampling")
    lk_fps: float = param(15.0, "frame rate the LK labeller follows the recording at (Hz)")
    lk_max_side: int = param(320, "longest image side the LK labeller works at (px)")
    gripper_closed_below: float = param(
        0.5, "gripper opening (0 closed .. 1 open) below which the hand holds the object"
    )
    gripper_release_delta: float = param(
        0.05, "the release starts when the opening rises this far above its least while held"
    )
    motion_threshold_m: float = param(
        0.005, "hand displacement above which it counts as moving (m), as the controller's tol."
    )
    motion_threshold_rad: float = param(0.03, "hand rotation above which it counts as moving")
    depth_max_offset_s: float = param(0.05, "max time between I0 and its depth image (s)")
    depth_scale: float = param(0.001, "metres per unit of a 16UC1 depth image")
    camera_xyz: tuple[float, ...] = param(
        (), "T_body_cam translation (m); () = the planner node's default (t2a_sim's camera)"
    )
    camera_quat_xyzw: tuple[float, ...] = param(
        (), "T_body_cam rotation, quaternion x y z w; () = the planner node's default"
    )
    check_reachability: bool = param(True, "check every plan pose with the arm's IK")

    def __post_init__(self) -> None:
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(self.rate_hz > 0, f"rate_hz must be > 0 Hz, got {self.rate_hz}")
        check(
            self.tracks in TRACK_SOURCES,
            f"tracks must be one of {TRACK_SOURCES}, got {self.tracks!r}",
        )
        check(self.num_points >= 1, f"num_points must be >= 1, got {self.num_points}")
        check(self.point_mode in POINT_MODES, f"point_mode must be one of {POINT_MODES}")
        check(self.num_samples >= 1 and self.sampler_steps >= 1, "num_samples, sampler_steps >= 1")
        check(self.lk_fps > 0, f"lk_fps must be > 0 Hz, got {self.lk_fps}")
        check(self.lk_max_side >= 32, f"lk_max_side must be >= 32 px, got {self.lk_max_side}")
        check(
            0 < self.gripper_closed_below < 1 and 0 < self.gripper_release_delta < 1,
            "gripper_closed_below and gripper_release_delta must be in (0, 1), got "
            f"{self.gripper_closed_below}, {self.gripper_release_delta}",
        )
        check(
            self.motion_threshold_m > 0 and self.motion_threshold_rad > 0,
            "motion thresholds must be > 0",
        )
        check(self.depth_max_offset_s >= 0, "depth_max_offset_s must be >= 0 s")
        check(self.depth_scale > 0, f"depth_scale must be > 0, got {self.depth_scale}")
        check(
            (len(self.camera_xyz), len(self.camera_quat_xyzw)) in ((0, 0), (3, 4)),
            "give both camera_xyz (3 values) and camera_quat_xyzw (4 values), or neither; got "
            f"{self.camera_xyz}, {self.camera_quat_xyzw}",
        )

    @property
    def T_body_cam(self) -> np.ndarray:
        """The camera extrinsics the planner uses (4, 4)."""
        if not self.camera_xyz:
            return nominal_T_body_cam()
        return pose_to_matrix(self.camera_xyz, self.camera_quat_xyzw)


class SkipDemo(Exception):
    """A recording that gives no demo; the message says why."""


# -------------------------------------------------------------------------------------------
# Labels from the joints
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Motion:
    """When the recorded hand held and moved the object (s, on the bag's clock)."""

    close_s: float  # the gripper closed
    onset_s: float  # the last moment at the grasp pose
    end_s: float  # the first moment at the final pose for good
    open_s: float  # the gripper started to open again (or the recording ended)
    step_times_s: np.ndarray  # (H+1,) t_k, linspace(onset, end, H + 1)


def gripper_opening(f1x_rad: np.ndarray) -> np.ndarray:
    """Opening in [0, 1] (0 closed) from ``arm_f1x`` (rad), as ``t2a_control.core.driver``."""
    return np.clip(np.asarray(f1x_rad, float) / spot_arm.GRIPPER_JOINT.lower, 0.0, 1.0)


def _moved(a: np.ndarray, b: np.ndarray, cfg: TeleopConfig) -> np.ndarray:
    """Whether hand poses ``a (n, 4, 4)`` are farther than the thresholds from ``b (4, 4)``."""
    dp = np.linalg.norm(a[:, :3, 3] - b[:3, 3], axis=1)
    dr = np.array([np.linalg.norm(so3_log(R @ b[:3, :3].T)) for R in a[:, :3, :3]])
    return (dp > cfg.motion_threshold_m) | (dr > cfg.motion_threshold_rad)


def find_motion(joints: JointTrajectory, cfg: TeleopConfig, after_s: float) -> Motion:
    """The grasp, motion span and release in joint states (arm joints then ``arm_f1x``).

    Raises SkipDemo when the gripper never closes after ``after_s`` (I0) having been open, or
    the hand does not move while it is closed.
    """
    t = joints.times_s
    closed = gripper_opening(joints.positions[:, 6]) < cfg.gripper_closed_below  # (T,)
    closes = np.flatnonzero(closed[1:] & ~closed[:-1] & (t[1:] >= after_s)) + 1
    if len(closes) == 0:
        opening = gripper_opening(joints.positions[:, 6])
        raise SkipDemo(
            "the gripper never closes after I0 (opening from "
            f"{opening.min():.2f} to {opening.max():.2f}, closed below "
            f"{cfg.gripper_closed_below}); the window must start with the gripper open"
        )
    i = int(closes[0])
    # The release starts when the fingers start to open, well before the opening crosses the
    # threshold again (an object between the fingers keeps it above 0 while held).
    opening = gripper_opening(joints.positions[i:, 6])
    opens = np.flatnonzero(opening > np.minimum.accumulate(opening) + cfg.gripper_release_delta)
    j = i + int(opens[0]) if len(opens) else len(t) - 1
    hands = kinematics.fk_batch(joints.positions[i : j + 1, :6])  # (n, 4, 4)
    left = np.flatnonzero(_moved(hands, hands[0], cfg))
    if len(left) == 0:
        raise SkipDemo(
            f"the hand does not move while the gripper is closed ({t[i]:.2f} to {t[j]:.2f} s)"
        )
    onset = i + int(left[0]) - 1
    away = np.flatnonzero(_moved(hands, hands[-1], cfg))
    last_away = int(away[-1]) if len(away) else 0  # none: it ends within reach of its start
    end = i + min(max(last_away + 1, int(left[0])), j - i)
    step_times = np.linspace(t[onset], t[end], cfg.horizon + 1)
    return Motion(float(t[i]), float(t[onset]), float(t[end]), float(t[j]), step_times)


def expert_labels(
    joints: JointTrajectory, motion: Motion, cfg: TeleopConfig
) -> tuple[np.ndarray, np.ndarray]:
    """``a*_k`` ``(H+1, 4, 4)`` = recorded hand poses at the step times, and the gripper label
    ``(H+1,)`` (1 = closed) recorded there (just before the release at the last step)."""
    q = joints.at(motion.step_times_s)  # (H+1, 7)
    before_open = np.minimum(motion.step_times_s, motion.open_s - 1e-3)
    closed = gripper_opening(joints.at(before_open)[:, 6]) < cfg.gripper_closed_below
    return kinematics.fk_batch(q[:, :6]), closed.astype(np.float64)


def tick_steps(tick_times_s: np.ndarray, step_times_s: np.ndarray) -> np.ndarray:
    """Plan step of each tick, as the controller counts: 0 until the motion starts, then the
    last step time passed."""
    steps = np.searchsorted(step_times_s, tick_times_s, side="right") - 1
    return np.clip(steps, 0, len(step_times_s) - 1).astype(np.int16)


def tick_states(tick_times_s: np.ndarray, motion: Motion) -> np.ndarray:
    """Controller state of each tick (index into ``STATES``): approach until the gripper closes,
    grasp until the motion starts, then execute."""
    names = np.where(
        tick_times_s < motion.close_s,
        "approach",
        np.where(tick_times_s < motion.onset_s, "grasp", "execute"),
    )
    return np.array([STATES.index(str(n)) for n in names], np.int8)


# -------------------------------------------------------------------------------------------
# Tracks of I0
# -------------------------------------------------------------------------------------------


def model_tracks(
    predictor: TrackPredictor,
    image0: np.ndarray,
    goal: np.ndarray,
    depth0: np.ndarray,
    intrinsics: Intrinsics,
    cfg: TeleopConfig,
) -> np.ndarray:
    """``(H+1, N, 2)`` pixel tracks of the query points, as ``track_predictor`` predicts them."""
    if predictor.horizon != cfg.horizon:
        raise ValueError(
            f"the track model predicts {predictor.horizon} steps, the demos need --horizon "
            f"{cfg.horizon}; use a model of that horizon or change --horizon"
        )
    pred_cfg = TrackPredictorConfig(
        num_points=cfg.num_points, point_mode=cfg.point_mode, num_samples=cfg.num_samples,
        sampler="ddim", sampler_steps=cfg.sampler_steps,
    )  # fmt: skip
    out = predict_goal_tracks(predictor, image0, goal, depth0, intrinsics, pred_cfg, seed=cfg.seed)
    return out.prediction.tracks_px


def lk_tracks(
    frames: BagFrames, window: tuple[float, float | None], i0: Frame, motion: Motion,
    cfg: TeleopConfig,
) -> np.ndarray:  # fmt: skip
    """``(H+1, M, 2)`` pixel tracks of the query points the LK labeller followed through the
    recording: step 0 at I0, steps 1..H at the step times; the M points it kept.

    The labeller goes from I0 straight to the frame at the motion onset, then frame by frame to
    the end of the motion: the object is at rest until the onset, so its points are where they
    were in I0, while following the arm's approach frame by frame would lose every point the arm
    passes in front of, however briefly.
    """
    grid = (motion.onset_s + k / cfg.lk_fps for k in itertools.count())
    times, images = [i0.time_s], [_shrink(i0.rgb, cfg.lk_max_side)]
    for t, frame in sample_and_hold(frames.color_frames(*window), grid):
        times.append(t)
        images.append(_shrink(frame.rgb, cfg.lk_max_side))
        if t >= motion.end_s:
            break
    if times[-1] < motion.end_s:
        raise SkipDemo(f"the colour stream ends before the motion does ({motion.end_s:.2f} s)")
    h, w = i0.rgb.shape[:2]
    small_h, small_w = images[0].shape[:2]
    points = sample_query_points(h, w, cfg.num_points, cfg.point_mode, seed=cfg.seed)
    scale = np.array([small_w / w, small_h / h], np.float32)
    # Pixel centres are at integers, so u_small = (u + 0.5) * scale - 0.5.
    tracks, valid = LucasKanadeLabeler().label(np.stack(images), (points + 0.5) * scale - 0.5)
    if not valid.any():
        raise SkipDemo("the LK labeller lost every query point")
    later = np.asarray(times[1:])
    picks = [0] + [1 + int(np.argmin(np.abs(later - t))) for t in motion.step_times_s[1:]]
    out = (tracks[picks][:, valid] + 0.5) / scale - 0.5
    out[0] = points[valid]  # the exact query points, not a round trip through the scaling
    return out.astype(np.float32)


def _shrink(rgb: np.ndarray, max_side: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    scale = max_side / max(h, w)
    if scale >= 1.0:
        return rgb
    return cv2.resize(rgb, (round(w * scale), round(h * scale)), interpolation=cv2.INTER_AREA)


# -------------------------------------------------------------------------------------------
# One demo
# -------------------------------------------------------------------------------------------


def demo_seed(bag: Path, window: tuple[float, float | None]) -> int:
    """The demo's seed: a 6-digit hash of its bag's name and window (stable across runs)."""
    end = "" if window[1] is None else f"{window[1]:g}"
    return zlib.crc32(f"{bag.name}@{window[0]:g}:{end}".encode()) % 1_000_000


def convert_demo(
    frames: BagFrames,
    window: tuple[float, float | None],
    cfg: TeleopConfig,
    planner_cfg: PlannerConfig | None = None,
    predictor: TrackPredictor | None = None,
    goal: np.ndarray | None = None,
) -> dict[str, Any]:
    """One window of a bag -> the demo arrays of ``residual_format`` (``meta`` without the
    directory keys ``split``/``task``/``seed``/``variant``). Raises SkipDemo with the reason."""
    planner_cfg = planner_cfg or PlannerConfig()
    H, period = cfg.horizon, 1.0 / cfg.rate_hz
    joints = frames.joint_states(spot_arm.ALL_JOINT_NAMES, *window)
    stream = frames.color_frames(*window)
    i0 = next(stream, None)
    if i0 is None:
        raise SkipDemo(f"no colour frame on {frames.topics.color} in the window")
    motion = find_motion(joints, cfg, after_s=i0.time_s)

    # Ticks until one period after the motion; the last frame of the window is the goal.
    grid = (i0.time_s + k * period for k in itertools.count())
    ticks: list[tuple[float, Frame]] = []
    last = i0

    def remember(it):
        nonlocal last
        for f in it:
            last = f
            yield f

    for t, frame in sample_and_hold(itertools.chain([i0], remember(stream)), grid):
        if t <= motion.end_s + period:
            ticks.append((t, frame))
    if goal is None:
        goal = last.rgb
    tick_times = np.array([t for t, _ in ticks])
    rgb = np.stack([f.rgb for _, f in ticks])  # (T, H, W, 3)
    height, width = i0.rgb.shape[:2]

    intr = frames.intrinsics()
    if (intr.width, intr.height) != (width, height):
        raise SkipDemo(
            f"camera_info is {intr.width}x{intr.height} but the colour images {width}x{height}"
        )
    depth0 = frames.depth_near(i0, cfg.depth_max_offset_s)
    if depth0 is None:
        raise SkipDemo(
            f"no aligned depth on {frames.topics.depth} within {cfg.depth_max_offset_s} s of I0 "
            "(the planner needs it to lift P0)"
        )
    if depth0.shape != (height, width):
        raise SkipDemo(f"depth is {depth0.shape[::-1]} (w, h), colour {(width, height)}")

    q0 = joints.at(i0.time_s)[:6]
    if cfg.tracks == "model":
        if predictor is None:
            raise ValueError("tracks='model' needs a TrackPredictor")
        tracks = model_tracks(predictor, i0.rgb, goal, depth0, intr, cfg)
    else:
        tracks = lk_tracks(frames, window, i0, motion, cfg)
    plan = plan_for_arm(
        tracks, intr, cfg.T_body_cam, q0, planner_cfg, depth=depth0,
        check_reachability=cfg.check_reachability,
    )  # fmt: skip
    if not plan.ok:
        raise SkipDemo(f"plan failed ({plan.status.name}): {plan.message}")

    expert_poses, expert_closed = expert_labels(joints, motion, cfg)
    on_object = np.zeros(tracks.shape[1], bool)
    on_object[np.asarray(plan.moving_point_indices, int)] = True
    meta = {
        "format": FORMAT,
        "source": "teleop",
        "bag": str(frames.path.resolve()),
        "window_s": list(window),
        "clock": frames.clock,
        "tracks_from": cfg.tracks,
        "plan_message": plan.message,
        "times_s": {
            "i0": i0.time_s,
            "close": motion.close_s,
            "onset": motion.onset_s,
            "end": motion.end_s,
            "open": motion.open_s,
        },
        "success": True,
        "final_state": "teleop",
        "noise": None,
        "ticks": len(ticks),
        "teleop_config": to_dict(cfg),
        "planner_config": to_dict(planner_cfg),
    }
    return {
        "rgb": rgb,
        "step": tick_steps(tick_times, motion.step_times_s),
        "hand": kinematics.fk_batch(joints.at(tick_times)[:, :6]),
        "state": tick_states(tick_times, motion),
        "time": tick_times - i0.time_s,
        "goal_rgb": np.ascontiguousarray(goal, np.uint8),
        "tracks_px": np.asarray(tracks, np.float32),
        "track_on_object": on_object,
        # As the perception node publishes them with the tracks, and the calibration the plan used.
        "tracks_depth_m": depth_at_points(depth0, np.asarray(tracks)[0]),
        "intrinsics": intrinsics_array(intr),
        "T_body_cam": cfg.T_body_cam,
        "plan_poses": np.asarray(plan.ee_poses, np.float64),
        "plan_times": np.asarray(plan.times_from_start, np.float64),
        "plan_pregrasp": np.asarray(plan.pregrasp_pose, np.float64),
        "grasp_step": np.asarray(plan.grasp_step, np.int64),
        "clean_plan_poses": np.asarray(plan.ee_poses, np.float64),
        "expert_poses": expert_poses,
        "expert_gripper_closed": expert_closed,
        "object_poses": np.full((H + 1, 4, 4), np.nan),
        "success": np.asarray(True),
        "meta": meta,
    }


def demo_config(cfg: TeleopConfig, width: int, height: int) -> DemoConfig:
    """The ``DemoConfig`` recorded in ``index.json`` (camera size, horizon, points; no noise)."""
    return DemoConfig(
        width=width, height=height, horizon=cfg.horizon, num_points=cfg.num_points,
        clean_fraction=1.0,
    )  # fmt: skip


def _existing_config(out: Path) -> dict[str, Any] | None:
    path = out / "index.json"
    if not path.is_file():
        return None
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} has format {index.get('format')!r}, expected {FORMAT!r}")
    return index["demo_config"]


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Convert teleoperation bags to residual demos; returns the exit status (1: none made)."""
    p = argparse.ArgumentParser(
        description="Convert teleoperation bags (camera + /spot/joint_states, from t2a-record) "
        "into residual-policy demos that train_residual.py reads (residual_format.py).",
    )
    p.add_argument("bags", nargs="+", help="rosbag2 folders")
    p.add_argument("--out", required=True, help="demo directory (created; may hold other demos)")
    p.add_argument(
        "--segments",
        nargs="+",
        default=[],
        metavar="START:END",
        help="time windows in s from each bag's first message, one demo each (applied to every "
        "bag given); default: the whole bag",
    )
    p.add_argument("--task", default="teleop", help="task name the demos are filed under")
    p.add_argument("--split", default="teleop", help="split name the demos are filed under")
    p.add_argument(
        "--goal", default="", help="goal image file for every demo (default: last frame)"
    )
    p.add_argument("--config", default="", help="YAML of TeleopConfig fields (flags override it)")
    p.add_argument("--planner-config", default="", help="YAML of PlannerConfig overrides")
    p.add_argument("--color-topic", default=BagTopics.color, help="colour image topic")
    p.add_argument("--depth-topic", default=BagTopics.depth, help="aligned depth topic")
    p.add_argument("--info-topic", default=BagTopics.info, help="colour camera_info topic")
    p.add_argument("--joints-topic", default=BagTopics.joints, help="spot_ros2 joint_states")
    p.add_argument(
        "--clock",
        choices=CLOCKS,
        default="header",
        help="align frames and joints by header stamps or by the recorder's receive times",
    )
    add_config_flags(p, TeleopConfig, choices={"tracks": TRACK_SOURCES, "point_mode": POINT_MODES})
    args = vars(p.parse_args(argv))
    known = {f.name for f in fields(TeleopConfig)}
    try:
        cfg = config_from_flags(
            TeleopConfig, {k: v for k, v in args.items() if k in known}, args["config"]
        )
        planner_cfg = (
            load_yaml(PlannerConfig, args["planner_config"])
            if args["planner_config"]
            else PlannerConfig()
        )
        windows = [parse_segment(s) for s in args["segments"]]
    except ValueError as exc:
        p.error(str(exc))
    windows = [(w.start_s, w.end_s) for w in windows] or [(0.0, None)]
    goal = None
    if args["goal"]:
        bgr = cv2.imread(args["goal"], cv2.IMREAD_COLOR)
        if bgr is None:
            p.error(f"cannot read the goal image {args['goal']}")
        goal = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    predictor = None
    if cfg.tracks == "model":
        checkpoint = Path(cfg.checkpoint) if cfg.checkpoint else DEFAULT_CHECKPOINT
        predictor = TrackPredictor(checkpoint, device=cfg.device)
    topics = BagTopics(
        args["color_topic"], args["depth_topic"], args["info_topic"], args["joints_topic"]
    )
    out = Path(args["out"])
    made = skipped = 0
    for bag in map(Path, args["bags"]):
        try:
            frames = BagFrames(bag, topics, args["clock"], cfg.depth_scale)
        except BagError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return 1
        with frames:
            for window in windows:
                seed = demo_seed(bag, window)
                name = f"{bag}[{window[0]:g}:{'' if window[1] is None else f'{window[1]:g}'}]"
                base = demo_path(out, args["split"], args["task"], seed, 0)
                if base.with_suffix(".json").is_file():
                    print(f"{name}: demo {base} exists, kept")
                    continue
                try:
                    demo = convert_demo(frames, window, cfg, planner_cfg, predictor, goal)
                    height, width = demo["rgb"].shape[1:3]
                    dcfg = demo_config(cfg, width, height)
                    old = _existing_config(out)
                    if old is not None and old != to_dict(dcfg):
                        diff = sorted(k for k in old if old[k] != to_dict(dcfg).get(k))
                        raise SkipDemo(
                            f"{out} holds demos made with other settings (differing: {diff}); "
                            "use another --out"
                        )
                except (SkipDemo, BagError) as exc:
                    print(f"{name}: skipped: {exc}")
                    skipped += 1
                    continue
                demo["meta"].update(
                    split=args["split"], task=args["task"], seed=seed, variant=0,
                    demo_config=to_dict(dcfg),
                )  # fmt: skip
                demo["meta"] = np.asarray(json.dumps(demo["meta"]))
                out.mkdir(parents=True, exist_ok=True)
                save_demo(base, demo)
                write_demo_index(out, dcfg)
                made += 1
                steps = demo["step"]
                print(
                    f"{name}: {len(steps)} ticks (steps {int(steps.min())}..{int(steps.max())}), "
                    f"{demo['tracks_px'].shape[1]} tracks ({cfg.tracks}) -> {base}.npz"
                )
    print(
        f"{made} demo(s) written, {skipped} skipped. Train: python training/train_residual.py "
        f"--data {out} --horizon {cfg.horizon} --out RUN ..."
    )
    return 0 if made or not skipped else 1


if __name__ == "__main__":
    sys.exit(main())
