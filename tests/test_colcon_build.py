"""The workspace also builds the ROS way: colcon build (ament_cmake + ament_python packages)."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.ros
SRC = Path(__file__).resolve().parents[1] / "ros2_ws" / "src"
PACKAGES = sorted(p.parent.name for p in SRC.glob("*/package.xml"))


def test_colcon_builds_every_package(tmp_path):
    colcon = shutil.which("colcon")
    assert colcon, "colcon is not installed (requirements/python.txt pins colcon-common-extensions)"
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    result = subprocess.run(
        [colcon, "build", "--base-paths", str(SRC), "--build-base", "build",
         "--install-base", "install", "--event-handlers", "console_direct-"],
        cwd=tmp_path, capture_output=True, text=True, env=env, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert f"{len(PACKAGES)} packages finished" in result.stdout, result.stdout[-2000:]
    install = tmp_path / "install"
    for pkg in PACKAGES:
        assert (install / pkg / "share/ament_index/resource_index/packages" / pkg).exists(), pkg
        assert (install / pkg / "share" / pkg / "package.xml").exists(), pkg
    # ament_python console scripts land where `ros2 run` looks for them
    assert (install / "t2a_bringup/lib/t2a_bringup/t2a-doctor").exists()
    assert list(install.glob("t2a_msgs/lib/python3*/site-packages/t2a_msgs/msg/_point_tracks.py"))
