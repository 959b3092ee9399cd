"""The layers of DESIGN.md section 3, read from the source (unit tier, no imports of the packages).

- every ``core/`` module is ROS-free: no rclpy, no ``*_msgs``, no ROS-only helpers, no node module;
- t2a_common is the ground: it imports none of the packages above it;
- t2a_perception, t2a_planning, t2a_control and t2a_sim stand side by side: none imports another;
- loading the config classes a stack names (``t2a_bringup.core.stack``, to check parameters)
  imports no rclpy.

Every ``import`` statement counts, also one inside a function (a lazy import is still a dependency).
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2]  # ros2_ws/src
SIDE_BY_SIDE = ("t2a_perception", "t2a_planning", "t2a_control", "t2a_sim")
ABOVE_COMMON = (*SIDE_BY_SIDE, "t2a_bringup")
# Modules (second name part) that convert messages: t2a_common.ros_conv for t2a_msgs, the rviz
# views of tracks and plans.
MESSAGE_SIDE = (["ros_conv"], ["track_viz"], ["plan_viz"])
# ROS packages that only exist in a ROS environment; a core module must run without them.
ROS_ONLY = (
    "rclpy",
    "ament_index_python",
    "launch",
    "launch_ros",
    "builtin_interfaces",
    "rosidl_runtime_py",
    "tf2_ros",
    "message_filters",
    "cv_bridge",
)


def _package_files(package: str) -> list[Path]:
    return sorted((SRC / package / package).rglob("*.py"))


def _core_files() -> list[Path]:
    return sorted(SRC.glob("t2a_*/t2a_*/core/**/*.py"))


def imported_modules(path: Path, root: Path = SRC) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in ``path`` (a file of a package under
    ``root``, ``<package>/<package>/...``); relative imports are resolved."""
    tree = ast.parse(path.read_text(), str(path))
    package = list(path.relative_to(root).parts[1:-1])  # ["t2a_x", "core"]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[: len(package) - node.level + 1]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            found.append((node.lineno, module))
            found += [(node.lineno, f"{module}.{alias.name}") for alias in node.names]
    return found


def _top(module: str) -> str:
    return module.split(".", 1)[0]


def _is_ros(module: str) -> bool:
    top = _top(module)
    return top in ROS_ONLY or top.endswith("_msgs") or top.endswith("_srvs")


def _violations(files: list[Path], bad) -> list[str]:
    out = []
    for path in files:
        for line, module in imported_modules(path):
            why = bad(module)
            if why:
                out.append(f"{path.relative_to(SRC)}:{line} imports {module} ({why})")
    return sorted(set(out))


def test_the_scan_sees_the_packages_and_their_cores():
    for package in ("t2a_common", *ABOVE_COMMON):
        assert _package_files(package), f"no sources found for {package} under {SRC}"
    cores = {p.relative_to(SRC).parts[0] for p in _core_files()}
    assert {"t2a_common", *SIDE_BY_SIDE, "t2a_bringup"} <= cores


def test_core_modules_are_ros_free():
    def bad(module: str) -> str:
        if _is_ros(module):
            return "a ROS package: core must run without ROS"
        if module.startswith("t2a_") and ".nodes" in module:
            return "a node module: nodes sit on top of core, not under it"
        if module.startswith("t2a_") and module.split(".")[1:2] in MESSAGE_SIDE:
            return "the message converters: they import the message packages"
        return ""

    assert _violations(_core_files(), bad) == []


@pytest.mark.parametrize("package", SIDE_BY_SIDE)
def test_side_by_side_packages_do_not_import_each_other(package):
    others = set(SIDE_BY_SIDE) - {package}

    def bad(module: str) -> str:
        if _top(module) in others:
            return f"{package} and {_top(module)} stand side by side"
        if _top(module) == "t2a_bringup":
            return "t2a_bringup is above them"
        return ""

    assert _violations(_package_files(package), bad) == []


def test_common_imports_no_package_above_it():
    def bad(module: str) -> str:
        return "t2a_common is the ground layer" if _top(module) in ABOVE_COMMON else ""

    assert _violations(_package_files("t2a_common"), bad) == []


def test_the_scan_catches_what_it_should(tmp_path):
    pkg = tmp_path / "t2a_demo" / "t2a_demo" / "core"
    pkg.mkdir(parents=True)
    source = pkg / "thing.py"
    source.write_text(
        "import rclpy\nfrom std_msgs.msg import Header\n\n\ndef f():\n"
        "    from t2a_control.nodes import residual_controller\n    from . import other\n"
    )
    modules = [m for _, m in imported_modules(source, tmp_path)]
    assert "rclpy" in modules and "std_msgs.msg" in modules
    assert "t2a_control.nodes" in modules and "t2a_demo.core.other" in modules


def test_loading_the_stack_config_classes_imports_no_rclpy():
    code = (
        "import sys\n"
        "from t2a_bringup.core import stack\n"
        "d = stack.load_description()\n"
        "for p in d.profiles:\n"
        "    classes = [stack.config_class(n) for n in d.resolve(p)]\n"
        "    assert any(classes), p\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] in "
        f"{ROS_ONLY!r} or m.split('.')[0].endswith('_msgs') or '.nodes' in m and "
        "m.startswith('t2a_'))\n"
        "print(loaded)\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]", f"loading the config classes imported {result.stdout}"
