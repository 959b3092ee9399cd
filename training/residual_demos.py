"""Recording demonstrations for the residual policy (Track2Act section 2.4): oracle and DART.

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

The arrays a demo holds, the files and the dataset are :mod:`training.residual_format`'s.
"""

from __future__ import annotations

import dataclasses
import json
import zlib
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from t2a_bringup.core.episode import (
    EpisodeConfig,
    Reference,
    expert_reference,
    make_plan,
    run_episode,
    sim_config,
)
from t2a_common.core import kinematics
from t2a_common.core.config import to_dict
from t2a_common.core.se3 import so3_exp, so3_log
from t2a_control.core.controller import STATES, ControllerConfig
from t2a_control.core.policy import (
    residual_targets,
)
from t2a_perception.core.frames import depth_at_points
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.ee_plan import Plan
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv
from training.residual_format import (
    FORMAT,
    DemoConfig,
    demo_controller_config,
    intrinsics_array,
    nominal_T_body_cam,
)

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
    from t2a_perception.core.goal_tracks import predict_goal_tracks
    from t2a_perception.core.node_config import TrackPredictorConfig
    from t2a_perception.core.predictor import TrackPredictor

    if checkpoint not in _PREDICTORS:
        default = Path(__file__).resolve().parents[1] / "ros2_ws/src/t2a_perception/models"
        _PREDICTORS[checkpoint] = TrackPredictor(checkpoint or default / "track_default")
    cfg = TrackPredictorConfig(
        num_points=points, point_mode=point_mode, num_samples=samples, sampler="ddim",
        sampler_steps=steps,
    )  # fmt: skip
    out = predict_goal_tracks(_PREDICTORS[checkpoint], ref.rgb0, ref.goal_rgb, ref.depth0,
                              ref.intrinsics, cfg, seed=0)  # fmt: skip
    return out.prediction.tracks_px


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
