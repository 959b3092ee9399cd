"""``t2a-eval-bag``: offline evaluation of a bag recorded from t2a_sim, and its errors.

The sim test records an expert episode of t2a_sim into a bag (what t2a-record would store from
the sim node), takes the goal from ``t2a-sim-goal``, runs the installed ``t2a-eval-bag`` on it
and checks every artifact; the tracks and plan it reports are recomputed here with the cores the
nodes run, from the node configs' defaults. The unit tests use small synthetic bags and a tiny
untrained model: bad input is refused with a reason, the goal can come from the bag.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import imageio.v3 as iio
import numpy as np
import pytest
import torch

from t2a_bringup import eval_bag, sim_goal
from t2a_bringup.core import artifacts
from t2a_common.core import kinematics, spot_arm
from t2a_common.core.geometry import Intrinsics
from t2a_perception.core.checkpoint import save_checkpoint
from t2a_perception.core.model import TrackDiT, TrackModelConfig, TrackStats
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_perception.core.predictor import TrackPredictor, sample_query_points
from t2a_perception.nodes.track_predictor import resolve_checkpoint
from t2a_planning.core.node_config import PlannerNodeConfig
from t2a_planning.core.planner import plan_from_tracks
from t2a_planning.core.status import Status

W, H = 160, 120
ARTIFACT_KEYS = ("video_gif", "video_mp4", "tracks_png", "ee_paths_png", "tracks_npz",
                 "summary_json", "summary_md")  # fmt: skip
TINY = TrackModelConfig(image_size=32, model_size="T2A-Ti", hidden_size=32, depth=2, num_heads=2,
                        encoder_width=8, point_frequencies=4, num_train_timesteps=20)  # fmt: skip


def _eval_command() -> list[str]:
    path = shutil.which("t2a-eval-bag")
    return [path] if path else [sys.executable, "-m", "t2a_bringup.eval_bag"]


def _run(capsys, *args: str) -> tuple[int, str, str]:
    rc = eval_bag.main([str(a) for a in args])
    captured = capsys.readouterr()
    return rc, captured.out, captured.err


# --------------------------------------------------------------------------------------------
# sim: a real episode of t2a_sim


@pytest.fixture(scope="module")
def sim_episode(tmp_path_factory):
    """An expert episode of t2a_sim (drawer_open, MG, seed 0, 320x240) as a bag: frames at
    5 Hz, joint states at every 50 Hz control tick; and its goal image from t2a-sim-goal."""
    from t2a_sim.core.config import SimConfig
    from t2a_sim.core.env import SimEnv
    from t2a_sim.core.expert import run_expert

    root = tmp_path_factory.mktemp("sim_bag")
    env = SimEnv(SimConfig(width=320, height=240))
    env.reset("drawer_open", "MG", 0)
    rgb0, depth0 = env.render()
    q_start = env.joint_positions()[:6].copy()
    intr = env.intrinsics
    with artifacts.SensorBagWriter(root / "bag") as bag:

        def record(k: int | None = None, _cmd=None) -> None:
            bag.write_joints(env.time, spot_arm.ALL_JOINT_NAMES, env.joint_positions())
            if k is None or k % 10 == 9:
                rgb, depth = env.render()
                bag.write_frame(env.time, rgb, np.where(depth > 0, depth, np.nan), env.intrinsics)

        record()
        solved, _ = run_expert(env, on_tick=record)
    env.close()
    assert solved, "the expert did not solve the episode the bag was made from"
    assert sim_goal.main(["--width", "320", "--height", "240", "-o", str(root / "goal.png")]) == 0
    return {"root": root, "bag": root / "bag", "goal": root / "goal.png", "rgb0": rgb0,
            "depth0": depth0, "q_start": q_start, "intrinsics": intr}  # fmt: skip


@pytest.mark.sim
def test_eval_bag_on_a_sim_episode(sim_episode):
    out = sim_episode["root"] / "out"
    proc = subprocess.run(
        [*_eval_command(), str(sim_episode["bag"]), "--goal", str(sim_episode["goal"]),
         "--out", str(out), "--num-samples", "2", "--torch-threads", "1"],
        capture_output=True, text=True, timeout=240,
    )  # fmt: skip
    output = proc.stdout + proc.stderr
    assert "Traceback" not in output, output
    summary = json.loads((out / "summary.json").read_text())
    plan = summary["plan"]
    # Exit status, success and plan status tell one story.
    assert proc.returncode == (0 if plan["status"] == "OK" else 1), output
    assert summary["success"] == (plan["status"] == "OK")
    assert plan["status_code"] == Status[plan["status"]].value
    assert f"plan {plan['status']}" in proc.stdout
    # Every artifact is there and not empty.
    for key in ARTIFACT_KEYS:
        name = summary["artifacts"][key]
        assert name and (out / name).stat().st_size > 0, key
    assert "| status |" in (out / "summary.md").read_text()
    assert summary["messages"] == {
        artifacts.COLOR_TOPIC: 57, artifacts.DEPTH_TOPIC: 57, artifacts.INFO_TOPIC: 57,
        artifacts.JOINTS_TOPIC: 567, "video_frames": 2 * 9 + 57,
    }  # fmt: skip
    # The video: tracks growing on I0 (2 frames per step), then every recorded frame (5 Hz <
    # the 10 Hz video), I0 and the goal side by side.
    cap = cv2.VideoCapture(str(out / "episode.mp4"))
    count = 0
    while cap.read()[0]:
        count += 1
    assert count == summary["messages"]["video_frames"]
    gif = iio.imread(out / "episode.gif", index=None)
    assert gif.shape[2] == 640 and 2 <= gif.shape[0] <= count  # shrunk; equal frames merge
    for png in ("tracks.png", "ee_paths.png"):
        assert iio.imread(out / png).ndim == 3

    saved = np.load(out / "tracks.npz")
    # I0 is the first frame; depth decoded from the bag's millimetres.
    np.testing.assert_array_equal(saved["i0_rgb"], sim_episode["rgb0"])
    depth0 = sim_episode["depth0"]
    valid = depth0 > 0
    assert np.isnan(saved["i0_depth_m"][~valid]).all()
    assert np.abs(saved["i0_depth_m"][valid] - depth0[valid]).max() < 6e-4
    np.testing.assert_allclose(saved["hand_joints"], sim_episode["q_start"])

    # The tracks are the track predictor's with the node's defaults and the CLI's seed...
    cfg = TrackPredictorConfig()
    goal = cv2.cvtColor(cv2.imread(str(sim_episode["goal"])), cv2.COLOR_BGR2RGB)
    points = sample_query_points(240, 320, cfg.num_points, cfg.point_mode, None, 0,
                                 image0=sim_episode["rgb0"], goal=goal)  # fmt: skip
    pred = TrackPredictor(resolve_checkpoint(""), device="cpu").predict(
        sim_episode["rgb0"], goal, points, 2, cfg.sampler, cfg.sampler_steps, 0
    )
    np.testing.assert_allclose(saved["tracks_px"], pred.tracks_px, atol=1e-3)
    assert summary["tracks"]["num_points"] == cfg.num_points

    # ... and the plan is the planner node's: its extrinsics, FK of the recorded joints, IK.
    node = PlannerNodeConfig()
    q0 = sim_episode["q_start"]
    again = plan_from_tracks(
        saved["tracks_px"], sim_episode["intrinsics"], node.T_body_cam, kinematics.fk(q0),
        node.planner, depth=saved["i0_depth_m"],
        reachable=lambda T: kinematics.solve_ik(T, q0).success,
    )  # fmt: skip
    assert again.status.name == plan["status"] and again.message == plan["message"]
    assert len(again.ee_poses) == plan["poses"]
    np.testing.assert_allclose(saved["plan_ee_poses"], again.ee_poses, atol=1e-9)
    # The executed path is FK of every recorded joint state from I0 on.
    assert summary["executed"]["samples"] == 567 and summary["executed"]["path_length_m"] > 0.3
    assert (summary["executed"]["closest_to_grasp_m"] is None) == (plan["poses"] == 0)


# --------------------------------------------------------------------------------------------
# unit: synthetic bags, a tiny model


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory) -> str:
    torch.manual_seed(0)
    return str(save_checkpoint(TrackDiT(TINY, TrackStats(0.1)), tmp_path_factory.mktemp("ckpt")))


INTR = Intrinsics.from_fov(W, H, 45.0)
RGB = np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)
DEPTH = np.full((H, W), 0.8)


def _bag(
    path: Path,
    *,
    color: bool = True,
    depth: bool = True,
    joints: bool = True,
    goal: bool = False,
    color_encoding: str = "rgb8",
    depth_encoding: str = "16UC1",
) -> Path:
    """Four instants 0.1 s apart from t = 100 s; the first has a colour frame but no depth."""
    color_image = RGB if color_encoding == "rgb8" else RGB[..., 0].copy()
    depth_image = (DEPTH * 1000).astype(np.uint16) if depth_encoding == "16UC1" else RGB
    with artifacts.SensorBagWriter(path) as bag:
        for i in range(4):
            t = 100.0 + 0.1 * i
            if color:
                bag.write_image(artifacts.COLOR_TOPIC, t, color_image, color_encoding)
            if depth and i > 0:
                bag.write_image(artifacts.DEPTH_TOPIC, t, depth_image, depth_encoding)
            bag.write_camera_info(t, INTR)
            if joints:
                bag.write_joints(t, spot_arm.ALL_JOINT_NAMES, [*spot_arm.READY, 0.0])
        if goal:
            bag.write_goal(100.15, RGB[:, ::-1].copy())
    return path


def test_goal_from_the_bag_and_start(tmp_path, capsys, tiny_checkpoint):
    bag = _bag(tmp_path / "bag", goal=True, joints=False)
    out = tmp_path / "out"
    rc, stdout, err = _run(capsys, bag, "--out", out, "--checkpoint", tiny_checkpoint,
                           "--num-points", "16", "--num-samples", "1")  # fmt: skip
    assert rc == 1, err  # artifacts written, but no plan without joint_states
    summary = json.loads((out / "summary.json").read_text())
    assert summary["goal"] == "/t2a/goal_image at +0.15 s"
    assert summary["i0"]["offset_s"] == pytest.approx(0.1)  # the first frame with depth
    assert summary["plan"]["status"] == "BAD_INPUT" and "hand pose unknown" in stdout
    assert any("no /spot/joint_states" in w for w in summary["warnings"])
    assert summary["executed"]["samples"] == 0
    for key in ARTIFACT_KEYS:
        assert (out / summary["artifacts"][key]).stat().st_size > 0, key
    saved = np.load(out / "tracks.npz")
    np.testing.assert_array_equal(saved["goal_rgb"], RGB[:, ::-1])
    assert saved["tracks_px"].shape == (TINY.horizon + 1, 16, 2)

    rc, _, err = _run(capsys, bag, "--out", tmp_path / "late", "--start", "0.25",
                      "--checkpoint", tiny_checkpoint, "--num-points", "16")  # fmt: skip
    late = json.loads((tmp_path / "late" / "summary.json").read_text())
    assert rc == 1 and late["i0"]["offset_s"] == pytest.approx(0.3), err


def test_joint_states_give_the_hand_pose(tmp_path, capsys, tiny_checkpoint):
    bag = _bag(tmp_path / "bag")
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", tmp_path / "out",
                      "--checkpoint", tiny_checkpoint, "--num-points", "16")  # fmt: skip
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert rc == (0 if summary["success"] else 1), err
    assert "hand pose unknown" not in summary["plan"]["message"]
    assert summary["plan"]["hand_joints_gap_s"] == pytest.approx(0.0, abs=1e-6)
    assert summary["executed"]["samples"] == 3  # from I0 (0.1 s) on
    np.testing.assert_allclose(np.load(tmp_path / "out" / "tracks.npz")["hand_joints"],
                               spot_arm.READY)  # fmt: skip


def test_params_file_sets_both_nodes(tmp_path, capsys, tiny_checkpoint):
    bag = _bag(tmp_path / "bag")
    params = tmp_path / "params.yaml"
    params.write_text(
        "track_predictor:\n  ros__parameters:\n    num_points: 9\n    num_samples: 1\n"
        "planner:\n  ros__parameters:\n    check_reachability: false\n"
        "    planner:\n      motion_threshold_px: 1000.0\n"
    )
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", tmp_path / "out",
                      "--checkpoint", tiny_checkpoint, "--params", params)  # fmt: skip
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["tracks"]["num_points"] == 9 and summary["tracks"]["num_samples"] == 1
    # Nothing moves 1000 px: the planner's own parameters came from the file too.
    assert rc == 1 and summary["plan"]["status"] == "NO_MOTION", err
    assert summary["tracks"]["moving_points"] == 0
    params.write_text("planner:\n  ros__parameters:\n    camera_xyz: [1.0, 2.0]\n")
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", tmp_path / "o2",
                      "--params", params)  # fmt: skip
    assert rc == 2 and "bad parameter: camera_xyz needs 3 values" in err, err


def _goal_file(tmp_path: Path) -> Path:
    path = tmp_path / "goal.png"
    cv2.imwrite(str(path), RGB)
    return path


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({"color": False}, "has no topic /camera/camera/color/image_raw, so there are no colour "
                           "frames; it has: /camera/camera/aligned_depth"),
        ({"depth": False}, "no topic /camera/camera/aligned_depth_to_color/image_raw, so there "
                           "are no aligned depth images"),
        ({"color_encoding": "mono8"}, "colour frame on /camera/camera/color/image_raw is 160x120 "
                                      "mono8, expected rgb8, bgr8, rgba8 or bgra8"),
        ({"depth_encoding": "rgb8"}, "depth image on /camera/camera/aligned_depth_to_color/"
                                     "image_raw is 160x120 rgb8, expected 16UC1 or 32FC1"),
    ],
)  # fmt: skip
def test_bad_bags_are_refused_with_a_reason(tmp_path, capsys, kwargs, expected):
    bag = _bag(tmp_path / "bag", **kwargs)
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", tmp_path / "out")
    assert rc == 2 and expected in err, err
    assert err.startswith("t2a-eval-bag: ") and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_bad_arguments_are_refused_with_a_reason(tmp_path, capsys):
    bag = _bag(tmp_path / "bag")
    out = tmp_path / "out"
    rc, _, err = _run(capsys, bag, "--out", out)
    assert rc == 2 and "no goal image: pass --goal FILE" in err, err
    rc, _, err = _run(capsys, tmp_path, "--goal", _goal_file(tmp_path), "--out", out)
    assert rc == 2 and "has no metadata.yaml; expected a rosbag2 folder" in err, err
    (tmp_path / "notes.png").write_text("not an image")
    rc, _, err = _run(capsys, bag, "--goal", tmp_path / "notes.png", "--out", out)
    assert rc == 2 and "cannot read" in err and "expected a PNG/JPEG" in err, err
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", out, "--start", "9")
    assert rc == 2 and "past the end of the bag" in err, err
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", out,
                      "--num-points", "0")  # fmt: skip
    assert rc == 2 and "bad parameter: num_points must be >= 1, got 0" in err, err
    rc, _, err = _run(capsys, bag, "--goal", _goal_file(tmp_path), "--out", out,
                      "--checkpoint", tmp_path / "nope")  # fmt: skip
    assert rc == 2 and "track model not loaded from" in err, err
    assert not out.exists()
