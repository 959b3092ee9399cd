"""The stack on t2a_sim: ``ros2 launch t2a_bringup sim.launch.py task:=box_push seed:=3``.

Thin on purpose: the nodes, parameters and remaps come from ``config/stack.yaml`` (profile
``sim``) through t2a_bringup.core.stack, exactly as ``t2a-stack sim`` starts them.
`ros2 launch t2a_bringup sim.launch.py --show-args` lists the arguments.
"""

import tempfile

from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch_ros.actions import Node

from t2a_bringup.core import stack

PROFILE = "sim"


def _nodes(context):
    given = context.launch_configurations  # argument name -> text
    desc = stack.load_description(given.get("description") or None)
    args = {a.name: given[a.name] for a in desc.arguments(PROFILE) if a.name in given}
    nodes = desc.resolve(PROFILE, args)
    if given.get("check", "true").lower() != "false":
        nodes = stack.check_nodes(nodes)  # every parameter is a field of the node's config
    files = stack.write_params_files(nodes, tempfile.mkdtemp(prefix=f"t2a-{PROFILE}-"))
    return [Node(**stack.launch_kwargs(n, files[n.key])) for n in nodes]


def generate_launch_description():
    desc = stack.load_description()
    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default_text, description=a.doc)
        for a in desc.arguments(PROFILE)
    ]
    declared += [
        DeclareLaunchArgument(
            "description", default_value="", description="stack description file ('' = ours)"
        ),
        DeclareLaunchArgument(
            "check", default_value="true", description="check parameters against node configs"
        ),
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes)])
