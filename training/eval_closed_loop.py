"""Closed-loop episodes in t2a_sim with ground-truth or predicted tracks: success, failure causes.

    python training/eval_closed_loop.py --tasks drawer_open cabinet_close box_push --split MG \\
        --seeds 1000 1001 1002 1003 1004 --tracks gt model

Each episode runs the stack's cores in process (t2a_bringup.core.episode): tracks of I0 towards
the expert's goal image (ground truth from the expert's rollout, or the track model's
prediction), the planner with the nominal camera calibration, and the open-loop controller at
5 Hz. This is the first cut of the evaluation issue's table (no residual policy yet).
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from t2a_bringup.core.episode import EpisodeConfig, Reference, run_episode  # noqa: E402
from t2a_perception.core.frames import depth_at_points  # noqa: E402
from t2a_perception.core.predictor import TrackPredictor, sample_query_points  # noqa: E402
from t2a_perception.nodes.track_predictor import resolve_checkpoint  # noqa: E402
from t2a_planning.nodes.planner import PlannerNodeConfig  # noqa: E402


def model_tracks(checkpoint: str, samples: int, steps: int):
    """``predict_tracks`` for run_episode: the track model on I0 and the goal, 400 grid points."""
    predictor = TrackPredictor(resolve_checkpoint(checkpoint))

    def predict(ref: Reference) -> tuple[np.ndarray, np.ndarray]:
        h, w = ref.rgb0.shape[:2]
        p0 = sample_query_points(h, w, 400, "grid")
        out = predictor.predict(ref.rgb0, ref.goal_rgb, p0, samples, "ddim", steps, seed=0)
        return out.tracks_px, depth_at_points(ref.depth0, p0)

    return predict


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="+", default=["drawer_open", "cabinet_close", "box_push"])
    p.add_argument("--split", default="MG", help="MG | G | CG | TG")
    p.add_argument("--seeds", nargs="+", type=int, default=[1000, 1001, 1002, 1003, 1004])
    p.add_argument("--tracks", nargs="+", default=["gt", "model"], choices=["gt", "model"])
    p.add_argument("--checkpoint", default="", help="track model ('' = the shipped default)")
    p.add_argument("--samples", type=int, default=4, help="track hypotheses K")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--json-out", default="", help="write per-episode results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    T_body_cam = PlannerNodeConfig().T_body_cam
    predict = model_tracks(args.checkpoint, args.samples, args.ddim_steps)
    rows, per_episode = collections.defaultdict(list), []
    for task in args.tasks:
        for seed in args.seeds:
            cfg = EpisodeConfig(task=task, split=args.split, seed=seed)
            for source in args.tracks:
                r = run_episode(
                    cfg,
                    T_body_cam=T_body_cam,
                    predict_tracks=predict if source == "model" else None,
                )
                rows[(task, source)].append(r)
                per_episode.append({"task": task, "split": args.split, "seed": seed,
                                    "tracks": source, "success": r.success, "failure": r.failure,
                                    "message": r.message})  # fmt: skip
                outcome = "success" if r.success else r.failure
                print(f"{task} seed {seed} {source}: {outcome} ({r.message[:70]})", flush=True)
    print(f"\n| task | tracks | success | failures ({args.split}, seeds {args.seeds}) |")
    print("|---|---|---:|---|")
    for (task, source), results in rows.items():
        fails = collections.Counter(r.failure for r in results if not r.success)
        text = ", ".join(f"{k} {v}" for k, v in fails.most_common()) or "-"
        print(f"| {task} | {source} | {sum(r.success for r in results)}/{len(results)} | {text} |")
    for source in args.tracks:
        total = [r for (_, s), rs in rows.items() if s == source for r in rs]
        print(f"| all | {source} | {sum(r.success for r in total)}/{len(total)} | |")
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(per_episode, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
