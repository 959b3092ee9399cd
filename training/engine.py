"""The training machinery ``train_tracks.py`` and ``train_residual.py`` share.

A trainer brings its config (a :class:`LoopConfig` subclass), its data, its model with an
``export(model, directory)`` function, a loss module and an evaluation; this module does the rest
the same way for both:

- the command line: one flag per config field, defaults < ``--config`` YAML < flags;
- one process or many (torchrun: DistributedDataParallel, a DistributedSampler, rank 0 logs,
  evaluates and saves), device and mixed-precision choice;
- AdamW without weight decay on biases and norm gains, linear warmup then cosine decay, gradient
  clipping, an EMA of the weights whose decay ramps up as ``(1 + n) / (10 + n)``;
- ``OUT/log.csv`` (and TensorBoard when installed), periodic evaluation of the EMA weights,
  ``OUT/best`` by one validation metric, ``OUT/last`` every ``save_every`` steps, ``--resume``.

A checkpoint directory holds the trainer's export of the EMA weights plus ``train_state.pt``
(raw and EMA weights, optimizer, scheduler, grad scaler, step, epoch), ``train_config.json`` and
``data_stats.json``; it is written to a temporary directory and renamed into place, so an
interrupted save never leaves a half-written ``OUT/last``.
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
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import nullcontext
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from t2a_common.core.config import check, fields, from_dict, load_yaml, param, to_dict

C = TypeVar("C")
T = TypeVar("T")

TRAIN_STATE_NAME = "train_state.pt"
TRAIN_CONFIG_NAME = "train_config.json"
DATA_STATS_NAME = "data_stats.json"
AMP_MODES = ("auto", "bf16", "fp16", "off")
# An epoch lists every sample often enough for at least this many batches: tiny datasets would
# otherwise restart the loader (and its workers) every few steps.
MIN_EPOCH_BATCHES = 50
# The log.csv columns of the training rows; a trainer appends its evaluation metrics.
TRAIN_LOG_COLUMNS = ("step", "epoch", "elapsed_s", "lr", "loss", "grad_norm", "samples_per_s")


# -------------------------------------------------------------------------------------------
# Configuration and command line
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class LoopConfig:
    """The settings of the training loop every trainer has.

    A trainer's ``TrainConfig`` subclasses this (its own fields follow these) and redeclares a
    field to change its default or its doc.
    """

    out: str = param("", "output directory (logs, checkpoints); required")
    resume: str = param(
        "", "'' = fresh run; 'auto' = continue OUT/last if it exists; or a checkpoint directory"
    )
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
    progress: bool = param(True, "show a tqdm progress bar")
    dist_timeout_min: float = param(30.0, "DDP collective timeout (min); ranks wait this long")

    def __post_init__(self) -> None:
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
            self.dist_timeout_min > 0, f"dist_timeout_min must be > 0, got {self.dist_timeout_min}"
        )


L = TypeVar("L", bound=LoopConfig)


def add_config_flags(
    parser: argparse.ArgumentParser,
    cls: type,
    skip: Iterable[str] = (),
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> None:
    """One ``--flag`` per leaf of config ``cls`` (nested ``a.b_c`` as ``--b-c``), docs as help.

    Flags default to "not given" (``argparse.SUPPRESS``), so a YAML file can sit between the
    dataclass defaults and the command line (see :func:`config_from_flags`). ``choices`` maps
    dotted field names to their allowed values.
    """
    skip = set(skip)
    choices = choices or {}
    for spec in fields(cls):
        if spec.name in skip:
            continue
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        kwargs: dict[str, Any] = {
            "dest": spec.name,
            "default": argparse.SUPPRESS,
            "help": f"{spec.doc} (default: {default!r})".replace("%", "%%"),
        }
        metavar = spec.name.split(".")[-1].upper()
        if spec.type is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif spec.type is tuple:
            kwargs.update(nargs="*", type=spec.elem_type, metavar=metavar)
        else:
            kwargs.update(type=spec.type, metavar=metavar)
        if spec.name in choices:
            kwargs.update(choices=list(choices[spec.name]), metavar=None)
        parser.add_argument("--" + spec.name.split(".")[-1].replace("_", "-"), **kwargs)


def config_from_flags(cls: type[C], flags: Mapping[str, Any], yaml_path: str = "") -> C:
    """Defaults, then the YAML file (if any), then the flags given (dotted names)."""
    if yaml_path:
        return load_yaml(cls, yaml_path, **{k.replace(".", "__"): v for k, v in flags.items()})
    return from_dict(cls, dict(flags))


def config_parser(
    cls: type,
    description: str,
    config_help: str,
    choices: Mapping[str, Sequence[Any]] | None = None,
) -> argparse.ArgumentParser:
    """A trainer's parser: ``--config YAML`` plus :func:`add_config_flags` of ``cls``."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="", help=config_help)
    add_config_flags(parser, cls, choices=choices)
    return parser


def parse_flags(cls: type[C], parser: argparse.ArgumentParser, argv: list[str] | None) -> C:
    """``cls`` from a :func:`config_parser`'s arguments: defaults < ``--config`` YAML < flags."""
    args = vars(parser.parse_args(argv))
    path = args.pop("config")
    return config_from_flags(cls, args, path)


# -------------------------------------------------------------------------------------------
# Processes and devices
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


def setup_runtime(cfg: LoopConfig) -> Runtime:
    """Join the torchrun process group if there is one, pick the device and precision.

    bf16 autocast on GPUs that have it, else fp16 (with a grad scaler); fp32 on CPU, where
    autocast is slower than it is worth.
    """
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


def launch(cfg: L, body: Callable[[L, Runtime], Path]) -> Path:
    """``body(cfg, runtime)`` in this process's runtime; leaves the process group afterwards."""
    if not cfg.out:
        raise ValueError("--out is required")
    rt = setup_runtime(cfg)
    try:
        return body(cfg, rt)
    finally:
        if rt.world > 1 and dist.is_initialized():
            dist.destroy_process_group()


def prepare_output(cfg: LoopConfig, rt: Runtime) -> tuple[Path, Path | None]:
    """Apply ``threads`` and create ``OUT`` (rank 0); returns ``(OUT, checkpoint to resume)``."""
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    if rt.main:
        out.mkdir(parents=True, exist_ok=True)
    return out, resume_directory(cfg, out)


def resume_directory(cfg: LoopConfig, out: Path) -> Path | None:
    """The checkpoint ``--resume`` names (``auto``: ``OUT/last`` if it holds a training state)."""
    if not cfg.resume:
        return None
    if cfg.resume == "auto":
        last = out / "last"
        return last if (last / TRAIN_STATE_NAME).is_file() else None
    path = Path(cfg.resume)
    if not (path / TRAIN_STATE_NAME).is_file():
        raise FileNotFoundError(f"cannot resume: no {TRAIN_STATE_NAME} in {path}")
    return path


# -------------------------------------------------------------------------------------------
# Pieces of the training loop
# -------------------------------------------------------------------------------------------


def epoch_repeats(num_samples: int, batch_size: int) -> int:
    """How often an epoch lists every sample, so that it holds ``MIN_EPOCH_BATCHES`` batches."""
    return max(1, math.ceil(MIN_EPOCH_BATCHES * batch_size / num_samples))


def evenly_spread(items: Sequence[T], n: int) -> list[T]:
    """``n`` of ``items`` picked evenly over the (sorted) list, all of them if ``n`` is larger."""
    if n >= len(items):
        return list(items)
    pick = np.unique(np.linspace(0, len(items) - 1, n).round().astype(int))
    return [items[i] for i in pick]


def lr_factor(step: int, cfg: LoopConfig) -> float:
    """Learning-rate multiplier at ``step``: linear warmup, then cosine to ``min_lr_ratio``."""
    if step < cfg.warmup_steps:
        return (step + 1) / cfg.warmup_steps
    progress = min((step - cfg.warmup_steps) / max(1, cfg.max_steps - cfg.warmup_steps), 1.0)
    return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module, cfg: LoopConfig) -> torch.optim.Optimizer:
    """AdamW with weight decay on weight matrices only (decaying biases and norm gains would only
    fight the adaLN-Zero initialisation)."""
    decay = [p for p in model.parameters() if p.requires_grad and p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": cfg.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=(0.9, 0.999))


@torch.no_grad()
def update_ema(ema: nn.Module, model: nn.Module, decay: float) -> None:
    """``ema <- decay * ema + (1 - decay) * model``, parameter by parameter."""
    for e, p in zip(ema.parameters(), model.parameters()):
        e.lerp_(p.detach(), 1.0 - decay)


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=2) + "\n")


def save_run_checkpoint(
    directory: Path,
    export: Callable[[nn.Module, Path], Any],
    ema: nn.Module,
    raw: nn.Module,
    optimizer: torch.optim.Optimizer,
    scheduler: torch.optim.lr_scheduler.LRScheduler,
    scaler: torch.amp.GradScaler,
    step: int,
    epoch: int,
    cfg: LoopConfig,
    data_stats: dict[str, Any],
) -> None:
    """Write ``export(ema, dir)`` and the training state to ``directory``, replacing it
    atomically."""
    tmp = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    export(ema, tmp)
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
    _write_json(tmp / TRAIN_CONFIG_NAME, to_dict(cfg))
    _write_json(tmp / DATA_STATS_NAME, {**data_stats, "step": step})
    old = directory.with_name(f".{directory.name}.old")
    shutil.rmtree(old, ignore_errors=True)
    if directory.exists():
        directory.rename(old)
    tmp.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def best_so_far(out: Path, metric: str) -> float:
    """``metric`` of ``OUT/best`` (so a resumed run only replaces it with a better one)."""
    path = out / "best" / DATA_STATS_NAME
    if path.is_file():
        return float(json.loads(path.read_text()).get(metric, math.inf))
    return math.inf


class CsvLog:
    """Append-only CSV log with fixed columns (a resumed run keeps adding to the same file)."""

    def __init__(self, path: Path, columns: Sequence[str]) -> None:
        self.columns = tuple(columns)
        new = not path.exists()
        self.file = path.open("a", newline="")
        self.writer = csv.DictWriter(self.file, fieldnames=self.columns)
        if new:
            self.writer.writeheader()

    def write(self, row: dict[str, Any]) -> None:
        self.writer.writerow({k: row.get(k, "") for k in self.columns})
        self.file.flush()

    def close(self) -> None:
        self.file.close()


def open_tensorboard(out: Path) -> Any:
    """A ``SummaryWriter`` on ``OUT/tb``, or None (with a note) if tensorboard is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        print("note: tensorboard is not installed; logging to log.csv only")
        return None
    return SummaryWriter(str(out / "tb"))


# -------------------------------------------------------------------------------------------
# The loop
# -------------------------------------------------------------------------------------------


class Trainer:
    """The optimisation state of one run and the loop that advances it.

    Construction builds the EMA copy, optimizer, schedule and grad scaler for ``raw`` and, with
    ``resume_from``, loads their state (``step``, ``epoch``); :meth:`fit` then trains up to
    ``max_steps``. ``export(model, directory)`` writes a model checkpoint (the trainer's format).
    """

    def __init__(
        self,
        cfg: LoopConfig,
        rt: Runtime,
        out: Path,
        raw: nn.Module,
        export: Callable[[nn.Module, Path], Any],
        data_stats: dict[str, Any],
        resume_from: Path | None = None,
    ) -> None:
        self.cfg, self.rt, self.out = cfg, rt, out
        self.raw = raw
        self.ema = copy.deepcopy(raw).eval().requires_grad_(False)
        self.export = export
        self.data_stats = data_stats
        self.per_rank = cfg.batch_size // rt.world
        self.optimizer = make_optimizer(raw, cfg)
        self.scheduler = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda s: lr_factor(s, cfg)
        )
        self.scaler = torch.amp.GradScaler(rt.device.type, enabled=rt.amp_dtype == torch.float16)
        self.step, self.epoch = 0, 0
        self.bar: Any = None
        if resume_from is not None:
            state = torch.load(
                resume_from / TRAIN_STATE_NAME, map_location=rt.device, weights_only=True
            )
            self.raw.load_state_dict(state["model"])
            self.ema.load_state_dict(state["ema"])
            self.optimizer.load_state_dict(state["optimizer"])
            self.scheduler.load_state_dict(state["scheduler"])
            self.scaler.load_state_dict(state["scaler"])
            self.step, self.epoch = int(state["step"]), int(state["epoch"]) + 1
            if rt.main:
                print(f"resumed from {resume_from} at step {self.step}")

    def write(self, message: str) -> None:
        """Print a line without breaking the progress bar."""
        if self.bar is not None:
            self.bar.write(message)
        else:
            print(message)

    def checkpoint(self, name: str, metrics: dict[str, float] | None = None) -> None:
        """Save ``OUT/name`` (export, training state, settings, data stats and ``metrics``)."""
        save_run_checkpoint(
            self.out / name, self.export, self.ema, self.raw, self.optimizer, self.scheduler,
            self.scaler, self.step, self.epoch, self.cfg, {**self.data_stats, **(metrics or {})},
        )  # fmt: skip

    def fit(
        self,
        loss_module: nn.Module,
        dataset: Any,
        collate: Callable[[list[Any]], dict[str, torch.Tensor]],
        *,
        evaluate: Callable[[], dict[str, float]],
        best_metric: str,
        describe: Callable[[dict[str, float]], str],
        eval_tag: Callable[[str], str],
        log_columns: Sequence[str],
        banner: str,
        batch_keys: Sequence[str] | None = None,
    ) -> Path:
        """Train to ``max_steps``; returns ``OUT/last``.

        Args:
            loss_module: ``forward(batch) -> scalar loss`` (DDP wraps it: it only synchronises
                gradients of computations that go through ``forward``).
            dataset: the epoch's samples, with ``set_epoch(epoch)``.
            collate: the DataLoader's ``collate_fn``.
            evaluate: rank 0's evaluation of :attr:`ema` (``{}`` when there is nothing to
                evaluate on), every ``eval_every`` steps and at the end.
            best_metric: the metric (lower is better) that picks ``OUT/best``.
            describe: one line on the metrics for the console.
            eval_tag: the TensorBoard tag of a metric.
            log_columns: the columns of ``log.csv``.
            banner: printed (rank 0) once the run is set up.
            batch_keys: the batch entries the loss needs (None = all).
        """
        from tqdm import tqdm

        cfg, rt, out, raw = self.cfg, self.rt, self.out, self.raw
        if rt.world > 1:
            ids = [rt.device.index] if rt.device.type == "cuda" else None
            loss_module = DistributedDataParallel(loss_module, device_ids=ids)
        sampler = DistributedSampler(
            dataset, num_replicas=rt.world, rank=rt.rank, shuffle=True, seed=cfg.seed,
            drop_last=True,
        )  # fmt: skip
        loader = DataLoader(
            dataset,
            batch_size=self.per_rank,
            sampler=sampler,
            num_workers=cfg.num_workers,
            collate_fn=collate,
            pin_memory=rt.device.type == "cuda",
            drop_last=True,
        )
        if len(loader) == 0:
            raise ValueError(
                f"an epoch of {len(dataset)} samples holds no batch of {self.per_rank}"
            )

        log = tb = None
        if rt.main:
            _write_json(out / TRAIN_CONFIG_NAME, to_dict(cfg))
            log = CsvLog(out / "log.csv", log_columns)
            tb = open_tensorboard(out)
            print(banner)
        self.bar = bar = tqdm(
            total=cfg.max_steps, initial=self.step, disable=not (rt.main and cfg.progress)
        )
        autocast = (
            torch.autocast(rt.device.type, dtype=rt.amp_dtype)
            if rt.amp_dtype is not None
            else nullcontext()
        )
        best = best_so_far(out, best_metric)
        started = time.perf_counter()
        window_loss, window_n, window_start = 0.0, 0, time.perf_counter()
        grad_norm = torch.zeros(())

        while self.step < cfg.max_steps:
            dataset.set_epoch(self.epoch)
            sampler.set_epoch(self.epoch)
            for batch in loader:
                keys = batch if batch_keys is None else batch_keys
                batch = {k: batch[k].to(rt.device, non_blocking=True) for k in keys}
                with autocast:
                    loss = loss_module(batch)
                self.optimizer.zero_grad(set_to_none=True)
                self.scaler.scale(loss).backward()
                self.scaler.unscale_(self.optimizer)
                if cfg.grad_clip > 0:
                    grad_norm = nn.utils.clip_grad_norm_(raw.parameters(), cfg.grad_clip)
                self.scaler.step(self.optimizer)
                self.scaler.update()
                self.scheduler.step()
                self.step += 1
                step = self.step
                update_ema(self.ema, raw, min(cfg.ema_decay, (1 + step) / (10 + step)))
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
                        "epoch": self.epoch,
                        "elapsed_s": round(now - started, 2),
                        "lr": self.scheduler.get_last_lr()[0],
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
                            bar.write(f"step {step}: {describe(metrics)}")
                            log.write({"step": step, "epoch": self.epoch, **metrics})
                            if tb is not None:
                                for key, value in metrics.items():
                                    tb.add_scalar(eval_tag(key), value, step)
                            if metrics.get(best_metric, math.inf) < best:
                                best = metrics[best_metric]
                                self.checkpoint("best", metrics)
                    rt.barrier()
                if (cfg.save_every and step % cfg.save_every == 0) or final:
                    if rt.main:
                        self.checkpoint("last")
                    rt.barrier()
                if final:
                    break
            self.epoch += 1

        bar.close()
        self.bar = None
        if rt.main:
            log.close()
            if tb is not None:
                tb.close()
            print(
                f"done: {self.step} steps in {time.perf_counter() - started:.1f} s; "
                f"export in {out / 'last'}"
            )
        return out / "last"
