"""ArmDriver straight over the Spot SDK (bosdyn-client), for robots without spot_ros2.

Construction connects: ``create_standard_sdk``, ``robot.authenticate``, time sync (the SDK's
``TimeSyncThread``), the directory-resolved clients, a check that the robot has an arm, and the
estop (``estop="external"``: someone else, e.g. the tablet, must hold a released estop, and
``power_on`` says so when nobody does; ``estop="register"``: this driver replaces the robot's
estop configuration with its own endpoint and keeps it released with an ``EstopKeepAlive``). A
background thread polls the robot state for :meth:`BosdynArmDriver.joint_positions`.

Joint targets are streamed as short ``ArmJointMoveCommand`` trajectories through the robot
command service: each one starts ``lead_s`` ahead, where the previous segment will have the arm
by then, and reaches the new target after one control period, or later if ``MAX_JOINT_SPEED``
needs more time. Reference times are in this machine's clock and the SDK converts them to the
robot's clock with the time-sync estimate. Each segment replaces the previous one on the robot,
so a late tick leaves the arm holding the last target instead of running on.

Every command returns ``(success, message)`` and never raises: a missing lease, a lease taken
by another client, motors off, an estop or no time sync all come back as ``(False, why)``. Only
construction raises (:class:`BosdynDriverError`), when the robot cannot be reached, refuses
the login, has no arm or refuses the estop. :meth:`BosdynArmDriver.close` stops the threads and
returns the lease; an estop held by this driver is set to settle-then-cut first, because with
nobody holding it the robot would cut power where it stands.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import bosdyn.client
import numpy as np
from bosdyn.api import estop_pb2, lease_pb2, robot_state_pb2
from bosdyn.client.auth import InvalidLoginError
from bosdyn.client.estop import EstopClient, EstopEndpoint, EstopKeepAlive, MotorsOnError
from bosdyn.client.exceptions import Error as SdkError
from bosdyn.client.exceptions import LeaseUseError, ResponseError, RpcError, UnauthenticatedError
from bosdyn.client.lease import Error as LeaseWalletError
from bosdyn.client.lease import (
    LeaseClient,
    LeaseKeepAlive,
    LeaseNotOwnedByWallet,
    LeaseState,
    NoSuchLease,
    ResourceAlreadyClaimedError,
)
from bosdyn.client.power import EstoppedError
from bosdyn.client.robot_command import (
    CommandFailedError,
    CommandTimedOutError,
    NoTimeSyncError,
    NotPoweredOnError,
    RobotCommandBuilder,
    RobotCommandClient,
    block_until_arm_arrives,
    blocking_stand,
)
from bosdyn.client.robot_state import RobotStateClient
from bosdyn.client.time_sync import TimeSyncError
from bosdyn.util import seconds_to_timestamp

from t2a_common.core.config import check, param
from t2a_common.core.spot_arm import ARM_JOINT_NAMES, LOWER, MAX_JOINT_SPEED, UPPER, gripper_opening

ROBOT_JOINT_NAME = {ours: "arm0." + ours.removeprefix("arm_") for ours in ARM_JOINT_NAMES}
"""Our joint names -> the robot state's (``arm_sh0`` -> ``arm0.sh0``)."""
ROBOT_GRIPPER_JOINT = "arm0.f1x"
ESTOP_MODES = ("external", "register")
FEEDBACK_HZ = 10.0  # how often the blocking start-up calls poll the robot for progress
_log = logging.getLogger(__name__)


class BosdynDriverError(RuntimeError):
    """The driver could not be constructed: robot unreachable, login refused, no arm, estop."""


class _Refused(Exception):
    """A command the driver refuses before asking the robot; the message says why."""


@dataclasses.dataclass(frozen=True)
class BosdynDriverConfig:
    """Connection and streaming parameters of :class:`BosdynArmDriver`."""

    hostname: str = param("", "robot address (from SPOT_IP with from_env)")
    port: int = param(443, "robot's secure gRPC port (SPOT_PORT)")
    cert_path: str = param("", "robot CA certificate (glob); empty = the SDK's (SPOT_CERTIFICATE)")
    username: str = param("", "robot user (BOSDYN_CLIENT_USERNAME)")
    password: str = dataclasses.field(
        default="", repr=False, metadata={"doc": "robot password (BOSDYN_CLIENT_PASSWORD)"}
    )
    client_name: str = param("t2a_bosdyn_driver", "client name the robot shows as lease owner")
    estop: str = param("external", "external: another client holds the estop | register: hold one")
    estop_timeout_s: float = param(9.0, "estop endpoint timeout when registering one (s)")
    take_lease: bool = param(False, "claim() takes the lease when another client holds it")
    control_period_s: float = param(0.2, "a streamed joint target is reached after this (s)")
    lead_s: float = param(0.05, "a streamed segment starts this far ahead of now (s)")
    max_joint_accel: float = param(0.0, "joint acceleration cap sent to the robot; 0 = its default")
    state_period_s: float = param(0.02, "robot state polling period (s)")
    rpc_timeout_s: float = param(2.0, "timeout of a single call to the robot (s)")
    time_sync_timeout_s: float = param(5.0, "how long construction waits for time sync (s)")
    power_timeout_s: float = param(20.0, "how long power_on waits for the motors (s)")
    motion_timeout_s: float = param(15.0, "how long stand/unstow/stow wait to finish (s)")
    wait_for_motion: bool = param(True, "stand/unstow/stow return once the robot got there")

    def __post_init__(self) -> None:
        check(bool(self.hostname), "hostname is empty: pass the robot's address or set SPOT_IP")
        check(bool(self.username), "username is empty: pass it or set BOSDYN_CLIENT_USERNAME")
        check(0 < self.port < 65536, f"port must be 1..65535, got {self.port}")
        check(self.estop in ESTOP_MODES, f"estop must be one of {ESTOP_MODES}, got {self.estop!r}")
        for name in (
            "estop_timeout_s",
            "control_period_s",
            "state_period_s",
            "rpc_timeout_s",
            "time_sync_timeout_s",
            "power_timeout_s",
            "motion_timeout_s",
        ):
            value = getattr(self, name)
            check(math.isfinite(value) and value > 0, f"{name} must be > 0 s, got {value!r}")
        lead, accel = self.lead_s, self.max_joint_accel
        check(0 <= lead < self.control_period_s, f"lead_s must be in [0, period), got {lead!r}")
        check(accel >= 0, f"max_joint_accel must be >= 0 rad/s^2, got {accel!r}")

    @classmethod
    def from_env(cls, **overrides: Any) -> BosdynDriverConfig:
        """Config from the spot_ros2 environment variables; keyword arguments take precedence."""
        env = {
            "hostname": os.environ.get("SPOT_IP", ""),
            "port": int(os.environ["SPOT_PORT"]) if os.environ.get("SPOT_PORT") else 0,
            "cert_path": os.environ.get("SPOT_CERTIFICATE", ""),
            "username": os.environ.get("BOSDYN_CLIENT_USERNAME", ""),
            "password": os.environ.get("BOSDYN_CLIENT_PASSWORD", ""),
        }
        return cls(**{**{k: v for k, v in env.items() if v}, **overrides})


@dataclasses.dataclass(frozen=True)
class _ArmState:
    q: np.ndarray  # (6,) rad, ARM_JOINT_NAMES order
    opening: float  # gripper, 0 closed .. 1 open
    stamp_s: float  # acquisition time in this machine's clock (s since the epoch)


@dataclasses.dataclass(frozen=True)
class _Segment:
    """The last streamed trajectory segment, in this machine's clock."""

    t0: float  # s
    q0: np.ndarray  # (6,) rad at t0
    q1: np.ndarray  # (6,) rad at t0 + duration, held after
    duration: float  # s

    def at(self, t: float) -> np.ndarray:
        alpha = min(max((t - self.t0) / self.duration, 0.0), 1.0)
        return self.q0 + alpha * (self.q1 - self.q0)


class BosdynArmDriver:
    """The :class:`t2a_control.core.driver.ArmDriver` protocol on a Spot, through bosdyn-client.

    It is also a :class:`t2a_control.core.driver.LiveArmDriver`, as the control node needs:
    :meth:`has_state`, :meth:`call_async` and ``received_s``, the time the last robot state
    arrived in ``clock`` seconds (``time.monotonic`` unless given; the control node passes its
    ROS clock so its watchdog compares times of one clock). Trajectory reference times do not
    use ``clock``: they are this machine's wall time, which the SDK's time sync converts to the
    robot's. Use as a context manager or call :meth:`close`.
    """

    def __init__(
        self, config: BosdynDriverConfig, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.cfg = config
        self._clock = clock
        self.received_s = float("nan")
        self._state: _ArmState | None = None
        self._state_error = "not polled yet"
        self._segment: _Segment | None = None
        self._segment_lock = threading.Lock()
        self._closed = False
        self._stop = threading.Event()
        self._poller: threading.Thread | None = None
        self._executor: ThreadPoolExecutor | None = None
        self._lease_keepalive: LeaseKeepAlive | None = None
        self._estop_keepalive: EstopKeepAlive | None = None
        self._sdk: Any = None
        self.robot: Any = None  # bosdyn.client.robot.Robot once connected
        try:
            self._connect()
        except BaseException:
            self.close()
            raise

    # ------------------------------------------------------------------ connection
    def _connect(self) -> None:
        cfg = self.cfg
        where = f"{cfg.hostname}:{cfg.port}"
        self._sdk = bosdyn.client.create_standard_sdk(
            cfg.client_name, cert_resource_glob=cfg.cert_path or None
        )
        robot = self.robot = self._sdk.create_robot(cfg.hostname)
        robot.update_secure_channel_port(cfg.port)
        try:
            robot.authenticate(cfg.username, cfg.password, timeout=cfg.rpc_timeout_s)
        except InvalidLoginError as exc:
            raise BosdynDriverError(
                f"robot at {where} refused the login of {cfg.username!r}: "
                "check BOSDYN_CLIENT_USERNAME/PASSWORD"
            ) from exc
        except RpcError as exc:
            raise BosdynDriverError(f"cannot reach the robot at {where}: {exc}") from exc
        try:
            robot.time_sync.wait_for_sync(timeout_sec=cfg.time_sync_timeout_s)
        except (TimeSyncError, RpcError) as exc:
            _log.warning(
                "no time sync with %s after %.1f s (%s): motion commands will be refused",
                where,
                cfg.time_sync_timeout_s,
                type(exc).__name__,
            )
        try:
            self._lease_client: LeaseClient = robot.ensure_client(LeaseClient.default_service_name)
            self._state_client: RobotStateClient = robot.ensure_client(
                RobotStateClient.default_service_name
            )
            self._command_client: RobotCommandClient = robot.ensure_client(
                RobotCommandClient.default_service_name
            )
            self._estop_client: EstopClient = robot.ensure_client(EstopClient.default_service_name)
            if not robot.has_arm(timeout=cfg.rpc_timeout_s):
                raise BosdynDriverError(f"the robot at {where} has no arm")
            if cfg.estop == "register":
                self._hold_estop()
            elif robot.is_estopped(timeout=cfg.rpc_timeout_s):
                _log.warning(
                    "robot at %s is estopped: power_on will fail until an estop client "
                    "(tablet, or estop='register') releases it",
                    where,
                )
        except SdkError as exc:
            raise BosdynDriverError(f"robot at {where}: {_reason(exc)}") from exc
        self._refresh_state()
        self._poller = threading.Thread(target=self._poll, name="bosdyn-state", daemon=True)
        self._poller.start()

    def _hold_estop(self) -> None:
        endpoint = EstopEndpoint(self._estop_client, self.cfg.client_name, self.cfg.estop_timeout_s)
        try:
            endpoint.force_simple_setup()  # this endpoint becomes the robot's only estop
        except MotorsOnError as exc:
            raise BosdynDriverError(
                "cannot take over the estop while the motors are on: power "
                "off first, or use estop='external'"
            ) from exc
        self._estop_keepalive = EstopKeepAlive(endpoint)  # checks in released from now on
        level = self._estop_client.get_status(timeout=self.cfg.rpc_timeout_s).stop_level
        if level != estop_pb2.ESTOP_LEVEL_NONE:
            name = estop_pb2.EstopStopLevel.Name(level)
            raise BosdynDriverError(f"registered an estop endpoint but the robot stays at {name}")

    def close(self) -> None:
        """Stop polling, release an estop held here (settle then cut), return the lease."""
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        if self._poller is not None:
            self._poller.join(timeout=5.0)
        if self._executor is not None:
            self._executor.shutdown(wait=True)
        if self._estop_keepalive is not None:
            _quietly("estop settle-then-cut", self._estop_keepalive.settle_then_cut)
        if self._lease_keepalive is not None:
            _quietly("lease return", self._lease_keepalive.shutdown)
            self._lease_keepalive = None
        if self._estop_keepalive is not None:
            _quietly("estop keep-alive stop", self._estop_keepalive.shutdown)
            _quietly("estop deregistration", self._estop_keepalive.endpoint.deregister)
            self._estop_keepalive = None
        if self._sdk is not None:
            self._sdk.clear_robots()  # stops the SDK's time-sync and token threads
            self._sdk = None
        if self.robot is not None:
            self.robot.shutdown()  # closes its gRPC channels

    def __enter__(self) -> BosdynArmDriver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ state
    def _poll(self) -> None:
        while not self._stop.wait(self.cfg.state_period_s):
            self._refresh_state()

    def _refresh_state(self) -> bool:
        try:
            state = self._state_client.get_robot_state(timeout=self.cfg.rpc_timeout_s)
            parsed = self._parse_state(state)
        except (SdkError, ValueError) as exc:
            if self._state_error != str(exc):
                _log.error("robot state: %s", exc)
            self._state_error = str(exc)
            return False
        self._state, self._state_error = parsed, ""
        self.received_s = self._clock()
        return True

    def _parse_state(self, state: robot_state_pb2.RobotState) -> _ArmState:
        kin = state.kinematic_state
        positions = {j.name: j.position.value for j in kin.joint_states if j.HasField("position")}
        wanted = (*ROBOT_JOINT_NAME.values(), ROBOT_GRIPPER_JOINT)
        missing = [name for name in wanted if name not in positions]
        if missing:
            raise ValueError(f"robot state lacks joints {missing}")
        q = np.array([positions[ROBOT_JOINT_NAME[name]] for name in ARM_JOINT_NAMES])
        stamp = time.time()
        if self.robot.time_sync.has_established_time_sync:
            converter = self.robot.time_sync.get_robot_time_converter()
            stamp = converter.local_seconds_from_robot_timestamp(kin.acquisition_timestamp)
        return _ArmState(q, gripper_opening(positions[ROBOT_GRIPPER_JOINT]), stamp)

    def has_state(self) -> bool:
        """Whether a robot state has been received."""
        return self._state is not None

    def joint_positions(self) -> tuple[np.ndarray, float, float]:
        """(q (6,) rad, gripper opening 0..1, acquisition stamp in local epoch s).

        Raises ``RuntimeError`` only when no robot state was ever received (see :meth:`has_state`).
        """
        state = self._state
        if state is None:
            self._refresh_state()
            state = self._state
        if state is None:
            raise RuntimeError(f"no robot state from {self.cfg.hostname}: {self._state_error}")
        return state.q.copy(), state.opening, state.stamp_s

    # ------------------------------------------------------------------ commands
    def _run(self, what: str, action: Callable[[], str]) -> tuple[bool, str]:
        if self._closed:
            return False, f"{what}: the driver is closed"
        try:
            return True, action()
        except (_Refused, SdkError, LeaseWalletError) as exc:
            return False, f"{what}: {_reason(exc)}"
        except Exception as exc:  # never raise into the control loop; keep the traceback
            _log.exception("%s failed unexpectedly", what)
            return False, f"{what}: {type(exc).__name__}: {exc}"

    def _owns_lease(self) -> bool:
        try:
            status = self.robot.lease_wallet.get_lease_state().lease_status
        except NoSuchLease:
            return False
        return status == LeaseState.Status.SELF_OWNER

    def _need_lease(self) -> None:
        if not self._owns_lease():
            try:
                state = self.robot.lease_wallet.get_lease_state()
            except NoSuchLease:
                raise _Refused("this driver holds no lease: call claim() first") from None
            owner = (state.lease_owner.client_name if state.lease_owner else "") or "another client"
            raise _Refused(f"the lease is held by {owner}: claim() again (take_lease) to take it")

    def _need_time_sync(self) -> None:
        if not self.robot.time_sync.has_established_time_sync:
            raise _Refused("no time sync with the robot (is its time-sync service running?)")

    def _command(self, command: Any) -> int:
        """Send a RobotCommand after the checks every motion needs; returns the command id."""
        self._need_lease()
        self._need_time_sync()
        return self._command_client.robot_command(command, timeout=self.cfg.rpc_timeout_s)

    def _reset_stream(self) -> None:
        with self._segment_lock:
            self._segment = None

    def claim(self) -> tuple[bool, str]:
        """Acquire the body lease (take it when ``take_lease``) and keep it alive."""

        def claim() -> str:
            if self._lease_keepalive is not None and self._owns_lease():
                return "lease already held"
            if self._lease_keepalive is not None:
                self._lease_keepalive.shutdown()  # it was retaining a lease we lost
            self._lease_keepalive = None
            try:
                self._lease_client.acquire(timeout=self.cfg.rpc_timeout_s)
                how = "acquired"
            except ResourceAlreadyClaimedError as exc:
                if not self.cfg.take_lease:
                    raise
                self._lease_client.take(timeout=self.cfg.rpc_timeout_s)
                how = f"taken from {exc.response.lease_owner.client_name or 'another client'}"
            self._lease_keepalive = LeaseKeepAlive(
                self._lease_client,
                must_acquire=True,
                return_at_exit=True,
                warnings=False,
                on_failure_callback=lambda exc: _log.warning("lease keep-alive: %s", _reason(exc)),
            )
            self._reset_stream()
            return f"lease {how}"

        return self._run("claim", claim)

    def power_on(self) -> tuple[bool, str]:
        """Power the motors on (blocks until on, or ``power_timeout_s``)."""

        def power_on() -> str:
            self._need_lease()
            cfg = self.cfg
            self.robot.power_on(
                timeout_sec=cfg.power_timeout_s,
                update_frequency=FEEDBACK_HZ,
                timeout=cfg.rpc_timeout_s,
            )
            self._reset_stream()
            return "powered on"

        return self._run("power_on", power_on)

    def stand(self) -> tuple[bool, str]:
        """Stand up (blocks until standing when ``wait_for_motion``)."""

        def stand() -> str:
            if not self.cfg.wait_for_motion:
                self._command(RobotCommandBuilder.synchro_stand_command())
                return "standing up"
            self._need_lease()
            self._need_time_sync()
            blocking_stand(
                self._command_client,
                timeout_sec=self.cfg.motion_timeout_s,
                update_frequency=FEEDBACK_HZ,
            )
            return "standing"

        return self._run("stand", stand)

    def _arm_move(self, command: Any, pose: str) -> str:
        command_id = self._command(command)
        self._reset_stream()
        if not self.cfg.wait_for_motion:
            return f"moving to {pose}"
        if not block_until_arm_arrives(
            self._command_client, command_id, timeout_sec=self.cfg.motion_timeout_s
        ):
            raise _Refused(f"the arm did not reach {pose} within {self.cfg.motion_timeout_s} s")
        return f"arm at {pose}"

    def unstow(self) -> tuple[bool, str]:
        """Move the arm to the ready pose (``arm_ready_command``)."""
        return self._run(
            "unstow",
            lambda: self._arm_move(RobotCommandBuilder.arm_ready_command(), "the ready pose"),
        )

    def stow(self) -> tuple[bool, str]:
        """Close the gripper and fold the arm onto the body (``arm_stow_command``)."""
        command = RobotCommandBuilder.claw_gripper_close_command(
            build_on_command=RobotCommandBuilder.arm_stow_command()
        )
        return self._run("stow", lambda: self._arm_move(command, "the stowed pose"))

    def _gripper(self, command: Any, what: str) -> str:
        self._command(command)
        return what

    def open_gripper(self) -> tuple[bool, str]:
        """Start opening the claw fully."""
        command = RobotCommandBuilder.claw_gripper_open_command()
        return self._run("open_gripper", lambda: self._gripper(command, "opening"))

    def close_gripper(self) -> tuple[bool, str]:
        """Start closing the claw (it stops on what is between the fingers)."""
        command = RobotCommandBuilder.claw_gripper_close_command()
        return self._run("close_gripper", lambda: self._gripper(command, "closing"))

    def stop(self) -> tuple[bool, str]:
        """Stop all motion with the robot's stop command; streaming restarts from where it is."""

        def stop() -> str:
            self._reset_stream()
            self._need_lease()  # not time sync: a stop carries no timestamps to convert
            self._command_client.robot_command(
                RobotCommandBuilder.stop_command(), timeout=self.cfg.rpc_timeout_s
            )
            return "stopped"

        return self._run("stop", stop)

    def release(self) -> tuple[bool, str]:
        """Return the lease (the tablet or spot_ros2 can claim it); claim() takes it again."""

        def release() -> str:
            self._reset_stream()
            if self._lease_keepalive is None:
                return "no lease held"
            keepalive, self._lease_keepalive = self._lease_keepalive, None
            keepalive.shutdown()  # return_at_exit: gives the lease back
            return "lease returned"

        return self._run("release", release)

    def estop(self) -> tuple[bool, str]:
        """Estop: with an estop endpoint held here (estop='register') settle then cut power;
        otherwise stop all motion and cut motor power through the lease (the holder of the
        external estop, e.g. the tablet, can still cut it too)."""

        def estop() -> str:
            self._reset_stream()
            if self._estop_keepalive is not None:
                self._estop_keepalive.settle_then_cut()
                return "estop: settle then cut"
            self._need_lease()
            self._command_client.robot_command(
                RobotCommandBuilder.stop_command(), timeout=self.cfg.rpc_timeout_s
            )
            self.robot.power_off(cut_immediately=True, timeout_sec=self.cfg.power_timeout_s)
            return "stopped and cut motor power (no estop endpoint held here)"

        return self._run("estop", estop)

    def send_joint_targets(self, q: np.ndarray) -> tuple[bool, str]:
        """Stream an arm joint target (6,) rad as the next trajectory segment.

        The protocol's callers ignore the result; it is ``(False, why)`` for a target outside
        the joint limits or anything the robot refuses, and nothing is sent then.
        """
        q = np.asarray(q, dtype=float)
        if q.shape != (6,) or not np.isfinite(q).all():
            return False, f"joint target must be 6 finite angles (rad), got {q!r}"
        if np.any(q < LOWER) or np.any(q > UPPER):
            return False, f"joint target {np.round(q, 4).tolist()} is outside the joint limits"

        def send() -> str:
            self._need_lease()
            self._need_time_sync()
            t0 = time.time() + self.cfg.lead_s
            q0 = self._stream_start(t0)
            # One control period, longer where a joint would exceed its speed limit.
            slowest = float(np.max(np.abs(q - q0) / MAX_JOINT_SPEED))  # s
            duration = max(self.cfg.control_period_s, slowest)
            command = RobotCommandBuilder.arm_joint_move_helper(
                joint_positions=[q0.tolist(), q.tolist()],
                times=[0.0, duration],
                ref_time=seconds_to_timestamp(t0),  # local clock; the SDK converts it
                max_vel=float(MAX_JOINT_SPEED.max()),
                max_acc=self.cfg.max_joint_accel or None,
            )
            self._command_client.robot_command(command, timeout=self.cfg.rpc_timeout_s)
            with self._segment_lock:
                self._segment = _Segment(t0, q0, q.copy(), duration)
            return f"segment of {duration:.2f} s sent"

        return self._run("send_joint_targets", send)

    def _stream_start(self, t: float) -> np.ndarray:
        """Where the arm is commanded to be at local time ``t``: on the last segment while it
        is recent, else the measured joints (after start-up calls, a stop, or a pause)."""
        with self._segment_lock:
            segment = self._segment
        recent = 2 * self.cfg.control_period_s  # a tick may be late; a pause is not
        if segment is not None and t <= segment.t0 + segment.duration + recent:
            return segment.at(t)
        state = self._state
        if state is None:
            raise _Refused(f"no robot state yet to start from ({self._state_error})")
        return state.q.copy()

    # ------------------------------------------------------------------ spot_ros2-like extras
    def call_async(self, name: str) -> Future:
        """Run a start-up or gripper call (spot_ros2 Trigger names) on a worker thread; a failure
        is logged. Returns the future of ``(success, message)``."""
        methods = {
            "claim": self.claim,
            "power_on": self.power_on,
            "stand": self.stand,
            "arm_unstow": self.unstow,
            "arm_stow": self.stow,
            "stop": self.stop,
            "release": self.release,
            "estop/gentle": self.estop,
            "open_gripper": self.open_gripper,
            "close_gripper": self.close_gripper,
        }
        if name not in methods:
            raise ValueError(f"unknown call {name!r}; expected one of {sorted(methods)}")
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="bosdyn-call")
        future = self._executor.submit(methods[name])

        def log(done: Future) -> None:
            ok, text = done.result()
            if not ok:
                _log.error("%s", text)

        future.add_done_callback(log)
        return future


def _reason(exc: BaseException) -> str:
    """A one-line explanation of an SDK error, saying what to do about it where we can."""
    if isinstance(exc, _Refused):
        return str(exc)
    if isinstance(exc, NoSuchLease):
        return "this driver holds no lease: call claim() first"
    if isinstance(exc, LeaseNotOwnedByWallet):
        return "the lease is held by another client: claim() again (take_lease) to take it"
    if isinstance(exc, ResourceAlreadyClaimedError):
        owner = exc.response.lease_owner.client_name or "another client"
        return f"the lease is held by {owner}: set take_lease to take it from them"
    if isinstance(exc, LeaseUseError):
        result = exc.lease_use_result
        if result.status == lease_pb2.LeaseUseResult.STATUS_OLDER:
            owner = result.owner.client_name or "another client"
            return f"the lease is now held by {owner}: claim() again (take_lease) to take it back"
        status = lease_pb2.LeaseUseResult.Status.Name(result.status)
        return f"the robot refused the lease ({status}): claim() again"
    if isinstance(exc, NotPoweredOnError):
        return "the motors are off: call power_on() first"
    if isinstance(exc, EstoppedError):
        return (
            "the robot is estopped: release the estop (tablet or estop client), or let this "
            "driver hold one with estop='register'"
        )
    if isinstance(exc, (NoTimeSyncError, TimeSyncError)):
        return f"no time sync with the robot ({type(exc).__name__})"
    if isinstance(exc, UnauthenticatedError):
        return "the robot no longer accepts this driver's token: reconnect"
    if isinstance(exc, RpcError):
        return f"the robot did not answer ({type(exc).__name__}: {exc.error_message})"
    if isinstance(exc, (CommandFailedError, CommandTimedOutError)):
        return str(exc)
    if isinstance(exc, ResponseError):
        return f"the robot refused: {type(exc).__name__}: {exc.error_message or exc}"
    return f"{type(exc).__name__}: {exc}"


def _quietly(what: str, action: Callable[[], Any]) -> None:
    """Run a shutdown step; log instead of raising so the remaining steps still run."""
    try:
        action()
    except Exception as exc:  # the robot may already be gone
        _log.warning("%s failed: %s", what, _reason(exc))
