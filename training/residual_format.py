"""The residual policy's demonstration files and the torch dataset over them.

Demonstrations are recorded by :mod:`training.residual_demos` (simulation) and
``training/bag_to_demos.py`` (teleoperation bags); ``training/residual_data.py`` writes a demo set.
:class:`DemoConfig` (how demos are generated) is stored in every demo and in the index.

Layout of a demo directory ``OUT``::

    OUT/index.json                              every finished demo, plus the DemoConfig used
    OUT/<split>/<task>/<seed>_<variant>.npz     one demo (seed 6 digits, variant 2 digits)
    OUT/<split>/<task>/<seed>_<variant>.json    its metadata; its presence marks it finished

A demo ``.npz`` (``numpy.load``; T recorded ticks, N tracked points, H x W camera images, H+1
plan steps; poses are ``T_body_tool`` / ``T_body_part`` in the body frame, metres):

=====================  ======================  ===============================================
key                    shape / dtype           meaning
=====================  ======================  ===============================================
rgb                    (T, H, W, 3) uint8      the camera frame I_t of each tick ("image")
step                   (T,) int16              plan step the controller passed ("step")
hand                   (T, 4, 4) float64       measured hand pose at the tick ("ee_pose")
state                  (T,) int8               controller state (index into controller.STATES)
time                   (T,) float64            sim time of the tick (s)
executed_share         (T,) float32            share of the label the demonstrator executed
                                               (1 unless DART, see OraclePolicy)
goal_rgb               (H, W, 3) uint8         goal image G (the expert's final frame)
tracks_px              (H+1, N, 2) float32     ground-truth tracks of P0, pixels at W x H
track_on_object        (N,) bool               point lies on the moved part
tracks_depth_m         (N,) float32            depth of P0 in I0 (m, NaN = none), as PointTracks
intrinsics             (6,) float64            width, height, fx, fy, cx, cy of I0 and the tracks
T_body_cam             (4, 4) float64          the camera calibration the stack believes (nominal)
plan_poses             (H+1, 4, 4) float64     the executed (perturbed) open-loop plan a_bar_k
plan_times             (H+1,) float64          when the plan reaches each step (s from start)
plan_pregrasp          (4, 4) float64          its pre-grasp pose
grasp_step             () int64                plan step at which the gripper closes
clean_plan_poses       (H+1, 4, 4) float64     the plan before the injected noise
expert_poses           (H+1, 4, 4) float64     the labels a*_k (see above)
expert_gripper_closed  (H+1,) float64          gripper label per plan step, 1 = closed
object_poses           (H+1, 4, 4) float64     true pose of the moved part at t_k
success                () bool                 the task's success test after the episode
meta                   () str                  JSON: task, split, seed, variant, noise drawn,
                                               outcome, DemoConfig
=====================  ======================  ===============================================

The torch side (:class:`ResidualDataset`, :func:`collate_residual`) turns every recorded tick
into one sample holding exactly the batch ``ResidualPolicy.compute_loss`` expects, prepared the
way ``PolicyRunner`` prepares an observation (same resize, same point selection, same plan and
gripper tokens).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from collections.abc import Iterable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from t2a_bringup.core.episode import (
    EpisodeConfig,
)
from t2a_common.core.config import check, from_dict, param, to_dict
from t2a_common.core.geometry import Intrinsics
from t2a_common.core.images import pixels_to_normalized, resize_image
from t2a_control.core.controller import ControllerConfig
from t2a_control.core.policy import (
    PolicyConfig,
    action_chunks,
    action_targets,
    residual_targets,
)
from t2a_control.core.policy_runtime import points_in_body, select_points
from t2a_sim.core.config import SimConfig
from t2a_sim.core.dataset import save_episode
from t2a_sim.core.scene import camera_pose, optical_from_mjcam
from t2a_sim.core.tasks import SPLITS
from training.track_data import held_out_keys

FORMAT = "t2a_residual_demo/1"
SUBSETS = ("train", "val", "all")


# -------------------------------------------------------------------------------------------
# Configuration
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoConfig:
    """How demonstrations are generated (stored in every demo's metadata and in the index)."""

    width: int = param(320, "camera width (px) of I_t, the goal and the tracks")
    height: int = param(240, "camera height (px)")
    horizon: int = param(8, "track/plan steps H after P0 (must equal the policy's horizon)")
    num_points: int = param(400, "query points P0 of the ground-truth tracks")
    object_fraction: float = param(0.5, "share of P0 sampled on the moved part")
    max_time_s: float = param(60.0, "sim time after which a demo stops (s)")
    clean_fraction: float = param(0.2, "share of demos executed on the unperturbed plan (1)")
    grasp_offset_max_m: float = param(
        0.03, "injected grasp error: tool-frame offset of uniform direction, length U(0, max) (m)"
    )
    grasp_rotation_max_rad: float = param(
        0.15, "injected grasp error: tool-frame rotation of uniform axis, angle U(0, max) (rad)"
    )
    step_noise_m: float = param(0.004, "std of independent per-step plan position noise (m)")
    step_noise_rad: float = param(0.02, "std per axis of independent per-step rotation noise (rad)")
    expert_grasp_turn_rad: float = param(
        0.0,
        "the labels' grasp orientation turns from the clean plan's towards the expert's by at "
        "most this (rad); 0 keeps the plan's orientation (see the module docstring)",
    )
    plan_attempts: int = param(
        5, "noise draws tried until every perturbed pose is reachable; then the clean plan (1)"
    )
    model_plan_fraction: float = param(
        0.0,
        "share of variants whose open-loop plan comes from the track model's predicted tracks "
        "(what the robot executes) instead of the ground truth; the policy then also sees the "
        "predicted tracks. A variant whose predicted plan fails is recorded as failed (1)",
    )
    track_checkpoint: str = param(
        "", "track model of model plans ('' = the shipped default, t2a_perception/models)"
    )
    dart_fraction: float = param(
        0.7,
        "share of variants whose demonstrator executes its correction late (DART; noise too "
        "with dart_noise_*): the recorded labels stay exact, the recorded states include "
        "hands a learned policy has not corrected yet (1)",
    )
    dart_rate: float = param(
        0.5,
        "DART: per policy call (once a tick, twice on a tick that changes state), the executed "
        "share of the correction closes this part of its gap to 1",
    )
    dart_kick_prob: float = param(
        0.05, "DART: per policy call, chance that the executed share drops again to U(0, 1)"
    )
    dart_noise_m: float = param(
        0.0,
        "DART: std per axis of executed translation noise (m); keep it well under the "
        "controller's position_tolerance_m, or the hand never counts as arrived",
    )
    dart_noise_rad: float = param(
        0.0, "DART: std per axis of executed rotation noise (rad); see dart_noise_m"
    )

    def __post_init__(self) -> None:
        check(self.width >= 16 and self.height >= 16, f"bad size {self.width}x{self.height}")
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(self.num_points >= 4, f"num_points must be >= 4, got {self.num_points}")
        check(
            0 <= self.object_fraction <= 1,
            f"object_fraction must be in [0, 1], got {self.object_fraction}",
        )
        check(self.max_time_s > 0, f"max_time_s must be > 0 s, got {self.max_time_s}")
        check(
            0 <= self.clean_fraction <= 1,
            f"clean_fraction must be in [0, 1], got {self.clean_fraction}",
        )
        for name in (
            "grasp_offset_max_m",
            "grasp_rotation_max_rad",
            "step_noise_m",
            "step_noise_rad",
            "expert_grasp_turn_rad",
            "dart_noise_m",
            "dart_noise_rad",
        ):
            value = getattr(self, name)
            check(
                math.isfinite(value) and value >= 0, f"{name} must be finite and >= 0, got {value}"
            )
        check(self.plan_attempts >= 1, f"plan_attempts must be >= 1, got {self.plan_attempts}")
        check(
            0 <= self.model_plan_fraction <= 1,
            f"model_plan_fraction must be in [0, 1], got {self.model_plan_fraction}",
        )
        for name in ("dart_fraction", "dart_rate", "dart_kick_prob"):
            value = getattr(self, name)
            check(0 <= value <= 1, f"{name} must be in [0, 1], got {value}")

    def episode_config(self, task: str, split: str, seed: int, **kw: Any) -> EpisodeConfig:
        """The ``EpisodeConfig`` of episode ``(task, split, seed)`` under these settings (what a
        closed-loop evaluation of a policy trained on these demos must use)."""
        return EpisodeConfig(
            task=task,
            split=split,
            seed=seed,
            width=self.width,
            height=self.height,
            horizon=self.horizon,
            num_points=self.num_points,
            object_fraction=self.object_fraction,
            max_time_s=self.max_time_s,
            **kw,
        )


def nominal_T_body_cam(sim: SimConfig | None = None) -> np.ndarray:
    """``T_body_cam`` the stack believes: the sim camera without its per-episode jitter.

    The same as ``PlannerNodeConfig().T_body_cam`` (a test checks it) without importing a ROS
    node module, so training runs where rclpy is not installed.
    """
    return optical_from_mjcam(*camera_pose(sim or SimConfig(), (0.0,) * 6))


def demo_controller_config(controller: ControllerConfig | None = None) -> ControllerConfig:
    """The controller settings demos run with: ``controller`` (default: the deployed defaults)
    in ``residual`` mode. A closed-loop evaluation should use the same (in the policy's mode)."""
    return dataclasses.replace(controller or ControllerConfig(), mode="residual")


def read_controller_config(root: str | Path) -> ControllerConfig:
    """The controller settings a demo directory was generated with."""
    index = json.loads((Path(root) / "index.json").read_text())
    return from_dict(ControllerConfig, index.get("controller_config", {}))


# -------------------------------------------------------------------------------------------
# Demo files
# -------------------------------------------------------------------------------------------


def intrinsics_array(intr: Intrinsics) -> np.ndarray:
    """``(6,)`` ``[width, height, fx, fy, cx, cy]`` of the camera of I0 and the tracks."""
    return np.array([intr.width, intr.height, intr.fx, intr.fy, intr.cx, intr.cy], np.float64)


def intrinsics_from_array(a: np.ndarray) -> Intrinsics:
    """Inverse of :func:`intrinsics_array`."""
    w, h, fx, fy, cx, cy = (float(v) for v in np.asarray(a).reshape(6))
    return Intrinsics(round(w), round(h), fx, fy, cx, cy)


def demo_path(out: str | Path, split: str, task: str, seed: int, variant: int) -> Path:
    """Where demo ``(split, task, seed, variant)`` lives under ``out`` (without suffix)."""
    return Path(out) / split / task / f"{seed:06d}_{variant:02d}"


def save_demo(base: Path, demo: dict[str, Any]) -> None:
    """Write ``base``.npz then ``base``.json atomically (the json marks the demo finished), as
    the sim dataset writes an episode."""
    save_episode(base, demo)


def write_demo_index(
    out: str | Path, cfg: DemoConfig, controller: ControllerConfig | None = None
) -> dict[str, Any]:
    """Rebuild ``out``/index.json from the finished demos' metadata files."""
    out = Path(out)
    demos = []
    for meta_path in sorted(out.glob("*/*/*.json")):
        meta = json.loads(meta_path.read_text())
        demos.append(
            {
                "file": str(meta_path.with_suffix(".npz").relative_to(out)),
                **{k: meta[k] for k in ("split", "task", "seed", "variant", "success", "ticks")},
                "clean": meta.get("noise") is None,
                "final_state": meta.get("final_state", ""),
            }
        )
    index = {
        "format": FORMAT,
        "demo_config": to_dict(cfg),
        "controller_config": to_dict(demo_controller_config(controller)),
        "demos": demos,
    }
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    return index


# -------------------------------------------------------------------------------------------
# Reading demos for training
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoDataConfig:
    """Which demos train, which validate, and the training-time augmentation."""

    val_fraction: float = param(0.1, "share of episode seeds held out for validation (1)")
    split_seed: int = param(0, "seed of the train/validation assignment")
    include_failed: bool = param(False, "also train on demos whose episode failed")
    shift_px: int = param(
        4, "random shift of the current image, in model pixels (train only; 0 = none)"
    )

    def __post_init__(self) -> None:
        check(
            0 <= self.val_fraction < 1, f"val_fraction must be in [0, 1), got {self.val_fraction}"
        )
        check(self.shift_px >= 0, f"shift_px must be >= 0, got {self.shift_px}")


@dataclasses.dataclass(frozen=True)
class DemoRef:
    """One demo on disk, from a directory's index."""

    path: Path
    split: str
    task: str
    seed: int
    variant: int
    success: bool
    ticks: int


def read_demo_config(root: str | Path) -> DemoConfig:
    """The :class:`DemoConfig` a demo directory was generated with."""
    path = Path(root) / "index.json"
    if not path.is_file():
        raise FileNotFoundError(f"no index.json in {root}: not a demo directory")
    index = json.loads(path.read_text())
    if index.get("format") != FORMAT:
        raise ValueError(f"{path} has format {index.get('format')!r}, expected {FORMAT!r}")
    return from_dict(DemoConfig, index["demo_config"])


def find_demos(roots: Iterable[str | Path], splits: Iterable[str] = ()) -> list[DemoRef]:
    """Every indexed demo under ``roots`` in ``splits`` (all splits if empty), sorted."""
    wanted = set(splits)
    bad = sorted(wanted - set(SPLITS))
    if bad:
        raise ValueError(f"unknown split(s) {bad}; expected some of {list(SPLITS)}")
    refs = []
    for root in roots:
        read_demo_config(root)
        for d in json.loads((Path(root) / "index.json").read_text())["demos"]:
            if wanted and d["split"] not in wanted:
                continue
            refs.append(
                DemoRef(
                    Path(root) / d["file"],
                    d["split"],
                    d["task"],
                    int(d["seed"]),
                    int(d["variant"]),
                    bool(d["success"]),
                    int(d["ticks"]),
                )
            )
    return sorted(refs, key=lambda r: (r.split, r.task, r.seed, r.variant, str(r.path)))


def select_demos(refs: Sequence[DemoRef], subset: str, cfg: DemoDataConfig) -> list[DemoRef]:
    """The ``"train"``, ``"val"`` or ``"all"`` part of ``refs``.

    Held out by episode seed (every task, split and variant of a held-out seed), with
    ``track_data``'s hash rule, so a scene never appears on both sides. Demos without ticks and,
    unless ``include_failed``, failed ones are dropped.
    """
    if subset not in SUBSETS:
        raise ValueError(f"unknown subset {subset!r}; expected one of {SUBSETS}")
    usable = [r for r in refs if r.ticks > 0 and (r.success or cfg.include_failed)]
    if subset == "all":
        return usable
    val = held_out_keys({r.seed for r in refs}, cfg.val_fraction, cfg.split_seed)
    return [r for r in usable if (r.seed in val) == (subset == "val")]


@dataclasses.dataclass
class Demo:
    """One demo in model units, as the dataset samples it (arrays per tick, per plan step)."""

    key: tuple[str, str, int, int]  # (split, task, seed, variant)
    images: np.ndarray  # (T, S, S, 3) uint8, resized like PolicyRunner does
    goal: np.ndarray  # (S, S, 3) uint8
    tracks: np.ndarray  # (H+1, M, 2) float32 normalised, the points PolicyRunner would pick
    points_body: np.ndarray | None  # (M, 3) float32 their P0 in the body frame (point_xyz)
    plan_poses: np.ndarray  # (H+1, 4, 4) float32
    plan_gripper: np.ndarray  # (H+1,) float32, 1 = closed
    steps: np.ndarray  # (T,) int64
    hands: np.ndarray  # (T, 4, 4) float32
    expert_poses: np.ndarray  # (H+1, 4, 4) float64
    expert_closed: np.ndarray  # (H+1,) float64


def prepare_demo(
    arrays: Mapping[str, Any],
    policy: PolicyConfig,
    key: tuple[str, str, int, int] = ("", "", 0, 0),
) -> Demo:
    """A demo's arrays (``.npz`` contents) -> :class:`Demo` for ``policy``'s input layout.

    Every transformation is the one ``PolicyRunner`` applies to an observation: ``resize_image``
    to ``image_size``, pixels normalised at the camera size, ``select_points`` for
    ``num_points``, and the planned gripper ``arange(H+1) >= grasp_step``.
    """
    H, S = policy.horizon, policy.image_size
    plan = np.asarray(arrays["plan_poses"])
    if plan.shape != (H + 1, 4, 4):
        raise ValueError(
            f"demo {key} has a plan of shape {plan.shape}, but the policy's horizon {H} needs "
            f"{(H + 1, 4, 4)}; generate demos with --horizon {H}"
        )
    rgb = np.asarray(arrays["rgb"])
    height, width = rgb.shape[1:3]
    steps = np.asarray(arrays["step"]).astype(np.int64)
    if steps.size and (steps.min() < 0 or steps.max() > H):
        raise ValueError(f"demo {key} has plan steps outside 0..{H}: {sorted(set(steps))}")
    tracks_px = np.asarray(arrays["tracks_px"])  # (H+1, N, 2)
    tracks = pixels_to_normalized(tracks_px, width, height)
    chosen = select_points(tracks, policy.num_points)
    tracks = tracks[:, chosen]
    points_body = None
    if policy.point_xyz:
        missing = [k for k in ("tracks_depth_m", "intrinsics", "T_body_cam") if k not in arrays]
        if missing:
            raise ValueError(
                f"demo {key} has no {', '.join(missing)}, which a policy with point_xyz needs; "
                "it was recorded by an older residual_data.py / bag_to_demos.py: record it again"
            )
        points_body = points_in_body(
            tracks_px[0], arrays["tracks_depth_m"], intrinsics_from_array(arrays["intrinsics"]),
            arrays["T_body_cam"],
        )[chosen].astype(np.float32)  # fmt: skip
    grasp_step = int(arrays["grasp_step"])
    return Demo(
        key=key,
        images=np.stack([resize_image(f, S) for f in rgb])
        if len(rgb)
        else np.zeros((0, S, S, 3), np.uint8),
        goal=resize_image(np.asarray(arrays["goal_rgb"]), S),
        tracks=np.ascontiguousarray(tracks, dtype=np.float32),
        points_body=points_body,
        plan_poses=plan.astype(np.float32),
        plan_gripper=(np.arange(H + 1) >= grasp_step).astype(np.float32),
        steps=steps,
        hands=np.asarray(arrays["hand"]).astype(np.float32),
        expert_poses=np.asarray(arrays["expert_poses"], np.float64),
        expert_closed=np.asarray(arrays["expert_gripper_closed"], np.float64),
    )


def load_demos(refs: Sequence[DemoRef], policy: PolicyConfig, workers: int = 4) -> list[Demo]:
    """Read and prepare demos (threads: decompression and resizing release the GIL)."""

    def load(ref: DemoRef) -> Demo:
        with np.load(ref.path) as z:
            arrays = {k: z[k] for k in z.files if k != "meta"}
        return prepare_demo(arrays, policy, (ref.split, ref.task, ref.seed, ref.variant))

    if workers <= 1:
        return [load(r) for r in refs]
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(load, refs))


class ResidualDataset(Dataset):
    """One sample per recorded tick: the ``compute_loss`` batch entries for that tick.

    Items: ``image``, ``goal`` ``(3, S, S)`` uint8; ``tracks`` ``(H+1, M, 2)`` float32;
    ``plan_poses`` ``(H+1, 4, 4)``, ``plan_gripper`` ``(H+1,)``, ``hand`` ``(4, 4)`` float32;
    ``step`` () int64; ``points_body`` ``(M, 3)`` float32 (``point_xyz`` only); ``action``
    ``(h, action_dim)`` float32 raw targets (``action_targets`` of
    the policy's mode, chunked by ``action_chunks`` and read at the tick's plan step);
    ``action_mask`` ``(h,)`` bool; ``demo`` () int64.
    """

    def __init__(
        self,
        demos: Sequence[Demo],
        policy: PolicyConfig,
        data: DemoDataConfig | None = None,
        augment: bool = False,
        seed: int = 0,
    ) -> None:
        self.demos = [d for d in demos if len(d.steps)]
        self.policy = policy
        self.data = data or DemoDataConfig()
        self.augment = augment
        self.seed = int(seed)
        self.epoch = 0
        self.chunks: list[np.ndarray] = []  # per demo (H+1, h, action_dim)
        self.chunk_masks: list[np.ndarray] = []  # per demo (H+1, h)
        for d in self.demos:
            targets = action_targets(
                policy.action_mode,
                d.expert_poses,
                d.plan_poses.astype(np.float64),
                d.expert_closed,
            )
            chunks, mask = action_chunks(targets, policy.chunk_size)
            self.chunks.append(chunks.astype(np.float32))
            self.chunk_masks.append(mask)
        lengths = [len(d.steps) for d in self.demos]
        self._starts = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)

    def set_epoch(self, epoch: int) -> None:
        """Select the epoch's augmentation draws (DataLoader workers copy the dataset)."""
        self.epoch = int(epoch)

    def __len__(self) -> int:
        return int(self._starts[-1])

    def locate(self, index: int) -> tuple[int, int]:
        """``(demo, tick)`` of sample ``index``."""
        if not 0 <= index < len(self):
            raise IndexError(f"sample {index} out of range for {len(self)} samples")
        d = int(np.searchsorted(self._starts, index, side="right")) - 1
        return d, index - int(self._starts[d])

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        d, t = self.locate(index)
        demo = self.demos[d]
        step = int(demo.steps[t])
        image = demo.images[t]
        if self.augment and self.data.shift_px > 0:
            image = random_shift(image, self.data.shift_px, self._rng(index))
        item = {
            "image": _chw(image),
            "goal": _chw(demo.goal),
            "tracks": torch.from_numpy(demo.tracks),
            "plan_poses": torch.from_numpy(demo.plan_poses),
            "plan_gripper": torch.from_numpy(demo.plan_gripper),
            "step": torch.tensor(step, dtype=torch.long),
            "hand": torch.from_numpy(demo.hands[t]),
            "action": torch.from_numpy(self.chunks[d][step]),
            "action_mask": torch.from_numpy(self.chunk_masks[d][step]),
            "demo": torch.tensor(d, dtype=torch.long),
        }
        if demo.points_body is not None:
            item["points_body"] = torch.from_numpy(demo.points_body)
        return item

    def _rng(self, index: int) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.epoch, index])

    def residual_rows(self) -> np.ndarray:
        """Every residual target row the loss sees ``(n, 6)`` (for ``PolicyStats``), whatever
        the action mode: each tick's chunk rows within the plan."""
        rows = []
        h = self.policy.chunk_size
        for d in self.demos:
            res = residual_targets(d.expert_poses, d.plan_poses.astype(np.float64))  # (H+1, 6)
            for s in d.steps:
                rows.append(res[int(s) : int(s) + h])
        return np.concatenate(rows) if rows else np.zeros((0, 6))


def random_shift(image: np.ndarray, pad: int, rng: np.random.Generator) -> np.ndarray:
    """``(S, S, 3)`` shifted by up to ``pad`` px each way, edges replicated (DrQ-style)."""
    S = image.shape[0]
    padded = np.pad(image, ((pad, pad), (pad, pad), (0, 0)), mode="edge")
    y, x = rng.integers(0, 2 * pad + 1, size=2)
    return padded[y : y + S, x : x + S]


def _chw(image: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def collate_residual(items: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack items into a ``compute_loss`` batch; pads tracks to the largest point count.

    Padding repeats a sample's first point (track and ``points_body``) and is masked out by
    ``track_mask`` ``(B, M)``.
    """
    n = max(int(it["tracks"].shape[1]) for it in items)
    per_point = [k for k in ("tracks", "points_body") if k in items[0]]
    padded: dict[str, list[torch.Tensor]] = {k: [] for k in per_point}
    masks = []
    for it in items:
        m = it["tracks"].shape[1]
        for k in per_point:
            x = it[k]  # tracks (H+1, m, 2), points_body (m, 3): the point axis is -2
            if m < n:
                first = x.narrow(-2, 0, 1)
                x = torch.cat([x, first.expand(*first.shape[:-2], n - m, -1)], dim=-2)
            padded[k].append(x)
        masks.append(torch.arange(n) < m)
    batch = {k: torch.stack([it[k] for it in items]) for k in items[0] if k not in per_point}
    batch.update({k: torch.stack(v) for k, v in padded.items()})
    batch["track_mask"] = torch.stack(masks)
    return batch
