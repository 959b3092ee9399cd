"""Every parameter the stack description gives a t2a node is a field of that node's config
dataclass, with the right type: ROS silently ignores parameters nobody declares, so a typo or a
package YAML nested at the wrong level would otherwise just leave the default in place.

The config classes live in the node modules, which import rclpy: ros tier.
"""

from __future__ import annotations

import pytest
import yaml

from t2a_bringup.core import stack
from t2a_common.core.config import fields as config_fields
from t2a_common.core.config import from_dict, load_yaml, ros_params_section
from t2a_control.core.node_config import ResidualControllerNodeConfig
from t2a_perception.core.node_config import TrackPredictorConfig
from t2a_planning.core.config import PlannerConfig
from t2a_planning.core.node_config import PlannerNodeConfig
from t2a_sim.core.config import SimConfig
from t2a_sim.core.node_config import SimNodeConfig, StatePublisherConfig

pytestmark = pytest.mark.ros
CONFIGS = {
    "t2a_sim": SimNodeConfig,
    "sim_state_publisher": StatePublisherConfig,
    "track_predictor": TrackPredictorConfig,
    "planner": PlannerNodeConfig,
    "residual_controller": ResidualControllerNodeConfig,
}


def _file_section(path, fqn: str) -> dict:
    """The node's parameters as it reads them from the file (dotted names)."""
    return ros_params_section(yaml.safe_load(path.read_text()), fqn)


@pytest.mark.parametrize("profile", ["sim", "robot"])
def test_every_parameter_is_a_config_field_and_the_files_load_back(profile, tmp_path):
    nodes = stack.load_description().resolve(profile)
    ours = [n for n in nodes if not n.external]
    sim_only = {"t2a_sim", "sim_state_publisher"}
    assert {n.key for n in ours} == set(CONFIGS) - (sim_only if profile == "robot" else set())
    for spec in ours:
        assert stack.config_class(spec) is CONFIGS[spec.key], spec.config
    files = stack.write_params_files(stack.check_nodes(nodes), tmp_path)
    loaded = {}
    for spec in ours:
        params = _file_section(files[spec.key], spec.fqn)
        sim_time = params.pop("use_sim_time", None)  # t2a_sim publishes /clock: never set
        assert sim_time is (None if spec.key in sim_only else profile == "sim"), spec.key
        fields = {f.name: f for f in config_fields(CONFIGS[spec.key])}
        assert set(params) <= set(fields), f"{spec.key}: {set(params) - set(fields)}"
        # rclpy refuses an integer from a file for a double parameter: floats must be floats
        for name, value in params.items():
            if fields[name].type is float or fields[name].elem_type is float:
                values = value if isinstance(value, list) else [value]
                assert all(isinstance(v, float) for v in values), (spec.key, name, value)
        loaded[spec.key] = from_dict(CONFIGS[spec.key], params)
    ctl = loaded["residual_controller"]
    assert ctl.control.mode == "open_loop"  # the description's one default
    # the robot waits for /t2a/execute, refuses the sim's calibration, stows on exit
    assert ctl.preview is ctl.require_calibration is ctl.stow_on_exit is (profile == "robot")
    # the package YAMLs reached the nodes whole, under the config field that holds them
    planner_yaml = stack.share_dir("t2a_planning") / "config/planner.yaml"
    assert loaded["planner"].planner == load_yaml(PlannerConfig, planner_yaml, "planner")
    if profile == "sim":
        sim_yaml = stack.share_dir("t2a_sim") / "config/sim.yaml"
        assert loaded["t2a_sim"].sim == load_yaml(SimConfig, sim_yaml)
        assert loaded["t2a_sim"].task == "drawer_open"


def test_unknown_parameters_and_bad_values_name_the_node_and_the_key():
    desc = stack.load_description()

    def refusal(sets: list[str]) -> str:
        with pytest.raises(stack.StackError) as info:
            stack.check_nodes(desc.resolve("sim", {}, sets))
        return str(info.value)

    text = refusal(["planner.planner.min_suport=0.3"])
    assert "node 'planner' (/t2a/planner): unknown parameter 'planner.min_suport'" in text
    assert "did you mean ['planner.min_support'" in text
    text = refusal(["residual_controller.mode=residual"])  # the loop's mode is control.mode
    assert "unknown parameter 'mode'" in text and "control.mode" in text
    text = refusal(["t2a_sim.seed=zero"])
    assert "node 't2a_sim' (/t2a_sim): invalid parameters" in text and "seed" in text
    text = refusal(["t2a_sim.task=fly"])
    assert "task 'fly' unknown" in text
    # absolute-action control without its policy is refused before anything starts (residual
    # control falls back to the shipped residual policy)
    with pytest.raises(stack.StackError, match="needs policy_checkpoint"):
        stack.check_nodes(desc.resolve("sim", {"control_mode": "absolute"}))
    stack.check_nodes(desc.resolve("sim", {"control_mode": "residual"}))
    with pytest.raises(stack.StackError, match="use_sim_time must be true/false"):
        stack.check_nodes(desc.resolve("sim", {}, ["planner.use_sim_time=1"]))


def test_an_include_nested_at_the_wrong_level_is_caught(tmp_path):
    """The drift this description exists to stop: planner.yaml holds PlannerConfig, which the
    planner node declares under ``planner.``; included at the top level every key is unknown."""
    data = yaml.safe_load(stack.description_path().read_text())
    data["nodes"]["planner"]["include"][0].pop("under")
    desc = stack.StackDescription(data, "test.yaml")
    with pytest.raises(stack.StackError, match=r"node 'planner' .*unknown parameter 'depth_window"):
        stack.check_nodes(desc.resolve("sim"))
