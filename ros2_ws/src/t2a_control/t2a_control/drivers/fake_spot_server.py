"""A fake Spot with arm behind a real gRPC server, for testing the bosdyn-client backend.

:class:`FakeSpotServer` serves, on one TLS port of 127.0.0.1, the subset of Boston Dynamics
services that :class:`t2a_control.drivers.bosdyn_driver.BosdynArmDriver` uses: auth, robot-id,
directory, time-sync, lease, estop, power, robot-state and robot-command, built on bosdyn-api's
generated service definitions. The unmodified bosdyn-client library connects to it as to a robot:
``create_standard_sdk(cert_resource_glob=server.ca_path)`` and
``robot.update_secure_channel_port(server.port)``. The certificates are made per server with the
``openssl`` command line tool (a throw-away CA and a ``*.spot.robot`` leaf, because the SDK
addresses every service by an authority such as ``api.spot.robot``).

:class:`FakeSpot` is the robot behind it: a kinematic arm whose joints track the commanded
trajectory at ``spot_arm.MAX_JOINT_SPEED`` (no dynamics), a claw gripper, a lease, a software
estop, motor power and a robot clock that runs ``clock_skew_s`` ahead of this machine's. It refuses
what a robot refuses (stale or missing lease, motors off, no time sync, estopped) with the real
status codes, records every command it received and exposes its state for asserts. Time is real
(``time.time``); the arm is integrated lazily up to "now" whenever anyone looks at it.
"""

from __future__ import annotations

import collections
import ctypes
import dataclasses
import itertools
import os
import shutil
import subprocess
import tempfile
import threading
import time
from concurrent import futures
from typing import Any

import grpc
import numpy as np
from bosdyn.api import (
    auth_pb2,
    auth_service_pb2,
    auth_service_pb2_grpc,
    basic_command_pb2,
    directory_pb2,
    directory_service_pb2,
    directory_service_pb2_grpc,
    estop_pb2,
    estop_service_pb2,
    estop_service_pb2_grpc,
    header_pb2,
    lease_pb2,
    lease_service_pb2,
    lease_service_pb2_grpc,
    power_pb2,
    power_service_pb2,
    power_service_pb2_grpc,
    robot_command_pb2,
    robot_command_service_pb2,
    robot_command_service_pb2_grpc,
    robot_id_pb2,
    robot_id_service_pb2,
    robot_id_service_pb2_grpc,
    robot_state_pb2,
    robot_state_service_pb2,
    robot_state_service_pb2_grpc,
    time_sync_pb2,
    time_sync_service_pb2,
    time_sync_service_pb2_grpc,
)
from bosdyn.api.arm_command_pb2 import ArmJointMoveCommand, NamedArmPositionsCommand
from bosdyn.api.gripper_command_pb2 import ClawGripperCommand

from t2a_common.core.spot_arm import LOWER, MAX_JOINT_SPEED, READY, STOW, UPPER

ARM_FIELDS = ("sh0", "sh1", "el0", "el1", "wr0", "wr1")
"""``ArmJointPosition`` fields, in the same order as ``spot_arm.ARM_JOINT_NAMES``."""

ROBOT_JOINT_NAMES = (
    "fl.hx", "fl.hy", "fl.kn", "fr.hx", "fr.hy", "fr.kn",
    "hl.hx", "hl.hy", "hl.kn", "hr.hx", "hr.hy", "hr.kn",
    "arm0.sh0", "arm0.sh1", "arm0.hr0", "arm0.el0", "arm0.el1", "arm0.wr0", "arm0.wr1", "arm0.f1x",
)  # fmt: skip
"""Joint names in a real Spot's kinematic state, in its order (``arm0.hr0`` carries no data)."""

GRIPPER_OPEN_F1X = -1.5708  # rad, the claw fully open (0 = closed)
GRIPPER_SPEED = 3.0  # rad/s of arm0.f1x
LEGS_STANDING = (0.0, 0.8, -1.6) * 4  # rad, hx hy kn per leg
LEGS_SITTING = (0.0, 1.2, -2.6) * 4
MAX_TRAJECTORY_POINTS = 10  # what the robot accepts in one ArmJointTrajectory
MIN_TIME_SYNC_SAMPLES = 2
AUTHORITY = "api.spot.robot"
INTEGRATION_STEP_S = 0.005

_OK = header_pb2.CommonError.CODE_OK
_LEVEL_CUT = estop_pb2.ESTOP_LEVEL_CUT
_LEVEL_NONE = estop_pb2.ESTOP_LEVEL_NONE
_FB = basic_command_pb2.RobotCommandFeedbackStatus


def _service_type(module: Any, name: str) -> str:
    return module.DESCRIPTOR.services_by_name[name].full_name


SERVICES: dict[str, str] = {
    "auth": _service_type(auth_service_pb2, "AuthService"),
    "robot-id": _service_type(robot_id_service_pb2, "RobotIdService"),
    "directory": _service_type(directory_service_pb2, "DirectoryService"),
    "time-sync": _service_type(time_sync_service_pb2, "TimeSyncService"),
    "lease": _service_type(lease_service_pb2, "LeaseService"),
    "estop": _service_type(estop_service_pb2, "EstopService"),
    "power": _service_type(power_service_pb2, "PowerService"),
    "robot-state": _service_type(robot_state_service_pb2, "RobotStateService"),
    "robot-command": _service_type(robot_command_service_pb2, "RobotCommandService"),
}
"""Directory listing: service name -> gRPC service type (all under one authority here)."""


def _ts(seconds: float, out: Any) -> None:
    """Write seconds since the epoch into a Timestamp or Duration proto."""
    ns = round(seconds * 1e9)
    out.seconds, out.nanos = divmod(ns, 1_000_000_000)


def _sec(proto: Any) -> float:
    return proto.seconds + proto.nanos * 1e-9


def _lease_newer_root(a: lease_pb2.Lease, b: lease_pb2.Lease) -> int:
    """Compare the root sequence numbers of two leases: -1 older, 0 same root, 1 newer."""
    if not a.sequence or not b.sequence:
        return -1
    return (a.sequence[0] > b.sequence[0]) - (a.sequence[0] < b.sequence[0])


@dataclasses.dataclass
class ReceivedCommand:
    """One RobotCommand as the robot saw it."""

    id: int
    robot_time_s: float  # robot clock at receipt
    kinds: tuple[str, ...]  # "stand", "stop", "arm_ready", "arm_joint_move", "gripper", ...
    command: robot_command_pb2.RobotCommand
    status: str  # RobotCommandResponse status name, or the lease refusal
    message: str = ""


@dataclasses.dataclass
class _Trajectory:
    """Joint-space knots in robot time: the arm's target is their piecewise-linear interpolation."""

    times: np.ndarray  # (K,) robot time s, increasing
    points: np.ndarray  # (K, 6) rad
    max_speed: np.ndarray  # (6,) rad/s

    def sample(self, t: float) -> np.ndarray:
        return np.array([np.interp(t, self.times, self.points[:, j]) for j in range(6)])


@dataclasses.dataclass
class _EstopEndpoint:
    proto: estop_pb2.EstopEndpoint
    registered: bool = False
    level: int = _LEVEL_CUT  # until the first valid check-in
    last_checkin_s: float = -np.inf  # robot time
    challenge: int = 0


class FakeSpot:
    """The robot's state and rules; every method takes the one lock, so it is thread-safe.

    Args:
        username, password: the only login the auth service accepts.
        clock_skew_s: robot clock minus this machine's clock (s); a large value shows that the
            client converted its timestamps.
        q0: initial arm joints (6,) rad; default the stowed pose.
        powered, standing: initial motor power and posture.
        estop: ``"held"``: another operator holds a released estop (motors may run until a client
            replaces the estop configuration); ``"none"``: nobody holds one, so the robot is
            estopped until a client registers an endpoint and releases it.
        time_sync_ready: False makes the time-sync service answer "not ready" forever.
        power_on_s: how long motor power-on takes (the client polls for it).
    """

    def __init__(
        self,
        *,
        username: str = "user",
        password: str = "password",
        clock_skew_s: float = 0.0,
        q0: np.ndarray | None = None,
        powered: bool = False,
        standing: bool = False,
        estop: str = "held",
        time_sync_ready: bool = True,
        power_on_s: float = 0.05,
    ) -> None:
        if estop not in ("held", "none"):
            raise ValueError(f"estop must be 'held' or 'none', got {estop!r}")
        self.username, self.password = username, password
        self.clock_skew_s = float(clock_skew_s)
        self.time_sync_ready = time_sync_ready
        self.power_on_s = float(power_on_s)
        self._lock = threading.RLock()
        self._t = self.now()
        self._q = np.array(STOW if q0 is None else q0, dtype=float)  # (6,) rad
        self._f1x = 0.0  # rad, closed
        self._traj = _Trajectory(np.array([self._t]), self._q[None].copy(), MAX_JOINT_SPEED.copy())
        self._f1x_target = 0.0
        self._powered, self._standing = powered, standing
        self._power_on_at: float | None = None  # robot time the pending power-on completes
        self._tokens: set[str] = set()
        self._token_ids = itertools.count(1)
        self._clocks: dict[str, int] = {}  # time-sync clock id -> samples received
        self._clock_ids = itertools.count(1)
        self._lease = lease_pb2.Lease(resource="body", epoch="fake-epoch", sequence=[0])
        self._lease_owner: lease_pb2.LeaseOwner | None = None
        self.retained = 0  # RetainLease calls with a valid lease
        self._estop_held_externally = estop == "held"
        self._estop_config_id = "config-0"
        self._estop_ids = itertools.count(1)
        self._estop: dict[str, _EstopEndpoint] = {
            "endpoint-0": _EstopEndpoint(
                estop_pb2.EstopEndpoint(role="PDB_rooted", name="operator", unique_id="endpoint-0")
            )
        }
        self._command_ids = itertools.count(1)
        self._arm_command_id = 0  # latest accepted arm / mobility / gripper / full-body command
        self._mobility_command_id = 0
        self._gripper_command_id = 0
        self._full_body_command_id = 0
        self.commands: list[ReceivedCommand] = []  # accepted and refused, in arrival order
        self.calls: collections.Counter[str] = collections.Counter()  # RPC method -> count

    # --- clock and kinematics --------------------------------------------------------------

    def now(self) -> float:
        """Robot clock (s since the epoch)."""
        return time.time() + self.clock_skew_s

    def _advance(self) -> float:
        """Integrate arm, gripper, power and estop up to now; returns now (robot time)."""
        now = self.now()
        if self._power_on_at is not None and now >= self._power_on_at:
            self._powered, self._power_on_at = True, None
        if self._estop_level(now) != _LEVEL_NONE and (self._powered or self._power_on_at):
            self._cut_power()
        while self._t < now:
            dt = min(INTEGRATION_STEP_S, now - self._t)
            self._t += dt
            if not self._powered:
                continue
            step = self._traj.max_speed * dt
            self._q += np.clip(self._traj.sample(self._t) - self._q, -step, step)
            g = GRIPPER_SPEED * dt
            self._f1x += float(np.clip(self._f1x_target - self._f1x, -g, g))
        return now

    def _cut_power(self) -> None:
        self._powered, self._standing, self._power_on_at = False, False, None
        self._hold(self._t)

    def _hold(self, t: float) -> None:
        self._traj = _Trajectory(np.array([t]), self._q[None].copy(), MAX_JOINT_SPEED.copy())
        self._f1x_target = self._f1x

    # --- what tests look at ----------------------------------------------------------------

    @property
    def q(self) -> np.ndarray:
        """Arm joints (6,) rad now."""
        with self._lock:
            self._advance()
            return self._q.copy()

    @property
    def gripper_f1x(self) -> float:
        """Finger joint now (rad; 0 closed, -1.5708 open)."""
        with self._lock:
            self._advance()
            return self._f1x

    @property
    def powered(self) -> bool:
        with self._lock:
            self._advance()
            return self._powered

    @property
    def standing(self) -> bool:
        with self._lock:
            self._advance()
            return self._standing

    @property
    def estopped(self) -> bool:
        with self._lock:
            return self._estop_level(self.now()) != _LEVEL_NONE

    @property
    def lease_owner(self) -> str | None:
        """Client name holding the body lease, None when nobody does."""
        with self._lock:
            return None if self._lease_owner is None else self._lease_owner.client_name

    @property
    def estop_endpoints(self) -> list[estop_pb2.EstopEndpoint]:
        """Endpoints registered by clients (not the simulated external operator)."""
        with self._lock:
            return [e.proto for e in self._estop.values() if e.registered]

    def accepted(self, kind: str) -> list[ReceivedCommand]:
        """Accepted commands that contained ``kind``."""
        with self._lock:
            return [c for c in self.commands if c.status == "STATUS_OK" and kind in c.kinds]

    def take_lease(self, client_name: str = "tablet") -> None:
        """Another client takes the body lease (as the tablet does), revoking the current one."""
        with self._lock:
            self._new_lease(client_name)

    # --- auth, id, directory ---------------------------------------------------------------

    def authorised(self, context: grpc.ServicerContext) -> bool:
        metadata = dict(context.invocation_metadata())
        token = metadata.get("authorization", "").removeprefix("Bearer ")
        with self._lock:
            return token in self._tokens

    def auth(self, req: auth_pb2.GetAuthTokenRequest) -> auth_pb2.GetAuthTokenResponse:
        with self._lock:
            if req.token:
                ok = req.token in self._tokens
                bad = auth_pb2.GetAuthTokenResponse.STATUS_INVALID_TOKEN
            else:
                ok = (req.username, req.password) == (self.username, self.password)
                bad = auth_pb2.GetAuthTokenResponse.STATUS_INVALID_LOGIN
            if not ok:
                return auth_pb2.GetAuthTokenResponse(status=bad)
            token = f"fake-token-{next(self._token_ids)}"
            self._tokens.add(token)
            return auth_pb2.GetAuthTokenResponse(
                status=auth_pb2.GetAuthTokenResponse.STATUS_OK, token=token
            )

    # --- time sync -------------------------------------------------------------------------

    def time_sync(
        self, req: time_sync_pb2.TimeSyncUpdateRequest, rx_s: float
    ) -> time_sync_pb2.TimeSyncUpdateResponse:
        res = time_sync_pb2.TimeSyncUpdateResponse()
        if not self.time_sync_ready:
            res.state.status = time_sync_pb2.TimeSyncState.STATUS_SERVICE_NOT_READY
            return res
        with self._lock:
            clock_id = req.clock_identifier
            if clock_id not in self._clocks:
                clock_id = f"clock-{next(self._clock_ids)}"
                self._clocks[clock_id] = 0
            elif req.HasField("previous_round_trip"):
                self._clocks[clock_id] += 1
            samples = self._clocks[clock_id]
        res.clock_identifier = clock_id
        _ts(rx_s, res.state.measurement_time)
        if samples < MIN_TIME_SYNC_SAMPLES:
            res.state.status = time_sync_pb2.TimeSyncState.STATUS_MORE_SAMPLES_NEEDED
            return res
        # NTP-style estimate from the client's previous round trip (robot times on our side).
        rt = req.previous_round_trip
        client_tx, server_rx = _sec(rt.client_tx), _sec(rt.server_rx)
        server_tx, client_rx = _sec(rt.server_tx), _sec(rt.client_rx)
        skew = ((server_rx - client_tx) + (server_tx - client_rx)) / 2.0
        rtt = (client_rx - client_tx) - (server_tx - server_rx)
        _ts(skew, res.state.best_estimate.clock_skew)
        _ts(max(rtt, 0.0), res.state.best_estimate.round_trip_time)
        res.previous_estimate.CopyFrom(res.state.best_estimate)
        res.state.status = time_sync_pb2.TimeSyncState.STATUS_OK
        return res

    def has_clock(self, clock_identifier: str) -> bool:
        with self._lock:
            return self._clocks.get(clock_identifier, 0) >= MIN_TIME_SYNC_SAMPLES

    # --- lease -----------------------------------------------------------------------------

    def _new_lease(self, client_name: str) -> lease_pb2.Lease:
        self._lease = lease_pb2.Lease(
            resource="body", epoch=self._lease.epoch, sequence=[self._lease.sequence[0] + 1]
        )
        self._lease_owner = lease_pb2.LeaseOwner(client_name=client_name, user_name=self.username)
        return self._lease

    def acquire_lease(
        self, client_name: str, take: bool
    ) -> tuple[bool, lease_pb2.Lease | None, lease_pb2.LeaseOwner | None]:
        """(granted, lease, owner): acquire fails while someone holds the lease; take never."""
        with self._lock:
            if self._lease_owner is not None and not take:
                return False, None, self._lease_owner
            lease = lease_pb2.Lease()
            lease.CopyFrom(self._new_lease(client_name))
            return True, lease, self._lease_owner

    def return_lease(self, lease: lease_pb2.Lease) -> bool:
        with self._lock:
            if self._lease_owner is None or _lease_newer_root(lease, self._lease) != 0:
                return False
            self._lease_owner = None
            return True

    def use_lease(self, lease: lease_pb2.Lease) -> lease_pb2.LeaseUseResult:
        """Check a lease attached to a request, as every lease-protected service does."""
        result = lease_pb2.LeaseUseResult(attempted_lease=lease)
        with self._lock:
            result.latest_known_lease.CopyFrom(self._lease)
            if self._lease_owner is not None:
                result.owner.CopyFrom(self._lease_owner)
            if not lease.resource or not lease.sequence:
                result.status = lease_pb2.LeaseUseResult.STATUS_INVALID_LEASE
            elif lease.resource != "body":
                result.status = lease_pb2.LeaseUseResult.STATUS_UNMANAGED
            elif lease.epoch != self._lease.epoch:
                result.status = lease_pb2.LeaseUseResult.STATUS_WRONG_EPOCH
            elif _lease_newer_root(lease, self._lease) < 0:
                result.status = lease_pb2.LeaseUseResult.STATUS_OLDER
            elif self._lease_owner is None:
                result.status = lease_pb2.LeaseUseResult.STATUS_REVOKED  # returned earlier
            else:
                result.status = lease_pb2.LeaseUseResult.STATUS_OK
        return result

    # --- estop -----------------------------------------------------------------------------

    def _estop_level(self, now: float) -> int:
        if self._estop_held_externally:
            return _LEVEL_NONE
        registered = [e for e in self._estop.values() if e.registered]
        if not registered:
            return _LEVEL_CUT
        levels = []
        for e in registered:
            timed_out = now - e.last_checkin_s > _sec(e.proto.timeout)
            levels.append(_LEVEL_CUT if timed_out else e.level)
        return min(levels)  # CUT < SETTLE_THEN_CUT < NONE

    def estop_config(self) -> estop_pb2.EstopConfig:
        with self._lock:
            return estop_pb2.EstopConfig(
                unique_id=self._estop_config_id, endpoints=[e.proto for e in self._estop.values()]
            )

    def set_estop_config(
        self, config: estop_pb2.EstopConfig, target_config_id: str
    ) -> tuple[int, estop_pb2.EstopConfig]:
        status = estop_pb2.SetEstopConfigResponse
        with self._lock:
            self._advance()
            if target_config_id != self._estop_config_id:
                return status.STATUS_INVALID_ID, self.estop_config()
            if self._powered:
                return status.STATUS_MOTORS_ON, self.estop_config()
            self._estop_config_id = f"config-{next(self._estop_ids)}"
            self._estop_held_externally = False
            self._estop = {}
            for endpoint in config.endpoints:
                proto = estop_pb2.EstopEndpoint()
                proto.CopyFrom(endpoint)
                proto.unique_id = f"endpoint-{next(self._estop_ids)}"
                self._estop[proto.unique_id] = _EstopEndpoint(proto)
            return status.STATUS_SUCCESS, self.estop_config()

    def register_estop(
        self, req: estop_pb2.RegisterEstopEndpointRequest
    ) -> tuple[int, estop_pb2.EstopEndpoint]:
        status = estop_pb2.RegisterEstopEndpointResponse
        with self._lock:
            if req.target_config_id != self._estop_config_id:
                return status.STATUS_CONFIG_MISMATCH, req.new_endpoint
            free = [e for e in self._estop.values() if not e.registered]
            slot = next((e for e in free if e.proto.role == req.new_endpoint.role), None)
            if slot is None or _sec(req.new_endpoint.timeout) <= 0:
                return status.STATUS_INVALID_ENDPOINT, req.new_endpoint
            del self._estop[slot.proto.unique_id]
            proto = estop_pb2.EstopEndpoint()
            proto.CopyFrom(req.new_endpoint)
            proto.unique_id = proto.unique_id or f"endpoint-{next(self._estop_ids)}"
            self._estop[proto.unique_id] = _EstopEndpoint(proto, registered=True)
            return status.STATUS_SUCCESS, proto

    def deregister_estop(self, req: estop_pb2.DeregisterEstopEndpointRequest) -> int:
        status = estop_pb2.DeregisterEstopEndpointResponse
        with self._lock:
            self._advance()
            endpoint = self._estop.get(req.target_endpoint.unique_id)
            if req.target_config_id != self._estop_config_id:
                return status.STATUS_CONFIG_MISMATCH
            if endpoint is None or not endpoint.registered:
                return status.STATUS_ENDPOINT_MISMATCH
            if self._powered:
                return status.STATUS_MOTORS_ON
            endpoint.registered = False
            return status.STATUS_SUCCESS

    def estop_check_in(self, req: estop_pb2.EstopCheckInRequest) -> tuple[int, int]:
        """(status, new challenge); the response must be the bitwise NOT of the last challenge."""
        status = estop_pb2.EstopCheckInResponse
        with self._lock:
            now = self._advance()
            endpoint = self._estop.get(req.endpoint.unique_id)
            if endpoint is None or not endpoint.registered:
                return status.STATUS_ENDPOINT_UNKNOWN, 0
            expected = ctypes.c_ulonglong(~endpoint.challenge).value
            endpoint.challenge = int.from_bytes(os.urandom(8), "little")
            if req.response != expected:
                return status.STATUS_INCORRECT_CHALLENGE_RESPONSE, endpoint.challenge
            endpoint.level, endpoint.last_checkin_s = req.stop_level, now
            self._advance()  # a CUT or SETTLE_THEN_CUT takes effect now
            return status.STATUS_OK, endpoint.challenge

    def estop_status(self) -> estop_pb2.EstopSystemStatus:
        with self._lock:
            now = self.now()
            out = estop_pb2.EstopSystemStatus(stop_level=self._estop_level(now))
            for e in self._estop.values():
                if e.registered:
                    out.endpoints.add(endpoint=e.proto, stop_level=e.level)
            return out

    # --- power -----------------------------------------------------------------------------

    def power_command(self, request: int) -> int:
        with self._lock:
            now = self._advance()
            if request == power_pb2.PowerCommandRequest.REQUEST_ON_MOTORS:
                if self._estop_level(now) != _LEVEL_NONE:
                    return power_pb2.STATUS_ESTOPPED
                if self._powered:
                    return power_pb2.STATUS_SUCCESS
                self._power_on_at = now + self.power_on_s
                return power_pb2.STATUS_IN_PROGRESS
            if request == power_pb2.PowerCommandRequest.REQUEST_OFF_MOTORS:
                self._cut_power()
                return power_pb2.STATUS_SUCCESS
            return power_pb2.STATUS_INTERNAL_ERROR

    def power_feedback(self) -> int:
        with self._lock:
            self._advance()
            if self._powered:
                return power_pb2.STATUS_SUCCESS
            if self._power_on_at is not None:
                return power_pb2.STATUS_IN_PROGRESS
            return power_pb2.STATUS_ESTOPPED if self.estopped else power_pb2.STATUS_INTERNAL_ERROR

    # --- state -----------------------------------------------------------------------------

    def robot_state(self) -> robot_state_pb2.RobotState:
        with self._lock:
            now = self._advance()
            state = robot_state_pb2.RobotState()
            power = state.power_state
            _ts(now, power.timestamp)
            power.motor_power_state = (
                robot_state_pb2.PowerState.MOTOR_POWER_STATE_ON
                if self._powered
                else robot_state_pb2.PowerState.MOTOR_POWER_STATE_POWERING_ON
                if self._power_on_at is not None
                else robot_state_pb2.PowerState.MOTOR_POWER_STATE_OFF
            )
            estop = state.estop_states.add(name="software_estop")
            estop.type = robot_state_pb2.EStopState.TYPE_SOFTWARE
            estop.state = (
                robot_state_pb2.EStopState.STATE_NOT_ESTOPPED
                if self._estop_level(now) == _LEVEL_NONE
                else robot_state_pb2.EStopState.STATE_ESTOPPED
            )
            kin = state.kinematic_state
            _ts(now, kin.acquisition_timestamp)
            legs = LEGS_STANDING if self._standing else LEGS_SITTING
            arm = dict(zip(ARM_FIELDS, self._q))
            for name in ROBOT_JOINT_NAMES:
                joint = kin.joint_states.add(name=name)
                if name == "arm0.hr0":
                    continue  # present with no data, as on the robot
                if name.startswith("arm0."):
                    short = name.removeprefix("arm0.")
                    joint.position.value = self._f1x if short == "f1x" else float(arm[short])
                else:
                    joint.position.value = legs[ROBOT_JOINT_NAMES.index(name)]
                joint.velocity.value = 0.0
            # The SDK's has_arm() looks for this message.
            state.manipulator_state.gripper_open_percentage = 100.0 * self._f1x / GRIPPER_OPEN_F1X
            return state

    # --- commands --------------------------------------------------------------------------

    def robot_command(
        self, req: robot_command_pb2.RobotCommandRequest
    ) -> robot_command_pb2.RobotCommandResponse:
        res = robot_command_pb2.RobotCommandResponse()
        status = robot_command_pb2.RobotCommandResponse
        with self._lock:
            now = self._advance()
            record = ReceivedCommand(0, now, _kinds(req.command), req.command, "")
            self.commands.append(record)
            res.lease_use_result.CopyFrom(self.use_lease(req.lease))
            if res.lease_use_result.status != lease_pb2.LeaseUseResult.STATUS_OK:
                name = lease_pb2.LeaseUseResult.Status.Name(res.lease_use_result.status)
                record.status = f"LEASE_{name}"
                return res
            if not self.has_clock(req.clock_identifier):
                res.status, res.message = status.STATUS_NO_TIMESYNC, "unknown clock identifier"
            elif not self._powered:
                res.status, res.message = status.STATUS_NOT_POWERED_ON, "motors are off"
            else:
                res.status, res.message = self._apply(req.command, now)
            record.status, record.message = status.Status.Name(res.status), res.message
            if res.status == status.STATUS_OK:
                record.id = res.robot_command_id = next(self._command_ids)
                self._note_ids(req.command, record.id)
            return res

    def _note_ids(self, command: robot_command_pb2.RobotCommand, command_id: int) -> None:
        if command.HasField("full_body_command"):
            self._full_body_command_id = command_id
            self._arm_command_id = self._mobility_command_id = self._gripper_command_id = 0
            return
        sync = command.synchronized_command
        self._full_body_command_id = 0
        if sync.HasField("arm_command"):
            self._arm_command_id = command_id
        if sync.HasField("mobility_command"):
            self._mobility_command_id = command_id
        if sync.HasField("gripper_command"):
            self._gripper_command_id = command_id

    def _apply(self, command: robot_command_pb2.RobotCommand, now: float) -> tuple[int, str]:
        status = robot_command_pb2.RobotCommandResponse
        if command.HasField("full_body_command"):
            body = command.full_body_command
            if body.HasField("stop_request"):
                self._hold(now)
                return status.STATUS_OK, "stopping"
            return status.STATUS_UNSUPPORTED, f"fake does not do {body.WhichOneof('command')}"
        if not command.HasField("synchronized_command"):
            return status.STATUS_INVALID_REQUEST, "empty command"
        sync = command.synchronized_command
        arm_traj = None
        if sync.HasField("arm_command"):
            arm_traj, why = self._arm_trajectory(sync.arm_command, now)
            if arm_traj is None:
                return status.STATUS_INVALID_REQUEST, why
        if sync.HasField("gripper_command"):
            claw = sync.gripper_command.claw_gripper_command
            if not claw.trajectory.points:
                return status.STATUS_INVALID_REQUEST, "gripper trajectory has no points"
        if sync.HasField("mobility_command"):
            which = sync.mobility_command.WhichOneof("command")
            if which == "stand_request":
                self._standing = True
            elif which == "sit_request":
                self._standing = False
            else:
                return status.STATUS_UNSUPPORTED, f"fake does not do {which}"
        if arm_traj is not None:
            self._traj = arm_traj
        if sync.HasField("gripper_command"):
            target = sync.gripper_command.claw_gripper_command.trajectory.points[-1].point
            self._f1x_target = float(np.clip(target, GRIPPER_OPEN_F1X, 0.0))
        return status.STATUS_OK, "ok"

    def _arm_trajectory(self, arm: Any, now: float) -> tuple[_Trajectory | None, str]:
        which = arm.WhichOneof("command")
        if which == "named_arm_position_command":
            named = {
                NamedArmPositionsCommand.POSITIONS_READY: READY,
                NamedArmPositionsCommand.POSITIONS_STOW: STOW,
            }.get(arm.named_arm_position_command.position)
            if named is None:
                return None, "fake knows only the ready and stow positions"
            return _Trajectory(np.array([now]), named[None].copy(), MAX_JOINT_SPEED.copy()), ""
        if which == "arm_stop_command":
            return _Trajectory(np.array([now]), self._q[None].copy(), MAX_JOINT_SPEED.copy()), ""
        if which != "arm_joint_move_command":
            return None, f"fake does not do {which}"
        traj = arm.arm_joint_move_command.trajectory
        if not 0 < len(traj.points) <= MAX_TRAJECTORY_POINTS:
            return None, f"trajectory has {len(traj.points)} points, 1..{MAX_TRAJECTORY_POINTS} ok"
        ref = _sec(traj.reference_time) if traj.HasField("reference_time") else now
        times, points = [now], [self._q.copy()]  # plan from where the arm is
        for point in traj.points:
            t = ref + _sec(point.time_since_reference)
            if t <= times[-1] and len(times) > 1:
                return None, "trajectory times must increase"
            q = points[-1].copy()
            for j, field in enumerate(ARM_FIELDS):
                if point.position.HasField(field):
                    q[j] = getattr(point.position, field).value
            if len(times) == 1 and t <= now:
                times, points = [t], [q]  # a knot already in the past replaces the start
            else:
                times.append(t)
                points.append(q)
        speed = MAX_JOINT_SPEED.copy()
        if traj.HasField("maximum_velocity"):
            speed = np.minimum(speed, traj.maximum_velocity.value)
        clipped = np.clip(np.array(points), LOWER, UPPER)  # the planner keeps joints in limits
        return _Trajectory(np.array(times), clipped, speed), ""

    def feedback(self, command_id: int) -> robot_command_pb2.RobotCommandFeedbackResponse:
        res = robot_command_pb2.RobotCommandFeedbackResponse()
        with self._lock:
            now = self._advance()
            record = next((c for c in self.commands if c.id == command_id and c.id), None)
            if record is None:
                res.header.error.code = header_pb2.CommonError.CODE_INVALID_REQUEST
                res.header.error.message = f"unknown command id {command_id}"
                return res
            command = record.command
            if command.HasField("full_body_command"):
                fb = res.feedback.full_body_feedback
                fb.status = _live(self._full_body_command_id, command_id)
                fb.stop_feedback.SetInParent()
                return res
            sync = command.synchronized_command
            out = res.feedback.synchronized_feedback
            if sync.HasField("mobility_command"):
                mob = out.mobility_command_feedback
                mob.status = _live(self._mobility_command_id, command_id)
                if sync.mobility_command.HasField("stand_request"):
                    mob.stand_feedback.status = (
                        basic_command_pb2.StandCommand.Feedback.STATUS_IS_STANDING
                        if self._standing
                        else basic_command_pb2.StandCommand.Feedback.STATUS_IN_PROGRESS
                    )
            if sync.HasField("arm_command"):
                arm = out.arm_command_feedback
                arm.status = _live(self._arm_command_id, command_id)
                done = (
                    now >= self._traj.times[-1]
                    and bool(np.allclose(self._q, self._traj.points[-1], atol=1e-3))
                    and arm.status == _FB.STATUS_PROCESSING
                )
                if sync.arm_command.HasField("named_arm_position_command"):
                    arm.named_arm_position_feedback.status = (
                        NamedArmPositionsCommand.Feedback.STATUS_COMPLETE
                        if done
                        else NamedArmPositionsCommand.Feedback.STATUS_IN_PROGRESS
                    )
                elif sync.arm_command.HasField("arm_joint_move_command"):
                    arm.arm_joint_move_feedback.status = (
                        ArmJointMoveCommand.Feedback.STATUS_COMPLETE
                        if done
                        else ArmJointMoveCommand.Feedback.STATUS_IN_PROGRESS
                    )
            if sync.HasField("gripper_command"):
                grip = out.gripper_command_feedback
                grip.status = _live(self._gripper_command_id, command_id)
                grip.claw_gripper_feedback.status = (
                    ClawGripperCommand.Feedback.STATUS_AT_GOAL
                    if abs(self._f1x - self._f1x_target) < 1e-3
                    else ClawGripperCommand.Feedback.STATUS_IN_PROGRESS
                )
            return res


def _live(current_id: int, command_id: int) -> int:
    return _FB.STATUS_PROCESSING if current_id == command_id else _FB.STATUS_COMMAND_OVERRIDDEN


def _kinds(command: robot_command_pb2.RobotCommand) -> tuple[str, ...]:
    """Short names of what a command asks for, for asserts."""
    if command.HasField("full_body_command"):
        which = command.full_body_command.WhichOneof("command") or ""
        return (which.removesuffix("_request"),)
    sync = command.synchronized_command
    kinds = []
    if sync.HasField("mobility_command"):
        kinds.append((sync.mobility_command.WhichOneof("command") or "").removesuffix("_request"))
    if sync.HasField("arm_command"):
        arm = sync.arm_command
        if arm.HasField("named_arm_position_command"):
            position = arm.named_arm_position_command.position
            kinds.append("arm_" + NamedArmPositionsCommand.Positions.Name(position)[10:].lower())
        else:
            kinds.append((arm.WhichOneof("command") or "").removesuffix("_command"))
    if sync.HasField("gripper_command"):
        kinds.append("gripper")
    return tuple(kinds)


# --- gRPC servicers ------------------------------------------------------------------------


def _reply(res: Any, req: Any, rx_s: float, robot: FakeSpot) -> Any:
    """Fill the common response header: the client reads its timestamps for time sync."""
    res.header.request_header.CopyFrom(req.header)
    _ts(rx_s, res.header.request_received_timestamp)
    _ts(robot.now(), res.header.response_timestamp)
    if res.header.error.code == header_pb2.CommonError.CODE_UNSPECIFIED:
        res.header.error.code = _OK
    return res


class _Base:
    """Shared plumbing: count calls, stamp receipt, require the user token."""

    def __init__(self, robot: FakeSpot, needs_token: bool = True) -> None:
        self.robot, self.needs_token = robot, needs_token

    def _enter(self, method: str, context: grpc.ServicerContext) -> float:
        self.robot.calls[method] += 1
        rx = self.robot.now()
        if self.needs_token and not self.robot.authorised(context):
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "a valid user token is required")
        return rx


class _Auth(_Base, auth_service_pb2_grpc.AuthServiceServicer):
    def GetAuthToken(self, request, context):
        rx = self._enter("GetAuthToken", context)
        return _reply(self.robot.auth(request), request, rx, self.robot)


class _RobotId(_Base, robot_id_service_pb2_grpc.RobotIdServiceServicer):
    def GetRobotId(self, request, context):
        rx = self._enter("GetRobotId", context)
        robot_id = robot_id_pb2.RobotId(
            serial_number="fake-spot-0001", species="spot", version="5.2.0", nickname="fake-spot"
        )
        return _reply(robot_id_pb2.RobotIdResponse(robot_id=robot_id), request, rx, self.robot)


class _Directory(_Base, directory_service_pb2_grpc.DirectoryServiceServicer):
    def _entries(self) -> list[directory_pb2.ServiceEntry]:
        return [
            directory_pb2.ServiceEntry(name=name, type=kind, authority=AUTHORITY)
            for name, kind in SERVICES.items()
        ]

    def ListServiceEntries(self, request, context):
        rx = self._enter("ListServiceEntries", context)
        res = directory_pb2.ListServiceEntriesResponse(service_entries=self._entries())
        return _reply(res, request, rx, self.robot)


class _TimeSync(_Base, time_sync_service_pb2_grpc.TimeSyncServiceServicer):
    def TimeSyncUpdate(self, request, context):
        rx = self._enter("TimeSyncUpdate", context)
        return _reply(self.robot.time_sync(request, rx), request, rx, self.robot)


class _Lease(_Base, lease_service_pb2_grpc.LeaseServiceServicer):
    def _grant(self, request, context, method: str, take: bool, res: Any):
        rx = self._enter(method, context)
        if request.resource != "body":
            res.status = res.STATUS_INVALID_RESOURCE
            return _reply(res, request, rx, self.robot)
        granted, lease, owner = self.robot.acquire_lease(request.header.client_name, take)
        if granted:
            res.status = res.STATUS_OK
            res.lease.CopyFrom(lease)
        else:
            res.status = res.STATUS_RESOURCE_ALREADY_CLAIMED
        if owner is not None:
            res.lease_owner.CopyFrom(owner)
        return _reply(res, request, rx, self.robot)

    def AcquireLease(self, request, context):
        return self._grant(
            request, context, "AcquireLease", False, lease_pb2.AcquireLeaseResponse()
        )

    def TakeLease(self, request, context):
        return self._grant(request, context, "TakeLease", True, lease_pb2.TakeLeaseResponse())

    def ReturnLease(self, request, context):
        rx = self._enter("ReturnLease", context)
        res = lease_pb2.ReturnLeaseResponse()
        ok = self.robot.return_lease(request.lease)
        res.status = res.STATUS_OK if ok else res.STATUS_NOT_ACTIVE_LEASE
        return _reply(res, request, rx, self.robot)

    def RetainLease(self, request, context):
        rx = self._enter("RetainLease", context)
        res = lease_pb2.RetainLeaseResponse(lease_use_result=self.robot.use_lease(request.lease))
        if res.lease_use_result.status == lease_pb2.LeaseUseResult.STATUS_OK:
            self.robot.retained += 1
        return _reply(res, request, rx, self.robot)


class _Estop(_Base, estop_service_pb2_grpc.EstopServiceServicer):
    def GetEstopConfig(self, request, context):
        rx = self._enter("GetEstopConfig", context)
        res = estop_pb2.GetEstopConfigResponse(request=request)
        res.active_config.CopyFrom(self.robot.estop_config())
        return _reply(res, request, rx, self.robot)

    def SetEstopConfig(self, request, context):
        rx = self._enter("SetEstopConfig", context)
        status, config = self.robot.set_estop_config(request.config, request.target_config_id)
        res = estop_pb2.SetEstopConfigResponse(request=request, status=status)
        res.active_config.CopyFrom(config)
        return _reply(res, request, rx, self.robot)

    def RegisterEstopEndpoint(self, request, context):
        rx = self._enter("RegisterEstopEndpoint", context)
        status, endpoint = self.robot.register_estop(request)
        res = estop_pb2.RegisterEstopEndpointResponse(request=request, status=status)
        res.new_endpoint.CopyFrom(endpoint)
        return _reply(res, request, rx, self.robot)

    def DeregisterEstopEndpoint(self, request, context):
        rx = self._enter("DeregisterEstopEndpoint", context)
        status = self.robot.deregister_estop(request)
        res = estop_pb2.DeregisterEstopEndpointResponse(request=request, status=status)
        return _reply(res, request, rx, self.robot)

    def EstopCheckIn(self, request, context):
        rx = self._enter("EstopCheckIn", context)
        status, challenge = self.robot.estop_check_in(request)
        res = estop_pb2.EstopCheckInResponse(request=request, status=status, challenge=challenge)
        return _reply(res, request, rx, self.robot)

    def GetEstopSystemStatus(self, request, context):
        rx = self._enter("GetEstopSystemStatus", context)
        res = estop_pb2.GetEstopSystemStatusResponse(status=self.robot.estop_status())
        return _reply(res, request, rx, self.robot)


class _Power(_Base, power_service_pb2_grpc.PowerServiceServicer):
    def PowerCommand(self, request, context):
        rx = self._enter("PowerCommand", context)
        res = power_pb2.PowerCommandResponse(power_command_id=1)
        res.lease_use_result.CopyFrom(self.robot.use_lease(request.lease))
        if res.lease_use_result.status == lease_pb2.LeaseUseResult.STATUS_OK:
            res.status = self.robot.power_command(request.request)
        return _reply(res, request, rx, self.robot)

    def PowerCommandFeedback(self, request, context):
        rx = self._enter("PowerCommandFeedback", context)
        res = power_pb2.PowerCommandFeedbackResponse(status=self.robot.power_feedback())
        return _reply(res, request, rx, self.robot)


class _RobotState(_Base, robot_state_service_pb2_grpc.RobotStateServiceServicer):
    def GetRobotState(self, request, context):
        rx = self._enter("GetRobotState", context)
        res = robot_state_pb2.RobotStateResponse(robot_state=self.robot.robot_state())
        return _reply(res, request, rx, self.robot)


class _RobotCommand(_Base, robot_command_service_pb2_grpc.RobotCommandServiceServicer):
    def RobotCommand(self, request, context):
        rx = self._enter("RobotCommand", context)
        return _reply(self.robot.robot_command(request), request, rx, self.robot)

    def RobotCommandFeedback(self, request, context):
        rx = self._enter("RobotCommandFeedback", context)
        return _reply(self.robot.feedback(request.robot_command_id), request, rx, self.robot)


# --- the server ----------------------------------------------------------------------------


def make_certificates(directory: str) -> tuple[str, bytes, bytes]:
    """Make a CA and a ``*.spot.robot`` server certificate with the openssl CLI.

    Returns (CA certificate path for the client, server key PEM, server certificate PEM).
    Raises ``RuntimeError`` when openssl is missing or fails.
    """
    openssl = shutil.which("openssl")
    if openssl is None:
        raise RuntimeError("the fake Spot needs the openssl command line tool for its certificate")
    names = ("ca.key", "ca.pem", "server.key", "server.csr", "server.pem", "san.cnf")
    p = {name: os.path.join(directory, name) for name in names}
    with open(p["san.cnf"], "w") as f:
        f.write("subjectAltName=DNS:*.spot.robot\n")
    ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    steps = [
        [openssl, "req", "-x509", *ec, "-keyout", p["ca.key"], "-out", p["ca.pem"], "-days", "2",
         "-subj", "/CN=fake-spot-ca", "-addext", "basicConstraints=critical,CA:TRUE",
         "-addext", "keyUsage=critical,keyCertSign"],
        [openssl, "req", *ec, "-keyout", p["server.key"], "-out", p["server.csr"],
         "-subj", "/CN=" + AUTHORITY],
        [openssl, "x509", "-req", "-in", p["server.csr"], "-CA", p["ca.pem"], "-CAkey", p["ca.key"],
         "-CAcreateserial", "-out", p["server.pem"], "-days", "2", "-extfile", p["san.cnf"]],
    ]  # fmt: skip
    for cmd in steps:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=30, check=False)
        if done.returncode != 0:
            raise RuntimeError(f"openssl failed ({' '.join(cmd[1:3])}): {done.stderr.strip()}")
    with open(p["server.key"], "rb") as key, open(p["server.pem"], "rb") as cert:
        return p["ca.pem"], key.read(), cert.read()


class FakeSpotServer:
    """A :class:`FakeSpot` served over TLS gRPC on 127.0.0.1 and an ephemeral port.

    Use as a context manager (or ``start()``/``stop()``). ``robot`` is the fake robot, ``port``
    the port, ``ca_path`` the CA certificate the client must trust, ``hostname`` the address.
    Keyword arguments go to :class:`FakeSpot`.
    """

    hostname = "127.0.0.1"

    def __init__(self, robot: FakeSpot | None = None, **robot_kwargs: Any) -> None:
        self.robot = robot if robot is not None else FakeSpot(**robot_kwargs)
        self.port = 0
        self.ca_path = ""
        self._tmp: tempfile.TemporaryDirectory[str] | None = None
        self._server: grpc.Server | None = None

    def start(self) -> FakeSpotServer:
        self._tmp = tempfile.TemporaryDirectory(prefix="fake-spot-")
        self.ca_path, key, cert = make_certificates(self._tmp.name)
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=16))
        r = self.robot
        auth_service_pb2_grpc.add_AuthServiceServicer_to_server(_Auth(r, False), server)
        robot_id_service_pb2_grpc.add_RobotIdServiceServicer_to_server(_RobotId(r, False), server)
        directory_service_pb2_grpc.add_DirectoryServiceServicer_to_server(_Directory(r), server)
        time_sync_service_pb2_grpc.add_TimeSyncServiceServicer_to_server(_TimeSync(r), server)
        lease_service_pb2_grpc.add_LeaseServiceServicer_to_server(_Lease(r), server)
        estop_service_pb2_grpc.add_EstopServiceServicer_to_server(_Estop(r), server)
        power_service_pb2_grpc.add_PowerServiceServicer_to_server(_Power(r), server)
        robot_state_service_pb2_grpc.add_RobotStateServiceServicer_to_server(_RobotState(r), server)
        robot_command_service_pb2_grpc.add_RobotCommandServiceServicer_to_server(
            _RobotCommand(r), server
        )
        credentials = grpc.ssl_server_credentials([(key, cert)])
        self.port = server.add_secure_port(f"{self.hostname}:0", credentials)
        server.start()
        self._server = server
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.stop(grace=None).wait(5.0)
            self._server = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> FakeSpotServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
