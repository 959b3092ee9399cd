"""The MuJoCo Spot arm: built from spot_arm's table, FK matches the table, servos respect limits."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from t2a_common.core import spot_arm
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import GRIPPER_CLOSED, SimEnv

pytestmark = pytest.mark.sim

SH0 = np.array([0.292, 0.0, 0.188])  # arm_sh0 origin in body (DESIGN.md section 5)
REACH = 0.3385 + 0.4033 + 0.19557  # upper arm + forearm + tool offset along x (m)


def _at(x: float, y: float, z: float) -> np.ndarray:
    """A point given relative to the arm_sh0 origin."""
    return SH0 + np.array([x, y, z])


def _Ry(a: float) -> np.ndarray:
    return Rotation.from_euler("y", a).as_matrix()


# (joint angles, expected tool position, expected tool rotation), worked out by hand from the
# DESIGN.md table: all joint rpy are 0, so each link is a translation then a rotation.
CASES = [
    (np.zeros(6), _at(REACH, 0, 0.075), np.eye(3)),
    (
        np.array([np.pi / 2, 0, 0, 0, 0, 0]),
        _at(0, REACH, 0.075),
        Rotation.from_euler("z", np.pi / 2).as_matrix(),
    ),
    (  # upper arm straight up: x -> +z, z -> -x
        np.array([0, -np.pi / 2, 0, 0, 0, 0]),
        _at(-0.075, 0, REACH),
        _Ry(-np.pi / 2),
    ),
    (  # forearm straight down from the elbow
        np.array([0, 0, np.pi / 2, 0, 0, 0]),
        _at(0.3385 + 0.075, 0, -(0.4033 + 0.19557)),
        _Ry(np.pi / 2),
    ),
    (  # hand pitched down at the wrist
        np.array([0, 0, 0, 0, np.pi / 2, 0]),
        _at(0.3385 + 0.4033, 0, 0.075 - 0.19557),
        _Ry(np.pi / 2),
    ),
    (  # rolls do not move the tool point, only turn the hand
        np.array([0, 0, 0, 0.7, 0, -0.3]),
        _at(REACH, 0, 0.075),
        Rotation.from_euler("x", 0.4).as_matrix(),
    ),
]


@pytest.fixture(scope="module")
def env() -> SimEnv:
    e = SimEnv(SimConfig(width=64, height=48))
    e.reset("box_push", "MG", 0)
    return e


def test_model_joints_are_the_spot_arm_table(env):
    m = env.model
    for j in (*spot_arm.ARM_JOINTS, spot_arm.GRIPPER_JOINT):
        jid = mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_JOINT, j.name)
        assert jid >= 0, j.name
        body = m.jnt_bodyid[jid]
        assert m.body(body).name == j.child
        assert m.body(m.body_parentid[body]).name == j.parent
        np.testing.assert_allclose(m.body_pos[body], j.origin, atol=1e-12)
        np.testing.assert_allclose(m.jnt_axis[jid], j.axis, atol=1e-12)
        np.testing.assert_allclose(m.jnt_range[jid], (j.lower, j.upper), atol=1e-12)


@pytest.mark.parametrize("q,p,R", CASES)
def test_tool_site_fk_matches_the_table(env, q, p, R):
    T = env.kin.fk(q)
    np.testing.assert_allclose(T[:3, 3], p, atol=1e-9)
    np.testing.assert_allclose(T[:3, :3], R, atol=1e-9)


def test_hand_pose_is_the_live_tool_frame(env):
    q = env.joint_positions()[:6]
    np.testing.assert_allclose(env.hand_pose(), env.kin.fk(q), atol=1e-9)


def test_ik_round_trip(env):
    rng = np.random.default_rng(0)
    for _ in range(20):
        q = rng.uniform(spot_arm.LOWER * 0.6, spot_arm.UPPER * 0.6)
        q[2] = abs(q[2]) + 0.3
        T = env.kin.fk(q)
        q_sol, ok, err = env.kin.solve_best(T, spot_arm.READY)
        assert ok and err < 1e-3
        np.testing.assert_allclose(env.kin.fk(q_sol)[:3, 3], T[:3, 3], atol=1e-3)


def test_servos_are_rate_limited_and_track():
    env = SimEnv(SimConfig(width=64, height=48))
    env.reset("bottle_lift", "MG", 1)
    q0 = env.joint_positions()[:6]
    target = np.clip(
        q0 + np.array([0.8, 0.6, -0.6, 1.0, 0.8, -1.2]), spot_arm.LOWER, spot_arm.UPPER
    )
    env.set_arm_targets(target)
    peak = np.zeros(6)
    for _ in range(150):
        env.advance(0.01)
        peak = np.maximum(peak, np.abs(env.joint_velocities()[:6]))
    assert np.all(peak <= spot_arm.MAX_JOINT_SPEED * 1.02), peak
    np.testing.assert_allclose(env.joint_positions()[:6], target, atol=5e-3)


def test_bad_commands_are_refused(env):
    with pytest.raises(ValueError, match="6 finite joint angles"):
        env.set_arm_targets(np.zeros(5))
    with pytest.raises(ValueError, match="6 finite joint angles"):
        env.set_arm_targets(np.full(6, np.nan))
    with pytest.raises(RuntimeError, match="reset"):
        SimEnv().joint_positions()


def test_gripper_closes_to_shut_on_nothing(env):
    env.set_gripper(GRIPPER_CLOSED)
    env.advance(0.5)
    assert abs(env.joint_positions()[6]) < 0.02
    assert not env.grasped()


def test_realtime_clock_drops_a_backlog_instead_of_racing_ahead():
    """After a stall (a slow render, a loaded CPU) the sim skips the lost time and then keeps
    pace with the wall clock again; it must never run faster than ``rate`` afterwards."""
    from t2a_sim.core.env import RealtimeClock

    env = SimEnv(SimConfig(width=64, height=48))
    env.reset("drawer_open", "MG", 0)
    try:
        rt = RealtimeClock(env, rate=1.0, max_lag=0.1)
        rt.sync(100.0)  # starts the clock
        rt.sync(100.05)
        assert env.time == pytest.approx(0.05, abs=0.003)
        rt.sync(102.05)  # stalled for 2 s: catch up only max_lag
        assert env.time == pytest.approx(0.15, abs=0.003)
        for k in range(1, 11):  # then 10 x 20 ms of wall time: 20 ms of sim each
            rt.sync(102.05 + 0.02 * k)
        assert env.time == pytest.approx(0.35, abs=0.003)
    finally:
        env.close()
