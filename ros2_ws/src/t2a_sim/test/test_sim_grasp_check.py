"""The weld's grasp check: strict (the jaws straddle the part) against the old distance check.

Each case puts the hand in a pose by IK (no physics: only the close command's check is under
test), opens the fingers and closes them.
"""

from __future__ import annotations

import mujoco
import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import GRIPPER_CLOSED, GRIPPER_OPEN, SimEnv
from t2a_sim.core.objects import JAW_OFFSET

pytestmark = pytest.mark.sim

# (task, split, site role): a horizontal bar, a vertical bar, a bottle, a jug handle, a knob, a
# box from the top.
CASES = [
    ("drawer_open", "MG", "handle"),
    ("cabinet_close", "MG", "handle"),
    ("bottle_lift", "MG", "handle"),
    ("jug_pour", "TG", "handle"),
    ("toaster_press", "TG", "handle"),
    ("box_lift", "CG", "top"),
]


def _grasp_pose(env: SimEnv, role: str, roll: float = 0.0) -> np.ndarray:
    """The expert's grasp of site ``role``: the site frame rolled about the approach, the part
    6 mm off the fixed jaw."""
    T = env.site_pose(role)
    T[:3, :3] = T[:3, :3] @ Rotation.from_euler("x", roll).as_matrix()
    T[:3, 3] -= (env.site_half_width(role) - JAW_OFFSET + 0.006) * T[:3, 2]
    return T


def _welds_at(env: SimEnv, T_tool: np.ndarray, finger: float = GRIPPER_OPEN) -> bool:
    """Teleport the hand to ``T_tool`` with the finger at ``finger`` (rad), then close."""
    d = env.data
    env.set_gripper(GRIPPER_OPEN)
    env.kin.set_qpos(d.qpos)
    q, ok, err = env.kin.solve_best(T_tool, env.joint_positions()[:6])
    assert ok, f"IK cannot reach the test pose ({err:.4f} m)"
    qadr = [env.model.jnt_qposadr[env.model.joint(n).id] for n in ("arm_sh0", "arm_f1x")]
    d.qpos[qadr[0] : qadr[0] + 6] = q
    d.qpos[qadr[1]] = finger
    mujoco.mj_forward(env.model, d)
    env.set_gripper(GRIPPER_CLOSED)
    return bool(d.eq_active[0])


@pytest.fixture(scope="module")
def strict() -> SimEnv:
    return SimEnv(SimConfig(width=64, height=48))


@pytest.fixture(scope="module")
def distance() -> SimEnv:
    return SimEnv(SimConfig(width=64, height=48, grasp_check="distance"))


def test_strict_is_the_default_and_unknown_checks_are_refused():
    assert SimConfig().grasp_check == "strict"
    with pytest.raises(ValueError, match="grasp_check 'radius' unknown"):
        SimConfig(grasp_check="radius")


@pytest.mark.parametrize("task,split,role", CASES)
def test_the_jaws_around_the_part_weld_either_roll(strict, task, split, role):
    strict.reset(task, split, 0)
    # Upside down, the wrist cannot reach the level drawer bar and toaster knob.
    rolls = (0.0,) if task in ("drawer_open", "toaster_press") else (0.0, np.pi)
    for roll in rolls:
        assert _welds_at(strict, _grasp_pose(strict, role, roll)), strict.grasp_report
        assert strict.grasp_report == f"{role}: between the jaws"


@pytest.mark.parametrize("task,split,role", CASES[:4])
def test_jaws_closing_along_a_round_part_do_not_weld(strict, distance, task, split, role):
    """Rolled 90 degrees about the approach, the jaws close along the bar / the bottle's axis:
    the distance check welds, the strict one does not."""
    for env in (strict, distance):
        env.reset(task, split, 0)
    T = _grasp_pose(strict, role, np.pi / 2)
    T[:3, 3] = strict.site_pose(role)[:3, 3]  # tool point on the part's centre
    assert _welds_at(distance, T)
    assert not _welds_at(strict, T)
    assert "off across the part's axis" in strict.grasp_report


@pytest.mark.parametrize("task,split,role", CASES[4:])
def test_a_box_is_held_across_a_face_not_across_an_edge(strict, task, split, role):
    """The knob and the box: rolled 90 degrees the jaws close across the other pair of faces
    (held, with that side's half-width); rolled 45 degrees they would close on the edges."""
    strict.reset(task, split, 0)
    T = _grasp_pose(strict, role, np.pi / 2)
    g = strict._gripped_geom[role]
    half = strict.model.geom_size[g]
    n = strict.data.geom_xmat[g].reshape(3, 3).T @ T[:3, 2]
    w = float(half[int(np.argmax(np.abs(n)))])
    T[:3, 3] += (strict.site_half_width(role) - w) * T[:3, 2]  # that side on the fixed jaw
    assert _welds_at(strict, T), strict.grasp_report
    assert not _welds_at(strict, _grasp_pose(strict, role, np.pi / 4))
    assert "off the nearest face normal" in strict.grasp_report


@pytest.mark.parametrize("task,split,role", CASES[:3])
def test_a_hand_stopped_short_of_the_part_does_not_weld(strict, task, split, role):
    """Backed off 3.5 cm along the approach, the part is beyond the jaw tips."""
    strict.reset(task, split, 0)
    T = _grasp_pose(strict, role)
    T[:3, 3] -= 0.035 * T[:3, 0]
    assert not _welds_at(strict, T)
    assert "beyond the jaw tips" in strict.grasp_report
    T[:3, 3] += 0.025 * T[:3, 0]  # 1 cm short: the jaws still hold it
    assert _welds_at(strict, T), strict.grasp_report


def test_jaws_above_the_part_or_too_little_open_do_not_weld(strict):
    strict.reset("bottle_lift", "MG", 0)
    T = _grasp_pose(strict, "handle")
    T_above = T.copy()
    T_above[:3, 3] += 0.06 * T[:3, 2]  # fixed jaw through the bottle's middle
    assert not _welds_at(strict, T_above)
    assert "below the fixed jaw" in strict.grasp_report
    assert not _welds_at(strict, T, finger=-0.3)  # a bottle does not fit a barely open hand
    assert "too wide" in strict.grasp_report
    T_along = T.copy()
    T_along[:3, 3] += 0.04 * T[:3, 1]  # along the bottle's axis (the hand's y): still held
    assert _welds_at(strict, T_along), strict.grasp_report

    strict.reset("box_lift", "CG", 0)
    T = _grasp_pose(strict, "top")
    T[:3, 3] += 0.08 * T[:3, 1]  # jaws beside the box
    assert not _welds_at(strict, T)
    assert "beside the jaws" in strict.grasp_report
