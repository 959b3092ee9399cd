"""The shared image check and the pixel <-> normalised convention (unit tier)."""

from __future__ import annotations

import numpy as np
import pytest

from t2a_common.core.images import (
    check_rgb_image,
    normalized_to_pixels,
    pixels_to_normalized,
    resize_image,
)


def test_check_rgb_image_returns_the_image():
    image = np.zeros((4, 5, 3), np.uint8)
    assert check_rgb_image("goal", image) is image


@pytest.mark.parametrize(
    "image, match",
    [
        ([[0, 0, 0]], "goal must be a numpy array"),
        (np.zeros((4, 5, 3), np.float32), r"goal is float32 with shape \(4, 5, 3\)"),
        (np.zeros((4, 5), np.uint8), "expected uint8 RGB"),
        (np.zeros((4, 5, 4), np.uint8), "expected uint8 RGB"),
        (np.zeros((0, 5, 3), np.uint8), "goal is empty"),
    ],
)
def test_check_rgb_image_says_what_is_wrong(image, match):
    with pytest.raises(ValueError, match=match):
        check_rgb_image("goal", image)


def test_normalised_coordinates_span_the_pixel_edges_and_round_trip():
    corners = np.array([[-0.5, -0.5], [639.5, 479.5]])
    np.testing.assert_allclose(pixels_to_normalized(corners, 640, 480), [[-1, -1], [1, 1]])
    px = np.random.default_rng(0).uniform(-0.5, 639.5, size=(100, 2))
    back = normalized_to_pixels(pixels_to_normalized(px, 640, 480), 640, 480)
    np.testing.assert_allclose(back, px, atol=1e-4)  # float32 in between


def test_resize_image_stretches_to_the_square():
    image = np.random.default_rng(1).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    assert resize_image(image, 32).shape == (32, 32, 3)
    assert resize_image(image, 96).dtype == np.uint8
    square = image[:, :48]
    assert resize_image(square, 48) is square
