"""Goal-conditioned diffusion transformer that predicts point tracks (Track2Act, section 2.2).

Given the first frame ``I0``, a goal image ``G`` and ``p`` query points ``P0``, the model denoises
the future positions ``P1..PH`` of every point. It is a DiT (Peebles & Xie 2023) over point
tokens instead of image patches:

- one token per query point: the noisy future track of that point plus a Fourier embedding of its
  clean start ``P0``; no positional embedding, so any number of points at any positions works and
  the prediction is equivariant to the order of the points;
- conditioning ``c = emb(k) + proj([z0, zg])`` enters every block through adaLN-Zero, where
  ``z0``, ``zg`` are global ResNet-18 (GroupNorm) features of ``I0`` and ``G``;
- ``P0`` is never noised: the diffusion state holds steps ``1..H`` only, and step 0 of every
  output track is ``P0`` copied exactly (inpainting-style conditioning, re-imposed by
  construction at every sampling step rather than by overwriting a noisy copy).

Coordinates: points are normalised to ``[-1, 1]`` over the model image (``-1`` = left/top edge,
``+1`` = right/bottom edge; see ``images.pixels_to_normalized``). The diffusion state is the
*displacement* from ``P0`` divided by ``TrackStats.displacement_scale``. Displacements rather than
absolute positions because (a) most points in a manipulation clip barely move, so the target is
near zero and the network need not reproduce ``P0`` through its output at every step, which an
absolute parameterisation would force to pixel accuracy; (b) dividing by the data's displacement
RMS gives the unit-scale data the noise schedule is designed for, whereas raw displacements of a
few pixels would be drowned at almost every noise level.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

from t2a_common.core.blocks import (
    IMAGE_MEAN,
    IMAGE_STD,
    FinalLayer,
    T2ABlock,
    basic_init,
    zero_init_adaln,
)
from t2a_common.core.config import check, param
from t2a_common.core.resnet import ResNet18GN
from t2a_perception.core.diffusion import (
    PREDICTION_TYPES,
    SAMPLERS,
    SCHEDULES,
    GaussianDiffusion,
)

# Transformer sizes: name -> (depth, hidden_size, num_heads). "S" is the default: it keeps one
# 400-point, 10-step DDIM prediction well under 0.5 s on a laptop CPU.
T2A_SIZES: dict[str, tuple[int, int, int]] = {
    "T2A-Ti": (4, 128, 4),
    "T2A-S": (6, 256, 4),
    "T2A-B": (12, 384, 6),
    "T2A-L": (16, 768, 12),
}

#################################################################################
#                                 Configuration                                 #
#################################################################################


@dataclasses.dataclass(frozen=True)
class TrackModelConfig:
    """Architecture and diffusion settings of the track model (stored as ``config.json``)."""

    image_size: int = param(128, "side of the square image the encoder sees (px); I0, G resized")
    horizon: int = param(8, "future steps H per point; tracks hold H+1 steps, t=0 being P0")
    model_size: str = param("T2A-S", f"transformer size, one of {sorted(T2A_SIZES)}")
    hidden_size: int = param(0, "transformer width; 0 = from model_size")
    depth: int = param(0, "number of transformer blocks; 0 = from model_size")
    num_heads: int = param(0, "attention heads (must divide hidden size); 0 = from model_size")
    mlp_ratio: float = param(4.0, "MLP hidden width / transformer width")
    encoder_width: int = param(64, "ResNet-18 first-stage channels; 64 = standard, 32 = half")
    point_frequencies: int = param(6, "octaves of the Fourier embedding of P0 (highest: 2^(n-1))")
    num_train_timesteps: int = param(100, "diffusion chain length T; DDPM sampling takes T steps")
    noise_schedule: str = param("cosine", f"beta schedule, one of {SCHEDULES}")
    # v rather than epsilon: the fast sampler starts at the noisiest step, where epsilon-prediction
    # recovers x0 as (x_k - sqrt(1 - a) eps) / sqrt(a) with sqrt(a) ~ 0.01, amplifying any error
    # in eps a hundredfold; v keeps both the target and the x0 estimate well-scaled at every
    # noise level (Salimans & Ho 2022), which matters most for 10-step DDIM.
    prediction_type: str = param("v", f"network target, one of {PREDICTION_TYPES}")

    def __post_init__(self) -> None:
        check(self.image_size >= 32, f"image_size must be >= 32 px, got {self.image_size}")
        check(self.horizon >= 1, f"horizon must be >= 1, got {self.horizon}")
        check(
            self.model_size in T2A_SIZES,
            f"unknown model_size {self.model_size!r}; expected one of {sorted(T2A_SIZES)}",
        )
        for name in ("hidden_size", "depth", "num_heads"):
            value = getattr(self, name)
            check(value >= 0, f"{name} must be >= 0 (0 = from model_size), got {value}")
        _, hidden, heads = self.arch
        check(hidden % 2 == 0, f"hidden_size must be even, got {hidden}")
        check(
            hidden % heads == 0,
            f"hidden_size {hidden} is not divisible by num_heads {heads}",
        )
        check(self.mlp_ratio > 0, f"mlp_ratio must be > 0, got {self.mlp_ratio}")
        check(self.encoder_width >= 1, f"encoder_width must be >= 1, got {self.encoder_width}")
        check(
            1 <= self.point_frequencies <= 16,
            f"point_frequencies must be in 1..16, got {self.point_frequencies}",
        )
        check(
            self.num_train_timesteps >= 2,
            f"num_train_timesteps must be >= 2, got {self.num_train_timesteps}",
        )
        check(
            self.noise_schedule in SCHEDULES,
            f"unknown noise_schedule {self.noise_schedule!r}; expected one of {SCHEDULES}",
        )
        check(
            self.prediction_type in PREDICTION_TYPES,
            f"unknown prediction_type {self.prediction_type!r}; expected one of {PREDICTION_TYPES}",
        )

    @property
    def arch(self) -> tuple[int, int, int]:
        """``(depth, hidden_size, num_heads)`` after filling zeros from ``model_size``."""
        depth, hidden, heads = T2A_SIZES[self.model_size]
        return (self.depth or depth, self.hidden_size or hidden, self.num_heads or heads)


@dataclasses.dataclass(frozen=True)
class TrackStats:
    """Normalisation statistics of the training data (stored as ``stats.json``).

    Data-derived rather than architectural, so they live beside the config, not in it.
    """

    displacement_scale: float = param(
        0.1, "RMS of displacements P_t - P0 in normalised [-1, 1] units (0.1 = 6.4 px at 128 px)"
    )

    def __post_init__(self) -> None:
        check(
            math.isfinite(self.displacement_scale) and self.displacement_scale > 0,
            f"displacement_scale must be finite and > 0, got {self.displacement_scale}",
        )

    @classmethod
    def from_tracks(cls, tracks: np.ndarray, mask: np.ndarray | None = None) -> TrackStats:
        """Statistics of normalised tracks ``(..., H+1, N, 2)``, optional validity ``(..., N)``.

        RMS rather than standard deviation because diffusion assumes zero-mean data: a dataset
        where everything drifts one way should still be scaled by its full displacement.
        """
        tracks = np.asarray(tracks, dtype=np.float64)
        disp_sq = ((tracks[..., 1:, :, :] - tracks[..., :1, :, :]) ** 2).sum(-1)  # (..., H, N)
        if mask is not None:
            weights = np.broadcast_to(
                np.asarray(mask, dtype=np.float64)[..., None, :], disp_sq.shape
            )
            mean_sq = (disp_sq * weights).sum() / max(weights.sum(), 1.0)
        else:
            mean_sq = disp_sq.mean()
        # Per coordinate, and floored so a dataset of static clips does not give a zero scale.
        return cls(displacement_scale=float(max(math.sqrt(mean_sq / 2.0), 1e-3)))


#################################################################################
#               Embedding layers for diffusion steps, points, images            #
#################################################################################


class TimestepEmbedder(nn.Module):
    """Diffusion step ``k`` -> vector, via a sinusoidal code and an MLP (as in DiT)."""

    def __init__(self, hidden_size: int, frequency_size: int = 256) -> None:
        super().__init__()
        self.frequency_size = frequency_size
        self.mlp = nn.Sequential(
            nn.Linear(frequency_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    @staticmethod
    def sinusoidal(k: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
        """Transformer-style sinusoidal code of (possibly fractional) steps ``(B,) -> (B, dim)``."""
        half = dim // 2
        freqs = torch.exp(
            -math.log(max_period) * torch.arange(half, dtype=torch.float32, device=k.device) / half
        )
        args = k.float()[:, None] * freqs[None]
        return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)

    def forward(self, k: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.sinusoidal(k, self.frequency_size))  # (B, D)


class PointEmbedder(nn.Module):
    """Query point ``P0`` in ``[-1, 1]^2`` -> token features, via Fourier features and an MLP.

    Octave frequencies ``pi * 2^i`` let the MLP resolve positions down to about
    ``image_size / 2^n`` pixels; the raw coordinate is kept too, for the coarse layout.
    """

    def __init__(self, num_frequencies: int, hidden_size: int) -> None:
        super().__init__()
        self.register_buffer(
            "freqs",
            math.pi * 2.0 ** torch.arange(num_frequencies, dtype=torch.float32),
            persistent=False,
        )
        in_dim = 2 + 4 * num_frequencies
        self.mlp = nn.Sequential(
            nn.Linear(in_dim, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, points: torch.Tensor) -> torch.Tensor:
        args = (points[..., None] * self.freqs).flatten(-2)  # (B, N, 2F)
        code = torch.cat([points, torch.sin(args), torch.cos(args)], dim=-1)  # (B, N, 2 + 4F)
        return self.mlp(code)  # (B, N, D)


class ImageConditionEmbedder(nn.Module):
    """``[z0, zg]`` -> conditioning vector added to the step embedding."""

    def __init__(self, feature_size: int, hidden_size: int) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(2 * feature_size, hidden_size), nn.SiLU(), nn.Linear(hidden_size, hidden_size)
        )

    def forward(self, z0: torch.Tensor, zg: torch.Tensor) -> torch.Tensor:
        return self.mlp(torch.cat([z0, zg], dim=-1))  # (B, D)


#################################################################################
#                               Core T2A model                                  #
#################################################################################


class TrackDiT(nn.Module):
    """The track model ``V_theta(I0, G, P0, k)``: a DiT over one token per query point.

    Public entry points (lerobot style): :meth:`compute_loss` for training and :meth:`sample`
    for inference; both take normalised coordinates and ``(B, 3, S, S)`` images (uint8, or float
    in ``[0, 1]``). :meth:`condition` holds everything that does not depend on the diffusion step,
    so a prediction runs the image encoder once however many steps or samples it takes.
    """

    def __init__(self, config: TrackModelConfig | None = None, stats: TrackStats | None = None):
        super().__init__()
        self.config = config = config or TrackModelConfig()
        self.stats = stats or TrackStats()
        depth, hidden, heads = config.arch
        self.horizon = config.horizon

        self.encoder = ResNet18GN(config.encoder_width)
        self.register_buffer(
            "image_mean", torch.tensor(IMAGE_MEAN).reshape(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "image_std", torch.tensor(IMAGE_STD).reshape(1, 3, 1, 1), persistent=False
        )
        self.image_embedder = ImageConditionEmbedder(self.encoder.out_dim, hidden)
        self.t_embedder = TimestepEmbedder(hidden)
        self.point_embedder = PointEmbedder(config.point_frequencies, hidden)
        self.track_embedder = nn.Linear(2 * config.horizon, hidden)
        self.blocks = nn.ModuleList(
            [T2ABlock(hidden, heads, config.mlp_ratio) for _ in range(depth)]
        )
        self.final_layer = FinalLayer(hidden, 2 * config.horizon)
        self.diffusion = GaussianDiffusion(
            config.num_train_timesteps, config.noise_schedule, config.prediction_type
        )
        self.initialize_weights()

    def initialize_weights(self) -> None:
        self.apply(basic_init)
        self.encoder.initialize_weights()
        nn.init.normal_(self.t_embedder.mlp[0].weight, std=0.02)
        nn.init.normal_(self.t_embedder.mlp[2].weight, std=0.02)
        zero_init_adaln(self.blocks, self.final_layer)

    # ---------------------------------------------------------------------------------------
    # Network
    # ---------------------------------------------------------------------------------------

    def condition(
        self, image0: torch.Tensor, goal: torch.Tensor, points0: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Step-independent inputs: ``(point_tokens (B, N, D), image_cond (B, D))``.

        Both images go through the shared encoder in one call: I0 and G are the same kind of
        picture, and the embedder sees ``[z0, zg]`` in a fixed order, so it can still tell them
        apart.
        """
        B = image0.shape[0]
        images = self._normalise_images(torch.cat([image0, goal], dim=0))  # (2B, 3, S, S)
        z = self.encoder(images)  # (2B, F)
        image_cond = self.image_embedder(z[:B], z[B:])  # (B, D)
        return self.point_embedder(points0), image_cond  # (B, N, D), (B, D)

    def forward(
        self,
        x: torch.Tensor,
        k: torch.Tensor,
        point_tokens: torch.Tensor,
        image_cond: torch.Tensor,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """One denoiser evaluation.

        Args:
            x: noisy normalised displacements ``(B, N, H, 2)`` at diffusion step ``k``.
            k: diffusion steps ``(B,)``.
            point_tokens, image_cond: from :meth:`condition`.
            mask: ``(B, N)`` bool, True for real points, False for padding; None = all real.

        Returns:
            The network prediction (epsilon or v, per config), shape ``(B, N, H, 2)``.
        """
        B, N, H, _ = x.shape  # (B, N, H, 2)
        h = self.track_embedder(x.reshape(B, N, 2 * H)) + point_tokens  # (B, N, D)
        c = self.t_embedder(k) + image_cond  # (B, D)
        for block in self.blocks:
            h = block(h, c, mask)  # (B, N, D)
        out = self.final_layer(h, c)  # (B, N, 2H)
        return out.reshape(B, N, H, 2)  # (B, N, H, 2)

    def _normalise_images(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            images = images.float() / 255.0
        return (images - self.image_mean) / self.image_std

    # ---------------------------------------------------------------------------------------
    # Track <-> diffusion state
    # ---------------------------------------------------------------------------------------

    def tracks_to_state(self, tracks: torch.Tensor) -> torch.Tensor:
        """Normalised tracks ``(B, H+1, N, 2)`` -> scaled displacements ``(B, N, H, 2)``."""
        disp = (tracks[:, 1:] - tracks[:, :1]) / self.stats.displacement_scale  # (B, H, N, 2)
        return disp.permute(0, 2, 1, 3)

    def state_to_tracks(self, state: torch.Tensor, points0: torch.Tensor) -> torch.Tensor:
        """Scaled displacements ``(B, N, H, 2)`` + ``P0 (B, N, 2)`` -> tracks ``(B, H+1, N, 2)``.

        Step 0 is ``points0`` itself, not ``points0 + 0``, so it is bit-exact.
        """
        future = points0[:, None] + state.permute(0, 2, 1, 3) * self.stats.displacement_scale
        return torch.cat([points0[:, None], future], dim=1)

    # ---------------------------------------------------------------------------------------
    # Training and sampling
    # ---------------------------------------------------------------------------------------

    def compute_loss(
        self, batch: dict[str, torch.Tensor], generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Denoising loss on a batch; returns a scalar.

        ``batch`` holds ``image0`` and ``goal`` ``(B, 3, S, S)``, ``tracks`` ``(B, H+1, N, 2)`` in
        normalised coordinates (step 0 = P0) and optionally ``mask`` ``(B, N)`` bool for padded
        point sets (clips with different point counts in one batch).
        """
        image0, goal, tracks = batch["image0"], batch["goal"], batch["tracks"]
        mask = batch.get("mask")
        if tracks.dim() != 4 or tracks.shape[1] != self.horizon + 1 or tracks.shape[-1] != 2:
            raise ValueError(
                f"tracks must be (B, {self.horizon + 1}, N, 2) for horizon {self.horizon}, "
                f"got {tuple(tracks.shape)}"
            )
        self._check_inputs(image0, goal, tracks[:, 0], mask)
        x0 = self.tracks_to_state(tracks)  # (B, N, H, 2)
        point_tokens, image_cond = self.condition(image0, goal, tracks[:, 0])
        k = self.diffusion.sample_timesteps(x0.shape[0], x0.device, generator)
        noise = torch.randn(x0.shape, generator=generator, device=x0.device)
        out = self(self.diffusion.q_sample(x0, k, noise), k, point_tokens, image_cond, mask)
        err = (out - self.diffusion.training_target(x0, noise, k)).pow(2).mean(dim=(2, 3))  # (B, N)
        if mask is None:
            return err.mean()
        return (err * mask).sum() / mask.sum().clamp(min=1)

    @torch.no_grad()
    def sample(
        self,
        image0: torch.Tensor,
        goal: torch.Tensor,
        points0: torch.Tensor,
        num_samples: int = 1,
        sampler: str = "ddim",
        steps: int | None = None,
        generator: torch.Generator | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Draw ``num_samples`` track hypotheses per example.

        Args:
            image0, goal: ``(B, 3, S, S)`` images.
            points0: query points ``(B, N, 2)`` in normalised coordinates.
            num_samples: hypotheses ``K`` per example, denoised together as one batch.
            sampler: ``"ddim"`` (``steps`` default 10) or ``"ddpm"`` (all ``T`` steps).
            generator: source of all sampling noise; a seeded one makes the output repeatable.
            mask: optional ``(B, N)`` validity of padded points.

        Returns:
            Tracks ``(B, K, H+1, N, 2)`` in normalised coordinates; ``[:, :, 0]`` equals P0.
        """
        if sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")
        if num_samples < 1:
            raise ValueError(f"num_samples must be >= 1, got {num_samples}")
        self._check_inputs(image0, goal, points0, mask)
        B, N, _ = points0.shape
        K = num_samples
        point_tokens, image_cond = self.condition(image0, goal, points0)  # once per prediction
        point_tokens = point_tokens.repeat_interleave(K, dim=0)  # (B*K, N, D)
        image_cond = image_cond.repeat_interleave(K, dim=0)  # (B*K, D)
        mask_k = None if mask is None else mask.repeat_interleave(K, dim=0)  # (B*K, N)

        def denoise(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
            return self(x, k, point_tokens, image_cond, mask_k)

        state = self.diffusion.sample(
            denoise, (B * K, N, self.horizon, 2), sampler, steps, generator, points0.device
        )  # (B*K, N, H, 2)
        tracks = self.state_to_tracks(state, points0.repeat_interleave(K, dim=0))
        return tracks.reshape(B, K, self.horizon + 1, N, 2)

    def _check_inputs(
        self,
        image0: torch.Tensor,
        goal: torch.Tensor,
        points0: torch.Tensor,
        mask: torch.Tensor | None,
    ) -> None:
        S = self.config.image_size
        for name, img in (("image0", image0), ("goal", goal)):
            if img.dim() != 4 or tuple(img.shape[1:]) != (3, S, S):
                raise ValueError(
                    f"{name} must be (B, 3, {S}, {S}) for image_size {S}, got {tuple(img.shape)}"
                )
        if points0.dim() != 3 or points0.shape[-1] != 2 or points0.shape[1] < 1:
            raise ValueError(f"points0 must be (B, N>=1, 2), got {tuple(points0.shape)}")
        B = points0.shape[0]
        if image0.shape[0] != B or goal.shape[0] != B:
            raise ValueError(
                f"batch sizes differ: image0 {image0.shape[0]}, goal {goal.shape[0]}, points {B}"
            )
        if mask is not None and tuple(mask.shape) != tuple(points0.shape[:2]):
            raise ValueError(
                f"mask must be (B, N) = {tuple(points0.shape[:2])}, got {tuple(mask.shape)}"
            )

    def num_parameters(self, include_encoder: bool = True) -> int:
        """Trainable parameter count, optionally without the image encoder."""
        params = (
            self.parameters()
            if include_encoder
            else (p for n, p in self.named_parameters() if not n.startswith("encoder."))
        )
        return sum(p.numel() for p in params)


#################################################################################
#                                  T2A Configs                                  #
#################################################################################


def T2A_Ti(**kwargs: Any) -> TrackDiT:
    return TrackDiT(TrackModelConfig(model_size="T2A-Ti", **kwargs))


def T2A_S(**kwargs: Any) -> TrackDiT:
    return TrackDiT(TrackModelConfig(model_size="T2A-S", **kwargs))


def T2A_B(**kwargs: Any) -> TrackDiT:
    return TrackDiT(TrackModelConfig(model_size="T2A-B", **kwargs))


def T2A_L(**kwargs: Any) -> TrackDiT:
    return TrackDiT(TrackModelConfig(model_size="T2A-L", **kwargs))


T2A_models: dict[str, Callable[..., TrackDiT]] = {
    "T2A-Ti": T2A_Ti,
    "T2A-S": T2A_S,
    "T2A-B": T2A_B,
    "T2A-L": T2A_L,
}
