"""t2a_sim's spot_ros2 stand-in against the one table of upstream facts it mirrors
(``docs/spot_ros2_contract.md``): every interface there exists under ``/<spot_name>/`` with its
type and QoS, joint names carry the frame prefix, and the stack's spot_ros2 backend uses nothing
outside the table."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import rclpy
from rclpy.qos import DurabilityPolicy, ReliabilityPolicy
from sensor_msgs.msg import JointState

from t2a_common.core import spot_arm
from t2a_common.testing import ChildProcess, ros_context, spin_until
from t2a_control.drivers import spot_ros2
from t2a_sim.nodes import state_publisher

TABLE = Path(__file__).resolve().parents[4] / "docs" / "spot_ros2_contract.md"
SPOT = "robot7"  # not the default, so nothing works by accident of "spot"
SIM = ["-m", "t2a_sim.nodes.sim_node", "--ros-args", "-p", f"spot_name:={SPOT}",
       "-p", "sim.width:=96", "-p", "sim.height:=72", "-p", "camera_rate_hz:=2.0"]  # fmt: skip
STATE = ["-m", "t2a_sim.nodes.state_publisher", "--ros-args", "-p", f"spot_name:={SPOT}"]


def contract() -> list[dict[str, str]]:
    """The table's rows as {name, kind, type, qos, ...}."""
    rows, header = [], None
    for line in TABLE.read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = [c.split()[0] for c in cells]
        elif not set(cells[0]) <= set("-"):
            rows.append(dict(zip(header, cells)))
    assert rows and header[:4] == ["name", "kind", "type", "qos"], header
    return rows


@pytest.mark.unit
def test_the_table_covers_what_the_stack_uses() -> None:
    rows = {r["name"]: r for r in contract()}
    assert set(spot_ros2.TRIGGERS) <= {n for n, r in rows.items() if r["kind"] == "service"}
    assert rows["joint_states"]["kind"] == "publisher"
    assert rows["arm_joint_commands"]["kind"] == "subscription"
    assert set(spot_ros2.STARTUP) | set(spot_ros2.SHUTDOWN) <= set(rows)
    # The stand-in's name table is upstream's kFriendlyJointNames for the arm.
    arm = {k: v for k, v in state_publisher.FRIENDLY_JOINT_NAMES.items() if k.startswith("arm0")}
    assert set(spot_arm.ALL_JOINT_NAMES) <= set(arm.values())
    # DDS does not report a remote endpoint's history depth: check the stand-in's own profile.
    depth = re.search(r"depth (\d+)", rows["joint_states"]["qos"])
    assert state_publisher.JOINT_STATES_QOS.depth == int(depth.group(1))


@pytest.mark.sim
def test_the_stand_in_serves_every_row_with_its_type_and_qos() -> None:
    rows = contract()
    with ChildProcess(SIM) as sim, ChildProcess(STATE) as state, ros_context() as ctx:
        node = rclpy.create_node("contract_probe", context=ctx)
        got: dict = {}
        node.create_subscription(JointState, f"/{SPOT}/joint_states",
                                 lambda m: got.__setitem__("joints", m), 10)  # fmt: skip

        def graph() -> tuple[dict, dict]:
            topics = dict(node.get_topic_names_and_types())
            services = dict(node.get_service_names_and_types())
            return topics, services

        def complete() -> bool:
            topics, services = graph()
            for r in rows:
                where = services if r["kind"] == "service" else topics
                if r["type"] not in where.get(f"/{SPOT}/{r['name']}", []):
                    return False
            return "joints" in got

        if not spin_until(node, complete, 60.0):
            topics, services = graph()
            missing = [r["name"] for r in rows if r["type"] not in
                       (services if r["kind"] == "service" else topics).get(
                           f"/{SPOT}/{r['name']}", [])]  # fmt: skip
            pytest.fail(f"missing {missing}\n{sim.stop()[-2000:]}\n{state.stop()[-2000:]}")

        for r in rows:
            topic = f"/{SPOT}/{r['name']}"
            if r["kind"] == "publisher":
                (info,) = node.get_publishers_info_by_topic(topic)
            elif r["kind"] == "subscription":
                (info,) = node.get_subscriptions_info_by_topic(topic)
            else:
                continue
            qos = info.qos_profile
            durable = "transient_local" in r["qos"]
            assert qos.reliability == ReliabilityPolicy.RELIABLE, r["name"]
            assert (qos.durability == DurabilityPolicy.TRANSIENT_LOCAL) is durable, r["name"]

        # spot_ros2's joint names: <spot_name>/ + friendly name, never bare.
        names = list(got["joints"].name)
        assert {f"{SPOT}/{n}" for n in spot_arm.ALL_JOINT_NAMES} <= set(names), names
        assert not any("/" not in n for n in names), names
        node.destroy_node()
