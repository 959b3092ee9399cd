"""Every package's core/ stays ROS-free: no rclpy, no message packages, not even transitively."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "ros2_ws" / "src"
CORE_FILES = sorted(SRC.glob("*/*/core/**/*.py"))
FORBIDDEN_HINT = "rclpy or a *_msgs / *_srvs / *_interfaces package"


def _forbidden(module: str) -> bool:
    top = module.split(".")[0]
    return top in ("rclpy", "rosidl_runtime_py", "launch", "launch_ros") or top.endswith(
        ("_msgs", "_srvs", "_interfaces")
    )


def _module_name(path: Path) -> str:
    rel = path.relative_to(path.parents[len(path.relative_to(SRC).parts) - 2])
    return ".".join(rel.with_suffix("").parts).removesuffix(".__init__")


def test_core_modules_exist():
    assert CORE_FILES, f"no core modules found under {SRC}"


def test_no_direct_ros_imports_in_core():
    offenders = []
    for path in CORE_FILES:
        tree = ast.parse(path.read_text(), filename=str(path))
        for node in ast.walk(tree):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names = [node.module]
            offenders += [
                f"{path.relative_to(ROOT)}:{node.lineno} imports {n}"
                for n in names
                if _forbidden(n)
            ]
    assert not offenders, f"core modules must not import {FORBIDDEN_HINT}:\n" + "\n".join(offenders)


BLOCKER = """
import importlib, importlib.abc, sys
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        top = name.split('.')[0]
        if top in ('rclpy', 'rosidl_runtime_py') or top.endswith(('_msgs', '_srvs', '_interfaces')):
            raise ImportError('core imported ' + name + ' (transitively)')
        return None
sys.meta_path.insert(0, Block())
failed = []
for mod in sys.argv[1:]:
    try:
        importlib.import_module(mod)
    except ImportError as exc:
        failed.append(f'{mod}: {exc}')
print('\\n'.join(failed))
sys.exit(1 if failed else 0)
"""


def test_core_modules_import_without_ros():
    """Import every core module with rclpy and message packages blocked (catches transitive use)."""
    modules = [_module_name(p) for p in CORE_FILES]
    env = dict(os.environ)
    result = subprocess.run(
        [sys.executable, "-c", BLOCKER, *modules], capture_output=True, text=True, env=env
    )
    assert result.returncode == 0, (
        f"core modules pulled in {FORBIDDEN_HINT}:\n{result.stdout}{result.stderr}"
    )
