"""Input watchdog: the arm may only move while every input it depends on is fresh.

Each watched input (colour image, aligned depth, camera_info, joint states) reports when it was last
received; an input is stale once that is more than ``stale_ticks`` control periods plus ``margin_s``
ago, or if it never arrived. The defaults (one period + 0.1 s) mean no plan step is commanded from
an input older than 0.3 s at 5 Hz: the tick after the last frame still moves, the next one holds
(with two periods, two more steps were commanded after the camera stopped). Time is whatever clock
the caller uses (ROS time in the node, sim time in tests), passed in as floats, so the watchdog is
deterministic and never reads a clock itself.

The default watches all four inputs of the control node (:data:`INPUTS`); it holds on the first
tick that lacks a stamp for any of them. A caller without a stream for an input says so by
watching fewer (``WatchdogConfig(inputs=...)``), or, in process where every input is the
simulator's state at one time, feeds that time for each watched input.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable

from t2a_common.core.config import check, param

# What the control node depends on: the live colour image I_t, the aligned depth and camera_info
# the planner lifted P0 with (a dead depth stream means the scene is no longer measured), and the
# arm's joint states.
INPUTS = ("joint_states", "image", "depth", "camera_info")


@dataclasses.dataclass(frozen=True)
class WatchdogConfig:
    """Which inputs must stay fresh and how old they may get."""

    inputs: tuple[str, ...] = param(
        INPUTS,
        "inputs that must stay fresh while the arm moves (names of Observation.stamps keys: "
        "joint_states, image, depth, camera_info)",
    )
    stale_ticks: float = param(
        1.0, "an input last received more than this many control periods (+ margin_s) ago is stale"
    )
    margin_s: float = param(
        0.1, "added to stale_ticks periods: delivery and scheduling jitter of a fresh input (s)"
    )

    def __post_init__(self) -> None:
        check(
            all(isinstance(name, str) and name for name in self.inputs),
            f"WatchdogConfig.inputs = {self.inputs!r}, expected non-empty names",
        )
        check(
            len(set(self.inputs)) == len(self.inputs),
            f"WatchdogConfig.inputs = {self.inputs!r} names an input twice",
        )
        check(
            isinstance(self.stale_ticks, (int, float))
            and math.isfinite(self.stale_ticks)
            and self.stale_ticks > 0,
            f"WatchdogConfig.stale_ticks = {self.stale_ticks!r}, expected a finite number > 0",
        )
        check(
            isinstance(self.margin_s, (int, float))
            and math.isfinite(self.margin_s)
            and self.margin_s >= 0,
            f"WatchdogConfig.margin_s = {self.margin_s!r}, expected a finite number >= 0 (s)",
        )

    def max_age_s(self, period_s: float) -> float:
        """Oldest an input may be (s) in a loop with period ``period_s`` (s)."""
        return self.stale_ticks * period_s + self.margin_s


_ROUNDING_S = 1e-6  # s of slack on the allowed age


class Watchdog:
    """Last receive time per named input; :meth:`check` says which ones are stale at ``now``."""

    def __init__(
        self, names: Iterable[str], period_s: float, stale_ticks: float = 1.0, margin_s: float = 0.1
    ) -> None:
        if not (math.isfinite(period_s) and period_s > 0):
            raise ValueError(f"watchdog period is {period_s!r} s, expected a finite number > 0")
        if not (math.isfinite(stale_ticks) and stale_ticks > 0):
            raise ValueError(f"stale_ticks is {stale_ticks!r}, expected a finite number > 0")
        if not (math.isfinite(margin_s) and margin_s >= 0):
            raise ValueError(f"margin_s is {margin_s!r} s, expected a finite number >= 0")
        self.names: tuple[str, ...] = tuple(names)
        # Stamps summed from periods are off by rounding: "exactly two periods" must not flicker.
        self.max_age_s = stale_ticks * period_s + margin_s + _ROUNDING_S
        self._last: dict[str, float] = {}

    @classmethod
    def from_config(cls, config: WatchdogConfig, period_s: float) -> Watchdog:
        """Watchdog over ``config.inputs`` for a control loop with period ``period_s`` (s)."""
        return cls(config.inputs, period_s, config.stale_ticks, config.margin_s)

    def feed(self, name: str, stamp_s: float) -> None:
        """Record that input ``name`` was received at ``stamp_s`` (s); unknown names are ignored.

        The latest call wins even if its stamp is older than the previous one, so a clock that
        jumped back (a restarted simulation or bag) takes effect at once. Non-finite stamps are
        ignored, so a garbage stamp cannot make an input look fresh.
        """
        if name in self.names and math.isfinite(stamp_s):
            self._last[name] = float(stamp_s)

    def age(self, name: str, now_s: float) -> float:
        """Seconds since ``name`` was last received; inf if never."""
        last = self._last.get(name)
        return math.inf if last is None else now_s - last

    def check(self, now_s: float) -> tuple[bool, list[str]]:
        """(all fresh, names of the stale inputs in declaration order) at time ``now_s`` (s).

        A stamp more than the allowed age in the future also counts as stale: the clocks
        disagree, and such an input would otherwise stay "fresh" until the clock caught up.
        """
        limit = self.max_age_s
        stale = [n for n in self.names if not -limit <= self.age(n, now_s) <= limit]
        return not stale, stale

    def describe(self, now_s: float) -> str:
        """Human-readable list of the stale inputs and their ages, for hold reasons."""
        _, stale = self.check(now_s)
        parts = []
        for name in stale:
            age = self.age(name, now_s)
            parts.append(f"{name} never received" if math.isinf(age) else f"{name} {age:.2f} s old")
        return ", ".join(parts)

    def reset(self) -> None:
        """Forget every receive time (all inputs stale until fed again)."""
        self._last.clear()
