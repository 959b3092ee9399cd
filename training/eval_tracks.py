"""Evaluate a track-model checkpoint on held-out episodes, next to two baselines.

Metrics (per example, then averaged over examples, so every episode counts the same whatever
its point count), all in pixels at a 256 px scale: a pixel error in a ``W x H`` clip is
multiplied by ``256 / max(W, H)`` so numbers from different resolutions compare, as in the
paper's ``delta`` metric. Errors are over the future steps ``1..H`` (step 0 is the query).

- ``ade_px``: mean track error; ``fde_px``: mean error at the last step;
- ``min_ade_px``: the best of ``K`` samples' ADE (diffusion is multimodal: a model that draws
  the right motion among its samples is better than its single-draw ADE says);
- ``ade_moving_px``: ADE over points whose true track moves more than 2 px (at 256) at some
  step; most points in a manipulation clip are static background, which flatters baselines
  that predict no motion;
- ``delta_avg``: TAP-Vid style, the fraction of (step, point) pairs within 1, 2, 4, 8 and 16 px,
  averaged over the five thresholds (0..1, higher is better).

``ade_px``, ``fde_px``, ``ade_moving_px`` and ``delta_avg`` use the first of the ``K`` samples:
a single unbiased draw, which is what one prediction gives.

Baselines, computed the same way from the same query points:

- ``nothing-moves``: every point stays at ``P0`` (the paper reports this reference too);
- ``constant-velocity``: every point moves by the same vector at every step, ``P_t = P0 + t v``,
  where ``v`` is the mean first-step displacement ``P_1 - P_0`` over all points of the training
  set (normalised coordinates). A motion prior "from nowhere": it knows how things typically
  move in the training data but never looks at the images or the goal.

Run ``python training/eval_tracks.py --help`` for the CLI; the results print as a markdown table
and are written as JSON with ``--json-out``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from t2a_common.core.config import from_dict
from t2a_perception.core.checkpoint import load_checkpoint
from t2a_perception.core.model import TrackDiT
from training.labelers import LABELERS, make_labeler
from training.track_data import (
    SIM_SPLITS,
    VIDEO_SPLIT,
    TrackDataConfig,
    TrackDataset,
    collate_tracks,
    find_sim_episodes,
    load_sim_clips,
    load_video_clips,
    select_episodes,
)

EVAL_SCALE_PX = 256.0
DELTA_THRESHOLDS_PX = (1.0, 2.0, 4.0, 8.0, 16.0)
MOVING_PX = 2.0
TRAIN_CONFIG_NAME = "train_config.json"
DATA_STATS_NAME = "data_stats.json"
METRICS = ("ade_px", "fde_px", "min_ade_px", "ade_moving_px", "delta_avg")
# {split: {method: {"episodes": n, metric: mean or None}}}
Results = dict[str, dict[str, dict[str, Any]]]


# -------------------------------------------------------------------------------------------
# Metrics
# -------------------------------------------------------------------------------------------


def errors_px(pred: torch.Tensor, gt: torch.Tensor, image_wh: torch.Tensor) -> torch.Tensor:
    """Per-step errors at 256 px scale: normalised ``(B, H+1, N, 2)`` pairs -> ``(B, H, N)``.

    Normalised units are converted with each example's own width and height (a unit is half
    the image side along that axis), then scaled by ``256 / max(W, H)``.
    """
    half_size = image_wh[:, None, None, :] / 2.0  # (B, 1, 1, 2)
    scale = EVAL_SCALE_PX / image_wh.max(dim=1).values  # (B,)
    diff = (pred[:, 1:] - gt[:, 1:]) * half_size  # (B, H, N, 2) source px
    return diff.norm(dim=-1) * scale[:, None, None]  # (B, H, N)


def example_metrics(
    samples: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, image_wh: torch.Tensor
) -> dict[str, np.ndarray]:
    """Metrics of each example ``(B,)`` from ``K`` samples ``(B, K, H+1, N, 2)``.

    ``ade_moving_px`` is NaN for an example without moving points.
    """
    K = samples.shape[1]
    m = mask.float()  # (B, N)
    n_valid = m.sum(1).clamp(min=1)  # (B,)
    per_sample_ade = torch.stack(
        [(errors_px(samples[:, k], gt, image_wh).mean(1) * m).sum(1) / n_valid for k in range(K)],
        dim=1,
    )  # (B, K)
    err = errors_px(samples[:, 0], gt, image_wh)  # (B, H, N)
    moving = (errors_px(gt[:, :1].expand_as(gt), gt, image_wh).amax(1) > MOVING_PX) & mask
    mv = moving.float()  # (B, N)
    ade_moving = (err.mean(1) * mv).sum(1) / mv.sum(1).clamp(min=1)
    ade_moving = torch.where(mv.sum(1) > 0, ade_moving, torch.full_like(ade_moving, math.nan))
    within = torch.stack([(err <= t).float() for t in DELTA_THRESHOLDS_PX]).mean(0)  # (B, H, N)
    out = {
        "ade_px": per_sample_ade[:, 0],
        "fde_px": (err[:, -1] * m).sum(1) / n_valid,
        "min_ade_px": per_sample_ade.min(dim=1).values,
        "ade_moving_px": ade_moving,
        "delta_avg": (within.mean(1) * m).sum(1) / n_valid,
    }
    return {k: v.double().cpu().numpy() for k, v in out.items()}


def nothing_moves(points0: torch.Tensor, horizon: int) -> torch.Tensor:
    """Baseline tracks ``(B, 1, H+1, N, 2)``: every point stays at ``P0 (B, N, 2)``."""
    return points0[:, None, None].expand(-1, 1, horizon + 1, -1, -1).clone()


def constant_velocity(
    points0: torch.Tensor, horizon: int, velocity: Sequence[float]
) -> torch.Tensor:
    """Baseline tracks ``(B, 1, H+1, N, 2)``: ``P_t = P0 + t v`` with a fixed ``v`` (normalised)."""
    v = torch.as_tensor(velocity, dtype=points0.dtype, device=points0.device)  # (2,)
    t = torch.arange(horizon + 1, dtype=points0.dtype, device=points0.device)  # (H+1,)
    return (points0[:, None] + t[None, :, None, None] * v)[:, None]  # (B, 1, H+1, N, 2)


def first_step_velocity(dataset: TrackDataset) -> list[float]:
    """Mean ``P_1 - P_0`` (normalised) over all points of the dataset's fixed samples."""
    tracks, mask = dataset.fixed_samples()  # (C, H+1, N, 2), (C, N)
    step = (tracks[:, 1] - tracks[:, 0])[mask]  # (M, 2)
    return [float(x) for x in step.mean(0)] if len(step) else [0.0, 0.0]


# -------------------------------------------------------------------------------------------
# Evaluation loop
# -------------------------------------------------------------------------------------------


def _batches(
    dataset: TrackDataset, batch_size: int, device: torch.device
) -> Iterator[dict[str, torch.Tensor]]:
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, collate_fn=collate_tracks)
    for batch in loader:
        yield {k: v.to(device) for k, v in batch.items()}


class MetricTable:
    """Per-example metrics collected by split and method, averaged on demand."""

    def __init__(self) -> None:
        self.rows: dict[tuple[str, str], dict[str, list[np.ndarray]]] = {}

    def add(self, splits: Sequence[str], method: str, metrics: dict[str, np.ndarray]) -> None:
        for key in ("all", *sorted(set(splits))):
            keep = np.array([key in ("all", s) for s in splits])
            row = self.rows.setdefault((key, method), {m: [] for m in METRICS})
            for m in METRICS:
                row[m].append(metrics[m][keep])

    def summary(self) -> Results:
        """``{split: {method: {"episodes": n, metric: mean}}}``; ``all`` pools every split.

        A metric no example defines (``ade_moving_px`` when nothing moves) is None.
        """
        out: Results = {}
        for (split, method), row in self.rows.items():
            values = {m: np.concatenate(v) for m, v in row.items()}
            entry: dict[str, float | None] = {"episodes": len(values["ade_px"])}
            for m, v in values.items():
                finite = v[np.isfinite(v)]
                # None (JSON null) rather than NaN, which strict JSON readers reject.
                entry[m] = float(finite.mean()) if len(finite) else None
            out.setdefault(split, {})[method] = entry
        return out


@torch.no_grad()
def evaluate(
    model: TrackDiT | None,
    dataset: TrackDataset,
    *,
    velocity: Sequence[float] | None = None,
    samplers: Sequence[tuple[str, int | None]] = (("ddim", 10),),
    num_samples: int = 1,
    batch_size: int = 8,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> Results:
    """Metrics of ``model`` (each sampler) and the baselines on the fixed samples of ``dataset``.

    Args:
        model: the track model, or None for the baselines only.
        velocity: the constant-velocity baseline's ``v``; None skips that baseline.
        samplers: ``(sampler, steps)`` pairs, e.g. ``[("ddim", 10), ("ddpm", None)]``.
        num_samples: ``K`` for ``min_ade_px``.
        seed: sampling noise seed; batch ``i`` uses ``seed + i``, so results are repeatable.

    Returns:
        ``{split: {method: {"episodes", "ade_px", "fde_px", ...}}}`` with an ``all`` split.
    """
    device = torch.device(device)
    if model is not None:
        model = model.to(device).eval()
    horizon = dataset.cfg.horizon
    table = MetricTable()
    for i, batch in enumerate(_batches(dataset, batch_size, device)):
        splits = [dataset.clips[int(c)].split for c in batch["clip"]]
        gt, mask, wh = batch["tracks"], batch["mask"], batch["image_wh"]
        p0 = gt[:, 0]
        table.add(
            splits, "nothing-moves", example_metrics(nothing_moves(p0, horizon), gt, mask, wh)
        )
        if velocity is not None:
            cv = constant_velocity(p0, horizon, velocity)
            table.add(splits, "constant-velocity", example_metrics(cv, gt, mask, wh))
        if model is None:
            continue
        for sampler, steps in samplers:
            generator = torch.Generator(device).manual_seed(seed + i)
            samples = model.sample(
                batch["image0"],
                batch["goal"],
                p0,
                num_samples=num_samples,
                sampler=sampler,
                steps=steps,
                generator=generator,
                mask=mask,
            )  # (B, K, H+1, N, 2)
            name = f"model-{sampler}{steps}" if sampler == "ddim" else "model-ddpm"
            table.add(splits, name, example_metrics(samples, gt, mask, wh))
    return table.summary()


def _cell(value: float | None, digits: int) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(results: Results) -> str:
    """Results as a markdown table, one row per (split, method)."""
    lines = [
        "| split | method | episodes | ADE px | FDE px | minADE px | ADE moving px | delta_avg |",
        "|---|---|---:|---:|---:|---:|---:|---:|",
    ]
    order = [s for s in ("all", *SIM_SPLITS, VIDEO_SPLIT) if s in results]
    for split in order:
        for method in sorted(results[split], key=lambda m: (not m.startswith("model"), m)):
            r = results[split][method]
            cells = [_cell(r[m], 3 if m == "delta_avg" else 2) for m in METRICS]
            lines.append(f"| {split} | {method} | {r['episodes']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------------------
# CLI
# -------------------------------------------------------------------------------------------


def read_train_config(checkpoint: Path) -> dict[str, Any]:
    """The training run's flat config saved next to the export ({} if there is none)."""
    for directory in (checkpoint, checkpoint.parent):
        path = directory / TRAIN_CONFIG_NAME
        if path.is_file():
            return json.loads(path.read_text())
    return {}


def data_config_from(train_config: dict[str, Any], model: TrackDiT) -> TrackDataConfig:
    """The sampling settings the model was trained with; image size and horizon from the model.

    The split settings (``val_fraction``, ``split_seed``) must be the run's, or "held out"
    would name other episodes; a checkpoint without ``train_config.json`` gets the defaults.
    """
    values = {k[len("dataset.") :]: v for k, v in train_config.items() if k.startswith("dataset.")}
    values.update(image_size=model.config.image_size, horizon=model.config.horizon)
    return from_dict(TrackDataConfig, values, strict=False)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        description="Evaluate a track-model checkpoint (ADE/FDE/minADE/delta_avg at 256 px scale) "
        "on held-out sim episodes and/or videos, next to the nothing-moves and constant-velocity "
        "baselines. Prints a markdown table.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("checkpoint", help="export directory (config.json, model.safetensors, ...)")
    parser.add_argument("--data", nargs="+", default=[], metavar="DIR", help="sim dataset dirs")
    parser.add_argument("--videos", nargs="+", default=[], metavar="DIR", help="video folders")
    parser.add_argument(
        "--video-cache", default="", help="labelled-clip cache; '' = VIDEOS/.t2a_track_cache"
    )
    parser.add_argument("--labeler", default="lk", choices=LABELERS, help="video track labeller")
    parser.add_argument(
        "--splits", nargs="+", default=list(SIM_SPLITS), choices=SIM_SPLITS, help="sim splits"
    )
    parser.add_argument(
        "--episodes",
        default="heldout",
        choices=("heldout", "all"),
        help="heldout: validation seeds of the splits the model trained on, every episode of "
        "the others (uses the run's train_config.json); all: every episode",
    )
    parser.add_argument("--max-episodes", type=int, default=0, help="cap per split; 0 = no cap")
    parser.add_argument("--num-samples", type=int, default=5, help="K samples for minADE")
    parser.add_argument("--ddim-steps", type=int, default=10, help="DDIM sampling steps")
    parser.add_argument("--ddpm", action="store_true", help="also evaluate full-chain DDPM")
    parser.add_argument("--batch-size", type=int, default=8, help="episodes per forward pass")
    parser.add_argument("--seed", type=int, default=0, help="sampling noise seed")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1, ...")
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads; 0 = default")
    parser.add_argument("--json-out", default="", help="write the results as JSON here")
    return parser


def cap_per_split(clips: list, cap: int) -> list:
    if cap <= 0:
        return clips
    counts: dict[str, int] = {}
    kept = []
    for c in clips:
        if counts.get(c.split, 0) < cap:
            kept.append(c)
            counts[c.split] = counts.get(c.split, 0) + 1
    return kept


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = build_parser().parse_args(argv)
    if not args.data and not args.videos:
        raise SystemExit("nothing to evaluate: give --data and/or --videos")
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    device = torch.device(
        ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    )
    checkpoint = Path(args.checkpoint)
    model = load_checkpoint(checkpoint, device)
    train_config = read_train_config(checkpoint)
    cfg = data_config_from(train_config, model)
    subset = "val" if args.episodes == "heldout" else "all"

    clips = []
    if args.data:
        refs = find_sim_episodes(args.data, args.splits)
        trained = trained_splits(checkpoint, train_config)
        clips += load_sim_clips(select_episodes(refs, subset, cfg, trained), cfg)
    for root in args.videos:
        labeler = make_labeler(args.labeler)
        clips += load_video_clips(root, cfg, labeler, subset, args.video_cache or None)
    clips = cap_per_split(clips, args.max_episodes)
    if not clips:
        raise SystemExit("no held-out episodes to evaluate (check --data, --splits, --episodes)")

    velocity = training_velocity(checkpoint, train_config, cfg)
    samplers: list[tuple[str, int | None]] = [("ddim", args.ddim_steps)]
    if args.ddpm:
        samplers.append(("ddpm", None))
    started = time.perf_counter()
    results = evaluate(
        model,
        TrackDataset(clips, cfg, augment=False),
        velocity=velocity,
        samplers=samplers,
        num_samples=args.num_samples,
        batch_size=args.batch_size,
        seed=args.seed,
        device=device,
    )
    report = {
        "checkpoint": str(checkpoint),
        "episodes": args.episodes,
        "num_samples": args.num_samples,
        "ddim_steps": args.ddim_steps,
        "constant_velocity": velocity,
        "scale_px": EVAL_SCALE_PX,
        "delta_thresholds_px": list(DELTA_THRESHOLDS_PX),
        "seconds": round(time.perf_counter() - started, 2),
        "results": results,
    }
    print(markdown_table(results))
    if args.json_out:
        out = Path(args.json_out)
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {out}")
    return report


def trained_splits(checkpoint: Path, train_config: dict[str, Any]) -> list[str]:
    """Splits the model saw in training ([] = unknown, treated as all): the data's, if saved."""
    for directory in (checkpoint, checkpoint.parent):
        path = directory / DATA_STATS_NAME
        if path.is_file():
            return list(json.loads(path.read_text()).get("train_splits", []))
    return list(train_config.get("splits") or [])


def training_velocity(
    checkpoint: Path, train_config: dict[str, Any], cfg: TrackDataConfig
) -> list[float] | None:
    """The constant-velocity baseline's ``v``: saved at training time, else recomputed."""
    for directory in (checkpoint, checkpoint.parent):
        path = directory / DATA_STATS_NAME
        if path.is_file():
            return list(json.loads(path.read_text())["first_step_velocity"])
    data = train_config.get("data") or []
    if not data:
        print("note: no data_stats.json and no training data known; constant-velocity skipped")
        return None
    refs = select_episodes(find_sim_episodes(data, train_config.get("splits") or []), "train", cfg)
    return first_step_velocity(TrackDataset(load_sim_clips(refs, cfg), cfg, augment=False))


if __name__ == "__main__":
    main()
