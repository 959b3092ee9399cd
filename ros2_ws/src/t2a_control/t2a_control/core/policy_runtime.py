"""The residual policy's boundary: a dict of numpy observations in, a dict of numpy actions out.

:class:`PolicyRunner` owns everything between the control loop and the network (as in
diffusion_policy's ``predict_action`` and lerobot's pre/post-processors): input validation,
resizing both images to the model resolution, pixel -> normalised track coordinates, choosing
which track points the model sees, caching the goal encoding, temporal ensembling of overlapping
chunks, and turning the network output into hand poses. The controller never sees a tensor.

Observation keys (aliases in brackets are the names ``t2a_control.core.controller`` uses):

- ``"image"``: ``(H, W, 3)`` uint8 RGB, the current frame ``I_t``;
- ``"goal"`` [``"goal_image"``]: ``(H', W', 3)`` uint8 RGB, the goal ``G`` (any size);
- ``"tracks"``: a :class:`~t2a_common.core.types.PointTrackSet`, or an ``(H+1, N, 2)`` pixel
  array in the camera of ``"tracks_image_size"`` ``(width, height)`` (default: the size of
  ``"image"``, since both come from the same camera); any N >= 1;
- ``"plan"`` [``"plan_poses"``]: ``(H+1, 4, 4)`` open-loop ``T_body_tool`` per plan step;
- ``"plan_gripper"``: ``(H+1,)`` planned gripper, 1 = closed; or instead ``"grasp_step"``: the
  plan step from which the gripper is closed (how ``EEPlan`` encodes it). Not needed when the
  model was trained without the plan;
- ``"step"``: int in ``[0, H]``, the plan step of this tick;
- ``"hand"`` [``"ee_pose"``]: ``(4, 4)`` current ``T_body_tool``;
- only for a model with ``point_xyz``: ``"points_body"`` ``(N, 3)`` P0 of every track in the body
  frame (m, NaN = unknown depth), or else ``"tracks"`` as a ``PointTrackSet`` (it carries the
  depth of P0 and the intrinsics), lifted with the runner's ``T_body_cam`` (or the
  observation's ``"T_body_cam"``), see :func:`points_in_body`.

Output: see :meth:`PolicyRunner.predict`.
"""

from __future__ import annotations

import collections
import dataclasses
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2a_common.core.config import check, param
from t2a_common.core.geometry import Intrinsics, transform_points
from t2a_common.core.images import check_rgb_image, pixels_to_normalized, resize_image
from t2a_common.core.se3 import so3_exp, so3_log
from t2a_common.core.types import PointTrackSet
from t2a_control.core.controller import PolicyInputMissing
from t2a_control.core.policy import (
    ResidualPolicy,
    compose_residual,
    load_checkpoint,
    pose_from_absolute,
    rotation_from_6d,
    rotation_to_6d,
)

# How far a pose's rotation block may be from orthonormal before it is rejected as not rigid.
_RIGID_TOL = 1e-3


@dataclasses.dataclass(frozen=True)
class RunnerConfig:
    """Inference-time options of :class:`PolicyRunner` (not part of the checkpoint)."""

    temporal_ensemble: bool = param(
        False, "average all chunks that predicted the current plan step (ACT) instead of the newest"
    )
    ensemble_decay: float = param(
        0.01, "ACT's m: the i-th oldest prediction of a step weighs exp(-m i) (1/prediction)"
    )

    def __post_init__(self) -> None:
        check(
            isinstance(self.ensemble_decay, (int, float))
            and math.isfinite(self.ensemble_decay)
            and self.ensemble_decay >= 0,
            f"ensemble_decay must be finite and >= 0, got {self.ensemble_decay!r}",
        )


class PolicyRunner:
    """Runs a :class:`ResidualPolicy` on numpy observations, one control tick at a time.

    Args:
        checkpoint_dir: directory written by ``save_checkpoint``; or pass ``model`` instead.
        model: an in-memory :class:`ResidualPolicy` (e.g. during training or in tests).
        device: torch device to run on.
        config: inference options (temporal ensembling).
        T_body_cam: ``(4, 4)`` camera calibration, to lift a ``PointTrackSet``'s P0 into the body
            frame for a model with ``point_xyz`` (the planner's ``camera_xyz`` /
            ``camera_quat_xyzw``).
    """

    def __init__(
        self,
        checkpoint_dir: str | Path | None = None,
        *,
        model: ResidualPolicy | None = None,
        device: str | torch.device = "cpu",
        config: RunnerConfig | None = None,
        T_body_cam: np.ndarray | None = None,
    ) -> None:
        if (checkpoint_dir is None) == (model is None):
            raise ValueError("give exactly one of checkpoint_dir or model")
        self.T_body_cam = (
            None if T_body_cam is None else _check_pose("T_body_cam", T_body_cam, (4, 4))
        )
        self.device = torch.device(device)
        if model is None:
            model = load_checkpoint(checkpoint_dir, self.device)
        self.model = model.to(self.device).eval()
        self.policy_config = self.model.config
        self.config = config or RunnerConfig()
        self._goal_src: np.ndarray | None = None
        self._goal_features: torch.Tensor | None = None
        self._points_src: np.ndarray | None = None  # normalised tracks the choice was made for
        self._points = np.zeros(0, dtype=np.int64)
        # (start step, pose actions (h, pose_dim), closed probabilities (h,)), oldest first.
        self._chunks: collections.deque[tuple[int, np.ndarray, np.ndarray]] = collections.deque(
            maxlen=self.policy_config.chunk_size
        )
        self._last_step: int | None = None

    @property
    def horizon(self) -> int:
        return self.policy_config.horizon

    @property
    def action_mode(self) -> str:
        return self.policy_config.action_mode

    def reset(self) -> None:
        """Forget the goal encoding and past chunks; call when a new plan starts."""
        self._goal_src = None
        self._goal_features = None
        self._points_src = None
        self._chunks.clear()
        self._last_step = None

    @torch.inference_mode()
    def predict(self, obs: Mapping[str, Any]) -> dict[str, Any]:
        """One tick: the correction (residual mode) or the pose (absolute mode) for ``obs``.

        Returns:
            ``"pose"`` ``(4, 4)`` the hand goal ``T_body_tool`` for this tick (residual mode: the
            plan pose of ``step`` corrected on SE(3), see ``compose_residual``);
            ``"delta"`` ``(6,)``: residual mode ``[dt (m), rotation vector (rad)]`` body frame;
            absolute mode the pose itself as ``[position (m), rotation vector (rad)]``;
            ``"chunk"`` ``(h, 6)`` residuals or ``(h, 9)`` ``[position, 6D]`` as predicted now
            (row j is for plan step ``step + j``); ``"gripper_closed"`` probability that the
            gripper should be closed, and its chunk ``"gripper_closed_chunk"`` ``(h,)``;
            ``"gripper"`` = 1 - ``gripper_closed``, the opening convention of the controller's
            ``Policy`` protocol (1 = open); ``"step"`` and ``"num_points"`` (points used).

        Raises:
            ValueError: an observation is missing or has the wrong type, shape or values.
        """
        if not isinstance(obs, Mapping):
            raise ValueError(f"obs must be a dict of arrays, got {type(obs).__name__}")
        cfg = self.policy_config
        H = cfg.horizon
        image = check_rgb_image("image", _get(obs, "image"))
        goal = check_rgb_image("goal", _get(obs, "goal", "goal_image"))
        tracks = self._tracks(obs, image.shape[1], image.shape[0])  # (H+1, M, 2) normalised
        step = _check_step(_get(obs, "step"), H)
        hand = _check_pose("hand", _get(obs, "hand", "ee_pose"), (4, 4))

        plan = None
        if cfg.use_plan:  # always so in residual mode (PolicyConfig checks)
            plan = _check_pose("plan", _get(obs, "plan", "plan_poses"), (H + 1, 4, 4))
        batch: dict[str, torch.Tensor] = {
            "image": self._image_tensor(image),
            "tracks": self._tensor(tracks)[None],
            "step": torch.tensor([step], dtype=torch.long, device=self.device),
            "hand": self._tensor(hand)[None],
        }
        if cfg.use_plan:
            batch["plan_poses"] = self._tensor(plan)[None]
            batch["plan_gripper"] = self._tensor(_plan_gripper(obs, H))[None]
        if cfg.point_xyz:
            batch["points_body"] = self._tensor(self._points_body(obs)[self._points])[None]
        out = self.model.predict_chunk(batch, goal_features=self._goal(goal))
        chunk = out["action"][0].double().cpu().numpy()  # (h, pose_dim)
        closed_chunk = out["gripper_closed"][0].double().cpu().numpy()  # (h,)

        action, closed = chunk[0].copy(), float(closed_chunk[0])
        if self.config.temporal_ensemble:
            action, closed = self._ensemble(step, chunk, closed_chunk)
        if cfg.action_mode == "residual":
            delta = action
            pose = compose_residual(plan[step], delta)
        else:
            pose = pose_from_absolute(action)
            delta = np.concatenate([pose[:3, 3], so3_log(pose[:3, :3])])
        return {
            "delta": delta,
            "pose": pose,
            "chunk": chunk,
            "gripper_closed": closed,
            "gripper_closed_chunk": closed_chunk,
            "gripper": 1.0 - closed,
            "step": step,
            "num_points": int(tracks.shape[1]),
        }

    # ---------------------------------------------------------------------------------------
    # Inputs
    # ---------------------------------------------------------------------------------------

    def _tensor(self, a: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.asarray(a, dtype=np.float32), device=self.device)

    def _image_tensor(self, image: np.ndarray) -> torch.Tensor:
        small = resize_image(image, self.policy_config.image_size)  # (S, S, 3) uint8
        chw = np.ascontiguousarray(small.transpose(2, 0, 1))
        return torch.from_numpy(chw)[None].to(self.device)  # (1, 3, S, S) uint8

    def _goal(self, goal: np.ndarray) -> torch.Tensor:
        """Goal features ``(1, F)``, encoded once per distinct goal image."""
        cached = self._goal_src
        if cached is None or cached.shape != goal.shape or not np.array_equal(cached, goal):
            self._goal_features = self.model.encode_images(self._image_tensor(goal))
            self._goal_src = goal.copy()
        return self._goal_features

    def _tracks(self, obs: Mapping[str, Any], image_w: int, image_h: int) -> np.ndarray:
        """Normalised ``(H+1, M, 2)`` tracks with ``M <= num_points`` chosen points."""
        raw = _get(obs, "tracks")
        H = self.policy_config.horizon
        if isinstance(raw, PointTrackSet):
            px = raw.tracks_px
            width, height = raw.intrinsics.width, raw.intrinsics.height
        else:
            px = np.asarray(raw)
            size = obs.get("tracks_image_size")
            width, height = (image_w, image_h) if size is None else _check_size(size)
        if px.dtype.kind not in "fiu":
            raise ValueError(f"tracks must be real numbers, got dtype {px.dtype}")
        if px.ndim != 3 or px.shape[0] != H + 1 or px.shape[2] != 2 or px.shape[1] < 1:
            raise ValueError(
                f"tracks must be (H+1, N, 2) = ({H + 1}, N >= 1, 2) pixels for horizon {H}, "
                f"got {px.shape}"
            )
        if not np.isfinite(px).all():
            raise ValueError("tracks contain NaN or inf")
        tracks = pixels_to_normalized(px, width, height)  # (H+1, N, 2)
        # The tracks only change with the goal: reuse the point choice (3 ms for 400 points).
        if self._points_src is None or not np.array_equal(self._points_src, tracks):
            self._points = select_points(tracks, self.policy_config.num_points)
            self._points_src = tracks
        return tracks[:, self._points]

    def _points_body(self, obs: Mapping[str, Any]) -> np.ndarray:
        """``(N, 3)`` P0 of every track (before the point choice) in the body frame."""
        n = self._points_src.shape[1]  # set by _tracks
        if obs.get("points_body") is not None:
            pts = np.asarray(obs["points_body"])
            if pts.dtype.kind not in "fiu" or pts.shape != (n, 3):
                raise ValueError(
                    f"points_body must be ({n}, 3) body-frame positions (m) of the {n} tracks' "
                    f"P0, got {pts.dtype} {pts.shape}"
                )
            return pts.astype(np.float64)
        tracks = obs.get("tracks")
        T = obs.get("T_body_cam", self.T_body_cam)
        if not isinstance(tracks, PointTrackSet) or T is None:
            raise ValueError(
                "this policy was trained with point_xyz: give 'points_body' (N, 3), or 'tracks' "
                "as a PointTrackSet (depth of P0) and the camera calibration T_body_cam "
                f"(runner argument or observation); got keys {sorted(obs)}"
            )
        T = _check_pose("T_body_cam", T, (4, 4))
        return points_in_body(tracks.tracks_px[0], tracks.depth_m, tracks.intrinsics, T)

    # ---------------------------------------------------------------------------------------
    # Temporal ensembling (ACT, Zhao et al. 2023)
    # ---------------------------------------------------------------------------------------

    def _ensemble(
        self, step: int, chunk: np.ndarray, closed_chunk: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Weighted mean of every stored prediction for plan step ``step``.

        Chunks are keyed by plan step, not by tick: row ``j`` of a chunk predicted at step ``s``
        is for step ``s + j``, so a tick that stays on one step (e.g. while grasping) adds a
        prediction for that same step. A step going backwards means a new plan: start over.
        """
        if self._last_step is not None and step < self._last_step:
            self._chunks.clear()
        self._last_step = step
        self._chunks.append((step, chunk, closed_chunk))
        rows, closed = [], []
        for start, c, g in self._chunks:  # oldest first, as ACT's weights expect
            j = step - start
            if 0 <= j < len(c):
                rows.append(c[j])
                closed.append(g[j])
        w = np.exp(-self.config.ensemble_decay * np.arange(len(rows)))
        w /= w.sum()
        rows_a = np.asarray(rows)  # (n, pose_dim)
        position = w @ rows_a[:, :3]
        if self.action_mode == "residual":
            rotation = mean_rotation(so3_exp(rows_a[:, 3:6]), w)
            action = np.concatenate([position, so3_log(rotation)])
        else:
            rotation = mean_rotation(rotation_from_6d(rows_a[:, 3:9]), w)
            action = np.concatenate([position, rotation_to_6d(rotation)])
        return action, float(w @ np.asarray(closed))


def points_in_body(
    points_px: np.ndarray, depth_m: np.ndarray, intrinsics: Intrinsics, T_body_cam: np.ndarray
) -> np.ndarray:
    """``(N, 2)`` pixels with ``(N,)`` depths along the optical axis (m) -> ``(N, 3)`` points in
    the body frame; NaN rows where the depth is missing or not positive (what ``PointTracks``
    carries for P0, with the stack's camera calibration)."""
    uv = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    z = np.asarray(depth_m, dtype=np.float64).reshape(-1)
    if z.shape != (len(uv),):
        raise ValueError(f"depth_m must have one entry per point ({len(uv)}), got {z.shape}")
    with np.errstate(invalid="ignore"):
        z = np.where(np.isfinite(z) & (z > 0), z, np.nan)
    return transform_points(np.asarray(T_body_cam, np.float64), intrinsics.backproject(uv, z))


def select_points(tracks: np.ndarray, num_points: int) -> np.ndarray:
    """Indices of at most ``num_points`` diverse tracks among ``(H+1, N, 2)``.

    Farthest-point sampling in the space of whole tracks, starting from the point that moves
    most: the few moving object points are far from the many static background ones in that
    space, so they are kept, while static points are still spread over the image. Deterministic,
    so the same tracks give the same subset on every tick.
    """
    N = tracks.shape[1]
    if N <= num_points:
        return np.arange(N)
    flat = np.transpose(tracks, (1, 0, 2)).reshape(N, -1).astype(np.float64)  # (N, 2(H+1))
    motion = ((tracks[1:] - tracks[:1]) ** 2).sum(axis=(0, 2))  # (N,)
    chosen = np.empty(num_points, dtype=np.int64)
    chosen[0] = int(np.argmax(motion))
    dist = ((flat - flat[chosen[0]]) ** 2).sum(-1)  # (N,) squared distance to the chosen set
    for i in range(1, num_points):
        chosen[i] = int(np.argmax(dist))
        dist = np.minimum(dist, ((flat - flat[chosen[i]]) ** 2).sum(-1))
    return np.sort(chosen)


def mean_rotation(rotations: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Weighted chordal mean of rotations ``(n, 3, 3)``: the rotation nearest their weighted sum.

    Averaging rotation vectors or quaternions component-wise is only right for tiny spreads; the
    projection of the mean matrix back onto SO(3) (SVD) is right for any.
    """
    M = np.einsum("n,nij->ij", np.asarray(weights, dtype=np.float64), rotations)
    U, _, Vt = np.linalg.svd(M)
    D = np.diag([1.0, 1.0, np.sign(np.linalg.det(U @ Vt))])
    return U @ D @ Vt


# -------------------------------------------------------------------------------------------
# Observation validation
# -------------------------------------------------------------------------------------------


def _get(obs: Mapping[str, Any], *names: str) -> Any:
    for name in names:
        if name in obs and obs[name] is not None:
            return obs[name]
    given = [n for n in names if n in obs]
    if given:  # the key is there, its value has not arrived (a goal image, tracks, a frame)
        raise PolicyInputMissing(f"observation {given[0]!r} has not arrived yet (None)")
    alias = f" (or {', '.join(repr(n) for n in names[1:])})" if len(names) > 1 else ""
    raise ValueError(f"observation {names[0]!r}{alias} is missing; got keys {sorted(obs)}")


def _check_step(step: object, horizon: int) -> int:
    if isinstance(step, (bool, np.bool_)) or not isinstance(step, (int, np.integer)):
        raise ValueError(f"step must be an int plan index, got {step!r}")
    if not 0 <= int(step) <= horizon:
        raise ValueError(f"step {int(step)} is outside the plan's steps 0..{horizon}")
    return int(step)


def _check_size(size: object) -> tuple[int, int]:
    s = np.asarray(size)
    if s.shape != (2,) or s.dtype.kind not in "iu" or (s < 1).any():
        raise ValueError(f"tracks_image_size must be (width, height) positive ints, got {size!r}")
    return int(s[0]), int(s[1])


def _check_pose(name: str, value: object, shape: tuple[int, ...]) -> np.ndarray:
    T = np.asarray(value)
    if T.dtype.kind not in "fiu" or T.shape != shape:
        raise ValueError(f"{name} must be a {shape} array of T_body_tool, got {T.dtype} {T.shape}")
    T = T.astype(np.float64)
    if not np.isfinite(T).all():
        raise ValueError(f"{name} contains NaN or inf")
    R = T[..., :3, :3]
    err = np.abs(R @ np.swapaxes(R, -1, -2) - np.eye(3)).max(axis=(-2, -1))
    bottom = np.abs(T[..., 3, :] - np.array([0.0, 0.0, 0.0, 1.0])).max(axis=-1)
    bad = (err > _RIGID_TOL) | (np.linalg.det(R) < 0) | (bottom > _RIGID_TOL)
    if np.any(bad):
        where = "" if T.ndim == 2 else f" at step {int(np.flatnonzero(bad.reshape(-1))[0])}"
        raise ValueError(
            f"{name} is not a rigid transform{where}: expected an orthonormal rotation with "
            "det +1 and a last row of [0, 0, 0, 1]"
        )
    return T


def _plan_gripper(obs: Mapping[str, Any], horizon: int) -> np.ndarray:
    if obs.get("plan_gripper") is not None:
        g = np.asarray(obs["plan_gripper"])
        if g.dtype.kind not in "fiub" or g.shape != (horizon + 1,):
            raise ValueError(
                f"plan_gripper must be ({horizon + 1},) values in [0, 1] (1 = closed), "
                f"got {g.dtype} {g.shape}"
            )
        g = g.astype(np.float64)
        if not (np.isfinite(g).all() and (g >= 0).all() and (g <= 1).all()):
            raise ValueError("plan_gripper must hold values in [0, 1] (1 = closed)")
        return g
    if obs.get("grasp_step") is not None:
        k = obs["grasp_step"]
        if isinstance(k, (bool, np.bool_)) or not isinstance(k, (int, np.integer)) or k < 0:
            raise ValueError(f"grasp_step must be an int >= 0, got {k!r}")
        return (np.arange(horizon + 1) >= int(k)).astype(np.float64)
    raise ValueError(
        f"observation needs 'plan_gripper' ({horizon + 1},) or 'grasp_step' (the plan step from "
        f"which the gripper is closed); got keys {sorted(obs)}"
    )
