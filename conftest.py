"""Workspace-wide pytest setup: test tiers and one ROS_DOMAIN_ID per test process.

Every test lives in exactly one tier (unit, ros, sim, slow); a test that declares none is a unit
test. Each pytest process (the controller and every xdist worker) gets its own ROS_DOMAIN_ID, so
ROS tests running in parallel, or next to a developer's live stack, never see each other's nodes.
Child processes started by a test inherit the domain through the environment.
"""

from __future__ import annotations

import os

import pytest

TIERS = ("unit", "ros", "sim", "slow")


def _domain_for_this_process() -> int:
    base = int(os.environ.setdefault("T2A_TEST_DOMAIN_BASE", str(1 + (os.getpid() % 45) * 2)))
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    index = int(worker[2:]) if worker.startswith("gw") and worker[2:].isdigit() else 0
    # Linux-safe domain ids are 0..101 (port ranges); wrap inside 1..100.
    return 1 + (base + index - 1) % 100


os.environ["ROS_DOMAIN_ID"] = str(_domain_for_this_process())
os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
os.environ.setdefault("RMW_IMPLEMENTATION", "rmw_fastrtps_cpp")
os.environ.setdefault("MUJOCO_GL", "egl")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        tiers = [m.name for m in item.iter_markers() if m.name in TIERS]
        if not tiers:
            item.add_marker(pytest.mark.unit)
        elif len(set(tiers)) > 1 and "slow" not in tiers:
            raise pytest.UsageError(f"{item.nodeid} is in several tiers: {sorted(set(tiers))}")
