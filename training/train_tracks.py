"""Train the goal-conditioned track model (Track2Act section 2.2) on sim episodes and/or videos.

One script for one process or many (``torchrun --nproc_per_node=G training/train_tracks.py ...``:
DistributedDataParallel, a DistributedSampler, rank 0 logs, evaluates and saves). Settings come
from the :class:`TrainConfig` defaults, then ``--config FILE.yaml``, then the command line.

Output directory ``OUT``::

    OUT/train_config.json       the resolved settings
    OUT/log.csv                 step, loss, lr, grad norm, throughput, validation metrics
    OUT/tb/                     TensorBoard events (only if tensorboard is installed)
    OUT/last/                   latest checkpoint
    OUT/best/                   checkpoint with the lowest validation ADE so far

Each checkpoint directory is a ``save_checkpoint`` export of the EMA weights (``config.json``,
``model.safetensors``, ``stats.json``: what ``TrackPredictor`` and the perception node load),
plus ``train_state.pt`` (raw and EMA weights, optimizer, scheduler, grad scaler, step) for
``--resume``, ``train_config.json`` and ``data_stats.json`` (what ``eval_tracks.py`` reads).

The loop itself (optimizer, schedule, EMA, mixed precision, DDP, logging, checkpoints, resume)
is ``training/engine.py``'s, shared with ``train_residual.py``. Training choices, and why:

- AdamW without weight decay on biases and norm gains (decaying those only fights the
  adaLN-Zero initialisation); cosine learning rate after a linear warmup; gradient clipping,
  since a few samples with large motions give rare large gradients.
- An EMA of the weights is what gets evaluated and exported: diffusion models sample markedly
  better from averaged weights (DiT, ADM). Its decay ramps up as ``(1 + n) / (10 + n)`` so short
  runs are not dominated by the random initialisation.
- bf16 autocast on GPUs that have it, else fp16 with a grad scaler; fp32 on CPU, where autocast
  is slower than it is worth.
- The denoising loss is wrapped in a module so DistributedDataParallel sees it as ``forward``
  (DDP only synchronises gradients of computations that go through ``forward``).
"""

from __future__ import annotations

import argparse
import dataclasses
from pathlib import Path

import numpy as np
import torch
from torch import nn

from t2a_common.core.config import check, nested, param
from t2a_perception.core.checkpoint import load_checkpoint, save_checkpoint
from t2a_perception.core.diffusion import PREDICTION_TYPES, SCHEDULES
from t2a_perception.core.model import T2A_models, TrackDiT, TrackModelConfig, TrackStats
from training import engine
from training.eval_tracks import evaluate, first_step_velocity
from training.labelers import LABELERS, make_labeler
from training.track_data import (
    SIM_SPLITS,
    Clip,
    TrackDataConfig,
    TrackDataset,
    collate_tracks,
    find_sim_episodes,
    label_videos,
    load_sim_clips,
    load_video_clips,
    select_episodes,
)

LOG_COLUMNS = (
    *engine.TRAIN_LOG_COLUMNS,
    "val_ade_px",
    "val_fde_px",
    "val_min_ade_px",
    "val_delta_avg",
)
# What the denoising loss reads of a batch (the rest stays on the CPU).
BATCH_KEYS = ("image0", "goal", "tracks", "mask")


@dataclasses.dataclass(frozen=True)
class TrainConfig(engine.LoopConfig):
    """Everything a training run needs; saved as ``train_config.json`` next to every export.

    The loop's settings (output, resume, optimisation, precision, processes, logging) are
    :class:`~training.engine.LoopConfig`'s; these follow them.
    """

    data: tuple[str, ...] = param((), "sim dataset directories (written by t2a_sim's dataset)")
    videos: tuple[str, ...] = param((), "folders of user videos (mp4/avi/mov or frame folders)")
    video_cache: str = param("", "labelled-clip cache directory; '' = VIDEOS/.t2a_track_cache")
    labeler: str = param("lk", f"video track labeller, one of {LABELERS}")
    splits: tuple[str, ...] = param((), f"sim splits to train on (some of {SIM_SPLITS}); () = all")
    model: str = param("T2A-S", f"model size from the registry, one of {sorted(T2A_models)}")
    hidden_size: int = param(0, "transformer width override; 0 = the model size's")
    depth: int = param(0, "transformer blocks override; 0 = the model size's")
    num_heads: int = param(0, "attention heads override; 0 = the model size's")
    encoder_width: int = param(0, "ResNet-18 first-stage channels override; 0 = default (64)")
    num_train_timesteps: int = param(100, "diffusion chain length T")
    noise_schedule: str = param("cosine", f"beta schedule, one of {SCHEDULES}")
    prediction_type: str = param("v", f"network target, one of {PREDICTION_TYPES}")
    eval_episodes: int = param(64, "validation clips per evaluation (evenly picked); 0 = all")
    eval_ddim_steps: int = param(10, "DDIM steps of the validation sampler")
    eval_num_samples: int = param(1, "samples per validation clip (minADE over them)")
    label_only: bool = param(False, "label the --videos into their cache and exit (one process)")
    dataset: TrackDataConfig = nested(TrackDataConfig, "sampling, split and video settings")

    def __post_init__(self) -> None:
        check(
            self.model in T2A_models, f"unknown model {self.model!r}; expected {sorted(T2A_models)}"
        )
        check(self.labeler in LABELERS, f"unknown labeler {self.labeler!r}; expected {LABELERS}")
        bad = sorted(set(self.splits) - set(SIM_SPLITS))
        check(not bad, f"unknown split(s) {bad}; expected some of {SIM_SPLITS}")
        super().__post_init__()
        check(self.eval_episodes >= 0, f"eval_episodes must be >= 0, got {self.eval_episodes}")
        check(
            self.eval_ddim_steps >= 1, f"eval_ddim_steps must be >= 1, got {self.eval_ddim_steps}"
        )
        check(self.eval_num_samples >= 1, "eval_num_samples must be >= 1")
        check(not self.label_only or bool(self.videos), "label_only needs --videos")

    def model_config(self) -> TrackModelConfig:
        """The architecture this run builds (image size and horizon from ``dataset``)."""
        extra = {"encoder_width": self.encoder_width} if self.encoder_width else {}
        return TrackModelConfig(
            image_size=self.dataset.image_size,
            horizon=self.dataset.horizon,
            model_size=self.model,
            hidden_size=self.hidden_size,
            depth=self.depth,
            num_heads=self.num_heads,
            num_train_timesteps=self.num_train_timesteps,
            noise_schedule=self.noise_schedule,
            prediction_type=self.prediction_type,
            **extra,
        )


# -------------------------------------------------------------------------------------------
# Command line: one flag per config field, docs from the config
# -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Flags for every :class:`TrainConfig` field (nested ``dataset.x`` fields as ``--x``)."""
    return engine.config_parser(
        TrainConfig,
        description="Train the Track2Act track model on t2a_sim episodes and/or user videos. "
        "Settings: defaults < --config YAML < flags. Multi-GPU: torchrun --nproc_per_node=G "
        "training/train_tracks.py ...",
        config_help="YAML file of TrainConfig fields (nested 'dataset:' section)",
        choices={"model": sorted(T2A_models)},
    )


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the ``--config`` YAML, then explicit flags."""
    return engine.parse_flags(TrainConfig, build_parser(), argv)


# -------------------------------------------------------------------------------------------
# Data, loss and evaluation
# -------------------------------------------------------------------------------------------


class DenoisingLoss(nn.Module):
    """``forward(batch) = model.compute_loss(batch)``, so DDP can wrap the loss computation."""

    def __init__(self, model: TrackDiT) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.compute_loss(batch)


def load_clips(cfg: TrainConfig, rt: engine.Runtime) -> tuple[list[Clip], list[Clip]]:
    """Training and validation clips of every source (rank 0 labels videos, the rest wait)."""
    train: list[Clip] = []
    val: list[Clip] = []
    dcfg = cfg.dataset
    if cfg.data:
        refs = find_sim_episodes(cfg.data, cfg.splits)
        train += load_sim_clips(select_episodes(refs, "train", dcfg), dcfg, cfg.load_workers)
        val += load_sim_clips(select_episodes(refs, "val", dcfg), dcfg, cfg.load_workers)
    for root in cfg.videos:
        labeler = make_labeler(cfg.labeler)
        cache = cfg.video_cache or None
        if rt.main:
            label_videos(root, dcfg, labeler, cache, progress=cfg.progress)
        rt.barrier()
        train += load_video_clips(root, dcfg, labeler, "train", cache)
        val += load_video_clips(root, dcfg, labeler, "val", cache)
    if not train:
        raise ValueError(
            "no training clips: give --data and/or --videos with usable episodes "
            f"(data={list(cfg.data)}, videos={list(cfg.videos)}, splits={list(cfg.splits)})"
        )
    return train, val


def _describe(metrics: dict[str, float]) -> str:
    return (
        f"val ADE {metrics['val_ade_px']:.2f} px, FDE {metrics['val_fde_px']:.2f} px, "
        f"delta_avg {metrics['val_delta_avg']:.3f}"
    )


# -------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) training; returns the final export directory ``OUT/last``.

    With ``label_only``, labels the videos into their cache and returns the cache directory:
    the way to prepare a large video folder before a multi-GPU run, whose other ranks would
    otherwise sit in a barrier (``dist_timeout_min``) while rank 0 labels.
    """
    if cfg.label_only:
        for root in cfg.videos:
            files = label_videos(
                root, cfg.dataset, make_labeler(cfg.labeler), cfg.video_cache or None, cfg.progress
            )
            print(f"{root}: {len(files)} labelled clips")
        return (
            Path(cfg.video_cache) if cfg.video_cache else Path(cfg.videos[0]) / ".t2a_track_cache"
        )
    return engine.launch(cfg, _train)


def _train(cfg: TrainConfig, rt: engine.Runtime) -> Path:
    out, resume_from = engine.prepare_output(cfg, rt)
    train_clips, val_clips = load_clips(cfg, rt)
    dcfg = cfg.dataset
    repeat = engine.epoch_repeats(len(train_clips), cfg.batch_size)
    train_set = TrackDataset(train_clips, dcfg, augment=True, seed=cfg.seed, repeat=repeat)
    if cfg.eval_episodes:
        # Evenly spread over the (split, task, seed)-sorted list, so every task is represented.
        val_clips = engine.evenly_spread(val_clips, cfg.eval_episodes)
    val_set = TrackDataset(val_clips, dcfg, augment=False)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts)
    if resume_from is None:
        tracks, mask = train_set.fixed_samples()
        stats = TrackStats.from_tracks(tracks, mask)
        raw = TrackDiT(cfg.model_config(), stats)
    else:
        raw = load_checkpoint(resume_from)  # architecture and stats are the run's, not the flags'
        stats = raw.stats
        if raw.config != cfg.model_config() and rt.main:
            print(
                f"note: resuming {resume_from}: its architecture {raw.config} overrides the flags"
            )
    raw = raw.to(rt.device).train()
    data_stats = {
        "displacement_scale": stats.displacement_scale,
        "first_step_velocity": first_step_velocity(train_set),
        "train_clips": len(train_clips),
        "val_clips": len(val_clips),
        "train_splits": sorted({c.split for c in train_clips}),
    }
    trainer = engine.Trainer(cfg, rt, out, raw, save_checkpoint, data_stats, resume_from)

    # Diffusion noise and steps come from torch's global generator: seeded per (run, rank, step)
    # so that ranks draw different noise, and a resumed run draws what a fresh seed would.
    seed = np.random.SeedSequence([cfg.seed, rt.rank, trainer.step]).generate_state(1)[0]
    torch.manual_seed(int(seed))

    def validate() -> dict[str, float]:
        if not val_set.clips:
            return {}
        res = evaluate(
            trainer.ema,
            val_set,
            samplers=[("ddim", cfg.eval_ddim_steps)],
            num_samples=cfg.eval_num_samples,
            batch_size=trainer.per_rank,
            seed=cfg.seed,
            device=rt.device,
        )["all"][f"model-ddim{cfg.eval_ddim_steps}"]
        return {
            "val_ade_px": res["ade_px"],
            "val_fde_px": res["fde_px"],
            "val_min_ade_px": res["min_ade_px"],
            "val_delta_avg": res["delta_avg"],
        }

    banner = (
        f"{cfg.model} ({raw.num_parameters() / 1e6:.2f} M parameters) on {rt.device} x{rt.world}, "
        f"amp={rt.amp_dtype}, {len(train_clips)} train / {len(val_clips)} val clips, "
        f"displacement scale {stats.displacement_scale:.4f}"
    )
    return trainer.fit(
        DenoisingLoss(raw),
        train_set,
        collate_tracks,
        evaluate=validate,
        best_metric="val_ade_px",
        describe=_describe,
        eval_tag=lambda key: f"val/{key[4:]}",
        log_columns=LOG_COLUMNS,
        banner=banner,
        batch_keys=BATCH_KEYS,
    )


def main(argv: list[str] | None = None) -> Path:
    return train(parse_config(argv))


if __name__ == "__main__":
    main()
