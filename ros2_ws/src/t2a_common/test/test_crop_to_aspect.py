"""A goal image of another aspect ratio than the camera's is cropped (a little) or refused,
never stretched: the track model stretches I0 and the goal to one square."""

from __future__ import annotations

import numpy as np
import pytest

from t2a_common.core.images import crop_to_aspect


def test_same_aspect_is_untouched_and_another_size_of_it_too() -> None:
    frame = np.zeros((480, 640, 3), np.uint8)
    assert crop_to_aspect(frame, 640, 480) is frame
    half = np.zeros((240, 320, 3), np.uint8)
    assert crop_to_aspect(half, 640, 480) is half


def test_a_small_mismatch_is_centre_cropped_to_the_camera_aspect() -> None:
    wide = np.arange(480 * 700, dtype=np.uint32).reshape(480, 700, 1).repeat(3, 2)
    wide = (wide % 251).astype(np.uint8)
    out = crop_to_aspect(wide, 640, 480)
    assert out.shape == (480, 640, 3)
    np.testing.assert_array_equal(out, wide[:, 30:670])  # centred
    tall = crop_to_aspect(np.zeros((520, 640, 3), np.uint8), 640, 480)
    assert tall.shape == (480, 640, 3)


def test_a_large_mismatch_is_refused_with_what_to_send() -> None:
    with pytest.raises(ValueError, match=r"1280x720 .* 640x480 .*t2a-snapshot-goal"):
        crop_to_aspect(np.zeros((720, 1280, 3), np.uint8), 640, 480)
