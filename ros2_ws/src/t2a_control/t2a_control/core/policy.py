"""Residual policy of Track2Act (section 2.4, Fig. 4, eq. 1): plan corrections from images.

The policy ``pi_res(I_t, G, tau, [a_bar_k])`` looks at the current image, the goal image, the
predicted point tracks and the open-loop end-effector plan, and predicts an action chunk of ``h``
steps. In ``"residual"`` mode each step is a correction ``Delta a`` of the plan pose at that step;
in ``"absolute"`` mode (the paper's "actions, not residuals" ablation) it is the hand pose itself.

Architecture (a DiT-style transformer, as in the paper's appendix 6.4, on CPU-sized defaults):

- tokens: the current image and the goal (one shared ResNet-18/GroupNorm encoder plus a learned
  image-type embedding), with ``use_hand`` the current hand pose, one token per track point (its
  whole normalised ``(H+1) x 2`` track through an MLP, with ``point_xyz`` also its P0 lifted into
  the body frame; no positional embedding, so any number of points in any order), one token per
  open-loop waypoint ``a_bar_k`` (position, 6D rotation, planned gripper, plus embeddings of its
  index ``k`` and of its offset ``k - t`` from the current step), and ``h`` learned action
  queries;
- conditioning ``c = MLP([z_t, z_g]) + emb(t)`` (the paper's sum of image and time-step
  embeddings) enters every block through adaLN-Zero;
- the ``h`` query tokens are read off through an adaLN final layer into the action chunk.

adaLN-Zero makes the untrained network output exactly zero, which in residual mode is a zero
correction: a fresh policy executes the open-loop plan unchanged, and training starts from there.

Actions (body frame, raw units; see :func:`compose_residual` for how a residual applies):

- residual: ``[dt (3) m, rotation vector (3) rad, closed (1)]``;
- absolute: ``[position (3) m, 6D rotation (6), closed (1)]``, the 6D rotation being the first two
  columns of ``R`` (Zhou et al. 2019), which unlike a rotation vector or a quaternion has no
  discontinuity for the network to straddle.

``closed`` is the probability that the gripper should be closed (1 = closed).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from t2a_common.core.blocks import (
    IMAGE_MEAN,
    IMAGE_STD,
    FinalLayer,
    T2ABlock,
    basic_init,
    zero_init_adaln,
)
from t2a_common.core.checkpoint import (
    CHECKPOINT_FILES,  # noqa: F401  (re-exported: the policy's file names)
    CONFIG_NAME,
    STATS_NAME,  # noqa: F401
    WEIGHTS_NAME,  # noqa: F401
    load_dataclass,
    load_model,
    save_checkpoint,  # noqa: F401  (re-exported: saving is the same for every model)
)
from t2a_common.core.config import check, param
from t2a_common.core.resnet import ResNet18GN
from t2a_common.core.se3 import so3_exp, so3_log

ACTION_MODES = ("residual", "absolute")

# 6D of the identity: the absolute head predicts an offset from it, so the zero output of a fresh
# adaLN-Zero network is a valid rotation instead of a degenerate Gram-Schmidt input.
_IDENTITY_6D = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


#################################################################################
#                                 Configuration                                 #
#################################################################################


@dataclasses.dataclass(frozen=True)
class PolicyConfig:
    """Architecture and input/output layout of the residual policy (stored as ``config.json``).

    The defaults (about 2 M parameters, 8 MB in fp32) keep one ``PolicyRunner.predict`` on a
    640x480 frame with 400 tracks near 10 ms on one CPU thread, well inside a 5 Hz tick, and let
    the default checkpoint train on two CPU cores in under an hour; the paper's 12 x 512
    transformer on a full ResNet-18 at 256 px would not fit either budget.
    """

    image_size: int = param(96, "side of the square image the encoder sees (px); I_t, G resized")
    encoder_width: int = param(16, "ResNet-18 first-stage channels (64 = standard); feature 8x")
    hidden_size: int = param(128, "transformer width")
    depth: int = param(4, "number of transformer blocks")
    num_heads: int = param(4, "attention heads (must divide hidden_size)")
    mlp_ratio: float = param(4.0, "MLP hidden width / transformer width")
    horizon: int = param(8, "plan/track horizon H: tracks are (H+1, N, 2), the plan H+1 poses")
    chunk_size: int = param(4, "action chunk length h (steps predicted per call; paper: 4)")
    num_points: int = param(64, "track points the policy sees; more are subsampled, fewer kept")
    action_mode: str = param("residual", f"what a step predicts, one of {ACTION_MODES}")
    use_plan: bool = param(
        True, "feed the open-loop plan as tokens (False: the paper's no-plan absolute ablation)"
    )
    use_hand: bool = param(
        True,
        "a token for the measured hand pose (the paper's pi_res has none); without it the "
        "previous, non-DART recipe did worse in closed loop (docs/evaluation.md). Demos whose "
        "demonstrator corrects at once teach the policy to copy the hand; residual_demos' DART "
        "counters that",
    )
    point_xyz: bool = param(
        True,
        "each track token also gets its P0 lifted into the body frame (depth of P0 and the "
        "camera calibration), the frame of the plan and the hand: a misplaced grasp is then a "
        "difference of two inputs instead of a projection the network must learn",
    )
    workspace_center_m: tuple[float, ...] = param(
        (0.7, 0.0, 0.2), "body-frame point subtracted from hand/plan positions (m)"
    )
    workspace_scale_m: float = param(0.5, "hand/plan positions are divided by this (m)")
    gripper_loss_weight: float = param(1.0, "weight of the gripper BCE against the pose terms")

    def __post_init__(self) -> None:
        check(self.image_size >= 32, f"image_size must be >= 32 px, got {self.image_size}")
        check(self.encoder_width >= 1, f"encoder_width must be >= 1, got {self.encoder_width}")
        check(self.hidden_size >= 1, f"hidden_size must be >= 1, got {self.hidden_size}")
        check(self.depth >= 1, f"depth must be >= 1, got {self.depth}")
        check(self.num_heads >= 1, f"num_heads must be >= 1, got {self.num_heads}")
        check(
            self.hidden_size % self.num_heads == 0,
            f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}",
        )
        check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(self.chunk_size >= 1, f"chunk_size must be >= 1, got {self.chunk_size}")
        check(self.num_points >= 1, f"num_points must be >= 1, got {self.num_points}")
        check(
            self.action_mode in ACTION_MODES,
            f"unknown action_mode {self.action_mode!r}; expected one of {ACTION_MODES}",
        )
        check(
            self.use_plan or self.action_mode == "absolute",
            "use_plan=False needs action_mode='absolute': a residual is relative to the plan",
        )
        check(
            len(self.workspace_center_m) == 3
            and all(math.isfinite(v) for v in self.workspace_center_m),
            f"workspace_center_m must be 3 finite numbers (m), got {self.workspace_center_m}",
        )
        check(
            math.isfinite(self.workspace_scale_m) and self.workspace_scale_m > 0,
            f"workspace_scale_m must be finite and > 0 (m), got {self.workspace_scale_m}",
        )
        check(
            math.isfinite(self.gripper_loss_weight) and self.gripper_loss_weight >= 0,
            f"gripper_loss_weight must be finite and >= 0, got {self.gripper_loss_weight}",
        )

    @property
    def pose_dim(self) -> int:
        """Pose part of one action step: 6 (residual) or 9 (absolute)."""
        return 6 if self.action_mode == "residual" else 9

    @property
    def action_dim(self) -> int:
        """One action step including the gripper column: 7 or 10."""
        return self.pose_dim + 1


@dataclasses.dataclass(frozen=True)
class PolicyStats:
    """Scales of the residual targets in the training data (stored as ``stats.json``).

    The network regresses ``dt / translation_scale_m`` and ``rotvec / rotation_scale_rad`` so that
    both parts of a residual are about unit size; data-derived, hence beside the config. Unused in
    absolute mode, whose positions are scaled by the workspace in the config.
    """

    translation_scale_m: float = param(0.02, "RMS per axis of residual translations (m)")
    rotation_scale_rad: float = param(0.05, "RMS per axis of residual rotation vectors (rad)")

    def __post_init__(self) -> None:
        for name in ("translation_scale_m", "rotation_scale_rad"):
            value = getattr(self, name)
            check(
                math.isfinite(value) and value > 0,
                f"{name} must be finite and > 0, got {value}",
            )

    @classmethod
    def from_residuals(cls, deltas: np.ndarray) -> PolicyStats:
        """Statistics of residual targets ``(..., 6)`` (from :func:`residual_targets`).

        RMS rather than standard deviation: the network's zero output means "keep the plan", so
        the scale should be measured around zero. Floored so a dataset of perfect plans does not
        give a zero scale.
        """
        d = np.asarray(deltas, dtype=np.float64).reshape(-1, 6)
        if d.shape[0] == 0:
            raise ValueError("no residuals to compute statistics from")
        t = math.sqrt(float((d[:, :3] ** 2).mean()))
        r = math.sqrt(float((d[:, 3:] ** 2).mean()))
        return cls(translation_scale_m=max(t, 1e-3), rotation_scale_rad=max(r, 1e-3))


#################################################################################
#                   Rotations and action targets (numpy, float64)               #
#################################################################################


def rotation_to_6d(R: np.ndarray) -> np.ndarray:
    """Rotation matrices ``(..., 3, 3)`` -> 6D ``(..., 6)``: first column, then second column."""
    R = np.asarray(R, dtype=np.float64)
    return np.concatenate([R[..., :, 0], R[..., :, 1]], axis=-1)


def rotation_from_6d(d6: np.ndarray) -> np.ndarray:
    """6D ``(..., 6)`` -> rotation matrices ``(..., 3, 3)`` by Gram-Schmidt (exact inverse of
    :func:`rotation_to_6d` on rotations)."""
    d6 = np.asarray(d6, dtype=np.float64)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = a1 / np.maximum(np.linalg.norm(a1, axis=-1, keepdims=True), 1e-12)
    a2 = a2 - (b1 * a2).sum(-1, keepdims=True) * b1
    b2 = a2 / np.maximum(np.linalg.norm(a2, axis=-1, keepdims=True), 1e-12)
    return np.stack([b1, b2, np.cross(b1, b2)], axis=-1)


def _check_poses(name: str, poses: object) -> np.ndarray:
    T = np.asarray(poses, dtype=np.float64)
    if T.ndim < 2 or T.shape[-2:] != (4, 4):
        raise ValueError(f"{name} must be (..., 4, 4) transforms, got shape {T.shape}")
    if not np.isfinite(T).all():
        raise ValueError(f"{name} contains NaN or inf")
    return T


def compose_residual(plan_poses: np.ndarray, deltas: np.ndarray) -> np.ndarray:
    """Apply residuals to plan poses (eq. 1 on SE(3)): ``a_hat = a_bar (+) Delta a``.

    Both in the body frame: the translation is added, the rotation composed on the left,
    ``R_hat = exp(delta_rot) @ R_bar`` (never a sum of quaternions or rotation vectors).

    Args:
        plan_poses: ``(..., 4, 4)`` open-loop ``T_body_tool``.
        deltas: ``(..., 6)`` ``[dt (m), rotation vector (rad)]``.

    Returns:
        ``(..., 4, 4)`` corrected poses.
    """
    T = _check_poses("plan_poses", plan_poses)
    d = np.asarray(deltas, dtype=np.float64)
    if d.shape[-1:] != (6,) or d.shape[:-1] != T.shape[:-2]:
        raise ValueError(f"deltas must be {(*T.shape[:-2], 6)} for plan {T.shape}, got {d.shape}")
    out = np.zeros_like(T)
    out[..., :3, :3] = so3_exp(d[..., 3:]) @ T[..., :3, :3]
    out[..., :3, 3] = T[..., :3, 3] + d[..., :3]
    out[..., 3, 3] = 1.0
    return out


def residual_targets(expert_poses: np.ndarray, plan_poses: np.ndarray) -> np.ndarray:
    """Residuals ``(T, 6)`` that turn ``plan_poses`` into ``expert_poses`` (both ``(T, 4, 4)``).

    The exact inverse of :func:`compose_residual`: ``dt = t_expert - t_plan``,
    ``delta_rot = log(R_expert @ R_plan^T)``.
    """
    E = _check_poses("expert_poses", expert_poses)
    P = _check_poses("plan_poses", plan_poses)
    if E.shape != P.shape:
        raise ValueError(f"expert_poses {E.shape} and plan_poses {P.shape} differ in shape")
    R_rel = E[..., :3, :3] @ np.swapaxes(P[..., :3, :3], -1, -2)  # (..., 3, 3)
    return np.concatenate([E[..., :3, 3] - P[..., :3, 3], so3_log(R_rel)], axis=-1)


def absolute_targets(expert_poses: np.ndarray) -> np.ndarray:
    """Absolute-mode pose targets ``(T, 9)``: ``[position (m), 6D rotation]``."""
    E = _check_poses("expert_poses", expert_poses)
    return np.concatenate([E[..., :3, 3], rotation_to_6d(E[..., :3, :3])], axis=-1)


def pose_from_absolute(action: np.ndarray) -> np.ndarray:
    """Absolute-mode pose ``(..., 9)`` -> ``(..., 4, 4)``; inverse of :func:`absolute_targets`."""
    a = np.asarray(action, dtype=np.float64)
    T = np.zeros((*a.shape[:-1], 4, 4))
    T[..., :3, :3] = rotation_from_6d(a[..., 3:9])
    T[..., :3, 3] = a[..., :3]
    T[..., 3, 3] = 1.0
    return T


def action_targets(
    action_mode: str,
    expert_poses: np.ndarray,
    plan_poses: np.ndarray,
    expert_gripper_closed: np.ndarray,
) -> np.ndarray:
    """Per-step training targets ``(T, 7)`` (residual) or ``(T, 10)`` (absolute).

    Args:
        action_mode: ``"residual"`` or ``"absolute"``.
        expert_poses: ``(T, 4, 4)`` demonstrated ``T_body_tool``.
        plan_poses: ``(T, 4, 4)`` the open-loop plan pose for the same steps (ignored, but
            still validated, in absolute mode).
        expert_gripper_closed: ``(T,)`` in [0, 1], 1 = closed.
    """
    if action_mode not in ACTION_MODES:
        raise ValueError(f"unknown action_mode {action_mode!r}; expected one of {ACTION_MODES}")
    g = np.asarray(expert_gripper_closed, dtype=np.float64).reshape(-1)
    E = _check_poses("expert_poses", expert_poses)
    if g.shape != E.shape[:1] or not (np.isfinite(g).all() and (g >= 0).all() and (g <= 1).all()):
        raise ValueError(
            f"expert_gripper_closed must be {E.shape[:1]} values in [0, 1], got shape {g.shape}"
        )
    if action_mode == "residual":
        pose = residual_targets(E, plan_poses)
    else:
        _check_poses("plan_poses", plan_poses)
        pose = absolute_targets(E)
    return np.concatenate([pose, g[:, None]], axis=-1)


def action_chunks(targets: np.ndarray, chunk_size: int) -> tuple[np.ndarray, np.ndarray]:
    """Sliding windows of per-step targets for behaviour cloning with action chunks.

    Args:
        targets: ``(T, D)`` per-step targets (e.g. from :func:`action_targets`).
        chunk_size: ``h``.

    Returns:
        ``chunks (T, h, D)`` where ``chunks[t, j] = targets[t + j]``, and ``mask (T, h)`` bool,
        False where ``t + j`` runs past the demonstration; those rows repeat the last target (so
        they are finite) and are left out of the loss, as in ACT.
    """
    x = np.asarray(targets)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"targets must be (T >= 1, D), got {x.shape}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    T = x.shape[0]
    idx = np.arange(T)[:, None] + np.arange(chunk_size)[None]  # (T, h)
    return x[np.minimum(idx, T - 1)], idx < T


#################################################################################
#                              Torch pose helpers                               #
#################################################################################


def _rotation_from_6d_torch(d6: torch.Tensor) -> torch.Tensor:
    """6D ``(..., 6)`` -> ``(..., 3, 3)`` by Gram-Schmidt, in torch."""
    b1 = F.normalize(d6[..., :3], dim=-1, eps=1e-8)
    a2 = d6[..., 3:] - (b1 * d6[..., 3:]).sum(-1, keepdim=True) * b1
    b2 = F.normalize(a2, dim=-1, eps=1e-8)
    return torch.stack([b1, b2, torch.linalg.cross(b1, b2, dim=-1)], dim=-1)


def _geodesic_deg(R_a: torch.Tensor, R_b: torch.Tensor) -> torch.Tensor:
    """Angle between rotations ``(..., 3, 3)`` in degrees."""
    cos = ((R_a.transpose(-1, -2) @ R_b).diagonal(dim1=-2, dim2=-1).sum(-1) - 1.0) / 2.0
    return torch.rad2deg(torch.arccos(cos.clamp(-1.0, 1.0)))


#################################################################################
#                                   The model                                   #
#################################################################################


class ResidualPolicy(nn.Module):
    """``pi_res(I_t, G, tau, [a_bar_k])``: a DiT over image, hand, track, plan and query tokens.

    Entry points (lerobot style): :meth:`compute_loss` for training, :meth:`predict_chunk` for
    inference; :class:`~t2a_control.core.policy_runtime.PolicyRunner` is the numpy boundary.
    Inputs are batched tensors in model units: images ``(B, 3, S, S)`` (uint8, or float in
    [0, 1]), tracks normalised to [-1, 1] (``t2a_common.core.images`` convention), poses
    ``(..., 4, 4)`` ``T_body_tool`` in metres.
    """

    def __init__(self, config: PolicyConfig | None = None, stats: PolicyStats | None = None):
        super().__init__()
        self.config = config = config or PolicyConfig()
        self.stats = stats or PolicyStats()
        D, H, h = config.hidden_size, config.horizon, config.chunk_size

        self.encoder = ResNet18GN(config.encoder_width)
        F_img = self.encoder.out_dim
        self.register_buffer(
            "image_mean", torch.tensor(IMAGE_MEAN).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "image_std", torch.tensor(IMAGE_STD).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "workspace_center",
            torch.tensor(config.workspace_center_m, dtype=torch.float32),
            persistent=False,
        )
        self.register_buffer(
            "identity_6d", torch.tensor(_IDENTITY_6D, dtype=torch.float32), persistent=False
        )

        self.image_proj = nn.Linear(F_img, D)
        self.image_type = nn.Parameter(torch.zeros(2, D))  # 0 = current image, 1 = goal
        self.cond_embedder = _mlp(2 * F_img, D)
        self.step_cond = nn.Embedding(H + 1, D)
        if config.use_hand:
            self.hand_embedder = _mlp(9, D)
        # A track: (H+1) x 2 normalised pixels; with point_xyz also P0 in the body frame
        # (workspace-normalised) and a flag saying whether its depth was known.
        self.track_embedder = _mlp(2 * (H + 1) + (4 if config.point_xyz else 0), D)
        if config.use_plan:
            self.waypoint_embedder = _mlp(10, D)
            self.waypoint_index = nn.Embedding(H + 1, D)
            self.waypoint_offset = nn.Embedding(2 * H + 1, D)  # k - t in [-H, H]
        self.action_queries = nn.Parameter(torch.zeros(h, D))
        self.blocks = nn.ModuleList(
            [T2ABlock(D, config.num_heads, config.mlp_ratio) for _ in range(config.depth)]
        )
        self.final_layer = FinalLayer(D, config.action_dim)
        self.initialize_weights()

    def initialize_weights(self) -> None:
        """Xavier for linear layers, small normal for embeddings, zeros for adaLN and the head."""
        self.apply(basic_init)
        self.encoder.initialize_weights()
        nn.init.normal_(self.image_type, std=0.02)
        nn.init.normal_(self.action_queries, std=0.02)
        zero_init_adaln(self.blocks, self.final_layer)

    # ---------------------------------------------------------------------------------------
    # Network
    # ---------------------------------------------------------------------------------------

    def encode_images(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, S, S)`` uint8 or float in [0, 1] -> global features ``(B, 8 * width)``.

        Separate from :meth:`forward` so the runner can encode the goal once per plan.
        """
        S = self.config.image_size
        if images.dim() != 4 or tuple(images.shape[1:]) != (3, S, S):
            raise ValueError(
                f"images must be (B, 3, {S}, {S}) for image_size {S}, got {tuple(images.shape)}"
            )
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return self.encoder((images - self.image_mean) / self.image_std)  # (B, F)

    def pose_features(self, poses: torch.Tensor) -> torch.Tensor:
        """``(..., 4, 4)`` -> ``(..., 9)``: workspace-normalised position, 6D rotation."""
        pos = (poses[..., :3, 3] - self.workspace_center) / self.config.workspace_scale_m
        rot = torch.cat([poses[..., :3, 0], poses[..., :3, 1]], dim=-1)
        return torch.cat([pos, rot], dim=-1)

    def forward(
        self,
        z_image: torch.Tensor,
        z_goal: torch.Tensor,
        tracks: torch.Tensor,
        plan_poses: torch.Tensor | None,
        plan_gripper: torch.Tensor | None,
        step: torch.Tensor,
        hand: torch.Tensor,
        track_mask: torch.Tensor | None = None,
        points_body: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One network evaluation in normalised action units.

        Args:
            z_image, z_goal: ``(B, F)`` from :meth:`encode_images`.
            tracks: ``(B, H+1, N, 2)`` normalised tracks, any N >= 1.
            plan_poses: ``(B, H+1, 4, 4)``; plan_gripper: ``(B, H+1)`` closed in [0, 1]; both
                ignored (may be None) when ``use_plan`` is False.
            step: ``(B,)`` long, index of the current tick's plan step, in [0, H].
            hand: ``(B, 4, 4)`` current ``T_body_tool``.
            track_mask: ``(B, N)`` bool, False for padded points; None = all real.
            points_body: ``(B, N, 3)`` P0 of each track in the body frame (m), NaN where its
                depth is unknown; required when ``point_xyz``, ignored otherwise.

        Returns:
            ``(B, h, action_dim)``: normalised pose part, then the gripper logit.
        """
        cfg = self.config
        B, Hp1, N, _ = tracks.shape  # (B, H+1, N, 2)
        img = self.image_proj(torch.stack([z_image, z_goal], dim=1)) + self.image_type  # (B, 2, D)
        track_in = tracks.permute(0, 2, 1, 3).reshape(B, N, 2 * Hp1)  # (B, N, 2(H+1))
        if cfg.point_xyz:
            known = torch.isfinite(points_body).all(-1, keepdim=True)  # (B, N, 1)
            xyz = (points_body - self.workspace_center) / cfg.workspace_scale_m
            xyz = torch.where(known, xyz, torch.zeros_like(xyz))  # (B, N, 3)
            track_in = torch.cat([track_in, xyz, known.to(xyz.dtype)], dim=-1)
        track_tok = self.track_embedder(track_in)
        parts = [img]
        if cfg.use_hand:
            parts.append(self.hand_embedder(self.pose_features(hand))[:, None])  # (B, 1, D)
        first_track = sum(p.shape[1] for p in parts)
        parts.append(track_tok)  # (B, N, D)
        if cfg.use_plan:
            k = torch.arange(Hp1, device=tracks.device)  # (H+1,)
            feats = torch.cat([self.pose_features(plan_poses), plan_gripper[..., None]], dim=-1)
            way_tok = (
                self.waypoint_embedder(feats)  # (B, H+1, D)
                + self.waypoint_index(k)[None]  # (1, H+1, D)
                + self.waypoint_offset(k[None] - step[:, None] + cfg.horizon)  # (B, H+1, D)
            )
            parts.append(way_tok)
        parts.append(self.action_queries.expand(B, -1, -1))  # (B, h, D)
        x = torch.cat(parts, dim=1)  # (B, L, D)

        mask = None
        if track_mask is not None:
            mask = torch.ones(x.shape[:2], dtype=torch.bool, device=x.device)  # (B, L)
            mask[:, first_track : first_track + N] = track_mask

        c = self.cond_embedder(torch.cat([z_image, z_goal], dim=-1)) + self.step_cond(step)
        for block in self.blocks:
            x = block(x, c, mask)  # (B, L, D)
        queries = x[:, -cfg.chunk_size :]  # (B, h, D)
        return self.final_layer(queries, c)  # (B, h, action_dim)

    # ---------------------------------------------------------------------------------------
    # Normalisation of actions
    # ---------------------------------------------------------------------------------------

    def normalize_pose_action(self, pose: torch.Tensor) -> torch.Tensor:
        """Raw pose part ``(..., pose_dim)`` -> the network's target space."""
        if self.config.action_mode == "residual":
            return torch.cat(
                [
                    pose[..., :3] / self.stats.translation_scale_m,
                    pose[..., 3:6] / self.stats.rotation_scale_rad,
                ],
                dim=-1,
            )
        pos = (pose[..., :3] - self.workspace_center) / self.config.workspace_scale_m
        return torch.cat([pos, pose[..., 3:9] - self.identity_6d], dim=-1)

    def unnormalize_pose_action(self, out: torch.Tensor) -> torch.Tensor:
        """Network pose output ``(..., pose_dim)`` -> raw units; 6D parts come orthonormalised."""
        if self.config.action_mode == "residual":
            return torch.cat(
                [
                    out[..., :3] * self.stats.translation_scale_m,
                    out[..., 3:6] * self.stats.rotation_scale_rad,
                ],
                dim=-1,
            )
        pos = out[..., :3] * self.config.workspace_scale_m + self.workspace_center
        R = _rotation_from_6d_torch(out[..., 3:9] + self.identity_6d)  # (..., 3, 3)
        return torch.cat([pos, R[..., :, 0], R[..., :, 1]], dim=-1)

    # ---------------------------------------------------------------------------------------
    # Training and inference
    # ---------------------------------------------------------------------------------------

    def _run(
        self, batch: dict[str, torch.Tensor], goal_features: torch.Tensor | None = None
    ) -> torch.Tensor:
        self._check_batch(batch, need_goal=goal_features is None)
        B = batch["image"].shape[0]
        if goal_features is None:
            z = self.encode_images(torch.cat([batch["image"], batch["goal"]], dim=0))  # (2B, F)
            z_image, z_goal = z[:B], z[B:]
        else:
            z_image = self.encode_images(batch["image"])  # (B, F)
            z_goal = goal_features.expand(B, -1)  # (B, F)
        return self(
            z_image,
            z_goal,
            batch["tracks"],
            batch.get("plan_poses"),
            batch.get("plan_gripper"),
            batch["step"],
            batch["hand"],
            batch.get("track_mask"),
            batch.get("points_body"),
        )

    def compute_loss(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        """Behaviour-cloning loss on a batch.

        ``batch`` holds ``image``, ``goal`` ``(B, 3, S, S)``; ``tracks`` ``(B, H+1, N, 2)``
        normalised; optional ``track_mask`` ``(B, N)``; ``plan_poses`` ``(B, H+1, 4, 4)`` and
        ``plan_gripper`` ``(B, H+1)`` (when ``use_plan``); ``step`` ``(B,)`` long; ``hand``
        ``(B, 4, 4)``; ``points_body`` ``(B, N, 3)`` (when ``point_xyz``); ``action``
        ``(B, h, action_dim)`` raw targets (:func:`action_chunks` of
        :func:`action_targets`); optional ``action_mask`` ``(B, h)`` bool.

        Pose terms are MSE in normalised units (residual: translation and rotation vector, each
        divided by its data RMS; absolute: workspace-scaled position and 6D rotation); the gripper
        is BCE on the closed logit.

        Returns:
            ``(loss, metrics)``; metrics are floats: the three loss terms, the mean translation
            error (m), rotation error (deg) and gripper accuracy.
        """
        cfg = self.config
        target = batch["action"]
        B, h = target.shape[0], cfg.chunk_size
        if target.shape != (B, h, cfg.action_dim):
            raise ValueError(
                f"action must be (B, {h}, {cfg.action_dim}) for {cfg.action_mode} mode with "
                f"chunk_size {h}, got {tuple(target.shape)}"
            )
        out = self._run(batch)  # (B, h, action_dim)
        P = cfg.pose_dim
        target_n = self.normalize_pose_action(target[..., :P].float())  # (B, h, P)
        closed = target[..., P].float()  # (B, h)
        mask = batch.get("action_mask")
        weight = torch.ones(B, h, device=out.device) if mask is None else mask.float()
        denom = weight.sum().clamp(min=1.0)

        def masked_mean(per_step: torch.Tensor) -> torch.Tensor:
            return (per_step * weight).sum() / denom

        err = (out[..., :P] - target_n).pow(2)  # (B, h, P)
        loss_t = masked_mean(err[..., :3].mean(-1))
        loss_r = masked_mean(err[..., 3:].mean(-1))
        logit = out[..., P]  # (B, h)
        loss_g = masked_mean(F.binary_cross_entropy_with_logits(logit, closed, reduction="none"))
        loss = loss_t + loss_r + cfg.gripper_loss_weight * loss_g

        with torch.no_grad():
            pred = self.unnormalize_pose_action(out[..., :P])  # (B, h, P) raw
            t_err = masked_mean((pred[..., :3] - target[..., :3]).norm(dim=-1))
            if cfg.action_mode == "residual":
                r_err = masked_mean(torch.rad2deg((pred[..., 3:6] - target[..., 3:6]).norm(dim=-1)))
            else:
                R_t = _rotation_from_6d_torch(target[..., 3:9].float())
                r_err = masked_mean(_geodesic_deg(_rotation_from_6d_torch(pred[..., 3:9]), R_t))
            acc = masked_mean(((logit > 0) == (closed > 0.5)).float())
        metrics = {
            "loss": float(loss.detach()),
            "loss_translation": float(loss_t.detach()),
            "loss_rotation": float(loss_r.detach()),
            "loss_gripper": float(loss_g.detach()),
            "translation_error_m": float(t_err),
            "rotation_error_deg": float(r_err),
            "gripper_accuracy": float(acc),
        }
        return loss, metrics

    @torch.no_grad()
    def predict_chunk(
        self, batch: dict[str, torch.Tensor], goal_features: torch.Tensor | None = None
    ) -> dict[str, torch.Tensor]:
        """The action chunk for a batch of observations.

        Args:
            batch: the keys of :meth:`compute_loss` without ``action``.
            goal_features: ``(1, F)`` or ``(B, F)`` output of :meth:`encode_images` for the goal,
                to skip re-encoding a goal that does not change; ``batch["goal"]`` is then unused.

        Returns:
            ``"action"`` ``(B, h, pose_dim)`` raw units (residual: ``[dt m, rotvec rad]``;
            absolute: ``[position m, orthonormal 6D]``) and ``"gripper_closed"`` ``(B, h)``
            probabilities.
        """
        out = self._run(batch, goal_features)  # (B, h, action_dim)
        P = self.config.pose_dim
        return {
            "action": self.unnormalize_pose_action(out[..., :P]),
            "gripper_closed": torch.sigmoid(out[..., P]),
        }

    def _check_batch(self, batch: dict[str, torch.Tensor], need_goal: bool = True) -> None:
        cfg = self.config
        S, Hp1 = cfg.image_size, cfg.horizon + 1
        image = batch.get("image")
        if image is None or image.dim() != 4:
            got = None if image is None else tuple(image.shape)
            raise ValueError(f"image must be (B, 3, {S}, {S}), got {got}")
        B = image.shape[0]
        tracks = batch.get("tracks")
        if tracks is None or tracks.dim() != 4 or tracks.shape[1] != Hp1 or tracks.shape[-1] != 2:
            got = None if tracks is None else tuple(tracks.shape)
            raise ValueError(
                f"tracks must be (B, {Hp1}, N, 2) for horizon {cfg.horizon}, got {got}"
            )
        shapes = {
            "image": (B, 3, S, S),
            "tracks": (B, Hp1, tracks.shape[2], 2),
            "hand": (B, 4, 4),
            "step": (B,),
        }
        if need_goal:
            shapes["goal"] = (B, 3, S, S)
        if cfg.use_plan:
            shapes.update({"plan_poses": (B, Hp1, 4, 4), "plan_gripper": (B, Hp1)})
        if batch.get("track_mask") is not None:
            shapes["track_mask"] = (B, tracks.shape[2])
        if cfg.point_xyz:
            shapes["points_body"] = (B, tracks.shape[2], 3)
        for name, shape in shapes.items():
            value = batch.get(name)
            if value is None or tuple(value.shape) != shape:
                got = None if value is None else tuple(value.shape)
                raise ValueError(f"{name} must have shape {shape}, got {got}")
        step = batch["step"]
        if step.dtype not in (torch.int32, torch.int64) or bool(
            ((step < 0) | (step > cfg.horizon)).any()
        ):
            raise ValueError(f"step must be integers in [0, {cfg.horizon}], got {step.tolist()}")


def _mlp(in_dim: int, out_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))


def num_parameters(model: nn.Module) -> int:
    """Trainable parameter count."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


#################################################################################
#                                  Checkpoints                                  #
#################################################################################


def load_config(directory: str | Path) -> PolicyConfig:
    """The validated :class:`PolicyConfig` of a checkpoint directory."""
    return load_dataclass(directory, CONFIG_NAME, PolicyConfig)


def load_checkpoint(directory: str | Path, device: str | torch.device = "cpu") -> ResidualPolicy:
    """The policy saved by ``save_checkpoint``, in eval mode on ``device``; raises what
    :func:`t2a_common.core.checkpoint.load_model` raises for a missing, malformed or mismatched
    file."""
    return load_model(directory, ResidualPolicy, PolicyConfig, PolicyStats, _architecture, device)


def _architecture(c: PolicyConfig) -> str:
    return (
        f"depth={c.depth}, hidden_size={c.hidden_size}, encoder_width={c.encoder_width}, "
        f"horizon={c.horizon}, chunk_size={c.chunk_size}, action_mode={c.action_mode!r}, "
        f"use_plan={c.use_plan}, use_hand={c.use_hand}, point_xyz={c.point_xyz}"
    )
