"""Gaussian diffusion for point tracks: noise schedule, training target, DDPM and DDIM samplers.

Notation follows Ho et al. 2020: ``x0`` is clean data, ``k`` the diffusion step in
``0 .. T-1``, ``alpha_bar[k]`` the signal fraction so that
``x_k = sqrt(alpha_bar[k]) * x0 + sqrt(1 - alpha_bar[k]) * eps``.

The samplers take a ``denoise(x_k, k) -> model output`` callable, so everything that stays fixed
during sampling (image features, query-point embeddings) is computed once by the caller and
closed over, not recomputed at each of the ``T`` or ``steps`` network evaluations.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

SCHEDULES = ("cosine", "linear")
PREDICTION_TYPES = ("epsilon", "v")
SAMPLERS = ("ddim", "ddpm")

DenoiseFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def make_betas(schedule: str, num_timesteps: int) -> np.ndarray:
    """Per-step noise variances ``beta[k]``, shape ``(T,)``, float64.

    ``linear`` is DDPM's 1e-4..0.02 range rescaled by ``1000 / T`` so that a short chain still
    ends in (almost) pure noise; unscaled, ``T = 100`` would leave ``alpha_bar[T-1] = 0.37``.
    ``cosine`` is Nichol & Dhariwal 2021, which destroys signal more evenly over the chain.
    """
    if num_timesteps < 2:
        raise ValueError(f"need at least 2 diffusion timesteps, got {num_timesteps}")
    if schedule == "linear":
        scale = 1000.0 / num_timesteps
        return np.linspace(scale * 1e-4, min(scale * 0.02, 0.999), num_timesteps, dtype=np.float64)
    if schedule == "cosine":
        s = 0.008
        steps = np.arange(num_timesteps + 1, dtype=np.float64) / num_timesteps
        alpha_bar = np.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
        return np.clip(1.0 - alpha_bar[1:] / alpha_bar[:-1], 0.0, 0.999)
    raise ValueError(f"unknown noise schedule {schedule!r}; expected one of {SCHEDULES}")


def ddim_timesteps(num_timesteps: int, steps: int) -> list[int]:
    """Descending diffusion steps visited by a ``steps``-step DDIM run.

    Spacing is "trailing" (Lin et al. 2024): the first step is always ``T - 1``, the step the
    pure-noise start actually corresponds to. Leading spacing (``0, 10, .., 90``) would start a
    10-step run at ``k = 90`` with noise the network was trained to see only at ``k = 99``.
    """
    if not 1 <= steps <= num_timesteps:
        raise ValueError(f"DDIM steps must be in 1..{num_timesteps}, got {steps}")
    ks = np.round(np.linspace(num_timesteps, 0, steps, endpoint=False)).astype(np.int64) - 1
    return [int(k) for k in ks]


class GaussianDiffusion(nn.Module):
    """Noise schedule plus the training target and both samplers.

    An ``nn.Module`` only so the schedule tensors follow ``model.to(device)``; they are
    non-persistent buffers, i.e. derived from the config and never stored in checkpoints.

    Args:
        num_timesteps: length ``T`` of the training chain; DDPM sampling takes ``T`` steps.
        schedule: ``"cosine"`` or ``"linear"``.
        prediction_type: what the network outputs, ``"epsilon"`` (the noise) or ``"v"``
            (``sqrt(alpha_bar) * eps - sqrt(1 - alpha_bar) * x0``, Salimans & Ho 2022).
    """

    def __init__(
        self, num_timesteps: int = 100, schedule: str = "cosine", prediction_type: str = "v"
    ) -> None:
        super().__init__()
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(
                f"unknown prediction type {prediction_type!r}; expected one of {PREDICTION_TYPES}"
            )
        self.num_timesteps = num_timesteps
        self.prediction_type = prediction_type
        betas = make_betas(schedule, num_timesteps)
        alpha_bar = np.cumprod(1.0 - betas)
        alpha_bar_prev = np.append(1.0, alpha_bar[:-1])
        # DDPM posterior q(x_{k-1} | x_k, x0) with the "fixed small" variance beta-tilde.
        post_var = betas * (1.0 - alpha_bar_prev) / (1.0 - alpha_bar)
        buffers = {
            "betas": betas,
            "alpha_bar": alpha_bar,
            "alpha_bar_prev": alpha_bar_prev,
            "sqrt_alpha_bar": np.sqrt(alpha_bar),
            "sqrt_one_minus_alpha_bar": np.sqrt(1.0 - alpha_bar),
            "post_mean_coef_x0": betas * np.sqrt(alpha_bar_prev) / (1.0 - alpha_bar),
            "post_mean_coef_xk": (1.0 - alpha_bar_prev) * np.sqrt(1.0 - betas) / (1.0 - alpha_bar),
            # post_var[0] is 0; the log is only used for k >= 1, clamp to keep it finite.
            "post_log_var": np.log(np.maximum(post_var, 1e-20)),
        }
        for name, value in buffers.items():
            self.register_buffer(
                name, torch.as_tensor(value, dtype=torch.float32), persistent=False
            )

    # ---------------------------------------------------------------------------------------
    # Training
    # ---------------------------------------------------------------------------------------

    def q_sample(self, x0: torch.Tensor, k: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """Noised data ``x_k`` for clean ``x0`` (B, ...), per-example steps ``k`` (B,)."""
        return (
            _bcast(self.sqrt_alpha_bar, k, x0) * x0
            + _bcast(self.sqrt_one_minus_alpha_bar, k, x0) * noise
        )

    def training_target(
        self, x0: torch.Tensor, noise: torch.Tensor, k: torch.Tensor
    ) -> torch.Tensor:
        """What the network should output for ``x_k = q_sample(x0, k, noise)``."""
        if self.prediction_type == "epsilon":
            return noise
        return (
            _bcast(self.sqrt_alpha_bar, k, x0) * noise
            - _bcast(self.sqrt_one_minus_alpha_bar, k, x0) * x0
        )

    def sample_timesteps(
        self, batch: int, device: torch.device, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """Uniformly drawn training steps ``k``, shape ``(batch,)``."""
        return torch.randint(0, self.num_timesteps, (batch,), device=device, generator=generator)

    # ---------------------------------------------------------------------------------------
    # Sampling
    # ---------------------------------------------------------------------------------------

    def split_prediction(
        self, out: torch.Tensor, x_k: torch.Tensor, k: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Turn a network output into the estimates ``(x0_hat, eps_hat)``."""
        a = _bcast(self.sqrt_alpha_bar, k, x_k)
        s = _bcast(self.sqrt_one_minus_alpha_bar, k, x_k)
        if self.prediction_type == "epsilon":
            return (x_k - s * out) / a, out
        # v-parameterisation: a^2 + s^2 = 1 makes both estimates a rotation of (x_k, v).
        return a * x_k - s * out, s * x_k + a * out

    def ddpm_sample(
        self,
        denoise: DenoiseFn,
        shape: tuple[int, ...],
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Ancestral DDPM sampling through all ``T`` steps; returns ``x0`` of ``shape``."""
        device = torch.device(device)
        x = torch.randn(shape, generator=generator, device=device)
        for step in range(self.num_timesteps - 1, -1, -1):
            k = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x0_hat, _ = self.split_prediction(denoise(x, k), x, k)
            mean = (
                _bcast(self.post_mean_coef_x0, k, x) * x0_hat
                + _bcast(self.post_mean_coef_xk, k, x) * x
            )
            if step > 0:
                noise = torch.randn(shape, generator=generator, device=device)
                x = mean + torch.exp(0.5 * _bcast(self.post_log_var, k, x)) * noise
            else:
                x = mean
        return x

    def ddim_sample(
        self,
        denoise: DenoiseFn,
        shape: tuple[int, ...],
        steps: int = 10,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
        eta: float = 0.0,
    ) -> torch.Tensor:
        """DDIM sampling (Song et al. 2021) in ``steps`` network evaluations.

        ``eta = 0`` is deterministic given the initial noise, so a seed fixes the output;
        ``eta = 1`` with ``steps = T`` is equivalent to DDPM.
        """
        device = torch.device(device)
        x = torch.randn(shape, generator=generator, device=device)
        ks = ddim_timesteps(self.num_timesteps, steps)
        for i, step in enumerate(ks):
            k = torch.full((shape[0],), step, device=device, dtype=torch.long)
            x0_hat, eps_hat = self.split_prediction(denoise(x, k), x, k)
            ab = self.alpha_bar[step]
            ab_prev = self.alpha_bar[ks[i + 1]] if i + 1 < len(ks) else torch.ones_like(ab)
            sigma = eta * torch.sqrt((1 - ab_prev) / (1 - ab) * (1 - ab / ab_prev))
            x = torch.sqrt(ab_prev) * x0_hat + torch.sqrt(1 - ab_prev - sigma**2) * eps_hat
            if eta > 0 and i + 1 < len(ks):
                x = x + sigma * torch.randn(shape, generator=generator, device=device)
        return x

    def sample(
        self,
        denoise: DenoiseFn,
        shape: tuple[int, ...],
        sampler: str = "ddim",
        steps: int | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Dispatch to ``ddim_sample`` (``steps`` default 10) or ``ddpm_sample`` (``T`` steps)."""
        if sampler == "ddim":
            return self.ddim_sample(
                denoise, shape, 10 if steps is None else steps, generator, device
            )
        if sampler == "ddpm":
            if steps is not None and steps != self.num_timesteps:
                raise ValueError(
                    f"the DDPM sampler always takes all {self.num_timesteps} steps, got "
                    f"steps={steps}; use sampler='ddim' for fewer"
                )
            return self.ddpm_sample(denoise, shape, generator, device)
        raise ValueError(f"unknown sampler {sampler!r}; expected one of {SAMPLERS}")


def _bcast(values: torch.Tensor, k: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``values[k]`` reshaped to ``(B, 1, ..., 1)`` so it broadcasts against ``like``."""
    return values[k].reshape(-1, *([1] * (like.dim() - 1)))
