"""The 5 Hz control loop in real time: tick period, jitter and per-stage latency.

In process, with the real components: ``Controller`` driving the kinematic ``FakeArmDriver`` on a
synthetic 20 cm pull, in mode "open_loop" (no policy: the baseline) and "residual" (a
``PolicyRunner`` around an untrained default ``ResidualPolicy``; weights do not change the time)
fed 640x480 RGB images, a goal image and 400 x 9 point tracks. torch runs on 1 thread, as in the
node. A monotonic-clock timer sleeps until each deadline; the fake arm advances one nominal
period per tick. When a run ends (done/failed) the plan is restarted, so every tick is active.

    python benchmarks/control_loop.py [--rate 5] [--ticks 50] [--json]

With --json the last line of stdout is one JSON object with all the numbers.
"""

from __future__ import annotations

import time

import numpy as np
import torch
from common import emit_json, parser, print_table, stats_ms  # benchmarks/ is sys.path[0]

from t2a_common.core.geometry import SIM_CAMERA_QUAT, SIM_CAMERA_XYZ, Intrinsics, pose_to_matrix
from t2a_common.core.kinematics import fk, solve_ik
from t2a_common.core.spot_arm import READY
from t2a_common.core.types import PLAN_OK, EEPlan, PointTrackSet
from t2a_control.core.controller import Controller, ControllerConfig, Observation
from t2a_control.core.driver import FakeArmDriver
from t2a_control.core.policy import PolicyConfig, PolicyStats, ResidualPolicy
from t2a_control.core.policy_runtime import PolicyRunner
from t2a_control.core.watchdog import WatchdogConfig

WIDTH, HEIGHT, FOVY_DEG = 640, 480, 42.0
NUM_POINTS = 400
STAGES = ("policy", "safety", "ik", "total")
TARGET_MS = {"policy": 30.0, "total": 60.0}  # policy < 30 ms, whole tick < 60 ms
WATCHED = WatchdogConfig().inputs  # every input the node watches


def pull_plan(steps: int, period_s: float, pull_m: float = 0.2) -> EEPlan:
    """Grasp at (0.95, 0.05, 0.05) m with the ready orientation, pull -x by ``pull_m``."""
    T_grasp = fk(READY)
    T_grasp[:3, 3] = [0.95, 0.05, 0.05]
    T_pregrasp = T_grasp.copy()
    T_pregrasp[2, 3] += 0.08  # approach straight down
    poses = np.repeat(T_grasp[None], steps, axis=0)  # (T, 4, 4)
    poses[:, 0, 3] -= np.linspace(0.0, pull_m, steps)
    q = READY
    for T in (T_pregrasp, *poses):  # every pose reachable, each seeded from the previous
        result = solve_ik(T, q)
        if not result.success:
            raise RuntimeError(f"IK cannot reach the synthetic plan pose {T[:3, 3]}")
        q = result.q
    return EEPlan(
        status=PLAN_OK,
        message="",
        ee_poses=poses,
        times_s=3.0 + period_s * np.arange(steps),
        pregrasp=T_pregrasp,
        grasp_step=0,
        goal_id="pull",
    )


def synthetic_tracks(horizon: int, rng: np.random.Generator) -> PointTrackSet:
    """400 points drifting left by up to 60 px over ``horizon`` steps, 0.8 m deep."""
    intrinsics = Intrinsics.from_fov(WIDTH, HEIGHT, FOVY_DEG)
    p0 = rng.uniform([100, 100], [540, 380], size=(NUM_POINTS, 2))
    drift = np.linspace(0.0, 1.0, horizon + 1)[:, None, None] * np.array([-60.0, 0.0])
    return PointTrackSet(
        tracks_px=(p0[None] + drift).astype(np.float32),
        depth_m=np.full(NUM_POINTS, 0.8, dtype=np.float32),
        intrinsics=intrinsics,
        goal_id="pull",
    )


def run_mode(mode: str, rate_hz: float, ticks: int) -> dict:
    """``ticks`` real-time ticks of one mode: wall-clock periods and the controller's timings."""
    rng = np.random.default_rng(0)
    period = 1.0 / rate_hz
    config = ControllerConfig(rate_hz=rate_hz, mode=mode)
    policy = None
    horizon = PolicyConfig().horizon
    if mode != "open_loop":
        model = ResidualPolicy(PolicyConfig(), PolicyStats())
        # The node's runner: P0 lifted into the body frame with the (sim) camera calibration.
        T_body_cam = pose_to_matrix(SIM_CAMERA_XYZ, SIM_CAMERA_QUAT)
        policy = PolicyRunner(model=model, T_body_cam=T_body_cam)
    plan = pull_plan(horizon + 1, period)
    controller = Controller(config, policy)
    controller.set_plan(plan)
    driver = FakeArmDriver()
    images = [rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8) for _ in range(4)]
    goal_image = rng.integers(0, 256, (HEIGHT, WIDTH, 3), dtype=np.uint8)
    tracks = synthetic_tracks(horizon, rng)

    gripper_open = True
    starts, timings, states, runs = [], {s: [] for s in STAGES}, {}, 1
    next_deadline = time.monotonic()
    for i in range(ticks):
        delay = next_deadline - time.monotonic()
        if delay > 0:
            time.sleep(delay)
        starts.append(time.monotonic())
        next_deadline += period

        q, gripper, now = driver.joint_positions()
        obs = Observation(
            now,
            q,
            gripper,
            image=images[i % len(images)],
            image_stamp_s=now,
            goal_image=goal_image,
            tracks=tracks,
            stamps=dict.fromkeys(WATCHED, now),
        )
        cmd = controller.tick(obs)
        if cmd.send_joints:
            driver.send_joint_targets(cmd.q_target)
        if cmd.gripper_open != gripper_open:
            driver.open_gripper() if cmd.gripper_open else driver.close_gripper()
            gripper_open = cmd.gripper_open
        driver.step(period)

        states[cmd.state] = states.get(cmd.state, 0) + 1
        for stage in STAGES:
            if stage in cmd.timings_ms:
                timings[stage].append(cmd.timings_ms[stage] * 1e-3)
        if cmd.state in ("done", "failed"):
            controller.set_plan(plan)  # keep the loop busy with active states
            runs += 1

    periods = np.diff(starts)
    jitter = np.abs(periods - period)
    return {
        "ticks": ticks,
        "plan_runs": runs,
        "states": states,
        "period_ms": {
            "mean": float(periods.mean() * 1e3),
            "std": float(periods.std() * 1e3),
            "max": float(periods.max() * 1e3),
        },
        "jitter_ms": {
            "mean": float(jitter.mean() * 1e3),
            "p95": float(np.percentile(jitter, 95) * 1e3),
        },
        # stages that never ran (policy in open_loop) are left out: no NaN in the JSON
        "stages_ms": {s: {**stats_ms(v), "n": len(v)} for s, v in timings.items() if v},
    }


def main() -> None:
    args_parser = parser(__doc__.split("\n")[0])
    args_parser.add_argument("--rate", type=float, default=5.0, help="control rate (Hz)")
    args_parser.add_argument("--ticks", type=int, default=50, help="ticks per mode")
    args = args_parser.parse_args()
    torch.set_num_threads(1)

    results = {mode: run_mode(mode, args.rate, args.ticks) for mode in ("open_loop", "residual")}
    n_params = sum(t.numel() for t in ResidualPolicy(PolicyConfig(), PolicyStats()).parameters())
    print(f"residual policy: default PolicyConfig, {n_params / 1e6:.2f} M parameters")

    print_table(
        f"Tick timer at {args.rate:g} Hz ({args.ticks} ticks per mode; jitter = |period - "
        f"{1e3 / args.rate:g} ms|)",
        ("mode", "period mean ms", "std ms", "max ms", "jitter mean ms", "jitter p95 ms", "states"),
        [
            (
                mode,
                r["period_ms"]["mean"],
                r["period_ms"]["std"],
                r["period_ms"]["max"],
                r["jitter_ms"]["mean"],
                r["jitter_ms"]["p95"],
                " ".join(f"{k}:{v}" for k, v in r["states"].items()),
            )
            for mode, r in results.items()
        ],
    )
    print_table(
        "Per-stage latency from Command.timings_ms (policy: approach, grasp, execute)",
        ("mode", "stage", "n", "mean ms", "p50 ms", "p95 ms", "target"),
        [
            (mode, stage, s["n"], s["mean"], s["p50"], s["p95"], _target(stage, s["p95"]))
            for mode, r in results.items()
            for stage, s in r["stages_ms"].items()
        ],
    )
    emit_json(
        args.json,
        {
            "benchmark": "control_loop",
            "rate_hz": args.rate,
            "ticks": args.ticks,
            "torch_threads": torch.get_num_threads(),
            "targets_ms": TARGET_MS,
            "results": results,
        },
    )


def _target(stage: str, p95_ms: float) -> str:
    if stage not in TARGET_MS:
        return ""
    limit = TARGET_MS[stage]
    return f"< {limit:g} ms ({'ok' if p95_ms < limit else 'MISSED'} at p95)"


if __name__ == "__main__":
    main()
