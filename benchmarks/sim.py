"""MuJoCo test bed speed: RGB-D render fps, physics steps/s, dataset episodes per minute.

- render: our one-pass colour + metric depth (``t2a_sim.core.render.Camera``) at 640x480 and
  256x256, next to MuJoCo's stock ``mujoco.Renderer`` doing the same in two passes;
- physics: ``SimEnv.advance`` (rate-limited servos, the real stepping path) next to bare
  ``mj_step`` on the same model;
- dataset: scripted-expert episodes recorded and written (320x240, 5 Hz, 400 tracks) per minute,
  with one worker and with ``--workers`` (default 2) processes.
"""

from __future__ import annotations

import tempfile
import time

import mujoco
from common import emit_json, parser, print_table  # benchmarks/ is sys.path[0]

from t2a_sim.core import dataset
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv

TASK, SPLIT = "drawer_open", "MG"


def _rate(fn, min_s: float) -> float:
    """Calls of ``fn`` per second over at least ``min_s`` seconds (after one warm-up call)."""
    fn()
    n, t0 = 0, time.perf_counter()
    while True:
        fn()
        n += 1
        dt = time.perf_counter() - t0
        if dt >= min_s:
            return n / dt


def bench_render(width: int, height: int, min_s: float) -> dict[str, float]:
    env = SimEnv(SimConfig(width=width, height=height))
    env.reset(TASK, SPLIT, 0)
    ours = _rate(env.render, min_s)
    stock = mujoco.Renderer(env.model, height, width)

    def two_passes():
        stock.update_scene(env.data, "front_camera")
        stock.render()
        stock.enable_depth_rendering()
        stock.render()
        stock.disable_depth_rendering()

    base = _rate(two_passes, min_s)
    stock.close()
    env.close()
    return {"ours_fps": ours, "stock_fps": base}


def bench_physics(min_s: float) -> dict[str, float]:
    env = SimEnv(SimConfig(width=64, height=48))
    env.reset(TASK, SPLIT, 0)
    env.set_arm_targets(env.joint_positions()[:6] + 0.3)
    chunk = 200
    ours = _rate(lambda: env.advance(chunk * env.config.timestep), min_s) * chunk
    m, d = env.model, env.data
    bare = _rate(lambda: mujoco.mj_step(m, d, nstep=chunk), min_s) * chunk
    return {"ours_steps_s": ours, "bare_steps_s": bare, "realtime_x": ours * env.config.timestep}


def bench_dataset(episodes: int, workers: int) -> dict[str, float]:
    jobs = dataset.plan_jobs(["MG"], episodes, tasks=["drawer_open", "bottle_pour"])
    out = {}
    for w in sorted({1, workers}):
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            dataset.generate(tmp, jobs, dataset.RecordConfig(), workers=w, progress=False)
            out[f"workers{w}_episodes_min"] = len(jobs) / (time.perf_counter() - t0) * 60
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=2.0, help="measuring time per figure (s)")
    p.add_argument("--episodes", type=int, default=2, help="episodes per task for the dataset")
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()

    results = {
        "render_640x480": bench_render(640, 480, args.seconds),
        "render_256x256": bench_render(256, 256, args.seconds),
        "physics": bench_physics(args.seconds),
        "dataset": bench_dataset(args.episodes, args.workers),
    }
    r = results
    print_table(
        "RGB + depth render (frames/s)",
        ["size", "t2a_sim one pass", "mujoco.Renderer two passes"],
        [
            ["640x480", r["render_640x480"]["ours_fps"], r["render_640x480"]["stock_fps"]],
            ["256x256", r["render_256x256"]["ours_fps"], r["render_256x256"]["stock_fps"]],
        ],
    )
    ph = r["physics"]
    print_table(
        f"physics (steps/s, dt={SimConfig().timestep} s)",
        ["SimEnv.advance", "bare mj_step", "x real time"],
        [[ph["ours_steps_s"], ph["bare_steps_s"], ph["realtime_x"]]],
    )
    print_table(
        "dataset generation (episodes/min, 320x240, 5 Hz, 400 tracks)",
        list(r["dataset"]),
        [list(r["dataset"].values())],
    )
    emit_json(args.json, {k: {n: float(v) for n, v in d.items()} for k, d in results.items()})


if __name__ == "__main__":
    main()
