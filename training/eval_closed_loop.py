"""Closed-loop evaluation in t2a_sim: success rates per split and method, as in Track2Act Table 1.

    python training/eval_closed_loop.py --splits MG G CG TG --episodes 20 --workers 2 \\
        --out runs/eval_closed_loop

Methods (``--methods``; all use the same episodes, the same goal images and, for the
model-track methods, the same predicted tracks):

==============  ==================  ===========================================================
method          tracks              control
==============  ==================  ===========================================================
open_loop       track model         the plan alone: Track2Act (Open-Loop)
absolute        track model         policy predicts absolute actions (ablation, no residual)
residual        track model         plan + residual policy: Track2Act
gt_open_loop    ground truth        the plan alone: upper bound for the planner/controller
gt_residual     ground truth        plan + residual policy: upper bound with perfect tracks
==============  ==================  ===========================================================

Every episode runs the stack's cores in process (``t2a_bringup.core.episode.run_episode``):
I0 and the goal image (the scripted expert's last frame) -> tracks -> planner with the nominal
camera calibration -> controller at 5 Hz with the policy -> sim arm -> the task's success test.
Episodes ``(split, task, seed)``: each split's tasks, seeds ``--first-seed`` upwards, as many per
task as needed for ``--episodes`` per split (the residual demos use seeds from 0, so the default
1000 is unseen). ``--grasp-offset-m`` adds a horizontal grasp error to every plan (direction
fixed per episode), the perturbation the residual policy is meant to correct.

Writes ``OUT/episodes.jsonl`` (one line per episode and method; a rerun skips what is there, so
an interrupted evaluation resumes), ``OUT/results.json`` and ``OUT/table.md``.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing as mp
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from t2a_bringup.core.episode import (  # noqa: E402
    FAILURES,
    EpisodeConfig,
    Reference,
    expert_reference,
    run_episode,
)
from t2a_control.core.controller import POLICY_STATES, ControllerConfig  # noqa: E402
from t2a_control.core.policy_runtime import PolicyRunner, RunnerConfig  # noqa: E402
from t2a_perception.core.frames import depth_at_points  # noqa: E402
from t2a_sim.core.tasks import SPLITS, TASKS, tasks_of  # noqa: E402
from training.residual_data import nominal_T_body_cam, predict_tracks  # noqa: E402
from training.train_residual import TrackFeeder, grasp_offset  # noqa: E402

# name -> (track source, controller mode, checkpoint flag)
METHODS: dict[str, tuple[str, str, str]] = {
    "open_loop": ("model", "open_loop", ""),
    "absolute": ("model", "absolute", "absolute_checkpoint"),
    "residual": ("model", "residual", "residual_checkpoint"),
    "gt_open_loop": ("gt", "open_loop", ""),
    "gt_residual": ("gt", "residual", "residual_checkpoint"),
}
LABELS = {
    "open_loop": "Track2Act (Open-Loop)",
    "absolute": "Track2Act (actions; not residuals)",
    "residual": "Track2Act (residual)",
    "gt_open_loop": "GT tracks, open loop (upper bound)",
    "gt_residual": "GT tracks + residual (upper bound)",
}
DEFAULT_CHECKPOINTS = {
    "track_checkpoint": "ros2_ws/src/t2a_perception/models/track_default",
    "residual_checkpoint": "ros2_ws/src/t2a_control/models/residual_default",
    "absolute_checkpoint": "runs/absolute/best",
}
# Flags that only choose which episodes run, or how: an --out folder resumes across them.
RESUMABLE_ARGS = ("splits", "episodes", "first_seed", "tasks", "methods", "workers", "out")


def episodes(
    splits: list[str], per_split: int, first_seed: int, only: list[str] | None = None
) -> list[tuple[str, str, int]]:
    """``(split, task, seed)`` for at least ``per_split`` episodes in each split (spread over
    its tasks, or over those of them in ``only``)."""
    out = []
    for split in splits:
        tasks = [t for t in tasks_of(split) if not only or t in only]
        if not tasks:
            raise ValueError(f"split {split} has none of the tasks {only}: {tasks_of(split)}")
        for i in range(math.ceil(per_split / len(tasks))):
            out += [(split, task, first_seed + i) for task in tasks]
    return out


# ------------------------------------------------------------------------------ worker side
_W: dict[str, Any] = {}


def _init_worker(args: dict[str, Any]) -> None:
    torch.set_num_threads(1)  # one process per core; MuJoCo renders on the same core
    _W["args"] = args
    _W["runners"] = {}
    _W["T_body_cam"] = nominal_T_body_cam()


def _runner(flag: str) -> PolicyRunner:
    if flag not in _W["runners"]:
        path = Path(_W["args"][flag])
        if not (path / "config.json").exists():
            raise FileNotFoundError(f"{flag.replace('_', ' ')} {path} has no config.json: train "
                                    "it first (see the README's evaluation section)")  # fmt: skip
        runner_cfg = RunnerConfig(temporal_ensemble=_W["args"]["temporal_ensemble"])
        _W["runners"][flag] = PolicyRunner(path, T_body_cam=_W["T_body_cam"], config=runner_cfg)
    return _W["runners"][flag]


def _model_tracks(ref: Reference) -> tuple[np.ndarray, np.ndarray]:
    """``predict_tracks`` for run_episode: the shared prediction, plus the depths of P0."""
    a = _W["args"]
    tracks = predict_tracks(ref, a["track_checkpoint"], a["points"], a["samples"], a["ddim_steps"])
    return tracks, depth_at_points(ref.depth0, tracks[0])


def _run_job(job: tuple[str, str, int, tuple[str, ...]]) -> list[dict[str, Any]]:
    split, task, seed, methods = job
    a = _W["args"]
    offset = grasp_offset(task, seed, a["grasp_offset_m"]) if a["grasp_offset_m"] else (0, 0, 0)
    cfg = EpisodeConfig(task=task, split=split, seed=seed, grasp_offset_m=tuple(offset))
    t0 = time.perf_counter()
    ref = expert_reference(cfg)
    predicted = None
    rows = []
    for method in methods:
        source, mode, flag = METHODS[method]
        if source == "model" and predicted is None:
            predicted = _model_tracks(ref)
        given = predicted if source == "model" else None
        policy = None
        if flag:
            policy = TrackFeeder(_runner(flag), ref, *(given or (None, None)))
        controller = ControllerConfig(mode=mode, policy_states=tuple(a["policy_states"]))
        result = run_episode(
            cfg, T_body_cam=_W["T_body_cam"], controller_cfg=controller, policy=policy,
            reference=ref, predict_tracks=(lambda _r, g=given: g) if given is not None else None,
        )  # fmt: skip
        rows.append({"split": split, "task": task, "seed": seed, "method": method,
                     "success": bool(result.success), "failure": result.failure,
                     "message": result.message, "sim_time_s": round(result.sim_time_s, 2),
                     "expert_success": bool(ref.expert_success),
                     "grasp_offset_m": list(offset)})  # fmt: skip
    rows[-1]["wall_s"] = round(time.perf_counter() - t0, 2)
    return rows


# ------------------------------------------------------------------------------ tables
def summarize(rows: list[dict[str, Any]], methods: list[str], splits: list[str]) -> dict:
    """Success rates and failure counts per method and split."""
    out: dict[str, Any] = {}
    for m in methods:
        out[m] = {}
        for s in [*splits, "all"]:
            sel = [r for r in rows if r["method"] == m and (s == "all" or r["split"] == s)]
            fails = collections.Counter(r["failure"] for r in sel if not r["success"])
            out[m][s] = {
                "episodes": len(sel),
                "successes": sum(r["success"] for r in sel),
                "success_rate": sum(r["success"] for r in sel) / len(sel) if sel else float("nan"),
                "failures": {k: fails[k] for k in FAILURES if fails[k]},
            }
    return out


def markdown(summary: dict, methods: list[str], splits: list[str], note: str) -> str:
    cols = [*splits, "all"]
    lines = [f"| method | {' | '.join(cols)} |", "|---|" + "---:|" * len(cols)]
    for m in methods:
        cells = []
        for s in cols:
            c = summary[m][s]
            cells.append(f"{100 * c['success_rate']:.0f}% ({c['successes']}/{c['episodes']})"
                         if c["episodes"] else "-")  # fmt: skip
        lines.append(f"| {LABELS[m]} | {' | '.join(cells)} |")
    lines += ["", "Failures (all splits):", "", "| method | " + " | ".join(FAILURES) + " |",
              "|---|" + "---:|" * len(FAILURES)]  # fmt: skip
    for m in methods:
        f = summary[m]["all"]["failures"]
        lines.append(f"| {LABELS[m]} | " + " | ".join(str(f.get(k, 0)) for k in FAILURES) + " |")
    return "\n".join([*lines, "", note]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--episodes", type=int, default=20, help="episodes per split (>=)")
    p.add_argument("--first-seed", type=int, default=1000, help="first episode seed of each task")
    p.add_argument("--tasks", nargs="+", default=None, choices=sorted(TASKS),
                   help="only these tasks of each split (default: all)")  # fmt: skip
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--grasp-offset-m", type=float, default=0.0,
                   help="horizontal grasp error added to every plan (m)")  # fmt: skip
    for flag, default in DEFAULT_CHECKPOINTS.items():
        p.add_argument("--" + flag.replace("_", "-"), default=str(ROOT / default))
    p.add_argument(
        "--policy-states",
        nargs="+",
        default=list(ControllerConfig().policy_states),
        choices=list(POLICY_STATES),
        help="controller states in which the policy corrects the plan",
    )
    p.add_argument("--temporal-ensemble", action="store_true",
                   help="average overlapping chunks (ACT) instead of the newest")  # fmt: skip
    p.add_argument("--samples", type=int, default=4, help="track hypotheses K")
    p.add_argument("--ddim-steps", type=int, default=10)
    p.add_argument("--points", type=int, default=400, help="query points of the track model")
    p.add_argument("--workers", type=int, default=2, help="processes (one core each)")
    p.add_argument("--out", required=True, help="output folder (resumes what is there)")
    args = p.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # Results resume per (split, task, seed, method); everything else that changes an outcome
    # must be the same as when the folder was started, or its episodes would mix two setups.
    outcome_settings = {k: v for k, v in vars(args).items() if k not in RESUMABLE_ARGS}
    frozen = out / "settings.json"
    if frozen.exists():
        before = json.loads(frozen.read_text())
        changed = {k: (before.get(k), v) for k, v in outcome_settings.items() if before.get(k) != v}
        if changed:
            p.error(
                f"{out} holds results made with other settings: "
                + "; ".join(f"{k} was {a!r}, now {b!r}" for k, (a, b) in changed.items())
                + ". Use another --out (or delete it)"
            )
    else:
        frozen.write_text(json.dumps(outcome_settings, indent=2) + "\n")
    log = out / "episodes.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["split"], r["task"], r["seed"], r["method"]) for r in rows}
    jobs = []
    for split, task, seed in episodes(args.splits, args.episodes, args.first_seed, args.tasks):
        todo = tuple(m for m in args.methods if (split, task, seed, m) not in done)
        if todo:
            jobs.append((split, task, seed, todo))
    print(f"{len(jobs)} episodes to run ({len(rows)} results already in {log}), "
          f"methods {args.methods}, {args.workers} workers", flush=True)  # fmt: skip
    t0 = time.perf_counter()
    settings = vars(args)
    with log.open("a") as fh:
        if args.workers <= 1:
            _init_worker(settings)
            results = map(_run_job, jobs)
        else:
            pool = mp.get_context("spawn").Pool(args.workers, _init_worker, (settings,))
            results = pool.imap_unordered(_run_job, jobs)
        for i, ep in enumerate(results, 1):
            for r in ep:
                fh.write(json.dumps(r) + "\n")
            fh.flush()
            rows += ep
            outcome = " ".join(f"{r['method']}={'ok' if r['success'] else r['failure']}"
                               for r in ep)  # fmt: skip
            print(f"[{i}/{len(jobs)} {time.perf_counter() - t0:6.0f} s] {ep[0]['split']} "
                  f"{ep[0]['task']} {ep[0]['seed']}: {outcome}", flush=True)  # fmt: skip
        if args.workers > 1:
            pool.close()
            pool.join()
    wanted = set(episodes(args.splits, args.episodes, args.first_seed, args.tasks))
    rows = [r for r in rows if (r["split"], r["task"], r["seed"]) in wanted
            and r["method"] in args.methods]  # fmt: skip
    summary = summarize(rows, args.methods, args.splits)
    seeds = sorted({r["seed"] for r in rows})
    note = (f"Seeds {seeds[0]}-{seeds[-1]} per task, grasp offset {args.grasp_offset_m} m; "
            f"`python training/eval_closed_loop.py --splits {' '.join(args.splits)} "
            f"--episodes {args.episodes} --first-seed {args.first_seed}"
            + (f" --tasks {' '.join(args.tasks)}" if args.tasks else "")
            + (f" --grasp-offset-m {args.grasp_offset_m}" if args.grasp_offset_m else "")
            + (f" --policy-states {' '.join(args.policy_states)}"
               if tuple(args.policy_states) != ControllerConfig().policy_states else "")
            + (" --temporal-ensemble" if args.temporal_ensemble else "")
            + "`") if rows else "no episodes"  # fmt: skip
    table = markdown(summary, args.methods, args.splits, note)
    (out / "table.md").write_text(table)
    settings = {k: v for k, v in settings.items()}
    (out / "results.json").write_text(
        json.dumps({"settings": settings, "summary": summary, "episodes": len(rows)}, indent=2)
        + "\n"
    )
    print("\n" + table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
