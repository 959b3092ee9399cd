"""Goal validation on real episodes: are the scripted expert's goals accepted, nonsense refused?

For each episode ``(task, split, seed)`` (every task/split pair in turn over the seed range) the
expert's twin rollout gives I0, its depth and the goal image (its last frame, the arm may be in
view). ``check_goal`` is asked about the real goal (must pass) and about goals that must be
refused: random noise, a blank image, another task's goal, the live frame itself, the live view
shifted 20 px, a zoomed crop of it, the real goal with all-NaN depth, and, as the known weak
spot, the real goal shifted 16 px (flat scenes: a shift and an object's motion look alike).

    python benchmarks/goal_check.py [--seeds 500:532] [--json]

Dev seeds (500-699) only: evaluation seeds (1000+) stay unseen.
"""

from __future__ import annotations

import time

import cv2
import numpy as np
from common import emit_json, parser, print_table  # benchmarks/ is sys.path[0]

from t2a_bringup.core.episode import EpisodeConfig, expert_reference
from t2a_perception.core.goal_check import check_goal
from t2a_sim.core.tasks import SPLITS


def negatives(ref, other_goal: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    live = ref.rgb0
    h, w = live.shape[:2]
    return {
        "noise": rng.integers(0, 256, live.shape, dtype=np.uint8),
        "blank": np.full_like(live, 128),
        "another task's goal": other_goal,
        "the live frame": live.copy(),
        "live view shifted 20 px": cv2.warpAffine(
            live, np.float32([[1, 0, 20], [0, 1, 0]]), (w, h), borderMode=cv2.BORDER_REPLICATE
        ),
        "zoomed crop of live view": cv2.resize(live[12:-12, 16:-16], (w, h)),
        "goal shifted 16 px (weak)": np.roll(ref.goal_rgb, 16, axis=1),
    }


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--seeds", default="500:532", help="seed range a:b (dev seeds, b excluded)")
    args = p.parse_args()
    a, b = (int(x) for x in args.seeds.split(":"))
    pairs = [(t, s) for s, d in SPLITS.items() for t in d.tasks]
    rng = np.random.default_rng(0)
    refs = []
    for i, seed in enumerate(range(a, b)):
        task, split = pairs[i % len(pairs)]
        refs.append((task, split, expert_reference(EpisodeConfig(task, split, seed))))
    counts: dict[str, list[int]] = {}
    reasons: dict[str, set[str]] = {}
    times, worst_real = [], []
    for i, (task, split, ref) in enumerate(refs):
        t0 = time.perf_counter()
        r = check_goal(ref.rgb0, ref.depth0, ref.goal_rgb)
        times.append(time.perf_counter() - t0)
        counts.setdefault("real goal (accepted)", []).append(int(r.ok))
        if not r.ok:
            worst_real.append(f"{task} {split}: {r.reason}")
        others = [x for x in refs if x[0] != task]
        other = others[i % len(others)][2].goal_rgb if others else np.zeros_like(ref.rgb0)
        cases = negatives(ref, other, rng)
        for name, goal in cases.items():
            r = check_goal(ref.rgb0, ref.depth0, goal)
            counts.setdefault(f"{name} (refused)", []).append(int(not r.ok))
            reasons.setdefault(name, set()).add(r.reason.split(":")[0] if r.reason else "-")
        nan_depth = np.full_like(ref.depth0, np.nan)
        r = check_goal(ref.rgb0, nan_depth, ref.goal_rgb)
        counts.setdefault("no depth (refused)", []).append(int(not r.ok))
    # Baseline: set_goal before the check accepted every goal of the right encoding and size.
    rows = [
        [name, f"{sum(v)}/{len(v)}", f"{len(v) if name.startswith('real') else 0}/{len(v)}"]
        for name, v in counts.items()
    ]
    print_table(
        f"goal check over {len(refs)} episodes, seeds {a}..{b - 1}",
        ["case", "with check", "baseline: no check"],
        rows,
    )
    ms = np.array(times) * 1e3
    print(f"\ncheck time: mean {ms.mean():.0f} ms, max {ms.max():.0f} ms (320x240)")
    for line in worst_real:
        print("REFUSED REAL GOAL:", line)
    emit_json(
        args.json,
        {"episodes": len(refs), "seeds": [a, b], "counts": {k: [sum(v), len(v)] for k, v in
         counts.items()}, "check_ms_mean": float(ms.mean())},
    )  # fmt: skip


if __name__ == "__main__":
    main()
