"""Generate scripted-expert episodes in the MuJoCo test bed (format: t2a_sim.core.dataset).

    python training/generate_sim_data.py --out data/sim --episodes-per-task 20 --splits MG G \\
        --workers 2

Resumable: finished episodes are skipped, so rerunning the same command completes a dataset.
An episode depends only on (split, task, seed) and the settings, never on the worker count.
"""

from __future__ import annotations

import argparse
import sys

from t2a_common.core.config import load_yaml
from t2a_sim.core import dataset
from t2a_sim.core.config import SimConfig
from t2a_sim.core.tasks import SPLITS, TASKS


def main(argv: list[str] | None = None) -> int:
    """Parse the command line and generate the dataset; returns the exit status."""
    defaults = dataset.RecordConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", required=True, help="dataset directory (created if missing)")
    p.add_argument("--splits", nargs="+", default=["MG"], choices=list(SPLITS))
    p.add_argument("--tasks", nargs="+", choices=sorted(TASKS), help="only these tasks")
    p.add_argument("--episodes-per-task", type=int, default=20)
    p.add_argument("--seed", type=int, default=0, help="first episode seed of every task")
    p.add_argument("--workers", type=int, default=2, help="processes (one sim + renderer each)")
    p.add_argument("--width", type=int, default=defaults.width, help="image width (px)")
    p.add_argument("--height", type=int, default=defaults.height, help="image height (px)")
    p.add_argument("--record-hz", type=float, default=defaults.record_hz)
    p.add_argument("--points", type=int, default=defaults.n_points, help="tracked points")
    p.add_argument("--object-fraction", type=float, default=defaults.object_fraction)
    p.add_argument("--grasp-mode", choices=["weld", "friction"], default=defaults.grasp_mode)
    p.add_argument("--sim-config", help="YAML of SimConfig overrides (e.g. config/sim.yaml)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    args = p.parse_args(argv)
    if args.episodes_per_task < 1:
        p.error(f"--episodes-per-task must be >= 1, got {args.episodes_per_task}")

    try:
        cfg = dataset.RecordConfig(
            width=args.width,
            height=args.height,
            record_hz=args.record_hz,
            n_points=args.points,
            object_fraction=args.object_fraction,
            grasp_mode=args.grasp_mode,
        )
        sim = load_yaml(SimConfig, args.sim_config) if args.sim_config else None
    except ValueError as exc:
        p.error(str(exc))
    jobs = dataset.plan_jobs(args.splits, args.episodes_per_task, args.seed, args.tasks)
    if not jobs:
        p.error(f"no task of {args.tasks} is in splits {args.splits}")
    index = dataset.generate(args.out, jobs, cfg, sim, args.workers, progress=not args.quiet)
    eps = index["episodes"]
    ok = sum(e["success"] for e in eps)
    print(f"{args.out}: {len(eps)} episodes, {ok} successful ({ok / max(len(eps), 1):.0%})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
