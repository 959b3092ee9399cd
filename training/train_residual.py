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

- optimizer, schedule, EMA, mixed precision, DDP set-up, logging, checkpoints and resume are
  ``training/engine.py``'s, shared with ``train_tracks``: the same reasons hold, and one policy
  for both trainers is easier to reason about;
- action normalisation statistics (``PolicyStats``: RMS of the residual translations and
  rotations) come from the training demos, so both residual parts are about unit size;
- one sample per recorded control tick, labelled with the chunk of the next ``h`` plan steps,
  masked past the plan's end (ACT's convention);
- the best checkpoint is chosen by validation loss, the one number every run has; the
  closed-loop success rate is too noisy at a few episodes to pick checkpoints by.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from t2a_bringup.core.episode import Reference, expert_reference, run_episode
from t2a_common.core.config import check, nested, param
from t2a_common.core.types import PointTrackSet
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
from t2a_perception.core.frames import depth_at_points
from training import engine
from training.residual_format import (
    DemoConfig,
    DemoDataConfig,
    DemoRef,
    ResidualDataset,
    collate_residual,
    find_demos,
    load_demos,
    nominal_T_body_cam,
    read_controller_config,
    read_demo_config,
    select_demos,
)
from training.track_data import SIM_SPLITS

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
LOG_COLUMNS = (*engine.TRAIN_LOG_COLUMNS, *(f"val_{m}" for m in VAL_METRICS), *CLOSED_LOOP_METRICS)


@dataclasses.dataclass(frozen=True)
class TrainConfig(engine.LoopConfig):
    """Everything a training run needs; saved as ``train_config.json`` next to every export.

    The loop's settings are :class:`~training.engine.LoopConfig`'s (some with other defaults
    here); the residual policy's follow them.
    """

    # Loop settings whose default or doc differs here (they keep their place in the order).
    batch_size: int = param(64, "global batch size (split evenly over DDP processes)")
    max_steps: int = param(20_000, "optimizer steps of the whole run (the schedule's length)")
    warmup_steps: int = param(500, "linear warmup steps")
    weight_decay: float = param(0.05, "AdamW weight decay (weight matrices only)")
    load_workers: int = param(4, "threads that read and resize demos at start-up")
    seed: int = param(0, "seed of initialisation, data order and augmentation")
    eval_every: int = param(1000, "steps between evaluations; 0 = only at the end")
    data: tuple[str, ...] = param((), "demo directories (written by training/residual_data.py)")
    splits: tuple[str, ...] = param((), f"sim splits to train on (some of {SIM_SPLITS}); () = all")
    closed_loop_eval: int = param(
        0,
        "closed-loop sim episodes (held-out seeds) per evaluation, each with and without a grasp "
        "offset; 0 = off",
    )
    eval_grasp_offset_m: float = param(
        0.03, "grasp offset injected into the plan in the offset half of the closed loop (m)"
    )
    policy: PolicyConfig = nested(PolicyConfig, "architecture, horizon, chunk and action mode")
    dataset: DemoDataConfig = nested(DemoDataConfig, "train/validation split, augmentation")

    def __post_init__(self) -> None:
        bad = sorted(set(self.splits) - set(SIM_SPLITS))
        check(not bad, f"unknown split(s) {bad}; expected some of {SIM_SPLITS}")
        super().__post_init__()
        check(
            self.closed_loop_eval >= 0,
            f"closed_loop_eval must be >= 0 episodes, got {self.closed_loop_eval}",
        )
        check(
            math.isfinite(self.eval_grasp_offset_m) and self.eval_grasp_offset_m >= 0,
            f"eval_grasp_offset_m must be finite and >= 0 m, got {self.eval_grasp_offset_m}",
        )


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Flags for every :class:`TrainConfig` field (nested ``policy.x``/``dataset.x`` as ``--x``)."""
    return engine.config_parser(
        TrainConfig,
        description="Train the Track2Act residual policy by behaviour cloning on demos from "
        "training/residual_data.py. Settings: defaults < --config YAML < flags. Multi-GPU: "
        "torchrun --nproc_per_node=G training/train_residual.py ...",
        config_help="YAML file of TrainConfig fields (nested 'policy:' and 'dataset:' sections)",
        choices={"amp": engine.AMP_MODES, "policy.action_mode": ACTION_MODES},
    )


def parse_config(argv: list[str] | None = None) -> TrainConfig:
    """Defaults, then the ``--config`` YAML, then explicit flags."""
    return engine.parse_flags(TrainConfig, build_parser(), argv)


# -------------------------------------------------------------------------------------------
# Data, loss and evaluation
# -------------------------------------------------------------------------------------------


class BCLoss(nn.Module):
    """``forward(batch)`` = the loss of ``model.compute_loss(batch)``, so DDP can wrap the loss
    computation."""

    def __init__(self, model: ResidualPolicy) -> None:
        super().__init__()
        self.model = model

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model.compute_loss(batch)[0]


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

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

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
    on the robot the controller node gets them from the perception topic. Like that topic, the
    feeder gives a ``PointTrackSet``: ``tracks_px`` (default: the ground truth of ``ref``), the
    depth of their P0 in I0 (default: read off ``ref.depth0``) and I0's intrinsics.
    """

    def __init__(
        self,
        runner: PolicyRunner,
        ref: Reference,
        tracks_px: np.ndarray | None = None,
        depth_m: np.ndarray | None = None,
    ) -> None:
        self.runner = runner
        tracks = np.asarray(ref.tracks_px if tracks_px is None else tracks_px, np.float32)
        if depth_m is None:
            depth_m = depth_at_points(ref.depth0, tracks[0])
        self.tracks = PointTrackSet(tracks_px=tracks, depth_m=depth_m, intrinsics=ref.intrinsics)

    def reset(self) -> None:
        self.runner.reset()

    def predict(self, obs: dict[str, Any]) -> dict[str, Any]:
        return self.runner.predict({**obs, "tracks": self.tracks})


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
            runner = PolicyRunner(model=model, device=device, T_body_cam=self.T_body_cam)
            return TrackFeeder(runner, ref)

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
    return engine.evenly_spread(sorted({(r.split, r.task, r.seed) for r in refs}), n)


# -------------------------------------------------------------------------------------------
# Training
# -------------------------------------------------------------------------------------------


def train(cfg: TrainConfig) -> Path:
    """Run (or continue) training; returns the final export directory ``OUT/last``."""
    return engine.launch(cfg, _train)


def _train(cfg: TrainConfig, rt: engine.Runtime) -> Path:
    out, resume_from = engine.prepare_output(cfg, rt)
    # A resumed run keeps its architecture and action mode, whatever the flags say now.
    policy_cfg = cfg.policy if resume_from is None else load_config(resume_from)
    if policy_cfg != cfg.policy and rt.main:
        print(f"note: resuming {resume_from}: its architecture {policy_cfg} overrides the flags")

    train_set, val_set, val_scenes = load_datasets(cfg, policy_cfg)
    epoch_set = _Repeated(train_set, engine.epoch_repeats(len(train_set), cfg.batch_size))

    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (DDP also broadcasts)
    if resume_from is None:
        stats = PolicyStats.from_residuals(train_set.residual_rows())
        raw = ResidualPolicy(cfg.policy, stats)
    else:
        raw = load_checkpoint(resume_from)  # stats too are the run's, not recomputed
        stats = raw.stats
    raw = raw.to(rt.device).train()
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
    trainer = engine.Trainer(cfg, rt, out, raw, save_checkpoint, data_stats, resume_from)

    def evaluate() -> dict[str, float]:
        metrics = validate(trainer.ema, val_set, trainer.per_rank, rt.device)
        if closed_loop is not None:
            cl, failures = closed_loop(trainer.ema, rt.device)
            metrics.update(cl)
            if failures:
                trainer.write(f"step {trainer.step}: closed-loop failures {failures}")
        return metrics

    banner = (
        f"residual policy ({num_parameters(raw) / 1e6:.2f} M parameters, "
        f"{raw.config.action_mode}) on {rt.device} x{rt.world}, amp={rt.amp_dtype}, "
        f"{len(train_set.demos)} train demos ({len(train_set)} ticks) / "
        f"{len(val_set.demos)} val demos, residual scale {stats.translation_scale_m:.4f} m "
        f"{stats.rotation_scale_rad:.4f} rad"
    )
    return trainer.fit(
        BCLoss(raw),
        epoch_set,
        collate_residual,
        evaluate=evaluate,
        best_metric="val_loss",
        describe=_describe,
        eval_tag=lambda key: f"eval/{key}",
        log_columns=LOG_COLUMNS,
        banner=banner,
    )


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
