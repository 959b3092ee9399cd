"""Scripted-expert episodes recorded to disk: the simulated dataset for track and policy training.

Layout of a dataset directory ``OUT``::

    OUT/index.json                      every finished episode (rebuilt after each run)
    OUT/<split>/<task>/<seed>.npz       one episode (seed zero-padded to 6 digits)
    OUT/<split>/<task>/<seed>.json      its metadata; its presence marks the episode finished

``index.json``: ``{"format": "t2a_sim/1", "episodes": [{"file", "split", "task", "seed",
"success", "steps", ...}, ...]}`` sorted by file name.

Each ``.npz`` (``numpy.load``; T recorded steps at ``record_hz``, the first at t = 0 before any
command and the last after the expert finished; N tracked points; H x W images):

================  ===================  ==========================================================
key               shape / dtype        meaning
================  ===================  ==========================================================
rgb               (T, H, W, 3) uint8   colour image (RealSense-like front camera)
depth_mm          (T, H, W) uint16     depth aligned to colour, millimetres, 0 = no data
time              (T,) float64         simulated time (s)
joints            (T, 7) float64       arm_sh0..arm_wr1, arm_f1x positions (rad)
joint_targets     (T, 7) float64       commanded joint targets at that step (rad)
ee_pose           (T, 4, 4) float64    T_body_tool, hand (tool) frame in the body frame
ee_target         (T, 4, 4) float64    the expert's commanded tool pose (the action)
gripper           (T,) float64         finger angle (rad, 0 shut, -1.57 open)
gripper_closed    (T,) bool            last finger command was a close
grasped           (T,) bool            the object is held
object_pose       (T, 4, 4) float64    pose of the moved part in the body frame
object_joint      (T,) float64         its joint value (m or rad); NaN for free objects
phase             (T,) int8            index into meta["phases"] (move, approach, grasp, ...)
tracks            (T, N, 2) float32    pixel (u, v) of each tracked point, pixel-centre origin
visible           (T, N) bool          point in view and not occluded (depth test)
track_depth       (T, N) float32       the point's depth along the optical axis (m)
points_body       (N, 3) float64       tracked points in the body frame at t = 0
track_on_object   (N,) bool            point lies on the moved part
track_body        (N,) int32           MuJoCo body id the point is glued to
K                 (3, 3) float64       camera matrix at H x W (principal point (W-1)/2, (H-1)/2)
T_body_cam        (4, 4) float64       camera optical frame (x right, y down, z forward) in body
goal_pose         (4, 4) float64       goal pose of the moved part (free objects; else NaN)
goal_joint        () float64           goal joint value (articulated; else NaN)
success           () bool              the task's success test at the end
meta              () str               JSON: task, split, seed, episode spec, errors, configs
================  ===================  ==========================================================
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from t2a_common.core.config import check, param, to_dict
from t2a_sim.core import tracks as tracks_mod
from t2a_sim.core.config import SimConfig
from t2a_sim.core.env import SimEnv
from t2a_sim.core.expert import ExpertConfig, ScriptedExpert
from t2a_sim.core.render import depth_to_mm
from t2a_sim.core.tasks import SPLITS, tasks_of

FORMAT = "t2a_sim/1"
PHASES = (
    "start",
    "move",
    "approach",
    "grasp",
    "manipulate",
    "hold",
    "release",
    "retreat",
    "retract",
    "settle",
)


@dataclasses.dataclass(frozen=True)
class RecordConfig:
    """What an episode records."""

    width: int = param(320, "image width (px); the camera keeps its field of view")
    height: int = param(240, "image height (px)")
    record_hz: float = param(5.0, "recorded steps per second of sim time (Track2Act runs at 5 Hz)")
    n_points: int = param(400, "tracked points per episode")
    object_fraction: float = param(0.5, "share of tracked points sampled on the moved part")
    grasp_mode: str = param("weld", "weld | friction (see SimConfig.grasp_mode)")

    def __post_init__(self) -> None:
        check(self.width > 0 and self.height > 0, f"bad size {self.width}x{self.height}")
        check(self.record_hz > 0, f"record_hz must be > 0, got {self.record_hz}")
        check(self.n_points > 0, f"n_points must be > 0, got {self.n_points}")
        check(
            0 <= self.object_fraction <= 1,
            f"object_fraction must be in [0, 1], got {self.object_fraction}",
        )

    def sim_config(self, base: SimConfig | None = None) -> SimConfig:
        """The sim settings for recording: ``base`` with this image size and grasp mode."""
        return dataclasses.replace(
            base or SimConfig(), width=self.width, height=self.height, grasp_mode=self.grasp_mode
        )


def record_episode(
    env: SimEnv,
    task: str,
    split: str,
    seed: int,
    cfg: RecordConfig,
    expert_cfg: ExpertConfig | None = None,
) -> dict[str, Any]:
    """Reset ``env`` to ``(task, split, seed)``, run the expert and return the arrays above."""
    env.reset(task, split, seed)
    expert_cfg = expert_cfg or ExpertConfig()
    K = env.intrinsics
    T_body_cam = env.T_body_cam
    cam = env.camera
    rgb0, depth0 = cam.render(env.data)
    pts = tracks_mod.sample_points(
        env.model,
        env.data,
        cam.render_geom_ids(env.data),
        depth0,
        K,
        T_body_cam,
        env.part_id,
        cfg.n_points,
        cfg.object_fraction,
        np.random.default_rng([seed, 7]),
    )
    points_body0 = tracks_mod.points_in_body(env.data, pts)
    rows: dict[str, list] = {
        k: []
        for k in (
            "rgb",
            "depth_mm",
            "time",
            "joints",
            "joint_targets",
            "ee_pose",
            "ee_target",
            "gripper",
            "gripper_closed",
            "grasped",
            "object_pose",
            "object_joint",
            "phase",
            "tracks",
            "visible",
            "track_depth",
        )
    }

    def record(rgb, depth, ee_target, phase):
        uv, z, vis = tracks_mod.project(env.data, pts, K, T_body_cam, depth)
        q = env.joint_positions()
        rows["rgb"].append(rgb)
        rows["depth_mm"].append(depth_to_mm(depth))
        rows["time"].append(env.time)
        rows["joints"].append(q)
        rows["joint_targets"].append(env.joint_targets())
        rows["ee_pose"].append(env.hand_pose())
        rows["ee_target"].append(ee_target)
        rows["gripper"].append(q[6])
        rows["gripper_closed"].append(env.gripper_closed())
        rows["grasped"].append(env.grasped())
        rows["object_pose"].append(env.object_pose())
        rows["object_joint"].append(env.object_joint())
        rows["phase"].append(PHASES.index(phase))
        rows["tracks"].append(uv.astype(np.float32))
        rows["visible"].append(vis)
        rows["track_depth"].append(z.astype(np.float32))

    record(rgb0, depth0, env.hand_pose(), "start")
    every = max(1, round(1.0 / (cfg.record_hz * expert_cfg.control_dt)))
    last = None
    k = -1
    for k, cmd in enumerate(ScriptedExpert(env, expert_cfg).commands()):
        env.set_arm_targets(cmd.q, cmd.gripper)
        env.advance(expert_cfg.control_dt)
        last = cmd
        if (k + 1) % every == 0:
            record(*cam.render(env.data), cmd.T_tool, cmd.phase)
    if last is not None and (k + 1) % every != 0:  # always end on the final state
        record(*cam.render(env.data), last.T_tool, last.phase)

    success, errors = env.task_success()
    goal = env.goal
    out = {k: np.asarray(v) for k, v in rows.items()}
    out["phase"] = out["phase"].astype(np.int8)
    out.update(
        points_body=points_body0,
        track_on_object=pts.on_object,
        track_body=pts.body,
        K=K.K,
        T_body_cam=T_body_cam,
        goal_pose=np.asarray(goal, float) if np.ndim(goal) == 2 else np.full((4, 4), np.nan),
        goal_joint=np.asarray(goal if np.ndim(goal) == 0 else np.nan, float),
        success=np.asarray(success),
    )
    meta = {
        "format": FORMAT,
        "task": task,
        "split": split,
        "seed": int(seed),
        "success": bool(success),
        "errors": {k: float(v) for k, v in errors.items()},
        "steps": int(out["time"].shape[0]),
        "phases": list(PHASES),
        "spec": env.spec.to_dict(),
        "record": to_dict(cfg),
        "sim": to_dict(env.config),
        "intrinsics": {
            "width": K.width,
            "height": K.height,
            "fx": K.fx,
            "fy": K.fy,
            "cx": K.cx,
            "cy": K.cy,
        },
    }
    out["meta"] = np.asarray(json.dumps(meta))
    return out


def episode_path(out: Path, split: str, task: str, seed: int) -> Path:
    """Where episode ``(split, task, seed)`` lives under ``out`` (without suffix)."""
    return Path(out) / split / task / f"{seed:06d}"


def save_episode(base: Path, episode: dict[str, Any]) -> None:
    """Write ``base``.npz then ``base``.json atomically (the json marks the episode finished)."""
    base.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=base.parent, suffix=".npz.tmp")
    os.close(fd)
    with open(tmp, "wb") as f:
        np.savez_compressed(f, **episode)
    os.replace(tmp, base.with_suffix(".npz"))
    meta = json.loads(str(episode["meta"]))
    meta["file"] = str(base.with_suffix(".npz").name)
    tmp_json = base.with_suffix(".json.tmp")
    tmp_json.write_text(json.dumps(meta, indent=1))
    os.replace(tmp_json, base.with_suffix(".json"))


def load_episode(path: str | Path) -> dict[str, Any]:
    """Read an episode ``.npz`` into a dict of arrays; ``meta`` is parsed from JSON."""
    with np.load(path) as z:
        out = {k: z[k] for k in z.files}
    out["meta"] = json.loads(str(out["meta"]))
    return out


@dataclasses.dataclass(frozen=True)
class Job:
    """One episode to generate."""

    split: str
    task: str
    seed: int


def plan_jobs(
    splits: Iterable[str],
    episodes_per_task: int,
    base_seed: int = 0,
    tasks: Iterable[str] | None = None,
) -> list[Job]:
    """Every (split, task, seed) to generate; seeds are ``base_seed + i`` for each task."""
    wanted = set(tasks) if tasks is not None else None
    jobs = []
    for split in splits:
        if split not in SPLITS:
            raise ValueError(f"split {split!r} unknown, expected one of {list(SPLITS)}")
        for task in tasks_of(split):
            if wanted is None or task in wanted:
                jobs += [Job(split, task, base_seed + i) for i in range(episodes_per_task)]
    return jobs


def _done(out: Path, job: Job) -> bool:
    return episode_path(out, job.split, job.task, job.seed).with_suffix(".json").exists()


_WORKER: dict[str, Any] = {}


def _init_worker(cfg: RecordConfig, sim: SimConfig) -> None:
    _WORKER["env"] = SimEnv(cfg.sim_config(sim))
    _WORKER["cfg"] = cfg


def _run_job(args: tuple[Job, str]) -> dict[str, Any]:
    job, out = args
    episode = record_episode(_WORKER["env"], job.task, job.split, job.seed, _WORKER["cfg"])
    base = episode_path(Path(out), job.split, job.task, job.seed)
    save_episode(base, episode)
    return json.loads(base.with_suffix(".json").read_text())


def write_index(out: str | Path) -> dict[str, Any]:
    """Rebuild ``out``/index.json from the finished episodes' metadata files."""
    out = Path(out)
    episodes = []
    for meta_path in sorted(out.glob("*/*/*.json")):
        meta = json.loads(meta_path.read_text())
        episodes.append(
            {
                "file": str(meta_path.with_suffix(".npz").relative_to(out)),
                "split": meta["split"],
                "task": meta["task"],
                "seed": meta["seed"],
                "success": meta["success"],
                "steps": meta["steps"],
                "errors": meta["errors"],
            }
        )
    index = {"format": FORMAT, "episodes": episodes}
    tmp = out / "index.json.tmp"
    tmp.write_text(json.dumps(index, indent=1))
    os.replace(tmp, out / "index.json")
    return index


def generate(
    out: str | Path,
    jobs: list[Job],
    cfg: RecordConfig | None = None,
    sim: SimConfig | None = None,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Record every job not yet on disk into ``out`` and rebuild the index; returns the index.

    Finished episodes (their ``.json`` exists) are skipped, so an interrupted run resumes.
    Episodes depend only on (task, split, seed) and the configs, not on the worker that ran them.
    """
    from tqdm import tqdm

    cfg = cfg or RecordConfig()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    todo = [j for j in jobs if not _done(out, j)]
    bar = tqdm(
        total=len(jobs),
        initial=len(jobs) - len(todo),
        disable=not progress,
        unit="episode",
        desc="sim episodes",
    )
    args = [(j, str(out)) for j in todo]
    if workers <= 1:
        _init_worker(cfg, sim)
        for a in args:
            _run_job(a)
            bar.update()
        _WORKER.clear()
    else:
        import multiprocessing as mp

        # spawn: a forked child would inherit the parent's GL state, which EGL does not survive.
        with mp.get_context("spawn").Pool(workers, _init_worker, (cfg, sim)) as pool:
            for _ in pool.imap_unordered(_run_job, args):
                bar.update()
    bar.close()
    return write_index(out)
