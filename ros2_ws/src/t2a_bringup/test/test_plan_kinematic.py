"""Planner on ground-truth tracks of every task: executed by a perfect follower (the object moved
exactly by the planned rigid motion), the final object pose passes the task's success test."""

from __future__ import annotations

import numpy as np
import pytest

from t2a_bringup.core.episode import EpisodeConfig, expert_reference, make_plan, sim_config
from t2a_common.core.geometry import invert
from t2a_planning.core.config import PlannerConfig
from t2a_sim.core import tasks
from t2a_sim.core.env import SimEnv

pytestmark = pytest.mark.sim
CASES = [(task, next(s for s in tasks.SPLITS if task in tasks.tasks_of(s))) for task in tasks.TASKS]


def _joint_value(env: SimEnv, T_target: np.ndarray) -> float:
    """The object joint value whose part pose is nearest ``T_target`` (1D search)."""
    qpos = env.data.qpos.copy()
    t = env.task
    lo = min(*t.start, *t.goal) - 0.3
    hi = max(*t.start, *t.goal) + 0.3
    best, best_err = None, np.inf
    for q in np.linspace(lo, hi, 601):
        qpos[env.obj_qadr] = q
        T = env.kin.body_pose(env.scene.obj.part, qpos)
        dp, da = tasks.pose_errors(T, T_target)
        if dp + 0.1 * da < best_err:
            best, best_err = q, dp + 0.1 * da
    return float(best)


@pytest.mark.parametrize("task,split", CASES)
def test_planned_object_motion_reaches_the_goal(task, split):
    cfg = EpisodeConfig(task=task, split=split, seed=1)
    ref = expert_reference(cfg)
    env = SimEnv(sim_config(cfg))
    env.reset(task, split, cfg.seed)
    try:
        # The true extrinsics: this checks the planner, not the calibration.
        T_body_cam = env.T_body_cam
        plan = make_plan(ref.tracks_px, ref.depth0, env, T_body_cam, PlannerConfig())
        assert len(plan.object_transforms) == cfg.horizon + 1, plan.message
        T_body_obj = T_body_cam @ plan.object_transforms[-1] @ invert(T_body_cam)
        T_pred = T_body_obj @ env.object_pose()
        if env.task.articulated:
            q = _joint_value(env, T_pred)
            assert abs(q - env.goal) <= env.task.tol, (q, env.goal, plan.message)
        else:
            dp, da = tasks.pose_errors(T_pred, env.goal)
            assert dp <= env.task.tol and da <= env.task.tol_angle, (dp, da, plan.message)
    finally:
        env.close()
