"""The stack's own models of the robot agree with the simulator: arm FK and camera extrinsics."""

from __future__ import annotations

import mujoco
import numpy as np
import pytest

from t2a_common.core import kinematics, spot_arm
from t2a_planning.core.node_config import PlannerNodeConfig
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv
from t2a_sim.core.scene import camera_pose, optical_from_mjcam

pytestmark = pytest.mark.sim


def test_control_fk_matches_the_mujoco_arm():
    env = SimEnv(SimConfig(width=64, height=48))
    env.reset("drawer_open", "MG", 0)
    rng = np.random.default_rng(0)
    # Gravity-free check: put the arm at random joints directly and compare the tool site.
    qadr = env._qadr[:6]
    for _ in range(50):
        q = rng.uniform(spot_arm.LOWER, spot_arm.UPPER)
        env.data.qpos[qadr] = q
        mujoco.mj_kinematics(env.model, env.data)
        np.testing.assert_allclose(env.hand_pose(), kinematics.fk(q), atol=1e-9)
    env.close()


def test_planner_default_extrinsics_are_the_sim_camera():
    T_sim = optical_from_mjcam(*camera_pose(SimConfig(), (0.0,) * 6))
    np.testing.assert_allclose(PlannerNodeConfig().T_body_cam, T_sim, atol=1e-9)
