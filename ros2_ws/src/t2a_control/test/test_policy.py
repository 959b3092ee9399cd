"""Unit tests of the residual policy: action maths, network, checkpoints and the numpy runner.

Everything but the latency report runs a tiny configuration (32 px images, 2 blocks, 32 wide)
so the file takes seconds on a laptop CPU.
"""

from __future__ import annotations

import dataclasses
import json
import time

import numpy as np
import pytest
import torch
from scipy.spatial.transform import Rotation

from t2a_common.core.geometry import Intrinsics
from t2a_common.core.se3 import so3_exp
from t2a_common.core.types import PointTrackSet
from t2a_control.core.controller import PolicyInputMissing
from t2a_control.core.policy import (
    CONFIG_NAME,
    STATS_NAME,
    WEIGHTS_NAME,
    PolicyConfig,
    PolicyStats,
    ResidualPolicy,
    absolute_targets,
    action_chunks,
    action_targets,
    compose_residual,
    load_checkpoint,
    num_parameters,
    pose_from_absolute,
    residual_targets,
    rotation_from_6d,
    rotation_to_6d,
    save_checkpoint,
)
from t2a_control.core.policy_runtime import (
    PolicyRunner,
    RunnerConfig,
    mean_rotation,
    points_in_body,
    select_points,
)

TINY = PolicyConfig(
    image_size=32,
    encoder_width=4,
    hidden_size=32,
    depth=2,
    num_heads=2,
    horizon=4,
    chunk_size=3,
    num_points=16,
    use_hand=True,
    point_xyz=False,  # the tests of the point_xyz path turn it on
)
MODES = ("residual", "absolute")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a shared CPU OpenMP's barrier waits
    # make two threads several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, perturb: bool = True, **overrides: object) -> ResidualPolicy:
    torch.manual_seed(seed)
    model = ResidualPolicy(dataclasses.replace(TINY, **overrides), PolicyStats(0.02, 0.05))
    if perturb:
        # adaLN-Zero makes a fresh model output exactly zero; perturb the zero layers so tests
        # see a network whose output depends on its inputs.
        with torch.no_grad():
            for name, p in model.named_parameters():
                if "adaLN_modulation" in name or "final_layer.linear" in name:
                    p.normal_(0.0, 0.05)
    return model.eval()


def random_poses(rng: np.random.Generator, shape: tuple[int, ...] = ()) -> np.ndarray:
    n = int(np.prod(shape)) if shape else 1
    T = np.zeros((n, 4, 4))
    T[:, :3, :3] = Rotation.random(n, random_state=rng).as_matrix()
    T[:, :3, 3] = rng.uniform([0.4, -0.4, -0.2], [1.0, 0.4, 0.6], size=(n, 3))
    T[:, 3, 3] = 1.0
    return T.reshape(*shape, 4, 4) if shape else T[0]


def random_batch(config: PolicyConfig, batch: int = 2, num_points: int = 10, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    S, Hp1 = config.image_size, config.horizon + 1
    return {
        "image": torch.randint(0, 256, (batch, 3, S, S), generator=g, dtype=torch.uint8),
        "goal": torch.randint(0, 256, (batch, 3, S, S), generator=g, dtype=torch.uint8),
        "tracks": torch.rand(batch, Hp1, num_points, 2, generator=g) * 2 - 1,
        "plan_poses": torch.tensor(random_poses(rng, (batch, Hp1)), dtype=torch.float32),
        "plan_gripper": (torch.rand(batch, Hp1, generator=g) > 0.5).float(),
        "step": torch.randint(0, Hp1, (batch,), generator=g),
        "hand": torch.tensor(random_poses(rng, (batch,)), dtype=torch.float32),
    }


def random_action(config: PolicyConfig, batch: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    h = config.chunk_size
    if config.action_mode == "residual":
        pose = np.concatenate(
            [rng.normal(0, 0.02, (batch, h, 3)), rng.normal(0, 0.05, (batch, h, 3))], axis=-1
        )
    else:
        pose = absolute_targets(random_poses(rng, (batch, h)))
    closed = rng.integers(0, 2, (batch, h, 1))
    return torch.tensor(np.concatenate([pose, closed], axis=-1), dtype=torch.float32)


def runner_obs(
    config: PolicyConfig, seed: int = 0, width: int = 640, height: int = 480, num_points: int = 400
) -> dict:
    rng = np.random.default_rng(seed)
    H = config.horizon
    p0 = rng.uniform([0, 0], [width - 1, height - 1], size=(num_points, 2))
    motion = np.zeros((H + 1, num_points, 2))
    motion[:, : num_points // 4] = np.linspace(0, 40, H + 1)[:, None, None]  # a moving object
    tracks = np.clip(p0[None] + motion, 0, [width - 1, height - 1]).astype(np.float32)
    return {
        "image": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "goal": rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        "tracks": PointTrackSet(
            tracks, np.full(num_points, 1.0), Intrinsics.from_fov(width, height, 60.0)
        ),
        "plan": random_poses(rng, (H + 1,)),
        "plan_gripper": (np.arange(H + 1) >= 1).astype(float),
        "step": 1,
        "hand": random_poses(rng),
    }


# -------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------


def test_default_config_is_valid_and_small():
    cfg = PolicyConfig()
    assert cfg.action_mode == "residual" and cfg.chunk_size == 4  # the paper's h = 4
    assert (cfg.pose_dim, cfg.action_dim) == (6, 7)
    assert dataclasses.replace(cfg, action_mode="absolute").action_dim == 10


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"image_size": 16}, "image_size"),
        ({"hidden_size": 30, "num_heads": 4}, "not divisible"),
        ({"action_mode": "delta"}, "unknown action_mode"),
        ({"use_plan": False}, "use_plan=False needs action_mode='absolute'"),
        ({"workspace_center_m": (0.0, 0.0)}, "workspace_center_m"),
        ({"workspace_scale_m": 0.0}, "workspace_scale_m"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"num_points": 0}, "num_points"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        PolicyConfig(**overrides)


def test_stats_from_residuals_is_rms_with_floor():
    d = np.zeros((10, 6))
    d[:, 0] = 0.03
    stats = PolicyStats.from_residuals(d)
    assert stats.translation_scale_m == pytest.approx(0.03 / np.sqrt(3))
    assert stats.rotation_scale_rad == 1e-3  # all-zero rotations hit the floor
    with pytest.raises(ValueError, match="rotation_scale_rad"):
        PolicyStats(rotation_scale_rad=-1.0)


def test_runner_config_rejects_negative_decay():
    with pytest.raises(ValueError, match="ensemble_decay"):
        RunnerConfig(ensemble_decay=-0.1)


# -------------------------------------------------------------------------------------------
# Rotations and action targets
# -------------------------------------------------------------------------------------------


def test_residual_composition_round_trip_over_random_rotations():
    rng = np.random.default_rng(1)
    n = 3000
    plan = random_poses(rng, (n,))
    expert = random_poses(rng, (n,))
    # Mix in expert poses a small correction away from the plan, the typical case.
    small = rng.random(n) < 0.5
    m = int(small.sum())
    correction = np.concatenate([rng.normal(0, 0.03, (m, 3)), rng.normal(0, 0.1, (m, 3))], axis=1)
    expert[small] = compose_residual(plan[small], correction)
    deltas = residual_targets(expert, plan)
    assert deltas.shape == (n, 6)
    np.testing.assert_allclose(compose_residual(plan, deltas), expert, atol=1e-9, rtol=0)
    # The rotation part is the rotation vector of R_expert R_plan^T, as scipy computes it.
    R_rel = Rotation.from_matrix(expert[:, :3, :3]) * Rotation.from_matrix(plan[:, :3, :3]).inv()
    ref = R_rel.as_rotvec()
    unique = np.linalg.norm(ref, axis=1) < np.pi - 1e-6
    np.testing.assert_allclose(deltas[unique, 3:], ref[unique], atol=1e-9)
    np.testing.assert_allclose(deltas[:, :3], expert[:, :3, 3] - plan[:, :3, 3], atol=1e-15)


def test_composition_rotates_on_the_left_in_the_body_frame():
    plan = np.eye(4)
    plan[:3, :3] = Rotation.from_euler("z", 30, degrees=True).as_matrix()
    plan[:3, 3] = [0.5, 0.0, 0.3]
    delta = np.array([0.01, -0.02, 0.03, 0.0, 0.0, np.deg2rad(10)])
    out = compose_residual(plan, delta)
    np.testing.assert_allclose(out[:3, 3], [0.51, -0.02, 0.33], atol=1e-15)
    angle = Rotation.from_matrix(out[:3, :3]).as_euler("xyz", degrees=True)[2]
    assert angle == pytest.approx(40.0)


def test_absolute_targets_round_trip_and_6d():
    rng = np.random.default_rng(2)
    poses = random_poses(rng, (500,))
    np.testing.assert_allclose(pose_from_absolute(absolute_targets(poses)), poses, atol=1e-12)
    R = poses[:, :3, :3]
    np.testing.assert_allclose(rotation_from_6d(rotation_to_6d(R)), R, atol=1e-12)
    # Gram-Schmidt turns any non-degenerate 6D into a proper rotation.
    M = rotation_from_6d(rng.normal(size=(100, 6)))
    np.testing.assert_allclose(M @ np.swapaxes(M, 1, 2), np.tile(np.eye(3), (100, 1, 1)), atol=1e-9)
    np.testing.assert_allclose(np.linalg.det(M), 1.0, atol=1e-12)


def test_action_targets_and_chunks():
    rng = np.random.default_rng(3)
    T = 6
    plan, expert = random_poses(rng, (T,)), random_poses(rng, (T,))
    closed = (np.arange(T) >= 2).astype(float)
    res = action_targets("residual", expert, plan, closed)
    assert res.shape == (T, 7)
    np.testing.assert_array_equal(res[:, 6], closed)
    np.testing.assert_allclose(compose_residual(plan, res[:, :6]), expert, atol=1e-9)
    ab = action_targets("absolute", expert, plan, closed)
    assert ab.shape == (T, 10)
    np.testing.assert_allclose(pose_from_absolute(ab[:, :9]), expert, atol=1e-12)
    chunks, mask = action_chunks(res, 4)
    assert chunks.shape == (T, 4, 7) and mask.shape == (T, 4)
    np.testing.assert_array_equal(chunks[1, 2], res[3])
    np.testing.assert_array_equal(chunks[5, 3], res[5])  # padding repeats the last target
    assert mask[2].all() and mask[5].tolist() == [True, False, False, False]
    with pytest.raises(ValueError, match="expert_gripper_closed"):
        action_targets("residual", expert, plan, closed * 2)
    with pytest.raises(ValueError, match="differ in shape"):
        residual_targets(expert, plan[:3])
    with pytest.raises(ValueError, match="unknown action_mode"):
        action_targets("delta", expert, plan, closed)


# -------------------------------------------------------------------------------------------
# Network
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_shapes_and_loss(mode):
    model = tiny_model(action_mode=mode)
    cfg = model.config
    batch = random_batch(cfg, batch=3, num_points=7)
    out = model.predict_chunk(batch)
    assert out["action"].shape == (3, cfg.chunk_size, cfg.pose_dim)
    assert out["gripper_closed"].shape == (3, cfg.chunk_size)
    assert ((out["gripper_closed"] >= 0) & (out["gripper_closed"] <= 1)).all()
    if mode == "absolute":  # the 6D part comes back orthonormalised
        R = rotation_from_6d(out["action"][..., 3:].double().numpy())
        np.testing.assert_allclose(rotation_to_6d(R), out["action"][..., 3:].numpy(), atol=1e-5)
    model.train()
    batch["action"] = random_action(cfg, 3)
    loss, metrics = model.compute_loss(batch)
    assert loss.dim() == 0 and torch.isfinite(loss)
    loss.backward()
    assert set(metrics) >= {"loss", "loss_translation", "loss_rotation", "loss_gripper"}
    assert set(metrics) >= {"translation_error_m", "rotation_error_deg", "gripper_accuracy"}
    with pytest.raises(ValueError, match="action must be"):
        model.compute_loss({**batch, "action": batch["action"][..., :-1]})


def test_no_plan_ablation_needs_no_plan():
    model = tiny_model(action_mode="absolute", use_plan=False)
    batch = random_batch(model.config)
    del batch["plan_poses"], batch["plan_gripper"]
    assert model.predict_chunk(batch)["action"].shape == (2, TINY.chunk_size, 9)
    assert not any("waypoint" in name for name in model.state_dict())


def test_fresh_model_predicts_zero_residual():
    model = tiny_model(perturb=False)
    out = model.predict_chunk(random_batch(model.config))
    assert torch.equal(out["action"], torch.zeros_like(out["action"]))
    np.testing.assert_allclose(out["gripper_closed"].numpy(), 0.5)
    # So an untrained policy executes the open-loop plan exactly.
    obs = runner_obs(model.config, num_points=20)
    step_out = PolicyRunner(model=model).predict(obs)
    np.testing.assert_array_equal(step_out["pose"], obs["plan"][obs["step"]])


def test_track_mask_and_point_order():
    model = tiny_model()
    batch = random_batch(model.config, batch=1, num_points=6)
    ref = model.predict_chunk(batch)["action"]
    # No positional embedding: permuting the points does not change the output.
    perm = torch.randperm(6, generator=torch.Generator().manual_seed(0))
    permuted = model.predict_chunk({**batch, "tracks": batch["tracks"][:, :, perm]})["action"]
    torch.testing.assert_close(permuted, ref, atol=1e-5, rtol=1e-5)
    # Padded points behind a mask are ignored.
    pad = torch.cat([batch["tracks"], torch.rand(1, TINY.horizon + 1, 3, 2)], dim=2)
    mask = torch.tensor([[True] * 6 + [False] * 3])
    padded = model.predict_chunk({**batch, "tracks": pad, "track_mask": mask})["action"]
    torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)


def test_point_xyz_tokens_carry_the_body_frame_points():
    model = tiny_model(point_xyz=True)
    batch = random_batch(model.config, batch=1, num_points=6)
    with pytest.raises(ValueError, match="points_body must have shape"):
        model.predict_chunk(batch)
    pts = torch.tensor([[[0.8, 0.0, 0.1]] * 6])
    ref = model.predict_chunk({**batch, "points_body": pts})["action"]
    # The network sees where the points are: a 4 cm shift of the object changes the output.
    moved = model.predict_chunk({**batch, "points_body": pts + torch.tensor([0.0, 0.04, 0.0])})
    assert (moved["action"] - ref).abs().max() > 1e-4
    # Unknown depth (NaN) is a flag, not a NaN in the network.
    holes = pts.clone()
    holes[0, :3] = float("nan")
    out = model.predict_chunk({**batch, "points_body": holes})["action"]
    assert torch.isfinite(out).all() and (out - ref).abs().max() > 1e-6


@pytest.mark.parametrize("use_hand", [False, True])
def test_the_hand_token_is_seen_only_when_configured(use_hand):
    model = tiny_model(use_hand=use_hand)
    batch = random_batch(model.config, batch=1, num_points=6)
    ref = model.predict_chunk(batch)["action"]
    moved = batch["hand"].clone()
    moved[:, :3, 3] += 0.05
    other = model.predict_chunk({**batch, "hand": moved})["action"]
    assert ((other - ref).abs().max() > 1e-5) == use_hand
    # The track mask still lands on the track tokens with or without a hand token.
    pad = torch.cat([batch["tracks"], torch.rand(1, TINY.horizon + 1, 2, 2)], dim=2)
    mask = torch.tensor([[True] * 6 + [False] * 2])
    padded = model.predict_chunk({**batch, "tracks": pad, "track_mask": mask})["action"]
    torch.testing.assert_close(padded, ref, atol=1e-5, rtol=1e-5)


def test_determinism():
    a, b = tiny_model(seed=3), tiny_model(seed=3)
    batch = random_batch(TINY)
    out_a = a.predict_chunk(batch)
    assert torch.equal(out_a["action"], a.predict_chunk(batch)["action"])
    assert torch.equal(out_a["action"], b.predict_chunk(batch)["action"])
    assert not torch.equal(out_a["action"], tiny_model(seed=4).predict_chunk(batch)["action"])


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("image", torch.zeros(2, 3, 16, 16, dtype=torch.uint8), "image must have shape"),
        ("tracks", torch.zeros(2, 3, 5, 2), "tracks must be"),
        ("plan_poses", torch.zeros(2, 3, 4, 4), "plan_poses must have shape"),
        ("step", torch.tensor([0, 9]), "step must be integers"),
        ("step", torch.tensor([0.0, 1.0]), "step must be integers"),
    ],
)
def test_model_rejects_bad_batches(key, value, match):
    model = tiny_model()
    with pytest.raises(ValueError, match=match):
        model.predict_chunk({**random_batch(TINY), key: value})


def test_tiny_model_overfits_a_handful_of_pairs():
    """Loss drops > 10x on 8 synthetic (obs -> target chunk) pairs within 200 steps."""
    model = tiny_model(perturb=False).train()
    batch = random_batch(TINY, batch=8, num_points=8, seed=5)
    batch["action"] = random_action(TINY, 8, seed=5)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    first = None
    for _ in range(200):
        loss, _ = model.compute_loss(batch)
        first = first if first is not None else float(loss.detach())
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, metrics = model.compute_loss(batch)
    assert metrics["loss"] < first / 10, (first, metrics)
    assert metrics["gripper_accuracy"] == 1.0


# -------------------------------------------------------------------------------------------
# Checkpoints
# -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_checkpoint_round_trip(tmp_path, mode):
    model = tiny_model(action_mode=mode)
    save_checkpoint(model, tmp_path)
    assert {p.name for p in tmp_path.iterdir()} == {CONFIG_NAME, WEIGHTS_NAME, STATS_NAME}
    loaded = load_checkpoint(tmp_path)
    assert loaded.config == model.config and loaded.stats == model.stats
    batch = random_batch(model.config)
    assert torch.equal(loaded.predict_chunk(batch)["action"], model.predict_chunk(batch)["action"])


def test_checkpoint_with_mismatched_config_fails_clearly(tmp_path):
    save_checkpoint(tiny_model(), tmp_path)
    config = json.loads((tmp_path / CONFIG_NAME).read_text())
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "hidden_size": 64}))
    with pytest.raises(ValueError, match=r"does not fit the architecture.*hidden_size=64.*shape"):
        load_checkpoint(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "chunk_size": 5}))
    with pytest.raises(ValueError, match=r"chunk_size=5.*action_queries"):
        load_checkpoint(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "action_mode": "delta"}))
    with pytest.raises(ValueError, match=r"config.json: unknown action_mode 'delta'"):
        load_checkpoint(tmp_path)
    (tmp_path / CONFIG_NAME).write_text(json.dumps({**config, "dropout": 0.1}))
    with pytest.raises(ValueError, match=r"unknown keys \['dropout'\]"):
        load_checkpoint(tmp_path)
    del config["horizon"]
    (tmp_path / CONFIG_NAME).write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing keys \['horizon'\]"):
        load_checkpoint(tmp_path)
    save_checkpoint(tiny_model(), tmp_path)
    (tmp_path / STATS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"no stats\.json"):
        load_checkpoint(tmp_path)


# -------------------------------------------------------------------------------------------
# Runner
# -------------------------------------------------------------------------------------------


def test_runner_on_camera_sized_inputs():
    model = tiny_model()
    runner = PolicyRunner(model=model)
    obs = runner_obs(TINY)
    out = runner.predict(obs)
    h = TINY.chunk_size
    assert out["delta"].shape == (6,) and out["pose"].shape == (4, 4)
    assert out["chunk"].shape == (h, 6) and out["gripper_closed_chunk"].shape == (h,)
    assert out["num_points"] == TINY.num_points  # 400 points subsampled to 16
    assert out["gripper"] == pytest.approx(1.0 - out["gripper_closed"])
    np.testing.assert_array_equal(out["delta"], out["chunk"][0])
    np.testing.assert_allclose(out["pose"], compose_residual(obs["plan"][1], out["delta"]))
    # The runner feeds the model exactly what a hand-built batch would hold.
    assert np.isfinite(out["delta"]).all() and 0 <= out["gripper_closed"] <= 1
    np.testing.assert_array_equal(runner.predict(obs)["delta"], out["delta"])


def test_runner_takes_any_number_of_points_and_array_tracks():
    runner = PolicyRunner(model=tiny_model())
    obs = runner_obs(TINY, num_points=5)
    few = runner.predict(obs)
    assert few["num_points"] == 5
    as_array = {**obs, "tracks": np.asarray(obs["tracks"].tracks_px)}  # size from "image"
    np.testing.assert_array_equal(runner.predict(as_array)["delta"], few["delta"])
    # The same tracks expressed in a camera of half the resolution normalise identically.
    half_px = (as_array["tracks"] + 0.5) / 2 - 0.5
    half = {**as_array, "tracks": half_px, "tracks_image_size": (320, 240)}
    np.testing.assert_allclose(runner.predict(half)["delta"], few["delta"], atol=1e-6)


def test_points_in_body_back_projects_and_marks_missing_depth():
    intr = Intrinsics.from_fov(640, 480, 60.0)
    rng = np.random.default_rng(0)
    T_body_cam = random_poses(rng)
    p_cam = rng.uniform([-0.5, -0.4, 0.5], [0.5, 0.4, 2.0], size=(50, 3))
    uv = intr.project(p_cam)
    depth = p_cam[:, 2].copy()
    depth[[3, 7]] = [np.nan, 0.0]  # a hole, and RealSense's "no data"
    out = points_in_body(uv, depth, intr, T_body_cam)
    expected = p_cam @ T_body_cam[:3, :3].T + T_body_cam[:3, 3]
    ok = np.ones(50, bool)
    ok[[3, 7]] = False
    np.testing.assert_allclose(out[ok], expected[ok], atol=1e-9)
    assert np.isnan(out[~ok]).all()


def test_runner_lifts_point_tracks_for_a_point_xyz_model():
    model = tiny_model(point_xyz=True)
    obs = runner_obs(TINY, num_points=40)
    T_body_cam = random_poses(np.random.default_rng(1))
    with pytest.raises(ValueError, match="trained with point_xyz"):
        PolicyRunner(model=model).predict(obs)  # tracks but no calibration
    with pytest.raises(ValueError, match="trained with point_xyz"):
        array_tracks = {**obs, "tracks": np.asarray(obs["tracks"].tracks_px)}
        PolicyRunner(model=model, T_body_cam=T_body_cam).predict(array_tracks)  # no depth
    lifted = PolicyRunner(model=model, T_body_cam=T_body_cam).predict(obs)
    tr = obs["tracks"]
    pts = points_in_body(tr.tracks_px[0], tr.depth_m, tr.intrinsics, T_body_cam)
    given = PolicyRunner(model=model).predict({**obs, "points_body": pts})
    np.testing.assert_allclose(lifted["delta"], given["delta"], atol=1e-6)
    per_obs = PolicyRunner(model=model).predict({**obs, "T_body_cam": T_body_cam})
    np.testing.assert_allclose(per_obs["delta"], given["delta"], atol=1e-6)
    shifted = pts + np.array([0.0, 0.05, 0.0])
    elsewhere = PolicyRunner(model=model).predict({**obs, "points_body": shifted})
    assert np.abs(elsewhere["delta"] - given["delta"]).max() > 1e-6
    with pytest.raises(ValueError, match=r"points_body must be \(40, 3\)"):
        PolicyRunner(model=model).predict({**obs, "points_body": pts[:10]})


def test_runner_accepts_the_controller_key_names():
    runner = PolicyRunner(model=tiny_model())
    obs = runner_obs(TINY)
    ref = runner.predict(obs)
    renamed = {
        "image": obs["image"],
        "goal_image": obs["goal"],
        "tracks": obs["tracks"],
        "plan_poses": obs["plan"],
        "grasp_step": 1,
        "step": np.int64(1),
        "ee_pose": obs["hand"],
        "state": "execute",
    }
    np.testing.assert_array_equal(runner.predict(renamed)["delta"], ref["delta"])


def test_runner_absolute_mode():
    runner = PolicyRunner(model=tiny_model(action_mode="absolute"))
    out = runner.predict(runner_obs(TINY))
    assert out["chunk"].shape == (TINY.chunk_size, 9)
    np.testing.assert_allclose(out["pose"], pose_from_absolute(out["chunk"][0]), atol=1e-12)
    np.testing.assert_allclose(out["delta"][:3], out["pose"][:3, 3])
    np.testing.assert_allclose(so3_exp(out["delta"][3:]), out["pose"][:3, :3], atol=1e-9)


@pytest.mark.parametrize(
    ("key", "value", "match"),
    [
        ("image", np.zeros((480, 640), np.uint8), "image is uint8 with shape"),
        ("image", np.zeros((480, 640, 3), np.float32), "expected uint8 RGB"),
        ("goal", None, "'goal' has not arrived yet"),
        ("tracks", np.zeros((3, 10, 2)), r"tracks must be \(H\+1, N, 2\)"),
        ("tracks", np.full((5, 10, 2), np.nan), "NaN"),
        ("plan", np.tile(np.eye(4), (3, 1, 1)), r"plan must be a \(5, 4, 4\)"),
        ("plan", np.tile(2 * np.eye(4), (5, 1, 1)), "plan is not a rigid transform at step 0"),
        ("plan_gripper", np.full(5, 2.0), "plan_gripper must hold values in"),
        ("step", 5, "outside the plan's steps 0..4"),
        ("step", 1.0, "step must be an int"),
        ("hand", np.full((4, 4), np.inf), "hand contains NaN or inf"),
    ],
)
def test_runner_rejects_bad_observations(key, value, match):
    runner = PolicyRunner(model=tiny_model())
    with pytest.raises(ValueError, match=match):
        runner.predict({**runner_obs(TINY, num_points=20), key: value})


def test_an_input_not_received_yet_is_a_wait_for_the_controller_not_an_error():
    runner = PolicyRunner(model=tiny_model())
    obs = runner_obs(TINY, num_points=20)
    with pytest.raises(PolicyInputMissing, match="'tracks' has not arrived yet"):
        runner.predict({**obs, "tracks": None})
    del obs["goal"]  # no key at all is a caller's bug: an error, not a wait
    with pytest.raises(ValueError, match=r"'goal' \(or 'goal_image'\) is missing") as err:
        runner.predict(obs)
    assert not isinstance(err.value, PolicyInputMissing)


def test_runner_needs_the_plan_gripper():
    runner = PolicyRunner(model=tiny_model())
    obs = runner_obs(TINY, num_points=20)
    del obs["plan_gripper"]
    with pytest.raises(ValueError, match=r"'plan_gripper'.*or 'grasp_step'"):
        runner.predict(obs)
    with pytest.raises(ValueError, match="exactly one of"):
        PolicyRunner()


def test_runner_loads_a_checkpoint(tmp_path):
    model = tiny_model()
    save_checkpoint(model, tmp_path)
    obs = runner_obs(TINY, num_points=30)
    ref = PolicyRunner(model=model).predict(obs)
    np.testing.assert_array_equal(PolicyRunner(tmp_path).predict(obs)["delta"], ref["delta"])


class ScriptedPolicy(ResidualPolicy):
    """Returns prescribed chunks, so ensembling can be checked against hand-computed means."""

    def __init__(self, chunks: list[np.ndarray]) -> None:
        super().__init__(TINY)
        self.chunks = list(chunks)

    def predict_chunk(self, batch, goal_features=None):
        chunk = torch.tensor(self.chunks.pop(0), dtype=torch.float64)[None]
        return {"action": chunk, "gripper_closed": torch.full(chunk.shape[:2], 0.25)}


def test_temporal_ensembling_weights_like_act():
    h, m = TINY.chunk_size, 0.5
    rot = np.array([0.0, 0.0, 0.1])
    chunks = [np.hstack([np.full((h, 3), float(i)), np.tile(rot, (h, 1))]) for i in range(4)]
    runner = PolicyRunner(model=ScriptedPolicy(chunks), config=RunnerConfig(True, m))
    obs = runner_obs(TINY, num_points=20)
    first = runner.predict({**obs, "step": 0})
    np.testing.assert_allclose(first["delta"][:3], 0.0)
    second = runner.predict({**obs, "step": 1})  # rows: chunk 0 row 1 (older), chunk 1 row 0
    w = np.exp(-m * np.arange(2))
    np.testing.assert_allclose(second["delta"][:3], (w @ [0.0, 1.0]) / w.sum())
    np.testing.assert_allclose(second["delta"][3:], rot, atol=1e-12)  # equal rotations stay
    assert second["gripper_closed"] == pytest.approx(0.25)
    np.testing.assert_allclose(second["chunk"], chunks[1])  # the raw chunk is the newest
    np.testing.assert_allclose(
        second["pose"], compose_residual(obs["plan"][1], second["delta"]), atol=1e-12
    )
    third = runner.predict({**obs, "step": 0})  # a step backwards: a new plan, start over
    np.testing.assert_allclose(third["delta"][:3], 2.0)
    runner.reset()
    np.testing.assert_allclose(runner.predict({**obs, "step": 2})["delta"][:3], 3.0)


def test_mean_rotation_and_point_selection():
    Rz = so3_exp(np.deg2rad([[0, 0, -20], [0, 0, 20]]))
    np.testing.assert_allclose(mean_rotation(Rz, np.array([0.5, 0.5])), np.eye(3), atol=1e-12)
    rng = np.random.default_rng(0)
    tracks = np.repeat(rng.uniform(-1, 1, (1, 200, 2)), 5, axis=0)  # (5, 200, 2), static
    tracks[:, 7] += np.linspace(0, 0.5, 5)[:, None]  # one moving point
    chosen = select_points(tracks, 16)
    assert len(chosen) == 16 and len(set(chosen.tolist())) == 16 and 7 in chosen
    np.testing.assert_array_equal(select_points(tracks, 16), chosen)
    np.testing.assert_array_equal(select_points(tracks[:, :10], 16), np.arange(10))


# -------------------------------------------------------------------------------------------
# Default-size latency (reported, not asserted)
# -------------------------------------------------------------------------------------------


def test_default_config_latency_report(tmp_path, capsys):
    torch.manual_seed(0)
    model = ResidualPolicy(PolicyConfig())
    runner = PolicyRunner(model=model, T_body_cam=random_poses(np.random.default_rng(0)))
    obs = runner_obs(model.config)
    for _ in range(3):
        runner.predict(obs)
    times = []
    for step in range(20):
        t = time.perf_counter()
        runner.predict({**obs, "step": step % (model.config.horizon + 1)})
        times.append((time.perf_counter() - t) * 1e3)
    save_checkpoint(model, tmp_path)
    size_mb = sum(p.stat().st_size for p in tmp_path.iterdir()) / 1e6
    with capsys.disabled():
        print(
            f"\n[policy latency] default config, 640x480 image, 400 tracks, "
            f"{torch.get_num_threads()} thread(s): median {np.median(times):.1f} ms, "
            f"max {max(times):.1f} ms (target < 30 ms); "
            f"{num_parameters(model) / 1e6:.2f} M parameters, checkpoint {size_mb:.1f} MB"
        )
