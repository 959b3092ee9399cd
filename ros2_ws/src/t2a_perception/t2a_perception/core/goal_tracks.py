"""Predict tracks for a goal: the perception pipeline step.

:func:`predict_goal_tracks` (check the inputs agree, sample the query points, run the track model,
build the :class:`PointTrackSet`) is what the track predictor node, the bag evaluation and the
training scripts call, so the tracks they see come from one place.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from t2a_common.core.geometry import Intrinsics
from t2a_common.core.types import PointTrackSet
from t2a_perception.core.frames import depth_at_points
from t2a_perception.core.goal_check import GoalCheck
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_perception.core.predictor import TrackPrediction, TrackPredictor, sample_query_points


@dataclasses.dataclass(frozen=True)
class GoalTracks:
    """What :func:`predict_goal_tracks` returns."""

    tracks: PointTrackSet  # what the planner and the controller get
    prediction: TrackPrediction  # the model's output, with its K samples
    query_points: np.ndarray  # (N, 2) float32 pixels (u, v), P0
    inference_s: float  # wall time of the model call (s)


def roi_mask(roi_px: tuple[int, ...], height: int, width: int) -> np.ndarray | None:
    """``(height, width)`` bool mask of the inclusive pixel box ``(u0, v0, u1, v1)``; None when
    ``roi_px`` is empty (no region of interest)."""
    if not roi_px:
        return None
    u0, v0, u1, v1 = roi_px
    mask = np.zeros((height, width), bool)
    mask[max(v0, 0) : v1 + 1, max(u0, 0) : u1 + 1] = True
    return mask


def check_frame(image0: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics) -> None:
    """Raise ValueError, naming the sizes, unless I0 ``(H, W, 3)``, its aligned depth ``(H, W)``
    and the camera info describe the same ``W x H`` image."""
    h, w = image0.shape[:2]
    if (intrinsics.width, intrinsics.height) != (w, h) or depth_m.shape != (h, w):
        raise ValueError(
            f"image {w}x{h}, aligned depth {depth_m.shape[1]}x{depth_m.shape[0]} and "
            f"camera_info {intrinsics.width}x{intrinsics.height} disagree"
        )


def predict_goal_tracks(
    predictor: TrackPredictor,
    image0: np.ndarray,
    goal: np.ndarray,
    depth_m: np.ndarray,
    intrinsics: Intrinsics,
    config: TrackPredictorConfig,
    *,
    num_points: int | None = None,
    seed: int | None = None,
    goal_check: GoalCheck | None = None,
    goal_id: str = "",
    stamp_s: float = 0.0,
    frame_id: str = "camera_color_optical_frame",
) -> GoalTracks:
    """Tracks of query points on ``image0`` towards ``goal``, as the track predictor node does.

    image0: (H, W, 3) uint8 RGB I0; goal: (h, w, 3) uint8 RGB goal image; depth_m: (H, W) aligned
    depth of I0 in metres (NaN = none), giving each point's depth; intrinsics: the camera of I0.
    The query points (``config.num_points`` unless ``num_points``, ``config.point_mode``, within
    ``config.roi_px``) and the model's samples use ``seed`` (None = a fresh draw); ``goal_check``
    (a verdict of :func:`t2a_perception.core.goal_check.check_goal`) lets the change sampler reuse
    its alignment. Raises ValueError, saying what was wrong, when the inputs disagree or the model
    refuses them.
    """
    check_frame(image0, depth_m, intrinsics)
    h, w = image0.shape[:2]
    points = sample_query_points(
        h, w, num_points or config.num_points, config.point_mode, roi_mask(config.roi_px, h, w),
        seed, image0=image0, goal=goal, goal_check=goal_check,
    )  # fmt: skip
    t0 = time.perf_counter()
    pred = predictor.predict(
        image0, goal, points, config.num_samples, config.sampler, config.sampler_steps, seed
    )
    inference_s = time.perf_counter() - t0
    tracks = PointTrackSet(
        tracks_px=pred.tracks_px,
        depth_m=depth_at_points(depth_m, points),
        intrinsics=intrinsics,
        confidence=pred.confidence,
        goal_id=goal_id,
        stamp_s=stamp_s,
        frame_id=frame_id,
    )
    return GoalTracks(tracks, pred, points, inference_s)
