"""predict_goal_tracks: the perception step the node, eval_bag and training call."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2a_common.core.geometry import Intrinsics
from t2a_perception.core.frames import depth_at_points
from t2a_perception.core.goal_tracks import predict_goal_tracks, roi_mask
from t2a_perception.core.model import TrackDiT, TrackModelConfig, TrackStats
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_perception.core.predictor import TrackPredictor, sample_query_points

TINY = TrackModelConfig(
    image_size=32, horizon=4, hidden_size=16, depth=1, num_heads=2, encoder_width=4,
    point_frequencies=2, num_train_timesteps=10,
)  # fmt: skip
W, H = 160, 120
INTR = Intrinsics(W, H, 120.0, 120.0, 79.5, 59.5)


@pytest.fixture(scope="module")
def predictor() -> TrackPredictor:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    yield TrackPredictor(model=TrackDiT(TINY, TrackStats(0.1)).eval())
    torch.set_num_threads(threads)


def scene(seed: int = 0):
    rng = np.random.default_rng(seed)
    image0 = rng.integers(0, 256, (H, W, 3), dtype=np.uint8)
    goal = image0.copy()
    goal[30:80, 40:110] = 255 - goal[30:80, 40:110]  # the part that moves
    depth = rng.uniform(0.4, 1.5, (H, W)).astype(np.float32)
    depth[:10] = np.nan
    return image0, goal, depth


@pytest.mark.parametrize(
    "cfg",
    [
        TrackPredictorConfig(num_points=64, num_samples=2, sampler_steps=3),
        TrackPredictorConfig(
            num_points=49,
            point_mode="grid",
            roi_px=(20, 10, 140, 100),
            num_samples=1,
            sampler_steps=2,
        ),
    ],
)
def test_same_tracks_as_the_steps_written_out(predictor, cfg):
    image0, goal, depth = scene()
    out = predict_goal_tracks(predictor, image0, goal, depth, INTR, cfg, seed=3, goal_id="g",
                              stamp_s=1.5, frame_id="cam")  # fmt: skip
    p0 = sample_query_points(H, W, cfg.num_points, cfg.point_mode, roi_mask(cfg.roi_px, H, W), 3,
                             image0=image0, goal=goal)  # fmt: skip
    pred = predictor.predict(image0, goal, p0, cfg.num_samples, cfg.sampler, cfg.sampler_steps, 3)
    np.testing.assert_array_equal(out.query_points, p0)
    np.testing.assert_array_equal(out.prediction.tracks_px, pred.tracks_px)
    np.testing.assert_array_equal(out.tracks.tracks_px, pred.tracks_px.astype(np.float32))
    np.testing.assert_array_equal(out.tracks.depth_m, depth_at_points(depth, p0))
    assert (out.tracks.goal_id, out.tracks.stamp_s, out.tracks.frame_id) == ("g", 1.5, "cam")
    assert out.tracks.intrinsics == INTR and out.inference_s >= 0


def test_num_points_overrides_the_config(predictor):
    image0, goal, depth = scene()
    cfg = TrackPredictorConfig(num_points=64, num_samples=1, sampler_steps=1)
    out = predict_goal_tracks(predictor, image0, goal, depth, INTR, cfg, num_points=10, seed=0)
    assert out.tracks.tracks_px.shape == (TINY.horizon + 1, 10, 2)


def test_inputs_that_disagree_are_refused_naming_the_sizes(predictor):
    image0, goal, depth = scene()
    cfg = TrackPredictorConfig(num_points=16, num_samples=1, sampler_steps=1)
    with pytest.raises(ValueError, match=r"aligned depth 80x60 .* disagree"):
        predict_goal_tracks(predictor, image0, goal, depth[::2, ::2], INTR, cfg, seed=0)
    other = Intrinsics(2 * W, 2 * H, 240.0, 240.0, 159.5, 119.5)
    with pytest.raises(ValueError, match="camera_info 320x240 disagree"):
        predict_goal_tracks(predictor, image0, goal, depth, other, cfg, seed=0)


def test_roi_mask_is_the_inclusive_box():
    assert roi_mask((), 4, 5) is None
    m = roi_mask((1, 0, 2, 1), 4, 5)
    assert m.sum() == 4 and m[0, 1] and m[1, 2] and not m[2, 1]
