"""The MJCF of one episode: floor, wall, table, Spot with arm and camera, object, distractors."""

from __future__ import annotations

import dataclasses
import xml.etree.ElementTree as ET

import numpy as np
from scipy.spatial.transform import Rotation

from t2a_sim.core import mjcf, objects
from t2a_sim.core.config import SimConfig
from t2a_sim.core.mjcf import SOLID, VISUAL, sub
from t2a_sim.core.tasks import TASKS, EpisodeSpec

OBJECT = "target"
GRASP_WELD = "grasp"
TABLE_X = (0.55, 1.35)  # m, table extent in x (front edge near Spot)
TABLE_Y = 0.8  # m, half width


@dataclasses.dataclass(frozen=True)
class Scene:
    """A compiled-ready scene: the MJCF text and what lives in it."""

    xml: str
    obj: objects.ObjectInfo
    T_body_cam: np.ndarray  # (4, 4) optical frame (x right, y down, z forward) in body


def camera_pose(cfg: SimConfig, jitter: tuple[float, ...]) -> tuple[np.ndarray, np.ndarray]:
    """(position (3,), R_body_mjcam (3, 3)) of the front camera with the episode's jitter."""
    R = mjcf.camera_rotation(cfg.cam_pitch_deg, cfg.cam_yaw_deg)
    dR = Rotation.from_euler("xyz", jitter[3:6], degrees=True).as_matrix()
    return np.asarray(cfg.cam_pos, float) + np.asarray(jitter[:3]), dR @ R


def optical_from_mjcam(pos: np.ndarray, R_body_mjcam: np.ndarray) -> np.ndarray:
    """T_body_cam of the optical frame: MuJoCo's camera y is up and it looks along -z."""
    T = np.eye(4)
    T[:3, :3] = R_body_mjcam @ np.diag([1.0, -1.0, -1.0])
    T[:3, 3] = pos
    return T


def build_scene(spec: EpisodeSpec, cfg: SimConfig) -> Scene:
    """MJCF of episode ``spec`` under settings ``cfg``."""
    rng = np.random.default_rng(spec.build_seed)
    task = TASKS[spec.task]
    root = ET.Element("mujoco", model=f"t2a_{spec.task}")
    sub(root, "compiler", angle="radian", autolimits="true")
    sub(
        root,
        "option",
        timestep=cfg.timestep,
        integrator="implicitfast",
        cone="elliptic",
        impratio=5,
    )
    # Fixing the extent makes the clip planes (relative to it) independent of the scene contents.
    sub(root, "statistic", extent=1.0, center=(0.8, 0, 0))
    visual = sub(root, "visual")
    sub(visual, "global", offwidth=max(cfg.width, 640), offheight=max(cfg.height, 480), fovy=45)
    sub(visual, "quality", offsamples=0, shadowsize=0)
    sub(visual, "map", znear=cfg.near, zfar=cfg.far)
    light = spec.light
    sub(
        visual,
        "headlight",
        ambient=(light["ambient"],) * 3,
        diffuse=(light["head"],) * 3,
        specular=(0.05,) * 3,
    )

    asset = sub(root, "asset")
    style = spec.scene
    sub(
        asset,
        "texture",
        name="floor_tex",
        type="2d",
        width=256,
        height=256,
        builtin="checker" if style["floor_pattern"] == "checker" else "flat",
        rgb1=style["floor"],
        rgb2=np.clip(np.asarray(style["floor"]) * 0.7, 0, 1),
        mark="random" if style["floor_pattern"] == "noise" else "none",
        random=0.08,
        markrgb=np.clip(np.asarray(style["floor"]) * 1.3, 0, 1),
    )
    sub(
        asset,
        "material",
        name="floor_mat",
        texture="floor_tex",
        texrepeat=(6, 6),
        texuniform="true",
    )
    objects.add_material(asset, "table_mat", style["table"], style["table_pattern"], rng)
    objects.add_material(asset, "wall_mat", style["wall"], "flat", rng)

    world = sub(root, "worldbody")
    sub(
        world,
        "light",
        directional="true",
        pos=(0, 0, 3),
        dir=light["dir"],
        diffuse=(light["diffuse"],) * 3,
        specular=(0.1,) * 3,
        castshadow="false",
    )
    floor_z = -cfg.body_height
    sub(
        world,
        "geom",
        SOLID,
        name="floor",
        type="plane",
        size=(4, 4, 0.1),
        pos=(0, 0, floor_z),
        material="floor_mat",
    )
    sub(
        world,
        "geom",
        VISUAL,
        name="wall",
        type="box",
        size=(0.02, 3, 1.5),
        pos=(2.6, 0, floor_z + 1.5),
        material="wall_mat",
    )
    tz = cfg.table_z
    sub(
        world,
        "geom",
        SOLID,
        name="table",
        type="box",
        size=((TABLE_X[1] - TABLE_X[0]) / 2, TABLE_Y, 0.02),
        pos=(sum(TABLE_X) / 2, 0, tz - 0.02),
        material="table_mat",
        friction=(0.6, 0.005, 1e-4),
    )
    for lx in TABLE_X:
        for ly in (-TABLE_Y, TABLE_Y):
            sub(
                world,
                "geom",
                VISUAL,
                type="box",
                size=(0.02, 0.02, (tz - floor_z) / 2),
                pos=(lx + np.sign(1.0 - lx) * 0.03, ly - np.sign(ly) * 0.03, (tz + floor_z) / 2),
                material="table_mat",
            )

    mjcf.add_robot(world, cfg)
    cam_pos, R_cam = camera_pose(cfg, spec.camera_jitter)
    sub(
        world.find("body[@name='body']"),
        "camera",
        name=mjcf.CAMERA,
        pos=cam_pos,
        xyaxes=(*R_cam[:, 0], *R_cam[:, 1]),
        fovy=cfg.fovy_deg,
    )

    x, y, yaw = spec.pose
    obj_root = sub(world, "body", name=OBJECT, pos=(x, y, tz), euler=(0, 0, yaw))
    info = objects.build(task.kind, obj_root, asset, spec.instance, rng)
    for i, (dx, dy) in enumerate(spec.distractors):
        objects.add_distractor(world, f"distractor{i}", (dx, dy, tz), rng)

    equality = sub(root, "equality")
    # Inactive until the hand closes at the grasp site; the env writes the relative pose first.
    sub(
        equality,
        "weld",
        name=GRASP_WELD,
        body1=mjcf.HAND_BODY,
        body2=info.part,
        active="false",
        solref=(0.004, 1),
    )
    mjcf.add_actuators(root, cfg)
    ET.indent(root)
    xml = ET.tostring(root, encoding="unicode")
    return Scene(xml=xml, obj=info, T_body_cam=optical_from_mjcam(cam_pos, R_cam))
