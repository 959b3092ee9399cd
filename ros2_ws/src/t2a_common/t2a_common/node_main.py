"""Entry-point helper shared by every node's ``main()``: init, spin, clean shutdown."""

from __future__ import annotations

import sys
from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException, MultiThreadedExecutor, SingleThreadedExecutor
from rclpy.node import Node


def run_node(make_node: Callable[[], Node], args: list[str] | None = None, threads: int = 1) -> int:
    """Create the node with ``make_node()`` and spin it until Ctrl-C or an external shutdown.

    ``threads > 1`` spins a MultiThreadedExecutor (nodes that keep receiving while a callback
    computes). Returns a process exit code: 0 on a normal stop, 1 if the node failed to start
    (the reason, e.g. an invalid parameter, is logged rather than dumped as a traceback).
    """
    rclpy.init(args=sys.argv if args is None else args)
    node = executor = None
    try:
        try:
            node = make_node()
        except ValueError as exc:
            rclpy.logging.get_logger("t2a").fatal(str(exc))
            return 1
        executor = MultiThreadedExecutor(threads) if threads > 1 else SingleThreadedExecutor()
        executor.add_node(node)
        executor.spin()
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # Let callbacks still running on the executor's threads finish before their node goes:
        # one that fails on a destroyed publisher leaves an exception in its task, which rclpy
        # prints at exit as "The following exception was never retrieved", and a worker thread
        # alive at interpreter exit aborts the process ("terminate called ...").
        if executor is not None:
            executor.shutdown(timeout_sec=5.0)
        if node is not None:
            node.destroy_node()
        if rclpy.ok():
            rclpy.shutdown()
    return 0
