"""The Spot arm as data: joint chain, limits and tool frame (spot_description spot_arm_macro.urdf).

This table is the single source for every consumer: forward kinematics and IK
(``t2a_common.core.kinematics``), the MuJoCo model (t2a_sim) and the planner's reachability
check. All joint rpy are zero in the URDF, so each joint is a translation ``origin`` from its
parent followed by a rotation about ``axis``.
"""

from __future__ import annotations

import dataclasses

import numpy as np


@dataclasses.dataclass(frozen=True)
class Joint:
    name: str
    parent: str
    child: str
    origin: tuple[float, float, float]  # m, in the parent link frame
    axis: tuple[float, float, float]  # unit vector in the child (= parent, rpy 0) frame
    lower: float  # rad (m for prismatic)
    upper: float  # rad


ARM_JOINTS: tuple[Joint, ...] = (
    Joint("arm_sh0", "body", "link_sh0", (0.292, 0.0, 0.188), (0.0, 0.0, 1.0), -2.6180, 3.1416),
    Joint("arm_sh1", "link_sh0", "link_sh1", (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), -3.1416, 0.5236),
    Joint("arm_el0", "link_sh1", "link_el0", (0.3385, 0.0, 0.0), (0.0, 1.0, 0.0), 0.0, 3.1416),
    Joint(
        "arm_el1", "link_el0", "link_el1", (0.4033, 0.0, 0.075), (1.0, 0.0, 0.0), -2.7925, 2.7925
    ),
    Joint("arm_wr0", "link_el1", "link_wr0", (0.0, 0.0, 0.0), (0.0, 1.0, 0.0), -1.8326, 1.8326),
    Joint("arm_wr1", "link_wr0", "link_wr1", (0.0, 0.0, 0.0), (1.0, 0.0, 0.0), -2.8798, 2.8798),
)
"""The six arm joints, body to wrist, in chain order."""

GRIPPER_JOINT = Joint(
    "arm_f1x", "link_wr1", "link_fngr", (0.11745, 0.0, 0.01482), (0.0, 1.0, 0.0), -1.57, 0.0
)
"""The finger joint: 0 = closed, -1.57 = fully open (spot_ros2 reports it in joint_states)."""

TOOL_OFFSET = (0.19557, 0.0, 0.0)
"""Hand/tool frame origin in link_wr1 (m); same orientation as link_wr1."""

ARM_JOINT_NAMES: tuple[str, ...] = tuple(j.name for j in ARM_JOINTS)
ALL_JOINT_NAMES: tuple[str, ...] = (*ARM_JOINT_NAMES, GRIPPER_JOINT.name)
LOWER = np.array([j.lower for j in ARM_JOINTS])  # (6,) rad
UPPER = np.array([j.upper for j in ARM_JOINTS])  # (6,) rad

READY = np.array([0.0, -0.9, 1.8, 0.0, -0.9, 0.0])
"""A comfortable pose in front of the body (rad), the default start of manipulation."""

STOW = np.array([0.0, -3.1, 3.1, 0.0, 0.0, 0.0])
"""Arm folded on the body (rad), inside the joint limits."""

MAX_JOINT_SPEED = np.array([2.0, 2.0, 2.0, 3.0, 3.0, 3.0])
"""Velocity limits used for the simulated position servos and the safety filter (rad/s)."""


def gripper_opening(f1x_rad: float) -> float:
    """Gripper opening in [0, 1] from the finger joint angle ``arm_f1x`` (rad)."""
    return float(np.clip(f1x_rad / GRIPPER_JOINT.lower, 0.0, 1.0))
