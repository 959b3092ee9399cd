"""Track model latency and accuracy per sampler: DDIM 10 / 50 steps and the full DDPM chain.

Latency: one prediction (400 grid points, H = 8, K = 1 sample) on a 640x480 camera image through
TrackPredictor, the same call the perception node makes. Accuracy: ADE at 256 px scale on
held-out t2a_sim episodes (training/eval_tracks.py's metric) for each sampler, next to the
"nothing moves" baseline. For scale, the paper's official model (469 M parameters, 250 DDPM
steps) took 283 s per prediction on this 2-core CPU.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from common import emit_json, parser, print_table, stats_ms  # benchmarks/ is sys.path[0]

from t2a_perception.core.predictor import TrackPredictor, sample_query_points
from t2a_perception.nodes.track_predictor import resolve_checkpoint

ROOT = Path(__file__).resolve().parents[1]
SAMPLERS = [("ddim", 10), ("ddim", 50), ("ddpm", None)]


def latency(pred: TrackPredictor, repeats: int) -> dict[str, dict[str, float]]:
    rng = np.random.default_rng(0)
    image0 = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    goal = rng.integers(0, 256, (480, 640, 3), dtype=np.uint8)
    points = sample_query_points(480, 640, 400, "grid")
    out = {}
    for name, steps in SAMPLERS:
        pred.predict(image0, goal, points, 1, name, steps or 10, seed=0)  # warm-up
        times = []
        for r in range(repeats if name == "ddim" else max(1, repeats // 3)):
            t0 = time.perf_counter()
            pred.predict(image0, goal, points, 1, name, steps or 10, seed=r)
            times.append(time.perf_counter() - t0)
        out[_label(name, steps)] = stats_ms(times)
    return out


def accuracy(checkpoint: Path, data: list[str], max_episodes: int, subset: str) -> dict | None:
    from training import eval_tracks as ev
    from training.track_data import TrackDataset, find_sim_episodes, load_sim_clips, select_episodes

    model = ev.load_checkpoint(checkpoint, "cpu")
    train_config = ev.read_train_config(checkpoint)
    cfg = ev.data_config_from(train_config, model)
    refs = find_sim_episodes(data, ["MG", "G"])
    if not refs:
        return None
    trained = ev.trained_splits(checkpoint, train_config)
    clips = ev.cap_per_split(
        load_sim_clips(select_episodes(refs, subset, cfg, trained), cfg), max_episodes
    )
    if not clips:
        return None
    velocity = ev.training_velocity(checkpoint, train_config, cfg)
    return {
        "episodes": len(clips),
        "results": ev.evaluate(
            model,
            TrackDataset(clips, cfg, augment=False),
            velocity=velocity,
            samplers=SAMPLERS,
            num_samples=1,
            batch_size=8,
            seed=0,
            device=torch.device("cpu"),
        ),
    }


def _label(name: str, steps: int | None) -> str:
    return f"DDIM {steps}" if name == "ddim" else "DDPM (full chain)"


def main() -> int:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default="", help="model directory ('' = the shipped default)")
    p.add_argument("--data", nargs="*", default=[str(ROOT / "data" / "sim")],
                   help="t2a_sim dataset(s) for ADE; skipped when absent")  # fmt: skip
    p.add_argument("--max-episodes", type=int, default=40, help="episodes per split (cap)")
    p.add_argument("--episodes", choices=("heldout", "all"), default="heldout",
                   help="heldout: the validation seeds of the training data; all: every "
                   "episode (for a dataset generated with new seeds)")  # fmt: skip
    p.add_argument("--repeats", type=int, default=6, help="timed predictions per sampler")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = resolve_checkpoint(args.checkpoint)
    pred = TrackPredictor(ckpt)
    n_params = sum(t.numel() for t in pred.model.parameters())
    lat = latency(pred, args.repeats)
    data = [d for d in args.data if Path(d).exists()]
    subset = "val" if args.episodes == "heldout" else "all"
    acc = accuracy(ckpt, data, args.max_episodes, subset) if data else None

    rows = []
    for name, steps in SAMPLERS:
        label = _label(name, steps)
        ade = "-"
        if acc is not None:
            key = f"model-{name}{steps}" if name == "ddim" else "model-ddpm"
            ade = acc["results"]["all"].get(key, {}).get("ade_px", "-")
        rows.append([label, lat[label]["mean"], lat[label]["p50"], lat[label]["max"], ade])
    print_table(
        f"Track prediction, {ckpt.name}: {n_params / 1e6:.2f} M parameters, 640x480 input, "
        f"400 points, H=8, K=1, CPU {torch.get_num_threads()} threads"
        + (f"; ADE on {acc['episodes']} MG+G episodes ({args.episodes})" if acc else "; no ADE"),
        ["sampler", "mean ms", "p50 ms", "max ms", "ADE px @256"],
        rows,
    )
    if acc is not None:
        base = acc["results"]["all"]["nothing-moves"]["ade_px"]
        print(f"nothing-moves baseline, same episodes: ADE {base:.2f} px @256")
    emit_json(args.json, {"benchmark": "track_prediction", "parameters": n_params,
                          "latency_ms": lat, "accuracy": acc})  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
