"""Does a residual policy see a misplaced plan? A counterfactual probe on held-out demos.

For the first tick of each clean (unperturbed) validation demo, the policy is asked twice: once
with the demo's plan and once with every plan pose shifted ``--shift-m`` horizontally (a direction
drawn per demo), everything else (image, goal, tracks, hand) unchanged. The **follow ratio** is
how far the corrected hand goal moves along the shift, divided by the shift: 0 means the policy
undoes the plan error entirely (it finds the grasp from the scene), 1 means it does not see it.

    python training/probe_residual.py ros2_ws/src/t2a_control/models/residual_default \\
        --data data/res3 --demos 60

Prints one line per demo and the mean; ``--json`` adds one JSON object as the last line.
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from t2a_common.core.types import PointTrackSet
from t2a_control.core.policy_runtime import PolicyRunner
from training.residual_format import (
    DemoDataConfig,
    find_demos,
    intrinsics_from_array,
    select_demos,
)


def follow_ratio(runner: PolicyRunner, demo: dict, shift: np.ndarray) -> float:
    """How far the policy's goal at the demo's first tick moves with a plan shift (1 = fully)."""
    tracks = PointTrackSet(
        demo["tracks_px"], demo["tracks_depth_m"], intrinsics_from_array(demo["intrinsics"])
    )

    def goal(plan: np.ndarray) -> np.ndarray:
        runner.reset()
        out = runner.predict(
            {"image": demo["rgb"][0], "goal": demo["goal_rgb"], "tracks": tracks,
             "T_body_cam": demo["T_body_cam"], "plan": plan,
             "grasp_step": int(demo["grasp_step"]), "step": int(demo["step"][0]),
             "hand": demo["hand"][0]}
        )  # fmt: skip
        return out["pose"][:3, 3]

    plan = np.asarray(demo["plan_poses"], np.float64)
    shifted = plan.copy()
    shifted[:, :3, 3] += shift
    moved = goal(shifted) - goal(plan)
    return float(moved @ shift / (shift @ shift))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__.splitlines()[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("checkpoint", help="policy directory (config.json + model.safetensors)")
    p.add_argument("--data", nargs="+", required=True, help="demo directories (residual_data)")
    p.add_argument("--demos", type=int, default=60, help="validation demos to probe (at most)")
    p.add_argument("--shift-m", type=float, default=0.04, help="horizontal plan shift (m)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shift directions")
    p.add_argument("--json", action="store_true", help="last line: the numbers as JSON")
    args = p.parse_args(argv)
    torch.set_num_threads(1)
    runner = PolicyRunner(args.checkpoint)
    rng = np.random.default_rng(args.seed)
    ratios = []
    for ref in select_demos(find_demos(args.data), "val", DemoDataConfig()):
        if len(ratios) >= args.demos:
            break
        with np.load(ref.path) as z:
            demo = {k: z[k] for k in z.files}
        meta = json.loads(str(demo["meta"]))
        if meta.get("noise") is not None or meta.get("plan_source") == "model":
            continue  # only clean ground-truth plans: the shift is then the only plan error
        if len(demo["step"]) == 0:
            continue
        a = rng.uniform(0.0, 2.0 * np.pi)
        shift = args.shift_m * np.array([np.cos(a), np.sin(a), 0.0])
        ratios.append(follow_ratio(runner, demo, shift))
        print(f"{ref.split} {ref.task} {ref.seed}: follow ratio {ratios[-1]:.2f}", flush=True)
    if not ratios:
        print("no clean validation demos with ticks found", file=sys.stderr)
        return 1
    mean = float(np.mean(ratios))
    print(f"{args.checkpoint}: mean follow ratio {mean:.2f} over {len(ratios)} demos "
          f"(0 = the {args.shift_m * 100:g} cm plan error is undone, 1 = not seen)")  # fmt: skip
    if args.json:
        print(json.dumps({"checkpoint": args.checkpoint, "follow_ratio": mean, "demos": len(ratios),
                          "shift_m": args.shift_m}))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
