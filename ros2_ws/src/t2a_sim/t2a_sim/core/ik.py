"""Kinematics on the MuJoCo model itself: arm FK, damped-least-squares IK, object part poses.

This is the simulator's privileged tool (the scripted expert and the sim's answer to
``arm_pose_commands``); the stack's own IK lives in ``t2a_common.core.kinematics``. Everything
runs on a scratch ``MjData``, so the live simulation is never touched.
"""

from __future__ import annotations

import mujoco
import numpy as np

from t2a_common.core import spot_arm
from t2a_common.core.se3 import twist_error
from t2a_sim.core.mjcf import TOOL_SITE


class Kinematics:
    """Arm FK/IK at the tool site and body poses for given joint values, on a scratch MjData."""

    def __init__(self, model: mujoco.MjModel) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        J = mujoco.mjtObj.mjOBJ_JOINT
        ids = [mujoco.mj_name2id(model, J, n) for n in spot_arm.ARM_JOINT_NAMES]
        if min(ids) < 0:
            raise ValueError(f"model lacks some of the arm joints {spot_arm.ARM_JOINT_NAMES}")
        self.qadr = np.array([model.jnt_qposadr[i] for i in ids])
        self.dadr = np.array([model.jnt_dofadr[i] for i in ids])
        self.site = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, TOOL_SITE)
        self.lower, self.upper = spot_arm.LOWER + 1e-4, spot_arm.UPPER - 1e-4
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def set_qpos(self, qpos: np.ndarray) -> None:
        """Copy a full configuration (e.g. the live ``data.qpos``) into the scratch data."""
        self.data.qpos[:] = qpos

    def _forward(self, q: np.ndarray) -> None:
        self.data.qpos[self.qadr] = q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def site_pose(self) -> np.ndarray:
        """4x4 world pose of the tool site in the scratch data's current state."""
        T = np.eye(4)
        T[:3, :3] = self.data.site_xmat[self.site].reshape(3, 3)
        T[:3, 3] = self.data.site_xpos[self.site]
        return T

    def fk(self, q: np.ndarray) -> np.ndarray:
        """T_body_tool (4x4) for arm joints ``q`` (6,) rad."""
        self._forward(np.asarray(q, float))
        return self.site_pose()

    def body_pose(self, body: str, qpos: np.ndarray | None = None) -> np.ndarray:
        """4x4 world pose of ``body`` for the full configuration ``qpos`` (default: current)."""
        if qpos is not None:
            self.data.qpos[:] = qpos
        mujoco.mj_kinematics(self.model, self.data)
        bid = mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_BODY, body)
        T = np.eye(4)
        T[:3, :3] = self.data.xmat[bid].reshape(3, 3)
        T[:3, 3] = self.data.xpos[bid]
        return T

    def solve(
        self,
        T_target: np.ndarray,
        q_init: np.ndarray,
        iters: int = 100,
        tol_pos: float = 3e-4,
        tol_rot: float = 3e-3,
        damping: float = 0.02,
        rot_weight: float = 0.5,
    ) -> tuple[np.ndarray, bool, float]:
        """Arm joints reaching ``T_target`` (tool in body) from ``q_init`` by damped least squares.

        Returns (q (6,), converged, final position error in m). Joint limits are enforced by
        clamping after every step; steps are capped so a far target is approached, not jumped to.
        """
        q = np.clip(np.asarray(q_init, float).copy(), self.lower, self.upper)
        W = np.array([1.0, 1.0, 1.0, rot_weight, rot_weight, rot_weight])
        err = np.zeros(6)
        for _ in range(iters):
            self._forward(q)
            err = twist_error(self.site_pose(), T_target)
            if np.linalg.norm(err[:3]) < tol_pos and np.linalg.norm(err[3:]) < tol_rot:
                return q, True, float(np.linalg.norm(err[:3]))
            mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self.site)
            J = np.vstack([self._jacp[:, self.dadr], self._jacr[:, self.dadr]]) * W[:, None]
            e = err * W
            lam = min(
                damping, 2.0 * float(np.linalg.norm(e))
            )  # light near the solution, where damping only slows convergence
            dq = J.T @ np.linalg.solve(J @ J.T + lam**2 * np.eye(6), e)
            step = np.abs(dq).max()
            if step > 0.3:
                dq *= 0.3 / step
            q = np.clip(q + dq, self.lower, self.upper)
        ok = np.linalg.norm(err[:3]) < 10 * tol_pos and np.linalg.norm(err[3:]) < 10 * tol_rot
        return q, bool(ok), float(np.linalg.norm(err[:3]))

    def solve_best(
        self, T_target: np.ndarray, q_current: np.ndarray, seeds: list[np.ndarray] | None = None
    ) -> tuple[np.ndarray, bool, float]:
        """IK from several seeds; picks the converged solution with the tamest forearm roll.

        The forearm roll (arm_el1) and the wrist roll (arm_wr1) are nearly parallel when the
        wrist is straight, so a local solver started there may roll the forearm to its limit. A
        fresh solve from postures with the roll in the wrist avoids that branch.
        """
        q_current = np.asarray(q_current, float)
        p = T_target[:3, 3] - np.asarray(spot_arm.ARM_JOINTS[0].origin)
        facing = float(np.arctan2(p[1], p[0]))  # shoulder yaw that points the arm at the target
        base = [q_current]
        for yaw in (0.0, facing):
            for roll in (0.0, np.pi / 2, -np.pi / 2):
                q = spot_arm.READY.copy()
                q[0], q[5] = yaw, roll
                base.append(q)
        # A fixed set of scattered postures, tried only if the usual ones all fail.
        rng = np.random.default_rng(0)
        spare = [rng.uniform(0.8 * spot_arm.LOWER, 0.8 * spot_arm.UPPER) for _ in range(12)]
        best: tuple[float, np.ndarray, bool, float] | None = None
        for k, seed in enumerate((seeds or []) + base + spare):
            if k >= len(base) + len(seeds or []) and best is not None and best[2]:
                break
            q, ok, err = self.solve(T_target, seed, iters=200)
            cost = (0.0 if ok else 100.0 + err) + abs(q[3]) + 0.1 * np.abs(q - q_current).sum()
            if best is None or cost < best[0]:
                best = (cost, q, ok, err)
        return best[1], best[2], best[3]
