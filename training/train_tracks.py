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

Training choices, and why:

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
import copy
import csv
import dataclasses
import datetime
import json
import math
import os
import shutil
import sys
import time
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

if __package__ in (None, ""):  # run as a script: make the workspace root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from t2a_common.core.config import check, fields, from_dict, load_yaml, nested, param, to_dict
from t2a_perception.core.checkpoint import load_checkpoint, save_checkpoint
from t2a_perception.core.diffusion import PREDICTION_TYPES, SCHEDULES
from t2a_perception.core.model import T2A_models, TrackDiT, TrackModelConfig, TrackStats
from training.eval_tracks import (
    DATA_STATS_NAME,
    TRAIN_CONFIG_NAME,
    evaluate,
    first_step_velocity,
)
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

TRAIN_STATE_NAME = "train_state.pt"
AMP_MODES = ("auto", "bf16", "fp16", "off")
# An epoch lists every clip often enough for at least this many batches: tiny datasets would
# otherwise restart the loader (and its workers) every step.
MIN_EPOCH_BATCHES = 50
LOG_COLUMNS = (
    "step",
    "epoch",
    "elapsed_s",
    "lr",
    "loss",
    "grad_norm",
    "samples_per_s",
    "val_ade_px",
    "val_fde_px",
    "val_min_ade_px",
    "val_delta_avg",
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as ``train_config.json`` next to every export."""

    data: tuple[str, ...] = param((), "sim dataset directories (written by t2a_sim's dataset)")
    videos: tuple[str, ...] = param((), "folders of user videos (mp4/avi/mov or frame folders)")
    video_cache: str = param("", "labelled-clip cache directory; '' = VIDEOS/.t2a_track_cache")
    labeler: str = param("lk", f"video track labeller, one of {LABELERS}")
    splits: tuple[str, ...] = param((), f"sim splits to train on (some of {SIM_SPLITS}); () = all")
    out: str = param("", "output directory (logs, checkpoints); required")
    resume: str = param(
        "", "'' = fresh run; 'auto' = continue OUT/last if it exists; or a checkpoint directory"
    )
    model: str = param("T2A-S", f"model size from the registry, one of {sorted(T2A_models)}")
    hidden_size: int = param(0, "transformer width override; 0 = the model size's")
    depth: int = param(0, "transformer blocks override; 0 = the model size's")
    num_heads: int = param(0, "attention heads override; 0 = the model size's")
    encoder_width: int = param(0, "ResNet-18 first-stage channels override; 0 = default (64)")
    num_train_timesteps: int = param(100, "diffusion chain length T")
    noise_schedule: str = param("cosine", f"beta schedule, one of {SCHEDULES}")
    prediction_type: str = param("v", f"network target, one of {PREDICTION_TYPES}")
    batch_size: int = param(32, "global batch size (split evenly over DDP processes)")
    max_steps: int = param(100_000, "optimizer steps of the whole run (the schedule's length)")
    lr: float = param(3e-4, "peak learning rate")
    min_lr_ratio: float = param(0.05, "final learning rate / peak of the cosine decay")
    warmup_steps: int = param(1000, "linear warmup steps")
    weight_decay: float = param(0.01, "AdamW weight decay (weight matrices only)")
    ema_decay: float = param(0.999, "EMA decay of the exported weights (per step)")
    grad_clip: float = param(1.0, "max global gradient norm; 0 = no clipping")
    amp: str = param("auto", f"mixed precision on CUDA, one of {AMP_MODES}; always off on CPU")
    device: str = param("auto", "auto (cuda if available), cpu, cuda; DDP uses cuda:LOCAL_RANK")
    num_workers: int = param(2, "DataLoader worker processes per training process")
    load_workers: int = param(4, "threads that read and resize episodes at start-up")
    threads: int = param(0, "torch CPU threads per process; 0 = torch's default")
    seed: int = param(0, "seed of initialisation, noise and data sampling")
    log_every: int = param(50, "steps between log rows")
    eval_every: int = param(1000, "steps between validation runs; 0 = only at the end")
    save_every: int = param(1000, "steps between checkpoints of OUT/last; 0 = only at the end")
    eval_episodes: int = param(64, "validation clips per evaluation (evenly picked); 0 = all")
    eval_ddim_steps: int = param(10, "DDIM steps of the validation sampler")
    eval_num_samples: int = param(1, "samples per validation clip (minADE over them)")
    progress: bool = param(True, "show a tqdm progress bar")
    label_only: bool = param(False, "label the --videos into their cache and exit (one process)")
    dist_timeout_min: float = param(30.0, "DDP collective timeout (min); ranks wait this long")
    dataset: TrackDataConfig = nested(TrackDataConfig, "sampling, split and video settings")

    def __post_init__(self) -> None:
        check(
            self.model in T2A_models, f"unknown model {self.model!r}; expected {sorted(T2A_models)}"
        )
        check(self.labeler in LABELERS, f"unknown labeler {self.labeler!r}; expected {LABELERS}")
        bad = sorted(set(self.splits) - set(SIM_SPLITS))
        check(not bad, f"unknown split(s) {bad}; expected some of {SIM_SPLITS}")
        check(self.amp in AMP_MODES, f"unknown amp {self.amp!r}; expected one of {AMP_MODES}")
        check(self.batch_size >= 1, f"batch_size must be >= 1, got {self.batch_size}")
        check(self.max_steps >= 1, f"max_steps must be >= 1, got {self.max_steps}")
        check(self.lr > 0, f"lr must be > 0, got {self.lr}")
        check(
            0 <= self.min_lr_ratio <= 1, f"min_lr_ratio must be in [0, 1], got {self.min_lr_ratio}"
        )
        check(self.warmup_steps >= 0, f"warmup_steps must be >= 0, got {self.warmup_steps}")
        check(self.weight_decay >= 0, f"weight_decay must be >= 0, got {self.weight_decay}")
        check(0 <= self.ema_decay < 1, f"ema_decay must be in [0, 1), got {self.ema_decay}")
        check(self.grad_clip >= 0, f"grad_clip must be >= 0, got {self.grad_clip}")
        for name in ("num_workers", "load_workers", "threads", "eval_every", "save_every"):
            check(getattr(self, name) >= 0, f"{name} must be >= 0, got {getattr(self, name)}")
        check(self.log_every >= 1, f"log_every must be >= 1, got {self.log_every}")
        check(self.eval_episodes >= 0, f"eval_episodes must be >= 0, got {self.eval_episodes}")
        check(
            self.eval_ddim_steps >= 1, f"eval_ddim_steps must be >= 1, got {self.eval_ddim_steps}"
        )
        check(self.eval_num_samples >= 1, "eval_num_samples must be >= 1")
        check(
            self.dist_timeout_min > 0, f"dist_timeout_min must be > 0, got {self.dist_timeout_min}"
        )
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


def _flag(name: str) -> str:
    return "--" + name.split(".")[-1].replace("_", "-")


def build_parser() -> argparse.ArgumentParser:
    """Flags for every :class:`TrainConfig` field (nested ``dataset.x`` fields as ``--x``)."""
    parser = argparse.ArgumentParser(
        description="Train the Track2Act track model on t2a_sim episodes and/or user videos. "
        "Settings: defaults < --config YAML < flags. Multi-GPU: torchrun --nproc_per_node=G "
        "training/train_tracks.py ...",
    )
    parser.add_argument(
        "--config", default="", help="YAML file of TrainConfig fields (nested 'dataset:' section)"
    )
    for spec in fields(TrainConfig):
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        help_text = f"{spec.doc} (default: {default!r})".replace("%", "%%")
        kwargs: dict[str, Any] = {
            "dest": spec.name,
            "default": argparse.SUPPRESS,
            "help": help_text,
        }
        metavar = spec.name.split(".")[-1].upper()
        if spec.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.type is tuple:
            kwargs.update(nargs="*", type=spec.elem_type, metavar=metavar)
        else:
            kwargs.update(type=spec.type, metavar=metavar)
        if spec.name == "model":
            kwargs.update(choices=sorted(T2A_models), metavar=None)
        parser.add_argument(_flag(spec.name), **kwargs)
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the ``--config`` YAML, then explicit flags."""
    args = vars(build_parser().parse_args(argv))
    path = args.pop("config")
    overrides = {name.replace(".", "__"): value for name, value in args.items()}
    if path:
        return load_yaml(TrainConfig, path, **overrides)
    return from_dict(TrainConfig, {name.replace("__", "."): v for name, v in overrides.items()})


# -------------------------------------------------------------------------------------------
# Distributed setup
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Runtime:
    """Where this process runs: rank, world size, device, mixed precision."""

    rank: int
    world: int
    device: torch.device
    amp_dtype: torch.dtype | None  # None = fp32

    @property
    def main(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()


def setup_runtime(cfg: TrainConfig) -> Runtime:
    """Join the torchrun process group if there is one, pick the device and precision."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = 0
    want_cuda = cfg.device != "cpu" and torch.cuda.is_available()
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise RuntimeError(f"device {cfg.device!r} requested but CUDA is not available")
    if world > 1:
        timeout = datetime.timedelta(minutes=cfg.dist_timeout_min)
        dist.init_process_group("nccl" if want_cuda else "gloo", timeout=timeout)
        rank = dist.get_rank()
    if want_cuda:
        # TF32 matmuls and tuned convolutions: the images never change size within a run.
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
        torch.backends.cudnn.benchmark = True
        local = int(os.environ.get("LOCAL_RANK", "0"))
        device = torch.device(f"cuda:{local}" if world > 1 else cfg.device.replace("auto", "cuda"))
        torch.cuda.set_device(device)
    else:
        device = torch.device("cpu")
    amp_dtype = None
    if device.type == "cuda" and cfg.amp != "off":
        if cfg.amp == "bf16" or (cfg.amp == "auto" and torch.cuda.is_bf16_supported()):
            amp_dtype = torch.bfloat16
        else:
            amp_dtype = torch.float16
    if cfg.batch_size % world:
        raise ValueError(f"batch_size {cfg.batch_size} is not divisible by {world} processes")
    return Runtime(rank, world, device, amp_dtype)


# -------------------------------------------------------------------------------------------
# Pieces of the training loop
# -------------------------------------------------------------------------------------------


class DenoisingLoss(nn.Module):
    """``forward(batch) = model.compute_loss(batch)``, so DDP can wrap the loss computation."""

    def __init__(self, model: TrackDiT) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.compute_loss(batch)


def lr_factor(step: int, cfg: TrainConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warmup, then cosine to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)


def load_clips(cfg: TrainConfig, rt: Runtime) -> tuple[list[Clip], list[Clip]]:
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


def save_run_checkpoint(
    directory: Path,
    ema: TrackDiT,
    raw: TrackDiT,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    epoch: int,
    cfg: TrainConfig,
    data_stats: dict[str, Any],
) -> None:
    """Write the export and the training state to ``directory``, replacing it atomically."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    save_checkpoint(ema, tmp)
    torch.save(
        {
            "model": raw.state_dict(),
            "ema": ema.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(),
            "step": step,
            "epoch": epoch,
        },
        tmp / TRAIN_STATE_NAME,
    )
    (tmp / TRAIN_CONFIG_NAME).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
    (tmp / DATA_STATS_NAME).write_text(json.dumps({**data_stats, "step": step}, indent=2) + "\n")
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def resume_directory(cfg: TrainConfig, out: Path) -> Path | None:
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        last = out / "last"
        return last if (last / TRAIN_STATE_NAME).is_file() else None
    path = Path(cfg.resume)
    if not (path / TRAIN_STATE_NAME).is_file():
        raise FileNotFoundError(f"cannot resume: no {TRAIN_STATE_NAME} in {path}")
    return path


def _best_so_far(out: Path) -> float:
    """Validation ADE of ``OUT/best`` (so a resumed run only replaces it with a better one)."""
    path = out / "best" / DATA_STATS_NAME
    if path.is_file():
        return float(json.loads(path.read_text()).get("val_ade_px", math.inf))
    return math.inf


class CsvLog:
    """Append-only CSV log (a resumed run keeps adding to the same file)."""

    def __init__(self, path: Path) -> None:
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=LOG_COLUMNS)
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in LOG_COLUMNS})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def _tensorboard(out: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("note: tensorboard is not installed; logging to log.csv only")
        return None
    return SummaryWriter(str(out / "tb"))


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
    if not cfg.out:
        raise ValueError("--out is required")
    rt = setup_runtime(cfg)
    try:
        return _train(cfg, rt)
    finally:
        if rt.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def _train(cfg: TrainConfig, rt: Runtime) -> Path:
    from tqdm import tqdm

    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    resume_from = resume_directory(cfg, out)

    train_clips, val_clips = load_clips(cfg, rt)
    dcfg = cfg.dataset
    per_rank = cfg.batch_size // rt.world
    repeat = max(1, math.ceil(MIN_EPOCH_BATCHES * cfg.batch_size / len(train_clips)))
    train_set = TrackDataset(train_clips, dcfg, augment=True, seed=cfg.seed, repeat=repeat)
    if cfg.eval_episodes and len(val_clips) > cfg.eval_episodes:
        # Evenly spread over the (split, task, seed)-sorted list, so every task is represented.
        pick = np.linspace(0, len(val_clips) - 1, cfg.eval_episodes).round().astype(int)
        val_clips = [val_clips[i] for i in np.unique(pick)]
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
    ema = copy.deepcopy(raw).eval().requires_grad_(False)
    data_stats = {
        "displacement_scale": stats.displacement_scale,
        "first_step_velocity": first_step_velocity(train_set),
        "train_clips": len(train_clips),
        "val_clips": len(val_clips),
        "train_splits": sorted({c.split for c in train_clips}),
    }

    optimizer = make_optimizer(raw, cfg)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, cfg))
    scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
    step, epoch = 0, 0
    if resume_from is not None:
        state = torch.load(
            resume_from / TRAIN_STATE_NAME, map_location=rt.device, weights_only=True
        )
        raw.load_state_dict(state["model"])
        ema.load_state_dict(state["ema"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        step, epoch = int(state["step"]), int(state["epoch"]) + 1
        if rt.main:
            print(f"resumed from {resume_from} at step {step}")

    # Diffusion noise and steps come from torch's global generator: seeded per (run, rank, step)
    # so that ranks draw different noise, and a resumed run draws what a fresh seed would.
    torch.manual_seed(int(np.random.SeedSequence([cfg.seed, rt.rank, step]).generate_state(1)[0]))
    loss_module: nn.Module = DenoisingLoss(raw)
    if rt.world > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=ids)
    sampler = DistributedSampler(
        train_set, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(
        train_set,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_tracks,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
    )
    if len(loader) == 0:
        raise ValueError(f"an epoch of {len(train_set)} samples holds no batch of {per_rank}")

    log = tb = None
    if rt.main:
        (out / TRAIN_CONFIG_NAME).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        log = CsvLog(out / "log.csv")
        tb = _tensorboard(out)
        n_params = raw.num_parameters()
        print(
            f"{cfg.model} ({n_params / 1e6:.2f} M parameters) on {rt.device} x{rt.world}, "
            f"amp={rt.amp_dtype}, {len(train_clips)} train / {len(val_clips)} val clips, "
            f"displacement scale {stats.displacement_scale:.4f}"
        )
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (rt.main and cfg.progress))
    autocast = (
        torch.autocast(rt.device.type, dtype=rt.amp_dtype)
        if rt.amp_dtype is not None
        else nullcontext()
    )
    best_ade = _best_so_far(out)
    started = time.perf_counter()
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    grad_norm = torch.zeros(())

    def checkpoint(name: str, metrics: dict[str, float] | None = None) -> None:
        stats_now = {**data_stats, **(metrics or {})}
        save_run_checkpoint(
            out / name, ema, raw, optimizer, scheduler, scaler, step, epoch, cfg, stats_now
        )

    def validate() -> dict[str, float]:
        if not val_set.clips:
            return {}
        res = evaluate(
            ema,
            val_set,
            samplers=[("ddim", cfg.eval_ddim_steps)],
            num_samples=cfg.eval_num_samples,
            batch_size=per_rank,
            seed=cfg.seed,
            device=rt.device,
        )["all"][f"model-ddim{cfg.eval_ddim_steps}"]
        return {
            "val_ade_px": res["ade_px"],
            "val_fde_px": res["fde_px"],
            "val_min_ade_px": res["min_ade_px"],
            "val_delta_avg": res["delta_avg"],
        }

    while step < cfg.max_steps:
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            batch = {
                k: batch[k].to(rt.device, non_blocking=True)
                for k in ("image0", "goal", "tracks", "mask")
            }
            with autocast:
                loss = loss_module(batch)
            optimizer.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.unscale_(optimizer)
            if cfg.grad_clip > 0:
                grad_norm = nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
            scaler.step(optimizer)
            scaler.update()
            scheduler.step()
            step += 1
            update_ema(ema, raw, min(cfg.ema_decay, (1 + step) / (10 + step)))
            window_loss += float(loss.detach())
            window_n += 1
            bar.update()

            if step % cfg.log_every == 0 or step == cfg.max_steps:
                mean_loss = torch.tensor([window_loss, window_n], dtype=torch.float64)
                if rt.world > 1:
                    mean_loss = mean_loss.to(rt.device)
                    dist.all_reduce(mean_loss)
                now = time.perf_counter()
                row = {
                    "step": step,
                    "epoch": epoch,
                    "elapsed_s": round(now - started, 2),
                    "lr": scheduler.get_last_lr()[0],
                    "loss": float(mean_loss[0] / mean_loss[1]),
                    "grad_norm": float(grad_norm),
                    "samples_per_s": round(window_n * cfg.batch_size / (now - window_start), 2),
                }
                window_loss, window_n, window_start = 0.0, 0, now
                if rt.main:
                    bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}")
                    log.write(row)
                    if tb is not None:
                        for key in ("loss", "lr", "grad_norm", "samples_per_s"):
                            tb.add_scalar(f"train/{key}", row[key], step)

            final = step == cfg.max_steps
            if (cfg.eval_every and step % cfg.eval_every == 0) or final:
                if rt.main:
                    metrics = validate()
                    if metrics:
                        bar.write(
                            f"step {step}: val ADE {metrics['val_ade_px']:.2f} px, "
                            f"FDE {metrics['val_fde_px']:.2f} px, "
                            f"delta_avg {metrics['val_delta_avg']:.3f}"
                        )
                        log.write({"step": step, "epoch": epoch, **metrics})
                        if tb is not None:
                            for key, value in metrics.items():
                                tb.add_scalar(f"val/{key[4:]}", value, step)
                        if metrics["val_ade_px"] < best_ade:
                            best_ade = metrics["val_ade_px"]
                            checkpoint("best", metrics)
                rt.barrier()
            if (cfg.save_every and step % cfg.save_every == 0) or final:
                if rt.main:
                    checkpoint("last")
                rt.barrier()
            if final:
                break
        epoch += 1

    bar.close()
    if rt.main:
        log.close()
        if tb is not None:
            tb.close()
        print(
            f"done: {step} steps in {time.perf_counter() - started:.1f} s; export in {out / 'last'}"
        )
    return out / "last"


def main(argv: list[str] | None = None) -> Path:
    return train(parse_config(argv))


if __name__ == "__main__":
    main()
