"""The track model's boundary: camera pixels in, camera pixels out.

:class:`TrackPredictor` owns everything between a camera frame and the model: input validation,
resizing both images to the model resolution (the goal may come from a different camera size),
pixel <-> normalised coordinates, sampling ``K`` hypotheses, and summarising them. Nothing
outside this module needs to know the model's image size or coordinate convention.

Coordinate convention (shared with the training data pipeline): pixel ``(u, v)`` has its centre
at integer coordinates, so the image spans ``[-0.5, W - 0.5]``; normalised ``x = (u + 0.5) / W *
2 - 1`` maps that span to ``[-1, 1]``. This is what ``cv2.resize`` assumes, so a point keeps its
normalised coordinates when the image is resized, whatever the aspect ratio.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch

from t2a_common.core.images import (
    check_rgb_image,
    normalized_to_pixels,
    pixels_to_normalized,
    resize_image,
)
from t2a_perception.core.checkpoint import load_checkpoint
from t2a_perception.core.diffusion import SAMPLERS
from t2a_perception.core.goal_check import GoalCheck
from t2a_perception.core.model import TrackDiT
from t2a_perception.core.query_points import change_mask, sample_change_points

POINT_MODES = ("grid", "random", "change")


@dataclasses.dataclass(frozen=True)
class TrackPrediction:
    """Predicted tracks in the input camera's pixel frame.

    Attributes:
        tracks_px: ``(H+1, N, 2)`` float32 ``(u, v)``; ``tracks_px[0]`` is exactly the query
            points. The medoid of the samples (see :meth:`TrackPredictor.predict`).
        confidence: ``(N,)`` float32 in ``[0, 1]``; 1 = all samples agree on that point's track.
        samples_px: ``(K, H+1, N, 2)`` float32, every hypothesis.
    """

    tracks_px: np.ndarray
    confidence: np.ndarray
    samples_px: np.ndarray

    @property
    def horizon(self) -> int:
        return self.tracks_px.shape[0] - 1

    @property
    def num_points(self) -> int:
        return self.tracks_px.shape[1]


class TrackPredictor:
    """Goal-conditioned point-track prediction on camera images.

    Args:
        checkpoint_dir: directory written by ``save_checkpoint``; or pass ``model`` instead.
        model: an in-memory :class:`TrackDiT` (e.g. during training or in tests).
        device: torch device to run on.
        confidence_scale_px: sample spread, in pixels of the model image, at which confidence
            drops to ``1/e``. Measured in the model frame so that it means the same for every
            camera resolution.
    """

    def __init__(
        self,
        checkpoint_dir: str | Path | None = None,
        *,
        model: TrackDiT | None = None,
        device: str | torch.device = "cpu",
        confidence_scale_px: float = 4.0,
    ) -> None:
        if (checkpoint_dir is None) == (model is None):
            raise ValueError("give exactly one of checkpoint_dir or model")
        if not confidence_scale_px > 0:
            raise ValueError(f"confidence_scale_px must be > 0, got {confidence_scale_px}")
        self.device = torch.device(device)
        if model is None:
            model = load_checkpoint(checkpoint_dir, self.device)
        self.model = model.to(self.device).eval()
        self.config = self.model.config
        self.confidence_scale_px = float(confidence_scale_px)

    @property
    def horizon(self) -> int:
        return self.config.horizon

    @property
    def image_size(self) -> int:
        return self.config.image_size

    def predict(
        self,
        image0: np.ndarray,
        goal: np.ndarray,
        points_px: np.ndarray,
        num_samples: int = 1,
        sampler: str = "ddim",
        steps: int = 10,
        seed: int | None = None,
    ) -> TrackPrediction:
        """Predict where each query point goes on the way from ``image0`` to ``goal``.

        Args:
            image0: current frame, ``(H, W, 3)`` uint8 RGB.
            goal: goal image, ``(H', W', 3)`` uint8 RGB; its size may differ from ``image0``.
            points_px: ``(N, 2)`` query points ``(u, v)`` in ``image0`` pixels, N >= 1.
            num_samples: hypotheses ``K`` to draw (one batch, one image encoding).
            sampler: ``"ddim"`` (``steps`` network evaluations) or ``"ddpm"`` (always all
                ``num_train_timesteps``; ``steps`` is ignored).
            steps: DDIM steps.
            seed: fixes the sampling noise; same seed and inputs give identical output.

        Returns:
            A :class:`TrackPrediction` in ``image0`` pixel coordinates.

        Raises:
            ValueError: an input has the wrong type, dtype, shape or values.
        """
        height, width = check_rgb_image("image0", image0).shape[:2]
        check_rgb_image("goal", goal)
        points = _check_points(points_px, width, height)
        if not isinstance(num_samples, (int, np.integer)) or num_samples < 1:
            raise ValueError(f"num_samples must be an int >= 1, got {num_samples!r}")
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        T = self.config.num_train_timesteps
        if sampler == "ddim" and not 1 <= steps <= T:
            raise ValueError(f"DDIM steps must be in 1..{T}, got {steps}")

        size = self.image_size
        img0_t = _to_tensor(resize_image(image0, size), self.device)  # (1, 3, S, S) uint8
        goal_t = _to_tensor(resize_image(goal, size), self.device)  # (1, 3, S, S) uint8
        p0 = torch.from_numpy(pixels_to_normalized(points, width, height)).to(self.device)
        generator = None
        if seed is not None:
            generator = torch.Generator(self.device).manual_seed(int(seed))
        samples = self.model.sample(
            img0_t,
            goal_t,
            p0[None],
            num_samples=int(num_samples),
            sampler=sampler,
            steps=steps if sampler == "ddim" else None,
            generator=generator,
        )[0]  # (K, H+1, N, 2) normalised
        samples_n = samples.cpu().numpy().astype(np.float64)
        samples_px = normalized_to_pixels(samples_n, width, height).astype(np.float32)
        # The exact query points, not a round trip through float32 normalisation.
        samples_px[:, 0] = points
        tracks_px = samples_px[_medoid(samples_n)].copy()
        confidence = self._confidence(samples_n)
        return TrackPrediction(tracks_px=tracks_px, confidence=confidence, samples_px=samples_px)

    def _confidence(self, samples: np.ndarray) -> np.ndarray:
        """Per-point agreement of normalised samples ``(K, H+1, N, 2)``, in ``[0, 1]``.

        The spread is the RMS distance of the samples from their mean, averaged over the future
        steps. With one sample there is no spread to measure and confidence is 1.
        """
        if samples.shape[0] < 2:
            return np.ones(samples.shape[2], dtype=np.float32)
        dev = samples[:, 1:] - samples[:, 1:].mean(axis=0, keepdims=True)  # (K, H, N, 2)
        spread = np.sqrt((dev**2).sum(-1).mean(0)).mean(0)  # (N,), normalised units
        spread_px = spread * self.image_size / 2.0
        return np.exp(-spread_px / self.confidence_scale_px).astype(np.float32)


def _medoid(samples: np.ndarray) -> int:
    """Index of the sample closest (mean point distance) to all others.

    A whole sample rather than a per-point mean or median: when the samples disagree on which
    way the object moves, averaging mixes the modes into a track set no rigid motion explains,
    while the medoid is one coherent hypothesis for the planner's PnP fit.
    """
    K = samples.shape[0]
    if K == 1:
        return 0
    flat = samples.reshape(K, -1, 2)  # (K, (H+1) * N, 2)
    dist = np.linalg.norm(flat[:, None] - flat[None], axis=-1).mean(-1)  # (K, K)
    return int(dist.sum(1).argmin())


# -------------------------------------------------------------------------------------------
# Coordinates and images
# -------------------------------------------------------------------------------------------


def _to_tensor(image: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))[None].to(device)


def _check_points(points_px: object, width: int, height: int) -> np.ndarray:
    points = np.asarray(points_px)
    if points.dtype.kind not in "fiu":
        raise ValueError(f"points_px must be real numbers, got dtype {points.dtype}")
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points_px must have shape (N, 2), got {points.shape}")
    if points.shape[0] == 0:
        raise ValueError("points_px is empty; need at least one query point")
    points = points.astype(np.float32)
    bad = ~np.isfinite(points).all(axis=1)
    if bad.any():
        raise ValueError(
            f"points_px has {int(bad.sum())} non-finite point(s) (NaN or inf), first at index "
            f"{int(np.flatnonzero(bad)[0])}"
        )
    outside = (
        (points[:, 0] < -0.5)
        | (points[:, 0] > width - 0.5)
        | (points[:, 1] < -0.5)
        | (points[:, 1] > height - 0.5)
    )
    if outside.any():
        i = int(np.flatnonzero(outside)[0])
        raise ValueError(
            f"points_px has {int(outside.sum())} point(s) outside the {width}x{height} image "
            f"(u in [-0.5, {width - 0.5}], v in [-0.5, {height - 0.5}]), e.g. index {i}: "
            f"{points[i].tolist()}"
        )
    return points


# -------------------------------------------------------------------------------------------
# Query points
# -------------------------------------------------------------------------------------------


def sample_query_points(
    height: int,
    width: int,
    num_points: int = 400,
    mode: str = "grid",
    mask: np.ndarray | None = None,
    seed: int | None = None,
    *,
    image0: np.ndarray | None = None,
    goal: np.ndarray | None = None,
    change_fraction: float = 0.55,
    goal_check: GoalCheck | None = None,
) -> np.ndarray:
    """Query points ``P0`` as ``(N, 2)`` float32 pixel ``(u, v)`` in a ``width x height`` image.

    Args:
        num_points: for ``"grid"`` a square number (400 = 20x20, as in the paper's code), placed
            at the centres of a regular grid of cells; for ``"random"`` and ``"change"`` the
            number of points drawn.
        mode: ``"grid"``, ``"random"`` (uniform, within ``mask`` if given) or ``"change"``:
            ``change_fraction`` of the points where ``image0`` and ``goal`` differ, the rest
            spread over the image (:mod:`t2a_perception.core.query_points`; the grid when
            nothing differs). A ``mask`` (a user's region of interest) overrides the change
            region: ``"change"`` then places the grid in the mask as ``"grid"`` does (or draws
            uniformly inside it, as ``"random"``, when ``num_points`` is not a square).
        mask: optional ``(height, width)`` bool; only points on True pixels are kept. The grid
            then returns fewer than ``num_points``; random mode still returns ``num_points``.
        seed: for ``"random"`` and ``"change"``: the same seed gives the same points.
        image0, goal: ``(H, W, 3)`` uint8 RGB ``I0`` (``height x width``) and the goal image
            (any size); needed by ``"change"`` without a mask, ignored otherwise.
        change_fraction: share of the points inside the change region in ``"change"`` mode.
        goal_check: the goal validation's result for ``(image0, goal)`` if the caller has it;
            its change region is reused instead of computed again.

    Raises:
        ValueError: bad sizes, mode, or a mask that is the wrong shape or leaves no points.
    """
    if height < 1 or width < 1:
        raise ValueError(f"image size must be positive, got {width}x{height}")
    if num_points < 1:
        raise ValueError(f"num_points must be >= 1, got {num_points}")
    if mode not in POINT_MODES:
        raise ValueError(f"unknown mode {mode!r}; expected one of {POINT_MODES}")
    if mask is not None:
        mask = np.asarray(mask)
        if mask.dtype != np.bool_ or mask.shape != (height, width):
            raise ValueError(
                f"mask must be bool ({height}, {width}), got {mask.dtype} {mask.shape}"
            )
        if not mask.any():
            raise ValueError("mask has no True pixel; no query point can be placed")

    if mode == "change" and mask is not None:  # a user's region of interest wins
        mode = "grid" if math.isqrt(num_points) ** 2 == num_points else "random"
    if mode == "change":
        if image0 is None or goal is None:
            raise ValueError("mode 'change' needs image0 and goal (or a mask)")
        if image0.shape[:2] != (height, width):
            raise ValueError(
                f"image0 is {image0.shape[1]}x{image0.shape[0]}, expected {width}x{height}"
            )
        region = change_mask(image0, goal, goal_check=goal_check)
        return sample_change_points(height, width, num_points, region, change_fraction, seed)
    if mode == "grid":
        side = math.isqrt(num_points)
        if side * side != num_points:
            raise ValueError(
                f"grid mode needs a square number of points (e.g. 400 = 20x20), got {num_points}"
            )
        u = (np.arange(side) + 0.5) * width / side - 0.5
        v = (np.arange(side) + 0.5) * height / side - 0.5
        points = np.stack(np.meshgrid(u, v, indexing="xy"), axis=-1).reshape(-1, 2)
        if mask is not None:
            cols = np.clip(np.round(points[:, 0]).astype(int), 0, width - 1)
            rows = np.clip(np.round(points[:, 1]).astype(int), 0, height - 1)
            points = points[mask[rows, cols]]
            if len(points) == 0:
                raise ValueError(
                    f"no point of the {side}x{side} grid falls inside the mask; use more points "
                    "or mode='random'"
                )
        return points.astype(np.float32)

    rng = np.random.default_rng(seed)
    if mask is None:
        points = rng.uniform((-0.5, -0.5), (width - 0.5, height - 0.5), size=(num_points, 2))
    else:
        rows, cols = np.nonzero(mask)
        pick = rng.choice(len(rows), size=num_points, replace=len(rows) < num_points)
        # Jitter within the chosen pixel so repeated picks of a small mask stay distinct.
        jitter = rng.uniform(-0.5, 0.5, size=(num_points, 2))
        points = np.stack([cols[pick], rows[pick]], axis=-1) + jitter
    return points.astype(np.float32)
