"""Plan status codes: ``t2a_msgs/Plan`` STATUS_* by name, one source of truth in t2a_common."""

from __future__ import annotations

import enum

from t2a_common.core import types


class Status(enum.IntEnum):
    """Outcome of planning; anything but ``OK`` carries no executable poses."""

    OK = types.PLAN_OK
    TOO_FEW_POINTS = types.PLAN_TOO_FEW_POINTS  # fewer moving points with depth than needed
    NO_MOTION = types.PLAN_NO_MOTION  # tracks show no motion above the threshold
    DEGENERATE = types.PLAN_DEGENERATE  # moving points (near) collinear, or the pose ambiguous
    FIT_FAILED = types.PLAN_FIT_FAILED  # no rigid motion explains enough points, or divergence
    UNREACHABLE = types.PLAN_UNREACHABLE  # some end-effector pose fails the reachability check
    BAD_INPUT = types.PLAN_BAD_INPUT  # malformed input: shapes, NaN, no depth, bad extrinsics
