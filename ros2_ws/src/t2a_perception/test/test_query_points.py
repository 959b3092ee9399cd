"""Query points where things move: the change mask of I0 vs the goal, and the sampler."""

import numpy as np
import pytest

from t2a_perception.core.predictor import sample_query_points
from t2a_perception.core.query_points import (
    ChangeMaskConfig,
    change_mask,
    sample_change_points,
)

H, W = 240, 320


def _scene(box_u: int, arm: bool = False) -> np.ndarray:
    """A flat wall over a floor with a red box at column ``box_u``; optionally the robot's dark
    arm reaching in from the top edge (as in the scripted expert's last frame)."""
    img = np.empty((H, W, 3), np.uint8)
    img[: H // 2] = (110, 110, 120)  # wall
    img[H // 2 :] = (60, 90, 60)  # floor
    # Static things, so that no global shift of the camera explains the box's move.
    img[20:60, 20:50] = (40, 60, 200)
    img[150:230, 260:300] = (220, 200, 40)
    img[60:100, 120:200] = (150, 80, 150)
    img[130:180, box_u : box_u + 40] = (200, 40, 40)  # box
    if arm:
        img[0:100, 230:260] = (30, 30, 30)  # arm from the top border
    return img


def _inside(points: np.ndarray, mask: np.ndarray) -> np.ndarray:
    rows = np.clip(np.round(points[:, 1]).astype(int), 0, mask.shape[0] - 1)
    cols = np.clip(np.round(points[:, 0]).astype(int), 0, mask.shape[1] - 1)
    return mask[rows, cols]


@pytest.mark.parametrize("fraction", [0.0, 0.5, 0.55, 1.0])
def test_sampler_puts_the_requested_share_inside_the_mask(fraction):
    mask = np.zeros((H, W), bool)
    mask[100:140, 50:90] = True  # 2% of the image
    points = sample_change_points(H, W, 400, mask, fraction, seed=0)
    n_in = round(400 * fraction)
    inside = _inside(points, mask)
    assert inside[:n_in].all()
    # The rest is spread over the whole image: about the mask's share of it lands inside.
    assert inside[n_in:].sum() <= max(3, 0.05 * (400 - n_in))
    assert inside.sum() >= n_in


def test_sampler_spreads_the_rest_over_the_image():
    mask = np.zeros((H, W), bool)
    mask[10:20, 10:20] = True
    points = sample_change_points(H, W, 400, mask, 0.5, seed=1)[200:]
    counts, _, _ = np.histogram2d(points[:, 0], points[:, 1], bins=(4, 4), range=((0, W), (0, H)))
    assert counts.min() >= 8  # 200 stratified points: ~12.5 per quarter-by-quarter cell


@pytest.mark.parametrize("n", [1, 7, 399, 400, 401])
def test_sampler_respects_the_point_count_and_the_image(n):
    mask = np.zeros((H, W), bool)
    mask[200:, 300:] = True
    for m in (mask, None, np.zeros((H, W), bool)):
        points = sample_change_points(H, W, n, m, 0.55, seed=2)
        assert points.shape == (n, 2) and points.dtype == np.float32
        assert (points >= -0.5).all()
        assert (points[:, 0] <= W - 0.5).all() and (points[:, 1] <= H - 0.5).all()


def test_sampler_is_deterministic_given_the_seed():
    mask = np.zeros((H, W), bool)
    mask[50:90, 60:200] = True
    a = sample_change_points(H, W, 400, mask, 0.55, seed=3)
    assert np.array_equal(a, sample_change_points(H, W, 400, mask, 0.55, seed=3))
    assert not np.array_equal(a, sample_change_points(H, W, 400, mask, 0.55, seed=4))


def test_no_change_falls_back_to_the_grid():
    grid = sample_query_points(H, W, 400, "grid")
    assert np.array_equal(sample_change_points(H, W, 400, np.zeros((H, W), bool)), grid)
    assert np.array_equal(sample_change_points(H, W, 400, None), grid)
    image = _scene(100)
    assert not change_mask(image, image.copy()).any()
    same = sample_query_points(H, W, 400, "change", seed=0, image0=image, goal=image.copy())
    assert np.array_equal(same, grid)


def test_change_mask_covers_the_moved_object_where_it_was():
    image0, goal = _scene(100), _scene(160)
    mask = change_mask(image0, goal)
    box0 = np.zeros((H, W), bool)
    box0[130:180, 100:140] = True
    arrival = np.zeros((H, W), bool)
    arrival[130:180, 160:200] = True
    assert (mask & box0).sum() >= 0.9 * box0.sum()
    # Where the box arrives, I0 shows floor that stays put: no point belongs there.
    assert (mask & arrival).sum() <= 0.1 * arrival.sum()


def test_change_mask_leaves_out_the_robot_arm_in_the_goal():
    image0, goal = _scene(100), _scene(160, arm=True)
    mask = change_mask(image0, goal)
    assert not mask[0:100, 230:260].any()
    points = sample_query_points(H, W, 400, "change", seed=0, image0=image0, goal=goal)
    box0 = np.zeros((H, W), bool)
    box0[130:180, 100:140] = True
    assert _inside(points, box0).sum() >= 0.5 * 400  # a uniform grid puts ~10 points there


def test_change_mask_takes_the_goal_at_another_size():
    image0, goal = _scene(100), _scene(160)
    big = np.repeat(np.repeat(goal, 2, axis=0), 2, axis=1)  # 640x480
    assert (change_mask(image0, big) == change_mask(image0, goal)).mean() > 0.99


def test_a_user_roi_overrides_the_change_region():
    roi = np.zeros((H, W), bool)
    roi[0:40, 0:40] = True
    image0, goal = _scene(100), _scene(160)
    points = sample_query_points(H, W, 50, "change", roi, seed=0, image0=image0, goal=goal)
    assert points.shape == (50, 2) and _inside(points, roi).all()
    # and needs no images at all; a square count gives the grid in the ROI, as before
    assert sample_query_points(H, W, 50, "change", roi, seed=0).shape == (50, 2)
    grid = sample_query_points(H, W, 400, "grid", roi)
    assert np.array_equal(sample_query_points(H, W, 400, "change", roi, 0, image0=image0), grid)


def test_change_mode_without_images_is_refused():
    with pytest.raises(ValueError, match="needs image0 and goal"):
        sample_query_points(H, W, 400, "change")
    with pytest.raises(ValueError, match="image0 is"):
        sample_query_points(H, W, 400, "change", image0=np.zeros((10, 10, 3), np.uint8),
                            goal=np.zeros((10, 10, 3), np.uint8))  # fmt: skip


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="inside_fraction"):
        sample_change_points(H, W, 10, None, 1.5)
    with pytest.raises(ValueError, match="mask must be bool"):
        sample_change_points(H, W, 10, np.ones((H, W), np.uint8))
    with pytest.raises(ValueError, match="take_region_share"):
        ChangeMaskConfig(take_region_share=2.0)


def test_feature_matches_mark_a_textured_part_that_moved():
    rng = np.random.default_rng(0)
    texture = rng.integers(0, 255, (50, 40, 3), dtype=np.uint8)
    image0, goal = _scene(100), _scene(160)
    image0[130:180, 100:140] = texture
    goal[130:180, 160:200] = texture
    mask = change_mask(image0, goal, ChangeMaskConfig(use_features=True))
    assert mask[130:180, 100:140].mean() >= 0.9
    assert mask[130:180, 160:200].mean() <= 0.1


def test_a_goal_check_result_is_reused():
    from t2a_perception.core.goal_check import check_goal

    image0, goal = _scene(100), _scene(160, arm=True)
    verdict = check_goal(image0, None, goal)
    assert verdict.ok, verdict.reason
    a = sample_query_points(H, W, 400, "change", seed=5, image0=image0, goal=goal)
    b = sample_query_points(
        H, W, 400, "change", seed=5, image0=image0, goal=goal, goal_check=verdict
    )
    assert np.array_equal(a, b)
