"""Demonstrations for the residual policy (Track2Act section 2.4) and the torch dataset over them.

**What a demonstration is.** One t2a_sim episode ``(split, task, seed)``:

1. the scripted expert solves a twin of the episode (:func:`demo_reference`): I0, its depth, the
   goal image (the expert's last frame), ground-truth tracks of P0 at H+1 times, and, beyond what
   ``t2a_bringup.core.episode.expert_reference`` returns, the true pose of the moved part at those
   same H+1 times and the hand pose the expert held the part with;
2. the planner turns the tracks into the open-loop plan ``a_bar_0..a_bar_H`` (``make_plan``);
   with ``model_plan_fraction`` > 0, that share of the variants plans instead from the *track
   model's* tracks of I0 towards the goal (the paper's recipe: the residual learns to correct the
   plan the robot will actually execute, and sees the predicted tracks); the plan is then, for
   most demos, perturbed (:func:`perturb_plan`): a grasp error (a rigid offset
   and rotation of the hand in the tool frame, the same at every step, as a wrong ``e1`` would
   give), plus independent per-step noise. The paper's point is that the residual corrects such
   plan errors, so the demos must contain them;
3. the controller executes that plan in closed loop at its rate (5 Hz), in ``residual`` mode,
   with a privileged demonstrator in the policy's seat (:class:`OraclePolicy`): at every tick on
   which the controller consults its policy it returns the exact correction of the current plan
   step, and records what ``PolicyRunner`` would see there (current image, plan step, hand pose).

**Alignment of plan steps and expert actions (the labels).** Plan step ``k`` is track step
``k``, which is a moment ``t_k`` of the expert's rollout (the tracks' own time base: step 0 = I0,
steps 1..H evenly over the span from the object's first motion to the end of the rollout). The
corrected hand pose for step ``k`` is the object-frame-consistent pose::

    a*_k = T_body_part(t_k) @ inv(T_body_part(t_grasp)) @ G

the hand held on the part as the expert held it (``t_grasp`` = the last tick before the expert
starts moving the part), carried along the part's *true* motion. It is what the hand should do at
step ``k`` to move the part exactly as the goal demands, whatever the plan got wrong. Where the
expert's hand did something else at ``t_k`` (it lets go and retracts before the goal frame),
``a*_k`` keeps holding the part at rest, which is what a plan step means. The grasp ``G`` takes
the expert's grasp *position*; its orientation is the clean plan's grasp orientation (the paper's
``e1`` keeps the current hand orientation) turned towards the expert's by at most
``expert_grasp_turn_rad`` (default 0): the expert often turns the hand by more than a radian to
grip a handle its way, far beyond the controller's residual clip (``max_residual_rotation_rad``),
and in this sim the weld grasp does not need it. The gripper label is "closed" from the plan's
grasp step on. Labels are per plan step; a tick at plan step ``s`` is trained on the chunk
``a*_s .. a*_{s+h-1}`` (``action_chunks``), exactly how ``PolicyRunner`` reads a chunk (row ``j``
is for plan step ``step + j``). The demonstrator executes the residual label of the current step
itself, so the recorded states are those a perfect policy would visit; with ``dart_fraction`` > 0
that share of the variants executes a lagging correction instead (:class:`OraclePolicy`),
so the states also include hands a learned policy has not corrected yet, labelled exactly.

Layout of a demo directory ``OUT``::

    OUT/index.json                              every finished demo, plus the DemoConfig used
    OUT/<split>/<task>/<seed>_<variant>.npz     one demo (seed 6 digits, variant 2 digits)
    OUT/<split>/<task>/<seed>_<variant>.json    its metadata; its presence marks it finished

A demo ``.npz`` (``numpy.load``; T recorded ticks, N tracked points, H x W camera images, H+1
plan steps; poses are ``T_body_tool`` / ``T_body_part`` in the body frame, metres):

=====================  ======================  ===============================================
key                    shape / dtype           meaning
=====================  ======================  ===============================================
rgb                    (T, H, W, 3) uint8      the camera frame I_t of each tick ("image")
step                   (T,) int16              plan step the controller passed ("step")
hand                   (T, 4, 4) float64       measured hand pose at the tick ("ee_pose")
state                  (T,) int8               controller state (index into controller.STATES)
time                   (T,) float64            sim time of the tick (s)
executed_share         (T,) float32            share of the label the demonstrator executed
                                               (1 unless DART, see OraclePolicy)
goal_rgb               (H, W, 3) uint8         goal image G (the expert's final frame)
tracks_px              (H+1, N, 2) float32     ground-truth tracks of P0, pixels at W x H
track_on_object        (N,) bool               point lies on the moved part
tracks_depth_m         (N,) float32            depth of P0 in I0 (m, NaN = none), as PointTracks
intrinsics             (6,) float64            width, height, fx, fy, cx, cy of I0 and the tracks
T_body_cam             (4, 4) float64          the camera calibration the stack believes (nominal)
plan_poses             (H+1, 4, 4) float64     the executed (perturbed) open-loop plan a_bar_k
plan_times             (H+1,) float64          when the plan reaches each step (s from start)
plan_pregrasp          (4, 4) float64          its pre-grasp pose
grasp_step             () int64                plan step at which the gripper closes
clean_plan_poses       (H+1, 4, 4) float64     the plan before the injected noise
expert_poses           (H+1, 4, 4) float64     the labels a*_k (see above)
expert_gripper_closed  (H+1,) float64          gripper label per plan step, 1 = closed
object_poses           (H+1, 4, 4) float64     true pose of the moved part at t_k
success                () bool                 the task's success test after the episode
meta                   () str                  JSON: task, split, seed, variant, noise drawn,
                                               outcome, DemoConfig
=====================  ======================  ===============================================

Generation (resumable, seeded; a demo depends only on ``(split, task, seed, variant)`` and the
config, never on the worker that made it)::

    python training/residual_data.py --out data/residual --splits MG G \\
        --episodes-per-task 40 --variants 2 --workers 2

The torch side (:class:`ResidualDataset`, :func:`collate_residual`) turns every recorded tick
into one sample holding exactly the batch ``ResidualPolicy.compute_loss`` expects, prepared the
way ``PolicyRunner`` prepares an observation (same resize, same point selection, same plan and
gripper tokens).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
import zlib
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from t2a_bringup.core.episode import (
    EpisodeConfig,
    Reference,
    expert_reference,
    make_plan,
    run_episode,
    sim_config,
)
from t2a_common.core import kinematics
from t2a_common.core.config import check, fields, from_dict, load_yaml, param, to_dict
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.images import pixels_to_normalized, resize_image
from t2a_common.core.se3 import so3_exp, so3_log
from t2a_control.core.controller import STATES, ControllerConfig
from t2a_control.core.policy import (
    PolicyConfig,
    action_chunks,
    action_targets,
    residual_targets,
)
from t2a_control.core.policy_runtime import points_in_body, select_points
from t2a_perception.core.frames import depth_at_points
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.ee_plan import Plan
from t2a_sim.core.config import SimConfig
from t2a_sim.core.dataset import plan_jobs, save_episode
from t2a_sim.core.env import SimEnv
from t2a_sim.core.scene import camera_pose, optical_from_mjcam
from t2a_sim.core.tasks import SPLITS, TASKS
from training.engine import add_config_flags, config_from_flags
from training.track_data import held_out_keys

FORMAT = "t2a_residual_demo/1"
SUBSETS = ("train", "val", "all")


# -------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """How demonstrations are generated (stored in every demo's metadata and in the index)."""

    width: int = param(320, "camera width (px) of I_t, the goal and the tracks")
    height: int = param(240, "camera height (px)")
    horizon: int = param(8, "track/plan steps H after P0 (must equal the policy's horizon)")
    num_points: int = param(400, "query points P0 of the ground-truth tracks")
    object_fraction: float = param(0.5, "share of P0 sampled on the moved part")
    max_time_s: float = param(60.0, "sim time after which a demo stops (s)")
    clean_fraction: float = param(0.2, "share of demos executed on the unperturbed plan (1)")
    grasp_offset_max_m: float = param(
        0.03, "injected grasp error: tool-frame offset of uniform direction, length U(0, max) (m)"
    )
    grasp_rotation_max_rad: float = param(
        0.15, "injected grasp error: tool-frame rotation of uniform axis, angle U(0, max) (rad)"
    )
    step_noise_m: float = param(0.004, "std of independent per-step plan position noise (m)")
    step_noise_rad: float = param(0.02, "std per axis of independent per-step rotation noise (rad)")
    expert_grasp_turn_rad: float = param(
        0.0,
        "the labels' grasp orientation turns from the clean plan's towards the expert's by at "
        "most this (rad); 0 keeps the plan's orientation (see the module docstring)",
    )
    plan_attempts: int = param(
        5, "noise draws tried until every perturbed pose is reachable; then the clean plan (1)"
    )
    model_plan_fraction: float = param(
        0.0,
        "share of variants whose open-loop plan comes from the track model's predicted tracks "
        "(what the robot executes) instead of the ground truth; the policy then also sees the "
        "predicted tracks. A variant whose predicted plan fails is recorded as failed (1)",
    )
    track_checkpoint: str = param(
        "", "track model of model plans ('' = the shipped default, t2a_perception/models)"
    )
    dart_fraction: float = param(
        0.7,
        "share of variants whose demonstrator executes its correction late (DART; noise too "
        "with dart_noise_*): the recorded labels stay exact, the recorded states include "
        "hands a learned policy has not corrected yet (1)",
    )
    dart_rate: float = param(
        0.5,
        "DART: per policy call (once a tick, twice on a tick that changes state), the executed "
        "share of the correction closes this part of its gap to 1",
    )
    dart_kick_prob: float = param(
        0.05, "DART: per policy call, chance that the executed share drops again to U(0, 1)"
    )
    dart_noise_m: float = param(
        0.0,
        "DART: std per axis of executed translation noise (m); keep it well under the "
        "controller's position_tolerance_m, or the hand never counts as arrived",
    )
    dart_noise_rad: float = param(
        0.0, "DART: std per axis of executed rotation noise (rad); see dart_noise_m"
    )

    def __post_init__(self) -> None:
        check(self.width >= 16 and self.height >= 16, f"bad size {self.width}x{self.height}")
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(self.num_points >= 4, f"num_points must be >= 4, got {self.num_points}")
        check(
            0 <= self.object_fraction <= 1,
            f"object_fraction must be in [0, 1], got {self.object_fraction}",
        )
        check(self.max_time_s > 0, f"max_time_s must be > 0 s, got {self.max_time_s}")
        check(
            0 <= self.clean_fraction <= 1,
            f"clean_fraction must be in [0, 1], got {self.clean_fraction}",
        )
        for name in (
            "grasp_offset_max_m",
            "grasp_rotation_max_rad",
            "step_noise_m",
            "step_noise_rad",
            "expert_grasp_turn_rad",
            "dart_noise_m",
            "dart_noise_rad",
        ):
            value = getattr(self, name)
            check(
                math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0, got {value}"
            )
        check(self.plan_attempts >= 1, f"plan_attempts must be >= 1, got {self.plan_attempts}")
        check(
            0 <= self.model_plan_fraction <= 1,
            f"model_plan_fraction must be in [0, 1], got {self.model_plan_fraction}",
        )
        for name in ("dart_fraction", "dart_rate", "dart_kick_prob"):
            value = getattr(self, name)
            check(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")

    def episode_config(self, task: str, split: str, seed: int, **kw: Any) -> EpisodeConfig:
        """The ``EpisodeConfig`` of episode ``(task, split, seed)`` under these settings (what a
        closed-loop evaluation of a policy trained on these demos must use)."""
        return EpisodeConfig(
            task=task,
            split=split,
            seed=seed,
            width=self.width,
            height=self.height,
            horizon=self.horizon,
            num_points=self.num_points,
            object_fraction=self.object_fraction,
            max_time_s=self.max_time_s,
            **kw,
        )


def nominal_T_body_cam(sim: SimConfig | None = None) -> np.ndarray:
    """``T_body_cam`` the stack believes: the sim camera without its per-episode jitter.

    The same as ``PlannerNodeConfig().T_body_cam`` (a test checks it) without importing a ROS
    node module, so training runs where rclpy is not installed.
    """
    return optical_from_mjcam(*camera_pose(sim or SimConfig(), (0.0,) * 6))


def demo_controller_config(controller: ControllerConfig | None = None) -> ControllerConfig:
    """The controller settings demos run with: ``controller`` (default: the deployed defaults)
    in ``residual`` mode. A closed-loop evaluation should use the same (in the policy's mode)."""
    return dataclasses.replace(controller or ControllerConfig(), mode="residual")


def read_controller_config(root: str | Path) -> ControllerConfig:
    """The controller settings a demo directory was generated with."""
    index = json.loads((Path(root) / "index.json").read_text())
    return from_dict(ControllerConfig, index.get("controller_config", {}))


# -------------------------------------------------------------------------------------------
# The expert's reference and labels
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ExpertTrace:
    """What the expert's twin rollout says about the part, at the tracks' time base."""

    track_ticks: np.ndarray  # (H+1,) int, rollout index of each track step (0 = before tick 1)
    object_poses: np.ndarray  # (H+1, 4, 4) T_body_part at each track step
    grasp_pose: np.ndarray  # (4, 4) the expert's commanded T_body_tool holding the part
    grasp_object_pose: np.ndarray  # (4, 4) T_body_part at that moment
    grasp_tick: int  # rollout index of that moment
    success: bool


def demo_reference(
    cfg: EpisodeConfig, base: SimConfig | None = None
) -> tuple[Reference, ExpertTrace]:
    """``expert_reference(cfg)`` and what its rollout says about the part at the track steps."""
    ref = expert_reference(cfg, base)
    g = grasp_tick(ref.tick_phases)
    trace = ExpertTrace(
        track_ticks=ref.track_ticks,
        object_poses=ref.tick_object_poses[ref.track_ticks],
        grasp_pose=ref.tick_tool_targets[g],
        grasp_object_pose=ref.tick_object_poses[g],
        grasp_tick=g,
        success=bool(ref.expert_success),
    )
    return ref, trace


def grasp_tick(phases: Sequence[str]) -> int:
    """Rollout index at which the expert holds the part: just before it starts moving it."""
    if "manipulate" not in phases:
        raise ValueError(f"the expert never manipulated the part (phases: {sorted(set(phases))})")
    return max(phases.index("manipulate") - 1, 0)


def expert_targets(
    trace: ExpertTrace,
    plan_grasp_pose: np.ndarray,
    grasp_step: int,
    max_turn_rad: float = 0.0,
) -> tuple[np.ndarray, np.ndarray]:
    """The labels: ``a*_k`` ``(H+1, 4, 4)`` and the gripper ``(H+1,)`` (see the module docstring).

    Args:
        trace: from :func:`demo_reference`.
        plan_grasp_pose: ``(4, 4)`` the clean plan's pose at its grasp step (its orientation is
            the labels' grasp orientation, turned towards the expert's by ``max_turn_rad``).
        grasp_step: the plan step from which the gripper is closed.
    """
    R_plan = np.asarray(plan_grasp_pose, dtype=np.float64)[:3, :3]
    w = so3_log(trace.grasp_pose[:3, :3] @ R_plan.T)  # plan -> expert orientation, body frame
    angle = float(np.linalg.norm(w))
    if angle > max_turn_rad:
        w = w * (max_turn_rad / angle)
    G = np.eye(4)
    G[:3, :3] = so3_exp(w) @ R_plan
    G[:3, 3] = trace.grasp_pose[:3, 3]
    T_part_tool = np.linalg.inv(trace.grasp_object_pose) @ G
    poses = trace.object_poses @ T_part_tool  # (H+1, 4, 4)
    closed = (np.arange(len(poses)) >= grasp_step).astype(np.float64)
    return poses, closed


# -------------------------------------------------------------------------------------------
# Plan perturbation
# -------------------------------------------------------------------------------------------


def _random_unit(rng: np.random.Generator) -> np.ndarray:
    v = rng.normal(size=3)
    return v / max(float(np.linalg.norm(v)), 1e-12)


def perturb_plan(plan: Plan, rng: np.random.Generator, cfg: DemoConfig) -> tuple[Plan, dict]:
    """``plan`` with an injected grasp error and per-step noise; also the draws, for the record.

    The grasp error ``D`` (offset and rotation in the tool frame) right-multiplies every pose and
    the pre-grasp: ``a'_k = a_k D`` is the plan a wrong ``e1' = e1 D`` would give, so the error
    moves with the object (a door's handle offset turns with the door). Per-step noise is
    composed on the left, independently per step (the jitter of a noisy per-step fit).
    """
    offset = _random_unit(rng) * rng.uniform(0.0, cfg.grasp_offset_max_m)
    rotvec = _random_unit(rng) * rng.uniform(0.0, cfg.grasp_rotation_max_rad)
    D = np.eye(4)
    D[:3, :3] = so3_exp(rotvec)
    D[:3, 3] = offset
    n = len(plan.ee_poses)
    dt = rng.normal(0.0, cfg.step_noise_m, size=(n, 3))
    dw = rng.normal(0.0, cfg.step_noise_rad, size=(n, 3))
    poses = np.asarray(plan.ee_poses) @ D  # (H+1, 4, 4)
    poses[:, :3, :3] = so3_exp(dw) @ poses[:, :3, :3]
    poses[:, :3, 3] += dt
    pre = np.asarray(plan.pregrasp_pose) @ D
    noise = {
        "grasp_offset_m": offset.tolist(),
        "grasp_rotation_rad": rotvec.tolist(),
        "step_noise_m": float(cfg.step_noise_m),
        "step_noise_rad": float(cfg.step_noise_rad),
    }
    return dataclasses.replace(plan, ee_poses=poses, pregrasp_pose=pre), noise


def _reachable(plan: Plan, q: np.ndarray) -> bool:
    """Every pose the controller will command has an IK solution (``make_plan``'s test)."""
    return all(kinematics.solve_ik(T, q).success for T in [plan.pregrasp_pose, *plan.ee_poses])


# -------------------------------------------------------------------------------------------
# The demonstrator in the policy's seat, and the closed loop
# -------------------------------------------------------------------------------------------


class OraclePolicy:
    """A privileged demonstrator behind the controller's ``Policy`` protocol.

    Returns the residual label of the current plan step, ``a*_step`` relative to ``a_bar_step``,
    and records, per call, what the learned policy will see at that tick.

    With ``dart`` (DART, Laskey et al. 2017), it *executes* a lagging correction: a share
    ``alpha`` of the label (plus Gaussian noise with ``dart_noise_*`` > 0), where ``alpha``
    starts at U(0, 1), closes ``dart_rate`` of its gap to 1 per call (once a tick, twice on a
    tick that changes state) and, with ``dart_kick_prob`` per call, drops to U(0, 1) again. The
    recorded label stays exact. Without it every recorded hand already sits where the label says
    (the demonstrator corrects at once), and behaviour cloning learns to read the correction off
    the hand instead of the scene (the copycat problem); with it the states include hands that a
    learned policy has not corrected yet.
    """

    def __init__(
        self,
        expert_poses: np.ndarray,
        expert_gripper_closed: np.ndarray,
        dart: DemoConfig | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.expert_poses = np.asarray(expert_poses, dtype=np.float64)
        self.expert_closed = np.asarray(expert_gripper_closed, dtype=np.float64)
        self.dart = dart
        self.rng = rng or np.random.default_rng(0)
        self.records: list[dict[str, Any]] = []
        self._alpha: float | None = None

    def reset(self) -> None:
        self.records.clear()
        self._alpha = None

    def _executed(self, delta: np.ndarray) -> tuple[np.ndarray, float]:
        cfg = self.dart
        if cfg is None:
            return delta, 1.0
        if self._alpha is None or self.rng.uniform() < cfg.dart_kick_prob:
            self._alpha = float(self.rng.uniform())
        else:
            self._alpha += cfg.dart_rate * (1.0 - self._alpha)
        noise = np.concatenate(
            [self.rng.normal(0.0, cfg.dart_noise_m, 3), self.rng.normal(0.0, cfg.dart_noise_rad, 3)]
        )
        return self._alpha * delta + noise, self._alpha

    def predict(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        k = int(obs["step"])
        plan = np.asarray(obs["plan_poses"], dtype=np.float64)
        delta = residual_targets(self.expert_poses[k : k + 1], plan[k : k + 1])[0]
        executed, alpha = self._executed(delta)
        self.records.append(
            {
                "rgb": np.asarray(obs["image"]).copy(),
                "step": k,
                "hand": np.asarray(obs["ee_pose"], dtype=np.float64).copy(),
                "state": STATES.index(obs["state"]),
                "time": float(obs["time_s"]),
                "alpha": alpha,
            }
        )
        return {"delta": executed, "gripper": 1.0 - float(self.expert_closed[k])}


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


_PREDICTORS: dict[str, Any] = {}


def predict_tracks(
    ref: Reference,
    checkpoint: str = "",
    points: int = 400,
    samples: int = 4,
    steps: int = 10,
    point_mode: str = "change",
) -> np.ndarray:
    """The track model's ``(H+1, points, 2)`` tracks of query points on I0 towards the goal, as
    the perception node predicts them with its defaults (400 points placed mostly where I0 and
    the goal differ, K=4, DDIM 10, seed 0); the predictor of each checkpoint is loaded once per
    process."""
    from t2a_perception.core.predictor import TrackPredictor, sample_query_points

    if checkpoint not in _PREDICTORS:
        default = Path(__file__).resolve().parents[1] / "ros2_ws/src/t2a_perception/models"
        _PREDICTORS[checkpoint] = TrackPredictor(checkpoint or default / "track_default")
    h, w = ref.rgb0.shape[:2]
    p0 = sample_query_points(h, w, points, point_mode, seed=0, image0=ref.rgb0, goal=ref.goal_rgb)
    out = _PREDICTORS[checkpoint].predict(ref.rgb0, ref.goal_rgb, p0, samples, "ddim", steps,
                                          seed=0)  # fmt: skip
    return out.tracks_px


def record_demos(
    task: str,
    split: str,
    seed: int,
    variants: Iterable[int],
    cfg: DemoConfig,
    base: SimConfig | None = None,
    planner_cfg: PlannerConfig | None = None,
    controller_cfg: ControllerConfig | None = None,
) -> list[dict[str, Any]]:
    """Demos (the arrays of the module docstring) of one episode, one per ``variant``.

    The expert's reference and the clean plan are shared by all variants; each variant draws
    its own plan noise from ``(seed, task, split, variant)`` and runs as a ``run_episode`` of
    that plan with the :class:`OraclePolicy` in the controller's policy seat.
    """
    planner_cfg = planner_cfg or PlannerConfig()
    controller_cfg = demo_controller_config(controller_cfg)
    ep = cfg.episode_config(task, split, seed)
    ref, trace = demo_reference(ep, base)
    T_body_cam = nominal_T_body_cam(base)
    env = SimEnv(sim_config(ep, base))  # the scene as every variant starts it, for planning
    model_tracks, model_plan = None, None
    try:
        env.reset(task, split, seed)
        clean = make_plan(ref.tracks_px, ref.depth0, env, T_body_cam, planner_cfg)
        if cfg.model_plan_fraction > 0:
            model_tracks = predict_tracks(ref, cfg.track_checkpoint)
            model_plan = make_plan(model_tracks, ref.depth0, env, T_body_cam, planner_cfg)
        q = env.joint_positions()[:6]
    finally:
        env.close()
    out = []
    for variant in variants:
        meta: dict[str, Any] = {
            "format": FORMAT,
            "task": task,
            "split": split,
            "seed": int(seed),
            "variant": int(variant),
            "expert_success": bool(trace.success),
            "plan_message": clean.message,
            "demo_config": to_dict(cfg),
        }
        if not clean.ok:
            out.append(_failed_demo(ref, meta, f"plan failed: {clean.message}"))
            continue
        rng = np.random.default_rng([seed, _crc(task), _crc(split), variant, 5])
        source, tracks = clean, ref.tracks_px
        if model_plan is not None and rng.uniform() < cfg.model_plan_fraction:
            meta["plan_source"] = "model"
            meta["plan_message"] = model_plan.message
            if not (model_plan.ok and _reachable(model_plan, q)):
                out.append(_failed_demo(ref, meta, f"model plan failed: {model_plan.message}"))
                continue
            source, tracks = model_plan, model_tracks
        plan, noise = source, None
        if rng.uniform() >= cfg.clean_fraction:
            for _ in range(cfg.plan_attempts):
                candidate, draw = perturb_plan(source, rng, cfg)
                if _reachable(candidate, q):
                    plan, noise = candidate, draw
                    break
        expert_poses, closed = expert_targets(
            trace, source.ee_poses[source.grasp_step], source.grasp_step, cfg.expert_grasp_turn_rad
        )
        dart = rng.uniform() < cfg.dart_fraction
        oracle = OraclePolicy(
            expert_poses, closed, cfg if dart else None,
            np.random.default_rng([seed, _crc(task), _crc(split), variant, 7]),
        )  # fmt: skip
        result = run_episode(
            ep, T_body_cam=T_body_cam, controller_cfg=controller_cfg, policy=oracle,
            reference=ref, base=base, plan=plan,
        )  # fmt: skip
        meta.update(
            noise=noise,
            success=bool(result.success),
            final_state=result.final_state,
            message=result.message,
            grasped=bool(result.grasped),
            errors=result.errors,
            sim_time_s=float(result.sim_time_s),
            ticks=len(oracle.records),
            dart=dart,
        )
        arrays = _demo_arrays(ref, trace, source, plan, expert_poses, closed, oracle, meta)
        arrays["tracks_px"] = np.asarray(tracks, np.float32)  # what the policy will see
        # What PointTracks carries with them (depth of P0) and the calibration the stack believes.
        arrays["tracks_depth_m"] = depth_at_points(ref.depth0, arrays["tracks_px"][0])
        arrays["T_body_cam"] = np.asarray(T_body_cam, np.float64)
        out.append(arrays)
    return out


def intrinsics_array(intr: Intrinsics) -> np.ndarray:
    """``(6,)`` ``[width, height, fx, fy, cx, cy]`` of the camera of I0 and the tracks."""
    return np.array([intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy], np.float64)


def intrinsics_from_array(a: np.ndarray) -> Intrinsics:
    """Inverse of :func:`intrinsics_array`."""
    w, h, fx, fy, cx, cy = (float(v) for v in np.asarray(a).reshape(6))
    return Intrinsics(round(w), round(h), fx, fy, cx, cy)


def _demo_arrays(
    ref: Reference,
    trace: ExpertTrace,
    clean: Plan,
    plan: Plan,
    expert_poses: np.ndarray,
    closed: np.ndarray,
    oracle: OraclePolicy,
    meta: dict[str, Any],
) -> dict[str, Any]:
    rec = oracle.records
    H, W = ref.goal_rgb.shape[:2]
    return {
        "rgb": np.array([r["rgb"] for r in rec], np.uint8).reshape(-1, H, W, 3),
        "step": np.array([r["step"] for r in rec], np.int16),
        "hand": np.array([r["hand"] for r in rec], np.float64).reshape(-1, 4, 4),
        "state": np.array([r["state"] for r in rec], np.int8),
        "time": np.array([r["time"] for r in rec], np.float64),
        "executed_share": np.array([r["alpha"] for r in rec], np.float32),
        "goal_rgb": ref.goal_rgb,
        "tracks_px": ref.tracks_px.astype(np.float32),
        "track_on_object": np.asarray(ref.on_object, bool),
        "intrinsics": intrinsics_array(ref.intrinsics),
        "plan_poses": np.asarray(plan.ee_poses, np.float64),
        "plan_times": np.asarray(plan.times_from_start, np.float64),
        "plan_pregrasp": np.asarray(plan.pregrasp_pose, np.float64),
        "grasp_step": np.asarray(plan.grasp_step, np.int64),
        "clean_plan_poses": np.asarray(clean.ee_poses, np.float64),
        "expert_poses": expert_poses,
        "expert_gripper_closed": closed,
        "object_poses": trace.object_poses,
        "success": np.asarray(bool(meta["success"])),
        "meta": np.asarray(json.dumps(meta)),
    }


def _failed_demo(ref: Reference, meta: dict[str, Any], why: str) -> dict[str, Any]:
    """A demo record without ticks: kept so the run does not retry it, never trained on."""
    H, W = ref.goal_rgb.shape[:2]
    meta.update(success=False, final_state="failed", message=why, ticks=0, noise=None)
    empty = np.zeros((0, 4, 4))
    return {
        "rgb": np.zeros((0, H, W, 3), np.uint8),
        "step": np.zeros(0, np.int16),
        "hand": empty,
        "state": np.zeros(0, np.int8),
        "time": np.zeros(0),
        "executed_share": np.zeros(0, np.float32),
        "goal_rgb": ref.goal_rgb,
        "tracks_px": ref.tracks_px.astype(np.float32),
        "track_on_object": np.asarray(ref.on_object, bool),
        "tracks_depth_m": np.full(ref.tracks_px.shape[1], np.nan, np.float32),
        "intrinsics": intrinsics_array(ref.intrinsics),
        "T_body_cam": np.eye(4),
        "plan_poses": empty,
        "plan_times": np.zeros(0),
        "plan_pregrasp": np.eye(4),
        "grasp_step": np.asarray(0, np.int64),
        "clean_plan_poses": empty,
        "expert_poses": empty,
        "expert_gripper_closed": np.zeros(0),
        "object_poses": empty,
        "success": np.asarray(False),
        "meta": np.asarray(json.dumps(meta)),
    }


# -------------------------------------------------------------------------------------------
# Writing a demo set (resumable, multiprocessing)
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoJob:
    """One episode and the variants of it still to record."""

    split: str
    task: str
    seed: int
    variants: tuple[int, ...]


def demo_path(out: str | Path, split: str, task: str, seed: int, variant: int) -> Path:
    """Where demo ``(split, task, seed, variant)`` lives under ``out`` (without suffix)."""
    return Path(out) / split / task / f"{seed:06d}_{variant:02d}"


def plan_demo_jobs(
    out: str | Path,
    splits: Iterable[str],
    episodes_per_task: int,
    variants: int = 1,
    base_seed: int = 0,
    tasks: Iterable[str] | None = None,
) -> list[DemoJob]:
    """Every episode with variants not yet on disk (a ``.json`` marks a finished demo)."""
    jobs = []
    for ep in plan_jobs(splits, episodes_per_task, base_seed, tasks):
        todo = tuple(
            v
            for v in range(variants)
            if not demo_path(out, ep.split, ep.task, ep.seed, v).with_suffix(".json").exists()
        )
        if todo:
            jobs.append(DemoJob(ep.split, ep.task, ep.seed, todo))
    return jobs


def save_demo(base: Path, demo: dict[str, Any]) -> None:
    """Write ``base``.npz then ``base``.json atomically (the json marks the demo finished), as
    the sim dataset writes an episode."""
    save_episode(base, demo)


def write_demo_index(
    out: str | Path, cfg: DemoConfig, controller: ControllerConfig | None = None
) -> dict[str, Any]:
    """Rebuild ``out``/index.json from the finished demos' metadata files."""
    out = Path(out)
    demos = []
    for meta_path in sorted(out.glob("*/*/*.json")):
        meta = json.loads(meta_path.read_text())
        demos.append(
            {
                "file": str(meta_path.with_suffix(".npz").relative_to(out)),
                **{k: meta[k] for k in ("split", "task", "seed", "variant", "success", "ticks")},
                "clean": meta.get("noise") is None,
                "final_state": meta.get("final_state", ""),
            }
        )
    index = {
        "format": FORMAT,
        "demo_config": to_dict(cfg),
        "controller_config": to_dict(demo_controller_config(controller)),
        "demos": demos,
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    return index


def _check_same_config(out: Path, cfg: DemoConfig, controller: ControllerConfig) -> None:
    path = out / "index.json"
    if not path.is_file():
        return
    index = json.loads(path.read_text())
    diff = []
    for key, new in (("demo_config", to_dict(cfg)), ("controller_config", to_dict(controller))):
        old = index.get(key, new)
        diff += sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ValueError(
            f"{out} holds demos made with other settings (differing: {diff}); use a new --out "
            "or the same settings"
        )


_WORKER: dict[str, Any] = {}


def _init_worker(
    cfg: DemoConfig, sim: SimConfig | None, controller: ControllerConfig, threads: int
) -> None:
    torch.set_num_threads(threads)  # the workers only run numpy/MuJoCo; keep torch out of the way
    _WORKER.update(cfg=cfg, sim=sim, controller=controller)


def _run_job(args: tuple[DemoJob, str]) -> list[bool]:
    job, out = args
    w = _WORKER
    demos = record_demos(
        job.task,
        job.split,
        job.seed,
        job.variants,
        w["cfg"],
        w["sim"],
        controller_cfg=w["controller"],
    )
    for variant, demo in zip(job.variants, demos):
        save_demo(demo_path(out, job.split, job.task, job.seed, variant), demo)
    return [bool(d["success"]) for d in demos]


def generate_demos(
    out: str | Path,
    jobs: list[DemoJob],
    cfg: DemoConfig | None = None,
    sim: SimConfig | None = None,
    controller: ControllerConfig | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Record every job into ``out`` and rebuild the index; returns the index.

    Jobs come from :func:`plan_demo_jobs`, which skips finished demos, so an interrupted run
    resumes. Refuses to mix settings in one directory.
    """
    from tqdm import tqdm

    cfg = cfg or DemoConfig()
    controller = demo_controller_config(controller)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_config(out, cfg, controller)
    write_demo_index(out, cfg, controller)  # records the settings before the first demo lands
    bar = tqdm(
        total=sum(len(j.variants) for j in jobs), disable=not progress, unit="demo", desc="demos"
    )
    ok = 0
    args = [(j, str(out)) for j in jobs]
    if workers <= 1:
        _init_worker(cfg, sim, controller, torch.get_num_threads())
        for a in args:
            results = _run_job(a)
            ok += sum(results)
            bar.update(len(results))
            bar.set_postfix(success=ok)
        _WORKER.clear()
    else:
        import multiprocessing as mp

        # spawn: a forked child would inherit the parent's GL state, which EGL does not survive.
        with mp.get_context("spawn").Pool(workers, _init_worker, (cfg, sim, controller, 1)) as pool:
            for results in pool.imap_unordered(_run_job, args):
                ok += sum(results)
                bar.update(len(results))
                bar.set_postfix(success=ok)
    bar.close()
    return write_demo_index(out, cfg, controller)


# -------------------------------------------------------------------------------------------
# Reading demos for training
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
    """Which demos train, which validate, and the training-time augmentation."""

    val_fraction: float = param(0.1, "share of episode seeds held out for validation (1)")
    split_seed: int = param(0, "seed of the train/validation assignment")
    include_failed: bool = param(False, "also train on demos whose episode failed")
    shift_px: int = param(
        4, "random shift of the current image, in model pixels (train only; 0 = none)"
    )

    def __post_init__(self) -> None:
        check(
            0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"
        )
        check(self.shift_px >= 0, f"shift_px must be >= 0, got {self.shift_px}")


@dataclasses.dataclass(frozen=True)
class DemoRef:
    """One demo on disk, from a directory's index."""

    path: Path
    split: str
    task: str
    seed: int
    variant: int
    success: bool
    ticks: int


def read_demo_config(root: str | Path) -> DemoConfig:
    """The :class:`DemoConfig` a demo directory was generated with."""
    path = Path(root) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no index.json in {root}: not a demo directory")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} has format {index.get('format')!r}, expected {FORMAT!r}")
    return from_dict(DemoConfig, index["demo_config"])


def find_demos(roots: Iterable[str | Path], splits: Iterable[str] = ()) -> list[DemoRef]:
    """Every indexed demo under ``roots`` in ``splits`` (all splits if empty), sorted."""
    wanted = set(splits)
    bad = sorted(wanted - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; expected some of {list(SPLITS)}")
    refs = []
    for root in roots:
        read_demo_config(root)
        for d in json.loads((Path(root) / "index.json").read_text())["demos"]:
            if wanted and d["split"] not in wanted:
                continue
            refs.append(
                DemoRef(
                    Path(root) / d["file"],
                    d["split"],
                    d["task"],
                    int(d["seed"]),
                    int(d["variant"]),
                    bool(d["success"]),
                    int(d["ticks"]),
                )
            )
    return sorted(refs, key=lambda r: (r.split, r.task, r.seed, r.variant, str(r.path)))


def select_demos(refs: Sequence[DemoRef], subset: str, cfg: DemoDataConfig) -> list[DemoRef]:
    """The ``"train"``, ``"val"`` or ``"all"`` part of ``refs``.

    Held out by episode seed (every task, split and variant of a held-out seed), with
    ``track_data``'s hash rule, so a scene never appears on both sides. Demos without ticks and,
    unless ``include_failed``, failed ones are dropped.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    usable = [r for r in refs if r.ticks > 0 and (r.success or cfg.include_failed)]
    if subset == "all":
        return usable
    val = held_out_keys({r.seed for r in refs}, cfg.val_fraction, cfg.split_seed)
    return [r for r in usable if (r.seed in val) == (subset == "val")]


@dataclasses.dataclass
class Demo:
    """One demo in model units, as the dataset samples it (arrays per tick, per plan step)."""

    key: tuple[str, str, int, int]  # (split, task, seed, variant)
    images: np.ndarray  # (T, S, S, 3) uint8, resized like PolicyRunner does
    goal: np.ndarray  # (S, S, 3) uint8
    tracks: np.ndarray  # (H+1, M, 2) float32 normalised, the points PolicyRunner would pick
    points_body: np.ndarray | None  # (M, 3) float32 their P0 in the body frame (point_xyz)
    plan_poses: np.ndarray  # (H+1, 4, 4) float32
    plan_gripper: np.ndarray  # (H+1,) float32, 1 = closed
    steps: np.ndarray  # (T,) int64
    hands: np.ndarray  # (T, 4, 4) float32
    expert_poses: np.ndarray  # (H+1, 4, 4) float64
    expert_closed: np.ndarray  # (H+1,) float64


def prepare_demo(
    arrays: Mapping[str, Any],
    policy: PolicyConfig,
    key: tuple[str, str, int, int] = ("", "", 0, 0),
) -> Demo:
    """A demo's arrays (``.npz`` contents) -> :class:`Demo` for ``policy``'s input layout.

    Every transformation is the one ``PolicyRunner`` applies to an observation: ``resize_image``
    to ``image_size``, pixels normalised at the camera size, ``select_points`` for
    ``num_points``, and the planned gripper ``arange(H+1) >= grasp_step``.
    """
    H, S = policy.horizon, policy.image_size
    plan = np.asarray(arrays["plan_poses"])
    if plan.shape != (H + 1, 4, 4):
        raise ValueError(
            f"demo {key} has a plan of shape {plan.shape}, but the policy's horizon {H} needs "
            f"{(H + 1, 4, 4)}; generate demos with --horizon {H}"
        )
    rgb = np.asarray(arrays["rgb"])
    height, width = rgb.shape[1:3]
    steps = np.asarray(arrays["step"]).astype(np.int64)
    if steps.size and (steps.min() < 0 or steps.max() > H):
        raise ValueError(f"demo {key} has plan steps outside 0..{H}: {sorted(set(steps))}")
    tracks_px = np.asarray(arrays["tracks_px"])  # (H+1, N, 2)
    tracks = pixels_to_normalized(tracks_px, width, height)
    chosen = select_points(tracks, policy.num_points)
    tracks = tracks[:, chosen]
    points_body = None
    if policy.point_xyz:
        missing = [k for k in ("tracks_depth_m", "intrinsics", "T_body_cam") if k not in arrays]
        if missing:
            raise ValueError(
                f"demo {key} has no {', '.join(missing)}, which a policy with point_xyz needs; "
                "it was recorded by an older residual_data.py / bag_to_demos.py: record it again"
            )
        points_body = points_in_body(
            tracks_px[0], arrays["tracks_depth_m"], intrinsics_from_array(arrays["intrinsics"]),
            arrays["T_body_cam"],
        )[chosen].astype(np.float32)  # fmt: skip
    grasp_step = int(arrays["grasp_step"])
    return Demo(
        key=key,
        images=np.stack([resize_image(f, S) for f in rgb])
        if len(rgb)
        else np.zeros((0, S, S, 3), np.uint8),
        goal=resize_image(np.asarray(arrays["goal_rgb"]), S),
        tracks=np.ascontiguousarray(tracks, dtype=np.float32),
        points_body=points_body,
        plan_poses=plan.astype(np.float32),
        plan_gripper=(np.arange(H + 1) >= grasp_step).astype(np.float32),
        steps=steps,
        hands=np.asarray(arrays["hand"]).astype(np.float32),
        expert_poses=np.asarray(arrays["expert_poses"], np.float64),
        expert_closed=np.asarray(arrays["expert_gripper_closed"], np.float64),
    )


def load_demos(refs: Sequence[DemoRef], policy: PolicyConfig, workers: int = 4) -> list[Demo]:
    """Read and prepare demos (threads: decompression and resizing release the GIL)."""

    def load(ref: DemoRef) -> Demo:
        with np.load(ref.path) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return prepare_demo(arrays, policy, (ref.split, ref.task, ref.seed, ref.variant))

    if workers <= 1:
        return [load(r) for r in refs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(load, refs))


class ResidualDataset(Dataset):
    """One sample per recorded tick: the ``compute_loss`` batch entries for that tick.

    Items: ``image``, ``goal`` ``(3, S, S)`` uint8; ``tracks`` ``(H+1, M, 2)`` float32;
    ``plan_poses`` ``(H+1, 4, 4)``, ``plan_gripper`` ``(H+1,)``, ``hand`` ``(4, 4)`` float32;
    ``step`` () int64; ``points_body`` ``(M, 3)`` float32 (``point_xyz`` only); ``action``
    ``(h, action_dim)`` float32 raw targets (``action_targets`` of
    the policy's mode, chunked by ``action_chunks`` and read at the tick's plan step);
    ``action_mask`` ``(h,)`` bool; ``demo`` () int64.
    """

    def __init__(
        self,
        demos: Sequence[Demo],
        policy: PolicyConfig,
        data: DemoDataConfig | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.demos = [d for d in demos if len(d.steps)]
        self.policy = policy
        self.data = data or DemoDataConfig()
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.chunks: list[np.ndarray] = []  # per demo (H+1, h, action_dim)
        self.chunk_masks: list[np.ndarray] = []  # per demo (H+1, h)
        for d in self.demos:
            targets = action_targets(
                policy.action_mode,
                d.expert_poses,
                d.plan_poses.astype(np.float64),
                d.expert_closed,
            )
            chunks, mask = action_chunks(targets, policy.chunk_size)
            self.chunks.append(chunks.astype(np.float32))
            self.chunk_masks.append(mask)
        lengths = [len(d.steps) for d in self.demos]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation draws (DataLoader workers copy the dataset)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(demo, tick)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        d = int(np.searchsorted(self._starts, index, side="right")) - 1
        return d, index - int(self._starts[d])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        d, t = self.locate(index)
        demo = self.demos[d]
        step = int(demo.steps[t])
        image = demo.images[t]
        if self.augment and self.data.shift_px > 0:
            image = random_shift(image, self.data.shift_px, self._rng(index))
        item = {
            "image": _chw(image),
            "goal": _chw(demo.goal),
            "tracks": torch.from_numpy(demo.tracks),
            "plan_poses": torch.from_numpy(demo.plan_poses),
            "plan_gripper": torch.from_numpy(demo.plan_gripper),
            "step": torch.tensor(step, dtype=torch.long),
            "hand": torch.from_numpy(demo.hands[t]),
            "action": torch.from_numpy(self.chunks[d][step]),
            "action_mask": torch.from_numpy(self.chunk_masks[d][step]),
            "demo": torch.tensor(d, dtype=torch.long),
        }
        if demo.points_body is not None:
            item["points_body"] = torch.from_numpy(demo.points_body)
        return item

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def residual_rows(self) -> np.ndarray:
        """Every residual target row the loss sees ``(n, 6)`` (for ``PolicyStats``), whatever
        the action mode: each tick's chunk rows within the plan."""
        rows = []
        h = self.policy.chunk_size
        for d in self.demos:
            res = residual_targets(d.expert_poses, d.plan_poses.astype(np.float64))  # (H+1, 6)
            for s in d.steps:
                rows.append(res[int(s) : int(s) + h])
        return np.concatenate(rows) if rows else np.zeros((0, 6))


def random_shift(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """``(S, S, 3)`` shifted by up to ``pad`` px each way, edges replicated (DrQ-style)."""
    S = image.shape[0]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    y, x = rng.integers(0, 2 * pad + 1, size=2)
    return padded[y : y + S, x : x + S]


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def collate_residual(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into a ``compute_loss`` batch; pads tracks to the largest point count.

    Padding repeats a sample's first point (track and ``points_body``) and is masked out by
    ``track_mask`` ``(B, M)``.
    """
    n = max(int(it["tracks"].shape[1]) for it in items)
    per_point = [k for k in ("tracks", "points_body") if k in items[0]]
    padded: dict[str, list[torch.Tensor]] = {k: [] for k in per_point}
    masks = []
    for it in items:
        m = it["tracks"].shape[1]
        for k in per_point:
            x = it[k]  # tracks (H+1, m, 2), points_body (m, 3): the point axis is -2
            if m < n:
                first = x.narrow(-2, 0, 1)
                x = torch.cat([x, first.expand(*first.shape[:-2], n - m, -1)], dim=-2)
            padded[k].append(x)
        masks.append(torch.arange(n) < m)
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in per_point}
    batch.update({k: torch.stack(v) for k, v in padded.items()})
    batch["track_mask"] = torch.stack(masks)
    return batch


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Generate residual-policy demonstrations; returns the exit status."""
    p = argparse.ArgumentParser(
        description="Record residual-policy demonstrations in t2a_sim: ground-truth tracks -> "
        "(perturbed) open-loop plan -> controller at 5 Hz with a privileged demonstrator "
        "correcting it. Resumable: rerun the same command to complete a set.",
    )
    p.add_argument("--out", required=True, help="demo directory (created if missing)")
    p.add_argument(
        "--splits", nargs="+", default=["MG"], choices=list(SPLITS), help="splits to record"
    )
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="only these tasks")
    p.add_argument("--episodes-per-task", type=int, default=20, help="episode seeds per task")
    p.add_argument("--variants", type=int, default=1, help="noisy plans recorded per episode")
    p.add_argument("--seed", type=int, default=0, help="first episode seed of every task")
    p.add_argument("--workers", type=int, default=2, help="processes (one sim + renderer each)")
    p.add_argument("--config", default="", help="YAML of DemoConfig fields (flags override it)")
    p.add_argument("--sim-config", default="", help="YAML of SimConfig overrides")
    p.add_argument(
        "--controller-config",
        default="",
        help="YAML of ControllerConfig overrides the demos run with (e.g. policy_states); "
        "stored in index.json for the closed-loop evaluation (mode is always residual)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p, DemoConfig)
    args = vars(p.parse_args(argv))
    if args["episodes_per_task"] < 1 or args["variants"] < 1:
        p.error("--episodes-per-task and --variants must be >= 1")
    known = {s.name for s in fields(DemoConfig)}
    try:
        cfg = config_from_flags(
            DemoConfig, {k: v for k, v in args.items() if k in known}, args["config"]
        )
        sim = load_yaml(SimConfig, args["sim_config"]) if args["sim_config"] else None
        controller = (
            load_yaml(ControllerConfig, args["controller_config"])
            if args["controller_config"]
            else None
        )
    except ValueError as exc:
        p.error(str(exc))
    jobs = plan_demo_jobs(
        args["out"],
        args["splits"],
        args["episodes_per_task"],
        args["variants"],
        args["seed"],
        args["tasks"],
    )
    index = generate_demos(
        args["out"], jobs, cfg, sim, controller, args["workers"], not args["quiet"]
    )
    demos = index["demos"]
    ok = sum(d["success"] for d in demos)
    ticks = sum(d["ticks"] for d in demos if d["success"])
    print(
        f"{args['out']}: {len(demos)} demos, {ok} successful ({ok / max(len(demos), 1):.0%}), "
        f"{ticks} training ticks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
