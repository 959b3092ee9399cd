"""One closed-loop episode in t2a_sim, in process: tracks -> plan -> 5 Hz control -> success.

The same cores the ROS nodes run (track predictor, planner, controller) wired directly to a
:class:`SimEnv` through :class:`SimArmDriver`, in lock-step sim time. This is what the
closed-loop evaluation runs many times; the ROS stack runs the same chain across processes.

Ground-truth tracks come from the scripted expert on a twin of the episode (same task, split and
seed give the same scene bit for bit): points sampled on visible surfaces of I0 are followed
through the expert's rollout, and the expert's final frame is the goal image.
"""

from __future__ import annotations

import dataclasses
import time
import types
from collections.abc import Callable

import numpy as np

from t2a_common.core.config import check, param
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.types import PLAN_OK
from t2a_control.core.controller import Controller, ControllerConfig, Observation
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_perception.core.predictor import sample_query_points
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.ee_plan import Plan
from t2a_planning.core.planner import plan_for_arm
from t2a_sim.core import tracks as sim_tracks
from t2a_sim.core.arm_driver import SimArmDriver
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv
from t2a_sim.core.expert import run_expert
from t2a_sim.core.tasks import TaskDef

FAILURES = ("plan_failed", "ik_unreachable", "grasp_missed", "push_missed", "watchdog",
            "wrong_final_pose", "timeout", "controller_failed")  # fmt: skip
"""Why an unsolved episode failed, first cause first: the planner gave no plan (plan_failed) or
none the arm reaches (ik_unreachable); the controller's IK failed (ik_unreachable); a grasping
task ended without a grasp (grasp_missed) or a push task without moving the object
(push_missed); inputs went stale (watchdog); the run ended but the object is off its goal
(wrong_final_pose, with the error in ``failure_detail``); the sim clock ran out (timeout); the
controller failed otherwise, e.g. a hand that cannot follow the plan (controller_failed)."""
PUSH_MOVED = 0.01  # m or rad: a push that moved its object less than this never touched it


@dataclasses.dataclass(frozen=True)
class EpisodeConfig:
    """One episode: which scene, where the tracks come from, and injected plan errors."""

    task: str = param("drawer_open", "task name (t2a_sim.core.tasks.TASKS)")
    split: str = param("MG", "MG | G | CG | TG")
    seed: int = param(0, "episode seed")
    width: int = param(320, "camera width (px) for I0, the goal and the policy's images")
    height: int = param(240, "camera height (px)")
    horizon: int = param(8, "track steps H after P0")
    num_points: int = param(400, "query points P0")
    object_fraction: float = param(0.5, "GT tracks: share of P0 sampled on the moved part")
    max_time_s: float = param(90.0, "sim time before the episode counts as timed out (s)")
    grasp_offset_m: tuple[float, ...] = param(
        (0.0, 0.0, 0.0), "injected plan error: every plan pose shifted by this in body (m)"
    )

    def __post_init__(self) -> None:
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(self.num_points >= 4, f"num_points must be >= 4, got {self.num_points}")
        check(
            len(self.grasp_offset_m) == 3,
            f"grasp_offset_m needs 3 values, got {self.grasp_offset_m}",
        )
        check(self.max_time_s > 0, f"max_time_s must be > 0, got {self.max_time_s}")


@dataclasses.dataclass
class Reference:
    """What the expert's twin rollout gives: I0, its depth, the goal image and GT tracks."""

    rgb0: np.ndarray  # (H, W, 3) uint8
    depth0: np.ndarray  # (H, W) float32 m, NaN = none
    goal_rgb: np.ndarray  # (H, W, 3) uint8, the expert's final frame
    tracks_px: np.ndarray  # (H+1, N, 2) float32 ground-truth tracks of P0
    on_object: np.ndarray  # (N,) bool
    expert_success: bool
    intrinsics: Intrinsics  # of I0 and the tracks
    # The expert's rollout, one entry per control tick (index 0 = the state before tick 1):
    track_ticks: np.ndarray  # (H+1,) int, rollout index of each track step
    tick_object_poses: np.ndarray  # (T, 4, 4) T_body_part
    tick_tool_targets: np.ndarray  # (T, 4, 4) the expert's commanded T_body_tool
    tick_phases: tuple[str, ...]  # (T,) expert phase names ("start", "approach", ...)
    # (H+1, N, 2) GT tracks of the stack's own query points (expert_reference's query_points,
    # by default stack_query_points), same steps
    grid_tracks_px: np.ndarray | None = None


@dataclasses.dataclass
class EpisodeResult:
    """Outcome of one closed-loop episode."""

    success: bool
    failure: str  # "" on success, else one of FAILURES
    message: str
    errors: dict[str, float]
    plan_status: int
    final_state: str
    sim_time_s: float
    wall_time_s: float
    planned_path: np.ndarray  # (K, 3) hand positions of the plan waypoints (body, m)
    executed_path: np.ndarray  # (T, 3) hand positions at every tick (body, m)
    grasped: bool
    frames: list[np.ndarray] = dataclasses.field(default_factory=list)  # (H, W, 3) per tick
    object_motion: float = 0.0  # how far the part moved from its start (m, or rad of its joint)
    failure_detail: str = ""  # the failure in numbers (wrong_final_pose: the errors)


def sim_config(cfg: EpisodeConfig, base: SimConfig | None = None) -> SimConfig:
    return dataclasses.replace(base or SimConfig(), width=cfg.width, height=cfg.height)


def stack_query_points(rgb0: np.ndarray, goal_rgb: np.ndarray) -> np.ndarray:
    """The stack's own query points ``P0`` (N, 2) px for I0 and the goal: the track_predictor's
    defaults (``TrackPredictorConfig`` num_points and point_mode), seed 0 as the evaluation's
    model tracks (``training.residual_demos.predict_tracks``); no privileged segmentation."""
    cfg = TrackPredictorConfig()
    h, w = rgb0.shape[:2]
    return sample_query_points(
        h, w, cfg.num_points, cfg.point_mode, seed=0, image0=rgb0, goal=goal_rgb
    )


def expert_reference(
    cfg: EpisodeConfig,
    base: SimConfig | None = None,
    query_points: Callable[[np.ndarray, np.ndarray], np.ndarray] = stack_query_points,
) -> Reference:
    """Run the scripted expert on a twin env and read off the goal image and GT tracks.

    Track steps 1..H are spread evenly over the span in which the object moves (from its first
    motion to the end), which is what a goal-conditioned track predictor is trained to output.
    ``tracks_px`` follow points sampled with the segmentation (``object_fraction`` on the part);
    ``grid_tracks_px`` follow ``query_points(I0, goal)``, by default the stack's own queries
    (:func:`stack_query_points`).
    """
    env = SimEnv(sim_config(cfg, base))
    try:
        env.reset(cfg.task, cfg.split, cfg.seed)
        rgb0, depth0 = env.render()
        intr, T_body_cam = env.intrinsics, env.T_body_cam
        geom_ids = env.camera.render_geom_ids(env.data)
        pts = sim_tracks.sample_points(
            env.model, env.data, geom_ids, depth0, intr, T_body_cam,
            env.part_id, cfg.num_points, cfg.object_fraction,
            np.random.default_rng([cfg.seed, 11]),
        )  # fmt: skip
        T_obj0 = env.object_pose()
        uvs, moving = [pts.uv0.astype(np.float64)], [False]
        # Every body's pose per tick, so any points (the stack's queries need the goal image,
        # known only at the end) can be glued at the start and followed afterwards.
        bodies = [types.SimpleNamespace(xpos=env.data.xpos.copy(), xmat=env.data.xmat.copy())]
        obj_poses, phases, targets = [T_obj0], ["start"], [env.hand_pose()]

        def on_tick(_k: int, cmd) -> None:
            T = env.object_pose()
            moved = (
                np.linalg.norm(T[:3, 3] - T_obj0[:3, 3]) > 1e-3
                or np.linalg.norm(T[:3, :3] - T_obj0[:3, :3]) > 1e-2
            )
            uv, _, _ = sim_tracks.project(env.data, pts, intr, T_body_cam)
            uvs.append(uv)
            bodies.append(
                types.SimpleNamespace(xpos=env.data.xpos.copy(), xmat=env.data.xmat.copy())
            )
            moving.append(bool(moved))
            obj_poses.append(T)
            phases.append(cmd.phase)
            targets.append(cmd.T_tool.copy())

        ok, _ = run_expert(env, on_tick=on_tick)
        goal_rgb, _ = env.render()
        ticks = track_step_ticks(moving, cfg.horizon)
        depth = depth0.astype(np.float32)
        depth[depth <= 0] = np.nan
        tracks = np.array([uvs[i] for i in ticks], np.float32)
        queries = sim_tracks.glue_pixels(
            env.model, bodies[0], geom_ids, depth0, intr, T_body_cam, env.part_id,
            query_points(rgb0, goal_rgb),
        )  # fmt: skip
        query_tracks = [sim_tracks.project(bodies[i], queries, intr, T_body_cam)[0] for i in ticks]
        return Reference(
            rgb0, depth, goal_rgb, tracks, pts.on_object, ok, intr, ticks,
            np.stack(obj_poses), np.stack(targets), tuple(phases),
            np.array(query_tracks, np.float32),
        )  # fmt: skip
    finally:
        env.close()


def track_step_ticks(moving: list[bool], horizon: int) -> np.ndarray:
    """Rollout indices ``(H+1,)`` of the track steps: 0, then H evenly from the motion onset
    (one tick before the part first moves) to the end of the rollout."""
    n = len(moving)
    first = next((i for i, m in enumerate(moving) if m), n - 1)
    picks = np.linspace(max(first - 1, 0), n - 1, horizon + 1)[1:]
    return np.array([0] + [round(i) for i in picks], dtype=np.int64)


def make_plan(
    ref_tracks: np.ndarray,
    depth0: np.ndarray,
    env: SimEnv,
    T_body_cam: np.ndarray,
    planner_cfg: PlannerConfig,
) -> Plan:
    """The planner on tracks of I0, with IK reachability from the arm's current joints."""
    return plan_for_arm(
        ref_tracks, env.intrinsics, T_body_cam, env.joint_positions()[:6], planner_cfg,
        depth=depth0, T_body_tool=env.hand_pose(),
    )  # fmt: skip


def shifted(plan: Plan, offset_m: np.ndarray) -> Plan:
    """The plan with every hand pose moved by ``offset_m`` (an injected grasp error)."""
    if not np.any(offset_m):
        return plan
    poses = plan.ee_poses.copy()
    poses[:, :3, 3] += offset_m
    pre = plan.pregrasp_pose.copy()
    pre[:3, 3] += offset_m
    return dataclasses.replace(plan, ee_poses=poses, pregrasp_pose=pre)


def run_episode(
    cfg: EpisodeConfig,
    *,
    T_body_cam: np.ndarray,
    planner_cfg: PlannerConfig | None = None,
    controller_cfg: ControllerConfig | None = None,
    policy=None,
    predict_tracks: Callable[[Reference], tuple[np.ndarray, np.ndarray]] | None = None,
    reference: Reference | None = None,
    base: SimConfig | None = None,
    keep_frames: bool = False,
    plan: Plan | None = None,
) -> EpisodeResult:
    """Plan from tracks (ground truth, or ``predict_tracks(ref) -> (tracks, point depths)``),
    then run the controller at its rate until done, failed or ``max_time_s``.

    ``T_body_cam`` is the extrinsic the stack believes (the nominal calibration); the sim's own
    camera carries a per-episode jitter, like a real calibration error. A ready-made ``plan``
    (planned on this episode's scene, e.g. with injected errors) is executed instead of planning
    from tracks; ``cfg.grasp_offset_m`` shifts it all the same.
    """
    wall0 = time.perf_counter()
    planner_cfg = planner_cfg or PlannerConfig()
    controller_cfg = controller_cfg or ControllerConfig()
    ref = reference or expert_reference(cfg, base)
    env = SimEnv(sim_config(cfg, base))
    env.reset(cfg.task, cfg.split, cfg.seed)
    start = env.object_joint() if env.task.articulated else env.object_pose()[:3, 3]
    if plan is None:
        tracks = ref.tracks_px if predict_tracks is None else predict_tracks(ref)[0]
        plan = make_plan(tracks, ref.depth0, env, T_body_cam, planner_cfg)
    plan = shifted(plan, np.asarray(cfg.grasp_offset_m))
    ee_plan = plan.to_ee_plan(f"{cfg.task}/{cfg.split}/{cfg.seed}")
    planned = plan.waypoints()[1][:, :3, 3] if plan.ok else np.zeros((0, 3))

    driver = SimArmDriver(env)
    driver.claim()
    driver.power_on()
    controller = Controller(controller_cfg, policy)
    controller.set_plan(ee_plan)
    executed, frames, grasped = [], [], False
    gripper_open: bool | None = None
    state, message = "idle", ""
    try:
        while env.time < cfg.max_time_s:
            q, opening, _ = driver.joint_positions()
            image = None
            if policy is not None or keep_frames:
                image = env.render()[0]
                if keep_frames:
                    frames.append(image)
            obs = Observation(
                now_s=env.time, q=q, gripper=opening, image=image, image_stamp_s=env.time,
                goal_image=ref.goal_rgb, tracks=None,
                # every watched input (joints, colour, depth, camera_info) is the sim's state now
                stamps=dict.fromkeys(controller_cfg.watchdog.inputs, env.time),
            )  # fmt: skip
            cmd = controller.tick(obs)
            state, message = cmd.state, cmd.hold_reason or cmd.message
            if cmd.send_joints:
                driver.send_joint_targets(cmd.q_target)
            if cmd.state != "idle" and cmd.gripper_open != gripper_open:
                (driver.open_gripper if cmd.gripper_open else driver.close_gripper)()
                gripper_open = cmd.gripper_open
            env.advance(controller_cfg.period_s)
            executed.append(env.hand_pose()[:3, 3])
            grasped |= env.grasped()
            if state in ("done", "failed"):
                break
        if state == "done":  # let the object settle after the release before judging
            env.advance(0.5)
        success, errors = env.task_success()
        end = env.object_joint() if env.task.articulated else env.object_pose()[:3, 3]
        motion = float(np.linalg.norm(np.subtract(end, start)))
        task, grasp_report = env.task, env.grasp_report
    finally:
        env.close()
    failure, detail = ("", "") if success else _classify(
        plan, state, message, grasped, env.time, cfg, task, errors, motion, grasp_report
    )  # fmt: skip
    return EpisodeResult(
        success=bool(success), failure=failure, message=plan.message if not plan.ok else message,
        errors={k: float(v) for k, v in errors.items()}, plan_status=int(plan.status),
        final_state=state, sim_time_s=float(env.time), wall_time_s=time.perf_counter() - wall0,
        planned_path=planned, executed_path=np.array(executed).reshape(-1, 3), grasped=grasped,
        frames=frames, object_motion=motion, failure_detail=detail,
    )  # fmt: skip


def _classify(
    plan: Plan, state: str, message: str, grasped: bool, t: float, cfg: EpisodeConfig,
    task: TaskDef, errors: dict[str, float], motion: float, grasp_report: str = "",
) -> tuple[str, str]:  # fmt: skip
    """(one of FAILURES, the failure in numbers) for an unsolved episode; see FAILURES."""
    if plan.status != PLAN_OK:
        return ("ik_unreachable" if plan.status == 5 else "plan_failed"), plan.message
    push = task.activity == "push"
    # No contact with the object: a grasp that did not weld, a push that did not move it.
    missed = (motion < PUSH_MOVED) if push else not grasped
    missed_label = "push_missed" if push else "grasp_missed"
    # grasp_report: the sim's strict grasp check on the last close, e.g. why it did not weld
    missed_detail = f"object moved {motion:.3f}" if push else (
        f"no grasp: {grasp_report}" if grasp_report else "the gripper never closed on the part"
    )  # fmt: skip
    if state == "failed":
        text = message.lower()
        if "ik " in text or "unreachable" in text or "not reachable" in text:
            return "ik_unreachable", message
        if "stale" in text:
            return "watchdog", message
        return (missed_label, missed_detail) if missed else ("controller_failed", message)
    if state != "done" and t >= cfg.max_time_s:
        return "timeout", f"state {state} at {t:.1f} s"
    if missed:
        return missed_label, missed_detail
    return "wrong_final_pose", _pose_errors_text(task, errors)


def _pose_errors_text(task: TaskDef, errors: dict[str, float]) -> str:
    if "joint" in errors:
        unit = "m" if task.kind == "drawer" else "rad"
        return f"joint {errors['joint']:.3f} {unit} off (tol {task.tol:g})"
    return (
        f"position {errors.get('position', float('nan')):.3f} m (tol {task.tol:g}), "
        f"angle {errors.get('angle', float('nan')):.3f} rad (tol {task.tol_angle:g})"
    )
