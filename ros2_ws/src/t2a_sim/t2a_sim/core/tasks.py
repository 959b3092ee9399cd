"""Tasks (an activity on an object kind), the generalisation splits, and episode sampling.

This module is the one place that says which tasks exist and which split sees what. The splits
mirror Track2Act section 3.1:

- **MG** (mild): the seen tasks on *seen* object instances (a fixed set per kind) in seen scene
  styles; only placement, lighting, camera jitter and distractors change.
- **G** (standard): the seen tasks on *unseen* instances (new sizes, colours, textures), in seen or
  unseen scene styles.
- **CG** (combinatorial): activity/object pairs never seen together, although both the activity
  and the object kind appear in the seen tasks (e.g. close a drawer, when only opening drawers
  and closing cabinets were seen).
- **TG** (type): object kinds never seen (microwave, toaster, jug), in unseen scene styles.

An episode is fully determined by ``(task, split, seed)``: :func:`sample_episode` draws every
random choice from one generator seeded with all three.
"""

from __future__ import annotations

import dataclasses
import zlib
from typing import Any

import numpy as np
from scipy.spatial.transform import Rotation

from t2a_common.core import se3
from t2a_sim.core import objects


@dataclasses.dataclass(frozen=True)
class TaskDef:
    """One activity on one object kind, with its start/goal ranges and success tolerances."""

    name: str
    kind: str  # object kind (objects.KINDS)
    activity: str  # open | close | press | lift | pour | push
    site: str  # grasp/contact site role on the object
    release: bool  # the expert lets go at the end (False: the goal is held in the hand)
    start: tuple[float, float] = (0.0, 0.0)  # articulated: initial joint value range
    goal: tuple[float, float] = (0.0, 0.0)  # articulated: goal joint value; free: motion size
    tol: float = 0.02  # articulated: |q - q_goal| (m or rad); free: position error (m)
    tol_angle: float = 0.26  # free objects: rotation error (rad)

    @property
    def articulated(self) -> bool:
        """Whether the task moves a joint of a fixed object (else a free object's 6-DoF pose)."""
        return self.kind in objects.ARTICULATED


TASKS: dict[str, TaskDef] = {
    t.name: t
    for t in (
        TaskDef("drawer_open", "drawer", "open", "handle", True, (0, 0), (0.12, 0.18), tol=0.02),
        TaskDef("drawer_close", "drawer", "close", "handle", True, (0.1, 0.15), (0, 0), tol=0.02),
        TaskDef("cabinet_open", "cabinet", "open", "handle", True, (0, 0), (0.8, 1.1), tol=0.12),
        TaskDef("cabinet_close", "cabinet", "close", "handle", True, (0.5, 0.8), (0, 0), tol=0.12),
        TaskDef("microwave_open", "microwave", "open", "handle", True, goal=(0.8, 1.1), tol=0.12),
        TaskDef(
            "toaster_press", "toaster", "press", "handle", True, (0, 0), (-0.6, -0.45), tol=0.12
        ),
        TaskDef("bottle_lift", "bottle", "lift", "handle", False, goal=(0.10, 0.16), tol=0.03),
        TaskDef("bottle_pour", "bottle", "pour", "handle", False, goal=(1.2, 1.6), tol=0.04),
        TaskDef("jug_pour", "jug", "pour", "handle", False, goal=(1.0, 1.4), tol=0.04),
        TaskDef("box_push", "box", "push", "push", True, goal=(0.08, 0.14), tol=0.03),
        TaskDef("box_lift", "box", "lift", "top", False, goal=(0.10, 0.16), tol=0.03),
    )
}
"""Every task by name."""

SEEN_TASKS = ("drawer_open", "cabinet_close", "bottle_lift", "bottle_pour", "box_push")


@dataclasses.dataclass(frozen=True)
class SplitDef:
    """Which tasks a split holds and where its object instances and scene styles come from."""

    name: str
    tasks: tuple[str, ...]
    instances: str  # "seen": the fixed instances per kind; "novel": freshly sampled
    scenes: str  # "seen": the fixed scene styles; "novel": fresh; "mixed": either, 50/50
    doc: str


SPLITS: dict[str, SplitDef] = {
    s.name: s
    for s in (
        SplitDef("MG", SEEN_TASKS, "seen", "seen", "seen instances, new placement and lighting"),
        SplitDef("G", SEEN_TASKS, "novel", "mixed", "unseen instances of seen kinds"),
        SplitDef(
            "CG",
            ("drawer_close", "cabinet_open", "box_lift"),
            "seen",
            "mixed",
            "unseen activity-object combinations",
        ),
        SplitDef(
            "TG",
            ("microwave_open", "toaster_press", "jug_pour"),
            "novel",
            "novel",
            "unseen object kinds in unseen scenes",
        ),
    )
}
"""The four generalisation levels of Track2Act section 3.1."""

SEEN_INSTANCES_PER_KIND = 3
SEEN_SCENE_STYLES = 3


def _check_splits() -> None:
    seen_kinds = {TASKS[t].kind for t in SEEN_TASKS}
    seen_acts = {TASKS[t].activity for t in SEEN_TASKS}
    seen_pairs = {(TASKS[t].kind, TASKS[t].activity) for t in SEEN_TASKS}
    for t in SPLITS["CG"].tasks:
        task = TASKS[t]
        assert task.kind in seen_kinds and task.activity in seen_acts, t
        assert (task.kind, task.activity) not in seen_pairs, t
    for t in SPLITS["TG"].tasks:
        assert TASKS[t].kind not in seen_kinds, t


_check_splits()


def _crc(text: str) -> int:
    return zlib.crc32(text.encode())


def seen_instance(kind: str, index: int) -> dict[str, Any]:
    """The ``index``-th seen instance of ``kind`` (fixed forever: it is part of the train data)."""
    return objects.sample_instance(kind, np.random.default_rng([_crc(kind), index, 1]))


def scene_style(rng: np.random.Generator) -> dict[str, Any]:
    """Colours and patterns of floor, table and back wall."""
    return {
        "floor": objects.random_colour(rng, val=(0.25, 0.7)),
        "floor_pattern": str(rng.choice(["checker", "gradient", "noise"])),
        "table": objects.random_colour(rng, sat=(0.05, 0.5), val=(0.3, 0.85)),
        "table_pattern": str(rng.choice(objects.PATTERNS)),
        "wall": objects.random_colour(rng, sat=(0.0, 0.3), val=(0.5, 0.95)),
    }


def seen_scene_style(index: int) -> dict[str, Any]:
    """The ``index``-th seen scene style."""
    return scene_style(np.random.default_rng([_crc("scene"), index, 1]))


@dataclasses.dataclass(frozen=True)
class EpisodeSpec:
    """Everything random about one episode; JSON-serialisable through :meth:`to_dict`."""

    task: str
    split: str
    seed: int
    instance: dict[str, Any]  # object sizes (m), colours, pattern
    instance_id: str  # "seen-<k>" or "novel"
    pose: tuple[float, float, float]  # object x, y (m) on the table and yaw (rad), body frame
    start: float  # articulated: initial joint value
    goal: float  # articulated: goal joint value; free: motion size (m or rad)
    scene: dict[str, Any]
    scene_id: str
    light: dict[str, Any]
    camera_jitter: tuple[float, ...]  # dx, dy, dz (m), droll, dpitch, dyaw (deg)
    distractors: tuple[tuple[float, float], ...]  # x, y (m) of each
    build_seed: int  # seeds the remaining build-time choices (textures, distractor shapes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-friendly dict (tuples become lists)."""

        def plain(v):
            if isinstance(v, dict):
                return {k: plain(x) for k, x in v.items()}
            if isinstance(v, (tuple, list, np.ndarray)):
                return [plain(x) for x in v]
            if isinstance(v, np.generic):
                return v.item()
            return v

        return plain(dataclasses.asdict(self))


def tasks_of(split: str) -> tuple[str, ...]:
    """Task names of ``split``."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown, expected one of {list(SPLITS)}")
    return SPLITS[split].tasks


def sample_episode(
    task: str,
    split: str,
    seed: int,
    jitter_m: float = 0.01,
    jitter_deg: float = 1.5,
    max_distractors: int = 3,
) -> EpisodeSpec:
    """Draw every random choice of episode ``(task, split, seed)``.

    A task may be sampled in any split's style (a seen task with the TG scene style is allowed);
    ``split`` picks instance and scene sources, ``tasks_of(split)`` lists the split's own tasks.
    """
    if task not in TASKS:
        raise ValueError(f"task {task!r} unknown, expected one of {sorted(TASKS)}")
    if split not in SPLITS:
        raise ValueError(f"split {split!r} unknown, expected one of {list(SPLITS)}")
    tdef, sdef = TASKS[task], SPLITS[split]
    rng = np.random.default_rng([int(seed), _crc(task), _crc(split)])
    if sdef.instances == "seen":
        k = int(rng.integers(SEEN_INSTANCES_PER_KIND))
        instance, instance_id = seen_instance(tdef.kind, k), f"seen-{k}"
    else:
        instance, instance_id = objects.sample_instance(tdef.kind, rng), "novel"
    novel_scene = sdef.scenes == "novel" or (sdef.scenes == "mixed" and rng.uniform() < 0.5)
    if novel_scene:
        scene, scene_id = scene_style(rng), "novel"
    else:
        k = int(rng.integers(SEEN_SCENE_STYLES))
        scene, scene_id = seen_scene_style(k), f"seen-{k}"

    y = rng.uniform(-0.12, 0.12)
    front = rng.uniform(0.86, 0.94)  # m, front face of the object from the body origin
    depth = _depth_of(tdef.kind, instance)
    x = front + depth / 2
    yaw = float(np.arctan2(y, x) + rng.uniform(-0.15, 0.15))
    start = float(rng.uniform(*tdef.start))
    goal = float(rng.uniform(*tdef.goal))
    if tdef.kind == "drawer":  # never ask for more than the slide allows
        goal = min(goal, 0.7 * instance["D"])
        start = min(start, 0.7 * instance["D"])

    light = {
        "dir": tuple(
            Rotation.from_euler("yz", [rng.uniform(20, 70), rng.uniform(-60, 60)], degrees=True)
            .apply([0.0, 0.0, -1.0])
            .tolist()
        ),
        "diffuse": float(rng.uniform(0.35, 0.8)),
        "ambient": float(rng.uniform(0.15, 0.4)),
        "head": float(rng.uniform(0.1, 0.3)),
    }
    jitter = (
        *rng.uniform(-jitter_m, jitter_m, 3).tolist(),
        *rng.uniform(-jitter_deg, jitter_deg, 3).tolist(),
    )
    n = int(rng.integers(0, max_distractors + 1))
    distractors = []
    for _ in range(50):
        if len(distractors) == n:
            break
        dx, dy = rng.uniform(0.75, 1.3), rng.uniform(-0.6, 0.6)
        # Keep clear of the object, its door/drawer sweep and the corridor the hand comes through.
        if abs(dy - y) < 0.32 or any(np.hypot(dx - a, dy - b) < 0.12 for a, b in distractors):
            continue
        distractors.append((float(dx), float(dy)))
    return EpisodeSpec(
        task=task,
        split=split,
        seed=int(seed),
        instance=instance,
        instance_id=instance_id,
        pose=(float(x), float(y), yaw),
        start=start,
        goal=goal,
        scene=scene,
        scene_id=scene_id,
        light=light,
        camera_jitter=tuple(jitter),
        distractors=tuple(distractors),
        build_seed=int(rng.integers(2**31)),
    )


def _depth_of(kind: str, p: dict[str, Any]) -> float:
    if kind in ("drawer", "cabinet", "microwave", "toaster"):
        return p["D"]
    if kind in ("bottle", "jug"):
        return 2 * p["r"]
    return p["sx"]


def free_goal(
    task: TaskDef, amount: float, T_world_obj: np.ndarray, T_obj_site: np.ndarray
) -> np.ndarray:
    """Goal pose (4x4, body frame) of a free object starting at ``T_world_obj``.

    lift: ``amount`` m straight up; push: ``amount`` m along the push site's approach axis;
    pour: up by 0.1 m, then ``amount`` rad about the grasp's approach axis through the grasp.
    """
    T_site = T_world_obj @ T_obj_site
    goal = T_world_obj.copy()
    if task.activity == "lift":
        goal[2, 3] += amount
    elif task.activity == "push":
        d = T_site[:3, 0].copy()
        d[2] = 0.0
        goal[:3, 3] += amount * d / np.linalg.norm(d)
    elif task.activity == "pour":
        R = Rotation.from_rotvec(amount * T_site[:3, 0]).as_matrix()
        c = T_site[:3, 3]
        goal[:3, :3] = R @ T_world_obj[:3, :3]
        goal[:3, 3] = R @ (T_world_obj[:3, 3] - c) + c
        goal[2, 3] += 0.1
    else:
        raise ValueError(f"task {task.name!r}: activity {task.activity!r} has no free-object goal")
    return goal


def pose_errors(T: np.ndarray, T_goal: np.ndarray) -> tuple[float, float]:
    """(position error (m), rotation angle error (rad)) between two 4x4 poses."""
    return se3.pose_error(T_goal, T)
