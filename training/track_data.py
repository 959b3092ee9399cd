"""Training data for the track model: ``(I0, goal, tracks)`` samples (Track2Act section 2.2).

Two sources end up as the same :class:`Clip` (frames plus pixel tracks of one manipulation):

- **sim episodes** written by ``t2a_sim.core.dataset`` (``.npz`` per episode; tracks are exact
  projections of points glued to the scene, so they are right even where the arm hides a point);
- **user videos** (``.mp4/.avi/.mov/...`` or folders of frames): cut into clips of
  ``clip_seconds`` (the paper's 4-5 s), labelled once by a :mod:`training.labelers` labeller on a
  jittered 20x20 grid (the paper's 400 points) and cached as ``.npz``.

A sample is the paper's training example: ``I0``, the goal image ``G``, and the tracks of ``p``
random points of ``I0`` at ``H + 1`` evenly spaced times, step 0 being ``P0``:

- **goal** = the clip's last frame. In sim that is after the arm has retracted, so the goal shows
  the scene as the user's goal photo would (no arm), and since nothing moves after the object
  stops, the points' final positions there are exactly those at the end of the motion.
- **times** (``time_span``): ``"clip"`` spaces the H+1 steps from I0 to the goal, as on web
  videos. ``"motion"`` (default) spaces them over the object's motion only, from the later of I0
  and the motion onset to where the last point stops: in sim, I0 precedes a few seconds of arm
  approach during which nothing moves, and those would waste most of the H steps on a pause
  whose length the images cannot tell, while the planner needs every step to describe the
  object's motion. Onset and end come from the tracks themselves (the largest point displacement
  crossing ``motion_threshold_px``), which works for any clip; on noisy labelled video the
  threshold is crossed early and late, so ``"motion"`` degrades gracefully towards ``"clip"``.
- **points**: ``p`` drawn uniformly in ``[min_points, max_points]`` (at most those available),
  among points seen in I0 (sim: ``visible`` at the start step; video: kept by the labeller).
  Sim targets keep their exact projected position at every step even when the point is hidden
  later (by the gripper, typically): the model's loss mask is per point, not per step, and
  dropping every point the hand ever covers would remove the handle and the hand-held part of
  the object, the very points the planner needs. Labelled video has no such ground truth for
  hidden points, so the labeller drops them instead.
- **augmentation**: a random I0 among ``start_frames`` frames from the start up to
  ``max_start_progress`` of the motion (the arm at different stages of its approach, or the
  object part-way), a random point subset and count, optional horizontal flip.

Coordinates follow ``t2a_perception.core.predictor``: images are stretched to the model's square
with :func:`resize_image` and pixels are normalised with :func:`pixels_to_normalized`, the exact
functions the robot-side predictor uses.

Train/validation split is by episode: a sim seed (across all tasks and splits) or a video file is
either held out entirely or not at all, decided by a hash of ``(split_seed, seed)`` so it does
not change when more episodes are generated.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import tempfile
import warnings
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from t2a_common.core.config import check, param
from t2a_common.core.images import pixels_to_normalized, resize_image
from training.labelers import TrackLabeler

SIM_SPLITS = ("MG", "G", "CG", "TG")
TIME_SPANS = ("motion", "clip")
SUBSETS = ("train", "val", "all")
VIDEO_EXTENSIONS = (".mp4", ".avi", ".mov", ".mkv", ".webm", ".m4v")
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp")
VIDEO_SPLIT = "video"
# A start frame (or a whole clip) with fewer usable points than this teaches nothing useful.
MIN_CLIP_POINTS = 8
CACHE_FORMAT = "t2a_video_tracks/1"


@dataclasses.dataclass(frozen=True)
class TrackDataConfig:
    """How clips become training samples, and how videos become clips."""

    image_size: int = param(128, "side of the square model image (px); I0 and goal resized to it")
    horizon: int = param(8, "future steps H; a sample's tracks hold H+1 steps, step 0 = P0")
    min_points: int = param(50, "fewest query points per training sample (if the clip has them)")
    max_points: int = param(400, "most query points per training sample")
    eval_points: int = param(400, "query points per validation sample (fixed subset, at most)")
    time_span: str = param("motion", f"what the H+1 steps span, one of {TIME_SPANS}")
    motion_threshold_px: float = param(
        0.5, "displacement (px, clip resolution) above which a point counts as moving"
    )
    max_start_progress: float = param(
        0.25, "latest I0, as a fraction of the way from motion onset to motion end (0 = onset)"
    )
    start_frames: int = param(8, "candidate I0 frames kept per clip, evenly spaced")
    hflip_prob: float = param(0.0, "probability of mirroring a training sample left-right")
    val_fraction: float = param(0.1, "share of sim seeds / video files held out for validation")
    split_seed: int = param(0, "seed of the train/validation assignment")
    clip_seconds: float = param(4.5, "length of the clips videos are cut into (s)")
    min_clip_seconds: float = param(2.0, "shortest leftover or whole video kept as a clip (s)")
    video_fps: float = param(15.0, "frame rate videos are labelled at (s^-1); higher is subsampled")
    frames_fps: float = param(30.0, "frame rate assumed for a folder of frames (s^-1)")
    label_max_side: int = param(320, "longest image side videos are labelled and cached at (px)")
    label_grid: int = param(20, "query points per side of the jittered labelling grid (20 = 400)")

    def __post_init__(self) -> None:
        check(self.image_size >= 32, f"image_size must be >= 32 px, got {self.image_size}")
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(
            1 <= self.min_points <= self.max_points,
            f"need 1 <= min_points <= max_points, got {self.min_points}, {self.max_points}",
        )
        check(self.eval_points >= 1, f"eval_points must be >= 1, got {self.eval_points}")
        check(
            self.time_span in TIME_SPANS,
            f"unknown time_span {self.time_span!r}; expected one of {TIME_SPANS}",
        )
        check(self.motion_threshold_px > 0, "motion_threshold_px must be > 0")
        check(
            0.0 <= self.max_start_progress < 1.0,
            f"max_start_progress must be in [0, 1), got {self.max_start_progress}",
        )
        check(self.start_frames >= 1, f"start_frames must be >= 1, got {self.start_frames}")
        check(0.0 <= self.hflip_prob <= 1.0, f"hflip_prob must be in [0, 1], got {self.hflip_prob}")
        check(
            0.0 <= self.val_fraction < 1.0,
            f"val_fraction must be in [0, 1), got {self.val_fraction}",
        )
        check(
            0 < self.min_clip_seconds <= self.clip_seconds,
            f"need 0 < min_clip_seconds <= clip_seconds, got {self.min_clip_seconds}, "
            f"{self.clip_seconds}",
        )
        check(self.video_fps > 0 and self.frames_fps > 0, "video_fps and frames_fps must be > 0")
        check(self.label_max_side >= 32, f"label_max_side must be >= 32, got {self.label_max_side}")
        check(self.label_grid >= 2, f"label_grid must be >= 2, got {self.label_grid}")


# -------------------------------------------------------------------------------------------
# Clips
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass
class Clip:
    """One manipulation, preprocessed for sampling: candidate I0 frames, goal, pixel tracks.

    Attributes:
        name: where it came from (episode file, or ``video#clip``), for messages.
        split: sim split (MG/G/CG/TG) or ``"video"``.
        task: sim task, or the video's file stem.
        seed: sim episode seed; -1 for video.
        width, height: size of the source images; ``tracks`` are pixels of that size.
        tracks: ``(T, N, 2)`` float32 pixel ``(u, v)``, finite for every point kept.
        query_ok: ``(T, N)`` bool, the point may be a query point when I0 is step ``t``.
        frames: ``(F, S, S, 3)`` uint8 candidate I0 frames at model resolution.
        frame_steps: ``(F,)`` int, the step of each candidate frame.
        goal: ``(S, S, 3)`` uint8 goal image at model resolution.
        onset, end: steps the tracks span (see ``time_span``); ``onset <= end``.
        video: for video clips, the source file relative to the video root (the unit of the
            train/validation split); empty for sim.
    """

    name: str
    split: str
    task: str
    seed: int
    width: int
    height: int
    tracks: np.ndarray
    query_ok: np.ndarray
    frames: np.ndarray
    frame_steps: np.ndarray
    goal: np.ndarray
    onset: int
    end: int
    video: str = ""


def motion_span(tracks: np.ndarray, threshold_px: float) -> tuple[int, int]:
    """``(onset, end)`` of the motion in pixel tracks ``(T, N, 2)``.

    ``onset`` is the last step before any point is more than ``threshold_px`` from its position
    at step 0; ``end`` the first step after which no point is more than that from its final
    position. A clip where nothing moves gives ``(0, T - 1)``.
    """
    T = tracks.shape[0]
    from_first = np.linalg.norm(tracks - tracks[:1], axis=-1).max(axis=1)  # (T,)
    to_last = np.linalg.norm(tracks - tracks[-1:], axis=-1).max(axis=1)  # (T,)
    moved = np.flatnonzero(from_first > threshold_px)
    if len(moved) == 0:
        return 0, T - 1
    onset = max(int(moved[0]) - 1, 0)
    still_moving = np.flatnonzero(to_last > threshold_px)
    end = min(int(still_moving[-1]) + 1, T - 1) if len(still_moving) else onset
    return onset, max(end, onset)


def make_clip(
    *,
    name: str,
    split: str,
    task: str,
    seed: int,
    frames: np.ndarray,
    frame_steps: np.ndarray,
    goal: np.ndarray,
    tracks: np.ndarray,
    query_ok: np.ndarray,
    cfg: TrackDataConfig,
    video: str = "",
) -> Clip | None:
    """Build a :class:`Clip` from source-resolution data; None if it has no usable sample.

    Args:
        frames: ``(F0, H, W, 3)`` uint8 frames available as I0, at the source resolution.
        frame_steps: ``(F0,)`` their steps (sorted).
        goal: ``(H, W, 3)`` uint8 goal frame.
        tracks: ``(T, N, 2)`` pixel tracks; points with a non-finite value anywhere are dropped.
        query_ok: ``(T, N)`` bool, may the point be a query at that step.
    """
    height, width = goal.shape[:2]
    finite = np.isfinite(tracks).all(axis=(0, 2))  # (N,)
    tracks = np.asarray(tracks[:, finite], dtype=np.float32)
    query_ok = np.asarray(query_ok[:, finite], dtype=bool)
    T = tracks.shape[0]
    if tracks.shape[1] < MIN_CLIP_POINTS or T < 2:
        return None
    if cfg.time_span == "motion":
        onset, end = motion_span(tracks, cfg.motion_threshold_px)
    else:
        onset, end = 0, T - 1
    if end == onset:  # nothing moves in "motion" mode: span the whole clip instead
        onset, end = 0, T - 1
    last_start = min(onset + math.floor(cfg.max_start_progress * (end - onset)), end - 1)
    steps = np.asarray(frame_steps)
    allowed = np.flatnonzero(
        (steps <= last_start) & (query_ok[np.clip(steps, 0, T - 1)].sum(1) >= MIN_CLIP_POINTS)
    )
    if len(allowed) == 0:
        return None
    spread = np.round(np.linspace(0, len(allowed) - 1, cfg.start_frames)).astype(int)
    pick = allowed[np.unique(spread)]
    size = cfg.image_size
    return Clip(
        name=name,
        split=split,
        task=task,
        seed=int(seed),
        width=int(width),
        height=int(height),
        tracks=tracks,
        query_ok=query_ok,
        frames=np.stack([resize_image(frames[i], size) for i in pick]),
        frame_steps=steps[pick].astype(int),
        goal=resize_image(goal, size),
        onset=int(onset),
        end=int(end),
        video=video,
    )


def interpolate_tracks(tracks: np.ndarray, times: np.ndarray) -> np.ndarray:
    """Tracks ``(T, N, 2)`` at fractional steps ``times (K,)`` by linear interpolation."""
    lo = np.clip(np.floor(times).astype(int), 0, tracks.shape[0] - 1)
    hi = np.clip(lo + 1, 0, tracks.shape[0] - 1)
    w = (times - lo).astype(np.float32)[:, None, None]
    return tracks[lo] * (1.0 - w) + tracks[hi] * w


# -------------------------------------------------------------------------------------------
# Dataset
# -------------------------------------------------------------------------------------------


class TrackDataset(Dataset):
    """Samples ``{"image0", "goal", "tracks", "image_wh", "clip"}`` from a list of clips.

    Args:
        clips: the clips (see :func:`load_sim_clips`, :func:`load_video_clips`).
        cfg: sampling settings.
        augment: random I0, point count and subset (and flip); False gives one fixed sample
            per clip (first candidate I0, the same ``eval_points`` subset every time), for
            validation and statistics.
        seed: with ``augment``, sample ``i`` of epoch ``e`` depends only on ``(seed, e, i)``,
            whichever worker process draws it.
        repeat: the dataset lists each clip this many times per epoch (each a fresh sample), so
            a small dataset still fills an epoch of whole batches.

    Items: ``image0``/``goal`` ``(3, S, S)`` uint8, ``tracks`` ``(H+1, N, 2)`` float32
    normalised (step 0 = P0), ``image_wh`` ``(2,)`` float32 source size in px, ``clip`` int.
    """

    def __init__(
        self,
        clips: Sequence[Clip],
        cfg: TrackDataConfig,
        augment: bool = True,
        seed: int = 0,
        repeat: int = 1,
    ) -> None:
        if repeat < 1:
            raise ValueError(f"repeat must be >= 1, got {repeat}")
        self.clips = list(clips)
        self.cfg = cfg
        self.augment = augment
        self.seed = int(seed)
        self.repeat = int(repeat)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's random draws; call before iterating (DataLoader workers copy it)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return len(self.clips) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        clip_index = index % len(self.clips)
        image0, goal, tracks, wh = self.sample_arrays(self.clips[clip_index], self._rng(index))
        return {
            "image0": torch.from_numpy(np.ascontiguousarray(image0.transpose(2, 0, 1))),
            "goal": torch.from_numpy(np.ascontiguousarray(goal.transpose(2, 0, 1))),
            "tracks": torch.from_numpy(tracks),
            "image_wh": torch.tensor(wh, dtype=torch.float32),
            "clip": torch.tensor(clip_index),
        }

    def _rng(self, index: int) -> np.random.Generator:
        if self.augment:
            return np.random.default_rng([self.seed, self.epoch, index])
        return np.random.default_rng([self.cfg.split_seed, index % len(self.clips)])

    def sample_arrays(
        self, clip: Clip, rng: np.random.Generator
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[int, int]]:
        """``(image0 (S, S, 3), goal (S, S, 3), tracks (H+1, N, 2) normalised, (W, H))``."""
        cfg = self.cfg
        f = int(rng.integers(len(clip.frame_steps))) if self.augment else 0
        start = int(clip.frame_steps[f])
        times = np.linspace(max(start, clip.onset), clip.end, cfg.horizon + 1)
        tracks = interpolate_tracks(clip.tracks, times)  # (H+1, N, 2)
        # P0 is where the points are in I0; before the onset that equals the onset positions
        # to within the motion threshold, and this makes step 0 exact.
        tracks[0] = clip.tracks[start]
        candidates = np.flatnonzero(clip.query_ok[start])
        if self.augment:
            n = int(rng.integers(cfg.min_points, cfg.max_points + 1))
        else:
            n = cfg.eval_points
        chosen = np.sort(rng.choice(candidates, size=min(n, len(candidates)), replace=False))
        tracks_n = pixels_to_normalized(tracks[:, chosen], clip.width, clip.height)
        image0, goal = clip.frames[f], clip.goal
        if self.augment and cfg.hflip_prob > 0 and rng.random() < cfg.hflip_prob:
            # Under the pixel-centre convention a mirror maps x to exactly -x.
            image0, goal = image0[:, ::-1], goal[:, ::-1]
            tracks_n = tracks_n * np.array([-1.0, 1.0], dtype=np.float32)
        return image0, goal, np.ascontiguousarray(tracks_n), (clip.width, clip.height)

    def fixed_samples(self) -> tuple[np.ndarray, np.ndarray]:
        """Tracks of the non-augmented sample of every clip, padded: ``(C, H+1, N, 2)``, mask.

        What statistics (``TrackStats``, the constant-velocity baseline) are computed from.
        """
        plain = TrackDataset(self.clips, self.cfg, augment=False)
        tracks = [plain.sample_arrays(c, plain._rng(i))[2] for i, c in enumerate(self.clips)]
        n_max = max(t.shape[1] for t in tracks)
        out = np.zeros((len(tracks), self.cfg.horizon + 1, n_max, 2), dtype=np.float32)
        mask = np.zeros((len(tracks), n_max), dtype=bool)
        for i, t in enumerate(tracks):
            out[i, :, : t.shape[1]] = t
            mask[i, : t.shape[1]] = True
        return out, mask


def collate_tracks(items: Sequence[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack samples with different point counts: pads ``tracks`` and adds ``mask (B, N)``.

    Padded points repeat the sample's first point rather than zeros so that every token the
    model sees is a plausible point; the mask keeps them out of the attention and the loss.
    """
    n_max = max(item["tracks"].shape[1] for item in items)
    tracks, masks = [], []
    for item in items:
        t = item["tracks"]
        n = t.shape[1]
        if n < n_max:
            t = torch.cat([t, t[:, :1].expand(-1, n_max - n, -1)], dim=1)
        tracks.append(t)
        mask = torch.zeros(n_max, dtype=torch.bool)
        mask[:n] = True
        masks.append(mask)
    out = {key: torch.stack([item[key] for item in items]) for key in items[0] if key != "tracks"}
    out["tracks"] = torch.stack(tracks)  # (B, H+1, N, 2)
    out["mask"] = torch.stack(masks)  # (B, N)
    return out


# -------------------------------------------------------------------------------------------
# Train / validation split
# -------------------------------------------------------------------------------------------


def _unit_hash(*parts: object) -> float:
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def held_out_keys(keys: Iterable[Any], val_fraction: float, split_seed: int) -> set[Any]:
    """Which of ``keys`` (sim seeds or video names) are validation.

    A key is held out when its hash falls below ``val_fraction``, independently of the other
    keys, so generating more episodes never moves one across. Only when that leaves an end
    empty on a tiny dataset (both ends need at least one key) is the assignment topped up.
    """
    keys = sorted(set(keys), key=str)
    if val_fraction <= 0 or len(keys) < 2:
        return set()
    score = {k: _unit_hash(split_seed, k) for k in keys}
    val = {k for k in keys if score[k] < val_fraction}
    if not val:
        val = {min(keys, key=score.__getitem__)}
    if len(val) == len(keys):
        val.discard(max(keys, key=score.__getitem__))
    return val


# -------------------------------------------------------------------------------------------
# Sim episodes
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class EpisodeRef:
    """An episode file and what its index says about it."""

    path: Path
    split: str
    task: str
    seed: int


def find_sim_episodes(roots: Iterable[str | Path], splits: Iterable[str] = ()) -> list[EpisodeRef]:
    """Episodes under dataset directories (``index.json``, else ``*/*/*.npz`` with metadata).

    ``splits`` filters by sim split (empty = all).
    """
    wanted = set(splits)
    unknown = wanted - set(SIM_SPLITS)
    if unknown:
        raise ValueError(f"unknown split(s) {sorted(unknown)}; expected some of {SIM_SPLITS}")
    refs: list[EpisodeRef] = []
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"sim dataset directory {root} does not exist")
        index = root / "index.json"
        if index.is_file():
            entries = json.loads(index.read_text())["episodes"]
            for e in entries:
                refs.append(EpisodeRef(root / e["file"], e["split"], e["task"], int(e["seed"])))
        else:
            for path in sorted(root.glob("*/*/*.npz")):
                meta_path = path.with_suffix(".json")
                if not meta_path.is_file():  # unfinished episode
                    continue
                meta = json.loads(meta_path.read_text())
                refs.append(EpisodeRef(path, meta["split"], meta["task"], int(meta["seed"])))
    if not refs:
        raise FileNotFoundError(
            f"no sim episodes found under {[str(r) for r in roots]} (expected index.json or "
            "<split>/<task>/<seed>.npz files written by t2a_sim.core.dataset)"
        )
    return [r for r in refs if not wanted or r.split in wanted]


def select_episodes(
    refs: Sequence[EpisodeRef],
    subset: str,
    cfg: TrackDataConfig,
    train_splits: Iterable[str] | None = None,
) -> list[EpisodeRef]:
    """The ``subset`` (``train``, ``val``, ``all``) of ``refs`` under the seed-level split.

    With ``train_splits`` (for evaluation), episodes of splits the model never trained on are
    all held out, so ``val`` includes them whatever their seed.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    if subset == "all":
        return list(refs)
    val_seeds = held_out_keys((r.seed for r in refs), cfg.val_fraction, cfg.split_seed)
    trained = set(train_splits or ())  # empty = trained on every split

    def is_val(r: EpisodeRef) -> bool:
        return r.seed in val_seeds or (bool(trained) and r.split not in trained)

    return [r for r in refs if is_val(r) == (subset == "val")]


def load_sim_clip(ref: EpisodeRef, cfg: TrackDataConfig) -> Clip | None:
    """Read one episode ``.npz`` (only the arrays needed) into a :class:`Clip`."""
    with np.load(ref.path) as z:
        rgb = z["rgb"]  # (T, H, W, 3)
        tracks = z["tracks"].astype(np.float32)  # (T, N, 2)
        visible = z["visible"].astype(bool)  # (T, N)
        depth_ok = (z["track_depth"] > 0).all(axis=0) if "track_depth" in z.files else True
    # A point behind the camera has a meaningless projection: not a usable target anywhere.
    ok = np.isfinite(tracks).all(axis=(0, 2)) & depth_ok  # (N,)
    tracks[:, ~ok] = np.nan
    return make_clip(
        name=str(ref.path),
        split=ref.split,
        task=ref.task,
        seed=ref.seed,
        frames=rgb,
        frame_steps=np.arange(rgb.shape[0]),
        goal=rgb[-1],
        tracks=tracks,
        query_ok=visible,
        cfg=cfg,
    )


def load_sim_clips(
    refs: Sequence[EpisodeRef], cfg: TrackDataConfig, workers: int = 4
) -> list[Clip]:
    """Load episodes in parallel threads (decompression and resizing release the GIL)."""
    with ThreadPoolExecutor(max(1, workers)) as pool:
        clips = list(pool.map(lambda r: load_sim_clip(r, cfg), refs))
    dropped = [str(r.path) for r, c in zip(refs, clips) if c is None]
    if dropped:
        warnings.warn(
            f"{len(dropped)} sim episode(s) have no usable sample (fewer than {MIN_CLIP_POINTS} "
            f"visible points), skipped: {dropped[:3]}",
            stacklevel=2,
        )
    return [c for c in clips if c is not None]


# -------------------------------------------------------------------------------------------
# User videos
# -------------------------------------------------------------------------------------------


def find_videos(root: str | Path) -> list[Path]:
    """Video files and frame folders (directories holding images) under ``root``, sorted."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"video directory {root} does not exist")
    found: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        names = sorted(filenames)
        found += [Path(dirpath) / n for n in names if n.lower().endswith(VIDEO_EXTENSIONS)]
        if sum(n.lower().endswith(IMAGE_EXTENSIONS) for n in names) >= 2:
            found.append(Path(dirpath))
    return sorted(found)


def _frame_source(path: Path, cfg: TrackDataConfig) -> tuple[Iterator[np.ndarray], float]:
    """Iterator over a video's RGB frames, and its frame rate."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.name.lower().endswith(IMAGE_EXTENSIONS))

        def read_folder() -> Iterator[np.ndarray]:
            for f in files:
                bgr = cv2.imread(str(f), cv2.IMREAD_COLOR)
                if bgr is None:
                    raise ValueError(f"cannot read image {f}")
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

        return read_folder(), cfg.frames_fps
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise ValueError(f"cannot open video {path} with OpenCV")
    fps = cap.get(cv2.CAP_PROP_FPS)
    if not (fps and math.isfinite(fps) and fps > 0):
        fps = 30.0  # some containers do not say; 30 is the common default

    def read_video() -> Iterator[np.ndarray]:
        try:
            while True:
                ok, bgr = cap.read()
                if not ok:
                    return
                yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        finally:
            cap.release()

    return read_video(), float(fps)


def iter_video_clips(path: Path, cfg: TrackDataConfig) -> Iterator[tuple[int, np.ndarray, float]]:
    """Cut a video into clips: yields ``(clip index, frames (T, h, w, 3) uint8 RGB, fps)``.

    Frames are resampled in time to at most ``video_fps`` and shrunk to ``label_max_side``; only
    one clip is in memory at a time, so hour-long videos are fine.
    """
    frames_in, src_fps = _frame_source(path, cfg)
    fps = min(src_fps, cfg.video_fps)
    per_clip = round(cfg.clip_seconds * fps) + 1
    min_frames = round(cfg.min_clip_seconds * fps) + 1
    buffer: list[np.ndarray] = []
    next_time = 0.0
    index = 0
    for i, frame in enumerate(frames_in):
        if i / src_fps + 1e-9 < next_time:
            continue
        next_time += 1.0 / fps
        h, w = frame.shape[:2]
        scale = cfg.label_max_side / max(h, w)
        if scale < 1.0:
            size = (max(1, round(w * scale)), max(1, round(h * scale)))
            frame = cv2.resize(frame, size, interpolation=cv2.INTER_AREA)
        buffer.append(frame)
        if len(buffer) == per_clip:
            yield index, np.stack(buffer), fps
            index += 1
            buffer = []
    if len(buffer) >= max(min_frames, 2):
        yield index, np.stack(buffer), fps


def grid_points(width: int, height: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """``side x side`` query points, one at a random spot in the middle of each grid cell.

    A jittered grid rather than a fixed one: the paper randomises query locations so that any
    point can be asked about at test time, and the grid still covers the whole image.
    """
    cells = np.stack(np.meshgrid(np.arange(side), np.arange(side), indexing="xy"), -1)
    frac = cells.reshape(-1, 2) + rng.uniform(0.2, 0.8, size=(side * side, 2))
    return (frac * np.array([width / side, height / side]) - 0.5).astype(np.float32)


def _video_key(path: Path, root: Path, cfg: TrackDataConfig, labeler: TrackLabeler) -> str:
    stat = path.stat()
    settings = (
        cfg.clip_seconds,
        cfg.min_clip_seconds,
        cfg.video_fps,
        cfg.frames_fps,
        cfg.label_max_side,
        cfg.label_grid,
    )
    text = f"{path.relative_to(root)}|{stat.st_size}|{stat.st_mtime_ns}|{settings}|"
    return hashlib.sha1((text + labeler.cache_key).encode()).hexdigest()[:20]


def _atomic_savez(path: Path, **arrays: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".npz.tmp")
    os.close(fd)
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)
    os.replace(tmp, path)


def label_videos(
    root: str | Path,
    cfg: TrackDataConfig,
    labeler: TrackLabeler,
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[Path]:
    """Label every clip of every video under ``root`` (or reuse the cache); returns clip files.

    A video's clips are recorded in a manifest ``<key>.json`` once all are labelled, where the
    key hashes the file (path, size, mtime), the clip settings and the labeller's settings, so
    editing any of those relabels and an interrupted run resumes with the next video. The cache
    defaults to ``root/.t2a_track_cache``.
    """
    from tqdm import tqdm

    root = Path(root)
    cache = Path(cache_dir) if cache_dir else root / ".t2a_track_cache"
    cache.mkdir(parents=True, exist_ok=True)
    files: list[Path] = []
    for video in tqdm(find_videos(root), desc="labelling videos", disable=not progress):
        key = _video_key(video, root, cfg, labeler)
        manifest = cache / f"{key}.json"
        if manifest.is_file():
            files += [cache / name for name in json.loads(manifest.read_text())["clips"]]
            continue
        names = []
        try:
            for index, frames, fps in iter_video_clips(video, cfg):
                # Seeded by the video's name, not its cache key: the key holds the file's mtime,
                # and query points that changed with every copy of a file made labels (and the
                # tests that judge them) differ from run to run.
                name_seed = hashlib.sha1(str(video.relative_to(root)).encode()).hexdigest()[:8]
                rng = np.random.default_rng([int(name_seed, 16), index])
                h, w = frames.shape[1:3]
                points = grid_points(w, h, cfg.label_grid, rng)
                tracks, valid = labeler.label(frames, points)
                # Keep every frame that can be an I0 under any start setting (the first half),
                # thinned to at most 16, plus the goal: the cache outlives sampling settings.
                candidates = np.arange((len(frames) + 1) // 2)
                keep = np.unique(np.round(np.linspace(0, len(candidates) - 1, 16)).astype(int))
                steps = np.unique(np.append(candidates[keep], len(frames) - 1))
                name = f"{key}_{index:04d}.npz"
                _atomic_savez(
                    cache / name,
                    format=np.asarray(CACHE_FORMAT),
                    source=np.asarray(str(video.relative_to(root))),
                    clip_index=np.asarray(index),
                    fps=np.asarray(fps),
                    frames=frames[steps],
                    frame_steps=steps,
                    tracks=tracks.astype(np.float32),
                    valid=valid,
                )
                names.append(name)
        except ValueError as exc:
            warnings.warn(f"skipping video {video}: {exc}", stacklevel=2)
            continue
        manifest.write_text(json.dumps({"source": str(video), "clips": names}, indent=1))
        files += [cache / n for n in names]
    return files


def load_video_clip(path: Path, cfg: TrackDataConfig) -> Clip | None:
    """A cached labelled clip as a :class:`Clip` (goal = its last frame)."""
    with np.load(path) as z:
        frames, steps = z["frames"], z["frame_steps"]
        tracks, valid = z["tracks"], z["valid"].astype(bool)
        source, index = str(z["source"]), int(z["clip_index"])
    tracks = tracks.astype(np.float32).copy()
    tracks[:, ~valid] = np.nan
    T = tracks.shape[0]
    return make_clip(
        name=f"{source}#{index}",
        split=VIDEO_SPLIT,
        task=Path(source).stem,
        seed=-1,
        frames=frames[:-1] if steps[-1] == T - 1 else frames,
        frame_steps=steps[:-1] if steps[-1] == T - 1 else steps,
        goal=frames[-1],
        tracks=tracks,
        query_ok=np.broadcast_to(valid, (T, len(valid))),
        cfg=cfg,
        video=source,
    )


def load_video_clips(
    root: str | Path,
    cfg: TrackDataConfig,
    labeler: TrackLabeler,
    subset: str = "train",
    cache_dir: str | Path | None = None,
    progress: bool = False,
) -> list[Clip]:
    """Label (or reuse) and load the ``subset`` of a video folder; held out per video file."""
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    files = label_videos(root, cfg, labeler, cache_dir, progress)
    clips = [c for c in (load_video_clip(f, cfg) for f in files) if c is not None]
    if subset == "all":
        return clips
    val = held_out_keys({c.video for c in clips}, cfg.val_fraction, cfg.split_seed)
    return [c for c in clips if (c.video in val) == (subset == "val")]
