"""``t2a-stack``: start the stack of ``config/stack.yaml`` where there is no launch system.

    t2a-stack sim [--arg NAME:=VALUE ...] [--set NODE.PARAM=VALUE ...] [--only NODE ...]
                  [--print] [--log-dir DIR]

Starts the same nodes with the same parameter files as ``ros2 launch t2a_bringup
<profile>.launch.py`` (both resolve the description through :mod:`t2a_bringup.core.stack`), each
as a child process whose output is prefixed with its name. Every parameter is checked against the
node's config dataclass before anything starts. Ctrl-C / SIGTERM stops all nodes (SIGINT, then
SIGTERM and SIGKILL for stragglers); if one node dies, the others are stopped and t2a-stack exits 1
naming it.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import dataclasses
import multiprocessing
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import IO

from t2a_bringup.core import stack

STOP_GRACE_S = 3.0  # after SIGTERM, before SIGKILL


@dataclasses.dataclass
class Planned:
    """A node ready to start: its spec, parameter file and executable (None: not installed)."""

    spec: stack.NodeSpec
    params_file: Path | None
    executable: str | None

    @property
    def command(self) -> list[str]:
        """The command line (with the bare executable name where it is not installed)."""
        return stack.command_line(
            self.spec, self.params_file, self.executable or self.spec.executable
        )


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="t2a-stack",
        description="Start the Track2Act stack (config/stack.yaml) without ros2 launch.",
        epilog="Profiles and their arguments: t2a-stack PROFILE --print. The same description "
        "drives ros2 launch t2a_bringup sim.launch.py / robot.launch.py.",
    )
    parser.add_argument("profile", help="profile of the stack description: sim or robot")
    add = parser.add_argument
    add("--arg", action="append", default=[], metavar="NAME:=VALUE",
        help="launch argument, e.g. task:=box_push (repeatable)")  # fmt: skip
    add("--set", action="append", default=[], metavar="NODE.PARAM=VALUE",
        help="parameter override, e.g. t2a_sim.sim.width=320 (repeatable)")  # fmt: skip
    add("--only", nargs="+", default=None, metavar="NODE",
        help="start only these nodes of the profile")  # fmt: skip
    add("--print", action="store_true", dest="print_only",
        help="print arguments, command lines and parameter files; start nothing")  # fmt: skip
    add("--log-dir", type=Path, default=None,
        help="write each node's output to DIR/<node>.log and keep the parameter files in "
        "DIR/params (default: a temporary folder, removed at exit)")  # fmt: skip
    add("--description", type=Path, default=None,
        help="stack description file (default: t2a_bringup's config/stack.yaml)")  # fmt: skip
    add("--no-check", action="store_true",
        help="skip checking parameters against the nodes' config dataclasses")  # fmt: skip
    add("--stop-timeout", type=float, default=10.0, metavar="S",
        help="seconds the nodes get to exit after SIGINT (default 10)")  # fmt: skip
    return parser.parse_args(argv)


def parse_arg_overrides(items: list[str]) -> dict[str, str]:
    """``["task:=box_push"]`` -> ``{"task": "box_push"}``."""
    out = {}
    for item in items:
        name, sep, value = item.partition(":=")
        if not sep or not name:
            raise stack.StackError(f"--arg {item!r}: expected NAME:=VALUE, e.g. task:=box_push")
        out[name.strip()] = value
    return out


def _check_in_child(nodes: list[stack.NodeSpec]) -> list[stack.NodeSpec]:
    # The config classes live in the node modules (rclpy, torch, mujoco: ~300 MB); a forked
    # child imports them so this supervisor stays small for the whole run.
    if not any(n.config for n in nodes):
        return nodes
    ctx = multiprocessing.get_context("fork")
    with concurrent.futures.ProcessPoolExecutor(1, mp_context=ctx) as pool:
        return pool.submit(stack.check_nodes, nodes).result()


def plan(
    profile: str,
    args: dict[str, str],
    sets: list[str],
    params_dir: Path,
    only: list[str] | None = None,
    description: Path | None = None,
    check: bool = True,
) -> list[Planned]:
    """Resolve, check and write the parameter files of ``profile``; find each executable."""
    desc = stack.load_description(description)
    nodes = desc.resolve(profile, args, sets)
    if only:
        keys = [n.key for n in nodes]
        unknown = [k for k in only if k not in keys]
        if unknown:
            raise stack.StackError(f"--only {unknown}: not nodes of this run; nodes: {keys}")
        nodes = [n for n in nodes if n.key in only]
    if check:
        nodes = _check_in_child(nodes)
    files = stack.write_params_files(nodes, params_dir)
    return [Planned(n, files[n.key], stack.find_executable(n.package, n.executable)) for n in nodes]


def _missing_message(spec: stack.NodeSpec) -> str:
    prefixes = os.environ.get("AMENT_PREFIX_PATH", "") or "(AMENT_PREFIX_PATH is empty)"
    return (
        f"node {spec.key!r}: executable {spec.executable!r} of package {spec.package!r} is not "
        f"installed (looked for lib/{spec.package}/{spec.executable} under {prefixes} and on "
        f"PATH). Install {spec.package} and source its setup.bash"
        + (" (it exists only on the robot computer)" if spec.external else "")
        + ", or start the other nodes with --only."
    )


def print_plan(desc: stack.StackDescription, profile: str, planned: list[Planned], args) -> None:
    """The resolved arguments, command lines and parameter files, for --print."""
    print(f"# profile {profile}: {desc.profile_doc(profile)}")
    for a in desc.arguments(profile):
        value = a.parse(args[a.name]) if a.name in args else a.default
        print(f"#   {a.name}:={stack.format_value(value)}    {a.doc}")
    for p in planned:
        notes = [
            " (optional)" if p.spec.optional else "",
            "" if p.executable else " (not installed)",
        ]
        print(f"\n## {p.spec.key}{''.join(notes)}")
        print(" ".join(p.command))
        if p.params_file:
            print(p.params_file.read_text(), end="")


class _Child:
    def __init__(self, spec: stack.NodeSpec, command: list[str], log: IO[bytes] | None):
        self.spec = spec
        self.log = log
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen(
            command,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,  # Ctrl-C reaches t2a-stack only; it stops the nodes in order
            preexec_fn=_die_with_parent,
        )
        self.thread: threading.Thread | None = None

    def pump(self, prefix: bytes, lock: threading.Lock) -> None:
        assert self.proc.stdout is not None
        for line in iter(self.proc.stdout.readline, b""):
            with lock:
                sys.stdout.buffer.write(prefix + line)
                sys.stdout.buffer.flush()
            if self.log:
                self.log.write(line)
                self.log.flush()

    def signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.proc.pid, sig)  # the node and anything it started


def _die_with_parent() -> None:
    """In the child before exec: SIGTERM it if t2a-stack dies (Linux), so no node is orphaned."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _say(text: str) -> None:
    print(f"[t2a-stack] {text}", file=sys.stderr, flush=True)


def run(planned: list[Planned], log_dir: Path | None, stop_timeout: float) -> int:
    """Start every planned node, relay their output, stop them all on a signal or a death."""
    stop = threading.Event()
    previous = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGINT, signal.SIGTERM)}
    width = max(len(p.spec.key) for p in planned)
    lock = threading.Lock()
    children: list[_Child] = []
    died: _Child | None = None
    try:
        for p in planned:
            log = open(log_dir / f"{p.spec.key}.log", "wb") if log_dir else None
            children.append(_Child(p.spec, p.command, log))
            _say(f"started {p.spec.key} (pid {children[-1].proc.pid}): {' '.join(p.command)}")
        for c in children:  # readers start after every fork (preexec_fn and threads do not mix)
            prefix = f"[{c.spec.key:<{width}}] ".encode()
            c.thread = threading.Thread(target=c.pump, args=(prefix, lock), daemon=True)
            c.thread.start()
        while not stop.wait(0.2):
            died = next((c for c in children if c.proc.poll() is not None), None)
            if died is not None:
                break
    finally:
        _stop_all(children, stop_timeout)
        for s, handler in previous.items():
            signal.signal(s, handler)
        for c in children:
            if c.thread:
                c.thread.join(timeout=2.0)
            if c.log:
                c.log.close()
    if died is not None:
        _say(
            f"node {died.spec.key!r} ({died.spec.package}/{died.spec.executable}) exited with code "
            f"{died.proc.returncode}; stopped the other nodes"
        )
        return 1
    _say("all nodes stopped")
    return 0


def _stop_all(children: list[_Child], timeout: float) -> None:
    for sig, wait_s in ((signal.SIGINT, timeout), (signal.SIGTERM, STOP_GRACE_S),
                        (signal.SIGKILL, STOP_GRACE_S)):  # fmt: skip
        alive = [c for c in children if c.proc.poll() is None]
        for c in alive:
            c.signal(sig)
        deadline = time.monotonic() + wait_s
        for c in alive:
            with contextlib.suppress(subprocess.TimeoutExpired):
                c.proc.wait(max(0.0, deadline - time.monotonic()))
        if sig != signal.SIGINT:
            for c in alive:
                if c.proc.returncode is not None:
                    _say(f"{c.spec.key} needed {signal.Signals(sig).name} to stop")
    for c in children:  # grandchildren left in a node's process group
        c.signal(signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    opts = parse_args(argv)
    with contextlib.ExitStack() as cleanup:
        if opts.log_dir:
            params_dir = opts.log_dir / "params"
            opts.log_dir.mkdir(parents=True, exist_ok=True)
        else:
            params_dir = Path(
                cleanup.enter_context(tempfile.TemporaryDirectory(prefix="t2a-stack-"))
            )
        try:
            desc = stack.load_description(opts.description)
            args = parse_arg_overrides(opts.arg)
            planned = plan(opts.profile, args, opts.set, params_dir, opts.only,
                           opts.description, check=not opts.no_check)  # fmt: skip
        except stack.StackError as exc:
            _say(f"error: {exc}")
            return 2
        if opts.print_only:
            print_plan(desc, opts.profile, planned, args)
            return 0
        missing = [p for p in planned if p.executable is None]
        for p in missing:
            if p.spec.optional:
                _say(f"skipping optional {_missing_message(p.spec)}")
            else:
                _say(f"error: cannot start {_missing_message(p.spec)}")
        if any(not p.spec.optional for p in missing):
            return 2
        planned = [p for p in planned if p.executable is not None]
        if not planned:
            _say("error: no node to start")
            return 2
        return run(planned, opts.log_dir, opts.stop_timeout)


if __name__ == "__main__":
    raise SystemExit(main())
