"""The track model can fit real simulator clips: overfit on four t2a_sim episodes, it reproduces
their ground-truth tracks to < 2 px (at 128 px), with DDIM and with full DDPM sampling."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from t2a_bringup.core.episode import EpisodeConfig, expert_reference
from t2a_common.core.images import pixels_to_normalized, resize_image
from t2a_perception.core.model import TrackDiT, TrackModelConfig, TrackStats
from t2a_perception.core.predictor import TrackPredictor

pytestmark = pytest.mark.slow
SIZE = 128  # px, square camera images
CLIPS = [("drawer_open", 0), ("cabinet_close", 0), ("box_push", 0), ("bottle_lift", 0)]


def test_overfit_on_sim_clips_reproduces_their_tracks():
    torch.set_num_threads(1)
    refs = [
        expert_reference(
            EpisodeConfig(task=t, split="MG", seed=s, width=SIZE, height=SIZE, num_points=64)
        )
        for t, s in CLIPS
    ]
    batch = {
        "image0": torch.from_numpy(np.stack([resize_image(r.rgb0, 64) for r in refs]))
        .permute(0, 3, 1, 2)
        .contiguous(),
        "goal": torch.from_numpy(np.stack([resize_image(r.goal_rgb, 64) for r in refs]))
        .permute(0, 3, 1, 2)
        .contiguous(),
        "tracks": torch.from_numpy(
            np.stack([pixels_to_normalized(r.tracks_px, SIZE, SIZE) for r in refs])
        ).float(),
    }
    cfg = TrackModelConfig(image_size=64, model_size="T2A-Ti", hidden_size=64, depth=2,
                           num_heads=2, encoder_width=8, point_frequencies=4,
                           num_train_timesteps=50)  # fmt: skip
    torch.manual_seed(0)
    model = TrackDiT(cfg, TrackStats.from_tracks(batch["tracks"].numpy()))
    steps, lr = 800, 3e-3
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps, pct_start=0.1)
    g = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(steps):
        loss = model.compute_loss(batch, generator=g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
    model.eval()
    predictor = TrackPredictor(model=model)
    for sampler in ("ddim", "ddpm"):
        for (task, _), ref in zip(CLIPS, refs):
            p0 = ref.tracks_px[0]
            out = predictor.predict(ref.rgb0, ref.goal_rgb, p0, sampler=sampler, seed=0)
            ade = np.linalg.norm(out.tracks_px[1:] - ref.tracks_px[1:], axis=-1).mean()
            assert ade < 2.0, f"{task} {sampler}: ADE {ade:.2f} px"
