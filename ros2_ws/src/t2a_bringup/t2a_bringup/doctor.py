"""``t2a-doctor``: check that this environment can run the stack, and say what is missing.

Checks, in order: Python, rclpy and its middleware, t2a_msgs, the ament index entries of the t2a
packages, a node round trip over DDS, torch, and headless MuJoCo rendering (EGL, then OSMesa).
Exits 1 if anything the stack needs is broken.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import time
from collections.abc import Callable

PACKAGES = ("t2a_common", "t2a_perception", "t2a_planning", "t2a_control", "t2a_sim", "t2a_bringup")


def _python() -> str:
    if sys.version_info < (3, 10):  # noqa: UP036 (the doctor runs under any python3)
        raise RuntimeError(f"Python {sys.version.split()[0]} is too old, need >= 3.10")
    return sys.version.split()[0]


def _rclpy() -> str:
    import rclpy
    from rclpy.utilities import get_rmw_implementation_identifier

    rclpy.init()
    try:
        node = rclpy.create_node("t2a_doctor")
        pub = node.create_publisher(importlib.import_module("std_msgs.msg").String, "doctor", 1)
        node.destroy_publisher(pub)
        node.destroy_node()
        rmw = get_rmw_implementation_identifier()
    finally:
        rclpy.shutdown()
    domain = os.environ.get("ROS_DOMAIN_ID", "0")
    return f"{rmw}, ROS_DOMAIN_ID={domain}"


def _msgs() -> str:
    from t2a_msgs.msg import ControlStatus, Plan, PointTracks  # noqa: F401
    from t2a_msgs.srv import SetGoal  # noqa: F401

    return "PointTracks, Plan, ControlStatus, SetGoal"


def _ament() -> str:
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

    missing = []
    for p in PACKAGES:
        try:
            get_package_share_directory(p)
        except PackageNotFoundError:
            missing.append(p)
    if missing:
        raise RuntimeError(f"not in the ament index: {', '.join(missing)} (run make setup)")
    return f"{len(PACKAGES)} packages registered"


def _torch() -> str:
    import torch

    cuda = torch.cuda.is_available()
    return f"torch {torch.__version__}, {torch.get_num_threads()} threads, cuda={cuda}"


def _mujoco() -> str:
    os.environ.setdefault("MUJOCO_GL", "egl")
    import mujoco

    xml = (
        "<mujoco><worldbody><light pos='0 0 2'/><geom type='box' size='1 1 .1'/>"
        "<camera name='c' pos='0 0 3'/></worldbody></mujoco>"
    )
    model = mujoco.MjModel.from_xml_string(xml)
    data = mujoco.MjData(model)
    mujoco.mj_forward(model, data)
    with mujoco.Renderer(model, 64, 64) as renderer:
        renderer.update_scene(data, "c")
        t0 = time.perf_counter()
        rgb = renderer.render()
        ms = (time.perf_counter() - t0) * 1e3
    if rgb.max() == 0:
        raise RuntimeError("rendered an all-black image")
    return f"mujoco {mujoco.__version__}, MUJOCO_GL={os.environ['MUJOCO_GL']}, {ms:.1f} ms/frame"


CHECKS: list[tuple[str, Callable[[], str]]] = [
    ("python", _python),
    ("rclpy", _rclpy),
    ("t2a_msgs", _msgs),
    ("ament index", _ament),
    ("torch", _torch),
    ("mujoco", _mujoco),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.parse_args(argv)
    failed = 0
    for name, check in CHECKS:
        try:
            detail, ok = check(), True
        except Exception as exc:  # report every failure, keep checking the rest
            detail, ok = f"{type(exc).__name__}: {exc}", False
            failed += 1
        print(f"{'ok ' if ok else 'FAIL'}  {name:<12} {detail}")
    print("environment ready" if not failed else f"{failed} check(s) failed")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
