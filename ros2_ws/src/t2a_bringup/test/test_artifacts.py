"""Episode artifacts (unit tier): overlays draw where the tracks are, videos and plots decode back
to what was written, the summary round-trips, and a SensorBagWriter bag reads back."""

from __future__ import annotations

import json

import cv2
import imageio.v3 as iio
import numpy as np
import pytest

from t2a_bringup.core import artifacts
from t2a_bringup.core.bag import BagReader, MessageTypes
from t2a_common import ros_conv
from t2a_common.core.geometry import Intrinsics

W, H = 160, 120
BLACK = np.zeros((H, W, 3), np.uint8)


def _tracks() -> np.ndarray:
    """Two points over 4 steps: point 0 moves right along v=30 (u 20 -> 110), point 1 stays
    at (40, 90)."""
    u = np.linspace(20, 110, 5)
    moving = np.stack([u, np.full(5, 30.0)], axis=-1)
    static = np.tile([40.0, 90.0], (5, 1))
    return np.stack([moving, static], axis=1)  # (5, 2, 2)


def _lit(image: np.ndarray) -> np.ndarray:
    return image.max(axis=-1) > 0


# --------------------------------------------------------------------------------------------
# overlays


def test_moving_points_threshold():
    tracks = _tracks()
    assert artifacts.moving_points(tracks).tolist() == [True, False]
    tracks[-1, 1] += [2.0, 2.0]  # 2.8 px: still below the 3 px default
    assert artifacts.moving_points(tracks).tolist() == [True, False]
    assert artifacts.moving_points(tracks, threshold_px=2.0).tolist() == [True, True]


def test_overlay_draws_where_the_tracks_are():
    tracks = _tracks()
    out = artifacts.draw_tracks(BLACK, tracks)
    assert out.shape == BLACK.shape and not BLACK.any()  # the input is left alone
    lit = _lit(out)
    # The moving point's trail covers its whole path, its head sits at the last step.
    for u in range(22, 109, 4):
        assert lit[30, u], f"no trail at u={u}"
    assert lit[30, 110] and lit[28:33, 108:113].all()
    # The static point is a grey ring around (40, 90): drawn at the ring, hollow in the middle.
    ring = out[90, 43]
    assert lit[90, 43] and lit[90, 37] and not lit[90, 40]
    assert ring[0] == ring[1] == ring[2], "static points are grey"
    # Nothing anywhere else.
    far = np.ones((H, W), bool)
    far[20:41, 10:121] = False
    far[80:101, 30:51] = False
    assert not lit[far].any()
    # The moving point's colour is not grey: moving and static points look different.
    head = out[30, 110].astype(int)
    assert np.ptp(head) > 60


def test_overlay_step_limits_the_trail():
    tracks = _tracks()
    at0 = _lit(artifacts.draw_tracks(BLACK, tracks, step=0))
    assert at0[30, 20] and not at0[30, 60:].any()  # only the head at P0
    at2 = _lit(artifacts.draw_tracks(BLACK, tracks, step=2))
    assert at2[30, 40] and at2[30, 65] and not at2[30, 75:].any()  # up to u=65 only
    with pytest.raises(ValueError, match=r"step is 5, expected 0\.\.4"):
        artifacts.draw_tracks(BLACK, tracks, step=5)


def test_overlay_per_point_colours_and_explicit_moving():
    tracks = _tracks()
    colors = np.array([[255, 0, 0], [0, 0, 255]], np.uint8)
    out = artifacts.draw_tracks(BLACK, tracks, colors=colors, moving=np.array([True, True]))
    assert tuple(out[30, 60]) == (255, 0, 0)
    assert tuple(out[90, 40]) == (0, 0, 255)  # now drawn as a moving point: a filled dot
    auto = artifacts.point_colors(np.array([[0.0, 0.0], [W - 1.0, 0.0], [0.0, H - 1.0]]), W, H)
    assert auto.shape == (3, 3) and auto.dtype == np.uint8
    assert len({tuple(c) for c in auto}) == 3
    with pytest.raises(ValueError, match=r"moving has shape \(3,\), expected \(2,\)"):
        artifacts.draw_tracks(BLACK, tracks, moving=np.ones(3, bool))
    with pytest.raises(ValueError, match="expected uint8 RGB"):
        artifacts.draw_tracks(BLACK[..., 0], tracks)


def test_overlay_skips_non_finite_points():
    tracks = _tracks()
    tracks[2:, 0] = np.nan  # the point is lost after step 1
    lit = _lit(artifacts.draw_tracks(BLACK, tracks, moving=np.array([True, False])))
    assert lit[30, 30] and not lit[30, 70:].any()


def test_side_by_side_and_label():
    goal = np.full((60, 80, 3), 200, np.uint8)
    both = artifacts.side_by_side(BLACK, goal, gap_px=4)
    assert both.shape == (H, W + 4 + 160, 3)  # the goal is scaled to the same height
    assert (both[:, W + 4 :] == 200).all()
    labelled = artifacts.put_label(BLACK, "hello")
    assert _lit(labelled)[:20, :60].any() and not _lit(labelled)[40:].any()


# --------------------------------------------------------------------------------------------
# video


def _frames(n: int, w: int = W, h: int = H) -> list[np.ndarray]:
    """Distinct frames (a GIF merges identical neighbours): a bright bar that moves."""
    out = []
    for i in range(n):
        f = np.zeros((h, w, 3), np.uint8)
        f[:, (i * 7) % w : (i * 7) % w + 5] = (255, 255, 255)
        f[: h // 2, : w // 2] = (0, 60 + 10 * i, 0)
        out.append(f)
    return out


def test_video_writes_gif_and_mp4(tmp_path):
    files = artifacts.write_video(_frames(12), tmp_path / "sub" / "episode", fps=5.0)
    assert files.gif == tmp_path / "sub" / "episode.gif" and files.frames == 12
    gif = iio.imread(files.gif, index=None)
    assert gif.shape[:3] == (12, H, W)
    # The bar is where it was drawn (GIF colours are quantised, so compare loosely).
    assert gif[3, 100, 21:26, :3].min() > 200 and gif[3, 100, 40, :3].max() < 60
    meta = iio.immeta(files.gif, index=0)
    assert meta.get("duration") == pytest.approx(200, abs=10)  # ms per frame at 5 fps
    assert files.mp4 == tmp_path / "sub" / "episode.mp4", files.mp4_error
    cap = cv2.VideoCapture(str(files.mp4))
    count, size = 0, None
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        count, size = count + 1, frame.shape
    cap.release()
    assert count == 12 and size == (H, W, 3)


def test_video_gif_is_shrunk_and_subsampled(tmp_path):
    files = artifacts.write_video(_frames(10, w=200, h=100), tmp_path / "v.gif", fps=10.0,
                                  mp4=False, gif_max_width=100, gif_max_frames=5)  # fmt: skip
    assert files.mp4 is None and files.mp4_error == "not requested"
    gif = iio.imread(files.gif, index=None)
    assert gif.shape[:3] == (5, 50, 100)
    assert iio.immeta(files.gif, index=0)["duration"] == pytest.approx(200, abs=10)


def test_video_rejects_bad_frames(tmp_path):
    with pytest.raises(ValueError, match="no frames"):
        artifacts.write_video([], tmp_path / "v")
    with pytest.raises(ValueError, match=r"frame 1 is 80x60, expected 160x120 like frame 0"):
        artifacts.write_video([BLACK, np.zeros((60, 80, 3), np.uint8)], tmp_path / "v")
    with pytest.raises(ValueError, match="fps is 0"):
        artifacts.write_video([BLACK], tmp_path / "v", fps=0)


# --------------------------------------------------------------------------------------------
# hand paths


def test_plot_ee_paths_png(tmp_path):
    planned = np.array([[0.8, 0.0, 0.4], [0.75, -0.05, 0.0], [0.85, -0.05, 0.0], [0.7, 0, 0]])
    t = np.linspace(0, 1, 50)[:, None]
    executed = planned[0] + t * (planned[-1] - planned[0])
    path = artifacts.plot_ee_paths(tmp_path / "p" / "paths.png", planned, executed,
                                   grasp=planned[2], pregrasp=planned[1], start=planned[0],
                                   title="plan OK")  # fmt: skip
    image = iio.imread(path)
    assert image.shape[0] > 200 and image.shape[1] > 400
    assert image[..., :3].std() > 10  # not a blank canvas
    # Without an executed path (no arm) and without a plan, it still draws.
    empty = artifacts.plot_ee_paths(tmp_path / "empty.png", np.zeros((0, 3)), None)
    assert iio.imread(empty).shape == image.shape
    with pytest.raises(ValueError, match=r"planned has shape \(4, 2\)"):
        artifacts.plot_ee_paths(tmp_path / "x.png", planned[:, :2])
    with pytest.raises(ValueError, match="grasp has shape"):
        artifacts.plot_ee_paths(tmp_path / "x.png", planned, grasp=[1.0, 2.0])


# --------------------------------------------------------------------------------------------
# summary


def test_summary_json_and_markdown(tmp_path):
    summary = {
        "success": np.bool_(False),
        "plan": {"status": "NO_MOTION", "message": "no point moves | really", "poses": np.int64(0)},
        "timings_s": {"predict": np.float32(1.25), "plan": 0.004},
        "error_m": float("nan"),
        "path": tmp_path,
        "stages": [{"name": "tracks", "s": 1.0}, {"name": "plan", "s": 0.5, "note": "x"}],
        "warnings": ["a", "b"],
    }
    json_path, md_path = artifacts.write_summary(tmp_path / "out", summary, title="Demo")
    data = json.loads(json_path.read_text())
    assert data["success"] is False and data["error_m"] is None
    assert data["plan"] == {"status": "NO_MOTION", "message": "no point moves | really", "poses": 0}
    assert data["timings_s"]["predict"] == 1.25 and data["path"] == str(tmp_path)
    md = md_path.read_text()
    assert md.startswith("# Demo\n")
    assert "| success | no |" in md and "| error_m | - |" in md and "| warnings | a, b |" in md
    assert "## plan" in md and "| status | NO_MOTION |" in md
    assert "no point moves \\| really" in md  # a pipe cannot break the table
    assert "## timings_s" in md and "| predict | 1.25 |" in md
    assert "| name | s | note |" in md and "| plan | 0.5 | x |" in md


# --------------------------------------------------------------------------------------------
# a bag written from arrays


def test_sensor_bag_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    depth = rng.uniform(0.3, 2.0, (H, W))
    depth[:10] = np.nan  # no data
    intr = Intrinsics.from_fov(W, H, 45.0)
    names = ("a", "b")
    with artifacts.SensorBagWriter(tmp_path / "bag") as bag:
        for i in range(3):
            bag.write_frame(10.0 + 0.1 * i, rgb, depth, intr)
            bag.write_joints(10.0 + 0.1 * i, names, [i, -i])
        bag.write_goal(10.25, rgb[::2, ::2])
        with pytest.raises(ValueError, match="depth is"):
            bag.write_frame(11.0, rgb, depth[:10], intr)
    store = MessageTypes().typestore
    with BagReader(tmp_path / "bag") as reader:
        counts = {t: i.message_count for t, i in reader.topics().items()}
        assert counts == {artifacts.COLOR_TOPIC: 3, artifacts.DEPTH_TOPIC: 3,
                          artifacts.INFO_TOPIC: 3, artifacts.JOINTS_TOPIC: 3,
                          artifacts.GOAL_TOPIC: 1}  # fmt: skip
        assert reader.topics()[artifacts.GOAL_TOPIC].offered_qos[0].durability == (
            "transient_local"
        )
        msgs = {}
        for m in reader.messages():
            msgs.setdefault(m.topic, []).append(store.deserialize_cdr(m.data, m.msgtype))
    color = msgs[artifacts.COLOR_TOPIC][1]
    assert (color.header.stamp.sec, color.header.stamp.nanosec) == (10, 100_000_000)
    assert color.header.frame_id == "camera_color_optical_frame"
    np.testing.assert_array_equal(ros_conv.image_to_rgb(color), rgb)
    got = ros_conv.depth_to_meters(msgs[artifacts.DEPTH_TOPIC][0])
    assert np.isnan(got[:10]).all()
    np.testing.assert_allclose(got[10:], depth[10:], atol=0.0006)  # mm resolution
    assert ros_conv.camera_info_to_intrinsics(msgs[artifacts.INFO_TOPIC][0]) == intr
    joints = msgs[artifacts.JOINTS_TOPIC][2]
    assert list(joints.name) == ["a", "b"] and joints.position.tolist() == [2.0, -2.0]
    goal = ros_conv.image_to_rgb(msgs[artifacts.GOAL_TOPIC][0])
    np.testing.assert_array_equal(goal, rgb[::2, ::2])
