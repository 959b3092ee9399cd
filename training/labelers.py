"""Point-track labellers: ground-truth tracks for user videos, where no simulator knows them.

A labeller takes the frames of one clip and query points on its first frame and returns every
point's position in every frame, plus which points it trusts. The training data keeps only the
trusted points, so a labeller should drop rather than guess.

- :class:`LucasKanadeLabeler` needs nothing beyond OpenCV: pyramidal Lucas-Kanade from frame to
  frame, with a forward-backward check. Good on textured, slowly moving surfaces; it loses points
  on occlusion and fast motion (and says so), so labelled clips keep fewer points than CoTracker
  would give.
- :class:`CoTrackerLabeler` is the paper's choice (Track2Act used CoTracker [11] on 400k clips).
  It is not a dependency of this workspace; users who have it installed (``pip install
  git+https://github.com/facebookresearch/co-tracker``, or ``torch.hub`` with internet access)
  select it with ``--labeler cotracker``.
"""

from __future__ import annotations

import dataclasses
import json
from typing import Any, Protocol, runtime_checkable

import cv2
import numpy as np


@runtime_checkable
class TrackLabeler(Protocol):
    """What the video dataset needs from a point tracker."""

    @property
    def cache_key(self) -> str:
        """Name and settings, as a string: a labelled clip is cached under it, so labels made
        with other settings are never mistaken for these."""
        ...

    def label(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Track ``points`` through ``frames``.

        Args:
            frames: ``(T, H, W, 3)`` uint8 RGB, T >= 2.
            points: ``(N, 2)`` float pixel ``(u, v)`` on ``frames[0]`` (pixel-centre origin).

        Returns:
            ``tracks (T, N, 2)`` float32 pixels with ``tracks[0] == points``, and ``valid (N,)``
            bool: the point was followed reliably through the whole clip and stayed in view.
        """
        ...


def _check_inputs(frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(
            f"frames must be (T, H, W, 3) uint8 RGB, got {frames.dtype} {frames.shape}"
        )
    if frames.shape[0] < 2:
        raise ValueError(f"need at least 2 frames to track, got {frames.shape[0]}")
    points = np.asarray(points, dtype=np.float32)
    if points.ndim != 2 or points.shape[1] != 2:
        raise ValueError(f"points must be (N, 2) pixel (u, v), got {points.shape}")
    return frames, points


def _inside(points: np.ndarray, width: int, height: int, margin: float) -> np.ndarray:
    return (
        (points[:, 0] >= margin)
        & (points[:, 0] <= width - 1 - margin)
        & (points[:, 1] >= margin)
        & (points[:, 1] <= height - 1 - margin)
    )


@dataclasses.dataclass(frozen=True)
class LucasKanadeLabeler:
    """OpenCV pyramidal Lucas-Kanade, frame to frame, with a forward-backward consistency check.

    Each step tracks the points from frame ``t`` to ``t + 1`` and then back; a point whose
    round trip misses its start by more than ``fb_threshold_px``, whose solver reports failure,
    whose patch at ``t + 1`` no longer looks like the one at ``t`` (normalised cross-correlation
    below ``min_ncc``), or that comes within ``border_px`` of the image edge is invalid from then
    on. The appearance test is there because the round trip alone passes a point that an
    occluder covers: on unrelated texture LK hardly moves either way, so the trip is short and
    consistent, and wrong. Frame-to-frame
    rather than frame-0-to-frame-t because appearance changes over a clip (rotation, shading)
    quickly break a fixed template, while consecutive frames stay similar; the price is drift,
    which the per-step check bounds but does not remove.
    """

    win_size: int = 21  # px, side of the matching window at each pyramid level
    max_level: int = 3  # pyramid levels above the full image; motion up to ~win * 2^level / 2 px
    fb_threshold_px: float = 1.0  # px, largest forward-backward round-trip error kept
    border_px: float = 2.0  # px, points closer than this to an edge count as having left
    max_iterations: int = 30
    epsilon: float = 0.01  # px, LK stops when an update is smaller than this
    min_eigen_threshold: float = 1e-4  # OpenCV's flat-patch test; textureless windows fail it
    min_ncc: float = 0.8  # patch correlation between consecutive frames; -1 disables the test
    ncc_patch: int = 15  # px, side of the patch the correlation compares

    def __post_init__(self) -> None:
        if self.win_size < 3 or self.win_size % 2 == 0:
            raise ValueError(f"win_size must be an odd number >= 3, got {self.win_size}")
        if self.max_level < 0:
            raise ValueError(f"max_level must be >= 0, got {self.max_level}")
        if not self.fb_threshold_px > 0:
            raise ValueError(f"fb_threshold_px must be > 0, got {self.fb_threshold_px}")
        if self.border_px < 0:
            raise ValueError(f"border_px must be >= 0, got {self.border_px}")
        if not -1.0 <= self.min_ncc <= 1.0:
            raise ValueError(f"min_ncc must be in [-1, 1], got {self.min_ncc}")
        if self.ncc_patch < 3:
            raise ValueError(f"ncc_patch must be >= 3, got {self.ncc_patch}")

    @property
    def cache_key(self) -> str:
        return "lk:" + json.dumps(dataclasses.asdict(self), sort_keys=True)

    def label(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        frames, points = _check_inputs(frames, points)
        T, height, width = frames.shape[:3]
        gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
        params: dict[str, Any] = {
            "winSize": (self.win_size, self.win_size),
            "maxLevel": self.max_level,
            "criteria": (
                cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT,
                self.max_iterations,
                self.epsilon,
            ),
            "minEigThreshold": self.min_eigen_threshold,
        }
        tracks = np.empty((T, len(points), 2), dtype=np.float32)
        tracks[0] = points
        valid = _inside(points, width, height, self.border_px)
        if len(points) == 0:
            return tracks, valid
        for t in range(T - 1):
            prev = np.ascontiguousarray(tracks[t]).reshape(-1, 1, 2)
            nxt, status, _ = cv2.calcOpticalFlowPyrLK(gray[t], gray[t + 1], prev, None, **params)
            back, status_b, _ = cv2.calcOpticalFlowPyrLK(gray[t + 1], gray[t], nxt, None, **params)
            nxt = nxt.reshape(-1, 2)
            fb_error = np.linalg.norm(back.reshape(-1, 2) - tracks[t], axis=1)
            ok = (
                (status.ravel() == 1)
                & (status_b.ravel() == 1)
                & np.isfinite(nxt).all(axis=1)
                & (fb_error <= self.fb_threshold_px)
                & _inside(nxt, width, height, self.border_px)
            )
            if self.min_ncc > -1.0:
                ok &= self._ncc(gray[t], tracks[t], gray[t + 1], nxt) >= self.min_ncc
            valid &= ok
            # A lost point is frozen where it was last seen: its later values are never used for
            # training, but a finite array keeps every consumer free of NaN handling.
            tracks[t + 1] = np.where(valid[:, None], nxt, tracks[t])
        return tracks, valid

    def _ncc(
        self, image_a: np.ndarray, points_a: np.ndarray, image_b: np.ndarray, points_b: np.ndarray
    ) -> np.ndarray:
        """Normalised cross-correlation ``(N,)`` of the sub-pixel patches around each point."""
        patch_a = _patches(image_a, points_a, self.ncc_patch)  # (N, P*P)
        patch_b = _patches(image_b, np.nan_to_num(points_b), self.ncc_patch)
        patch_a -= patch_a.mean(axis=1, keepdims=True)
        patch_b -= patch_b.mean(axis=1, keepdims=True)
        denom = np.sqrt((patch_a**2).sum(1) * (patch_b**2).sum(1))
        # A flat patch has no correlation to speak of; LK's eigenvalue test rejects those anyway.
        return np.where(denom > 1e-6, (patch_a * patch_b).sum(1) / np.maximum(denom, 1e-6), 0.0)


def _patches(image: np.ndarray, points: np.ndarray, size: int) -> np.ndarray:
    """Bilinear ``size x size`` patches centred on ``points (N, 2)``: ``(N, size * size)`` float32.

    One ``cv2.remap`` over a stacked sampling grid instead of a ``getRectSubPix`` call per point.
    """
    offsets = np.arange(size, dtype=np.float32) - (size - 1) / 2.0
    map_x = points[:, 0, None, None] + offsets[None, None, :]  # (N, 1, P)
    map_y = points[:, 1, None, None] + offsets[None, :, None]  # (N, P, 1)
    map_x, map_y = np.broadcast_arrays(map_x, map_y)  # (N, P, P) each
    n = len(points)
    sampled = cv2.remap(
        image.astype(np.float32),
        np.ascontiguousarray(map_x.reshape(n * size, size), dtype=np.float32),
        np.ascontiguousarray(map_y.reshape(n * size, size), dtype=np.float32),
        interpolation=cv2.INTER_LINEAR,
        borderMode=cv2.BORDER_REPLICATE,
    )
    return sampled.reshape(n, size * size)


class CoTrackerLabeler:
    """CoTracker (Karaev et al.) as a labeller, for users who have it; not installed here.

    Args:
        model: a loaded CoTracker predictor, e.g.
            ``torch.hub.load("facebookresearch/co-tracker", "cotracker3_offline")``; called as
            ``model(video (1, T, 3, H, W) float 0..255, queries=(1, N, 3) (t, u, v))`` and
            returning ``(tracks (1, T, N, 2), visibility (1, T, N))``.
            None = load that hub model on first use (needs internet or a hub cache).
        device: torch device for the model.
        min_visible_fraction: a point is kept when CoTracker sees it in at least this share of
            the frames and in the last one; its occluded positions are CoTracker's estimates,
            which is what the paper trained on.
    """

    def __init__(
        self,
        model: Any | None = None,
        device: str = "cuda",
        hub_name: str = "cotracker3_offline",
        min_visible_fraction: float = 0.5,
    ) -> None:
        self._model = model
        self.device = device
        self.hub_name = hub_name
        self.min_visible_fraction = float(min_visible_fraction)

    @property
    def cache_key(self) -> str:
        return f"cotracker:{self.hub_name}:{self.min_visible_fraction}"

    def _load(self) -> Any:
        if self._model is None:
            import torch

            try:
                self._model = torch.hub.load("facebookresearch/co-tracker", self.hub_name)
            except Exception as exc:  # hub errors come in many types; all mean "not available"
                raise RuntimeError(
                    f"could not load CoTracker ({self.hub_name}) from torch.hub: {exc}. Install "
                    "it (pip install git+https://github.com/facebookresearch/co-tracker) and pass "
                    "the loaded model, or use --labeler lk"
                ) from exc
            self._model = self._model.to(self.device).eval()
        return self._model

    def label(self, frames: np.ndarray, points: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        import torch

        frames, points = _check_inputs(frames, points)
        model = self._load()
        video = torch.from_numpy(frames).permute(0, 3, 1, 2)[None].float().to(self.device)
        queries = np.concatenate([np.zeros((len(points), 1), np.float32), points], axis=1)
        with torch.no_grad():
            tracks, visibility = model(video, queries=torch.from_numpy(queries)[None].to(video))
        tracks = tracks[0].float().cpu().numpy().astype(np.float32)  # (T, N, 2)
        visible = visibility[0].cpu().numpy().astype(bool).reshape(tracks.shape[:2])  # (T, N)
        height, width = frames.shape[1:3]
        tracks[0] = points
        valid = (
            (visible.mean(axis=0) >= self.min_visible_fraction)
            & visible[-1]
            & np.isfinite(tracks).all(axis=(0, 2))
            & _inside(tracks[-1], width, height, 0.0)
        )
        return tracks, valid


LABELERS = ("lk", "cotracker")


def make_labeler(name: str, **kwargs: Any) -> TrackLabeler:
    """Labeller by its CLI name (one of :data:`LABELERS`)."""
    if name == "lk":
        return LucasKanadeLabeler(**kwargs)
    if name == "cotracker":
        return CoTrackerLabeler(**kwargs)
    raise ValueError(f"unknown labeler {name!r}; expected one of {LABELERS}")
