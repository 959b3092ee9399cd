"""Bag -> training data: ``training/bag_to_tracks.py`` and ``training/bag_to_demos.py``.

The sim tests record a bag from t2a_sim as a robot recording would look: the scripted expert
opens a drawer (standing in for a person teleoperating the arm) while the camera (10 Hz colour,
aligned depth in mm, camera_info) and ``/spot/joint_states`` (50 Hz) are written with the
rosbags CDR serializer; the simulator's own state (part and hand poses, segmentation, depth)
is kept next to the bag as ground truth. The unit tests check the label timing on synthetic
joint trajectories.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from t2a_bringup.core import bag_frames as bf
from t2a_bringup.core.bag import BagWriter, MessageTypes
from t2a_bringup.core.bag_frames import JointTrajectory
from t2a_common.core import kinematics, spot_arm
from t2a_common.core.geometry import Intrinsics, invert
from t2a_control.core.controller import STATES
from t2a_control.core.policy import PolicyConfig, PolicyStats, ResidualPolicy
from training import bag_to_demos, bag_to_tracks
from training.bag_to_demos import SkipDemo, TeleopConfig, find_motion, tick_steps
from training.labelers import LucasKanadeLabeler
from training.residual_format import (
    ResidualDataset,
    collate_residual,
    find_demos,
    load_demos,
    read_demo_config,
)
from training.track_data import TrackDataConfig, TrackDataset, load_video_clips

ROOT = Path(__file__).resolve().parents[1]
T0 = 1_700_000_000_000_000_000  # receive time of sim time 0 (ns since the epoch)
CAMERA_HZ, JOINT_HZ = 10.0, 50.0


# ------------------------------------------------------------------------------------------
# Unit: labels from joint states
# ------------------------------------------------------------------------------------------


def synthetic_joints() -> JointTrajectory:
    """Gripper open, closing from 1.0 to 1.2 s; still until 1.5 s; arm_sh0 turns 0.3 rad until
    2.5 s; still; fingers open from 3.0 s. 50 Hz."""
    t = np.round(np.arange(0.0, 4.0, 0.02), 3)
    q = np.tile(spot_arm.READY, (len(t), 1))
    q[:, 0] = np.interp(t, [1.5, 2.5], [0.0, 0.3])
    f1x = np.interp(t, [1.0, 1.2, 3.0, 3.3], [-1.4, -0.1, -0.1, -1.4])  # opening 0.06 held
    return JointTrajectory(spot_arm.ALL_JOINT_NAMES, t, np.column_stack([q, f1x]))


def test_grasp_motion_span_and_release_come_from_the_joints():
    cfg = TeleopConfig(horizon=4)
    joints = synthetic_joints()
    m = find_motion(joints, cfg, after_s=0.0)
    # Opening falls below 0.5 at f1x = -0.785 (1.1 s); the fingers start to open at 3.0 s.
    assert m.close_s == pytest.approx(1.1, abs=0.021)
    assert m.open_s == pytest.approx(3.02, abs=0.021)
    # The hand leaves 5 mm of its grasp pose just after 1.5 s and reaches its end just before
    # 2.5 s: the span is the last still sample to the first sample at the final pose.
    assert 1.48 <= m.onset_s <= 1.56 and 2.44 <= m.end_s <= 2.52
    assert m.step_times_s == pytest.approx(np.linspace(m.onset_s, m.end_s, 5))
    poses, closed = bag_to_demos.expert_labels(joints, m, cfg)
    assert poses[0] == pytest.approx(kinematics.fk(joints.at(m.onset_s)[:6]))
    final = kinematics.fk(joints.positions[-1, :6])
    assert np.linalg.norm(poses[-1][:3, 3] - final[:3, 3]) <= cfg.motion_threshold_m
    assert closed.tolist() == [1.0] * 5
    # Ticks: step 0 until the motion starts, then the last step time passed; states follow.
    ticks = np.array([0.0, 1.15, 1.6, m.step_times_s[2] + 1e-6, 3.9])
    assert tick_steps(ticks, m.step_times_s).tolist() == [0, 0, 0, 2, 4]
    states = [STATES[i] for i in bag_to_demos.tick_states(ticks, m)]
    assert states == ["approach", "grasp", "execute", "execute", "execute"]


def test_recordings_that_cannot_be_labelled_say_why():
    joints = synthetic_joints()
    cfg = TeleopConfig()
    with pytest.raises(SkipDemo, match="never closes after I0"):
        find_motion(joints, cfg, after_s=2.0)  # already closed at I0
    still = dataclasses.replace(joints, positions=joints.positions.copy())
    still.positions[:, 0] = 0.0
    with pytest.raises(SkipDemo, match="does not move while the gripper is closed"):
        find_motion(still, cfg, after_s=0.0)


def test_segments_parse_and_bad_ones_are_refused():
    assert bag_to_tracks.parse_segment("3.5:12") == bag_to_tracks.Segment(3.5, 12.0)
    assert bag_to_tracks.parse_segment("20:") == bag_to_tracks.Segment(20.0, None)
    assert bag_to_tracks.parse_segment(":4") == bag_to_tracks.Segment(0.0, 4.0)
    for bad in ("5", "a:b", "4:2", "-1:3"):
        with pytest.raises(ValueError, match="segment"):
            bag_to_tracks.parse_segment(bad)


def test_help_runs_as_a_script():
    for script in ("bag_to_tracks.py", "bag_to_demos.py"):
        out = subprocess.run(
            [sys.executable, str(ROOT / "training" / script), "--help"],
            capture_output=True, text=True, check=True, cwd="/",
        )  # fmt: skip
        assert "usage:" in out.stdout and "--segments" in out.stdout


# ------------------------------------------------------------------------------------------
# Sim: a recorded "teleoperation" bag
# ------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Recording:
    """A bag of the expert opening a drawer, and the simulator's truth about it."""

    bag: Path
    intrinsics: Intrinsics
    T_body_cam: np.ndarray  # the true camera pose (with the episode's jitter)
    geom_body: np.ndarray  # (ngeom,) body of each geom
    part: int  # body id of the drawer
    times: np.ndarray  # (T,) sim time of each control tick (s) = header stamps
    phases: list[str]  # (T,) expert phase per tick
    hands: np.ndarray  # (T, 4, 4) T_body_tool per tick
    grasp_frame: dict  # at the first frame of the grasp phase: time, depth, geom ids, bodies
    retreat_frame: dict  # at the first frame of the retreat phase: time, bodies
    last_rgb: np.ndarray


def _body_poses(env) -> np.ndarray:
    T = np.tile(np.eye(4), (env.model.nbody, 1, 1))
    T[:, :3, :3] = env.data.xmat.reshape(-1, 3, 3)
    T[:, :3, 3] = env.data.xpos
    return T


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> Recording:
    from t2a_sim.core.config import SimConfig
    from t2a_sim.core.env import SimEnv
    from t2a_sim.core.expert import run_expert

    path = tmp_path_factory.mktemp("teleop") / "drawer_bag"
    env = SimEnv(SimConfig(width=320, height=240))
    env.reset("drawer_open", "MG", 0)
    types, topics = MessageTypes(share_dirs=[]), bf.BagTopics()
    times, phases, hands, snaps = [], [], [], {}
    last = {"rgb": None, "due": 0.0}
    with BagWriter(path, types) as bag:
        for topic in (topics.color, topics.depth):
            bag.add_topic(topic, bf.IMAGE)
        bag.add_topic(topics.info, bf.CAMERA_INFO)
        bag.add_topic(topics.joints, bf.JOINT_STATE)

        def record(phase: str) -> None:
            t = env.time
            ns = T0 + round(t * 1e9)  # received 1-6 ms after the sensor took it
            q = env.joint_positions()
            bag.write(
                topics.joints,
                ns + 1_000_000,
                bf.encode_joint_state(types, spot_arm.ALL_JOINT_NAMES, q, t),
            )
            times.append(t)
            phases.append(phase)
            hands.append(env.hand_pose())
            if t + 1e-6 < last["due"]:
                return
            last["due"] += 1.0 / CAMERA_HZ
            rgb, depth = env.render()
            mm = np.where(depth > 0, np.round(depth * 1000.0), 0).astype(np.uint16)
            frame = "camera_color_optical_frame"
            bag.write(topics.color, ns + 5_000_000, bf.encode_image(types, rgb, "rgb8", t, frame))
            bag.write(topics.depth, ns + 6_000_000, bf.encode_image(types, mm, "16UC1", t, frame))
            bag.write(
                topics.info, ns + 6_000_000, bf.encode_camera_info(types, env.intrinsics, t, frame)
            )
            last["rgb"] = rgb
            if phase == "grasp" and "grasp" not in snaps:
                ids = env.camera.render_geom_ids(env.data)
                snaps["grasp"] = {"t": t, "depth": depth, "geoms": ids, "bodies": _body_poses(env)}
            if phase == "retreat" and "retreat" not in snaps:
                snaps["retreat"] = {"t": t, "bodies": _body_poses(env)}

        record("start")
        ok, _ = run_expert(env, on_tick=lambda _k, cmd: record(cmd.phase))
        end = env.time + 1.0  # the arm is out of view: the goal image
        while env.time < end:
            env.advance(0.02)
            record("after")
    rec = Recording(
        path, env.intrinsics, env.T_body_cam, env.model.geom_bodyid.copy(), env.part_id,
        np.array(times), phases, np.array(hands), snaps["grasp"], snaps["retreat"], last["rgb"],
    )  # fmt: skip
    env.close()
    assert ok, "the expert failed the episode the bag was meant to show"
    return rec


@pytest.mark.sim
def test_a_bag_segment_becomes_a_video_the_track_dataset_labels(recording, tmp_path):
    rec = recording
    # The manipulation: from the first frame of the grasp to the first of the retreat.
    start, end = rec.grasp_frame["t"] - 0.05, rec.retreat_frame["t"] + 0.05
    out = tmp_path / "videos"
    assert (
        bag_to_tracks.main([str(rec.bag), "--out", str(out), "--segments", f"{start}:{end}"]) == 0
    )
    meta = json.loads((out / rec.bag.name / bag_to_tracks.META_FILE).read_text())
    fps = TrackDataConfig().frames_fps
    assert meta["fps"] == fps and (meta["width"], meta["height"]) == (320, 240)
    assert meta["first_time_s"] == pytest.approx(rec.grasp_frame["t"])
    assert meta["frames"] == round((rec.retreat_frame["t"] - rec.grasp_frame["t"]) * fps) + 1
    assert meta["intrinsics"]["fx"] == pytest.approx(rec.intrinsics.fx)

    # A 30x30 labelling grid puts 9-12 points on the drawer at the grasp frame; the default 20x20
    # puts 4-6 there, and with the arm covering part of it that was too few to judge at times.
    cfg = TrackDataConfig(label_grid=30)
    clips = load_video_clips(out, cfg, LucasKanadeLabeler(), subset="all")
    assert len(clips) == 1
    clip = clips[0]
    item = TrackDataset(clips, cfg, augment=False)[0]
    S, n = cfg.image_size, item["tracks"].shape[1]
    assert item["image0"].shape == item["goal"].shape == (3, S, S)
    assert item["tracks"].shape == (cfg.horizon + 1, n, 2) and n >= cfg.min_points // 5
    assert item["image_wh"].tolist() == [320.0, 240.0]

    # Ground truth for the labelled points: lift each from the grasp frame's depth, glue it to
    # the body it lies on, move that body to its pose at the end, project.
    g = rec.grasp_frame
    uv0, uv1 = clip.tracks[0], clip.tracks[-1]  # (N, 2) first and last frame of the clip
    col, row = np.round(uv0).astype(int).T
    z = g["depth"][row, col]
    body = np.where(g["geoms"][row, col] >= 0, rec.geom_body[g["geoms"][row, col]], -1)
    K = rec.intrinsics
    X_cam = np.stack([(uv0[:, 0] - K.cx) / K.fx * z, (uv0[:, 1] - K.cy) / K.fy * z, z, 1 + 0 * z])
    X_body = rec.T_body_cam @ X_cam  # (4, N)
    moved = np.einsum(
        "nij,jn->ni", rec.retreat_frame["bodies"][body] @ invert_all(g["bodies"][body]), X_body
    )
    X1 = invert(rec.T_body_cam) @ moved.T
    gt1 = np.stack([K.fx * X1[0] / X1[2] + K.cx, K.fy * X1[1] / X1[2] + K.cy], axis=1)
    still = np.array(
        [np.abs(rec.retreat_frame["bodies"][b] - g["bodies"][b]).max() < 1e-4 for b in body]
    )
    on_part = (body == rec.part) & (z > 0)
    assert on_part.sum() >= 3, "too few labelled points on the drawer to judge"
    motion, truth = uv1[on_part] - uv0[on_part], gt1[on_part] - uv0[on_part]
    m, t = np.median(motion, axis=0), np.median(truth, axis=0)
    assert np.linalg.norm(t) > 15.0  # the drawer visibly moves
    assert m @ t / (np.linalg.norm(m) * np.linalg.norm(t)) > 0.95
    assert 0.6 < np.linalg.norm(m) / np.linalg.norm(t) < 1.6
    assert np.median(np.linalg.norm(uv1 - uv0, axis=1)[still & (body >= 0)]) < 1.0


def invert_all(T: np.ndarray) -> np.ndarray:
    return np.stack([invert(x) for x in T])


def tiny_policy(horizon: int) -> PolicyConfig:
    return PolicyConfig(
        image_size=32, encoder_width=2, hidden_size=16, depth=1, num_heads=2, horizon=horizon,
        chunk_size=2, num_points=16,
    )  # fmt: skip


@pytest.mark.sim
def test_a_teleoperation_bag_becomes_demos_the_policy_trains_on(recording, tmp_path, capsys):
    rec = recording
    out = tmp_path / "demos"
    assert bag_to_demos.main([str(rec.bag), "--out", str(out), "--task", "drawer_open"]) == 0
    assert "1 demo(s) written" in capsys.readouterr().out
    assert read_demo_config(out).width == 320 and read_demo_config(out).horizon == 8
    refs = find_demos([out])
    assert len(refs) == 1 and (refs[0].split, refs[0].task) == ("teleop", "drawer_open")
    with np.load(refs[0].path) as z:
        demo = {k: z[k] for k in z.files}
    meta = json.loads(str(demo["meta"]))
    times = meta["times_s"]

    # Labels: the recorded hand at the step times, which lie in the expert's manipulation.
    phase_at = {p: rec.times[np.array(rec.phases) == p] for p in set(rec.phases)}
    assert phase_at["grasp"][0] <= times["close"] <= phase_at["grasp"][-1]
    assert phase_at["grasp"][0] <= times["onset"] <= phase_at["manipulate"][0] + 0.1
    assert phase_at["manipulate"][-1] - 0.1 <= times["end"] <= phase_at["release"][-1]
    step_times = np.linspace(times["onset"], times["end"], 9)
    truth = rec.hands[[int(np.argmin(np.abs(rec.times - t))) for t in step_times]]
    assert np.abs(demo["expert_poses"][:, :3, 3] - truth[:, :3, 3]).max() < 0.01
    assert demo["expert_gripper_closed"].tolist() == [1.0] * 9
    # Ticks at 5 Hz from I0, each with the frame and hand of its time, steps as the controller's.
    ticks = demo["time"]
    assert ticks == pytest.approx(0.2 * np.arange(len(ticks)))
    truth = rec.hands[[int(np.argmin(np.abs(rec.times - t))) for t in ticks]]
    assert np.abs(demo["hand"][:, :3, 3] - truth[:, :3, 3]).max() < 0.005
    assert np.all(np.diff(demo["step"]) >= 0) and demo["step"][0] == 0 and demo["step"][-1] == 8
    assert np.array_equal(demo["goal_rgb"], rec.last_rgb)
    assert demo["plan_poses"].shape == (9, 4, 4) and demo["tracks_px"].shape == (9, 400, 2)

    # The residual dataset reads it unchanged, and the real policy trains on it.
    policy = tiny_policy(8)
    data = ResidualDataset(load_demos(refs, policy, workers=1), policy)
    assert len(data) == len(ticks)
    torch.manual_seed(0)
    model = ResidualPolicy(policy, PolicyStats.from_residuals(data.residual_rows()))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    loader = torch.utils.data.DataLoader(
        data, batch_size=8, shuffle=True, collate_fn=collate_residual
    )
    losses = []
    for batch, _ in zip(loader, range(3)):
        loss, _ = model.compute_loss(batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert len(losses) == 3 and np.isfinite(losses).all()


@pytest.mark.sim
def test_windows_without_a_grasp_or_a_plan_are_skipped_with_the_reason(recording, tmp_path, capsys):
    out = tmp_path / "demos"
    rc = bag_to_demos.main(
        [str(recording.bag), "--out", str(out), "--segments", "0:2", "--tracks", "lk"]
    )
    assert rc == 1 and "skipped: the gripper never closes after I0" in capsys.readouterr().out
    # A camera calibration 5 m off puts every point out of the arm's reach: no plan.
    rc = bag_to_demos.main([
        str(recording.bag), "--out", str(out), "--camera-xyz", "5", "0", "0",
        "--camera-quat-xyzw", "0", "0", "0", "1",
    ])  # fmt: skip
    assert rc == 1 and "skipped: plan failed" in capsys.readouterr().out
    assert not out.exists()
