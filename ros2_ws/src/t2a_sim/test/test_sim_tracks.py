"""Ground-truth point tracks and the recorded dataset (format, determinism, resuming, workers)."""

from __future__ import annotations

import json
import math

import mujoco
import numpy as np
import pytest

from t2a_sim.core import dataset, mjcf
from t2a_sim.core.dataset import RecordConfig

pytestmark = pytest.mark.sim

TINY = RecordConfig(width=96, height=72, record_hz=2.0, n_points=60)


@pytest.fixture(scope="module")
def drawer_episode():
    cfg = RecordConfig(width=160, height=120, record_hz=5.0, n_points=200)
    env = dataset.SimEnv(cfg.sim_config())
    episode = dataset.record_episode(env, "drawer_open", "MG", 3, cfg)
    yield env, episode
    env.close()


def _mujoco_pixels(model, data, points_world: np.ndarray, W: int, H: int) -> np.ndarray:
    """Pinhole projection straight from MuJoCo's camera (y up, looking along -z): no shared code."""
    cam = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, mjcf.CAMERA)
    R = data.cam_xmat[cam].reshape(3, 3)
    p = (points_world - data.cam_xpos[cam]) @ R  # camera coordinates
    f = (H / 2) / math.tan(math.radians(model.cam_fovy[cam]) / 2)
    u = (W - 1) / 2 + f * p[:, 0] / -p[:, 2]
    v = (H - 1) / 2 - f * p[:, 1] / -p[:, 2]
    return np.stack([u, v], -1)


def test_tracks_of_the_moving_drawer_follow_it(drawer_episode):
    env, ep = drawer_episode
    assert ep["success"]
    obj = ep["track_on_object"]
    assert obj.sum() >= 50 and (~obj).sum() >= 50
    # Independent prediction: the t = 0 points moved by the drawer's own motion, projected with
    # MuJoCo's camera parameters.
    T0_inv = np.linalg.inv(ep["object_pose"][0])
    H, W = ep["rgb"].shape[1:3]
    moved = 0
    for t in range(len(ep["time"])):
        motion = ep["object_pose"][t] @ T0_inv
        p = ep["points_body"][obj] @ motion[:3, :3].T + motion[:3, 3]
        uv = _mujoco_pixels(env.model, env.data, p, W, H)
        err = np.linalg.norm(ep["tracks"][t][obj] - uv, axis=1)
        assert err.max() < 0.5, f"step {t}: reprojection error {err.max():.3f} px"
        shift = np.linalg.norm(ep["tracks"][t][obj] - ep["tracks"][0][obj], axis=1)
        moved = max(moved, float(np.median(shift)))
    assert moved > 3, "the drawer's points should travel across the image"
    bg = ~obj & (ep["track_body"] == 0)  # static world geometry never moves
    np.testing.assert_allclose(ep["tracks"][-1][bg], ep["tracks"][0][bg], atol=1e-4)


def test_visible_tracks_agree_with_the_rendered_depth(drawer_episode):
    _, ep = drawer_episode
    first = ep["tracks"][0]
    np.testing.assert_allclose(first, np.rint(first), atol=1e-6)  # sampled at pixel centres
    assert ep["visible"][0].all()
    for t in (0, len(ep["time"]) // 2, len(ep["time"]) - 1):
        vis = ep["visible"][t]
        uv = np.rint(ep["tracks"][t][vis]).astype(int)
        seen = ep["depth_mm"][t][uv[:, 1], uv[:, 0]] / 1000.0
        z = ep["track_depth"][t][vis]
        tol = 0.01 + 0.02 * z + 1e-3  # + 1 mm for the millimetre rounding
        assert np.all(seen > z - tol), "a visible point has something in front of it"
        # Off depth edges the surface seen at the point's pixel is the point's own surface.
        assert np.mean(np.abs(seen - z) < tol) > 0.95
    # The arm passes in front of the drawer: some points must have been hidden for a while.
    assert (~ep["visible"]).any()


def test_episode_arrays_match_the_documented_format(drawer_episode):
    _, ep = drawer_episode
    T = len(ep["time"])
    H, W = 120, 160
    N = ep["tracks"].shape[1]
    shapes = {
        "rgb": (T, H, W, 3),
        "depth_mm": (T, H, W),
        "joints": (T, 7),
        "joint_targets": (T, 7),
        "ee_pose": (T, 4, 4),
        "ee_target": (T, 4, 4),
        "gripper": (T,),
        "object_pose": (T, 4, 4),
        "tracks": (T, N, 2),
        "visible": (T, N),
        "points_body": (N, 3),
        "K": (3, 3),
        "T_body_cam": (4, 4),
    }
    for key, shape in shapes.items():
        assert ep[key].shape == shape, key
    assert ep["rgb"].dtype == np.uint8 and ep["depth_mm"].dtype == np.uint16
    documented = {
        line.split()[0]
        for line in dataset.__doc__.splitlines()
        if line[:1].isalpha() and len(line.split()) > 2 and line.split()[1].startswith("(")
    }
    assert documented == set(ep), documented ^ set(ep)
    meta = json.loads(str(ep["meta"]))
    assert (meta["task"], meta["split"], meta["seed"]) == ("drawer_open", "MG", 3)
    assert np.diff(ep["time"]).max() <= 0.2 + 1e-9  # 5 Hz
    assert ep["time"][0] == 0.0


def test_generate_is_resumable_deterministic_and_parallel(tmp_path):
    jobs = dataset.plan_jobs(["TG"], 1, tasks=["toaster_press", "jug_pour"])
    assert [(j.split, j.task, j.seed) for j in jobs] == [
        ("TG", "toaster_press", 0),
        ("TG", "jug_pour", 0),
    ]
    index = dataset.generate(tmp_path / "a", jobs, TINY, workers=2, progress=False)
    assert [e["task"] for e in index["episodes"]] == ["jug_pour", "toaster_press"]
    assert all(e["success"] for e in index["episodes"])
    a = dataset.load_episode(tmp_path / "a" / index["episodes"][1]["file"])

    # Resume: the finished episode is not redone, the missing one is.
    dataset.generate(tmp_path / "b", jobs[:1], TINY, workers=1, progress=False)
    done = tmp_path / "b" / "TG" / "toaster_press" / "000000.npz"
    stamp = done.stat().st_mtime_ns
    index = dataset.generate(tmp_path / "b", jobs, TINY, workers=1, progress=False)
    assert done.stat().st_mtime_ns == stamp and len(index["episodes"]) == 2
    b = dataset.load_episode(done)
    for key in ("rgb", "depth_mm", "tracks", "visible", "joints"):
        assert np.array_equal(a[key], b[key]), (
            f"{key} differs between a 2-worker and a 1-worker run"
        )


def test_glued_grid_pixels_reproject_to_themselves_and_ride_their_bodies():
    from t2a_sim.core import tracks
    from t2a_sim.core.config import SimConfig
    from t2a_sim.core.env import SimEnv

    env = SimEnv(SimConfig(width=160, height=120))
    try:
        env.reset("drawer_open", "MG", 3)
        _, depth = env.render()
        ids = env.camera.render_geom_ids(env.data)
        u, v = np.meshgrid(np.arange(10) * 16 + 7.5, np.arange(10) * 12 + 5.5)
        uv = np.stack([u.ravel(), v.ravel()], -1)
        intr, T_body_cam = env.intrinsics, env.T_body_cam
        pts = tracks.glue_pixels(env.model, env.data, ids, depth, intr, T_body_cam, env.part_id, uv)
        assert len(pts.body) == 100 and pts.on_object.sum() >= 2  # every pixel is kept
        uv0, _, _ = tracks.project(env.data, pts, intr, T_body_cam)
        np.testing.assert_allclose(uv0, uv, atol=1e-6)
        env.data.qpos[env.obj_qadr] += 0.1  # pull the drawer out 10 cm
        mujoco.mj_forward(env.model, env.data)
        uv1, _, _ = tracks.project(env.data, pts, intr, T_body_cam)
        moved = np.linalg.norm(uv1 - uv0, axis=1)
        assert moved[pts.on_object].min() > 1.0
        static = pts.body == 0
        assert static.sum() > 10
        np.testing.assert_allclose(uv1[static], uv0[static], atol=1e-6)
    finally:
        env.close()
