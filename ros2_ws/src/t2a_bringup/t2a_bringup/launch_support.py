"""What ``sim.launch.py`` and ``robot.launch.py`` share: a profile of ``config/stack.yaml`` as a
LaunchDescription, with the nodes, parameters and remaps resolved by t2a_bringup.core.stack exactly
as ``t2a-stack PROFILE`` resolves them.

launch and launch_ros exist only where ``ros2 launch`` does (the robot image, a colcon install),
so they are imported inside the functions: this module imports anywhere, and each call uses
whatever ``launch`` is importable at that moment.
"""

from __future__ import annotations

import tempfile

from t2a_bringup.core import stack


def _nodes(context, profile: str) -> list:
    from launch_ros.actions import Node

    given = context.launch_configurations  # argument name -> text
    desc = stack.load_description(given.get("description") or None)
    args = {a.name: given[a.name] for a in desc.arguments(profile) if a.name in given}
    nodes = desc.resolve(profile, args)
    if given.get("check", "true").lower() != "false":
        nodes = stack.check_nodes(nodes)  # every parameter is a field of the node's config
    files = stack.write_params_files(nodes, tempfile.mkdtemp(prefix=f"t2a-{profile}-"))
    return [Node(**stack.launch_kwargs(n, files[n.key])) for n in nodes]


def launch_description(profile: str):
    """The LaunchDescription of stack profile ``profile`` (``"sim"`` or ``"robot"``).

    It declares every argument of the profile (with its default and doc) plus ``description``
    (another stack description file) and ``check`` (check parameters against the node configs);
    the nodes are resolved from the given values when the launch runs.
    """
    from launch import LaunchDescription
    from launch.actions import DeclareLaunchArgument, OpaqueFunction

    desc = stack.load_description()
    declared = [
        DeclareLaunchArgument(a.name, default_value=a.default_text, description=a.doc)
        for a in desc.arguments(profile)
    ]
    declared += [
        DeclareLaunchArgument(
            "description", default_value="", description="stack description file ('' = ours)"
        ),
        DeclareLaunchArgument(
            "check", default_value="true", description="check parameters against node configs"
        ),
    ]
    return LaunchDescription([*declared, OpaqueFunction(function=_nodes, args=[profile])])
