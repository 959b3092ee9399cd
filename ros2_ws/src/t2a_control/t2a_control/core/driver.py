"""The arm driver interface the controller talks to, and a kinematic fake of it.

Backends (spot_ros2 topics and Trigger services, a direct bosdyn-client connection, t2a_sim)
implement :class:`ArmDriver`; the two the control node runs on (its ``driver`` parameter:
``spot_ros2``, ``bosdyn``) also implement :class:`LiveArmDriver`. :class:`FakeArmDriver` is a
real implementation of the protocol without a robot: joints move towards their targets at
``MAX_JOINT_SPEED``, the gripper at a fixed rate, and it refuses what a real driver would refuse.
Tests use it instead of mocks.

Gripper state is an *opening* in [0, 1] (0 = closed, 1 = fully open); spot_ros2 reports the
finger joint ``arm_f1x`` in rad (0 closed, -1.57 open), see
:func:`t2a_common.core.spot_arm.gripper_opening`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np

from t2a_common.core.spot_arm import LOWER, MAX_JOINT_SPEED, READY, STOW, UPPER


@runtime_checkable
class ArmDriver(Protocol):
    """What the controller needs from an arm. Commands return (success, message) like Trigger."""

    def joint_positions(self) -> tuple[np.ndarray, float, float]:
        """(arm joints q (6,) rad, gripper opening in [0, 1], stamp s) of the latest state."""
        ...

    def send_joint_targets(self, q: np.ndarray) -> None:
        """Stream arm joint position targets (6,) rad, in ``spot_arm.ARM_JOINT_NAMES`` order."""
        ...

    def open_gripper(self) -> tuple[bool, str]:
        """Open the gripper fully."""
        ...

    def close_gripper(self) -> tuple[bool, str]:
        """Close the gripper (it stops on whatever is between the fingers)."""
        ...

    def stop(self) -> tuple[bool, str]:
        """Stop all arm motion now and hold position."""
        ...

    def power_on(self) -> tuple[bool, str]:
        """Power the motors on."""
        ...

    def claim(self) -> tuple[bool, str]:
        """Take the robot's lease."""
        ...

    def stand(self) -> tuple[bool, str]:
        """Stand up (the arm only moves while standing)."""
        ...

    def unstow(self) -> tuple[bool, str]:
        """Move the arm out of its stowed pose to the ready pose."""
        ...

    def stow(self) -> tuple[bool, str]:
        """Fold the arm back onto the body."""
        ...

    def release(self) -> tuple[bool, str]:
        """Give the robot's lease back (the tablet can take over)."""
        ...

    def estop(self) -> tuple[bool, str]:
        """Gentle e-stop: the robot settles, then cuts motor power; power_on is needed after."""
        ...


STARTUP: tuple[str, ...] = ("claim", "power_on", "stand", "unstow")
"""The start-up sequence, :class:`ArmDriver` method names in order (spot_ros2: the Trigger
services claim, power_on, stand, arm_unstow)."""

SHUTDOWN: tuple[str, ...] = ("stow", "release")
"""The shutdown sequence (spot_ros2: arm_stow, release)."""


def run_sequence(driver: ArmDriver, steps: tuple[str, ...]) -> tuple[bool, str]:
    """Call ``steps`` (method names of ``driver``) in order; stop at the first that fails.
    Returns (success, what happened), e.g. ``(False, "stand failed: not powered")``."""
    done = []
    for step in steps:
        ok, text = getattr(driver, step)()
        if not ok:
            return False, f"{step} failed: {text}" + (f" (after {', '.join(done)})" if done else "")
        done.append(step)
    return True, ", ".join(done)


@runtime_checkable
class LiveArmDriver(ArmDriver, Protocol):
    """An :class:`ArmDriver` connected to a robot (or t2a_sim) that receives its state in the
    background: what the control node needs besides the protocol. Both backends implement it.

    ``received_s`` is when the latest robot state arrived (NaN before the first), in the clock
    the driver was given (the node passes its ROS clock, so the watchdog compares like with
    like, also under ``use_sim_time``).
    """

    received_s: float

    def has_state(self) -> bool:
        """Whether a robot state has arrived (``joint_positions`` raises before)."""
        ...

    def call_async(self, name: str) -> object:
        """Start a spot_ros2 Trigger-named call (``open_gripper``, ...) without waiting."""
        ...

    def close(self) -> None:
        """Release what the driver holds (lease, estop, connections); idempotent."""
        ...


class FakeArmDriver:
    """Kinematic arm: position targets are tracked at the joint speed limits, no dynamics.

    Time only advances through :meth:`step`, so a test owns the clock. With ``ready=True`` the
    robot starts claimed, powered, standing and unstowed at ``q0``; otherwise it starts stowed
    and the start-up calls must come in order (claim, power_on, stand, unstow), as on Spot.
    ``object_opening`` simulates an object between the fingers: closing stops there.
    """

    def __init__(
        self,
        q0: np.ndarray | None = None,
        *,
        ready: bool = True,
        gripper: float = 1.0,
        gripper_speed: float = 2.0,  # opening per second
        object_opening: float = 0.0,
        time_s: float = 0.0,
    ) -> None:
        self.q = np.array(READY if ready else STOW, dtype=float) if q0 is None else np.array(q0)
        if self.q.shape != (6,) or not np.isfinite(self.q).all():
            raise ValueError(f"initial joints must be 6 finite angles (rad), got {q0!r}")
        self.q_target = self.q.copy()  # (6,) rad
        self.gripper = float(gripper)
        self.gripper_target = self.gripper
        self.gripper_speed = float(gripper_speed)
        self.object_opening = float(object_opening)
        self.time_s = float(time_s)
        self.claimed = self.powered = self.standing = self.unstowed = ready
        self.estopped = False
        self.sent: list[np.ndarray] = []  # every accepted joint target, for tests
        self.calls: list[str] = []  # start-up / shutdown / estop calls, in order, for tests

    # --- state and motion ------------------------------------------------------------------

    def joint_positions(self) -> tuple[np.ndarray, float, float]:
        """(q (6,) rad, gripper opening, stamp s)."""
        return self.q.copy(), self.gripper, self.time_s

    def step(self, dt: float) -> None:
        """Advance time by ``dt`` s, moving joints and gripper towards their targets."""
        if not dt >= 0.0:
            raise ValueError(f"dt must be >= 0 s, got {dt!r}")
        max_step = MAX_JOINT_SPEED * dt  # (6,) rad
        self.q = self.q + np.clip(self.q_target - self.q, -max_step, max_step)
        target = max(self.gripper_target, self.object_opening)
        g_step = self.gripper_speed * dt
        self.gripper += float(np.clip(target - self.gripper, -g_step, g_step))
        self.time_s += dt

    def send_joint_targets(self, q: np.ndarray) -> None:
        """Accept a joint target (6,) rad; raises ``ValueError`` for anything a robot rejects."""
        q = np.asarray(q, dtype=float)
        if q.shape != (6,) or not np.isfinite(q).all():
            raise ValueError(f"joint target must be 6 finite angles (rad), got {q!r}")
        if np.any(q < LOWER) or np.any(q > UPPER):
            raise ValueError(f"joint target {q.tolist()} is outside the joint limits")
        if not (self.claimed and self.powered and self.standing and self.unstowed):
            raise ValueError("joint target while the arm is not powered, standing and unstowed")
        self.q_target = q.copy()
        self.sent.append(q.copy())

    def open_gripper(self) -> tuple[bool, str]:
        """Start opening the gripper."""
        if not self.powered:
            return False, "not powered on"
        self.gripper_target = 1.0
        return True, "opening"

    def close_gripper(self) -> tuple[bool, str]:
        """Start closing the gripper."""
        if not self.powered:
            return False, "not powered on"
        self.gripper_target = 0.0
        return True, "closing"

    def stop(self) -> tuple[bool, str]:
        """Hold the current joints."""
        self.q_target = self.q.copy()
        return True, "stopped"

    # --- start-up and shut-down ------------------------------------------------------------

    def claim(self) -> tuple[bool, str]:
        """Take the lease."""
        self.calls.append("claim")
        self.claimed = True
        return True, "claimed"

    def release(self) -> tuple[bool, str]:
        """Give the lease back; joint targets are refused after."""
        self.calls.append("release")
        self.claimed = False
        return True, "released"

    def estop(self) -> tuple[bool, str]:
        """Hold where the arm is and cut power (gentle estop)."""
        self.calls.append("estop")
        self.q_target = self.q.copy()
        self.estopped, self.powered = True, False
        return True, "estopped"

    def power_on(self) -> tuple[bool, str]:
        """Power on; needs the lease."""
        self.calls.append("power_on")
        if not self.claimed:
            return False, "claim the lease first"
        self.powered = True
        return True, "powered on"

    def stand(self) -> tuple[bool, str]:
        """Stand; needs power."""
        self.calls.append("stand")
        if not self.powered:
            return False, "power on first"
        self.standing = True
        return True, "standing"

    def unstow(self) -> tuple[bool, str]:
        """Move to the ready pose (through :meth:`step`); needs standing."""
        self.calls.append("unstow")
        if not self.standing:
            return False, "stand first"
        self.unstowed = True
        self.q_target = READY.copy()
        return True, "unstowing"

    def stow(self) -> tuple[bool, str]:
        """Move to the stowed pose (through :meth:`step`); joint targets are refused after."""
        self.calls.append("stow")
        if not self.standing:
            return False, "stand first"
        self.unstowed = False
        self.q_target = STOW.copy()
        return True, "stowing"
