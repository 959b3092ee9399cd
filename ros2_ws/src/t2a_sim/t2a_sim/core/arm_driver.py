"""The simulated arm behind t2a_control's ArmDriver protocol, for in-process closed loops.

The ROS node exposes the same arm through spot_ros2's interfaces; this backend lets the
controller drive :class:`SimEnv` directly (evaluation, data collection), with the same start-up
rules as the robot: nothing moves before ``claim`` and ``power_on``.
"""

from __future__ import annotations

import numpy as np

from t2a_common.core import spot_arm
from t2a_common.core.spot_arm import gripper_opening
from t2a_sim.core.env import SimEnv


class SimArmDriver:
    """:class:`t2a_control.core.driver.ArmDriver` on a :class:`SimEnv` (time advances only
    through ``env.advance``, owned by the caller)."""

    def __init__(self, env: SimEnv, powered: bool = False) -> None:
        self.env = env
        self._claimed = self._powered = powered
        self.commands_sent = 0

    def _ready(self) -> tuple[bool, str]:
        if not (self._claimed and self._powered):
            return False, "claim the lease and power on first"
        return True, ""

    def joint_positions(self) -> tuple[np.ndarray, float, float]:
        q = self.env.joint_positions()
        return q[:6], gripper_opening(q[6]), self.env.time

    def send_joint_targets(self, q: np.ndarray) -> None:
        if self._ready()[0]:
            self.env.set_arm_targets(np.asarray(q, float))
            self.commands_sent += 1

    def _do(self, action, text: str) -> tuple[bool, str]:
        ok, why = self._ready()
        if not ok:
            return False, why
        action()
        return True, text

    def open_gripper(self) -> tuple[bool, str]:
        return self._do(self.env.open_gripper, "gripper opening")

    def close_gripper(self) -> tuple[bool, str]:
        return self._do(self.env.close_gripper, "gripper closing")

    def stop(self) -> tuple[bool, str]:
        self.env.set_arm_targets(self.env.joint_positions()[:6])
        return True, "holding"

    def claim(self) -> tuple[bool, str]:
        self._claimed = True
        return True, "lease claimed"

    def power_on(self) -> tuple[bool, str]:
        if not self._claimed:
            return False, "claim the lease before power_on"
        self._powered = True
        return True, "motors on"

    def stand(self) -> tuple[bool, str]:
        return True, "standing (the sim body is static)"

    def unstow(self) -> tuple[bool, str]:
        return self._do(lambda: self.env.set_arm_targets(spot_arm.READY), "unstowed")

    def stow(self) -> tuple[bool, str]:
        return self._do(lambda: self.env.set_arm_targets(spot_arm.STOW), "stowed")

    def release(self) -> tuple[bool, str]:
        self._claimed = False
        return True, "lease released"

    def estop(self) -> tuple[bool, str]:
        self.env.set_arm_targets(self.env.joint_positions()[:6])
        self._powered = False
        return True, "estopped: holding, motors off"
