"""Closed-loop evaluation in t2a_sim: success rates per split and method, as in Track2Act Table 1.

    python training/eval_closed_loop.py --splits MG G CG TG --episodes 40 --workers 2 \\
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
gt_query        GT at the stack's   the plan alone, from exact tracks of the stack's own query
                query points        points (the track_predictor's defaults: 400, mostly where I0
                                    and the goal differ), not the privileged sample
gt_residual     ground truth        plan + residual policy: upper bound with perfect tracks
grounded        goal grounding      the plan alone, from the final object motion estimated from
                                    I0, its depth and the goal (no model; screw from identity)
==============  ==================  ===========================================================

Ground-truth tracks (gt_*) follow points sampled with the simulator's segmentation, half of them
on the moved part; the stack instead places its own query points without segmentation
(``episode.stack_query_points``). gt_query measures the planner and controller on exactly those
points.

Every episode runs the stack's cores in process (``t2a_bringup.core.episode.run_episode``):
I0 and the goal image (the scripted expert's last frame) -> tracks -> planner with the nominal
camera calibration -> controller at 5 Hz with the policy -> sim arm -> the task's success test.
Episodes ``(split, task, seed)``: each split's tasks, seeds ``--first-seed`` upwards, as many per
task as needed for ``--episodes`` per split: the default 40 gives 8 per MG/G task and 14 per
CG/TG task, the evaluation protocol (DESIGN.md section 6); ``--per-task`` sets the seeds per task
instead. Every method runs the same episodes and goal images, and the table carries the scripted
expert's success on them. The residual demos use seeds from 0, so the default 1000 is unseen;
tune on lower seeds (say 500), never on 1000 and up. A method whose checkpoint is absent is
skipped with a note. ``--grasp-offset-m`` adds a horizontal grasp error to every plan (direction
fixed per episode), the perturbation the residual policy is meant to correct.

Writes ``OUT/episodes.jsonl`` (one line per episode and method; a rerun skips what is there, so
an interrupted evaluation resumes), ``OUT/results.json`` and ``OUT/table.md``: success per split
and per task with Wilson 95% intervals, and the failures (``episode.FAILURES``) per method and
task, wrong final poses with their median error.
"""

from __future__ import annotations

import argparse
import collections
import json
import math
import multiprocessing as mp
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from t2a_bringup.core.episode import (
    FAILURES,
    EpisodeConfig,
    Reference,
    expert_reference,
    run_episode,
)
from t2a_control.core.controller import POLICY_STATES, ControllerConfig
from t2a_control.core.policy_runtime import PolicyRunner, RunnerConfig
from t2a_perception.core.frames import depth_at_points
from t2a_sim.core.tasks import SPLITS, TASKS, tasks_of
from training.residual_demos import predict_tracks
from training.residual_format import nominal_T_body_cam
from training.train_residual import TrackFeeder, grasp_offset

ROOT = Path(__file__).resolve().parents[1]

# name -> (track source, controller mode, checkpoint flag)
METHODS: dict[str, tuple[str, str, str]] = {
    "open_loop": ("model", "open_loop", ""),
    "absolute": ("model", "absolute", "absolute_checkpoint"),
    "residual": ("model", "residual", "residual_checkpoint"),
    "gt_open_loop": ("gt", "open_loop", ""),
    "gt_query": ("gt_query", "open_loop", ""),
    "gt_residual": ("gt", "residual", "residual_checkpoint"),
    "grounded": ("grounded", "open_loop", ""),
}
LABELS = {
    "open_loop": "Track2Act (Open-Loop)",
    "absolute": "Track2Act (actions; not residuals)",
    "residual": "Track2Act (residual)",
    "gt_open_loop": "GT tracks, open loop (upper bound)",
    "gt_query": "GT tracks of the stack's own query points, open loop",
    "gt_residual": "GT tracks + residual (upper bound)",
    "grounded": "Goal grounding only (screw to the estimated final pose), open loop",
    "expert": "Scripted expert (same episodes)",
}
DEFAULT_CHECKPOINTS = {
    "track_checkpoint": "ros2_ws/src/t2a_perception/models/track_default",
    "residual_checkpoint": "ros2_ws/src/t2a_control/models/residual_default",
    "absolute_checkpoint": "runs/absolute/best",
}
# Flags that only choose which episodes run, or how: an --out folder resumes across them.
RESUMABLE_ARGS = ("splits", "episodes", "per_task", "first_seed", "tasks", "methods", "workers",
                  "out")  # fmt: skip


def episodes(
    splits: list[str],
    per_split: int,
    first_seed: int,
    only: list[str] | None = None,
    per_task: int | None = None,
) -> list[tuple[str, str, int]]:
    """``(split, task, seed)`` for at least ``per_split`` episodes in each split, spread evenly
    over its tasks (or over those of them in ``only``): seeds ``first_seed`` upwards, the same
    for every task. ``per_task`` instead sets the seeds per task directly."""
    out = []
    for split in splits:
        tasks = [t for t in tasks_of(split) if not only or t in only]
        if not tasks:
            raise ValueError(f"split {split} has none of the tasks {only}: {tasks_of(split)}")
        n = per_task if per_task is not None else math.ceil(per_split / len(tasks))
        for i in range(n):
            out += [(split, task, first_seed + i) for task in tasks]
    return out


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval (lo, hi) of a success rate; z = 1.96 for 95%; (nan, nan) if n = 0."""
    if n <= 0:
        return math.nan, math.nan
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


def missing_checkpoints(methods: list[str], paths: dict[str, str]) -> dict[str, str]:
    """method -> the checkpoint it needs that is absent (no config.json), for ``methods``."""
    out = {}
    for m in methods:
        source, _, flag = METHODS[m]
        needed = ([flag] if flag else []) + (["track_checkpoint"] if source == "model" else [])
        for f in needed:
            if not (Path(paths[f]) / "config.json").exists():
                out[m] = paths[f]
                break
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
                                    "it first (see docs/evaluation.md)")  # fmt: skip
        runner_cfg = RunnerConfig(temporal_ensemble=_W["args"]["temporal_ensemble"])
        _W["runners"][flag] = PolicyRunner(path, T_body_cam=_W["T_body_cam"], config=runner_cfg)
    return _W["runners"][flag]


def _model_tracks(ref: Reference) -> tuple[np.ndarray, np.ndarray]:
    """``predict_tracks`` for run_episode: the shared prediction, plus the depths of P0."""
    a = _W["args"]
    tracks = predict_tracks(ref, a["track_checkpoint"], a["points"], a["samples"], a["ddim_steps"])
    return tracks, depth_at_points(ref.depth0, tracks[0])


def _grounded_tracks(ref: Reference, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Grounding-only tracks (``t2a_perception.core.grounding``) of the stack's query points."""
    from t2a_bringup.core.episode import stack_query_points
    from t2a_perception.core.grounding import grounded_tracks

    p0 = stack_query_points(ref.rgb0, ref.goal_rgb)
    tracks, _ = grounded_tracks(ref.rgb0, ref.depth0, ref.goal_rgb, ref.intrinsics, p0, horizon)
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
        if source == "grounded":
            given = _grounded_tracks(ref, cfg.horizon)
        if source == "gt_query":
            grid = ref.grid_tracks_px
            given = (grid, depth_at_points(ref.depth0, grid[0]))
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
                     "detail": result.failure_detail, "message": result.message,
                     "errors": {k: round(v, 4) for k, v in result.errors.items()},
                     "final_state": result.final_state,
                     "sim_time_s": round(result.sim_time_s, 2),
                     "expert_success": bool(ref.expert_success),
                     "grasp_offset_m": list(offset)})  # fmt: skip
    rows[-1]["wall_s"] = round(time.perf_counter() - t0, 2)
    return rows


# ------------------------------------------------------------------------------ tables
def _expert_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per episode with the scripted expert's outcome (rows carry it per method)."""
    out = {}
    for r in rows:
        if "expert_success" in r:
            key = (r["split"], r["task"], r["seed"])
            out[key] = {**r, "method": "expert", "success": r["expert_success"], "failure": ""}
    return list(out.values())


def _task_order(split: str, task: str) -> tuple[int, str]:
    """Tasks in their split's order (tasks.SPLITS), unknown ones last by name."""
    tasks = tasks_of(split) if split in SPLITS else ()
    return (tasks.index(task) if task in tasks else len(tasks), task)


def _cell(sel: list[dict[str, Any]]) -> dict[str, Any]:
    n, k = len(sel), sum(bool(r["success"]) for r in sel)
    lo, hi = wilson(k, n)
    fails = collections.Counter(r["failure"] for r in sel if not r["success"])
    errors: dict[str, list[float]] = collections.defaultdict(list)
    for r in sel:
        if not r["success"] and r["failure"] == "wrong_final_pose":
            for name, v in (r.get("errors") or {}).items():
                errors[name].append(v)
    return {
        "episodes": n,
        "successes": k,
        "success_rate": k / n if n else float("nan"),
        "wilson95": [lo, hi],
        "failures": {f: fails[f] for f in FAILURES if fails[f]},
        "wrong_final_pose_median_error": {k: float(np.median(v)) for k, v in errors.items()},
    }


def summarize(rows: list[dict[str, Any]], methods: list[str], splits: list[str]) -> dict:
    """Per method (and "expert", the scripted expert on the same episodes): success, Wilson 95%
    interval and failure counts per split, over all splits ("all"), and per task
    (``["tasks"]["split/task"]``)."""
    rows = [*rows, *_expert_rows(rows)]
    out: dict[str, Any] = {}
    for m in [*methods, "expert"]:
        mine = [r for r in rows if r["method"] == m]
        out[m] = {s: _cell([r for r in mine if s == "all" or r["split"] == s])
                  for s in [*splits, "all"]}  # fmt: skip
        order = {split: i for i, split in enumerate(splits)}
        keys = {(r["split"], r["task"]) for r in mine if "task" in r}
        out[m]["tasks"] = {
            f"{s}/{t}": _cell([r for r in mine if r["split"] == s and r.get("task") == t])
            for s, t in sorted(keys, key=lambda k: (order.get(k[0], len(order)), _task_order(*k)))
        }
    return out


def _rate(c: dict[str, Any]) -> str:
    if not c["episodes"]:
        return "-"
    lo, hi = c["wilson95"]
    return (
        f"{100 * c['success_rate']:.0f}% ({c['successes']}/{c['episodes']}) "
        f"[{100 * lo:.0f}-{100 * hi:.0f}]"
    )


def _failures_text(c: dict[str, Any]) -> str:
    parts = []
    for f, n in c["failures"].items():
        text = f"{f} {n}"
        if f == "wrong_final_pose" and c["wrong_final_pose_median_error"]:
            errs = ", ".join(f"{k} {v:.3f}" for k, v in c["wrong_final_pose_median_error"].items())
            text += f" (median {errs})"
        parts.append(text)
    return "; ".join(parts) or "-"


def markdown(summary: dict, methods: list[str], splits: list[str], note: str) -> str:
    """The tables of ``summary``: per split with Wilson 95% intervals, per task, failures."""
    cols = [*splits, "all"]
    rows_of = [*methods, "expert"]
    lines = ["Success per split, [Wilson 95% interval]:", "",
             f"| method | {' | '.join(cols)} |", "|---|" + "---:|" * len(cols)]  # fmt: skip
    for m in rows_of:
        lines.append(f"| {LABELS[m]} | " + " | ".join(_rate(summary[m][s]) for s in cols) + " |")
    tasks = list(summary[rows_of[0]]["tasks"])
    header = "| task | " + " | ".join(LABELS[m] for m in rows_of) + " |"
    lines += ["", "Success per task, [Wilson 95% interval]:", "", header,
              "|---|" + "---:|" * len(rows_of)]  # fmt: skip
    for t in tasks:
        cells = [_rate(summary[m]["tasks"][t]) if t in summary[m]["tasks"] else "-"
                 for m in rows_of]  # fmt: skip
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    lines += ["", "Failures (all splits):", "", "| method | " + " | ".join(FAILURES) + " |",
              "|---|" + "---:|" * len(FAILURES)]  # fmt: skip
    for m in methods:
        f = summary[m]["all"]["failures"]
        lines.append(f"| {LABELS[m]} | " + " | ".join(str(f.get(k, 0)) for k in FAILURES) + " |")
    lines += ["", "Failures per task (wrong final poses with their median error: joint m or rad, "
              "position m, angle rad):", "", "| task | " + " | ".join(LABELS[m] for m in methods)
              + " |", "|---|" + "---|" * len(methods)]  # fmt: skip
    for t in tasks:
        cells = [_failures_text(summary[m]["tasks"][t]) if t in summary[m]["tasks"] else "-"
                 for m in methods]  # fmt: skip
        lines.append(f"| {t} | " + " | ".join(cells) + " |")
    return "\n".join([*lines, "", note]) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--splits", nargs="+", default=list(SPLITS), choices=list(SPLITS))
    p.add_argument("--episodes", type=int, default=40,
                   help="episodes per split (>=), spread evenly over its tasks: 40 = 8 per MG/G "
                   "task, 14 per CG/TG task")  # fmt: skip
    p.add_argument("--per-task", type=int, default=None,
                   help="seeds per task instead of --episodes per split")  # fmt: skip
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
    missing = missing_checkpoints(args.methods, vars(args))
    for m, path in missing.items():
        print(
            f"note: skipping {m} ({LABELS[m]}): its checkpoint {path} is absent (no "
            "config.json); train it first, see docs/evaluation.md",
            flush=True,
        )
    methods = [m for m in args.methods if m not in missing]
    log = out / "episodes.jsonl"
    rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    done = {(r["split"], r["task"], r["seed"], r["method"]) for r in rows}
    jobs = []
    chosen = episodes(args.splits, args.episodes, args.first_seed, args.tasks, args.per_task)
    for split, task, seed in chosen:
        todo = tuple(m for m in methods if (split, task, seed, m) not in done)
        if todo:
            jobs.append((split, task, seed, todo))
    print(f"{len(jobs)} episodes to run ({len(rows)} results already in {log}), "
          f"methods {methods}, {args.workers} workers", flush=True)  # fmt: skip
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
    wanted = set(chosen)
    rows = [r for r in rows if (r["split"], r["task"], r["seed"]) in wanted
            and r["method"] in methods]  # fmt: skip
    summary = summarize(rows, methods, args.splits)
    seeds = sorted({r["seed"] for r in rows})
    note = (f"Seeds {seeds[0]}-{seeds[-1]} per task, grasp offset {args.grasp_offset_m} m; "
            f"`python training/eval_closed_loop.py --splits {' '.join(args.splits)} "
            + (f"--per-task {args.per_task}" if args.per_task is not None
               else f"--episodes {args.episodes}")
            + f" --first-seed {args.first_seed} --methods {' '.join(methods)}"
            + (f" --tasks {' '.join(args.tasks)}" if args.tasks else "")
            + (f" --grasp-offset-m {args.grasp_offset_m}" if args.grasp_offset_m else "")
            + (f" --policy-states {' '.join(args.policy_states)}"
               if tuple(args.policy_states) != ControllerConfig().policy_states else "")
            + (" --temporal-ensemble" if args.temporal_ensemble else "")
            + "`") if rows else "no episodes"  # fmt: skip
    table = markdown(summary, methods, args.splits, note)
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
