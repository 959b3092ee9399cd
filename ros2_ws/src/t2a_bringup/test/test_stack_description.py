"""The stack description resolved by both starters: launch files and t2a-stack cannot drift.

launch/launch_ros are not installable here, so the launch files (each hands its profile to
t2a_bringup.launch_support) run against recording stand-ins for the four launch classes used
(LaunchDescription, DeclareLaunchArgument, OpaqueFunction, Node): what the real Node would get as
keyword arguments is compared with the command lines t2a-stack runs. Parameter checks against the
nodes' config classes: test_stack_parameters.py.
"""

from __future__ import annotations

import ast
import importlib.util
import sys
import types
from pathlib import Path

import pytest
import yaml

from t2a_bringup import launch_support, stack_runner
from t2a_bringup.core import stack

PKG = Path(__file__).resolve().parents[1]
LAUNCH_FILES = {p: PKG / "launch" / f"{p}.launch.py" for p in ("sim", "robot")}
LAUNCH_SUPPORT = Path(launch_support.__file__)
T2A_NODES = {"t2a_sim", "track_predictor", "planner", "residual_controller"}


class _Recorded:
    """Stands in for a launch class: keeps what it was constructed with."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


def _load_launch_file(profile: str, monkeypatch) -> tuple[types.ModuleType, dict[str, type]]:
    """The launch file as a module, with fresh stand-ins (one class each, new on every call, so
    a stand-in of another test, or a real launch class, would be told apart) for the launch
    classes; also returns the stand-ins by name."""
    fakes = {
        "launch": ["LaunchDescription"],
        "launch.actions": ["DeclareLaunchArgument", "OpaqueFunction"],
        "launch_ros": [],
        "launch_ros.actions": ["Node"],
    }
    classes = {}
    for name, attrs in fakes.items():
        module = types.ModuleType(name)
        for attr in attrs:
            classes[attr] = type(attr, (_Recorded,), {})
            setattr(module, attr, classes[attr])
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(f"{profile}_launch", LAUNCH_FILES[profile])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module, classes


def _launch_description(profile: str, monkeypatch) -> tuple[list, dict[str, type]]:
    """The actions of the launch file's description: the declared arguments, then the
    OpaqueFunction that builds the nodes; checks they are made of this call's stand-ins."""
    module, classes = _load_launch_file(profile, monkeypatch)
    ld = module.generate_launch_description()
    assert type(ld) is classes["LaunchDescription"], "launch classes imported before the stand-ins"
    (actions,) = ld.args
    assert all(type(a) is classes["DeclareLaunchArgument"] for a in actions[:-1])
    assert type(actions[-1]) is classes["OpaqueFunction"]
    return actions, classes


def _launch_nodes(profile: str, overrides: dict[str, str], monkeypatch) -> list[dict]:
    """Run the launch file as ros2 launch would: declared defaults, then the given values."""
    actions, classes = _launch_description(profile, monkeypatch)
    declared = {a.args[0]: a.kwargs["default_value"] for a in actions[:-1]}
    assert set(overrides) <= set(declared), f"not declared: {set(overrides) - set(declared)}"
    context = types.SimpleNamespace(launch_configurations={**declared, **overrides})
    opaque = actions[-1].kwargs  # launch calls function(context, *args, **kwargs)
    nodes = opaque["function"](context, *(opaque.get("args") or ()), **(opaque.get("kwargs") or {}))
    assert all(type(node) is classes["Node"] for node in nodes)
    return [node.kwargs for node in nodes]


def _parse_command(cmd: list[str]) -> dict:
    ros = cmd.index("--ros-args")
    out = {"executable": Path(cmd[0]).name, "arguments": cmd[1:ros], "files": [], "remaps": []}
    words = iter(cmd[ros + 1 :])
    for flag in words:
        value = next(words)
        if flag == "--params-file":
            out["files"].append(yaml.safe_load(Path(value).read_text()))
        elif flag == "-r" and value.startswith("__node:="):
            out["name"] = value.removeprefix("__node:=")
        elif flag == "-r" and value.startswith("__ns:="):
            out["namespace"] = value.removeprefix("__ns:=")
        elif flag == "-r":
            out["remaps"].append(tuple(value.split(":=")))
        else:
            raise AssertionError(f"unexpected {flag} {value} in {cmd}")
    return out


def _description_with_remap(tmp_path: Path) -> Path:
    data = yaml.safe_load(stack.description_path().read_text())
    data["nodes"]["planner"]["remappings"] = {"tracks": "/t2a/tracks_${camera_name}"}
    path = tmp_path / "stack.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.mark.parametrize("profile", ["sim", "robot"])
def test_launch_file_and_t2a_stack_start_the_same_nodes(profile, tmp_path, monkeypatch):
    description = _description_with_remap(tmp_path)
    args = {"spot_name": "spot2", "camera_name": "cam", "camera_xyz": "[0.5, -0.1, 0.07]"}
    launched = _launch_nodes(profile, {**args, "description": str(description), "check": "false"},
                             monkeypatch)  # fmt: skip
    planned = stack_runner.plan(profile, args, [], tmp_path / "params", description=description,
                                check=False)  # fmt: skip
    assert [k["name"] for k in launched] == [p.spec.name for p in planned]
    for kw, p in zip(launched, planned):
        cmd = _parse_command(p.command)
        assert cmd["executable"] == kw["executable"] == p.spec.executable, p.spec.key
        assert (cmd["name"], cmd["namespace"]) == (kw["name"], kw["namespace"]), p.spec.key
        assert cmd["remaps"] == kw["remappings"], p.spec.key
        assert cmd["arguments"] == kw["arguments"], p.spec.key
        assert cmd["files"] == [yaml.safe_load(Path(f).read_text()) for f in kw["parameters"]]
        if p.spec.key in T2A_NODES:  # the overrides reached the files both starters pass
            params = cmd["files"][-1][p.spec.fqn]["ros__parameters"]
            assert "spot2" in str(params) or "cam" in str(params), (p.spec.key, params)
    by_key = {p.spec.key: _parse_command(p.command) for p in planned}
    assert by_key["planner"]["remaps"] == [("tracks", "/t2a/tracks_cam")]
    planner = by_key["planner"]["files"][0]["/t2a/planner"]["ros__parameters"]
    assert planner["camera_xyz"] == [0.5, -0.1, 0.07] and planner["spot_name"] == "spot2"
    if profile == "robot":
        assert by_key["camera"]["namespace"] == "/camera" and by_key["camera"]["name"] == "cam"
        assert by_key["spot_driver"]["namespace"] == "/spot2"
        tf_args = by_key["camera_tf"]["arguments"]
        assert tf_args[tf_args.index("--x") + 1] == "0.5"
        assert tf_args[tf_args.index("--child-frame-id") + 1] == "camera_color_optical_frame"


@pytest.mark.parametrize("profile", ["sim", "robot"])
def test_launch_file_declares_every_argument_with_its_default_and_doc(profile, monkeypatch):
    actions, _ = _launch_description(profile, monkeypatch)
    declared = {a.args[0]: a.kwargs for a in actions[:-1]}
    for arg in stack.load_description().arguments(profile):
        assert declared[arg.name]["default_value"] == arg.default_text
        assert declared[arg.name]["description"] == arg.doc


def _imported(tree: ast.AST) -> set[tuple[str, str]]:
    return {
        (n.module, a.name) for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names
    }


def test_launch_support_builds_nodes_only_from_the_description():
    tree = ast.parse(LAUNCH_SUPPORT.read_text())
    imported = _imported(tree)
    assert ("t2a_bringup.core", "stack") in imported
    launch_names = {a for m, a in imported if m.split(".")[0] in ("launch", "launch_ros")}
    assert launch_names == {"LaunchDescription", "DeclareLaunchArgument", "OpaqueFunction", "Node"}
    node_calls = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Call) and isinstance(n.func, ast.Name) and n.func.id == "Node"
    ]
    assert len(node_calls) == 1, "one Node(...) built from each NodeSpec"
    (call,) = node_calls
    assert not call.args and len(call.keywords) == 1 and call.keywords[0].arg is None
    source = ast.unparse(call.keywords[0].value)
    assert source.startswith("stack.launch_kwargs("), f"Node({source})"
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Dict)], (
        "launch_support has a dict literal: parameters belong in config/stack.yaml"
    )


@pytest.mark.parametrize("profile", ["sim", "robot"])
def test_launch_file_hands_its_own_profile_to_launch_support(profile):
    tree = ast.parse(LAUNCH_FILES[profile].read_text())
    assert _imported(tree) == {("t2a_bringup.launch_support", "launch_description")}
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Import)]
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef)]
    assert [f.name for f in functions] == ["generate_launch_description"]
    (statement,) = functions[0].body
    assert ast.unparse(statement) == f"return launch_description({profile!r})"


def test_sim_profile_runs_the_t2a_nodes_on_sim_time_and_robot_on_wall_time():
    desc = stack.load_description()
    sim = {n.key: n for n in desc.resolve("sim")}
    assert set(sim) >= T2A_NODES
    for key in T2A_NODES - {"t2a_sim"}:
        assert sim[key].parameters["use_sim_time"] is True, key
    assert "use_sim_time" not in sim["t2a_sim"].parameters  # it publishes /clock
    robot = {n.key: n for n in desc.resolve("robot")}
    assert "t2a_sim" not in robot and {"camera", "spot_driver", "spot_state_publisher"} <= set(
        robot
    )
    # spot_ros2's joint_states come from its state_publisher_node: both profiles start one
    assert robot["spot_state_publisher"].executable == "state_publisher_node"
    assert sim["sim_state_publisher"].executable == "t2a_sim_state_publisher"
    assert all(robot[k].parameters["use_sim_time"] is False for k in T2A_NODES - {"t2a_sim"})
    assert robot["camera"].external and robot["spot_driver"].external
    assert [n.key for n in desc.resolve("robot", {"spot_driver": "false", "camera": "False"})] == [
        "camera_tf", "track_predictor", "planner", "residual_controller"
    ]  # fmt: skip


def test_package_yamls_are_nested_under_the_node_config_field():
    """sim.yaml describes SimConfig, which the sim node holds under ``sim.``."""
    sim = {n.key: n for n in stack.load_description().resolve("sim")}["t2a_sim"]
    raw = yaml.safe_load((stack.share_dir("t2a_sim") / "config/sim.yaml").read_text())
    assert sim.parameters["sim.width"] == raw["width"]
    assert not {k for k in sim.parameters if k in raw}, "SimConfig keys must not be top level"


def test_arguments_and_sets_are_typed_and_applied_last():
    desc = stack.load_description()
    nodes = {n.key: n for n in desc.resolve(
        "sim", {"seed": "7", "real_time_factor": "2", "use_sim_time": "False", "task": "box_push"},
        ["t2a_sim.sim.width=320", "planner.planner.min_support=0.3", "t2a_sim.task=bottle_lift"],
    )}  # fmt: skip
    sim = nodes["t2a_sim"].parameters
    assert (sim["seed"], sim["real_time_factor"], sim["sim.width"]) == (7, 2.0, 320)
    assert sim["task"] == "bottle_lift"  # --set wins over the argument
    assert nodes["planner"].parameters["use_sim_time"] is False
    assert nodes["planner"].parameters["planner.min_support"] == 0.3
    doc = stack.params_document(nodes["t2a_sim"])
    assert doc["/t2a_sim"]["ros__parameters"]["sim"]["width"] == 320


@pytest.mark.parametrize(
    ("args", "sets", "message"),
    [
        ({"sede": "1"}, [], r"unknown argument\(s\) \['sede'\] for profile 'sim'"),
        ({"seed": "one"}, [], r"argument 'seed': expected an integer, got 'one'"),
        ({"use_sim_time": "yes"}, [], r"argument 'use_sim_time': expected true or false"),
        ({"camera_xyz": "[1, 2"}, [], r"argument 'camera_xyz': cannot parse"),
        ({}, ["planner"], r"--set 'planner': expected NODE.PARAM=VALUE"),
        ({}, ["plan.x=1"], r"--set plan.x: no node 'plan' in profile 'sim'"),
        ({}, ["camera.enable_color=false"], r"no node 'camera' in profile 'sim'"),
    ],
)
def test_bad_arguments_and_sets_are_refused_with_the_reason(args, sets, message):
    with pytest.raises(stack.StackError, match=message):
        stack.load_description().resolve("sim", args, sets)


def test_bad_descriptions_are_refused_naming_the_place():
    good = yaml.safe_dump(yaml.safe_load(stack.description_path().read_text()))

    def refusal(edit) -> str:
        data = yaml.safe_load(good)
        edit(data)
        with pytest.raises(stack.StackError) as info:
            stack.StackDescription(data, "test.yaml").resolve("sim")
        return str(info.value)

    # ${task} is a sim argument only, so the robot profile cannot start this planner
    text = refusal(lambda d: d["nodes"]["planner"]["parameters"].update(spot_name="${task}"))
    assert "profile 'robot': node 'planner' uses ${task}, which is not an argument" in text
    text = refusal(lambda d: d["profiles"]["sim"]["nodes"].append("mapper"))
    assert "profile 'sim' lists unknown node(s) ['mapper']" in text
    assert "a t2a node needs config" in refusal(lambda d: d["nodes"]["planner"].pop("config"))
    text = refusal(lambda d: d["nodes"]["planner"].update(paramters={}))
    assert "node 'planner': unknown key(s) ['paramters']" in text
    text = refusal(lambda d: d["arguments"]["device"].pop("doc"))
    assert "arguments.device needs a doc" in text
    with pytest.raises(stack.StackError, match=r"no profile 'lab'.*profiles: \['sim', 'robot'\]"):
        stack.load_description().resolve("lab")


def test_empty_lists_cannot_go_into_a_parameter_file():
    nodes = stack.load_description().resolve("sim", sets={"planner.camera_xyz": []})
    (planner,) = [n for n in nodes if n.key == "planner"]
    with pytest.raises(stack.StackError, match="'camera_xyz': an empty list cannot be written"):
        stack.params_document(planner)


def test_t2a_stack_names_the_package_of_a_missing_executable(capsys):
    # realsense2_camera exists only on a robot computer; nothing starts.
    assert stack_runner.main(["robot", "--only", "camera", "spot_driver"]) == 2
    err = capsys.readouterr().err
    assert (
        "node 'camera': executable 'realsense2_camera_node' of package 'realsense2_camera'" in err
    )
    assert "spot_driver" in err and "started" not in err


def test_t2a_stack_print_shows_the_resolved_stack(capsys):
    assert stack_runner.main(["sim", "--print", "--no-check", "--arg", "task:=box_push"]) == 0
    out = capsys.readouterr().out
    assert "#   task:=box_push" in out and "## camera_tf (optional" in out
    assert "/t2a/planner:\n  ros__parameters:" in out
    assert stack_runner.main(["sim", "--arg", "task=box_push", "--print"]) == 2
    assert "expected NAME:=VALUE" in capsys.readouterr().err
