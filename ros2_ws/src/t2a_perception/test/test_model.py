"""Unit tests of the track model core: config, diffusion, network, checkpoints, training.

Everything runs a tiny configuration (2 blocks, 32 wide, 8-channel ResNet) so the file takes
seconds on a laptop CPU; the overfit test that needs hundreds of steps is in the slow tier.
"""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
import torch

from t2a_common.core.config import to_dict
from t2a_common.core.resnet import ResNet18GN
from t2a_perception.core.checkpoint import (
    CONFIG_NAME,
    STATS_NAME,
    WEIGHTS_NAME,
    load_checkpoint,
    save_checkpoint,
)
from t2a_perception.core.diffusion import GaussianDiffusion, ddim_timesteps, make_betas
from t2a_perception.core.model import (
    T2A_SIZES,
    T2A_models,
    TrackDiT,
    TrackModelConfig,
    TrackStats,
)
from t2a_perception.core.predictor import (
    TrackPredictor,
    pixels_to_normalized,
    resize_image,
    sample_query_points,
)

TINY = TrackModelConfig(
    image_size=32,
    horizon=8,
    model_size="T2A-Ti",
    hidden_size=32,
    depth=2,
    num_heads=2,
    encoder_width=8,
    point_frequencies=4,
    num_train_timesteps=20,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from a second thread, and on a shared CPU OpenMP's barrier waits
    # make two threads several times slower than one.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_model(seed: int = 0, **overrides: object) -> TrackDiT:
    torch.manual_seed(seed)
    model = TrackDiT(dataclasses.replace(TINY, **overrides), TrackStats(0.1))
    # A freshly initialised adaLN-Zero model outputs exactly zero everywhere; perturb the zero
    # layers so tests see a network whose output depends on its inputs.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "adaLN_modulation" in name or "final_layer.linear" in name:
                p.normal_(0.0, 0.05)
    return model.eval()


def random_inputs(batch: int, num_points: int, size: int = 32, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (2, batch, 3, size, size), generator=g, dtype=torch.uint8)
    points = torch.rand(batch, num_points, 2, generator=g) * 2 - 1
    return images[0], images[1], points


# ------------------------------------------------------------------------------------------
# Synthetic clips: a coloured square slides from its place in I0 to its place in the goal.
# ------------------------------------------------------------------------------------------


def synthetic_clips(
    num_clips: int, size: int = 128, horizon: int = 8, grid: int = 8, seed: int = 0
):
    """``[(image0, goal, points_px (N, 2), tracks_px (H+1, N, 2))]`` with exact ground truth."""
    rng = np.random.default_rng(seed)
    points = sample_query_points(size, size, grid * grid)
    clips = []
    for _ in range(num_clips):
        background, colour = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        side = int(rng.integers(36, 48))
        start = rng.integers(8, size - side - 8, 2)
        end = np.clip(start + rng.integers(-30, 31, 2), 4, size - side - 4)
        lo, hi = start - 0.5, start + side - 0.5
        inside = np.all((points >= lo) & (points < hi), axis=1)  # (N,)
        frac = np.arange(horizon + 1)[:, None, None] / horizon  # (H+1, 1, 1)
        tracks = points[None] + inside[None, :, None] * frac * (end - start)  # (H+1, N, 2)
        image0, goal = (
            square_image(size, corner, side, background, colour) for corner in (start, end)
        )
        clips.append((image0, goal, points, tracks.astype(np.float32)))
    return clips


def square_image(size: int, corner, side: int, background, colour) -> np.ndarray:
    image = np.empty((size, size, 3), np.uint8)
    image[:] = background
    image[corner[1] : corner[1] + side, corner[0] : corner[0] + side] = colour
    return image


def clip_batch(clips, image_size: int) -> dict[str, torch.Tensor]:
    def images(i: int) -> torch.Tensor:
        stacked = np.stack([resize_image(c[i], image_size) for c in clips])
        return torch.from_numpy(np.ascontiguousarray(stacked.transpose(0, 3, 1, 2)))

    size = clips[0][0].shape[0]
    tracks = np.stack([pixels_to_normalized(c[3], size, size) for c in clips])
    return {"image0": images(0), "goal": images(1), "tracks": torch.from_numpy(tracks)}


def train(model: TrackDiT, batch: dict[str, torch.Tensor], steps: int, lr: float) -> list[float]:
    model.train()
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    losses = []
    for _ in range(steps):
        loss = model.compute_loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        losses.append(loss.item())
    model.eval()
    return losses


# ------------------------------------------------------------------------------------------
# Config
# ------------------------------------------------------------------------------------------


def test_default_config_is_the_papers_setup():
    cfg = TrackModelConfig()
    assert (cfg.image_size, cfg.horizon, cfg.model_size) == (128, 8, "T2A-S")
    assert cfg.arch == T2A_SIZES["T2A-S"]
    assert TrackModelConfig(hidden_size=64, num_heads=2).arch == (T2A_SIZES["T2A-S"][0], 64, 2)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"model_size": "T2A-XL"}, "T2A-XL"),
        ({"hidden_size": 100, "num_heads": 3}, "not divisible"),
        ({"horizon": 0}, "horizon must be >= 1, got 0"),
        ({"image_size": 16}, "image_size must be >= 32 px, got 16"),
        ({"noise_schedule": "sigmoid"}, "'sigmoid'"),
        ({"prediction_type": "x0"}, "'x0'"),
        ({"num_train_timesteps": 1}, "got 1"),
    ],
)
def test_config_rejects_bad_values(overrides, match):
    with pytest.raises(ValueError, match=match):
        TrackModelConfig(**overrides)


def test_stats_from_tracks_is_displacement_rms():
    tracks = np.zeros((2, 9, 5, 2))
    tracks[:, 1:, :, 0] = 0.3  # every point moves 0.3 in x, none in y
    assert TrackStats.from_tracks(tracks).displacement_scale == pytest.approx(0.3 / np.sqrt(2))
    with pytest.raises(ValueError, match="displacement_scale"):
        TrackStats(displacement_scale=0.0)


def test_registry_sizes():
    assert set(T2A_models) == set(T2A_SIZES) == {"T2A-Ti", "T2A-S", "T2A-B", "T2A-L"}
    # Every size gets bigger than the last (the transformer, which is what the size names).
    widths = [T2A_SIZES[n][0] * T2A_SIZES[n][1] ** 2 for n in ("T2A-Ti", "T2A-S", "T2A-B", "T2A-L")]
    assert widths == sorted(widths)
    model = T2A_models["T2A-Ti"](encoder_width=8)
    assert model.config.model_size == "T2A-Ti"


# ------------------------------------------------------------------------------------------
# Diffusion
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_schedules_end_in_noise(schedule):
    alpha_bar = np.cumprod(1 - make_betas(schedule, 100))
    assert np.all(np.diff(alpha_bar) < 0)
    assert alpha_bar[0] > 0.99 and alpha_bar[-1] < 1e-3


@pytest.mark.parametrize("prediction_type", ["epsilon", "v"])
def test_prediction_recovers_x0_and_noise(prediction_type):
    diffusion = GaussianDiffusion(50, "cosine", prediction_type)
    x0, noise = torch.randn(2, 6, 8, 2, dtype=torch.float64).float().unbind(0)
    x0, noise = x0[None].expand(50, -1, -1, -1), noise[None].expand(50, -1, -1, -1)
    k = torch.arange(50)
    x_k = diffusion.q_sample(x0, k, noise)
    x0_hat, eps_hat = diffusion.split_prediction(diffusion.training_target(x0, noise, k), x_k, k)
    # epsilon-prediction divides by sqrt(alpha_bar), tiny at the end of the chain.
    tol = 1e-4 if prediction_type == "v" else 5e-2
    assert torch.allclose(x0_hat, x0, atol=tol)
    assert torch.allclose(eps_hat, noise, atol=1e-4)


def test_ddim_timesteps_start_at_the_noisiest_step():
    assert ddim_timesteps(100, 10) == [99, 89, 79, 69, 59, 49, 39, 29, 19, 9]
    assert ddim_timesteps(100, 100) == list(range(99, -1, -1))
    assert ddim_timesteps(100, 1) == [99]
    with pytest.raises(ValueError, match=r"1\.\.100, got 0"):
        ddim_timesteps(100, 0)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_samplers_return_x0_for_a_perfect_denoiser(sampler):
    """With a denoiser that knows x0, both samplers must land on it."""
    diffusion = GaussianDiffusion(20, "cosine", "v")
    target = torch.randn(3, 5, 4, 2)

    def oracle(x_k: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
        a = diffusion.sqrt_alpha_bar[k].reshape(-1, 1, 1, 1)
        s = diffusion.sqrt_one_minus_alpha_bar[k].reshape(-1, 1, 1, 1)
        eps = (x_k - a * target) / s
        return a * eps - s * target

    out = diffusion.sample(oracle, tuple(target.shape), sampler, generator=torch.Generator())
    assert torch.allclose(out, target, atol=1e-4)


# ------------------------------------------------------------------------------------------
# Network
# ------------------------------------------------------------------------------------------


def test_resnet_feature_size_and_groupnorm():
    net = ResNet18GN(width=8)
    assert net(torch.zeros(3, 3, 32, 32)).shape == (3, 64)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in net.modules())
    assert sum(p.numel() for p in ResNet18GN(64).parameters()) == pytest.approx(11.17e6, rel=0.01)


@pytest.mark.parametrize(("num_points", "num_samples"), [(1, 1), (7, 3), (50, 2)])
@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
def test_sample_shapes_and_exact_p0(num_points, num_samples, sampler):
    model = tiny_model()
    image0, goal, points = random_inputs(2, num_points)
    steps = 3 if sampler == "ddim" else None
    tracks = model.sample(image0, goal, points, num_samples, sampler, steps, torch.Generator())
    assert tracks.shape == (2, num_samples, 9, num_points, 2)
    assert torch.equal(tracks[:, :, 0], points[:, None].expand(-1, num_samples, -1, -1))
    assert torch.isfinite(tracks).all()
    assert not torch.equal(tracks[:, :, 1], tracks[:, :, 0])  # the future is predicted


def test_sample_is_seeded():
    model = tiny_model()
    inputs = random_inputs(1, 10)

    def run(seed: int) -> torch.Tensor:
        return model.sample(*inputs, 2, "ddim", 4, torch.Generator().manual_seed(seed))

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_forward_is_permutation_equivariant_over_points():
    model = tiny_model()
    image0, goal, points = random_inputs(1, 12)
    tokens, cond = model.condition(image0, goal, points)
    x, k = torch.randn(1, 12, 8, 2), torch.tensor([7])
    perm = torch.randperm(12)
    with torch.no_grad():
        out = model(x, k, tokens, cond)
        out_perm = model(x[:, perm], k, tokens[:, perm], cond)
    assert torch.allclose(out[:, perm], out_perm, atol=1e-5)


@pytest.mark.parametrize("sampler", ["ddim", "ddpm"])
@pytest.mark.parametrize("num_samples", [1, 4])
def test_image_encoder_runs_once_per_prediction(sampler, num_samples):
    model = tiny_model()
    calls: list[int] = []
    model.encoder.register_forward_hook(lambda mod, inp, out: calls.append(inp[0].shape[0]))
    image0, goal, points = random_inputs(1, 5)
    steps = 7 if sampler == "ddim" else None
    model.sample(image0, goal, points, num_samples, sampler, steps, torch.Generator())
    # One call, on I0 and G together, not expanded to K samples.
    assert calls == [2]


def test_loss_ignores_padded_points():
    model = tiny_model()
    image0, goal, points = random_inputs(2, 6)
    tracks = points[:, None] + 0.05 * torch.randn(2, 9, 6, 2)
    mask = torch.tensor([[True] * 6, [True] * 4 + [False] * 2])
    batch = {"image0": image0, "goal": goal, "tracks": tracks, "mask": mask}
    garbage = tracks.clone()
    garbage[1, :, 4:] = 0.7
    loss = model.compute_loss(batch, torch.Generator().manual_seed(0))
    loss_garbage = model.compute_loss(
        {**batch, "tracks": garbage}, torch.Generator().manual_seed(0)
    )
    assert torch.allclose(loss, loss_garbage)


def test_compute_loss_rejects_wrong_horizon():
    model = tiny_model()
    image0, goal, points = random_inputs(1, 3)
    with pytest.raises(ValueError, match=r"tracks must be \(B, 9, N, 2\)"):
        model.compute_loss({"image0": image0, "goal": goal, "tracks": torch.zeros(1, 5, 3, 2)})
    with pytest.raises(ValueError, match=r"image0 must be \(B, 3, 32, 32\)"):
        model.sample(torch.zeros(1, 3, 64, 64), goal, points)


def test_loss_decreases_on_synthetic_clips():
    clips = synthetic_clips(2, size=64, grid=6)
    torch.manual_seed(0)
    model = TrackDiT(TINY, TrackStats.from_tracks(clip_batch(clips, 32)["tracks"].numpy()))
    losses = train(model, clip_batch(clips, 32), steps=100, lr=3e-3)
    assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:10]), (losses[:10], losses[-20:])


@pytest.mark.slow
def test_overfit_reproduces_training_tracks():
    """A small model trained on four clips reproduces their tracks to < 2 px at 128 px."""
    clips = synthetic_clips(4, size=128)
    batch = clip_batch(clips, 64)
    torch.manual_seed(0)
    cfg = dataclasses.replace(TINY, image_size=64, hidden_size=64, num_train_timesteps=50)
    model = TrackDiT(cfg, TrackStats.from_tracks(batch["tracks"].numpy()))
    train(model, batch, steps=800, lr=3e-3)
    predictor = TrackPredictor(model=model)
    for sampler in ("ddim", "ddpm"):
        for image0, goal, points, tracks in clips:
            result = predictor.predict(image0, goal, points, sampler=sampler, seed=0)
            ade = np.linalg.norm(result.tracks_px[1:] - tracks[1:], axis=-1).mean()
            assert ade < 2.0, f"{sampler}: ADE {ade:.2f} px"


# ------------------------------------------------------------------------------------------
# Checkpoints
# ------------------------------------------------------------------------------------------


def test_checkpoint_round_trip_gives_identical_outputs(tmp_path):
    model = tiny_model()
    save_checkpoint(model, tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == sorted(
        [CONFIG_NAME, WEIGHTS_NAME, STATS_NAME]
    )
    loaded = load_checkpoint(tmp_path / "ckpt")
    assert loaded.config == model.config and loaded.stats == model.stats
    inputs = random_inputs(1, 9)
    a = model.sample(*inputs, 2, "ddim", 5, torch.Generator().manual_seed(1))
    b = loaded.sample(*inputs, 2, "ddim", 5, torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    for key, value in changes.items():
        if value is None:
            del data[key]
        else:
            data[key] = value
    path.write_text(json.dumps(data))


def test_checkpoint_with_mismatched_architecture_fails_clearly(tmp_path):
    save_checkpoint(tiny_model(), tmp_path)
    _edit_json(tmp_path / CONFIG_NAME, hidden_size=64)
    with pytest.raises(ValueError, match="hidden_size=64") as err:
        load_checkpoint(tmp_path)
    assert "shape mismatch" in str(err.value)
    assert "blocks.0.attn.qkv.weight: checkpoint (96, 32) vs config (192, 64)" in str(err.value)


def test_checkpoint_with_other_depth_lists_missing_tensors(tmp_path):
    save_checkpoint(tiny_model(), tmp_path)
    _edit_json(tmp_path / CONFIG_NAME, depth=3)
    with pytest.raises(ValueError, match=r"missing tensors \[blocks\.2\."):
        load_checkpoint(tmp_path)


@pytest.mark.parametrize(
    ("filename", "changes", "match"),
    [
        (CONFIG_NAME, {"hidden": 32}, r"unknown keys \['hidden'\]"),
        (CONFIG_NAME, {"horizon": None}, r"missing keys \['horizon'\]"),
        (CONFIG_NAME, {"num_heads": 3}, "not divisible"),
        (CONFIG_NAME, {"horizon": "8"}, "expected int"),
        (STATS_NAME, {"displacement_scale": -1.0}, "displacement_scale"),
    ],
)
def test_checkpoint_config_is_validated(tmp_path, filename, changes, match):
    save_checkpoint(tiny_model(), tmp_path)
    _edit_json(tmp_path / filename, **changes)
    with pytest.raises(ValueError, match=match) as err:
        load_checkpoint(tmp_path)
    assert filename in str(err.value)


def test_checkpoint_missing_file(tmp_path):
    save_checkpoint(tiny_model(), tmp_path)
    (tmp_path / WEIGHTS_NAME).unlink()
    with pytest.raises(FileNotFoundError, match=r"no model\.safetensors"):
        load_checkpoint(tmp_path)


def test_config_json_is_flat_and_complete(tmp_path):
    save_checkpoint(tiny_model(), tmp_path)
    assert json.loads((tmp_path / CONFIG_NAME).read_text()) == to_dict(TINY)
