"""Unit tests of the predictor boundary: camera pixels in, camera pixels out."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from t2a_perception.core.checkpoint import save_checkpoint
from t2a_perception.core.model import TrackDiT, TrackModelConfig, TrackStats
from t2a_perception.core.predictor import (
    TrackPredictor,
    normalized_to_pixels,
    pixels_to_normalized,
    sample_query_points,
)

TINY = TrackModelConfig(
    image_size=32,
    horizon=8,
    hidden_size=32,
    depth=2,
    num_heads=2,
    encoder_width=8,
    point_frequencies=4,
    num_train_timesteps=20,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a shared CPU OpenMP's barrier waits
    # make two threads several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0) -> TrackDiT:
    torch.manual_seed(seed)
    model = TrackDiT(TINY, TrackStats(0.1))
    with torch.no_grad():  # leave adaLN-Zero's all-zero start, so outputs depend on inputs
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0.0, 0.05)
    return model.eval()


class ShiftModel(TrackDiT):
    """A fake track model: every point moves right by ``t * step`` normalised units."""

    step = 0.05

    def sample(self, image0, goal, points0, num_samples=1, **kwargs):
        shift = torch.zeros(self.horizon + 1, 1, 2)  # (H+1, 1, 2)
        shift[:, 0, 0] = torch.arange(self.horizon + 1) * self.step
        tracks = points0[:, None] + shift[None]  # (B, H+1, N, 2)
        return tracks[:, None].expand(-1, num_samples, -1, -1, -1)


def camera_images(width: int = 640, height: int = 480, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (
        rng.integers(0, 256, (height, width, 3), dtype=np.uint8),
        rng.integers(0, 256, (height // 2, width // 2, 3), dtype=np.uint8),  # other size
    )


@pytest.fixture(scope="module")
def predictor() -> TrackPredictor:
    return TrackPredictor(model=tiny_model())


# ------------------------------------------------------------------------------------------
# Output
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_points", [1, 13, 400])
@pytest.mark.parametrize("num_samples", [1, 3])
def test_predict_shapes_on_a_640x480_camera(predictor, num_points, num_samples):
    image0, goal = camera_images()
    points = sample_query_points(480, 640, num_points, mode="random", seed=1)
    result = predictor.predict(image0, goal, points, num_samples=num_samples, steps=3, seed=0)
    assert result.tracks_px.shape == (9, num_points, 2)
    assert result.samples_px.shape == (num_samples, 9, num_points, 2)
    assert result.confidence.shape == (num_points,)
    assert result.tracks_px.dtype == result.samples_px.dtype == np.float32
    assert np.all((result.confidence >= 0) & (result.confidence <= 1))
    assert (result.horizon, result.num_points) == (8, num_points)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_t0_is_exactly_the_query_points(predictor, sampler):
    image0, goal = camera_images()
    points = sample_query_points(480, 640, 25, mode="random", seed=2)
    result = predictor.predict(image0, goal, points, num_samples=2, sampler=sampler, seed=0)
    assert np.array_equal(result.tracks_px[0], points)
    assert np.array_equal(result.samples_px[:, 0], np.broadcast_to(points, (2, 25, 2)))


def test_tracks_come_back_in_camera_pixels():
    # A model that moves points by 0.05 normalised units per step must move them by
    # 0.05 * 640 / 2 = 16 px per step in a 640-wide camera frame, whatever the model's 32 px.
    predictor = TrackPredictor(model=ShiftModel(TINY))
    image0, goal = camera_images()
    points = np.array([[0.0, 0.0], [320.0, 240.0], [639.0, 479.0]], np.float32)
    result = predictor.predict(image0, goal, points)
    expected = points[None] + np.arange(9)[:, None, None] * np.array([16.0, 0.0])
    np.testing.assert_allclose(result.tracks_px, expected, atol=1e-3)
    assert np.all(result.confidence == 1.0)  # identical samples: no spread


def test_seed_fixes_the_prediction(predictor):
    image0, goal = camera_images()
    points = sample_query_points(480, 640, 16)
    a = predictor.predict(image0, goal, points, num_samples=3, steps=4, seed=5)
    b = predictor.predict(image0, goal, points, num_samples=3, steps=4, seed=5)
    c = predictor.predict(image0, goal, points, num_samples=3, steps=4, seed=6)
    assert np.array_equal(a.samples_px, b.samples_px) and np.array_equal(a.confidence, b.confidence)
    assert not np.array_equal(a.samples_px, c.samples_px)


def test_confidence_falls_with_spread(predictor):
    samples = np.zeros((4, 9, 2, 2))
    samples[:, 1:, 1, 0] = np.array([-1.0, 1.0, -1.0, 1.0])[:, None] * 0.1  # point 1 disagrees
    conf = predictor._confidence(samples)
    # Point 1 sits 0.1 normalised units = 1.6 px of the 32 px model image from its mean.
    assert conf[0] == 1.0
    assert conf[1] == pytest.approx(np.exp(-1.6 / predictor.confidence_scale_px))


def test_tracks_are_the_medoid_sample(predictor):
    image0, goal = camera_images()
    points = sample_query_points(480, 640, 9)
    result = predictor.predict(image0, goal, points, num_samples=5, steps=3, seed=0)
    assert any(np.array_equal(result.tracks_px, s) for s in result.samples_px)


def test_predictor_from_checkpoint_matches_model(tmp_path):
    model = tiny_model()
    save_checkpoint(model, tmp_path)
    image0, goal = camera_images(320, 240)
    points = sample_query_points(240, 320, 16)
    a = TrackPredictor(model=model).predict(image0, goal, points, num_samples=2, seed=3)
    b = TrackPredictor(tmp_path).predict(image0, goal, points, num_samples=2, seed=3)
    assert np.array_equal(a.samples_px, b.samples_px)


# ------------------------------------------------------------------------------------------
# Input validation
# ------------------------------------------------------------------------------------------

IMG, GOAL = camera_images(64, 48)
PTS = np.array([[10.0, 10.0], [20.0, 30.0]], np.float32)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        (
            {"image0": IMG.astype(np.float32)},
            r"image0 is float32 with shape \(48, 64, 3\); expected",
        ),
        ({"goal": GOAL[..., 0]}, r"goal is uint8 with shape \(24, 32\); expected uint8 RGB"),
        ({"goal": np.zeros((24, 32, 4), np.uint8)}, r"goal .* \(24, 32, 4\)"),
        ({"image0": np.zeros((0, 64, 3), np.uint8)}, "image0 is empty"),
        ({"image0": [[0]]}, "image0 must be a numpy array"),
        ({"points_px": np.zeros((0, 2))}, "points_px is empty"),
        ({"points_px": np.zeros((5, 3))}, r"shape \(N, 2\), got \(5, 3\)"),
        ({"points_px": np.array([[1.0, np.nan]])}, "1 non-finite point"),
        ({"points_px": np.array([[1.0, 2.0], [64.0, 2.0]])}, "outside the 64x48 image"),
        ({"points_px": np.array([["a", "b"]])}, "real numbers"),
        ({"num_samples": 0}, "num_samples must be an int >= 1, got 0"),
        ({"sampler": "euler"}, "unknown sampler 'euler'"),
        ({"steps": 0}, r"DDIM steps must be in 1..20, got 0"),
    ],
)
def test_bad_inputs_raise_clear_errors(predictor, kwargs, match):
    args = {"image0": IMG, "goal": GOAL, "points_px": PTS, **kwargs}
    with pytest.raises(ValueError, match=match):
        predictor.predict(**args)


def test_constructor_needs_exactly_one_source(tmp_path):
    with pytest.raises(ValueError, match="exactly one"):
        TrackPredictor()
    with pytest.raises(ValueError, match="exactly one"):
        TrackPredictor(tmp_path, model=tiny_model())


# ------------------------------------------------------------------------------------------
# Coordinates and query points
# ------------------------------------------------------------------------------------------


def test_pixel_normalised_round_trip_and_convention():
    px = np.array([[-0.5, -0.5], [639.5, 479.5], [319.5, 239.5]])
    norm = pixels_to_normalized(px, 640, 480)
    np.testing.assert_allclose(norm, [[-1, -1], [1, 1], [0, 0]], atol=1e-6)
    np.testing.assert_allclose(normalized_to_pixels(norm, 640, 480), px, atol=1e-4)


def test_grid_points():
    points = sample_query_points(480, 640, 400)
    assert points.shape == (400, 2) and points.dtype == np.float32
    assert len(np.unique(points[:, 0])) == 20 and len(np.unique(points[:, 1])) == 20
    assert points[:, 0].min() == 15.5 and points[:, 1].max() == 480 - 12 - 0.5
    with pytest.raises(ValueError, match="square number of points"):
        sample_query_points(480, 640, 390)


def test_masked_and_random_points():
    mask = np.zeros((480, 640), bool)
    mask[100:200, 300:500] = True
    grid = sample_query_points(480, 640, 400, mask=mask)
    assert 0 < len(grid) < 400
    for points in (grid, sample_query_points(480, 640, 50, "random", mask, seed=0)):
        cols, rows = np.round(points).astype(int).T
        assert mask[rows, cols].all()
    a = sample_query_points(480, 640, 50, "random", seed=3)
    assert np.array_equal(a, sample_query_points(480, 640, 50, "random", seed=3))
    assert a.min() >= -0.5 and a[:, 0].max() <= 639.5 and a[:, 1].max() <= 479.5
    with pytest.raises(ValueError, match="no True pixel"):
        sample_query_points(480, 640, 4, mask=np.zeros((480, 640), bool))
    with pytest.raises(ValueError, match=r"mask must be bool \(480, 640\)"):
        sample_query_points(480, 640, 4, mask=np.ones((48, 64), bool))


def test_config_replace_keeps_validation():
    with pytest.raises(ValueError, match="horizon"):
        dataclasses.replace(TINY, horizon=-1)
