"""Tasks, splits, success tests, grasping, and the scripted expert's success rate."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from t2a_sim.core import tasks
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv
from t2a_sim.core.expert import ScriptedExpert, run_expert
from t2a_sim.core.tasks import SPLITS, TASKS

pytestmark = pytest.mark.sim

SPLIT_OF = {}
for _split in SPLITS.values():
    for _task in _split.tasks:
        SPLIT_OF.setdefault(_task, _split.name)


@pytest.fixture(scope="module")
def env() -> SimEnv:
    return SimEnv(SimConfig(width=64, height=48))


def test_splits_follow_the_paper():
    seen = {(TASKS[t].kind, TASKS[t].activity) for t in SPLITS["MG"].tasks}
    assert SPLITS["MG"].tasks == SPLITS["G"].tasks
    assert SPLITS["MG"].instances == "seen" and SPLITS["G"].instances == "novel"
    for t in SPLITS["CG"].tasks:  # new pairs of a seen kind and a seen activity
        assert (TASKS[t].kind, TASKS[t].activity) not in seen
        assert TASKS[t].kind in {k for k, _ in seen} and TASKS[t].activity in {a for _, a in seen}
    for t in SPLITS["TG"].tasks:  # kinds never seen
        assert TASKS[t].kind not in {k for k, _ in seen}
    assert set(SPLIT_OF) == set(TASKS)


def test_episodes_are_seeded_and_instances_follow_the_split():
    a = tasks.sample_episode("drawer_open", "MG", 4)
    assert a == tasks.sample_episode("drawer_open", "MG", 4)
    assert a != tasks.sample_episode("drawer_open", "MG", 5)
    mg = {tasks.sample_episode("drawer_open", "MG", s).instance_id for s in range(30)}
    assert mg <= {f"seen-{k}" for k in range(tasks.SEEN_INSTANCES_PER_KIND)}
    g = [tasks.sample_episode("drawer_open", "G", s) for s in range(3)]
    assert all(e.instance_id == "novel" for e in g)
    assert len({e.instance["W"] for e in g}) == 3
    assert all(tasks.sample_episode(t, "TG", 0).scene_id == "novel" for t in SPLITS["TG"].tasks)
    with pytest.raises(ValueError, match="split 'XX' unknown"):
        tasks.sample_episode("drawer_open", "XX", 0)
    with pytest.raises(ValueError, match="task 'fly' unknown"):
        tasks.sample_episode("fly", "MG", 0)


def _put_object(env: SimEnv, value) -> None:
    """Move the task object to a joint value or a 4x4 pose, at rest."""
    m, d = env.model, env.data
    if env.task.articulated:
        d.qpos[env.obj_qadr] = value
    else:
        q = np.zeros(4)
        mujoco.mju_mat2Quat(q, np.asarray(value)[:3, :3].flatten())
        d.qpos[env.obj_qadr : env.obj_qadr + 7] = [*np.asarray(value)[:3, 3], *q]
    d.qvel[:] = 0
    mujoco.mj_forward(m, d)


@pytest.mark.parametrize("task", sorted(TASKS))
def test_success_test_accepts_the_goal_and_rejects_a_wrong_pose(env, task):
    env.reset(task, SPLIT_OF[task], 0)
    t = env.task
    assert not env.task_success()[0], "the start state must not already count as success"
    _put_object(env, env.goal)
    ok, err = env.task_success()
    assert ok and max(err.values()) < 1e-6
    if t.articulated:
        _put_object(env, env.goal + 2 * t.tol * (1 if env.goal < 0.05 else -1))
        ok, err = env.task_success()
        assert not ok and err["joint"] == pytest.approx(2 * t.tol)
    else:
        wrong = env.goal.copy()
        wrong[0, 3] += 2 * t.tol
        ok, err = env.task_success()
        _put_object(env, wrong)
        assert not env.task_success()[0]
        tilted = env.goal.copy()
        c, s = np.cos(2 * t.tol_angle), np.sin(2 * t.tol_angle)
        tilted[:3, :3] = tilted[:3, :3] @ np.array([[1, 0, 0], [0, c, -s], [0, s, c]])
        _put_object(env, tilted)
        ok, err = env.task_success()
        assert not ok and err["angle"] == pytest.approx(2 * t.tol_angle, abs=1e-6)


def _run_until(env: SimEnv, commands, phase: str):
    """Execute the expert's commands up to (not including) the first one of ``phase``."""
    for cmd in commands:
        if cmd.phase == phase:
            return cmd
        env.set_arm_targets(cmd.q, cmd.gripper)
        env.advance(0.02)
    raise AssertionError(f"expert never reached phase {phase!r}")


def test_weld_grasp_switches_on_without_a_jump_and_holds(env):
    env.reset("bottle_lift", "MG", 2)
    commands = ScriptedExpert(env).commands()
    cmd = _run_until(env, commands, "grasp")
    before = env.object_pose()
    T_hand_obj = np.linalg.inv(env.hand_pose()) @ before
    assert not env.grasped()
    env.set_arm_targets(cmd.q, cmd.gripper)  # the close command
    assert env.data.eq_active[0] == 1
    # Before the finger reaches the bottle only the weld acts on it: a wrong relative pose in
    # the weld would yank it centimetres towards the hand. What remains is the soft weld
    # stretching against table friction while the servos settle (well under a millimetre).
    env.advance(0.02)
    np.testing.assert_allclose(
        np.linalg.inv(env.hand_pose()) @ env.object_pose(), T_hand_obj, atol=1e-3
    )
    env.advance(0.3)
    np.testing.assert_allclose(env.object_pose()[:3, 3], before[:3, 3], atol=4e-3)
    T_hand_obj = np.linalg.inv(env.hand_pose()) @ env.object_pose()
    _run_until(env, commands, "hold")
    assert env.object_pose()[2, 3] > before[2, 3] + 0.08  # lifted
    dp, da = tasks.pose_errors(np.linalg.inv(env.hand_pose()) @ env.object_pose(), T_hand_obj)
    assert dp < 2e-3 and da < 0.03, (dp, da)  # held rigidly (the weld is only slightly soft)
    env.open_gripper()
    assert not env.grasped()


def test_friction_mode_grasps_by_contact_only():
    env = SimEnv(SimConfig(width=64, height=48, grasp_mode="friction"))
    env.reset("drawer_open", "MG", 1)
    _run_until(env, ScriptedExpert(env).commands(), "hold")
    assert env.data.eq_active[0] == 0 and env.grasped()
    env.reset("drawer_open", "MG", 1)
    ok, err = run_expert(env)
    assert ok, err


FAST = [(t, SPLIT_OF[t], s) for t in sorted(TASKS) for s in (0, 1)]


@pytest.mark.parametrize("task,split,seed", FAST)
def test_expert_solves_task_fast(env, task, split, seed):
    env.reset(task, split, seed)
    ok, err = run_expert(env)
    assert ok, f"{task} {split} seed {seed}: {err}"
