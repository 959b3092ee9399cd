"""``t2a-sim-goal``: render the goal image of a t2a_sim episode (the scripted expert's last frame).

    t2a-sim-goal --task drawer_open --split MG --seed 0 -o goal.png

The expert solves the episode on a private copy of the scene; its final camera frame is what
the scene should look like afterwards, i.e. a goal image to send with ``t2a-send-goal``.
"""

from __future__ import annotations

import argparse

import cv2

from t2a_bringup.core.episode import EpisodeConfig, expert_reference
from t2a_sim.core import tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="drawer_open", choices=sorted(tasks.TASKS))
    parser.add_argument("--split", default="MG", choices=sorted(tasks.SPLITS))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--width", type=int, default=640, help="image width (px), as the sim node")
    parser.add_argument("--height", type=int, default=480, help="image height (px)")
    parser.add_argument("-o", "--out", default="goal.png", help="output image file")
    parser.add_argument("--initial", default="", help="also save the first frame I0 here")
    args = parser.parse_args(argv)
    if args.task not in tasks.tasks_of(args.split):
        parser.error(f"task {args.task} is not in split {args.split}: {tasks.tasks_of(args.split)}")
    cfg = EpisodeConfig(task=args.task, split=args.split, seed=args.seed, width=args.width,
                        height=args.height)  # fmt: skip
    ref = expert_reference(cfg)
    cv2.imwrite(args.out, cv2.cvtColor(ref.goal_rgb, cv2.COLOR_RGB2BGR))
    if args.initial:
        cv2.imwrite(args.initial, cv2.cvtColor(ref.rgb0, cv2.COLOR_RGB2BGR))
    state = "solved" if ref.expert_success else "did NOT solve"
    print(f"wrote {args.out} ({args.width}x{args.height}); the expert {state} the episode")
    return 0 if ref.expert_success else 1


if __name__ == "__main__":
    raise SystemExit(main())
