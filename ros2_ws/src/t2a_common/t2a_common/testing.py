"""Helpers for ROS-tier tests: an isolated rclpy context, spinning until a condition, and child
processes that run real nodes (so tests cross a process boundary over real DDS).

The ROS domain comes from the environment (the workspace conftest gives every pytest process its
own ROS_DOMAIN_ID); child processes inherit it.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator

import rclpy
from rclpy.context import Context
from rclpy.executors import SingleThreadedExecutor
from rclpy.node import Node


@contextlib.contextmanager
def ros_context() -> Iterator[Context]:
    """A fresh rclpy context for one test, shut down afterwards."""
    ctx = Context()
    rclpy.init(context=ctx)
    try:
        yield ctx
    finally:
        if ctx.ok():
            rclpy.shutdown(context=ctx)


def spin_until(
    nodes: Node | list[Node], predicate: Callable[[], bool], timeout: float = 10.0
) -> bool:
    """Spin ``nodes`` until ``predicate()`` holds or ``timeout`` s pass; returns the result."""
    nodes = nodes if isinstance(nodes, list) else [nodes]
    executor = SingleThreadedExecutor(context=nodes[0].context)
    for n in nodes:
        executor.add_node(n)
    deadline = time.monotonic() + timeout
    try:
        while not predicate():
            if time.monotonic() > deadline:
                return False
            executor.spin_once(timeout_sec=0.02)
        return True
    finally:
        for n in nodes:
            executor.remove_node(n)
        executor.shutdown()


class ChildProcess:
    """A python child process (e.g. a node's ``main``) whose output is kept for failure messages."""

    def __init__(self, args: list[str], env: dict[str, str] | None = None):
        self.args = args
        full_env = dict(os.environ)
        full_env.update(env or {})
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self._output: str | None = None  # kept by the first stop(), so a second one is safe
        self.proc = subprocess.Popen(
            [sys.executable, *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=full_env,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 10.0) -> str:
        """SIGINT (like Ctrl-C), then kill if needed; returns everything the child printed
        (also on later calls, e.g. a failure message and then the ``with`` block's exit)."""
        if self._output is not None:
            return self._output
        if self.alive():
            self.proc.send_signal(2)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        out, _ = self.proc.communicate()
        self._output = out or ""
        return self._output

    def __enter__(self) -> ChildProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
