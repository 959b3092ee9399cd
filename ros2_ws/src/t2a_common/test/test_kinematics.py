"""Spot arm forward kinematics, Jacobian and IK (unit tier: numpy only, a few seconds)."""

from __future__ import annotations

import math
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from t2a_common.core.kinematics import (
    LINK_NAMES,
    MAX_REACH_M,
    SHOULDER_IN_BODY,
    IKConfig,
    fk,
    fk_batch,
    jacobian,
    link_frames,
    solve_ik,
)
from t2a_common.core.se3 import so3_log
from t2a_common.core.spot_arm import LOWER, READY, UPPER

# Hand sums of the DESIGN.md table (m): shoulder at (0.292, 0, 0.188); upper arm 0.3385 along x;
# forearm 0.4033 along x and 0.075 up; tool 0.19557 along the wrist's x.
SHOULDER = np.array([0.292, 0.0, 0.188])
WRIST_AT_ZERO = np.array([0.292 + 0.3385 + 0.4033, 0.0, 0.188 + 0.075])  # (1.0338, 0, 0.263)
TOOL = 0.19557


def rot_x(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[1.0, 0.0, 0.0], [0.0, c, -s], [0.0, s, c]])


def rot_y(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def rot_z(a: float) -> np.ndarray:
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def q_with(**angles: float) -> np.ndarray:
    names = ("sh0", "sh1", "el0", "el1", "wr0", "wr1")
    return np.array([angles.get(n, 0.0) for n in names])


def pose(R: np.ndarray, p) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = R
    T[:3, 3] = p
    return T


def within_limits(q: np.ndarray) -> bool:
    return bool(np.all(q >= LOWER) and np.all(q <= UPPER))


def pose_errors(q: np.ndarray, T_target: np.ndarray) -> tuple[float, float]:
    """Position (m) and rotation (rad) error of fk(q), recomputed independently of the solver."""
    T = fk(q)
    position = float(np.linalg.norm(T[:3, 3] - T_target[:3, 3]))
    cos = (np.trace(T[:3, :3].T @ T_target[:3, :3]) - 1.0) / 2.0
    return position, float(np.arccos(np.clip(cos, -1.0, 1.0)))


# ---------------------------------------------------------------------------------------------
# Forward kinematics
# ---------------------------------------------------------------------------------------------

# (joint angles, tool rotation, tool position), worked out by hand from the table.
HAND_POSES = {
    # Everything stretched along the body's x: (1.22937, 0, 0.263).
    "zero": (q_with(), np.eye(3), WRIST_AT_ZERO + np.array([TOOL, 0.0, 0.0])),
    # Yaw the whole arm 90 deg left about the shoulder's vertical axis.
    "sh0=+90": (
        q_with(sh0=math.pi / 2),
        rot_z(math.pi / 2),
        SHOULDER + np.array([0.0, 0.3385 + 0.4033 + TOOL, 0.075]),
    ),
    # Pitch the arm straight up: the shoulder frame's x goes to +z, its z to -x.
    "sh1=-90": (
        q_with(sh1=-math.pi / 2),
        rot_y(-math.pi / 2),
        SHOULDER + np.array([-0.075, 0.0, 0.3385 + 0.4033 + TOOL]),
    ),
    # Forearm straight down from the elbow at (0.6305, 0, 0.188): x -> -z, z -> +x.
    "el0=+90": (
        q_with(el0=math.pi / 2),
        rot_y(math.pi / 2),
        [0.292 + 0.3385 + 0.075, 0.0, 0.188 - 0.4033 - TOOL],
    ),
    # Hand pitched down at the wrist: only the tool offset turns.
    "wr0=+90": (
        q_with(wr0=math.pi / 2),
        rot_y(math.pi / 2),
        WRIST_AT_ZERO + np.array([0.0, 0.0, -TOOL]),
    ),
    # Forearm roll then wrist pitch: the pitch axis has rolled onto z, so the hand points to +y.
    "el1=+90,wr0=+90": (
        q_with(el1=math.pi / 2, wr0=math.pi / 2),
        rot_x(math.pi / 2) @ rot_y(math.pi / 2),
        WRIST_AT_ZERO + np.array([0.0, TOOL, 0.0]),
    ),
    # A roll about the tool's own x axis leaves the tool position alone.
    "wr1=+60": (
        q_with(wr1=math.pi / 3),
        rot_x(math.pi / 3),
        WRIST_AT_ZERO + np.array([TOOL, 0.0, 0.0]),
    ),
}


@pytest.mark.parametrize("name", list(HAND_POSES))
def test_fk_matches_hand_computed_pose(name):
    q, R, p = HAND_POSES[name]
    np.testing.assert_allclose(fk(q), pose(R, p), atol=1e-12)


def test_fk_zero_pose_is_the_table_sum():
    np.testing.assert_allclose(fk(np.zeros(6))[:3, 3], [1.22937, 0.0, 0.263], atol=1e-12)


def test_link_frames_end_at_the_tool_and_start_at_the_shoulder():
    q = np.array([0.3, -0.7, 1.2, 0.4, -0.5, 0.9])
    frames = link_frames(q)
    assert frames.shape == (len(LINK_NAMES), 4, 4)
    np.testing.assert_allclose(frames[-1], fk(q), atol=1e-12)
    np.testing.assert_allclose(frames[0, :3, 3], SHOULDER, atol=1e-12)
    at_zero = link_frames(np.zeros(6))
    wrist = LINK_NAMES.index("link_wr1")
    np.testing.assert_allclose(at_zero[wrist, :3, 3], WRIST_AT_ZERO, atol=1e-12)


def test_fk_batch_equals_fk_per_sample():
    q = np.random.default_rng(1).uniform(LOWER, UPPER, size=(64, 6))
    T = fk_batch(q)
    assert T.shape == (64, 4, 4)
    for qi, Ti in zip(q, T):
        np.testing.assert_allclose(Ti, fk(qi), atol=1e-12)


def test_fk_rejects_wrong_shapes():
    with pytest.raises(ValueError, match=r"expected \(6,\)"):
        fk(np.zeros(7))
    with pytest.raises(ValueError, match=r"expected \(B, 6\)"):
        fk_batch(np.zeros(6))


def test_jacobian_matches_finite_differences():
    h = 1e-6  # rad; central differences are then accurate to ~1e-10
    for q in np.random.default_rng(2).uniform(LOWER, UPPER, size=(20, 6)):
        J = jacobian(q)
        numeric = np.empty((6, 6))
        for i in range(6):
            dq = np.zeros(6)
            dq[i] = h
            T_plus, T_minus = fk(q + dq), fk(q - dq)
            numeric[:3, i] = (T_plus[:3, 3] - T_minus[:3, 3]) / (2 * h)
            # Body-frame angular velocity: the rotation from minus to plus, left-multiplied.
            numeric[3:, i] = so3_log(T_plus[:3, :3] @ T_minus[:3, :3].T) / (2 * h)
        np.testing.assert_allclose(J, numeric, atol=1e-7)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-10.0, 10.0), min_size=6, max_size=6))
def test_fk_is_a_proper_rigid_transform_within_reach(angles):
    T = fk(np.array(angles))
    R = T[:3, :3]
    np.testing.assert_allclose(R.T @ R, np.eye(3), atol=1e-12)
    assert np.linalg.det(R) == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_array_equal(T[3], [0.0, 0.0, 0.0, 1.0])
    assert np.linalg.norm(T[:3, 3] - SHOULDER_IN_BODY) <= MAX_REACH_M + 1e-12


# ---------------------------------------------------------------------------------------------
# Inverse kinematics
# ---------------------------------------------------------------------------------------------

POSITION_BOUND = 1e-3  # m
ROTATION_BOUND = math.radians(0.5)  # rad


def random_reachable(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Joint angles uniform within the limits (n, 6) and their tool poses (n, 4, 4)."""
    q = np.random.default_rng(seed).uniform(LOWER, UPPER, size=(n, 6))
    return q, fk_batch(q)


def check_round_trip(targets: np.ndarray, seeds: np.ndarray, config: IKConfig) -> float:
    """Solve every target and return the success rate; successes must meet the error bounds."""
    successes = 0
    for T, seed in zip(targets, seeds):
        result = solve_ik(T, seed, config)
        assert within_limits(result.q)
        if result.success:
            successes += 1
            position, rotation = pose_errors(result.q, T)
            assert position < POSITION_BOUND and rotation < ROTATION_BOUND
            assert result.position_error_m == pytest.approx(position, abs=1e-9)
    return successes / len(targets)


def test_ik_round_trip_on_1000_random_poses_from_ready():
    # Seeded from READY, not from a perturbed copy of the answer: that is where a manipulation
    # starts, and being far from most targets it makes the solver pick among the elbow, shoulder
    # and wrist branches instead of just converging locally.
    _, targets = random_reachable(1000, seed=3)
    seeds = np.broadcast_to(READY, (1000, 6))
    assert check_round_trip(targets, seeds, IKConfig()) >= 0.99


def test_ik_lm_only_round_trip_from_perturbed_seeds():
    # The LM-only path is the local solver the control loop relies on between nearby goals, so it
    # is seeded the way the 5 Hz loop seeds it: near the answer (0.2 rad per joint).
    q, targets = random_reachable(200, seed=4)
    seeds = np.clip(q + np.random.default_rng(5).normal(0.0, 0.2, q.shape), LOWER, UPPER)
    assert check_round_trip(targets, seeds, IKConfig(analytic=False)) >= 0.99


def test_ik_lm_only_finds_far_targets_with_restarts():
    # From READY a local method alone misses about a third of random targets; the restarts are
    # what bring it back (measured 397/400 with the default 16; 60 poses keep this test short).
    _, targets = random_reachable(60, seed=6)
    seeds = np.broadcast_to(READY, (60, 6))
    assert check_round_trip(targets, seeds, IKConfig(analytic=False)) >= 0.95


@settings(max_examples=150, deadline=None)
@given(st.tuples(*(st.floats(float(lo), float(hi)) for lo, hi in zip(LOWER, UPPER))))
def test_ik_seeded_with_the_answer_returns_it(angles):
    q = np.array(angles)
    result = solve_ik(fk(q), q)
    assert result.success, result
    # Of all exact solutions the nearest to the seed is the seed itself.
    np.testing.assert_allclose(result.q, q, atol=1e-6)


def test_ik_seeded_with_the_answer_takes_no_iterations():
    q = np.array([0.4, -1.1, 1.7, 0.3, -0.6, 0.2])
    result = solve_ik(fk(q), q)
    assert result.status == "ok" and result.iterations == 0
    assert result.position_error_m < 1e-12 and result.rotation_error_rad < 1e-9


@pytest.mark.parametrize("analytic", [True, False])
def test_target_two_metres_away_is_unreachable_without_iterating(analytic):
    target = pose(np.eye(3), [2.0, 0.0, 0.3])
    result = solve_ik(target, READY, IKConfig(analytic=analytic))
    assert result.status == "unreachable" and not result.success
    assert result.iterations == 0
    assert within_limits(result.q)
    np.testing.assert_allclose(result.q, READY)
    assert result.position_error_m > 0.5
    assert "max reach" in result.message


def test_orientation_that_puts_the_wrist_out_of_reach_is_unreachable():
    # The position alone is within reach, but pointing the hand back at the body puts the wrist
    # centre 0.196 m further out than the stretched arm.
    target = pose(rot_z(math.pi), WRIST_AT_ZERO + np.array([0.1, 0.0, 0.0]))
    result = solve_ik(target, READY)
    assert result.status == "unreachable" and result.iterations == 0
    assert "wrist centre" in result.message


@pytest.mark.parametrize("analytic", [True, False])
def test_reachable_target_outside_joint_limits_fails_within_limits(analytic):
    # Wrist centre 0.6 m straight below the shoulder: the shoulder would have to pitch down to
    # about 0.86 rad, past arm_sh1's 0.5236 rad limit, whatever the other joints do.
    target = pose(rot_y(math.pi / 2), SHOULDER + np.array([0.0, 0.0, -0.6 - TOOL]))
    result = solve_ik(target, READY, IKConfig(analytic=analytic))
    assert not result.success
    assert result.status in (("joint_limits",) if analytic else ("joint_limits", "max_iterations"))
    assert within_limits(result.q)
    assert np.isfinite(result.position_error_m)


def test_joint_limit_margin_is_respected():
    margin = 0.05
    _, targets = random_reachable(50, seed=7)
    for T in targets:
        result = solve_ik(T, READY, IKConfig(joint_limit_margin=margin))
        assert np.all(result.q >= LOWER + margin - 1e-12) and np.all(result.q <= UPPER - margin)


BAD_TARGETS = {
    "nan position": pose(np.eye(3), [np.nan, 0.0, 0.3]),
    "inf rotation": pose(np.diag([np.inf, 1.0, 1.0]), [0.8, 0.0, 0.3]),
    "scaled rotation": pose(2.0 * np.eye(3), [0.8, 0.0, 0.3]),
    "reflection": pose(np.diag([1.0, 1.0, -1.0]), [0.8, 0.0, 0.3]),
    "wrong shape": np.eye(3),
    "all nan": np.full((4, 4), np.nan),
    "not numbers": [["a"] * 4] * 4,
    "none": None,
}


@pytest.mark.parametrize("name", list(BAD_TARGETS))
def test_bad_target_gives_bad_input_not_an_exception(name):
    result = solve_ik(BAD_TARGETS[name], READY)
    assert result.status == "bad_input" and not result.success
    assert within_limits(result.q) and np.all(np.isfinite(result.q))
    assert result.message


BAD_SEEDS = {
    "nan": np.full(6, np.nan),
    "five angles": np.zeros(5),
    "inf": np.array([0.0, np.inf, 0.0, 0.0, 0.0, 0.0]),
    "ragged": [0.0, [1.0, 2.0], 0.0, 0.0, 0.0, 0.0],
}


@pytest.mark.parametrize("seed", list(BAD_SEEDS.values()), ids=list(BAD_SEEDS))
def test_bad_seed_gives_bad_input_and_a_safe_q(seed):
    result = solve_ik(fk(READY), seed)
    assert result.status == "bad_input"
    np.testing.assert_allclose(result.q, READY)


def test_seed_outside_the_limits_is_clamped_not_rejected():
    q = np.array([0.2, -1.0, 1.5, 0.1, -0.4, 0.3])
    result = solve_ik(fk(q), q + np.array([0.0, 0.0, 0.0, 0.0, 5.0, 0.0]))
    assert result.success and within_limits(result.q)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("position_tolerance", 0.0),
        ("rotation_tolerance", float("nan")),
        ("max_iterations", 0),
        ("max_iterations", 2.5),
        ("damping", -1.0),
        ("joint_limit_margin", 2.0),
        ("restarts", -1),
        ("analytic", 1),
    ],
)
def test_ik_config_names_the_bad_value(field, value):
    with pytest.raises(ValueError, match=field):
        IKConfig(**{field: value})


def test_kinematics_imports_no_ros_and_no_simulator():
    code = (
        "import sys, t2a_common.core.kinematics; "
        "print(sorted(m for m in sys.modules if m.split('.')[0] in "
        "('rclpy', 'mujoco', 'torch') or m.endswith('_msgs')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
