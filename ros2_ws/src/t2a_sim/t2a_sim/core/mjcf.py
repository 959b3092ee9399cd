"""Small helpers to write MJCF with ElementTree, and the Spot body + arm generated from spot_arm.

The arm is generated from :mod:`t2a_common.core.spot_arm` (joint names, origins, axes, limits,
tool offset): the numbers live in one place, this module only adds shapes, masses and servos.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable

import numpy as np

from t2a_common.core import spot_arm
from t2a_sim.core.config import SimConfig

TOOL_SITE = "tool"
HAND_BODY = spot_arm.ARM_JOINTS[-1].child  # link_wr1: the weld holds objects to it
FINGER_BODY = spot_arm.GRIPPER_JOINT.child
CAMERA = "front_camera"

# Geom classes: only the gripper and the objects take part in contacts. The arm links are
# visual-only so that a privileged expert never gets stuck on its own elbow.
VISUAL = {"contype": "0", "conaffinity": "0", "group": "1"}
SOLID = {"contype": "1", "conaffinity": "1", "group": "2"}


def fmt(value) -> str:
    """MJCF attribute text: numbers with up to 10 significant digits, sequences space-separated."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)):
        return format(float(value), ".10g")
    return " ".join(fmt(v) for v in value)


def sub(parent: ET.Element, tag: str, attrs: dict | None = None, **kw) -> ET.Element:
    """Append ``<tag>`` to ``parent``; ``attrs`` merged with keyword attributes (None skipped)."""
    merged = {**(attrs or {}), **kw}
    return ET.SubElement(parent, tag, {k: fmt(v) for k, v in merged.items() if v is not None})


def rgba(rgb: Iterable[float], alpha: float = 1.0) -> tuple[float, ...]:
    """An rgba tuple from an rgb triple."""
    return (*(float(c) for c in rgb), alpha)


def _link_shapes(link: ET.Element, name: str) -> None:
    """Visual shapes of each arm link (Spot-arm-like proportions; the kinematics are elsewhere)."""
    dark, yellow = rgba((0.12, 0.12, 0.13)), rgba((0.95, 0.75, 0.1))
    if name == "link_sh0":
        sub(link, "geom", VISUAL, type="cylinder", size=(0.055, 0.05), pos=(0, 0, -0.03), rgba=dark)
    elif name == "link_sh1":
        sub(
            link,
            "geom",
            VISUAL,
            type="capsule",
            fromto=(0, 0, 0, 0.3385, 0, 0),
            size=(0.045,),
            rgba=yellow,
        )
    elif name == "link_el0":
        sub(
            link,
            "geom",
            VISUAL,
            type="capsule",
            fromto=(0, 0, 0, 0.2, 0, 0.075),
            size=(0.04,),
            rgba=dark,
        )
    elif name == "link_el1":
        sub(
            link,
            "geom",
            VISUAL,
            type="capsule",
            fromto=(-0.2, 0, 0, -0.03, 0, 0),
            size=(0.038,),
            rgba=yellow,
        )
    elif name == "link_wr0":
        sub(link, "geom", VISUAL, type="cylinder", size=(0.035, 0.035), zaxis=(0, 1, 0), rgba=dark)
    elif name == "link_wr1":
        sub(
            link,
            "geom",
            VISUAL,
            type="cylinder",
            size=(0.04, 0.03),
            pos=(0.02, 0, 0),
            zaxis=(1, 0, 0),
            rgba=dark,
        )
        # Palm and fixed (lower) jaw collide: the jaw's inner face sits 12 mm below the tool
        # axis so a 24 mm handle bar centred on the tool point is held between the jaws.
        sub(
            link,
            "geom",
            SOLID,
            name="palm",
            type="box",
            pos=(0.075, 0, 0),
            size=(0.025, 0.035, 0.03),
            rgba=dark,
        )
        sub(
            link,
            "geom",
            SOLID,
            name="jaw_fixed",
            type="box",
            pos=(0.155, 0, -0.02),
            size=(0.065, 0.02, 0.008),
            rgba=dark,
            friction=(1.5, 0.01, 0.001),
        )


def add_robot(world: ET.Element, cfg: SimConfig) -> None:
    """Spot's static body with legs, the 6-DoF arm from ``spot_arm`` and the gripper finger."""
    grey, dark = rgba((0.9, 0.75, 0.1)), rgba((0.15, 0.15, 0.16))
    body = sub(world, "body", name="body")
    sub(body, "geom", VISUAL, type="box", size=(0.42, 0.11, 0.085), rgba=grey)
    sub(body, "geom", VISUAL, type="box", size=(0.07, 0.1, 0.05), pos=(0.38, 0, 0.02), rgba=dark)
    sub(body, "geom", VISUAL, type="cylinder", size=(0.06, 0.05), pos=(0.292, 0, 0.12), rgba=dark)
    floor_z = -cfg.body_height
    for sx in (-1, 1):
        for sy in (-1, 1):
            hip = np.array([0.29 * sx, 0.11 * sy, -0.02])
            knee = hip + np.array([-0.06, 0.03 * sy, (floor_z - hip[2]) / 2])
            foot = np.array([hip[0], hip[1] + 0.03 * sy, floor_z + 0.03])
            for a, b, r in ((hip, knee, 0.035), (knee, foot, 0.025)):
                sub(body, "geom", VISUAL, type="capsule", fromto=(*a, *b), size=(r,), rgba=dark)

    parent = body
    masses = {"link_sh0": 2.0, "link_sh1": 1.9, "link_el0": 1.0, "link_el1": 0.8}
    for joint in spot_arm.ARM_JOINTS:
        link = sub(parent, "body", name=joint.child, pos=joint.origin, gravcomp=1)
        sub(
            link,
            "inertial",
            pos=(0.05, 0, 0),
            mass=masses.get(joint.child, 0.6),
            diaginertia=(0.004, 0.008, 0.008),
        )
        sub(
            link,
            "joint",
            name=joint.name,
            type="hinge",
            axis=joint.axis,
            range=(joint.lower, joint.upper),
            limited="true",
            armature=0.05,
            damping=1.0,
        )
        _link_shapes(link, joint.child)
        parent = link
    sub(
        parent,
        "site",
        name=TOOL_SITE,
        pos=spot_arm.TOOL_OFFSET,
        size=(0.006,),
        rgba=(1, 0, 0, 0.0),
        group=5,
    )

    g = spot_arm.GRIPPER_JOINT
    finger = sub(parent, "body", name=g.child, pos=g.origin, gravcomp=1)
    sub(finger, "inertial", pos=(0.05, 0, -0.02), mass=0.1, diaginertia=(1e-4, 1e-4, 1e-4))
    sub(
        finger,
        "joint",
        name=g.name,
        type="hinge",
        axis=g.axis,
        range=(g.lower, g.upper),
        limited="true",
        armature=0.002,
        damping=0.05,
        solreflimit=(0.004, 1.0),  # jaws do not collide with each other: the limit is the stop
    )
    # Closed (angle 0) the finger's lower face meets the fixed jaw's upper face at z=-12 mm.
    sub(
        finger,
        "geom",
        SOLID,
        name="jaw_finger",
        type="box",
        pos=(0.05, 0, -0.019),
        size=(0.05, 0.018, 0.008),
        rgba=dark,
        friction=(1.5, 0.01, 0.001),
    )


def add_actuators(root: ET.Element, cfg: SimConfig) -> None:
    """Position servos on the six arm joints and the finger."""
    act = sub(root, "actuator")
    # Overdamped: the env ramps targets at the joint speed limit, and a critically damped servo
    # chasing a ramp (with the links' coupled inertia) overshoots that speed by a few percent.
    for joint, kp, tmax in zip(spot_arm.ARM_JOINTS, cfg.arm_kp, cfg.arm_max_torque):
        sub(
            act,
            "position",
            name=joint.name,
            joint=joint.name,
            kp=kp,
            dampratio=1.6,
            ctrlrange=(joint.lower, joint.upper),
            forcerange=(-tmax, tmax),
        )
    g = spot_arm.GRIPPER_JOINT
    # The finger target may sit past "shut" (0) so that a closed hand squeezes what it holds.
    sub(
        act,
        "position",
        name=g.name,
        joint=g.name,
        kp=cfg.gripper_kp,
        dampratio=1.0,
        ctrlrange=(g.lower, 0.5),
        forcerange=(-cfg.gripper_max_torque, cfg.gripper_max_torque),
    )


def camera_rotation(pitch_deg: float, yaw_deg: float = 0.0) -> np.ndarray:
    """R_body_mjcam of a camera looking forward, pitched down and turned left by yaw.

    MuJoCo cameras look along their -z with y up.
    """
    p, y = np.deg2rad(pitch_deg), np.deg2rad(yaw_deg)
    forward = np.array([np.cos(p) * np.cos(y), np.cos(p) * np.sin(y), -np.sin(p)])
    right = np.array([np.sin(y), -np.cos(y), 0.0])
    up = np.cross(-forward, right)
    return np.stack([right, up, -forward], axis=1)
