"""``t2a-demo`` end to end (the README's main command, shortened): real nodes over DDS solve the
task (exit 0, the summary says success), the artifacts exist and are non-empty, and the summary
agrees with the bag of the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image
from rosbags.highlevel import AnyReader

from t2a_bringup.core.bag import BagReader

pytestmark = pytest.mark.sim  # renders in MuJoCo; its nodes talk over real DDS


def _messages(bag, topic: str) -> list:
    with AnyReader([bag]) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        return [reader.deserialize(raw, c.msgtype) for c, _, raw in reader.messages(conns)]


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "run"
    # Half real time: t2a_sim steps in real time, and on a loaded 2-core CI machine a real-time
    # sim and its camera over DDS fell behind (a stale-camera hold, and the push ended 3.3 cm off
    # instead of 1.4). The camera keeps the demo's 10 Hz, so the controller's 0.3 s watchdog has
    # frames to spare. The episode and its sim time are those of `make demo`.
    cmd = [sys.executable, "-m", "t2a_bringup.demo", "--out", str(out),
           "--task", "box_push", "--split", "G", "--seed", "2001", "--max-sim-time", "30",
           "--camera-rate", "10", "--real-time-factor", "0.5"]  # fmt: skip
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=400, env=env)
    return out, proc


def test_demo_solves_the_task_and_reports_each_stage(demo):
    out, proc = demo
    # The README's claim: the default episode is solved (exit 1 = not solved, 2 = no stack).
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for stage in ("goal image", "stack up", "recording", "tracks for goal", "plan ok",
                  "control: execute", "task box_push (G, seed 2001): SUCCESS"):  # fmt: skip
        assert stage in proc.stdout, f"no {stage!r} line:\n{proc.stdout[-3000:]}"
    summary = json.loads((out / "summary.json").read_text())
    assert summary["success"] is True and summary["plan"]["ok"] is True
    assert summary["control"]["ee_goals"] > 0  # the arm was commanded, not left where it was
    for stage in ("goal_image", "stack_startup", "tracks", "plan", "control", "artifacts"):
        assert summary["timings_s"][stage] >= 0


def test_every_artifact_exists_and_decodes(demo):
    out, _ = demo
    summary = json.loads((out / "summary.json").read_text())
    for name in ("goal.png", "initial.png", "episode.gif", "ee_path.png", "summary.md"):
        assert (out / name).stat().st_size > 0, name
    for name in ("goal.png", "initial.png", "ee_path.png"):
        with Image.open(out / name) as im:
            assert im.size[0] > 0 and im.size[1] > 0
    with Image.open(out / "episode.gif") as gif:
        assert gif.n_frames >= 2 and gif.size == (320, 240)
    assert summary["video_frames"] >= 2
    assert (out / "bag" / "metadata.yaml").is_file()
    assert any(p.suffix == ".mcap" and p.stat().st_size > 0 for p in (out / "bag").iterdir())


def test_summary_agrees_with_the_bag(demo):
    out, _ = demo
    summary = json.loads((out / "summary.json").read_text())
    bag = out / "bag"
    with BagReader(bag) as reader:
        counts = {name: info.message_count for name, info in reader.topics().items()}
    assert counts == summary["bag_messages"]
    for topic in ("/camera/camera/color/image_raw", "/spot/joint_states", "/t2a/status"):
        assert counts.get(topic, 0) > 0, topic

    tracks = _messages(bag, "/t2a/tracks")
    assert tracks, "no tracks recorded"
    assert tracks[-1].goal_id == summary["tracks"]["goal_id"]
    assert tracks[-1].num_points == summary["tracks"]["points"]
    assert tracks[-1].horizon + 1 == summary["tracks"]["steps"]
    xy = np.asarray(tracks[-1].tracks_px).reshape(-1, 2)
    assert np.isfinite(xy).all()

    plans = _messages(bag, "/t2a/plan")
    assert plans and plans[-1].goal_id == summary["plan"]["goal_id"] == summary["tracks"]["goal_id"]
    assert plans[-1].status == summary["plan"]["status"]
    assert len(plans[-1].ee_poses) == summary["plan"]["poses"]

    statuses = [s for s in _messages(bag, "/t2a/status") if s.goal_id == summary["plan"]["goal_id"]]
    if summary["plan"]["ok"]:
        states = {s.state_name for s in statuses}
        assert summary["control"]["final_state"] in states
        assert "approach" in states  # the arm was commanded
        goals = _messages(bag, "/t2a/ee_goal")
        assert len(goals) > 0 and summary["control"]["ee_goals"] > 0
