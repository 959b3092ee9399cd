"""The simulated Spot-arm test bed: one task episode in MuJoCo behind a small numpy API.

Typical use (lock-step, e.g. tests and data generation)::

    env = SimEnv(SimConfig(width=320, height=240))
    env.reset("drawer_open", "MG", seed=3)
    env.set_arm_targets(q6, gripper=spot_arm.GRIPPER_JOINT.lower)
    env.advance(0.2)
    rgb, depth_m = env.render()
    ok, errors = env.task_success()

A ROS node instead keeps the sim in step with the wall clock with :class:`RealtimeClock` and
feeds joint/pose commands in between. Everything is in the Spot ``body`` frame (= MuJoCo world).
Arm commands are position targets; the servos follow them no faster than
``spot_arm.MAX_JOINT_SPEED * speed_scale``, like the real arm's joint-speed limits.
"""

from __future__ import annotations

import dataclasses

import mujoco
import numpy as np

from t2a_common.core import spot_arm
from t2a_common.core.geometry import Intrinsics
from t2a_sim.core import mjcf, tasks
from t2a_sim.core.config import SimConfig
from t2a_sim.core.ik import Kinematics
from t2a_sim.core.render import Camera, intrinsics_of
from t2a_sim.core.scene import GRASP_WELD, Scene, build_scene
from t2a_sim.core.tasks import EpisodeSpec, TaskDef

GRIPPER_OPEN = -1.4  # rad; wide enough for every handle and bottle in the task set
GRIPPER_CLOSED = 0.15  # rad; past shut, so the servo squeezes whatever it closes on
SETTLE_S = 0.3  # s of physics after reset so free objects rest on the table before t = 0
_BOX = int(mujoco.mjtGeom.mjGEOM_BOX)
_ROUND = (int(mujoco.mjtGeom.mjGEOM_CAPSULE), int(mujoco.mjtGeom.mjGEOM_CYLINDER))  # axis z


def _name2id(model: mujoco.MjModel, kind: mujoco.mjtObj, name: str) -> int:
    i = mujoco.mj_name2id(model, kind, name)
    if i < 0:
        raise ValueError(f"{kind.name} {name!r} not in the model")
    return i


def _pose(xpos: np.ndarray, xmat: np.ndarray) -> np.ndarray:
    T = np.eye(4)
    T[:3, :3] = np.asarray(xmat).reshape(3, 3)
    T[:3, 3] = xpos
    return T


@dataclasses.dataclass(frozen=True)
class _JawGeometry:
    """The gripper's jaws in the hand body (link_wr1) frame, read from the compiled model.

    The fixed jaw lies below the tool axis with its inner face up; the finger pivots about y at
    ``pivot`` and closes down onto it. Coordinates x (along the fingers) and z (closing) in m.
    """

    root_x: float  # where both jaws begin, in front of the palm
    tip_x: float  # where the shorter jaw ends
    half_width: float  # the narrower jaw's half-width across y
    face_z: float  # the fixed jaw's inner face
    centre: np.ndarray  # (3,) middle of the squeeze region on the fixed jaw's face
    pivot: np.ndarray  # (2,) finger joint (x, z)
    finger_face_z: float  # the finger's inner face in its own frame (z)

    @staticmethod
    def of(m: mujoco.MjModel) -> _JawGeometry:
        G = mujoco.mjtObj.mjOBJ_GEOM
        fixed = _name2id(m, G, "jaw_fixed")
        moving = _name2id(m, G, "jaw_finger")
        finger_body = _name2id(m, mujoco.mjtObj.mjOBJ_BODY, mjcf.FINGER_BODY)
        fp, fs = m.geom_pos[fixed], m.geom_size[fixed]
        gp, gs = m.geom_pos[moving], m.geom_size[moving]
        pivot = m.body_pos[finger_body][[0, 2]].copy()
        root = max(fp[0] - fs[0], pivot[0] + gp[0] - gs[0])
        tip = min(fp[0] + fs[0], pivot[0] + gp[0] + gs[0])
        face = fp[2] + fs[2]
        return _JawGeometry(
            root_x=float(root),
            tip_x=float(tip),
            half_width=float(min(fs[1], gs[1])),
            face_z=float(face),
            centre=np.array([(root + tip) / 2, 0.0, face]),
            pivot=pivot,
            finger_face_z=float(gp[2] - gs[2]),
        )

    def in_finger(self, xz: np.ndarray, angle: float) -> np.ndarray:
        """Point ``(x, z)`` of the hand frame in the finger's frame at joint ``angle`` (rad)."""
        c, s = np.cos(angle), np.sin(angle)  # rotation about y: x' = c x + s z, z' = -s x + c z
        dx, dz = xz - self.pivot
        return np.array([c * dx - s * dz, s * dx + c * dz])


def _gripped_geom(m: mujoco.MjModel, site: int) -> int:
    """The solid geom of the site's body that the site sits in (or is nearest): the part the
    jaws must hold (a handle bar, a bottle's body, a knob, a box)."""
    body = m.site_bodyid[site]
    best, best_d = -1, np.inf
    for g in range(m.ngeom):
        if m.geom_bodyid[g] != body or m.geom_contype[g] == 0:
            continue
        p = m.site_pos[site] - m.geom_pos[g]  # both in the body frame
        R = np.zeros(9)
        mujoco.mju_quat2Mat(R, m.geom_quat[g])
        p = R.reshape(3, 3).T @ p  # in the geom frame
        size = m.geom_size[g]
        if int(m.geom_type[g]) == _BOX:
            dist = np.linalg.norm(np.maximum(np.abs(p) - size[:3], 0.0))
        elif int(m.geom_type[g]) in _ROUND:
            radial = max(np.hypot(p[0], p[1]) - size[0], 0.0)
            dist = np.hypot(radial, max(abs(p[2]) - size[1], 0.0))
        else:
            dist = max(np.linalg.norm(p) - size[0], 0.0)
        if dist < best_d - 1e-9:
            best, best_d = g, dist
    if best < 0:
        raise ValueError(f"site {m.site(site).name!r} has no solid geom on its body to grasp")
    return best


class SimEnv:
    """A MuJoCo Spot arm, a front RGB-D camera and one task object; see the module docstring."""

    def __init__(self, config: SimConfig | None = None) -> None:
        self.config = config or SimConfig()
        self.model: mujoco.MjModel | None = None
        self.data: mujoco.MjData | None = None
        self.spec: EpisodeSpec | None = None
        self.task: TaskDef | None = None
        self.scene: Scene | None = None
        self.kin: Kinematics | None = None
        self._camera: Camera | None = None
        self.goal: float | np.ndarray = float("nan")  # joint value, or 4x4 pose of a free part
        self.part_id = -1  # MuJoCo body id of the part the task moves
        self.obj_qadr = -1  # qpos address of that part's joint
        self.grasp_report = ""  # why the last close did or did not weld (weld mode)
        self._max_step = spot_arm.MAX_JOINT_SPEED * self.config.speed_scale * self.config.timestep
        self._max_finger_step = self.config.gripper_speed * self.config.timestep

    # ------------------------------------------------------------------ episode
    def reset(
        self,
        task: str = "drawer_open",
        split: str = "MG",
        seed: int = 0,
        spec: EpisodeSpec | None = None,
    ) -> None:
        """Build and settle episode ``(task, split, seed)`` (or the given ``spec``); time = 0."""
        cfg = self.config
        spec = spec or tasks.sample_episode(
            task, split, seed, cfg.cam_jitter_m, cfg.cam_jitter_deg, cfg.max_distractors
        )
        self.close()
        self.spec, self.task = spec, tasks.TASKS[spec.task]
        self.scene = build_scene(spec, cfg)
        m = self.model = mujoco.MjModel.from_xml_string(self.scene.xml)
        d = self.data = mujoco.MjData(m)
        self.kin = Kinematics(m)
        J = mujoco.mjtObj.mjOBJ_JOINT
        arm = [_name2id(m, J, n) for n in spot_arm.ARM_JOINT_NAMES]
        finger = _name2id(m, J, spot_arm.GRIPPER_JOINT.name)
        self._qadr = np.array([m.jnt_qposadr[j] for j in [*arm, finger]])
        self._dadr = np.array([m.jnt_dofadr[j] for j in [*arm, finger]])
        A = mujoco.mjtObj.mjOBJ_ACTUATOR
        self._act = np.array([_name2id(m, A, n) for n in spot_arm.ALL_JOINT_NAMES])
        self._tool = _name2id(m, mujoco.mjtObj.mjOBJ_SITE, mjcf.TOOL_SITE)
        self._hand = _name2id(m, mujoco.mjtObj.mjOBJ_BODY, mjcf.HAND_BODY)
        obj = self.scene.obj
        self.part_id = self._part = _name2id(m, mujoco.mjtObj.mjOBJ_BODY, obj.part)
        self._obj_joint = _name2id(m, J, obj.joint)
        self.obj_qadr = int(m.jnt_qposadr[self._obj_joint])
        self._weld = _name2id(m, mujoco.mjtObj.mjOBJ_EQUALITY, GRASP_WELD)
        self._grasp_sites = {
            role: _name2id(m, mujoco.mjtObj.mjOBJ_SITE, name) for role, name in obj.sites.items()
        }
        self._jaws = _JawGeometry.of(m)
        self._gripped_geom = {
            role: _gripped_geom(m, s) for role, s in self._grasp_sites.items() if role != "push"
        }
        self.grasp_report = ""

        q0 = np.asarray(cfg.start_q, float)
        d.qpos[self._qadr[:6]] = q0
        d.qpos[self._qadr[6]] = 0.0
        if self.task.articulated:
            d.qpos[self.obj_qadr] = spec.start
        self._target = np.append(q0, 0.0)  # commanded joint targets (rad)
        d.ctrl[self._act] = self._target
        self._closed = True  # Spot's gripper rests shut
        mujoco.mj_forward(m, d)
        for _ in range(round(SETTLE_S / cfg.timestep)):
            self._physics_step()
        d.time = 0.0

        if self.task.articulated:
            self.goal = float(spec.goal)
        else:
            site = self._grasp_sites[self.task.site]
            T_obj = self.object_pose()
            T_obj_site = np.linalg.inv(T_obj) @ _pose(d.site_xpos[site], d.site_xmat[site])
            self.goal = tasks.free_goal(self.task, spec.goal, T_obj, T_obj_site)

    def close(self) -> None:
        """Release the renderer (the model is dropped on the next reset)."""
        if self._camera is not None:
            self._camera.close()
            self._camera = None

    def _require(self) -> mujoco.MjData:
        if self.data is None:
            raise RuntimeError("SimEnv has no episode yet: call reset(task, split, seed) first")
        return self.data

    # ------------------------------------------------------------------ commands
    def set_arm_targets(self, q: np.ndarray, gripper: float | None = None) -> None:
        """Position targets for the six arm joints (rad, clipped to the limits), optional finger."""
        self._require()
        q = np.asarray(q, float)
        if q.shape != (6,) or not np.all(np.isfinite(q)):
            raise ValueError(f"arm targets must be 6 finite joint angles (rad), got {q.tolist()}")
        self._target[:6] = np.clip(q, spot_arm.LOWER, spot_arm.UPPER)
        if gripper is not None:
            self.set_gripper(gripper)

    def set_gripper(self, angle: float) -> None:
        """Finger target (rad): 0 shut, -1.57 fully open; see GRIPPER_OPEN/GRIPPER_CLOSED.

        Closing near a grasp site (weld mode) locks the object to the hand at its current
        relative pose; opening releases it.
        """
        self._require()
        if not np.isfinite(angle):
            raise ValueError(f"gripper target must be finite, got {angle}")
        self._target[6] = float(np.clip(angle, spot_arm.GRIPPER_JOINT.lower, GRIPPER_CLOSED))
        closing = self._target[6] > self.config.gripper_closed_below
        if closing and not self._closed:
            self._on_close()
        elif not closing and self._closed:
            self.data.eq_active[self._weld] = 0
        self._closed = closing

    def open_gripper(self) -> None:
        """Open the hand (spot_ros2 ``open_gripper``)."""
        self.set_gripper(GRIPPER_OPEN)

    def close_gripper(self) -> None:
        """Close the hand (spot_ros2 ``close_gripper``)."""
        self.set_gripper(GRIPPER_CLOSED)

    def set_hand_target(self, T_body_tool: np.ndarray) -> bool:
        """Servo the tool towards a pose (4x4 in body) through IK; False if out of reach."""
        d = self._require()
        self.kin.set_qpos(d.qpos)
        q, ok, _ = self.kin.solve(np.asarray(T_body_tool, float), self._target[:6])
        if ok:
            self._target[:6] = q
        return ok

    def _on_close(self) -> None:
        if self.config.grasp_mode != "weld":
            return
        d, m = self.data, self.model
        if self.config.grasp_check == "distance":
            tool = d.site_xpos[self._tool]
            reach = self.config.grasp_radius
            near = [
                role
                for role, s in self._grasp_sites.items()
                if role != "push"
                and np.linalg.norm(d.site_xpos[s] - tool) <= m.site_size[s, 0] + reach
            ]
            self.grasp_report = (
                f"{near[0]}: tool within {reach:g} m" if near else "no grasp site within reach"
            )
        else:
            reasons = {role: self._straddle_problem(role) for role in self._gripped_geom}
            near = [role for role, why in reasons.items() if not why]
            self.grasp_report = (
                f"{near[0]}: between the jaws"
                if near
                else "; ".join(f"{role}: {why}" for role, why in reasons.items())
            )
        if not near:
            return
        # Weld data: anchor (3), pose of body2 in body1 (pos 3, quat 4), torque scale. Writing the
        # current relative pose makes the weld hold the object exactly where it is: no jump.
        q_hand_inv = np.zeros(4)
        q_rel = np.zeros(4)
        mujoco.mju_negQuat(q_hand_inv, d.xquat[self._hand])
        mujoco.mju_mulQuat(q_rel, q_hand_inv, d.xquat[self._part])
        R_hand = d.xmat[self._hand].reshape(3, 3)
        m.eq_data[self._weld, 0:3] = 0.0
        m.eq_data[self._weld, 3:6] = R_hand.T @ (d.xpos[self._part] - d.xpos[self._hand])
        m.eq_data[self._weld, 6:10] = q_rel
        m.eq_data[self._weld, 10] = 1.0
        d.eq_active[self._weld] = 1

    def _straddle_problem(self, role: str) -> str:
        """Why the open jaws, closing now, would not hold the part of site ``role`` ("" if they
        would): the strict grasp check.

        The part is the solid geom the site sits in (a bar, the bottle's body, a knob, the box).
        The jaws close along the hand's z. A round part (capsule, cylinder) must be closed across
        its axis, a box across one of its faces, within ``grasp_max_angle_deg``; the part's
        half-width ``w`` along that direction is what the jaws squeeze. Taking the part's point
        nearest the jaws (along a bar, over a box face), in the hand frame it must lie: between
        the finger's root and the jaw tips along x (in front of the palm), over the jaws' width
        along y, with its near side not below the fixed jaw's face and its far side under the
        open finger (the finger, closing, sweeps onto it).
        """
        d, m, c, jaws = self.data, self.model, self.config, self._jaws
        tol = c.grasp_tolerance
        g = self._gripped_geom[role]
        R_g = d.geom_xmat[g].reshape(3, 3)
        R_h = d.xmat[self._hand].reshape(3, 3)
        p_h = d.xpos[self._hand]
        n = R_g.T @ R_h[:, 2]  # closing direction in the part geom's frame
        size = m.geom_size[g]
        jaw_centre = R_g.T @ (p_h + R_h @ jaws.centre - d.geom_xpos[g])  # in the geom frame
        max_tilt = np.deg2rad(c.grasp_max_angle_deg)
        gtype = int(m.geom_type[g])
        if gtype in _ROUND:
            tilt = np.arcsin(min(1.0, abs(n[2])))
            if tilt > max_tilt:
                return (
                    f"jaws close {np.rad2deg(tilt):.0f} deg off across the part's axis "
                    f"(> {c.grasp_max_angle_deg:g})"
                )
            w = float(size[0])
            ref = np.array([0.0, 0.0, np.clip(jaw_centre[2], -size[1], size[1])])
        elif gtype == _BOX:
            k = int(np.argmax(np.abs(n)))
            tilt = np.arccos(min(1.0, abs(n[k])))
            if tilt > max_tilt:
                return (
                    f"jaws close {np.rad2deg(tilt):.0f} deg off the nearest face normal "
                    f"(> {c.grasp_max_angle_deg:g})"
                )
            w = float(size[k])
            ref = np.clip(jaw_centre, -size[:3], size[:3])
            ref[k] = 0.0
        else:  # sphere-like: any direction, the centre
            w, ref = float(size[0]), np.zeros(3)
        x, y, z = R_h.T @ (d.geom_xpos[g] + R_g @ ref - p_h)  # in the hand frame
        if x > jaws.tip_x + tol:
            return f"part centre {x - jaws.tip_x:.3f} m beyond the jaw tips"
        if x + w < jaws.root_x - tol:
            return f"part {jaws.root_x - x - w:.3f} m short of the finger (against the palm)"
        if abs(y) > jaws.half_width + tol:
            return f"part centre {abs(y) - jaws.half_width:.3f} m beside the jaws"
        if z - w < jaws.face_z - tol:
            return f"part {jaws.face_z - (z - w):.3f} m below the fixed jaw's face"
        far = jaws.in_finger(np.array([x, z + w]), float(d.qpos[self._qadr[6]]))
        if far[1] > jaws.finger_face_z + tol:
            return f"part {far[1] - jaws.finger_face_z:.3f} m above the open finger (too wide)"
        return ""

    # ------------------------------------------------------------------ time
    def _physics_step(self) -> None:
        d = self.data
        ctrl = d.ctrl[self._act]
        ctrl[:6] = np.clip(self._target[:6], ctrl[:6] - self._max_step, ctrl[:6] + self._max_step)
        ctrl[6] = np.clip(
            self._target[6], ctrl[6] - self._max_finger_step, ctrl[6] + self._max_finger_step
        )
        d.ctrl[self._act] = ctrl
        mujoco.mj_step(self.model, d)

    def advance(self, dt: float) -> int:
        """Run the physics for ``dt`` seconds (rounded to whole steps); returns the step count."""
        self._require()
        n = round(dt / self.config.timestep)
        for _ in range(n):
            self._physics_step()
        return n

    def advance_to(self, t: float, max_steps: int | None = None) -> int:
        """Step until sim time reaches ``t`` (at most ``max_steps``); returns the step count."""
        d = self._require()
        n = int(np.floor((t - d.time) / self.config.timestep + 1e-9))
        if max_steps is not None:
            n = min(n, max_steps)
        for _ in range(max(n, 0)):
            self._physics_step()
        return max(n, 0)

    def step_joint_targets(
        self, q: np.ndarray, gripper: float | None = None, dt: float = 0.02
    ) -> None:
        """Set arm (and optionally finger) targets, then run the physics for ``dt`` seconds."""
        self.set_arm_targets(q, gripper)
        self.advance(dt)

    @property
    def time(self) -> float:
        """Simulated time since the end of reset (s)."""
        return float(self._require().time)

    # ------------------------------------------------------------------ state
    def joint_positions(self) -> np.ndarray:
        """(7,) arm_sh0..arm_wr1 and arm_f1x positions (rad), joint_states order."""
        return self._require().qpos[self._qadr].copy()

    def joint_velocities(self) -> np.ndarray:
        """(7,) joint velocities (rad/s), joint_states order."""
        return self._require().qvel[self._dadr].copy()

    def joint_efforts(self) -> np.ndarray:
        """(7,) servo torques (N m), joint_states order."""
        return self._require().actuator_force[self._act].copy()

    def joint_targets(self) -> np.ndarray:
        """(7,) the commanded targets (rad) the servos are moving towards."""
        return self._target.copy()

    def hand_pose(self) -> np.ndarray:
        """T_body_tool (4x4): the hand/tool frame (link_wr1 + TOOL_OFFSET) in body."""
        d = self._require()
        return _pose(d.site_xpos[self._tool], d.site_xmat[self._tool])

    def gripper_closed(self) -> bool:
        """Whether the last finger command was a close."""
        return self._closed

    def grasped(self) -> bool:
        """Whether the object is held: weld active, or (friction mode) both jaws touch the part."""
        d = self._require()
        if d.eq_active[self._weld]:
            return True
        jaws = {
            mujoco.mj_name2id(self.model, mujoco.mjtObj.mjOBJ_GEOM, n)
            for n in ("jaw_fixed", "jaw_finger")
        }
        touching = set()
        for c in d.contact[: d.ncon]:
            g1, g2 = int(c.geom1), int(c.geom2)
            for a, b in ((g1, g2), (g2, g1)):
                if a in jaws and self.model.geom_bodyid[b] == self._part:
                    touching.add(a)
        return touching == jaws

    def object_pose(self) -> np.ndarray:
        """T_body_part (4x4) of the part the task moves (drawer, door, lever or free object)."""
        d = self._require()
        return _pose(d.xpos[self._part], d.xmat[self._part])

    def object_joint(self) -> float:
        """Joint value of an articulated object (m or rad); NaN for free objects."""
        if not self.task.articulated:
            return float("nan")
        return float(self._require().qpos[self.obj_qadr])

    def site_pose(self, role: str) -> np.ndarray:
        """T_body_site (4x4) of the object's site ``role`` ("handle", "push", "top")."""
        d = self._require()
        if role not in self._grasp_sites:
            raise ValueError(
                f"object {self.task.kind!r} has no site {role!r}, only {list(self._grasp_sites)}"
            )
        s = self._grasp_sites[role]
        return _pose(d.site_xpos[s], d.site_xmat[s])

    def site_half_width(self, role: str) -> float:
        """Half-width (m) across the jaws of the part that site ``role`` grips."""
        self.site_pose(role)
        return float(self.model.site_size[self._grasp_sites[role], 0])

    def task_success(self) -> tuple[bool, dict[str, float]]:
        """(success, errors): the object's final pose is within the task tolerance of the goal.

        Articulated: ``{"joint": |q - q_goal|}`` (m or rad).
        Free: ``{"position": m, "angle": rad}``.
        """
        self._require()
        t = self.task
        if t.articulated:
            err = abs(self.object_joint() - self.goal)
            return bool(err <= t.tol), {"joint": err}
        dp, da = tasks.pose_errors(self.object_pose(), self.goal)
        return bool(dp <= t.tol and da <= t.tol_angle), {"position": dp, "angle": da}

    # ------------------------------------------------------------------ camera
    @property
    def intrinsics(self) -> Intrinsics:
        """Colour (= aligned depth) camera intrinsics at the configured size."""
        self._require()
        return intrinsics_of(self.model, mjcf.CAMERA, self.config.width, self.config.height)

    @property
    def T_body_cam(self) -> np.ndarray:
        """(4, 4) camera optical frame (x right, y down, z forward) in body, incl. jitter."""
        self._require()
        return self.scene.T_body_cam.copy()

    @property
    def camera(self) -> Camera:
        """The renderer, created on first use (a run without images never touches GL)."""
        self._require()
        if self._camera is None:
            self._camera = Camera(self.model, mjcf.CAMERA, self.config.width, self.config.height)
        return self._camera

    def render(self) -> tuple[np.ndarray, np.ndarray]:
        """(rgb (H, W, 3) uint8, depth (H, W) float32 m along the optical axis, 0 = none)."""
        return self.camera.render(self.data)


class RealtimeClock:
    """Keeps an env's sim time in step with a wall clock; call :meth:`sync` from a timer.

    If the machine cannot keep up, at most ``max_lag`` seconds are caught up per call and the
    rest is dropped (the sim runs slower than real time rather than freezing to catch up).
    """

    def __init__(self, env: SimEnv, rate: float = 1.0, max_lag: float = 0.1) -> None:
        if rate <= 0 or max_lag <= 0:
            raise ValueError(f"rate and max_lag must be > 0, got {rate}, {max_lag}")
        self.env, self.rate, self.max_lag = env, rate, max_lag
        self._wall0: float | None = None
        self._sim0 = 0.0

    def sync(self, wall_now: float) -> int:
        """Advance the sim to ``wall_now`` (s, any monotonic clock); returns physics steps run."""
        if self._wall0 is None:
            self._wall0, self._sim0 = wall_now, self.env.time
            return 0
        target = self._sim0 + (wall_now - self._wall0) * self.rate
        if target - self.env.time > self.max_lag:  # fell behind: drop the backlog for good
            self._sim0 -= target - self.env.time - self.max_lag
            target = self.env.time + self.max_lag
        return self.env.advance_to(target)
