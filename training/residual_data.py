"""Writing a residual-policy demonstration set: jobs, worker processes, the command line.

Each demo is recorded by :mod:`training.residual_demos` and written in
:mod:`training.residual_format`'s layout. Generation is resumable and seeded (a demo depends only
on ``(split, task, seed, variant)`` and the config, never on the worker that made it)::

    python training/residual_data.py --out data/residual --splits MG G \\
        --episodes-per-task 40 --variants 2 --workers 2

(or ``t2a-residual-demos`` with the same flags).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from t2a_common.core.config import fields, load_yaml, to_dict
from t2a_control.core.controller import ControllerConfig
from t2a_sim.core.config import SimConfig
from t2a_sim.core.dataset import plan_jobs
from t2a_sim.core.tasks import SPLITS, TASKS
from training.engine import add_config_flags, config_from_flags
from training.residual_demos import record_demos
from training.residual_format import (
    DemoConfig,
    demo_controller_config,
    demo_path,
    save_demo,
    write_demo_index,
)

# -------------------------------------------------------------------------------------------
# Writing a demo set (resumable, multiprocessing)
# -------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class DemoJob:
    """One episode and the variants of it still to record."""

    split: str
    task: str
    seed: int
    variants: tuple[int, ...]


def plan_demo_jobs(
    out: str | Path,
    splits: Iterable[str],
    episodes_per_task: int,
    variants: int = 1,
    base_seed: int = 0,
    tasks: Iterable[str] | None = None,
) -> list[DemoJob]:
    """Every episode with variants not yet on disk (a ``.json`` marks a finished demo)."""
    jobs = []
    for ep in plan_jobs(splits, episodes_per_task, base_seed, tasks):
        todo = tuple(
            v
            for v in range(variants)
            if not demo_path(out, ep.split, ep.task, ep.seed, v).with_suffix(".json").exists()
        )
        if todo:
            jobs.append(DemoJob(ep.split, ep.task, ep.seed, todo))
    return jobs


def _check_same_config(out: Path, cfg: DemoConfig, controller: ControllerConfig) -> None:
    path = out / "index.json"
    if not path.is_file():
        return
    index = json.loads(path.read_text())
    diff = []
    for key, new in (("demo_config", to_dict(cfg)), ("controller_config", to_dict(controller))):
        old = index.get(key, new)
        diff += sorted(k for k in set(old) | set(new) if old.get(k) != new.get(k))
    if diff:
        raise ValueError(
            f"{out} holds demos made with other settings (differing: {diff}); use a new --out "
            "or the same settings"
        )


_WORKER: dict[str, Any] = {}


def _init_worker(
    cfg: DemoConfig, sim: SimConfig | None, controller: ControllerConfig, threads: int
) -> None:
    torch.set_num_threads(threads)  # the workers only run numpy/MuJoCo; keep torch out of the way
    _WORKER.update(cfg=cfg, sim=sim, controller=controller)


def _run_job(args: tuple[DemoJob, str]) -> list[bool]:
    job, out = args
    w = _WORKER
    demos = record_demos(
        job.task,
        job.split,
        job.seed,
        job.variants,
        w["cfg"],
        w["sim"],
        controller_cfg=w["controller"],
    )
    for variant, demo in zip(job.variants, demos):
        save_demo(demo_path(out, job.split, job.task, job.seed, variant), demo)
    return [bool(d["success"]) for d in demos]


def generate_demos(
    out: str | Path,
    jobs: list[DemoJob],
    cfg: DemoConfig | None = None,
    sim: SimConfig | None = None,
    controller: ControllerConfig | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Record every job into ``out`` and rebuild the index; returns the index.

    Jobs come from :func:`plan_demo_jobs`, which skips finished demos, so an interrupted run
    resumes. Refuses to mix settings in one directory.
    """
    from tqdm import tqdm

    cfg = cfg or DemoConfig()
    controller = demo_controller_config(controller)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    _check_same_config(out, cfg, controller)
    write_demo_index(out, cfg, controller)  # records the settings before the first demo lands
    bar = tqdm(
        total=sum(len(j.variants) for j in jobs), disable=not progress, unit="demo", desc="demos"
    )
    ok = 0
    args = [(j, str(out)) for j in jobs]
    if workers <= 1:
        _init_worker(cfg, sim, controller, torch.get_num_threads())
        for a in args:
            results = _run_job(a)
            ok += sum(results)
            bar.update(len(results))
            bar.set_postfix(success=ok)
        _WORKER.clear()
    else:
        import multiprocessing as mp

        # spawn: a forked child would inherit the parent's GL state, which EGL does not survive.
        with mp.get_context("spawn").Pool(workers, _init_worker, (cfg, sim, controller, 1)) as pool:
            for results in pool.imap_unordered(_run_job, args):
                ok += sum(results)
                bar.update(len(results))
                bar.set_postfix(success=ok)
    bar.close()
    return write_demo_index(out, cfg, controller)


# -------------------------------------------------------------------------------------------
# Command line
# -------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    """Generate residual-policy demonstrations; returns the exit status."""
    p = argparse.ArgumentParser(
        description="Record residual-policy demonstrations in t2a_sim: ground-truth tracks -> "
        "(perturbed) open-loop plan -> controller at 5 Hz with a privileged demonstrator "
        "correcting it. Resumable: rerun the same command to complete a set.",
    )
    p.add_argument("--out", required=True, help="demo directory (created if missing)")
    p.add_argument(
        "--splits", nargs="+", default=["MG"], choices=list(SPLITS), help="splits to record"
    )
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="only these tasks")
    p.add_argument("--episodes-per-task", type=int, default=20, help="episode seeds per task")
    p.add_argument("--variants", type=int, default=1, help="noisy plans recorded per episode")
    p.add_argument("--seed", type=int, default=0, help="first episode seed of every task")
    p.add_argument("--workers", type=int, default=2, help="processes (one sim + renderer each)")
    p.add_argument("--config", default="", help="YAML of DemoConfig fields (flags override it)")
    p.add_argument("--sim-config", default="", help="YAML of SimConfig overrides")
    p.add_argument(
        "--controller-config",
        default="",
        help="YAML of ControllerConfig overrides the demos run with (e.g. policy_states); "
        "stored in index.json for the closed-loop evaluation (mode is always residual)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(p, DemoConfig)
    args = vars(p.parse_args(argv))
    if args["episodes_per_task"] < 1 or args["variants"] < 1:
        p.error("--episodes-per-task and --variants must be >= 1")
    known = {s.name for s in fields(DemoConfig)}
    try:
        cfg = config_from_flags(
            DemoConfig, {k: v for k, v in args.items() if k in known}, args["config"]
        )
        sim = load_yaml(SimConfig, args["sim_config"]) if args["sim_config"] else None
        controller = (
            load_yaml(ControllerConfig, args["controller_config"])
            if args["controller_config"]
            else None
        )
    except ValueError as exc:
        p.error(str(exc))
    jobs = plan_demo_jobs(
        args["out"],
        args["splits"],
        args["episodes_per_task"],
        args["variants"],
        args["seed"],
        args["tasks"],
    )
    index = generate_demos(
        args["out"], jobs, cfg, sim, controller, args["workers"], not args["quiet"]
    )
    demos = index["demos"]
    ok = sum(d["success"] for d in demos)
    ticks = sum(d["ticks"] for d in demos if d["success"])
    print(
        f"{args['out']}: {len(demos)} demos, {ok} successful ({ok / max(len(demos), 1):.0%}), "
        f"{ticks} training ticks"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
