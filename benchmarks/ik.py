"""Spot arm IK: our solver (closed form + LM, and LM only) against mink on the same poses.

Targets are tool poses fk(q) for q drawn uniformly within the joint limits, so every one is
reachable. Two seedings: "ready" (every solve starts from READY, as a new manipulation does: a
global problem) and "perturbed" (the answer plus 0.2 rad noise per joint, as the 5 Hz loop seeds
from the current joints: a local problem). Each solver stops at the same tolerances and per-attempt
iteration cap; mink gets one attempt (no restarts), ours LM-only restarts when its first fails.
Errors are recomputed with our fk for every solver (the MuJoCo model agrees with it, checked and
printed first).

    python benchmarks/ik.py [--n 1000] [--json]

With --json the last line of stdout is one JSON object with all the numbers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from importlib.metadata import version

import mink
import mujoco
import numpy as np
from common import emit_json, parser, print_table, stats_ms  # benchmarks/ is sys.path[0]

from t2a_common.core.kinematics import IKConfig, fk, fk_batch, solve_ik
from t2a_common.core.se3 import so3_log
from t2a_common.core.spot_arm import ARM_JOINTS, LOWER, READY, TOOL_OFFSET, UPPER

TOOL_SITE = "tool"
PERTURBATION = 0.2  # rad, standard deviation of the seed noise in the "perturbed" seeding
MINK_SOLVER = "daqp"  # the QP solver mink's own examples use; installed with mink
# mink's default damping; of 1e-12, 1e-6, 1e-3 and 1e-2 it gave mink the best success and speed
# on these poses (1e-3, our LM's starting damping, cost it 3 points of success when perturbed).
MINK_DAMPING = 1e-12


def _vec(values) -> str:
    return " ".join(repr(float(v)) for v in values)


def arm_mjcf() -> str:
    """A kinematics-only MuJoCo model of the arm, generated from the spot_arm table.

    The world frame is Spot's body frame. Each body sits at its joint's origin (all rpy zero) and
    carries a unit inertia only because MuJoCo refuses massless moving bodies.
    """
    inner = f'<site name="{TOOL_SITE}" pos="{_vec(TOOL_OFFSET)}"/>'
    for joint in reversed(ARM_JOINTS):
        inner = (
            f'<body name="{joint.child}" pos="{_vec(joint.origin)}">'
            f'<joint name="{joint.name}" axis="{_vec(joint.axis)}" '
            f'range="{_vec((joint.lower, joint.upper))}"/>'
            '<inertial pos="0 0 0" mass="1" diaginertia="0.01 0.01 0.01"/>'
            f"{inner}</body>"
        )
    return (
        '<mujoco model="spot_arm"><compiler angle="radian" autolimits="true"/>'
        f"<worldbody>{inner}</worldbody></mujoco>"
    )


def site_pose(model: mujoco.MjModel, data: mujoco.MjData, q: np.ndarray) -> np.ndarray:
    data.qpos[:] = q
    mujoco.mj_kinematics(model, data)
    site = model.site(TOOL_SITE).id
    T = np.eye(4)
    T[:3, :3] = data.site_xmat[site].reshape(3, 3)
    T[:3, 3] = data.site_xpos[site]
    return T


def sanity_check(model: mujoco.MjModel, n: int = 5) -> tuple[float, float]:
    """Largest position (m) and rotation (rad) gap between the MuJoCo site and our fk."""
    data = mujoco.MjData(model)
    rng = np.random.default_rng(123)
    gaps = []
    print("MuJoCo model vs fk at random q (site pose - fk pose):")
    for q in rng.uniform(LOWER, UPPER, size=(n, 6)):
        T_mj, T_ours = site_pose(model, data, q), fk(q)
        dp = float(np.linalg.norm(T_mj[:3, 3] - T_ours[:3, 3]))
        dr = float(np.linalg.norm(so3_log(T_mj[:3, :3] @ T_ours[:3, :3].T)))
        gaps.append((dp, dr))
        print(f"  q={np.array2string(q, precision=3)}  |dp|={dp:.1e} m  |dR|={dr:.1e} rad")
    return max(g[0] for g in gaps), max(g[1] for g in gaps)


class MinkSolver:
    """Iterates mink's differential IK to convergence from a seed, with our stopping rule."""

    def __init__(self, model: mujoco.MjModel, config: IKConfig):
        self.config = config
        self.configuration = mink.Configuration(model)
        self.task = mink.FrameTask(TOOL_SITE, "site", position_cost=1.0, orientation_cost=1.0)
        self.limits = [mink.ConfigurationLimit(model)]
        self.site = model.site(TOOL_SITE).id

    def __call__(self, T_target: np.ndarray, q_seed: np.ndarray) -> tuple[np.ndarray, bool]:
        cfg = self.config
        configuration, data = self.configuration, self.configuration.data
        configuration.update(q_seed)
        self.task.set_target(mink.SE3.from_matrix(T_target))
        R_t, p_t = T_target[:3, :3], T_target[:3, 3]
        for _ in range(cfg.max_iterations + 1):
            p = data.site_xpos[self.site]
            R = data.site_xmat[self.site].reshape(3, 3)
            if (
                np.linalg.norm(p_t - p) <= cfg.position_tolerance
                and np.linalg.norm(so3_log(R_t @ R.T)) <= cfg.rotation_tolerance
            ):
                return configuration.q.copy(), True
            # mink.solve_ik returns a velocity; dt only scales it back, so 1 s makes v = dq.
            velocity = mink.solve_ik(
                configuration, [self.task], 1.0, MINK_SOLVER, MINK_DAMPING, limits=self.limits
            )
            configuration.integrate_inplace(velocity, 1.0)
        return configuration.q.copy(), False


def run(solve: Callable, targets: np.ndarray, seeds: np.ndarray) -> dict[str, float]:
    times, ok, pos_err, rot_err = [], [], [], []
    for T, seed in zip(targets, seeds):
        start = time.perf_counter()
        q, success = solve(T, seed)
        times.append(time.perf_counter() - start)
        T_reached = fk(q)
        position = float(np.linalg.norm(T_reached[:3, 3] - T[:3, 3]))
        rotation = float(np.linalg.norm(so3_log(T[:3, :3] @ T_reached[:3, :3].T)))
        ok.append(success)
        if success:
            pos_err.append(position)
            rot_err.append(rotation)
    ms = stats_ms(times)
    return {
        "mean_ms": ms["mean"],
        "p50_ms": ms["p50"],
        "p95_ms": ms["p95"],
        "success_rate": float(np.mean(ok)),
        "mean_position_error_mm": float(np.mean(pos_err) * 1e3) if pos_err else float("nan"),
        "mean_rotation_error_deg": float(np.degrees(np.mean(rot_err))) if rot_err else float("nan"),
    }


def main() -> None:
    args_parser = parser(__doc__.split("\n")[0])
    args_parser.add_argument("--n", type=int, default=1000, help="number of random reachable poses")
    args = args_parser.parse_args()

    model = mujoco.MjModel.from_xml_string(arm_mjcf())
    max_dp, max_dr = sanity_check(model)
    print(f"  max gap: {max_dp:.1e} m, {max_dr:.1e} rad")

    rng = np.random.default_rng(0)
    q_true = rng.uniform(LOWER, UPPER, size=(args.n, 6))
    targets = fk_batch(q_true)
    seedings = {
        "ready": np.broadcast_to(READY, q_true.shape),
        "perturbed": np.clip(q_true + rng.normal(0.0, PERTURBATION, q_true.shape), LOWER, UPPER),
    }
    closed_form, lm_only = IKConfig(), IKConfig(analytic=False)

    def ours(config: IKConfig) -> Callable:
        def solve(T, seed):
            result = solve_ik(T, seed, config)
            return result.q, result.success

        return solve

    solvers = {
        "t2a closed form": ours(closed_form),
        "t2a LM only": ours(lm_only),
        f"mink {version('mink')}": MinkSolver(model, closed_form),
    }
    results = {
        seeding: {name: run(solve, targets, seeds) for name, solve in solvers.items()}
        for seeding, seeds in seedings.items()
    }

    cfg = closed_form
    columns = ("seed", "solver", "mean ms", "p50 ms", "p95 ms", "success %")
    columns += ("pos err mm", "rot err deg")
    keys = ("mean_ms", "p50_ms", "p95_ms", "success_rate")
    keys += ("mean_position_error_mm", "mean_rotation_error_deg")
    rows = [
        (seeding, name, *(100.0 * r[k] if k == "success_rate" else r[k] for k in keys))
        for seeding, by_solver in results.items()
        for name, r in by_solver.items()
    ]
    print_table(
        f"IK on {args.n} random reachable poses (tolerance {cfg.position_tolerance * 1e3:g} mm, "
        f"{cfg.rotation_tolerance:g} rad; <= {cfg.max_iterations} iterations per attempt; "
        "errors are means over successful solves)",
        columns,
        rows,
    )
    emit_json(
        args.json,
        {
            "benchmark": "ik",
            "n": args.n,
            "mink_version": version("mink"),
            "mujoco_vs_fk_max_position_gap_m": max_dp,
            "mujoco_vs_fk_max_rotation_gap_rad": max_dr,
            "results": results,
        },
    )


if __name__ == "__main__":
    main()
