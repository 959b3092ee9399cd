"""BosdynArmDriver (real bosdyn-client) against the fake Spot gRPC server (unit tier: no DDS).

Fixture chain: fake robot server on 127.0.0.1 (TLS, ephemeral port) -> driver connected to it ->
call a command -> assert what the fake robot saw, and the refusal paths. The robot clock runs
1000 s ahead of ours, so any timestamp the client forgot to convert would land far off.
"""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Callable, Iterator

import numpy as np
import pytest

pytest.importorskip("bosdyn.client", reason="bosdyn-client is not installed")

from bosdyn.api import robot_command_pb2

from t2a_common.core.spot_arm import MAX_JOINT_SPEED, READY, STOW
from t2a_control.core.driver import ArmDriver
from t2a_control.drivers.bosdyn_driver import (
    BosdynArmDriver,
    BosdynDriverConfig,
    BosdynDriverError,
)
from t2a_control.drivers.fake_spot_server import (
    ARM_FIELDS,
    GRIPPER_OPEN_F1X,
    FakeSpotServer,
)

pytestmark = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl CLI")

SKEW_S = 1000.0  # robot clock minus ours


def wait_for(condition: Callable[[], bool], timeout_s: float = 4.0) -> bool:
    end = time.monotonic() + timeout_s
    while time.monotonic() < end:
        if condition():
            return True
        time.sleep(0.01)
    return condition()


def config(server: FakeSpotServer, **overrides) -> BosdynDriverConfig:
    values = dict(
        hostname=server.hostname,
        port=server.port,
        cert_path=server.ca_path,
        username="user",
        password="password",
        time_sync_timeout_s=3.0,
        control_period_s=0.1,
        lead_s=0.02,
    )
    return BosdynDriverConfig(**{**values, **overrides})


@pytest.fixture
def server(request) -> Iterator[FakeSpotServer]:
    """A fake Spot; ``@pytest.mark.parametrize("server", [{...}], indirect=True)`` sets it up."""
    kwargs = {"clock_skew_s": SKEW_S, **getattr(request, "param", {})}
    with FakeSpotServer(**kwargs) as s:
        yield s


READY_ROBOT = {"powered": True, "standing": True, "q0": READY}


@pytest.fixture
def driver(server: FakeSpotServer) -> Iterator[BosdynArmDriver]:
    with BosdynArmDriver(config(server)) as d:
        yield d


def joint_moves(server: FakeSpotServer) -> list[robot_command_pb2.RobotCommand]:
    return [c.command for c in server.robot.accepted("arm_joint_move")]


# --------------------------------------------------------------------- connection and state


def test_connects_and_reports_the_arm(server: FakeSpotServer, driver: BosdynArmDriver) -> None:
    assert isinstance(driver, ArmDriver)
    assert driver.has_state()
    q, opening, stamp = driver.joint_positions()
    np.testing.assert_allclose(q, STOW, atol=1e-9)  # arm0.* mapped onto arm_sh0 ... arm_wr1
    assert opening == pytest.approx(0.0)
    assert abs(stamp - time.time()) < 1.0  # robot acquisition time converted to our clock
    assert server.robot.calls["GetAuthToken"] == 1
    assert server.robot.calls["TimeSyncUpdate"] >= 3


def test_state_arrival_is_stamped_with_the_callers_clock(server: FakeSpotServer) -> None:
    # The control node passes its ROS clock (sim time under use_sim_time) for its watchdog.
    sim_time = [100.0]
    with BosdynArmDriver(config(server), clock=lambda: sim_time[0]) as driver:
        assert driver.received_s == 100.0
        sim_time[0] = 100.5
        assert wait_for(lambda: driver.received_s == 100.5)  # the poller keeps stamping
        assert abs(driver.joint_positions()[2] - time.time()) < 1.0  # robot stamps: wall time


def test_wrong_password_fails_construction(server: FakeSpotServer) -> None:
    with pytest.raises(BosdynDriverError, match="refused the login"):
        BosdynArmDriver(config(server, password="nope"))


def test_unreachable_robot_fails_construction(server: FakeSpotServer) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed_port = sock.getsockname()[1]
    with pytest.raises(BosdynDriverError, match="cannot reach"):
        BosdynArmDriver(config(server, port=closed_port))


def test_config_validates_and_reads_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="SPOT_IP"):
        BosdynDriverConfig(username="user")
    with pytest.raises(ValueError, match="estop"):
        BosdynDriverConfig(hostname="spot", username="user", estop="maybe")
    with pytest.raises(ValueError, match="lead_s"):
        BosdynDriverConfig(hostname="spot", username="user", lead_s=0.5, control_period_s=0.2)
    monkeypatch.setenv("SPOT_IP", "10.0.0.3")
    monkeypatch.setenv("BOSDYN_CLIENT_USERNAME", "admin")
    monkeypatch.setenv("BOSDYN_CLIENT_PASSWORD", "secret")
    cfg = BosdynDriverConfig.from_env(port=4443)
    assert (cfg.hostname, cfg.username, cfg.password, cfg.port) == (
        "10.0.0.3",
        "admin",
        "secret",
        4443,
    )
    assert "secret" not in repr(cfg)


# --------------------------------------------------------------------- start-up sequence


def test_claim_power_stand_unstow_stow(server: FakeSpotServer, driver: BosdynArmDriver) -> None:
    robot = server.robot
    assert driver.claim() == (True, "lease acquired")
    assert robot.lease_owner.startswith("t2a_bosdyn_driver")
    assert driver.claim() == (True, "lease already held")
    assert driver.power_on() == (True, "powered on")
    assert robot.powered and robot.calls["PowerCommandFeedback"] >= 1  # powering on took a while
    assert driver.stand() == (True, "standing")
    assert robot.standing
    ok, text = driver.unstow()
    assert ok, text
    np.testing.assert_allclose(robot.q, READY, atol=1e-3)
    assert wait_for(lambda: np.allclose(driver.joint_positions()[0], READY, atol=1e-3))
    ok, text = driver.stow()
    assert ok, text
    np.testing.assert_allclose(robot.q, STOW, atol=1e-3)
    assert [c.kinds for c in robot.commands if c.status == "STATUS_OK"] == [
        ("stand",),
        ("arm_ready",),
        ("arm_stow", "gripper"),
    ]
    assert wait_for(lambda: robot.retained > 0, timeout_s=3.0)  # LeaseKeepAlive checks in


# --------------------------------------------------------------------- streaming


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_streamed_targets_move_the_arm(server: FakeSpotServer, driver: BosdynArmDriver) -> None:
    assert driver.claim()[0]
    goal = READY + np.array([0.3, -0.2, 0.25, 0.4, 0.3, -0.5])
    for alpha in np.linspace(0.1, 1.0, 10):  # a 1 s approach at 10 Hz, as the control loop does
        ok, text = driver.send_joint_targets(READY + alpha * (goal - READY))
        assert ok, text
        time.sleep(0.1)
    assert wait_for(lambda: np.allclose(server.robot.q, goal, atol=1e-3))
    assert wait_for(lambda: np.allclose(driver.joint_positions()[0], goal, atol=1e-3))
    moves = joint_moves(server)
    assert len(moves) == 10
    for command, received in zip(moves, server.robot.accepted("arm_joint_move")):
        traj = command.synchronized_command.arm_command.arm_joint_move_command.trajectory
        ref = traj.reference_time.seconds + traj.reference_time.nanos * 1e-9
        assert abs(ref - received.robot_time_s) < 1.0  # converted to robot time (skew 1000 s)
        assert len(traj.points) <= 10
        start, end = (
            np.array([getattr(p.position, f).value for f in ARM_FIELDS])
            for p in (traj.points[0], traj.points[-1])
        )
        span = traj.points[-1].time_since_reference.ToNanoseconds() * 1e-9
        assert span >= 0.1 - 1e-9  # about one control period
        assert np.all(np.abs(end - start) / span <= MAX_JOINT_SPEED + 1e-6)


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_a_far_target_is_slowed_to_the_joint_speed_limit(
    server: FakeSpotServer, driver: BosdynArmDriver
) -> None:
    assert driver.claim()[0]
    goal = READY + np.array([1.0, 0, 0, 0, 0, 0])  # 0.5 s at 2 rad/s, longer than a period
    assert driver.send_joint_targets(goal)[0]
    traj = joint_moves(server)[0].synchronized_command.arm_command.arm_joint_move_command.trajectory
    span = traj.points[-1].time_since_reference.ToNanoseconds() * 1e-9
    assert span == pytest.approx(1.0 / MAX_JOINT_SPEED[0], abs=1e-6)
    assert wait_for(lambda: np.allclose(server.robot.q, goal, atol=1e-3))


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_gripper_open_close(server: FakeSpotServer, driver: BosdynArmDriver) -> None:
    assert driver.claim()[0]
    assert driver.open_gripper() == (True, "opening")
    assert wait_for(lambda: server.robot.gripper_f1x == pytest.approx(GRIPPER_OPEN_F1X))
    assert wait_for(lambda: driver.joint_positions()[1] == pytest.approx(1.0, abs=1e-3))
    assert driver.call_async("close_gripper").result(timeout=2.0) == (True, "closing")
    assert wait_for(lambda: driver.joint_positions()[1] == pytest.approx(0.0, abs=1e-3))


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_stop_holds_the_arm_where_it_is(server: FakeSpotServer, driver: BosdynArmDriver) -> None:
    assert driver.claim()[0]
    goal = READY + np.array([2.0, 0, 0, 0, 0, 0])  # a 1 s move
    assert driver.send_joint_targets(goal)[0]
    time.sleep(0.3)
    assert driver.stop() == (True, "stopped")
    held = server.robot.q
    time.sleep(0.2)
    np.testing.assert_allclose(server.robot.q, held, atol=1e-9)
    assert not np.allclose(held, goal, atol=0.1)
    assert server.robot.accepted("stop")


# --------------------------------------------------------------------- refusals


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_commands_without_the_lease_are_refused(
    server: FakeSpotServer, driver: BosdynArmDriver
) -> None:
    for call in (
        lambda: driver.send_joint_targets(READY + 0.1),
        driver.stand,
        driver.open_gripper,
        driver.stop,
        driver.power_on,
    ):
        ok, text = call()
        assert not ok and "claim() first" in text, text
    assert server.robot.commands == []  # nothing reached the robot
    np.testing.assert_allclose(server.robot.q, READY)


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_a_lease_taken_by_another_client_stops_the_driver(server: FakeSpotServer) -> None:
    robot = server.robot
    with BosdynArmDriver(config(server)) as driver:
        assert driver.claim()[0]
        robot.take_lease("tablet")
        ok, text = driver.send_joint_targets(READY + 0.1)
        assert not ok and "tablet" in text, text
        assert robot.commands[-1].status == "LEASE_STATUS_OLDER"  # the robot refused it
        ok, text = driver.send_joint_targets(READY + 0.1)  # now refused before sending
        assert not ok and "tablet" in text, text
        assert len(robot.commands) == 1
        ok, text = driver.claim()
        assert not ok and "held by tablet" in text and "take_lease" in text, text
        np.testing.assert_allclose(robot.q, READY)
    with BosdynArmDriver(config(server, take_lease=True)) as driver:
        assert driver.claim() == (True, "lease taken from tablet")
        assert driver.send_joint_targets(READY + 0.1)[0]


def test_motion_is_refused_while_the_motors_are_off(
    server: FakeSpotServer, driver: BosdynArmDriver
) -> None:
    assert driver.claim()[0]
    ok, text = driver.stand()
    assert not ok and "power_on() first" in text, text
    ok, text = driver.send_joint_targets(READY)
    assert not ok and "power_on() first" in text, text
    assert [c.status for c in server.robot.commands] == ["STATUS_NOT_POWERED_ON"] * 2
    np.testing.assert_allclose(server.robot.q, STOW)


@pytest.mark.parametrize("server", [READY_ROBOT], indirect=True)
def test_targets_outside_the_joint_limits_are_not_sent(
    server: FakeSpotServer, driver: BosdynArmDriver
) -> None:
    assert driver.claim()[0]
    for bad in (READY + np.array([0, 0, -3.0, 0, 0, 0]), np.full(6, np.nan), np.zeros(5)):
        ok, text = driver.send_joint_targets(bad)
        assert not ok and ("joint limits" in text or "6 finite" in text), text
    assert server.robot.commands == []


@pytest.mark.parametrize("server", [{"time_sync_ready": False}], indirect=True)
def test_no_time_sync_refuses_motion(server: FakeSpotServer) -> None:
    with BosdynArmDriver(config(server, time_sync_timeout_s=0.2)) as driver:
        assert driver.claim()[0]  # the lease needs no time sync
        for call in (driver.stand, driver.unstow, lambda: driver.send_joint_targets(READY)):
            ok, text = call()
            assert not ok and "no time sync" in text, text
        assert server.robot.commands == []


# --------------------------------------------------------------------- estop and close


@pytest.mark.parametrize("server", [{"estop": "none"}], indirect=True)
def test_an_unheld_estop_refuses_power(server: FakeSpotServer, driver: BosdynArmDriver) -> None:
    assert driver.claim()[0]
    ok, text = driver.power_on()
    assert not ok and "estopped" in text, text
    assert not server.robot.powered


@pytest.mark.parametrize("server", [{"estop": "none"}], indirect=True)
def test_the_driver_can_hold_the_estop(server: FakeSpotServer) -> None:
    robot = server.robot
    driver = BosdynArmDriver(config(server, estop="register"))
    assert [e.name for e in robot.estop_endpoints] == ["t2a_bosdyn_driver"]
    assert not robot.estopped
    assert driver.claim()[0] and driver.power_on()[0] and driver.stand()[0]
    driver.close()  # settle then cut, return the lease, deregister the endpoint
    assert not robot.powered and not robot.standing
    assert robot.estop_endpoints == []
    assert robot.lease_owner is None


def test_release_returns_the_lease_and_claim_takes_it_again(
    server: FakeSpotServer, driver: BosdynArmDriver
) -> None:
    assert driver.claim()[0]
    assert driver.release() == (True, "lease returned")
    assert server.robot.lease_owner is None
    assert driver.release() == (True, "no lease held")
    assert driver.claim() == (True, "lease acquired")


def test_estop_without_an_endpoint_stops_and_cuts_power(
    server: FakeSpotServer, driver: BosdynArmDriver
) -> None:
    robot = server.robot
    assert driver.claim()[0] and driver.power_on()[0] and driver.stand()[0]
    ok, text = driver.estop()
    assert ok, text
    assert not robot.powered
    assert any(c.kinds == ("stop",) for c in robot.commands), robot.commands
    ok, text = driver.unstow()
    assert not ok  # nothing moves until power_on


def test_close_returns_the_lease(server: FakeSpotServer) -> None:
    driver = BosdynArmDriver(config(server))
    assert driver.claim()[0]
    driver.close()
    assert server.robot.lease_owner is None
    assert server.robot.calls["ReturnLease"] == 1
    assert driver.claim() == (False, "claim: the driver is closed")
    driver.close()  # idempotent
