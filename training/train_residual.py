"""Train the residual policy (Track2Act section 2.4) by behaviour cloning on demonstrations.

The demos come from ``training/residual_data.py``; ``--action-mode residual`` (default) learns
plan corrections ``Delta a``, ``--action-mode absolute`` the hand poses themselves (the paper's
"actions instead of residuals" ablation; add ``--no-use-plan`` for its no-plan variant). One
script for one process or many (``torchrun --nproc_per_node=G training/train_residual.py ...``).
Settings: the :class:`TrainConfig` defaults, then ``--config FILE.yaml``, then the command line.

Output directory ``OUT``::

    OUT/train_config.json       the resolved settings
    OUT/log.csv                 step, loss, lr, grad norm, throughput, validation metrics
    OUT/tb/                     TensorBoard events (only if tensorboard is installed)
    OUT/last/                   latest checkpoint
    OUT/best/                   checkpoint with the lowest validation loss so far

Each checkpoint directory is a ``save_checkpoint`` export of the EMA weights (``config.json``,
``model.safetensors``, ``stats.json``: what ``PolicyRunner`` and the controller node load), plus
``train_state.pt`` (raw and EMA weights, optimizer, scheduler, grad scaler, step) for
``--resume``, ``train_config.json`` and ``data_stats.json``.

Evaluation every ``eval_every`` steps (rank 0, EMA weights): the behaviour-cloning loss and its
errors on the demos of held-out episode seeds and, with ``--closed-loop-eval N``, N episodes of
those seeds run in closed loop in t2a_sim (``run_episode`` with the policy behind
``PolicyRunner``), each once as planned and once with a grasp offset of ``eval_grasp_offset_m``
injected into the plan: success rates with and without the offset, next to the open-loop
controller's on the same episodes (computed once).

Training choices, and why:

- optimizer, schedule, EMA, mixed precision and DDP set-up are ``train_tracks``' (imported): the
  same reasons hold, and one policy for both trainers is easier to reason about;
- action normalisation statistics (``PolicyStats``: RMS of the residual translations and
  rotations) come from the training demos, so both residual parts are about unit size;
- one sample per recorded control tick, labelled with the chunk of the next ``h`` plan steps,
  masked past the plan's end (ACT's convention);
- the best checkpoint is chosen by validation loss, the one number every run has; the
  closed-loop success rate is too noisy at a few episodes to pick checkpoints by.
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import shutil
import sys
import time
import zlib
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

from t2a_bringup.core.episode import Reference, expert_reference, run_episode
from t2a_common.core.config import check, nested, param, to_dict
from t2a_control.core.controller import ControllerConfig
from t2a_control.core.policy import (
    ACTION_MODES,
    PolicyConfig,
    PolicyStats,
    ResidualPolicy,
    load_checkpoint,
    load_config,
    num_parameters,
    save_checkpoint,
)
from t2a_control.core.policy_runtime import PolicyRunner
from training.residual_data import (
    DemoConfig,
    DemoDataConfig,
    DemoRef,
    ResidualDataset,
    add_config_flags,
    collate_residual,
    config_from_flags,
    find_demos,
    load_demos,
    nominal_T_body_cam,
    read_controller_config,
    read_demo_config,
    select_demos,
)
from training.track_data import SIM_SPLITS
from training.train_tracks import (
    AMP_MODES,
    TRAIN_STATE_NAME,
    Runtime,
    _tensorboard,
    lr_factor,
    make_optimizer,
    resume_directory,
    setup_runtime,
    update_ema,
)

TRAIN_CONFIG_NAME = "train_config.json"
DATA_STATS_NAME = "data_stats.json"
# An epoch lists every tick often enough for at least this many batches (as in train_tracks).
MIN_EPOCH_BATCHES = 50
VAL_METRICS = (
    "loss",
    "loss_translation",
    "loss_rotation",
    "loss_gripper",
    "translation_error_m",
    "rotation_error_deg",
    "gripper_accuracy",
)
CLOSED_LOOP_METRICS = (
    "cl_success",
    "cl_success_offset",
    "cl_open_loop_success",
    "cl_open_loop_success_offset",
)
LOG_COLUMNS = (
    "step",
    "epoch",
    "elapsed_s",
    "lr",
    "loss",
    "grad_norm",
    "samples_per_s",
    *(f"val_{m}" for m in VAL_METRICS),
    *CLOSED_LOOP_METRICS,
)


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """Everything a training run needs; saved as ``train_config.json`` next to every export."""

    data: tuple[str, ...] = param((), "demo directories (written by training/residual_data.py)")
    splits: tuple[str, ...] = param((), f"sim splits to train on (some of {SIM_SPLITS}); () = all")
    out: str = param("", "output directory (logs, checkpoints); required")
    resume: str = param(
        "", "'' = fresh run; 'auto' = continue OUT/last if it exists; or a checkpoint directory"
    )
    batch_size: int = param(64, "global batch size (split evenly over DDP processes)")
    max_steps: int = param(20_000, "optimizer steps of the whole run (the schedule's length)")
    lr: float = param(3e-4, "peak learning rate")
    min_lr_ratio: float = param(0.05, "final learning rate / peak of the cosine decay")
    warmup_steps: int = param(500, "linear warmup steps")
    weight_decay: float = param(0.05, "AdamW weight decay (weight matrices only)")
    ema_decay: float = param(0.999, "EMA decay of the exported weights (per step)")
    grad_clip: float = param(1.0, "max global gradient norm; 0 = no clipping")
    amp: str = param("auto", f"mixed precision on CUDA, one of {AMP_MODES}; always off on CPU")
    device: str = param("auto", "auto (cuda if available), cpu, cuda; DDP uses cuda:LOCAL_RANK")
    num_workers: int = param(2, "DataLoader worker processes per training process")
    load_workers: int = param(4, "threads that read and resize demos at start-up")
    threads: int = param(0, "torch CPU threads per process; 0 = torch's default")
    seed: int = param(0, "seed of initialisation, data order and augmentation")
    log_every: int = param(50, "steps between log rows")
    eval_every: int = param(1000, "steps between evaluations; 0 = only at the end")
    save_every: int = param(1000, "steps between checkpoints of OUT/last; 0 = only at the end")
    closed_loop_eval: int = param(
        0,
        "closed-loop sim episodes (held-out seeds) per evaluation, each with and without a grasp "
        "offset; 0 = off",
    )
    eval_grasp_offset_m: float = param(
        0.03, "grasp offset injected into the plan in the offset half of the closed loop (m)"
    )
    progress: bool = param(True, "show a tqdm progress bar")
    dist_timeout_min: float = param(30.0, "DDP collective timeout (min); ranks wait this long")
    policy: PolicyConfig = nested(PolicyConfig, "architecture, horizon, chunk and action mode")
    dataset: DemoDataConfig = nested(DemoDataConfig, "train/validation split, augmentation")

    def __post_init__(self) -> None:
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
        check(
            self.closed_loop_eval >= 0,
            f"closed_loop_eval must be >= 0 episodes, got {self.closed_loop_eval}",
        )
        check(
            math.isfinite(self.eval_grasp_offset_m) and self.eval_grasp_offset_m >= 0,
            f"eval_grasp_offset_m must be finite and >= 0 m, got {self.eval_grasp_offset_m}",
        )
        check(
            self.dist_timeout_min > 0, f"dist_timeout_min must be > 0, got {self.dist_timeout_min}"
        )


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Flags for every :class:`TrainConfig` field (nested ``policy.x``/``dataset.x`` as ``--x``)."""
    parser = argparse.ArgumentParser(
        description="Train the Track2Act residual policy by behaviour cloning on demos from "
        "training/residual_data.py. Settings: defaults < --config YAML < flags. Multi-GPU: "
        "torchrun --nproc_per_node=G training/train_residual.py ...",
    )
    parser.add_argument(
        "--config",
        default="",
        help="YAML file of TrainConfig fields (nested 'policy:' and 'dataset:' sections)",
    )
    add_config_flags(
        parser, TrainConfig, choices={"amp": AMP_MODES, "policy.action_mode": ACTION_MODES}
    )
    return parser


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the ``--config`` YAML, then explicit flags."""
    args = vars(build_parser().parse_args(argv))
    path = args.pop("config")
    return config_from_flags(TrainConfig, args, path)


# -------------------------------------------------------------------------------------------
# Pieces of the training loop
# -------------------------------------------------------------------------------------------


class BCLoss(nn.Module):
    """``forward(batch) = model.compute_loss(batch)``, so DDP can wrap the loss computation."""

    def __init__(self, model: ResidualPolicy) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, float]]:
        return self.model.compute_loss(batch)


def load_datasets(
    cfg: TrainConfig, policy: PolicyConfig
) -> tuple[ResidualDataset, ResidualDataset, list[DemoRef]]:
    """Training and validation datasets for ``policy``, and the held-out demos for the closed
    loop."""
    if not cfg.data:
        raise ValueError("no demos: give --data DIR [DIR ...] (from training/residual_data.py)")
    for root in cfg.data:
        demo_cfg = read_demo_config(root)
        if demo_cfg.horizon != policy.horizon:
            raise ValueError(
                f"{root} was generated with horizon {demo_cfg.horizon}, the policy has "
                f"--horizon {policy.horizon}; they must match"
            )
    refs = find_demos(cfg.data, cfg.splits)
    train_refs = select_demos(refs, "train", cfg.dataset)
    val_refs = select_demos(refs, "val", cfg.dataset)
    # Closed-loop scenes: every held-out scene the planner could plan, also those whose demo
    # failed, so the success rates are not only over scenes the demonstrator solved.
    scenes = select_demos(refs, "val", dataclasses.replace(cfg.dataset, include_failed=True))
    if not train_refs:
        raise ValueError(
            f"no training demos among {len(refs)} in {list(cfg.data)} (splits "
            f"{list(cfg.splits) or 'all'}; failed ones count only with --include-failed)"
        )
    train = ResidualDataset(
        load_demos(train_refs, policy, cfg.load_workers), policy, cfg.dataset,
        augment=True, seed=cfg.seed,
    )  # fmt: skip
    val = ResidualDataset(load_demos(val_refs, policy, cfg.load_workers), policy)
    return train, val, scenes


class _Repeated(torch.utils.data.Dataset):
    """A dataset listed ``repeat`` times, so a tiny demo set does not restart the loader every
    few steps (the sampler shuffles across the copies)."""

    def __init__(self, base: ResidualDataset, repeat: int) -> None:
        self.base, self.repeat = base, repeat

    def __len__(self) -> int:
        return len(self.base) * self.repeat

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.base[index % len(self.base)]


@torch.no_grad()
def validate(
    model: ResidualPolicy, dataset: ResidualDataset, batch_size: int, device: torch.device
) -> dict[str, float]:
    """Behaviour-cloning metrics over the whole of ``dataset``, weighted by supervised rows."""
    if len(dataset) == 0:
        return {}
    loader = DataLoader(dataset, batch_size=batch_size, collate_fn=collate_residual)
    totals = dict.fromkeys(VAL_METRICS, 0.0)
    weight = 0.0
    was_training = model.training
    model.eval()
    for batch in loader:
        batch = {k: v.to(device) for k, v in batch.items()}
        _, metrics = model.compute_loss(batch)
        w = float(batch["action_mask"].sum())
        for key in VAL_METRICS:
            totals[key] += metrics[key] * w
        weight += w
    model.train(was_training)
    return {f"val_{k}": v / max(weight, 1.0) for k, v in totals.items()}


class TrackFeeder:
    """The controller's ``Policy``: ``PolicyRunner`` plus the episode's tracks.

    The in-process sim loop hands the policy no tracks (its observation's ``tracks`` is None);
    on the robot the controller node gets them from the perception topic.
    """

    def __init__(self, runner: PolicyRunner, tracks_px: np.ndarray) -> None:
        self.runner = runner
        self.tracks_px = np.asarray(tracks_px)

    def reset(self) -> None:
        self.runner.reset()

    def predict(self, obs: dict[str, Any]) -> dict[str, Any]:
        return self.runner.predict({**obs, "tracks": self.tracks_px})


def grasp_offset(task: str, seed: int, length_m: float) -> tuple[float, float, float]:
    """A horizontal offset of ``length_m`` in a direction fixed per episode (body frame, m).

    Horizontal, so the injected error is a misplaced grasp, not a push into the table.
    """
    rng = np.random.default_rng([seed, zlib.crc32(task.encode()), 17])
    a = rng.uniform(0.0, 2.0 * math.pi)
    return (length_m * math.cos(a), length_m * math.sin(a), 0.0)


class ClosedLoopEval:
    """Closed-loop success of a policy on fixed sim episodes, with and without a grasp offset.

    The episodes' expert references (ground-truth tracks, goal) and the open-loop baseline are
    computed once and reused by every evaluation.
    """

    def __init__(
        self,
        episodes: list[tuple[str, str, int]],
        demo_cfg: DemoConfig,
        controller: ControllerConfig,
        offset_m: float,
    ) -> None:
        self.episodes = episodes
        self.demo_cfg = demo_cfg
        self.controller = controller
        self.offset_m = offset_m
        self.T_body_cam = nominal_T_body_cam()
        self._refs: dict[tuple[str, str, int], Reference] = {}
        self._baseline: dict[str, float] | None = None

    def _episodes(self, offset: bool):
        for split, task, seed in self.episodes:
            key = (split, task, seed)
            extra = {"grasp_offset_m": grasp_offset(task, seed, self.offset_m)} if offset else {}
            cfg = self.demo_cfg.episode_config(task, split, seed, **extra)
            if key not in self._refs:
                self._refs[key] = expert_reference(cfg)
            yield cfg, self._refs[key]

    def _rate(self, policy_for, mode: str, offset: bool, failures: dict[str, int]) -> float:
        controller = dataclasses.replace(self.controller, mode=mode)
        ok = 0
        for cfg, ref in self._episodes(offset):
            result = run_episode(
                cfg, T_body_cam=self.T_body_cam, controller_cfg=controller,
                policy=policy_for(ref), reference=ref,
            )  # fmt: skip
            ok += result.success
            if not result.success:
                failures[result.failure] = failures.get(result.failure, 0) + 1
        return ok / max(len(self.episodes), 1)

    def __call__(
        self, model: ResidualPolicy, device: torch.device
    ) -> tuple[dict[str, float], dict[str, int]]:
        """``(metrics, failure counts of the policy's episodes)``."""
        if self._baseline is None:
            ignored: dict[str, int] = {}
            self._baseline = {
                "cl_open_loop_success": self._rate(lambda ref: None, "open_loop", False, ignored),
                "cl_open_loop_success_offset": self._rate(
                    lambda ref: None, "open_loop", True, ignored
                ),
            }
        was_training = model.training
        failures: dict[str, int] = {}

        def policy_for(ref: Reference) -> TrackFeeder:
            return TrackFeeder(PolicyRunner(model=model, device=device), ref.tracks_px)

        mode = model.config.action_mode
        metrics = {
            "cl_success": self._rate(policy_for, mode, False, failures),
            "cl_success_offset": self._rate(policy_for, mode, True, failures),
            **self._baseline,
        }
        model.train(was_training)
        return metrics, failures


def closed_loop_episodes(refs: list[DemoRef], n: int) -> list[tuple[str, str, int]]:
    """``n`` distinct ``(split, task, seed)`` scenes among ``refs``, evenly spread."""
    scenes = sorted({(r.split, r.task, r.seed) for r in refs})
    if n >= len(scenes):
        return scenes
    pick = np.unique(np.linspace(0, len(scenes) - 1, n).round().astype(int))
    return [scenes[i] for i in pick]


def save_run_checkpoint(
    directory: Path,
    ema: ResidualPolicy,
    raw: ResidualPolicy,
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


def _best_so_far(out: Path) -> float:
    """Validation loss of ``OUT/best`` (so a resumed run only replaces it with a better one)."""
    path = out / "best" / DATA_STATS_NAME
    if path.is_file():
        return float(json.loads(path.read_text()).get("val_loss", math.inf))
    return math.inf


class CsvLog:
    """Append-only CSV log with fixed columns (a resumed run keeps adding to the same file)."""

    def __init__(self, path: Path, columns: tuple[str, ...] = LOG_COLUMNS) -> None:
        self.columns = columns
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=columns)
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.columns})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


# -------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) training; returns the final export directory ``OUT/last``."""
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
    # A resumed run keeps its architecture and action mode, whatever the flags say now.
    policy_cfg = cfg.policy if resume_from is None else load_config(resume_from)
    if policy_cfg != cfg.policy and rt.main:
        print(f"note: resuming {resume_from}: its architecture {policy_cfg} overrides the flags")

    train_set, val_set, val_scenes = load_datasets(cfg, policy_cfg)
    per_rank = cfg.batch_size // rt.world
    repeat = max(1, math.ceil(MIN_EPOCH_BATCHES * cfg.batch_size / len(train_set)))
    epoch_set = _Repeated(train_set, repeat)

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts)
    if resume_from is None:
        stats = PolicyStats.from_residuals(train_set.residual_rows())
        raw = ResidualPolicy(cfg.policy, stats)
    else:
        raw = load_checkpoint(resume_from)  # stats too are the run's, not recomputed
        stats = raw.stats
    raw = raw.to(rt.device).train()
    ema = copy.deepcopy(raw).eval().requires_grad_(False)
    data_stats = {
        "translation_scale_m": stats.translation_scale_m,
        "rotation_scale_rad": stats.rotation_scale_rad,
        "train_demos": len(train_set.demos),
        "train_ticks": len(train_set),
        "val_demos": len(val_set.demos),
        "val_ticks": len(val_set),
        "action_mode": raw.config.action_mode,
    }

    closed_loop = None
    if cfg.closed_loop_eval and rt.main:
        scenes_from = val_scenes or select_demos(
            find_demos(cfg.data, cfg.splits), "all", cfg.dataset
        )
        if not val_scenes:
            print("note: no held-out demos; the closed loop runs on training scenes")
        closed_loop = ClosedLoopEval(
            closed_loop_episodes(scenes_from, cfg.closed_loop_eval),
            read_demo_config(cfg.data[0]),
            read_controller_config(cfg.data[0]),
            cfg.eval_grasp_offset_m,
        )

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

    loss_module: nn.Module = BCLoss(raw)
    if rt.world > 1:
        ids = [rt.device.index] if rt.device.type == "cuda" else None
        loss_module = DistributedDataParallel(loss_module, device_ids=ids)
    sampler = DistributedSampler(
        epoch_set, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=cfg.seed, drop_last=True
    )
    loader = DataLoader(
        epoch_set,
        batch_size=per_rank,
        sampler=sampler,
        num_workers=cfg.num_workers,
        collate_fn=collate_residual,
        pin_memory=rt.device.type == "cuda",
        drop_last=True,
        persistent_workers=False,
    )
    if len(loader) == 0:
        raise ValueError(f"an epoch of {len(epoch_set)} samples holds no batch of {per_rank}")

    log = tb = None
    if rt.main:
        (out / TRAIN_CONFIG_NAME).write_text(json.dumps(to_dict(cfg), indent=2) + "\n")
        log = CsvLog(out / "log.csv")
        tb = _tensorboard(out)
        print(
            f"residual policy ({num_parameters(raw) / 1e6:.2f} M parameters, "
            f"{raw.config.action_mode}) on {rt.device} x{rt.world}, amp={rt.amp_dtype}, "
            f"{len(train_set.demos)} train demos ({len(train_set)} ticks) / "
            f"{len(val_set.demos)} val demos, residual scale {stats.translation_scale_m:.4f} m "
            f"{stats.rotation_scale_rad:.4f} rad"
        )
    bar = tqdm(total=cfg.max_steps, initial=step, disable=not (rt.main and cfg.progress))
    autocast = (
        torch.autocast(rt.device.type, dtype=rt.amp_dtype)
        if rt.amp_dtype is not None
        else nullcontext()
    )
    best_loss = _best_so_far(out)
    started = time.perf_counter()
    window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
    grad_norm = torch.zeros(())

    def checkpoint(name: str, metrics: dict[str, float] | None = None) -> None:
        stats_now = {**data_stats, **(metrics or {})}
        save_run_checkpoint(
            out / name, ema, raw, optimizer, scheduler, scaler, step, epoch, cfg, stats_now
        )

    def evaluate() -> dict[str, float]:
        metrics = validate(ema, val_set, per_rank, rt.device)
        if closed_loop is not None:
            cl, failures = closed_loop(ema, rt.device)
            metrics.update(cl)
            if failures:
                bar.write(f"step {step}: closed-loop failures {failures}")
        return metrics

    while step < cfg.max_steps:
        train_set.set_epoch(epoch)
        sampler.set_epoch(epoch)
        for batch in loader:
            batch = {k: v.to(rt.device, non_blocking=True) for k, v in batch.items()}
            with autocast:
                loss, _ = loss_module(batch)
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
                    metrics = evaluate()
                    if metrics:
                        bar.write(f"step {step}: " + _describe(metrics))
                        log.write({"step": step, "epoch": epoch, **metrics})
                        if tb is not None:
                            for key, value in metrics.items():
                                tb.add_scalar(f"eval/{key}", value, step)
                        if metrics.get("val_loss", math.inf) < best_loss:
                            best_loss = metrics["val_loss"]
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


def _describe(metrics: dict[str, float]) -> str:
    parts = []
    if "val_loss" in metrics:
        parts.append(
            f"val loss {metrics['val_loss']:.4f}, {metrics['val_translation_error_m'] * 100:.2f} "
            f"cm, {metrics['val_rotation_error_deg']:.2f} deg, gripper "
            f"{metrics['val_gripper_accuracy']:.2f}"
        )
    if "cl_success" in metrics:
        parts.append(
            f"closed loop {metrics['cl_success']:.2f} (offset {metrics['cl_success_offset']:.2f}); "
            f"open loop {metrics['cl_open_loop_success']:.2f} "
            f"(offset {metrics['cl_open_loop_success_offset']:.2f})"
        )
    return "; ".join(parts)


def main(argv: list[str] | None = None) -> Path:
    return train(parse_config(argv))


if __name__ == "__main__":
    main()
