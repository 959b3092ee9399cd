"""Residual-policy training pipeline: demos, dataset, labels (unit) and training smoke runs (slow).

The unit tests write small fake demos in the ``training/residual_format.py`` ``.npz`` layout (no
MuJoCo) whose labels are known exactly, and check that a batch is what ``compute_loss`` expects
and what ``PolicyRunner`` builds from the same observation. The slow tests record a few real
demos in t2a_sim, train a tiny policy, export it, load it with ``PolicyRunner`` and run it in
closed loop.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2a_bringup.core.episode import track_step_ticks
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.se3 import so3_exp, so3_log
from t2a_common.core.types import PointTrackSet
from t2a_control.core.policy import (
    PolicyConfig,
    PolicyStats,
    ResidualPolicy,
    compose_residual,
    pose_from_absolute,
    residual_targets,
)
from t2a_control.core.policy_runtime import PolicyRunner
from training import residual_data, residual_demos, residual_format, train_residual
from training.residual_demos import ExpertTrace, OraclePolicy, expert_targets, perturb_plan
from training.residual_format import (
    DemoConfig,
    DemoDataConfig,
    ResidualDataset,
    collate_residual,
    find_demos,
    load_demos,
    select_demos,
)

ROOT = Path(__file__).resolve().parents[1]
CAM_W, CAM_H = 40, 30  # fake camera (px)
HORIZON = 3
STEPS = np.array([0, 0, 0, 1, 2, 3, 3])  # plan step of each recorded tick
N_POINTS = 20


def tiny_policy(**kw) -> PolicyConfig:
    base = dict(
        image_size=32, encoder_width=2, hidden_size=16, depth=1, num_heads=2, horizon=HORIZON,
        chunk_size=2, num_points=8,
    )  # fmt: skip
    return PolicyConfig(**{**base, **kw})


def random_poses(rng: np.random.Generator, n: int) -> np.ndarray:
    T = np.tile(np.eye(4), (n, 1, 1))
    T[:, :3, :3] = so3_exp(rng.normal(0.0, 1.0, (n, 3)))
    T[:, :3, 3] = np.array([0.7, 0.0, 0.2]) + rng.uniform(-0.2, 0.2, (n, 3))
    return T


def fake_demo(split: str, task: str, seed: int, variant: int = 0, success: bool = True) -> dict:
    """A demo in residual_format's layout: frames, tracks, plan; labels = plan (+) noise."""
    rng = np.random.default_rng([seed, variant, len(task)])
    T = len(STEPS)
    plan = random_poses(rng, HORIZON + 1)
    deltas = np.concatenate(
        [rng.normal(0, 0.02, (HORIZON + 1, 3)), rng.normal(0, 0.05, (HORIZON + 1, 3))], axis=-1
    )
    meta = {
        "task": task, "split": split, "seed": seed, "variant": variant, "success": success,
        "ticks": T, "noise": None, "final_state": "done",
    }  # fmt: skip
    return {
        "rgb": rng.integers(0, 256, (T, CAM_H, CAM_W, 3), dtype=np.uint8),
        "step": STEPS.astype(np.int16),
        "hand": random_poses(rng, T),
        "state": np.full(T, 3, np.int8),
        "time": np.arange(T) * 0.2,
        "goal_rgb": rng.integers(0, 256, (CAM_H, CAM_W, 3), dtype=np.uint8),
        "tracks_px": rng.uniform(0, [CAM_W - 1, CAM_H - 1], (HORIZON + 1, N_POINTS, 2)).astype(
            np.float32
        ),
        "track_on_object": np.arange(N_POINTS) < N_POINTS // 2,
        "tracks_depth_m": np.where(
            np.arange(N_POINTS) % 5 == 4, np.nan, rng.uniform(0.5, 1.5, N_POINTS)
        ).astype(np.float32),
        "intrinsics": residual_format.intrinsics_array(Intrinsics.from_fov(CAM_W, CAM_H, 60.0)),
        "T_body_cam": residual_format.nominal_T_body_cam(),
        "plan_poses": plan,
        "plan_times": np.arange(HORIZON + 1) * 0.2,
        "plan_pregrasp": plan[0],
        "grasp_step": np.asarray(1, np.int64),
        "clean_plan_poses": plan,
        "expert_poses": compose_residual(plan, deltas),
        "expert_gripper_closed": (np.arange(HORIZON + 1) >= 1).astype(np.float64),
        "object_poses": np.tile(np.eye(4), (HORIZON + 1, 1, 1)),
        "success": np.asarray(success),
        "meta": np.asarray(json.dumps(meta)),
    }


def write_fake_demos(root: Path, seeds: int = 6) -> Path:
    for seed in range(seeds):
        for task in ("drawer_open", "box_push"):
            demo = fake_demo("MG", task, seed, success=seed != 5 or task != "box_push")
            residual_format.save_demo(residual_format.demo_path(root, "MG", task, seed, 0), demo)
    residual_format.write_demo_index(root, DemoConfig(width=CAM_W, height=CAM_H, horizon=HORIZON))
    return root


@pytest.fixture(scope="module")
def fake_root(tmp_path_factory) -> Path:
    return write_fake_demos(tmp_path_factory.mktemp("fake_demos"))


def dataset_of(root: Path, policy: PolicyConfig, subset: str = "all", **kw) -> ResidualDataset:
    data = DemoDataConfig(val_fraction=0.3)
    refs = select_demos(find_demos([root]), subset, data)
    return ResidualDataset(load_demos(refs, policy, workers=1), policy, data, **kw)


# ------------------------------------------------------------------------------------------
# Dataset and batches
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["residual", "absolute"])
def test_batch_shapes_masks_and_loss(fake_root, mode):
    policy = tiny_policy(action_mode=mode)
    ds = dataset_of(fake_root, policy)
    assert len(ds) == 11 * len(STEPS)  # the failed demo is left out
    batch = collate_residual([ds[i] for i in range(len(STEPS))])  # the ticks of one demo
    B, S, h, Hp1 = len(STEPS), policy.image_size, policy.chunk_size, HORIZON + 1
    expected = {
        "image": ((B, 3, S, S), torch.uint8),
        "goal": ((B, 3, S, S), torch.uint8),
        "tracks": ((B, Hp1, policy.num_points, 2), torch.float32),
        "track_mask": ((B, policy.num_points), torch.bool),
        "plan_poses": ((B, Hp1, 4, 4), torch.float32),
        "plan_gripper": ((B, Hp1), torch.float32),
        "step": ((B,), torch.int64),
        "hand": ((B, 4, 4), torch.float32),
        "action": ((B, h, policy.action_dim), torch.float32),
        "action_mask": ((B, h), torch.bool),
    }
    for key, (shape, dtype) in expected.items():
        assert tuple(batch[key].shape) == shape and batch[key].dtype == dtype, key
    assert torch.equal(batch["step"], torch.from_numpy(STEPS))
    # Row j of a tick at plan step s is for step s + j: supervised only within the plan.
    in_plan = torch.from_numpy(STEPS)[:, None] + torch.arange(h)[None] <= HORIZON
    assert torch.equal(batch["action_mask"], in_plan)
    assert torch.equal(batch["plan_gripper"][0], torch.tensor([0.0, 1.0, 1.0, 1.0]))
    model = ResidualPolicy(policy, PolicyStats.from_residuals(ds.residual_rows()))
    loss, metrics = model.compute_loss(batch)
    loss.backward()
    assert torch.isfinite(loss) and set(metrics) >= {"loss", "translation_error_m"}


@pytest.mark.parametrize("mode", ["residual", "absolute"])
def test_targets_round_trip_to_the_expert_poses(fake_root, mode):
    ds = dataset_of(fake_root, tiny_policy(action_mode=mode))
    for index in range(len(STEPS)):
        d, t = ds.locate(index)
        item, demo = ds[index], ds.demos[d]
        s = int(demo.steps[t])
        for j in np.flatnonzero(item["action_mask"].numpy()):
            row = item["action"][j].double().numpy()
            if mode == "residual":
                pose = compose_residual(demo.plan_poses[s + j].astype(np.float64), row[:6])
            else:
                pose = pose_from_absolute(row[:9])
            np.testing.assert_allclose(pose, demo.expert_poses[s + j], atol=1e-5)
            assert row[-1] == demo.expert_closed[s + j]


def test_padded_rows_repeat_the_last_target(fake_root):
    ds = dataset_of(fake_root, tiny_policy(chunk_size=3))
    item = ds[len(STEPS) - 1]  # a tick at the last plan step
    assert item["action_mask"].tolist() == [True, False, False]
    assert torch.equal(item["action"][1], item["action"][0])


class RecordingPolicy(ResidualPolicy):
    """Keeps the tensors ``PolicyRunner`` feeds the network."""

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        self.encoded = [*getattr(self, "encoded", []), images.clone()]
        return super().encode_images(images)

    def predict_chunk(self, batch, goal_features=None):
        self.batch = {k: v.clone() for k, v in batch.items()}
        return super().predict_chunk(batch, goal_features)


@pytest.mark.parametrize("point_xyz", [False, True])
def test_a_sample_is_what_policy_runner_builds_from_the_same_tick(fake_root, point_xyz):
    policy = tiny_policy(point_xyz=point_xyz)
    ds = dataset_of(fake_root, policy)
    index = 4
    d, t = ds.locate(index)
    split, task, seed, variant = ds.demos[d].key
    path = residual_format.demo_path(fake_root, split, task, seed, variant).with_suffix(".npz")
    with np.load(path) as z:
        raw = {k: z[k] for k in z.files}
    # The observation dict the controller hands its policy at that tick (controller names).
    obs = {
        "image": raw["rgb"][t],
        "goal_image": raw["goal_rgb"],
        "tracks": raw["tracks_px"],
        "plan_poses": raw["plan_poses"],
        "grasp_step": int(raw["grasp_step"]),
        "step": int(raw["step"][t]),
        "ee_pose": raw["hand"][t],
    }
    runner_kw = {}
    if point_xyz:  # what the controller node holds: PointTracks (depth of P0) + calibration
        intr = residual_format.intrinsics_from_array(raw["intrinsics"])
        obs["tracks"] = PointTrackSet(raw["tracks_px"], raw["tracks_depth_m"], intr)
        runner_kw["T_body_cam"] = raw["T_body_cam"]
    model = RecordingPolicy(policy)
    PolicyRunner(model=model, **runner_kw).predict(obs)
    item = ds[index]
    seen = model.batch
    if point_xyz:
        torch.testing.assert_close(
            seen["points_body"][0], item["points_body"], rtol=0, atol=1e-6, equal_nan=True
        )
        assert torch.isfinite(item["points_body"]).any()
    else:
        assert "points_body" not in item
    assert torch.equal(seen["image"][0], item["image"])
    assert torch.equal(model.encoded[0][0], item["goal"])  # the goal, encoded first
    assert torch.equal(seen["tracks"][0], item["tracks"])
    assert torch.equal(seen["step"][0], item["step"])
    for key in ("plan_poses", "plan_gripper", "hand"):
        torch.testing.assert_close(seen[key][0], item[key], rtol=0, atol=1e-6)


def test_collate_pads_tracks_with_a_mask():
    a = {"tracks": torch.rand(4, 3, 2), "step": torch.tensor(0)}
    b = {"tracks": torch.rand(4, 5, 2), "step": torch.tensor(1)}
    batch = collate_residual([a, b])
    assert batch["tracks"].shape == (2, 4, 5, 2)
    assert batch["track_mask"].tolist() == [[True] * 3 + [False] * 2, [True] * 5]
    assert torch.equal(batch["tracks"][0, :, 3:], a["tracks"][:, :1].expand(-1, 2, -1))
    # Body-frame points are per point too: padded the same way, under the same mask.
    a["points_body"], b["points_body"] = torch.rand(3, 3), torch.rand(5, 3)
    batch = collate_residual([a, b])
    assert batch["points_body"].shape == (2, 5, 3)
    assert torch.equal(batch["points_body"][0, 3:], a["points_body"][:1].expand(2, -1))
    assert torch.equal(batch["points_body"][1], b["points_body"])


def test_demos_without_p0_depth_are_refused_by_a_point_xyz_policy():
    demo = fake_demo("MG", "drawer_open", 0)
    old = {k: v for k, v in demo.items() if k not in ("tracks_depth_m", "T_body_cam")}
    residual_format.prepare_demo(old, tiny_policy(point_xyz=False))  # fine without point_xyz
    with pytest.raises(ValueError, match=r"tracks_depth_m, T_body_cam.*record it again"):
        residual_format.prepare_demo(old, tiny_policy(point_xyz=True))


def test_same_seed_same_samples_and_augmentation_changes_with_the_epoch(fake_root):
    policy = tiny_policy()
    a = dataset_of(fake_root, policy, augment=True, seed=3)
    b = dataset_of(fake_root, policy, augment=True, seed=3)
    for i in range(0, len(a), 5):
        x, y = a[i], b[i]
        for k in x:  # points_body holds NaN where P0 had no depth
            torch.testing.assert_close(x[k], y[k], rtol=0, atol=0, equal_nan=True)
    b.set_epoch(1)
    assert any(not torch.equal(a[i]["image"], b[i]["image"]) for i in range(len(a)))
    plain = dataset_of(fake_root, policy)
    assert all(torch.equal(a[i]["action"], plain[i]["action"]) for i in range(len(a)))


def test_validation_holds_out_whole_seeds_and_failed_demos_only_on_request(fake_root):
    refs = find_demos([fake_root])
    data = DemoDataConfig(val_fraction=0.3)
    train, val = select_demos(refs, "train", data), select_demos(refs, "val", data)
    assert train and val and not {r.seed for r in train} & {r.seed for r in val}
    assert len(train) + len(val) == 11
    both = DemoDataConfig(val_fraction=0.3, include_failed=True)
    assert len(select_demos(refs, "all", both)) == 12
    with pytest.raises(ValueError, match="unknown split"):
        find_demos([fake_root], ["XX"])


def test_a_horizon_mismatch_is_refused(fake_root):
    with pytest.raises(ValueError, match="horizon"):
        dataset_of(fake_root, tiny_policy(horizon=HORIZON + 1))


# ------------------------------------------------------------------------------------------
# Labels, plan noise, demonstrator
# ------------------------------------------------------------------------------------------


def test_track_step_ticks_follow_the_reference_rule():
    moving = [False] * 11 + [True] * 20  # the part first moves after tick 11 (index 11)
    ticks = track_step_ticks(moving, 4)
    assert ticks[0] == 0 and ticks[-1] == 30
    np.testing.assert_array_equal(ticks, [0, 15, 20, 25, 30])  # linspace(10, 30, 5)[1:]
    assert track_step_ticks([False] * 5, 2).tolist() == [0, 4, 4]  # nothing moved


def synthetic_trace(rng: np.random.Generator) -> ExpertTrace:
    """The part turns about a vertical hinge through the origin, step by step."""
    T_part0 = random_poses(rng, 1)[0]
    turns = np.stack([so3_exp(np.array([0.0, 0.0, 0.2 * k])) for k in range(HORIZON + 1)])
    motion = np.tile(np.eye(4), (HORIZON + 1, 1, 1))
    motion[:, :3, :3] = turns
    grasp = random_poses(rng, 1)[0]
    return ExpertTrace(
        track_ticks=np.arange(HORIZON + 1), object_poses=motion @ T_part0, grasp_pose=grasp,
        grasp_object_pose=T_part0, grasp_tick=0, success=True,
    )  # fmt: skip


def test_labels_hold_the_part_as_the_expert_did_with_the_plans_orientation():
    rng = np.random.default_rng(0)
    trace = synthetic_trace(rng)
    plan_grasp = random_poses(rng, 1)[0]
    poses, closed = expert_targets(trace, plan_grasp, grasp_step=1)
    assert closed.tolist() == [0.0, 1.0, 1.0, 1.0]
    np.testing.assert_allclose(poses[0][:3, 3], trace.grasp_pose[:3, 3], atol=1e-12)
    np.testing.assert_allclose(poses[0][:3, :3], plan_grasp[:3, :3], atol=1e-12)
    in_part = np.linalg.inv(trace.object_poses) @ poses  # hand in the part frame
    np.testing.assert_allclose(in_part, np.broadcast_to(in_part[0], in_part.shape), atol=1e-12)
    # Turned all the way, the grasp is the expert's; part way, by exactly the allowed angle.
    full, _ = expert_targets(trace, plan_grasp, 1, max_turn_rad=10.0)
    np.testing.assert_allclose(full[0], trace.grasp_pose, atol=1e-12)
    part, _ = expert_targets(trace, plan_grasp, 1, max_turn_rad=0.1)
    angle = np.linalg.norm(so3_log(part[0][:3, :3] @ plan_grasp[:3, :3].T))
    assert angle == pytest.approx(0.1)


def fake_plan(rng: np.random.Generator):
    from t2a_planning.core.ee_plan import Plan
    from t2a_planning.core.status import Status

    poses = random_poses(rng, HORIZON + 1)
    n = HORIZON + 1
    return Plan(
        status=Status.OK, message="", object_transforms=np.tile(np.eye(4), (n, 1, 1)),
        ee_poses=poses, times_from_start=np.arange(n) * 0.2, start_pose=np.eye(4),
        pregrasp_pose=poses[0], pregrasp_time=0.0, grasp_step=0, grasp_duration_s=0.5,
        approach_direction=np.array([1.0, 0.0, 0.0]), inlier_ratio=np.ones(n),
        reprojection_error_px=np.zeros(n), reachable=np.ones(n, bool), pregrasp_reachable=True,
        confidence=1.0, moving_point_indices=np.arange(5),
    )  # fmt: skip


def test_plan_noise_is_a_rigid_grasp_error_within_bounds_and_seeded():
    plan = fake_plan(np.random.default_rng(1))
    cfg = DemoConfig(grasp_offset_max_m=0.03, grasp_rotation_max_rad=0.15, step_noise_m=0.0,
                     step_noise_rad=0.0)  # fmt: skip
    for seed in range(20):
        noisy, draw = perturb_plan(plan, np.random.default_rng(seed), cfg)
        D = np.linalg.inv(plan.ee_poses) @ noisy.ee_poses  # the same tool-frame error per step
        np.testing.assert_allclose(D, np.broadcast_to(D[0], D.shape), atol=1e-9)
        np.testing.assert_allclose(np.linalg.inv(plan.pregrasp_pose) @ noisy.pregrasp_pose, D[0],
                                   atol=1e-9)  # fmt: skip
        assert np.linalg.norm(D[0][:3, 3]) <= 0.03 + 1e-12
        assert np.linalg.norm(so3_log(D[0][:3, :3])) <= 0.15 + 1e-9
        np.testing.assert_allclose(D[0][:3, 3], draw["grasp_offset_m"])
    a, _ = perturb_plan(plan, np.random.default_rng(7), DemoConfig())
    b, _ = perturb_plan(plan, np.random.default_rng(7), DemoConfig())
    c, _ = perturb_plan(plan, np.random.default_rng(8), DemoConfig())
    assert np.array_equal(a.ee_poses, b.ee_poses) and not np.array_equal(a.ee_poses, c.ee_poses)


def test_the_demonstrator_returns_the_label_of_the_step_and_records_the_tick():
    rng = np.random.default_rng(2)
    plan, expert = random_poses(rng, HORIZON + 1), random_poses(rng, HORIZON + 1)
    oracle = OraclePolicy(expert, np.ones(HORIZON + 1))
    image = rng.integers(0, 256, (CAM_H, CAM_W, 3), dtype=np.uint8)
    obs = {"image": image, "step": 2, "plan_poses": plan, "ee_pose": plan[1], "state": "execute",
           "time_s": 3.0}  # fmt: skip
    out = oracle.predict(obs)
    np.testing.assert_allclose(compose_residual(plan[2], out["delta"]), expert[2], atol=1e-12)
    np.testing.assert_allclose(out["delta"], residual_targets(expert[2:3], plan[2:3])[0])
    assert out["gripper"] == 0.0
    rec = oracle.records[0]
    assert rec["step"] == 2 and rec["state"] == 3 and np.array_equal(rec["rgb"], image)


def test_dart_executes_a_lagging_share_of_the_label_and_records_it():
    rng = np.random.default_rng(3)
    plan, expert = random_poses(rng, HORIZON + 1), random_poses(rng, HORIZON + 1)
    cfg = DemoConfig(dart_rate=0.5, dart_kick_prob=0.0)
    oracle = OraclePolicy(expert, np.ones(HORIZON + 1), cfg, np.random.default_rng(0))
    image = np.zeros((CAM_H, CAM_W, 3), np.uint8)
    label = residual_targets(expert[2:3], plan[2:3])[0]
    shares = []
    for _ in range(8):
        obs = {"image": image, "step": 2, "plan_poses": plan, "ee_pose": plan[1],
               "state": "grasp", "time_s": 0.0}  # fmt: skip
        out = oracle.predict(obs)
        share = oracle.records[-1]["alpha"]
        np.testing.assert_allclose(out["delta"], share * label, atol=1e-12)  # no noise set
        shares.append(share)
    assert 0.0 <= shares[0] < 1.0
    np.testing.assert_allclose(np.diff(shares), 0.5 * (1.0 - np.array(shares[:-1])), atol=1e-12)
    assert shares[-1] > 0.99
    oracle.reset()
    assert oracle.records == [] and oracle._alpha is None
    # Kicks: with kick_prob 1 every tick draws a fresh share; the noise is added on top.
    noisy = OraclePolicy(expert, np.ones(HORIZON + 1),
                         DemoConfig(dart_kick_prob=1.0, dart_noise_m=0.01),
                         np.random.default_rng(1))  # fmt: skip
    deltas = [noisy.predict(obs)["delta"] - noisy.records[-1]["alpha"] * label for _ in range(50)]
    assert 0.005 < np.std(np.array(deltas)[:, :3]) < 0.015
    assert np.allclose(np.array(deltas)[:, 3:], 0.0)
    with pytest.raises(ValueError, match="dart_rate"):
        DemoConfig(dart_rate=1.5)


def test_nominal_extrinsics_are_the_planner_nodes():
    pytest.importorskip("rclpy")
    from t2a_planning.core.node_config import PlannerNodeConfig

    np.testing.assert_allclose(
        residual_format.nominal_T_body_cam(), PlannerNodeConfig().T_body_cam, atol=1e-9
    )


def test_a_demo_directory_refuses_other_settings(tmp_path):
    residual_format.write_demo_index(tmp_path, DemoConfig())
    with pytest.raises(ValueError, match="other settings"):
        residual_data.generate_demos(tmp_path, [], DemoConfig(step_noise_m=0.01), progress=False)
    residual_data.generate_demos(tmp_path, [], DemoConfig(), progress=False)  # same: fine


# ------------------------------------------------------------------------------------------
# Trainer configuration
# ------------------------------------------------------------------------------------------


def test_default_yaml_and_flag_precedence():
    path = ROOT / "training" / "configs" / "residual_default.yaml"
    cfg = train_residual.parse_config(["--config", str(path), "--out", "o", "--chunk-size", "2"])
    assert cfg.out == "o" and cfg.splits == ("MG", "G") and cfg.policy.chunk_size == 2
    assert dataclasses.replace(cfg.policy, chunk_size=4) == PolicyConfig()  # the YAML = defaults
    ablation = train_residual.parse_config(
        ["--out", "o", "--action-mode", "absolute", "--no-use-plan", "--no-include-failed"]
    )
    assert ablation.policy.action_mode == "absolute" and ablation.policy.use_plan is False
    with pytest.raises(SystemExit):
        train_residual.parse_config(["--out", "o", "--action-mode", "delta"])
    with pytest.raises(ValueError, match="use_plan=False"):
        train_residual.parse_config(["--out", "o", "--no-use-plan"])


def test_grasp_offsets_are_horizontal_fixed_per_episode():
    a = train_residual.grasp_offset("drawer_open", 3, 0.03)
    assert a == train_residual.grasp_offset("drawer_open", 3, 0.03)
    assert a != train_residual.grasp_offset("drawer_open", 4, 0.03)
    assert np.linalg.norm(a) == pytest.approx(0.03) and a[2] == 0.0


def test_help_runs_as_a_script():
    for script in ("train_residual.py", "residual_data.py"):
        out = subprocess.run(
            [sys.executable, str(ROOT / "training" / script), "--help"],
            capture_output=True,
            text=True,
            check=True,
            cwd="/",
        )
        assert "usage:" in out.stdout


# ------------------------------------------------------------------------------------------
# In the simulator: demos, training, export, closed loop
# ------------------------------------------------------------------------------------------

SMALL = DemoConfig(width=160, height=120, num_points=200, max_time_s=30.0)


@pytest.mark.slow
@pytest.mark.sim
def test_demo_trace_follows_the_part():
    cfg = SMALL.episode_config("drawer_open", "MG", 1)
    _ref, trace = residual_demos.demo_reference(cfg)
    # The part is at rest at step 0 and where the expert left it at the last step.
    assert np.allclose(trace.object_poses[0], trace.grasp_object_pose, atol=2e-3)
    assert not np.allclose(trace.object_poses[-1], trace.object_poses[0], atol=1e-2)


@pytest.fixture(scope="module")
def sim_demos(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("demos")
    jobs = residual_data.plan_demo_jobs(root, ["MG"], 2, variants=1, tasks=["drawer_open"])
    jobs += residual_data.plan_demo_jobs(root, ["MG"], 1, variants=1, tasks=["cabinet_close"])
    residual_data.generate_demos(root, jobs, SMALL, progress=False)
    return root


TINY_FLAGS = [
    "--image-size", "32", "--encoder-width", "4", "--hidden-size", "32", "--depth", "1",
    "--num-heads", "2", "--num-points", "16", "--batch-size", "8", "--warmup-steps", "5",
    "--log-every", "10", "--eval-every", "25", "--save-every", "25", "--num-workers", "0",
    "--threads", "1", "--no-progress", "--val-fraction", "0.34", "--point-xyz",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.sim
def test_generate_train_export_and_run_closed_loop(sim_demos, tmp_path):
    from t2a_bringup.core.episode import expert_reference, run_episode
    from t2a_control.core.controller import ControllerConfig

    index = json.loads((sim_demos / "index.json").read_text())
    assert len(index["demos"]) == 3 and sum(d["success"] for d in index["demos"]) >= 2
    assert residual_data.plan_demo_jobs(sim_demos, ["MG"], 2, tasks=["drawer_open"]) == []
    recorded = next(d for d in index["demos"] if d["success"])
    with np.load(sim_demos / recorded["file"]) as z:
        saved = {k: z[k] for k in z.files}
    assert saved["rgb"].shape[1:] == (120, 160, 3) and len(saved["step"]) == len(saved["hand"]) > 0
    # Seeded: recording the same demo again, outside the generator, gives the same arrays.
    again = residual_demos.record_demos(
        recorded["task"], "MG", recorded["seed"], [recorded["variant"]], SMALL
    )[0]
    for key in ("rgb", "step", "hand", "plan_poses", "expert_poses", "tracks_px"):
        assert np.array_equal(again[key], saved[key]), key

    out = tmp_path / "run"
    common = ["--data", str(sim_demos), "--out", str(out), *TINY_FLAGS]
    export = train_residual.main([*common, "--max-steps", "50", "--closed-loop-eval", "1"])
    assert torch.load(export / "train_state.pt", weights_only=True)["step"] == 50
    with (out / "log.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows if r["loss"]] == [10, 20, 30, 40, 50]
    assert all(np.isfinite(float(r["loss"])) for r in rows if r["loss"])
    evals = [r for r in rows if r["val_loss"]]
    assert len(evals) == 2 and all(r["cl_success"] != "" for r in evals)
    assert (out / "best" / "model.safetensors").is_file()

    runner = PolicyRunner(export, T_body_cam=residual_format.nominal_T_body_cam())
    assert runner.action_mode == "residual" and runner.horizon == SMALL.horizon
    assert runner.policy_config.point_xyz
    demo_cfg = residual_format.read_demo_config(sim_demos)
    cfg = demo_cfg.episode_config("drawer_open", "MG", 0, grasp_offset_m=(0.02, 0.0, 0.0))
    ref = expert_reference(cfg)
    result = run_episode(
        cfg, T_body_cam=residual_format.nominal_T_body_cam(),
        controller_cfg=ControllerConfig(mode="residual"),
        policy=train_residual.TrackFeeder(runner, ref), reference=ref,
    )  # fmt: skip
    assert "policy" not in result.message.lower(), result.message
    assert result.final_state in ("done", "failed") and len(result.executed_path) > 10

    ablation = train_residual.main(
        ["--data", str(sim_demos), "--out", str(tmp_path / "abs"), *TINY_FLAGS,
         "--max-steps", "10", "--action-mode", "absolute"]
    )  # fmt: skip
    assert PolicyRunner(ablation).action_mode == "absolute"
