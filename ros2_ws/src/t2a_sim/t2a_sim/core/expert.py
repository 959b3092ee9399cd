"""A scripted expert that solves every task from privileged simulator state.

It plans in the tool frame and converts to joint targets with damped-least-squares IK on the
MuJoCo model each control tick: come above the pre-grasp pose, descend to it, approach the grasp
site along its x axis, close, move the object along its own path (the joint of an articulated
object, or the task's lift/pour/push motion of a free object), then let go and back off.
The object path is computed from the grasp as it actually happened (the hand-to-part pose measured
after closing), so a slightly off grasp still moves the object to the goal.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterator

import numpy as np
from scipy.spatial.transform import Rotation, Slerp

from t2a_common.core import spot_arm
from t2a_sim.core.env import GRIPPER_CLOSED, GRIPPER_OPEN, SimEnv
from t2a_sim.core.objects import JAW_OFFSET


@dataclasses.dataclass(frozen=True)
class ExpertConfig:
    """Timing and speeds of the scripted expert."""

    control_dt: float = 0.02  # s per control tick
    speed: float = 0.25  # m/s of free-space hand motion
    approach_speed: float = 0.08  # m/s into and out of the grasp
    manip_speed: float = 0.08  # m/s of the hand while it moves the object
    turn_speed: float = 0.8  # rad/s of hand rotation
    pregrasp: float = 0.12  # m back from the grasp along its approach axis
    retreat: float = 0.10  # m backed off after release
    grasp_wait: float = 0.4  # s to close the fingers
    settle: float = 0.5  # s of stillness at the end, so the final pose is a resting one
    jaw_clearance: float = 0.006  # m between the fixed jaw and the part during the approach


@dataclasses.dataclass(frozen=True)
class Command:
    """One control tick of the expert."""

    q: np.ndarray  # (6,) arm joint targets (rad)
    gripper: float  # finger target (rad)
    T_tool: np.ndarray  # (4, 4) tool pose the targets were solved for (body)
    phase: str


def _interp_at(T0: np.ndarray, T1: np.ndarray, s: float) -> np.ndarray:
    """The pose a fraction ``s`` of the way from T0 to T1: linear position, slerp rotation."""
    slerp = Slerp([0.0, 1.0], Rotation.from_matrix(np.stack([T0[:3, :3], T1[:3, :3]])))
    T = np.eye(4)
    T[:3, :3] = slerp(float(s)).as_matrix()
    T[:3, 3] = (1 - s) * T0[:3, 3] + s * T1[:3, 3]
    return T


def _interp(T0: np.ndarray, T1: np.ndarray, n: int) -> list[np.ndarray]:
    """n poses from T0 (exclusive) to T1 (inclusive)."""
    return [_interp_at(T0, T1, s) for s in np.linspace(0.0, 1.0, n + 1)[1:]]


def _translate(T: np.ndarray, d: np.ndarray) -> np.ndarray:
    out = T.copy()
    out[:3, 3] += d
    return out


class ScriptedExpert:
    """Yields one :class:`Command` per control tick for the env's current episode."""

    def __init__(self, env: SimEnv, config: ExpertConfig | None = None) -> None:
        self.env = env
        self.cfg = config or ExpertConfig()
        self._q = env.joint_targets()[:6]
        self._T = env.hand_pose()
        self._gripper = float(env.joint_targets()[6])

    def _ticks(self, T0: np.ndarray, T1: np.ndarray, speed: float, min_s: float = 0.2) -> int:
        dp = np.linalg.norm(T1[:3, 3] - T0[:3, 3])
        da = Rotation.from_matrix(T0[:3, :3].T @ T1[:3, :3]).magnitude()
        seconds = max(dp / speed, da / self.cfg.turn_speed, min_s)
        return max(1, int(np.ceil(seconds / self.cfg.control_dt)))

    def _go(self, T_goal: np.ndarray, speed: float, phase: str) -> Iterator[Command]:
        for T in _interp(self._T, T_goal, self._ticks(self._T, T_goal, speed)):
            yield self._command(T, phase)

    def _command(self, T: np.ndarray, phase: str) -> Command:
        q, _, _ = self.env.kin.solve(T, self._q)
        self._q, self._T = q, T
        return Command(q.copy(), self._gripper, T.copy(), phase)

    def _joint_move_to(self, q1: np.ndarray, phase: str) -> Iterator[Command]:
        q0 = self._q
        span = np.abs(q1 - q0) / (0.5 * spot_arm.MAX_JOINT_SPEED)
        n = max(1, int(np.ceil(max(span.max(), 0.3) / self.cfg.control_dt)))
        for s in np.linspace(0.0, 1.0, n + 1)[1:]:
            s = 0.5 - 0.5 * np.cos(np.pi * s)  # ease in and out
            self._q = q0 + s * (q1 - q0)
            self._T = self.env.kin.fk(self._q)
            yield Command(self._q.copy(), self._gripper, self._T.copy(), phase)

    def _hold(self, seconds: float, phase: str) -> Iterator[Command]:
        for _ in range(max(1, round(seconds / self.cfg.control_dt))):
            yield Command(self._q.copy(), self._gripper, self._T.copy(), phase)

    def _part_path(self, s: np.ndarray) -> list[np.ndarray]:
        """Poses of the moved part at path fractions ``s`` (0 = now, 1 = goal)."""
        env, task = self.env, self.env.task
        if task.articulated:
            qpos = env.data.qpos.copy()
            q0, q1 = env.object_joint(), float(env.goal)
            out = []
            for si in s:
                qpos[env.obj_qadr] = q0 + si * (q1 - q0)
                out.append(env.kin.body_pose(env.scene.obj.part, qpos))
            return out
        T0, goal = env.object_pose(), np.asarray(env.goal)
        keys = [T0, goal]
        if task.activity == "pour":  # lift first, then tilt in the air
            via = T0.copy()
            via[2, 3] = goal[2, 3]
            keys = [T0, via, goal]
        out = []
        for si in s:
            seg = min(int(si * (len(keys) - 1)), len(keys) - 2)
            local = si * (len(keys) - 1) - seg
            out.append(_interp_at(keys[seg], keys[seg + 1], min(max(local, 0.0), 1.0)))
        return out

    def _approach_poses(self, T_grasp: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(above, pre-grasp): back off along the approach, and come in from above that."""
        T_pre = _translate(T_grasp, -self.cfg.pregrasp * T_grasp[:3, 0])
        T_above = T_pre.copy()
        T_above[2, 3] = max(T_pre[2, 3], self._T[2, 3])
        return T_above, T_pre

    def _rehearse(self, T_grasp: np.ndarray) -> tuple[float, np.ndarray]:
        """Dry-run the IK of a grasp over the whole task: (cost, joints above the pre-grasp).

        Follows the same sequence the robot will (joint move above the pre-grasp, then small
        Cartesian steps down, in, and along the object's path) so the IK branch it ends up on is
        the one the real run would. Failing to converge or rolling the forearm near its limit
        (the wrist then cannot follow the part) is expensive; mild forearm roll costs a little.
        """
        kin = self.env.kin
        T_above, T_pre = self._approach_poses(T_grasp)
        q_above, ok, err = kin.solve_best(T_above, self._q)
        q = q_above
        cost = 0.0

        def score(ok: bool, err: float, q: np.ndarray) -> float:
            el1 = abs(q[3])
            return (0.0 if ok else 10.0 + 100.0 * err) + 0.2 * el1 + 20.0 * max(0.0, el1 - 2.2)

        cost += score(ok, err, q)
        waypoints = _interp(T_above, T_pre, 3) + _interp(T_pre, T_grasp, 3)
        T_part_tool = np.linalg.inv(self.env.object_pose()) @ T_grasp
        waypoints += [T @ T_part_tool for T in self._part_path(np.linspace(0.0, 1.0, 9)[1:])]
        for T in waypoints:
            q, ok, err = kin.solve(T, q)
            cost += score(ok, err, q)
        return cost, q_above

    def _choose_grasp(
        self, T_site: np.ndarray, half_width: float, push: bool
    ) -> tuple[np.ndarray, np.ndarray]:
        """(grasp pose, joints above its pre-grasp) that suit the arm best over the task.

        A bar, a bottle or a box looks the same to the jaws rolled 180 degrees about the
        approach, and (upright parts) turned a little about their own axis, the site's y; every such
        grasp is rehearsed and the cheapest kept. The part sits ``jaw_clearance`` off the fixed
        jaw during the approach so the jaw tip cannot catch on it. A push keeps the site pose:
        the closed jaws' tips touch the face there.
        """
        if push:
            return T_site, self._rehearse(T_site)[1]
        shift = half_width - JAW_OFFSET + self.cfg.jaw_clearance
        # Turning about the part's axis only suits upright parts (door bars, bottles, jug
        # handles): turning about a level axis would tilt the jaws into the table or the face.
        upright = abs(T_site[2, 1]) > 0.9
        turns = (0.0, 0.35, -0.35) if upright else (0.0,)
        best = None
        for roll in (0.0, np.pi):
            for turn in turns:
                R = Rotation.from_euler("xy", [roll, turn]).as_matrix()
                T = T_site.copy()
                T[:3, :3] = T_site[:3, :3] @ R
                T = _translate(T, -shift * T[:3, 2])
                cost, q_above = self._rehearse(T)
                if best is None or cost < best[0] - 1e-9:
                    best = (cost, T, q_above)
        return best[1], best[2]

    def commands(self) -> Iterator[Command]:
        """The expert's command stream; reads the env between ticks (the caller steps it)."""
        env, cfg = self.env, self.cfg
        task = env.task
        env.kin.set_qpos(env.data.qpos)
        pushing = task.activity == "push"
        T_grasp, q_above = self._choose_grasp(
            env.site_pose(task.site), env.site_half_width(task.site), pushing
        )
        _, T_pre = self._approach_poses(T_grasp)
        self._gripper = GRIPPER_CLOSED if pushing else GRIPPER_OPEN

        # Come in from above so the hand never sweeps through the object on its way down; get
        # there in joint space to the rehearsed IK solution, which keeps the wrist on its branch.
        yield from self._joint_move_to(q_above, "move")
        yield from self._go(T_pre, cfg.speed, "move")
        yield from self._go(T_grasp, cfg.approach_speed, "approach")
        if not pushing:
            self._gripper = GRIPPER_CLOSED
            yield from self._hold(cfg.grasp_wait, "grasp")

        yield from self._manipulate()
        yield from self._hold(0.3, "hold")
        if task.release:
            if not pushing:
                self._gripper = GRIPPER_OPEN
                yield from self._hold(0.3, "release")
                # The part still rests on the fixed jaw: step off it before backing away, or
                # friction drags it along.
                off = _translate(self._T, -0.012 * self._T[:3, 2])
                yield from self._go(off, cfg.approach_speed, "release")
            back = _translate(self._T, -cfg.retreat * self._T[:3, 0])
            yield from self._go(back, cfg.approach_speed, "retreat")
            # Clear the view, so the last frame (the goal image) shows the object unoccluded:
            # straight up first (never back through the opened drawer or door), then home.
            q_home = np.asarray(env.config.start_q, float)
            up = self._T.copy()
            up[2, 3] = max(up[2, 3], env.kin.fk(q_home)[2, 3])
            yield from self._go(up, cfg.speed, "retract")
            yield from self._joint_move_to(q_home, "retract")
        yield from self._hold(cfg.settle, "settle")

    def _manipulate(self) -> Iterator[Command]:
        # Where the hand holds the part, as it really is now (not as planned).
        T_part_tool = np.linalg.inv(self.env.object_pose()) @ self._T
        probe = [T @ T_part_tool for T in self._part_path(np.linspace(0.0, 1.0, 21))]
        length = sum(np.linalg.norm(b[:3, 3] - a[:3, 3]) for a, b in itertools.pairwise(probe))
        turn = sum(
            Rotation.from_matrix(a[:3, :3].T @ b[:3, :3]).magnitude()
            for a, b in itertools.pairwise(probe)
        )
        seconds = max(length / self.cfg.manip_speed, turn / self.cfg.turn_speed, 0.5)
        n = int(np.ceil(seconds / self.cfg.control_dt))
        for T_part in self._part_path(np.linspace(0.0, 1.0, n + 1)[1:]):
            yield self._command(T_part @ T_part_tool, "manipulate")


def run_expert(
    env: SimEnv,
    config: ExpertConfig | None = None,
    on_tick: Callable[[int, Command], None] | None = None,
) -> tuple[bool, dict[str, float]]:
    """Run the expert on the env's current episode to the end; returns ``env.task_success()``.

    ``on_tick(k, command)`` is called after each control tick has been simulated.
    """
    expert = ScriptedExpert(env, config)
    dt = expert.cfg.control_dt
    for k, cmd in enumerate(expert.commands()):
        env.set_arm_targets(cmd.q, cmd.gripper)
        env.advance(dt)
        if on_tick is not None:
            on_tick(k, cmd)
    return env.task_success()
