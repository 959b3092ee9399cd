"""Safety filter: limits hold for any input (property tests), and each limit acts as documented."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy.spatial.transform import Rotation

from t2a_common.core.kinematics import fk
from t2a_common.core.se3 import so3_log
from t2a_common.core.spot_arm import LOWER, MAX_JOINT_SPEED, READY, STOW, UPPER
from t2a_control.core.safety import (
    ANGULAR_SPEED,
    BAD_DT,
    JOINT_LIMITS,
    JOINT_SPEED,
    LINEAR_SPEED,
    LONG_DT,
    NON_FINITE_GOAL,
    NON_FINITE_JOINTS,
    NON_RIGID_GOAL,
    VIOLATIONS,
    WORKSPACE,
    SafetyConfig,
    SafetyFilter,
    step_towards,
)

CONFIG = SafetyConfig()
FILTER = SafetyFilter(CONFIG)
BOX_MIN = np.array(CONFIG.workspace_min_m)
BOX_MAX = np.array(CONFIG.workspace_max_m)
BAND_LO = LOWER + CONFIG.joint_limit_margin_rad
BAND_HI = UPPER - CONFIG.joint_limit_margin_rad
JOINT_SPEED_LIMIT = MAX_JOINT_SPEED * CONFIG.joint_speed_fraction
EPS = 1e-9  # slack for the rounding of a 4x4 product, far below any physical tolerance


def pose(rotvec, position) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, 3] = position
    return T


def usable_dt(dt: float) -> float:
    """The period the filter may move for: 0 for garbage, capped at max_tick_s."""
    if not (math.isfinite(dt) and dt > 0.0):
        return 0.0
    return min(dt, CONFIG.max_tick_s)


def outside_box(p: np.ndarray) -> np.ndarray:
    """(3,) distance outside the box per axis (0 inside)."""
    return np.maximum(BOX_MIN - p, 0.0) + np.maximum(p - BOX_MAX, 0.0)


def outside_band(q: np.ndarray) -> np.ndarray:
    return np.maximum(BAND_LO - q, 0.0) + np.maximum(q - BAND_HI, 0.0)


# ---------------------------------------------------------------------------------------------
# Strategies: garbage is the point, valid inputs keep the interesting cases covered too.
# ---------------------------------------------------------------------------------------------

wild = st.floats(allow_nan=True, allow_infinity=True, width=64)
moderate = st.floats(-3.0, 3.0)
rotvecs = st.lists(st.floats(-4.0, 4.0), min_size=3, max_size=3)
positions = st.lists(st.floats(-1.0, 2.0), min_size=3, max_size=3)
dts = st.one_of(
    st.floats(-1.0, 2.0),
    st.sampled_from([0.0, 5e-324, 1e-300, 0.2, math.nan, math.inf, -math.inf, 1e300]),
)


@st.composite
def goals(draw) -> np.ndarray:
    kind = draw(st.sampled_from(["pose", "far", "garbage", "scaled", "shape"]))
    if kind == "pose":
        return pose(draw(rotvecs), draw(positions))
    if kind == "far":  # a valid pose kilometres (or 1e300 m) away
        scale = draw(st.sampled_from([1e3, 1e300]))
        return pose(draw(rotvecs), np.array(draw(positions)) * scale)
    if kind == "garbage":  # a pose with random entries replaced by anything
        T = pose(draw(rotvecs), draw(positions))
        for _ in range(draw(st.integers(1, 4))):
            T[draw(st.integers(0, 3)), draw(st.integers(0, 3))] = draw(wild)
        return T
    if kind == "scaled":  # not a rotation
        T = pose(draw(rotvecs), draw(positions))
        T[:3, :3] *= draw(st.sampled_from([-1.0, 0.0, 1.5, 1e6]))
        return T
    return np.zeros(draw(st.sampled_from([(3, 3), (4,), (16,), (2, 4, 4)])))


@st.composite
def current_poses(draw) -> np.ndarray:
    if draw(st.booleans()):
        return fk(np.array([draw(st.floats(lo, hi)) for lo, hi in zip(LOWER, UPPER)]))
    return pose(draw(rotvecs), draw(positions))


@st.composite
def joint_targets(draw) -> np.ndarray:
    kind = draw(st.sampled_from(["moderate", "wild", "shape"]))
    if kind == "moderate":
        return np.array(draw(st.lists(moderate, min_size=6, max_size=6)))
    if kind == "wild":
        return np.array(draw(st.lists(wild, min_size=6, max_size=6)))
    return np.zeros(draw(st.sampled_from([(5,), (7,), (6, 1)])))


@st.composite
def current_joints(draw) -> np.ndarray:
    # Measured joints are within the hard limits but may sit inside the margin (e.g. stowed).
    return np.array([draw(st.floats(lo, hi)) for lo, hi in zip(LOWER, UPPER)])


# ---------------------------------------------------------------------------------------------
# Properties
# ---------------------------------------------------------------------------------------------


@settings(max_examples=400, deadline=None)
@given(T_goal=goals(), T_current=current_poses(), dt=dts)
def test_ee_goal_never_leaves_the_limits(T_goal, T_current, dt):
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_current, dt)

    assert T_safe.shape == (4, 4) and np.isfinite(T_safe).all()
    np.testing.assert_array_equal(T_safe[3], [0.0, 0.0, 0.0, 1.0])
    R = T_safe[:3, :3]
    assert np.abs(R.T @ R - np.eye(3)).max() < 1e-9 and np.linalg.det(R) > 0.0
    p, p_now = T_safe[:3, 3], T_current[:3, 3]
    if np.all(outside_box(p_now) == 0.0):
        assert np.all(p >= BOX_MIN) and np.all(p <= BOX_MAX), p
    else:  # it can only come closer to the box, never jump into it or leave further
        assert np.all(outside_box(p) <= outside_box(p_now) + EPS)
    tick = usable_dt(dt)
    assert np.linalg.norm(p - p_now) <= CONFIG.max_linear_speed_mps * tick + EPS
    angle = np.linalg.norm(so3_log(R @ T_current[:3, :3].T))
    assert angle <= CONFIG.max_angular_speed_rps * tick + EPS
    assert set(violations) <= set(VIOLATIONS)


@settings(max_examples=400, deadline=None)
@given(q_target=joint_targets(), q_current=current_joints(), dt=dts)
def test_joints_never_leave_the_limits(q_target, q_current, dt):
    q_safe, violations = FILTER.filter_joints(q_target, q_current, dt)

    assert q_safe.shape == (6,) and np.isfinite(q_safe).all()
    if np.all(outside_band(q_current) == 0.0):
        assert np.all(q_safe >= BAND_LO) and np.all(q_safe <= BAND_HI), q_safe
    else:
        assert np.all(outside_band(q_safe) <= outside_band(q_current) + EPS)
    assert np.all(np.abs(q_safe - q_current) <= JOINT_SPEED_LIMIT * usable_dt(dt) + EPS)
    assert set(violations) <= set(VIOLATIONS)


# ---------------------------------------------------------------------------------------------
# Each limit on its own
# ---------------------------------------------------------------------------------------------

T_READY = fk(READY)  # hand at about (1.007, 0, 0.184) m, inside the default box


def test_small_step_inside_the_box_passes_unchanged():
    T_goal = T_READY.copy()
    T_goal[:3, 3] += [-0.02, 0.03, 0.01]
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 0.2)
    np.testing.assert_allclose(T_safe, T_goal, atol=1e-12)
    assert violations == []


def test_far_goal_moves_one_tick_along_the_straight_line():
    T_goal = T_READY.copy()
    T_goal[:3, 3] += [-0.4, 0.3, 0.0]  # 0.5 m away, inside the box
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 0.2)
    step = T_safe[:3, 3] - T_READY[:3, 3]
    assert np.linalg.norm(step) == pytest.approx(0.5 * 0.2)
    np.testing.assert_allclose(step / np.linalg.norm(step), [-0.8, 0.6, 0.0], atol=1e-12)
    assert violations == [LINEAR_SPEED]


def test_rotation_is_limited_along_the_geodesic_and_arrives_with_the_position():
    w = np.array([0.0, 0.0, 1.2])  # 1.2 rad about z; limit is 1.5 rad/s * 0.2 s = 0.3 rad
    T_goal = pose(w, T_READY[:3, 3] + [0.0, 0.0, 0.05])
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 0.2)
    w_step = so3_log(T_safe[:3, :3] @ T_READY[:3, :3].T)
    np.testing.assert_allclose(w_step, w / 4.0, atol=1e-12)
    # Same fraction for the position, so the hand does not finish turning before it arrives.
    np.testing.assert_allclose(T_safe[:3, 3] - T_READY[:3, 3], [0.0, 0.0, 0.05 / 4.0], atol=1e-12)
    assert violations == [ANGULAR_SPEED]


def test_goal_outside_the_box_is_clamped_to_its_face():
    T_goal = T_READY.copy()
    T_goal[:3, 3] = [1.27, 0.0, 0.184]  # 2 cm past x max, 0.24 m of it reachable in 0.5 s
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 0.5)
    assert T_safe[0, 3] == pytest.approx(CONFIG.workspace_max_m[0])
    assert violations == [WORKSPACE]


@pytest.mark.parametrize(
    ("entry", "code"),
    [(math.nan, NON_FINITE_GOAL), (math.inf, NON_FINITE_GOAL), (1e300, NON_RIGID_GOAL)],
)
def test_unusable_goal_holds_the_current_pose(entry, code):
    T_goal = T_READY.copy()
    T_goal[0, 0] = entry
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 0.2)
    np.testing.assert_allclose(T_safe, T_READY, atol=1e-12)
    assert violations == [code]


def test_float32_rotation_noise_is_projected_not_refused():
    T_goal = T_READY.copy()
    T_goal[:3, :3] = Rotation.from_rotvec([0.0, 0.0, 0.1]).as_matrix().astype(np.float32)
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 0.2)
    assert violations == []
    np.testing.assert_allclose(T_safe[:3, :3].T @ T_safe[:3, :3], np.eye(3), atol=1e-12)


@pytest.mark.parametrize(("dt", "code"), [(0.0, BAD_DT), (-0.2, BAD_DT), (math.nan, BAD_DT)])
def test_unusable_period_holds(dt, code):
    T_goal = T_READY.copy()
    T_goal[0, 3] -= 0.05
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, dt)
    np.testing.assert_allclose(T_safe, T_READY, atol=1e-12)
    assert violations == [code]
    q_safe, violations = FILTER.filter_joints(READY + 0.01, READY, dt)
    np.testing.assert_array_equal(q_safe, READY)
    assert violations == [code]


def test_long_period_is_cut_to_max_tick():
    T_goal = T_READY.copy()
    T_goal[0, 3] -= 0.5
    T_safe, violations = FILTER.filter_ee_goal(T_goal, T_READY, 10.0)
    assert np.linalg.norm(T_safe[:3, 3] - T_READY[:3, 3]) == pytest.approx(0.5 * 0.5)
    assert violations == [LONG_DT, LINEAR_SPEED]


def test_invalid_current_pose_or_joints_raise():
    with pytest.raises(ValueError, match="current hand pose"):
        FILTER.filter_ee_goal(T_READY, np.full((4, 4), np.nan), 0.2)
    with pytest.raises(ValueError, match="current joints"):
        FILTER.filter_joints(READY, np.array([0.0, np.nan, 0.0, 0.0, 0.0, 0.0]), 0.2)


def test_joint_targets_are_clamped_to_the_margin_and_scaled_together():
    q_current = READY.copy()
    q_current[3] = 2.6  # el1, 0.19 rad from its upper limit
    q_target = q_current.copy()
    q_target[3] = 10.0  # far past it
    q_safe, violations = FILTER.filter_joints(q_target, q_current, 0.2)
    assert q_safe[3] == pytest.approx(UPPER[3] - CONFIG.joint_limit_margin_rad)
    assert violations == [JOINT_LIMITS]

    step = np.array([0.4, -0.2, 0.1, 0.0, 0.0, 0.0])  # 0.4 rad in one 0.2 s tick on sh0
    q_safe, violations = FILTER.filter_joints(READY + step, READY, 0.2)
    expected = step * (JOINT_SPEED_LIMIT[0] * 0.2 / 0.4)  # common scale keeps the direction
    np.testing.assert_allclose(q_safe - READY, expected, atol=1e-12)
    assert violations == [JOINT_SPEED]


def test_non_finite_joint_target_holds_the_current_joints():
    q_safe, violations = FILTER.filter_joints(np.full(6, np.nan), READY, 0.2)
    np.testing.assert_array_equal(q_safe, READY)
    assert violations == [NON_FINITE_JOINTS]


def test_stowed_arm_inside_the_margin_is_only_moved_inwards():
    # STOW puts sh1 and el0 within 0.05 rad of their limits.
    q_safe, _ = FILTER.filter_joints(STOW, STOW, 0.2)
    assert np.all(outside_band(q_safe) <= outside_band(STOW))
    assert np.all(np.abs(q_safe - STOW) <= JOINT_SPEED_LIMIT * 0.2 + EPS)


def test_step_towards_reports_the_fraction_and_reaches_the_goal():
    T_goal = pose([0.0, 0.3, 0.0], T_READY[:3, 3] + [0.0, 0.1, 0.0])
    T, s = step_towards(T_READY, T_goal, 0.05, 1.0)
    assert s == pytest.approx(0.5)
    T, s = step_towards(T_READY, T_goal, 1.0, 1.0)
    assert s == 1.0 and np.allclose(T, T_goal)


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"workspace_min_m": (0.0, 0.0)}, "3 finite numbers"),
        ({"workspace_min_m": (2.0, -0.8, -0.45)}, "box is empty"),
        ({"max_linear_speed_mps": 0.0}, "max_linear_speed_mps"),
        ({"joint_limit_margin_rad": 2.0}, "joint_limit_margin_rad"),
        ({"joint_speed_fraction": 1.5}, "joint_speed_fraction"),
    ],
)
def test_config_rejects_bad_values(changes, match):
    with pytest.raises(ValueError, match=match):
        SafetyConfig(**changes)
